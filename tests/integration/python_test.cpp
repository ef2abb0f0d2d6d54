// Python steps through a real runbookd and the real worker (runbookd-python-worker): the pool,
// the executor and the protocol (docs/python-steps.md).
#include <csignal>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <signal.h>

#include "exec/process.hpp"
#include "support/support.hpp"

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using Json = nlohmann::json;
using test::query;
using test::query_value;
using test::RunbookFiles;
using test::TestDaemon;

constexpr const char* kWorker = PYTHON_WORKER_BINARY;

// A runbook for alerts named `alertname` with the given steps (YAML list items).
std::string runbook(const std::string& name, const std::string& steps) {
    return "name: " + name + "\nmatchers: ['alertname=\"" + name + "\"']\nsteps:\n" + steps;
}

struct PythonDaemon {
    explicit PythonDaemon(const RunbookFiles& runbooks,
                          const std::function<void(daemon::Config&)>& adjust = {})
        : d(runbooks, [&adjust](daemon::Config& c) {
              c.python.worker = kWorker;
              c.python.workers = 2;
              c.python.startup_timeout = 10s;
              c.process.grace = 500ms;
              c.secrets = {};
              if (adjust) {
                  adjust(c);
              }
          }) {}

    std::int64_t fire(const std::string& alertname, const std::string& instance = "a") {
        auto r =
            d.post("/api/v1/webhooks/alertmanager", test::firing_notification(alertname, instance));
        REQUIRE(r.ok());
        REQUIRE(r->status == 200);
        return Json::parse(r->body).at("runs").at(0).at("run_id");
    }
    std::string run(std::int64_t id, const std::string& column) const {
        return query_value(d.db(),
                           "SELECT " + column + " FROM runs WHERE id = " + std::to_string(id));
    }
    std::string attempt(std::int64_t id, const std::string& step, const std::string& column) const {
        return query_value(d.db(), "SELECT " + column +
                                       " FROM attempts WHERE run_id = " + std::to_string(id) +
                                       " AND step = '" + step + "' ORDER BY attempt DESC LIMIT 1");
    }

    TestDaemon d;
};

}  // namespace

