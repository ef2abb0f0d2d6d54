#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <runbookd/template.hpp>

namespace runbookd {
namespace {

Error template_error(std::string message) {
    return make_error(ErrorCode::InvalidArgument, std::move(message));
}

bool is_ident_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_ident_char(char c) {
    return is_ident_start(c) || (c >= '0' && c <= '9') || c == '-';
}

void skip_space(std::string_view text, std::size_t& pos) {
    while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\t')) {
        ++pos;
    }
}

// Reads a double-quoted string literal with \" and \\ escapes starting at `pos`.
Result<std::string> read_string(std::string_view text, std::size_t& pos, std::size_t offset) {
    std::string out;
    ++pos;  // opening quote
    while (pos < text.size() && text[pos] != '"') {
        if (text[pos] == '\\' && pos + 1 < text.size()) {
            ++pos;
        }
        out += text[pos++];
    }
    if (pos >= text.size()) {
        return template_error(
            fmt::format("unterminated string literal in placeholder at character {}", offset + 1));
    }
    ++pos;  // closing quote
    return out;
}

// The paths a placeholder may name.
bool known_path(const std::vector<std::string>& path) {
    if (path.size() == 3 && path[0] == "alert" &&
        (path[1] == "labels" || path[1] == "annotations")) {
        return true;
    }
    if (path.size() == 2 && path[0] == "alert") {
        return path[1] == "fingerprint" || path[1] == "status" || path[1] == "starts_at" ||
               path[1] == "generator_url";
    }
    if (path.size() == 2 && path[0] == "params") {
        return true;
    }
    if (path.size() == 2 && path[0] == "run") {
        return path[1] == "id" || path[1] == "runbook";
    }
    return path.size() == 4 && path[0] == "steps" && path[2] == "outputs";
}

std::string join_path(const std::vector<std::string>& path) {
    std::string out;
    for (const auto& p : path) {
        if (!out.empty()) {
            out += '.';
        }
        out += p;
    }
    return out;
}

}  // namespace

Result<Template> Template::parse(std::string_view text) {
    Template out;
    out.source_ = std::string(text);
    std::size_t pos = 0;
    std::string literal;
    while (pos < text.size()) {
        const std::size_t open = text.find("{{", pos);
        if (open == std::string_view::npos) {
            literal.append(text.substr(pos));
            break;
        }
        literal.append(text.substr(pos, open - pos));
        const std::size_t close = text.find("}}", open + 2);
        if (close == std::string_view::npos) {
            return template_error(fmt::format(
                "placeholder opened at character {} is not closed with }}}}", open + 1));
        }
        auto part = parse_placeholder(text.substr(open + 2, close - open - 2), open + 2);
        if (!part) {
            return part.error();
        }
        if (!literal.empty()) {
            out.parts_.push_back(Part{true, std::move(literal), {}, std::nullopt});
            literal.clear();
        }
        if (part->literal) {
            literal = std::move(part->text);
        } else {
            out.parts_.push_back(std::move(*part));
        }
        pos = close + 2;
    }
    if (!literal.empty()) {
        out.parts_.push_back(Part{true, std::move(literal), {}, std::nullopt});
    }
    return out;
}

Result<Template::Part> Template::parse_placeholder(std::string_view expr, std::size_t offset) {
    Part part;
    std::size_t pos = 0;
    skip_space(expr, pos);
    if (pos < expr.size() && expr[pos] == '"') {
        auto text = read_string(expr, pos, offset + pos);
        if (!text) {
            return text.error();
        }
        part.text = std::move(*text);
    } else {
        part.literal = false;
        part.offset = offset + pos;
        while (true) {
            const std::size_t start = pos;
            if (pos >= expr.size() || !is_ident_start(expr[pos])) {
                return template_error(fmt::format("expected a name in placeholder at character {}",
                                                  offset + pos + 1));
            }
            while (pos < expr.size() && is_ident_char(expr[pos])) {
                ++pos;
            }
            part.path.emplace_back(expr.substr(start, pos - start));
            if (pos < expr.size() && expr[pos] == '.') {
                ++pos;
                continue;
            }
            break;
        }
        if (!known_path(part.path)) {
            return template_error(fmt::format(
                "unknown placeholder \"{}\" (known: alert.labels.NAME, alert.annotations.NAME, "
                "alert.fingerprint, alert.status, alert.starts_at, alert.generator_url, run.id, "
                "run.runbook, steps.STEP.outputs.KEY, params.NAME)",
                join_path(part.path)));
        }
    }

    skip_space(expr, pos);
    if (pos < expr.size() && expr[pos] == '|') {
        ++pos;
        skip_space(expr, pos);
        if (expr.substr(pos, 7) != "default") {
            return template_error(fmt::format(
                "unknown filter at character {} (only `| default \"text\"` is supported)",
                offset + pos + 1));
        }
        pos += 7;
        skip_space(expr, pos);
        if (pos >= expr.size() || expr[pos] != '"') {
            return template_error(fmt::format(
                "`default` needs a double-quoted string at character {}", offset + pos + 1));
        }
        auto value = read_string(expr, pos, offset + pos);
        if (!value) {
            return value.error();
        }
        part.default_value = std::move(*value);
        skip_space(expr, pos);
    }
    if (pos != expr.size()) {
        return template_error(fmt::format("unexpected \"{}\" in placeholder at character {}",
                                          expr.substr(pos), offset + pos + 1));
    }
    return part;
}

