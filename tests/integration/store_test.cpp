#include <atomic>
#include <condition_variable>
#include <future>
#include <mutex>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <sqlite3.h>
#include <unistd.h>

#include <runbookd/step_parser.hpp>
#include <runbookd/store.hpp>

#include "store/audit.hpp"
#include "store/sqlite.hpp"
#include "support/support.hpp"

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using test::query;
using test::query_value;

constexpr const char* kRunbook = R"(name: disk
matchers: ['alertname="DiskFull"']
steps:
  - name: df
    argv: [df, -h]
)";

// Undoes migrations 6 (the audit chain), 7 and 10 (their CHECK constraints stay wider), 8, 9
// to 12, leaving what a version 5 runbookd wrote.
constexpr const char* kBackToVersion5 =
    "DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;"
    "DROP TRIGGER audit_anchor_no_update; DROP TRIGGER audit_anchor_no_delete;"
    "DROP TABLE audit_anchor; DROP TABLE audit_prune_guard;"
    "ALTER TABLE events DROP COLUMN prev_hash; ALTER TABLE events DROP COLUMN hash;"
    "ALTER TABLE episodes DROP COLUMN resolved_ms; DROP TABLE resolved_alerts;"
    "ALTER TABLE attempts DROP COLUMN outputs;"
    "DROP TABLE approvals;"
    "DROP INDEX runs_by_idempotency_key;"
    "ALTER TABLE runs DROP COLUMN labels; ALTER TABLE runs DROP COLUMN params;"
    "ALTER TABLE runs DROP COLUMN dry_run; ALTER TABLE runs DROP COLUMN request_reason;"
    "ALTER TABLE runs DROP COLUMN idempotency_key; ALTER TABLE runs DROP COLUMN request_sha256;"
    "ALTER TABLE runs DROP COLUMN traceparent; ALTER TABLE deliveries DROP COLUMN traceparent;"
    "DELETE FROM schema_migrations WHERE version >= 6;";

std::shared_ptr<const Runbook> load_runbook() {
    auto loaded = load_runbook_text(kRunbook, "disk.yaml", builtin_step_parsers());
    REQUIRE(loaded.errors.empty());
    return loaded.runbooks.front();
}

std::unique_ptr<Store> open_store(const std::string& path) {
    SqliteOptions options;
    options.path = path;
    options.busy_timeout_ms = 200;
    auto store = open_sqlite_store(options);
    if (!store) {
        FAIL("open failed: " << store.error().message);
    }
    return std::move(*store);
}

Alert make_alert(const std::string& fingerprint) {
    Alert a;
    a.labels = {{"alertname", "DiskFull"}, {"instance", "db-1"}};
    a.annotations = {{"summary", "disk is full"}};
    a.starts_at = *parse_rfc3339("2026-12-04T15:49:26.5Z");
    a.fingerprint = fingerprint;
    return a;
}

std::shared_ptr<const DeliveryRecord> make_delivery(const Runbook& runbook, int alerts) {
    auto d = std::make_shared<DeliveryRecord>();
    d->received_at = Timestamp::now();
    d->source = "alertmanager";
    d->remote_addr = "127.0.0.1:5000";
    d->user_agent = "Alertmanager/0.25.0";
    d->body_bytes = 100;
    d->body_sha256 = "abc";
    d->receiver = "runbookd";
    d->status = "firing";
    for (int i = 0; i < alerts; ++i) {
        // A new episode each time: the store starts a runbook once per episode.
        static std::atomic<int> serial{0};
        d->alerts.push_back(
            {make_alert("fp" + std::to_string(serial++)), AlertOutcome::RunStarted, ""});
        d->runs.push_back(
            {static_cast<std::size_t>(i), runbook.name, runbook.content_hash, "", {}, {}});
    }
    return d;
}

// Waits for an asynchronous store completion.
template <typename T>
Result<T> await_result(const std::function<void(Completion<T>)>& submit) {
    std::promise<Result<T>> promise;
    submit([&promise](Result<T> r) { promise.set_value(std::move(r)); });
    return promise.get_future().get();
}

DeliveryReceipt record(Store& store, std::shared_ptr<const DeliveryRecord> d) {
    auto r = await_result<DeliveryReceipt>(
        [&](Completion<DeliveryReceipt> done) { store.record_delivery(d, std::move(done)); });
    REQUIRE(r.ok());
    return *r;
}

