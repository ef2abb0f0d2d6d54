#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <variant>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <spdlog/logger.h>
#include <sys/types.h>

#include <runbookd/runbook.hpp>
#include <runbookd/step_parser.hpp>
#include <runbookd/store.hpp>

#include "exec/redact.hpp"
#include "run/step_executor.hpp"

namespace runbookd::run {

struct SchedulerOptions {
    std::size_t max_concurrent_runs = 8;
    Duration default_step_timeout{300'000};
    Duration default_run_timeout{1'800'000};
    // The exec::kInstanceEnv value in this runbookd's steps: recover() stops every process
    // that carries it. Empty: no such search.
    std::string instance;
    // The configured secrets (name, value): their values are redacted from everything the
    // scheduler records or logs about runs and attempts (argv, errors, reasons, outputs,
    // events); the steps themselves get the real values.
    std::vector<std::pair<std::string, std::string>> secrets;
};

class RunExecution;

// An answer to the approval of one step of a run (docs/approvals.md).
struct ApprovalAnswer {
    std::string step;  // the step's name
    bool approve = true;
    std::string actor;
    std::string comment;
};

// What came of an answer. `refused` empty: it was recorded and `approval` is the row now.
struct AnswerOutcome {
    enum class Refusal {
        NotFound,        // no such run, or no such step in its runbook version
        NoApproval,      // the step has no approval gate
        RunEnded,        // the run has ended
        AlreadyDecided,  // answered (or timed out) before: `approval` says by whom
        NotWaiting,      // the run is not waiting for this step (yet)
        NotApprover,     // the actor is not among the approvers
        Unavailable,     // the store could not be written; nothing changed
    };
    std::optional<Refusal> refused;
    std::string message;
    std::optional<ApprovalRecord> approval;
};

// One run a plan asks about (POST /api/v1/plan): a runbook an alert would start.
struct PlannedRun {
    std::shared_ptr<const Runbook> runbook;
    Alert alert;
};

// What that run would do: every step rendered as in a dry run (secrets redacted), the first
// step that could not be prepared, and why it would wait to start (concurrency, a lock held).
struct RunPlan {
    nlohmann::json steps;
    std::string failure;  // empty: every step renders
    std::string waits;    // empty: it would start at once
};

// What a cancel request did.
struct CancelOutcome {
    RunState state = RunState::Cancelled;  // the run's state now
    bool stopping = false;  // true: it was running; its step is being stopped and it ends soon
};

// Starts queued runs, at most `max_concurrent_runs` at a time, oldest first, and drives each
// through its steps (see docs/runs.md for the states).
//
// Thread model: enqueue() and counters may be called from any thread; everything else runs on
// the io_context given to the constructor, which must be run by exactly one thread.
class Scheduler {
  public:
    Scheduler(boost::asio::io_context& io, Store& store,
              std::shared_ptr<const RunbookCatalog> catalog, StepParsers parsers,
              std::vector<std::shared_ptr<StepExecutor>> executors, SchedulerOptions options);
    ~Scheduler();

    // After a reload: runs queued from now on may refer to `catalog`'s versions. Runs already
    // queued or running keep the version they recorded (runs.runbook_hash), from this catalog,
    // the versions seen before, or the store. Scheduler thread.
    void set_catalog(std::shared_ptr<const RunbookCatalog> catalog);

    // Queues committed runs for execution.
    void enqueue(std::vector<RunId> runs);

    // Renders each of `runs` as a dry run would and says what would hold it back now, without
    // recording or starting anything; `done` runs on the scheduler's thread. Any thread.
    void plan(std::vector<PlannedRun> runs, std::function<void(std::vector<RunPlan>)> done);

    // Plans a committed dry run at once, outside the queue and its limits (it runs nothing),
    // and calls `done` on the scheduler's thread once its end is recorded. Any thread.
    void dry_run(RunId id, std::function<void(Status)> done);

    // At start-up: stops what a previous process left running, then resumes each run it
    // interrupted or ends it (docs/runs.md, Restart), and queues the runs it left queued.
    // Call before serving requests, with the run engine's thread running.
    Status recover();

    // Stops starting queued runs (they stay queued in the store), waits up to `grace` for the
    // active runs to finish, cancels those still going, and calls `done` once none is active.
    void drain(Duration grace, std::function<void()> done);

    // Cancels one run for `actor` (recorded as the run's cancelled_by). A queued run ends at
    // once; a running one has its current attempt stopped gracefully (stop signal, grace,
    // SIGKILL) and ends cancelled. Fails with NotFound, or FailedPrecondition when the run has
    // already ended. `done` runs on the scheduler's thread. Any thread.
    void cancel(RunId id, std::string actor, std::string reason,
                std::function<void(Result<CancelOutcome>)> done);

    // Stops every active run now (their steps get the stop signal, then SIGKILL after the kill
    // grace); the runs end cancelled with `reason`. Any thread.
    void cancel_active(std::string reason);

    // Answers the approval a run is waiting for (or is about to wait for: an answer that comes
    // while the run is pausing is held until the pause is committed, never dropped). The store
    // decides between concurrent answers; `done` runs on the scheduler's thread. Any thread.
    void answer(RunId id, ApprovalAnswer answer, std::function<void(AnswerOutcome)> done);

