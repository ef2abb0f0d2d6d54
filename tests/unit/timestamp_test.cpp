#include <cstdint>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <runbookd/timestamp.hpp>

using runbookd::parse_rfc3339;
using runbookd::Timestamp;

namespace {

// 2026-12-04T15:49:26Z, the startsAt of the captured Alertmanager notifications.
constexpr std::int64_t kFixtureStart = 1796399366;

}  // namespace

TEST_CASE("parse_rfc3339 reads a UTC time written with Z", "[timestamp]") {
    const auto parsed = parse_rfc3339("2026-12-04T15:49:26Z");

    REQUIRE(parsed.ok());
    CHECK(parsed->seconds == kFixtureStart);
    CHECK(parsed->nanos == 0);
}

TEST_CASE("parse_rfc3339 converts a zone offset to UTC", "[timestamp]") {
    struct Case {
        std::string text;
        std::int64_t seconds;
    };
    const std::vector<Case> cases = {
        {"2026-12-04T16:49:26+01:00", kFixtureStart},
        {"2026-12-04T10:19:26-05:30", kFixtureStart},
        {"2026-12-04T15:49:26+00:00", kFixtureStart},
        {"2026-12-04T15:49:26-00:00", kFixtureStart},
        {"2026-12-04T15:49:26z", kFixtureStart},
        {"2026-12-05T00:30:00+09:00", kFixtureStart - 19 * 60 - 26},
        {"1970-01-01T00:00:00-01:00", 3600},
    };

    for (const auto& c : cases) {
        CAPTURE(c.text);

        const auto parsed = parse_rfc3339(c.text);

        REQUIRE(parsed.ok());
        CHECK(parsed->seconds == c.seconds);
    }
}

TEST_CASE("parse_rfc3339 accepts T, t or a space between date and time", "[timestamp]") {
    for (const std::string text :
         {"2026-12-04T15:49:26Z", "2026-12-04t15:49:26Z", "2026-12-04 15:49:26Z"}) {
        CAPTURE(text);

        const auto parsed = parse_rfc3339(text);

        REQUIRE(parsed.ok());
        CHECK(parsed->seconds == kFixtureStart);
    }
}