// A fresh store with one runbook recorded, and short-hands for the run lifecycle.
struct StoreFixture {
    StoreFixture() : path(dir.file("audit.db")), store(open_store(path)), runbook(load_runbook()) {
        REQUIRE(store->record_runbooks({runbook}).ok());
    }

    RunId queue_run() { return record(*store, make_delivery(*runbook, 1)).run_ids.at(0); }

    Result<AttemptId> progress(RunProgress p) {
        return await_result<AttemptId>([&](Completion<AttemptId> done) {
            store->record_progress(std::move(p), std::move(done));
        });
    }

    Status start(RunId run) {
        RunProgress p;
        p.run = run;
        p.started = Timestamp::now();
        auto r = progress(std::move(p));
        return r ? Status() : Status(r.error());
    }

    AttemptId start_attempt(RunId run, std::vector<std::string> argv, int step_index = 0) {
        RunProgress p;
        p.run = run;
        p.next = AttemptStart{
            run, "df", step_index, 1, "argv", std::move(argv), "/", Timestamp::now(), {}, {}};
        auto id = progress(std::move(p));
        REQUIRE(id.ok());
        return *id;
    }

    Status finish(RunId run, RunState state, const std::string& reason) {
        RunProgress p;
        p.run = run;
        p.finished = RunProgress::Finish{state, reason, Timestamp::now(), ""};
        auto r = progress(std::move(p));
        return r ? Status() : Status(r.error());
    }

    test::TempDir dir;
    std::string path;
    std::unique_ptr<Store> store;
    std::shared_ptr<const Runbook> runbook;
};

audit::VerifyReport verify_chain(const std::string& path) {
    auto db = sqlite::Database::open(path, true, 1000);
    REQUIRE(db.ok());
    auto report = audit::verify(*db);
    REQUIRE(report.ok());
    return *report;
}

// A run through its whole life: queued, started, one attempt, finished.
void run_once(StoreFixture& f) {
    const RunId run = f.queue_run();
    REQUIRE(f.start(run).ok());
    const AttemptId attempt = f.start_attempt(run, {"/usr/bin/df"});
    AttemptEnd end;
    end.succeeded = true;
    end.exit_code = 0;
    end.finished_at = Timestamp::now();
    RunProgress ended;
    ended.run = run;
    ended.ended = std::make_pair(attempt, end);
    REQUIRE(f.progress(std::move(ended)).ok());
    REQUIRE(f.finish(run, RunState::Succeeded, "").ok());
}

}  // namespace

TEST_CASE("a new database is created and migrated once", "[store]") {
    test::TempDir dir;
    const auto path = dir.file("audit.db");

    open_store(path)->close();
    open_store(path)->close();

    CHECK(query_value(path, "SELECT group_concat(version) FROM schema_migrations") ==
          "1,2,3,4,5,6,7,8,9,10,11,12");
    CHECK(query_value(path, "PRAGMA journal_mode") == "wal");
    for (const char* table :
         {"deliveries", "alerts", "runbook_versions", "runs", "attempts", "events"}) {
        CHECK(query_value(path, std::string("SELECT count(*) FROM sqlite_schema WHERE name = '") +
                                    table + "'") == "1");
    }
}

TEST_CASE("a database from a newer runbookd is refused", "[store]") {
    test::TempDir dir;
    const auto path = dir.file("audit.db");
    open_store(path)->close();
    sqlite3* db = nullptr;
    sqlite3_open(path.c_str(), &db);
    sqlite3_exec(db, "INSERT INTO schema_migrations VALUES (99, 'future', 'now')", nullptr, nullptr,
                 nullptr);
    sqlite3_close(db);

    SqliteOptions options;
    options.path = path;
    auto store = open_sqlite_store(options);

    REQUIRE_FALSE(store.ok());
    CHECK_THAT(store.error().message, Catch::Contains("schema version 99 is newer"));
}

