// Reloading the runbooks directory (docs/runbooks.md, Reload) through the real runbookd binary:
// POST /api/v1/reload, SIGHUP and runbookctl reload.
#include <csignal>
#include <future>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "support/support.hpp"

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using Json = nlohmann::json;
using Rows = std::vector<std::vector<std::string>>;

constexpr const char* kWorker = PYTHON_WORKER_BINARY;

// Runbook `py` for alerts named "Py": one step calling tools.which (tools.py next to it).
constexpr const char* kPythonRunbook = R"(name: py
matchers: ['alertname="Py"']
steps:
  - name: which
    python: {module: tools, function: which}
)";

// A runbook for alerts named `alertname` whose one step echoes `word`.
std::string echo_runbook(const std::string& name, const std::string& alertname,
                         const std::string& word) {
    return fmt::format(R"(name: {}
matchers: ['alertname="{}"']
steps:
  - name: say
    argv: [/bin/echo, {}]
)",
                       name, alertname, word);
}

Json post_reload(const test::RunbookdProcess& d) {
    auto r = d.post("/api/v1/reload", "");
    REQUIRE(r.ok());
    Json body = Json::parse(r->body);
    body["status"] = r->status;
    return body;
}

// The run ids a delivery started.
std::vector<std::int64_t> fire(const test::RunbookdProcess& d, const std::string& alertname,
                               const std::string& instance = "a") {
    auto r =
        d.post("/api/v1/webhooks/alertmanager", test::firing_notification(alertname, instance));
    REQUIRE(r.ok());
    REQUIRE(r->status == 200);
    std::vector<std::int64_t> ids;
    const Json body = Json::parse(r->body);
    for (const auto& run : body.at("runs")) {
        ids.push_back(run.at("run_id"));
    }
    return ids;
}

bool run_finished(const test::RunbookdProcess& d, std::int64_t id) {
    return test::wait_until(
        [&] {
            const auto state =
                test::query_value(d.db(), fmt::format("SELECT state FROM runs WHERE id = {}", id));
            return state != "queued" && state != "running";
        },
        20s);
}

Json last_event(const test::RunbookdProcess& d, const std::string& kind) {
    std::string detail;
    test::wait_until(
        [&] {
            auto rows = test::query(d.db(), "SELECT detail FROM events WHERE kind = '" + kind +
                                                "' ORDER BY id DESC LIMIT 1");
            if (rows.empty()) {
                return false;
            }
            detail = rows[0][0];
            return true;
        },
        5s);
    return detail.empty() ? Json() : Json::parse(detail);
}

// Once the gated run's first step runs: rewrites gated.yaml as one `say` step and reloads.
Json replace_gated_while_running(const test::RunbookdProcess& d) {
    REQUIRE(test::wait_query_value(d.db(), "SELECT count(*) FROM attempts WHERE state = 'running'",
                                   "1", 5s));
    test::write_file(d.dir().file("runbooks/gated.yaml"),
                     echo_runbook("gated", "Gated", "the-new-version"));
    return post_reload(d);
}

// Each attempt of a run: step name and state, in order.
Rows attempts_of(const test::RunbookdProcess& d, std::int64_t run) {
    return test::query(d.db(), fmt::format("SELECT step, state FROM attempts WHERE run_id = {} "
                                           "ORDER BY id",
                                           run));
}

}  // namespace

TEST_CASE("a reload with a new runbook makes new deliveries match it", "[reload]") {
    test::RunbookdProcess d({{"a.yaml", echo_runbook("a", "Alpha", "alpha")}});
    REQUIRE(d.wait_ready());
    REQUIRE(fire(d, "Beta").empty());

    test::write_file(d.dir().path() / "runbooks" / "b.yaml", echo_runbook("b", "Beta", "beta"));
    const Json reloaded = post_reload(d);
    const auto runs = fire(d, "Beta", "b");

    INFO(d.log());
    CHECK(reloaded.at("status") == 200);
    CHECK(reloaded.at("runbooks") == 2);
    CHECK(reloaded.at("added") == Json::array({"b"}));
    CHECK(reloaded.at("removed") == Json::array());
    CHECK(reloaded.at("changed") == Json::array());
    REQUIRE(runs.size() == 1);
    REQUIRE(run_finished(d, runs[0]));
    CHECK(test::query(d.db(), fmt::format("SELECT runbook, state FROM runs WHERE id = {}",
                                          runs[0])) == Rows{{"b", "succeeded"}});
    const Json event = last_event(d, "runbooks.reloaded");
    CHECK_THAT(event.value("actor", ""), Catch::StartsWith("http:127.0.0.1"));
    CHECK(event.at("added") == Json::array({"b"}));
    CHECK(event.at("hashes").size() == 2);
}

