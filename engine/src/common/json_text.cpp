#include "common/json_text.hpp"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace runbookd::json_text {
std::size_t utf8_sequence_length(std::string_view s, std::size_t i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
        return 1;
    }
    std::size_t n = 0;
    std::uint32_t min = 0;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        min = 0x10000;
    } else {
        return 0;
    }
    if (i + n > s.size()) {
        return 0;
    }
    std::uint32_t code = c & (0xffu >> (n + 1));
    for (std::size_t k = 1; k < n; ++k) {
        const auto cc = static_cast<unsigned char>(s[i + k]);
        if ((cc & 0xc0) != 0x80) {
            return 0;
        }
        code = (code << 6) | (cc & 0x3fu);
    }
    if (code < min || code > 0x10ffff || (code >= 0xd800 && code <= 0xdfff)) {
        return 0;
    }
    return n;
}

bool valid_utf8(std::string_view text) {
    for (std::size_t i = 0; i < text.size();) {
        const std::size_t n = utf8_sequence_length(text, i);
        if (n == 0) {
            return false;
        }
        i += n;
    }
    return true;
}

namespace {

// Reads a text without building anything, keeping only the parser's complaint.
class ProblemFinder : public nlohmann::json_sax<nlohmann::json> {
  public:
    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t) override { return true; }
    bool number_unsigned(number_unsigned_t) override { return true; }
    bool number_float(number_float_t, const string_t&) override { return true; }
    bool string(string_t&) override { return true; }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override { return true; }
    bool key(string_t&) override { return true; }
    bool end_object() override { return true; }
    bool start_array(std::size_t) override { return true; }
    bool end_array() override { return true; }
    bool parse_error(std::size_t, const std::string&,
                     const nlohmann::detail::exception& e) override {
        // nlohmann's text starts with "[json.exception.parse_error.101] "; keep what follows.
        std::string_view what = e.what();
        if (const auto close = what.find("] "); close != std::string_view::npos) {
            what.remove_prefix(close + 2);
        }
        problem = std::string(what);
        return false;
    }

    std::string problem;
};

}  // namespace

std::string parse_problem(std::string_view text) {
    ProblemFinder finder;
    nlohmann::json::sax_parse(text.begin(), text.end(), &finder);
    return finder.problem;
}

std::size_t nesting_beyond(std::string_view text, std::size_t limit) {
    std::size_t depth = 0;
    bool in_string = false;
    for (std::size_t i = 0; i < text.size(); ++i) {
        const char c = text[i];
        if (in_string) {
            if (c == '\\') {
                ++i;  // the escaped character, whatever it is
            } else if (c == '"') {
                in_string = false;
            }
            continue;
        }
        switch (c) {
            case '"':
                in_string = true;
                break;
            case '[':
            case '{':
                if (++depth > limit) {
                    return i;
                }
                break;
            case ']':
            case '}':
                if (depth > 0) {
                    --depth;
                }
                break;
            default:
                break;
        }
    }
    return std::string_view::npos;
}

void append_string(std::string& out, std::string_view value) {
    out += '"';
    for (std::size_t i = 0; i < value.size();) {
        const char c = value[i];
        const auto u = static_cast<unsigned char>(c);
        if (u >= 0x80) {
            const std::size_t n = utf8_sequence_length(value, i);
            if (n == 0) {
                out += "\\ufffd";
                ++i;
            } else {
                out.append(value.substr(i, n));
                i += n;
            }
            continue;
        }
        switch (c) {
            case '"':
                out += "\\\"";
                break;
            case '\\':
                out += "\\\\";
                break;
            case '\n':
                out += "\\n";
                break;
            case '\r':
                out += "\\r";
                break;
            case '\t':
                out += "\\t";
                break;
            default:
                if (u < 0x20 || u == 0x7f) {
                    out += fmt::format("\\u{:04x}", u);
                } else {
                    out += c;
                }
        }
        ++i;
    }
    out += '"';
}

std::string label_set(const LabelSet& labels) {
    std::string out = "{";
    for (const auto& [name, value] : labels) {
        if (out.size() > 1) {
            out += ',';
        }
        append_string(out, name);
        out += ':';
        append_string(out, value);
    }
    out += '}';
    return out;
}

}  // namespace runbookd::json_text
