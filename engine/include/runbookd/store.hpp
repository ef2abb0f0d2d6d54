#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <runbookd/alert.hpp>
#include <runbookd/result.hpp>
#include <runbookd/runbook.hpp>
#include <runbookd/timestamp.hpp>

namespace runbookd {

using RunId = std::int64_t;
using AttemptId = std::int64_t;

// Interrupted: runbookd stopped (crashed) while a step whose effect cannot be known ran; the
// run waits for a human (docs/runs.md, Restart). WaitingApproval: parked before a step with an
// `approval:` gate until it is answered (docs/approvals.md).
enum class RunState { Queued, Running, Succeeded, Failed, Cancelled, Interrupted, WaitingApproval };
const char* run_state_name(RunState state);
std::optional<RunState> parse_run_state(std::string_view name);
inline bool is_terminal(RunState s) {
    return s != RunState::Queued && s != RunState::Running && s != RunState::WaitingApproval;
}

// The state of one approval (docs/approvals.md). Cancelled: the run ended otherwise while it
// was pending.
enum class ApprovalState { Pending, Approved, Denied, TimedOut, Cancelled };
const char* approval_state_name(ApprovalState state);
std::optional<ApprovalState> parse_approval_state(std::string_view name);

// Why an alert of a delivery started no run (or that it did).
//   Duplicate: each runbook it matched has already run for this episode, or for a later one.
//   Cooldown, Budget: a runbook's cooldown or max_runs held it back (docs/intake.md).
enum class AlertOutcome {
    RunStarted,
    NoMatchingRunbook,
    StatusIgnored,
    Duplicate,
    Cooldown,
    Budget
};
const char* alert_outcome_name(AlertOutcome outcome);

// Everything one webhook delivery creates. The store commits all of it in one transaction:
// the delivery, each alert with its outcome, and a queued run for each (alert, runbook) pair
// whose episode has not run that runbook yet. An episode is (fingerprint, status, startsAt):
// Alertmanager re-sends the same episode in every snapshot of its group and from every HA peer,
// and the store starts each runbook once per episode (docs/intake.md).
struct DeliveryRecord {
    struct AlertEntry {
        Alert alert;
        AlertOutcome outcome = AlertOutcome::NoMatchingRunbook;
        std::string outcome_detail;
    };
    struct RunRequest {
        std::size_t alert_index = 0;  // into `alerts`
        std::string runbook;
        std::string runbook_hash;
        std::string dedup_key;  // the runbook's `dedup` rendered, else the fingerprint
        std::optional<Duration> cooldown;
        std::optional<Runbook::RunBudget> max_runs;
        bool once_until_resolved = false;
        std::string traceparent = {};  // the run's own (docs/tracing.md)
    };
    // A resolved alert and a runbook whose matchers it matches (whatever its `on:`): the
    // runbook's firing episode of that alert, if it ran, is marked resolved.
    struct Resolution {
        std::size_t alert_index = 0;
        std::string runbook;
    };

    Timestamp received_at;
    std::string source;  // "alertmanager"
    std::string remote_addr;
    std::string user_agent;
    std::size_t body_bytes = 0;
    std::string body_sha256;
    std::string traceparent;  // the request's valid traceparent header; empty: none
    std::string receiver;
    std::string group_key;
    std::string status;
    std::string external_url;
    std::int64_t truncated_alerts = 0;
    std::vector<std::string> warnings;
    std::vector<AlertEntry> alerts;
    std::vector<RunRequest> runs;
    std::vector<Resolution> resolutions;
};

struct DeliveryReceipt {
    std::int64_t delivery_id = 0;
    std::vector<std::int64_t> alert_ids;  // parallel to DeliveryRecord::alerts
    std::vector<RunId> run_ids;           // parallel to DeliveryRecord::runs; 0: not started
    // Parallel to runs: why a run request was not started (Duplicate, Cooldown or Budget, and in
    // words), or RunStarted with no reason.
    struct Skip {
        AlertOutcome outcome = AlertOutcome::RunStarted;
        std::string reason;
        bool skipped() const { return outcome != AlertOutcome::RunStarted; }
    };
    std::vector<Skip> skipped;
    // Parallel to alerts: the outcome as recorded (an alert whose every run was skipped
    // becomes Duplicate, with the first reason as its detail).
    std::vector<AlertOutcome> alert_outcomes;
    std::vector<std::string> alert_details;

