#include "common/json_text.hpp"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using runbookd::json_text::append_string;
using runbookd::json_text::label_set;

namespace {

std::string as_json(std::string_view value) {
    std::string out;
    append_string(out, value);
    return out;
}

}  // namespace

TEST_CASE("strings are written as JSON that parses back to the same text", "[json_text]") {
    const std::vector<std::string> values = {"",
                                             "plain",
                                             "say \"hi\"",
                                             "back\\slash",
                                             "line\nbreak\ttab\r",
                                             std::string("\x01\x1f\x7f", 3),
                                             "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x94\xa5",
                                             "{{ run.id }} $(id)"};

    for (const auto& v : values) {
        CAPTURE(v);

        CHECK(nlohmann::json::parse(as_json(v)).get<std::string>() == v);
    }
}

TEST_CASE("invalid UTF-8 bytes become U+FFFD and the rest is kept", "[json_text]") {
    CHECK(as_json("a\xff"
                  "b") == "\"a\\ufffdb\"");
    CHECK(as_json("\xc3") == "\"\\ufffd\"");
    CHECK(as_json("\xed\xa0\x80") == "\"\\ufffd\\ufffd\\ufffd\"");
    CHECK(as_json("\xc0\xaf") == "\"\\ufffd\\ufffd\"");
}

TEST_CASE("a label set is an object in name order", "[json_text]") {
    CHECK(label_set({}) == "{}");
    CHECK(label_set({{"b", "2"}, {"a", "x\"y"}}) == R"({"a":"x\"y","b":"2"})");
}
