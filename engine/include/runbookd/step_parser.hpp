#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <yaml-cpp/yaml.h>

#include <runbookd/runbook.hpp>
#include <runbookd/template.hpp>

namespace runbookd {

// The value of `key` in a YAML mapping, or an undefined node. Unlike node[key] it never inserts
// and copes with the duplicate keys that the loader reports.
YAML::Node find_key(const YAML::Node& map, std::string_view key);

// Collects the diagnostics of one runbook file and offers typed readers for YAML nodes. Each
// reader records a file:line:column error and returns nullopt when the node has the wrong
// type, so parsing can go on and report every problem in one pass.
class ParseContext {
  public:
    // `text` is the file's text, which must outlive the context; it lets location_in() point
    // inside multi-line strings.
    explicit ParseContext(std::string file, std::string_view text = {})
        : file_(std::move(file)), text_(text) {}

    SourceLocation location(const YAML::Node& node) const;
    SourceLocation location(const YAML::Mark& mark) const;
    // Where the character at `offset` of a scalar's value is in the file. Exact for plain and
    // quoted one-line scalars and literal blocks (`|`) without escapes; otherwise the location
    // of the scalar itself.
    SourceLocation location_in(const YAML::Node& scalar, std::size_t offset) const;
    void error(const YAML::Node& at, std::string message);
    void error(SourceLocation at, std::string message);
    // Something that loads but is probably not what the author meant.
    void warning(const YAML::Node& at, std::string message);
    void warning(SourceLocation at, std::string message);

    std::optional<std::string> string(const YAML::Node& node, std::string_view what);
    std::optional<Duration> duration(const YAML::Node& node, std::string_view what);
    std::optional<Template> template_string(const YAML::Node& node, std::string_view what);
    // A decimal integer from `min` to `max`.
    std::optional<std::int64_t> integer(const YAML::Node& node, std::string_view what,
                                        std::int64_t min, std::int64_t max);
    // A finite decimal number.
    std::optional<double> number(const YAML::Node& node, std::string_view what);
    // true or false (YAML's spelling; yes/no/on/off are refused as ambiguous).
    std::optional<bool> boolean(const YAML::Node& node, std::string_view what);
    // One of `choices`, returned as its index.
    std::optional<std::size_t> choice(const YAML::Node& node, std::string_view what,
                                      const std::vector<std::string_view>& choices);

    // Checks that `node` is a mapping whose keys are strings, unique, and among `allowed`.
    bool check_mapping(const YAML::Node& node, std::string_view what,
                       const std::vector<std::string_view>& allowed);

    // The secret names configured (config `secrets:`) that `env: {X: {secret: NAME}}` may
    // use; null when they are not known (runbookctl lint), and any name is accepted then.
    void set_secret_names(const std::set<std::string>* names) { secret_names_ = names; }
    const std::set<std::string>* secret_names() const { return secret_names_; }

    // While a step is parsed: the names of the steps before it in the runbook, the only ones
    // a `{{ steps.STEP.outputs.KEY }}` placeholder may name. Null outside steps (lock, dedup),
    // where such placeholders are refused.
    void set_earlier_steps(const std::vector<std::string>* names) { earlier_steps_ = names; }
    // While the steps and the lock are parsed: the runbook's declared parameters, the only ones
    // a `{{ params.NAME }}` placeholder may name. Null elsewhere (dedup), where such
    // placeholders are refused.
    void set_declared_params(const std::vector<std::string>* names) { declared_params_ = names; }

    const std::string& file() const { return file_; }
    std::vector<Diagnostic>& diagnostics() { return diagnostics_; }
    std::vector<Diagnostic>& warnings() { return warnings_; }
    bool failed() const { return !diagnostics_.empty(); }

  private:
    std::string file_;
    std::string_view text_;
    const std::set<std::string>* secret_names_ = nullptr;
    const std::vector<std::string>* earlier_steps_ = nullptr;
    const std::vector<std::string>* declared_params_ = nullptr;
    std::vector<Diagnostic> diagnostics_;
    std::vector<Diagnostic> warnings_;
};

// Parses the keys of one step kind. A step has exactly one key naming its kind (`argv:`);
// later kinds (`shell:`, `python:`, `uses:`) register their own parser, and the loader stays
// unchanged. Implementations are stateless and shared between threads.
class StepParser {
  public:
    virtual ~StepParser() = default;

    // The key that selects this kind.
    virtual std::string_view kind() const = 0;
    // Further step keys this kind reads (e.g. "env", "cwd"), besides the common ones.
    virtual std::vector<std::string_view> keys() const = 0;
    // Parses `step` (the whole step mapping). Returns null after recording errors in `ctx`.
    virtual std::shared_ptr<const StepConfig> parse(const YAML::Node& step,
                                                    ParseContext& ctx) const = 0;
};

using StepParsers = std::vector<std::shared_ptr<const StepParser>>;

// The step kinds built into runbookd.
StepParsers builtin_step_parsers();

// The outcome of loading a runbooks directory: the runbooks, and every problem found.
struct LoadResult {
    std::vector<std::shared_ptr<const Runbook>> runbooks;
    std::vector<Diagnostic> errors;
    std::vector<Diagnostic> warnings;  // loaded anyway, e.g. a runbook no alert can start
};

// Loads every `*.yaml` and `*.yml` file directly in `dir` (hidden files skipped), one runbook
// per file. Runbook names must be unique across the directory. With `secret_names`, a step env
// naming any other secret is an error (see ParseContext::set_secret_names).
LoadResult load_runbook_dir(const std::filesystem::path& dir, const StepParsers& parsers,
                            const std::set<std::string>* secret_names = nullptr);

// Loads one runbook from text; `file` names it in diagnostics.
LoadResult load_runbook_text(std::string_view text, const std::string& file,
                             const StepParsers& parsers,
                             const std::set<std::string>* secret_names = nullptr);

}  // namespace runbookd