    // Runs whose firing episode this delivery resolved (first time only), parallel to nothing:
    // (run, index into DeliveryRecord::resolutions).
    std::vector<std::pair<RunId, std::size_t>> resolved_runs;

    // The ids of the runs that were started.
    std::vector<RunId> started_runs() const;
};

// What the run engine needs to execute a queued run.
struct RunContext {
    RunId id = 0;
    std::string runbook;
    std::string runbook_hash;
    RunState state = RunState::Queued;
    std::string trigger;
    std::string actor;  // who started it: "alertmanager" for alert runs
    // Alert runs: the alert. Manual runs: an alert made of the request's labels
    // (docs/manual-runs.md), so that label templates and RUNBOOK_LABEL_* work alike.
    std::optional<Alert> alert;
    std::optional<LabelSet> params;  // manual runs: as recorded; empty: the runbook's defaults
    bool dry_run = false;
    // The run's place in a trace (docs/tracing.md); empty for runs recorded before schema 12.
    std::string traceparent;
};

// A run requested by hand (POST /api/v1/runbooks/{name}/runs), validated and ready to record:
// the run and its run.requested event are one transaction.
struct ManualRunRequest {
    std::string runbook;
    std::string runbook_hash;
    std::string actor;
    std::string reason;
    LabelSet labels;
    LabelSet params;  // defaults applied
    bool dry_run = false;
    std::string idempotency_key;  // empty: none
    std::string request_sha256;   // of the request as given, to tell a replay from a reuse
    Timestamp requested_at;
    std::string traceparent;  // the run's own (docs/tracing.md)
};

struct ManualRunReceipt {
    // Created: a new run. Replayed: the key was used before for the same request; `run` is
    // that run and nothing was written. KeyReused: the key was used for another request
    // (`run`); nothing was written.
    enum class Outcome { Created, Replayed, KeyReused };
    Outcome outcome = Outcome::Created;
    RunId run = 0;
};

// One step attempt as it starts: what will run.
struct AttemptStart {
    RunId run_id = 0;
    std::string step;
    int step_index = 0;
    int attempt = 1;
    std::string kind;
    std::vector<std::string> argv;  // as executed; empty when the kind runs no program
    std::string cwd;
    Timestamp started_at;
    // The process once spawned (recorded by a later write): its pid, which is its process
    // group id, and its start time in clock ticks after boot, so that a restarted runbookd
    // can stop what a crash left running without mistaking a new process for it.
    std::optional<int> pid;
    std::optional<std::uint64_t> pid_start_ticks;
};

// Something that happened to an attempt's processes: the stop signal sent, the grace period
// expired, the group killed, output truncated. Recorded as events of the attempt.
struct AttemptTransition {
    Timestamp at;
    std::string kind;  // e.g. "stop_signal_sent"; the event kind is "attempt." + kind
    // Words, recorded as the event's {"detail": ...}; or, with `structured`, a JSON object as
    // text that is the event's detail itself (attempt.log, attempt.exec), so that json_extract
    // reaches its fields.
    std::string detail;
    bool structured = false;
};

// How an attempt ended.
struct AttemptEnd {
    bool succeeded = false;
    std::optional<int> exit_code;  // set when the program exited
    std::optional<int> signal;     // set when it was killed by a signal
    std::string error;             // why it failed, in words; empty on success
    Timestamp finished_at;
    std::int64_t duration_ms = 0;
    std::string stdout_excerpt;
    std::string stderr_excerpt;
    std::int64_t stdout_bytes = 0;
    std::int64_t stderr_bytes = 0;
    bool timed_out = false;
    bool cancelled = false;
    // A crash stopped runbookd while the attempt ran: whether its work was done is not known
    // (state outcome_unknown).
    bool outcome_unknown = false;
    std::vector<AttemptTransition> transitions;
    // The full output (stdout and stderr in arrival order) as a file, up to the cap.
    std::string output_path;  // empty when none was written
    std::int64_t output_stored_bytes = 0;
    bool output_truncated = false;
    // What the attempt handed to later steps: a JSON object as text; empty when none.
    std::string outputs;
};

// One approval of a gated step, as recorded in the approvals table.
struct ApprovalRecord {
    RunId run_id = 0;
    std::string step;
    int step_index = 0;
    std::vector<std::string> approvers;
    std::string message;
    bool approve_on_timeout = false;
    ApprovalState state = ApprovalState::Pending;
    Timestamp requested_at;
    Timestamp deadline;
    std::string decided_by;
    std::optional<Timestamp> decided_at;
    std::string comment;
};

// One step of a run's progress, written as one transaction so that a run costs one commit per
// step plus one: the parts present apply in this order.
//   cancel_requested: a running run is being cancelled (who, why)
//   waiting:   the run stays queued, for this reason (a lock, the runbook's concurrency)
//   started:   queued → running
//   resumed:   a run a crash interrupted goes on after a restart (why, in words)
//   ended:     the attempt in flight ended
//   next:      the next attempt starts (its id comes back in the completion)
//   next_end:  ...and ended before starting anything (e.g. a missing label)
//   approval_requested: running → waiting_approval, with a pending approvals row
//   approval_decided:   the pending approval is answered (or timed out); unless the run also
//                       finishes in this write, waiting_approval → running
//   planned:   a dry run's plan
//   finished:  the run ends; any attempt still running is closed with the same reason, any
//              approval still pending becomes cancelled
// Every part checks the state it expects (a run must be queued to start, an attempt running to
// end); a mismatch fails the whole write with InvalidArgument.
struct RunProgress {
    struct Finish {
        RunState state = RunState::Failed;
        std::string reason;
        Timestamp at;
        std::string cancelled_by;  // who cancelled the run; empty when runbookd itself ended it
    };

