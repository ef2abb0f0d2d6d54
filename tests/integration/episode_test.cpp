// One run per alert episode: Alertmanager's re-sent snapshots, HA duplicates and races.
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
