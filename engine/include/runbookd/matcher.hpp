#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <runbookd/alert.hpp>
#include <runbookd/result.hpp>

namespace re2 {
class RE2;
}

namespace runbookd {

enum class MatchType { Equal, NotEqual, Regexp, NotRegexp };

// One label matcher in Alertmanager's syntax and with its semantics: `name="value"`, `!=`,
// `=~` and `!~`; regular expressions are RE2 (the syntax Alertmanager's Go regexp uses) and
// fully anchored; a label that is absent matches as the empty string. Immutable and safe to
// share between threads.
class Matcher {
  public:
    // Parses one matcher, e.g. `severity=~"critical|page"`. Quotes around the value are
    // optional; inside them \" \\ and \n are escapes.
    static Result<Matcher> parse(std::string_view text);

    // Parses a comma-separated list with optional surrounding braces, as Alertmanager reads
    // each line of a route's `matchers:` (e.g. `{job="node", severity!="info"}`).
    static Result<std::vector<Matcher>> parse_list(std::string_view text);

    bool matches(const LabelSet& labels) const;
    bool matches_value(std::string_view value) const;

    const std::string& name() const { return name_; }
    MatchType type() const { return type_; }
    const std::string& value() const { return value_; }

    // Canonical text, which parse() reads back to an equal matcher: name="value" with escapes.
    std::string to_string() const;

  private:
    Matcher(std::string name, MatchType type, std::string value,
            std::shared_ptr<const re2::RE2> regex);

    std::string name_;
    MatchType type_;
    std::string value_;
    std::shared_ptr<const re2::RE2> regex_;  // set for Regexp and NotRegexp
};

// True when every matcher matches (an empty list matches every alert).
bool matches_all(const std::vector<Matcher>& matchers, const LabelSet& labels);

}  // namespace runbookd