    struct Spawned {
        AttemptId attempt = 0;
        int pid = 0;
        std::uint64_t start_ticks = 0;
    };

    // A cancel of a running run, recorded before its step is stopped, so that a crash while
    // the step stops cannot turn the cancel into a resume (runs.cancelled_by and reason).
    struct CancelRequest {
        std::string actor;
        std::string reason;
    };

    // The answer to a pending approval (approved, denied or timed_out).
    struct Decision {
        int step_index = 0;
        std::string step;
        ApprovalState state = ApprovalState::Approved;
        std::string actor;
        std::string comment;
        Timestamp at;
    };

    RunId run = 0;
    std::optional<CancelRequest> cancel_requested;
    std::optional<ApprovalRecord> approval_requested;
    std::optional<Decision> approval_decided;
    std::optional<Spawned> spawned;  // the attempt in flight now has a process
    std::optional<std::string> waiting;
    std::optional<Timestamp> started;
    std::optional<std::string> resumed;
    std::optional<std::pair<AttemptId, AttemptEnd>> ended;
    std::optional<AttemptStart> next;
    std::optional<AttemptEnd> next_end;
    // A dry run's plan (a JSON object as text), recorded as event run.planned before `finished`.
    std::optional<std::string> planned;
    std::optional<Finish> finished;
};

struct AttemptRecord {
    AttemptId id = 0;
    AttemptStart start;
    std::string state;  // running, succeeded, failed, outcome_unknown
    std::optional<AttemptEnd> end;
};

struct RunSummary {
    RunId id = 0;
    std::string runbook;
    std::string runbook_hash;
    std::string trigger;
    std::string actor;
    RunState state = RunState::Queued;
    std::string reason;
    std::string cancelled_by;
    std::optional<std::int64_t> alert_id;
    std::string fingerprint;
    std::string alertname;
    Timestamp created_at;
    std::optional<Timestamp> started_at;
    std::optional<Timestamp> finished_at;
    std::string traceparent;  // empty for runs recorded before schema 12
    // Manual runs (NULL columns for alert runs).
    std::optional<LabelSet> labels;
    std::optional<LabelSet> params;
    bool dry_run = false;
    std::string request_reason;
    std::string idempotency_key;
};

struct RunDetail {
    RunSummary run;
    std::optional<Alert> alert;
    std::vector<AttemptRecord> attempts;
    std::vector<ApprovalRecord> approvals;  // by step
    std::string plan;  // a dry run's plan (event run.planned), a JSON object as text; or empty
};

struct RunFilter {
    std::optional<RunState> state;
    std::string runbook;
    std::optional<RunId> before_id;  // for paging: runs with a smaller id
    int limit = 50;
};

template <typename T>
using Completion = std::function<void(Result<T>)>;

// The durable record of deliveries, alerts, runs and attempts (the audit trail).
//
// Writes are asynchronous and durable when their completion runs: an implementation may
// commit many concurrent writes together (group commit). Completions run on the store's own
// thread; they must not block, and should post further work to the caller's executor.
// Reads are synchronous and may be called from any thread.
class Store {
  public:
    virtual ~Store() = default;

