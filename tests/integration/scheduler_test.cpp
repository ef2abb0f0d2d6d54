// The run engine through a real runbookd: retries, the runbook's concurrency and keyed locks.
#include <filesystem>
#include <fstream>
#include <iterator>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include "common/hash.hpp"
#include "support/support.hpp"

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using Json = nlohmann::json;
using test::query;
using test::query_value;
using test::RunbookFiles;
using test::TestDaemon;

std::string payload(const std::vector<std::pair<std::string, std::string>>& alerts) {
    Json list = Json::array();
    for (const auto& [alertname, instance] : alerts) {
        list.push_back({{"status", "firing"},
                        {"labels", {{"alertname", alertname}, {"instance", instance}}},
                        {"annotations", Json::object()},
                        {"startsAt", "2026-12-04T15:49:26Z"},
                        {"endsAt", "0001-01-01T00:00:00Z"},
                        {"generatorURL", "http://prometheus:9090/graph"}});
    }
    return Json{{"version", "4"},      {"receiver", "runbookd"}, {"status", "firing"},
                {"groupKey", "{}:{}"}, {"alerts", list},         {"truncatedAlerts", 0}}
        .dump();
}

std::vector<std::int64_t> post_alerts(TestDaemon& d,
                                      const std::vector<std::pair<std::string, std::string>>& a) {
    auto r = d.post("/api/v1/webhooks/alertmanager", payload(a));
    REQUIRE(r.ok());
    REQUIRE(r->status == 200);
    const Json body = Json::parse(r->body);
    std::vector<std::int64_t> ids;
    for (const auto& run : body.at("runs")) {
        ids.push_back(run.at("run_id"));
    }
    return ids;
}

std::string run_field(const TestDaemon& d, std::int64_t id, const std::string& column) {
    return query_value(d.db(), "SELECT " + column + " FROM runs WHERE id = " + std::to_string(id));
}

// Milliseconds between two RFC 3339 times written by runbookd.
double millis_between(const TestDaemon& d, const std::string& a, const std::string& b) {
    return std::stod(query_value(
        d.db(), "SELECT (julianday('" + b + "') - julianday('" + a + "')) * 86400000.0"));
}

}  // namespace

TEST_CASE("a failing step is retried with backoff, never overlapping, until attempts run out",
          "[runs][retry]") {
    constexpr const char* kRunbook = R"(name: flaky
matchers: ['alertname="Flaky"']
steps:
  - name: try
    argv: [/bin/sh, -c, 'echo "attempt $RUNBOOK_ATTEMPT key $RUNBOOK_IDEMPOTENCY_KEY"; exit 3']
    retries: {attempts: 3, initial: 300ms, multiplier: 2}
    retry_on: [3]
)";
    TestDaemon d(RunbookFiles{{"flaky.yaml", kRunbook}});
    const auto id = post_alerts(d, {{"Flaky", "a"}}).at(0);
    REQUIRE(d.wait_runs_finished());

    CHECK(run_field(d, id, "state") == "failed");
    CHECK(run_field(d, id, "reason") == "step \"try\" failed after 3 attempts: exited with code 3");
    const auto rows = query(d.db(),
                            "SELECT attempt, exit_code, started_at, finished_at, stdout_excerpt "
                            "FROM attempts ORDER BY attempt");
    REQUIRE(rows.size() == 3);
    for (std::size_t i = 0; i < rows.size(); ++i) {
        CHECK(rows[i][0] == std::to_string(i + 1));
        CHECK(rows[i][1] == "3");
        CHECK(rows[i][4] ==
              "attempt " + std::to_string(i + 1) + " key " + std::to_string(id) + ":try\n");
    }
    // Backoff 300 ms, then 600 ms, each counted from the end of the attempt before.
    CHECK(millis_between(d, rows[0][3], rows[1][2]) >= 290);
    CHECK(millis_between(d, rows[1][3], rows[2][2]) >= 590);
}

