#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <runbookd/matcher.hpp>

// Expected results follow Alertmanager 0.25 (pkg/labels/parse.go and matcher.go) and were
// cross-checked against `amtool config routes test` and `amtool config routes show` 0.25.0.

using runbookd::LabelSet;
using runbookd::Matcher;
using runbookd::MatchType;

namespace {

struct Parsed {
    std::string name;
    MatchType type;
    std::string value;
};

void check_parsed(const Matcher& matcher, const Parsed& expected) {
    CHECK(matcher.name() == expected.name);
    CHECK(matcher.type() == expected.type);
    CHECK(matcher.value() == expected.value);
}

}  // namespace

TEST_CASE("a matcher is parsed into name, operator and value", "[matcher]") {
    struct Case {
        std::string text;
        Parsed expected;
    };
    const std::vector<Case> cases = {
        {R"(severity="critical")", {"severity", MatchType::Equal, "critical"}},
        {R"(severity!="info")", {"severity", MatchType::NotEqual, "info"}},
        {R"(severity=~"crit.*")", {"severity", MatchType::Regexp, "crit.*"}},
        {R"(severity!~"info|debug")", {"severity", MatchType::NotRegexp, "info|debug"}},
        {"severity=critical", {"severity", MatchType::Equal, "critical"}},
        {"severity!~info", {"severity", MatchType::NotRegexp, "info"}},
        {R"(  severity  =~  "crit"  )", {"severity", MatchType::Regexp, "crit"}},
        {"\tseverity\n=\ncritical\n", {"severity", MatchType::Equal, "critical"}},
        {"a=", {"a", MatchType::Equal, ""}},
        {R"(a="")", {"a", MatchType::Equal, ""}},
        {R"(a!="")", {"a", MatchType::NotEqual, ""}},
        {R"(a="b c")", {"a", MatchType::Equal, "b c"}},
        {"a=b c", {"a", MatchType::Equal, "b c"}},
        {R"(a=" padded ")", {"a", MatchType::Equal, " padded "}},
        {"a==b", {"a", MatchType::Equal, "=b"}},
        {"a!=~b", {"a", MatchType::NotEqual, "~b"}},
        {"a=b,c", {"a", MatchType::Equal, "b,c"}},
        {"_a:b9=v", {"_a:b9", MatchType::Equal, "v"}},
        {":=v", {":", MatchType::Equal, "v"}},
        {"A_Z=v", {"A_Z", MatchType::Equal, "v"}},
        {R"(a="ünïcödé ✓")", {"a", MatchType::Equal, "ünïcödé ✓"}},
    };

    for (const auto& c : cases) {
        CAPTURE(c.text);

        const auto parsed = Matcher::parse(c.text);

        REQUIRE(parsed.ok());
        check_parsed(*parsed, c.expected);
    }
}

TEST_CASE("escapes in a matcher value follow Alertmanager", "[matcher]") {
    struct Case {
        std::string text;
        std::string value;
    };
    const std::vector<Case> cases = {
        {R"(a="say \"hi\"")", R"(say "hi")"},
        {R"(a="back\\slash")", R"(back\slash)"},
        {R"(a="line\nbreak")", "line\nbreak"},
        {R"(a="ends with \\")", R"(ends with \)"},
        {R"(a="\\\"")", R"(\")"},
        // A backslash before any other character is kept, with that character.
        {R"(a="C:\path\to")", R"(C:\path\to)"},
        {R"(a="tab\t")", R"(tab\t)"},
        {R"(a=~"\d+\.\d+")", R"(\d+\.\d+)"},
        // Without quotes the same escapes apply.
        {R"(a=say\"hi\")", R"(say"hi")"},
        {R"(a=x\n)", "x\n"},
        // A backslash as the last character is literal.
        {R"(a=x\)", R"(x\)"},
        {R"(a=\)", R"(\)"},
    };

    for (const auto& c : cases) {
        CAPTURE(c.text);

        const auto parsed = Matcher::parse(c.text);

        REQUIRE(parsed.ok());
        CHECK(parsed->value() == c.value);
    }
}

