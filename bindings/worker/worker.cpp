#include "worker.hpp"

#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <pybind11/embed.h>
#include <sys/resource.h>
#include <unistd.h>

#include "connection.hpp"
#include "leftovers.hpp"
#include "runbook_module.hpp"

namespace runbookd::worker {
namespace {

namespace py = pybind11;
using bindings::Channel;
using bindings::ExecRequest;
using bindings::ExecResult;
using nlohmann::json;

// The worker's own stderr, saved before any step points descriptor 2 at its pipe: protocol
// errors are reported here, never into a step's output.
int diagnostics_fd = STDERR_FILENO;

void report(const std::string& message) {
    std::string line = "runbookd-python-worker: " + message + "\n";
    [[maybe_unused]] ssize_t n = ::write(diagnostics_fd, line.data(), line.size());
}

// Ends the process without finalising the interpreter: a step's leftover non-daemon thread
// would make finalisation wait forever, and runbookd owns the worker's lifetime anyway.
[[noreturn]] void end_worker(int status) {
    std::fflush(nullptr);
    ::_exit(status);
}

[[noreturn]] void end_on(const ReadFailure& failure) {
    if (failure.eof) {
        end_worker(kExitOk);
    }
    report("protocol error: " + failure.message);
    end_worker(kExitBroken);
}

ExecResult exec_result_from(const json& result, const ExecRequest& request) {
    ExecResult out;
    out.argv = result.value("argv", request.argv);
    if (result.contains("exit_code") && !result["exit_code"].is_null()) {
        out.exit_code = result["exit_code"].get<int>();
    }
    if (result.contains("signal") && !result["signal"].is_null()) {
        out.signal = result["signal"].get<int>();
    }
    out.timed_out = result.value("timed_out", false);
    out.stdout_text = result.value("stdout", "");
    out.stderr_text = result.value("stderr", "");
    out.stdout_bytes = result.value("stdout_bytes", std::int64_t{0});
    out.stderr_bytes = result.value("stderr_bytes", std::int64_t{0});
    out.duration = result.value("duration_ms", 0.0) / 1000.0;
    if (result.contains("error") && !result["error"].is_null()) {
        out.error = result["error"].get<std::string>();
    }
    return out;
}

// Raises an exception class of the runbook package (defined in Python) from C++.
[[noreturn]] void raise_runbook_error(const char* name, const std::string& message) {
    py::object error = py::module_::import("runbook").attr(name)(message);
    PyErr_SetObject(error.get_type().ptr(), error.ptr());
    throw py::error_already_set();
}

// ctx's channel inside the worker: log lines and requests to runbookd over the socket. One per
// step, so every frame names the step whose ctx sent it; the ctx refuses all calls once its
// step has ended (runbook_module.cpp, StepLife), so nothing is sent for an ended step.
class WorkerChannel final : public Channel {
  public:
    WorkerChannel(Connection& connection, std::int64_t step)
        : connection_(connection), step_(step) {}

    void log(const std::string& level, const std::string& message) override {
        json body = {{"type", "log"}, {"step", step_}, {"level", level}, {"message", message}};
        py::gil_scoped_release release;
        if (auto error = connection_.send(body)) {
            report(*error);
            end_worker(kExitBroken);
        }
    }

    ExecResult exec(const ExecRequest& request) override {
        json body = {
            {"op", "exec"}, {"argv", request.argv}, {"timeout_ms", nullptr}, {"env", nullptr}};
        if (request.timeout) {
            body["timeout_ms"] = static_cast<std::int64_t>(*request.timeout * 1000.0 + 0.5);
        }
        if (request.env) {
            body["env"] = *request.env;
        }
        json reply = ask(std::move(body));
        if (!reply.value("ok", false)) {
            throw py::value_error("exec refused by runbookd: " + error_text(reply));
        }
        try {
            return exec_result_from(reply.value("result", json::object()), request);
        } catch (const json::exception& error) {
            report(std::string("protocol error: malformed exec reply: ") + error.what());
            end_worker(kExitBroken);
        }
    }

    std::string secret(const std::string& name) override {
        json reply = ask({{"op", "secret"}, {"name", name}});
        const json& value = reply["value"];
        if (!reply.value("ok", false) || !value.is_string()) {
            raise_runbook_error("SecretError",
                                "secret '" + name + "' is not available: " + error_text(reply));
        }
        return value.get<std::string>();
    }

  private:
    static std::string error_text(const json& reply) {
        const json& error = reply.contains("error") ? reply["error"] : json();
        return error.is_string() ? error.get<std::string>() : "no reason given";
    }

