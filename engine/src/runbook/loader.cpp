#include <algorithm>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <runbookd/step_parser.hpp>

#include "common/hash.hpp"

namespace runbookd {
namespace {

constexpr std::size_t kMaxNameLength = 128;
constexpr std::uintmax_t kMaxFileSize = 1024 * 1024;

// Runbook and step names appear in URLs, environment variables and placeholders.
bool valid_name(std::string_view name) {
    if (name.empty() || name.size() > kMaxNameLength) {
        return false;
    }
    const auto ok = [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '_';
    };
    return std::isalnum(static_cast<unsigned char>(name.front())) != 0 &&
           std::all_of(name.begin(), name.end(), ok);
}

const char* node_kind(const YAML::Node& node) {
    switch (node.Type()) {
        case YAML::NodeType::Null:
            return "nothing";
        case YAML::NodeType::Scalar:
            return "a scalar";
        case YAML::NodeType::Sequence:
            return "a list";
        case YAML::NodeType::Map:
            return "a mapping";
        case YAML::NodeType::Undefined:
            return "nothing";
    }
    return "nothing";
}

void parse_name(const YAML::Node& root, ParseContext& ctx, const char* what, std::string& out) {
    const YAML::Node node = find_key(root, "name");
    if (!node.IsDefined()) {
        ctx.error(root, fmt::format("{} needs a name", what));
        return;
    }
    if (auto name = ctx.string(node, "name")) {
        if (!valid_name(*name)) {
            ctx.error(node, fmt::format("{} name \"{}\" is not valid: use letters, digits, '-' "
                                        "and '_', starting with a letter or digit, at most {} "
                                        "characters",
                                        what, *name, kMaxNameLength));
            return;
        }
        out = std::move(*name);
    }
}

void parse_matchers(const YAML::Node& node, ParseContext& ctx, Runbook& runbook) {
    if (!node.IsDefined() || node.IsNull()) {
        return;
    }
    if (!node.IsSequence()) {
        ctx.error(node, fmt::format("matchers: expected a list of matcher strings, got {}",
                                    node_kind(node)));
        return;
    }
    for (const auto& item : node) {
        auto text = ctx.string(item, "matcher");
        if (!text) {
            continue;
        }
        auto parsed = Matcher::parse_list(*text);
        if (!parsed) {
            ctx.error(item, parsed.error().message);
            continue;
        }
        for (auto& m : *parsed) {
            runbook.matchers.push_back(std::move(m));
        }
    }
}

void parse_on(const YAML::Node& node, ParseContext& ctx, Runbook& runbook) {
    if (!node.IsDefined()) {
        return;
    }
    std::vector<YAML::Node> items;
    if (node.IsScalar()) {
        items.push_back(node);
    } else if (node.IsSequence() && node.size() > 0) {
        for (const auto& item : node) {
            items.push_back(item);
        }
    } else {
        ctx.error(node, "on: expected a list of alert statuses (firing, resolved)");
        return;
    }
    runbook.on_firing = false;
    runbook.on_resolved = false;
    for (const auto& item : items) {
        auto text = ctx.string(item, "on");
        if (!text) {
            continue;
        }
        const auto status = parse_alert_status(*text);
        if (!status) {
            ctx.error(item, fmt::format("on: unknown alert status \"{}\" (expected firing or "
                                        "resolved)",
                                        *text));
            continue;
        }
        (*status == AlertStatus::Firing ? runbook.on_firing : runbook.on_resolved) = true;
    }
}

std::optional<StepSpec> parse_step(const YAML::Node& node, ParseContext& ctx,
                                   const StepParsers& parsers) {
    if (!node.IsMap()) {
        ctx.error(node, fmt::format("step: expected a mapping, got {}", node_kind(node)));
        return std::nullopt;
    }
    StepSpec step;
    step.location = ctx.location(node);

    // Which kind is it? Exactly one kind key must be present.
    std::vector<std::string_view> kinds;
    const StepParser* parser = nullptr;
    for (const auto& p : parsers) {
        kinds.push_back(p->kind());
        if (find_key(node, p->kind()).IsDefined()) {
            if (parser != nullptr) {
                ctx.error(node, fmt::format("step has both {}: and {}: (a step has exactly one "
                                            "kind)",
                                            parser->kind(), p->kind()));
                return std::nullopt;
            }
            parser = p.get();
        }
    }
    std::vector<std::string_view> allowed = {"name", "description", "timeout"};
    if (parser == nullptr) {
        ctx.check_mapping(node, "step", allowed);
        ctx.error(node, fmt::format("step needs one key that gives its kind: {}",
                                    fmt::join(kinds, ", ")));
        return std::nullopt;
    }
    allowed.push_back(parser->kind());
    for (const auto key : parser->keys()) {
        allowed.push_back(key);
    }
    const bool keys_ok = ctx.check_mapping(node, "step", allowed);

    parse_name(node, ctx, "step", step.name);
    step.kind = std::string(parser->kind());
    if (const auto d = find_key(node, "description"); d.IsDefined()) {
        step.description = ctx.string(d, "description").value_or("");
    }
    if (const auto t = find_key(node, "timeout"); t.IsDefined()) {
        step.timeout = ctx.duration(t, "timeout");
    }
    step.config = parser->parse(node, ctx);
    if (!keys_ok || step.config == nullptr) {
        return std::nullopt;
    }
    return step;
}

void parse_steps(const YAML::Node& node, ParseContext& ctx, const StepParsers& parsers,
                 Runbook& runbook) {
    if (!node.IsDefined()) {
        return;
    }
    if (!node.IsSequence() || node.size() == 0) {
        ctx.error(node, "steps: expected a non-empty list of steps");
        return;
    }
    std::map<std::string, SourceLocation> seen;
    for (const auto& item : node) {
        auto step = parse_step(item, ctx, parsers);
        if (!step) {
            continue;
        }
        // A step without a name has been reported already; it duplicates nothing.
        const auto [it, inserted] = seen.emplace(step->name, step->location);
        if (!inserted && !step->name.empty()) {
            ctx.error(find_key(item, "name"),
                      fmt::format("duplicate step name \"{}\" (first at line {})", step->name,
                                  it->second.line));
            continue;
        }
        runbook.steps.push_back(std::move(*step));
    }
}

std::shared_ptr<Runbook> parse_runbook(const YAML::Node& root, ParseContext& ctx,
                                       const StepParsers& parsers) {
    auto runbook = std::make_shared<Runbook>();
    if (!root.IsMap()) {
        ctx.error(root, fmt::format("a runbook file holds one mapping (name, matchers, steps, "
                                    "...), got {}",
                                    node_kind(root)));
        return nullptr;
    }
    ctx.check_mapping(root, "runbook",
                      {"name", "description", "matchers", "on", "timeout", "steps"});
    parse_name(root, ctx, "runbook", runbook->name);
    runbook->name_location = ctx.location(find_key(root, "name"));
    if (const auto d = find_key(root, "description"); d.IsDefined()) {
        runbook->description = ctx.string(d, "description").value_or("");
    }
    parse_matchers(find_key(root, "matchers"), ctx, *runbook);
    if (runbook->matchers.empty()) {
        ctx.warning(root,
                    "runbook has no matchers, so no alert will ever start it (write e.g. "
                    "alertname=\"...\")");
    }
    parse_on(find_key(root, "on"), ctx, *runbook);
    if (const auto t = find_key(root, "timeout"); t.IsDefined()) {
        runbook->timeout = ctx.duration(t, "timeout");
    }
    const YAML::Node steps = find_key(root, "steps");
    if (!steps.IsDefined()) {
        ctx.error(root, "runbook needs steps");
    }
    parse_steps(steps, ctx, parsers, *runbook);
    return runbook;
}

}  // namespace

YAML::Node find_key(const YAML::Node& map, std::string_view key) {
    for (auto it = map.begin(); it != map.end(); ++it) {
        if (it->first.IsScalar() && it->first.Scalar() == key) {
            return it->second;
        }
    }
    return YAML::Node(YAML::NodeType::Undefined);
}

SourceLocation ParseContext::location(const YAML::Mark& mark) const {
    if (mark.is_null()) {
        return SourceLocation{file_, 0, 0};
    }
    return SourceLocation{file_, mark.line + 1, mark.column + 1};
}

SourceLocation ParseContext::location(const YAML::Node& node) const {
    return location(node.Mark());
}

void ParseContext::error(const YAML::Node& at, std::string message) {
    error(location(at), std::move(message));
}

void ParseContext::error(SourceLocation at, std::string message) {
    diagnostics_.push_back(Diagnostic{std::move(at), std::move(message)});
}

void ParseContext::warning(const YAML::Node& at, std::string message) {
    warnings_.push_back(Diagnostic{location(at), std::move(message)});
}

std::optional<std::string> ParseContext::string(const YAML::Node& node, std::string_view what) {
    if (!node.IsScalar()) {
        error(node, fmt::format("{}: expected a string, got {}", what, node_kind(node)));
        return std::nullopt;
    }
    return node.Scalar();
}

std::optional<Duration> ParseContext::duration(const YAML::Node& node, std::string_view what) {
    auto text = string(node, what);
    if (!text) {
        return std::nullopt;
    }
    auto d = parse_duration(*text);
    if (!d || d->count() <= 0) {
        error(node, fmt::format("{}: \"{}\" is not a positive duration (write e.g. 500ms, 30s, "
                                "5m, 1h30m)",
                                what, *text));
        return std::nullopt;
    }
    return d;
}

std::optional<Template> ParseContext::template_string(const YAML::Node& node,
                                                      std::string_view what) {
    auto text = string(node, what);
    if (!text) {
        return std::nullopt;
    }
    auto parsed = Template::parse(*text);
    if (!parsed) {
        error(node, fmt::format("{}: {}", what, parsed.error().message));
        return std::nullopt;
    }
    return std::move(*parsed);
}

bool ParseContext::check_mapping(const YAML::Node& node, std::string_view what,
                                 const std::vector<std::string_view>& allowed) {
    if (!node.IsMap()) {
        error(node, fmt::format("{}: expected a mapping, got {}", what, node_kind(node)));
        return false;
    }
    bool ok = true;
    std::map<std::string, int> seen;
    for (auto it = node.begin(); it != node.end(); ++it) {
        const YAML::Node key = it->first;  // a copy: `it->` yields a temporary
        if (!key.IsScalar()) {
            error(key, fmt::format("{}: keys must be strings", what));
            ok = false;
            continue;
        }
        const std::string& name = key.Scalar();
        const auto [prev, inserted] = seen.emplace(name, key.Mark().line + 1);
        if (!inserted) {
            error(key, fmt::format("duplicate key \"{}\" (first at line {})", name, prev->second));
            ok = false;
            continue;
        }
        if (std::find(allowed.begin(), allowed.end(), name) == allowed.end()) {
            error(key, fmt::format("unknown key \"{}\" in {} (expected one of: {})", name, what,
                                   fmt::join(allowed, ", ")));
            ok = false;
        }
    }
    return ok;
}

LoadResult load_runbook_text(std::string_view text, const std::string& file,
                             const StepParsers& parsers) {
    LoadResult result;
    ParseContext ctx(file);
    std::vector<YAML::Node> documents;
    try {
        documents = YAML::LoadAll(std::string(text));
    } catch (const YAML::ParserException& e) {
        ctx.error(ctx.location(e.mark), fmt::format("YAML syntax error: {}", e.msg));
        result.errors = std::move(ctx.diagnostics());
        return result;
    }
    if (documents.empty()) {
        result.errors.push_back(Diagnostic{SourceLocation{file, 1, 1}, "the file is empty"});
        return result;
    }
    if (documents.size() > 1) {
        ctx.error(documents[1],
                  "a runbook file holds one YAML document; put each runbook in "
                  "its own file");
    }
    auto runbook = parse_runbook(documents[0], ctx, parsers);
    result.warnings = std::move(ctx.warnings());
    if (ctx.failed() || runbook == nullptr) {
        result.errors = std::move(ctx.diagnostics());
        return result;
    }
    runbook->source_file = file;
    runbook->source_text = std::string(text);
    runbook->content_hash = sha256_hex(text);
    result.runbooks.push_back(std::move(runbook));
    return result;
}

LoadResult load_runbook_dir(const std::filesystem::path& dir, const StepParsers& parsers) {
    namespace fs = std::filesystem;
    LoadResult result;
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) {
        result.errors.push_back(Diagnostic{SourceLocation{dir.string(), 0, 0},
                                           fs::exists(dir, ec)
                                               ? "cannot read runbooks: not a directory"
                                               : "cannot read runbooks: no such directory"});
        return result;
    }

