#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <runbookd/alert.hpp>
#include <runbookd/matcher.hpp>

namespace runbookd {

using Duration = std::chrono::milliseconds;

// A position in a runbook file, 1-based, printed as "file:line:column".
struct SourceLocation {
    std::string file;
    int line = 0;
    int column = 0;

    std::string to_string() const;
};

// A problem found while loading runbooks.
struct Diagnostic {
    SourceLocation location;
    std::string message;

    std::string to_string() const { return location.to_string() + ": " + message; }
};

// What a step kind parsed from its YAML keys. Each kind defines its own subclass (for
// example ArgvStepConfig); the run engine hands it back to that kind's executor.
struct StepConfig {
    virtual ~StepConfig() = default;
};

struct StepSpec {
    std::string name;  // unique within its runbook
    std::string kind;  // the key that selected the kind: "argv"
    std::string description;
    SourceLocation location;
    std::optional<Duration> timeout;  // empty: the daemon's default step timeout
    std::shared_ptr<const StepConfig> config;
};

// A loaded, validated runbook. Immutable once loaded and shared by every run that uses it.
struct Runbook {
    std::string name;
    SourceLocation name_location;
    std::string description;
    std::string source_file;
    std::string source_text;
    std::string content_hash;  // sha256 of source_text
    // Empty means the runbook is never started by alerts (manual runs only).
    std::vector<Matcher> matchers;
    bool on_firing = true;
    bool on_resolved = false;
    std::optional<Duration> timeout;  // whole run; empty: the daemon's default run timeout
    std::vector<StepSpec> steps;

    // True when the alert's labels match and its status is one this runbook acts on.
    bool matches_labels(const LabelSet& labels) const;
    bool acts_on(AlertStatus status) const;
};

// The runbooks of one directory, sorted by name. Immutable; share it through shared_ptr.
class RunbookCatalog {
  public:
    explicit RunbookCatalog(std::vector<std::shared_ptr<const Runbook>> runbooks);

    const std::vector<std::shared_ptr<const Runbook>>& all() const { return runbooks_; }
    std::shared_ptr<const Runbook> find(std::string_view name) const;
    std::shared_ptr<const Runbook> find_by_hash(std::string_view content_hash) const;

  private:
    std::vector<std::shared_ptr<const Runbook>> runbooks_;
};

// Parses Go-style durations: "300ms", "30s", "5m", "1h30m".
std::optional<Duration> parse_duration(std::string_view text);
std::string format_duration(Duration d);

}  // namespace runbookd
