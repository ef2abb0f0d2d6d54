#include <fmt/format.h>

#include <runbookd/argv_step.hpp>
#include <runbookd/step_parser.hpp>

#include "runbook/process_step.hpp"

namespace runbookd {
namespace {

class ArgvStepParser final : public StepParser {
  public:
    std::string_view kind() const override { return "argv"; }
    std::vector<std::string_view> keys() const override { return process_step_keys(); }

    std::shared_ptr<const StepConfig> parse(const YAML::Node& step,
                                            ParseContext& ctx) const override {
        auto config = std::make_shared<ArgvStepConfig>();
        const std::size_t errors_before = ctx.diagnostics().size();
        parse_argv(find_key(step, "argv"), ctx, *config);
        parse_process_keys(step, ctx, *config);
        if (ctx.diagnostics().size() != errors_before) {
            return nullptr;
        }
        return config;
    }

  private:
    static void parse_argv(const YAML::Node& node, ParseContext& ctx, ArgvStepConfig& config) {
        if (!node.IsSequence() || node.size() == 0) {
            ctx.error(node, "argv: expected a non-empty list: the program, then its arguments");
            return;
        }
        for (const auto& item : node) {
            auto element = ctx.template_string(item, "argv");
            if (!element) {
                continue;
            }
            if (config.argv.empty()) {
                if (element->has_placeholders()) {
                    ctx.error(item,
                              "argv: the program (first element) cannot contain "
                              "placeholders: alert values must not choose what runs");
                    continue;
                }
                if (element->source().empty()) {
                    ctx.error(item, "argv: the program (first element) is empty");
                    continue;
                }
            }
            config.argv.push_back(std::move(*element));
        }
    }
};

}  // namespace

std::shared_ptr<const StepParser> make_argv_step_parser() {
    return std::make_shared<const ArgvStepParser>();
}

StepParsers builtin_step_parsers() {
    return {make_argv_step_parser(), make_shell_step_parser(), make_python_step_parser()};
}

}  // namespace runbookd