TEST_CASE("a malformed matcher is rejected with a message saying what is wrong", "[matcher]") {
    struct Case {
        std::string text;
        std::string message;
    };
    const std::vector<Case> cases = {
        {"", "bad matcher format: "},
        {"   ", "bad matcher format: "},
        {"severity", "bad matcher format: severity"},
        {R"(="critical")", "bad matcher format: "},
        {R"(1severity="critical")", "bad matcher format: "},
        {R"(sever-ity="critical")", "bad matcher format: "},
        {R"(a.b="c")", "bad matcher format: "},
        {R"(a~="c")", "bad matcher format: "},
        {R"(a<"c")", "bad matcher format: "},
        {R"(a "c")", "bad matcher format: "},
        {R"("a"="c")", "bad matcher format: "},
        {R"(a="b"c")", "matcher value contains an unescaped double quote: \"b\"c\""},
        {R"(a="b" ")", "matcher value contains an unescaped double quote: "},
        {R"(a=b")", "matcher value contains an unescaped double quote: b\""},
        {R"(a=b"c")", "matcher value contains an unescaped double quote: "},
        {R"(a=="b")", "matcher value contains an unescaped double quote: "},
        {R"(a="b)", "matcher value is missing its closing double quote: \"b"},
        {R"(a=")", "matcher value is missing its closing double quote: \""},
        {R"(a="b\")", "matcher value is missing its closing double quote: "},
        {R"(a=~"(")", "bad regular expression in a=~\"(\": "},
        {R"(a!~"[z-a]")", "bad regular expression in "},
        {R"(a=~"*")", "bad regular expression in "},
        {R"m(a=~"(?=x)")m", "bad regular expression in "},
        {R"(a=~"(x)\1")", "bad regular expression in "},
        {"a=\"\xff\"", "matcher value is not valid UTF-8: "},
        {"a=\xc3\x28", "matcher value is not valid UTF-8: "},
        {"a=\xed\xa0\x80", "matcher value is not valid UTF-8: "},
    };

    for (const auto& c : cases) {
        CAPTURE(c.text);

        const auto parsed = Matcher::parse(c.text);

        REQUIRE_FALSE(parsed.ok());
        CHECK(parsed.error().code == runbookd::ErrorCode::InvalidArgument);
        CHECK_THAT(parsed.error().message, Catch::StartsWith(c.message));
    }
}

TEST_CASE("the operators compare label values as Alertmanager does", "[matcher]") {
    struct Case {
        std::string matcher;
        LabelSet labels;
        bool matches;
    };
    const LabelSet absent = {{"other", "b"}};
    const std::vector<Case> cases = {
        {R"(a="b")", {{"a", "b"}}, true},
        {R"(a="b")", {{"a", "bb"}}, false},
        {R"(a="b")", {{"a", "B"}}, false},
        {R"(a="b")", {{"a", ""}}, false},
        {R"(a="b")", absent, false},
        {R"(a="b")", {}, false},
        {R"(a="")", absent, true},
        {R"(a="")", {{"a", ""}}, true},
        {R"(a="")", {{"a", "x"}}, false},
        {R"(a!="b")", {{"a", "b"}}, false},
        {R"(a!="b")", {{"a", "c"}}, true},
        {R"(a!="b")", absent, true},
        {R"(a!="")", absent, false},
        {R"(a!="")", {{"a", "x"}}, true},
        {R"(a=~"b|c")", {{"a", "b"}}, true},
        {R"(a=~"b|c")", {{"a", "c"}}, true},
        {R"(a=~"b|c")", {{"a", "bc"}}, false},
        {R"(a=~"b|c")", {{"a", "xb"}}, false},
        {R"(a=~"b|c")", {{"a", "bx"}}, false},
        {R"(a=~"b.*")", {{"a", "bcd"}}, true},
        {R"(a=~"b.*")", {{"a", "abc"}}, false},
        {R"(a=~".*")", absent, true},
        {R"(a=~".+")", absent, false},
        {R"(a=~".+")", {{"a", "x"}}, true},
        {R"(a=~"")", absent, true},
        {R"(a!~"b|c")", {{"a", "b"}}, false},
        {R"(a!~"b|c")", {{"a", "bc"}}, true},
        {R"(a!~"b|c")", absent, true},
        {R"(a!~".+")", absent, true},
        {R"(a!~".*")", absent, false},
        {R"(a=~"crit")", {{"a", "CRIT"}}, false},
        {R"(a=~"(?i)crit")", {{"a", "CRIT"}}, true},
        {R"(a=~"\d+")", {{"a", "123"}}, true},
        {R"(a=~"\d+")", {{"a", "12a"}}, false},
        {R"(a=~".")", {{"a", "\n"}}, false},
        {R"(a=~"(?s).")", {{"a", "\n"}}, true},
        {R"(a=~"a$|b")", {{"a", "b"}}, true},
        {R"(a=~"^b")", {{"a", "b"}}, true},
        {R"(a=~"node-[12]:9100")", {{"a", "node-2:9100"}}, true},
        {R"(a=~"node-[12]:9100")", {{"a", "node-3:9100"}}, false},
        {R"(a=~"ü+")", {{"a", "üü"}}, true},
        {R"(a="line\nbreak")", {{"a", "line\nbreak"}}, true},
    };

    for (const auto& c : cases) {
        CAPTURE(c.matcher, c.labels);
        const auto matcher = Matcher::parse(c.matcher);
        REQUIRE(matcher.ok());

        const bool matches = matcher->matches(c.labels);

        CHECK(matches == c.matches);
    }
}

