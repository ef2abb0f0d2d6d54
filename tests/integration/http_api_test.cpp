#include <atomic>
#include <thread>

#include <arpa/inet.h>
#include <catch2/catch.hpp>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <unistd.h>

#include "support/support.hpp"

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using Json = nlohmann::json;
using test::query;
using test::query_value;
using test::RunbookFiles;
using test::TestDaemon;

constexpr const char* kEchoRunbook = R"(name: host-echo
description: prints the instance it was called for
matchers:
  - alertname="HostHighLoad"
steps:
  - name: show
    argv: [/usr/bin/printf, "%s", "{{ alert.labels.instance }}"]
  - name: severity
    argv: [/bin/echo, "{{ alert.labels.severity | default \"none\" }}"]
)";

Json body_of(const Result<http::ClientResponse>& r) {
    REQUIRE(r.ok());
    return Json::parse(r->body);
}

std::string alert_payload(const Json& labels, const std::string& status = "firing",
                          const std::string& fingerprint = "") {
    Json alert = {{"status", status},
                  {"labels", labels},
                  {"annotations", Json::object()},
                  {"startsAt", "2026-12-04T15:49:26Z"},
                  {"endsAt", status == "firing" ? "0001-01-01T00:00:00Z" : "2026-12-04T15:59:26Z"},
                  {"generatorURL", "http://prometheus:9090/graph"}};
    if (!fingerprint.empty()) {
        alert["fingerprint"] = fingerprint;
    }
    return Json{{"version", "4"},
                {"receiver", "runbookd"},
                {"status", status},
                {"groupKey", "{}:{alertname=\"x\"}"},
                {"alerts", Json::array({alert})},
                {"truncatedAlerts", 0}}
        .dump();
}

// Nothing from a rejected request may be recorded or run.
void check_nothing_recorded(const TestDaemon& d) {
    CHECK(query_value(d.db(), "SELECT count(*) FROM deliveries") == "0");
    CHECK(query_value(d.db(), "SELECT count(*) FROM alerts") == "0");
    CHECK(query_value(d.db(), "SELECT count(*) FROM runs") == "0");
}

// Sends raw bytes on a new loopback connection and returns everything read until the server
// closes it or `timeout` passes.
std::string raw_exchange(std::uint16_t port, const std::vector<std::string>& chunks,
                         std::chrono::milliseconds pause = 0ms) {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    timeval tv{2, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    std::string out;
    char buf[4096];
    for (const auto& chunk : chunks) {
        REQUIRE(::send(fd, chunk.data(), chunk.size(), MSG_NOSIGNAL) ==
                static_cast<ssize_t>(chunk.size()));
        std::this_thread::sleep_for(pause);
        if (pause > 0ms) {
            const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
            if (n > 0) {
                out.append(buf, static_cast<std::size_t>(n));
            }
        }
    }
    ::shutdown(fd, SHUT_WR);
    for (;;) {
        const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
        if (n <= 0) {
            break;
        }
        out.append(buf, static_cast<std::size_t>(n));
    }
    ::close(fd);
    return out;
}

}  // namespace

TEST_CASE("GET / answers with the name and version", "[http]") {
    TestDaemon d(RunbookFiles{{"echo.yaml", kEchoRunbook}});

    auto body = body_of(d.get("/"));

    CHECK(body["name"] == "runbookd");
    CHECK(body["version"] == RUNBOOKD_VERSION);
}

TEST_CASE("a real Alertmanager payload is recorded, answered, and its runs executed", "[http]") {
    TestDaemon d(RunbookFiles{{"echo.yaml", kEchoRunbook}});

    auto response = d.post("/api/v1/webhooks/alertmanager",
                           test::fixture("alertmanager/v4-firing-two-alerts.json"));
    auto body = body_of(response);

    CHECK(response->status == 200);
    CHECK(body["delivery_id"] == 1);
    CHECK(body["alerts_received"] == 2);
    CHECK(body["runs_started"] == 2);
    CHECK(body["runs"][0]["runbook"] == "host-echo");
    CHECK(body["runs"][0]["fingerprint"] == "c66975c0e3469334");
    CHECK(body["not_acted_on"].empty());
    // The answer came after the commit: the rows are there already.
    CHECK(query_value(d.db(), "SELECT count(*) FROM runs") == "2");
    REQUIRE(d.wait_runs_finished());
    CHECK(query(d.db(),
                "SELECT r.state, a.step, a.argv, a.exit_code, a.stdout_excerpt "
                "FROM runs r JOIN attempts a ON a.run_id = r.id "
                "WHERE r.id = 1 ORDER BY a.step_index") ==
          std::vector<std::vector<std::string>>{
              {"succeeded", "show", R"(["/usr/bin/printf","%s","node-1.example.internal:9100"])",
               "0", "node-1.example.internal:9100"},
              {"succeeded", "severity", R"(["/bin/echo","warning"])", "0", "warning\n"}});
    CHECK(query_value(d.db(), "SELECT user_agent FROM deliveries") ==
          "runbookctl/" RUNBOOKD_VERSION);
}

