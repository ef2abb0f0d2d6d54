#pragma once

#include <array>
#include <cstddef>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <runbookd/alert.hpp>
#include <runbookd/store.hpp>

#include "metrics/registry.hpp"

// runbookd's own metrics (docs/metrics.md): one process-wide set, registered at first use.
// Every method may be called from any thread. Labels stay bounded: the `runbook` label only
// takes the names given to set_runbooks() (anything else counts as "other"), and every other
// label takes values from a fixed list.
namespace runbookd::metrics {

// How the webhook answered one notification.
enum class NotificationOutcome {
    Accepted,
    Invalid,
    TooLarge,
    UnsupportedMediaType,
    Unavailable,
    Draining,
    Overloaded
};

// Why runbookd signalled a step's process group.
enum class KillReason { Timeout, Cancel, GraceExpired, DrainExpired, Orphan };

// Why a Python worker was replaced.
enum class WorkerRestart {
    Died,
    TimedOut,
    Cancelled,
    LeftStateBehind,
    Retired,
    StartFailed,
    ProtocolError
};

class RunbookdMetrics {
  public:
    RunbookdMetrics();

    // The runbook names the `runbook` label may take; call once the catalog is loaded.
    void set_runbooks(const std::vector<std::string>& names);

    void notification(NotificationOutcome outcome) {
        notifications_[static_cast<std::size_t>(outcome)]->inc();
    }
    void alert(AlertStatus status, AlertOutcome outcome) {
        alerts_[static_cast<std::size_t>(status)][static_cast<std::size_t>(outcome)]->inc();
    }
    // A run got its slot and started (or resumed) executing; `trigger` is "alert" or "manual".
    void run_started(std::string_view runbook, std::string_view trigger);
    // A run ended; `seconds` is how long it executed (0 when it never started).
    void run_finished(std::string_view runbook, RunState state, double seconds);
    // `kind` is the step's kind; `outcome` one of succeeded, failed, timed_out, cancelled,
    // not_started.
    void attempt_finished(std::string_view kind, std::string_view outcome, double seconds);
    void process_kill(KillReason reason, std::uint64_t n = 1) {
        kills_[static_cast<std::size_t>(reason)]->inc(n);
    }
    void python_workers(std::size_t n) { python_workers_->set(static_cast<double>(n)); }
    // An approval was decided (approved, denied or timed_out); `held`: an answer that came
    // while its run was still pausing and was applied once the pause committed.
    void approval_decided(ApprovalState state) {
        approvals_[state == ApprovalState::Approved ? 0
                   : state == ApprovalState::Denied ? 1
                                                    : 2]
            ->inc();
    }
    void approval_answer_held() { approvals_held_->inc(); }
    void python_worker_restart(WorkerRestart reason) {
        restarts_[static_cast<std::size_t>(reason)]->inc();
    }
    // One transaction of the store's writer: how long it took, how many writes it carried and
    // how many of them failed (all of them when the commit itself failed).
    void store_commit(double seconds, bool committed, std::size_t failed_writes);
    // A request refused by authentication or authorization; `reason` indexes
    // missing_credentials, bad_credentials, missing_scope, runbook_not_allowed (docs/auth.md).
    void auth_denied(std::size_t reason) { auth_denied_[reason < 4 ? reason : 0]->inc(); }
    // A refusal left out of the audit trail by its rate limit.
    void auth_denied_unrecorded() { auth_unrecorded_->inc(); }
    // A reload of the runbooks (and tokens file): `outcome` indexes reloaded, invalid, failed.
    void reload(std::size_t outcome) { reloads_[outcome < 3 ? outcome : 2]->inc(); }
    // The counter of HTTP requests for one route pattern and status class ("2xx"...); for
    // the router, which looks each up once per route.
    Counter& http_requests(std::string_view route, unsigned status_class);

    // Every registered metric in the text format (without the values read at scrape time).
    std::string render() const { return registry_.render(); }

  private:
    std::string runbook_label(std::string_view name) const;

    Registry registry_;
    std::array<Counter*, 7> notifications_{};
    std::array<std::array<Counter*, 6>, 2> alerts_{};
    std::array<Counter*, 5> kills_{};
    std::array<Counter*, 7> restarts_{};
    Family<Counter>* runs_started_;
    Family<Counter>* runs_finished_;
    Family<Histogram>* run_duration_;
    Family<Counter>* attempts_;
    Family<Histogram>* step_duration_;
    Gauge* python_workers_;
    std::array<Counter*, 3> approvals_{};
    Counter* approvals_held_;
    Counter* commits_;
    Counter* commit_failures_;
    Counter* write_errors_;
    Histogram* commit_duration_;
    Family<Counter>* http_;
    std::array<Counter*, 4> auth_denied_{};
    Counter* auth_unrecorded_;
    std::array<Counter*, 3> reloads_{};
    Gauge* build_info_;

    mutable std::mutex runbooks_mutex_;
    std::set<std::string, std::less<>> runbooks_;
};

// The process-wide set.
RunbookdMetrics& runbookd_metrics();

// Appends the standard process_* metrics of this process, read from /proc/self.
void append_process_metrics(std::string& out);

}  // namespace runbookd::metrics