TEST_CASE("matches_value treats the given value as the label's value", "[matcher]") {
    const auto matcher = Matcher::parse(R"(severity=~"crit|page")");
    REQUIRE(matcher.ok());

    CHECK(matcher->matches_value("crit"));
    CHECK(matcher->matches_value("page"));
    CHECK_FALSE(matcher->matches_value("critical"));
    CHECK_FALSE(matcher->matches_value(""));
}

TEST_CASE("a matcher list is split on commas outside quotes", "[matcher]") {
    struct Case {
        std::string text;
        std::vector<Parsed> expected;
    };
    const std::vector<Case> cases = {
        {R"({a="b", c!="d"})", {{"a", MatchType::Equal, "b"}, {"c", MatchType::NotEqual, "d"}}},
        {R"(a="b",c!="d")", {{"a", MatchType::Equal, "b"}, {"c", MatchType::NotEqual, "d"}}},
        {R"(  a = b ,  c =~ "d|e"  )",
         {{"a", MatchType::Equal, "b"}, {"c", MatchType::Regexp, "d|e"}}},
        {R"(a="b",)", {{"a", MatchType::Equal, "b"}}},
        {R"({a="b",})", {{"a", MatchType::Equal, "b"}}},
        {R"({a="b", })", {{"a", MatchType::Equal, "b"}}},
        {R"({a="b")", {{"a", MatchType::Equal, "b"}}},
        {R"(a="x,y")", {{"a", MatchType::Equal, "x,y"}}},
        {R"(a="x,y", b=~"1,2|3")",
         {{"a", MatchType::Equal, "x,y"}, {"b", MatchType::Regexp, "1,2|3"}}},
        {R"(a="x\",y")", {{"a", MatchType::Equal, R"(x",y)"}}},
        {R"(a="x\\",b="y")", {{"a", MatchType::Equal, R"(x\)"}, {"b", MatchType::Equal, "y"}}},
        {R"({a="}"})", {{"a", MatchType::Equal, "}"}}},
        {"", {}},
        {"{}", {}},
        {"  ", {}},
    };

    for (const auto& c : cases) {
        CAPTURE(c.text);

        const auto parsed = Matcher::parse_list(c.text);

        REQUIRE(parsed.ok());
        REQUIRE(parsed->size() == c.expected.size());
        for (std::size_t i = 0; i < c.expected.size(); ++i) {
            check_parsed((*parsed)[i], c.expected[i]);
        }
    }
}

