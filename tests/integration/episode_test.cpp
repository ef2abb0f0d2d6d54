// One run per alert episode: Alertmanager's re-sent snapshots, HA duplicates and races.
#include <atomic>
#include <future>
#include <thread>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "support/support.hpp"

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using Json = nlohmann::json;
using test::query_value;
using test::RunbookFiles;
using test::TestDaemon;

constexpr const char* kRunbooks = R"(name: diagnose
matchers: ['alertname="Down"']
steps:
  - name: noop
    argv: [/bin/true]
)";

constexpr const char* kCleanup = R"(name: cleanup
matchers: ['alertname="Down"']
on: [resolved]
steps:
  - name: noop
    argv: [/bin/true]
)";

Json alert(const std::string& instance, const std::string& starts_at,
           const std::string& status = "firing") {
    return {{"status", status},
            {"labels", {{"alertname", "Down"}, {"instance", instance}}},
            {"annotations", Json::object()},
            {"startsAt", starts_at},
            {"endsAt", status == "firing" ? "0001-01-01T00:00:00Z" : "2026-12-04T17:00:00Z"},
            {"generatorURL", "http://prometheus:9090/graph"}};
}

std::string notification(const std::vector<Json>& alerts) {
    return Json{{"version", "4"},     {"receiver", "runbookd"},
                {"status", "firing"}, {"groupKey", "{}:{alertname=\"Down\"}"},
                {"alerts", alerts},   {"truncatedAlerts", 0}}
        .dump();
}

Json deliver(const TestDaemon& d, const std::string& body) {
    auto r = d.post("/api/v1/webhooks/alertmanager", body);
    REQUIRE(r.ok());
    REQUIRE(r->status == 200);
    return Json::parse(r->body);
}

std::string runs(const TestDaemon& d) {
    return query_value(d.db(), "SELECT count(*) FROM runs");
}

}  // namespace

TEST_CASE("a re-sent snapshot starts nothing for the episodes it already started", "[episode]") {
    TestDaemon d(RunbookFiles{{"diagnose.yaml", kRunbooks}});
    const auto a = alert("db-1", "2026-12-04T15:00:00.123456789Z");

    const Json first = deliver(d, notification({a}));
    // The group grows: Alertmanager sends the whole group again, db-1 included.
    const Json second = deliver(d, notification({a, alert("db-2", "2026-12-04T15:05:00Z")}));

    CHECK(first["runs_started"] == 1);
    CHECK(second["runs_started"] == 1);
    CHECK(second["runs"][0]["fingerprint"] != first["runs"][0]["fingerprint"]);
    REQUIRE(second["not_acted_on"].size() == 1);
    CHECK(second["not_acted_on"][0]["reason"] == "duplicate");
    CHECK(second["not_acted_on"][0]["detail"] ==
          "duplicate: this episode (firing since 2026-12-04T15:00:00.123456789Z) already "
          "started runbook diagnose as run " +
              first["runs"][0]["run_id"].dump());
    CHECK(runs(d) == "2");
    CHECK(query_value(d.db(), "SELECT group_concat(outcome, ' ') FROM alerts") ==
          "run_started duplicate run_started");
}

TEST_CASE("the same alert firing again later is a new episode and runs again", "[episode]") {
    TestDaemon d(RunbookFiles{{"diagnose.yaml", kRunbooks}});
    deliver(d, notification({alert("db-1", "2026-12-04T15:00:00Z")}));
    const Json again = deliver(d, notification({alert("db-1", "2026-12-04T16:00:00Z")}));
    CHECK(again["runs_started"] == 1);
    CHECK(runs(d) == "2");
}

TEST_CASE("a delivery older than an episode already handled does not run it", "[episode]") {
    TestDaemon d(RunbookFiles{{"diagnose.yaml", kRunbooks}});
    const Json newer = deliver(d, notification({alert("db-1", "2026-12-04T16:00:00Z")}));
    const Json stale = deliver(d, notification({alert("db-1", "2026-12-04T15:00:00Z")}));

    CHECK(stale["runs_started"] == 0);
    REQUIRE(stale["not_acted_on"].size() == 1);
    CHECK_THAT(stale["not_acted_on"][0]["detail"].get<std::string>(),
               Catch::StartsWith("stale: a later episode of this alert (firing since "
                                 "2026-12-04T16:00:00Z) already started runbook diagnose"));
    CHECK(runs(d) == "1");
}