    // Sends a request and waits for its reply, without the GIL so step threads keep running.
    json ask(json body) {
        body["type"] = "request";
        body["step"] = step_;
        std::variant<json, ReadFailure> reply;
        {
            py::gil_scoped_release release;
            std::int64_t id = connection_.next_request_id();
            body["id"] = id;
            if (auto error = connection_.send(body)) {
                report(*error);
                end_worker(kExitBroken);
            }
            reply = connection_.wait_reply(id);
        }
        if (auto* failure = std::get_if<ReadFailure>(&reply)) {
            end_on(*failure);
        }
        return std::get<json>(std::move(reply));
    }

    Connection& connection_;
    std::int64_t step_;
};

py::object json_to_python(const json& value) {
    return py::module_::import("json").attr("loads")(value.dump());
}

int saved_fd(int fd) {
    return ::fcntl(fd, F_DUPFD_CLOEXEC, 10);
}

void flush_python_streams() {
    py::module_ sys = py::module_::import("sys");
    for (const char* name : {"stdout", "stderr"}) {
        try {
            py::object stream = sys.attr(name);
            if (!stream.is_none()) {
                stream.attr("flush")();
            }
        } catch (py::error_already_set&) {
            // A step that closed or replaced the stream: nothing more to flush.
        }
    }
    std::fflush(stdout);
    std::fflush(stderr);
}

// Runs one `run` message; returns the `result` message.
class StepRunner {
  public:
    explicit StepRunner(Connection& connection)
        : connection_(connection),
          runner_(py::module_::import("runbook._runner")),
          state_(runner_.attr("WorkerState")()),
          original_stdout_(saved_fd(STDOUT_FILENO)),
          original_stderr_(saved_fd(STDERR_FILENO)) {
        diagnostics_fd = original_stderr_;
    }

    // A malformed `run` message is a protocol error: the text, else the result.
    std::variant<json, std::string> run(Frame& frame) {
        const json& body = frame.body;
        if (!body["step"].is_number_integer() || !body["target"].is_object() ||
            !body["context"].is_object() || frame.fds.size() != 2) {
            return std::string("malformed run message (step, target, context and 2 descriptors)");
        }
        std::int64_t step = body["step"].get<std::int64_t>();
        // Owned by Python: a thread the step leaves behind may keep its ctx, and so this channel.
        py::object channel = py::cast(static_cast<Channel*>(new WorkerChannel(connection_, step)),
                                      py::return_value_policy::take_ownership);

        ::dup2(frame.fds[0], STDOUT_FILENO);
        ::dup2(frame.fds[1], STDERR_FILENO);
        ::close(frame.fds[0]);
        ::close(frame.fds[1]);
        py::object outcome = call_step(body, channel);
        flush_python_streams();
        kill_left_processes_of_step();
        // Our own 1 and 2 back: the pipes' last copies in this process close, so runbookd sees
        // end-of-file once the step's children (if any) have closed theirs too.
        ::dup2(original_stdout_, STDOUT_FILENO);
        ::dup2(original_stderr_, STDERR_FILENO);

        py::object finished = runner_.attr("finish")(outcome, state_.attr("restore")());
        json result = json::parse(finished.attr("to_json")().cast<std::string>());
        result["type"] = "result";
        result["step"] = step;
        return result;
    }

  private:
    // Like an exec step's group after its program exits: what the step started and left
    // running is killed, so it neither outlives the step nor holds the step's pipes open. The
    // outcome stands; one line in the step's stderr (descriptor 2 is still its pipe) says so.
    static void kill_left_processes_of_step() {
        std::vector<LeftProcess> killed;
        {
            py::gil_scoped_release release;
            killed = kill_left_processes();
        }
        if (killed.empty()) {
            return;
        }
        std::string line = "runbookd-python-worker: " + describe_killed(killed) + "\n";
        [[maybe_unused]] ssize_t n = ::write(STDERR_FILENO, line.data(), line.size());
    }

    py::object call_step(const json& body, const py::object& channel) {
        try {
            return runner_.attr("run_message")(json_to_python(body["target"]),
                                               json_to_python(body["context"]), channel);
        } catch (py::error_already_set& error) {
            // Only a failure of the runner itself gets here; the step's own are outcomes.
            std::string message = error.what();
            report("step runner failed: " + message);
            return runner_.attr("StepOutcome")(
                false, 1, py::dict(),
                py::dict(py::arg("type") = "WorkerError", py::arg("message") = message,
                         py::arg("traceback") = ""));
        }
    }

