#include "runbook_module.hpp"

#include <chrono>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <utility>

#include <pybind11/stl.h>

namespace runbookd::bindings {
namespace {

namespace py = pybind11;

using StringMap = std::map<std::string, std::string>;

// Reads `key` from a context object as given by runbookd (or runbook.testing); a missing key
// or null gives the default, so a test may pass only what it cares about.
template <typename T>
T get_or(const py::dict& spec, const char* key, T fallback) {
    if (!spec.contains(key) || spec[key].is_none()) {
        return fallback;
    }
    return spec[key].cast<T>();
}

py::object get_object(const py::dict& spec, const char* key) {
    return spec.contains(key) ? py::object(spec[key]) : py::object(py::none());
}

py::dict get_dict(const py::dict& spec, const char* key) {
    if (!spec.contains(key) || spec[key].is_none()) {
        return py::dict();
    }
    return spec[key].cast<py::dict>();
}

// An ISO 8601 text (or a datetime) as a timezone-aware UTC datetime. Alertmanager's zero time
// (year 1), an empty text and null mean "not set" and give None.
py::object utc_datetime(const py::object& value) {
    if (value.is_none() || (py::isinstance<py::str>(value) && value.cast<std::string>().empty())) {
        return py::none();
    }
    py::module_ datetime = py::module_::import("datetime");
    py::object utc = datetime.attr("timezone").attr("utc");
    py::object parsed = value;
    if (py::isinstance<py::str>(value)) {
        parsed = datetime.attr("datetime").attr("fromisoformat")(value);
    }
    if (parsed.attr("tzinfo").is_none()) {
        parsed = parsed.attr("replace")(py::arg("tzinfo") = utc);
    } else {
        parsed = parsed.attr("astimezone")(utc);
    }
    if (parsed.attr("year").cast<int>() == 1) {
        return py::none();
    }
    return parsed;
}

struct Alert {
    StringMap labels;
    StringMap annotations;
    std::string status;
    std::string fingerprint;
    py::object starts_at;
    py::object ends_at;
    std::string generator_url;

    static Alert from_spec(const py::dict& spec) {
        return Alert{get_or(spec, "labels", StringMap{}),
                     get_or(spec, "annotations", StringMap{}),
                     get_or(spec, "status", std::string("firing")),
                     get_or(spec, "fingerprint", std::string()),
                     utc_datetime(get_object(spec, "starts_at")),
                     utc_datetime(get_object(spec, "ends_at")),
                     get_or(spec, "generator_url", std::string())};
    }
};

struct RunInfo {
    std::int64_t id = 0;
    std::string runbook;
    std::string trigger;
    std::string actor;
};

struct StepInfo {
    std::string name;
    int index = 0;
    int attempt = 1;
};

struct StepResult {
    std::string state;
    std::optional<int> exit_code;
    py::dict outputs;
    std::string output;
};

// Serialises a value the way the worker sends outputs to runbookd: strict JSON, no NaN.
std::string json_text(const py::object& value) {
    return py::module_::import("json")
        .attr("dumps")(value, py::arg("allow_nan") = false)
        .cast<std::string>();
}

py::object json_copy(const py::object& value) {
    return py::module_::import("json").attr("loads")(json_text(value));
}

// Whether the step a ctx was built for is still running. Shared by the Context and its Logger
// and read with the GIL held: once the step has ended, a thread the step left behind that
// still holds its ctx can reach nothing through it (docs/python-steps.md, "Worker details").
class StepLife {
  public:
    explicit StepLife(std::string owner) : owner_(std::move(owner)) {}

    void end() { ended_ = true; }

    void check() const {
        if (ended_) {
            throw std::runtime_error("this ctx belongs to step " + owner_ + " which has ended");
        }
    }

  private:
    std::string owner_;
    bool ended_ = false;
};

class Logger {
  public:
    Logger(py::object channel_object, Channel* channel, std::shared_ptr<const StepLife> life)
        : channel_object_(std::move(channel_object)), channel_(channel), life_(std::move(life)) {}

    void log(const std::string& level, const py::object& message) {
        life_->check();
        channel_->log(level, py::str(message).cast<std::string>());
    }

