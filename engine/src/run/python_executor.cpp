#include "run/python_executor.hpp"

#include <algorithm>
#include <csignal>

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include <runbookd/python_step.hpp>

#include "common/log.hpp"
#include "exec/redact.hpp"
#include "exec/step_output.hpp"
#include "metrics/runbookd_metrics.hpp"

namespace runbookd::run {
namespace {

namespace asio = boost::asio;
using Json = nlohmann::json;

constexpr std::size_t kMaxOutputsBytes = 64 * 1024;
constexpr std::size_t kMaxLogEvents = 200;  // per attempt; later lines are counted only
constexpr std::size_t kMaxLogMessage = 4096;

std::string dump(const Json& value) {
    return value.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Json alert_json(const Alert& alert) {
    return Json{{"labels", alert.labels},
                {"annotations", alert.annotations},
                {"status", alert_status_name(alert.status)},
                {"fingerprint", alert.fingerprint},
                {"starts_at", alert.starts_at.to_rfc3339_millis()},
                {"ends_at", alert.ends_at ? Json(alert.ends_at->to_rfc3339_millis()) : Json()},
                {"generator_url", alert.generator_url}};
}

Json context_json(const AttemptContext& ctx) {
    Json steps = Json::object();
    for (const auto& [name, r] : *ctx.steps) {
        Json outputs = r.outputs.empty() ? Json::object() : Json::parse(r.outputs, nullptr, false);
        steps[name] = {{"state", r.state},
                       {"exit_code", r.exit_code ? Json(*r.exit_code) : Json()},
                       {"outputs", outputs.is_object() ? outputs : Json::object()},
                       {"output", r.stdout_excerpt}};
    }
    return Json{
        {"alert", ctx.alert != nullptr ? alert_json(*ctx.alert) : Json()},
        {"run",
         {{"id", ctx.run_id},
          {"runbook", ctx.runbook->name},
          {"trigger", ctx.trigger},
          {"actor", ctx.actor}}},
        {"step", {{"name", ctx.step->name}, {"index", ctx.step_index}, {"attempt", ctx.attempt}}},
        {"params", ctx.params != nullptr ? Json(*ctx.params) : Json::object()},
        {"steps", steps},
        {"dry_run", ctx.dry_run},
        {"timeout_ms", ctx.timeout.count()}};
}

// One attempt of a Python step. Shared by the callbacks of the pool, the worker and the
// output pipes; PythonAttempt (the Attempt the run holds) forwards to it.
class PythonStep final : public python::StepChannel,
                         public std::enable_shared_from_this<PythonStep> {
  public:
    PythonStep(python::Pool& pool, exec::ProcessRunner& runner, const ProcessDefaults& defaults,
               const exec::SecretRedaction& redaction, const PythonStepConfig& config,
               const AttemptContext& ctx)
        : pool_(pool),
          runner_(runner),
          defaults_(defaults),
          redaction_(redaction),
          io_(pool.io()),
          deadline_(io_),
          drain_(io_),
          timeout_(ctx.timeout),
          grace_(config.grace.value_or(defaults.grace)),
          log_context_(
              fmt::format("run={} step={} attempt={} ", ctx.run_id, ctx.step->name, ctx.attempt)),
          output_path_(defaults.output_dir.empty() || defaults.output_cap_bytes <= 0
                           ? std::string()
                           : exec::output_file_path(defaults.output_dir, ctx.run_id, ctx.step_index,
                                                    ctx.attempt)),
          log_(log::get("python")) {
        target_ = config.code.empty()
                      ? Json{{"module", config.module}, {"function", config.function}}
                      : Json{{"code", config.code},
                             {"filename", config.source_file},
                             {"line", config.first_line}};
        context_ = context_json(ctx);
        runbook_env_ = runbook_env(ctx);
    }

    void start(std::function<void(int)> spawned, std::function<void(AttemptOutcome)> done) {
        spawned_ = std::move(spawned);
        done_ = std::move(done);
        started_ = std::chrono::steady_clock::now();
        deadline_.expires_after(timeout_);
        deadline_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
            if (!e) {
                self->on_deadline();
            }
        });
        ticket_ = pool_.acquire(
            [self = shared_from_this()](std::shared_ptr<python::Worker> w) {
                self->ticket_ = 0;
                self->run_on(std::move(w));
            },
            [self = shared_from_this()](std::string why) {
                self->ticket_ = 0;
                if (!self->finished_ && !self->stopping_) {
                    self->outcome_.spawn_failed = true;
                    self->fail_now(std::move(why) + "; the step was not started");
                }
            });
    }

