#include "run/scheduler.hpp"

#include <algorithm>
#include <csignal>
#include <future>
#include <set>
#include <thread>

#include <boost/asio/post.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/log.hpp"
#include "common/trace.hpp"
#include "exec/process.hpp"
#include "metrics/runbookd_metrics.hpp"

namespace runbookd::run {
namespace {

namespace asio = boost::asio;

constexpr std::chrono::milliseconds kFirstRetry{250};
constexpr std::chrono::milliseconds kMaxRetry{30'000};
// Runs loaded and waiting for a lock or their runbook's concurrency, at most. Beyond it the
// scheduler stops loading queued runs until one of them starts, so a flood of runs for one
// busy lock costs bounded memory (the rest wait in the store).
constexpr std::size_t kMaxWaiting = 1024;
// How long a step left running by a crashed runbookd gets between SIGTERM and SIGKILL when the
// next runbookd starts (start-up waits for it).
constexpr std::chrono::seconds kRecoveryGrace{5};
// A step a crash interrupted runs again at most this many times (idempotent steps, or
// `on_interrupt: resume`): a step that takes runbookd down with it must not do so forever.
constexpr int kMaxResumes = 3;
// A step's process is recorded once it has run this long (record_process_later).
constexpr std::chrono::milliseconds kRecordProcessAfter{200};

Timestamp plus_millis(Timestamp t, std::int64_t ms) {
    std::int64_t nanos = t.nanos + (ms % 1000) * 1'000'000;
    t.seconds += ms / 1000 + nanos / 1'000'000'000;
    t.nanos = static_cast<std::int32_t>(nanos % 1'000'000'000);
    return t;
}

// The `outcome` label of runbookd_step_attempts_total.
const char* attempt_outcome_name(const AttemptEnd& end) {
    if (end.succeeded) {
        return "succeeded";
    }
    if (end.timed_out) {
        return "timed_out";
    }
    return end.cancelled ? "cancelled" : "failed";
}

// Whether a failed attempt is tried again under `policy`. Spawn failures, cancellations and
// runs being stopped are never retried; the attempt count is checked by the caller.
bool wants_retry(const RetryPolicy& policy, const AttemptOutcome& o) {
    if (o.succeeded || o.cancelled || o.spawn_failed) {
        return false;
    }
    if (o.timed_out) {
        return policy.on_timeout;
    }
    if (o.exit_code) {
        return policy.on_any_exit_code ||
               std::find(policy.on_exit_codes.begin(), policy.on_exit_codes.end(), *o.exit_code) !=
                   policy.on_exit_codes.end();
    }
    if (o.signal) {
        return policy.on_signal;
    }
    return false;
}

}  // namespace

// One run in progress: loads it, runs its steps in order and stops at the first failure.
// Each transition is committed before the next begins, and the transitions between two steps
// (one attempt ends, the next starts) go to the store as one write (RunProgress).
//
// Every member function runs on the scheduler's io_context thread.
class RunExecution : public std::enable_shared_from_this<RunExecution> {
  public:
    RunExecution(Scheduler& scheduler, RunId id)
        : sched_(scheduler),
          id_(id),
          deadline_(scheduler.io_),
          retry_timer_(scheduler.io_),
          backoff_(scheduler.io_),
          pid_timer_(scheduler.io_) {}

    // Loads the run, then starts it if the scheduler admits it, else waits (parked).
    void begin();
    // Admitted after waiting: starts the run.
    void on_admitted();
    // Still waiting, now for `reason`: recorded when it differs from the last one.
    void wait_because(const std::string& reason);
    // Ends a waiting run that was cancelled by the scheduler: nothing else happens to it.
    void forget() { finished_ = true; }
    // Called once the run has ended and its end is recorded (a dry run's HTTP request waits).
    void on_recorded(std::function<void(Status)> done) { recorded_ = std::move(done); }

    RunId id() const { return id_; }
    const Runbook& runbook() const { return *runbook_; }
    const std::string& lock_key() const { return lock_key_; }
    bool admitted() const { return admitted_; }
    // Stops the run: the current attempt is stopped and the run ends in `state`. `actor` is
    // who asked (recorded as cancelled_by), empty when runbookd itself stops it.
    void stop(RunState state, std::string reason, std::string actor = {});

    // Takes an answer for the step this run is pausing or waiting at; false when it is not
    // pausing or waiting at `answer.step` (the scheduler then explains why from the store).
    bool take_answer(ApprovalAnswer& answer, std::function<void(AnswerOutcome)>& done);
    // Approved while parked: the run has its slot back and runs the step.
    void continue_approved();
    bool finished() const { return finished_; }
    bool waiting_approval() const { return gate_ == Gate::Waiting; }

  private:
    // Where the run stands with the approval of its current step (docs/approvals.md).
    enum class Gate {
        Open,      // no approval pending
        Pausing,   // the request is being committed; answers are held
        Waiting,   // parked as waiting_approval
        Approved,  // approved, waiting for a free slot
    };
    using AnswerDone = std::function<void(AnswerOutcome)>;
    // Loads what the store knows of the run's approvals, and for a run recovered while it
    // waited, where it stands. False when it must wait for the store (retried).
    bool load_approvals();
    bool needs_approval() const;
    void request_approval(RunProgress progress);
    void on_waiting();
    void refuse_held(const std::string& why);
    void arm_approval_timer();
    void decide(ApprovalState state, std::string actor, std::string comment, AnswerDone done);
    void on_decided(Result<AttemptId> r, ApprovalState state,
                    const std::optional<RunProgress::Finish>& ends, AnswerDone done);
    void on_ended(RunState state, const std::string& reason);
    void on_started();
    void try_start();
    // A dry run: renders and describes every step, starts nothing, and ends the run with the
    // plan recorded (docs/manual-runs.md).
    void plan_dry_run();
    AttemptContext context_for(std::size_t index, int attempt, const StepResults* steps) const;
    void advance(RunProgress progress);
    void start_attempt(std::unique_ptr<Attempt> attempt, AttemptId id);
    void record_process_later(AttemptId attempt, int pid);
    void on_outcome(AttemptOutcome outcome);
    void finish(RunProgress progress, RunState state, std::string reason);
    void persist(RunProgress progress, std::function<void(AttemptId)> then);
    void retry_later(std::function<void()> again);
    void start_after(Duration delay);
    void abandon(const std::string& why);
    // The attempt's error and transition details with every secret's value redacted.
    void redact(AttemptEnd& end) const;
    const StepSpec& step() const { return runbook_->steps[step_index_]; }

    Scheduler& sched_;
    RunId id_;
    RunContext ctx_;
    std::string trace_id_;  // of ctx_.traceparent, for log lines
    std::shared_ptr<const Runbook> runbook_;
    std::size_t step_index_ = 0;
    int attempt_number_ = 1;      // of the current step: 1, then 2, ... on retries
    int uncounted_attempts_ = 0;  // of the current step, interrupted by crashes (not retries)
    std::optional<Scheduler::Resume> resume_;  // set while a run a crash interrupted restarts
    std::string lock_key_;  // rendered from the runbook's `lock:`; empty without one
    std::string waiting_reason_;
    bool admitted_ = false;
    std::unique_ptr<Attempt> attempt_;
    AttemptId attempt_id_ = 0;
    StepResults results_;  // the steps that have ended, for later steps (AttemptContext::steps)
    LabelSet params_;      // the run's parameters: as recorded, or the runbook's defaults
    std::function<void(Status)> recorded_;
    std::chrono::steady_clock::time_point attempt_started_;
    std::chrono::steady_clock::time_point run_started_;
    asio::steady_timer deadline_;
    asio::steady_timer retry_timer_;  // store writes that failed
    asio::steady_timer backoff_;      // before the next attempt of a failed step
    asio::steady_timer pid_timer_;    // recording the attempt's process (record_process_later)
    bool backoff_pending_ = false;
    std::chrono::milliseconds retry_delay_{kFirstRetry};
    std::optional<RunState> stop_state_;
    std::string stop_reason_;
    std::string stop_actor_;
    bool finished_ = false;
    Gate gate_ = Gate::Open;
    int deciding_ = 0;  // answers submitted to the store and not yet completed
    std::vector<std::pair<ApprovalAnswer, AnswerDone>> held_answers_;  // while pausing
    std::map<int, ApprovalRecord> approvals_;                          // by step index, as recorded
    ApprovalRecord approval_;  // of the current step, while the gate is closed
    asio::steady_timer approval_timer_{sched_.io_};
    std::optional<std::chrono::steady_clock::duration> run_time_left_;  // deadline suspended
};

void RunExecution::begin() {
    if (auto r = sched_.resumes_.find(id_); r != sched_.resumes_.end()) {
        resume_ = std::move(r->second);
        sched_.resumes_.erase(r);
    }
    auto loaded = sched_.store_.load_run(id_);
    if (!loaded) {
        if (loaded.error().code == ErrorCode::Unavailable) {
            sched_.log_->warn("loading run failed, will retry run={} error={}", id_,
                              log::quote(loaded.error().message));
            retry_later([self = shared_from_this()] { self->begin(); });
            return;
        }
        abandon(loaded.error().message);
        return;
    }
    ctx_ = std::move(*loaded);
    if (ctx_.traceparent.empty()) {
        // Recorded before runs had one (schema 12): a trace of its own, for this process only.
        ctx_.traceparent = trace::child_of(std::nullopt).header();
    }
    trace_id_ = trace::trace_id_of(ctx_.traceparent);
    if (is_terminal(ctx_.state)) {
        // Cancelled (or otherwise ended) after it was queued and before it came up here.
        sched_.log_->info("run already ended run={} state={}", id_, run_state_name(ctx_.state));
        finished_ = true;
        sched_.on_run_finished(id_);
        return;
    }
    if (!load_approvals()) {
        retry_later([self = shared_from_this()] { self->begin(); });
        return;
    }
    const RunState expected = resume_                                   ? RunState::Running
                              : ctx_.state == RunState::WaitingApproval ? RunState::WaitingApproval
                                                                        : RunState::Queued;
    if (ctx_.state != expected) {
        abandon(
            fmt::format("run is {}, not {}", run_state_name(ctx_.state), run_state_name(expected)));
        return;
    }
    if (resume_) {
        step_index_ = resume_->step_index;
        attempt_number_ = resume_->attempt;
        uncounted_attempts_ = resume_->uncounted;
        results_ = std::move(resume_->earlier);
    }
    run_started_ = std::chrono::steady_clock::now();
    std::string error;
    runbook_ = sched_.resolve_runbook(ctx_.runbook, ctx_.runbook_hash, error);
    if (!runbook_) {
        finish(RunProgress{}, RunState::Failed, error);
        return;
    }
    if (step_index_ > runbook_->steps.size()) {
        finish(RunProgress{}, RunState::Failed,
               fmt::format("cannot resume at step {}: runbook {} has {} steps", step_index_ + 1,
                           runbook_->name, runbook_->steps.size()));
        return;
    }
    params_ = ctx_.params ? *ctx_.params : runbook_->default_params();
    if (ctx_.dry_run) {
        plan_dry_run();  // holds no slot or lock: it runs nothing
        return;
    }
    if (runbook_->lock) {
        TemplateScope scope{ctx_.alert ? &*ctx_.alert : nullptr, id_, runbook_->name};
        scope.params = &params_;
        auto key = runbook_->lock->render(scope);
        if (!key) {
            finish(RunProgress{}, RunState::Failed,
                   fmt::format("rendering the lock key failed: {}", key.error().message));
            return;
        }
        if (key->empty()) {
            finish(RunProgress{}, RunState::Failed,
                   fmt::format("the lock key \"{}\" rendered empty for this alert",
                               runbook_->lock->source()));
            return;
        }
        lock_key_ = std::move(*key);
    }
    try_start();
}

void RunExecution::try_start() {
    if (auto blocker = sched_.admit(*this)) {
        wait_because(*blocker);
        sched_.park(id_);
        return;
    }
    on_admitted();
}

void RunExecution::wait_because(const std::string& reason) {
    if (reason == waiting_reason_) {
        return;
    }
    waiting_reason_ = reason;
    sched_.log_->info("run waiting run={} runbook={} reason={} trace_id={}", id_, runbook_->name,
                      log::quote(reason), trace_id_);
    RunProgress progress;
    progress.run = id_;
    progress.waiting = reason;
    // Only informative: a failure leaves the previous reason in place, and the run is
    // started (or not) by what the scheduler knows, not by this write.
    sched_.store_.record_progress(std::move(progress),
                                  [logger = sched_.log_, id = id_](Result<AttemptId> r) {
                                      if (!r) {
                                          logger->warn(
                                              "recording waiting reason failed run={} "
                                              "error={}",
                                              id, log::quote(r.error().message));
                                      }
                                  });
}

void RunExecution::on_admitted() {
    admitted_ = true;
    run_started_ = std::chrono::steady_clock::now();
    sched_.note_started_or_gone(id_);
    ++sched_.running_count_;
    if (ctx_.state == RunState::WaitingApproval) {
        // Recovered while it waited: it is already started and parked in the store.
        on_started();
        advance(RunProgress{});
        return;
    }
    metrics::runbookd_metrics().run_started(runbook_->name, ctx_.trigger);
    on_started();
    RunProgress progress;
    if (resume_) {
        // Already running in the store: it goes on, and the attempt the crash cut short is
        // closed in the same write as the next one starts.
        sched_.log_->info("run resumed run={} why={} trace_id={}", id_, log::quote(resume_->why),
                          trace_id_);
        progress.resumed = std::move(resume_->why);
        progress.ended = std::move(resume_->interrupted);
        const Duration delay = resume_->delay;
        resume_.reset();
        if (delay.count() > 0) {
            persist(std::move(progress), [this, delay](AttemptId) { start_after(delay); });
            return;
        }
    } else {
        progress.started = Timestamp::now();
    }
    advance(std::move(progress));
}

void RunExecution::on_started() {
    std::string alertname;
    if (ctx_.alert) {
        if (auto it = ctx_.alert->labels.find("alertname"); it != ctx_.alert->labels.end()) {
            alertname = it->second;
        }
    }
    sched_.log_->info("run started run={} runbook={} alertname={} fingerprint={} trace_id={}", id_,
                      runbook_->name, log::quote(alertname),
                      log::quote(ctx_.alert ? ctx_.alert->fingerprint : ""), trace_id_);
    const Duration timeout = runbook_->timeout.value_or(sched_.options_.default_run_timeout);
    deadline_.expires_after(timeout);
    deadline_.async_wait([self = shared_from_this(), timeout](const boost::system::error_code& e) {
        if (!e) {
            self->stop(RunState::Failed,
                       fmt::format("run timed out after {}", format_duration(timeout)));
        }
    });
}

void RunExecution::stop(RunState state, std::string reason, std::string actor) {
    if (finished_ || stop_state_) {
        return;
    }
    stop_state_ = state;
    stop_reason_ = sched_.redaction_.text(reason);
    stop_actor_ = std::move(actor);
    sched_.log_->info("stopping run run={} reason={}", id_, log::quote(stop_reason_));
    if (attempt_) {
        attempt_->cancel(stop_reason_);
    } else if (backoff_pending_) {
        // Between two attempts of a failed step: nothing runs, so the run ends now.
        backoff_pending_ = false;
        backoff_.cancel();
        finish(RunProgress{}, *stop_state_, stop_reason_);
    } else if ((gate_ == Gate::Waiting && deciding_ == 0) || gate_ == Gate::Approved) {
        // Parked: nothing runs. While pausing or while an answer is being written, the
        // completion of that write ends the run instead.
        approval_timer_.cancel();
        finish(RunProgress{}, *stop_state_, stop_reason_);
    }
}

bool RunExecution::load_approvals() {
    auto recorded = sched_.store_.approvals_of(id_);
    if (!recorded) {
        sched_.log_->warn("loading approvals failed, will retry run={} error={}", id_,
                          log::quote(recorded.error().message));
        return false;
    }
    approvals_.clear();
    for (auto& a : *recorded) {
        approvals_[a.step_index] = std::move(a);
    }
    if (ctx_.state != RunState::WaitingApproval) {
        return true;
    }
    // Recovered while it waited: it goes on at the step whose approval is pending, with the
    // results of the steps before it as recorded.
    auto detail = sched_.store_.get_run(id_);
    if (!detail) {
        sched_.log_->warn("loading run failed, will retry run={} error={}", id_,
                          log::quote(detail.error().message));
        return false;
    }
    for (const auto& [index, a] : approvals_) {
        if (a.state == ApprovalState::Pending) {
            step_index_ = static_cast<std::size_t>(index);
        }
    }
    for (const auto& a : detail->attempts) {
        if (a.end && static_cast<std::size_t>(a.start.step_index) < step_index_) {
            results_[a.start.step] =
                StepResult{a.state, a.end->exit_code, a.end->outputs, a.end->stdout_excerpt};
        }
    }
    return true;
}

// A step is gated once per run: an approval holds for all its attempts, and after a restart.
bool RunExecution::needs_approval() const {
    if (!step().approval || attempt_number_ > 1) {
        return false;
    }
    const auto it = approvals_.find(static_cast<int>(step_index_));
    if (it == approvals_.end()) {
        return true;
    }
    const ApprovalRecord& a = it->second;
    const bool granted = a.state == ApprovalState::Approved ||
                         (a.state == ApprovalState::TimedOut && a.approve_on_timeout);
    return !granted;
}

// Parks the run before its step: the request is written with whatever `progress` carries (the
// previous attempt's end), so the record has no gap between the two.
void RunExecution::request_approval(RunProgress progress) {
    const StepSpec& s = step();
    gate_ = Gate::Pausing;
    if (deadline_.expiry() != asio::steady_timer::time_point{}) {
        run_time_left_ = deadline_.expiry() - std::chrono::steady_clock::now();
        deadline_.cancel();
    }
    if (auto it = approvals_.find(static_cast<int>(step_index_)); it != approvals_.end()) {
        // Recovered: the request is already committed.
        approval_ = it->second;
        on_waiting();
        return;
    }
    approval_ = ApprovalRecord{};
    approval_.run_id = id_;
    approval_.step = s.name;
    approval_.step_index = static_cast<int>(step_index_);
    approval_.approvers = s.approval->approvers;
    approval_.message = s.approval->message;
    approval_.approve_on_timeout = s.approval->approve_on_timeout;
    approval_.requested_at = Timestamp::now();
    approval_.deadline = plus_millis(approval_.requested_at, s.approval->timeout.count());
    sched_.log_->info("run waiting for approval run={} step={} timeout_ms={}", id_, s.name,
                      s.approval->timeout.count());
    progress.approval_requested = approval_;
    persist(std::move(progress), [this](AttemptId) {
        approvals_[approval_.step_index] = approval_;
        on_waiting();
    });
}

// The request is committed: the run gives back its slot, the deadline is armed, and the answers
// that came while it paused are written in the order they came.
void RunExecution::on_waiting() {
    gate_ = Gate::Waiting;
    sched_.park_for_approval(id_);
    if (stop_state_) {
        refuse_held(
            fmt::format("run {} is ending ({}): the approval is closed", id_, stop_reason_));
        finish(RunProgress{}, *stop_state_, stop_reason_);
        return;
    }
    arm_approval_timer();
    auto held = std::move(held_answers_);
    held_answers_.clear();
    for (auto& [answer, done] : held) {
        decide(answer.approve ? ApprovalState::Approved : ApprovalState::Denied,
               std::move(answer.actor), std::move(answer.comment), std::move(done));
    }
}

void RunExecution::arm_approval_timer() {
    const auto left = std::max<std::int64_t>(0, approval_.deadline.millis_since(Timestamp::now()));
    approval_timer_.expires_after(std::chrono::milliseconds(left));
    approval_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
        if (e || self->gate_ != Gate::Waiting || self->finished_) {
            return;
        }
        const Duration timeout = self->step().approval->timeout;
        const std::string comment =
            fmt::format("no answer within {}; on_timeout: {}", format_duration(timeout),
                        self->approval_.approve_on_timeout ? "approve" : "deny");
        self->decide(ApprovalState::TimedOut, "runbookd", comment, [self](AnswerOutcome out) {
            if (out.refused == AnswerOutcome::Refusal::Unavailable) {
                // The store could not record it: try again shortly, unless answered by then.
                self->approval_.deadline = plus_millis(Timestamp::now(), 1000);
                self->arm_approval_timer();
            }
        });
    });
}

// Answers every held answer with a refusal: the run will not wait for them.
void RunExecution::refuse_held(const std::string& why) {
    auto held = std::move(held_answers_);
    held_answers_.clear();
    for (auto& [answer, done] : held) {
        AnswerOutcome out;
        out.refused = AnswerOutcome::Refusal::RunEnded;
        out.message = why;
        done(std::move(out));
    }
}

bool RunExecution::take_answer(ApprovalAnswer& answer, AnswerDone& done) {
    if (finished_ || stop_state_ || (gate_ != Gate::Pausing && gate_ != Gate::Waiting) ||
        answer.step != step().name) {
        return false;
    }
    if (!step().approval->allows(answer.actor)) {
        AnswerOutcome out;
        out.refused = AnswerOutcome::Refusal::NotApprover;
        out.message = fmt::format(
            "{} may not answer the approval of step \"{}\" of run {}: the "
            "approvers are {}",
            answer.actor, answer.step, id_, fmt::join(step().approval->approvers, ", "));
        done(std::move(out));
        return true;
    }
    if (gate_ == Gate::Pausing) {
        sched_.log_->info("approval answer held until the pause is committed run={} step={}", id_,
                          answer.step);
        held_answers_.emplace_back(std::move(answer), std::move(done));
        metrics::runbookd_metrics().approval_answer_held();
        return true;
    }
    decide(answer.approve ? ApprovalState::Approved : ApprovalState::Denied,
           std::move(answer.actor), std::move(answer.comment), std::move(done));
    return true;
}

// Writes the answer; the store takes it only if the approval is still pending. A deny (or a
// timeout with on_timeout: deny) ends the run in the same write.
void RunExecution::decide(ApprovalState state, std::string actor, std::string comment,
                          AnswerDone done) {
    const StepSpec& s = step();
    RunProgress progress;
    progress.run = id_;
    const Timestamp now = Timestamp::now();
    progress.approval_decided =
        RunProgress::Decision{static_cast<int>(step_index_), s.name, state, actor, comment, now};
    if (state == ApprovalState::Denied) {
        const std::string reason =
            comment.empty() ? fmt::format("step \"{}\" denied by {}", s.name, actor)
                            : fmt::format("step \"{}\" denied by {}: {}", s.name, actor, comment);
        progress.finished =
            RunProgress::Finish{RunState::Cancelled, sched_.redaction_.text(reason), now, actor};
    } else if (state == ApprovalState::TimedOut && !s.approval->approve_on_timeout) {
        progress.finished = RunProgress::Finish{
            RunState::Failed,
            fmt::format("approval of step \"{}\" timed out after {} (on_timeout: deny)", s.name,
                        format_duration(s.approval->timeout)),
            now, ""};
    }
    std::optional<RunProgress::Finish> ends = progress.finished;
    ++deciding_;
    sched_.store_.record_progress(
        std::move(progress), [self = shared_from_this(), state, ends = std::move(ends),
                              done = std::move(done)](Result<AttemptId> r) mutable {
            asio::post(self->sched_.io_, [self, r = std::move(r), state, ends = std::move(ends),
                                          done = std::move(done)]() mutable {
                self->on_decided(std::move(r), state, ends, std::move(done));
            });
        });
}

void RunExecution::on_decided(Result<AttemptId> r, ApprovalState state,
                              const std::optional<RunProgress::Finish>& ends, AnswerDone done) {
    --deciding_;
    if (!r) {
        // Another answer, the deadline or a cancel came first, or the store failed.
        AnswerOutcome out;
        if (r.error().code == ErrorCode::Unavailable) {
            out.refused = AnswerOutcome::Refusal::Unavailable;
            out.message = fmt::format("answering the approval failed: {}", r.error().message);
        } else {
            out = sched_.explain_refusal(id_, ApprovalAnswer{step().name, true, "", ""});
        }
        done(std::move(out));
        if (stop_state_ && gate_ == Gate::Waiting && deciding_ == 0 && !finished_) {
            finish(RunProgress{}, *stop_state_, stop_reason_);
        }
        return;
    }
    approval_timer_.cancel();
    metrics::runbookd_metrics().approval_decided(state);
    auto decided = sched_.store_.approvals_of(id_);
    if (decided) {
        for (auto& a : *decided) {
            approvals_[a.step_index] = std::move(a);
        }
    }
    const auto it = approvals_.find(static_cast<int>(step_index_));
    sched_.log_->info("approval answered run={} step={} state={} actor={}", id_, step().name,
                      approval_state_name(state),
                      log::quote(it != approvals_.end() ? it->second.decided_by : ""));
    AnswerOutcome out;
    if (it != approvals_.end()) {
        out.approval = it->second;
    }
    done(std::move(out));
    if (ends) {
        gate_ = Gate::Open;
        on_ended(ends->state, ends->reason);
        return;
    }
    gate_ = Gate::Approved;
    if (stop_state_) {
        finish(RunProgress{}, *stop_state_, stop_reason_);
        return;
    }
    sched_.resume_approved(id_);
}

void RunExecution::continue_approved() {
    gate_ = Gate::Open;
    if (run_time_left_) {
        const auto left = std::max(std::chrono::steady_clock::duration::zero(), *run_time_left_);
        run_time_left_.reset();
        const Duration timeout = runbook_->timeout.value_or(sched_.options_.default_run_timeout);
        deadline_.expires_after(left);
        deadline_.async_wait(
            [self = shared_from_this(), timeout](const boost::system::error_code& e) {
                if (!e) {
                    self->stop(RunState::Failed,
                               fmt::format("run timed out after {}", format_duration(timeout)));
                }
            });
    }
    advance(RunProgress{});
}

// Writes `progress` (what just happened) together with what comes next: the next step's
// attempt, or the end of the run.
void RunExecution::advance(RunProgress progress) {
    if (stop_state_) {
        finish(std::move(progress), *stop_state_, stop_reason_);
        return;
    }
    if (step_index_ >= runbook_->steps.size()) {
        finish(std::move(progress), RunState::Succeeded, "");
        return;
    }
    if (needs_approval()) {
        request_approval(std::move(progress));
        return;
    }
    const StepSpec& s = step();
    StepExecutor* executor = sched_.executor_for(s.kind);
    if (executor == nullptr) {
        finish(std::move(progress), RunState::Failed,
               fmt::format("step \"{}\" has kind {}, which this runbookd cannot execute", s.name,
                           s.kind));
        return;
    }
    auto prepared = executor->prepare(context_for(step_index_, attempt_number_, &results_));

    AttemptStart start;
    start.run_id = id_;
    start.step = s.name;
    start.step_index = static_cast<int>(step_index_);
    start.attempt = attempt_number_;
    start.kind = s.kind;
    start.started_at = Timestamp::now();
    if (!prepared) {
        // Nothing starts: the attempt is recorded as begun and failed in the same write.
        AttemptEnd end;
        end.error = sched_.redaction_.text(
            fmt::format("cannot prepare the step: {}", prepared.error().message));
        end.finished_at = start.started_at;
        const std::string reason = fmt::format("step \"{}\" failed: {}", s.name, end.error);
        progress.next = std::move(start);
        progress.next_end = std::move(end);
        metrics::runbookd_metrics().attempt_finished(s.kind, "not_started", 0);
        finish(std::move(progress), RunState::Failed, reason);
        return;
    }
    // The process gets the real values; the record never holds a secret's.
    start.argv = sched_.redaction_.argv((*prepared)->argv());
    start.cwd = (*prepared)->cwd();
    progress.next = std::move(start);
    auto attempt = std::make_shared<std::unique_ptr<Attempt>>(std::move(*prepared));
    persist(std::move(progress),
            [this, attempt](AttemptId id) { start_attempt(std::move(*attempt), id); });
}

AttemptContext RunExecution::context_for(std::size_t index, int attempt,
                                         const StepResults* steps) const {
    const StepSpec& s = runbook_->steps[index];
    AttemptContext context;
    context.run_id = id_;
    context.runbook = runbook_.get();
    context.step = &s;
    context.step_index = static_cast<int>(index);
    context.attempt = attempt;
    context.alert = ctx_.alert ? &*ctx_.alert : nullptr;
    context.trigger = ctx_.trigger;
    context.actor = ctx_.actor;
    context.traceparent = ctx_.traceparent;
    context.timeout = s.timeout.value_or(sched_.options_.default_step_timeout);
    context.steps = steps;
    context.params = &params_;
    context.dry_run = ctx_.dry_run;
    return context;
}

// Each step is prepared by its executor exactly as a real attempt would be, and described; no
// attempt is started (prepare() never starts a process or borrows a Python worker).
void RunExecution::plan_dry_run() {
    const StepResults none;
    std::string failure;
    nlohmann::json steps = sched_.describe_steps(*runbook_, context_for(0, 1, &none), failure);
    const nlohmann::json plan = {{"labels", ctx_.alert ? ctx_.alert->labels : LabelSet{}},
                                 {"params", params_},
                                 {"steps", std::move(steps)}};
    sched_.log_->info("dry run planned run={} runbook={} steps={}", id_, runbook_->name,
                      runbook_->steps.size());
    RunProgress progress;
    progress.planned = sched_.redaction_.json_text(
        plan.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    if (failure.empty()) {
        finish(std::move(progress), RunState::Succeeded, "dry run: nothing executed");
    } else {
        finish(std::move(progress), RunState::Failed, "dry run: " + failure);
    }
}

void RunExecution::start_attempt(std::unique_ptr<Attempt> attempt, AttemptId id) {
    attempt_id_ = id;
    attempt_started_ = std::chrono::steady_clock::now();
    if (stop_state_) {
        // Stopped while the attempt was being recorded: close it without starting anything.
        AttemptOutcome outcome;
        outcome.cancelled = true;
        outcome.error = stop_reason_ + "; the step was not started";
        on_outcome(std::move(outcome));
        return;
    }
    sched_.log_->info(
        "attempt started run={} step={} attempt={} argv={}", id_, step().name, attempt_number_,
        log::quote(nlohmann::json(sched_.redaction_.argv(attempt->argv()))
                       .dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
    attempt_ = std::move(attempt);
    attempt_->start([self = shared_from_this(),
                     attempt = attempt_id_](int pid) { self->record_process_later(attempt, pid); },
                    [self = shared_from_this()](AttemptOutcome outcome) {
                        self->on_outcome(std::move(outcome));
                    });
}

// The attempt's process, for stopping it after a crash (docs/runs.md). Written only once the
// step has run for kRecordProcessAfter: most steps are over by then, and a step that has ended
// leaves nothing to stop, so storms of short steps cost no extra write (nor a read of /proc).
// Nothing waits for it.
void RunExecution::record_process_later(AttemptId attempt, int pid) {
    pid_timer_.expires_after(kRecordProcessAfter);
    pid_timer_.async_wait([self = shared_from_this(), attempt,
                           pid](const boost::system::error_code& e) {
        if (e || !self->attempt_ || self->attempt_id_ != attempt) {
            return;
        }
        // The start time tells this process apart from a later one with the same pid.
        const auto ticks = exec::process_start_ticks(pid);
        if (!ticks) {
            return;  // reaped already: the outcome is on its way
        }
        RunProgress progress;
        progress.run = self->id_;
        progress.spawned = RunProgress::Spawned{attempt, pid, *ticks};
        self->sched_.store_.record_progress(
            std::move(progress), [logger = self->sched_.log_, id = self->id_](Result<AttemptId> r) {
                if (!r) {
                    logger->warn("recording the step's pid failed run={} error={}", id,
                                 log::quote(r.error().message));
                }
            });
    });
}

void RunExecution::on_outcome(AttemptOutcome outcome) {
    pid_timer_.cancel();
    const RetryPolicy& policy = step().retry;
    const bool retry = !stop_state_ && attempt_number_ - uncounted_attempts_ < policy.attempts &&
                       wants_retry(policy, outcome);
    AttemptEnd end;
    end.timed_out = outcome.timed_out;
    end.cancelled = outcome.cancelled;
    end.succeeded = outcome.succeeded;
    end.exit_code = outcome.exit_code;
    end.signal = outcome.signal;
    end.error = std::move(outcome.error);
    end.finished_at = Timestamp::now();
    end.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::steady_clock::now() - attempt_started_)
                          .count();
    end.stdout_excerpt = std::move(outcome.stdout_excerpt);
    end.stderr_excerpt = std::move(outcome.stderr_excerpt);
    end.stdout_bytes = outcome.stdout_bytes;
    end.stderr_bytes = outcome.stderr_bytes;
    end.transitions = std::move(outcome.transitions);
    end.output_path = std::move(outcome.output_path);
    end.output_stored_bytes = outcome.output_stored_bytes;
    end.output_truncated = outcome.output_truncated;
    // Later steps of this run get the real outputs; the record gets them redacted.
    const std::string outputs = std::move(outcome.outputs);
    end.outputs = sched_.redaction_.json_text(outputs);
    redact(end);
    attempt_.reset();
    metrics::runbookd_metrics().attempt_finished(
        step().kind, attempt_outcome_name(end),
        std::chrono::duration<double>(std::chrono::steady_clock::now() - attempt_started_).count());
    sched_.log_->info(
        "attempt finished run={} step={} attempt={} succeeded={} exit_code={} "
        "signal={} duration_ms={} error={}",
        id_, step().name, attempt_number_, end.succeeded,
        end.exit_code ? std::to_string(*end.exit_code) : "none",
        end.signal ? std::to_string(*end.signal) : "none", end.duration_ms, log::quote(end.error));

    const bool succeeded = end.succeeded;
    if (!retry) {
        results_[step().name] = StepResult{succeeded ? "succeeded" : "failed", end.exit_code,
                                           outputs, end.stdout_excerpt};
    }
    const std::string reason = attempt_number_ > 1
                                   ? fmt::format("step \"{}\" failed after {} attempts: {}",
                                                 step().name, attempt_number_, end.error)
                                   : fmt::format("step \"{}\" failed: {}", step().name, end.error);
    RunProgress progress;
    progress.ended = std::make_pair(attempt_id_, std::move(end));
    if (retry) {
        const Duration delay = retry_delay(policy, attempt_number_ + 1, sched_.random01());
        sched_.log_->info(
            "attempt will be retried run={} step={} next_attempt={} of={} delay_ms={}", id_,
            step().name, attempt_number_ + 1, policy.attempts, delay.count());
        // The attempt's processes are gone (its group was reaped before the outcome came), so
        // the next attempt never overlaps it.
        persist(std::move(progress), [this, delay](AttemptId) {
            if (stop_state_) {
                finish(RunProgress{}, *stop_state_, stop_reason_);
                return;
            }
            ++attempt_number_;
            start_after(delay);
        });
        return;
    }
    if (stop_state_) {
        finish(std::move(progress), *stop_state_, stop_reason_);
    } else if (!succeeded) {
        finish(std::move(progress), RunState::Failed, reason);
    } else {
        ++step_index_;
        attempt_number_ = 1;
        uncounted_attempts_ = 0;
        advance(std::move(progress));
    }
}

void RunExecution::finish(RunProgress progress, RunState state, std::string reason) {
    reason = sched_.redaction_.text(reason);
    finished_ = true;
    deadline_.cancel();
    progress.finished = RunProgress::Finish{state, reason, Timestamp::now(),
                                            state == RunState::Cancelled ? stop_actor_ : ""};
    persist(std::move(progress), [this, state, reason](AttemptId) { on_ended(state, reason); });
}

// The run's end is committed.
void RunExecution::on_ended(RunState state, const std::string& reason) {
    finished_ = true;
    approval_timer_.cancel();
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now() - run_started_);
    if (!ctx_.dry_run) {
        metrics::runbookd_metrics().run_finished(
            ctx_.runbook, state,
            admitted_
                ? std::chrono::duration<double>(std::chrono::steady_clock::now() - run_started_)
                      .count()
                : 0.0);
    }
    sched_.log_->info("run finished run={} state={} duration_ms={} reason={} trace_id={}", id_,
                      run_state_name(state), elapsed.count(), log::quote(reason), trace_id_);
    sched_.on_run_finished(id_);
    if (recorded_) {
        auto done = std::move(recorded_);
        done(Status{});
    }
}

// Submits `progress` and continues with `then` once it is durable. While the store is
// unavailable (disk full, database locked) the write is retried with growing delays: the run
// waits rather than act on a state that was never recorded.
void RunExecution::persist(RunProgress progress, std::function<void(AttemptId)> then) {
    progress.run = id_;
    auto self = shared_from_this();
    auto shared = std::make_shared<RunProgress>(progress);
    sched_.store_.record_progress(
        std::move(progress), [self, shared, then = std::move(then)](Result<AttemptId> r) mutable {
            asio::post(self->sched_.io_, [self, shared, then = std::move(then), r = std::move(r)] {
                if (r) {
                    self->retry_delay_ = kFirstRetry;
                    then(*r);
                    return;
                }
                if (r.error().code != ErrorCode::Unavailable) {
                    self->abandon(fmt::format("recording progress failed: {}", r.error().message));
                    return;
                }
                self->sched_.log_->warn(
                    "store write failed, will retry run={} delay_ms={} error={}", self->id_,
                    self->retry_delay_.count(), log::quote(r.error().message));
                self->retry_later([self, shared, then] { self->persist(*shared, then); });
            });
        });
}

void RunExecution::redact(AttemptEnd& end) const {
    const exec::SecretRedaction& r = sched_.redaction_;
    if (!r.active()) {
        return;
    }
    end.error = r.text(end.error);
    for (auto& t : end.transitions) {
        t.detail = t.structured ? r.json_text(t.detail) : r.text(t.detail);
    }
}

// A retry's backoff: the next attempt starts after `delay` unless the run is stopped first.
void RunExecution::start_after(Duration delay) {
    backoff_pending_ = true;
    backoff_.expires_after(delay);
    backoff_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
        if (e || !self->backoff_pending_) {
            return;
        }
        self->backoff_pending_ = false;
        self->advance(RunProgress{});
    });
}

