// GET /metrics of the real runbookd binary after real runs, and promtool's verdict on it
// (docs/metrics.md).
#include <map>
#include <sstream>
#include <string>

#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "support/support.hpp"

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using test::RunbookdProcess;
using test::RunbookFiles;

// Sample lines of a scrape by name with labels, exactly as rendered: `name{a="b"}` → value.
using Samples = std::map<std::string, double>;

Samples parse_samples(const std::string& text) {
    Samples out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] == '#') {
            continue;
        }
        const auto space = line.rfind(' ');
        REQUIRE(space != std::string::npos);
        out[line.substr(0, space)] = std::stod(line.substr(space + 1));
    }
    return out;
}

double value(const Samples& samples, const std::string& key) {
    const auto it = samples.find(key);
    if (it == samples.end()) {
        FAIL_CHECK("no sample " << key);
        return -1;
    }
    return it->second;
}

std::string runbook(const std::string& name, const std::string& alertname,
                    const std::string& steps) {
    return fmt::format("name: {}\nmatchers: ['alertname=\"{}\"']\nsteps:\n{}", name, alertname,
                       steps);
}

RunbookFiles runbooks() {
    return {
        {"ok.yaml", runbook("ok", "Ok", "  - name: yes\n    argv: [\"true\"]\n")},
        {"broken.yaml", runbook("broken", "Broken", "  - name: no\n    argv: [\"false\"]\n")},
        {"slow.yaml", runbook("slow", "Slow",
                              "  - name: wait\n    argv: [sleep, \"30\"]\n    timeout: 300ms\n")},
        {"py.yaml",
         runbook("py", "Py", "  - name: hi\n    python:\n      code: |\n        print(\"hi\")\n")},
    };
}

// Runs `promtool check metrics` on `scrape`; its exit code and what it printed.
std::pair<int, std::string> promtool_check(const test::TempDir& dir, const std::string& scrape) {
    const std::string input = dir.file("scrape.txt");
    const std::string log = dir.file("promtool.log");
    test::write_file(input, scrape);
    test::Subprocess promtool(
        {"/bin/sh", "-c", fmt::format("exec '{}' check metrics < '{}'", PROMTOOL_BINARY, input)},
        log);
    const auto code = promtool.wait(30s);
    return {code.value_or(-1), test::read_file(log)};
}

}  // namespace

