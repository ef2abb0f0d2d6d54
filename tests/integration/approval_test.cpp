#include <atomic>
#include <csignal>
#include <filesystem>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include "store/audit.hpp"
#include "store/sqlite.hpp"
#include "support/support.hpp"

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using Json = nlohmann::json;
using test::query_value;
using test::RunbookFiles;
using test::TestDaemon;

// Step `collect` runs at once; step `restart` waits for approval, then leaves a marker file
// named after the alert's instance in `marker_dir`, so a test sees whether its process ran.
std::string gated_runbook(const std::string& marker_dir, const std::string& approval) {
    return fmt::format(R"(name: gated-restart
matchers: ['alertname="Gate"']
steps:
  - name: collect
    argv: [/bin/true]
  - name: restart
    approval: {}
    argv: [/bin/sh, -c, 'echo ran > {}/ran-{{{{ alert.labels.instance }}}}']
)",
                       approval, marker_dir);
}

RunId fire(const std::string& base_url, const std::string& instance) {
    auto r = test::post_notification(base_url, test::firing_notification("Gate", instance));
    REQUIRE(r.ok());
    REQUIRE(r->status == 200);
    const Json body = Json::parse(r->body);
    REQUIRE(body["runs"].size() == 1);
    return body["runs"][0]["run_id"].get<RunId>();
}

Result<http::ClientResponse> answer(const std::string& base_url, RunId run, const std::string& step,
                                    const std::string& verb, const Json& body) {
    return http::send_request(
        "POST", base_url + fmt::format("/api/v1/runs/{}/steps/{}/{}", run, step, verb), body.dump(),
        {{"Content-Type", "application/json"}});
}

std::string run_state(const std::string& db, RunId run) {
    return query_value(db, fmt::format("SELECT state FROM runs WHERE id = {}", run));
}

bool wait_state(const std::string& db, RunId run, const std::string& state,
                std::chrono::milliseconds timeout = 10s) {
    return test::wait_until([&] { return run_state(db, run) == state; }, timeout);
}

std::string gated_attempts(const std::string& db, RunId run) {
    return query_value(
        db,
        fmt::format("SELECT count(*) FROM attempts WHERE run_id = {} AND step = 'restart'", run));
}

bool chain_intact(const std::string& path) {
    auto db = sqlite::Database::open(path, true, 1000);
    REQUIRE(db.ok());
    auto report = audit::verify(*db);
    REQUIRE(report.ok());
    INFO(report->message);
    return report->intact();
}

// The value of one sample of runbookd's /metrics.
double metric(const TestDaemon& d, const std::string& sample) {
    const std::string text = d.get("/metrics")->body;
    const auto at = text.find("\n" + sample + " ");
    REQUIRE(at != std::string::npos);
    return std::stod(text.substr(at + sample.size() + 2));
}

// Starts the runbookd binary on `db`, fires an alert for `instance` and, once its run waits
// for approval, kills runbookd with SIGKILL: a crash while the run waits.
RunId park_then_kill(const RunbookFiles& files, const std::string& db,
                     const std::string& instance) {
    test::RunbookdProcess first(files, "", db);
    REQUIRE(first.wait_ready());
    const RunId run = fire(first.url(), instance);
    REQUIRE(wait_state(db, run, "waiting_approval"));
    first.process().signal(SIGKILL);
    REQUIRE(first.process().wait(5s).has_value());
    return run;
}

struct Gated {
    test::TempDir markers;
    TestDaemon d;

    explicit Gated(const std::string& approval = "{approvers: [alice, bob], timeout: 30m}")
        : d(RunbookFiles{{"gated.yaml", gated_runbook(markers.path().string(), approval)}}) {}

    bool ran(const std::string& instance) const {
        return std::filesystem::exists(markers.path() / ("ran-" + instance));
    }
};

}  // namespace