    Connection& connection_;
    py::module_ runner_;
    py::object state_;
    int original_stdout_;
    int original_stderr_;
};

json hello() {
    py::module_ sys = py::module_::import("sys");
    py::object package = py::module_::import("runbook").attr("__path__");
    return {{"type", "hello"},
            {"protocol", 1},
            {"pid", ::getpid()},
            {"python", sys.attr("version").attr("split")()[py::int_(0)].cast<std::string>()},
            {"runbook_module", py::list(package)[0].cast<std::string>()}};
}

std::optional<std::string> apply_memory_limit(const WorkerOptions& options) {
    if (!options.memory_limit) {
        return std::nullopt;
    }
    rlimit limit{*options.memory_limit, *options.memory_limit};
    if (::setrlimit(RLIMIT_AS, &limit) != 0) {
        return std::string("setting the memory limit failed: ") + std::strerror(errno);
    }
    return std::nullopt;
}

// Importing `signal` installs Python's SIGINT handler even when the interpreter was told to
// install none (CPython 3.11 does so whenever SIGINT is at its default); the worker keeps
// every disposition at the default, so it is put back here, before WorkerState notes them.
const char* kLoadPackage = R"(
import importlib.util, os, signal, sys
signal.signal(signal.SIGINT, signal.SIG_DFL)
sys.path[0:0] = [runbooks_dir, *extra_paths]
_init = os.path.join(package_dir, "runbook", "__init__.py")
_spec = importlib.util.spec_from_file_location(
    "runbook", _init, submodule_search_locations=[os.path.dirname(_init)])
_module = importlib.util.module_from_spec(_spec)
sys.modules["runbook"] = _module
_spec.loader.exec_module(_module)
)";

PyModuleDef core_module_definition{};

void load_runbook_package(const WorkerOptions& options) {
    py::module_ core =
        py::module_::create_extension_module("runbook._core", nullptr, &core_module_definition);
    bindings::define_runbook_module(core);
    py::module_ sys = py::module_::import("sys");
    sys.attr("modules")["runbook._core"] = core;

    py::dict scope;
    scope["runbooks_dir"] = options.runbooks_dir;
    scope["extra_paths"] = options.paths;
    scope["package_dir"] = options.package_dir;
    py::exec(kLoadPackage, scope);
}

}  // namespace

std::optional<std::string> start_interpreter(const WorkerOptions& options) {
    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    // Isolated: PYTHONPATH, PYTHONHOME and the user's site-packages are ignored. No signal
    // handlers: children a step starts must not inherit SIGPIPE ignored, and the worker's
    // signals are runbookd's to send. No __pycache__: runbooks may be on a read-only volume.
    // Unbuffered stdio: what a step prints reaches its pipe at once, so a step killed at its
    // timeout or crashing still leaves its output in the record.
    config.install_signal_handlers = 0;
    config.write_bytecode = 0;
    config.buffered_stdio = 0;
    config.parse_argv = 0;
    PyConfig_SetBytesString(&config, &config.program_name, RUNBOOKD_PYTHON_EXECUTABLE);
    PyConfig_SetBytesString(&config, &config.executable, RUNBOOKD_PYTHON_EXECUTABLE);
    try {
        py::initialize_interpreter(&config, 0, nullptr, false);
        load_runbook_package(options);
    } catch (std::exception& error) {
        return std::string("starting Python failed: ") + error.what();
    }
    return std::nullopt;
}

int serve(const WorkerOptions& options) {
    Connection connection(options.channel_fd);
    StepRunner runner(connection);
    if (auto error = apply_memory_limit(options)) {
        report(*error);
        return kExitBroken;
    }
    if (auto error = connection.send(hello())) {
        report(*error);
        return kExitBroken;
    }
    while (true) {
        std::variant<Frame, ReadFailure> command;
        {
            py::gil_scoped_release release;
            command = connection.wait_command();
        }
        if (auto* failure = std::get_if<ReadFailure>(&command)) {
            end_on(*failure);
        }
        Frame& frame = std::get<Frame>(command);
        std::string type = frame.body["type"].get<std::string>();
        if (type == "exit") {
            return kExitOk;
        }
        if (type != "run") {
            report("protocol error: unexpected message type " + type);
            return kExitBroken;
        }
        std::variant<json, std::string> result = runner.run(frame);
        if (auto* error = std::get_if<std::string>(&result)) {
            report("protocol error: " + *error);
            return kExitBroken;
        }
        if (auto error = connection.send(std::get<json>(result))) {
            report(*error);
            return kExitBroken;
        }
    }
}

int check(const std::vector<std::string>& targets) {
    py::module_ runner = py::module_::import("runbook._runner");
    py::module_ json_module = py::module_::import("json");
    bool all_ok = true;
    for (const std::string& target : targets) {
        py::object verdict = runner.attr("check_target")(target);
        all_ok = all_ok && verdict["ok"].cast<bool>();
        std::string line = json_module.attr("dumps")(verdict).cast<std::string>() + "\n";
        std::fputs(line.c_str(), stdout);
    }
    std::fflush(stdout);
    return all_ok ? kExitOk : kExitCheckFailed;
}

[[noreturn]] void exit_worker(int status) {
    end_worker(status);
}

}  // namespace runbookd::worker
