#include <csignal>
#include <functional>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "support/support.hpp"

namespace {

using namespace runbookd;
using namespace std::chrono_literals;

using test::run_command;

constexpr const char* kBroken = R"(name: broken
matchers:
  - alertname=~"(unclosed"
steps:
  - name: one
    argv: [echo, hi]
    retry: 3
)";

}  // namespace

TEST_CASE("the bundled runbooks pass lint", "[cli]") {
    auto r =
        run_command({RUNBOOKCTL_BINARY, "lint", std::string(RUNBOOKD_SOURCE_DIR) + "/runbooks"});

    INFO(r.output);
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.output, Catch::Contains("OK"));
}

TEST_CASE("lint prints every error with file:line:column and exits non-zero", "[cli]") {
    test::TempDir dir;
    const std::string file = dir.file("broken.yaml");
    test::write_file(file, kBroken);

    auto r = run_command({RUNBOOKCTL_BINARY, "lint", dir.path().string()});

    CHECK(r.exit_code == 1);
    CHECK_THAT(r.output, Catch::Contains(file + ":3:5: bad regular expression"));
    CHECK_THAT(r.output, Catch::Contains(file + ":7:5: unknown key \"retry\" in step"));
    CHECK_THAT(r.output, Catch::Contains("2 errors"));
}

TEST_CASE("runbookd refuses to start on invalid runbooks, with the same messages", "[cli]") {
    test::TempDir dir;
    const std::string file = dir.file("runbooks/broken.yaml");
    test::write_file(file, kBroken);

    auto r = run_command({RUNBOOKD_BINARY, "--runbooks", dir.file("runbooks"), "--db",
                          dir.file("x.db"), "--listen", "127.0.0.1:0"});

    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Catch::Contains(file + ":3:5: bad regular expression"));
    CHECK_THAT(r.output, Catch::Contains(file + ":7:5: unknown key \"retry\" in step"));
}

TEST_CASE("runbookd refuses a bad config file with file:line:column", "[cli]") {
    test::TempDir dir;
    test::write_file(dir.file("runbookd.yaml"), "listen: 127.0.0.1:0\nruns:\n  max_concurent: 4\n");

    auto r = run_command({RUNBOOKD_BINARY, "--config", dir.file("runbookd.yaml")});

    CHECK(r.exit_code == 2);
    CHECK_THAT(r.output, Catch::Contains(dir.file("runbookd.yaml") +
                                         ":3:3: unknown key \"max_concurent\" in runs"));
}