TEST_CASE("a reload that finds a broken runbook keeps the old set and names file:line:column",
          "[reload]") {
    test::RunbookdProcess d({{"a.yaml", echo_runbook("a", "Alpha", "alpha")}});
    REQUIRE(d.wait_ready());
    const auto a_file = d.dir().file("runbooks/a.yaml");
    test::write_file(a_file,
                     "name: a\nmatchers: ['alertname=\"Alpha\"']\nsteps:\n  - name: x\n"
                     "    argv: [/bin/echo, \"{{ alert.labels.nope \"]\n");
    test::write_file(d.dir().path() / "runbooks" / "b.yaml", echo_runbook("b", "Beta", "beta"));

    const Json refused = post_reload(d);
    const auto alpha = fire(d, "Alpha");
    const auto beta = fire(d, "Beta");

    INFO(d.log());
    CHECK(refused.at("status") == 422);
    CHECK(refused.at("error").at("code") == "invalid_runbooks");
    REQUIRE(refused.at("error").at("errors").size() >= 1);
    const std::string first = refused.at("error").at("errors").at(0);
    CHECK_THAT(first, Catch::Matches(".*a\\.yaml:[0-9]+:[0-9]+: .+"));
    CHECK(alpha.size() == 1);
    CHECK(beta.empty());
    const Json event = last_event(d, "runbooks.reload_failed");
    CHECK(event.at("errors").at(0) == first);
    CHECK(test::query_value(d.db(),
                            "SELECT count(*) FROM events WHERE kind = "
                            "'runbooks.reloaded'") == "0");
    // A process of its own: the counters start at zero.
    auto scrape = d.get("/metrics");
    REQUIRE(scrape.ok());
    CHECK_THAT(scrape->body, Catch::Contains("runbookd_reloads_total{outcome=\"invalid\"} 1\n"));
    CHECK_THAT(scrape->body, Catch::Contains("runbookd_reloads_total{outcome=\"reloaded\"} 0\n"));
}

TEST_CASE("a run in flight when its runbook changes finishes with its old steps", "[reload]") {
    test::TempDir outside;
    const std::string gate = outside.file("gate");
    test::RunbookdProcess d({{"gated.yaml", test::gated_runbook(gate)}});
    REQUIRE(d.wait_ready());
    const auto old_run = fire(d, "Gated", "a");
    REQUIRE(old_run.size() == 1);

    const Json reloaded = replace_gated_while_running(d);
    const auto new_run = fire(d, "Gated", "b");
    test::write_file(gate, "");

    INFO(d.log());
    CHECK(reloaded.at("status") == 200);
    CHECK(reloaded.at("changed") == Json::array({"gated"}));
    REQUIRE(run_finished(d, old_run[0]));
    REQUIRE(new_run.size() == 1);
    REQUIRE(run_finished(d, new_run[0]));
    CHECK(attempts_of(d, old_run[0]) ==
          Rows{{"wait-for-gate", "succeeded"}, {"after", "succeeded"}});
    CHECK(attempts_of(d, new_run[0]) == Rows{{"say", "succeeded"}});
    CHECK(test::query_value(d.db(), "SELECT count(DISTINCT runbook_hash) FROM runs") == "2");
}

TEST_CASE("a run still queued when its runbook changes starts with the version it matched",
          "[reload]") {
    test::TempDir outside;
    const std::string gate = outside.file("gate");
    test::RunbookdProcess d({{"gated.yaml", test::gated_runbook(gate) + "concurrency: 1\n"}});
    REQUIRE(d.wait_ready());
    const auto running = fire(d, "Gated", "a");
    const auto queued = fire(d, "Gated", "b");
    REQUIRE(running.size() == 1);
    REQUIRE(queued.size() == 1);

    const Json reloaded = replace_gated_while_running(d);
    test::write_file(gate, "");

    INFO(d.log());
    CHECK(reloaded.at("changed") == Json::array({"gated"}));
    REQUIRE(run_finished(d, queued[0]));
    CHECK(attempts_of(d, queued[0]) ==
          Rows{{"wait-for-gate", "succeeded"}, {"after", "succeeded"}});
}

