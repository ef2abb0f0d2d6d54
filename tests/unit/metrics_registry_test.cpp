// The metrics registry's text exposition format 0.0.4 (engine/src/metrics/registry.hpp).
#include <string>

#include <catch2/catch.hpp>

#include "metrics/registry.hpp"

namespace {

using namespace runbookd::metrics;

}  // namespace

TEST_CASE("label values escape backslash, double quote and newline", "[metrics]") {
    Registry registry;
    auto& family = registry.counter("test_events_total", "Events.", {"path"});

    family.with({"a\\b\"c\nd"}).inc(3);
    const std::string text = registry.render();

    CHECK(text ==
          "# HELP test_events_total Events.\n"
          "# TYPE test_events_total counter\n"
          "test_events_total{path=\"a\\\\b\\\"c\\nd\"} 3\n");
}

TEST_CASE("help text escapes backslash and newline but keeps quotes", "[metrics]") {
    CHECK(escape_help("a\\b\n\"c\"") == "a\\\\b\\n\"c\"");
}

TEST_CASE("histogram buckets are cumulative and end with +Inf, _sum and _count", "[metrics]") {
    Registry registry;
    auto& h = registry.histogram("test_duration_seconds", "Durations.", {0.1, 1, 10}, {"kind"});

    auto& argv = h.with({"argv"});
    for (const double v : {0.05, 0.1, 0.5, 2.0, 100.0}) {
        argv.observe(v);
    }
    const std::string text = registry.render();

    CHECK(text ==
          "# HELP test_duration_seconds Durations.\n"
          "# TYPE test_duration_seconds histogram\n"
          "test_duration_seconds_bucket{kind=\"argv\",le=\"0.1\"} 2\n"
          "test_duration_seconds_bucket{kind=\"argv\",le=\"1\"} 3\n"
          "test_duration_seconds_bucket{kind=\"argv\",le=\"10\"} 4\n"
          "test_duration_seconds_bucket{kind=\"argv\",le=\"+Inf\"} 5\n"
          "test_duration_seconds_sum{kind=\"argv\"} 102.65\n"
          "test_duration_seconds_count{kind=\"argv\"} 5\n");
}

TEST_CASE("a histogram without labels renders le as its only label", "[metrics]") {
    Registry registry;
    registry.histogram("test_commit_seconds", "Commits.", {0.5}).get().observe(1);

    const std::string text = registry.render();

    CHECK_THAT(text, Catch::Contains("test_commit_seconds_bucket{le=\"0.5\"} 0\n"
                                     "test_commit_seconds_bucket{le=\"+Inf\"} 1\n"
                                     "test_commit_seconds_sum 1\n"
                                     "test_commit_seconds_count 1\n"));
}

TEST_CASE("a family past its child limit counts new label values as other", "[metrics]") {
    Registry registry;
    auto& family = registry.counter("test_runs_total", "Runs.", {"runbook", "state"}, 3);

    family.with({"a", "ok"}).inc();
    family.with({"b", "ok"}).inc();
    family.with({"c", "ok"}).inc();
    family.with({"d", "failed"}).inc();
    family.with({"a", "ok"}).inc();
    const std::string text = registry.render();

    CHECK_THAT(text, Catch::Contains("test_runs_total{runbook=\"a\",state=\"ok\"} 2\n"));
    CHECK_THAT(text, Catch::Contains("test_runs_total{runbook=\"b\",state=\"ok\"} 1\n"));
    CHECK_THAT(text, Catch::Contains("test_runs_total{runbook=\"other\",state=\"other\"} 2\n"));
    CHECK_THAT(text, !Catch::Contains("runbook=\"c\""));
}

TEST_CASE("families render in registration order with gauges and special values", "[metrics]") {
    Registry registry;
    registry.gauge("test_b", "B.").get().set(-2.5);
    registry.counter("test_a_total", "A.").get();
    std::string text = registry.render();
    append_single(text, "test_c", "C.", Type::Gauge, 1.0 / 0.0);

    CHECK(text ==
          "# HELP test_b B.\n# TYPE test_b gauge\ntest_b -2.5\n"
          "# HELP test_a_total A.\n# TYPE test_a_total counter\ntest_a_total 0\n"
          "# HELP test_c C.\n# TYPE test_c gauge\ntest_c +Inf\n");
}

TEST_CASE("registering a metric name twice is refused", "[metrics]") {
    Registry registry;
    registry.counter("test_x_total", "X.");

    CHECK_THROWS_AS(registry.gauge("test_x_total", "X again."), std::logic_error);
}