void RunExecution::retry_later(std::function<void()> again) {
    retry_timer_.expires_after(retry_delay_);
    retry_delay_ = std::min(retry_delay_ * 2, kMaxRetry);
    retry_timer_.async_wait([again = std::move(again)](const boost::system::error_code& e) {
        if (!e) {
            again();
        }
    });
}

// Gives up on a run whose stored state contradicts what this execution expects. That is a bug
// or an outside edit of the database; the run is left as the store has it.
void RunExecution::abandon(const std::string& why) {
    sched_.log_->error("run abandoned run={} error={}", id_, log::quote(why));
    refuse_held(fmt::format("run {} was abandoned: {}", id_, why));
    if (recorded_) {
        auto done = std::move(recorded_);
        done(make_error(ErrorCode::Internal, fmt::format("run {} abandoned: {}", id_, why)));
    }
    finished_ = true;
    deadline_.cancel();
    if (attempt_) {
        attempt_->cancel("run abandoned: " + why);
    }
    sched_.on_run_finished(id_);
}

Scheduler::Scheduler(asio::io_context& io, Store& store,
                     std::shared_ptr<const RunbookCatalog> catalog, StepParsers parsers,
                     std::vector<std::shared_ptr<StepExecutor>> executors, SchedulerOptions options)
    : io_(io),
      store_(store),
      catalog_(std::move(catalog)),
      parsers_(std::move(parsers)),
      executors_(std::move(executors)),
      options_(options),
      redaction_(options.secrets),
      log_(log::get("run")) {}