    std::vector<fs::path> files;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        const auto& path = it->path();
        const auto name = path.filename().string();
        const auto ext = path.extension().string();
        if (name.starts_with('.') || (ext != ".yaml" && ext != ".yml")) {
            continue;
        }
        files.push_back(path);
    }
    if (ec) {
        result.errors.push_back(Diagnostic{SourceLocation{dir.string(), 0, 0},
                                           "cannot read runbooks: " + ec.message()});
        return result;
    }
    std::sort(files.begin(), files.end());

    std::map<std::string, std::string> names;  // runbook name -> file
    for (const auto& path : files) {
        const std::string file = path.string();
        const auto size = fs::file_size(path, ec);
        if (ec || size > kMaxFileSize) {
            result.errors.push_back(
                Diagnostic{SourceLocation{file, 0, 0},
                           ec ? "cannot read: " + ec.message()
                              : fmt::format("file is larger than {} bytes", kMaxFileSize)});
            continue;
        }
        std::ifstream in(path, std::ios::binary);
        std::stringstream buffer;
        buffer << in.rdbuf();
        if (!in.good() && !in.eof()) {
            result.errors.push_back(Diagnostic{SourceLocation{file, 0, 0}, "cannot read file"});
            continue;
        }
        auto loaded = load_runbook_text(buffer.str(), file, parsers);
        for (auto& e : loaded.errors) {
            result.errors.push_back(std::move(e));
        }
        for (auto& w : loaded.warnings) {
            result.warnings.push_back(std::move(w));
        }
        for (auto& r : loaded.runbooks) {
            const auto [it, inserted] = names.emplace(r->name, file);
            if (!inserted) {
                result.errors.push_back(Diagnostic{
                    r->name_location,
                    fmt::format("runbook name \"{}\" is already used by {}", r->name, it->second)});
                continue;
            }
            result.runbooks.push_back(std::move(r));
        }
    }
    return result;
}

}  // namespace runbookd