TEST_CASE("runbookctl lists and shows runs", "[cli]") {
    test::TestDaemon d(test::RunbookFiles{{"echo.yaml", R"(name: host-echo
matchers: ['alertname="HostHighLoad"']
steps:
  - name: show
    argv: [/bin/echo, "{{ alert.labels.instance }}"]
)"}});
    REQUIRE(d.post("/api/v1/webhooks/alertmanager",
                   test::fixture("alertmanager/v4-firing-two-alerts.json"))
                .ok());
    REQUIRE(d.wait_runs_finished());

    auto list = run_command({RUNBOOKCTL_BINARY, "--url", d.url(), "runs", "list"});
    auto show = run_command({RUNBOOKCTL_BINARY, "--url", d.url(), "runs", "show", "1"});
    auto json = run_command({RUNBOOKCTL_BINARY, "--url", d.url(), "-o", "json", "runs", "list"});
    auto runbooks = run_command({RUNBOOKCTL_BINARY, "--url", d.url(), "runbooks", "list"});

    CHECK(list.exit_code == 0);
    CHECK_THAT(list.output,
               Catch::Contains("succeeded  host-echo  HostHighLoad  ecdedf3a5612da28"));
    CHECK(show.exit_code == 0);
    CHECK_THAT(show.output, Catch::Contains("run 1  succeeded  runbook host-echo"));
    CHECK_THAT(show.output, Catch::Contains("| node-1.example.internal:9100"));
    CHECK(json.exit_code == 0);
    CHECK(nlohmann::json::parse(json.output)["runs"].size() == 2);
    CHECK_THAT(runbooks.output, Catch::Contains("host-echo  1      alertname=\"HostHighLoad\""));
}

TEST_CASE("runbookctl says when runbookd cannot be reached or the run does not exist", "[cli]") {
    test::TestDaemon d(test::RunbookFiles{});
    const std::string dead = fmt::format("http://127.0.0.1:{}", test::free_tcp_port());

    auto unreachable = run_command({RUNBOOKCTL_BINARY, "--url", dead, "runs", "list"});
    auto missing = run_command({RUNBOOKCTL_BINARY, "--url", d.url(), "runs", "show", "42"});

    CHECK(unreachable.exit_code == 3);
    CHECK_THAT(unreachable.output, Catch::Contains("cannot reach runbookd at " + dead));
    CHECK(missing.exit_code == 1);
    CHECK_THAT(missing.output, Catch::Contains("404: run 42 does not exist"));
}

TEST_CASE("lint warns about a runbook that no alert can start but passes it", "[cli]") {
    test::TempDir dir;
    test::write_file(dir.file("manual.yaml"),
                     "name: manual\nsteps:\n  - name: one\n    argv: [/bin/true]\n");

    auto r = run_command({RUNBOOKCTL_BINARY, "lint", dir.path().string()});

    CHECK(r.exit_code == 0);
    CHECK_THAT(r.output,
               Catch::Contains(dir.file("manual.yaml") + ":1:1: warning: runbook has no matchers"));
}

TEST_CASE("bad usage exits 2 with the problem named", "[cli]") {
    auto no_command = run_command({RUNBOOKCTL_BINARY});
    auto bad_limit = run_command({RUNBOOKCTL_BINARY, "runs", "list", "--limit", "x"});
    auto missing_config = run_command({RUNBOOKD_BINARY, "--config", "/nonexistent/runbookd.yaml"});

    CHECK(no_command.exit_code == 2);
    CHECK(bad_limit.exit_code == 2);
    CHECK_THAT(bad_limit.output, Catch::Contains("--limit"));
    CHECK(missing_config.exit_code == 2);
    CHECK_THAT(missing_config.output, Catch::Contains("/nonexistent/runbookd.yaml"));
}

TEST_CASE("a second SIGTERM cancels the active runs instead of waiting out the grace", "[cli]") {
    test::TempDir dir;
    test::write_file(dir.file("runbooks/slow.yaml"), R"(name: slow
matchers: ['alertname="HostHighLoad"']
steps:
  - name: wait
    argv: [sleep, "60"]
)");
    test::write_file(dir.file("runbookd.yaml"), "runs:\n  shutdown_grace: 60s\n");
    const std::uint16_t port = test::free_tcp_port();
    const std::string db = dir.file("runbookd.db");
    test::Subprocess daemon(
        {RUNBOOKD_BINARY, "--config", dir.file("runbookd.yaml"), "--listen",
         fmt::format("127.0.0.1:{}", port), "--runbooks", dir.file("runbooks"), "--db", db},
        dir.file("runbookd.log"));
    const std::string url = fmt::format("http://127.0.0.1:{}", port);
    REQUIRE(test::wait_ready(url));
    REQUIRE(
        test::post_notification(url, test::fixture("alertmanager/v4-firing-two-alerts.json")).ok());
    REQUIRE(test::wait_until(
        [&] {
            return test::query_value(db, "SELECT count(*) FROM runs WHERE state = 'running'") ==
                   "2";
        },
        5s));

    daemon.signal(SIGTERM);
    std::this_thread::sleep_for(300ms);
    daemon.signal(SIGTERM);
    const auto code = daemon.wait(10s);

    INFO(test::read_file(dir.file("runbookd.log")));
    CHECK(code == 0);
    CHECK(test::query(db, "SELECT DISTINCT state, reason FROM runs") ==
          std::vector<std::vector<std::string>>{
              {"cancelled", "cancelled: runbookd was told a second time to stop"}});
}

TEST_CASE("runbookctl runs show escapes control characters from step output", "[cli]") {
    test::TestDaemon d(test::RunbookFiles{{"color.yaml", R"(name: color
matchers: ['alertname="HostHighLoad"']
steps:
  - name: paint
    shell: printf '\033[2J\033]0;pwned\007red\r\nnext\n'
)"}});
    REQUIRE(d.post("/api/v1/webhooks/alertmanager",
                   test::fixture("alertmanager/v4-firing-two-alerts.json"))
                .ok());
    REQUIRE(d.wait_runs_finished());

    auto show = run_command({RUNBOOKCTL_BINARY, "--url", d.url(), "runs", "show", "1"});

    CHECK(show.exit_code == 0);
    CHECK_THAT(show.output, Catch::Contains("| \\x1b[2J\\x1b]0;pwned\\x07red\\x0d"));
    CHECK_THAT(show.output, Catch::Contains("| next"));
    CHECK(show.output.find('\x1b') == std::string::npos);
    CHECK_THAT(show.output, Catch::Contains("output file: "));
}

namespace {

// runbookd as a child process on its own port and database, for crash tests.
struct CrashTarget {
    test::TempDir dir;
    std::uint16_t port = test::free_tcp_port();
    std::string db = dir.file("runbookd.db");
    std::string url = fmt::format("http://127.0.0.1:{}", port);

    explicit CrashTarget(const std::string& runbook) {
        test::write_file(dir.file("runbooks/r.yaml"), runbook);
    }
    std::vector<std::string> argv() const {
        return {RUNBOOKD_BINARY,
                "--listen",
                fmt::format("127.0.0.1:{}", port),
                "--runbooks",
                dir.file("runbooks"),
                "--db",
                db};
    }
    bool up() const {
        return test::wait_until([&] { return http::send_request("GET", url + "/").ok(); }, 15s);
    }
    void fire(const std::string& alertname) const {
        const std::string alert = fmt::format(
            R"({{"version":"4","status":"firing","receiver":"r","groupKey":"g",
            "alerts":[{{"status":"firing","labels":{{"alertname":"{}"}},"annotations":{{}},
            "startsAt":"2026-12-04T15:00:00Z","endsAt":"0001-01-01T00:00:00Z"}}]}})",
            alertname);
        auto r = http::send_request("POST", url + "/api/v1/webhooks/alertmanager", alert,
                                    {{"Content-Type", "application/json"}});
        REQUIRE(r.ok());
        REQUIRE(r->status == 200);
    }
    // Starts runbookd, fires `alertname`, waits until `ready` says so, calls `before_kill`,
    // then SIGKILLs runbookd: a crash, no drain, no cleanup.
    void crash_when(const std::string& alertname, const std::function<bool()>& ready,
                    const std::function<void()>& before_kill = {}) const {
        test::Subprocess first(argv(), dir.file("first.log"));
        REQUIRE(up());
        fire(alertname);
        REQUIRE(test::wait_until(ready, 5s));
        if (before_kill) {
            before_kill();
        }
        first.signal(SIGKILL);
        REQUIRE(first.wait(5s).has_value());
    }
    std::function<bool()> query_is(std::string sql, std::string value) const {
        return [db = db, sql = std::move(sql), value = std::move(value)] {
            return test::query_value(db, sql) == value;
        };
    }
};

pid_t read_pid_file(const std::string& path) {
    if (!std::filesystem::exists(path)) {
        return 0;
    }
    const std::string text = test::read_file(path);
    return text.empty() ? 0 : std::stoi(text);
}

}  // namespace

TEST_CASE("after a crash, the next runbookd stops the step the crashed one left running",
          "[cli][recovery]") {
    CrashTarget t(R"(name: slow
matchers: ['alertname="Slow"']
steps:
  - name: nap
    argv: [/bin/sleep, "300"]
)");
    const std::string& db = t.db;
    pid_t step_pid = 0;
    t.crash_when("Slow", t.query_is("SELECT count(pid) FROM attempts", "1"), [&] {
        step_pid = std::stoi(test::query_value(db, "SELECT pid FROM attempts"));
        REQUIRE(test::process_running(step_pid));
    });
    CHECK(test::process_running(step_pid));  // left running by the crash

    test::Subprocess second(t.argv(), t.dir.file("second.log"));
    const bool ready = t.up();
    const bool stopped = test::wait_until([&] { return !test::process_running(step_pid); }, 2s);
    if (!stopped) {
        ::kill(step_pid, SIGKILL);  // never leave the test's own step behind
    }
    INFO(test::read_file(t.dir.file("second.log")));
    REQUIRE(ready);
    CHECK(stopped);
    // Not idempotent: whether it did its work is unknown, and nothing runs it again.
    CHECK(test::query_value(db, "SELECT state FROM runs") == "interrupted");
    CHECK(test::query_value(db, "SELECT group_concat(state) FROM attempts") == "outcome_unknown");
    CHECK_THAT(test::query_value(db, "SELECT reason FROM runs"),
               Catch::Contains("the step is not marked idempotent"));
    CHECK_THAT(test::query_value(db, "SELECT reason FROM runs"),
               Catch::Contains(fmt::format("step \"nap\" was still running (process group {}) "
                                           "and was stopped with SIGTERM",
                                           step_pid)));
    second.signal(SIGTERM);
    CHECK(second.wait(10s) == 0);
}

TEST_CASE("after a crash an idempotent step runs again, and steps that escaped are stopped",
          "[cli][recovery]") {
    // The first attempt starts a process in a session of its own (out of the step's process
    // group, so no recorded pid leads to it) and then sleeps; runbookd is killed at once, before
    // it records any pid. The next runbookd must still find both, by the marker in their
    // environment, stop them, and run the step again.
    test::TempDir marks;
    const std::string escaped = marks.file("escaped.pid");
    const std::string attempts = marks.file("attempts");
    CrashTarget t(fmt::format(R"(name: resume
matchers: ['alertname="Resume"']
steps:
  - name: mark
    idempotent: true
    shell: |
      echo "$RUNBOOK_ATTEMPT" >> {0}
      if [ "$RUNBOOK_ATTEMPT" = 1 ]; then
        setsid sleep 300 &
        echo $! > {1}.tmp && mv {1}.tmp {1}
        exec sleep 300
      fi
  - name: after
    argv: [/bin/true]
)",
                              attempts, escaped));
    t.crash_when("Resume", [&] { return read_pid_file(escaped) != 0; });
    const pid_t escapee = read_pid_file(escaped);
    INFO("pid recorded before the crash: " << test::query_value(t.db,
                                                                "SELECT count(pid) FROM attempts"));
    REQUIRE(test::process_running(escapee));

    test::Subprocess second(t.argv(), t.dir.file("second.log"));
    const bool ready = t.up();
    const bool stopped = test::wait_until([&] { return !test::process_running(escapee); }, 2s);
    if (!stopped) {
        ::kill(escapee, SIGKILL);
    }
    INFO(test::read_file(t.dir.file("second.log")));
    REQUIRE(ready);
    CHECK(stopped);
    REQUIRE(test::wait_until(
        [&] { return test::query_value(t.db, "SELECT state FROM runs") == "succeeded"; }, 10s));
    CHECK(test::query_value(t.db,
                            "SELECT group_concat(step || ':' || attempt || ':' || state) "
                            "FROM attempts ORDER BY id") ==
          "mark:1:outcome_unknown,mark:2:succeeded,after:1:succeeded");
    CHECK(test::read_file(attempts) == "1\n2\n");
    CHECK_THAT(test::query_value(t.db, "SELECT detail FROM events WHERE kind = 'run.resumed'"),
               Catch::Contains("step \\\"mark\\\" was interrupted"));
    second.signal(SIGTERM);
    CHECK(second.wait(10s) == 0);
}