  private:
    py::object channel_object_;  // keeps a channel written in Python alive
    Channel* channel_;
    std::shared_ptr<const StepLife> life_;
};

std::vector<std::string> checked_argv(const py::object& argv) {
    if (!py::isinstance<py::list>(argv) && !py::isinstance<py::tuple>(argv)) {
        throw py::type_error("exec: argv must be a list of str, not " +
                             py::str(py::type::of(argv).attr("__name__")).cast<std::string>());
    }
    std::vector<std::string> result;
    for (const py::handle item : argv) {
        if (!py::isinstance<py::str>(item)) {
            throw py::type_error("exec: every argv item must be a str, got " +
                                 py::repr(item).cast<std::string>());
        }
        result.push_back(item.cast<std::string>());
    }
    if (result.empty()) {
        throw py::value_error("exec: argv is empty");
    }
    return result;
}

std::optional<double> checked_timeout(const py::object& timeout) {
    if (timeout.is_none()) {
        return std::nullopt;
    }
    if (py::isinstance<py::bool_>(timeout) ||
        (!py::isinstance<py::int_>(timeout) && !py::isinstance<py::float_>(timeout))) {
        throw py::type_error("exec: timeout must be a number of seconds or None");
    }
    double seconds = timeout.cast<double>();
    if (!(seconds > 0.0) || std::isinf(seconds)) {
        throw py::value_error("exec: timeout must be a positive, finite number of seconds");
    }
    return seconds;
}

std::optional<StringMap> checked_env(const py::object& env) {
    if (env.is_none()) {
        return std::nullopt;
    }
    if (!py::isinstance<py::dict>(env)) {
        throw py::type_error("exec: env must be a dict of str to str or None");
    }
    StringMap result;
    for (const auto& [key, value] : env.cast<py::dict>()) {
        if (!py::isinstance<py::str>(key) || !py::isinstance<py::str>(value)) {
            throw py::type_error("exec: env keys and values must be str");
        }
        result[key.cast<std::string>()] = value.cast<std::string>();
    }
    return result;
}

// The `ctx` a step function receives. Built once per step from runbookd's context object;
// talks to the outside only through its Channel.
class Context {
  public:
    Context(const py::dict& spec, py::object channel_object)
        : channel_object_(std::move(channel_object)),
          channel_(channel_object_.cast<Channel*>()),
          started_(std::chrono::steady_clock::now()) {
        if (spec.contains("alert") && !spec["alert"].is_none()) {
            alert_ = py::cast(Alert::from_spec(spec["alert"].cast<py::dict>()));
        }
        py::dict run = get_dict(spec, "run");
        run_ = RunInfo{get_or<std::int64_t>(run, "id", 0), get_or(run, "runbook", std::string()),
                       get_or(run, "trigger", std::string()), get_or(run, "actor", std::string())};
        py::dict step = get_dict(spec, "step");
        step_ = StepInfo{get_or(step, "name", std::string()), get_or(step, "index", 0),
                         get_or(step, "attempt", 1)};
        params_ = json_copy(get_dict(spec, "params"));
        read_steps(get_dict(spec, "steps"));
        life_ = std::make_shared<StepLife>("\"" + step_.name + "\" (run " +
                                           std::to_string(run_.id) + ")");
        logger_ = py::cast(Logger(channel_object_, channel_, life_));
        dry_run_ = get_or(spec, "dry_run", false);
        timeout_ms_ = get_or<std::optional<std::int64_t>>(spec, "timeout_ms", std::nullopt);
    }

    py::object alert() const { return alert_; }
    const RunInfo& run() const { return run_; }
    const StepInfo& step() const { return step_; }
    py::object params() const { return params_; }
    py::object logger() const { return logger_; }
    bool dry_run() const { return dry_run_; }

    py::object steps() const {
        return py::module_::import("types").attr("MappingProxyType")(steps_);
    }

    py::dict outputs() const { return py::dict(outputs_); }

    std::optional<double> deadline() const {
        if (!timeout_ms_) {
            return std::nullopt;
        }
        std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - started_;
        return static_cast<double>(*timeout_ms_) / 1000.0 - elapsed.count();
    }

    // After this, every call that acts (log, exec, secret, set_output) raises RuntimeError.
    void end_step() { life_->end(); }

    void set_output(const std::string& key, const py::object& value) {
        life_->check();
        try {
            outputs_[py::str(key)] = json_copy(value);
        } catch (py::error_already_set& error) {
            throw py::type_error(
                "set_output: the value of output '" + key +
                "' is not JSON-serialisable: " + py::str(error.value()).cast<std::string>());
        }
    }

    ExecResult exec(const py::object& argv, const py::object& timeout, const py::object& env) {
        life_->check();
        ExecRequest request{checked_argv(argv), checked_timeout(timeout), checked_env(env)};
        return channel_->exec(request);
    }