TEST_CASE("a JSON media type with parameters is accepted", "[http]") {
    TestDaemon d(RunbookFiles{{"echo.yaml", kEchoRunbook}});

    auto r = d.post("/api/v1/webhooks/alertmanager",
                    test::fixture("alertmanager/v4-firing-two-alerts.json"),
                    "Application/JSON; charset=utf-8");

    REQUIRE(r.ok());
    CHECK(r->status == 200);
}

TEST_CASE("bad webhook input gets a 4xx JSON error naming the problem and runs nothing", "[http]") {
    TestDaemon d(RunbookFiles{{"echo.yaml", kEchoRunbook}},
                 [](daemon::Config& c) { c.http.body_limit = 4096; });
    const std::string webhook = "/api/v1/webhooks/alertmanager";

    struct Case {
        const char* what;
        std::string body;
        std::string content_type;
        unsigned status;
        std::string code;
        std::string field;
    };
    const std::vector<Case> cases = {
        {"malformed JSON", "{\"version\": \"4\", \"alerts\": [", "application/json", 400,
         "invalid_payload", ""},
        {"missing alerts", R"({"version": "4"})", "application/json", 400, "invalid_payload",
         "alerts"},
        {"label value not a string",
         R"({"version":"4","alerts":[{"status":"firing","labels":{"a":1},"startsAt":"2026-12-04T15:49:26Z"}]})",
         "application/json", 400, "invalid_payload", "alerts[0].labels.a"},
        {"bad startsAt",
         R"({"version":"4","alerts":[{"status":"firing","labels":{},"startsAt":"yesterday"}]})",
         "application/json", 400, "invalid_payload", "alerts[0].startsAt"},
        {"wrong version", R"({"version":"3","alerts":[]})", "application/json", 400,
         "invalid_payload", "version"},
        {"text media type", test::fixture("alertmanager/v4-firing-two-alerts.json"), "text/plain",
         415, "unsupported_media_type", ""},
        {"no media type", test::fixture("alertmanager/v4-firing-two-alerts.json"), "", 415,
         "unsupported_media_type", ""},
        {"oversized body", std::string(5000, ' ') + "{}", "application/json", 413,
         "payload_too_large", ""},
        {"arrays nested 65 deep",
         R"({"version":"4","alerts":[],"x":)" + std::string(65, '[') + std::string(65, ']') + "}",
         "application/json", 400, "invalid_json", ""},
    };

    for (const auto& c : cases) {
        SECTION(c.what) {
            auto r = d.post(webhook, c.body, c.content_type);
            auto body = body_of(r);

            CHECK(r->status == c.status);
            CHECK(r->content_type == "application/json");
            CHECK(body["error"]["code"] == c.code);
            CHECK_FALSE(body["error"]["message"].get<std::string>().empty());
            if (!c.field.empty()) {
                CHECK(body["error"]["field"] == c.field);
            }
            check_nothing_recorded(d);
        }
    }
}

TEST_CASE("unknown routes answer 404 and wrong methods 405 with Allow", "[http]") {
    TestDaemon d(RunbookFiles{{"echo.yaml", kEchoRunbook}});

    auto missing = d.get("/api/v1/nothing");
    auto wrong = d.get("/api/v1/webhooks/alertmanager");

    REQUIRE(missing.ok());
    CHECK(missing->status == 404);
    CHECK(body_of(missing)["error"]["code"] == "not_found");
    REQUIRE(wrong.ok());
    CHECK(wrong->status == 405);
    CHECK(body_of(wrong)["error"]["code"] == "method_not_allowed");
}

