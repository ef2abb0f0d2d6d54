#include "run/argv_executor.hpp"

#include <algorithm>
#include <cctype>
#include <csignal>
#include <cstdlib>

#include <fmt/format.h>

#include <runbookd/argv_step.hpp>

#include "exec/output.hpp"

namespace runbookd::run {
namespace {

constexpr const char* kShell = "/bin/sh";
constexpr const char* kStandardPath =
    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// A program receives its arguments and environment as C strings: a NUL byte would cut a value
// short without anyone noticing, so a value holding one is refused.
Status check_no_nul(const std::string& value, std::string_view what) {
    if (value.find('\0') != std::string::npos) {
        return make_error(ErrorCode::InvalidArgument,
                          fmt::format("{} contains a NUL byte, which cannot be passed to a "
                                      "program",
                                      what));
    }
    return {};
}

class ArgvAttempt final : public Attempt {
  public:
    ArgvAttempt(exec::ProcessRunner& runner, exec::ProcessSpec spec)
        : runner_(runner), spec_(std::move(spec)) {}

    const std::vector<std::string>& argv() const override { return spec_.argv; }
    const std::string& cwd() const override { return spec_.cwd; }

    nlohmann::json describe() const override {
        nlohmann::json env = nlohmann::json::object();
        for (const auto& entry : spec_.env) {
            const auto eq = entry.find('=');
            env[entry.substr(0, eq)] = eq == std::string::npos ? "" : entry.substr(eq + 1);
        }
        nlohmann::json out = Attempt::describe();
        out["env"] = std::move(env);
        out["grace_ms"] = spec_.grace.count();
        if (!spec_.user.empty()) {
            out["user"] = spec_.user;
        }
        if (!spec_.group.empty()) {
            out["group"] = spec_.group;
        }
        return out;
    }

    void start(std::function<void(int)> spawned,
               std::function<void(AttemptOutcome)> done) override {
        spec_.on_spawned = [spawned = std::move(spawned)](pid_t pid) {
            spawned(static_cast<int>(pid));
        };
        handle_ = runner_.start(spec_, [done = std::move(done)](exec::ProcessResult r) {
            AttemptOutcome out;
            out.succeeded = r.succeeded();
            if (r.ending == exec::ProcessResult::Ending::Exited) {
                out.exit_code = r.exit_code;
            } else if (r.ending == exec::ProcessResult::Ending::Signaled) {
                out.signal = r.signal;
            }
            out.timed_out = r.timed_out;
            out.cancelled = r.cancelled;
            out.spawn_failed = r.ending == exec::ProcessResult::Ending::SpawnFailed;
            out.error = std::move(r.error);
            out.stdout_excerpt = std::move(r.stdout_excerpt);
            out.stderr_excerpt = std::move(r.stderr_excerpt);
            out.stdout_bytes = r.stdout_bytes;
            out.stderr_bytes = r.stderr_bytes;
            for (auto& t : r.transitions) {
                out.transitions.push_back({t.at, std::move(t.kind), std::move(t.detail)});
            }
            if (!r.output_error.empty()) {
                out.transitions.push_back({Timestamp::now(), "output_error", r.output_error});
            }
            out.output_path = std::move(r.output_path);
            out.output_stored_bytes = r.output_stored_bytes;
            out.output_truncated = r.output_truncated;
            done(std::move(out));
        });
    }

    void cancel(std::string reason) override {
        if (handle_) {
            handle_->cancel(std::move(reason));
        }
    }

  private:
    exec::ProcessRunner& runner_;
    exec::ProcessSpec spec_;
    std::shared_ptr<exec::ProcessHandle> handle_;
};

// Renders each template to exactly one argument, appended to `out`.
Status render_arguments(const std::vector<Template>& templates, const TemplateScope& scope,
                        std::string_view what, std::vector<std::string>& out) {
    for (std::size_t i = 0; i < templates.size(); ++i) {
        auto value = templates[i].render(scope);
        if (!value) {
            return value.error();
        }
        if (auto s = check_no_nul(*value, fmt::format("{} element {}", what, i)); !s) {
            return s;
        }
        out.push_back(std::move(*value));
    }
    return {};
}

// Runs the process step kinds as child processes through the ProcessRunner:
//   argv:  the program and its arguments, each element rendered to one argument;
//   shell: /bin/sh -c SCRIPT STEPNAME ARGS..., the script literal, the args rendered.
class ProcessExecutor final : public StepExecutor {
  public:
    ProcessExecutor(std::string kind, exec::ProcessRunner& runner, ProcessDefaults defaults)
        : kind_(std::move(kind)), runner_(runner), defaults_(std::move(defaults)) {}