TEST_CASE("a gated step does not start before it is approved, and runs once approved",
          "[approval]") {
    Gated g;
    const RunId run = fire(g.d.url(), "db-1");
    REQUIRE(wait_state(g.d.db(), run, "waiting_approval"));
    std::this_thread::sleep_for(300ms);  // time enough for a wrongly started step to show

    CHECK(run_state(g.d.db(), run) == "waiting_approval");
    CHECK(gated_attempts(g.d.db(), run) == "0");
    CHECK_FALSE(g.ran("db-1"));
    const Json shown = Json::parse(g.d.get(fmt::format("/api/v1/runs/{}", run))->body);
    REQUIRE(shown["approvals"].size() == 1);
    CHECK(shown["approvals"][0]["state"] == "pending");
    CHECK(shown["approvals"][0]["approvers"] == Json::array({"alice", "bob"}));
    CHECK_THAT(
        shown["reason"].get<std::string>(),
        Catch::StartsWith("waiting for approval of step \"restart\" (approvers: alice, bob)"));

    auto r = answer(g.d.url(), run, "restart", "approve", {{"actor", "alice"}, {"comment", "go"}});

    REQUIRE(r.ok());
    CHECK(r->status == 200);
    const Json body = Json::parse(r->body);
    CHECK(body["approval"]["state"] == "approved");
    CHECK(body["approval"]["decided_by"] == "alice");
    REQUIRE(wait_state(g.d.db(), run, "succeeded"));
    CHECK(g.ran("db-1"));
    CHECK(gated_attempts(g.d.db(), run) == "1");
    CHECK(query_value(g.d.db(),
                      "SELECT state || ',' || decided_by || ',' || comment FROM "
                      "approvals") == "approved,alice,go");
    CHECK(query_value(g.d.db(),
                      "SELECT group_concat(kind) FROM events WHERE kind LIKE "
                      "'approval.%'") == "approval.requested,approval.approved");
    CHECK(chain_intact(g.d.db()));
}

TEST_CASE("a denied step never runs and the run ends cancelled naming who denied and why",
          "[approval]") {
    Gated g;
    const RunId run = fire(g.d.url(), "db-2");
    REQUIRE(wait_state(g.d.db(), run, "waiting_approval"));

    auto r = answer(g.d.url(), run, "restart", "deny", {{"actor", "bob"}, {"comment", "not now"}});

    REQUIRE(r.ok());
    CHECK(r->status == 200);
    REQUIRE(wait_state(g.d.db(), run, "cancelled"));
    CHECK(query_value(g.d.db(), "SELECT reason FROM runs") ==
          "step \"restart\" denied by bob: not now");
    CHECK(query_value(g.d.db(), "SELECT cancelled_by FROM runs") == "bob");
    CHECK(query_value(g.d.db(), "SELECT state FROM approvals") == "denied");
    CHECK(gated_attempts(g.d.db(), run) == "0");
    CHECK_FALSE(g.ran("db-2"));
}

TEST_CASE("only the listed approvers may answer, and bad answers get clear errors", "[approval]") {
    Gated g;
    const RunId run = fire(g.d.url(), "db-3");
    REQUIRE(wait_state(g.d.db(), run, "waiting_approval"));

    SECTION("someone not listed gets 403 and nothing changes") {
        auto r = answer(g.d.url(), run, "restart", "approve", {{"actor", "mallory"}});
        REQUIRE(r.ok());
        CHECK(r->status == 403);
        CHECK(Json::parse(r->body)["error"]["code"] == "not_an_approver");
        CHECK_THAT(r->body, Catch::Contains("alice, bob"));
        CHECK(query_value(g.d.db(), "SELECT state FROM approvals") == "pending");
        CHECK(run_state(g.d.db(), run) == "waiting_approval");
    }
    SECTION("unknown run or step: 404; a step without a gate: 409 no_approval") {
        CHECK(answer(g.d.url(), run + 100, "restart", "approve", {{"actor", "alice"}})->status ==
              404);
        CHECK(answer(g.d.url(), run, "nope", "approve", {{"actor", "alice"}})->status == 404);
        auto r = answer(g.d.url(), run, "collect", "approve", {{"actor", "alice"}});
        CHECK(r->status == 409);
        CHECK(Json::parse(r->body)["error"]["code"] == "no_approval");
    }
    SECTION("an unknown body field is refused") {
        auto r = answer(g.d.url(), run, "restart", "approve", {{"actr", "alice"}});
        CHECK(r->status == 400);
        CHECK(Json::parse(r->body)["error"]["field"] == "actr");
    }
    SECTION("a second answer after the first gets 409 naming who answered") {
        REQUIRE(answer(g.d.url(), run, "restart", "approve", {{"actor", "alice"}})->status == 200);
        auto r = answer(g.d.url(), run, "restart", "deny", {{"actor", "bob"}});
        CHECK(r->status == 409);
        CHECK(Json::parse(r->body)["error"]["code"] == "already_decided");
        CHECK_THAT(r->body, Catch::Contains("already approved by alice"));
        REQUIRE(wait_state(g.d.db(), run, "succeeded"));
    }
}