    // The target and the parameters the function would see, for a dry run's plan.
    Json describe() const {
        Json out = target_;
        out["params"] = context_.value("params", Json::object());
        return out;
    }

    void cancel(std::string reason) {
        if (finished_ || stopping_) {
            return;
        }
        outcome_.cancelled = true;
        stop(std::move(reason));
    }

    void on_message(const Json& message) override {
        const std::string type = message.value("type", "");
        if (type == "log") {
            on_log(message);
        } else if (type == "request") {
            on_request(message);
        } else if (type == "result") {
            on_result(message);
        }
    }

    void on_worker_lost(python::WorkerEnd end) override {
        worker_lost_ = true;
        for (auto& t : end.result.transitions) {
            note(std::move(t.kind), std::move(t.detail));
        }
        if (!got_result_) {
            record_worker_end(end);
        }
        finish_after_output();
    }

  private:
    void run_on(std::shared_ptr<python::Worker> worker) {
        if (finished_ || stopping_) {
            pool_.release(std::move(worker), false);
            return;
        }
        worker_ = std::move(worker);
        int out[2];
        int err[2];
        if (::pipe2(out, O_CLOEXEC) != 0) {
            fail_now(fmt::format("cannot create a pipe: {}", std::strerror(errno)));
            return;
        }
        if (::pipe2(err, O_CLOEXEC) != 0) {
            ::close(out[0]);
            ::close(out[1]);
            fail_now(fmt::format("cannot create a pipe: {}", std::strerror(errno)));
            return;
        }
        output_ = std::make_shared<exec::StepOutput>(
            io_,
            exec::StepOutput::Options{defaults_.excerpt_bytes, defaults_.secrets, output_path_,
                                      defaults_.output_cap_bytes, log_context_},
            [weak = weak_from_this()](std::string kind, std::string detail) {
                if (auto self = weak.lock()) {
                    self->note(std::move(kind), std::move(detail));
                }
            });
        output_->start(out[0], err[0], [self = shared_from_this()] { self->maybe_finish(); });
        const std::int64_t id = worker_->begin_step(shared_from_this());
        if (spawned_) {
            spawned_(worker_->pid());
        }
        worker_->send(
            Json{{"type", "run"}, {"step", id}, {"target", target_}, {"context", context_}},
            {out[1], err[1]});
        log_->debug("python step sent {}worker={}", log_context_, worker_->pid());
    }

    // The worker ended before its result. Stopped by runbookd (timeout, cancel, a protocol
    // error): the reason, said once, and the signal as for an exec step stopped at its
    // timeout. Ended by itself: how, with its exit status or its own signal, so that
    // `retry_on` treats it as it treats an exec step.
    void record_worker_end(const python::WorkerEnd& end) {
        const exec::ProcessResult& r = end.result;
        const bool signalled = r.ending == exec::ProcessResult::Ending::Signaled;
        if (stopping_) {
            outcome_.error = stop_reason_;
            if (signalled) {
                outcome_.signal = r.signal;
            }
            return;
        }
        if (!end.stop_reason.empty()) {
            outcome_.error = end.stop_reason;
            return;
        }
        outcome_.error = python::describe_worker_end(r);
        if (signalled && !end.signal_from_runbookd) {
            outcome_.signal = r.signal;
        } else if (r.ending == exec::ProcessResult::Ending::Exited) {
            outcome_.exit_code = r.exit_code;
        }
    }

    void on_log(const Json& message) {
        const std::string level = message.value("level", "info");
        std::string text = message.value("message", "");
        if (text.size() > kMaxLogMessage) {
            text.resize(kMaxLogMessage);
            text += " [...]";
        }
        if (log_events_ >= kMaxLogEvents) {
            ++logs_dropped_;
            return;
        }
        ++log_events_;
        const auto spd = level == "error"     ? spdlog::level::err
                         : level == "warning" ? spdlog::level::warn
                                              : spdlog::level::info;
        text = redaction_.text(text);
        log_->log(spd, "step log {}level={} message={}", log_context_, log::quote(level),
                  log::quote(text));
        note_log(level, std::move(text));
    }