TEST_CASE("a delivery, its alerts and its runs are committed together", "[store]") {
    StoreFixture f;
    const auto& path = f.path;
    auto& store = f.store;
    const auto& runbook = f.runbook;

    const auto receipt = record(*store, make_delivery(*runbook, 2));

    CHECK(receipt.delivery_id == 1);
    CHECK(receipt.alert_ids == std::vector<std::int64_t>{1, 2});
    CHECK(receipt.run_ids == std::vector<RunId>{1, 2});
    CHECK(
        query(path, "SELECT source, user_agent, alert_count, body_sha256 FROM deliveries") ==
        std::vector<std::vector<std::string>>{{"alertmanager", "Alertmanager/0.25.0", "2", "abc"}});
    CHECK(query(path,
                "SELECT fingerprint, status, starts_at, ends_at, labels FROM alerts WHERE "
                "id = 1") ==
          std::vector<std::vector<std::string>>{{"fp0", "firing", "2026-12-04T15:49:26.5Z", "NULL",
                                                 R"({"alertname":"DiskFull","instance":"db-1"})"}});
    CHECK(query(path,
                "SELECT runbook, runbook_hash, trigger, alert_id, state FROM runs WHERE "
                "id = 2") == std::vector<std::vector<std::string>>{
                                 {"disk", runbook->content_hash, "alert", "2", "queued"}});
    CHECK(query_value(path, "SELECT count(*) FROM events WHERE kind = 'run.queued'") == "2");
}

TEST_CASE("a run's lifecycle is recorded with its attempts and events", "[store]") {
    StoreFixture f;
    const RunId run = f.queue_run();

    REQUIRE(f.start(run).ok());
    const AttemptId attempt = f.start_attempt(run, {"/usr/bin/df", "-h"});
    AttemptEnd end;
    end.exit_code = 1;
    end.error = "exited with code 1";
    end.finished_at = Timestamp::now();
    end.duration_ms = 12;
    end.stdout_excerpt = std::string("bin\xff\x00ary", 7);
    end.stdout_bytes = 7;
    RunProgress ended;
    ended.run = run;
    ended.ended = std::make_pair(attempt, end);
    REQUIRE(f.progress(std::move(ended)).ok());
    REQUIRE(f.finish(run, RunState::Failed, "step \"df\" failed").ok());

    CHECK(query(f.path, "SELECT state, reason FROM runs") ==
          std::vector<std::vector<std::string>>{{"failed", "step \"df\" failed"}});
    CHECK(query(f.path, "SELECT step, argv, state, exit_code, signal, duration_ms FROM attempts") ==
          std::vector<std::vector<std::string>>{
              {"df", R"(["/usr/bin/df","-h"])", "failed", "1", "NULL", "12"}});
    CHECK(query_value(f.path, "SELECT stdout_excerpt FROM attempts") ==
          std::string("bin\xff\x00ary", 7));
    CHECK(query_value(f.path,
                      "SELECT group_concat(kind, ' ') FROM (SELECT kind FROM events "
                      "ORDER BY id)") ==
          "delivery.received run.queued run.started attempt.started attempt.finished "
          "run.finished");

    auto detail = f.store->get_run(run);
    REQUIRE(detail.ok());
    CHECK(detail->run.state == RunState::Failed);
    REQUIRE(detail->alert.has_value());
    CHECK(detail->alert->labels.at("instance") == "db-1");
    REQUIRE(detail->attempts.size() == 1);
    CHECK(detail->attempts[0].end->exit_code == 1);
}

TEST_CASE("an attempt's outputs are stored as JSON text, NULL when it set none", "[store]") {
    StoreFixture f;
    const RunId run = f.queue_run();
    REQUIRE(f.start(run).ok());
    const AttemptId with = f.start_attempt(run, {"/bin/true"});
    AttemptEnd end;
    end.succeeded = true;
    end.exit_code = 0;
    end.finished_at = Timestamp::now();
    end.outputs = R"({"restart":true,"host":"db-1"})";
    RunProgress ended;
    ended.run = run;
    ended.ended = std::make_pair(with, end);

    REQUIRE(f.progress(std::move(ended)).ok());

    CHECK(query_value(f.path, "SELECT outputs FROM attempts WHERE id = " + std::to_string(with)) ==
          R"({"restart":true,"host":"db-1"})");
    auto detail = f.store->get_run(run);
    REQUIRE(detail.ok());
    REQUIRE(detail->attempts.size() == 1);
    CHECK(detail->attempts[0].end->outputs == R"({"restart":true,"host":"db-1"})");

    end.outputs.clear();
    RunProgress next;
    next.run = run;
    next.ended = std::make_pair(f.start_attempt(run, {"/bin/true"}, 1), end);
    REQUIRE(f.progress(std::move(next)).ok());
    CHECK(query_value(f.path, "SELECT outputs FROM attempts ORDER BY id DESC LIMIT 1") == "NULL");
}

