#pragma once

#include <optional>
#include <string>
#include <string_view>

// W3C Trace Context (docs/tracing.md): the `traceparent` a request brings, and the one each run
// gets, "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>".
namespace runbookd::trace {

struct TraceParent {
    std::string trace_id;  // 32 lower-case hex digits, not all zero
    std::string span_id;   // 16 lower-case hex digits, not all zero
    std::string flags;     // 2 hex digits

    std::string header() const;  // version 00
};

// Reads a traceparent header as the specification says: version ff, a malformed field or an
// all-zero id make it invalid (nullopt); a version above 00 is read for its first four fields.
std::optional<TraceParent> parse_traceparent(std::string_view header);

// A run's traceparent: in `incoming`'s trace with its flags, else in a new trace sampled
// (flags 01); always with a new random span id.
TraceParent child_of(const std::optional<TraceParent>& incoming);

// The trace id of a stored traceparent header, or empty when it is not one.
std::string trace_id_of(std::string_view traceparent);

}  // namespace runbookd::trace
