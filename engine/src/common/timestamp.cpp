#include <charconv>
#include <cstdio>

#include <fmt/format.h>

#include <runbookd/timestamp.hpp>

namespace runbookd {
namespace {

constexpr std::int64_t kSecondsPerDay = 86400;

// Days since 1970-01-01 of a proleptic Gregorian date.
std::int64_t days_from_civil(int year, unsigned month, unsigned day) {
    const std::chrono::year_month_day ymd{std::chrono::year{year}, std::chrono::month{month},
                                          std::chrono::day{day}};
    return std::chrono::sys_days{ymd}.time_since_epoch().count();
}

std::chrono::year_month_day civil_from_days(std::int64_t days) {
    return std::chrono::year_month_day{
        std::chrono::sys_days{std::chrono::days{static_cast<int>(days)}}};
}

// Reads exactly `width` decimal digits at `pos`; returns -1 when they are not digits.
int read_digits(std::string_view text, std::size_t pos, std::size_t width) {
    if (pos + width > text.size()) {
        return -1;
    }
    int value = 0;
    for (std::size_t i = pos; i < pos + width; ++i) {
        const char c = text[i];
        if (c < '0' || c > '9') {
            return -1;
        }
        value = value * 10 + (c - '0');
    }
    return value;
}

Error bad_time(std::string_view text, const char* why) {
    return make_error(ErrorCode::InvalidArgument,
                      fmt::format("not an RFC 3339 time ({}): \"{}\"", why, text));
}

}  // namespace

Timestamp Timestamp::now() {
    return from_system(std::chrono::system_clock::now());
}

Timestamp Timestamp::from_system(std::chrono::system_clock::time_point tp) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(tp.time_since_epoch());
    auto secs = std::chrono::floor<std::chrono::seconds>(ns);
    return Timestamp{secs.count(), static_cast<std::int32_t>((ns - secs).count())};
}

std::string Timestamp::to_rfc3339() const {
    const std::int64_t days =
        seconds >= 0 ? seconds / kSecondsPerDay : (seconds - kSecondsPerDay + 1) / kSecondsPerDay;
    const std::int64_t rem = seconds - days * kSecondsPerDay;
    const auto ymd = civil_from_days(days);
    std::string out =
        fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", static_cast<int>(ymd.year()),
                    static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()),
                    rem / 3600, (rem / 60) % 60, rem % 60);
    if (nanos != 0) {
        std::string frac = fmt::format("{:09}", nanos);
        while (!frac.empty() && frac.back() == '0') {
            frac.pop_back();
        }
        out += '.';
        out += frac;
    }
    out += 'Z';
    return out;
}

std::string Timestamp::to_rfc3339_millis() const {
    Timestamp whole{seconds, 0};
    std::string out = whole.to_rfc3339();
    out.pop_back();
    return fmt::format("{}.{:03}Z", out, nanos / 1'000'000);
}

std::int64_t Timestamp::millis_since(const Timestamp& earlier) const {
    const std::int64_t nanos_apart =
        (seconds - earlier.seconds) * 1'000'000'000 + (nanos - earlier.nanos);
    return nanos_apart / 1'000'000;
}

Result<Timestamp> parse_rfc3339(std::string_view text) {
    // YYYY-MM-DDTHH:MM:SS[.fraction](Z|+HH:MM|-HH:MM)
    if (text.size() < 20) {
        return bad_time(text, "too short");
    }
    const int year = read_digits(text, 0, 4);
    const int month = read_digits(text, 5, 2);
    const int day = read_digits(text, 8, 2);
    const int hour = read_digits(text, 11, 2);
    const int minute = read_digits(text, 14, 2);
    const int second = read_digits(text, 17, 2);
    const char t = text[10];
    if (year < 0 || month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0 ||
        text[4] != '-' || text[7] != '-' || (t != 'T' && t != 't' && t != ' ') || text[13] != ':' ||
        text[16] != ':') {
        return bad_time(text, "expected YYYY-MM-DDTHH:MM:SS");
    }
    const std::chrono::year_month_day ymd{std::chrono::year{year},
                                          std::chrono::month{static_cast<unsigned>(month)},
                                          std::chrono::day{static_cast<unsigned>(day)}};
    if (!ymd.ok() || hour > 23 || minute > 59 || second > 59) {
        return bad_time(text, "date or time out of range");
    }

    std::size_t pos = 19;
    std::int32_t nanos = 0;
    if (pos < text.size() && text[pos] == '.') {
        ++pos;
        int digits = 0;
        while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') {
            if (digits < 9) {
                nanos = nanos * 10 + (text[pos] - '0');
            }
            ++digits;
            ++pos;
        }
        if (digits == 0) {
            return bad_time(text, "empty fraction");
        }
        for (int i = digits; i < 9; ++i) {
            nanos *= 10;
        }
    }

    std::int64_t offset = 0;
    if (pos < text.size() && (text[pos] == 'Z' || text[pos] == 'z')) {
        ++pos;
    } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
        const int oh = read_digits(text, pos + 1, 2);
        const int om = read_digits(text, pos + 4, 2);
        if (oh < 0 || om < 0 || text[pos + 3] != ':' || oh > 23 || om > 59) {
            return bad_time(text, "bad zone offset");
        }
        offset = (oh * 3600 + om * 60) * (text[pos] == '-' ? -1 : 1);
        pos += 6;
    } else {
        return bad_time(text, "missing zone");
    }
    if (pos != text.size()) {
        return bad_time(text, "trailing characters");
    }

    const std::int64_t days =
        days_from_civil(year, static_cast<unsigned>(month), static_cast<unsigned>(day));
    const std::int64_t secs = days * kSecondsPerDay + hour * 3600 + minute * 60 + second - offset;
    return Timestamp{secs, nanos};
}

}  // namespace runbookd