TEST_CASE("a state change that contradicts the stored state is refused", "[store]") {
    StoreFixture f;
    const RunId run = f.queue_run();

    REQUIRE(f.start(run).ok());
    const Status again = f.start(run);

    REQUIRE_FALSE(again.ok());
    CHECK(again.error().code == ErrorCode::InvalidArgument);
}

TEST_CASE("finishing a run fails the attempt it left running", "[store]") {
    StoreFixture f;
    const RunId run = f.queue_run();
    REQUIRE(f.start(run).ok());
    f.start_attempt(run, {"df"});

    REQUIRE(f.finish(run, RunState::Failed, "interrupted").ok());

    CHECK(query(f.path, "SELECT state, error FROM attempts") ==
          std::vector<std::vector<std::string>>{{"failed", "interrupted"}});
}

TEST_CASE("concurrent writes from many threads are all committed", "[store]") {
    StoreFixture f;
    const auto& path = f.path;
    auto& store = f.store;
    const auto& runbook = f.runbook;
    constexpr int kThreads = 4;
    constexpr int kPerThread = 100;
    std::atomic<int> ok{0};
    std::atomic<int> done{0};

    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&] {
            for (int i = 0; i < kPerThread; ++i) {
                store->record_delivery(make_delivery(*runbook, 2), [&](Result<DeliveryReceipt> r) {
                    ok += r.ok() ? 1 : 0;
                    ++done;
                });
            }
        });
    }
    for (auto& t : threads) {
        t.join();
    }
    store->close();

    CHECK(done == kThreads * kPerThread);
    CHECK(ok == kThreads * kPerThread);
    CHECK(query_value(path, "SELECT count(*) FROM deliveries") == "400");
    CHECK(query_value(path, "SELECT count(*) FROM alerts") == "800");
    CHECK(query_value(path, "SELECT count(*) FROM runs") == "800");
}

TEST_CASE("a locked database makes writes fail as unavailable, then recover", "[store]") {
    StoreFixture f;
    const auto& path = f.path;
    auto& store = f.store;
    const auto& runbook = f.runbook;
    sqlite3* other = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &other) == SQLITE_OK);
    REQUIRE(sqlite3_exec(other, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr) == SQLITE_OK);

    auto blocked = await_result<DeliveryReceipt>([&](Completion<DeliveryReceipt> d) {
        store->record_delivery(make_delivery(*runbook, 1), std::move(d));
    });
    sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
    sqlite3_close(other);
    auto after = await_result<DeliveryReceipt>([&](Completion<DeliveryReceipt> d) {
        store->record_delivery(make_delivery(*runbook, 1), std::move(d));
    });

    REQUIRE_FALSE(blocked.ok());
    CHECK(blocked.error().code == ErrorCode::Unavailable);
    REQUIRE(after.ok());
    CHECK(query_value(path, "SELECT count(*) FROM deliveries") == "1");
    CHECK(query_value(path, "SELECT count(*) FROM runs") == "1");
}

TEST_CASE("runs can be listed by state and runbook, newest first", "[store]") {
    StoreFixture f;
    auto& store = f.store;
    const auto& runbook = f.runbook;
    record(*store, make_delivery(*runbook, 3));
    REQUIRE(f.finish(2, RunState::Cancelled, "test").ok());

    RunFilter queued;
    queued.state = RunState::Queued;
    auto runs = store->list_runs(queued);
    RunFilter by_name;
    by_name.runbook = "disk";
    by_name.limit = 2;
    auto named = store->list_runs(by_name);

    REQUIRE(runs.ok());
    REQUIRE(runs->size() == 2);
    CHECK((*runs)[0].id == 3);
    CHECK((*runs)[1].id == 1);
    CHECK((*runs)[0].alertname == "DiskFull");
    REQUIRE(named.ok());
    CHECK(named->size() == 2);
    CHECK(*store->runs_in_state(RunState::Cancelled) == std::vector<RunId>{2});
    CHECK(store->get_run(99).error().code == ErrorCode::NotFound);
}

