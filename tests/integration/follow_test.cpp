#include <atomic>
#include <mutex>
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

// Step `talk` prints a line, waits for the gate file, prints another; step `after` fails or
// succeeds as asked.
std::string talking_runbook(const std::string& gate, bool fail_after) {
    return fmt::format(R"(name: talker
matchers: ['alertname="Gated"']
steps:
  - name: talk
    argv: [/bin/sh, -c, 'echo first line; while [ ! -e {} ]; do sleep 0.05; done; echo second line']
  - name: after
    argv: [/bin/sh, -c, 'echo after; exit {}']
)",
                       gate, fail_after ? 3 : 0);
}

struct Event {
    std::string name;
    Json data;
};

// The events of a server-sent event stream's text.
std::vector<Event> parse_events(const std::string& text) {
    std::vector<Event> out;
    std::size_t at = 0;
    for (auto end = text.find("\n\n", at); end != std::string::npos;
         at = end + 2, end = text.find("\n\n", at)) {
        const std::string block = text.substr(at, end - at);
        const auto name_at = block.find("event: ");
        const auto data_at = block.find("\ndata: ");
        if (name_at != 0 || data_at == std::string::npos) {
            continue;  // a keep-alive comment
        }
        out.push_back({block.substr(7, data_at - 7), Json::parse(block.substr(data_at + 7))});
    }
    return out;
}

}  // namespace

TEST_CASE("follow streams a run's output while its step runs and ends with the run", "[follow]") {
    test::TempDir gates;
    const std::string gate = gates.file("gate");
    TestDaemon d(RunbookFiles{{"talker.yaml", talking_runbook(gate, false)}});
    REQUIRE(d.post("/api/v1/webhooks/alertmanager", test::firing_notification("Gated", "a")).ok());

    std::mutex mutex;
    std::string received;
    Result<http::ClientResponse> answer = make_error(ErrorCode::Internal, "not done");
    std::thread follower([&] {
        auto r = http::stream_request("GET", d.url("/api/v1/runs/1/follow"), {},
                                      [&](std::string_view piece) {
                                          std::lock_guard lock(mutex);
                                          received.append(piece);
                                          return true;
                                      });
        std::lock_guard lock(mutex);
        answer = std::move(r);
    });
    const auto output_so_far = [&] {
        std::lock_guard lock(mutex);
        std::string text;
        for (const auto& e : parse_events(received)) {
            if (e.name == "output") {
                text += e.data["text"].get<std::string>();
            }
        }
        return text;
    };

    // The first line arrives while the step still waits at the gate: live, not at the end.
    CHECK(test::wait_until([&] { return output_so_far() == "first line\n"; }, 10s));
    CHECK(query_value(d.db(), "SELECT state FROM runs WHERE id = 1") == "running");

    test::write_file(gate, "");
    follower.join();
    REQUIRE(answer.ok());
    CHECK(answer->status == 200);
    CHECK(answer->content_type == "text/event-stream");

    const auto events = parse_events(received);
    std::vector<std::string> shape;
    std::string output;
    for (const auto& e : events) {
        if (e.name == "output") {
            output += e.data["text"].get<std::string>();
            continue;
        }
        std::string what = e.name;
        if (e.data.contains("step")) {
            what += " " + e.data["step"].get<std::string>();
        }
        if (e.data.contains("state")) {
            what += " " + e.data["state"].get<std::string>();
        }
        shape.push_back(what);
    }
    if (!shape.empty() && shape.front() == "run queued") {
        shape.erase(shape.begin());  // the first look may come before the run started
    }
    CHECK(shape == std::vector<std::string>{"run running", "attempt talk running",
                                            "attempt talk succeeded", "attempt after running",
                                            "attempt after succeeded", "end succeeded"});
    CHECK(output == "first line\nsecond line\nafter\n");
    CHECK(events.back().data["id"] == 1);
}

TEST_CASE("follow of an unknown or malformed run id answers a JSON error", "[follow]") {
    TestDaemon d(RunbookFiles{});
    auto unknown = d.get("/api/v1/runs/42/follow");
    REQUIRE(unknown.ok());
    CHECK(unknown->status == 404);
    CHECK(Json::parse(unknown->body)["error"]["code"] == "not_found");
    auto malformed = d.get("/api/v1/runs/x/follow");
    REQUIRE(malformed.ok());
    CHECK(malformed->status == 400);
    CHECK(Json::parse(malformed->body)["error"]["field"] == "id");
}