TEST_CASE("on_interrupt: fail ends an interrupted run failed even when its step is idempotent",
          "[cli][recovery]") {
    CrashTarget t(R"(name: strict
matchers: ['alertname="Strict"']
on_interrupt: fail
steps:
  - name: nap
    idempotent: true
    argv: [/bin/sleep, "300"]
)");
    t.crash_when("Strict", t.query_is("SELECT count(pid) FROM attempts", "1"));
    test::Subprocess second(t.argv(), t.dir.file("second.log"));
    REQUIRE(t.up());
    CHECK(test::query_value(t.db, "SELECT state FROM runs") == "failed");
    CHECK_THAT(test::query_value(t.db, "SELECT reason FROM runs"),
               Catch::Contains("(on_interrupt: fail)"));
    CHECK(test::query_value(t.db, "SELECT state FROM attempts") == "outcome_unknown");
    second.signal(SIGTERM);
    CHECK(second.wait(10s) == 0);
}

TEST_CASE("a cancel recorded before a crash ends the run cancelled, not resumed",
          "[cli][recovery]") {
    // The step ignores SIGTERM and has a long grace: runbookd dies while it is being stopped.
    CrashTarget t(R"(name: stubborn
matchers: ['alertname="Stubborn"']
steps:
  - name: wait
    idempotent: true
    grace: 60s
    shell: "trap '' TERM; sleep 300"
)");
    t.crash_when("Stubborn", t.query_is("SELECT count(pid) FROM attempts", "1"), [&] {
        auto r = http::send_request("POST", t.url + "/api/v1/runs/1/cancel",
                                    R"({"actor":"alice","reason":"wrong host"})",
                                    {{"Content-Type", "application/json"}});
        REQUIRE(r.ok());
        REQUIRE(r->status == 202);
    });
    test::Subprocess second(t.argv(), t.dir.file("second.log"));
    REQUIRE(t.up());

    INFO(test::read_file(t.dir.file("second.log")));
    CHECK(test::query_value(t.db, "SELECT state || '|' || cancelled_by FROM runs") ==
          "cancelled|alice");
    CHECK_THAT(test::query_value(t.db, "SELECT reason FROM runs"),
               Catch::StartsWith("cancelled by alice: wrong host; runbookd stopped before the "
                                 "run had ended"));
    CHECK(test::query_value(t.db, "SELECT group_concat(state) FROM attempts") == "outcome_unknown");
    CHECK(test::query_value(
              t.db, "SELECT count(*) FROM events WHERE kind = 'run.cancel_requested'") == "1");
    second.signal(SIGTERM);
    CHECK(second.wait(10s) == 0);
}