    void on_request(const Json& message) {
        const Json id = message.value("id", Json());
        const std::string op = message.value("op", "");
        if (op == "secret") {
            const std::string name = message.value("name", "");
            const auto found = std::find_if(defaults_.secrets.begin(), defaults_.secrets.end(),
                                            [&name](const auto& s) { return s.first == name; });
            if (found == defaults_.secrets.end()) {
                reply(Json{{"type", "reply"},
                           {"id", id},
                           {"ok", false},
                           {"error", fmt::format("secret \"{}\" is not configured (config "
                                                 "secrets:)",
                                                 name)}});
                return;
            }
            reply(Json{{"type", "reply"}, {"id", id}, {"ok", true}, {"value", found->second}});
            return;
        }
        if (op == "exec") {
            run_exec(id, message);
            return;
        }
        reply(Json{{"type", "reply"},
                   {"id", id},
                   {"ok", false},
                   {"error", fmt::format("unknown request op \"{}\"", op)}});
    }

    // ctx.exec: a child process with an exec step's guarantees (own group, bounded output,
    // RUNBOOKD_INSTANCE, secrets redacted), its timeout capped by what is left of the step's.
    void run_exec(const Json& id, const Json& message) {
        exec::ProcessSpec spec;
        const Json argv = message.value("argv", Json());
        if (!argv.is_array() || argv.empty() ||
            !std::all_of(argv.begin(), argv.end(), [](const Json& a) { return a.is_string(); })) {
            reply(Json{{"type", "reply"},
                       {"id", id},
                       {"ok", false},
                       {"error", "exec: argv must be a non-empty list of strings"}});
            return;
        }
        spec.argv = argv.get<std::vector<std::string>>();
        auto env = exec_env(message.value("env", Json()));
        if (!env) {
            reply(
                Json{{"type", "reply"}, {"id", id}, {"ok", false}, {"error", env.error().message}});
            return;
        }
        for (std::size_t i = 0; i < spec.argv.size(); ++i) {
            if (spec.argv[i].find('\0') != std::string::npos) {
                reply(Json{{"type", "reply"},
                           {"id", id},
                           {"ok", false},
                           {"error", fmt::format("exec: argv element {} contains a NUL byte", i)}});
                return;
            }
        }
        spec.env = std::move(*env);
        const auto left = std::chrono::duration_cast<exec::Millis>(
            timeout_ - (std::chrono::steady_clock::now() - started_));
        spec.timeout = std::max(exec::Millis(1), left);
        if (const Json t = message.value("timeout_ms", Json()); t.is_number_integer()) {
            spec.timeout = std::min(spec.timeout, exec::Millis(std::max<std::int64_t>(1, t)));
        }
        spec.cwd = defaults_.cwd;
        spec.grace = defaults_.grace;
        spec.drain = defaults_.drain;
        spec.excerpt_bytes = defaults_.excerpt_bytes;
        spec.nice = defaults_.nice;
        spec.limits = defaults_.default_limits;
        spec.redact = defaults_.secrets;
        spec.log_context = log_context_ + "exec=1 ";
        auto handle = runner_.start(
            spec, [self = shared_from_this(), id, argv = spec.argv](exec::ProcessResult r) {
                self->on_exec_done(id, argv, std::move(r));
            });
        execs_.push_back(std::move(handle));
    }

    // A ctx.exec command's environment, as an argv step's: the base environment, the
    // request's `env`, then the RUNBOOK_* variables and RUNBOOKD_INSTANCE, which the request
    // may not name. The error in words when the request's `env` is refused.
    Result<std::vector<std::string>> exec_env(const Json& extra) const {
        auto vars = defaults_.base_env;
        if (!extra.is_null() && !extra.is_object()) {
            return exec_refused("exec: env must be an object of strings");
        }
        for (const auto& [name, value] : extra.items()) {
            if (!value.is_string()) {
                return exec_refused(fmt::format("exec: env {} is not a string", name));
            }
            if (is_reserved_env(name)) {
                return exec_refused(
                    fmt::format("exec: env {} is reserved: runbookd sets RUNBOOK_*, TRACEPARENT "
                                "and {} itself",
                                name, exec::kInstanceEnv));
            }
            const auto& text = value.get_ref<const std::string&>();
            if (name.empty() || name.find('=') != std::string::npos ||
                (name + text).find('\0') != std::string::npos) {
                return exec_refused(
                    fmt::format("exec: env {} is not a valid variable (empty, "
                                "'=' in its name or a NUL byte)",
                                Json(name).dump()));
            }
            vars.emplace_back(name, text);
        }
        vars.insert(vars.end(), runbook_env_.begin(), runbook_env_.end());
        if (!defaults_.instance.empty()) {
            vars.emplace_back(std::string(exec::kInstanceEnv), defaults_.instance);
        }
        std::vector<std::string> out;
        out.reserve(vars.size());
        for (const auto& [k, v] : vars) {
            out.push_back(k + "=" + v);
        }
        return out;
    }