TEST_CASE("one progress write closes an attempt, opens the next and can end the run", "[store]") {
    StoreFixture f;
    const RunId run = f.queue_run();
    REQUIRE(f.start(run).ok());
    const AttemptId first = f.start_attempt(run, {"/bin/true"});
    AttemptEnd ok;
    ok.succeeded = true;
    ok.exit_code = 0;
    ok.finished_at = Timestamp::now();
    AttemptEnd not_rendered;
    not_rendered.error = "cannot prepare the step: label \"x\" is missing from the alert";
    not_rendered.finished_at = Timestamp::now();

    RunProgress p;
    p.run = run;
    p.ended = std::make_pair(first, ok);
    p.next = AttemptStart{run, "second", 1, 1, "argv", {}, "/", Timestamp::now(), {}, {}};
    p.next_end = not_rendered;
    p.finished =
        RunProgress::Finish{RunState::Failed, "step \"second\" failed", Timestamp::now(), ""};
    auto second = f.progress(std::move(p));

    REQUIRE(second.ok());
    CHECK(*second == first + 1);
    CHECK(query(f.path, "SELECT step_index, state, exit_code, error FROM attempts ORDER BY id") ==
          std::vector<std::vector<std::string>>{
              {"0", "succeeded", "0", ""},
              {"1", "failed", "NULL",
               "cannot prepare the step: label \"x\" is missing from the "
               "alert"}});
    CHECK(query_value(f.path, "SELECT state FROM runs") == "failed");
}

TEST_CASE("a progress write that contradicts the stored state changes nothing", "[store]") {
    StoreFixture f;
    const RunId run = f.queue_run();
    RunProgress p;
    p.run = run;
    p.next = AttemptStart{run, "df", 0, 1, "argv", {"df"}, "/", Timestamp::now(), {}, {}};
    p.ended = std::make_pair(AttemptId{77}, AttemptEnd{});

    auto r = f.progress(std::move(p));

    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::InvalidArgument);
    CHECK(query_value(f.path, "SELECT count(*) FROM attempts") == "0");
    CHECK(query_value(f.path,
                      "SELECT count(*) FROM events WHERE kind NOT IN "
                      "('delivery.received', 'run.queued')") == "0");
}

TEST_CASE("a failing write does not take down the others committed with it", "[store]") {
    StoreFixture f;
    const RunId run = f.queue_run();
    // Hold the write lock so that the next writes queue up and are committed as one batch.
    sqlite3* other = nullptr;
    REQUIRE(sqlite3_open(f.path.c_str(), &other) == SQLITE_OK);
    REQUIRE(sqlite3_exec(other, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) == SQLITE_OK);
    std::promise<Result<DeliveryReceipt>> first, good;
    std::promise<Result<AttemptId>> bad;

    f.store->record_delivery(make_delivery(*f.runbook, 1),
                             [&](Result<DeliveryReceipt> r) { first.set_value(std::move(r)); });
    std::this_thread::sleep_for(30ms);
    // Starts the run (appending an audit event) before it fails on an unknown attempt: the
    // event goes with the rollback, and the chain must not miss it.
    RunProgress contradiction;
    contradiction.run = run;
    contradiction.started = Timestamp::now();
    contradiction.ended = std::make_pair(AttemptId{99}, AttemptEnd{});
    f.store->record_progress(contradiction,
                             [&](Result<AttemptId> r) { bad.set_value(std::move(r)); });
    f.store->record_delivery(make_delivery(*f.runbook, 1),
                             [&](Result<DeliveryReceipt> r) { good.set_value(std::move(r)); });
    std::this_thread::sleep_for(30ms);
    sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr);
    sqlite3_close(other);

    CHECK(first.get_future().get().ok());
    CHECK(bad.get_future().get().error().code == ErrorCode::InvalidArgument);
    auto receipt = good.get_future().get();
    REQUIRE(receipt.ok());
    CHECK(query_value(f.path, "SELECT count(*) FROM deliveries") == "3");
    CHECK(query_value(f.path, "SELECT count(*) FROM runs WHERE id = " +
                                  std::to_string(receipt->run_ids.at(0))) == "1");
    CHECK(query_value(f.path, "SELECT state FROM runs WHERE id = " + std::to_string(run)) ==
          "queued");
    run_once(f);
    const auto report = verify_chain(f.path);
    INFO(report.message);
    CHECK(report.intact());
}

