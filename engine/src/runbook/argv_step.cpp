#include <algorithm>
#include <cctype>

#include <fmt/format.h>

#include <runbookd/argv_step.hpp>
#include <runbookd/step_parser.hpp>

namespace runbookd {
namespace {

bool valid_env_name(std::string_view name) {
    if (name.empty() || std::isdigit(static_cast<unsigned char>(name.front())) != 0) {
        return false;
    }
    return std::all_of(name.begin(), name.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
    });
}

class ArgvStepParser final : public StepParser {
  public:
    std::string_view kind() const override { return "argv"; }
    std::vector<std::string_view> keys() const override { return {"env", "cwd"}; }

    std::shared_ptr<const StepConfig> parse(const YAML::Node& step,
                                            ParseContext& ctx) const override {
        auto config = std::make_shared<ArgvStepConfig>();
        const std::size_t errors_before = ctx.diagnostics().size();
        parse_argv(find_key(step, "argv"), ctx, *config);
        parse_env(find_key(step, "env"), ctx, *config);
        if (const auto cwd = find_key(step, "cwd"); cwd.IsDefined()) {
            config->cwd = ctx.template_string(cwd, "cwd");
        }
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

    static void parse_env(const YAML::Node& node, ParseContext& ctx, ArgvStepConfig& config) {
        if (!node.IsDefined()) {
            return;
        }
        if (!node.IsMap()) {
            ctx.error(node, "env: expected a mapping of variable names to values");
            return;
        }
        std::vector<std::string_view> no_restriction;
        for (auto it = node.begin(); it != node.end(); ++it) {
            auto name = ctx.string(it->first, "env");
            if (!name) {
                continue;
            }
            if (!valid_env_name(*name)) {
                ctx.error(it->first,
                          fmt::format("env: \"{}\" is not a valid variable name", *name));
                continue;
            }
            if (name->starts_with("RUNBOOK_")) {
                ctx.error(it->first, fmt::format("env: \"{}\" is reserved: runbookd sets the "
                                                 "RUNBOOK_* variables itself",
                                                 *name));
                continue;
            }
            const bool duplicate =
                std::any_of(config.env.begin(), config.env.end(),
                            [&](const auto& entry) { return entry.first == *name; });
            if (duplicate) {
                ctx.error(it->first, fmt::format("duplicate key \"{}\"", *name));
                continue;
            }
            auto value = ctx.template_string(it->second, "env." + *name);
            if (value) {
                config.env.emplace_back(std::move(*name), std::move(*value));
            }
        }
    }
};

}  // namespace

StepParsers builtin_step_parsers() {
    return {std::make_shared<const ArgvStepParser>()};
}

}  // namespace runbookd