TEST_CASE("a retry that succeeds ends the run succeeded", "[runs][retry]") {
    test::TempDir dir;
    const std::string marker = dir.file("done-once");
    const std::string runbook = R"(name: second-time-lucky
matchers: ['alertname="Lucky"']
steps:
  - name: try
    argv: [/bin/sh, -c, 'if [ -e "$1" ]; then exit 0; fi; touch "$1"; exit 75', sh, ")" +
                                marker + R"("]
    retries: {attempts: 5, initial: 50ms}
  - name: after
    argv: [/bin/true]
)";
    TestDaemon d(RunbookFiles{{"lucky.yaml", runbook}});
    const auto id = post_alerts(d, {{"Lucky", "a"}}).at(0);
    REQUIRE(d.wait_runs_finished());

    CHECK(run_field(d, id, "state") == "succeeded");
    CHECK(query_value(d.db(),
                      "SELECT group_concat(step || ':' || attempt || ':' || state, ' ') "
                      "FROM (SELECT * FROM attempts ORDER BY id)") ==
          "try:1:failed try:2:succeeded after:1:succeeded");
}

TEST_CASE("exit codes outside retry_on, and spawn errors, are not retried", "[runs][retry]") {
    constexpr const char* kRunbook = R"(name: picky
matchers: ['alertname="Picky"']
steps:
  - name: try
    argv: [/bin/sh, -c, 'exit 4']
    retries: 3
    retry_on: [75]
)";
    constexpr const char* kMissing = R"(name: missing
matchers: ['alertname="Missing"']
steps:
  - name: try
    argv: [/nonexistent/program]
    retries: 3
)";
    TestDaemon d(RunbookFiles{{"picky.yaml", kRunbook}, {"missing.yaml", kMissing}});
    post_alerts(d, {{"Picky", "a"}, {"Missing", "b"}});
    REQUIRE(d.wait_runs_finished());

    CHECK(query_value(d.db(), "SELECT count(*) FROM attempts") == "2");
    CHECK(query_value(d.db(), "SELECT count(*) FROM runs WHERE state = 'failed'") == "2");
    CHECK_THAT(query_value(d.db(),
                           "SELECT error FROM attempts WHERE step = 'try' AND "
                           "argv LIKE '%nonexistent%'"),
               Catch::Contains("/nonexistent/program: No such file or directory"));
}

TEST_CASE("a timed-out step is retried only when retry_on says timeout", "[runs][retry]") {
    constexpr const char* kRunbook = R"(name: slow
matchers: ['alertname="Slow"']
steps:
  - name: nap
    argv: [/bin/sleep, "10"]
    timeout: 200ms
    retries: {attempts: 2, initial: 10ms}
    retry_on: [timeout]
)";
    TestDaemon d(RunbookFiles{{"slow.yaml", kRunbook}});
    post_alerts(d, {{"Slow", "a"}});
    REQUIRE(d.wait_runs_finished(10s));
    CHECK(query_value(d.db(), "SELECT group_concat(signal, ' ') FROM attempts") == "15 15");
    CHECK_THAT(query_value(d.db(), "SELECT reason FROM runs"),
               Catch::Contains("timed out after 200 ms"));
}

TEST_CASE("a run cancelled while it waits to retry ends at once", "[runs][retry][cancel]") {
    constexpr const char* kRunbook = R"(name: patient
matchers: ['alertname="Patient"']
steps:
  - name: try
    argv: [/bin/false]
    retries: {attempts: 5, initial: 30s, max: 30s}
)";
    TestDaemon d(RunbookFiles{{"patient.yaml", kRunbook}});
    const auto id = post_alerts(d, {{"Patient", "a"}}).at(0);
    REQUIRE(test::wait_until(
        [&] {
            return query_value(d.db(), "SELECT count(*) FROM attempts WHERE state = 'failed'") ==
                   "1";
        },
        5s));
    auto r = d.post("/api/v1/runs/" + std::to_string(id) + "/cancel", R"({"actor": "bob"})");
    REQUIRE(r.ok());
    REQUIRE(test::wait_until([&] { return run_field(d, id, "state") == "cancelled"; }, 3s));
    CHECK(run_field(d, id, "cancelled_by") == "bob");
    CHECK(query_value(d.db(), "SELECT count(*) FROM attempts") == "1");
}

