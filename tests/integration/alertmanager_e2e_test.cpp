#include <memory>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <runbookd/timestamp.hpp>

#include "support/support.hpp"

// End to end with real parts: the runbookd binary and Debian's prometheus-alertmanager, both
// started here on loopback ports and stopped by PID. Alertmanager runs with clustering off, its
// own storage directory and a short group_wait so that the test takes seconds.

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using Json = nlohmann::json;
using test::query;
using test::query_value;

constexpr const char* kRunbook = R"(name: e2e-diagnostics
description: proves that an alert from Alertmanager runs a runbook
matchers:
  - alertname="RunbookdE2E"
  - severity=~"critical|page"
steps:
  - name: describe
    argv: [/bin/echo, "{{ alert.labels.instance }}", "{{ alert.annotations.summary }}"]
  - name: environment
    argv: [/usr/bin/env]
)";

std::string alertmanager_config(std::uint16_t runbookd_port,
                                const std::string& repeat_interval = "1h") {
    return fmt::format(R"(route:
  receiver: runbookd
  group_by: ['alertname']
  group_wait: 1s
  group_interval: 2s
  repeat_interval: {}
receivers:
  - name: runbookd
    webhook_configs:
      - url: http://127.0.0.1:{}/api/v1/webhooks/alertmanager
        send_resolved: true
)",
                       repeat_interval, runbookd_port);
}

bool answers(const std::string& url) {
    auto r = http::send_request("GET", url, {}, {}, 1s);
    return r.ok() && r->status == 200;
}

// Posts alerts to Alertmanager's v2 API, as Prometheus does.
void post_alert(std::uint16_t am_port, const Json& alert) {
    auto r =
        http::send_request("POST", fmt::format("http://127.0.0.1:{}/api/v2/alerts", am_port),
                           Json::array({alert}).dump(), {{"Content-Type", "application/json"}});
    REQUIRE(r.ok());
    REQUIRE(r->status == 200);
}

// runbookd and a real Alertmanager posting to it, each on its own loopback port, both stopped
// by PID when the Stack goes.
struct Stack {
    explicit Stack(const std::string& repeat_interval = "1h") {
        test::write_file(dir.path() / "runbooks" / "e2e.yaml", kRunbook);
        test::write_file(dir.path() / "alertmanager.yml",
                         alertmanager_config(rb_port, repeat_interval));
        runbookd = std::make_unique<test::Subprocess>(
            std::vector<std::string>{RUNBOOKD_BINARY, "--listen",
                                     fmt::format("127.0.0.1:{}", rb_port), "--runbooks",
                                     dir.file("runbooks"), "--db", db},
            rb_log);
        REQUIRE(test::wait_until(
            [&] { return answers(fmt::format("http://127.0.0.1:{}/", rb_port)); }, 10s));
        alertmanager = std::make_unique<test::Subprocess>(
            std::vector<std::string>{ALERTMANAGER_BINARY,
                                     "--config.file=" + dir.file("alertmanager.yml"),
                                     "--storage.path=" + dir.file("am-data"),
                                     fmt::format("--web.listen-address=127.0.0.1:{}", am_port),
                                     "--cluster.listen-address=", "--log.level=debug"},
            am_log);
        if (!test::wait_until(
                [&] { return answers(fmt::format("http://127.0.0.1:{}/-/ready", am_port)); },
                20s)) {
            FAIL("Alertmanager did not become ready\n" << logs());
        }
    }

    std::string logs() const {
        return "runbookd log:\n" + test::read_file(rb_log) + "\nalertmanager log:\n" +
               test::read_file(am_log);
    }

    // Stops Alertmanager, then runbookd with SIGTERM; true when runbookd exited 0.
    bool stop() {
        alertmanager->stop();
        runbookd->signal(SIGTERM);
        return runbookd->wait(10s) == 0;
    }

    test::TempDir dir;
    const std::uint16_t rb_port = test::free_tcp_port();
    const std::uint16_t am_port = test::free_tcp_port();
    const std::string db = dir.file("runbookd.db");
    const std::string rb_log = dir.file("runbookd.log");
    const std::string am_log = dir.file("alertmanager.log");
    std::unique_ptr<test::Subprocess> runbookd;
    std::unique_ptr<test::Subprocess> alertmanager;
};

}  // namespace