    static Error exec_refused(std::string why) {
        return make_error(ErrorCode::InvalidArgument, std::move(why));
    }

    void on_exec_done(const Json& id, const std::vector<std::string>& argv, exec::ProcessResult r) {
        const bool exited = r.ending == exec::ProcessResult::Ending::Exited;
        const Json exit_code = exited ? Json(r.exit_code) : Json();
        const Json signal =
            r.ending == exec::ProcessResult::Ending::Signaled ? Json(r.signal) : Json();
        note_structured("exec", Json{{"argv", redaction_.argv(argv)},
                                     {"exit_code", exit_code},
                                     {"signal", signal},
                                     {"timed_out", r.timed_out},
                                     {"duration_ms", r.duration.count()}});
        reply(Json{{"type", "reply"},
                   {"id", id},
                   {"ok", true},
                   {"result",
                    {{"argv", argv},
                     {"exit_code", exit_code},
                     {"signal", signal},
                     {"timed_out", r.timed_out},
                     {"stdout", r.stdout_excerpt},
                     {"stderr", r.stderr_excerpt},
                     {"stdout_bytes", r.stdout_bytes},
                     {"stderr_bytes", r.stderr_bytes},
                     {"duration_ms", r.duration.count()},
                     {"error", r.error.empty() ? Json() : Json(r.error)}}}});
    }

    void reply(const Json& message) {
        if (worker_ && !got_result_ && !worker_lost_) {
            worker_->send(message);
        }
    }

    void on_result(const Json& message) {
        got_result_ = true;
        const bool ok = message.value("ok", false);
        const Json code = message.value("exit_code", Json());
        outcome_.exit_code = code.is_number_integer() ? code.get<int>() : (ok ? 0 : 1);
        const Json error = message.value("error", Json());
        if (error.is_object()) {
            outcome_.error =
                fmt::format("{}: {}", error.value("type", "Exception"), error.value("message", ""));
        } else if (!ok) {
            outcome_.error = fmt::format("exited with code {}", *outcome_.exit_code);
        }
        const Json outputs = message.value("outputs", Json::object());
        const std::string text = outputs.is_object() && !outputs.empty() ? dump(outputs) : "";
        bool failed = !ok;
        if (text.size() > kMaxOutputsBytes) {
            failed = true;
            outcome_.error = fmt::format(
                "the step's outputs are {} bytes as JSON, more than the "
                "limit of {} bytes",
                text.size(), kMaxOutputsBytes);
        } else {
            outcome_.outputs = text;
        }
        note_retire(message.value("retire", Json()));
        const Json left = message.value("left_behind", Json::array());
        if (left.is_array() && !left.empty()) {
            failed = true;
            retire_ = true;
            metrics::runbookd_metrics().python_worker_restart(
                metrics::WorkerRestart::LeftStateBehind);
            std::string what;
            for (const auto& item : left) {
                what += (what.empty() ? "" : "; ") +
                        (item.is_string() ? item.get<std::string>() : dump(item));
            }
            outcome_.error = "python step left state behind: " + what;
            if (outcome_.exit_code == 0) {
                outcome_.exit_code = 1;
            }
        }
        outcome_.succeeded = !failed;
        finish_after_output();
    }