TEST_CASE("parse_rfc3339 reads one to nine fraction digits as nanoseconds", "[timestamp]") {
    struct Case {
        std::string fraction;
        std::int32_t nanos;
    };
    const std::vector<Case> cases = {
        {".5", 500'000'000},         {".05", 50'000'000},
        {".123", 123'000'000},       {".000001", 1'000},
        {".123456789", 123'456'789}, {".000000001", 1},
        {".999999999", 999'999'999}, {".000", 0},
    };

    for (const auto& c : cases) {
        const std::string text = "2026-12-04T15:49:26" + c.fraction + "Z";
        CAPTURE(text);

        const auto parsed = parse_rfc3339(text);

        REQUIRE(parsed.ok());
        CHECK(parsed->seconds == kFixtureStart);
        CHECK(parsed->nanos == c.nanos);
    }
}

TEST_CASE("parse_rfc3339 drops fraction digits after the ninth, as Go does", "[timestamp]") {
    const auto parsed = parse_rfc3339("2026-12-04T15:49:26.1234567899+01:00");

    REQUIRE(parsed.ok());
    CHECK(parsed->seconds == kFixtureStart - 3600);
    CHECK(parsed->nanos == 123'456'789);
}

TEST_CASE("parse_rfc3339 reads dates over the whole supported range", "[timestamp]") {
    struct Case {
        std::string text;
        std::int64_t seconds;
        std::int32_t nanos;
    };
    const std::vector<Case> cases = {
        {"1970-01-01T00:00:00Z", 0, 0},
        {"1969-12-31T23:59:59Z", -1, 0},
        {"1969-12-31T23:59:59.75Z", -1, 750'000'000},
        {"2024-02-29T23:59:59Z", 1709251199, 0},
        {"9999-12-31T23:59:59.999999999Z", 253402300799, 999'999'999},
    };

    for (const auto& c : cases) {
        CAPTURE(c.text);

        const auto parsed = parse_rfc3339(c.text);

        REQUIRE(parsed.ok());
        CHECK(parsed->seconds == c.seconds);
        CHECK(parsed->nanos == c.nanos);
    }
}

TEST_CASE("Go's zero time parses and is recognised by is_go_zero", "[timestamp]") {
    const auto parsed = parse_rfc3339("0001-01-01T00:00:00Z");

    REQUIRE(parsed.ok());
    CHECK(parsed->seconds == Timestamp::kGoZeroSeconds);
    CHECK(parsed->seconds == -62135596800);
    CHECK(parsed->nanos == 0);
    CHECK(parsed->is_go_zero());
    CHECK(parsed->to_rfc3339() == "0001-01-01T00:00:00Z");
}

TEST_CASE("is_go_zero is false for every other instant", "[timestamp]") {
    SECTION("the Unix epoch") {
        CHECK_FALSE(Timestamp{0, 0}.is_go_zero());
    }
    SECTION("one nanosecond after Go's zero time") {
        CHECK_FALSE((Timestamp{Timestamp::kGoZeroSeconds, 1}.is_go_zero()));
    }
    SECTION("one second after Go's zero time") {
        CHECK_FALSE((Timestamp{Timestamp::kGoZeroSeconds + 1, 0}.is_go_zero()));
    }
    SECTION("a parsed time near Go's zero time") {
        const auto parsed = parse_rfc3339("0001-01-01T00:00:00.000000001Z");

        REQUIRE(parsed.ok());
        CHECK_FALSE(parsed->is_go_zero());
    }
}

TEST_CASE("parse_rfc3339 rejects bad input with an error naming the problem", "[timestamp]") {
    struct Case {
        std::string text;
        std::string problem;
    };
    const std::vector<Case> cases = {
        {"", "too short"},
        {"2026-12-04", "too short"},
        {"2026-12-04T15:49Z", "too short"},
        {"2026/12/04T15:49:26Z", "expected YYYY-MM-DDTHH:MM:SS"},
        {"2026-12-04X15:49:26Z", "expected YYYY-MM-DDTHH:MM:SS"},
        {"2026-12-04T15.49.26Z", "expected YYYY-MM-DDTHH:MM:SS"},
        {"2026-12-04T15:49:2xZ", "expected YYYY-MM-DDTHH:MM:SS"},
        {"+026-12-04T15:49:26Z", "expected YYYY-MM-DDTHH:MM:SS"},
        {"2026-13-01T00:00:00Z", "date or time out of range"},
        {"2026-00-01T00:00:00Z", "date or time out of range"},
        {"2026-02-30T00:00:00Z", "date or time out of range"},
        {"2025-02-29T00:00:00Z", "date or time out of range"},
        {"2026-12-00T00:00:00Z", "date or time out of range"},
        {"2026-12-04T24:00:00Z", "date or time out of range"},
        {"2026-12-04T23:60:00Z", "date or time out of range"},
        {"2026-12-04T23:59:60Z", "date or time out of range"},
        {"2026-12-04T15:49:26.Z", "empty fraction"},
        {"2026-12-04T15:49:26+0100", "bad zone offset"},
        {"2026-12-04T15:49:26+01", "bad zone offset"},
        {"2026-12-04T15:49:26+24:00", "bad zone offset"},
        {"2026-12-04T15:49:26+01:60", "bad zone offset"},
        {"2026-12-04T15:49:26+01-00", "bad zone offset"},
        {"2026-12-04T15:49:26 ", "missing zone"},
        {"2026-12-04T15:49:26UTC", "missing zone"},
        {"2026-12-04T15:49:26.5", "missing zone"},
        {"2026-12-04T15:49:26ZZ", "trailing characters"},
        {"2026-12-04T15:49:26+01:00 ", "trailing characters"},
    };

    for (const auto& c : cases) {
        CAPTURE(c.text);

        const auto parsed = parse_rfc3339(c.text);

        REQUIRE_FALSE(parsed.ok());
        CHECK(parsed.error().code == runbookd::ErrorCode::InvalidArgument);
        CHECK(parsed.error().message ==
              "not an RFC 3339 time (" + c.problem + "): \"" + c.text + "\"");
    }
}

TEST_CASE("to_rfc3339 writes UTC with trailing fraction zeros trimmed", "[timestamp]") {
    struct Case {
        Timestamp time;
        std::string text;
    };
    const std::vector<Case> cases = {
        {{kFixtureStart, 0}, "2026-12-04T15:49:26Z"},
        {{kFixtureStart, 500'000'000}, "2026-12-04T15:49:26.5Z"},
        {{kFixtureStart, 120'000'000}, "2026-12-04T15:49:26.12Z"},
        {{kFixtureStart, 123'456'789}, "2026-12-04T15:49:26.123456789Z"},
        {{kFixtureStart, 1'000}, "2026-12-04T15:49:26.000001Z"},
        {{kFixtureStart, 1}, "2026-12-04T15:49:26.000000001Z"},
        {{0, 0}, "1970-01-01T00:00:00Z"},
        {{-1, 0}, "1969-12-31T23:59:59Z"},
        {{-1, 500'000'000}, "1969-12-31T23:59:59.5Z"},
        {{-86400, 0}, "1969-12-31T00:00:00Z"},
        {{-86401, 0}, "1969-12-30T23:59:59Z"},
        {{1709251199, 0}, "2024-02-29T23:59:59Z"},
        {{253402300799, 999'999'999}, "9999-12-31T23:59:59.999999999Z"},
    };

    for (const auto& c : cases) {
        CAPTURE(c.time.seconds, c.time.nanos);

        const std::string text = c.time.to_rfc3339();

        CHECK(text == c.text);
    }
}

TEST_CASE("to_rfc3339_millis writes exactly three fraction digits, truncating", "[timestamp]") {
    struct Case {
        Timestamp time;
        std::string text;
    };
    const std::vector<Case> cases = {
        {{kFixtureStart, 0}, "2026-12-04T15:49:26.000Z"},
        {{kFixtureStart, 500'000'000}, "2026-12-04T15:49:26.500Z"},
        {{kFixtureStart, 1'000'000}, "2026-12-04T15:49:26.001Z"},
        {{kFixtureStart, 999'999}, "2026-12-04T15:49:26.000Z"},
        {{kFixtureStart, 123'456'789}, "2026-12-04T15:49:26.123Z"},
        {{kFixtureStart, 999'999'999}, "2026-12-04T15:49:26.999Z"},
        {{-1, 250'000'000}, "1969-12-31T23:59:59.250Z"},
        {{Timestamp::kGoZeroSeconds, 0}, "0001-01-01T00:00:00.000Z"},
    };

    for (const auto& c : cases) {
        CAPTURE(c.time.seconds, c.time.nanos);

        const std::string text = c.time.to_rfc3339_millis();

        CHECK(text == c.text);
    }
}

TEST_CASE("parse_rfc3339 reads back exactly what to_rfc3339 writes", "[timestamp]") {
    const std::vector<Timestamp> times = {
        {kFixtureStart, 0}, {kFixtureStart, 123'456'789},   {kFixtureStart, 1},          {0, 0},
        {-1, 999'999'999},  {Timestamp::kGoZeroSeconds, 0}, {253402300799, 999'999'999},
    };

    for (const auto& time : times) {
        CAPTURE(time.seconds, time.nanos);

        const auto parsed = parse_rfc3339(time.to_rfc3339());

        REQUIRE(parsed.ok());
        CHECK(*parsed == time);
    }
}

TEST_CASE("to_rfc3339 writes the canonical UTC form of a parsed time", "[timestamp]") {
    struct Case {
        std::string text;
        std::string canonical;
    };
    const std::vector<Case> cases = {
        {"2026-12-04T16:49:26.120+01:00", "2026-12-04T15:49:26.12Z"},
        {"2026-12-04 15:49:26.000z", "2026-12-04T15:49:26Z"},
        {"2026-12-05T00:30:00+01:00", "2026-12-04T23:30:00Z"},
        {"2026-12-31T23:30:00-01:00", "2027-01-01T00:30:00Z"},
    };

    for (const auto& c : cases) {
        CAPTURE(c.text);

        const auto parsed = parse_rfc3339(c.text);

        REQUIRE(parsed.ok());
        CHECK(parsed->to_rfc3339() == c.canonical);
    }
}

TEST_CASE("a time written by to_rfc3339_millis parses back truncated to milliseconds",
          "[timestamp]") {
    const Timestamp time{kFixtureStart, 123'456'789};

    const auto parsed = parse_rfc3339(time.to_rfc3339_millis());

    REQUIRE(parsed.ok());
    CHECK(*parsed == Timestamp{kFixtureStart, 123'000'000});
}

TEST_CASE("millis_since truncates the whole difference, not its parts", "[timestamp]") {
    const runbookd::Timestamp later{1, 0};
    const runbookd::Timestamp earlier{0, 999'999'999};

    CHECK(later.millis_since(earlier) == 0);
    CHECK(runbookd::Timestamp{2, 500'000'000}.millis_since(runbookd::Timestamp{1, 0}) == 1500);
}