TEST_CASE("a database is used by one runbookd at a time", "[store]") {
    test::TempDir dir;
    const auto path = dir.file("audit.db");
    SqliteOptions options;
    options.path = path;

    auto first = open_sqlite_store(options);
    auto second = open_sqlite_store(options);
    REQUIRE(first.ok());
    (*first)->close();
    first = make_error(ErrorCode::Cancelled, "closed");
    auto third = open_sqlite_store(options);

    REQUIRE_FALSE(second.ok());
    CHECK_THAT(second.error().message,
               Catch::Contains("it is in use by another runbookd (pid " +
                               std::to_string(::getpid()) + ", lock " + path + ".lock)"));
    CHECK(third.ok());
}

TEST_CASE("a database in a missing directory is refused with the path", "[store]") {
    test::TempDir dir;
    SqliteOptions options;
    options.path = dir.file("no/such/dir/audit.db");

    auto store = open_sqlite_store(options);

    REQUIRE_FALSE(store.ok());
    CHECK_THAT(store.error().message,
               Catch::Contains(options.path + ".lock: No such file or directory"));
}

TEST_CASE("a version 1 database is migrated to version 2 and keeps its rows", "[store]") {
    StoreFixture f;
    const RunId run = f.queue_run();
    f.store->close();
    f.store.reset();
    // Turn the file back into what a version 1 runbookd left.
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(f.path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, kBackToVersion5, nullptr, nullptr, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db,
                         "ALTER TABLE attempts DROP COLUMN output_path;"
                         "ALTER TABLE attempts DROP COLUMN output_bytes;"
                         "ALTER TABLE attempts DROP COLUMN output_truncated;"
                         "ALTER TABLE runs DROP COLUMN cancelled_by;"
                         "DROP TABLE episodes;"
                         "ALTER TABLE attempts DROP COLUMN pid;"
                         "ALTER TABLE attempts DROP COLUMN pid_start_ticks;",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, "DELETE FROM schema_migrations WHERE version >= 2;", nullptr, nullptr,
                         nullptr) == SQLITE_OK);
    sqlite3_close(db);

    auto store = open_store(f.path);
    CHECK(query_value(f.path, "SELECT group_concat(version) FROM schema_migrations") ==
          "1,2,3,4,5,6,7,8,9,10,11,12");
    auto detail = store->get_run(run);
    REQUIRE(detail.ok());
    CHECK(detail->run.state == RunState::Queued);
    CHECK(detail->run.cancelled_by.empty());
}

TEST_CASE("a waiting run keeps its reason until it starts", "[store]") {
    StoreFixture f;
    const RunId run = f.queue_run();
    RunProgress p;
    p.run = run;
    p.waiting = "waiting for lock \"restart-db-1\" held by run 7";
    REQUIRE(f.progress(std::move(p)).ok());
    CHECK(query_value(f.path, "SELECT state || ' ' || reason FROM runs WHERE id = " +
                                  std::to_string(run)) ==
          "queued waiting for lock \"restart-db-1\" held by run 7");
    CHECK(query_value(f.path, "SELECT count(*) FROM events WHERE kind = 'run.waiting'") == "1");

    REQUIRE(f.start(run).ok());
    CHECK(query_value(f.path, "SELECT state || '|' || reason FROM runs WHERE id = " +
                                  std::to_string(run)) == "running|");
    // A run that is no longer queued cannot be marked waiting.
    RunProgress again;
    again.run = run;
    again.waiting = "late";
    auto r = f.progress(std::move(again));
    REQUIRE_FALSE(r.ok());
    CHECK(r.error().code == ErrorCode::InvalidArgument);
}

