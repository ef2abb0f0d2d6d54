#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <runbookd/alert.hpp>
#include <runbookd/matcher.hpp>
#include <runbookd/template.hpp>

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

// Orders diagnostics by file, line and column (stable), so that a reader goes through them top
// to bottom.
void sort_by_location(std::vector<Diagnostic>& diagnostics);

// What a step kind parsed from its YAML keys. Each kind defines its own subclass (for
// example ArgvStepConfig); the run engine hands it back to that kind's executor.
struct StepConfig {
    virtual ~StepConfig() = default;
};

// When a failed attempt is tried again (step key `retries:` and `retry_on:`). Whatever it
// says, an attempt that cannot be prepared (e.g. a missing label), cannot be spawned, or was
// cancelled is never tried again.
struct RetryPolicy {
    int attempts = 1;                // total attempts, 1 = no retry (max 100)
    Duration initial{1'000};         // delay before the 2nd attempt
    Duration max{60'000};            // delays never exceed this
    double multiplier = 2.0;         // delay n+1 = delay n * multiplier  (>= 1.0)
    double jitter = 0.0;             // 0..1: each delay is drawn uniformly from [d*(1-jitter), d]
    std::vector<int> on_exit_codes;  // retry when the program exited with one of these
    bool on_any_exit_code = false;   // retry on any non-zero exit code
    bool on_signal = false;          // retry when killed by a signal (not by runbookd's own stop)
    bool on_timeout = false;         // retry after the step's timeout
};

// Delay before attempt `next_attempt` (2, 3, ...) given a uniform random draw in [0,1):
// min(max, initial * multiplier^(next_attempt-2)), less up to `jitter` of it. Zero for
// attempts before the 2nd. Pure; safe from any thread.
Duration retry_delay(const RetryPolicy& policy, int next_attempt, double random01);

// A step's `approval:` gate (docs/approvals.md): the run parks as waiting_approval before the
// step starts and goes on only when someone in `approvers` (anyone when empty) approves it, or
// `on_timeout` decides at the deadline.
struct ApprovalSpec {
    std::vector<std::string> approvers;
    Duration timeout{30 * 60 * 1000};
    bool approve_on_timeout = false;  // on_timeout: approve; default deny
    std::string message;
    SourceLocation location;

    bool allows(std::string_view actor) const;
};

struct StepSpec {
    std::string name;  // unique within its runbook
    std::string kind;  // the key that selected the kind: "argv", "shell"
    std::string description;
    SourceLocation location;
    std::optional<Duration> timeout;  // empty: the daemon's default step timeout
    RetryPolicy retry;
    // Safe to run again after a crash interrupted it (docs/runs.md, Restart).
    bool idempotent = false;
    std::optional<ApprovalSpec> approval;
    std::shared_ptr<const StepConfig> config;
};

// One declared parameter of a runbook (`params:`, docs/manual-runs.md). Values are strings.
struct ParamSpec {
    std::string name;
    std::string description;
    bool required = false;
    std::optional<std::string> default_value;
    std::string pattern;                    // RE2 source, matched against the whole value
    std::shared_ptr<const re2::RE2> regex;  // compiled `pattern`; null without one
    std::vector<std::string> choices;       // empty: any value
    SourceLocation location;

    // Why `value` is not acceptable ("does not match ..."), or nothing when it is.
    std::optional<std::string> check(std::string_view value) const;
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
    std::optional<int> concurrency;   // runs of this runbook at once, 1..10000; empty: no own limit
    // A keyed lock held for the whole run: two runs whose rendered keys are equal never run at
    // once, whichever runbooks they belong to. Rendered when the run starts.
    std::optional<Template> lock;
    SourceLocation lock_location;
    // Suppression (docs/intake.md). `dedup` renders the key that makes alerts "the same thing"
    // for `cooldown` and `max_runs` (default: the alert's fingerprint).
    struct RunBudget {
        int count = 0;
        Duration per{0};
    };
    std::optional<Template> dedup;
    std::optional<Duration> cooldown;   // no new run for the same key within this long
    std::optional<RunBudget> max_runs;  // at most `count` runs for the same key per `per`
    // No new run for a key while an alert that started one for it has not resolved.
    bool once_until_resolved = false;
    // A run still queued or running when its alert resolves: finish it (default) or cancel it.
    bool on_resolve_cancel = false;
    // A run a crash interrupted: Steps decides by each step's `idempotent`; Resume re-runs the
    // interrupted step whatever it says; Fail ends the run interrupted.
    enum class OnInterrupt { Steps, Resume, Fail };
    OnInterrupt on_interrupt = OnInterrupt::Steps;
    std::vector<StepSpec> steps;
    std::vector<ParamSpec> params;  // in declaration order

    // The parameters of a run given `given`: each checked and the defaults of the others
    // added. Fails with InvalidArgument and `where` = "params.NAME" for an undeclared name, a
    // value its pattern or choices refuse, or a required parameter neither given nor defaulted.
    Result<LabelSet> resolve_params(const LabelSet& given) const;
    // What an alert run gets: the declared defaults.
    LabelSet default_params() const;

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

// The runbook set in force: a reload replaces it whole (docs/runbooks.md, Reload). Readers
// take a snapshot and keep using it for as long as they need; a published catalog is never
// changed. Any thread.
class CurrentCatalog {
  public:
    explicit CurrentCatalog(std::shared_ptr<const RunbookCatalog> catalog)
        : catalog_(std::move(catalog)) {}

    std::shared_ptr<const RunbookCatalog> get() const {
        std::lock_guard lock(mutex_);
        return catalog_;
    }
    void set(std::shared_ptr<const RunbookCatalog> catalog) {
        std::lock_guard lock(mutex_);
        catalog_ = std::move(catalog);
    }

  private:
    mutable std::mutex mutex_;
    std::shared_ptr<const RunbookCatalog> catalog_;
};

// Parses Go-style durations: "300ms", "30s", "5m", "1h30m".
std::optional<Duration> parse_duration(std::string_view text);
std::string format_duration(Duration d);

}  // namespace runbookd