TEST_CASE("an alert listed twice in one notification runs once", "[episode]") {
    TestDaemon d(RunbookFiles{{"diagnose.yaml", kRunbooks}});
    const auto a = alert("db-1", "2026-12-04T15:00:00Z");
    const Json r = deliver(d, notification({a, a}));
    CHECK(r["runs_started"] == 1);
    CHECK(runs(d) == "1");
}

TEST_CASE("resolved episodes run resolved runbooks once, firing ones never", "[episode]") {
    TestDaemon d(RunbookFiles{{"diagnose.yaml", kRunbooks}, {"cleanup.yaml", kCleanup}});
    const auto resolved = alert("db-1", "2026-12-04T15:00:00Z", "resolved");
    // Resolved before it was ever seen firing: only the resolved runbook acts.
    const Json first = deliver(d, notification({resolved}));
    const Json again = deliver(d, notification({resolved}));

    CHECK(first["runs_started"] == 1);
    CHECK(first["runs"][0]["runbook"] == "cleanup");
    CHECK(again["runs_started"] == 0);
    CHECK(runs(d) == "1");
}

TEST_CASE("two clients racing to deliver the same notification start one run", "[episode]") {
    TestDaemon d(RunbookFiles{{"diagnose.yaml", kRunbooks}});
    constexpr int kRounds = 100;
    for (int i = 0; i < kRounds; ++i) {
        const std::string body =
            notification({alert("db-" + std::to_string(i), "2026-12-04T15:00:00Z")});
        auto a = std::async(std::launch::async, [&] { return deliver(d, body); });
        auto b = std::async(std::launch::async, [&] { return deliver(d, body); });
        const int started = a.get()["runs_started"].get<int>() + b.get()["runs_started"].get<int>();
        REQUIRE(started == 1);
    }
    CHECK(runs(d) == std::to_string(kRounds));
    CHECK(query_value(d.db(), "SELECT count(*) FROM deliveries") == std::to_string(2 * kRounds));
    CHECK(query_value(d.db(), "SELECT count(*) FROM alerts WHERE outcome = 'duplicate'") ==
          std::to_string(kRounds));
}

TEST_CASE("a cooldown holds back new episodes of the same key until it has passed",
          "[episode][cooldown]") {
    constexpr const char* kRestart = R"(name: restart
matchers: ['alertname="Down"']
dedup: "{{ alert.labels.instance }}"
cooldown: 1500ms
steps:
  - name: noop
    argv: [/bin/true]
)";
    TestDaemon d(RunbookFiles{{"restart.yaml", kRestart}});
    const Json first = deliver(d, notification({alert("db-1", "2026-12-04T15:00:00Z")}));
    // The alert flaps: a new episode at once, and another alert of the same instance.
    const Json flap = deliver(d, notification({alert("db-1", "2026-12-04T15:01:00Z")}));
    Json other_alert = alert("db-1", "2026-12-04T15:02:00Z");
    other_alert["labels"]["job"] = "node";
    const Json same_instance = deliver(d, notification({other_alert}));
    const Json other_instance = deliver(d, notification({alert("db-2", "2026-12-04T15:02:00Z")}));

    CHECK(first["runs_started"] == 1);
    CHECK(flap["runs_started"] == 0);
    REQUIRE(flap["not_acted_on"].size() == 1);
    CHECK(flap["not_acted_on"][0]["reason"] == "cooldown");
    CHECK_THAT(flap["not_acted_on"][0]["detail"].get<std::string>(),
               Catch::StartsWith("cooldown: runbook restart ran for key \"db-1\" ") &&
                   Catch::EndsWith("its cooldown is 1500ms"));
    CHECK(same_instance["runs_started"] == 0);
    CHECK(other_instance["runs_started"] == 1);

    std::this_thread::sleep_for(1600ms);
    const Json later = deliver(d, notification({alert("db-1", "2026-12-04T15:03:00Z")}));
    CHECK(later["runs_started"] == 1);
    CHECK(query_value(d.db(), "SELECT group_concat(outcome, ' ') FROM alerts") ==
          "run_started cooldown cooldown run_started run_started");
}

