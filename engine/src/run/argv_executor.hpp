#pragma once

#include <memory>
#include <string>
#include <vector>

#include "exec/process.hpp"
#include "run/step_executor.hpp"

namespace runbookd::run {

// The variable an alert label or annotation becomes: `prefix` + the name upper-cased, every
// character other than A-Z, 0-9 and _ replaced by _ ("RUNBOOK_LABEL_" + "pod.name" →
// "RUNBOOK_LABEL_POD_NAME").
std::string alert_env_name(std::string_view prefix, std::string_view name);

// RUNBOOK_IDEMPOTENCY_KEY: "<run id>:<step name>", the same for every attempt of the step and
// across restarts of runbookd.
std::string idempotency_key(RunId run, std::string_view step);

// The RUNBOOK_* variables every step process of an attempt gets (docs/execution.md): the
// alert's labels, annotations, fingerprint and status (when the run has an alert), the run's
// parameters (RUNBOOK_PARAM_<NAME>), then RUNBOOK_RUN_ID, RUNBOOK_RUNBOOK, RUNBOOK_STEP,
// RUNBOOK_ATTEMPT, RUNBOOK_IDEMPOTENCY_KEY. Alert values holding a NUL byte are left out.
std::vector<std::pair<std::string, std::string>> runbook_env(const AttemptContext& ctx);

// Whether a variable name is runbookd's to set: RUNBOOK_* and exec::kInstanceEnv.
bool is_reserved_env(std::string_view name);

// Builds the base environment from runbookd's own: PATH (or a standard PATH), LANG (or
// C.UTF-8), HOME and TZ when set.
std::vector<std::pair<std::string, std::string>> default_base_env();

// Settings every process-running step shares.
struct ProcessDefaults {
    // The base environment of every child, before the step's own `env:` and the RUNBOOK_*
    // variables: PATH, LANG, HOME and TZ (docs/execution.md).
    std::vector<std::pair<std::string, std::string>> base_env = default_base_env();
    std::string cwd = "/";
    exec::Millis grace{5'000};
    exec::Millis drain{2'000};
    std::size_t excerpt_bytes = 8192;
    int nice = 0;  // exec.nice: steps can run below runbookd's own priority
    // exec.output_dir: where each attempt's full output goes (<dir>/<run>/<step>-<attempt>.log);
    // empty: no output files, only the excerpts in the audit.
    std::string output_dir;
    std::int64_t output_cap_bytes = 16 << 20;  // exec.output_cap; 0: no output files
    // exec.default_limits: what a step gets for each limit it does not set itself.
    exec::ResourceLimits default_limits;
    // The configured secrets (name, value), read at start: a step's `env: {X: {secret: NAME}}`
    // takes its value from here, and every value is redacted from every step's output.
    std::vector<std::pair<std::string, std::string>> secrets;
    // The value of exec::kInstanceEnv in every step's environment (after the step's own
    // `env:`, which cannot change it); empty: not set.
    std::string instance;
};

// Runs `argv:` steps as child processes through the ProcessRunner.
std::shared_ptr<StepExecutor> make_argv_executor(exec::ProcessRunner& runner,
                                                 ProcessDefaults defaults);
// Runs `shell:` steps: /bin/sh -c SCRIPT STEPNAME ARGS...; alert values reach the script only
// as environment variables and positional parameters, never in its text.
std::shared_ptr<StepExecutor> make_shell_executor(exec::ProcessRunner& runner,
                                                  ProcessDefaults defaults);

}  // namespace runbookd::run
