#include <algorithm>
#include <cctype>

#include <fmt/format.h>

#include <runbookd/argv_step.hpp>
#include <runbookd/step_parser.hpp>

#include "runbook/process_step.hpp"

namespace runbookd {
namespace {

bool is_path_char(char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_' || c == '.' || c == '-';
}

// The variable runbookd sets for a placeholder path, or empty when there is none.
std::string variable_for(std::string_view path) {
    constexpr std::string_view kLabels = "alert.labels.";
    constexpr std::string_view kAnnotations = "alert.annotations.";
    if (path.starts_with(kLabels) && path.size() > kLabels.size()) {
        return "RUNBOOK_LABEL_" + env_name_part(path.substr(kLabels.size()));
    }
    if (path.starts_with(kAnnotations) && path.size() > kAnnotations.size()) {
        return "RUNBOOK_ANNOTATION_" + env_name_part(path.substr(kAnnotations.size()));
    }
    constexpr std::string_view kParams = "params.";
    if (path.starts_with(kParams) && path.size() > kParams.size()) {
        return "RUNBOOK_PARAM_" + env_name_part(path.substr(kParams.size()));
    }
    if (path == "alert.fingerprint") {
        return "RUNBOOK_ALERT_FINGERPRINT";
    }
    if (path == "run.id") {
        return "RUNBOOK_RUN_ID";
    }
    if (path == "run.runbook") {
        return "RUNBOOK_RUNBOOK";
    }
    return {};
}

// The script is given to the shell as written. A `{{ alert.… }}` in it is almost surely an
// author expecting substitution; other `{{` (Go templates for kubectl, helm) are meant as is.
void warn_placeholders(const YAML::Node& node, std::string_view script, ParseContext& ctx) {
    for (std::size_t open = script.find("{{"); open != std::string_view::npos;
         open = script.find("{{", open + 2)) {
        std::size_t start = open + 2;
        while (start < script.size() && (script[start] == ' ' || script[start] == '\t')) {
            ++start;
        }
        const std::string_view rest = script.substr(start);
        if (!rest.starts_with("alert.") && !rest.starts_with("run.") &&
            !rest.starts_with("steps.") && !rest.starts_with("params.")) {
            continue;
        }
        const auto path_end = std::find_if_not(rest.begin(), rest.end(), is_path_char);
        const std::string_view path(rest.data(), static_cast<std::size_t>(path_end - rest.begin()));
        const std::size_t close = script.find("}}", start);
        const std::size_t line_end = script.find('\n', start);
        const std::string_view shown = close != std::string_view::npos && close < line_end
                                           ? script.substr(open, close + 2 - open)
                                           : path;
        const std::string variable = variable_for(path);
        const std::string idiom = variable.empty() ? "pass it with args: and use \"$1\""
                                                   : fmt::format("use \"${}\" or args:", variable);
        ctx.warning(ctx.location_in(node, open),
                    fmt::format("shell: placeholders are not substituted in shell scripts, so "
                                "\"{}\" stays as written: {}",
                                shown, idiom));
    }
}

class ShellStepParser final : public StepParser {
  public:
    std::string_view kind() const override { return "shell"; }
    std::vector<std::string_view> keys() const override {
        auto keys = process_step_keys();
        keys.insert(keys.begin(), "args");
        return keys;
    }

    std::shared_ptr<const StepConfig> parse(const YAML::Node& step,
                                            ParseContext& ctx) const override {
        auto config = std::make_shared<ShellStepConfig>();
        const std::size_t errors_before = ctx.diagnostics().size();
        parse_script(find_key(step, "shell"), ctx, *config);
        parse_args(find_key(step, "args"), ctx, *config);
        parse_process_keys(step, ctx, *config);
        if (ctx.diagnostics().size() != errors_before) {
            return nullptr;
        }
        return config;
    }

  private:
    static void parse_script(const YAML::Node& node, ParseContext& ctx, ShellStepConfig& config) {
        auto script = ctx.string(node, "shell");
        if (!script) {
            return;
        }
        const bool blank = std::all_of(script->begin(), script->end(), [](char c) {
            return std::isspace(static_cast<unsigned char>(c)) != 0;
        });
        if (blank) {
            ctx.error(node, "shell: expected a non-empty script");
            return;
        }
        warn_placeholders(node, *script, ctx);
        config.script = std::move(*script);
    }

    static void parse_args(const YAML::Node& node, ParseContext& ctx, ShellStepConfig& config) {
        if (!node.IsDefined()) {
            return;
        }
        if (!node.IsSequence()) {
            ctx.error(node, "args: expected a list of arguments, the script's \"$1\", \"$2\", ...");
            return;
        }
        for (const auto& item : node) {
            if (auto arg = ctx.template_string(item, "args")) {
                config.args.push_back(std::move(*arg));
            }
        }
    }
};

}  // namespace

std::shared_ptr<const StepParser> make_shell_step_parser() {
    return std::make_shared<const ShellStepParser>();
}

}  // namespace runbookd