TEST_CASE("two concurrent answers: exactly one wins and the other is told who answered",
          "[approval][race]") {
    Gated g;
    for (int i = 0; i < 10; ++i) {
        const RunId run = fire(g.d.url(), fmt::format("race-{}", i));
        REQUIRE(wait_state(g.d.db(), run, "waiting_approval"));
        std::atomic<bool> go{false};
        Result<http::ClientResponse> approve = make_error(ErrorCode::Internal, "not sent");
        Result<http::ClientResponse> deny = make_error(ErrorCode::Internal, "not sent");
        std::thread a([&] {
            while (!go) {
            }
            approve = answer(g.d.url(), run, "restart", "approve", {{"actor", "alice"}});
        });
        std::thread b([&] {
            while (!go) {
            }
            deny = answer(g.d.url(), run, "restart", "deny", {{"actor", "bob"}});
        });
        go = true;
        a.join();
        b.join();

        REQUIRE(approve.ok());
        REQUIRE(deny.ok());
        INFO("approve " << approve->status << " " << approve->body << "; deny " << deny->status
                        << " " << deny->body);
        CHECK((approve->status == 200) != (deny->status == 200));
        const bool approved = approve->status == 200;
        const auto& loser = approved ? deny : approve;
        CHECK(loser->status == 409);
        CHECK_THAT(loser->body, Catch::Contains(approved ? "already approved by alice"
                                                         : "already denied by bob"));
        REQUIRE(wait_state(g.d.db(), run, approved ? "succeeded" : "cancelled"));
        CHECK(query_value(g.d.db(), fmt::format("SELECT decided_by FROM approvals WHERE run_id "
                                                "= {}",
                                                run)) == (approved ? "alice" : "bob"));
    }
}

TEST_CASE("an approval sent while the run is still pausing is never lost (100 runs)",
          "[approval][race]") {
    Gated g("{timeout: 30m}");
    const double held_before = metric(g.d, "runbookd_approval_answers_held_total");
    const double approved_before = metric(g.d, "runbookd_approvals_total{decision=\"approved\"}");
    int held_or_waiting = 0;
    for (int i = 0; i < 100; ++i) {
        const RunId run = fire(g.d.url(), fmt::format("p-{}", i));
        // Fire until the answer is taken; every refusal must be "not waiting yet".
        int refused = 0;
        for (;;) {
            auto r = answer(g.d.url(), run, "restart", "approve", {{"actor", "oncall"}});
            REQUIRE(r.ok());
            if (r->status == 200) {
                break;
            }
            INFO(r->body);
            REQUIRE(r->status == 409);
            REQUIRE(Json::parse(r->body)["error"]["code"] == "not_waiting");
            ++refused;
        }
        held_or_waiting += refused > 0 ? 1 : 0;
    }
    INFO("runs answered after at least one not_waiting: " << held_or_waiting);
    // The race was really run: some answers came while their run was pausing and were held.
    // (The metrics are the test process's: other tests count too, hence the differences.)
    CHECK(metric(g.d, "runbookd_approval_answers_held_total") > held_before);
    CHECK(metric(g.d, "runbookd_approvals_total{decision=\"approved\"}") == approved_before + 100);

    REQUIRE(test::wait_until(
        [&] {
            return query_value(g.d.db(), "SELECT count(*) FROM runs WHERE state = 'succeeded'") ==
                   "100";
        },
        60s));
    CHECK(query_value(g.d.db(), "SELECT count(*) FROM approvals WHERE state = 'approved'") ==
          "100");
    CHECK(query_value(g.d.db(),
                      "SELECT count(*) FROM attempts WHERE step = 'restart' AND "
                      "state = 'succeeded'") == "100");
    CHECK(query_value(g.d.db(), "SELECT count(*) FROM events WHERE kind = 'approval.approved'") ==
          "100");
}

