#include <fmt/format.h>
#include <re2/re2.h>

#include <runbookd/matcher.hpp>

#include "common/json_text.hpp"

namespace runbookd {
namespace {

// The grammar of one matcher as Alertmanager defines it: a label name, an operator (=~ before
// = so that = does not swallow the ~), and the rest as the raw value, surrounding white space
// dropped. Read as Latin-1 so that `.` takes any byte, as Go's `.` takes an invalid one: invalid
// UTF-8 then reaches the check in unescape_value() and is reported as such.
const re2::RE2& matcher_grammar() {
    static const re2::RE2 grammar(
        R"(^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(=~|=|!=|!~)\s*((?s).*?)\s*$)", re2::RE2::Latin1);
    return grammar;
}

Error bad_matcher(std::string message) {
    return make_error(ErrorCode::InvalidArgument, std::move(message));
}

// Undoes the OpenMetrics escapes of a matcher value, following Alertmanager: \" \\ and \n are
// escapes, any other backslash is literal, and an unescaped quote may only close a value that
// an opening quote started.
Result<std::string> unescape_value(std::string_view raw_with_quotes) {
    std::string_view raw = raw_with_quotes;
    bool expect_closing_quote = false;
    if (!raw.empty() && raw.front() == '"') {
        raw.remove_prefix(1);
        expect_closing_quote = true;
    }
    if (!json_text::valid_utf8(raw)) {
        return bad_matcher(fmt::format("matcher value is not valid UTF-8: {}", raw_with_quotes));
    }
    std::string value;
    bool escaped = false;
    for (std::size_t i = 0; i < raw.size(); ++i) {
        const char c = raw[i];
        if (escaped) {
            escaped = false;
            if (c == 'n') {
                value += '\n';
            } else if (c == '"' || c == '\\') {
                value += c;
            } else {
                value += '\\';
                value += c;
            }
            continue;
        }
        if (c == '\\') {
            if (i + 1 < raw.size()) {
                escaped = true;
            } else {
                value += '\\';
            }
        } else if (c == '"') {
            if (!expect_closing_quote || i + 1 < raw.size()) {
                return bad_matcher(
                    fmt::format("matcher value contains an unescaped double "
                                "quote: {}",
                                raw_with_quotes));
            }
            expect_closing_quote = false;
        } else {
            value += c;
        }
    }
    if (expect_closing_quote) {
        return bad_matcher(
            fmt::format("matcher value is missing its closing double quote: {}", raw_with_quotes));
    }
    return value;
}

const char* operator_text(MatchType type) {
    switch (type) {
        case MatchType::Equal:
            return "=";
        case MatchType::NotEqual:
            return "!=";
        case MatchType::Regexp:
            return "=~";
        case MatchType::NotRegexp:
            return "!~";
    }
    return "=";
}

}  // namespace

Matcher::Matcher(std::string name, MatchType type, std::string value,
                 std::shared_ptr<const re2::RE2> regex)
    : name_(std::move(name)), type_(type), value_(std::move(value)), regex_(std::move(regex)) {}

Result<Matcher> Matcher::parse(std::string_view text) {
    std::string name;
    std::string op;
    std::string raw;
    if (!re2::RE2::FullMatch(re2::StringPiece(text.data(), text.size()), matcher_grammar(), &name,
                             &op, &raw)) {
        return bad_matcher(
            fmt::format("bad matcher format: {} (expected name, one of = != =~ "
                        "!~, then a value, e.g. severity=\"critical\")",
                        text));
    }
    auto value = unescape_value(raw);
    if (!value) {
        return value.error();
    }

    MatchType type = MatchType::Equal;
    if (op == "!=") {
        type = MatchType::NotEqual;
    } else if (op == "=~") {
        type = MatchType::Regexp;
    } else if (op == "!~") {
        type = MatchType::NotRegexp;
    }
    if (type == MatchType::Equal || type == MatchType::NotEqual) {
        return Matcher(std::move(name), type, std::move(*value), nullptr);
    }

    re2::RE2::Options options;
    options.set_log_errors(false);
    auto regex = std::make_shared<re2::RE2>("^(?:" + *value + ")$", options);
    if (!regex->ok()) {
        return bad_matcher(fmt::format("bad regular expression in {}: {}", text, regex->error()));
    }
    return Matcher(std::move(name), type, std::move(*value), std::move(regex));
}

Result<std::vector<Matcher>> Matcher::parse_list(std::string_view text) {
    if (!text.empty() && text.front() == '{') {
        text.remove_prefix(1);
    }
    if (!text.empty() && text.back() == '}') {
        text.remove_suffix(1);
    }

    // Split on commas outside double quotes; a backslash escapes a quote. As in Alertmanager, a
    // comma inside quotes leaves a pending escape in place (`"x\,"` does not close the quote).
    std::vector<std::string> tokens;
    std::string token;
    bool inside_quotes = false;
    bool escaped = false;
    for (const char c : text) {
        if (c == ',' && !inside_quotes) {
            tokens.push_back(std::move(token));
            token.clear();
            continue;
        }
        if (c == '"') {
            if (!escaped) {
                inside_quotes = !inside_quotes;
            } else {
                escaped = false;
            }
        } else if (c == '\\') {
            escaped = !escaped;
        } else if (c != ',') {
            escaped = false;
        }
        token += c;
    }
    const auto first = token.find_first_not_of(" \t\n\r\f\v");
    if (first != std::string::npos) {
        tokens.push_back(token);
    }

    std::vector<Matcher> matchers;
    for (const auto& t : tokens) {
        auto matcher = parse(t);
        if (!matcher) {
            return matcher.error();
        }
        matchers.push_back(std::move(*matcher));
    }
    return matchers;
}

bool Matcher::matches_value(std::string_view value) const {
    const re2::StringPiece piece(value.data(), value.size());
    switch (type_) {
        case MatchType::Equal:
            return value == value_;
        case MatchType::NotEqual:
            return value != value_;
        case MatchType::Regexp:
            return re2::RE2::FullMatch(piece, *regex_);
        case MatchType::NotRegexp:
            return !re2::RE2::FullMatch(piece, *regex_);
    }
    return false;
}

bool Matcher::matches(const LabelSet& labels) const {
    const auto it = labels.find(name_);
    return matches_value(it == labels.end() ? std::string_view() : std::string_view(it->second));
}

std::string Matcher::to_string() const {
    std::string out = name_;
    out += operator_text(type_);
    out += '"';
    for (const char c : value_) {
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else {
            out += c;
        }
    }
    out += '"';
    return out;
}

bool matches_all(const std::vector<Matcher>& matchers, const LabelSet& labels) {
    for (const auto& m : matchers) {
        if (!m.matches(labels)) {
            return false;
        }
    }
    return true;
}

}  // namespace runbookd