TEST_CASE("metrics count real runs, deliveries and rejections, and pass promtool check metrics",
          "[metrics]") {
    // promtool is a test dependency (scripts/install-deps installs Debian's prometheus): a
    // missing one fails this test rather than skipping it.
    INFO(
        "promtool not found: install Debian's prometheus package (scripts/install-deps) and "
        "run cmake again");
    REQUIRE(std::string(PROMTOOL_BINARY).size() > 0);
    REQUIRE(std::filesystem::exists(PROMTOOL_BINARY));
    RunbookdProcess d(runbooks());
    REQUIRE(d.wait_ready());

    for (const char* alertname : {"Ok", "Broken", "Slow", "Py"}) {
        auto r = d.post("/api/v1/webhooks/alertmanager", test::firing_notification(alertname, "a"));
        REQUIRE(r.ok());
        REQUIRE(r->status == 200);
    }
    auto duplicate = d.post("/api/v1/webhooks/alertmanager", test::firing_notification("Ok", "a"));
    REQUIRE(duplicate.ok());
    CHECK(duplicate->status == 200);
    auto invalid = d.post("/api/v1/webhooks/alertmanager", R"({"version": "4", "alerts": 7})");
    REQUIRE(invalid.ok());
    CHECK(invalid->status == 400);
    auto wrong_type = http::send_request("POST", d.url("/api/v1/webhooks/alertmanager"), "x",
                                         {{"Content-Type", "text/plain"}});
    REQUIRE(wrong_type.ok());
    CHECK(wrong_type->status == 415);
    CHECK(d.get("/no/such/path")->status == 404);
    Samples samples;
    REQUIRE(test::wait_until(
        [&] {
            auto r = d.get("/metrics");
            if (!r.ok() || r->status != 200) {
                return false;
            }
            samples = parse_samples(r->body);
            double finished = 0;
            for (const auto& [key, v] : samples) {
                finished += key.rfind("runbookd_runs_finished_total{", 0) == 0 ? v : 0;
            }
            return finished == 4;
        },
        20s));
    auto scrape = d.get("/metrics");
    REQUIRE(scrape.ok());
    samples = parse_samples(scrape->body);

    CHECK(scrape->content_type == "text/plain; version=0.0.4; charset=utf-8");
    const std::string notifications = "runbookd_notifications_received_total";
    CHECK(value(samples, notifications + R"({outcome="accepted"})") == 5);
    CHECK(value(samples, notifications + R"({outcome="invalid"})") == 1);
    CHECK(value(samples, notifications + R"({outcome="unsupported_media_type"})") == 1);
    CHECK(value(samples, notifications + R"({outcome="too_large"})") == 0);
    CHECK(value(samples,
                R"(runbookd_alerts_received_total{status="firing",outcome="run_started"})") == 4);
    CHECK(value(samples,
                R"(runbookd_alerts_received_total{status="firing",outcome="duplicate"})") == 1);
    for (const char* name : {"ok", "broken", "slow", "py"}) {
        CHECK(value(samples,
                    fmt::format(R"(runbookd_runs_started_total{{runbook="{}",trigger="alert"}})",
                                name)) == 1);
        CHECK(value(samples, fmt::format(R"(runbookd_run_duration_seconds_count{{runbook="{}"}})",
                                         name)) == 1);
    }
    CHECK(value(samples, R"(runbookd_runs_finished_total{runbook="ok",state="succeeded"})") == 1);
    CHECK(value(samples, R"(runbookd_runs_finished_total{runbook="broken",state="failed"})") == 1);
    CHECK(value(samples, R"(runbookd_runs_finished_total{runbook="slow",state="failed"})") == 1);
    CHECK(value(samples, R"(runbookd_runs_finished_total{runbook="py",state="succeeded"})") == 1);
    CHECK(value(samples, R"(runbookd_step_attempts_total{kind="argv",outcome="succeeded"})") == 1);
    CHECK(value(samples, R"(runbookd_step_attempts_total{kind="argv",outcome="failed"})") == 1);
    CHECK(value(samples, R"(runbookd_step_attempts_total{kind="argv",outcome="timed_out"})") == 1);
    CHECK(value(samples, R"(runbookd_step_attempts_total{kind="python",outcome="succeeded"})") ==
          1);
    CHECK(value(samples, R"(runbookd_step_duration_seconds_bucket{kind="argv",le="+Inf"})") == 3);
    CHECK(value(samples, R"(runbookd_step_duration_seconds_bucket{kind="argv",le="0.25"})") <= 2);
    CHECK(value(samples, R"(runbookd_process_group_kills_total{reason="timeout"})") == 1);
    CHECK(value(samples, "runbookd_python_workers") >= 1);
    CHECK(value(samples, "runbookd_store_commits_total") >= 5);
    CHECK(value(samples, "runbookd_store_write_errors_total") == 0);
    CHECK(value(samples, "runbookd_store_commit_duration_seconds_count") >= 5);
    const std::string webhook =
        R"(runbookd_http_requests_total{route="/api/v1/webhooks/alertmanager",code=)";
    CHECK(value(samples, webhook + R"("2xx"})") == 5);
    CHECK(value(samples, webhook + R"("4xx"})") == 2);
    CHECK(value(samples, R"(runbookd_http_requests_total{route="other",code="4xx"})") == 1);
    CHECK(value(samples, "runbookd_runs_queued") == 0);
    CHECK(value(samples, "runbookd_runs_running") == 0);
    CHECK(value(samples, "runbookd_oldest_queued_run_age_seconds") == 0);
    CHECK(value(samples, "runbookd_ready") == 1);
    CHECK(value(samples, "runbookd_draining") == 0);
    CHECK(value(samples, "process_resident_memory_bytes") > 1e6);
    CHECK(value(samples, "process_open_fds") > 3);
    CHECK(value(samples, "process_start_time_seconds") > 1.7e9);

    const auto [code, output] = promtool_check(d.dir(), scrape->body);
    INFO("promtool check metrics said:\n" << output);
    CHECK(code == 0);
    CHECK(output.empty());
}

TEST_CASE("an oversized notification counts as too_large under the webhook route", "[metrics]") {
    RunbookdProcess d(runbooks(), "http:\n  body_limit: 1024\n");
    REQUIRE(d.wait_ready());

    auto r = d.post("/api/v1/webhooks/alertmanager", std::string(4096, ' '));
    auto scrape = d.get("/metrics");

    REQUIRE(r.ok());
    CHECK(r->status == 413);
    REQUIRE(scrape.ok());
    const auto samples = parse_samples(scrape->body);
    CHECK(value(samples, R"(runbookd_notifications_received_total{outcome="too_large"})") == 1);
    CHECK(
        value(
            samples,
            R"(runbookd_http_requests_total{route="/api/v1/webhooks/alertmanager",code="4xx"})") ==
        1);
}