    std::size_t active_runs() const { return active_count_.load(); }
    // Runs parked as waiting_approval (they hold no slot), for metrics; any thread.
    std::size_t approval_waiting_runs() const {
        return approval_count_.load(std::memory_order_relaxed);
    }
    std::size_t queued_runs() const { return queued_count_.load(); }
    // For metrics, any thread: runs queued in the store that have not started executing
    // (including those waiting for a slot or a lock), runs executing, and how long the oldest
    // waiting run has waited since this runbookd queued it (0 when none waits).
    std::size_t waiting_runs() const { return waiting_count_.load(std::memory_order_relaxed); }
    std::size_t running_runs() const { return running_count_.load(std::memory_order_relaxed); }
    std::chrono::milliseconds oldest_queued_age() const;

  private:
    friend class RunExecution;

    void start_more();
    // Why `run` cannot start now (its runbook's concurrency, its lock), or nothing: then the
    // run holds its slot and lock from here on.
    std::optional<std::string> admit(const RunExecution& run);
    // Keeps a loaded run that admit() refused until a running one ends.
    void park(RunId id);
    double random01();
    // What recovery did about a step a crash left running: in words, and the process group it
    // sent SIGTERM (0 when none).
    struct LeftRunning {
        std::string what;
        pid_t pgid = 0;
    };
    LeftRunning stop_left_running(RunId id, const Result<RunDetail>& run);
    // Sends SIGTERM to every process group holding a step of this runbookd's database that is
    // not among `known` (steps whose pid was never recorded); returns the groups signalled.
    std::vector<pid_t> stop_unrecorded(const std::vector<pid_t>& known);
    // Where a run a crash interrupted goes on, decided by recover().
    struct Resume {
        std::size_t step_index = 0;
        int attempt = 1;
        int uncounted = 0;  // attempts of that step that do not count against its retries
        std::optional<std::pair<AttemptId, AttemptEnd>> interrupted;  // closed when it goes on
        std::string why;
        Duration delay{0};    // what is left of a retry's backoff before the attempt starts
        StepResults earlier;  // the steps that ended before step_index, as recorded
    };
    // The run goes on (a Resume) or ends (a RunProgress that finishes it).
    std::variant<Resume, RunProgress> plan_recovery(RunId id, const Result<RunDetail>& run,
                                                    const std::string& stopped);
    void on_run_finished(RunId id);
    // A run whose approval request is committed gives back its slot (it keeps its lock and its
    // place in its runbook's concurrency); once approved it takes the next free slot.
    void park_for_approval(RunId id);
    // Gives back what admit() took: the run's place in its runbook's concurrency, its lock.
    void release_admission(const RunExecution& run);
    void resume_approved(RunId id);
    std::shared_ptr<RunExecution> find_execution(RunId id) const;
    // Why an answer to run `id` cannot be taken, from what the store says.
    AnswerOutcome explain_refusal(RunId id, const ApprovalAnswer& answer);
    std::shared_ptr<const Runbook> resolve_runbook(const std::string& name, const std::string& hash,
                                                   std::string& error);
    StepExecutor* executor_for(std::string_view kind) const;
    // Prepares and describes every step of `runbook` with `base` (its step, index and timeout
    // set per step), starting nothing; `failure` gets the first step that cannot be prepared.
    nlohmann::json describe_steps(const Runbook& runbook, AttemptContext base,
                                  std::string& failure) const;
    void check_drained();
    // Bookkeeping of runs waiting to start, for the metrics above. Scheduler thread.
    void note_queued(RunId id);
    void note_started_or_gone(RunId id);
    void publish_queue();

    boost::asio::io_context& io_;
    Store& store_;
    std::shared_ptr<const RunbookCatalog> catalog_;
    StepParsers parsers_;
    std::vector<std::shared_ptr<StepExecutor>> executors_;
    SchedulerOptions options_;
    exec::SecretRedaction redaction_;  // of options_.secrets
    std::shared_ptr<spdlog::logger> log_;

    std::deque<RunId> queue_;
    // Loaded or running: counts against max_concurrent_runs.
    std::map<RunId, std::shared_ptr<RunExecution>> active_;
    // Loaded but refused by admit(), oldest first; they stay queued in the store.
    std::map<RunId, std::shared_ptr<RunExecution>> waiting_;
    std::map<std::string, int> running_per_runbook_;  // admitted runs by runbook name
    std::map<std::string, RunId> locks_;              // lock key → the run holding it
    std::mt19937_64 rng_{std::random_device{}()};     // retry jitter
    std::map<std::string, std::shared_ptr<const Runbook>> old_versions_;  // by content hash
    // Parked as waiting_approval: no slot; and approved ones waiting for a slot, in order.
    std::map<RunId, std::shared_ptr<RunExecution>> approving_;
    std::deque<RunId> approved_;
    std::atomic<std::size_t> approval_count_{0};
    std::map<RunId, Resume> resumes_;  // interrupted runs recover() queued to go on
    std::atomic<std::size_t> active_count_{0};
    std::atomic<std::size_t> queued_count_{0};
    std::map<RunId, std::chrono::steady_clock::time_point> queued_since_;
    std::atomic<std::size_t> waiting_count_{0};
    std::atomic<std::size_t> running_count_{0};
    // steady_clock milliseconds when the oldest waiting run was queued; 0: none waits.
    std::atomic<std::int64_t> oldest_queued_ms_{0};
    bool draining_ = false;
    std::function<void()> drained_;
    std::unique_ptr<boost::asio::steady_timer> drain_timer_;
};

}  // namespace runbookd::run