    std::string secret(const std::string& name) {
        life_->check();
        return channel_->secret(name);
    }

  private:
    void read_steps(const py::dict& steps) {
        for (const auto& [name, value] : steps) {
            py::dict spec = value.cast<py::dict>();
            StepResult result{get_or(spec, "state", std::string()),
                              get_or<std::optional<int>>(spec, "exit_code", std::nullopt),
                              json_copy(get_dict(spec, "outputs")).cast<py::dict>(),
                              get_or(spec, "output", std::string())};
            steps_[name] = py::cast(std::move(result));
        }
    }

    py::object channel_object_;  // keeps a channel written in Python alive
    Channel* channel_;
    std::chrono::steady_clock::time_point started_;
    py::object alert_ = py::none();
    RunInfo run_;
    StepInfo step_;
    py::object params_;
    py::dict steps_;
    std::shared_ptr<StepLife> life_;
    py::object logger_;
    bool dry_run_ = false;
    std::optional<std::int64_t> timeout_ms_;
    py::dict outputs_;
};

// Lets runbook.testing implement a Channel in Python.
class PyChannel : public Channel {
  public:
    using Channel::Channel;

    void log(const std::string& level, const std::string& message) override {
        PYBIND11_OVERRIDE_PURE(void, Channel, log, level, message);
    }

    ExecResult exec(const ExecRequest& request) override {
        PYBIND11_OVERRIDE_PURE(ExecResult, Channel, exec, request);
    }

