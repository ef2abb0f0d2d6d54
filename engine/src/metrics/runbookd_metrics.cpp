#include "metrics/runbookd_metrics.hpp"

#include <fstream>
#include <iterator>
#include <sstream>

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

namespace runbookd::metrics {
namespace {

constexpr std::array kNotificationOutcomes = {
    "accepted",    "invalid",  "too_large", "unsupported_media_type",
    "unavailable", "draining", "overloaded"};
constexpr std::array kKillReasons = {"timeout", "cancel", "grace_expired", "drain_expired",
                                     "orphan"};
constexpr std::array kRestartReasons = {
    "died",    "timed_out",    "cancelled",     "left_state_behind",
    "retired", "start_failed", "protocol_error"};
constexpr std::array kStepKinds = {"argv", "shell", "python"};
constexpr std::array kAttemptOutcomes = {"succeeded", "failed", "timed_out", "cancelled",
                                         "not_started"};
constexpr std::array kTriggers = {"alert", "manual"};
constexpr std::array kAuthDenials = {"missing_credentials", "bad_credentials", "missing_scope",
                                     "runbook_not_allowed"};
constexpr std::array kStatusClasses = {"1xx", "2xx", "3xx", "4xx", "5xx"};
// Route patterns, HTTP status classes, runbooks: far below this in any real deployment.
constexpr std::size_t kMaxRunbookChildren = 2000;

template <std::size_t N>
std::string bounded(std::string_view value, const std::array<const char*, N>& allowed) {
    for (const char* a : allowed) {
        if (value == a) {
            return std::string(value);
        }
    }
    return "other";
}

}  // namespace

RunbookdMetrics::RunbookdMetrics() {
    auto& notifications = registry_.counter(
        "runbookd_notifications_received_total",
        "Alertmanager notifications (webhook POSTs) received, by how runbookd answered them.",
        {"outcome"});
    for (std::size_t i = 0; i < kNotificationOutcomes.size(); ++i) {
        notifications_[i] = &notifications.with({kNotificationOutcomes[i]});
    }

    auto& alerts = registry_.counter(
        "runbookd_alerts_received_total",
        "Alerts in accepted notifications, by alert status and what runbookd did about them.",
        {"status", "outcome"});
    for (const auto status : {AlertStatus::Firing, AlertStatus::Resolved}) {
        for (std::size_t o = 0; o < alerts_[0].size(); ++o) {
            alerts_[static_cast<std::size_t>(status)][o] = &alerts.with(
                {alert_status_name(status), alert_outcome_name(static_cast<AlertOutcome>(o))});
        }
    }

    runs_started_ = &registry_.counter(
        "runbookd_runs_started_total",
        "Runs that began executing (resumed runs included), by runbook and trigger.",
        {"runbook", "trigger"}, kMaxRunbookChildren);
    runs_finished_ = &registry_.counter("runbookd_runs_finished_total",
                                        "Runs that ended, by runbook and final state.",
                                        {"runbook", "state"}, kMaxRunbookChildren);
    run_duration_ =
        &registry_.histogram("runbookd_run_duration_seconds",
                             "Time from a run starting to execute until it ended, by runbook.",
                             duration_buckets(), {"runbook"}, kMaxRunbookChildren);

    attempts_ = &registry_.counter("runbookd_step_attempts_total",
                                   "Step attempts that ended, by step kind and outcome.",
                                   {"kind", "outcome"});
    step_duration_ = &registry_.histogram("runbookd_step_duration_seconds",
                                          "Duration of step attempts, by step kind.",
                                          duration_buckets(), {"kind"});
    for (const char* kind : kStepKinds) {
        for (const char* outcome : kAttemptOutcomes) {
            attempts_->with({kind, outcome});
        }
        step_duration_->with({kind});
    }

    auto& kills = registry_.counter(
        "runbookd_process_group_kills_total",
        "Signals sent to stop a step's process group, by reason: timeout and cancel (the stop "
        "signal), grace_expired and drain_expired (SIGKILL), orphan (SIGKILL to a process left "
        "behind outside its group).",
        {"reason"});
    for (std::size_t i = 0; i < kKillReasons.size(); ++i) {
        kills_[i] = &kills.with({kKillReasons[i]});
    }

    python_workers_ = &registry_
                           .gauge("runbookd_python_workers",
                                  "Python worker processes alive (starting, idle or busy).")
                           .get();
    auto& restarts =
        registry_.counter("runbookd_python_worker_restarts_total",
                          "Python workers stopped or lost and replaced, by reason.", {"reason"});
    for (std::size_t i = 0; i < kRestartReasons.size(); ++i) {
        restarts_[i] = &restarts.with({kRestartReasons[i]});
    }

    auto& approvals = registry_.counter(
        "runbookd_approvals_total",
        "Approvals of gated steps that were decided, by how: approved, denied or timed_out.",
        {"decision"});
    const char* decisions[] = {"approved", "denied", "timed_out"};
    for (std::size_t i = 0; i < approvals_.size(); ++i) {
        approvals_[i] = &approvals.with({decisions[i]});
    }
    approvals_held_ = &registry_
                           .counter("runbookd_approval_answers_held_total",
                                    "Answers that came while their run was still pausing before "
                                    "the step, held and applied once the pause was committed.")
                           .get();

    commits_ = &registry_
                    .counter("runbookd_store_commits_total",
                             "Transactions the store's writer committed (each carries one or "
                             "more writes).")
                    .get();
    commit_failures_ =
        &registry_
             .counter("runbookd_store_commit_failures_total",
                      "Transactions the store's writer could not commit (rolled back).")
             .get();
    write_errors_ =
        &registry_
             .counter("runbookd_store_write_errors_total",
                      "Writes (deliveries, run progress) that failed, alone or with their "
                      "transaction.")
             .get();
    commit_duration_ = &registry_
                            .histogram("runbookd_store_commit_duration_seconds",
                                       "Time to apply and commit one transaction, fsync included.",
                                       {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                        0.5, 1, 2.5, 5, 10})
                            .get();

    http_ = &registry_.counter(
        "runbookd_http_requests_total",
        "HTTP requests answered, by route pattern (\"other\" for unknown paths) and status "
        "class.",
        {"route", "code"});

    auto& denied = registry_.counter(
        "runbookd_auth_denied_total",
        "HTTP requests refused by authentication (401) or authorization (403), by reason.",
        {"reason"});
    for (std::size_t i = 0; i < kAuthDenials.size(); ++i) {
        auth_denied_[i] = &denied.with({kAuthDenials[i]});
    }
    auth_unrecorded_ = &registry_
                            .counter("runbookd_auth_denied_unrecorded_total",
                                     "Refused HTTP requests not recorded as auth.denied audit "
                                     "events because of their rate limit.")
                            .get();
    auto& reloads = registry_.counter(
        "runbookd_reloads_total",
        "Reloads of the runbooks directory and tokens file (SIGHUP or POST /api/v1/reload), by "
        "outcome: reloaded, invalid (the old set stays) or failed (could not be recorded).",
        {"outcome"});
    for (std::size_t i = 0; i < reloads_.size(); ++i) {
        reloads_[i] = &reloads.with({std::array{"reloaded", "invalid", "failed"}[i]});
    }

    build_info_ =
        &registry_
             .gauge("runbookd_build_info",
                    "Always 1; the labels say which runbookd version is running.", {"version"})
             .with({RUNBOOKD_VERSION});
    build_info_->set(1);
}

void RunbookdMetrics::set_runbooks(const std::vector<std::string>& names) {
    {
        std::lock_guard lock(runbooks_mutex_);
        runbooks_ = std::set<std::string, std::less<>>(names.begin(), names.end());
    }
    // Present from the start at 0, so that rate() and increase() see the first run.
    for (const auto& name : names) {
        runs_started_->with({name, "alert"});
        for (const auto state : {RunState::Succeeded, RunState::Failed, RunState::Cancelled}) {
            runs_finished_->with({name, run_state_name(state)});
        }
        run_duration_->with({name});
    }
}

std::string RunbookdMetrics::runbook_label(std::string_view name) const {
    std::lock_guard lock(runbooks_mutex_);
    return runbooks_.count(name) != 0 ? std::string(name) : "other";
}

void RunbookdMetrics::run_started(std::string_view runbook, std::string_view trigger) {
    runs_started_->with({runbook_label(runbook), bounded(trigger, kTriggers)}).inc();
}

void RunbookdMetrics::run_finished(std::string_view runbook, RunState state, double seconds) {
    const std::string label = runbook_label(runbook);
    runs_finished_->with({label, run_state_name(state)}).inc();
    if (seconds > 0) {
        run_duration_->with({label}).observe(seconds);
    }
}

void RunbookdMetrics::attempt_finished(std::string_view kind, std::string_view outcome,
                                       double seconds) {
    const std::string k = bounded(kind, kStepKinds);
    attempts_->with({k, bounded(outcome, kAttemptOutcomes)}).inc();
    step_duration_->with({k}).observe(seconds);
}

void RunbookdMetrics::store_commit(double seconds, bool committed, std::size_t failed_writes) {
    (committed ? commits_ : commit_failures_)->inc();
    write_errors_->inc(failed_writes);
    commit_duration_->observe(seconds);
}

Counter& RunbookdMetrics::http_requests(std::string_view route, unsigned status_class) {
    const std::size_t i = status_class >= 1 && status_class <= 5 ? status_class - 1 : 4;
    return http_->with({std::string(route), kStatusClasses[i]});
}

RunbookdMetrics& runbookd_metrics() {
    static RunbookdMetrics metrics;
    return metrics;
}

namespace {

// Fields of /proc/self/stat after the command name, which may itself hold spaces and ')'.
std::vector<std::string> self_stat_fields() {
    std::ifstream in("/proc/self/stat");
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = text.rfind(')');
    std::vector<std::string> fields;
    if (close == std::string::npos) {
        return fields;
    }
    std::istringstream rest(text.substr(close + 1));
    for (std::string f; rest >> f;) {
        fields.push_back(f);
    }
    return fields;
}

double boot_time_seconds() {
    std::ifstream in("/proc/stat");
    for (std::string line; std::getline(in, line);) {
        if (line.rfind("btime ", 0) == 0) {
            return std::stod(line.substr(6));
        }
    }
    return 0;
}

std::size_t open_fds() {
    std::size_t n = 0;
    if (DIR* dir = ::opendir("/proc/self/fd")) {
        while (const dirent* e = ::readdir(dir)) {
            n += e->d_name[0] != '.' ? 1 : 0;
        }
        ::closedir(dir);
    }
    return n > 0 ? n - 1 : 0;  // the directory's own descriptor
}

}  // namespace

void append_process_metrics(std::string& out) {
    // Field numbers of proc(5), counted from 1 at the pid: state is 3, the first after ')'.
    const auto fields = self_stat_fields();
    const auto field = [&fields](std::size_t number) {
        return number - 3 < fields.size() ? std::stod(fields[number - 3]) : 0.0;
    };
    const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
    const double page = static_cast<double>(::sysconf(_SC_PAGESIZE));
    append_single(out, "process_cpu_seconds_total",
                  "Total user and system CPU time spent in seconds.", Type::Counter,
                  (field(14) + field(15)) / ticks);
    append_single(out, "process_resident_memory_bytes", "Resident memory size in bytes.",
                  Type::Gauge, field(24) * page);
    append_single(out, "process_virtual_memory_bytes", "Virtual memory size in bytes.", Type::Gauge,
                  field(23));
    append_single(out, "process_start_time_seconds",
                  "Start time of the process since unix epoch in seconds.", Type::Gauge,
                  boot_time_seconds() + field(22) / ticks);
    append_single(out, "process_open_fds", "Number of open file descriptors.", Type::Gauge,
                  static_cast<double>(open_fds()));
    rlimit limit{};
    if (::getrlimit(RLIMIT_NOFILE, &limit) == 0) {
        append_single(out, "process_max_fds", "Maximum number of open file descriptors.",
                      Type::Gauge, static_cast<double>(limit.rlim_cur));
    }
}

}  // namespace runbookd::metrics
