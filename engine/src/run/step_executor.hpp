#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <runbookd/alert.hpp>
#include <runbookd/runbook.hpp>
#include <runbookd/store.hpp>

namespace runbookd::run {

// How one attempt of a step ended.
struct AttemptOutcome {
    bool succeeded = false;
    std::optional<int> exit_code;
    std::optional<int> signal;
    bool timed_out = false;
    bool cancelled = false;
    bool spawn_failed = false;  // nothing ran: the program could not be started
    std::string error;          // empty on success
    std::string stdout_excerpt;
    std::string stderr_excerpt;
    std::int64_t stdout_bytes = 0;
    std::int64_t stderr_bytes = 0;
    std::vector<AttemptTransition> transitions;
    std::string output_path;  // the full output file, empty when none was written
    std::int64_t output_stored_bytes = 0;
    bool output_truncated = false;
    // What the attempt hands to later steps: a JSON object as text; empty when none.
    std::string outputs;
};

// Everything an executor may use to prepare an attempt.
struct AttemptContext {
    RunId run_id = 0;
    const Runbook* runbook = nullptr;
    const StepSpec* step = nullptr;
    int step_index = 0;
    int attempt = 1;
    const Alert* alert = nullptr;  // null for runs without an alert
    std::string_view trigger;      // "alert" or "manual"
    std::string_view actor;        // who started the run ("alertmanager" for alert runs)
    std::string_view traceparent;  // the run's (docs/tracing.md); empty: none recorded
    Duration timeout{0};
    // The steps of this run that ended before this one (their latest attempt), by name; kept
    // by the run and reloaded from the store when a run resumes after a crash. Never null.
    const StepResults* steps = nullptr;
    // The run's parameters (defaults applied). Never null.
    const LabelSet* params = nullptr;
    // A dry run: the attempt is prepared and described, never started; step outputs render as
    // placeholders (docs/manual-runs.md).
    bool dry_run = false;

    // The scope its templates render in.
    TemplateScope scope() const {
        return TemplateScope{alert, run_id, runbook->name, steps, params, dry_run};
    }
};

// One prepared attempt: rendered and ready to start. The run engine records what it will run
// (argv, cwd) before starting it.
class Attempt {
  public:
    virtual ~Attempt() = default;

    virtual const std::vector<std::string>& argv() const = 0;  // empty when no program runs
    virtual const std::string& cwd() const = 0;
    // What the attempt would do, for a dry run's plan: at least `argv` and `cwd`; kinds add
    // their own (environment, Python target). Values are real: the caller redacts secrets.
    virtual nlohmann::json describe() const {
        return nlohmann::json{{"argv", argv()}, {"cwd", cwd()}};
    }

    // Starts the attempt; `spawned` runs when its process exists (pid = process group id),
    // `done` exactly once, both on the run engine's io_context.
    virtual void start(std::function<void(int pid)> spawned,
                       std::function<void(AttemptOutcome)> done) = 0;
    // Stops it early; `done` still runs once, with `cancelled` set.
    virtual void cancel(std::string reason) = 0;
};

// Executes the steps of one kind (the kind's StepParser produced their StepConfig). A new kind
// adds an executor here and a parser in the runbook loader; the scheduler is not touched.
class StepExecutor {
  public:
    virtual ~StepExecutor() = default;
    virtual std::string_view kind() const = 0;
    // Renders the step for this attempt. Fails (e.g. a label the step needs is missing) without
    // starting anything.
    virtual Result<std::unique_ptr<Attempt>> prepare(const AttemptContext& context) = 0;
};

}  // namespace runbookd::run