TEST_CASE("a trivial python step succeeds and records its output and outputs", "[python]") {
    PythonDaemon p({{"hello.yaml", runbook("Hello", R"y(  - name: hi
    python:
      code: |
        print("hello from python")
        ctx.set_output("answer", 42)
)y")}});

    const auto id = p.fire("Hello");
    REQUIRE(p.d.wait_runs_finished());

    CHECK(p.run(id, "state") == "succeeded");
    CHECK(p.attempt(id, "hi", "kind") == "python");
    CHECK_THAT(p.attempt(id, "hi", "argv"), Catch::StartsWith(R"y(["python",")y"));
    CHECK_THAT(p.attempt(id, "hi", "stdout_excerpt"), Catch::StartsWith("hello from"));
    CHECK(p.attempt(id, "hi", "outputs") == R"y({"answer":42})y");
}

TEST_CASE("the context carries the alert, the run and the step", "[python]") {
    PythonDaemon p({{"ctx.yaml", runbook("Ctx", R"y(  - name: look
    python:
      code: |
        ctx.set_output("run", [ctx.run.id, ctx.run.runbook, ctx.run.trigger, ctx.run.actor])
        ctx.set_output("step", [ctx.step.name, ctx.step.index, ctx.step.attempt])
        ctx.set_output("alert", [ctx.alert.labels["alertname"], ctx.alert.status,
                                 ctx.alert.starts_at.tzinfo is not None, ctx.alert.ends_at])
        ctx.set_output("deadline", 0 < ctx.deadline <= 5)
        ctx.set_output("dry_run", ctx.dry_run)
    timeout: 5s
)y")}});

    const auto id = p.fire("Ctx");
    REQUIRE(p.d.wait_runs_finished());

    REQUIRE(p.run(id, "state") == "succeeded");
    const Json outputs = Json::parse(p.attempt(id, "look", "outputs"));
    CHECK(outputs.at("run") == Json::array({id, "Ctx", "alert", "alertmanager"}));
    CHECK(outputs.at("step") == Json::array({"look", 0, 1}));
    CHECK(outputs.at("alert") == Json::array({"Ctx", "firing", true, nullptr}));
    CHECK(outputs.at("deadline") == true);
    CHECK(outputs.at("dry_run") == false);
}

TEST_CASE("a python step's outputs flow into a later argv step's argv", "[python]") {
    PythonDaemon p({{"flow.yaml", runbook("Flow", R"y(  - name: decide
    python:
      code: |
        ctx.set_output("restart", True)
        ctx.set_output("host", "db-1")
  - name: act
    argv: [echo, "{{ steps.decide.outputs.restart }}", "{{ steps.decide.outputs.host }}"]
)y")}});

    const auto id = p.fire("Flow");
    REQUIRE(p.d.wait_runs_finished());

    CHECK(p.run(id, "state") == "succeeded");
    CHECK(p.attempt(id, "act", "argv") == R"y(["/usr/bin/echo","true","db-1"])y");
    CHECK(p.attempt(id, "act", "stdout_excerpt") == "true db-1\n");
}

TEST_CASE("an exception fails the step with its type and message, traceback in stderr",
          "[python]") {
    PythonDaemon p({{"boom.yaml", runbook("Boom", R"y(  - name: boom
    python:
      code: |
        raise ValueError("disk is fine")
)y")}});

    const auto id = p.fire("Boom");
    REQUIRE(p.d.wait_runs_finished());

    CHECK(p.run(id, "state") == "failed");
    CHECK(p.attempt(id, "boom", "exit_code") == "1");
    CHECK_THAT(p.attempt(id, "boom", "error"), Catch::Contains("ValueError: disk is fine"));
    CHECK_THAT(p.attempt(id, "boom", "stderr_excerpt"), Catch::Contains("Traceback"));
}

TEST_CASE("sys.exit codes: 0 succeeds, n fails with exit code n", "[python]") {
    PythonDaemon p({{"zero.yaml", runbook("Zero",
                                          "  - name: z\n    python: {code: 'import sys; "
                                          "sys.exit(0)'}\n")},
                    {"three.yaml", runbook("Three",
                                           "  - name: t\n    python: {code: 'import "
                                           "sys; sys.exit(3)'}\n")}});

    const auto zero = p.fire("Zero");
    const auto three = p.fire("Three");
    REQUIRE(p.d.wait_runs_finished());

    CHECK(p.run(zero, "state") == "succeeded");
    CHECK(p.run(three, "state") == "failed");
    CHECK(p.attempt(three, "t", "exit_code") == "3");
}

TEST_CASE("a busy loop times out, runbookd stays alive and the next python step runs fine",
          "[python]") {
    PythonDaemon p({{"spin.yaml", runbook("Spin", R"y(  - name: spin
    timeout: 1s
    python: {code: "while True: pass"}
)y")},
                    {"after.yaml", runbook("After", R"y(  - name: ok
    python: {code: "ctx.set_output('fine', 'yes')"}
)y")}},
                   [](daemon::Config& c) { c.python.workers = 1; });

    const auto spin = p.fire("Spin");
    REQUIRE(p.d.wait_runs_finished());
    const auto after = p.fire("After");
    REQUIRE(p.d.wait_runs_finished());

    CHECK(p.run(spin, "state") == "failed");
    CHECK(p.attempt(spin, "spin", "error") == "timed out after 1000 ms");
    CHECK(p.attempt(spin, "spin", "signal") == "15");
    CHECK(query_value(p.d.db(),
                      "SELECT count(*) FROM events WHERE kind = "
                      "'attempt.stop_signal_sent'") == "1");
    CHECK(p.run(after, "state") == "succeeded");
    CHECK(p.attempt(after, "ok", "outputs") == R"y({"fine":"yes"})y");
}

TEST_CASE("a worker that segfaults or calls os._exit fails its step and is replaced", "[python]") {
    PythonDaemon p({{"segv.yaml", runbook("Segv",
                                          "  - name: crash\n    python: {code: 'import ctypes; "
                                          "ctypes.string_at(0)'}\n")},
                    {"exit.yaml", runbook("Exit",
                                          "  - name: quit\n    python: {code: 'import os; "
                                          "os._exit(3)'}\n")},
                    {"after.yaml", runbook("After", "  - name: ok\n    python: {code: 'pass'}\n")}},
                   [](daemon::Config& c) { c.python.workers = 1; });

    const auto segv = p.fire("Segv");
    REQUIRE(p.d.wait_runs_finished());
    const auto quit = p.fire("Exit");
    REQUIRE(p.d.wait_runs_finished());
    const auto after = p.fire("After");
    REQUIRE(p.d.wait_runs_finished());

    CHECK(p.attempt(segv, "crash", "error") == "python worker died: killed by signal 11 (SIGSEGV)");
    CHECK(p.attempt(segv, "crash", "signal") == "11");
    CHECK(p.attempt(quit, "quit", "error") == "python worker died: exited with status 3");
    CHECK(p.attempt(quit, "quit", "exit_code") == "3");
    CHECK(p.run(after, "state") == "succeeded");
}

TEST_CASE("a thread left behind fails the step naming it", "[python]") {
    PythonDaemon p({{"thread.yaml", runbook("Thread", R"y(  - name: leak
    python:
      code: |
        import threading, time
        threading.Thread(target=time.sleep, args=(30,), name="poller").start()
)y")}});

    const auto id = p.fire("Thread");
    REQUIRE(p.d.wait_runs_finished());

    CHECK(p.run(id, "state") == "failed");
    CHECK_THAT(p.attempt(id, "leak", "error"),
               Catch::Contains("python step left state behind: ") && Catch::Contains("\"poller\""));
}

TEST_CASE("50 python steps at once all run, at most `workers` at a time", "[python][scale]") {
    PythonDaemon p({{"many.yaml", runbook("Many", R"y(  - name: n
    python: {code: "ctx.set_output('ok', True)"}
)y")}},
                   [](daemon::Config& c) {
                       c.python.workers = 4;
                       c.runs.max_concurrent_runs = 64;
                   });

    for (int i = 0; i < 50; ++i) {
        p.fire("Many", "i" + std::to_string(i));
    }
    REQUIRE(p.d.wait_runs_finished(60s));

    CHECK(query_value(p.d.db(), "SELECT count(*) FROM runs WHERE state = 'succeeded'") == "50");
    CHECK(query_value(p.d.db(), "SELECT count(DISTINCT outputs) FROM attempts") == "1");
}

TEST_CASE("ctx.exec runs a command with bounded output and records it", "[python]") {
    PythonDaemon p({{"exec.yaml", runbook("Exec", R"y(  - name: run
    python:
      code: |
        r = ctx.exec(["/bin/sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x; exit 4"])
        ctx.set_output("code", r.exit_code)
        ctx.set_output("ok", r.ok)
        ctx.set_output("bytes", r.stdout_bytes)
        ctx.set_output("kept", len(r.stdout))
)y")}});

    const auto id = p.fire("Exec");
    REQUIRE(p.d.wait_runs_finished());

    REQUIRE(p.run(id, "state") == "succeeded");
    const Json outputs = Json::parse(p.attempt(id, "run", "outputs"));
    CHECK(outputs.at("code") == 4);
    CHECK(outputs.at("ok") == false);
    CHECK(outputs.at("bytes") == 100000);
    CHECK(outputs.at("kept").get<int>() < 10000);
    CHECK(query_value(p.d.db(), "SELECT count(*) FROM events WHERE kind = 'attempt.exec'") == "1");
}

TEST_CASE("ctx.secret reads a configured secret; an unknown one is an error", "[python]") {
    test::TempDir secrets;
    test::write_file(secrets.path() / "token", "s3cret-value\n");
    PythonDaemon p({{"secret.yaml", runbook("Secret", R"y(  - name: use
    python:
      code: |
        print(ctx.secret("token"))
        try:
            ctx.secret("nope")
        except Exception as e:
            ctx.set_output("error", str(e))
)y")}},
                   [&secrets](daemon::Config& c) {
                       c.secrets = {{"token", secrets.file("token"), ""}};
                   });

    const auto id = p.fire("Secret");
    REQUIRE(p.d.wait_runs_finished());

    REQUIRE(p.run(id, "state") == "succeeded");
    CHECK(p.attempt(id, "use", "stdout_excerpt") == "[secret:token]\n");
    CHECK_THAT(p.attempt(id, "use", "outputs"), Catch::Contains("not configured"));
}

TEST_CASE("a worker killed from outside while idle is replaced", "[python]") {
    PythonDaemon p({{"pid.yaml", runbook("Pid", R"y(  - name: who
    python: {code: "import os; ctx.set_output('pid', os.getpid())"}
)y")}},
                   [](daemon::Config& c) { c.python.workers = 1; });
    const auto first = p.fire("Pid", "1");
    REQUIRE(p.d.wait_runs_finished());
    const pid_t worker = Json::parse(p.attempt(first, "who", "outputs")).at("pid").get<pid_t>();

    REQUIRE(::kill(worker, SIGKILL) == 0);
    REQUIRE(test::wait_until([worker] { return !test::process_running(worker); }, 5s));
    const auto second = p.fire("Pid", "2");
    REQUIRE(p.d.wait_runs_finished());

    CHECK(p.run(second, "state") == "succeeded");
    CHECK(Json::parse(p.attempt(second, "who", "outputs")).at("pid").get<pid_t>() != worker);
}

TEST_CASE("when no worker can start, a python step fails at once with the reason", "[python]") {
    PythonDaemon p({{"nostart.yaml", runbook("NoStart", R"y(  - name: hi
    python:
      code: |
        print("never")
    timeout: 5m
)y")}},
                   [](daemon::Config& c) { c.python.worker = "/bin/false"; });

    const auto started = std::chrono::steady_clock::now();
    const auto id = p.fire("NoStart");
    REQUIRE(p.d.wait_runs_finished(30s));

    CHECK(std::chrono::steady_clock::now() - started < 30s);  // not the step's 5 minutes
    CHECK(p.run(id, "state") == "failed");
    CHECK_THAT(p.attempt(id, "hi", "error"),
               Catch::Contains("no python worker could start: python worker died: exited with "
                               "status 1") &&
                   Catch::Contains("the step was not started"));
}

namespace {

// Every row of `table` whose text (any column) holds `needle`, as "table: row".
std::vector<std::string> rows_holding(const std::string& db, const std::string& table,
                                      const std::string& needle) {
    std::vector<std::string> found;
    for (const auto& row : query(db, "SELECT * FROM " + table)) {
        for (const auto& value : row) {
            if (value.find(needle) != std::string::npos) {
                found.push_back(table + ": " + value);
            }
        }
    }
    return found;
}

}  // namespace

TEST_CASE(
    "a secret's value is redacted from everything runbookd records or logs about a step, "
    "and the processes still get it",
    "[python][secrets]") {
    const std::string value = "tok-Zq93-value";
    test::TempDir secrets;
    test::write_file(secrets.path() / "token", value + "\n");
    test::RunbookdProcess d(
        {{"leak.yaml", runbook("Leak", R"y(  - name: leak
    python:
      code: |
        s = ctx.secret("token")
        ctx.log.info("the token is " + s)
        ctx.log.warning(s)
        r = ctx.exec(["/bin/sh", "-c", 'test "$1" = "$EXPECT"', "check", s], env={"EXPECT": s})
        ctx.set_output("exec_saw_it", r.exit_code == 0)
        ctx.set_output("tok", s)
        ctx.set_output("nested", {"k": ["x" + s + "y"], s: 1})
  - name: use
    argv: [/bin/sh, -c, 'test "$1" = "$EXPECT" && echo same', use, "{{ steps.leak.outputs.tok }}"]
    env: {EXPECT: {secret: token}}
  - name: boom
    python:
      code: |
        raise ValueError("bad token " + ctx.secret("token"))
)y")}},
        "log:\n  level: debug\npython:\n  workers: 1\n  worker: " + std::string(kWorker) +
            "\nsecrets:\n  token: {file: " + secrets.file("token") + "}\n");
    REQUIRE(d.wait_ready());

    REQUIRE(
        d.post("/api/v1/webhooks/alertmanager", test::firing_notification("Leak", "a"))->status ==
        200);
    REQUIRE(test::wait_until(
        [&] {
            return query_value(d.db(),
                               "SELECT count(*) FROM runs WHERE state IN ('succeeded', "
                               "'failed', 'cancelled')") == "1";
        },
        20s));

    INFO(d.log());
    CHECK(query_value(d.db(), "SELECT state FROM runs") == "failed");
    CHECK(query_value(d.db(),
                      "SELECT json_extract(outputs, '$.exec_saw_it') FROM attempts "
                      "WHERE step = 'leak'") == "1");
    CHECK(query_value(d.db(), "SELECT stdout_excerpt FROM attempts WHERE step = 'use'") ==
          "same\n");
    CHECK(query_value(d.db(),
                      "SELECT json_extract(outputs, '$.tok') FROM attempts WHERE step = "
                      "'leak'") == "[secret:token]");
    CHECK(query_value(d.db(), "SELECT argv FROM attempts WHERE step = 'use'") ==
          R"y(["/bin/sh","-c","test \"$1\" = \"$EXPECT\" && echo same","use","[secret:token]"])y");
    CHECK_THAT(query_value(d.db(), "SELECT error FROM attempts WHERE step = 'boom'"),
               Catch::Contains("ValueError: bad token [secret:token]"));
    CHECK_THAT(query_value(d.db(), "SELECT reason FROM runs"), Catch::Contains("[secret:token]"));
    CHECK(query(d.db(),
                "SELECT json_extract(detail, '$.level'), json_extract(detail, '$.message') FROM "
                "events WHERE kind = 'attempt.log' ORDER BY id") ==
          std::vector<std::vector<std::string>>{{"info", "the token is [secret:token]"},
                                                {"warning", "[secret:token]"}});
    CHECK(query_value(d.db(),
                      "SELECT json_extract(detail, '$.argv[4]') || ' ' || "
                      "json_extract(detail, '$.exit_code') FROM events WHERE kind = "
                      "'attempt.exec'") == "[secret:token] 0");
    std::vector<std::string> leaks;
    for (const char* table : {"attempts", "events", "runs"}) {
        const auto found = rows_holding(d.db(), table, value);
        leaks.insert(leaks.end(), found.begin(), found.end());
    }
    CHECK(leaks.empty());
    d.process().stop();
    CHECK(d.log().find(value) == std::string::npos);
}

TEST_CASE(
    "runbookd restarted over a run left running stops what the old one left, not its own new "
    "python workers",
    "[python][recovery]") {
    test::TempDir outside;
    const test::RunbookFiles files = {
        {"gated.yaml", test::gated_runbook(outside.file("gate"))},
        {"hi.yaml", runbook("Hi", "  - name: hi\n    python: {code: 'pass'}\n")}};
    const std::string config = "python:\n  workers: 2\n  worker: " + std::string(kWorker) + "\n";
    test::RunbookdProcess first(files, config);
    REQUIRE(first.wait_ready());
    REQUIRE(first.post("/api/v1/webhooks/alertmanager", test::firing_notification("Gated", "a"))
                ->status == 200);
    REQUIRE(test::wait_until(
        [&] { return query_value(first.db(), "SELECT count(pid) FROM attempts") == "1"; }, 5s));
    first.process().signal(SIGKILL);
    REQUIRE(first.process().wait(5s));

    test::RunbookdProcess second(files, config, first.db());
    REQUIRE(second.wait_ready());
    REQUIRE(second.post("/api/v1/webhooks/alertmanager", test::firing_notification("Hi", "a"))
                ->status == 200);
    REQUIRE(test::wait_until(
        [&] {
            return query_value(second.db(), "SELECT state FROM runs WHERE runbook = 'Hi'") ==
                   "succeeded";
        },
        15s));

    const std::string log = second.log();
    INFO(log);
    CHECK(query_value(second.db(), "SELECT state FROM runs WHERE runbook = 'gated'") ==
          "interrupted");
    CHECK(log.find("stopping a step left running by the previous runbookd") != std::string::npos);
    CHECK(log.find("left by a step of the previous runbookd") == std::string::npos);
    CHECK(log.find("python worker failed to start") == std::string::npos);
    CHECK(log.find("python worker gone") == std::string::npos);
}

TEST_CASE("a worker that segfaults is retried under retry_on: [signal]", "[python]") {
    PythonDaemon p({{"segv.yaml", runbook("Segv", R"y(  - name: crash
    retries: {attempts: 2, initial: 10ms}
    retry_on: [signal]
    python: {code: "import ctypes; ctypes.string_at(0)"}
)y")}},
                   [](daemon::Config& c) { c.python.workers = 1; });

    const auto id = p.fire("Segv");
    REQUIRE(p.d.wait_runs_finished());

    CHECK(query(p.d.db(), "SELECT attempt, signal, error FROM attempts WHERE run_id = " +
                              std::to_string(id) + " ORDER BY attempt") ==
          std::vector<std::vector<std::string>>{
              {"1", "11", "python worker died: killed by signal 11 (SIGSEGV)"},
              {"2", "11", "python worker died: killed by signal 11 (SIGSEGV)"}});
}

TEST_CASE(
    "a python step that ignores SIGTERM past its timeout is killed; the error names only the "
    "timeout and the stop is recorded as for an exec step",
    "[python]") {
    PythonDaemon p({{"stubborn.yaml", runbook("Stubborn", R"y(  - name: spin
    timeout: 1s
    grace: 200ms
    python:
      code: |
        import signal
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True: pass
)y")}},
                   [](daemon::Config& c) { c.python.workers = 1; });

    const auto id = p.fire("Stubborn");
    REQUIRE(p.d.wait_runs_finished());

    CHECK(p.attempt(id, "spin", "error") == "timed out after 1000 ms");
    CHECK(p.attempt(id, "spin", "signal") == "9");
    CHECK(query(p.d.db(),
                "SELECT kind FROM events WHERE kind IN ('attempt.stop_signal_sent', "
                "'attempt.grace_expired', 'attempt.killed') ORDER BY id") ==
          std::vector<std::vector<std::string>>{
              {"attempt.stop_signal_sent"}, {"attempt.grace_expired"}, {"attempt.killed"}});
}

namespace {

// A stand-in for runbookd-python-worker speaking the protocol: every step succeeds with the
// worker's pid as output and `retire` holding `retire_json` (a JSON list).
std::string fake_worker(const test::TempDir& dir, const std::string& retire_json) {
    const std::string path = dir.file("fake-worker");
    test::write_file(path, R"py(#!/usr/bin/python3
import array, json, os, socket, struct
sock = socket.socket(fileno=3)
def send(message):
    body = json.dumps(message).encode()
    sock.sendall(struct.pack(">I", len(body)) + body)
send({"type": "hello", "protocol": 1, "pid": os.getpid(), "python": "fake", "runbook_module": ""})
buffer = b""
while True:
    data, ancdata, _, _ = sock.recvmsg(65536, socket.CMSG_SPACE(16))
    for level, kind, fds in ancdata:
        for fd in array.array("i", fds[:len(fds) - len(fds) % 4]):
            os.close(fd)
    if not data:
        break
    buffer += data
    while len(buffer) >= 4 and len(buffer) >= 4 + struct.unpack(">I", buffer[:4])[0]:
        n = struct.unpack(">I", buffer[:4])[0]
        message, buffer = json.loads(buffer[4:4 + n]), buffer[4 + n:]
        if message["type"] == "exit":
            raise SystemExit(0)
        if message["type"] == "run":
            send({"type": "result", "step": message["step"], "ok": True, "exit_code": 0,
                  "outputs": {"pid": os.getpid()}, "error": None, "left_behind": [],
                  "retire": RETIRE})
)py");
    std::string text = test::read_file(path);
    text.replace(text.find("RETIRE"), 6, retire_json);
    test::write_file(path, text);
    std::filesystem::permissions(path, std::filesystem::perms::owner_all);
    return path;
}

}  // namespace

TEST_CASE(
    "a result asking for `retire` replaces the worker, records each reason and leaves the "
    "step's outcome alone",
    "[python]") {
    test::TempDir tools;
    const std::string worker = fake_worker(tools, R"(["interpreter state in doubt"])");
    PythonDaemon p({{"pid.yaml", runbook("Pid", "  - name: who\n    python: {code: 'pass'}\n")}},
                   [&worker](daemon::Config& c) {
                       c.python.worker = worker;
                       c.python.workers = 1;
                   });

    const auto first = p.fire("Pid", "1");
    REQUIRE(p.d.wait_runs_finished());
    const auto second = p.fire("Pid", "2");
    REQUIRE(p.d.wait_runs_finished());

    CHECK(p.run(first, "state") == "succeeded");
    CHECK(p.run(second, "state") == "succeeded");
    CHECK(Json::parse(p.attempt(first, "who", "outputs")).at("pid") !=
          Json::parse(p.attempt(second, "who", "outputs")).at("pid"));
    CHECK(query(p.d.db(),
                "SELECT run_id, json_extract(detail, '$.detail') FROM events WHERE kind "
                "= 'attempt.worker_retired' ORDER BY id") ==
          std::vector<std::vector<std::string>>{
              {std::to_string(first), "interpreter state in doubt"},
              {std::to_string(second), "interpreter state in doubt"}});
}

TEST_CASE("inline code is sent with the runbook file and the line where the code starts",
          "[python]") {
    PythonDaemon p({{"where.yaml", runbook("Where", R"y(  - name: boom
    python:
      code: |
        x = 1
        raise ValueError("here")
)y")}});

    const auto id = p.fire("Where");
    REQUIRE(p.d.wait_runs_finished());

    const std::string file = p.d.dir().file("runbooks") + "/where.yaml";
    CHECK(p.attempt(id, "boom", "argv") == Json::array({"python", file + ":7"}).dump());
    CHECK_THAT(p.attempt(id, "boom", "stderr_excerpt"),
               Catch::Contains("File \"" + file + "\", line "));
}

TEST_CASE("a python worker stopped with its step during the drain is not replaced", "[python]") {
    test::RunbookdProcess d(
        {{"spin.yaml",
          runbook("Spin", "  - name: spin\n    python: {code: 'while True: pass'}\n")}},
        "log:\n  level: debug\nruns:\n  shutdown_grace: 500ms\npython:\n  workers: 1\n  worker: " +
            std::string(kWorker) + "\n");
    REQUIRE(d.wait_ready());
    REQUIRE(
        d.post("/api/v1/webhooks/alertmanager", test::firing_notification("Spin", "a"))->status ==
        200);
    REQUIRE(test::wait_until(
        [&] { return query_value(d.db(), "SELECT count(pid) FROM attempts") == "1"; }, 5s));

    d.process().signal(SIGTERM);
    const auto code = d.process().wait(20s);

    const std::string log = d.log();
    INFO(log);
    CHECK(code == 0);
    CHECK(query_value(d.db(), "SELECT state FROM runs") == "cancelled");
    std::size_t spawned = 0;
    for (auto at = log.find("process started python_worker=1"); at != std::string::npos;
         at = log.find("process started python_worker=1", at + 1)) {
        ++spawned;
    }
    CHECK(spawned == 1);
}

TEST_CASE(
    "ctx.exec gets an argv step's RUNBOOK_* variables; reserved env names and NUL bytes in argv "
    "are refused",
    "[python]") {
    PythonDaemon p({{"env.yaml", runbook("Env", R"y(  - name: look
    python:
      code: |
        r = ctx.exec(["/bin/sh", "-c", 'echo "$RUNBOOK_RUN_ID $RUNBOOK_STEP $RUNBOOK_LABEL_INSTANCE $RUNBOOK_IDEMPOTENCY_KEY $EXTRA"'],
                     env={"EXTRA": "x"})
        ctx.set_output("env", r.stdout.strip())
        for name in ("RUNBOOK_STEP", "RUNBOOKD_INSTANCE"):
            try:
                ctx.exec(["/bin/true"], env={name: "forged"})
                ctx.set_output(name, "ran")
            except ValueError as e:
                ctx.set_output(name, str(e))
        try:
            ctx.exec(["/bin/echo", "a\0b"])
            ctx.set_output("nul", "ran")
        except ValueError as e:
            ctx.set_output("nul", str(e))
)y")}});

    const auto id = p.fire("Env", "db-1");
    REQUIRE(p.d.wait_runs_finished());

    REQUIRE(p.run(id, "state") == "succeeded");
    const Json outputs = Json::parse(p.attempt(id, "look", "outputs"));
    CHECK(outputs.at("env") == fmt::format("{} look db-1 {}:look x", id, id));
    CHECK_THAT(outputs.at("RUNBOOK_STEP").get<std::string>(),
               Catch::Contains("exec: env RUNBOOK_STEP is reserved"));
    CHECK_THAT(outputs.at("RUNBOOKD_INSTANCE").get<std::string>(),
               Catch::Contains("exec: env RUNBOOKD_INSTANCE is reserved"));
    CHECK_THAT(outputs.at("nul").get<std::string>(),
               Catch::Contains("argv element 1 contains a NUL byte"));
}