TEST_CASE("keep-alive connections carry several requests", "[http]") {
    TestDaemon d(RunbookFiles{{"echo.yaml", kEchoRunbook}});
    const std::string get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

    const std::string out = raw_exchange(d.daemon().port(), {get, get, get});

    std::size_t count = 0;
    for (std::size_t pos = 0; (pos = out.find("HTTP/1.1 200 OK", pos)) != std::string::npos;
         ++pos) {
        ++count;
    }
    CHECK(count == 3);
}

TEST_CASE("a client that sends Expect: 100-continue gets 100 before sending the body", "[http]") {
    TestDaemon d(RunbookFiles{{"echo.yaml", kEchoRunbook}});
    const std::string body = test::fixture("alertmanager/v4-firing-two-alerts.json");
    const std::string head =
        "POST /api/v1/webhooks/alertmanager HTTP/1.1\r\nHost: x\r\n"
        "Content-Type: application/json\r\nExpect: 100-continue\r\n"
        "Connection: close\r\nContent-Length: " +
        std::to_string(body.size()) + "\r\n\r\n";

    const std::string out = raw_exchange(d.daemon().port(), {head, body}, 300ms);

    CHECK(out.rfind("HTTP/1.1 100 Continue", 0) == 0);
    CHECK_THAT(out, Catch::Contains("HTTP/1.1 200 OK"));
}