TEST_CASE("an attempt's transitions and output file are recorded", "[store]") {
    StoreFixture f;
    const RunId run = f.queue_run();
    REQUIRE(f.start(run).ok());
    const AttemptId attempt = f.start_attempt(run, {"/bin/sleep", "60"});

    AttemptEnd end;
    end.signal = 9;
    end.timed_out = true;
    end.error = "timed out after 100 ms; sent SIGTERM to the process group, then SIGKILL";
    end.finished_at = Timestamp::now();
    end.transitions = {{Timestamp::now(), "stop_signal_sent", "sent SIGTERM: timed out"},
                       {Timestamp::now(), "grace_expired", "after 50 ms"},
                       {Timestamp::now(), "killed", "sent SIGKILL"}};
    end.output_path = "/var/lib/runbookd/artifacts/1/0.1.log";
    end.output_stored_bytes = 1024;
    end.output_truncated = true;
    RunProgress p;
    p.run = run;
    p.ended = std::make_pair(attempt, end);
    p.finished = RunProgress::Finish{RunState::Cancelled, "cancelled by alice: wrong host",
                                     Timestamp::now(), "alice"};
    REQUIRE(f.progress(std::move(p)).ok());

    CHECK(query_value(f.path,
                      "SELECT group_concat(kind, ' ') FROM (SELECT kind FROM events "
                      "WHERE attempt_id = " +
                          std::to_string(attempt) + " ORDER BY id)") ==
          "attempt.started attempt.stop_signal_sent attempt.grace_expired attempt.killed "
          "attempt.finished");
    auto detail = f.store->get_run(run);
    REQUIRE(detail.ok());
    CHECK(detail->run.cancelled_by == "alice");
    CHECK(detail->run.state == RunState::Cancelled);
    REQUIRE(detail->attempts.size() == 1);
    REQUIRE(detail->attempts[0].end.has_value());
    CHECK(detail->attempts[0].end->output_path == end.output_path);
    CHECK(detail->attempts[0].end->output_stored_bytes == 1024);
    CHECK(detail->attempts[0].end->output_truncated);
    CHECK(detail->attempts[0].end->signal == 9);
}

TEST_CASE("every event carries the hash of the one before it and the chain verifies",
          "[store][audit]") {
    StoreFixture f;

    run_once(f);
    run_once(f);

    const auto report = verify_chain(f.path);
    INFO(report.message);
    CHECK(report.intact());
    CHECK(report.events == 12);
    CHECK(report.first_id == 1);
    CHECK(report.last_id == 12);
    CHECK(query_value(f.path, "SELECT prev_hash FROM events WHERE id = 1") == audit::kGenesisHash);
    CHECK(query_value(f.path,
                      "SELECT count(*) FROM events e JOIN events p ON p.id = e.id - 1 "
                      "WHERE e.prev_hash = p.hash") == "11");
    CHECK(report.head_hash == query_value(f.path, "SELECT hash FROM events WHERE id = 12"));
}

TEST_CASE("a delivery is one delivery.received event listing each alert and its outcome",
          "[store][audit]") {
    StoreFixture f;
    auto d = std::make_shared<DeliveryRecord>(*make_delivery(*f.runbook, 1));
    d->alerts.push_back({d->alerts[0].alert, AlertOutcome::RunStarted, ""});
    d->runs.push_back({1, f.runbook->name, f.runbook->content_hash, "", {}, {}});

    record(*f.store, d);

    const auto detail = nlohmann::json::parse(
        query_value(f.path, "SELECT detail FROM events WHERE kind = 'delivery.received'"));
    REQUIRE(detail["alerts"].size() == 2);
    CHECK(detail["alerts"][0]["fingerprint"] == d->alerts[0].alert.fingerprint);
    CHECK(detail["alerts"][0]["status"] == "firing");
    CHECK(detail["alerts"][0]["startsAt"] == "2026-12-04T15:49:26.5Z");
    CHECK(detail["alerts"][0]["outcome"] == "run_started");
    CHECK(detail["alerts"][1]["outcome"] == "duplicate");
    CHECK(detail["receiver"] == "runbookd");
    CHECK(query_value(f.path, "SELECT count(*) FROM events WHERE kind = 'delivery.received'") ==
          "1");
}

TEST_CASE("a write that fails after appending events leaves no hole or fork in the chain",
          "[store][audit]") {
    StoreFixture f;
    const RunId run = f.queue_run();
    // Appends run.started, then fails on an attempt that does not exist: rolled back in the
    // batch's transaction and again in its own savepoint.
    RunProgress failing;
    failing.run = run;
    failing.started = Timestamp::now();
    failing.ended = std::make_pair(AttemptId{77}, AttemptEnd{});

    auto r = f.progress(failing);
    run_once(f);

    REQUIRE_FALSE(r.ok());
    CHECK(query_value(f.path, "SELECT count(*) FROM events WHERE run_id = " + std::to_string(run) +
                                  " AND kind = 'run.started'") == "0");
    const auto report = verify_chain(f.path);
    INFO(report.message);
    CHECK(report.intact());
    CHECK(report.events == std::stoll(query_value(f.path, "SELECT count(*) FROM events")));
}