TEST_CASE("max_runs caps the runs for one key within its window", "[episode][cooldown]") {
    constexpr const char* kBudget = R"(name: budgeted
matchers: ['alertname="Down"']
max_runs: {count: 2, per: 1h}
steps:
  - name: noop
    argv: [/bin/true]
)";
    TestDaemon d(RunbookFiles{{"budget.yaml", kBudget}});
    // Three episodes of one alert (per-alert budget: no dedup key), in one notification each.
    deliver(d, notification({alert("db-1", "2026-12-04T15:00:00Z")}));
    deliver(d, notification({alert("db-1", "2026-12-04T15:10:00Z")}));
    const Json third = deliver(d, notification({alert("db-1", "2026-12-04T15:20:00Z")}));
    // Another alert has its own budget.
    const Json other = deliver(d, notification({alert("db-2", "2026-12-04T15:20:00Z")}));

    CHECK(third["runs_started"] == 0);
    REQUIRE(third["not_acted_on"].size() == 1);
    CHECK(third["not_acted_on"][0]["reason"] == "budget");
    CHECK_THAT(third["not_acted_on"][0]["detail"].get<std::string>(),
               Catch::StartsWith("budget: runbook budgeted already ran 2 times for key"));
    CHECK(other["runs_started"] == 1);
    CHECK(runs(d) == "3");
}

namespace {

// The policy table below runs on this clock: each row sets the time of its delivery.
struct ManualClock {
    std::shared_ptr<std::atomic<std::int64_t>> ms = std::make_shared<std::atomic<std::int64_t>>(0);
    std::function<Timestamp()> function() const {
        return [ms = ms] {
            const std::int64_t t = ms->load();
            return Timestamp{t / 1000, static_cast<std::int32_t>((t % 1000) * 1'000'000)};
        };
    }
};

constexpr std::int64_t kT0 = 1796396400'000;  // 2026-12-04T15:00:00Z, in ms
constexpr std::int64_t kMinute = 60'000;

std::string at_minute(double minutes) {
    const auto ms = kT0 + static_cast<std::int64_t>(minutes * kMinute);
    return Timestamp{ms / 1000, static_cast<std::int32_t>((ms % 1000) * 1'000'000)}
        .to_rfc3339_millis();
}

Json named_alert(const std::string& name, const std::string& instance, double starts_minute,
                 const std::string& status = "firing") {
    Json a = alert(instance, at_minute(starts_minute), status);
    a["labels"]["alertname"] = name;
    return a;
}

}  // namespace

TEST_CASE("episode policies at their boundaries, on an injected clock", "[episode][cooldown]") {
    constexpr const char* kRestart = R"(name: restart
matchers: ['alertname="Down"']
dedup: "{{ alert.labels.instance }}"
cooldown: 10m
max_runs: {count: 2, per: 1h}
steps:
  - name: noop
    argv: [/bin/true]
)";
    constexpr const char* kOnce = R"(name: once
