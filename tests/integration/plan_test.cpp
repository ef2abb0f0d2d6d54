// POST /api/v1/plan and runbookctl plan over real HTTP: what a notification would start, and
// what would hold it back, with nothing recorded and nothing run (docs/manual-runs.md, Plan).

#include <filesystem>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "support/support.hpp"

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using Json = nlohmann::json;
using test::query_value;
using test::RunbookFiles;
using test::TestDaemon;

// Rows of every table a plan could write to, as one string.
std::string row_counts(const TestDaemon& d) {
    return query_value(d.db(),
                       "SELECT (SELECT count(*) FROM deliveries) || ',' || (SELECT count(*) FROM "
                       "alerts) || ',' || (SELECT count(*) FROM runs) || ',' || (SELECT count(*) "
                       "FROM attempts) || ',' || (SELECT count(*) FROM events) || ',' || (SELECT "
                       "count(*) FROM episodes) || ',' || (SELECT count(*) FROM resolved_alerts)");
}

Json plan(const TestDaemon& d, const std::string& body) {
    auto r = d.post("/api/v1/plan", body);
    REQUIRE(r.ok());
    INFO(r->body);
    REQUIRE(r->status == 200);
    return Json::parse(r->body);
}

std::string touch_runbook(const std::string& name, const std::string& file,
                          const std::string& extra = "") {
    return fmt::format(R"(name: {0}
matchers: ['alertname="{0}"']
{2}steps:
  - name: touch
    argv: [touch, "{1}-{{{{ alert.labels.instance }}}}"]
)",
                       name, file, extra);
}

}  // namespace

TEST_CASE("a plan says which runbooks would start and renders their steps, running nothing",
          "[plan]") {
    test::TempDir dir;
    const std::string file = dir.file("touched");
    TestDaemon d(RunbookFiles{{"a.yaml", touch_runbook("Touch", file)},
                              {"b.yaml", touch_runbook("Other", file, "on: [resolved]\n")}});
    const std::string before = row_counts(d);

    const Json answer = plan(d, test::firing_notification("Touch", "db1"));
    const Json ignored = plan(d, R"({"labels": {"alertname": "Other"}})");
    const Json nothing = plan(d, R"({"labels": {"alertname": "Nobody"}})");

    const Json& alert = answer.at("alerts").at(0);
    CHECK(alert["outcome"] == "run_started");
    REQUIRE(alert["runbooks"].size() == 1);
    CHECK(alert["runbooks"][0]["runbook"] == "Touch");
    CHECK(alert["runbooks"][0]["outcome"] == "would_start");
    CHECK(alert["runbooks"][0]["steps"][0]["argv"].back() == file + "-db1");
    CHECK(ignored["alerts"][0]["outcome"] == "status_ignored");
    CHECK(nothing["alerts"][0]["outcome"] == "no_matching_runbook");
    const auto bad = d.post("/api/v1/plan", R"({"alerts": "none"})");
    const auto unknown = d.post("/api/v1/plan", R"({"labels": {}, "statu": "firing"})");
    CHECK(bad->status == 400);
    CHECK(Json::parse(bad->body)["error"]["field"] == "alerts");
    CHECK(unknown->status == 400);
    CHECK(Json::parse(unknown->body)["error"]["field"] == "statu");
    CHECK_FALSE(std::filesystem::exists(file + "-db1"));
    CHECK(row_counts(d) == before);
}

TEST_CASE("a plan names the policy that would hold a run: duplicate, cooldown, lock", "[plan]") {
    test::TempDir dir;
    const std::string gate = dir.file("gate");
    TestDaemon d(
        RunbookFiles{{"a.yaml", touch_runbook("Touch", dir.file("t"), "cooldown: 1h\ndedup: x\n")},
                     {"locked.yaml", fmt::format(R"(name: locked
matchers: ['alertname="Locked"']
lock: host
steps:
  - name: wait-for-gate
    argv: [/bin/sh, -c, 'while [ ! -e {} ]; do sleep 0.05; done']
)",
                                                 gate)}});
    const std::string episode = test::firing_notification("Touch", "db1");
    REQUIRE(d.post("/api/v1/webhooks/alertmanager", episode)->status == 200);
    REQUIRE(d.wait_runs_finished());
    REQUIRE(
        d.post("/api/v1/webhooks/alertmanager", test::firing_notification("Locked", "a"))->status ==
        200);
    REQUIRE(test::wait_query_value(d.db(), "SELECT count(*) FROM runs WHERE state = 'running'", "1",
                                   10s));
    const std::string before = row_counts(d);

    const Json duplicate = plan(d, episode);
    const Json cooldown = plan(d, test::firing_notification("Touch", "db2"));
    const Json locked = plan(d, test::firing_notification("Locked", "b"));
    const std::string after = row_counts(d);
    test::write_file(gate, "");
    REQUIRE(d.wait_runs_finished());

    CHECK(duplicate["alerts"][0]["runbooks"][0]["outcome"] == "duplicate");
    CHECK(cooldown["alerts"][0]["runbooks"][0]["outcome"] == "cooldown");
    CHECK_THAT(cooldown["alerts"][0]["runbooks"][0]["detail"].get<std::string>(),
               Catch::Contains("cooldown"));
    CHECK(locked["alerts"][0]["runbooks"][0]["outcome"] == "would_start");
    CHECK(locked["alerts"][0]["runbooks"][0]["waits"] == "lock: \"host\" is held by run 2");
    CHECK(after == before);
}