TEST_CASE("at the deadline on_timeout decides, recorded as runbookd", "[approval][timeout]") {
    SECTION("deny: the run fails and the step never runs") {
        Gated g("{timeout: 1s, on_timeout: deny}");
        const RunId run = fire(g.d.url(), "t-1");

        REQUIRE(wait_state(g.d.db(), run, "failed"));
        CHECK(query_value(g.d.db(), "SELECT reason FROM runs") ==
              "approval of step \"restart\" timed out after 1s (on_timeout: deny)");
        CHECK(query_value(g.d.db(), "SELECT state || ',' || decided_by FROM approvals") ==
              "timed_out,runbookd");
        CHECK(gated_attempts(g.d.db(), run) == "0");
        CHECK_FALSE(g.ran("t-1"));
        auto late = answer(g.d.url(), run, "restart", "approve", {{"actor", "x"}});
        CHECK(late->status == 409);
    }
    SECTION("approve: the step runs") {
        Gated g("{timeout: 1s, on_timeout: approve}");
        const RunId run = fire(g.d.url(), "t-2");

        REQUIRE(wait_state(g.d.db(), run, "succeeded"));
        CHECK(query_value(g.d.db(), "SELECT state || ',' || decided_by FROM approvals") ==
              "timed_out,runbookd");
        CHECK(g.ran("t-2"));
    }
}

TEST_CASE("cancelling a waiting run ends it at once and closes its approval", "[approval]") {
    Gated g;
    const RunId run = fire(g.d.url(), "c-1");
    REQUIRE(wait_state(g.d.db(), run, "waiting_approval"));

    auto r = g.d.post(fmt::format("/api/v1/runs/{}/cancel", run), R"({"actor": "carol"})");

    REQUIRE(r.ok());
    CHECK(r->status / 100 == 2);
    REQUIRE(wait_state(g.d.db(), run, "cancelled"));
    CHECK(query_value(g.d.db(), "SELECT state FROM approvals") == "cancelled");
    CHECK(query_value(g.d.db(), "SELECT cancelled_by FROM runs") == "carol");
    auto late = answer(g.d.url(), run, "restart", "approve", {{"actor", "alice"}});
    CHECK(late->status == 409);
    CHECK(Json::parse(late->body)["error"]["code"] == "run_ended");
}

TEST_CASE("a waiting run holds no slot: other runs start while it waits", "[approval]") {
    test::TempDir markers;
    TestDaemon d(RunbookFiles{{"gated.yaml", gated_runbook(markers.path().string(), "{}")}},
                 [](daemon::Config& c) { c.runs.max_concurrent_runs = 1; });
    const RunId first = fire(d.url(), "s-1");
    REQUIRE(wait_state(d.db(), first, "waiting_approval"));

    const RunId second = fire(d.url(), "s-2");

    CHECK(wait_state(d.db(), second, "waiting_approval"));
    CHECK(query_value(d.db(),
                      "SELECT count(*) FROM attempts WHERE step = 'collect' AND state = "
                      "'succeeded'") == "2");
}