Scheduler::~Scheduler() = default;

void Scheduler::enqueue(std::vector<RunId> runs) {
    queued_count_ += runs.size();
    asio::post(io_, [this, runs = std::move(runs)] {
        for (const RunId id : runs) {
            queue_.push_back(id);
            note_queued(id);
        }
        start_more();
    });
}

Status Scheduler::recover() {
    auto interrupted = store_.runs_in_state(RunState::Running);
    if (!interrupted) {
        return interrupted.error();
    }
    std::vector<Result<RunDetail>> runs;
    std::vector<LeftRunning> left;
    std::vector<pid_t> known;
    for (const RunId id : *interrupted) {
        log_->warn("run interrupted by a restart run={}", id);
        runs.push_back(store_.get_run(id));
        left.push_back(stop_left_running(id, runs.back()));
        if (left.back().pgid > 0) {
            known.push_back(left.back().pgid);
        }
    }
    const std::vector<pid_t> unrecorded = stop_unrecorded(known);
    // Every group got SIGTERM at once above; they share one grace period. A group counts as
    // gone once only zombies are left: they are not ours to reap (init reaps them).
    std::set<pid_t> live = exec::live_process_groups();
    const auto alive = [&live](pid_t pgid) {
        return pgid > 0 && live.count(pgid) != 0;
    };
    const auto deadline = std::chrono::steady_clock::now() + kRecoveryGrace;
    while ((std::any_of(known.begin(), known.end(), alive) ||
            std::any_of(unrecorded.begin(), unrecorded.end(), alive)) &&
           std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        live = exec::live_process_groups();
    }
    for (const pid_t pgid : unrecorded) {
        if (alive(pgid)) {
            ::kill(-pgid, SIGKILL);
        }
    }
    std::vector<RunId> resumed;
    std::vector<std::promise<Result<AttemptId>>> written(left.size());
    for (std::size_t i = 0; i < left.size(); ++i) {
        std::string stopped = std::move(left[i].what);
        if (alive(left[i].pgid)) {
            ::kill(-left[i].pgid, SIGKILL);
            stopped += fmt::format(", then SIGKILL after {} s", kRecoveryGrace.count());
        }
        const RunId id = (*interrupted)[i];
        auto plan = plan_recovery(id, runs[i], stopped);
        if (auto* resume = std::get_if<Resume>(&plan)) {
            log_->warn("run will resume run={} why={}", id, log::quote(resume->why));
            resumes_[id] = std::move(*resume);
            resumed.push_back(id);
            written[i].set_value(AttemptId{0});
            continue;
        }
        store_.record_progress(
            std::move(std::get<RunProgress>(plan)),
            [&promise = written[i]](Result<AttemptId> r) { promise.set_value(std::move(r)); });
    }
    // Committed (together) before start-up goes on: once runbookd answers, every run it
    // recovered has either ended or is queued to go on.
    for (std::size_t i = 0; i < written.size(); ++i) {
        if (auto r = written[i].get_future().get(); !r) {
            return make_error(r.error().code, fmt::format("recording interrupted run {} failed: {}",
                                                          (*interrupted)[i], r.error().message));
        }
    }
    if (!resumed.empty()) {
        log_->info("resuming interrupted runs count={}", resumed.size());
        enqueue(std::move(resumed));
    }
    // Parked for approval: loaded again (they take their locks back) and parked, with the
    // deadline re-armed from the store; one that passed while runbookd was down fires at once.
    auto parked = store_.runs_in_state(RunState::WaitingApproval);
    if (!parked) {
        return parked.error();
    }
    if (!parked->empty()) {
        log_->info("runs waiting for approval count={}", parked->size());
        enqueue(std::move(*parked));
    }
    auto queued = store_.runs_in_state(RunState::Queued);
    if (!queued) {
        return queued.error();
    }
    if (!queued->empty()) {
        log_->info("resuming queued runs count={}", queued->size());
        enqueue(std::move(*queued));
    }
    return {};
}