bool Template::has_placeholders() const {
    for (const auto& p : parts_) {
        if (!p.literal) {
            return true;
        }
    }
    return false;
}

std::vector<Template::Reference> Template::references(std::string_view root) const {
    std::vector<Reference> out;
    for (const auto& p : parts_) {
        if (!p.literal && p.path[0] == root) {
            out.push_back(Reference{p.path[1], p.offset});
        }
    }
    return out;
}

Result<std::string> Template::render(const TemplateScope& scope) const {
    std::string out;
    for (const auto& part : parts_) {
        if (part.literal) {
            out += part.text;
            continue;
        }
        auto value = lookup(part, scope);
        if (!value) {
            return value.error();
        }
        out += *value;
    }
    return out;
}

Result<std::string> Template::lookup(const Part& part, const TemplateScope& scope) const {
    const auto& path = part.path;
    if (path[0] == "steps") {
        return lookup_step_output(part, scope);
    }
    if (path[0] == "run") {
        return path[1] == "id" ? std::to_string(scope.run_id) : std::string(scope.runbook);
    }
    if (path[0] == "params") {
        if (scope.params != nullptr) {
            if (auto it = scope.params->find(path[1]); it != scope.params->end()) {
                return it->second;
            }
        }
        if (part.default_value) {
            return *part.default_value;
        }
        return template_error(fmt::format(
            "param \"{}\" has no value: it has no default and the run did not give it", path[1]));
    }
    const Alert* alert = scope.alert;
    if (alert == nullptr) {
        if (part.default_value) {
            return *part.default_value;
        }
        return template_error(
            fmt::format("{{{{ {} }}}} needs an alert, and this run has none", join_path(path)));
    }
    if (path.size() == 3) {
        const bool labels = path[1] == "labels";
        const LabelSet& set = labels ? alert->labels : alert->annotations;
        const auto it = set.find(path[2]);
        if (it != set.end() && !it->second.empty()) {
            return it->second;
        }
        if (part.default_value) {
            return *part.default_value;
        }
        if (it != set.end()) {
            return std::string();
        }
        return template_error(fmt::format(
            "{} \"{}\" is missing from the alert (write {{{{ {} | default \"...\" }}}} to allow "
            "that)",
            labels ? "label" : "annotation", path[2], join_path(path)));
    }
    if (path[1] == "fingerprint") {
        return alert->fingerprint;
    }
    if (path[1] == "status") {
        return std::string(alert_status_name(alert->status));
    }
    if (path[1] == "starts_at") {
        return alert->starts_at.to_rfc3339();
    }
    return alert->generator_url;
}

Result<std::string> Template::lookup_step_output(const Part& part, const TemplateScope& scope) {
    const std::string& step = part.path[1];
    const std::string& key = part.path[3];
    if (scope.dry_run) {
        return fmt::format("<output {} of step {}>", key, step);
    }
    const StepResult* result = nullptr;
    if (scope.steps != nullptr) {
        if (auto it = scope.steps->find(step); it != scope.steps->end()) {
            result = &it->second;
        }
    }
    if (result == nullptr) {
        if (part.default_value) {
            return *part.default_value;
        }
        return template_error(
            fmt::format("step \"{}\" has not ended in this run, so {{{{ {} }}}} "
                        "has no value (write {{{{ {} | default \"...\" }}}} to "
                        "allow that)",
                        step, join_path(part.path), join_path(part.path)));
    }
    const nlohmann::json outputs = result->outputs.empty()
                                       ? nlohmann::json::object()
                                       : nlohmann::json::parse(result->outputs, nullptr, false);
    const auto it = outputs.is_object() ? outputs.find(key) : outputs.end();
    if (!outputs.is_object() || it == outputs.end()) {
        if (part.default_value) {
            return *part.default_value;
        }
        return template_error(fmt::format(
            "step \"{}\" set no output \"{}\" (write {{{{ {} | default \"...\" }}}} to allow "
            "that)",
            step, key, join_path(part.path)));
    }
    if (it->is_string()) {
        return it->get<std::string>();
    }
    return it->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace runbookd