TEST_CASE("a bad matcher list is rejected", "[matcher]") {
    struct Case {
        std::string text;
        std::string message;
    };
    const std::vector<Case> cases = {
        {R"(a="b",,c="d")", "bad matcher format: "},
        {R"(,a="b")", "bad matcher format: "},
        {R"(a="b", c)", "bad matcher format: "},
        {R"(a="b" c="d")", "matcher value contains an unescaped double quote: "},
        {R"(a="b, c="d")", "matcher value contains an unescaped double quote: "},
        {R"(a="b)", "matcher value is missing its closing double quote: "},
        {R"({a=~"(", b="c"})", "bad regular expression in "},
        // An escaped comma keeps the following quote escaped, so the list does not split there
        // and the value holds a stray quote.
        {R"(a="x\,", b="y")", "matcher value contains an unescaped double quote: "},
    };

    for (const auto& c : cases) {
        CAPTURE(c.text);

        const auto parsed = Matcher::parse_list(c.text);

        REQUIRE_FALSE(parsed.ok());
        CHECK_THAT(parsed.error().message, Catch::StartsWith(c.message));
    }
}

TEST_CASE("to_string writes the canonical form", "[matcher]") {
    struct Case {
        std::string text;
        std::string canonical;
    };
    const std::vector<Case> cases = {
        {"severity=critical", R"(severity="critical")"},
        {R"( severity != "info" )", R"(severity!="info")"},
        {"a=~b|c", R"(a=~"b|c")"},
        {"a!~b", R"(a!~"b")"},
        {"a=", R"(a="")"},
        {R"(a="say \"hi\"")", R"(a="say \"hi\"")"},
        {R"(a=C:\path)", R"(a="C:\\path")"},
        {R"(a="line\nbreak")", R"(a="line\nbreak")"},
    };

    for (const auto& c : cases) {
        CAPTURE(c.text);
        const auto parsed = Matcher::parse(c.text);
        REQUIRE(parsed.ok());

        const std::string text = parsed->to_string();

        CHECK(text == c.canonical);
    }
}

TEST_CASE("to_string reads back through parse to an equal matcher", "[matcher]") {
    const std::vector<std::string> texts = {
        R"(a="b")",
        R"(a!="")",
        R"(a=~"crit|page")",
        R"(a!~"\d+\.\d+")",
        R"(a="say \"hi\" \\ bye")",
        R"(a="line\nbreak")",
        R"(a="C:\path\to")",
        R"(a=x\)",
        R"(a="x,y}{")",
        R"(a="ünïcödé")",
        R"(a=~"\\\\")",
    };

    for (const auto& text : texts) {
        CAPTURE(text);
        const auto first = Matcher::parse(text);
        REQUIRE(first.ok());

        const auto again = Matcher::parse(first->to_string());

        REQUIRE(again.ok());
        check_parsed(*again, {first->name(), first->type(), first->value()});
        CHECK(again->to_string() == first->to_string());
    }
}

TEST_CASE("to_string of each matcher in a list reads back as the same list", "[matcher]") {
    const auto list = Matcher::parse_list(R"({a="x,y", b!~"1|2", c="q\"uote"})");
    REQUIRE(list.ok());
    std::string joined;
    for (const auto& m : *list) {
        joined += (joined.empty() ? "" : ", ") + m.to_string();
    }

    const auto again = Matcher::parse_list("{" + joined + "}");

    REQUIRE(again.ok());
    REQUIRE(again->size() == 3);
    for (std::size_t i = 0; i < 3; ++i) {
        check_parsed((*again)[i], {(*list)[i].name(), (*list)[i].type(), (*list)[i].value()});
    }
}

TEST_CASE("matches_all requires every matcher to match", "[matcher]") {
    const auto matchers = Matcher::parse_list(R"({job="node", severity=~"warning|critical"})");
    REQUIRE(matchers.ok());

    SECTION("all match") {
        CHECK(runbookd::matches_all(*matchers, {{"job", "node"}, {"severity", "critical"}}));
    }
    SECTION("one does not match") {
        CHECK_FALSE(runbookd::matches_all(*matchers, {{"job", "node"}, {"severity", "info"}}));
    }
    SECTION("a label is missing") {
        CHECK_FALSE(runbookd::matches_all(*matchers, {{"severity", "critical"}}));
    }
    SECTION("an empty list matches any labels") {
        CHECK(runbookd::matches_all({}, {{"anything", "at all"}}));
    }
}