    // `retire` in a result: the worker asks to be replaced after this step (it knows its
    // interpreter is in doubt). The step's outcome stays what the result says; each reason
    // becomes an attempt.worker_retired event.
    void note_retire(const Json& retire) {
        if (!retire.is_array() || retire.empty()) {
            return;
        }
        retire_ = true;
        metrics::runbookd_metrics().python_worker_restart(metrics::WorkerRestart::Retired);
        for (const auto& reason : retire) {
            note("worker_retired", reason.is_string() ? reason.get<std::string>() : dump(reason));
        }
        log_->info("python worker asked to be retired {}worker={} reasons={}", log_context_,
                   worker_ ? worker_->pid() : -1, log::quote(redaction_.text(dump(retire))));
    }

    // The result (or the worker's end) is in; the step's output is complete once both pipes
    // reach end-of-file. Something the step started may keep them open: it gets the drain
    // period, as an exec step's children do.
    void finish_after_output() {
        if (finished_) {
            return;
        }
        if (!output_ || !output_->open()) {
            finish();
            return;
        }
        drain_.expires_after(defaults_.drain);
        drain_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
            if (!e && !self->finished_) {
                self->note("drain_expired", fmt::format("output still open {} ms after the step "
                                                        "ended",
                                                        self->defaults_.drain.count()));
                self->finish();
            }
        });
    }

    void maybe_finish() {
        if (got_result_ || worker_lost_) {
            finish();
        }
    }

    void on_deadline() {
        if (finished_ || stopping_ || got_result_ || worker_lost_) {
            return;
        }
        outcome_.timed_out = true;
        std::string reason = fmt::format("timed out after {} ms", timeout_.count());
        if (ticket_ != 0 && !pool_.start_error().empty()) {
            reason += "; no python worker was free: " + pool_.start_error();
        } else if (ticket_ != 0) {
            reason += " waiting for a free python worker";
        }
        stop(std::move(reason));
    }

    void stop(std::string reason) {
        stopping_ = true;
        stop_reason_ = std::move(reason);
        for (const auto& h : execs_) {
            h->cancel(stop_reason_);
        }
        if (ticket_ != 0) {
            pool_.withdraw(ticket_);
            ticket_ = 0;
            outcome_.error = stop_reason_ + "; the step was not started";
            outcome_.spawn_failed = outcome_.cancelled;
            asio::post(io_, [self = shared_from_this()] { self->finish(); });
            return;
        }
        if (worker_ && !got_result_ && !worker_lost_) {
            log_->info("stopping python worker {}worker={} reason={}", log_context_, worker_->pid(),
                       log::quote(stop_reason_));
            // TODO(runbookd): a timeout stops the worker through a cancel, so the process-kill
            // metric counts it as `cancel`; the handle has no way to say "timed out" yet.
            worker_->stop(stop_reason_, grace_);
            retire_ = true;
            metrics::runbookd_metrics().python_worker_restart(
                outcome_.timed_out ? metrics::WorkerRestart::TimedOut
                                   : metrics::WorkerRestart::Cancelled);
        }
    }

    void fail_now(std::string error) {
        outcome_.error = std::move(error);
        if (worker_) {
            pool_.release(std::move(worker_), true);
        }
        asio::post(io_, [self = shared_from_this()] { self->finish(); });
    }

    void note(std::string kind, std::string detail) {
        outcome_.transitions.push_back({Timestamp::now(), std::move(kind), std::move(detail)});
    }

    // An event whose detail is `detail` itself (a JSON object), not {"detail": text}.
    void note_structured(std::string kind, const Json& detail) {
        outcome_.transitions.push_back({Timestamp::now(), std::move(kind), dump(detail), true});
    }

    // attempt.log: {"level", "message"}, the message already redacted.
    void note_log(const std::string& level, std::string message) {
        note_structured("log", Json{{"level", level}, {"message", std::move(message)}});
    }

    void finish() {
        if (finished_) {
            return;
        }
        finished_ = true;
        deadline_.cancel();
        drain_.cancel();
        if (logs_dropped_ > 0) {
            note_log("warning",
                     fmt::format("{} more log lines were not recorded (at most {} per attempt)",
                                 logs_dropped_, kMaxLogEvents));
        }
        if (output_) {
            output_->close();
            exec::ProcessResult r;
            output_->fill(r);
            outcome_.stdout_excerpt = std::move(r.stdout_excerpt);
            outcome_.stderr_excerpt = std::move(r.stderr_excerpt);
            outcome_.stdout_bytes = r.stdout_bytes;
            outcome_.stderr_bytes = r.stderr_bytes;
            outcome_.output_path = std::move(r.output_path);
            outcome_.output_stored_bytes = r.output_stored_bytes;
            outcome_.output_truncated = r.output_truncated;
            if (!r.output_error.empty()) {
                note("output_error", r.output_error);
            }
        }
        if (worker_lost_ || stopping_) {
            outcome_.succeeded = false;
            if (outcome_.error.empty()) {
                outcome_.error = stop_reason_;
            }
        }
        if (worker_ && !worker_lost_) {
            pool_.release(std::move(worker_), retire_);
        }
        worker_.reset();
        // Both hold callbacks that hold this step: dropping them breaks the cycles, so the
        // step is freed once its last pending callback has run.
        output_.reset();
        execs_.clear();
        auto done = std::move(done_);
        done_ = nullptr;
        if (done) {
            done(std::move(outcome_));
        }
    }

    python::Pool& pool_;
    exec::ProcessRunner& runner_;
    const ProcessDefaults& defaults_;
    const exec::SecretRedaction& redaction_;
    asio::io_context& io_;
    asio::steady_timer deadline_;
    asio::steady_timer drain_;
    Duration timeout_;
    exec::Millis grace_;
    std::string log_context_;
    std::string output_path_;
    std::shared_ptr<spdlog::logger> log_;
    Json target_;
    Json context_;
    std::vector<std::pair<std::string, std::string>> runbook_env_;  // RUNBOOK_* for ctx.exec
    std::function<void(int)> spawned_;
    std::function<void(AttemptOutcome)> done_;
    std::chrono::steady_clock::time_point started_;
    std::uint64_t ticket_ = 0;
    std::shared_ptr<python::Worker> worker_;
    std::shared_ptr<exec::StepOutput> output_;
    std::vector<std::shared_ptr<exec::ProcessHandle>> execs_;
    AttemptOutcome outcome_;
    std::string stop_reason_;
    std::size_t log_events_ = 0;
    std::size_t logs_dropped_ = 0;
    bool stopping_ = false;
    bool got_result_ = false;
    bool worker_lost_ = false;
    bool retire_ = false;
    bool finished_ = false;
};