TEST_CASE("runbookctl runs follow prints the output and exits by the run's outcome",
          "[follow][cli]") {
    test::TempDir gates;
    const std::string gate = gates.file("gate");
    test::write_file(gate, "");
    TestDaemon ok(RunbookFiles{{"talker.yaml", talking_runbook(gate, false)}});
    TestDaemon failing(RunbookFiles{{"talker.yaml", talking_runbook(gate, true)}});
    for (const TestDaemon* d : {&ok, &failing}) {
        REQUIRE(
            d->post("/api/v1/webhooks/alertmanager", test::firing_notification("Gated", "a")).ok());
    }

    auto good = test::run_command({RUNBOOKCTL_BINARY, "--url", ok.url(), "runs", "follow", "1"});
    auto bad =
        test::run_command({RUNBOOKCTL_BINARY, "--url", failing.url(), "runs", "follow", "1"});
    auto json = test::run_command(
        {RUNBOOKCTL_BINARY, "--url", failing.url(), "-o", "json", "runs", "follow", "1"});

    CHECK(good.exit_code == 0);
    CHECK_THAT(good.output, Catch::Contains("first line\nsecond line\n"));
    CHECK_THAT(good.output, Catch::Contains("run 1 succeeded"));
    CHECK(bad.exit_code == 4);
    CHECK_THAT(bad.output, Catch::Contains("== step after failed, exit code 3"));
    CHECK_THAT(bad.output, Catch::Contains("run 1 failed"));
    CHECK(json.exit_code == 4);
    CHECK_THAT(json.output, Catch::Contains(R"({"data":{"id":1,"reason":)"));

    // run --follow starts the run and follows it in one command.
    auto started =
        test::run_command({RUNBOOKCTL_BINARY, "--url", failing.url(), "run", "talker", "--label",
                           "alertname=Gated", "--reason", "checking", "--follow"});
    CHECK(started.exit_code == 4);
    CHECK_THAT(started.output, Catch::Contains("run 2 started by"));
    CHECK_THAT(started.output, Catch::Contains("first line\nsecond line\n"));
    CHECK_THAT(started.output, Catch::Contains("run 2 failed"));

    auto cancel_ended =
        test::run_command({RUNBOOKCTL_BINARY, "--url", ok.url(), "runs", "cancel", "1"});
    CHECK(cancel_ended.exit_code == 1);
    CHECK_THAT(cancel_ended.output, Catch::Contains("409"));
}

TEST_CASE("runbookctl runs cancel stops a running run and records who", "[follow][cli]") {
    test::TempDir gates;
    TestDaemon d(RunbookFiles{{"gated.yaml", test::gated_runbook(gates.file("gate"))}});
    REQUIRE(d.post("/api/v1/webhooks/alertmanager", test::firing_notification("Gated", "a")).ok());
    REQUIRE(test::wait_query_value(d.db(), "SELECT state FROM runs WHERE id = 1", "running", 10s));

    auto r = test::run_command({RUNBOOKCTL_BINARY, "--url", d.url(), "runs", "cancel", "1",
                                "--actor", "alice", "--reason", "wrong host"});
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.output, Catch::Contains("run 1 is stopping"));
    CHECK(test::wait_query_value(d.db(), "SELECT state FROM runs WHERE id = 1", "cancelled", 10s));
    CHECK(query_value(d.db(), "SELECT cancelled_by FROM runs WHERE id = 1") == "alice");
}

TEST_CASE("a follow still open when runbookd stops ends instead of holding the shutdown",
          "[follow]") {
    test::TempDir gates;
    auto d = std::make_unique<TestDaemon>(
        RunbookFiles{{"gated.yaml", test::gated_runbook(gates.file("gate"))}});
    REQUIRE(d->post("/api/v1/webhooks/alertmanager", test::firing_notification("Gated", "a")).ok());
    REQUIRE(test::wait_query_value(d->db(), "SELECT state FROM runs WHERE id = 1", "running", 10s));

    std::atomic<bool> ended{false};
    std::mutex mutex;
    std::string received;
    std::thread follower([&, url = d->url("/api/v1/runs/1/follow")] {
        (void)http::stream_request("GET", url, {}, [&](std::string_view piece) {
            std::lock_guard lock(mutex);
            received.append(piece);
            return true;
        });
        ended = true;
    });
    REQUIRE(test::wait_until(
        [&] {
            std::lock_guard lock(mutex);
            return received.find("event: attempt") != std::string::npos;
        },
        10s));
    const auto stopping = std::chrono::steady_clock::now();
    d.reset();
    follower.join();
    CHECK(ended);
    CHECK(std::chrono::steady_clock::now() - stopping < 10s);
    CHECK(received.find("event: end") == std::string::npos);
}