TEST_CASE("runs with the same lock key never overlap, other keys run alongside", "[runs][lock]") {
    constexpr const char* kRunbook = R"(name: restart
matchers: ['alertname=~"Down|Dead"']
lock: "restart-{{ alert.labels.instance }}"
steps:
  - name: restart
    argv: [/bin/sleep, "0.5"]
)";
    TestDaemon d(RunbookFiles{{"restart.yaml", kRunbook}});
    const auto ids = post_alerts(d, {{"Down", "db-1"}, {"Dead", "db-1"}, {"Down", "db-2"}});
    REQUIRE(ids.size() == 3);
    REQUIRE(test::wait_until(
        [&] {
            return run_field(d, ids[1], "reason") ==
                   "waiting for lock \"restart-db-1\" held by run " + std::to_string(ids[0]);
        },
        3s));
    CHECK(run_field(d, ids[1], "state") == "queued");
    REQUIRE(d.wait_runs_finished());

    CHECK(query_value(d.db(), "SELECT count(*) FROM runs WHERE state = 'succeeded'") == "3");
    const auto times = [&](std::int64_t id) {
        return query(d.db(), "SELECT started_at, finished_at FROM attempts WHERE run_id = " +
                                 std::to_string(id))
            .at(0);
    };
    // Same key: the second starts after the first ended. Other key: overlaps the first.
    CHECK(millis_between(d, times(ids[0])[1], times(ids[1])[0]) >= 0);
    CHECK(millis_between(d, times(ids[2])[0], times(ids[0])[1]) > 0);
    CHECK(
        query_value(d.db(), "SELECT count(*) FROM events WHERE kind = 'run.waiting' AND run_id = " +
                                std::to_string(ids[1])) == "1");
}

TEST_CASE("a runbook's concurrency limits its runs at once", "[runs][lock]") {
    constexpr const char* kRunbook = R"(name: one-at-a-time
matchers: ['alertname="Busy"']
concurrency: 1
steps:
  - name: work
    argv: [/bin/sleep, "0.3"]
)";
    TestDaemon d(RunbookFiles{{"one.yaml", kRunbook}});
    const auto ids = post_alerts(d, {{"Busy", "a"}, {"Busy", "b"}, {"Busy", "c"}});
    REQUIRE(test::wait_until(
        [&] {
            return run_field(d, ids[2], "reason") ==
                   "waiting: runbook one-at-a-time runs at most 1 at once (concurrency) and 1 is "
                   "running";
        },
        3s));
    REQUIRE(d.wait_runs_finished());
    const auto rows = query(d.db(), "SELECT started_at, finished_at FROM attempts ORDER BY id");
    REQUIRE(rows.size() == 3);
    CHECK(millis_between(d, rows[0][1], rows[1][0]) >= 0);
    CHECK(millis_between(d, rows[1][1], rows[2][0]) >= 0);
}