class PythonAttempt final : public Attempt {
  public:
    PythonAttempt(std::shared_ptr<PythonStep> step, std::vector<std::string> argv)
        : step_(std::move(step)), argv_(std::move(argv)) {}

    const std::vector<std::string>& argv() const override { return argv_; }
    const std::string& cwd() const override { return cwd_; }
    Json describe() const override {
        Json out = Attempt::describe();
        out["python"] = step_->describe();
        return out;
    }
    void start(std::function<void(int)> spawned,
               std::function<void(AttemptOutcome)> done) override {
        step_->start(std::move(spawned), std::move(done));
    }
    void cancel(std::string reason) override { step_->cancel(std::move(reason)); }

  private:
    std::shared_ptr<PythonStep> step_;
    std::vector<std::string> argv_;
    std::string cwd_;
};

class PythonExecutor final : public StepExecutor {
  public:
    PythonExecutor(python::Pool& pool, exec::ProcessRunner& runner, ProcessDefaults defaults)
        : pool_(pool),
          runner_(runner),
          defaults_(std::move(defaults)),
          redaction_(defaults_.secrets) {}

    std::string_view kind() const override { return "python"; }

    Result<std::unique_ptr<Attempt>> prepare(const AttemptContext& ctx) override {
        const auto* config = dynamic_cast<const PythonStepConfig*>(ctx.step->config.get());
        if (config == nullptr) {
            return make_error(ErrorCode::Internal, "preparing step failed: not a python step");
        }
        auto step =
            std::make_shared<PythonStep>(pool_, runner_, defaults_, redaction_, *config, ctx);
        return std::unique_ptr<Attempt>(std::make_unique<PythonAttempt>(
            std::move(step), std::vector<std::string>{"python", config->target()}));
    }

  private:
    python::Pool& pool_;
    exec::ProcessRunner& runner_;
    ProcessDefaults defaults_;
    exec::SecretRedaction redaction_;  // of defaults_.secrets
};

}  // namespace

std::shared_ptr<StepExecutor> make_python_executor(python::Pool& pool, exec::ProcessRunner& runner,
                                                   ProcessDefaults defaults) {
    return std::make_shared<PythonExecutor>(pool, runner, std::move(defaults));
}

}  // namespace runbookd::run