    std::string secret(const std::string& name) override {
        PYBIND11_OVERRIDE_PURE(std::string, Channel, secret, name);
    }
};

void define_records(py::module_& module) {
    py::class_<Alert>(module, "Alert", "One alert of the notification that started the run.")
        .def_property_readonly("labels", [](const Alert& a) { return a.labels; })
        .def_property_readonly("annotations", [](const Alert& a) { return a.annotations; })
        .def_readonly("status", &Alert::status)
        .def_readonly("fingerprint", &Alert::fingerprint)
        .def_readonly("starts_at", &Alert::starts_at)
        .def_readonly("ends_at", &Alert::ends_at)
        .def_readonly("generator_url", &Alert::generator_url);

    py::class_<RunInfo>(module, "RunInfo", "The run this step belongs to.")
        .def_readonly("id", &RunInfo::id)
        .def_readonly("runbook", &RunInfo::runbook)
        .def_readonly("trigger", &RunInfo::trigger)
        .def_readonly("actor", &RunInfo::actor);

    py::class_<StepInfo>(module, "StepInfo", "The step being run.")
        .def_readonly("name", &StepInfo::name)
        .def_readonly("index", &StepInfo::index)
        .def_readonly("attempt", &StepInfo::attempt);

    py::class_<StepResult>(module, "StepResult", "How an earlier step of the run ended.")
        .def_readonly("state", &StepResult::state)
        .def_readonly("exit_code", &StepResult::exit_code)
        .def_property_readonly("outputs", [](const StepResult& r) { return py::dict(r.outputs); })
        .def_readonly("output", &StepResult::output);

    py::class_<Logger>(module, "Logger", "Lines for the attempt's audit trail.")
        .def("info", [](Logger& l, const py::object& m) { l.log("info", m); })
        .def("warning", [](Logger& l, const py::object& m) { l.log("warning", m); })
        .def("error", [](Logger& l, const py::object& m) { l.log("error", m); });
}

// What runbookd puts in a command's `error` (exec/process.cpp, describe_ending), for an
// ExecResult built in a test: "exited with code 3", "killed by signal 9 (SIGKILL)".
std::optional<std::string> describe_ending(std::optional<int> exit_code, std::optional<int> signal,
                                           bool timed_out) {
    if (timed_out) {
        return "timed out";
    }
    if (signal) {
        const char* abbrev = ::sigabbrev_np(*signal);
        std::string name =
            abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(*signal);
        return "killed by signal " + std::to_string(*signal) + " (" + name + ")";
    }
    if (exit_code && *exit_code != 0) {
        return "exited with code " + std::to_string(*exit_code);
    }
    return std::nullopt;
}

ExecResult make_exec_result(std::vector<std::string> argv, std::optional<int> exit_code,
                            std::optional<int> signal, bool timed_out, std::string stdout_text,
                            std::string stderr_text, std::optional<std::int64_t> stdout_bytes,
                            std::optional<std::int64_t> stderr_bytes, double duration,
                            std::optional<std::string> error) {
    auto out_bytes = static_cast<std::int64_t>(stdout_text.size());
    auto err_bytes = static_cast<std::int64_t>(stderr_text.size());
    return ExecResult{std::move(argv),
                      exit_code,
                      signal,
                      timed_out,
                      std::move(stdout_text),
                      std::move(stderr_text),
                      stdout_bytes.value_or(out_bytes),
                      stderr_bytes.value_or(err_bytes),
                      duration,
                      error ? std::move(error) : describe_ending(exit_code, signal, timed_out)};
}

void define_exec(py::module_& module) {
    py::class_<ExecRequest>(module, "ExecRequest", "A command asked for through ctx.exec.")
        .def_readonly("argv", &ExecRequest::argv)
        .def_readonly("timeout", &ExecRequest::timeout)
        .def_readonly("env", &ExecRequest::env);

    py::class_<ExecResult>(module, "ExecResult", "How a command run through ctx.exec ended.")
        .def(py::init(&make_exec_result), py::arg("argv"), py::kw_only(), py::arg("exit_code") = 0,
             py::arg("signal") = py::none(), py::arg("timed_out") = false, py::arg("stdout") = "",
             py::arg("stderr") = "", py::arg("stdout_bytes") = py::none(),
             py::arg("stderr_bytes") = py::none(), py::arg("duration") = 0.0,
             py::arg("error") = py::none())
        .def_readonly("argv", &ExecResult::argv)
        .def_readonly("exit_code", &ExecResult::exit_code)
        .def_readonly("signal", &ExecResult::signal)
        .def_readonly("timed_out", &ExecResult::timed_out)
        .def_readonly("stdout", &ExecResult::stdout_text)
        .def_readonly("stderr", &ExecResult::stderr_text)
        .def_readonly("stdout_bytes", &ExecResult::stdout_bytes)
        .def_readonly("stderr_bytes", &ExecResult::stderr_bytes)
        .def_readonly("duration", &ExecResult::duration)
        .def_readonly("error", &ExecResult::error)
        .def_property_readonly("ok", &ExecResult::ok)
        .def("check",
             [](py::object self) {
                 if (self.cast<const ExecResult&>().ok()) {
                     return self;
                 }
                 py::object error = py::module_::import("runbook").attr("ExecError")(self);
                 PyErr_SetObject(error.get_type().ptr(), error.ptr());
                 throw py::error_already_set();
             })
        .def("__repr__", [](const ExecResult& r) {
            return "<ExecResult argv=" + py::repr(py::cast(r.argv)).cast<std::string>() +
                   " exit_code=" + py::repr(py::cast(r.exit_code)).cast<std::string>() + ">";
        });
}

void define_context(py::module_& module) {
    py::class_<Channel, PyChannel>(module, "Channel",
                                   "How a Context reaches the outside (subclass it in tests).")
        .def(py::init<>())
        .def("log", &Channel::log, py::arg("level"), py::arg("message"))
        .def("exec", &Channel::exec, py::arg("request"))
        .def("secret", &Channel::secret, py::arg("name"));

    py::class_<Context>(module, "Context", "What a Python step function receives as ctx.")
        .def(py::init<const py::dict&, py::object>(), py::arg("spec"), py::arg("channel"))
        .def_property_readonly("alert", &Context::alert)
        .def_property_readonly("run", &Context::run)
        .def_property_readonly("step", &Context::step)
        .def_property_readonly("params", &Context::params)
        .def_property_readonly("steps", &Context::steps)
        .def_property_readonly("log", &Context::logger)
        .def_property_readonly("dry_run", &Context::dry_run)
        .def_property_readonly("deadline", &Context::deadline)
        .def_property_readonly("outputs", &Context::outputs)
        .def("set_output", &Context::set_output, py::arg("key"), py::arg("value"))
        .def("exec", &Context::exec, py::arg("argv"), py::arg("timeout") = py::none(),
             py::arg("env") = py::none())
        .def("secret", &Context::secret, py::arg("name"))
        .def("_end_step", &Context::end_step,
             "Called by the runner when the step has ended; not for step code.");
}

}  // namespace

void define_runbook_module(py::module_& module) {
    module.doc() = "Typed context of runbookd's Python steps (see the runbook package).";
    define_records(module);
    define_exec(module);
    define_context(module);
}

}  // namespace runbookd::bindings
