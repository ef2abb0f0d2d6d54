#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <runbookd/alert.hpp>
#include <runbookd/result.hpp>

namespace runbookd {

// How a step of a run ended, as the later steps of the run see it (its latest attempt).
struct StepResult {
    std::string state;  // succeeded, failed, outcome_unknown
    std::optional<int> exit_code;
    std::string outputs;         // a JSON object as text; empty: the step set none
    std::string stdout_excerpt;  // as recorded (head and tail)
};

// The steps of a run that ended before the one being rendered, by step name.
using StepResults = std::map<std::string, StepResult, std::less<>>;

// What placeholders can refer to when a step is rendered.
struct TemplateScope {
    const Alert* alert = nullptr;  // null for runs without an alert
    std::int64_t run_id = 0;
    std::string_view runbook;
    const StepResults* steps = nullptr;  // null outside steps (lock, dedup) or before any ended
    const LabelSet* params = nullptr;    // the run's parameters; null: none
    // A dry run: step outputs do not exist, and render as "<output KEY of step STEP>".
    bool dry_run = false;
};

// A string with `{{ ... }}` placeholders, parsed once when the runbook loads and rendered for
// each attempt. A placeholder is a path (`alert.labels.NAME`, `alert.annotations.NAME`,
// `alert.fingerprint`, `alert.status`, `alert.starts_at`, `alert.generator_url`, `run.id`,
// `run.runbook`, `steps.STEP.outputs.KEY`, `params.NAME`) or a string literal (`"{{"`), optionally
// followed by `| default "text"`.
//
// `steps.STEP.outputs.KEY` is an output an earlier step of the run set: a JSON string renders
// as its text, any other JSON value as compact JSON (`true`, `3`, `{"a":1}`). A step that has
// not ended, or has no such output, fails the render unless the placeholder has a default. The
// loader checks that STEP names an earlier step of the same runbook.
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

    // A placeholder under `root` ("steps" or "params"): the step or parameter it names, and the
    // offset of the placeholder's path in source().
    struct Reference {
        std::string name;
        std::size_t offset = 0;
    };
    std::vector<Reference> references(std::string_view root) const;

  private:
    struct Part {
        bool literal = true;
        std::string text;                          // literal text, when literal
        std::vector<std::string> path;             // e.g. {"alert", "labels", "instance"}
        std::optional<std::string> default_value;  // `| default "..."`
        std::size_t offset = 0;                    // of the path in the source
    };

    static Result<Part> parse_placeholder(std::string_view expr, std::size_t offset);
    Result<std::string> lookup(const Part& part, const TemplateScope& scope) const;
    static Result<std::string> lookup_step_output(const Part& part, const TemplateScope& scope);

    std::string source_;
    std::vector<Part> parts_;
};

}  // namespace runbookd