    // Records the runbook versions that runs may refer to (idempotent, synchronous).
    virtual Status record_runbooks(const std::vector<std::shared_ptr<const Runbook>>& runbooks) = 0;
    // The source text of a recorded runbook version.
    virtual Result<std::string> runbook_source(const std::string& content_hash) = 0;

    // Appends one audit event that belongs to no delivery, run or attempt (`kind`, `detail` a
    // JSON object), e.g. runbooks.reloaded.
    virtual void record_event(std::string kind, std::string detail,
                              std::function<void(Status)> done) = 0;

    virtual void record_delivery(std::shared_ptr<const DeliveryRecord> record,
                                 Completion<DeliveryReceipt> done) = 0;
    // What record_delivery would decide for `record` (which run requests start, which are
    // duplicates, held by cooldown or budget), without recording anything: the decisions are
    // made in the writer's transaction and rolled back (POST /api/v1/plan).
    virtual void plan_delivery(std::shared_ptr<const DeliveryRecord> record,
                               Completion<DeliveryReceipt> done) = 0;
    // Records a manual run and its run.requested event in one transaction, or finds the run an
    // earlier request with the same idempotency key started (see ManualRunReceipt).
    virtual void record_manual_run(std::shared_ptr<const ManualRunRequest> request,
                                   Completion<ManualRunReceipt> done) = 0;
    // Records one step of a run's progress in one transaction (see RunProgress). Completes
    // with the id of `progress.next`, or 0 when it has none.
    virtual void record_progress(RunProgress progress, Completion<AttemptId> done) = 0;

    virtual Result<RunContext> load_run(RunId run) = 0;
    virtual Result<std::vector<RunSummary>> list_runs(const RunFilter& filter) = 0;
    virtual Result<RunDetail> get_run(RunId run) = 0;
    // The approvals of one run, by step index.
    virtual Result<std::vector<ApprovalRecord>> approvals_of(RunId run) = 0;
    // Runs in the given state, oldest first (start-up recovery).
    virtual Result<std::vector<RunId>> runs_in_state(RunState state) = 0;

    // Waits until every write submitted so far is committed or failed, then stops the writer.
    virtual void close() = 0;
};

struct SqliteOptions {
    std::string path;
    bool synchronous_full = true;  // FULL survives power loss; NORMAL only process crashes
    int busy_timeout_ms = 5000;
    std::size_t max_batch = 256;  // writes committed together at most
};

// Opens (creating if needed) and migrates the SQLite database. Fails when the file cannot be
// opened or its schema is newer than this build knows.
Result<std::unique_ptr<Store>> open_sqlite_store(const SqliteOptions& options);

}  // namespace runbookd
