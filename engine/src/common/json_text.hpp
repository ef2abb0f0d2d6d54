#pragma once

#include <string>
#include <string_view>

#include <runbookd/alert.hpp>

// Writing small JSON texts directly, for the intake's hot path where building an nlohmann
// document first would cost more than the rest of the work.
namespace runbookd::json_text {

// Length of the well-formed UTF-8 sequence starting at byte `i` (1 for ASCII), or 0 when
// the bytes there are not one (overlong forms, surrogates and values above U+10FFFF included).
std::size_t utf8_sequence_length(std::string_view text, std::size_t i);

// True when all of `text` is well-formed UTF-8.
bool valid_utf8(std::string_view text);

// Where `text`, read as JSON, opens an array or object nested more than `limit` deep: the byte
// offset of that bracket, or npos when it never does. Brackets inside strings do not count.
// The text need not be valid JSON (the parser judges that later); this only bounds the depth
// a parser and the document it builds would have to go to.
std::size_t nesting_beyond(std::string_view text, std::size_t limit);

// Why `text` is not valid JSON, as nlohmann says it ("parse error at line 1, column 11:
// syntax error ..."), or empty when it is valid.
std::string parse_problem(std::string_view text);

// Appends `value` as a JSON string: quoted, with '"', '\\' and control characters escaped and
// any invalid UTF-8 byte replaced by U+FFFD.
void append_string(std::string& out, std::string_view value);

// {"name":"value",...} in name order.
std::string label_set(const LabelSet& labels);

}  // namespace runbookd::json_text