std::vector<pid_t> Scheduler::stop_unrecorded(const std::vector<pid_t>& known) {
    std::vector<pid_t> groups;
    if (options_.instance.empty()) {
        return groups;
    }
    const pid_t own_group = ::getpgrp();
    const std::string entry = fmt::format("{}={}", exec::kInstanceEnv, options_.instance);
    for (const pid_t pid : exec::processes_with_env(entry)) {
        const pid_t pgid = ::getpgid(pid);
        if (pgid <= 1 || pgid == own_group) {
            // Not in a group of its own (a step always leads one): only the process itself.
            log_->warn("stopping a process left by a step of the previous runbookd pid={}", pid);
            ::kill(pid, SIGKILL);
            continue;
        }
        if (std::find(known.begin(), known.end(), pgid) != known.end() ||
            std::find(groups.begin(), groups.end(), pgid) != groups.end()) {
            continue;
        }
        log_->warn(
            "stopping a process group left by a step of the previous runbookd pgid={} "
            "pid={}",
            pgid, pid);
        ::kill(-pgid, SIGTERM);
        groups.push_back(pgid);
    }
    return groups;
}

std::variant<Scheduler::Resume, RunProgress> Scheduler::plan_recovery(RunId id,
                                                                      const Result<RunDetail>& run,
                                                                      const std::string& stopped) {
    RunProgress end;
    end.run = id;
    const auto finish = [&end](RunState state, std::string reason) {
        end.finished = RunProgress::Finish{state, std::move(reason), Timestamp::now(), ""};
        return end;
    };
    const std::string prefix = "interrupted: runbookd stopped while the run was in progress; ";
    if (!run) {
        return finish(RunState::Failed, prefix + stopped);
    }
    const AttemptRecord* running = run->attempts.empty() || run->attempts.back().state != "running"
                                       ? nullptr
                                       : &run->attempts.back();
    if (running != nullptr) {
        AttemptEnd unknown;
        unknown.outcome_unknown = true;
        unknown.finished_at = Timestamp::now();
        unknown.duration_ms =
            std::max<std::int64_t>(0, unknown.finished_at.millis_since(running->start.started_at));
        unknown.error = "interrupted: runbookd stopped while the attempt ran; " + stopped;
        end.ended = std::make_pair(running->id, std::move(unknown));
    }
    if (!run->run.cancelled_by.empty()) {
        // Cancelled, and runbookd died before the step had stopped: the cancel stands.
        end.finished =
            RunProgress::Finish{RunState::Cancelled,
                                fmt::format("{}; runbookd stopped before the run had ended ({})",
                                            run->run.reason, stopped),
                                Timestamp::now(), run->run.cancelled_by};
        return end;
    }
    std::string error;
    auto runbook = resolve_runbook(run->run.runbook, run->run.runbook_hash, error);
    if (!runbook) {
        return finish(RunState::Failed, prefix + stopped + "; cannot resume: " + error);
    }
    const AttemptRecord* last = run->attempts.empty() ? nullptr : &run->attempts.back();
    Resume resume;
    resume.interrupted = end.ended;
    if (runbook->on_interrupt == Runbook::OnInterrupt::Fail) {
        return finish(RunState::Failed, prefix + stopped + " (on_interrupt: fail)");
    }
    if (last == nullptr) {
        resume.why = "resumed after a restart; no step had started";
        return resume;
    }
    const auto index = static_cast<std::size_t>(last->start.step_index);
    if (index >= runbook->steps.size()) {
        return finish(RunState::Failed, prefix + stopped +
                                            "; cannot resume: its runbook version has no step " +
                                            std::to_string(index + 1));
    }
    const StepSpec& step = runbook->steps[index];
    // Attempts are ordered by step, then attempt: the last one seen of a step is its latest.
    // The last step counts when it succeeded (the run goes on after it).
    const int ended_before = last->start.step_index + (last->state == "succeeded" ? 1 : 0);
    for (const auto& a : run->attempts) {
        if (a.start.step_index < ended_before && a.end) {
            resume.earlier[a.start.step] =
                StepResult{a.state, a.end->exit_code, a.end->outputs, a.end->stdout_excerpt};
        }
    }
    int interruptions = 0;
    for (const auto& a : run->attempts) {
        interruptions += a.start.step_index == last->start.step_index &&
                                 (a.state == "outcome_unknown" || &a == last)
                             ? 1
                             : 0;
    }
    if (last->state == "succeeded") {
        // Between two steps: nothing was running, so going on repeats nothing.
        resume.step_index = index + 1;
        resume.why = fmt::format("resumed after a restart after step \"{}\" succeeded", step.name);
        return resume;
    }
    resume.step_index = index;
    resume.attempt = last->start.attempt + 1;
    if (last->state != "running") {
        // Failed, waiting for its retry: the retry goes ahead once what is left of its backoff,
        // counted from the end of the failed attempt, has passed.
        resume.uncounted = interruptions - 1;
        if (last->end) {
            const auto full =
                retry_delay(step.retry, resume.attempt - resume.uncounted, random01());
            const auto waited = Timestamp::now().millis_since(last->end->finished_at);
            resume.delay = Duration(std::max<std::int64_t>(0, full.count() - waited));
        }
        resume.why = fmt::format("resumed after a restart: step \"{}\" is retried as attempt {}",
                                 step.name, resume.attempt);
        return resume;
    }
    const bool again = step.idempotent || runbook->on_interrupt == Runbook::OnInterrupt::Resume;
    if (!again) {
        return finish(RunState::Interrupted,
                      fmt::format("interrupted: runbookd stopped while step \"{}\" was running "
                                  "({}); the step is not marked idempotent, so whether it did its "
                                  "work is unknown: check, then run the runbook again if needed",
                                  step.name, stopped));
    }
    if (interruptions > kMaxResumes) {
        return finish(RunState::Interrupted,
                      fmt::format("interrupted: runbookd stopped while step \"{}\" was running "
                                  "({}), for the {}th time; it is not run again",
                                  step.name, stopped, interruptions));
    }
    resume.uncounted = interruptions;
    resume.why = fmt::format(
        "resumed after a restart: step \"{}\" was interrupted ({}) and runs "
        "again as attempt {} ({})",
        step.name, stopped, resume.attempt,
        step.idempotent ? "idempotent: true" : "on_interrupt: resume");
    return resume;
}