TEST_CASE("an injection label reaches shell and argv steps as a literal string", "[runs][shell]") {
    test::TempDir work;
    const std::string runbook = R"(name: inject
matchers: ['alertname="Inject"']
steps:
  - name: via-shell
    cwd: )" + work.path().string() +
                                R"(
    shell: |
      printf '%s' "$RUNBOOK_LABEL_INSTANCE"
      printf '|%s' "$1" "$0"
    args: ["{{ alert.labels.instance }}"]
  - name: via-argv
    cwd: )" + work.path().string() +
                                R"(
    argv: [/usr/bin/printf, "%s", "{{ alert.labels.instance }}"]
)";
    TestDaemon d(RunbookFiles{{"inject.yaml", runbook}});
    const std::string hostile = "x$(touch f)`touch g`;touch h; rm -rf / \"'";
    post_alerts(d, {{"Inject", hostile}});
    REQUIRE(d.wait_runs_finished());

    CHECK(query_value(d.db(), "SELECT state FROM runs") == "succeeded");
    CHECK(query_value(d.db(), "SELECT stdout_excerpt FROM attempts WHERE step = 'via-shell'") ==
          hostile + "|" + hostile + "|via-shell");
    CHECK(query_value(d.db(), "SELECT stdout_excerpt FROM attempts WHERE step = 'via-argv'") ==
          hostile);
    CHECK(query_value(d.db(),
                      "SELECT json_extract(argv, '$[0]') || ' ' || "
                      "json_extract(argv, '$[1]') FROM attempts WHERE step = "
                      "'via-shell'") == "/bin/sh -c");
    for (const char* name : {"f", "g", "h"}) {
        CHECK_FALSE(std::filesystem::exists(work.path() / name));
    }
}

TEST_CASE("a shell step's exit status and stop signal are its own", "[runs][shell]") {
    constexpr const char* kRunbook = R"(name: shelly
matchers: ['alertname="Shelly"']
steps:
  - name: stubborn
    shell: |
      trap 'echo got INT; exit 9' INT
      echo ready
      sleep 10 &
      wait
    stop_signal: SIGINT
    grace: 2s
    timeout: 300ms
)";
    TestDaemon d(RunbookFiles{{"shelly.yaml", kRunbook}});
    post_alerts(d, {{"Shelly", "a"}});
    REQUIRE(d.wait_runs_finished(10s));
    CHECK(query_value(d.db(), "SELECT exit_code FROM attempts") == "9");
    CHECK(query_value(d.db(), "SELECT stdout_excerpt FROM attempts") == "ready\ngot INT\n");
    CHECK_THAT(query_value(d.db(), "SELECT error FROM attempts"),
               Catch::Contains("sent SIGINT to the process group"));
}

namespace {

std::string read_bytes(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

}  // namespace

TEST_CASE("an attempt's full output is kept as a file, byte for byte, with its path audited",
          "[runs][output]") {
    const std::string runbook = std::string(R"(name: bytes
matchers: ['alertname="Bytes"']
steps:
  - name: raw
    argv: [")") + HELPER_BAD_UTF8 +
                                R"("]
)";
    TestDaemon d(RunbookFiles{{"bytes.yaml", runbook}});
    const auto id = post_alerts(d, {{"Bytes", "a"}}).at(0);
    REQUIRE(d.wait_runs_finished());

    const std::string path = query_value(d.db(), "SELECT output_path FROM attempts");
    CHECK(path == (std::filesystem::path(d.db()).replace_extension(".output") / std::to_string(id) /
                   "0-1.log")
                      .string());
    const std::string out1("a\xff\0\xc3(\n", 6);
    const std::string err("\xed\xa0\x80\0b\n", 6);
    const std::string out2("\xf8\x88\x80\x80\x80\0\n", 7);
    CHECK(read_bytes(path) == out1 + err + out2);
    CHECK(query_value(d.db(), "SELECT output_bytes || ' ' || output_truncated FROM attempts") ==
          "19 0");

    auto r = d.get("/api/v1/runs/" + std::to_string(id));
    REQUIRE(r.ok());
    const Json attempt = Json::parse(r->body)["attempts"][0];
    CHECK(attempt["stdout_base64"] == base64(out1 + out2));
    CHECK(attempt["stderr_base64"] == base64(err));
    CHECK(attempt["output_file"]["path"] == path);
    CHECK(attempt["output_file"]["truncated"] == false);
}