TEST_CASE("two reloads at once run one after the other and both are recorded", "[reload]") {
    test::RunbookdProcess d({{"a.yaml", echo_runbook("a", "Alpha", "alpha")}});
    REQUIRE(d.wait_ready());
    test::write_file(d.dir().path() / "runbooks" / "b.yaml", echo_runbook("b", "Beta", "beta"));

    auto first = std::async(std::launch::async, [&] { return d.post("/api/v1/reload", ""); });
    auto second = std::async(std::launch::async, [&] { return d.post("/api/v1/reload", ""); });
    const auto one = first.get();
    const auto two = second.get();

    INFO(d.log());
    REQUIRE(one.ok());
    REQUIRE(two.ok());
    CHECK(one->status == 200);
    CHECK(two->status == 200);
    // The second sees the first's result: together they added b exactly once.
    const auto added =
        Json::parse(one->body).at("added").size() + Json::parse(two->body).at("added").size();
    CHECK(added == 1);
    CHECK(test::wait_query_value(
        d.db(), "SELECT count(*) FROM events WHERE kind = 'runbooks.reloaded'", "2", 5s));
}

TEST_CASE("SIGHUP reloads the runbooks", "[reload]") {
    test::RunbookdProcess d({{"a.yaml", echo_runbook("a", "Alpha", "alpha")}});
    REQUIRE(d.wait_ready());
    test::write_file(d.dir().path() / "runbooks" / "b.yaml", echo_runbook("b", "Beta", "beta"));

    d.process().signal(SIGHUP);
    const bool reloaded = test::wait_until(
        [&] {
            auto r = d.get("/api/v1/runbooks");
            return r.ok() && Json::parse(r->body).at("runbooks").size() == 2;
        },
        10s);

    INFO(d.log());
    CHECK(reloaded);
    CHECK(d.process().running());
    CHECK(last_event(d, "runbooks.reloaded").value("actor", "") == "signal:SIGHUP");
    CHECK(fire(d, "Beta").size() == 1);
}

TEST_CASE("a changed python module is used after a reload", "[reload][python]") {
    test::RunbookdProcess d({{"py.yaml", kPythonRunbook},
                             {"tools.py", "def which(ctx):\n    ctx.set_output('v', 1)\n"}},
                            fmt::format("python:\n  workers: 1\n  worker: {}\n", kWorker));
    REQUIRE(d.wait_ready());
    const auto before = fire(d, "Py", "a");
    REQUIRE(before.size() == 1);
    REQUIRE(run_finished(d, before[0]));

    test::write_file(d.dir().file("runbooks/tools.py"),
                     "def which(ctx):\n    ctx.set_output('v', 2)\n");
    const Json reloaded = post_reload(d);
    const auto after = fire(d, "Py", "b");
    REQUIRE(after.size() == 1);
    REQUIRE(run_finished(d, after[0]));

    INFO(d.log());
    CHECK(reloaded.at("status") == 200);
    auto outputs = [&](std::int64_t id) {
        return test::query_value(d.db(),
                                 fmt::format("SELECT outputs FROM attempts WHERE run_id = {}", id));
    };
    CHECK(outputs(before[0]) == R"({"v":1})");
    CHECK(outputs(after[0]) == R"({"v":2})");
}

TEST_CASE("a reload whose python module does not import keeps the old set", "[reload][python]") {
    test::RunbookdProcess d(
        {{"py.yaml", kPythonRunbook}, {"tools.py", "def which(ctx):\n    pass\n"}},
        fmt::format("python:\n  workers: 1\n  worker: {}\n", kWorker));
    REQUIRE(d.wait_ready());
    test::write_file(d.dir().file("runbooks/tools.py"), "def other(ctx):\n    pass\n");

    const Json refused = post_reload(d);

    INFO(d.log());
    CHECK(refused.at("status") == 422);
    REQUIRE(refused.at("error").at("errors").size() == 1);
    CHECK_THAT(refused.at("error").at("errors").at(0).get<std::string>(),
               Catch::Matches(".*py\\.yaml:[0-9]+:[0-9]+: .*which.*"));
}

TEST_CASE("runbookctl reload reports what changed, and the errors with a non-zero exit",
          "[reload][cli]") {
    test::RunbookdProcess d({{"a.yaml", echo_runbook("a", "Alpha", "alpha")}});
    REQUIRE(d.wait_ready());
    test::write_file(d.dir().path() / "runbooks" / "b.yaml", echo_runbook("b", "Beta", "beta"));
    const std::vector<std::string> ctl = {RUNBOOKCTL_BINARY, "--url", d.url(), "reload"};

    const auto ok = test::run_command(ctl);
    test::write_file(d.dir().path() / "runbooks" / "b.yaml", "name: b\nmatchers: [\n");
    const auto bad = test::run_command(ctl);

    INFO(d.log());
    CHECK(ok.exit_code == 0);
    CHECK_THAT(ok.output, Catch::Contains("added: b"));
    CHECK(bad.exit_code == 1);
    CHECK_THAT(bad.output, Catch::Contains("b.yaml:"));
}
