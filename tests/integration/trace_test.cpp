#include "common/trace.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "support/support.hpp"

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using Json = nlohmann::json;
using test::query_value;
using test::RunbookFiles;

constexpr const char* kIncoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

constexpr const char* kPrintTrace = R"(name: print-trace
matchers: ['alertname="Traced"']
params:
  note: {default: "-"}
steps:
  - name: show
    argv: [/bin/sh, -c, 'printf %s "$TRACEPARENT"']
)";

// A webhook delivery of one firing alert per instance.
std::string notification(std::initializer_list<const char*> instances) {
    Json alerts = Json::array();
    for (const char* instance : instances) {
        alerts.push_back({{"status", "firing"},
                          {"labels", {{"alertname", "Traced"}, {"instance", instance}}},
                          {"annotations", Json::object()},
                          {"startsAt", "2026-12-04T15:49:26Z"},
                          {"endsAt", "0001-01-01T00:00:00Z"}});
    }
    return Json{{"version", "4"}, {"status", "firing"}, {"alerts", alerts}}.dump();
}

Result<http::ClientResponse> post(const test::RunbookdProcess& d, const std::string& path,
                                  const std::string& body, const std::string& traceparent) {
    std::vector<std::pair<std::string, std::string>> headers = {
        {"Content-Type", "application/json"}};
    if (!traceparent.empty()) {
        headers.emplace_back("traceparent", traceparent);
    }
    return http::send_request("POST", d.url(path), body, headers);
}

std::string step_saw(const test::RunbookdProcess& d, int run) {
    REQUIRE(test::wait_query_value(d.db(), fmt::format("SELECT state FROM runs WHERE id = {}", run),
                                   "succeeded", 10s));
    return query_value(d.db(),
                       fmt::format("SELECT stdout_excerpt FROM attempts WHERE run_id = {}", run));
}

}  // namespace

TEST_CASE("a delivery's traceparent reaches its runs, their steps, the record and the log",
          "[trace]") {
    test::RunbookdProcess d(RunbookFiles{{"trace.yaml", kPrintTrace}});
    REQUIRE(d.wait_ready());
    auto r = post(d, "/api/v1/webhooks/alertmanager", notification({"a", "b"}), kIncoming);
    REQUIRE(r.ok());
    REQUIRE(r->status == 200);

    const auto one = trace::parse_traceparent(step_saw(d, 1));
    const auto two = trace::parse_traceparent(step_saw(d, 2));
    REQUIRE(one);
    REQUIRE(two);
    // Both runs are in the caller's trace, each with a span of its own under it.
    CHECK(one->trace_id == "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK(two->trace_id == one->trace_id);
    CHECK(one->span_id != "00f067aa0ba902b7");
    CHECK(one->span_id != two->span_id);
    CHECK(one->flags == "01");

    CHECK(query_value(d.db(), "SELECT traceparent FROM deliveries") == kIncoming);
    CHECK(query_value(d.db(), "SELECT traceparent FROM runs WHERE id = 1") == one->header());
    CHECK(query_value(d.db(),
                      "SELECT json_extract(detail, '$.trace_id') FROM events WHERE "
                      "kind = 'run.queued' AND run_id = 1") == one->trace_id);
    auto shown = d.get("/api/v1/runs/1");
    REQUIRE(shown.ok());
    CHECK(Json::parse(shown->body)["trace_id"] == one->trace_id);
    CHECK(Json::parse(shown->body)["traceparent"] == one->header());
    CHECK(test::wait_until(
        [&] {
            return d.log().find("run finished run=1 state=succeeded") != std::string::npos &&
                   d.log().find("trace_id=" + one->trace_id) != std::string::npos;
        },
        5s));
}

TEST_CASE("without a valid traceparent each delivery starts a trace of its own", "[trace]") {
    test::RunbookdProcess d(RunbookFiles{{"trace.yaml", kPrintTrace}});
    REQUIRE(d.wait_ready());
    REQUIRE(post(d, "/api/v1/webhooks/alertmanager", notification({"a", "b"}), "").ok());
    // Invalid: an all-zero trace id. Served as usual, in a new trace.
    auto invalid = post(d, "/api/v1/webhooks/alertmanager", notification({"c"}),
                        "00-00000000000000000000000000000000-00f067aa0ba902b7-01");
    REQUIRE(invalid.ok());
    CHECK(invalid->status == 200);

    const auto a = trace::parse_traceparent(step_saw(d, 1));
    const auto b = trace::parse_traceparent(step_saw(d, 2));
    const auto c = trace::parse_traceparent(step_saw(d, 3));
    REQUIRE(a);
    REQUIRE(b);
    REQUIRE(c);
    CHECK(a->trace_id == b->trace_id);
    CHECK(a->span_id != b->span_id);
    CHECK(c->trace_id != a->trace_id);
    CHECK(c->trace_id != "00000000000000000000000000000000");
    CHECK(query_value(d.db(), "SELECT count(traceparent) FROM deliveries") == "0");
}

TEST_CASE("a manual run keeps the caller's trace", "[trace]") {
    test::RunbookdProcess d(RunbookFiles{{"trace.yaml", kPrintTrace}});
    REQUIRE(d.wait_ready());
    auto r = post(d, "/api/v1/runbooks/print-trace/runs", R"({"reason": "checking"})", kIncoming);
    REQUIRE(r.ok());
    REQUIRE(r->status == 201);
    const auto seen = trace::parse_traceparent(step_saw(d, 1));
    REQUIRE(seen);
    CHECK(seen->trace_id == "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK(query_value(d.db(),
                      "SELECT json_extract(detail, '$.trace_id') FROM events WHERE "
                      "kind = 'run.requested'") == seen->trace_id);
}

TEST_CASE("a runbook cannot set TRACEPARENT itself", "[trace]") {
    test::TempDir dir;
    test::write_file(dir.path() / "bad.yaml", R"(name: bad
matchers: ['alertname="x"']
steps:
  - name: one
    argv: [/bin/true]
    env:
      TRACEPARENT: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
)");
    auto r = test::run_command({RUNBOOKCTL_BINARY, "lint", "--no-python", dir.path().string()});
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.output, Catch::Contains("bad.yaml:7:7: env: \"TRACEPARENT\" is reserved"));
}