TEST_CASE("a step that ignores SIGTERM is killed after its grace, and the audit says each step",
          "[runs][output]") {
    const std::string runbook = std::string(R"(name: stubborn
matchers: ['alertname="Stubborn"']
steps:
  - name: ignore
    argv: [")") + HELPER_IGNORE_TERM +
                                R"("]
    timeout: 300ms
    grace: 300ms
)";
    TestDaemon d(RunbookFiles{{"stubborn.yaml", runbook}});
    post_alerts(d, {{"Stubborn", "a"}});
    REQUIRE(d.wait_runs_finished(10s));

    CHECK(query_value(d.db(), "SELECT signal FROM attempts") == "9");
    CHECK(query_value(d.db(),
                      "SELECT group_concat(kind, ' ') FROM (SELECT kind FROM events "
                      "WHERE attempt_id IS NOT NULL ORDER BY id)") ==
          "attempt.started attempt.stop_signal_sent attempt.grace_expired attempt.killed "
          "attempt.finished");
    CHECK_THAT(query_value(d.db(), "SELECT error FROM attempts"),
               Catch::Contains("then SIGKILL after the 300 ms grace period"));
}

TEST_CASE("a grandchild that leaves the step's session is killed when the step ends",
          "[runs][orphans]") {
    test::TempDir dir;
    const std::string pid_file = dir.file("grandchild.pid");
    const std::string runbook = std::string(R"(name: escape
matchers: ['alertname="Escape"']
steps:
  - name: escape
    argv: [")") + HELPER_ESCAPE_SESSION +
                                R"(", ")" + pid_file + R"("]
)";
    // This test process is the daemon: let it reap orphans (no other child of it exists here).
    TestDaemon d(RunbookFiles{{"escape.yaml", runbook}},
                 [](daemon::Config& c) { c.reap_orphans = true; });
    post_alerts(d, {{"Escape", "a"}});
    REQUIRE(d.wait_runs_finished());

    const pid_t grandchild = std::stoi(read_bytes(pid_file));
    CHECK(test::wait_until([&] { return ::kill(grandchild, 0) != 0; }, 3s));
    CHECK_THAT(query_value(d.db(),
                           "SELECT json_extract(detail, '$.detail') FROM events "
                           "WHERE kind = 'attempt.orphans_killed'"),
               Catch::Contains(std::to_string(grandchild)));
}

TEST_CASE("a step's limits and user apply to its processes", "[runs][limits]") {
    constexpr const char* kRunbook = R"(name: limited
matchers: ['alertname="Limited"']
steps:
  - name: nofile
    shell: ulimit -n
    limits: {open_files: 16}
  - name: default-nofile
    shell: ulimit -n
)";
    constexpr const char* kUser = R"(name: unprivileged
matchers: ['alertname="Unprivileged"']
steps:
  - name: who
    argv: [/usr/bin/id, -un]
    user: nobody
)";
    struct rlimit before {};
    REQUIRE(::getrlimit(RLIMIT_NOFILE, &before) == 0);
    TestDaemon d(RunbookFiles{{"limited.yaml", kRunbook}, {"user.yaml", kUser}});
    post_alerts(d, {{"Limited", "a"}, {"Unprivileged", "b"}});
    REQUIRE(d.wait_runs_finished());

    CHECK(query_value(d.db(), "SELECT stdout_excerpt FROM attempts WHERE step = 'nofile'") ==
          "16\n");
    // runbookd raised its own descriptor limit for its children's pipes; steps get the one
    // it started with.
    CHECK(query_value(d.db(),
                      "SELECT stdout_excerpt FROM attempts WHERE step = "
                      "'default-nofile'") == std::to_string(before.rlim_cur) + "\n");
    if (::geteuid() == 0) {
        CHECK(query_value(d.db(), "SELECT stdout_excerpt FROM attempts WHERE step = 'who'") ==
              "nobody\n");
    } else {
        CHECK_THAT(query_value(d.db(), "SELECT error FROM attempts WHERE step = 'who'"),
                   Catch::Contains("runbookd is not running as root"));
    }
}