TEST_CASE("a run waiting for approval survives a SIGKILL of runbookd and can be approved after",
          "[approval][restart]") {
    test::TempDir markers;
    const RunbookFiles files{{"gated.yaml", gated_runbook(markers.path().string(),
                                                          "{approvers: [alice], timeout: 30m}")}};
    test::TempDir data;
    const std::string db = data.file("runbookd.db");
    const RunId run = park_then_kill(files, db, "r-1");

    test::RunbookdProcess second(files, "", db);
    REQUIRE(second.wait_ready());
    std::this_thread::sleep_for(300ms);
    CHECK(run_state(db, run) == "waiting_approval");
    CHECK(gated_attempts(db, run) == "0");
    auto r = answer(second.url(), run, "restart", "approve", {{"actor", "alice"}});

    REQUIRE(r.ok());
    INFO(r->body);
    CHECK(r->status == 200);
    CHECK(wait_state(db, run, "succeeded"));
    CHECK(std::filesystem::exists(markers.path() / "ran-r-1"));
}

TEST_CASE("a deadline that passed while runbookd was down takes on_timeout at start",
          "[approval][restart]") {
    test::TempDir markers;
    const RunbookFiles files{
        {"gated.yaml", gated_runbook(markers.path().string(), "{timeout: 2s, on_timeout: deny}")}};
    test::TempDir data;
    const std::string db = data.file("runbookd.db");
    const RunId run = park_then_kill(files, db, "r-2");
    std::this_thread::sleep_for(2500ms);

    test::RunbookdProcess second(files, "", db);
    REQUIRE(second.wait_ready());

    CHECK(wait_state(db, run, "failed", 5s));
    CHECK(query_value(db, "SELECT state || ',' || decided_by FROM approvals") ==
          "timed_out,runbookd");
}

TEST_CASE("runbookctl approve and runs show speak the approval", "[approval][cli]") {
    Gated g;
    const RunId run = fire(g.d.url(), "cli-1");
    REQUIRE(wait_state(g.d.db(), run, "waiting_approval"));

    auto list = test::run_command(
        {RUNBOOKCTL_BINARY, "--url", g.d.url(), "runs", "list", "--state", "waiting_approval"});
    auto show = test::run_command(
        {RUNBOOKCTL_BINARY, "--url", g.d.url(), "runs", "show", std::to_string(run)});
    auto denied = test::run_command({RUNBOOKCTL_BINARY, "--url", g.d.url(), "approve",
                                     std::to_string(run), "restart", "--actor", "mallory"});
    auto approved =
        test::run_command({RUNBOOKCTL_BINARY, "--url", g.d.url(), "approve", std::to_string(run),
                           "restart", "--actor", "alice", "--comment", "checked"});

    CHECK(list.exit_code == 0);
    CHECK_THAT(list.output, Catch::Contains("waiting_approval") &&
                                Catch::Contains("waiting for approval of step \"restart\""));
    CHECK(show.exit_code == 0);
    CHECK_THAT(show.output, Catch::Contains("approval of step restart: pending") &&
                                Catch::Contains("approvers: alice, bob"));
    CHECK(denied.exit_code == 1);
    CHECK_THAT(denied.output, Catch::Contains("403"));
    CHECK(approved.exit_code == 0);
    CHECK(wait_state(g.d.db(), run, "succeeded"));
    CHECK(query_value(g.d.db(), "SELECT comment FROM approvals") == "checked");
}