double Scheduler::random01() {
    return std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
}

std::optional<std::string> Scheduler::admit(const RunExecution& run) {
    const Runbook& runbook = run.runbook();
    int& running = running_per_runbook_[runbook.name];
    if (runbook.concurrency && running >= *runbook.concurrency) {
        return fmt::format(
            "waiting: runbook {} runs at most {} at once (concurrency) and {} {} "
            "running",
            runbook.name, *runbook.concurrency, running, running == 1 ? "is" : "are");
    }
    const std::string& key = run.lock_key();
    if (!key.empty()) {
        if (auto it = locks_.find(key); it != locks_.end() && it->second != run.id()) {
            return fmt::format("waiting for lock \"{}\" held by run {}", key, it->second);
        }
        locks_[key] = run.id();
    }
    ++running;
    return std::nullopt;
}

void Scheduler::park(RunId id) {
    auto it = active_.find(id);
    if (it == active_.end()) {
        return;
    }
    waiting_.emplace(id, std::move(it->second));
    active_.erase(it);
    --active_count_;
}

// Looks for the process a crashed runbookd left running for run `id`, if its recorded process
// is still the same one (pid and start time), and sends its group SIGTERM; recover() waits for
// all of them and SIGKILLs what remains.
Scheduler::LeftRunning Scheduler::stop_left_running(RunId id, const Result<RunDetail>& run) {
    if (!run) {
        return {"its last step may have been left running (" + run.error().message + ")", 0};
    }
    for (const auto& a : run->attempts) {
        if (a.state != "running") {
            continue;
        }
        if (!a.start.pid) {
            return {fmt::format("step \"{}\" had not recorded its process yet (what it left "
                                "running is found by its environment)",
                                a.start.step),
                    0};
        }
        const pid_t pid = *a.start.pid;
        const auto ticks = exec::process_start_ticks(pid);
        if (!ticks || (a.start.pid_start_ticks && *ticks != *a.start.pid_start_ticks)) {
            // Gone, or the pid belongs to another process now. Its group may still have
            // members, but a reused pid must never be signalled.
            if (::kill(-pid, 0) == 0 && !ticks) {
                ::kill(-pid, SIGKILL);
                log_->warn("killed what was left of a step's process group run={} pgid={}", id,
                           pid);
                return {fmt::format("the rest of step \"{}\"'s process group {} was killed",
                                    a.start.step, pid),
                        0};
            }
            return {fmt::format("step \"{}\"'s process {} had already ended", a.start.step, pid),
                    0};
        }
        log_->warn("stopping a step left running by the previous runbookd run={} pgid={}", id, pid);
        ::kill(-pid, SIGTERM);
        return {fmt::format("step \"{}\" was still running (process group {}) and was stopped "
                            "with SIGTERM",
                            a.start.step, pid),
                pid};
    }
    return {"no step was running", 0};
}