    std::string_view kind() const override { return kind_; }

    Result<std::unique_ptr<Attempt>> prepare(const AttemptContext& ctx) override {
        const auto* config = dynamic_cast<const ProcessStepConfig*>(ctx.step->config.get());
        if (config == nullptr) {
            return make_error(ErrorCode::Internal,
                              fmt::format("preparing step failed: not a {} step", kind_));
        }
        const TemplateScope scope = ctx.scope();

        exec::ProcessSpec spec;
        if (const auto* argv = dynamic_cast<const ArgvStepConfig*>(config)) {
            if (auto s = render_arguments(argv->argv, scope, "argv", spec.argv); !s) {
                return s.error();
            }
        } else if (const auto* shell = dynamic_cast<const ShellStepConfig*>(config)) {
            // $0 is the step's name, so the shell's own messages say which step they are from.
            spec.argv = {kShell, "-c", shell->script, ctx.step->name};
            if (auto s = render_arguments(shell->args, scope, "args", spec.argv); !s) {
                return s.error();
            }
        } else {
            return make_error(
                ErrorCode::Internal,
                fmt::format("preparing step failed: {} steps have no executor", ctx.step->kind));
        }
        auto env = build_env(*config, ctx, scope);
        if (!env) {
            return env.error();
        }
        spec.env = std::move(*env);
        spec.cwd = defaults_.cwd;
        if (config->cwd) {
            auto cwd = config->cwd->render(scope);
            if (!cwd) {
                return cwd.error();
            }
            if (!cwd->starts_with('/')) {
                return make_error(ErrorCode::InvalidArgument,
                                  fmt::format("cwd \"{}\" is not an absolute path", *cwd));
            }
            spec.cwd = std::move(*cwd);
        }
        // Record the program as it will be executed; a failed lookup is reported at start.
        std::string ignored;
        if (auto path = exec::resolve_program(spec.argv[0], spec.env, ignored); !path.empty()) {
            spec.argv[0] = std::move(path);
        }
        spec.timeout = ctx.timeout;
        spec.grace = config->grace.value_or(defaults_.grace);
        spec.stop_signal = config->stop_signal.value_or(SIGTERM);
        const exec::ResourceLimits& d = defaults_.default_limits;
        spec.limits.cpu_seconds =
            config->limits.cpu_seconds ? config->limits.cpu_seconds : d.cpu_seconds;
        spec.limits.address_space_bytes = config->limits.address_space_bytes
                                              ? config->limits.address_space_bytes
                                              : d.address_space_bytes;
        spec.limits.open_files =
            config->limits.open_files ? config->limits.open_files : d.open_files;
        spec.limits.processes = config->limits.processes ? config->limits.processes : d.processes;
        spec.user = config->user;
        spec.group = config->group;
        if (!defaults_.output_dir.empty() && defaults_.output_cap_bytes > 0) {
            spec.output_path = exec::output_file_path(defaults_.output_dir, ctx.run_id,
                                                      ctx.step_index, ctx.attempt);
            spec.output_cap_bytes = defaults_.output_cap_bytes;
        }
        spec.redact = defaults_.secrets;
        spec.drain = defaults_.drain;
        spec.excerpt_bytes = defaults_.excerpt_bytes;
        spec.nice = defaults_.nice;
        spec.log_context =
            fmt::format("run={} step={} attempt={} ", ctx.run_id, ctx.step->name, ctx.attempt);
        return std::unique_ptr<Attempt>(std::make_unique<ArgvAttempt>(runner_, std::move(spec)));
    }