TEST_CASE("runbookctl plan reads a notification file or labels; bad input is refused",
          "[plan][cli]") {
    test::TempDir dir;
    TestDaemon d(RunbookFiles{{"a.yaml", touch_runbook("Touch", dir.file("t"))}});
    test::write_file(dir.file("payload.json"), test::firing_notification("Touch", "db1"));
    const auto ctl = [&d](std::vector<std::string> args) {
        args.insert(args.begin(), {RUNBOOKCTL_BINARY, "--url", d.url()});
        return test::run_command(args);
    };

    auto file = ctl({"plan", dir.file("payload.json")});
    auto labels =
        ctl({"-o", "json", "plan", "--label", "alertname=Touch", "--label", "instance=x"});
    auto both = ctl({"plan", dir.file("payload.json"), "--label", "a=b"});
    auto refused =
        test::run_command({"/bin/sh", "-c",
                           fmt::format("echo '[1]' > {0}/bad.json; {1} --url {2} plan "
                                       "{0}/bad.json",
                                       dir.path().string(), RUNBOOKCTL_BINARY, d.url())});

    INFO(file.output << labels.output << both.output << refused.output);
    CHECK(file.exit_code == 0);
    CHECK_THAT(file.output, Catch::Contains("runbook Touch: would_start"));
    CHECK(labels.exit_code == 0);
    CHECK(Json::parse(labels.output)["alerts"][0]["runbooks"][0]["steps"][0]["argv"].back() ==
          dir.file("t") + "-x");
    CHECK(both.exit_code == 2);
    CHECK(refused.exit_code == 1);
    CHECK(query_value(d.db(), "SELECT count(*) FROM runs") == "0");
}

TEST_CASE("a plan and a dry run show a step's approval gate", "[plan]") {
    TestDaemon d(RunbookFiles{{"gated.yaml", R"(name: gated
matchers: ['alertname="Gated"']
steps:
  - name: look
    argv: [/bin/true]
  - name: restart
    approval: {approvers: [alice, bob], timeout: 10m}
    argv: [/bin/true]
)"}});
    const Json out = plan(d, R"({"labels": {"alertname": "Gated"}})");
    const Json steps = out["alerts"][0]["runbooks"][0]["steps"];
    CHECK_FALSE(steps[0].contains("approval"));
    CHECK(steps[1]["approval"] == Json{{"approvers", {"alice", "bob"}},
                                       {"timeout", "10m"},
                                       {"on_timeout", "deny"},
                                       {"message", ""}});

    auto dry = test::run_command({RUNBOOKCTL_BINARY, "--url", d.url(), "run", "gated", "--label",
                                  "alertname=Gated", "--dry-run"});
    CHECK(dry.exit_code == 0);
    CHECK_THAT(dry.output,
               Catch::Contains("approval: waits for alice, bob (timeout 10m, then deny)"));

    // A notification file after --label is still the file, and the two together are refused.
    test::TempDir dir;
    test::write_file(dir.path() / "n.json", test::firing_notification("Gated", "a"));
    auto both = test::run_command({RUNBOOKCTL_BINARY, "--url", d.url(), "plan", "--label",
                                   "alertname=Gated", dir.file("n.json")});
    CHECK(both.exit_code == 2);
    CHECK_THAT(both.output, Catch::Contains("not both"));
}

TEST_CASE("a manual run whose body is not JSON is told where the parse failed", "[plan]") {
    TestDaemon d(RunbookFiles{{"t.yaml", touch_runbook("t", "/nonexistent/x")}});
    auto r = d.post("/api/v1/runbooks/t/runs", R"({"labels":)");
    REQUIRE(r.ok());
    CHECK(r->status == 400);
    CHECK_THAT(Json::parse(r->body)["error"]["message"].get<std::string>(),
               Catch::StartsWith("the body is not valid JSON: parse error at line 1, column 11"));
    auto p = d.post("/api/v1/plan", "{");
    REQUIRE(p.ok());
    CHECK(p->status == 400);
    CHECK_THAT(Json::parse(p->body)["error"]["message"].get<std::string>(),
               Catch::Contains("not valid JSON: parse error"));
}