namespace {

long status_field(const std::string& name) {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(name + ":", 0) == 0) {
            return std::stol(line.substr(name.size() + 1));
        }
    }
    return -1;
}

}  // namespace

TEST_CASE("1,000 concurrent sleeping steps run on a fixed number of threads", "[runs][scale]") {
    constexpr const char* kRunbook = R"(name: nap
matchers: ['alertname="Nap"']
steps:
  - name: nap
    argv: [/bin/sleep, "3"]
)";
    TestDaemon d(RunbookFiles{{"nap.yaml", kRunbook}}, [](daemon::Config& c) {
        c.runs.max_concurrent_runs = 1000;
        c.max_processes = 1000;
        c.http.body_limit = 8 << 20;
    });
    const long threads_idle = status_field("Threads");
    std::vector<std::pair<std::string, std::string>> alerts;
    for (int i = 0; i < 1000; ++i) {
        alerts.emplace_back("Nap", "host-" + std::to_string(i));
    }
    REQUIRE(post_alerts(d, alerts).size() == 1000);

    REQUIRE(test::wait_until(
        [&] {
            return query_value(d.db(), "SELECT count(*) FROM attempts WHERE state = 'running'") ==
                   "1000";
        },
        20s));
    // Every step is running now: same threads as before, RSS far from a thread or buffer each.
    CHECK(status_field("Threads") == threads_idle);
#if !defined(__SANITIZE_ADDRESS__)  // AddressSanitizer's shadow memory and quarantine inflate RSS
    INFO("VmRSS " << status_field("VmRSS") << " kB");
    CHECK(status_field("VmRSS") < 256 * 1024);  // kB
#endif
    REQUIRE(d.wait_runs_finished(60s));
    CHECK(query_value(d.db(), "SELECT count(*) FROM runs WHERE state = 'succeeded'") == "1000");
}

TEST_CASE("children left in a step's group are that step's, not orphans of another step",
          "[runs][orphans]") {
    constexpr const char* kTicker = R"(name: ticker
matchers: ['alertname="Ticker"']
steps:
  - name: tick
    shell: 'echo parent-exits; (for i in 1 2 3 4; do echo "tick $i"; sleep 0.3; done) &'
)";
    constexpr const char* kQuick = R"(name: quick
matchers: ['alertname="Quick"']
steps:
  - name: quick
    argv: [/bin/true]
)";
    constexpr const char* kStopped = R"(name: stopped
matchers: ['alertname="Stopped"']
steps:
  - name: two-sleeps
    shell: 'sleep 7 & sleep 8'
    timeout: 500ms
)";
    TestDaemon d(
        RunbookFiles{{"ticker.yaml", kTicker}, {"quick.yaml", kQuick}, {"stopped.yaml", kStopped}},
        [](daemon::Config& c) { c.reap_orphans = true; });
    post_alerts(d, {{"Ticker", "a"}, {"Stopped", "c"}});
    std::this_thread::sleep_for(100ms);
    post_alerts(d, {{"Quick", "b"}});
    REQUIRE(d.wait_runs_finished(10s));

    // The ticker's loop outlived its shell but stayed in its group: the step waited for it
    // (output drain) and kept all of its output.
    CHECK(query_value(d.db(), "SELECT stdout_excerpt FROM attempts WHERE step = 'tick'") ==
          "parent-exits\ntick 1\ntick 2\ntick 3\ntick 4\n");
    // Nothing escaped any group, so nothing was reported as an orphan.
    CHECK(query_value(d.db(),
                      "SELECT count(*) FROM events WHERE kind = "
                      "'attempt.orphans_killed'") == "0");
    CHECK(query_value(d.db(), "SELECT signal FROM attempts WHERE step = 'two-sleeps'") == "15");
}