  private:
    Result<std::vector<std::string>> build_env(const ProcessStepConfig& config,
                                               const AttemptContext& ctx,
                                               const TemplateScope& scope) const {
        std::vector<std::pair<std::string, std::string>> vars = defaults_.base_env;
        const auto set = [&vars](const std::string& name, std::string value) {
            for (auto& [k, v] : vars) {
                if (k == name) {
                    v = std::move(value);
                    return;
                }
            }
            vars.emplace_back(name, std::move(value));
        };
        for (const auto& [name, tmpl] : config.env) {
            auto value = tmpl.render(scope);
            if (!value) {
                return make_error(value.error().code,
                                  fmt::format("env {}: {}", name, value.error().message));
            }
            if (auto s = check_no_nul(*value, "env " + name); !s) {
                return s.error();
            }
            set(name, std::move(*value));
        }
        for (const auto& [name, secret] : config.secret_env) {
            const auto found = std::find_if(
                defaults_.secrets.begin(), defaults_.secrets.end(),
                [&secret = secret](const auto& entry) { return entry.first == secret; });
            if (found == defaults_.secrets.end()) {
                return make_error(ErrorCode::InvalidArgument,
                                  fmt::format("env {}: secret \"{}\" is not configured (config "
                                              "secrets:)",
                                              name, secret));
            }
            set(name, found->second);
        }
        for (auto& [name, value] : runbook_env(ctx)) {
            set(name, std::move(value));
        }
        if (!defaults_.instance.empty()) {
            set(std::string(exec::kInstanceEnv), defaults_.instance);
        }
        std::vector<std::string> out;
        out.reserve(vars.size());
        for (auto& [k, v] : vars) {
            out.push_back(k + "=" + v);
        }
        return out;
    }

    std::string kind_;
    exec::ProcessRunner& runner_;
    ProcessDefaults defaults_;
};

}  // namespace

std::string alert_env_name(std::string_view prefix, std::string_view name) {
    return std::string(prefix) + env_name_part(name);
}

std::vector<std::pair<std::string, std::string>> runbook_env(const AttemptContext& ctx) {
    std::vector<std::pair<std::string, std::string>> vars;
    if (ctx.alert != nullptr) {
        // The alert, for scripts: values arrive as data, never as code.
        for (const auto& [label, value] : ctx.alert->labels) {
            if (value.find('\0') == std::string::npos) {
                vars.emplace_back(alert_env_name("RUNBOOK_LABEL_", label), value);
            }
        }
        for (const auto& [annotation, value] : ctx.alert->annotations) {
            if (value.find('\0') == std::string::npos) {
                vars.emplace_back(alert_env_name("RUNBOOK_ANNOTATION_", annotation), value);
            }
        }
        vars.emplace_back("RUNBOOK_ALERT_FINGERPRINT", ctx.alert->fingerprint);
        vars.emplace_back("RUNBOOK_ALERT_STATUS", alert_status_name(ctx.alert->status));
    }
    if (ctx.params != nullptr) {
        for (const auto& [name, value] : *ctx.params) {
            if (value.find('\0') == std::string::npos) {
                vars.emplace_back(alert_env_name("RUNBOOK_PARAM_", name), value);
            }
        }
    }
    vars.emplace_back("RUNBOOK_RUN_ID", std::to_string(ctx.run_id));
    vars.emplace_back("RUNBOOK_RUNBOOK", ctx.runbook->name);
    vars.emplace_back("RUNBOOK_STEP", ctx.step->name);
    vars.emplace_back("RUNBOOK_ATTEMPT", std::to_string(ctx.attempt));
    vars.emplace_back("RUNBOOK_IDEMPOTENCY_KEY", idempotency_key(ctx.run_id, ctx.step->name));
    if (!ctx.traceparent.empty()) {
        vars.emplace_back("TRACEPARENT", std::string(ctx.traceparent));
    }
    return vars;
}

bool is_reserved_env(std::string_view name) {
    return name.starts_with("RUNBOOK_") || name == exec::kInstanceEnv || name == "TRACEPARENT";
}

std::string idempotency_key(RunId run, std::string_view step) {
    return fmt::format("{}:{}", run, step);
}

std::vector<std::pair<std::string, std::string>> default_base_env() {
    const auto get = [](const char* name) -> std::string {
        const char* v = std::getenv(name);
        return v == nullptr ? std::string() : std::string(v);
    };
    std::vector<std::pair<std::string, std::string>> env;
    const std::string path = get("PATH");
    env.emplace_back("PATH", path.empty() ? kStandardPath : path);
    const std::string lang = get("LANG");
    env.emplace_back("LANG", lang.empty() ? "C.UTF-8" : lang);
    for (const char* name : {"HOME", "TZ"}) {
        if (std::string v = get(name); !v.empty()) {
            env.emplace_back(name, std::move(v));
        }
    }
    return env;
}

std::shared_ptr<StepExecutor> make_argv_executor(exec::ProcessRunner& runner,
                                                 ProcessDefaults defaults) {
    return std::make_shared<ProcessExecutor>("argv", runner, std::move(defaults));
}

std::shared_ptr<StepExecutor> make_shell_executor(exec::ProcessRunner& runner,
                                                  ProcessDefaults defaults) {
    return std::make_shared<ProcessExecutor>("shell", runner, std::move(defaults));
}

}  // namespace runbookd::run