TEST_CASE("a version 9 database is migrated and keeps its runs", "[approval][store]") {
    test::TempDir data;
    std::string db;
    RunId run = 0;
    {
        test::TempDir markers;
        TestDaemon d(RunbookFiles{{"gated.yaml", gated_runbook(markers.path().string(), "{}")}});
        run = fire(d.url(), "m-1");
        REQUIRE(wait_state(d.db(), run, "waiting_approval"));
        REQUIRE(d.post(fmt::format("/api/v1/runs/{}/cancel", run), R"({"actor": "dora"})").ok());
        REQUIRE(wait_state(d.db(), run, "cancelled"));
        d.daemon().shutdown();
        db = data.file("v9.db");
        // The write-ahead log too: it may hold commits not yet in the main file.
        std::filesystem::copy_file(d.db(), db);
        if (std::filesystem::exists(d.db() + "-wal")) {
            std::filesystem::copy_file(d.db() + "-wal", db + "-wal");
        }
    }
    // Back to what a version 9 runbookd wrote: runs with the version 7 CHECK, no approvals.
    sqlite3* handle = nullptr;
    REQUIRE(sqlite3_open(db.c_str(), &handle) == SQLITE_OK);
    char* error = nullptr;
    const int rc = sqlite3_exec(
        handle,
        "DROP TABLE approvals;"
        "CREATE TABLE runs_v9 (id INTEGER PRIMARY KEY, runbook TEXT NOT NULL, runbook_hash TEXT "
        "NOT NULL REFERENCES runbook_versions(content_hash), trigger TEXT NOT NULL CHECK (trigger "
        "IN ('alert', 'manual')), alert_id INTEGER REFERENCES alerts(id), actor TEXT NOT NULL, "
        "state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', "
        "'cancelled', 'interrupted')), reason TEXT NOT NULL, created_at TEXT NOT NULL, "
        "started_at TEXT, finished_at TEXT, cancelled_by TEXT) STRICT;"
        "INSERT INTO runs_v9 SELECT id, runbook, runbook_hash, trigger, alert_id, actor, state, "
        "reason, created_at, started_at, finished_at, cancelled_by FROM runs; DROP TABLE runs;"
        "ALTER TABLE runs_v9 RENAME TO runs; CREATE INDEX runs_by_runbook ON runs (runbook, id);"
        "ALTER TABLE deliveries DROP COLUMN traceparent;"
        "DELETE FROM schema_migrations WHERE version >= 10;",
        nullptr, nullptr, &error);
    INFO((error != nullptr ? error : ""));
    REQUIRE(rc == SQLITE_OK);
    sqlite3_close(handle);
    REQUIRE(query_value(db, "SELECT max(version) FROM schema_migrations") == "9");
    const std::string before =
        query_value(db, "SELECT group_concat(id || state || reason || cancelled_by) FROM runs");

    SqliteOptions options;
    options.path = db;
    auto store = open_sqlite_store(options);
    REQUIRE(store.ok());
    (*store)->close();

    CHECK(query_value(db, "SELECT max(version) FROM schema_migrations") == "12");
    CHECK(query_value(db,
                      "SELECT group_concat(id || state || reason || cancelled_by) FROM "
                      "runs") == before);
    CHECK(query_value(db, "SELECT count(*) FROM approvals") == "0");
    CHECK(query_value(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'runs_by_runbook'") ==
          "1");
    CHECK_THAT(query_value(db, "SELECT sql FROM sqlite_schema WHERE name = 'runs'"),
               Catch::Contains("'waiting_approval'"));
    CHECK(chain_intact(db));
}

TEST_CASE("time spent waiting for approval does not count against the run's timeout",
          "[approval][timeout]") {
    test::TempDir markers;
    const std::string runbook = fmt::format(R"(name: first-gated
matchers: ['alertname="Gate"']
timeout: 1s
steps:
  - name: restart
    approval: {{}}
    argv: [/bin/sh, -c, 'echo ran > {}/ran']
)",
                                            markers.path().string());
    TestDaemon d(RunbookFiles{{"first.yaml", runbook}});
    const RunId run = fire(d.url(), "rt-1");
    REQUIRE(wait_state(d.db(), run, "waiting_approval"));
    std::this_thread::sleep_for(1500ms);

    auto r = answer(d.url(), run, "restart", "approve", {{"actor", "alice"}});

    REQUIRE(r.ok());
    CHECK(r->status == 200);
    CHECK(wait_state(d.db(), run, "succeeded"));
    CHECK(std::filesystem::exists(markers.path() / "ran"));
}
