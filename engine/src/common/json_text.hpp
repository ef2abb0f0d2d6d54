#pragma once

#include <string>
#include <string_view>

#include <runbookd/alert.hpp>

// Writing small JSON texts directly, for the intake's hot path where building an nlohmann
// document first would cost more than the rest of the work.
namespace runbookd::json_text {

// Appends `value` as a JSON string: quoted, with '"', '\\' and control characters escaped and
// any invalid UTF-8 byte replaced by U+FFFD.
void append_string(std::string& out, std::string_view value);

// {"name":"value",...} in name order.
std::string label_set(const LabelSet& labels);

}  // namespace runbookd::json_text
