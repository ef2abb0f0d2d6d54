#include <csignal>
#include <filesystem>
#include <future>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "support/support.hpp"

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using Rows = std::vector<std::vector<std::string>>;

std::string error_code(const http::ClientResponse& r) {
    const auto body = nlohmann::json::parse(r.body, nullptr, false);
    return body.is_object() && body.contains("error") ? body["error"].value("code", "") : "";
}

}  // namespace

TEST_CASE(
    "on SIGTERM runbookd refuses new deliveries at once, lets the running run finish and "
    "exits 0",
    "[drain]") {
    test::TempDir outside;
    const std::string gate = outside.file("gate");
    test::RunbookdProcess d({{"gated.yaml", test::gated_runbook(gate)}},
                            "runs:\n  shutdown_grace: 30s\n");
    REQUIRE(d.wait_ready());
    auto first = d.post("/api/v1/webhooks/alertmanager", test::firing_notification("Gated", "a"));
    REQUIRE(first.ok());
    REQUIRE(first->status == 200);
    REQUIRE(test::wait_query_value(d.db(), "SELECT count(*) FROM attempts WHERE state = 'running'",
                                   "1", 5s));

    d.process().signal(SIGTERM);
    const bool unready = test::wait_until(
        [&] {
            auto r = d.get("/readyz");
            return r.ok() && r->status == 503;
        },
        5s);
    auto readyz = d.get("/readyz");
    auto livez = d.get("/livez");
    auto refused = d.post("/api/v1/webhooks/alertmanager", test::firing_notification("Gated", "b"));
    auto runs = d.get("/api/v1/runs");
    const bool still_running = d.process().running();
    test::write_file(gate, "");
    const auto code = d.process().wait(20s);

    INFO(d.log());
    REQUIRE(unready);
    REQUIRE(readyz.ok());
    CHECK(nlohmann::json::parse(readyz->body)["reasons"][0]["code"] == "draining");
    REQUIRE(livez.ok());
    CHECK(livez->status == 200);
    REQUIRE(refused.ok());
    CHECK(refused->status == 503);
    CHECK(error_code(*refused) == "draining");
    CHECK(refused->retry_after == "5");
    REQUIRE(runs.ok());
    CHECK(runs->status == 200);
    CHECK(nlohmann::json::parse(runs->body)["runs"][0]["state"] == "running");
    CHECK(still_running);
    CHECK(code == 0);
    CHECK(test::query_value(d.db(), "SELECT count(*) FROM deliveries") == "1");
    CHECK(test::query(d.db(), "SELECT state, reason FROM runs") == Rows{{"succeeded", ""}});
    CHECK(test::query(d.db(), "SELECT step, state FROM attempts ORDER BY id") ==
          Rows{{"wait-for-gate", "succeeded"}, {"after", "succeeded"}});
}

TEST_CASE(
    "a run still going when the shutdown grace runs out is cancelled with the reason, and "
    "queued runs stay queued",
    "[drain]") {
    test::RunbookdProcess d({{"slow.yaml", R"(name: slow
matchers: ['alertname="Slow"']
steps:
  - name: nap
    argv: [/bin/sleep, "60"]
)"}},
                            "runs:\n  shutdown_grace: 1s\n  max_concurrent: 1\n");
    REQUIRE(d.wait_ready());
    REQUIRE(
        d.post("/api/v1/webhooks/alertmanager", test::firing_notification("Slow", "a"))->status ==
        200);
    REQUIRE(
        d.post("/api/v1/webhooks/alertmanager", test::firing_notification("Slow", "b"))->status ==
        200);
    // The step's process is recorded once it has run 200 ms.
    REQUIRE(test::wait_until(
        [&] { return test::query_value(d.db(), "SELECT count(pid) FROM attempts") == "1"; }, 5s));
    const pid_t step = std::stoi(test::query_value(d.db(), "SELECT pid FROM attempts"));

    const auto signalled = std::chrono::steady_clock::now();
    d.process().signal(SIGTERM);
    const auto code = d.process().wait(20s);
    const auto took = std::chrono::steady_clock::now() - signalled;

    INFO(d.log());
    CHECK(code == 0);
    CHECK(took >= 1s);
    CHECK(took < 8s);
    CHECK_FALSE(test::process_running(step));
    CHECK(test::query(d.db(), "SELECT id, state, reason FROM runs ORDER BY id") ==
          Rows{{"1", "cancelled",
                "cancelled: runbookd shut down and the run did not finish within "
                "runs.shutdown_grace (1s)"},
               {"2", "queued", ""}});
    CHECK(test::query(d.db(), "SELECT state, signal FROM attempts") == Rows{{"failed", "15"}});
}

TEST_CASE("a second runbookd on the same database refuses to start and names the first",
          "[lifecycle]") {
    test::RunbookdProcess first({});
    REQUIRE(first.wait_ready());

    test::RunbookdProcess second({}, "", first.db());
    const auto code = second.process().wait(10s);

    INFO(second.log());
    CHECK(code == 1);
    CHECK_THAT(second.log(), Catch::Contains(fmt::format(
                                 "it is in use by another runbookd (pid {}, lock {}.lock)",
                                 first.process().pid(), first.db())));
    CHECK(first.get("/readyz")->status == 200);
}

TEST_CASE("a second runbookd reaching the database through a symlink refuses to start too",
          "[lifecycle]") {
    test::RunbookdProcess first({});
    REQUIRE(first.wait_ready());
    test::TempDir elsewhere;
    const std::string alias = elsewhere.file("alias.db");
    std::filesystem::create_symlink(first.db(), alias);

    test::RunbookdProcess second({}, "", alias);
    const auto code = second.process().wait(10s);

    INFO(second.log());
    CHECK(code == 1);
    CHECK_THAT(second.log(), Catch::Contains(fmt::format("it is in use by another runbookd (pid {}",
                                                         first.process().pid())));
    CHECK(first.get("/readyz")->status == 200);
}

TEST_CASE("/livez fails while the run engine thread is stuck and recovers when it turns again",
          "[lifecycle]") {
    test::TestDaemon d(test::RunbookFiles{});
    REQUIRE(d.get("/livez")->status == 200);
    REQUIRE(d.get("/readyz")->status == 200);
    std::promise<void> release;
    auto released = release.get_future().share();

    d.daemon().run_on_engine_thread([released] { released.wait(); });
    const bool failed = test::wait_until([&] { return d.get("/livez")->status == 503; }, 8s);
    auto stuck = d.get("/livez");
    auto ready = d.get("/readyz");
    release.set_value();
    const bool back = test::wait_until([&] { return d.get("/livez")->status == 200; }, 2s);

    CHECK(failed);
    CHECK_THAT(stuck->body, Catch::Contains("the run engine thread has not responded for"));
    CHECK(ready->status == 200);
    CHECK(back);
}
