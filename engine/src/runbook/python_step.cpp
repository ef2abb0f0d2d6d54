#include <algorithm>
#include <cctype>
#include <filesystem>

#include <fmt/format.h>

#include <runbookd/python_step.hpp>
#include <runbookd/step_parser.hpp>

#include "runbook/process_step.hpp"

namespace runbookd {
namespace {

// Process keys that make no sense for a step that runs inside a worker process.
constexpr std::string_view kNotForPython[] = {"env",  "cwd",   "stop_signal", "limits",
                                              "user", "group", "args"};

bool is_identifier(std::string_view text) {
    if (text.empty() || std::isdigit(static_cast<unsigned char>(text.front())) != 0) {
        return false;
    }
    return std::all_of(text.begin(), text.end(), [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '_';
    });
}

// "disk_tools" or "ops.disk_tools": identifiers joined by dots.
bool is_module_name(std::string_view text) {
    std::size_t begin = 0;
    while (true) {
        const std::size_t dot = text.find('.', begin);
        if (!is_identifier(text.substr(begin, dot - begin))) {
            return false;
        }
        if (dot == std::string_view::npos) {
            return true;
        }
        begin = dot + 1;
    }
}

class PythonStepParser final : public StepParser {
  public:
    std::string_view kind() const override { return "python"; }
    std::vector<std::string_view> keys() const override {
        std::vector<std::string_view> keys = {"grace"};
        keys.insert(keys.end(), std::begin(kNotForPython), std::end(kNotForPython));
        return keys;
    }

    std::shared_ptr<const StepConfig> parse(const YAML::Node& step,
                                            ParseContext& ctx) const override {
        auto config = std::make_shared<PythonStepConfig>();
        const std::size_t errors_before = ctx.diagnostics().size();
        parse_target(find_key(step, "python"), ctx, *config);
        for (const auto key : kNotForPython) {
            if (const auto node = find_key(step, key); node.IsDefined()) {
                ctx.error(ctx.location(node), fmt::format("{}: does not apply to python steps "
                                                          "(they run in a worker process that "
                                                          "runbookd configures: python.* in the "
                                                          "config)",
                                                          key));
            }
        }
        if (const auto grace = find_key(step, "grace"); grace.IsDefined()) {
            config->grace = ctx.duration(grace, "grace");
        }
        if (ctx.diagnostics().size() != errors_before) {
            return nullptr;
        }
        return config;
    }

  private:
    static void parse_target(const YAML::Node& node, ParseContext& ctx, PythonStepConfig& config) {
        if (!node.IsMap()) {
            ctx.error(node,
                      "python: expected a mapping: {module: NAME, function: NAME} or {code: "
                      "\"...\"}");
            return;
        }
        if (!ctx.check_mapping(node, "python", {"module", "function", "code"})) {
            return;
        }
        const YAML::Node module = find_key(node, "module");
        const YAML::Node function = find_key(node, "function");
        const YAML::Node code = find_key(node, "code");
        if (code.IsDefined()) {
            if (module.IsDefined() || function.IsDefined()) {
                ctx.error(node, "python: give either code or module and function, not both");
                return;
            }
            parse_code(code, ctx, config);
            return;
        }
        if (!module.IsDefined() || !function.IsDefined()) {
            ctx.error(node,
                      "python: needs module and function (e.g. {module: disk_tools, "
                      "function: decide}), or code");
            return;
        }
        if (auto name = ctx.string(module, "python.module")) {
            if (!is_module_name(*name)) {
                ctx.error(module, fmt::format("python.module: \"{}\" is not a module name "
                                              "(identifiers joined by dots, e.g. ops.disk_tools)",
                                              *name));
            }
            config.module = std::move(*name);
        }
        if (auto name = ctx.string(function, "python.function")) {
            if (!is_identifier(*name)) {
                ctx.error(function,
                          fmt::format("python.function: \"{}\" is not a Python identifier", *name));
            }
            config.function = std::move(*name);
        }
    }

    static void parse_code(const YAML::Node& node, ParseContext& ctx, PythonStepConfig& config) {
        auto code = ctx.string(node, "python.code");
        if (!code) {
            return;
        }
        const bool blank = std::all_of(code->begin(), code->end(), [](char c) {
            return std::isspace(static_cast<unsigned char>(c)) != 0;
        });
        if (blank) {
            ctx.error(node, "python.code: expected non-empty Python code");
            return;
        }
        const SourceLocation at = ctx.location_in(node, 0);
        config.filename = fmt::format("{}:{}", at.file, at.line);
        // Absolute: the worker runs in another directory and reads the lines it shows in
        // tracebacks from this path.
        std::error_code ec;
        const auto absolute = std::filesystem::absolute(at.file, ec);
        config.source_file = ec ? at.file : absolute.string();
        config.first_line = std::max(1, at.line);
        config.code = std::move(*code);
    }
};

}  // namespace

std::shared_ptr<const StepParser> make_python_step_parser() {
    return std::make_shared<const PythonStepParser>();
}

}  // namespace runbookd
