#pragma once

#include <memory>
#include <string_view>
#include <vector>

#include <yaml-cpp/yaml.h>

#include <runbookd/argv_step.hpp>
#include <runbookd/step_parser.hpp>

namespace runbookd {

// The step keys that every kind running a child process reads besides its own: env, cwd,
// stop_signal, grace, limits, user, group.
std::vector<std::string_view> process_step_keys();

// Parses the keys of process_step_keys() in the step mapping `step` into `config`, recording
// each problem in `ctx`.
void parse_process_keys(const YAML::Node& step, ParseContext& ctx, ProcessStepConfig& config);

std::shared_ptr<const StepParser> make_argv_step_parser();
std::shared_ptr<const StepParser> make_shell_step_parser();
std::shared_ptr<const StepParser> make_python_step_parser();

}  // namespace runbookd
