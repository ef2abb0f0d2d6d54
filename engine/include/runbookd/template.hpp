#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <runbookd/alert.hpp>
#include <runbookd/result.hpp>

namespace runbookd {

// What placeholders can refer to when a step is rendered.
struct TemplateScope {
    const Alert* alert = nullptr;  // null for runs without an alert
    std::int64_t run_id = 0;
    std::string_view runbook;
};

// A string with `{{ ... }}` placeholders, parsed once when the runbook loads and rendered for
// each attempt. A placeholder is a path (`alert.labels.NAME`, `alert.annotations.NAME`,
// `alert.fingerprint`, `alert.status`, `alert.starts_at`, `alert.generator_url`, `run.id`,
// `run.runbook`) or a string literal (`"{{"`), optionally followed by `| default "text"`.
//
// Rendering substitutes text only: the result is one string, and an argv element stays one
// argv element whatever the value holds. Values are never given to a shell.
class Template {
  public:
    // Parses `text`. On error, the message says what is wrong and at which character.
    static Result<Template> parse(std::string_view text);

    // Renders with `scope`. Fails when a label or annotation the template needs is absent and
    // the placeholder has no default, or when the scope has no alert but the template uses one.
    Result<std::string> render(const TemplateScope& scope) const;

    const std::string& source() const { return source_; }
    bool has_placeholders() const;

  private:
    struct Part {
        bool literal = true;
        std::string text;                          // literal text, when literal
        std::vector<std::string> path;             // e.g. {"alert", "labels", "instance"}
        std::optional<std::string> default_value;  // `| default "..."`
    };

    static Result<Part> parse_placeholder(std::string_view expr, std::size_t offset);
    Result<std::string> lookup(const Part& part, const TemplateScope& scope) const;

    std::string source_;
    std::vector<Part> parts_;
};

}  // namespace runbookd
