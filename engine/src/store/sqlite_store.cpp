#include <algorithm>
#include <array>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <mutex>
#include <thread>

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <sys/file.h>
#include <unistd.h>

#include <runbookd/store.hpp>

#include "common/json_text.hpp"
#include "common/log.hpp"
#include "common/trace.hpp"
#include "metrics/runbookd_metrics.hpp"
#include "store/audit.hpp"
#include "store/schema.hpp"
#include "store/sqlite.hpp"

namespace runbookd {
namespace {

using Json = nlohmann::json;
using sqlite::Database;
using sqlite::Statement;

constexpr std::size_t kMaxIdleReaders = 8;

// An episode's startsAt as an integer for exact comparison and ordering (text forms vary in
// their fractional digits).
std::int64_t episode_nanos(const Timestamp& t) {
    return t.seconds * 1'000'000'000 + t.nanos;
}

LabelSet labels_from_json(const std::string& text) {
    LabelSet out;
    const Json object = Json::parse(text, nullptr, false);
    if (object.is_object()) {
        for (const auto& [k, v] : object.items()) {
            if (v.is_string()) {
                out.emplace(k, v.get<std::string>());
            }
        }
    }
    return out;
}

Timestamp parse_stored_time(const std::string& text) {
    auto parsed = parse_rfc3339(text);
    return parsed ? *parsed : Timestamp{};
}

std::optional<Timestamp> parse_stored_time(const std::optional<std::string>& text) {
    if (!text) {
        return std::nullopt;
    }
    return parse_stored_time(*text);
}

// Steps `stmt` through every row it returns, calling `each` on it.
Status for_each_row(Statement& stmt, const std::function<void(const Statement&)>& each) {
    for (;;) {
        auto row = stmt.step();
        if (!row) {
            return row.error();
        }
        if (!*row) {
            return {};
        }
        each(stmt);
    }
}

std::string dump_json(const Json& j) {
    return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

// A delivery with every text column rendered, ready for the writer to bind.
struct DeliveryWrite {
    struct AlertText {
        std::string labels;
        std::string annotations;
        std::string starts_at;
        std::optional<std::string> ends_at;
    };
    std::shared_ptr<const DeliveryRecord> record;
    std::string received_at;
    std::int64_t received_ms = 0;
    std::string warnings_json;
    std::vector<std::string> warning_events;
    std::vector<AlertText> alerts;
    std::vector<std::string> run_events;
    // The delivery.received event's detail without the alert outcomes, which only the writer
    // knows: the opening (up to the alerts list) and each alert's entry without its closing
    // brace. received_detail() puts them together.
    std::string received_head;
    std::vector<std::string> received_alerts;
};

// An object rendered as JSON without its closing brace, so that fields can be appended.
std::string open_json_object(const Json& object) {
    std::string text = dump_json(object);
    text.pop_back();
    return text;
}

std::string received_detail(const DeliveryWrite& w, const std::vector<AlertOutcome>& outcomes) {
    std::string out = w.received_head;
    for (std::size_t i = 0; i < w.received_alerts.size(); ++i) {
        out += i == 0 ? "" : ",";
        out += w.received_alerts[i];
        out += R"(,"outcome":")";
        out += alert_outcome_name(outcomes[i]);
        out += "\"}";
    }
    out += "]}";
    return out;
}

DeliveryWrite prepare_delivery(std::shared_ptr<const DeliveryRecord> record) {
    DeliveryWrite w;
    const DeliveryRecord& r = *record;
    w.received_at = r.received_at.to_rfc3339_millis();
    w.received_ms = r.received_at.seconds * 1000 + r.received_at.nanos / 1'000'000;
    w.warnings_json = dump_json(Json(r.warnings));
    for (const auto& warning : r.warnings) {
        w.warning_events.push_back(dump_json(Json{{"warning", warning}}));
    }
    for (const auto& entry : r.alerts) {
        const Alert& a = entry.alert;
        std::optional<std::string> ends;
        if (a.ends_at) {
            ends = a.ends_at->to_rfc3339();
        }
        w.alerts.push_back({json_text::label_set(a.labels), json_text::label_set(a.annotations),
                            a.starts_at.to_rfc3339(), std::move(ends)});
        w.received_alerts.push_back(
            open_json_object(Json{{"fingerprint", a.fingerprint},
                                  {"status", alert_status_name(a.status)},
                                  {"startsAt", w.alerts.back().starts_at}}));
    }
    std::string head = open_json_object(
        Json{{"receiver", r.receiver}, {"status", r.status}, {"body_sha256", r.body_sha256}});
    w.received_head = head + R"(,"alerts":[)";
    for (const auto& run : r.runs) {
        w.run_events.push_back(dump_json(Json{{"runbook", run.runbook},
                                              {"trigger", "alert"},
                                              {"trace_id", trace::trace_id_of(run.traceparent)}}));
    }
    w.record = std::move(record);
    return w;
}

// NULL for an empty text: a column that is unknown rather than empty.
std::optional<std::string> null_if_empty(const std::string& text) {
    return text.empty() ? std::nullopt : std::optional<std::string>(text);
}

std::string attempt_end_detail(const AttemptEnd& e) {
    Json detail = {{"succeeded", e.succeeded}, {"duration_ms", e.duration_ms}};
    if (e.exit_code) {
        detail["exit_code"] = *e.exit_code;
    }
    if (e.signal) {
        detail["signal"] = *e.signal;
    }
    if (e.timed_out) {
        detail["timed_out"] = true;
    }
    if (e.cancelled) {
        detail["cancelled"] = true;
    }
    if (e.outcome_unknown) {
        detail["outcome_unknown"] = true;
    }
    if (!e.error.empty()) {
        detail["error"] = e.error;
    }
    if (!e.output_path.empty()) {
        detail["output_path"] = e.output_path;
    }
    return dump_json(detail);
}

// The events an attempt's transitions become: (at, kind, detail JSON).
struct TransitionText {
    std::string at, kind, detail;
};

std::vector<TransitionText> transition_texts(const AttemptEnd& e) {
    std::vector<TransitionText> out;
    for (const auto& t : e.transitions) {
        out.push_back({t.at.to_rfc3339_millis(), "attempt." + t.kind,
                       t.structured ? t.detail : dump_json(Json{{"detail", t.detail}})});
    }
    return out;
}

// A run's progress with every text column rendered, ready for the writer to bind.
struct ProgressWrite {
    RunProgress progress;
    std::string started_at;
    std::string resumed_at, resumed_detail;
    std::string cancel_at, cancel_detail;
    std::string waiting_at, waiting_detail;
    std::string ended_at, ended_detail;
    std::vector<TransitionText> ended_transitions;
    std::string next_argv, next_started_at, next_detail;
    std::string next_end_at, next_end_detail;
    std::vector<TransitionText> next_end_transitions;
    std::string finished_at, finished_detail;
    std::string approval_approvers, approval_requested_at, approval_deadline, approval_reason,
        approval_detail;
    std::string decided_at, decided_detail;
    std::string planned_at;
};

void prepare_approval_request(const ApprovalRecord& a, ProgressWrite& w) {
    w.approval_approvers = dump_json(Json(a.approvers));
    w.approval_requested_at = a.requested_at.to_rfc3339_millis();
    w.approval_deadline = a.deadline.to_rfc3339_millis();
    w.approval_reason = fmt::format(
        "waiting for approval of step \"{}\" ({}) until {}", a.step,
        a.approvers.empty() ? std::string("anyone may approve")
                            : fmt::format("approvers: {}", fmt::join(a.approvers, ", ")),
        w.approval_deadline);
    w.approval_detail = dump_json(Json{{"step", a.step},
                                       {"step_index", a.step_index},
                                       {"approvers", a.approvers},
                                       {"message", a.message},
                                       {"deadline", w.approval_deadline},
                                       {"on_timeout", a.approve_on_timeout ? "approve" : "deny"}});
}

ProgressWrite prepare_progress(RunProgress p) {
    ProgressWrite w;
    if (p.waiting) {
        w.waiting_at = Timestamp::now().to_rfc3339_millis();
        w.waiting_detail = dump_json(Json{{"reason", *p.waiting}});
    }
    if (p.started) {
        w.started_at = p.started->to_rfc3339_millis();
    }
    if (p.cancel_requested) {
        w.cancel_at = Timestamp::now().to_rfc3339_millis();
        w.cancel_detail = dump_json(
            Json{{"actor", p.cancel_requested->actor}, {"reason", p.cancel_requested->reason}});
    }
    if (p.resumed) {
        w.resumed_at = Timestamp::now().to_rfc3339_millis();
        w.resumed_detail = dump_json(Json{{"detail", *p.resumed}});
    }
    if (p.ended) {
        w.ended_at = p.ended->second.finished_at.to_rfc3339_millis();
        w.ended_detail = attempt_end_detail(p.ended->second);
        w.ended_transitions = transition_texts(p.ended->second);
    }
    if (p.next) {
        w.next_argv = dump_json(Json(p.next->argv));
        w.next_started_at = p.next->started_at.to_rfc3339_millis();
        w.next_detail = dump_json(Json{{"step", p.next->step}, {"attempt", p.next->attempt}});
    }
    if (p.next_end) {
        w.next_end_at = p.next_end->finished_at.to_rfc3339_millis();
        w.next_end_detail = attempt_end_detail(*p.next_end);
        w.next_end_transitions = transition_texts(*p.next_end);
    }
    if (p.approval_requested) {
        prepare_approval_request(*p.approval_requested, w);
    }
    if (p.approval_decided) {
        const auto& d = *p.approval_decided;
        w.decided_at = d.at.to_rfc3339_millis();
        w.decided_detail = dump_json(Json{{"step", d.step},
                                          {"step_index", d.step_index},
                                          {"actor", d.actor},
                                          {"comment", d.comment}});
    }
    if (p.planned) {
        w.planned_at = Timestamp::now().to_rfc3339_millis();
    }
    if (p.finished) {
        w.finished_at = p.finished->at.to_rfc3339_millis();
        Json detail{{"state", run_state_name(p.finished->state)}, {"reason", p.finished->reason}};
        if (!p.finished->cancelled_by.empty()) {
            detail["cancelled_by"] = p.finished->cancelled_by;
        }
        w.finished_detail = dump_json(detail);
    }
    w.progress = std::move(p);
    return w;
}

// A manual run with its text columns rendered, ready for the writer to bind.
struct ManualRunWrite {
    std::shared_ptr<const ManualRunRequest> request;
    std::string at;
    std::string labels;
    std::string params;
    std::string detail;  // of run.requested
};

ManualRunWrite prepare_manual_run(std::shared_ptr<const ManualRunRequest> request) {
    ManualRunWrite w;
    const ManualRunRequest& r = *request;
    w.at = r.requested_at.to_rfc3339_millis();
    w.labels = json_text::label_set(r.labels);
    w.params = json_text::label_set(r.params);
    Json detail{{"runbook", r.runbook}, {"runbook_hash", r.runbook_hash},
                {"actor", r.actor},     {"reason", r.reason},
                {"labels", r.labels},   {"params", r.params},
                {"dry_run", r.dry_run}, {"trace_id", trace::trace_id_of(r.traceparent)}};
    if (!r.idempotency_key.empty()) {
        detail["idempotency_key"] = r.idempotency_key;
    }
    w.detail = dump_json(detail);
    w.request = std::move(request);
    return w;
}

// Exclusive ownership of a database file by one runbookd: a second daemon on the same file
// would recover the first one's runs as interrupted and run its queued runs a second time.
// flock() on "<db>.lock", held for the life of the store and released by the kernel when the
// process dies, so a crash never leaves a stale lock behind.
class OwnerLock {
  public:
    OwnerLock() = default;
    OwnerLock(const OwnerLock&) = delete;
    OwnerLock& operator=(const OwnerLock&) = delete;
    OwnerLock(OwnerLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
    ~OwnerLock() {
        if (fd_ >= 0) {
            ::close(fd_);
        }
    }

    static Result<OwnerLock> acquire(const std::string& db_path) {
        // Named after the file the path leads to, so that a symlink to the database (or a
        // relative path) takes the same lock. A hard link would not: see docs/limitations.md.
        std::error_code ec;
        auto real = std::filesystem::weakly_canonical(std::filesystem::absolute(db_path, ec), ec);
        const std::string path = (ec ? db_path : real.string()) + ".lock";
        OwnerLock lock;
        lock.fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
        if (lock.fd_ < 0) {
            return make_error(ErrorCode::Unavailable,
                              fmt::format("opening database {} failed: cannot create lock file "
                                          "{}: {}",
                                          db_path, path, std::strerror(errno)));
        }
        if (::flock(lock.fd_, LOCK_EX | LOCK_NB) != 0) {
            std::array<char, 32> pid{};
            const ssize_t n = ::pread(lock.fd_, pid.data(), pid.size() - 1, 0);
            const std::string holder = n > 0 ? std::string(pid.data(), static_cast<std::size_t>(n))
                                             : std::string("unknown");
            return make_error(ErrorCode::Unavailable,
                              fmt::format("opening database {} failed: it is in use by another "
                                          "runbookd (pid {}, lock {}); two daemons on one "
                                          "database would run the same runs twice",
                                          db_path, holder, path));
        }
        const std::string pid = std::to_string(::getpid());
        if (::ftruncate(lock.fd_, 0) != 0 ||
            ::pwrite(lock.fd_, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
            // The lock holds without the pid in it; the pid only helps people.
        }
        return lock;
    }

  private:
    int fd_ = -1;
};

// The writer's prepared statements, compiled once: the delivery path runs them thousands of
// times a second.
struct WriterStatements {
    Statement begin, commit, rollback, savepoint, release, rollback_to;
    Statement insert_delivery, insert_alert, insert_run, insert_event;
    Statement find_episode, insert_episode, last_run_for_key, runs_for_key_since;
    Statement resolve_episode, open_episode_for_key, insert_resolved, find_resolved;
    Statement wait_run, cancel_requested, start_run, insert_attempt, end_attempt, finish_run,
        fail_open_attempts;
    Statement attempt_spawned;
    Statement request_approval, pause_run, decide_approval, unpause_run, cancel_open_approvals;
    Statement insert_manual_run, find_idempotency_key;
    Statement plan_savepoint, plan_rollback, plan_release;
};

// What the writer thread executes: `apply` inside the shared transaction, `finish` after the
// commit (or failure) with the final status.
struct PendingWrite {
    std::function<Status()> apply;
    std::function<void(Status)> finish;
    std::chrono::steady_clock::time_point queued_at{};
};

// Deliveries have a caller waiting on the other end (Alertmanager, with its own timeout and
// retries); run progress only paces the next step of a run. Under load the writer therefore
// commits waiting deliveries first, and takes run progress along once it has waited this
// long, or whenever no delivery is waiting.
constexpr std::chrono::milliseconds kProgressMaxDelay{20};

class SqliteStore final : public Store {
  public:
    SqliteStore(SqliteOptions options, OwnerLock lock, Database writer)
        : options_(std::move(options)),
          lock_(std::move(lock)),
          writer_db_(std::move(writer)),
          log_(log::get("store")) {}

    ~SqliteStore() override { close(); }

    Status prepare_writer();
    void start() {
        thread_ = std::thread([this] { writer_loop(); });
    }

    Status record_runbooks(const std::vector<std::shared_ptr<const Runbook>>& runbooks) override;
    Result<std::string> runbook_source(const std::string& content_hash) override;

    void record_event(std::string kind, std::string detail,
                      std::function<void(Status)> done) override;
    void record_delivery(std::shared_ptr<const DeliveryRecord> record,
                         Completion<DeliveryReceipt> done) override;
    void record_progress(RunProgress progress, Completion<AttemptId> done) override;
    void record_manual_run(std::shared_ptr<const ManualRunRequest> request,
                           Completion<ManualRunReceipt> done) override;
    void plan_delivery(std::shared_ptr<const DeliveryRecord> record,
                       Completion<DeliveryReceipt> done) override;

    Result<RunContext> load_run(RunId run) override;
    Result<std::vector<RunSummary>> list_runs(const RunFilter& filter) override;
    Result<RunDetail> get_run(RunId run) override;
    Result<std::vector<RunId>> runs_in_state(RunState state) override;
    Result<std::vector<ApprovalRecord>> approvals_of(RunId run) override;

    void close() override;

  private:
    class Reader;

    void submit(std::deque<PendingWrite>& queue, PendingWrite write);
    // Submits `write` with the waiting deliveries (someone waits for the answer): `apply` fills
    // a fresh result each time it runs, and `done` gets it once committed.
    template <typename Write, typename T>
    void submit_for(std::shared_ptr<Write> write, Status (SqliteStore::*apply)(const Write&, T&),
                    Completion<T> done) {
        auto result = std::make_shared<T>();
        submit(deliveries_, PendingWrite{[this, write, result, apply] {
                                             *result = T{};
                                             return (this->*apply)(*write, *result);
                                         },
                                         [result, done = std::move(done)](Status s) {
                                             if (!s) {
                                                 done(s.error());
                                                 return;
                                             }
                                             done(std::move(*result));
                                         }});
    }
    void take(std::deque<PendingWrite>& queue, std::vector<PendingWrite>& batch) const;
    void writer_loop();
    void commit_batch(std::vector<PendingWrite>& batch);
    Status apply_isolated(std::vector<PendingWrite>& batch, std::vector<Status>& results);
    Status insert_event(std::string_view kind, std::string_view at,
                        std::optional<std::int64_t> delivery, std::optional<std::int64_t> run,
                        std::optional<std::int64_t> attempt, std::string_view detail);
    Status try_insert_event(std::string_view kind, std::string_view at,
                            std::optional<std::int64_t> delivery, std::optional<std::int64_t> run,
                            std::optional<std::int64_t> attempt, std::string_view detail);
    Status apply_delivery(const DeliveryWrite& write, DeliveryReceipt& receipt);
    Status decide_runs(const DeliveryWrite& write, DeliveryReceipt& receipt);
    Status check_suppression(const DeliveryWrite& write, std::size_t run, DeliveryReceipt& receipt);
    Status apply_resolutions(const DeliveryWrite& write, DeliveryReceipt& receipt);
    Status check_resolved(const DeliveryWrite& write, std::size_t run, DeliveryReceipt& receipt);
    Status apply_progress(const ProgressWrite& write, AttemptId& next_id);
    Status apply_manual_run(const ManualRunWrite& write, ManualRunReceipt& receipt);
    Status apply_plan(const DeliveryWrite& write, DeliveryReceipt& receipt);
    Status end_attempt(RunId run, AttemptId attempt, const AttemptEnd& end, const std::string& at,
                       const std::string& detail, const std::vector<TransitionText>& transitions);
    Status update_one(Statement& stmt, std::string_view what);
    Status request_approval(RunId run, const ProgressWrite& write);
    Status decide_approval(RunId run, const ProgressWrite& write);
    Status cancel_open_approvals(RunId run, const ProgressWrite& write);

    Result<Database> acquire_reader();
    void release_reader(Database db);
    std::vector<AttemptRecord> read_attempts(Database& db, RunId run, Status& status);
    std::vector<ApprovalRecord> read_approvals(Database& db, RunId run, Status& status);

    SqliteOptions options_;
    OwnerLock lock_;
    Database writer_db_;
    WriterStatements ws_;
    // The last event of the audit chain, as committed or as applied in the open transaction.
    // Writer thread only; rolled back with every rollback (see commit_batch).
    audit::ChainHead head_;
    std::shared_ptr<spdlog::logger> log_;

    std::mutex mutex_;
    std::condition_variable cv_;
    std::deque<PendingWrite> deliveries_;  // see kProgressMaxDelay
    std::deque<PendingWrite> progress_;
    bool closing_ = false;
    std::mutex join_mutex_;
    std::thread thread_;

    std::mutex readers_mutex_;
    std::vector<Database> readers_;
};

// Borrows a read connection for the length of one read.
class SqliteStore::Reader {
  public:
    explicit Reader(SqliteStore& store) : store_(store), db_(store.acquire_reader()) {}
    ~Reader() {
        if (db_) {
            store_.release_reader(std::move(*db_));
        }
    }
    Reader(const Reader&) = delete;
    Reader& operator=(const Reader&) = delete;

    bool ok() const { return db_.ok(); }
    const Error& error() const { return db_.error(); }
    Database& db() { return *db_; }

  private:
    SqliteStore& store_;
    Result<Database> db_;
};

Status apply_pragmas(Database& db, bool synchronous_full) {
    if (auto s = db.exec("PRAGMA journal_mode=WAL; PRAGMA foreign_keys=ON;"); !s) {
        return s;
    }
    return db.exec(synchronous_full ? "PRAGMA synchronous=FULL;" : "PRAGMA synchronous=NORMAL;");
}

// After a table rebuild: every reference still points at a row.
Status check_foreign_keys(Database& db) {
    auto check = Statement::prepare(db, "PRAGMA foreign_key_check");
    if (!check) {
        return check.error();
    }
    auto row = check->step();
    if (!row) {
        return row.error();
    }
    if (*row) {
        return make_error(
            ErrorCode::Internal,
            fmt::format("table {} row {} refers to a missing row of {}", check->column_text(0),
                        check->column_int(1), check->column_text(2)));
    }
    return {};
}

Status migrate(Database& db, std::shared_ptr<spdlog::logger> log) {
    if (auto s = db.exec("CREATE TABLE IF NOT EXISTS schema_migrations ("
                         " version INTEGER PRIMARY KEY, description TEXT NOT NULL,"
                         " applied_at TEXT NOT NULL) STRICT;");
        !s) {
        return s;
    }
    auto current_stmt = Statement::prepare(db,
                                           "SELECT coalesce(max(version), 0) FROM "
                                           "schema_migrations");
    if (!current_stmt) {
        return current_stmt.error();
    }
    auto row = current_stmt->step();
    if (!row) {
        return row.error();
    }
    const auto current = current_stmt->column_int(0);
    current_stmt->reset();  // an open statement would keep DROP TABLE from running
    const auto& all = schema::migrations();
    const int latest = all.back().version;
    if (current > latest) {
        return make_error(ErrorCode::Internal,
                          fmt::format("opening database failed: its schema version {} is newer "
                                      "than this runbookd knows ({}); use a newer runbookd",
                                      current, latest));
    }
    for (const auto& m : all) {
        if (m.version <= current) {
            continue;
        }
        // PRAGMA foreign_keys has no effect inside a transaction.
        if (m.rebuilds_tables) {
            if (auto s = db.exec("PRAGMA foreign_keys=OFF"); !s) {
                return s;
            }
        }
        if (auto s = db.exec("BEGIN IMMEDIATE"); !s) {
            return s;
        }
        Status s = db.exec(m.sql);
        if (s && m.backfill != nullptr) {
            s = m.backfill(db);
        }
        if (s && !m.after_sql.empty()) {
            s = db.exec(m.after_sql);
        }
        if (s && m.rebuilds_tables) {
            s = check_foreign_keys(db);
        }
        if (s) {
            auto insert = Statement::prepare(
                db,
                "INSERT INTO schema_migrations (version, description, applied_at) "
                "VALUES (?, ?, ?)");
            if (!insert) {
                s = insert.error();
            } else {
                s = insert->bind(1, std::int64_t{m.version})
                        .bind(2, m.description)
                        .bind(3, std::string_view(Timestamp::now().to_rfc3339_millis()))
                        .run();
            }
        }
        if (!s) {
            (void)db.exec("ROLLBACK");
            return make_error(s.error().code, fmt::format("migrating database to version {} "
                                                          "failed: {}",
                                                          m.version, s.error().message));
        }
        if (auto c = db.exec("COMMIT"); !c) {
            return c;
        }
        if (m.rebuilds_tables) {
            if (auto on = db.exec("PRAGMA foreign_keys=ON"); !on) {
                return on;
            }
        }
        log->info("schema migrated version={} description={}", m.version,
                  log::quote(m.description));
    }
    return {};
}

Status SqliteStore::prepare_writer() {
    struct Entry {
        Statement* target;
        const char* sql;
    };
    const Entry entries[] = {
        {&ws_.begin, "BEGIN IMMEDIATE"},
        {&ws_.commit, "COMMIT"},
        {&ws_.rollback, "ROLLBACK"},
        {&ws_.savepoint, "SAVEPOINT write"},
        {&ws_.release, "RELEASE write"},
        {&ws_.rollback_to, "ROLLBACK TO write"},
        {&ws_.insert_delivery,
         "INSERT INTO deliveries (received_at, source, remote_addr, user_agent, receiver, "
         "group_key, status, external_url, body_bytes, body_sha256, alert_count, "
         "truncated_alerts, warnings, traceparent) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"},
        {&ws_.insert_alert,
         "INSERT INTO alerts (delivery_id, position, fingerprint, status, starts_at, ends_at, "
         "labels, annotations, generator_url, outcome, outcome_detail) "
         "VALUES (?,?,?,?,?,?,?,?,?,?,?)"},
        {&ws_.insert_run,
         "INSERT INTO runs (runbook, runbook_hash, trigger, alert_id, actor, state, reason, "
         "created_at, traceparent) VALUES (?, ?, 'alert', ?, 'alertmanager', 'queued', '', ?, ?)"},
        {&ws_.plan_savepoint, "SAVEPOINT plan"},
        {&ws_.plan_rollback, "ROLLBACK TO plan"},
        {&ws_.plan_release, "RELEASE plan"},
        {&ws_.insert_manual_run,
         "INSERT INTO runs (runbook, runbook_hash, trigger, alert_id, actor, state, reason, "
         "created_at, labels, params, dry_run, request_reason, idempotency_key, request_sha256, "
         "traceparent) VALUES (?, ?, 'manual', NULL, ?, 'queued', '', ?, ?, ?, ?, ?, ?, ?, ?)"},
        {&ws_.find_idempotency_key,
         "SELECT id, coalesce(request_sha256, '') FROM runs WHERE idempotency_key = ?"},
        {&ws_.find_episode,
         "SELECT run_id, starts_at_ns, starts_at FROM episodes WHERE runbook = ? AND "
         "fingerprint = ? AND status = ? AND starts_at_ns >= ? ORDER BY starts_at_ns DESC "
         "LIMIT 1"},
        {&ws_.insert_episode,
         "INSERT INTO episodes (runbook, fingerprint, status, starts_at_ns, starts_at, run_id, "
         "dedup_key, created_ms) VALUES (?,?,?,?,?,?,?,?)"},
        {&ws_.last_run_for_key,
         "SELECT created_ms, run_id FROM episodes WHERE runbook = ? AND dedup_key = ? "
         "ORDER BY created_ms DESC LIMIT 1"},
        {&ws_.runs_for_key_since,
         "SELECT count(*) FROM episodes WHERE runbook = ? AND dedup_key = ? AND created_ms > ?"},
        {&ws_.resolve_episode,
         "UPDATE episodes SET resolved_ms = ? WHERE runbook = ? AND fingerprint = ? AND "
         "status = 'firing' AND starts_at_ns = ? AND resolved_ms IS NULL RETURNING run_id"},
        {&ws_.insert_resolved,
         "INSERT OR IGNORE INTO resolved_alerts (fingerprint, starts_at_ns, resolved_ms) "
         "VALUES (?, ?, ?)"},
        {&ws_.find_resolved,
         "SELECT resolved_ms FROM resolved_alerts WHERE fingerprint = ? AND starts_at_ns = ?"},
        {&ws_.open_episode_for_key,
         "SELECT run_id, starts_at FROM episodes WHERE runbook = ? AND dedup_key = ? AND "
         "status = 'firing' AND resolved_ms IS NULL LIMIT 1"},
        {&ws_.insert_event,
         "INSERT INTO events (id, at, kind, delivery_id, run_id, attempt_id, detail, prev_hash, "
         "hash) VALUES (?,?,?,?,?,?,?,?,?)"},
        {&ws_.wait_run, "UPDATE runs SET reason = ? WHERE id = ? AND state = 'queued'"},
        {&ws_.cancel_requested,
         "UPDATE runs SET cancelled_by = ?, reason = ? WHERE id = ? AND "
         "state IN ('running', 'waiting_approval')"},
        {&ws_.request_approval,
         "INSERT INTO approvals (run_id, step_index, step, approvers, message, on_timeout, "
         "requested_at, deadline, state) VALUES (?,?,?,?,?,?,?,?,'pending')"},
        {&ws_.pause_run,
         "UPDATE runs SET state = 'waiting_approval', reason = ? WHERE id = ? AND "
         "state = 'running'"},
        {&ws_.decide_approval,
         "UPDATE approvals SET state = ?, decided_by = ?, decided_at = ?, comment = ? "
         "WHERE run_id = ? AND step_index = ? AND state = 'pending'"},
        {&ws_.unpause_run,
         "UPDATE runs SET state = 'running', reason = '' WHERE id = ? AND "
         "state = 'waiting_approval'"},
        {&ws_.cancel_open_approvals,
         "UPDATE approvals SET state = 'cancelled', decided_at = ?, comment = ? "
         "WHERE run_id = ? AND state = 'pending' RETURNING step, step_index"},
        {&ws_.attempt_spawned,
         "UPDATE attempts SET pid = ?, pid_start_ticks = ? "
         "WHERE id = ? AND run_id = ? AND state = 'running'"},
        {&ws_.start_run,
         "UPDATE runs SET state = 'running', reason = '', started_at = ? "
         "WHERE id = ? AND state = 'queued'"},
        {&ws_.insert_attempt,
         "INSERT INTO attempts (run_id, step, step_index, attempt, kind, argv, cwd, state, "
         "error, started_at) VALUES (?,?,?,?,?,?,?,'running','',?)"},
        {&ws_.end_attempt,
         "UPDATE attempts SET state = ?, exit_code = ?, signal = ?, error = ?, finished_at = ?, "
         "duration_ms = ?, stdout_bytes = ?, stderr_bytes = ?, stdout_excerpt = ?, "
         "stderr_excerpt = ?, output_path = ?, output_bytes = ?, output_truncated = ?, "
         "outputs = ? WHERE id = ? AND run_id = ? AND state = 'running'"},
        {&ws_.fail_open_attempts,
         "UPDATE attempts SET state = 'failed', error = ?, finished_at = ? "
         "WHERE run_id = ? AND state = 'running'"},
        {&ws_.finish_run,
         "UPDATE runs SET state = ?, reason = ?, finished_at = ?, cancelled_by = ? "
         "WHERE id = ? AND state IN ('queued', 'running', 'waiting_approval')"},
    };
    for (const auto& e : entries) {
        auto stmt = Statement::prepare(writer_db_, e.sql);
        if (!stmt) {
            return stmt.error();
        }
        *e.target = std::move(*stmt);
    }
    auto head = audit::load_head(writer_db_);
    if (!head) {
        return head.error();
    }
    head_ = std::move(*head);
    return {};
}

void SqliteStore::submit(std::deque<PendingWrite>& queue, PendingWrite write) {
    {
        std::lock_guard lock(mutex_);
        if (!closing_) {
            write.queued_at = std::chrono::steady_clock::now();
            queue.push_back(std::move(write));
            cv_.notify_one();
            return;
        }
    }
    write.finish(make_error(ErrorCode::Unavailable, "writing to the store failed: it is closed"));
}

void SqliteStore::writer_loop() {
    std::vector<PendingWrite> batch;
    for (;;) {
        {
            std::unique_lock lock(mutex_);
            cv_.wait(lock,
                     [this] { return !deliveries_.empty() || !progress_.empty() || closing_; });
            if (deliveries_.empty() && progress_.empty()) {
                return;
            }
            take(deliveries_, batch);
            const auto now = std::chrono::steady_clock::now();
            if (batch.empty() ||
                (!progress_.empty() && now - progress_.front().queued_at >= kProgressMaxDelay)) {
                take(progress_, batch);
            }
        }
        commit_batch(batch);
        batch.clear();
    }
}

void SqliteStore::take(std::deque<PendingWrite>& queue, std::vector<PendingWrite>& batch) const {
    while (!queue.empty() && batch.size() < options_.max_batch) {
        batch.push_back(std::move(queue.front()));
        queue.pop_front();
    }
}

// Commits the batch in one transaction: one fsync for many writes. The fast path applies the
// writes one after another; if one of them fails, the transaction is rolled back and the batch
// applied again with a savepoint around each write, so that the failing write is the only one
// that fails. Writes rebuild their results from scratch, so applying one twice is safe. The
// audit chain head goes back with every rollback: the events it counted are gone.
void SqliteStore::commit_batch(std::vector<PendingWrite>& batch) {
    const auto started = std::chrono::steady_clock::now();
    std::vector<Status> results(batch.size());
    const audit::ChainHead committed_head = head_;
    Status tx = ws_.begin.run();
    bool all_applied = true;
    if (tx) {
        for (std::size_t i = 0; i < batch.size() && all_applied; ++i) {
            results[i] = batch[i].apply();
            all_applied = results[i].ok();
        }
        if (!all_applied) {
            (void)ws_.rollback.run();
            head_ = committed_head;
            tx = apply_isolated(batch, results);
        }
    }
    if (tx) {
        tx = ws_.commit.run();
        if (!tx) {
            (void)ws_.rollback.run();
        }
    }
    if (!tx) {
        head_ = committed_head;
    }
    if (!tx) {
        log_->warn("commit failed writes={} error={}", batch.size(),
                   log::quote(tx.error().message));
    }
    const auto failed =
        tx ? static_cast<std::size_t>(std::count_if(results.begin(), results.end(),
                                                    [](const Status& r) { return !r.ok(); }))
           : batch.size();
    metrics::runbookd_metrics().store_commit(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count(), tx.ok(),
        failed);
    for (std::size_t i = 0; i < batch.size(); ++i) {
        batch[i].finish(tx ? results[i] : tx);
    }
}

// The slow path of commit_batch(): a new transaction with each write in its own savepoint.
Status SqliteStore::apply_isolated(std::vector<PendingWrite>& batch, std::vector<Status>& results) {
    if (auto s = ws_.begin.run(); !s) {
        return s;
    }
    for (std::size_t i = 0; i < batch.size(); ++i) {
        if (auto s = ws_.savepoint.run(); !s) {
            results[i] = s;
            continue;
        }
        const audit::ChainHead before = head_;
        results[i] = batch[i].apply();
        if (!results[i]) {
            (void)ws_.rollback_to.run();
            head_ = before;
        }
        (void)ws_.release.run();
    }
    return {};
}

void SqliteStore::close() {
    {
        std::lock_guard lock(mutex_);
        closing_ = true;
        cv_.notify_all();
    }
    std::lock_guard join_lock(join_mutex_);
    if (thread_.joinable()) {
        thread_.join();
    }
}

Status SqliteStore::insert_event(std::string_view kind, std::string_view at,
                                 std::optional<std::int64_t> delivery,
                                 std::optional<std::int64_t> run,
                                 std::optional<std::int64_t> attempt, std::string_view detail) {
    // The id is chosen here, not by SQLite, because the hash covers it; consecutive ids make a
    // deleted event show as a gap.
    Status s = try_insert_event(kind, at, delivery, run, attempt, detail);
    if (!s && sqlite3_extended_errcode(writer_db_.handle()) == SQLITE_CONSTRAINT_PRIMARYKEY) {
        // Someone else appended an event (only runbookd should): the head kept in memory is
        // stale. Chain on from the newest event in the file, so the writer does not fail
        // every write until a restart; audit verify judges the foreign event.
        auto head = audit::load_head(writer_db_);
        if (!head) {
            return head.error();
        }
        log_->error(
            "an event was appended to the audit trail outside runbookd; chaining on "
            "from it head_id={}",
            head->id);
        head_ = std::move(*head);
        s = try_insert_event(kind, at, delivery, run, attempt, detail);
    }
    return s;
}

Status SqliteStore::try_insert_event(std::string_view kind, std::string_view at,
                                     std::optional<std::int64_t> delivery,
                                     std::optional<std::int64_t> run,
                                     std::optional<std::int64_t> attempt, std::string_view detail) {
    const std::int64_t id = head_.id + 1;
    std::string hash =
        audit::event_hash({id, at, kind, delivery, run, attempt, detail, head_.hash});
    Status s = ws_.insert_event.bind(1, id)
                   .bind(2, at)
                   .bind(3, kind)
                   .bind(4, delivery)
                   .bind(5, run)
                   .bind(6, attempt)
                   .bind(7, detail)
                   .bind(8, std::string_view(head_.hash))
                   .bind(9, std::string_view(hash))
                   .run();
    if (s) {
        head_ = {id, std::move(hash)};
    }
    return s;
}

Status SqliteStore::update_one(Statement& stmt, std::string_view what) {
    if (auto s = stmt.run(); !s) {
        return s;
    }
    if (sqlite3_changes(writer_db_.handle()) != 1) {
        return make_error(ErrorCode::InvalidArgument,
                          fmt::format("{} failed: no row in the expected state", what));
    }
    return {};
}

Status SqliteStore::apply_delivery(const DeliveryWrite& w, DeliveryReceipt& receipt) {
    const DeliveryRecord& r = *w.record;
    Status s = ws_.insert_delivery.bind(1, std::string_view(w.received_at))
                   .bind(2, std::string_view(r.source))
                   .bind(3, std::string_view(r.remote_addr))
                   .bind(4, std::string_view(r.user_agent))
                   .bind(5, std::string_view(r.receiver))
                   .bind(6, std::string_view(r.group_key))
                   .bind(7, std::string_view(r.status))
                   .bind(8, std::string_view(r.external_url))
                   .bind(9, static_cast<std::int64_t>(r.body_bytes))
                   .bind(10, std::string_view(r.body_sha256))
                   .bind(11, static_cast<std::int64_t>(r.alerts.size()))
                   .bind(12, r.truncated_alerts)
                   .bind(13, std::string_view(w.warnings_json))
                   .bind(14, null_if_empty(r.traceparent))
                   .run();
    if (!s) {
        return s;
    }
    receipt.delivery_id = writer_db_.last_insert_id();
    // Before the decisions: a notification that resolves one alert of a key and fires another
    // starts the new one's once_until_resolved runbook.
    if (s = apply_resolutions(w, receipt); !s) {
        return s;
    }
    if (s = decide_runs(w, receipt); !s) {
        return s;
    }
    if (s = insert_event("delivery.received", w.received_at, receipt.delivery_id, std::nullopt,
                         std::nullopt, received_detail(w, receipt.alert_outcomes));
        !s) {
        return s;
    }
    for (const auto& detail : w.warning_events) {
        if (s = insert_event("delivery.warning", w.received_at, receipt.delivery_id, std::nullopt,
                             std::nullopt, detail);
            !s) {
            return s;
        }
    }

    for (std::size_t i = 0; i < r.alerts.size(); ++i) {
        const auto& entry = r.alerts[i];
        const auto& text = w.alerts[i];
        s = ws_.insert_alert.bind(1, receipt.delivery_id)
                .bind(2, static_cast<std::int64_t>(i))
                .bind(3, std::string_view(entry.alert.fingerprint))
                .bind(4, std::string_view(alert_status_name(entry.alert.status)))
                .bind(5, std::string_view(text.starts_at))
                .bind(6, text.ends_at)
                .bind(7, std::string_view(text.labels))
                .bind(8, std::string_view(text.annotations))
                .bind(9, std::string_view(entry.alert.generator_url))
                .bind(10, std::string_view(alert_outcome_name(receipt.alert_outcomes[i])))
                .bind(11, std::string_view(receipt.alert_details[i]))
                .run();
        if (!s) {
            return s;
        }
        receipt.alert_ids.push_back(writer_db_.last_insert_id());
    }

    for (std::size_t i = 0; i < r.runs.size(); ++i) {
        const auto& run = r.runs[i];
        if (receipt.skipped[i].skipped()) {
            continue;
        }
        s = ws_.insert_run.bind(1, std::string_view(run.runbook))
                .bind(2, std::string_view(run.runbook_hash))
                .bind(3, receipt.alert_ids.at(run.alert_index))
                .bind(4, std::string_view(w.received_at))
                .bind(5, null_if_empty(run.traceparent))
                .run();
        if (!s) {
            return s;
        }
        const RunId id = writer_db_.last_insert_id();
        receipt.run_ids[i] = id;
        const Alert& alert = r.alerts[run.alert_index].alert;
        s = ws_.insert_episode.bind(1, std::string_view(run.runbook))
                .bind(2, std::string_view(alert.fingerprint))
                .bind(3, std::string_view(alert_status_name(alert.status)))
                .bind(4, episode_nanos(alert.starts_at))
                .bind(5, std::string_view(w.alerts[run.alert_index].starts_at))
                .bind(6, id)
                .bind(7, std::string_view(run.dedup_key))
                .bind(8, w.received_ms)
                .run();
        if (!s) {
            return s;
        }
        if (s = insert_event("run.queued", w.received_at, receipt.delivery_id, id, std::nullopt,
                             w.run_events[i]);
            !s) {
            return s;
        }
    }
    return {};
}

// Decides, before anything of the delivery is inserted, which of its run requests start a run:
// not those whose episode already ran the runbook (in an earlier delivery, or earlier in this
// one), nor those older than an episode of the same alert that already did. Fills the
// receipt's run_ids (0 for now), skipped reasons and final alert outcomes.
Status SqliteStore::decide_runs(const DeliveryWrite& w, DeliveryReceipt& receipt) {
    const DeliveryRecord& r = *w.record;
    receipt.run_ids.assign(r.runs.size(), 0);
    receipt.skipped.assign(r.runs.size(), DeliveryReceipt::Skip{});
    receipt.alert_outcomes.clear();
    receipt.alert_details.clear();
    for (const auto& entry : r.alerts) {
        receipt.alert_outcomes.push_back(entry.outcome);
        receipt.alert_details.push_back(entry.outcome_detail);
    }
    for (std::size_t i = 0; i < r.runs.size(); ++i) {
        const auto& run = r.runs[i];
        const Alert& alert = r.alerts[run.alert_index].alert;
        const std::string_view status = alert_status_name(alert.status);
        const std::int64_t nanos = episode_nanos(alert.starts_at);
        // Earlier in this delivery: an alert listed twice.
        for (std::size_t j = 0; j < i && !receipt.skipped[i].skipped(); ++j) {
            const Alert& other = r.alerts[r.runs[j].alert_index].alert;
            if (r.runs[j].runbook == run.runbook && other.fingerprint == alert.fingerprint &&
                other.status == alert.status && other.starts_at > alert.starts_at &&
                !receipt.skipped[j].skipped()) {
                receipt.skipped[i] = {
                    AlertOutcome::Duplicate,
                    fmt::format("stale: a later episode of this alert is in this notification; "
                                "runbook {} runs for that one",
                                run.runbook)};
            } else if (r.runs[j].runbook == run.runbook && other.fingerprint == alert.fingerprint &&
                       other.status == alert.status && other.starts_at == alert.starts_at) {
                receipt.skipped[i] = {AlertOutcome::Duplicate,
                                      fmt::format("duplicate: the alert is listed twice in this "
                                                  "notification; runbook {} runs "
                                                  "once for it",
                                                  run.runbook)};
            }
        }
        if (receipt.skipped[i].skipped()) {
            continue;
        }
        // One lookup: this episode, or the latest later one of the same alert.
        ws_.find_episode.bind(1, std::string_view(run.runbook))
            .bind(2, std::string_view(alert.fingerprint))
            .bind(3, status)
            .bind(4, nanos);
        auto row = ws_.find_episode.step();
        if (!row) {
            ws_.find_episode.reset();
            return row.error();
        }
        if (*row) {
            const auto earlier = ws_.find_episode.column_int(0);
            if (ws_.find_episode.column_int(1) == nanos) {
                receipt.skipped[i] = {
                    AlertOutcome::Duplicate,
                    fmt::format("duplicate: this episode ({} since {}) already started runbook {} "
                                "as run {}",
                                status, w.alerts[run.alert_index].starts_at, run.runbook, earlier)};
            } else {
                receipt.skipped[i] = {
                    AlertOutcome::Duplicate,
                    fmt::format("stale: a later episode of this alert ({} since {}) already "
                                "started runbook "
                                "{} as run {}",
                                status, ws_.find_episode.column_text(2), run.runbook, earlier)};
            }
        }
        ws_.find_episode.reset();
        if (!receipt.skipped[i].skipped() && alert.status == AlertStatus::Firing) {
            if (auto s = check_resolved(w, i, receipt); !s) {
                return s;
            }
        }
        if (!receipt.skipped[i].skipped()) {
            if (auto s = check_suppression(w, i, receipt); !s) {
                return s;
            }
        }
    }
    // An alert that matched runbooks but starts none of them takes its first run request's
    // outcome (duplicate, cooldown, budget).
    for (std::size_t a = 0; a < r.alerts.size(); ++a) {
        if (receipt.alert_outcomes[a] != AlertOutcome::RunStarted) {
            continue;
        }
        const DeliveryReceipt::Skip* first = nullptr;
        bool any_started = false;
        for (std::size_t i = 0; i < r.runs.size(); ++i) {
            if (r.runs[i].alert_index != a) {
                continue;
            }
            if (!receipt.skipped[i].skipped()) {
                any_started = true;
            } else if (first == nullptr) {
                first = &receipt.skipped[i];
            }
        }
        if (!any_started && first != nullptr) {
            receipt.alert_outcomes[a] = first->outcome;
            receipt.alert_details[a] = first->reason;
        }
    }
    return {};
}

// The runbook's cooldown and max_runs for run request `i`, counting runs already recorded for
// the same (runbook, dedup key) and those this delivery starts before it.
// Marks the firing episodes this delivery's resolved alerts end, and says which runs they had
// started (for `on_resolve: cancel`). An episode is marked once: a re-sent resolved
// notification finds nothing left to mark.
Status SqliteStore::apply_resolutions(const DeliveryWrite& w, DeliveryReceipt& receipt) {
    const DeliveryRecord& r = *w.record;
    for (std::size_t i = 0; i < r.resolutions.size(); ++i) {
        const Alert& alert = r.alerts[r.resolutions[i].alert_index].alert;
        if (i == 0 || r.resolutions[i - 1].alert_index != r.resolutions[i].alert_index) {
            // Remembered per alert, for a firing notification of it that arrives later.
            if (auto s = ws_.insert_resolved.bind(1, std::string_view(alert.fingerprint))
                             .bind(2, episode_nanos(alert.starts_at))
                             .bind(3, w.received_ms)
                             .run();
                !s) {
                return s;
            }
        }
        ws_.resolve_episode.bind(1, w.received_ms)
            .bind(2, std::string_view(r.resolutions[i].runbook))
            .bind(3, std::string_view(alert.fingerprint))
            .bind(4, episode_nanos(alert.starts_at));
        for (;;) {
            auto row = ws_.resolve_episode.step();
            if (!row) {
                ws_.resolve_episode.reset();
                return row.error();
            }
            if (!*row) {
                break;
            }
            receipt.resolved_runs.emplace_back(ws_.resolve_episode.column_int(0), i);
        }
        ws_.resolve_episode.reset();
    }
    return {};
}

// A firing request for an alert episode a notification (this one or an earlier one) already
// reported resolved: Alertmanager delivered out of order, and the alert is over.
Status SqliteStore::check_resolved(const DeliveryWrite& w, std::size_t i,
                                   DeliveryReceipt& receipt) {
    const auto& run = w.record->runs[i];
    const Alert& alert = w.record->alerts[run.alert_index].alert;
    ws_.find_resolved.bind(1, std::string_view(alert.fingerprint))
        .bind(2, episode_nanos(alert.starts_at));
    auto row = ws_.find_resolved.step();
    if (!row) {
        ws_.find_resolved.reset();
        return row.error();
    }
    if (*row) {
        receipt.skipped[i] = {
            AlertOutcome::Duplicate,
            fmt::format("stale: this alert (firing since {}) was already reported resolved; "
                        "runbook {} does not start for it",
                        w.alerts[run.alert_index].starts_at, run.runbook)};
    }
    ws_.find_resolved.reset();
    return {};
}

Status SqliteStore::check_suppression(const DeliveryWrite& w, std::size_t i,
                                      DeliveryReceipt& receipt) {
    const DeliveryRecord& r = *w.record;
    const auto& run = r.runs[i];
    if (!run.cooldown && !run.max_runs && !run.once_until_resolved) {
        return {};
    }
    // Runs of the same runbook and key this delivery starts before this one.
    std::int64_t earlier = 0;
    for (std::size_t j = 0; j < i; ++j) {
        earlier += r.runs[j].runbook == run.runbook && r.runs[j].dedup_key == run.dedup_key &&
                           !receipt.skipped[j].skipped()
                       ? 1
                       : 0;
    }
    if (run.once_until_resolved && r.alerts[run.alert_index].alert.status == AlertStatus::Firing) {
        if (earlier > 0) {
            receipt.skipped[i] = {
                AlertOutcome::Duplicate,
                fmt::format("unresolved: runbook {} runs once for key \"{}\" until its alert "
                            "resolves (once_until_resolved), and this notification already "
                            "starts it",
                            run.runbook, run.dedup_key)};
            return {};
        }
        ws_.open_episode_for_key.bind(1, std::string_view(run.runbook))
            .bind(2, std::string_view(run.dedup_key));
        auto row = ws_.open_episode_for_key.step();
        if (!row) {
            ws_.open_episode_for_key.reset();
            return row.error();
        }
        if (*row) {
            receipt.skipped[i] = {
                AlertOutcome::Duplicate,
                fmt::format("unresolved: runbook {} ran for key \"{}\" as run {} for an alert "
                            "firing since {} that has not resolved (once_until_resolved)",
                            run.runbook, run.dedup_key, ws_.open_episode_for_key.column_int(0),
                            ws_.open_episode_for_key.column_text(1))};
        }
        ws_.open_episode_for_key.reset();
        if (receipt.skipped[i].skipped()) {
            return {};
        }
    }
    if (run.cooldown) {
        if (earlier > 0) {
            receipt.skipped[i] = {
                AlertOutcome::Cooldown,
                fmt::format("cooldown: runbook {} starts once per {} for key \"{}\", and this "
                            "notification already starts it",
                            run.runbook, format_duration(*run.cooldown), run.dedup_key)};
            return {};
        }
        ws_.last_run_for_key.bind(1, std::string_view(run.runbook))
            .bind(2, std::string_view(run.dedup_key));
        auto row = ws_.last_run_for_key.step();
        if (!row) {
            ws_.last_run_for_key.reset();
            return row.error();
        }
        if (*row) {
            const std::int64_t last = ws_.last_run_for_key.column_int(0);
            const std::int64_t last_run = ws_.last_run_for_key.column_int(1);
            if (w.received_ms - last < run.cooldown->count()) {
                receipt.skipped[i] = {
                    AlertOutcome::Cooldown,
                    fmt::format(
                        "cooldown: runbook {} ran for key \"{}\" {} ago (run {}); its cooldown is "
                        "{}",
                        run.runbook, run.dedup_key,
                        format_duration(Duration(std::max<std::int64_t>(0, w.received_ms - last))),
                        last_run, format_duration(*run.cooldown))};
            }
        }
        ws_.last_run_for_key.reset();
        if (receipt.skipped[i].skipped()) {
            return {};
        }
    }
    if (run.max_runs) {
        std::int64_t count = earlier;
        ws_.runs_for_key_since.bind(1, std::string_view(run.runbook))
            .bind(2, std::string_view(run.dedup_key))
            .bind(3, w.received_ms - run.max_runs->per.count());
        auto row = ws_.runs_for_key_since.step();
        if (!row) {
            ws_.runs_for_key_since.reset();
            return row.error();
        }
        count += ws_.runs_for_key_since.column_int(0);
        ws_.runs_for_key_since.reset();
        if (count >= run.max_runs->count) {
            receipt.skipped[i] = {
                AlertOutcome::Budget,
                fmt::format("budget: runbook {} already ran {} times for key \"{}\" in the last {} "
                            "(max_runs {})",
                            run.runbook, count, run.dedup_key, format_duration(run.max_runs->per),
                            run.max_runs->count)};
        }
    }
    return {};
}

void SqliteStore::record_delivery(std::shared_ptr<const DeliveryRecord> record,
                                  Completion<DeliveryReceipt> done) {
    // Everything that does not need the database is turned into text here, on the caller's
    // thread, so that the single writer thread only binds and steps.
    submit_for(std::make_shared<DeliveryWrite>(prepare_delivery(std::move(record))),
               &SqliteStore::apply_delivery, std::move(done));
}

Status SqliteStore::end_attempt(RunId run, AttemptId attempt, const AttemptEnd& e,
                                const std::string& at, const std::string& detail,
                                const std::vector<TransitionText>& transitions) {
    const auto opt = [](const std::optional<int>& v) {
        return v ? std::optional<std::int64_t>(*v) : std::nullopt;
    };
    ws_.end_attempt
        .bind(1, std::string_view(e.succeeded         ? "succeeded"
                                  : e.outcome_unknown ? "outcome_unknown"
                                                      : "failed"))
        .bind(2, opt(e.exit_code))
        .bind(3, opt(e.signal))
        .bind(4, std::string_view(e.error))
        .bind(5, std::string_view(at))
        .bind(6, e.duration_ms)
        .bind(7, e.stdout_bytes)
        .bind(8, e.stderr_bytes)
        .bind_blob(9, e.stdout_excerpt)
        .bind_blob(10, e.stderr_excerpt)
        .bind(11, e.output_path.empty() ? std::nullopt : std::optional<std::string>(e.output_path))
        .bind(12, e.output_path.empty() ? std::nullopt
                                        : std::optional<std::int64_t>(e.output_stored_bytes))
        .bind(13, e.output_path.empty() ? std::nullopt
                                        : std::optional<std::int64_t>(e.output_truncated ? 1 : 0))
        .bind(14, e.outputs.empty() ? std::nullopt : std::optional<std::string>(e.outputs))
        .bind(15, attempt)
        .bind(16, run);
    if (auto s = update_one(ws_.end_attempt, fmt::format("ending attempt {}", attempt)); !s) {
        return s;
    }
    for (const auto& t : transitions) {
        if (auto s = insert_event(t.kind, t.at, std::nullopt, run, attempt, t.detail); !s) {
            return s;
        }
    }
    return insert_event("attempt.finished", at, std::nullopt, run, attempt, detail);
}

Status SqliteStore::request_approval(RunId run, const ProgressWrite& w) {
    const ApprovalRecord& a = *w.progress.approval_requested;
    Status s = ws_.request_approval.bind(1, run)
                   .bind(2, std::int64_t{a.step_index})
                   .bind(3, std::string_view(a.step))
                   .bind(4, std::string_view(w.approval_approvers))
                   .bind(5, std::string_view(a.message))
                   .bind(6, std::string_view(a.approve_on_timeout ? "approve" : "deny"))
                   .bind(7, std::string_view(w.approval_requested_at))
                   .bind(8, std::string_view(w.approval_deadline))
                   .run();
    if (!s) {
        return s;
    }
    ws_.pause_run.bind(1, std::string_view(w.approval_reason)).bind(2, run);
    if (s = update_one(ws_.pause_run, fmt::format("parking run {} for approval", run)); !s) {
        return s;
    }
    return insert_event("approval.requested", w.approval_requested_at, std::nullopt, run,
                        std::nullopt, w.approval_detail);
}

// The store decides which answer wins: only a pending approval of a waiting run changes.
Status SqliteStore::decide_approval(RunId run, const ProgressWrite& w) {
    const RunProgress::Decision& d = *w.progress.approval_decided;
    ws_.decide_approval.bind(1, std::string_view(approval_state_name(d.state)))
        .bind(2, std::string_view(d.actor))
        .bind(3, std::string_view(w.decided_at))
        .bind(4, std::string_view(d.comment))
        .bind(5, run)
        .bind(6, std::int64_t{d.step_index});
    if (auto s =
            update_one(ws_.decide_approval, fmt::format("answering the approval of run {}", run));
        !s) {
        return s;
    }
    // A deny ends the run in the same write (finished); otherwise it goes on.
    if (!w.progress.finished) {
        ws_.unpause_run.bind(1, run);
        if (auto s = update_one(ws_.unpause_run, fmt::format("resuming run {}", run)); !s) {
            return s;
        }
    }
    return insert_event(fmt::format("approval.{}", approval_state_name(d.state)), w.decided_at,
                        std::nullopt, run, std::nullopt, w.decided_detail);
}

Status SqliteStore::cancel_open_approvals(RunId run, const ProgressWrite& w) {
    const auto& f = *w.progress.finished;
    ws_.cancel_open_approvals.bind(1, std::string_view(w.finished_at))
        .bind(2, std::string_view(f.reason))
        .bind(3, run);
    std::vector<std::pair<std::string, std::int64_t>> closed;
    Status read = for_each_row(ws_.cancel_open_approvals, [&closed](const Statement& row) {
        closed.emplace_back(row.column_text(0), row.column_int(1));
    });
    ws_.cancel_open_approvals.reset();
    if (!read) {
        return read;
    }
    for (const auto& [step, index] : closed) {
        const std::string detail =
            dump_json(Json{{"step", step}, {"step_index", index}, {"reason", f.reason}});
        if (auto s = insert_event("approval.cancelled", w.finished_at, std::nullopt, run,
                                  std::nullopt, detail);
            !s) {
            return s;
        }
    }
    return {};
}

Status SqliteStore::apply_progress(const ProgressWrite& w, AttemptId& next_id) {
    const RunProgress& p = w.progress;
    const RunId run = p.run;
    if (p.spawned) {
        // Ordered before the attempt's end in the queue; an attempt that ended in the same
        // batch already is fine to miss (nothing is left to find after a crash).
        if (auto s = ws_.attempt_spawned.bind(1, std::int64_t{p.spawned->pid})
                         .bind(2, static_cast<std::int64_t>(p.spawned->start_ticks))
                         .bind(3, p.spawned->attempt)
                         .bind(4, run)
                         .run();
            !s) {
            return s;
        }
    }
    if (p.cancel_requested) {
        ws_.cancel_requested.bind(1, std::string_view(p.cancel_requested->actor))
            .bind(2, std::string_view(p.cancel_requested->reason))
            .bind(3, run);
        if (auto s = update_one(ws_.cancel_requested, fmt::format("cancelling run {}", run)); !s) {
            return s;
        }
        if (auto s = insert_event("run.cancel_requested", w.cancel_at, std::nullopt, run,
                                  std::nullopt, w.cancel_detail);
            !s) {
            return s;
        }
    }
    if (p.waiting) {
        ws_.wait_run.bind(1, std::string_view(*p.waiting)).bind(2, run);
        if (auto s = update_one(ws_.wait_run, fmt::format("marking run {} waiting", run)); !s) {
            return s;
        }
        if (auto s = insert_event("run.waiting", w.waiting_at, std::nullopt, run, std::nullopt,
                                  w.waiting_detail);
            !s) {
            return s;
        }
    }
    if (p.started) {
        ws_.start_run.bind(1, std::string_view(w.started_at)).bind(2, run);
        if (auto s = update_one(ws_.start_run, fmt::format("starting run {}", run)); !s) {
            return s;
        }
        if (auto s =
                insert_event("run.started", w.started_at, std::nullopt, run, std::nullopt, "{}");
            !s) {
            return s;
        }
    }
    if (p.ended) {
        if (auto s = end_attempt(run, p.ended->first, p.ended->second, w.ended_at, w.ended_detail,
                                 w.ended_transitions);
            !s) {
            return s;
        }
    }
    if (p.resumed) {
        if (auto s = insert_event("run.resumed", w.resumed_at, std::nullopt, run, std::nullopt,
                                  w.resumed_detail);
            !s) {
            return s;
        }
    }
    if (p.next) {
        const AttemptStart& a = *p.next;
        Status s = ws_.insert_attempt.bind(1, run)
                       .bind(2, std::string_view(a.step))
                       .bind(3, std::int64_t{a.step_index})
                       .bind(4, std::int64_t{a.attempt})
                       .bind(5, std::string_view(a.kind))
                       .bind(6, std::string_view(w.next_argv))
                       .bind(7, std::string_view(a.cwd))
                       .bind(8, std::string_view(w.next_started_at))
                       .run();
        if (!s) {
            return s;
        }
        next_id = writer_db_.last_insert_id();
        if (s = insert_event("attempt.started", w.next_started_at, std::nullopt, run, next_id,
                             w.next_detail);
            !s) {
            return s;
        }
        if (p.next_end) {
            if (s = end_attempt(run, next_id, *p.next_end, w.next_end_at, w.next_end_detail,
                                w.next_end_transitions);
                !s) {
                return s;
            }
        }
    }
    if (p.approval_requested) {
        if (auto s = request_approval(run, w); !s) {
            return s;
        }
    }
    if (p.approval_decided) {
        if (auto s = decide_approval(run, w); !s) {
            return s;
        }
    }
    if (p.planned) {
        if (auto s = insert_event("run.planned", w.planned_at, std::nullopt, run, std::nullopt,
                                  *p.planned);
            !s) {
            return s;
        }
    }
    if (p.finished) {
        if (auto s = cancel_open_approvals(run, w); !s) {
            return s;
        }
        const auto& f = *p.finished;
        ws_.finish_run.bind(1, std::string_view(run_state_name(f.state)))
            .bind(2, std::string_view(f.reason))
            .bind(3, std::string_view(w.finished_at))
            .bind(4, f.cancelled_by.empty() ? std::nullopt
                                            : std::optional<std::string>(f.cancelled_by))
            .bind(5, run);
        if (auto s = update_one(ws_.finish_run, fmt::format("finishing run {}", run)); !s) {
            return s;
        }
        // A finished run has no attempt left running (after a crash, the one in flight).
        if (auto s = ws_.fail_open_attempts.bind(1, std::string_view(f.reason))
                         .bind(2, std::string_view(w.finished_at))
                         .bind(3, run)
                         .run();
            !s) {
            return s;
        }
        return insert_event("run.finished", w.finished_at, std::nullopt, run, std::nullopt,
                            w.finished_detail);
    }
    return {};
}

void SqliteStore::record_event(std::string kind, std::string detail,
                               std::function<void(Status)> done) {
    auto event =
        std::make_shared<std::pair<std::string, std::string>>(std::move(kind), std::move(detail));
    submit(progress_, PendingWrite{[this, event] {
                                       const std::string at = Timestamp::now().to_rfc3339_millis();
                                       return insert_event(event->first, at, std::nullopt,
                                                           std::nullopt, std::nullopt,
                                                           event->second);
                                   },
                                   std::move(done)});
}

// The key is looked up and the run inserted in the same transaction of the single writer, so
// two requests with one key cannot both start a run.
Status SqliteStore::apply_manual_run(const ManualRunWrite& w, ManualRunReceipt& receipt) {
    const ManualRunRequest& r = *w.request;
    const auto key =
        r.idempotency_key.empty() ? std::nullopt : std::optional<std::string>(r.idempotency_key);
    if (key) {
        ws_.find_idempotency_key.bind(1, std::string_view(*key));
        auto row = ws_.find_idempotency_key.step();
        if (!row) {
            ws_.find_idempotency_key.reset();
            return row.error();
        }
        if (*row) {
            receipt.run = ws_.find_idempotency_key.column_int(0);
            receipt.outcome = ws_.find_idempotency_key.column_text(1) == r.request_sha256
                                  ? ManualRunReceipt::Outcome::Replayed
                                  : ManualRunReceipt::Outcome::KeyReused;
            ws_.find_idempotency_key.reset();
            return {};
        }
        ws_.find_idempotency_key.reset();
    }
    Status s = ws_.insert_manual_run.bind(1, std::string_view(r.runbook))
                   .bind(2, std::string_view(r.runbook_hash))
                   .bind(3, std::string_view(r.actor))
                   .bind(4, std::string_view(w.at))
                   .bind(5, std::string_view(w.labels))
                   .bind(6, std::string_view(w.params))
                   .bind(7, std::int64_t{r.dry_run ? 1 : 0})
                   .bind(8, std::string_view(r.reason))
                   .bind(9, key)
                   .bind(10, std::string_view(r.request_sha256))
                   .bind(11, null_if_empty(r.traceparent))
                   .run();
    if (!s) {
        return s;
    }
    receipt.run = writer_db_.last_insert_id();
    receipt.outcome = ManualRunReceipt::Outcome::Created;
    return insert_event("run.requested", w.at, std::nullopt, receipt.run, std::nullopt, w.detail);
}

// The decisions of apply_delivery() for resolutions and runs, inside a savepoint that is always
// rolled back: the batch commits nothing of it.
Status SqliteStore::apply_plan(const DeliveryWrite& w, DeliveryReceipt& receipt) {
    if (auto s = ws_.plan_savepoint.run(); !s) {
        return s;
    }
    const audit::ChainHead before = head_;
    Status s = apply_resolutions(w, receipt);
    if (s) {
        s = decide_runs(w, receipt);
    }
    const Status undone = ws_.plan_rollback.run();
    (void)ws_.plan_release.run();
    head_ = before;
    if (!undone) {
        return undone;
    }
    return s;
}

void SqliteStore::plan_delivery(std::shared_ptr<const DeliveryRecord> record,
                                Completion<DeliveryReceipt> done) {
    submit_for(std::make_shared<DeliveryWrite>(prepare_delivery(std::move(record))),
               &SqliteStore::apply_plan, std::move(done));
}

void SqliteStore::record_manual_run(std::shared_ptr<const ManualRunRequest> request,
                                    Completion<ManualRunReceipt> done) {
    submit_for(std::make_shared<ManualRunWrite>(prepare_manual_run(std::move(request))),
               &SqliteStore::apply_manual_run, std::move(done));
}

void SqliteStore::record_progress(RunProgress progress, Completion<AttemptId> done) {
    auto write = std::make_shared<ProgressWrite>(prepare_progress(std::move(progress)));
    auto next_id = std::make_shared<AttemptId>(0);
    submit(progress_, PendingWrite{[this, write, next_id] {
                                       *next_id = 0;
                                       return apply_progress(*write, *next_id);
                                   },
                                   [next_id, done = std::move(done)](Status s) {
                                       if (!s) {
                                           done(s.error());
                                           return;
                                       }
                                       done(*next_id);
                                   }});
}

Status SqliteStore::record_runbooks(const std::vector<std::shared_ptr<const Runbook>>& runbooks) {
    Reader reader(*this);
    if (!reader.ok()) {
        return reader.error();
    }
    auto& db = reader.db();
    auto stmt = Statement::prepare(
        db,
        "INSERT INTO runbook_versions (content_hash, name, source_file, source, "
        "first_loaded_at) VALUES (?,?,?,?,?) ON CONFLICT (content_hash) DO NOTHING");
    if (!stmt) {
        return stmt.error();
    }
    if (auto s = db.exec("BEGIN IMMEDIATE"); !s) {
        return s;
    }
    const std::string now = Timestamp::now().to_rfc3339_millis();
    for (const auto& r : runbooks) {
        Status s = stmt->bind(1, std::string_view(r->content_hash))
                       .bind(2, std::string_view(r->name))
                       .bind(3, std::string_view(r->source_file))
                       .bind(4, std::string_view(r->source_text))
                       .bind(5, std::string_view(now))
                       .run();
        if (!s) {
            (void)db.exec("ROLLBACK");
            return s;
        }
    }
    return db.exec("COMMIT");
}

Result<std::string> SqliteStore::runbook_source(const std::string& content_hash) {
    Reader reader(*this);
    if (!reader.ok()) {
        return reader.error();
    }
    auto stmt = Statement::prepare(reader.db(),
                                   "SELECT source FROM runbook_versions WHERE content_hash = ?");
    if (!stmt) {
        return stmt.error();
    }
    stmt->bind(1, std::string_view(content_hash));
    auto row = stmt->step();
    if (!row) {
        return row.error();
    }
    if (!*row) {
        return make_error(ErrorCode::NotFound,
                          fmt::format("runbook version {} is not recorded", content_hash));
    }
    return stmt->column_text(0);
}

Result<Database> SqliteStore::acquire_reader() {
    {
        std::lock_guard lock(readers_mutex_);
        if (!readers_.empty()) {
            Database db = std::move(readers_.back());
            readers_.pop_back();
            return db;
        }
    }
    auto db = Database::open(options_.path, false, options_.busy_timeout_ms);
    if (!db) {
        return db.error();
    }
    if (auto s = db->exec("PRAGMA foreign_keys=ON;"); !s) {
        return s.error();
    }
    return db;
}

void SqliteStore::release_reader(Database db) {
    std::lock_guard lock(readers_mutex_);
    if (readers_.size() < kMaxIdleReaders) {
        readers_.push_back(std::move(db));
    }
}

constexpr const char* kRunColumns =
    "r.id, r.runbook, r.runbook_hash, r.trigger, r.actor, r.state, r.reason, r.alert_id, "
    "coalesce(a.fingerprint, ''), coalesce(json_extract(a.labels, '$.alertname'), ''), "
    "r.created_at, r.started_at, r.finished_at, coalesce(r.cancelled_by, ''), r.labels, "
    "r.params, r.dry_run, coalesce(r.request_reason, ''), coalesce(r.idempotency_key, ''), "
    "coalesce(r.traceparent, '')";
constexpr int kRunColumnCount = 20;

std::optional<LabelSet> optional_labels(const std::optional<std::string>& text) {
    if (!text) {
        return std::nullopt;
    }
    return labels_from_json(*text);
}

RunSummary read_run_summary(const Statement& s) {
    RunSummary r;
    r.id = s.column_int(0);
    r.runbook = s.column_text(1);
    r.runbook_hash = s.column_text(2);
    r.trigger = s.column_text(3);
    r.actor = s.column_text(4);
    r.state = parse_run_state(s.column_text(5)).value_or(RunState::Failed);
    r.reason = s.column_text(6);
    r.alert_id = s.column_optional_int(7);
    r.fingerprint = s.column_text(8);
    r.alertname = s.column_text(9);
    r.created_at = parse_stored_time(s.column_text(10));
    r.started_at = parse_stored_time(s.column_optional_text(11));
    r.finished_at = parse_stored_time(s.column_optional_text(12));
    r.cancelled_by = s.column_text(13);
    r.labels = optional_labels(s.column_optional_text(14));
    r.params = optional_labels(s.column_optional_text(15));
    r.dry_run = s.column_int(16) != 0;
    r.request_reason = s.column_text(17);
    r.idempotency_key = s.column_text(18);
    r.traceparent = s.column_text(19);
    return r;
}

std::optional<Alert> read_alert(const Statement& s, int first) {
    if (s.is_null(first)) {
        return std::nullopt;
    }
    Alert a;
    a.status = parse_alert_status(s.column_text(first)).value_or(AlertStatus::Firing);
    a.labels = labels_from_json(s.column_text(first + 1));
    a.annotations = labels_from_json(s.column_text(first + 2));
    a.starts_at = parse_stored_time(s.column_text(first + 3));
    a.ends_at = parse_stored_time(s.column_optional_text(first + 4));
    a.generator_url = s.column_text(first + 5);
    a.fingerprint = s.column_text(first + 6);
    return a;
}

constexpr const char* kAlertColumns =
    "a.status, a.labels, a.annotations, a.starts_at, a.ends_at, a.generator_url, a.fingerprint";

Result<RunContext> SqliteStore::load_run(RunId run) {
    Reader reader(*this);
    if (!reader.ok()) {
        return reader.error();
    }
    auto stmt = Statement::prepare(
        reader.db(),
        fmt::format(
            "SELECT r.id, r.runbook, r.runbook_hash, r.state, r.trigger, "
            "r.actor, r.labels, r.params, r.dry_run, r.created_at, {}, "
            "coalesce(r.traceparent, '') FROM runs r LEFT JOIN alerts a ON a.id = r.alert_id "
            "WHERE r.id = ?",
            kAlertColumns));
    if (!stmt) {
        return stmt.error();
    }
    stmt->bind(1, run);
    auto row = stmt->step();
    if (!row) {
        return row.error();
    }
    if (!*row) {
        return make_error(ErrorCode::NotFound, fmt::format("run {} does not exist", run));
    }
    RunContext ctx;
    ctx.id = stmt->column_int(0);
    ctx.runbook = stmt->column_text(1);
    ctx.runbook_hash = stmt->column_text(2);
    ctx.state = parse_run_state(stmt->column_text(3)).value_or(RunState::Failed);
    ctx.trigger = stmt->column_text(4);
    ctx.actor = stmt->column_text(5);
    ctx.params = optional_labels(stmt->column_optional_text(7));
    ctx.dry_run = stmt->column_int(8) != 0;
    ctx.alert = read_alert(*stmt, 10);
    ctx.traceparent = stmt->column_text(17);
    if (!ctx.alert && ctx.trigger == "manual") {
        // The run's labels stand for an alert (docs/manual-runs.md).
        Alert alert;
        alert.labels = optional_labels(stmt->column_optional_text(6)).value_or(LabelSet{});
        alert.fingerprint = fingerprint_of(alert.labels);
        alert.starts_at = parse_stored_time(stmt->column_text(9));
        ctx.alert = std::move(alert);
    }
    return ctx;
}

Result<std::vector<RunSummary>> SqliteStore::list_runs(const RunFilter& filter) {
    Reader reader(*this);
    if (!reader.ok()) {
        return reader.error();
    }
    auto stmt = Statement::prepare(
        reader.db(),
        fmt::format("SELECT {} FROM runs r LEFT JOIN alerts a ON a.id = r.alert_id "
                    "WHERE (?1 IS NULL OR r.state = ?1) AND (?2 = '' OR r.runbook = ?2) "
                    "AND (?3 IS NULL OR r.id < ?3) ORDER BY r.id DESC LIMIT ?4",
                    kRunColumns));
    if (!stmt) {
        return stmt.error();
    }
    if (filter.state) {
        stmt->bind(1, std::string_view(run_state_name(*filter.state)));
    }
    stmt->bind(2, std::string_view(filter.runbook))
        .bind(3, filter.before_id)
        .bind(4, std::int64_t{filter.limit});
    std::vector<RunSummary> out;
    for (;;) {
        auto row = stmt->step();
        if (!row) {
            return row.error();
        }
        if (!*row) {
            break;
        }
        out.push_back(read_run_summary(*stmt));
    }
    return out;
}

std::vector<AttemptRecord> SqliteStore::read_attempts(Database& db, RunId run, Status& status) {
    std::vector<AttemptRecord> out;
    auto stmt = Statement::prepare(
        db,
        "SELECT id, step, step_index, attempt, kind, argv, cwd, state, exit_code, signal, "
        "error, started_at, finished_at, duration_ms, stdout_bytes, stderr_bytes, "
        "stdout_excerpt, stderr_excerpt, output_path, output_bytes, output_truncated, pid, "
        "pid_start_ticks, outputs FROM attempts WHERE run_id = ? "
        "ORDER BY step_index, attempt");
    if (!stmt) {
        status = stmt.error();
        return out;
    }
    stmt->bind(1, run);
    for (;;) {
        auto row = stmt->step();
        if (!row) {
            status = row.error();
            return out;
        }
        if (!*row) {
            break;
        }
        AttemptRecord a;
        a.id = stmt->column_int(0);
        a.start.run_id = run;
        a.start.step = stmt->column_text(1);
        a.start.step_index = static_cast<int>(stmt->column_int(2));
        a.start.attempt = static_cast<int>(stmt->column_int(3));
        a.start.kind = stmt->column_text(4);
        const Json argv = Json::parse(stmt->column_text(5), nullptr, false);
        if (argv.is_array()) {
            for (const auto& v : argv) {
                a.start.argv.push_back(v.is_string() ? v.get<std::string>() : v.dump());
            }
        }
        a.start.cwd = stmt->column_text(6);
        a.state = stmt->column_text(7);
        a.start.started_at = parse_stored_time(stmt->column_text(11));
        if (auto pid = stmt->column_optional_int(21)) {
            a.start.pid = static_cast<int>(*pid);
        }
        if (auto ticks = stmt->column_optional_int(22)) {
            a.start.pid_start_ticks = static_cast<std::uint64_t>(*ticks);
        }
        if (a.state != "running") {
            AttemptEnd e;
            e.succeeded = a.state == "succeeded";
            if (auto c = stmt->column_optional_int(8)) {
                e.exit_code = static_cast<int>(*c);
            }
            if (auto sig = stmt->column_optional_int(9)) {
                e.signal = static_cast<int>(*sig);
            }
            e.error = stmt->column_text(10);
            e.finished_at = parse_stored_time(stmt->column_text(12));
            e.duration_ms = stmt->column_int(13);
            e.stdout_bytes = stmt->column_int(14);
            e.stderr_bytes = stmt->column_int(15);
            e.stdout_excerpt = stmt->column_text(16);
            e.stderr_excerpt = stmt->column_text(17);
            e.output_path = stmt->column_optional_text(18).value_or("");
            e.output_stored_bytes = stmt->column_optional_int(19).value_or(0);
            e.output_truncated = stmt->column_optional_int(20).value_or(0) != 0;
            e.outputs = stmt->column_optional_text(23).value_or("");
            a.end = std::move(e);
        }
        out.push_back(std::move(a));
    }
    return out;
}

Result<RunDetail> SqliteStore::get_run(RunId run) {
    Reader reader(*this);
    if (!reader.ok()) {
        return reader.error();
    }
    auto stmt = Statement::prepare(
        reader.db(), fmt::format("SELECT {}, {} FROM runs r LEFT JOIN alerts a ON a.id = "
                                 "r.alert_id WHERE r.id = ?",
                                 kRunColumns, kAlertColumns));
    if (!stmt) {
        return stmt.error();
    }
    stmt->bind(1, run);
    auto row = stmt->step();
    if (!row) {
        return row.error();
    }
    if (!*row) {
        return make_error(ErrorCode::NotFound, fmt::format("run {} does not exist", run));
    }
    RunDetail detail;
    detail.run = read_run_summary(*stmt);
    detail.alert = read_alert(*stmt, kRunColumnCount);
    Status status;
    detail.attempts = read_attempts(reader.db(), run, status);
    if (!status) {
        return status.error();
    }
    detail.approvals = read_approvals(reader.db(), run, status);
    if (!status) {
        return status.error();
    }
    if (detail.run.dry_run) {
        auto plan = Statement::prepare(reader.db(),
                                       "SELECT detail FROM events WHERE run_id = ? AND "
                                       "kind = 'run.planned' ORDER BY id DESC LIMIT 1");
        if (!plan) {
            return plan.error();
        }
        plan->bind(1, run);
        auto found = plan->step();
        if (!found) {
            return found.error();
        }
        if (*found) {
            detail.plan = plan->column_text(0);
        }
    }
    return detail;
}

ApprovalRecord read_approval(const Statement& s, RunId run) {
    ApprovalRecord a;
    a.run_id = run;
    a.step = s.column_text(0);
    a.step_index = static_cast<int>(s.column_int(1));
    const Json approvers = Json::parse(s.column_text(2), nullptr, false);
    if (approvers.is_array()) {
        for (const auto& v : approvers) {
            a.approvers.push_back(v.is_string() ? v.get<std::string>() : v.dump());
        }
    }
    a.message = s.column_text(3);
    a.approve_on_timeout = s.column_text(4) == "approve";
    a.requested_at = parse_stored_time(s.column_text(5));
    a.deadline = parse_stored_time(s.column_text(6));
    a.state = parse_approval_state(s.column_text(7)).value_or(ApprovalState::Cancelled);
    a.decided_by = s.column_optional_text(8).value_or("");
    a.decided_at = parse_stored_time(s.column_optional_text(9));
    a.comment = s.column_optional_text(10).value_or("");
    return a;
}

std::vector<ApprovalRecord> SqliteStore::read_approvals(Database& db, RunId run, Status& status) {
    std::vector<ApprovalRecord> out;
    auto stmt = Statement::prepare(
        db,
        "SELECT step, step_index, approvers, message, on_timeout, requested_at, deadline, "
        "state, decided_by, decided_at, comment FROM approvals WHERE run_id = ? "
        "ORDER BY step_index");
    if (!stmt) {
        status = stmt.error();
        return out;
    }
    stmt->bind(1, run);
    status = for_each_row(
        *stmt, [&out, run](const Statement& row) { out.push_back(read_approval(row, run)); });
    return out;
}

Result<std::vector<ApprovalRecord>> SqliteStore::approvals_of(RunId run) {
    Reader reader(*this);
    if (!reader.ok()) {
        return reader.error();
    }
    Status status;
    auto out = read_approvals(reader.db(), run, status);
    if (!status) {
        return status.error();
    }
    return out;
}

Result<std::vector<RunId>> SqliteStore::runs_in_state(RunState state) {
    Reader reader(*this);
    if (!reader.ok()) {
        return reader.error();
    }
    auto stmt = Statement::prepare(reader.db(), "SELECT id FROM runs WHERE state = ? ORDER BY id");
    if (!stmt) {
        return stmt.error();
    }
    stmt->bind(1, std::string_view(run_state_name(state)));
    std::vector<RunId> out;
    for (;;) {
        auto row = stmt->step();
        if (!row) {
            return row.error();
        }
        if (!*row) {
            break;
        }
        out.push_back(stmt->column_int(0));
    }
    return out;
}

}  // namespace

const char* run_state_name(RunState state) {
    switch (state) {
        case RunState::Queued:
            return "queued";
        case RunState::Running:
            return "running";
        case RunState::Succeeded:
            return "succeeded";
        case RunState::Failed:
            return "failed";
        case RunState::Cancelled:
            return "cancelled";
        case RunState::Interrupted:
            return "interrupted";
        case RunState::WaitingApproval:
            return "waiting_approval";
    }
    return "failed";
}

const char* approval_state_name(ApprovalState state) {
    switch (state) {
        case ApprovalState::Pending:
            return "pending";
        case ApprovalState::Approved:
            return "approved";
        case ApprovalState::Denied:
            return "denied";
        case ApprovalState::TimedOut:
            return "timed_out";
        case ApprovalState::Cancelled:
            return "cancelled";
    }
    return "cancelled";
}

std::optional<ApprovalState> parse_approval_state(std::string_view name) {
    for (const ApprovalState s :
         {ApprovalState::Pending, ApprovalState::Approved, ApprovalState::Denied,
          ApprovalState::TimedOut, ApprovalState::Cancelled}) {
        if (name == approval_state_name(s)) {
            return s;
        }
    }
    return std::nullopt;
}

std::optional<RunState> parse_run_state(std::string_view name) {
    for (const RunState s :
         {RunState::Queued, RunState::Running, RunState::Succeeded, RunState::Failed,
          RunState::Cancelled, RunState::Interrupted, RunState::WaitingApproval}) {
        if (name == run_state_name(s)) {
            return s;
        }
    }
    return std::nullopt;
}

const char* alert_outcome_name(AlertOutcome outcome) {
    switch (outcome) {
        case AlertOutcome::RunStarted:
            return "run_started";
        case AlertOutcome::NoMatchingRunbook:
            return "no_matching_runbook";
        case AlertOutcome::StatusIgnored:
            return "status_ignored";
        case AlertOutcome::Duplicate:
            return "duplicate";
        case AlertOutcome::Cooldown:
            return "cooldown";
        case AlertOutcome::Budget:
            return "budget";
    }
    return "no_matching_runbook";
}

std::vector<RunId> DeliveryReceipt::started_runs() const {
    std::vector<RunId> out;
    for (const RunId id : run_ids) {
        if (id != 0) {
            out.push_back(id);
        }
    }
    return out;
}

Result<std::unique_ptr<Store>> open_sqlite_store(const SqliteOptions& options) {
    // SQLite counts memory under a global mutex unless told not to; runbookd never reads the
    // counters. Only possible before SQLite initialises, so later calls may fail harmlessly.
    static std::once_flag configured;
    std::call_once(configured, [] { sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); });
    auto lock = OwnerLock::acquire(options.path);
    if (!lock) {
        return lock.error();
    }
    auto db = Database::open(options.path, false, options.busy_timeout_ms);
    if (!db) {
        return db.error();
    }
    if (auto s = apply_pragmas(*db, options.synchronous_full); !s) {
        return make_error(s.error().code, fmt::format("opening database {} failed: {}",
                                                      options.path, s.error().message));
    }
    if (auto s = migrate(*db, log::get("store")); !s) {
        return s.error();
    }
    auto store = std::make_unique<SqliteStore>(options, std::move(*lock), std::move(*db));
    if (auto s = store->prepare_writer(); !s) {
        return s.error();
    }
    store->start();
    return std::unique_ptr<Store>(std::move(store));
}

}  // namespace runbookd
