#include "common/trace.hpp"

#include <random>

#include <fmt/format.h>

namespace runbookd::trace {
namespace {

bool is_lower_hex(std::string_view s) {
    for (const char c : s) {
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}

bool all_zero(std::string_view s) {
    return s.find_first_not_of('0') == std::string_view::npos;
}

// Random hex digits from a generator seeded once per thread from the system's entropy: ids only
// need to be unlikely to collide, not secret.
std::string random_hex(std::size_t digits) {
    thread_local std::mt19937_64 generator{std::random_device{}()};
    std::string out;
    while (out.size() < digits) {
        out += fmt::format("{:016x}", generator());
    }
    out.resize(digits);
    if (all_zero(out)) {
        out.back() = '1';
    }
    return out;
}

}  // namespace

std::string TraceParent::header() const {
    return fmt::format("00-{}-{}-{}", trace_id, span_id, flags);
}

std::optional<TraceParent> parse_traceparent(std::string_view h) {
    // version "-" trace-id "-" parent-id "-" flags: 2 + 1 + 32 + 1 + 16 + 1 + 2 = 55 characters.
    constexpr std::size_t kLength = 55;
    if (h.size() < kLength || h[2] != '-' || h[35] != '-' || h[52] != '-') {
        return std::nullopt;
    }
    const auto version = h.substr(0, 2);
    if (!is_lower_hex(version) || version == "ff") {
        return std::nullopt;
    }
    // Version 00 is exactly 55 characters; a later version may add fields after a dash.
    if (version == "00" ? h.size() != kLength : (h.size() > kLength && h[kLength] != '-')) {
        return std::nullopt;
    }
    TraceParent out{std::string(h.substr(3, 32)), std::string(h.substr(36, 16)),
                    std::string(h.substr(53, 2))};
    if (!is_lower_hex(out.trace_id) || !is_lower_hex(out.span_id) || !is_lower_hex(out.flags) ||
        all_zero(out.trace_id) || all_zero(out.span_id)) {
        return std::nullopt;
    }
    return out;
}

TraceParent child_of(const std::optional<TraceParent>& incoming) {
    if (incoming) {
        return {incoming->trace_id, random_hex(16), incoming->flags};
    }
    return {random_hex(32), random_hex(16), "01"};
}

std::string trace_id_of(std::string_view traceparent) {
    const auto parsed = parse_traceparent(traceparent);
    return parsed ? parsed->trace_id : std::string();
}

}  // namespace runbookd::trace