void Scheduler::start_more() {
    if (draining_) {
        return;
    }
    // Approved runs first: they have started already and hold their lock.
    while (active_.size() < options_.max_concurrent_runs && !approved_.empty()) {
        const RunId id = approved_.front();
        approved_.pop_front();
        auto it = approving_.find(id);
        if (it == approving_.end() || it->second->finished()) {
            continue;
        }
        auto execution = it->second;
        approving_.erase(it);
        --approval_count_;
        active_.emplace(id, execution);
        ++active_count_;
        ++running_count_;
        execution->continue_approved();
    }
    // Waiting runs next, oldest first: they were queued before anything still in the queue.
    for (auto it = waiting_.begin();
         it != waiting_.end() && active_.size() < options_.max_concurrent_runs;) {
        auto execution = it->second;
        if (auto blocker = admit(*execution)) {
            execution->wait_because(*blocker);
            ++it;
            continue;
        }
        const RunId id = it->first;
        it = waiting_.erase(it);
        active_.emplace(id, execution);
        ++active_count_;
        execution->on_admitted();
    }
    while (active_.size() < options_.max_concurrent_runs && !queue_.empty() &&
           waiting_.size() < kMaxWaiting) {
        const RunId id = queue_.front();
        queue_.pop_front();
        --queued_count_;
        if (active_.count(id) != 0) {
            continue;
        }
        auto execution = std::make_shared<RunExecution>(*this, id);
        active_.emplace(id, execution);
        ++active_count_;
        execution->begin();
    }
}