TEST_CASE("the webhook answers at once while a long runbook runs", "[http]") {
    TestDaemon d(RunbookFiles{{"slow.yaml", R"(name: slow
matchers: ['alertname="HostHighLoad"']
steps:
  - name: wait
    argv: [sleep, "3"]
)"}});

    const auto start = std::chrono::steady_clock::now();
    auto first = d.post("/api/v1/webhooks/alertmanager",
                        test::fixture("alertmanager/v4-firing-two-alerts.json"));
    // The same alerts, a new episode of each (a later startsAt).
    std::string later = test::fixture("alertmanager/v4-firing-two-alerts.json");
    for (auto at = later.find("2026-12-04T15:49:26Z"); at != std::string::npos;
         at = later.find("2026-12-04T15:49:26Z")) {
        later.replace(at, 20, "2026-12-04T16:00:00Z");
    }
    auto second = d.post("/api/v1/webhooks/alertmanager", later);
    const auto elapsed = std::chrono::steady_clock::now() - start;

    REQUIRE(first.ok());
    REQUIRE(second.ok());
    CHECK(first->status == 200);
    CHECK(second->status == 200);
    CHECK(elapsed < 2s);
    const bool all_running = test::wait_until(
        [&] {
            return query_value(d.db(), "SELECT count(*) FROM runs WHERE state = 'running'") == "4";
        },
        2s);
    INFO(query_value(d.db(), "SELECT group_concat(id || ':' || state || ':' || reason) FROM runs"));
    CHECK(all_running);
}

TEST_CASE("alert values reach the program as one literal argument, never a shell", "[http]") {
    TestDaemon d(RunbookFiles{{"echo.yaml", kEchoRunbook}});
    const std::string hostile =
        "a b\"c' $(touch /tmp/runbookd-pwned) `id`; rm -rf / \n{{ run.id }}";

    auto r = d.post("/api/v1/webhooks/alertmanager",
                    alert_payload({{"alertname", "HostHighLoad"}, {"instance", hostile}}));

    REQUIRE(r.ok());
    REQUIRE(r->status == 200);
    REQUIRE(d.wait_runs_finished());
    CHECK(query_value(d.db(), "SELECT stdout_excerpt FROM attempts WHERE step = 'show'") ==
          hostile);
    CHECK(query_value(d.db(), "SELECT json_array_length(argv) FROM attempts WHERE step = 'show'") ==
          "3");
    CHECK_FALSE(std::filesystem::exists("/tmp/runbookd-pwned"));
}

TEST_CASE("a missing label fails the run with a clear reason and starts no process", "[http]") {
    TestDaemon d(RunbookFiles{{"echo.yaml", kEchoRunbook}});

    auto r =
        d.post("/api/v1/webhooks/alertmanager", alert_payload({{"alertname", "HostHighLoad"}}));

    REQUIRE(r.ok());
    REQUIRE(d.wait_runs_finished());
    CHECK(query(d.db(), "SELECT state, reason FROM runs") ==
          std::vector<std::vector<std::string>>{
              {"failed",
               "step \"show\" failed: cannot prepare the step: label \"instance\" is missing from "
               "the alert (write {{ alert.labels.instance | default \"...\" }} to allow that)"}});
    CHECK(query(d.db(), "SELECT argv, exit_code, signal FROM attempts") ==
          std::vector<std::vector<std::string>>{{"[]", "NULL", "NULL"}});
}

TEST_CASE("alerts that start no run are reported with the reason", "[http]") {
    TestDaemon d(RunbookFiles{{"echo.yaml", kEchoRunbook}, {"cleanup.yaml", R"(name: cleanup
matchers: ['alertname="DiskFull"']
on: [resolved]
steps:
  - name: done
    argv: ["true"]
)"}});

    SECTION("no runbook matches") {
        auto body = body_of(
            d.post("/api/v1/webhooks/alertmanager", alert_payload({{"alertname", "Unrelated"}})));

        CHECK(body["runs_started"] == 0);
        CHECK(body["not_acted_on"][0]["reason"] == "no_matching_runbook");
        CHECK(query_value(d.db(), "SELECT outcome FROM alerts") == "no_matching_runbook");
    }
    SECTION("a firing-only runbook ignores a resolved alert") {
        auto body = body_of(
            d.post("/api/v1/webhooks/alertmanager",
                   alert_payload({{"alertname", "HostHighLoad"}, {"instance", "x"}}, "resolved")));

        CHECK(body["runs_started"] == 0);
        CHECK(body["not_acted_on"][0]["reason"] == "status_ignored");
        CHECK(query_value(d.db(), "SELECT outcome FROM alerts") == "status_ignored");
    }
    SECTION("a resolved-only runbook runs on a resolved alert") {
        auto body = body_of(d.post("/api/v1/webhooks/alertmanager",
                                   alert_payload({{"alertname", "DiskFull"}}, "resolved")));

        CHECK(body["runs_started"] == 1);
        CHECK(body["runs"][0]["runbook"] == "cleanup");
        REQUIRE(d.wait_runs_finished());
        CHECK(query_value(d.db(), "SELECT state FROM runs") == "succeeded");
    }
}

TEST_CASE("truncated notifications are accepted with a recorded warning", "[http]") {
    TestDaemon d(RunbookFiles{{"echo.yaml", kEchoRunbook}});
    auto payload = Json::parse(test::fixture("alertmanager/v4-firing-two-alerts.json"));
    payload["truncatedAlerts"] = 5;

    auto body = body_of(d.post("/api/v1/webhooks/alertmanager", payload.dump()));

    REQUIRE(body["warnings"].size() == 1);
    CHECK_THAT(body["warnings"][0].get<std::string>(), Catch::Contains("left out 5 alerts"));
    CHECK(query_value(d.db(), "SELECT truncated_alerts FROM deliveries") == "5");
    CHECK(query_value(d.db(), "SELECT count(*) FROM events WHERE kind = 'delivery.warning'") ==
          "1");
}

TEST_CASE("runs can be listed and shown over the API", "[http]") {
    TestDaemon d(RunbookFiles{{"echo.yaml", kEchoRunbook}});
    REQUIRE(d.post("/api/v1/webhooks/alertmanager",
                   test::fixture("alertmanager/v4-firing-two-alerts.json"))
                .ok());
    REQUIRE(d.wait_runs_finished());

    auto list = body_of(d.get("/api/v1/runs?state=succeeded&limit=1"));
    auto run = body_of(d.get("/api/v1/runs/1"));
    auto missing = d.get("/api/v1/runs/99");
    auto bad = d.get("/api/v1/runs/abc");
    auto bad_state = d.get("/api/v1/runs?state=done");
    auto runbooks = body_of(d.get("/api/v1/runbooks"));

    REQUIRE(list["runs"].size() == 1);
    CHECK(list["runs"][0]["id"] == 2);
    CHECK(run["state"] == "succeeded");
    CHECK(run["alert"]["labels"]["instance"] == "node-1.example.internal:9100");
    REQUIRE(run["attempts"].size() == 2);
    CHECK(run["attempts"][0]["stdout"] == "node-1.example.internal:9100");
    CHECK(run["attempts"][0]["exit_code"] == 0);
    CHECK(missing->status == 404);
    CHECK(bad->status == 400);
    CHECK(bad_state->status == 400);
    CHECK(runbooks["runbooks"][0]["name"] == "host-echo");
    CHECK(runbooks["runbooks"][0]["matchers"][0] == "alertname=\"HostHighLoad\"");
}

TEST_CASE("runs past the concurrency limit wait their turn", "[http]") {
    TestDaemon d(RunbookFiles{{"slow.yaml", R"(name: slow
matchers: ['alertname="HostHighLoad"']
steps:
  - name: wait
    argv: [sleep, "0.5"]
)"}},
                 [](daemon::Config& c) { c.runs.max_concurrent_runs = 1; });

    REQUIRE(d.post("/api/v1/webhooks/alertmanager",
                   test::fixture("alertmanager/v4-firing-two-alerts.json"))
                .ok());

    CHECK(test::wait_until(
        [&] {
            return query_value(d.db(), "SELECT count(*) FROM runs WHERE state = 'running'") == "1";
        },
        2s));
    CHECK(query_value(d.db(), "SELECT count(*) FROM runs WHERE state = 'queued'") == "1");
    REQUIRE(d.wait_runs_finished());
    // Run 2 started only after run 1 finished.
    CHECK(query_value(d.db(),
                      "SELECT (SELECT started_at FROM runs WHERE id = 2) >= "
                      "(SELECT finished_at FROM runs WHERE id = 1)") == "1");
}

TEST_CASE("a step that exceeds its timeout fails the run with the reason", "[http]") {
    TestDaemon d(RunbookFiles{{"slow.yaml", R"(name: slow
matchers: ['alertname="HostHighLoad"']
steps:
  - name: wait
    argv: [sleep, "30"]
    timeout: 300ms
  - name: never
    argv: ["true"]
)"}});

    REQUIRE(d.post("/api/v1/webhooks/alertmanager", alert_payload({{"alertname", "HostHighLoad"}}))
                .ok());

    REQUIRE(d.wait_runs_finished(10s));
    CHECK(query_value(d.db(), "SELECT state FROM runs") == "failed");
    CHECK_THAT(query_value(d.db(), "SELECT reason FROM runs"),
               Catch::StartsWith("step \"wait\" failed: timed out after 300 ms"));
    CHECK(query(d.db(), "SELECT step, signal FROM attempts") ==
          std::vector<std::vector<std::string>>{{"wait", "15"}});
}

TEST_CASE("a shutdown cancels active runs and keeps queued ones for the next start", "[http]") {
    test::TempDir keep;
    const std::string runbook = R"(name: slow
matchers: ['alertname="HostHighLoad"']
steps:
  - name: wait
    argv: [sleep, "30"]
)";
    const std::string db = keep.file("runbookd.db");
    {
        TestDaemon d(RunbookFiles{{"slow.yaml", runbook}}, [&](daemon::Config& c) {
            c.db_path = db;
            c.runs.max_concurrent_runs = 1;
            c.shutdown_grace = 200ms;
        });
        REQUIRE(d.post("/api/v1/webhooks/alertmanager",
                       test::fixture("alertmanager/v4-firing-two-alerts.json"))
                    .ok());
        REQUIRE(test::wait_until(
            [&] { return query_value(db, "SELECT state FROM runs WHERE id = 1") == "running"; },
            2s));
        d.daemon().shutdown();

        CHECK(query(db, "SELECT id, state FROM runs ORDER BY id") ==
              std::vector<std::vector<std::string>>{{"1", "cancelled"}, {"2", "queued"}});
    }

    // The same database under a new daemon: the queued run is resumed.
    TestDaemon again(RunbookFiles{{"slow.yaml", runbook}}, [&](daemon::Config& c) {
        c.db_path = db;
        c.runs.max_concurrent_runs = 1;
    });

    CHECK(test::wait_until(
        [&] { return query_value(db, "SELECT state FROM runs WHERE id = 2") == "running"; }, 5s));
}

namespace {

constexpr const char* kSleepRunbook = R"(name: slow
matchers:
  - alertname="Slow"
steps:
  - name: nap
    argv: [/bin/sleep, "30"]
)";

std::string slow_payload(const std::string& instance) {
    return alert_payload({{"alertname", "Slow"}, {"instance", instance}});
}

std::string run_state(const TestDaemon& d, std::int64_t id) {
    return query_value(d.db(), "SELECT state FROM runs WHERE id = " + std::to_string(id));
}

}  // namespace

TEST_CASE("cancelling a running run stops its step and records who cancelled", "[http][cancel]") {
    TestDaemon d(RunbookFiles{{"slow.yaml", kSleepRunbook}},
                 [](daemon::Config& c) { c.process.grace = 2s; });
    auto posted = body_of(d.post("/api/v1/webhooks/alertmanager", slow_payload("a")));
    const std::int64_t id = posted["runs"].at(0)["run_id"];
    REQUIRE(test::wait_until([&] { return run_state(d, id) == "running"; }, 5s));
    REQUIRE(test::wait_until(
        [&] { return query_value(d.db(), "SELECT count(*) FROM attempts") == "1"; }, 5s));

    const auto asked = std::chrono::steady_clock::now();
    auto r = d.post("/api/v1/runs/" + std::to_string(id) + "/cancel",
                    R"({"actor": "alice", "reason": "wrong host"})");
    REQUIRE(r.ok());
    CHECK(r->status == 202);
    CHECK(body_of(r)["stopping"] == true);

    REQUIRE(test::wait_until([&] { return run_state(d, id) == "cancelled"; }, 5s));
    // sleep dies of SIGTERM at once: no need for the 2 s grace.
    CHECK(std::chrono::steady_clock::now() - asked < 2s);
    auto run = body_of(d.get("/api/v1/runs/" + std::to_string(id)));
    CHECK(run["cancelled_by"] == "alice");
    CHECK(run["reason"] == "cancelled by alice: wrong host");
    REQUIRE(run["attempts"].size() == 1);
    CHECK(run["attempts"][0]["signal"] == 15);
    CHECK(run["attempts"][0]["exit_code"].is_null());
    CHECK(query_value(d.db(),
                      "SELECT json_extract(detail, '$.cancelled_by') FROM events WHERE "
                      "kind = 'run.finished'") == "alice");

    auto again = d.post("/api/v1/runs/" + std::to_string(id) + "/cancel", "");
    REQUIRE(again.ok());
    CHECK(again->status == 409);
    CHECK(body_of(again)["error"]["code"] == "failed_precondition");
}

TEST_CASE("cancelling a queued run ends it before it starts", "[http][cancel]") {
    TestDaemon d(RunbookFiles{{"slow.yaml", kSleepRunbook}},
                 [](daemon::Config& c) { c.runs.max_concurrent_runs = 1; });
    const std::int64_t first =
        body_of(d.post("/api/v1/webhooks/alertmanager", slow_payload("a")))["runs"].at(0)["run_id"];
    const std::int64_t second =
        body_of(d.post("/api/v1/webhooks/alertmanager", slow_payload("b")))["runs"].at(0)["run_id"];
    REQUIRE(test::wait_until([&] { return run_state(d, first) == "running"; }, 5s));
    CHECK(run_state(d, second) == "queued");

    auto r = d.post("/api/v1/runs/" + std::to_string(second) + "/cancel", "");
    REQUIRE(r.ok());
    CHECK(r->status == 200);
    CHECK(body_of(r)["state"] == "cancelled");
    CHECK(run_state(d, second) == "cancelled");
    CHECK(query_value(d.db(), "SELECT cancelled_by FROM runs WHERE id = " + std::to_string(second))
              .starts_with("http:127.0.0.1:"));
    CHECK(query_value(d.db(), "SELECT count(*) FROM attempts WHERE run_id = " +
                                  std::to_string(second)) == "0");

    REQUIRE(body_of(d.post("/api/v1/runs/" + std::to_string(first) + "/cancel", ""))["stopping"] ==
            true);
    CHECK(d.wait_runs_finished(5s));
    CHECK(run_state(d, second) == "cancelled");
}

TEST_CASE("cancel requests with bad input get a JSON error", "[http][cancel]") {
    TestDaemon d(RunbookFiles{{"slow.yaml", kSleepRunbook}});

    auto unknown = d.post("/api/v1/runs/999/cancel", "");
    REQUIRE(unknown.ok());
    CHECK(unknown->status == 404);
    auto bad_id = d.post("/api/v1/runs/abc/cancel", "");
    REQUIRE(bad_id.ok());
    CHECK(bad_id->status == 400);
    CHECK(body_of(bad_id)["error"]["field"] == "id");
    auto bad_body = d.post("/api/v1/runs/1/cancel", R"({"actor": 5})");
    REQUIRE(bad_body.ok());
    CHECK(bad_body->status == 400);
    CHECK(body_of(bad_body)["error"]["field"] == "actor");
    auto typo = d.post("/api/v1/runs/1/cancel", R"({"actr": "dave"})");
    REQUIRE(typo.ok());
    CHECK(typo->status == 400);
    CHECK(body_of(typo)["error"]["field"] == "actr");
    auto not_json = d.post("/api/v1/runs/1/cancel", "[1]");
    REQUIRE(not_json.ok());
    CHECK(not_json->status == 400);
}

TEST_CASE("a step sees the alert as RUNBOOK_* variables and nothing else of runbookd's",
          "[http][env]") {
    constexpr const char* kEnvRunbook = R"(name: show-env
matchers: ['alertname="Env"']
steps:
  - name: env
    argv: [/usr/bin/env]
)";
    ::setenv("RUNBOOKD_LEAK_CHECK", "secret", 1);  // runbookd's environment; steps never see it
    TestDaemon d(RunbookFiles{{"env.yaml", kEnvRunbook}});
    const std::string hostile = "x$(touch f)`id`;rm -rf / \"q\" 'q'";
    Json payload = Json::parse(
        alert_payload({{"alertname", "Env"}, {"instance", hostile}, {"pod.name", "web-1"}},
                      "firing", "0123456789abcdef"));
    payload["alerts"][0]["annotations"] = {{"summary", "line one\nline two"}};
    auto r = d.post("/api/v1/webhooks/alertmanager", payload.dump());
    REQUIRE(r.ok());
    const std::int64_t id = body_of(r)["runs"].at(0)["run_id"];
    REQUIRE(d.wait_runs_finished());

    const std::string out = query_value(d.db(), "SELECT stdout_excerpt FROM attempts");
    CHECK_THAT(out, Catch::Contains("RUNBOOK_LABEL_INSTANCE=" + hostile + "\n"));
    CHECK_THAT(out, Catch::Contains("RUNBOOK_LABEL_POD_NAME=web-1\n"));
    CHECK_THAT(out, Catch::Contains("RUNBOOK_LABEL_ALERTNAME=Env\n"));
    CHECK_THAT(out, Catch::Contains("RUNBOOK_ANNOTATION_SUMMARY=line one\nline two\n"));
    CHECK_THAT(out, Catch::Contains("RUNBOOK_ALERT_FINGERPRINT=0123456789abcdef\n"));
    CHECK_THAT(out, Catch::Contains("RUNBOOK_ALERT_STATUS=firing\n"));
    CHECK_THAT(out, Catch::Contains("RUNBOOK_IDEMPOTENCY_KEY=" + std::to_string(id) + ":env\n"));
    CHECK_THAT(out, Catch::Contains("RUNBOOK_ATTEMPT=1\n"));
    // The test process's own environment stays behind (only PATH, LANG, HOME and TZ pass).
    CHECK_THAT(out, !Catch::Contains("RUNBOOKD_LEAK_CHECK"));
    CHECK_THAT(out, !Catch::Contains("secret"));
}

TEST_CASE("a NUL byte in an alert value fails the step instead of cutting the argument short",
          "[http][env]") {
    TestDaemon d(RunbookFiles{{"echo.yaml", kEchoRunbook}});
    auto r = d.post("/api/v1/webhooks/alertmanager",
                    alert_payload({{"alertname", "HostHighLoad"},
                                   {"instance", std::string("node-1\0; rm -rf /", 16)}}));
    REQUIRE(r.ok());
    REQUIRE(r->status == 200);
    REQUIRE(d.wait_runs_finished());
    CHECK(query_value(d.db(), "SELECT state FROM runs") == "failed");
    CHECK_THAT(query_value(d.db(), "SELECT reason FROM runs"),
               Catch::Contains("argv element 2 contains a NUL byte"));
}

TEST_CASE("JSON nested 64 deep is parsed, brackets inside strings do not count", "[http][limits]") {
    TestDaemon d(RunbookFiles{{"echo.yaml", kEchoRunbook}});
    // 64 levels in all (the root object is the first): within the limit, so the payload parser
    // judges it, and ignores the unknown field.
    const std::string deep =
        R"({"version":"4","alerts":[],"x":)" + std::string(63, '[') + std::string(63, ']') +
        R"(,"s":"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[)" + std::string(80, '{') + R"(\"[["})";
    auto r = d.post("/api/v1/webhooks/alertmanager", deep);
    REQUIRE(r.ok());
    CHECK(r->status == 200);

    // The same limit holds on every JSON endpoint.
    auto cancel = d.post("/api/v1/runs/1/cancel", std::string(100, '[') + std::string(100, ']'));
    CHECK(body_of(cancel)["error"]["code"] == "invalid_json");
    CHECK(cancel->status == 400);
}

TEST_CASE("a client trickling its request is cut off after request_timeout while others are served",
          "[http][limits]") {
    TestDaemon d(RunbookFiles{{"echo.yaml", kEchoRunbook}}, [](daemon::Config& c) {
        c.http.request_timeout = 1s;
        c.http.idle_timeout = 30s;
    });
    const std::uint16_t port = d.daemon().port();

    std::atomic<bool> slow_done{false};
    std::chrono::milliseconds cut_after{0};
    std::thread slow([&] {
        const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in addr{};
        addr.sin_family = AF_INET;
        addr.sin_port = htons(port);
        addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
            ::close(fd);
            slow_done = true;
            return;
        }
        const std::string start = "POST /api/v1/webhooks/alertmanager HTTP/1.1\r\nX-Slow: ";
        const auto began = std::chrono::steady_clock::now();
        ::send(fd, start.data(), start.size(), MSG_NOSIGNAL);
        // One header byte every 100 ms, for at most 10 s: never a whole request.
        for (int i = 0; i < 100; ++i) {
            std::this_thread::sleep_for(100ms);
            char probe = 0;
            if (::recv(fd, &probe, 1, MSG_DONTWAIT) == 0 || ::send(fd, "a", 1, MSG_NOSIGNAL) < 0) {
                break;
            }
        }
        cut_after = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - began);
        ::close(fd);
        slow_done = true;
    });

    // Meanwhile other clients are served, one request after another.
    int served = 0;
    while (!slow_done) {
        auto r = d.get("/livez");
        if (r.ok() && r->status == 200) {
            ++served;
        }
        std::this_thread::sleep_for(50ms);
    }
    slow.join();
    CHECK(served >= 10);
    CHECK(cut_after >= 900ms);
    CHECK(cut_after < 3s);

    // A connection that is only idle between requests keeps the longer idle_timeout: quiet for
    // longer than request_timeout, its next request is still answered.
    const auto reply = raw_exchange(
        port, {"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n", "GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n"},
        1500ms);
    CHECK(reply.find("\"live\":true") != std::string::npos);
    CHECK(reply.find("\"ready\":true") != std::string::npos);
}

TEST_CASE("an overloaded intake answers 503 with Retry-After and is unready until it drains",
          "[http][limits]") {
    test::TempDir gate_dir;
    const std::string gate = gate_dir.file("gate");
    TestDaemon d(RunbookFiles{{"gated.yaml", test::gated_runbook(gate)}}, [](daemon::Config& c) {
        c.runs.max_concurrent_runs = 1;
        c.intake.max_queued_runs = 2;
    });
    const std::string webhook = "/api/v1/webhooks/alertmanager";
    // One run executes, two wait: the limit is reached.
    for (const char* instance : {"a", "b", "c"}) {
        auto r = d.post(webhook, test::firing_notification("Gated", instance));
        REQUIRE(r.ok());
        REQUIRE(r->status == 200);
    }
    REQUIRE(test::wait_until(
        [&] {
            return query_value(d.db(), "SELECT count(*) FROM runs WHERE state = 'running'") == "1";
        },
        5s));

    auto refused = d.post(webhook, test::firing_notification("Gated", "d"));
    REQUIRE(refused.ok());
    CHECK(refused->status == 503);
    CHECK(body_of(refused)["error"]["code"] == "overloaded");
    CHECK(refused->retry_after == "5");
    CHECK(query_value(d.db(), "SELECT count(*) FROM deliveries") == "3");

    auto ready = d.get("/readyz");
    REQUIRE(ready.ok());
    CHECK(ready->status == 503);
    CHECK(body_of(ready)["reasons"][0]["code"] == "overloaded");
    auto metrics = d.get("/metrics");
    REQUIRE(metrics.ok());
    CHECK(metrics->body.find("runbookd_notifications_received_total{outcome=\"overloaded\"} 1") !=
          std::string::npos);
    CHECK(metrics->body.find("runbookd_ready 0") != std::string::npos);

    // Let the runs go: once at most one waits (half the limit) it is ready and takes deliveries.
    test::write_file(gate, "");
    CHECK(test::wait_until(
        [&] {
            auto r = d.get("/readyz");
            return r.ok() && r->status == 200;
        },
        10s));
    auto accepted = d.post(webhook, test::firing_notification("Gated", "d"));
    REQUIRE(accepted.ok());
    CHECK(accepted->status == 200);
    CHECK(d.wait_runs_finished());
}