matchers: ['alertname="Stuck"']
dedup: "{{ alert.labels.instance }}"
once_until_resolved: true
steps:
  - name: noop
    argv: [/bin/true]
)";
    ManualClock clock;
    TestDaemon d(
        RunbookFiles{{"restart.yaml", kRestart}, {"cleanup.yaml", kCleanup}, {"once.yaml", kOnce}},
        [&](daemon::Config& c) { c.clock = clock.function(); });

    struct Row {
        const char* what;
        double minute;  // when the delivery arrives
        Json alert;
        const char* outcome;  // of the alert, as recorded
        const char* started;  // runbooks started, comma-separated
    };
    const std::vector<Row> rows = {
        {"first episode", 0, named_alert("Down", "db-1", 0), "run_started", "restart"},
        {"HA peer sends it again", 0.01, named_alert("Down", "db-1", 0), "duplicate", ""},
        {"flap just inside the cooldown", 9.999, named_alert("Down", "db-1", 9), "cooldown", ""},
        {"flap when the cooldown has just passed", 10, named_alert("Down", "db-1", 10),
         "run_started", "restart"},
        {"third run within the hour", 25, named_alert("Down", "db-1", 25), "budget", ""},
        {"the first run leaves the budget window", 60, named_alert("Down", "db-1", 60),
         "run_started", "restart"},
        {"a delayed delivery of an older episode", 61, named_alert("Down", "db-1", 9), "duplicate",
         ""},
        {"repeat_interval re-sends the open episode", 300, named_alert("Down", "db-1", 60),
         "duplicate", ""},
        {"it resolves: the clean-up runbook runs", 301, named_alert("Down", "db-1", 60, "resolved"),
         "run_started", "cleanup"},
        {"the resolved notification again", 302, named_alert("Down", "db-1", 60, "resolved"),
         "duplicate", ""},
        {"resolved, never seen firing: no firing runbook", 303,
         named_alert("Down", "db-2", 303, "resolved"), "run_started", "cleanup"},
        {"once_until_resolved: first episode", 400, named_alert("Stuck", "db-1", 400),
         "run_started", "once"},
        {"a new episode while the first is unresolved", 401, named_alert("Stuck", "db-1", 401),
         "duplicate", ""},
        {"another alert of the same key", 402, named_alert("Stuck", "db-1", 402), "duplicate", ""},
        {"another key is independent", 402, named_alert("Stuck", "db-2", 402), "run_started",
         "once"},
        {"the first episode resolves", 403, named_alert("Stuck", "db-1", 400, "resolved"),
         "status_ignored", ""},
        {"the next episode now runs", 404, named_alert("Stuck", "db-1", 404), "run_started",
         "once"},
    };
    for (const Row& row : rows) {
        INFO(row.what);
        clock.ms->store(kT0 + static_cast<std::int64_t>(row.minute * kMinute));
        const Json r = deliver(d, notification({row.alert}));
        std::vector<std::string> started;
        for (const auto& run : r["runs"]) {
            started.push_back(run["runbook"].get<std::string>());
        }
        CHECK(fmt::format("{}", fmt::join(started, ",")) == row.started);
        CHECK(query_value(d.db(), "SELECT outcome FROM alerts ORDER BY id DESC LIMIT 1") ==
              row.outcome);
    }
    CHECK_THAT(query_value(d.db(),
                           "SELECT outcome_detail FROM alerts WHERE outcome = 'duplicate' AND "
                           "labels LIKE '%Stuck%' ORDER BY id LIMIT 1"),
               Catch::StartsWith("unresolved: runbook once ran for key \"db-1\" as run ") &&
                   Catch::EndsWith("that has not resolved (once_until_resolved)"));
}

TEST_CASE("on_resolve: cancel stops a run whose alert resolves; finish lets it run",
          "[episode][resolve]") {
    constexpr const char* kCancel = R"(name: wait-cancel
matchers: ['alertname="Down"']
on_resolve: cancel
steps:
  - name: wait
    argv: [/bin/sleep, "30"]
)";
    constexpr const char* kFinish = R"(name: wait-finish
