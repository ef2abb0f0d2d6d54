#include "common/trace.hpp"

#include <catch2/catch.hpp>

using runbookd::trace::child_of;
using runbookd::trace::parse_traceparent;
using runbookd::trace::trace_id_of;

TEST_CASE("a valid traceparent is read field by field", "[trace]") {
    const auto t = parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    REQUIRE(t);
    CHECK(t->trace_id == "4bf92f3577b34da6a3ce929d0e0e4736");
    CHECK(t->span_id == "00f067aa0ba902b7");
    CHECK(t->flags == "01");
    CHECK(t->header() == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    // A later version is read for its first four fields, extra fields after a dash ignored.
    const auto later =
        parse_traceparent("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what-ever");
    REQUIRE(later);
    CHECK(later->header() == "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
}

TEST_CASE("an invalid traceparent is refused", "[trace]") {
    const char* bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",           // no flags
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",        // version ff
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",        // zero trace id
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",        // zero span id
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",        // upper case
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  // 00 is exact
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",       // no dash after
        "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",        // separators
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",        // not hex
    };
    for (const char* h : bad) {
        INFO(h);
        CHECK_FALSE(parse_traceparent(h));
        CHECK(trace_id_of(h).empty());
    }
}

TEST_CASE("a child keeps the trace and flags and gets a span of its own", "[trace]") {
    const auto parent =
        parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00");
    const auto a = child_of(parent);
    const auto b = child_of(parent);
    CHECK(a.trace_id == parent->trace_id);
    CHECK(a.flags == "00");
    CHECK(a.span_id != parent->span_id);
    CHECK(a.span_id != b.span_id);
    CHECK(parse_traceparent(a.header()));

    const auto fresh = child_of(std::nullopt);
    CHECK(parse_traceparent(fresh.header()));
    CHECK(fresh.flags == "01");
    CHECK(fresh.trace_id != child_of(std::nullopt).trace_id);
}
