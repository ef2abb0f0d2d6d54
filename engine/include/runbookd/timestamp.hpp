#pragma once

#include <chrono>
#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include <runbookd/result.hpp>

namespace runbookd {

// A wall-clock instant with nanosecond precision over years 1-9999. Alertmanager sends
// "0001-01-01T00:00:00Z" for the end of a firing alert, which std::chrono::system_clock
// (nanoseconds in 64 bits) cannot represent, so instants are kept as seconds + nanoseconds.
struct Timestamp {
    std::int64_t seconds = 0;  // since 1970-01-01T00:00:00Z
    std::int32_t nanos = 0;    // 0..999'999'999

    static Timestamp now();
    static Timestamp from_system(std::chrono::system_clock::time_point tp);

    // Go's zero time.Time, which Alertmanager uses for "no end yet".
    bool is_go_zero() const { return seconds == kGoZeroSeconds && nanos == 0; }

    // RFC 3339 in UTC with as many fractional digits as needed (Go's RFC3339Nano):
    // "2026-12-04T15:49:26Z", "2026-12-04T15:49:26.5Z".
    std::string to_rfc3339() const;
    // RFC 3339 in UTC with exactly three fractional digits, for audit rows written by
    // runbookd: fixed width sorts correctly as text.
    std::string to_rfc3339_millis() const;

    std::int64_t millis_since(const Timestamp& earlier) const;

    auto operator<=>(const Timestamp&) const = default;

    static constexpr std::int64_t kGoZeroSeconds = -62135596800;
};

// Parses RFC 3339 ("2026-12-04T15:49:26.123+01:00", "...Z"). The error names what is wrong.
Result<Timestamp> parse_rfc3339(std::string_view text);

}  // namespace runbookd
