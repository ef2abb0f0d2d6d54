#include <string>

#include <catch2/catch.hpp>

#include <runbookd/step_parser.hpp>

namespace {

using runbookd::builtin_step_parsers;
using runbookd::load_runbook_text;

// A runbook whose second step carries `approval` (the YAML text after the key), on line 8.
std::string with_approval(const std::string& approval) {
    return R"(name: gated
matchers: ['alertname="X"']
steps:
  - name: look
    argv: [/bin/true]
  - name: act
    argv: [/bin/true]
    approval: )" +
           approval + "\n";
}

}  // namespace

TEST_CASE("an approval gate is read with its defaults", "[loader][approval]") {
    auto full = load_runbook_text(
        with_approval("{approvers: [alice, bob], timeout: 10m, on_timeout: approve, "
                      "message: \"drops connections\"}"),
        "g.yaml", builtin_step_parsers());
    auto bare = load_runbook_text(with_approval("{}"), "g.yaml", builtin_step_parsers());

    REQUIRE(full.errors.empty());
    const auto& a = *full.runbooks.front()->steps[1].approval;
    CHECK(a.approvers == std::vector<std::string>{"alice", "bob"});
    CHECK(a.timeout == std::chrono::minutes(10));
    CHECK(a.approve_on_timeout);
    CHECK(a.message == "drops connections");
    CHECK(a.allows("bob"));
    CHECK_FALSE(a.allows("mallory"));
    CHECK_FALSE(full.runbooks.front()->steps[0].approval);
    REQUIRE(bare.errors.empty());
    const auto& d = *bare.runbooks.front()->steps[1].approval;
    CHECK(d.approvers.empty());
    CHECK(d.allows("anyone"));
    CHECK(d.timeout == std::chrono::minutes(30));
    CHECK_FALSE(d.approve_on_timeout);
}

TEST_CASE("a bad approval gate is refused at file:line:column", "[loader][approval]") {
    const auto error_of = [](const std::string& approval) {
        auto loaded = load_runbook_text(with_approval(approval), "g.yaml", builtin_step_parsers());
        REQUIRE(loaded.errors.size() == 1);
        return loaded.errors.front().to_string();
    };

    CHECK_THAT(error_of("{on_timeout: maybe}"),
               Catch::StartsWith("g.yaml:8:28: approval.on_timeout: expected deny or approve"));
    CHECK_THAT(error_of("{approvers: alice}"),
               Catch::StartsWith("g.yaml:8:27: approval.approvers: expected a list"));
    CHECK_THAT(error_of("{approvers: [\"\"]}"),
               Catch::StartsWith("g.yaml:8:28: approval.approvers: a name must not be empty"));
    CHECK_THAT(error_of("{timeout: 169h}"),
               Catch::Contains("approval.timeout: must be more than 0 and at most 7d"));
    CHECK_THAT(error_of("{timeout: 0s}"), Catch::StartsWith("g.yaml:8:25: approval.timeout: ") &&
                                              Catch::Contains("positive duration"));
    CHECK_THAT(error_of("{approver: [alice]}"),
               Catch::StartsWith("g.yaml:8:") && Catch::Contains("approver"));
    CHECK_THAT(error_of("yes please"), Catch::StartsWith("g.yaml:8:15: approval: expected a "
                                                         "mapping"));
}
