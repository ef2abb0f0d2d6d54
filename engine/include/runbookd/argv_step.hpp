#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <runbookd/runbook.hpp>
#include <runbookd/template.hpp>

namespace runbookd {

// Resource limits (setrlimit) of a step's process; empty: inherited from runbookd.
struct ProcessLimits {
    std::optional<std::uint64_t> cpu_seconds, address_space_bytes, open_files, processes;
};

// What every kind that runs a child process reads: `env:`, `cwd:`, `stop_signal:`, `grace:`,
// `limits:`, `user:` and `group:`.
struct ProcessStepConfig : StepConfig {
    std::vector<std::pair<std::string, Template>> env;
    // `env: {NAME: {secret: SECRET}}`: variable name → secret name. The value reaches the
    // child's environment only; output is redacted (docs/execution.md).
    std::vector<std::pair<std::string, std::string>> secret_env;
    std::optional<Template> cwd;
    std::optional<int> stop_signal;  // signal number; empty: SIGTERM
    std::optional<Duration> grace;   // stop signal → SIGKILL; empty: daemon default
    ProcessLimits limits;
    std::string user;  // literal (no placeholders): name or number; empty: runbookd's own
    std::string group;
};

// `argv:` steps: run a program with arguments, without a shell. Each element is a template
// rendered to exactly one argument.
//
//   - name: disk-usage
//     argv: [df, -h, "{{ alert.labels.mountpoint | default \"/\" }}"]
//     env: {LC_ALL: C}
//     cwd: /tmp
struct ArgvStepConfig final : ProcessStepConfig {
    std::vector<Template> argv;  // argv[0] is a literal: alert values never choose the program
};

// `shell:` steps: the script is run by `/bin/sh -c SCRIPT STEPNAME ARGS...`. The script is
// literal text, never rendered: alert values reach it as environment variables
// ($RUNBOOK_LABEL_INSTANCE ...) or as positional parameters from `args:` ("$1", "$2").
//
//   - name: restart
//     shell: systemctl restart "$1"
//     args: ["{{ alert.labels.service }}"]
struct ShellStepConfig final : ProcessStepConfig {
    std::string script;
    std::vector<Template> args;
};

// The NAME of the variables RUNBOOK_LABEL_<NAME> and RUNBOOK_ANNOTATION_<NAME> that carry an
// alert's labels and annotations to process steps: `name` upper-cased, and every character
// other than A-Z, 0-9 and _ replaced by _.
std::string env_name_part(std::string_view name);

}  // namespace runbookd