TEST_CASE("an alert posted to a real Alertmanager runs a runbook in runbookd", "[e2e]") {
    Stack stack;
    const std::string& db = stack.db;
    const std::uint16_t am_port = stack.am_port;
    const auto logs = [&] {
        return stack.logs();
    };

    const Json labels = {
        {"alertname", "RunbookdE2E"}, {"instance", "web-7:9100"}, {"severity", "critical"}};
    const std::string starts_at = Timestamp::now().to_rfc3339();
    post_alert(am_port, {{"labels", labels},
                         {"annotations", {{"summary", "load is high on web-7"}}},
                         {"startsAt", starts_at},
                         {"generatorURL", "http://prometheus.test:9090/graph"}});

    if (!test::wait_until(
            [&] {
                return query_value(db, "SELECT count(*) FROM runs WHERE state = 'succeeded'") ==
                       "1";
            },
            20s)) {
        FAIL("no successful run\n" << logs());
    }

    CHECK_THAT(query_value(db, "SELECT user_agent FROM deliveries WHERE id = 1"),
               Catch::StartsWith("Alertmanager/"));
    CHECK(query(db,
                "SELECT status, json_extract(labels, '$.instance'), "
                "json_extract(annotations, '$.summary'), ends_at, outcome FROM alerts") ==
          std::vector<std::vector<std::string>>{
              {"firing", "web-7:9100", "load is high on web-7", "NULL", "run_started"}});
    CHECK(query(db,
                "SELECT step, argv, exit_code, signal, stdout_excerpt FROM attempts "
                "WHERE step = 'describe'") ==
          std::vector<std::vector<std::string>>{
              {"describe", R"(["/bin/echo","web-7:9100","load is high on web-7"])", "0", "NULL",
               "web-7:9100 load is high on web-7\n"}});
    const std::string env = query_value(db,
                                        "SELECT stdout_excerpt FROM attempts WHERE step = "
                                        "'environment'");
    CHECK_THAT(env, Catch::Contains("RUNBOOK_RUN_ID=1\n") &&
                        Catch::Contains("RUNBOOK_STEP=environment\n"));

    // Resolve it: Alertmanager sends the resolved notification at the next group interval.
    post_alert(am_port, {{"labels", labels},
                         {"annotations", {{"summary", "load is high on web-7"}}},
                         {"startsAt", starts_at},
                         {"endsAt", Timestamp::now().to_rfc3339()}});
    if (!test::wait_until(
            [&] {
                return query_value(db, "SELECT count(*) FROM alerts WHERE status = 'resolved'") !=
                       "0";
            },
            20s)) {
        FAIL("no resolved notification\n" << logs());
    }
    CHECK(query(db, "SELECT outcome FROM alerts WHERE status = 'resolved'")[0][0] ==
          "status_ignored");
    CHECK(query_value(db, "SELECT count(*) FROM runs") == "1");
    CHECK(stack.stop());
}

TEST_CASE("Alertmanager re-sending the same alert starts its runbook once", "[e2e]") {
    // repeat_interval 2s: Alertmanager sends the unchanged group again every few seconds.
    Stack stack("2s");
    const std::string& db = stack.db;
    const std::uint16_t am_port = stack.am_port;
    const auto logs = [&] {
        return stack.logs();
    };

    post_alert(
        am_port,
        {{"labels", {{"alertname", "RunbookdE2E"}, {"instance", "web-8"}, {"severity", "page"}}},
         {"annotations", {{"summary", "again and again"}}},
         {"startsAt", Timestamp::now().to_rfc3339()}});
    if (!test::wait_until(
            [&] { return std::stoi(query_value(db, "SELECT count(*) FROM deliveries")) >= 3; },
            30s)) {
        FAIL("Alertmanager did not send the alert three times\n" << logs());
    }

    CHECK(query_value(db, "SELECT count(*) FROM runs") == "1");
    CHECK(query_value(db, "SELECT count(DISTINCT fingerprint || starts_at) FROM alerts") == "1");
    // Every delivery after the first reported the alert as a duplicate.
    CHECK(query_value(db, "SELECT count(*) - sum(outcome = 'duplicate') FROM alerts") == "1");
    CHECK(stack.stop());
}
