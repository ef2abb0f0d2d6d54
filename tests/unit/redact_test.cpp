#include "exec/redact.hpp"

#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

using runbookd::exec::SecretRedaction;
using Secrets = std::vector<std::pair<std::string, std::string>>;

TEST_CASE("a recorded text has every secret value replaced, the longest match first", "[redact]") {
    const SecretRedaction r(Secrets{{"short", "abc"}, {"long", "abcdef"}, {"empty", ""}});

    CHECK(r.text("x abcdef abc abcd") == "x [secret:long] [secret:short] [secret:short]d");
    CHECK(r.argv({"echo", "abc"}) == std::vector<std::string>{"echo", "[secret:short]"});
    CHECK(r.text("") == "");
}

TEST_CASE("JSON is redacted inside its strings and keys, also where JSON escapes the value",
          "[redact]") {
    const SecretRedaction r(Secrets{{"q", "a\"b"}});

    CHECK(r.json_text(R"({"k":"x a\"b y","a\"b":[1,"a\"b"]})") ==
          R"({"[secret:q]":[1,"[secret:q]"],"k":"x [secret:q] y"})");
    CHECK(r.json_text("not json a\"b") == "not json [secret:q]");
}

TEST_CASE("without secrets nothing changes", "[redact]") {
    const SecretRedaction r;

    CHECK_FALSE(r.active());
    CHECK(r.json_text(R"({"b":1,"a":2})") == R"({"b":1,"a":2})");
}