TEST_CASE("after a crash during a retry's backoff, the retry still waits out the backoff",
          "[cli][recovery]") {
    CrashTarget t(R"(name: flaky
matchers: ['alertname="Flaky"']
steps:
  - name: try
    retries: {attempts: 2, initial: 3s}
    argv: [/bin/false]
)");
    t.crash_when("Flaky", t.query_is("SELECT count(*) FROM attempts WHERE state = 'failed'", "1"));
    test::Subprocess second(t.argv(), t.dir.file("second.log"));
    REQUIRE(t.up());
    REQUIRE(test::wait_until(
        [&] { return test::query_value(t.db, "SELECT state FROM runs") == "failed"; }, 10s));

    // Attempt 2 started no sooner than the backoff after attempt 1 ended (times in ms).
    const auto gap = std::stoll(test::query_value(
        t.db,
        "SELECT CAST((julianday(b.started_at) - julianday(a.finished_at)) * 86400000 AS "
        "INTEGER) FROM attempts a JOIN attempts b ON b.attempt = 2 WHERE a.attempt = 1"));
    CHECK(gap >= 2900);
    CHECK_THAT(test::query_value(t.db, "SELECT reason FROM runs"),
               Catch::Contains("failed after 2 attempts"));
    second.signal(SIGTERM);
    CHECK(second.wait(10s) == 0);
}