void Scheduler::on_run_finished(RunId id) {
    note_started_or_gone(id);
    if (auto parked = approving_.find(id); parked != approving_.end()) {
        // Parked: it held no slot, only its lock and its place in its runbook's concurrency.
        release_admission(*parked->second);
        approving_.erase(parked);
        --approval_count_;
    } else if (auto it = active_.find(id); it != active_.end()) {
        const RunExecution& run = *it->second;
        if (run.admitted()) {
            --running_count_;
            release_admission(run);
        }
        active_.erase(it);
        --active_count_;
    }
    if (draining_) {
        check_drained();
        return;
    }
    // Start the next run from a fresh handler, not from inside this run's completion chain.
    asio::post(io_, [this] { start_more(); });
}

void Scheduler::release_admission(const RunExecution& run) {
    --running_per_runbook_[run.runbook().name];
    if (auto lock = locks_.find(run.lock_key()); lock != locks_.end() && lock->second == run.id()) {
        locks_.erase(lock);
    }
}

void Scheduler::park_for_approval(RunId id) {
    auto it = active_.find(id);
    if (it == active_.end()) {
        return;
    }
    approving_.emplace(id, std::move(it->second));
    active_.erase(it);
    --active_count_;
    --running_count_;
    ++approval_count_;
    if (draining_) {
        check_drained();
        return;
    }
    asio::post(io_, [this] { start_more(); });
}

void Scheduler::resume_approved(RunId id) {
    approved_.push_back(id);
    start_more();
}

std::shared_ptr<RunExecution> Scheduler::find_execution(RunId id) const {
    if (auto it = active_.find(id); it != active_.end()) {
        return it->second;
    }
    if (auto it = approving_.find(id); it != approving_.end()) {
        return it->second;
    }
    return nullptr;
}

void Scheduler::answer(RunId id, ApprovalAnswer answer, std::function<void(AnswerOutcome)> done) {
    asio::post(io_, [this, id, answer = std::move(answer), done = std::move(done)]() mutable {
        if (auto execution = find_execution(id);
            execution && execution->take_answer(answer, done)) {
            return;
        }
        done(explain_refusal(id, answer));
    });
}

AnswerOutcome Scheduler::explain_refusal(RunId id, const ApprovalAnswer& answer) {
    using Refusal = AnswerOutcome::Refusal;
    AnswerOutcome out;
    const auto refuse = [&out](Refusal why, std::string message) {
        out.refused = why;
        out.message = std::move(message);
        return out;
    };
    auto run = store_.get_run(id);
    if (!run) {
        return refuse(
            run.error().code == ErrorCode::NotFound ? Refusal::NotFound : Refusal::Unavailable,
            run.error().message);
    }
    std::string error;
    auto runbook = resolve_runbook(run->run.runbook, run->run.runbook_hash, error);
    const StepSpec* step = nullptr;
    for (std::size_t i = 0; runbook && i < runbook->steps.size(); ++i) {
        step = runbook->steps[i].name == answer.step ? &runbook->steps[i] : step;
    }
    if (step == nullptr) {
        return refuse(Refusal::NotFound, fmt::format("run {} (runbook {}) has no step \"{}\"", id,
                                                     run->run.runbook, answer.step));
    }
    if (!step->approval) {
        return refuse(Refusal::NoApproval,
                      fmt::format("step \"{}\" of runbook {} has no approval gate: there is "
                                  "nothing to approve or deny",
                                  answer.step, run->run.runbook));
    }
    for (const auto& a : run->approvals) {
        if (a.step == answer.step && a.state != ApprovalState::Pending &&
            a.state != ApprovalState::Cancelled) {
            out.approval = a;
            return refuse(
                Refusal::AlreadyDecided,
                fmt::format("step \"{}\" of run {} was already {} by {} at {}", answer.step, id,
                            a.state == ApprovalState::TimedOut ? "decided (timed out)"
                                                               : approval_state_name(a.state),
                            a.decided_by, a.decided_at ? a.decided_at->to_rfc3339_millis() : "?"));
        }
    }
    if (is_terminal(run->run.state)) {
        return refuse(
            Refusal::RunEnded,
            fmt::format("run {} has already ended ({}{}{})", id, run_state_name(run->run.state),
                        run->run.reason.empty() ? "" : ": ", run->run.reason));
    }
    return refuse(Refusal::NotWaiting,
                  fmt::format("run {} is not waiting for approval of step \"{}\" (it is {}); "
                              "answer once it has reached the step",
                              id, answer.step, run_state_name(run->run.state)));
}

void Scheduler::drain(Duration grace, std::function<void()> done) {
    asio::post(io_, [this, grace, done = std::move(done)]() mutable {
        draining_ = true;
        drained_ = std::move(done);
        waiting_.clear();  // they stay queued in the store and start after the restart
        if (active_.empty()) {
            check_drained();
            return;
        }
        log_->info("waiting for active runs count={} grace_ms={}", active_.size(), grace.count());
        drain_timer_ = std::make_unique<asio::steady_timer>(io_, grace);
        drain_timer_->async_wait([this, grace](const boost::system::error_code& e) {
            if (e) {
                return;
            }
            log_->warn("shutdown grace over, cancelling active runs count={}", active_.size());
            cancel_active(
                fmt::format("cancelled: runbookd shut down and the run did not finish "
                            "within runs.shutdown_grace ({})",
                            format_duration(grace)));
        });
    });
}

void Scheduler::cancel(RunId id, std::string actor, std::string reason,
                       std::function<void(Result<CancelOutcome>)> done) {
    asio::post(io_, [this, id, actor = std::move(actor), reason = std::move(reason),
                     done = std::move(done)]() mutable {
        std::string why = reason.empty() ? fmt::format("cancelled by {}", actor)
                                         : fmt::format("cancelled by {}: {}", actor, reason);
        if (find_execution(id)) {
            log_->info("cancelling run run={} actor={}", id, log::quote(actor));
            // Recorded before the step is stopped: if runbookd dies while the step stops, the
            // next start ends the run cancelled instead of resuming it.
            RunProgress request;
            request.run = id;
            request.cancel_requested = RunProgress::CancelRequest{actor, why};
            store_.record_progress(
                std::move(request),
                [this, id, why, actor, done = std::move(done)](Result<AttemptId> r) mutable {
                    asio::post(io_, [this, id, why = std::move(why), actor = std::move(actor),
                                     done = std::move(done), r = std::move(r)]() mutable {
                        if (!r) {
                            log_->warn("recording a cancel request failed run={} error={}", id,
                                       log::quote(r.error().message));
                        }
                        if (auto run = find_execution(id)) {
                            const RunState now = run->waiting_approval() ? RunState::WaitingApproval
                                                                         : RunState::Running;
                            run->stop(RunState::Cancelled, std::move(why), std::move(actor));
                            done(CancelOutcome{now, true});
                            return;
                        }
                        done(make_error(ErrorCode::FailedPrecondition,
                                        fmt::format("cancelling run {} failed: it has already "
                                                    "ended",
                                                    id)));
                    });
                });
            return;
        }
        // Not running here: queued (in memory or only in the store), ended, or unknown. The
        // store decides, by the state it finds.
        bool was_queued = false;
        if (auto q = std::find(queue_.begin(), queue_.end(), id); q != queue_.end()) {
            queue_.erase(q);
            --queued_count_;
            was_queued = true;
        } else if (auto w = waiting_.find(id); w != waiting_.end()) {
            w->second->forget();
            waiting_.erase(w);
            was_queued = true;
        }
        RunProgress progress;
        progress.run = id;
        progress.finished = RunProgress::Finish{RunState::Cancelled, why, Timestamp::now(), actor};
        store_.record_progress(
            std::move(progress),
            [this, id, actor, was_queued, done = std::move(done)](Result<AttemptId> r) mutable {
                asio::post(io_, [this, id, actor, was_queued, done = std::move(done),
                                 r = std::move(r)] {
                    if (r) {
                        log_->info("run cancelled before it started run={} actor={}", id,
                                   log::quote(actor));
                        note_started_or_gone(id);
                        // Rare enough for a read: the run was never loaded here.
                        if (auto run = store_.get_run(id)) {
                            metrics::runbookd_metrics().run_finished(run->run.runbook,
                                                                     RunState::Cancelled, 0);
                        }
                        done(CancelOutcome{RunState::Cancelled, false});
                        return;
                    }
                    if (was_queued) {
                        // Still queued in the store: keep it queued here too.
                        queue_.push_front(id);
                        ++queued_count_;
                    }
                    if (r.error().code != ErrorCode::InvalidArgument) {
                        done(r.error());
                        return;
                    }
                    auto run = store_.get_run(id);
                    if (!run) {
                        done(run.error());
                        return;
                    }
                    done(make_error(ErrorCode::FailedPrecondition,
                                    fmt::format("cancelling run {} failed: it has already ended "
                                                "({})",
                                                id, run_state_name(run->run.state))));
                });
            });
    });
}

