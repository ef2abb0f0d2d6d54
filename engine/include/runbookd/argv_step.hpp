#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <runbookd/runbook.hpp>
#include <runbookd/template.hpp>

namespace runbookd {

// `argv:` steps: run a program with arguments, without a shell. Each element is a template
// rendered to exactly one argument.
//
//   - name: disk-usage
//     argv: [df, -h, "{{ alert.labels.mountpoint | default \"/\" }}"]
//     env: {LC_ALL: C}
//     cwd: /tmp
struct ArgvStepConfig final : StepConfig {
    std::vector<Template> argv;  // argv[0] is a literal: alert values never choose the program
    std::vector<std::pair<std::string, Template>> env;
    std::optional<Template> cwd;
};

}  // namespace runbookd