TEST_CASE("a version 5 database is chained by the migration and verifies", "[store][audit]") {
    StoreFixture f;
    run_once(f);
    f.store->close();
    f.store.reset();
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(f.path.c_str(), &db) == SQLITE_OK);
    REQUIRE(sqlite3_exec(db, kBackToVersion5, nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(db);
    REQUIRE(query_value(f.path, "SELECT max(version) FROM schema_migrations") == "5");

    f.store = open_store(f.path);
    run_once(f);

    CHECK(query_value(f.path, "SELECT max(version) FROM schema_migrations") == "12");
    const auto report = verify_chain(f.path);
    INFO(report.message);
    CHECK(report.intact());
    CHECK(report.events == 12);
    CHECK(query_value(f.path, "SELECT count(*) FROM events WHERE hash = ''") == "0");
}

TEST_CASE("events cannot be updated or deleted except by prune", "[store][audit]") {
    StoreFixture f;
    run_once(f);
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(f.path.c_str(), &db) == SQLITE_OK);

    const int update =
        sqlite3_exec(db, "UPDATE events SET detail = '{}' WHERE id = 2", nullptr, nullptr, nullptr);
    const std::string update_error = sqlite3_errmsg(db);
    const int remove =
        sqlite3_exec(db, "DELETE FROM events WHERE id = 1", nullptr, nullptr, nullptr);
    const std::string delete_error = sqlite3_errmsg(db);
    sqlite3_close(db);

    CHECK(update != SQLITE_OK);
    CHECK_THAT(update_error, Catch::Contains("audit events are append-only: UPDATE"));
    CHECK(remove != SQLITE_OK);
    CHECK_THAT(delete_error, Catch::Contains("audit events are append-only: DELETE"));
    CHECK(verify_chain(f.path).intact());
}

TEST_CASE("prune removes old events, keeps the newest, and the chain still verifies",
          "[store][audit]") {
    StoreFixture f;
    run_once(f);
    std::this_thread::sleep_for(5ms);
    const Timestamp boundary = Timestamp::now();
    std::this_thread::sleep_for(5ms);
    run_once(f);
    auto db = sqlite::Database::open(f.path, false, 1000);
    REQUIRE(db.ok());

    auto pruned = audit::prune(*db, boundary, "tester");
    run_once(f);  // the writer goes on from its head in memory
    auto all = audit::prune(*db, *parse_rfc3339("2100-01-01T00:00:00Z"), "tester");

    REQUIRE(pruned.ok());
    CHECK(pruned->deleted_events == 6);
    CHECK(pruned->last_event_id == 6);
    REQUIRE(all.ok());
    CHECK(all->deleted_events == 11);
    CHECK(query_value(f.path, "SELECT count(*) FROM events") == "1");
    CHECK(query(f.path, "SELECT pruned_by, deleted_events, last_event_id FROM audit_anchor") ==
          std::vector<std::vector<std::string>>{{"tester", "6", "6"}, {"tester", "11", "17"}});
    const auto report = verify_chain(f.path);
    INFO(report.message);
    CHECK(report.intact());
    CHECK(report.first_id == 18);
    REQUIRE(report.anchor.has_value());
    CHECK(report.anchor->last_event_id == 17);
}

TEST_CASE("prune refuses a chain that does not verify", "[store][audit]") {
    StoreFixture f;
    run_once(f);
    sqlite3* raw = nullptr;
    REQUIRE(sqlite3_open(f.path.c_str(), &raw) == SQLITE_OK);
    REQUIRE(sqlite3_exec(raw,
                         "DROP TRIGGER events_no_update;"
                         "UPDATE events SET detail = '{\"forged\":1}' WHERE id = 3;",
                         nullptr, nullptr, nullptr) == SQLITE_OK);
    sqlite3_close(raw);
    auto db = sqlite::Database::open(f.path, false, 1000);
    REQUIRE(db.ok());

    auto pruned = audit::prune(*db, *parse_rfc3339("2100-01-01T00:00:00Z"), "tester");

    REQUIRE_FALSE(pruned.ok());
    CHECK_THAT(pruned.error().message,
               Catch::Contains("refused: it does not verify: event 3 was modified"));
    CHECK(query_value(f.path, "SELECT count(*) FROM events") == "6");
}