matchers: ['alertname="Down"']
steps:
  - name: wait
    argv: [/bin/sleep, "1"]
)";
    TestDaemon d(RunbookFiles{{"cancel.yaml", kCancel}, {"finish.yaml", kFinish}});
    const Json fired = deliver(d, notification({alert("db-1", "2026-12-04T15:00:00Z")}));
    REQUIRE(fired["runs_started"] == 2);
    REQUIRE(test::wait_until(
        [&] { return query_value(d.db(), "SELECT count(*) FROM attempts") == "2"; }, 5s));

    deliver(d, notification({alert("db-1", "2026-12-04T15:00:00Z", "resolved")}));
    REQUIRE(d.wait_runs_finished());

    CHECK(query_value(d.db(), "SELECT state FROM runs WHERE runbook = 'wait-cancel'") ==
          "cancelled");
    CHECK(query_value(d.db(), "SELECT cancelled_by FROM runs WHERE runbook = 'wait-cancel'") ==
          "alertmanager");
    CHECK_THAT(query_value(d.db(), "SELECT reason FROM runs WHERE runbook = 'wait-cancel'"),
               Catch::Contains("the alert resolved") &&
                   Catch::Contains("runbook wait-cancel has on_resolve: cancel"));
    CHECK(query_value(d.db(), "SELECT state FROM runs WHERE runbook = 'wait-finish'") ==
          "succeeded");
    // A re-sent resolved notification finds nothing left to cancel.
    const Json again =
        deliver(d, notification({alert("db-1", "2026-12-04T15:00:00Z", "resolved")}));
    CHECK(again["runs_started"] == 0);
}

TEST_CASE("one notification with two episodes of an alert runs the later one only", "[episode]") {
    TestDaemon d(RunbookFiles{{"diagnose.yaml", kRunbooks}});
    const Json r = deliver(d, notification({alert("db-1", "2026-12-04T15:10:00Z"),
                                            alert("db-1", "2026-12-04T15:00:00Z")}));
    CHECK(r["runs_started"] == 1);
    CHECK(query_value(d.db(), "SELECT starts_at FROM episodes") == "2026-12-04T15:10:00Z");
    CHECK_THAT(query_value(d.db(), "SELECT outcome_detail FROM alerts WHERE position = 1"),
               Catch::StartsWith("stale: a later episode of this alert is in this notification"));
}

TEST_CASE("a firing alert already reported resolved starts nothing and holds no key",
          "[episode][resolve]") {
    constexpr const char* kOnce = R"(name: once
matchers: ['alertname="Down"']
once_until_resolved: true
steps:
  - name: noop
    argv: [/bin/true]
)";
    TestDaemon d(RunbookFiles{{"once.yaml", kOnce}});
    // One notification lists the alert firing and resolved; then, out of order, a resolved
    // notification arrives before its firing one.
    const Json both = deliver(d, notification({alert("db-1", "2026-12-04T15:00:00Z"),
                                               alert("db-1", "2026-12-04T15:00:00Z", "resolved")}));
    deliver(d, notification({alert("db-2", "2026-12-04T15:05:00Z", "resolved")}));
    const Json late = deliver(d, notification({alert("db-2", "2026-12-04T15:05:00Z")}));
    const Json next = deliver(d, notification({alert("db-1", "2026-12-04T15:10:00Z")}));

    CHECK(both["runs_started"] == 0);
    CHECK(late["runs_started"] == 0);
    REQUIRE(late["not_acted_on"].size() == 1);
    CHECK_THAT(late["not_acted_on"][0]["detail"].get<std::string>(),
               Catch::StartsWith("stale: this alert (firing since 2026-12-04T15:05:00Z) was "
                                 "already reported resolved"));
    CHECK(next["runs_started"] == 1);
}

TEST_CASE("a dedup key that renders empty counts the alert on its own", "[episode][cooldown]") {
    constexpr const char* kRestart = R"(name: restart
matchers: ['alertname="Down"']
dedup: "{{ alert.labels.instance }}"
cooldown: 1h
steps:
  - name: noop
    argv: [/bin/true]
)";
    TestDaemon d(RunbookFiles{{"restart.yaml", kRestart}});
    const Json a = deliver(d, notification({alert("", "2026-12-04T15:00:00Z")}));
    Json other = alert("", "2026-12-04T15:00:00Z");
    other["labels"]["job"] = "node";
    const Json b = deliver(d, notification({other}));

    CHECK(a["runs_started"] == 1);
    CHECK(b["runs_started"] == 1);
    REQUIRE(b["warnings"].size() == 1);
    CHECK_THAT(b["warnings"][0].get<std::string>(), Catch::Contains("dedup key rendered empty"));
}