void Scheduler::dry_run(RunId id, std::function<void(Status)> done) {
    asio::post(io_, [this, id, done = std::move(done)]() mutable {
        auto execution = std::make_shared<RunExecution>(*this, id);
        execution->on_recorded(std::move(done));
        execution->begin();
    });
}

void Scheduler::cancel_active(std::string reason) {
    asio::post(io_, [this, reason = std::move(reason)] {
        for (auto& [id, execution] : active_) {
            execution->stop(RunState::Cancelled, reason);
        }
    });
}

// Run ids grow with time, so the smallest id still waiting is the one queued first (runs
// recovered at start-up are all queued at once, before any new one).
void Scheduler::note_queued(RunId id) {
    queued_since_.emplace(id, std::chrono::steady_clock::now());
    publish_queue();
}

void Scheduler::note_started_or_gone(RunId id) {
    if (queued_since_.erase(id) != 0) {
        publish_queue();
    }
}

void Scheduler::publish_queue() {
    waiting_count_.store(queued_since_.size(), std::memory_order_relaxed);
    const std::int64_t oldest = queued_since_.empty()
                                    ? 0
                                    : std::chrono::duration_cast<std::chrono::milliseconds>(
                                          queued_since_.begin()->second.time_since_epoch())
                                          .count();
    oldest_queued_ms_.store(oldest, std::memory_order_relaxed);
}

std::chrono::milliseconds Scheduler::oldest_queued_age() const {
    const std::int64_t since = oldest_queued_ms_.load(std::memory_order_relaxed);
    if (since == 0) {
        return std::chrono::milliseconds(0);
    }
    const auto now = std::chrono::duration_cast<std::chrono::milliseconds>(
        std::chrono::steady_clock::now().time_since_epoch());
    return std::max(std::chrono::milliseconds(0), now - std::chrono::milliseconds(since));
}

void Scheduler::check_drained() {
    if (!active_.empty() || !drained_) {
        return;
    }
    if (drain_timer_) {
        drain_timer_->cancel();
    }
    auto done = std::move(drained_);
    drained_ = nullptr;
    done();
}

void Scheduler::set_catalog(std::shared_ptr<const RunbookCatalog> catalog) {
    // The versions leaving the catalog stay at hand for the runs that still refer to them.
    for (const auto& runbook : catalog_->all()) {
        if (!catalog->find_by_hash(runbook->content_hash)) {
            old_versions_.emplace(runbook->content_hash, runbook);
        }
    }
    catalog_ = std::move(catalog);
}

std::shared_ptr<const Runbook> Scheduler::resolve_runbook(const std::string& name,
                                                          const std::string& hash,
                                                          std::string& error) {
    if (auto current = catalog_->find(name); current && current->content_hash == hash) {
        return current;
    }
    if (auto it = old_versions_.find(hash); it != old_versions_.end()) {
        return it->second;
    }
    // The run was queued against a version that has changed since; run the version it
    // matched, from the copy recorded in the store.
    auto source = store_.runbook_source(hash);
    if (!source) {
        error = fmt::format("runbook {} version {} is not available: {}", name, hash,
                            source.error().message);
        return nullptr;
    }
    auto loaded =
        load_runbook_text(*source, fmt::format("{} (stored version {})", name, hash), parsers_);
    if (loaded.runbooks.empty()) {
        error = fmt::format("runbook {} version {} no longer loads: {}", name, hash,
                            loaded.errors.empty() ? "unknown error" : loaded.errors[0].to_string());
        return nullptr;
    }
    auto runbook = loaded.runbooks.front();
    old_versions_.emplace(hash, runbook);
    return runbook;
}

// Each step is prepared by its executor exactly as a real attempt would be, and described; no
// attempt is started (prepare() never starts a process or borrows a Python worker).
nlohmann::json Scheduler::describe_steps(const Runbook& runbook, AttemptContext base,
                                         std::string& failure) const {
    nlohmann::json steps = nlohmann::json::array();
    for (std::size_t i = 0; i < runbook.steps.size(); ++i) {
        const StepSpec& s = runbook.steps[i];
        AttemptContext context = base;
        context.step = &s;
        context.step_index = static_cast<int>(i);
        context.attempt = 1;
        context.timeout = s.timeout.value_or(options_.default_step_timeout);
        nlohmann::json entry = {{"name", s.name},
                                {"kind", s.kind},
                                {"index", i},
                                {"timeout", format_duration(context.timeout)},
                                {"retries", s.retry.attempts},
                                {"idempotent", s.idempotent}};
        if (s.approval) {
            // The run would park before this step until someone answers (docs/approvals.md).
            entry["approval"] = {
                {"approvers", s.approval->approvers},
                {"timeout", format_duration(s.approval->timeout)},
                {"on_timeout", s.approval->approve_on_timeout ? "approve" : "deny"},
                {"message", s.approval->message}};
        }
        StepExecutor* executor = executor_for(s.kind);
        auto prepared = executor != nullptr
                            ? executor->prepare(context)
                            : Result<std::unique_ptr<Attempt>>(make_error(
                                  ErrorCode::Internal,
                                  fmt::format("this runbookd cannot execute {} steps", s.kind)));
        if (prepared) {
            entry.update((*prepared)->describe());
        } else {
            entry["error"] = prepared.error().message;
            if (failure.empty()) {
                failure = fmt::format("step \"{}\" cannot be prepared: {}", s.name,
                                      prepared.error().message);
            }
        }
        steps.push_back(std::move(entry));
    }
    return steps;
}

void Scheduler::plan(std::vector<PlannedRun> runs, std::function<void(std::vector<RunPlan>)> done) {
    asio::post(io_, [this, runs = std::move(runs), done = std::move(done)] {
        const StepResults none;
        std::vector<RunPlan> out;
        for (const auto& run : runs) {
            const Runbook& runbook = *run.runbook;
            const LabelSet params = runbook.default_params();
            AttemptContext base;
            base.runbook = &runbook;
            base.alert = &run.alert;
            base.trigger = "alert";
            base.actor = "alertmanager";
            base.steps = &none;
            base.params = &params;
            base.dry_run = true;
            RunPlan plan;
            const nlohmann::json steps = describe_steps(runbook, base, plan.failure);
            plan.steps = nlohmann::json::parse(
                redaction_.json_text(
                    steps.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)),
                nullptr, false);
            plan.failure = redaction_.text(plan.failure);
            const auto running = running_per_runbook_.find(runbook.name);
            if (runbook.concurrency && running != running_per_runbook_.end() &&
                running->second >= *runbook.concurrency) {
                plan.waits = fmt::format(
                    "concurrency: runbook {} runs at most {} at once and {} "
                    "running",
                    runbook.name, *runbook.concurrency, running->second);
            } else if (runbook.lock) {
                auto key = runbook.lock->render(base.scope());
                if (auto held = key ? locks_.find(*key) : locks_.end(); held != locks_.end()) {
                    plan.waits = fmt::format("lock: \"{}\" is held by run {}", *key, held->second);
                }
            }
            out.push_back(std::move(plan));
        }
        done(std::move(out));
    });
}

StepExecutor* Scheduler::executor_for(std::string_view kind) const {
    for (const auto& e : executors_) {
        if (e->kind() == kind) {
            return e.get();
        }
    }
    return nullptr;
}

}  // namespace runbookd::run
