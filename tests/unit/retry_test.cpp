#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include <runbookd/runbook.hpp>
#include <runbookd/step_parser.hpp>

using runbookd::builtin_step_parsers;
using runbookd::Duration;
using runbookd::load_runbook_text;
using runbookd::retry_delay;
using runbookd::RetryPolicy;

namespace {

// A runbook with one argv step whose further keys are `step_keys` (from line 5 on).
std::string with_step_keys(const std::string& step_keys) {
    return "name: disk\nsteps:\n  - name: df\n    argv: [df]\n" + step_keys;
}

RetryPolicy load_retry(const std::string& step_keys) {
    const auto result =
        load_runbook_text(with_step_keys(step_keys), "disk.yaml", builtin_step_parsers());
    for (const auto& e : result.errors) {
        UNSCOPED_INFO(e.to_string());
    }
    REQUIRE(result.runbooks.size() == 1);
    return result.runbooks[0]->steps.at(0).retry;
}

std::vector<std::string> strings(const std::vector<runbookd::Diagnostic>& diagnostics) {
    std::vector<std::string> out;
    for (const auto& d : diagnostics) {
        out.push_back(d.to_string());
    }
    return out;
}

}  // namespace

TEST_CASE("retry delays grow by the multiplier up to the cap", "[retry]") {
    RetryPolicy policy;
    policy.initial = Duration{1'000};
    policy.max = Duration{60'000};
    policy.multiplier = 2.0;
    const std::vector<std::pair<int, Duration>> schedule = {
        {2, Duration{1'000}},  {3, Duration{2'000}},  {4, Duration{4'000}},
        {5, Duration{8'000}},  {6, Duration{16'000}}, {7, Duration{32'000}},
        {8, Duration{60'000}}, {9, Duration{60'000}}, {100, Duration{60'000}},
    };

    for (const auto& [attempt, delay] : schedule) {
        CAPTURE(attempt);
        CHECK(retry_delay(policy, attempt, 0.0) == delay);
    }
}

TEST_CASE("a multiplier of 1 keeps the delay constant", "[retry]") {
    RetryPolicy policy;
    policy.initial = Duration{2'500};
    policy.multiplier = 1.0;

    for (int attempt = 2; attempt <= 10; ++attempt) {
        CHECK(retry_delay(policy, attempt, 0.0) == Duration{2'500});
    }
}

TEST_CASE("a fractional multiplier is rounded to whole milliseconds", "[retry]") {
    RetryPolicy policy;
    policy.initial = Duration{1'000};
    policy.multiplier = 1.5;

    CHECK(retry_delay(policy, 3, 0.0) == Duration{1'500});
    CHECK(retry_delay(policy, 4, 0.0) == Duration{2'250});
    CHECK(retry_delay(policy, 5, 0.0) == Duration{3'375});
}

TEST_CASE("there is no delay before the first attempt", "[retry]") {
    const RetryPolicy policy;

    CHECK(retry_delay(policy, 1, 0.5) == Duration{0});
    CHECK(retry_delay(policy, 0, 0.5) == Duration{0});
    CHECK(retry_delay(policy, -3, 0.5) == Duration{0});
}

TEST_CASE("jitter draws each delay from [d * (1 - jitter), d]", "[retry]") {
    RetryPolicy policy;
    policy.initial = Duration{10'000};
    policy.jitter = 0.2;

    CHECK(retry_delay(policy, 2, 0.0) == Duration{10'000});
    CHECK(retry_delay(policy, 2, 0.5) == Duration{9'000});
    CHECK(retry_delay(policy, 2, 0.999999) == Duration{8'000});
    for (int i = 0; i < 100; ++i) {
        const double draw = i / 100.0;
        const Duration d = retry_delay(policy, 3, draw);
        CAPTURE(draw);
        CHECK(d >= Duration{16'000});
        CHECK(d <= Duration{20'000});
    }
}

TEST_CASE("jitter applies after the cap, so a capped delay can be shorter than max", "[retry]") {
    RetryPolicy policy;
    policy.initial = Duration{1'000};
    policy.max = Duration{4'000};
    policy.jitter = 1.0;

    CHECK(retry_delay(policy, 10, 0.0) == Duration{4'000});
    CHECK(retry_delay(policy, 10, 0.5) == Duration{2'000});
}

TEST_CASE("100 attempts with multiplier 10 stay at the cap without overflow", "[retry]") {
    RetryPolicy policy;
    policy.attempts = 100;
    policy.initial = Duration{1'000};
    policy.max = Duration{3'600'000};
    policy.multiplier = 10.0;

    Duration previous{0};
    for (int attempt = 2; attempt <= policy.attempts; ++attempt) {
        const Duration d = retry_delay(policy, attempt, 0.0);
        CAPTURE(attempt);
        CHECK(d >= previous);
        CHECK(d <= policy.max);
        previous = d;
    }
    CHECK(retry_delay(policy, 100, 0.0) == Duration{3'600'000});
    CHECK(retry_delay(policy, 1'000'000, 0.0) == Duration{3'600'000});
}

TEST_CASE("an initial delay longer than max is cut to max", "[retry]") {
    RetryPolicy policy;
    policy.initial = Duration{90'000};
    policy.max = Duration{60'000};

    CHECK(retry_delay(policy, 2, 0.0) == Duration{60'000});
}

TEST_CASE("a step without retries is attempted once and retries nothing", "[retry]") {
    const auto retry = load_retry("");

    CHECK(retry.attempts == 1);
    CHECK(retry.initial == Duration{1'000});
    CHECK(retry.max == Duration{60'000});
    CHECK(retry.multiplier == 2.0);
    CHECK(retry.jitter == 0.0);
    CHECK_FALSE(retry.on_any_exit_code);
    CHECK_FALSE(retry.on_timeout);
    CHECK_FALSE(retry.on_signal);
    CHECK(retry.on_exit_codes.empty());
}

TEST_CASE("retries: N sets the attempts and retries failures and timeouts", "[retry]") {
    const auto retry = load_retry("    retries: 3\n");

    CHECK(retry.attempts == 3);
    CHECK(retry.initial == Duration{1'000});
    CHECK(retry.max == Duration{60'000});
    CHECK(retry.on_any_exit_code);
    CHECK(retry.on_timeout);
    CHECK_FALSE(retry.on_signal);
    CHECK(retry.on_exit_codes.empty());
}

TEST_CASE("retries: 1 means no retry and sets no condition", "[retry]") {
    const auto retry = load_retry("    retries: 1\n");

    CHECK(retry.attempts == 1);
    CHECK_FALSE(retry.on_any_exit_code);
    CHECK_FALSE(retry.on_timeout);
}

TEST_CASE("the retries mapping sets every field", "[retry]") {
    const auto retry = load_retry(
        "    retries: {attempts: 5, initial: 2s, max: 1m, multiplier: 1.5, jitter: 0.2}\n");

    CHECK(retry.attempts == 5);
    CHECK(retry.initial == Duration{2'000});
    CHECK(retry.max == Duration{60'000});
    CHECK(retry.multiplier == 1.5);
    CHECK(retry.jitter == 0.2);
    CHECK(retry.on_any_exit_code);
    CHECK(retry.on_timeout);
}

TEST_CASE("retry_on lists the conditions that are retried", "[retry]") {
    SECTION("signal and exit codes, without failure and timeout") {
        const auto retry = load_retry("    retries: 2\n    retry_on: [signal, 75, 1]\n");

        CHECK(retry.on_signal);
        CHECK(retry.on_exit_codes == std::vector<int>{75, 1});
        CHECK_FALSE(retry.on_any_exit_code);
        CHECK_FALSE(retry.on_timeout);
    }
    SECTION("every word") {
        const auto retry = load_retry("    retries: 2\n    retry_on: [failure, timeout, signal]\n");

        CHECK(retry.on_any_exit_code);
        CHECK(retry.on_timeout);
        CHECK(retry.on_signal);
    }
    SECTION("one condition without a list") {
        const auto retry = load_retry("    retries: 2\n    retry_on: timeout\n");

        CHECK(retry.on_timeout);
        CHECK_FALSE(retry.on_any_exit_code);
    }
    SECTION("exit codes 1 and 255") {
        const auto retry = load_retry("    retries: 2\n    retry_on: [255, 1]\n");

        CHECK(retry.on_exit_codes == std::vector<int>{255, 1});
    }
}

TEST_CASE("retry_on without retries loads with a warning that it does nothing", "[retry]") {
    for (const char* retries : {"", "    retries: 1\n", "    retries: {attempts: 1}\n"}) {
        CAPTURE(retries);
        const std::string text = with_step_keys(std::string(retries) + "    retry_on: [signal]\n");

        const auto result = load_runbook_text(text, "disk.yaml", builtin_step_parsers());

        CHECK(result.errors.empty());
        CHECK(result.runbooks.size() == 1);
        const int line = retries[0] == '\0' ? 5 : 6;
        CHECK(strings(result.warnings) ==
              std::vector<std::string>{
                  "disk.yaml:1:1: runbook has no matchers, so no alert will ever start it (write "
                  "e.g. alertname=\"...\")",
                  "disk.yaml:" + std::to_string(line) +
                      ":15: retry_on has no effect without retries of 2 or more attempts (add "
                      "e.g. retries: 3)"});
    }
}

TEST_CASE("retries and retry_on errors give file, line, column and what is wrong", "[retry]") {
    struct Case {
        const char* what;
        std::string step_keys;
        std::vector<std::string> errors;
    };
    const std::vector<Case> cases = {
        {"zero attempts",
         "    retries: 0\n",
         {"disk.yaml:5:14: retries: must be from 1 to 100, got 0"}},
        {"too many attempts",
         "    retries: 101\n",
         {"disk.yaml:5:14: retries: must be from 1 to 100, got 101"}},
        {"a huge number of attempts",
         "    retries: 99999999999999999999999\n",
         {"disk.yaml:5:14: retries: must be from 1 to 100, got 99999999999999999999999"}},
        {"attempts that are not a number",
         "    retries: three\n",
         {"disk.yaml:5:14: retries: expected an integer, got \"three\""}},
        {"fractional attempts",
         "    retries: 2.5\n",
         {"disk.yaml:5:14: retries: expected an integer, got \"2.5\""}},
        {"a list for retries",
         "    retries: [3]\n",
         {"disk.yaml:5:14: retries: expected a number of attempts or a mapping (attempts, "
          "initial, max, multiplier, jitter), got a list"}},
        {"nothing for retries",
         "    retries:\n",
         {"disk.yaml:6:1: retries: expected a number of attempts or a mapping (attempts, "
          "initial, max, multiplier, jitter), got nothing"}},
        {"an unknown key in retries",
         "    retries: {attempts: 3, delay: 1s}\n",
         {"disk.yaml:5:28: unknown key \"delay\" in retries (expected one of: attempts, initial, "
          "max, multiplier, jitter)"}},
        {"a duplicate key in retries",
         "    retries:\n      attempts: 2\n      attempts: 3\n",
         {"disk.yaml:7:7: duplicate key \"attempts\" (first at line 6)"}},
        {"a retries mapping without attempts",
         "    retries: {initial: 1s}\n",
         {"disk.yaml:5:14: retries: needs attempts, the total number of attempts (e.g. "
          "attempts: 3)"}},
        {"attempts out of range in the mapping",
         "    retries: {attempts: 0}\n",
         {"disk.yaml:5:25: retries.attempts: must be from 1 to 100, got 0"}},
        {"attempts as a list",
         "    retries: {attempts: [1]}\n",
         {"disk.yaml:5:25: retries.attempts: expected an integer, got a list"}},
        {"a bad initial delay",
         "    retries: {attempts: 3, initial: soon}\n",
         {"disk.yaml:5:37: retries.initial: \"soon\" is not a positive duration (write e.g. "
          "500ms, 30s, 5m, 1h30m)"}},
        {"a zero max delay",
         "    retries: {attempts: 3, max: 0s}\n",
         {"disk.yaml:5:33: retries.max: \"0s\" is not a positive duration (write e.g. 500ms, 30s, "
          "5m, 1h30m)"}},
        {"initial longer than max",
         "    retries: {attempts: 3, initial: 10s, max: 5s}\n",
         {"disk.yaml:5:37: retries: initial 10s is longer than max 5s"}},
        {"initial longer than the default max",
         "    retries: {attempts: 3, initial: 2m}\n",
         {"disk.yaml:5:37: retries: initial 2m is longer than max 1m"}},
        {"max shorter than the default initial",
         "    retries: {attempts: 3, max: 500ms}\n",
         {"disk.yaml:5:33: retries: initial 1s is longer than max 500ms"}},
        {"a multiplier below 1",
         "    retries: {attempts: 3, multiplier: 0.5}\n",
         {"disk.yaml:5:40: retries.multiplier: must be at least 1, got 0.5"}},
        {"a multiplier that is not a number",
         "    retries: {attempts: 3, multiplier: double}\n",
         {"disk.yaml:5:40: retries.multiplier: expected a number, got \"double\""}},
        {"an infinite multiplier",
         "    retries: {attempts: 3, multiplier: inf}\n",
         {"disk.yaml:5:40: retries.multiplier: expected a number, got \"inf\""}},
        {"jitter above 1",
         "    retries: {attempts: 3, jitter: 1.5}\n",
         {"disk.yaml:5:36: retries.jitter: must be from 0 to 1, got 1.5"}},
        {"negative jitter",
         "    retries: {attempts: 3, jitter: -0.1}\n",
         {"disk.yaml:5:36: retries.jitter: must be from 0 to 1, got -0.1"}},
        {"an unknown retry_on word",
         "    retries: 3\n    retry_on: [failure, crash]\n",
         {"disk.yaml:6:25: retry_on: unknown condition \"crash\" (expected failure, timeout, "
          "signal or an exit code from 1 to 255)"}},
        {"exit code 0",
         "    retries: 3\n    retry_on: [0]\n",
         {"disk.yaml:6:16: retry_on: exit code 0 is not from 1 to 255"}},
        {"exit code 256",
         "    retries: 3\n    retry_on: [256]\n",
         {"disk.yaml:6:16: retry_on: exit code 256 is not from 1 to 255"}},
        {"a negative exit code",
         "    retries: 3\n    retry_on: [-1]\n",
         {"disk.yaml:6:16: retry_on: exit code -1 is not from 1 to 255"}},
        {"a word listed twice",
         "    retries: 3\n    retry_on: [timeout, timeout]\n",
         {"disk.yaml:6:25: retry_on: \"timeout\" is listed twice"}},
        {"an exit code listed twice",
         "    retries: 3\n    retry_on: [75, 1, 75]\n",
         {"disk.yaml:6:23: retry_on: \"75\" is listed twice"}},
        {"an empty retry_on",
         "    retries: 3\n    retry_on: []\n",
         {"disk.yaml:6:15: retry_on: expected a list of conditions: failure, timeout, signal or "
          "exit codes from 1 to 255"}},
        {"a mapping for retry_on",
         "    retries: 3\n    retry_on: {failure: true}\n",
         {"disk.yaml:6:15: retry_on: expected a list of conditions: failure, timeout, signal or "
          "exit codes from 1 to 255"}},
        {"a list inside retry_on",
         "    retries: 3\n    retry_on: [[failure]]\n",
         {"disk.yaml:6:16: retry_on: expected a string, got a list"}},
        {"a duplicate retries key",
         "    retries: 3\n    retries: 4\n",
         {"disk.yaml:6:5: duplicate key \"retries\" (first at line 5)"}},
    };

    for (const auto& c : cases) {
        CAPTURE(c.what, c.step_keys);

        const auto result =
            load_runbook_text(with_step_keys(c.step_keys), "disk.yaml", builtin_step_parsers());

        CHECK(result.runbooks.empty());
        CHECK(strings(result.errors) == c.errors);
    }
}

TEST_CASE("retries and retry_on are read for shell steps too", "[retry]") {
    const std::string text =
        "name: disk\nsteps:\n  - name: df\n    shell: df -h\n    retries: 4\n"
        "    retry_on: [signal]\n";

    const auto result = load_runbook_text(text, "disk.yaml", builtin_step_parsers());

    REQUIRE(result.runbooks.size() == 1);
    const auto& retry = result.runbooks[0]->steps.at(0).retry;
    CHECK(retry.attempts == 4);
    CHECK(retry.on_signal);
    CHECK_FALSE(retry.on_any_exit_code);
}
