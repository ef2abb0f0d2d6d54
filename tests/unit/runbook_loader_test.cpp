#include <csignal>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include <catch2/catch.hpp>

#include <runbookd/argv_step.hpp>
#include <runbookd/python_step.hpp>
#include <runbookd/step_parser.hpp>

#include "support/support.hpp"

using runbookd::ArgvStepConfig;
using runbookd::builtin_step_parsers;
using runbookd::Duration;
using runbookd::load_runbook_dir;
using runbookd::load_runbook_text;
using runbookd::MatchType;
using runbookd::ShellStepConfig;
using runbookd::test::TempDir;
using runbookd::test::write_file;

namespace {

const char* const kValidRunbook = R"yaml(name: restart-api
description: Restart the API service when it stops answering
matchers:
  - alertname="ApiDown"
  - '{env=~"prod|staging", team!="db"}'
on: [firing, resolved]
timeout: 10m
steps:
  - name: status
    description: Show the unit's state
    argv: [systemctl, status, "{{ alert.labels.service | default \"api\" }}"]
    timeout: 30s
  - name: restart
    argv: [systemctl, restart, api]
    env:
      LC_ALL: C
      TARGET: "{{ alert.labels.instance }}"
    cwd: /var/tmp
)yaml";

// A runbook named `name` with one step, as a file's text.
std::string minimal_runbook(const std::string& name) {
    return "name: " + name + "\nsteps:\n  - name: df\n    argv: [df, -h]\n";
}

// The diagnostics of loading `text` as disk.yaml, each as "file:line:column: message".
std::vector<std::string> load_errors(const std::string& text) {
    const auto result = load_runbook_text(text, "disk.yaml", builtin_step_parsers());
    CHECK(result.runbooks.empty());
    std::vector<std::string> errors;
    for (const auto& e : result.errors) {
        errors.push_back(e.to_string());
    }
    return errors;
}

std::vector<std::string> sources(const std::vector<runbookd::Template>& templates) {
    std::vector<std::string> out;
    for (const auto& t : templates) {
        out.push_back(t.source());
    }
    return out;
}

}  // namespace

TEST_CASE("a valid runbook loads with its runbook fields", "[runbook]") {
    const auto result = load_runbook_text(kValidRunbook, "restart.yaml", builtin_step_parsers());

    REQUIRE(result.errors.empty());
    REQUIRE(result.runbooks.size() == 1);
    const auto& runbook = *result.runbooks[0];
    CHECK(runbook.name == "restart-api");
    CHECK(runbook.description == "Restart the API service when it stops answering");
    CHECK(runbook.source_file == "restart.yaml");
    CHECK(runbook.source_text == kValidRunbook);
    CHECK(runbook.on_firing);
    CHECK(runbook.on_resolved);
    CHECK(runbook.timeout == Duration{600'000});
    REQUIRE(runbook.matchers.size() == 3);
    CHECK(runbook.matchers[0].to_string() == R"(alertname="ApiDown")");
    CHECK(runbook.matchers[1].to_string() == R"(env=~"prod|staging")");
    CHECK(runbook.matchers[2].to_string() == R"(team!="db")");
    CHECK(runbook.steps.size() == 2);
}

TEST_CASE("a valid runbook loads with every field of its steps", "[runbook]") {
    const auto result = load_runbook_text(kValidRunbook, "restart.yaml", builtin_step_parsers());

    REQUIRE(result.runbooks.size() == 1);
    const auto& steps = result.runbooks[0]->steps;
    REQUIRE(steps.size() == 2);
    CHECK(steps[0].name == "status");
    CHECK(steps[0].kind == "argv");
    CHECK(steps[0].description == "Show the unit's state");
    CHECK(steps[0].location.to_string() == "restart.yaml:9:5");
    CHECK(steps[0].timeout == Duration{30'000});
    const auto status = std::dynamic_pointer_cast<const ArgvStepConfig>(steps[0].config);
    REQUIRE(status != nullptr);
    CHECK(sources(status->argv) ==
          std::vector<std::string>{"systemctl", "status",
                                   "{{ alert.labels.service | default \"api\" }}"});
    CHECK(status->env.empty());
    CHECK_FALSE(status->cwd.has_value());
    CHECK(steps[1].name == "restart");
    CHECK(steps[1].description.empty());
    CHECK(steps[1].location.to_string() == "restart.yaml:13:5");
    CHECK_FALSE(steps[1].timeout.has_value());
    const auto restart = std::dynamic_pointer_cast<const ArgvStepConfig>(steps[1].config);
    REQUIRE(restart != nullptr);
    CHECK(sources(restart->argv) == std::vector<std::string>{"systemctl", "restart", "api"});
    REQUIRE(restart->env.size() == 2);
    CHECK(restart->env[0].first == "LC_ALL");
    CHECK(restart->env[0].second.source() == "C");
    CHECK(restart->env[1].first == "TARGET");
    CHECK(restart->env[1].second.source() == "{{ alert.labels.instance }}");
    REQUIRE(restart->cwd.has_value());
    CHECK(restart->cwd->source() == "/var/tmp");
}

TEST_CASE("a runbook without optional keys gets the defaults", "[runbook]") {
    const auto result =
        load_runbook_text(minimal_runbook("disk"), "disk.yaml", builtin_step_parsers());

    REQUIRE(result.errors.empty());
    REQUIRE(result.runbooks.size() == 1);
    const auto& runbook = *result.runbooks[0];
    CHECK(runbook.description.empty());
    CHECK(runbook.matchers.empty());
    CHECK(runbook.on_firing);
    CHECK_FALSE(runbook.on_resolved);
    CHECK_FALSE(runbook.timeout.has_value());
    CHECK_FALSE(runbook.matches_labels({{"alertname", "Anything"}}));
}

TEST_CASE("on: accepts one status or a list of statuses", "[runbook]") {
    SECTION("resolved only") {
        const auto result = load_runbook_text(minimal_runbook("disk") + "on: resolved\n",
                                              "disk.yaml", builtin_step_parsers());

        REQUIRE(result.runbooks.size() == 1);
        CHECK_FALSE(result.runbooks[0]->on_firing);
        CHECK(result.runbooks[0]->on_resolved);
    }
    SECTION("a list with firing") {
        const auto result = load_runbook_text(minimal_runbook("disk") + "on: [firing]\n",
                                              "disk.yaml", builtin_step_parsers());

        REQUIRE(result.runbooks.size() == 1);
        CHECK(result.runbooks[0]->on_firing);
        CHECK_FALSE(result.runbooks[0]->on_resolved);
    }
}

TEST_CASE("content_hash is the SHA-256 of the file text", "[runbook]") {
    // printf 'name: disk\nsteps:\n  - name: df\n    argv: [df, -h]\n' | sha256sum
    const std::string text = minimal_runbook("disk");

    const auto result = load_runbook_text(text, "disk.yaml", builtin_step_parsers());

    REQUIRE(result.runbooks.size() == 1);
    CHECK(result.runbooks[0]->content_hash ==
          "ac4376f3fe6de0d60987b2253cbb6951d97d6e015efbb90b488920c64aafa98f");
}

TEST_CASE("runbook load errors give file, line, column and what is wrong", "[runbook]") {
    struct Case {
        const char* what;
        std::string text;
        std::vector<std::string> errors;
    };
    const std::vector<Case> cases = {
        {"an unknown runbook key",
         "name: disk\nstepz: []\nsteps:\n  - name: df\n    argv: [df]\n",
         {"disk.yaml:2:1: unknown key \"stepz\" in runbook (expected one of: name, description, "
          "matchers, on, timeout, concurrency, lock, dedup, cooldown, max_runs, "
          "once_until_resolved, on_resolve, on_interrupt, params, steps)"}},
        {"an unknown step key",
         "name: disk\nsteps:\n  - name: df\n    argv: [df]\n    retry: 3\n",
         {"disk.yaml:5:5: unknown key \"retry\" in step (expected one of: name, description, "
          "timeout, retries, retry_on, idempotent, approval, argv, env, cwd, stop_signal, grace, "
          "limits, "
          "user, group)"}},
        {"a budget that is not a mapping",
         "name: disk\nmax_runs: 3\nsteps:\n  - name: df\n    argv: [df]\n",
         {"disk.yaml:2:11: max_runs: expected a mapping such as {count: 3, per: 1h}"}},
        {"a budget without its window",
         "name: disk\nmax_runs: {count: 3}\nsteps:\n  - name: df\n    argv: [df]\n",
         {"disk.yaml:2:11: max_runs: needs both count and per, e.g. {count: 3, per: 1h}"}},
        {"a cooldown that is not a duration",
         "name: disk\ncooldown: later\nsteps:\n  - name: df\n    argv: [df]\n",
         {"disk.yaml:2:11: cooldown: \"later\" is not a positive duration (write e.g. 500ms, "
          "30s, 5m, 1h30m)"}},
        {"a relative working directory",
         "name: disk\nsteps:\n  - name: df\n    argv: [df]\n    cwd: tmp\n",
         {"disk.yaml:5:10: cwd: expected an absolute path (starting with /)"}},
        {"an empty working directory",
         "name: disk\nsteps:\n  - name: df\n    argv: [df]\n    cwd: \"\"\n",
         {"disk.yaml:5:10: cwd: expected an absolute path (starting with /)"}},
        {"a list where a string belongs",
         "name: [disk, usage]\nsteps:\n  - name: df\n    argv: [df]\n",
         {"disk.yaml:1:7: name: expected a string, got a list"}},
        {"a mapping where a string belongs",
         "name: disk\ndescription: {a: b}\nsteps:\n  - name: df\n    argv: [df]\n",
         {"disk.yaml:2:14: description: expected a string, got a mapping"}},
        {"a scalar where the argv list belongs",
         "name: disk\nsteps:\n  - name: df\n    argv: df\n",
         {"disk.yaml:4:11: argv: expected a non-empty list: the program, then its arguments"}},
        {"a mapping where the matcher list belongs",
         "name: disk\nmatchers: {job: node}\nsteps:\n  - name: df\n    argv: [df]\n",
         {"disk.yaml:2:11: matchers: expected a list of matcher strings, got a mapping"}},
        {"a step that is not a mapping",
         "name: disk\nsteps:\n  - df -h\n",
         {"disk.yaml:3:5: step: expected a mapping, got a scalar"}},
        {"a duplicate runbook key",
         "name: disk\nsteps:\n  - name: df\n    argv: [df]\nname: other\n",
         {"disk.yaml:5:1: duplicate key \"name\" (first at line 1)"}},
        {"a duplicate step key",
         "name: disk\nsteps:\n  - name: df\n    argv: [df]\n    argv: [du]\n",
         {"disk.yaml:5:5: duplicate key \"argv\" (first at line 4)"}},
        {"a duplicate step name",
         "name: disk\nsteps:\n  - name: df\n    argv: [df]\n  - name: df\n    argv: [df, -h]\n",
         {"disk.yaml:5:11: duplicate step name \"df\" (first at line 3)"}},
        {"bad matcher syntax",
         "name: disk\nmatchers:\n  - severity=\"critical\"\n  - 'job==\"node\"'\nsteps:\n"
         "  - name: df\n    argv: [df]\n",
         {"disk.yaml:4:5: matcher value contains an unescaped double quote: =\"node\""}},
        {"a bad regular expression",
         "name: disk\nmatchers:\n  - instance=~\"node-(1\"\nsteps:\n  - name: df\n"
         "    argv: [df]\n",
         {"disk.yaml:3:5: bad regular expression in instance=~\"node-(1\": missing ): "
          "^(?:node-(1)$"}},
        {"a bad runbook timeout",
         "name: disk\ntimeout: 5 minutes\nsteps:\n  - name: df\n    argv: [df]\n",
         {"disk.yaml:2:10: timeout: \"5 minutes\" is not a positive duration (write e.g. 500ms, "
          "30s, 5m, 1h30m)"}},
        {"a step timeout without a unit",
         "name: disk\nsteps:\n  - name: df\n    argv: [df]\n    timeout: 30\n",
         {"disk.yaml:5:14: timeout: \"30\" is not a positive duration (write e.g. 500ms, 30s, 5m, "
          "1h30m)"}},
        {"a zero step timeout",
         "name: disk\nsteps:\n  - name: df\n    argv: [df]\n    timeout: 0s\n",
         {"disk.yaml:5:14: timeout: \"0s\" is not a positive duration (write e.g. 500ms, 30s, 5m, "
          "1h30m)"}},
        {"a missing runbook name",
         "steps:\n  - name: df\n    argv: [df]\n",
         {"disk.yaml:1:1: runbook needs a name"}},
        {"a bad runbook name",
         "name: disk usage\nsteps:\n  - name: df\n    argv: [df]\n",
         {"disk.yaml:1:7: runbook name \"disk usage\" is not valid: use letters, digits, '-' and "
          "'_', starting with a letter or digit, at most 128 characters"}},
        {"missing steps",
         "name: disk\ndescription: nothing to do\n",
         {"disk.yaml:1:1: runbook needs steps"}},
        {"empty steps",
         "name: disk\nsteps: []\n",
         {"disk.yaml:2:8: steps: expected a non-empty list of steps"}},
        {"a missing step name",
         "name: disk\nsteps:\n  - argv: [df]\n",
         {"disk.yaml:3:5: step needs a name"}},
        {"a step with no kind",
         "name: disk\nsteps:\n  - name: df\n    description: what\n",
         {"disk.yaml:3:5: step needs one key that gives its kind: argv, shell, python"}},
        {"an empty argv",
         "name: disk\nsteps:\n  - name: df\n    argv: []\n",
         {"disk.yaml:4:11: argv: expected a non-empty list: the program, then its arguments"}},
        {"a placeholder in argv[0]",
         "name: disk\nsteps:\n  - name: df\n    argv: [\"{{ alert.labels.tool }}\", -h]\n",
         {"disk.yaml:4:12: argv: the program (first element) cannot contain placeholders: alert "
          "values must not choose what runs"}},
        {"an empty argv[0]",
         "name: disk\nsteps:\n  - name: df\n    argv: ['', -h]\n",
         {"disk.yaml:4:12: argv: the program (first element) is empty"}},
        {"a bad placeholder in an argument",
         "name: disk\nsteps:\n  - name: df\n    argv: [df, '{{ alert.nope }}']\n",
         {"disk.yaml:4:16: argv: unknown placeholder \"alert.nope\" (known: alert.labels.NAME, "
          "alert.annotations.NAME, alert.fingerprint, alert.status, alert.starts_at, "
          "alert.generator_url, run.id, run.runbook, steps.STEP.outputs.KEY, "
          "params.NAME)"}},
        {"a reserved RUNBOOK_ variable",
         "name: disk\nsteps:\n  - name: df\n    argv: [df]\n    env:\n      RUNBOOK_ID: x\n",
         {"disk.yaml:6:7: env: \"RUNBOOK_ID\" is reserved: runbookd sets the RUNBOOK_* variables "
          "itself"}},
        {"a bad variable name",
         "name: disk\nsteps:\n  - name: df\n    argv: [df]\n    env:\n      1X: x\n",
         {"disk.yaml:6:7: env: \"1X\" is not a valid variable name"}},
        {"a bad template in an env value",
         "name: disk\nsteps:\n  - name: df\n    argv: [df]\n    env:\n      X: '{{ run.id'\n",
         {"disk.yaml:6:10: env.X: placeholder opened at character 1 is not closed with }}"}},
        {"an unknown alert status",
         "name: disk\non: [firing, pending]\nsteps:\n  - name: df\n    argv: [df]\n",
         {"disk.yaml:2:14: on: unknown alert status \"pending\" (expected firing or resolved)"}},
        {"a root that is a list",
         "- name: disk\n",
         {"disk.yaml:1:1: a runbook file holds one mapping (name, matchers, steps, ...), got a "
          "list"}},
        {"an empty file", "", {"disk.yaml:1:1: the file is empty"}},
        {"a YAML syntax error",
         "name: disk\nsteps:\n  - name: df\n    argv: [df, -h\n",
         {"disk.yaml:5:1: YAML syntax error: end of sequence flow not found"}},
        {"two documents in one file",
         "name: one\nsteps:\n  - name: df\n    argv: [df]\n---\nname: two\n",
         {"disk.yaml:6:1: a runbook file holds one YAML document; put each runbook in its own "
          "file"}},
    };

    for (const auto& c : cases) {
        CAPTURE(c.what, c.text);

        const auto errors = load_errors(c.text);

        CHECK(errors == c.errors);
    }
}

TEST_CASE("each step without a name is reported once and not as a duplicate", "[runbook]") {
    const std::string text = "name: disk\nsteps:\n  - argv: [df]\n  - argv: [du]\n";

    const auto errors = load_errors(text);

    CHECK(errors == std::vector<std::string>{"disk.yaml:3:5: step needs a name",
                                             "disk.yaml:4:5: step needs a name"});
}

TEST_CASE("every error in a runbook file is reported in one load", "[runbook]") {
    const std::string text =
        "name: disk\n"                               // 1
        "timeout: soon\n"                            // 2
        "colour: red\n"                              // 3
        "steps:\n"                                   // 4
        "  - name: df\n"                             // 5
        "    argv: [\"{{ alert.labels.tool }}\"]\n"  // 6
        "  - name: du\n"                             // 7
        "    argv: [du]\n"                           // 8
        "    env: {RUNBOOK_RUN: x}\n"                // 9
        "  - name: free\n"                           // 10
        "    argv: [free]\n"                         // 11
        "    timeout: later\n";                      // 12

    const auto errors = load_errors(text);

    CHECK(errors ==
          std::vector<std::string>{
              "disk.yaml:3:1: unknown key \"colour\" in runbook (expected one of: name, "
              "description, matchers, on, timeout, concurrency, lock, dedup, cooldown, max_runs, "
              "once_until_resolved, on_resolve, on_interrupt, params, steps)",
              "disk.yaml:2:10: timeout: \"soon\" is not a positive duration (write e.g. 500ms, "
              "30s, 5m, 1h30m)",
              "disk.yaml:6:12: argv: the program (first element) cannot contain placeholders: "
              "alert values must not choose what runs",
              "disk.yaml:9:11: env: \"RUNBOOK_RUN\" is reserved: runbookd sets the RUNBOOK_* "
              "variables itself",
              "disk.yaml:12:14: timeout: \"later\" is not a positive duration (write e.g. 500ms, "
              "30s, 5m, 1h30m)",
          });
}

TEST_CASE("a runbook directory loads every yaml file and skips other and hidden files",
          "[runbook]") {
    TempDir dir;
    write_file(dir.path() / "b-disk.yaml", minimal_runbook("disk"));
    write_file(dir.path() / "a-load.yml", minimal_runbook("load"));
    write_file(dir.path() / "notes.txt", "not: [a runbook");
    write_file(dir.path() / "README.md", "# runbooks\n");
    write_file(dir.path() / "disk.yaml.bak", minimal_runbook("disk"));
    write_file(dir.path() / ".hidden.yaml", "not: [a runbook");
    write_file(dir.path() / ".disk.yaml.swp", "not: [a runbook");

    const auto result = load_runbook_dir(dir.path(), builtin_step_parsers());

    CHECK(result.errors.empty());
    REQUIRE(result.runbooks.size() == 2);
    CHECK(result.runbooks[0]->name == "load");
    CHECK(result.runbooks[0]->source_file == dir.file("a-load.yml"));
    CHECK(result.runbooks[1]->name == "disk");
    CHECK(result.runbooks[1]->source_file == dir.file("b-disk.yaml"));
}

TEST_CASE("two files with the same runbook name are reported and the first one is kept",
          "[runbook]") {
    TempDir dir;
    write_file(dir.path() / "a.yaml", minimal_runbook("disk"));
    write_file(dir.path() / "b.yaml", minimal_runbook("disk"));

    const auto result = load_runbook_dir(dir.path(), builtin_step_parsers());

    REQUIRE(result.runbooks.size() == 1);
    CHECK(result.runbooks[0]->source_file == dir.file("a.yaml"));
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0].to_string() == dir.file("b.yaml") + ":1:7: runbook name \"disk\" is " +
                                              "already used by " + dir.file("a.yaml"));
}

TEST_CASE("errors in one runbook file name that file and leave the others loaded", "[runbook]") {
    TempDir dir;
    write_file(dir.path() / "good.yaml", minimal_runbook("disk"));
    write_file(dir.path() / "bad.yaml", "name: load\nsteps: []\n");

    const auto result = load_runbook_dir(dir.path(), builtin_step_parsers());

    REQUIRE(result.runbooks.size() == 1);
    CHECK(result.runbooks[0]->name == "disk");
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0].to_string() ==
          dir.file("bad.yaml") + ":2:8: steps: expected a non-empty list of steps");
}

TEST_CASE("a runbook directory that does not exist is an error", "[runbook]") {
    TempDir dir;

    const auto result = load_runbook_dir(dir.path() / "missing", builtin_step_parsers());

    CHECK(result.runbooks.empty());
    REQUIRE(result.errors.size() == 1);
    CHECK(result.errors[0].to_string() ==
          (dir.path() / "missing").string() + ": cannot read runbooks: no such directory");
}

TEST_CASE("an empty runbook directory loads no runbooks and no errors", "[runbook]") {
    TempDir dir;

    const auto result = load_runbook_dir(dir.path(), builtin_step_parsers());

    CHECK(result.runbooks.empty());
    CHECK(result.errors.empty());
}

TEST_CASE("a runbook without matchers loads with a warning that no alert starts it", "[loader]") {
    for (const char* matchers : {"", "matchers:\n", "matchers: []\n"}) {
        CAPTURE(matchers);
        const std::string text = std::string("name: manual-only\n") + matchers +
                                 "steps:\n  - name: one\n    argv: [/bin/true]\n";

        auto result =
            runbookd::load_runbook_text(text, "manual.yaml", runbookd::builtin_step_parsers());

        CHECK(result.errors.empty());
        REQUIRE(result.runbooks.size() == 1);
        REQUIRE(result.warnings.size() == 1);
        CHECK(result.warnings[0].to_string() ==
              "manual.yaml:1:1: runbook has no matchers, so no alert will ever start it (write "
              "e.g. alertname=\"...\")");
    }
}

TEST_CASE("concurrency and lock are read from the runbook", "[runbook]") {
    const std::string text = minimal_runbook("restart") +
                             "concurrency: 2\n"
                             "lock: \"restart-{{ alert.labels.instance }}\"\n";

    const auto result = load_runbook_text(text, "restart.yaml", builtin_step_parsers());

    REQUIRE(result.errors.empty());
    REQUIRE(result.runbooks.size() == 1);
    const auto& runbook = *result.runbooks[0];
    CHECK(runbook.concurrency == 2);
    REQUIRE(runbook.lock.has_value());
    CHECK(runbook.lock->source() == "restart-{{ alert.labels.instance }}");
    CHECK(runbook.lock->has_placeholders());
    CHECK(runbook.lock_location.to_string() == "restart.yaml:6:7");
}

TEST_CASE("a runbook without concurrency and lock has neither", "[runbook]") {
    const auto result =
        load_runbook_text(minimal_runbook("disk"), "disk.yaml", builtin_step_parsers());

    REQUIRE(result.runbooks.size() == 1);
    CHECK_FALSE(result.runbooks[0]->concurrency.has_value());
    CHECK_FALSE(result.runbooks[0]->lock.has_value());
}

TEST_CASE("argv steps read every process key", "[runbook]") {
    const std::string text = minimal_runbook("disk") +
                             "    stop_signal: SIGINT\n"
                             "    grace: 10s\n"
                             "    limits: {cpu: 1m, memory: 512MiB, open_files: 1024, "
                             "processes: 256}\n"
                             "    user: deploy\n"
                             "    group: 1000\n";

    const auto result = load_runbook_text(text, "disk.yaml", builtin_step_parsers());

    REQUIRE(result.errors.empty());
    REQUIRE(result.runbooks.size() == 1);
    const auto config =
        std::dynamic_pointer_cast<const ArgvStepConfig>(result.runbooks[0]->steps.at(0).config);
    REQUIRE(config != nullptr);
    CHECK(config->stop_signal == SIGINT);
    CHECK(config->grace == Duration{10'000});
    CHECK(config->limits.cpu_seconds == 60U);
    CHECK(config->limits.address_space_bytes == 512U * 1024 * 1024);
    CHECK(config->limits.open_files == 1024U);
    CHECK(config->limits.processes == 256U);
    CHECK(config->user == "deploy");
    CHECK(config->group == "1000");
}

TEST_CASE("process keys that are absent keep the daemon's defaults", "[runbook]") {
    const auto result =
        load_runbook_text(minimal_runbook("disk"), "disk.yaml", builtin_step_parsers());

    REQUIRE(result.runbooks.size() == 1);
    const auto config =
        std::dynamic_pointer_cast<const ArgvStepConfig>(result.runbooks[0]->steps.at(0).config);
    REQUIRE(config != nullptr);
    CHECK_FALSE(config->stop_signal.has_value());
    CHECK_FALSE(config->grace.has_value());
    CHECK_FALSE(config->limits.cpu_seconds.has_value());
    CHECK_FALSE(config->limits.address_space_bytes.has_value());
    CHECK_FALSE(config->limits.open_files.has_value());
    CHECK_FALSE(config->limits.processes.has_value());
    CHECK(config->user.empty());
    CHECK(config->group.empty());
}

TEST_CASE("stop_signal accepts a name with or without SIG, in any case, or a number", "[runbook]") {
    const std::vector<std::pair<std::string, int>> cases = {
        {"SIGTERM", SIGTERM}, {"TERM", SIGTERM},    {"sigint", SIGINT}, {"Hup", SIGHUP},
        {"15", SIGTERM},      {"SIGUSR1", SIGUSR1}, {"QUIT", SIGQUIT},
    };
    for (const auto& [text, number] : cases) {
        CAPTURE(text);

        const auto result =
            load_runbook_text(minimal_runbook("disk") + "    stop_signal: " + text + "\n",
                              "disk.yaml", builtin_step_parsers());

        REQUIRE(result.runbooks.size() == 1);
        const auto config =
            std::dynamic_pointer_cast<const ArgvStepConfig>(result.runbooks[0]->steps.at(0).config);
        CHECK(config->stop_signal == number);
    }
}

TEST_CASE("limits.memory takes binary and decimal units", "[runbook]") {
    const std::vector<std::pair<std::string, std::uint64_t>> cases = {
        {"1MiB", 1ULL << 20},       {"2GiB", 2ULL << 30},          {"1TiB", 1ULL << 40},
        {"4096KiB", 4096ULL << 10}, {"500MB", 500'000'000ULL},     {"2GB", 2'000'000'000ULL},
        {"1048576B", 1ULL << 20},   {"1TB", 1'000'000'000'000ULL},
    };
    for (const auto& [text, bytes] : cases) {
        CAPTURE(text);

        const auto result =
            load_runbook_text(minimal_runbook("disk") + "    limits: {memory: " + text + "}\n",
                              "disk.yaml", builtin_step_parsers());

        REQUIRE(result.runbooks.size() == 1);
        const auto config =
            std::dynamic_pointer_cast<const ArgvStepConfig>(result.runbooks[0]->steps.at(0).config);
        CHECK(config->limits.address_space_bytes == bytes);
    }
}

TEST_CASE("a shell step reads its script, args and process keys", "[runbook]") {
    const std::string text =
        "name: restart\n"                                               // 1
        "steps:\n"                                                      // 2
        "  - name: restart\n"                                           // 3
        "    shell: |\n"                                                // 4
        "      systemctl restart \"$1\"\n"                              // 5
        "      kubectl get pod -o go-template='{{ .status.phase }}'\n"  // 6
        "    args: [\"{{ alert.labels.service }}\", --now]\n"           // 7
        "    env: {LC_ALL: C}\n"                                        // 8
        "    stop_signal: INT\n"                                        // 9
        "    user: \"0\"\n";                                            // 10

    const auto result = load_runbook_text(text, "restart.yaml", builtin_step_parsers());

    REQUIRE(result.errors.empty());
    REQUIRE(result.runbooks.size() == 1);
    const auto& step = result.runbooks[0]->steps.at(0);
    CHECK(step.kind == "shell");
    const auto config = std::dynamic_pointer_cast<const ShellStepConfig>(step.config);
    REQUIRE(config != nullptr);
    CHECK(config->script ==
          "systemctl restart \"$1\"\nkubectl get pod -o go-template='{{ .status.phase }}'\n");
    CHECK(sources(config->args) == std::vector<std::string>{"{{ alert.labels.service }}", "--now"});
    REQUIRE(config->env.size() == 1);
    CHECK(config->env[0].first == "LC_ALL");
    CHECK(config->stop_signal == SIGINT);
    CHECK(config->user == "0");
    // Go templates in the script are not placeholders: only the no-matchers warning.
    CHECK(result.warnings.size() == 1);
}

TEST_CASE("a placeholder in a shell script loads with a warning at its position", "[runbook]") {
    SECTION("in a literal block, with the variable that carries the label") {
        const std::string text =
            "name: restart\n"
            "steps:\n"
            "  - name: restart\n"
            "    shell: |\n"
            "      echo checking\n"
            "      systemctl restart {{ alert.labels.instance }}\n";

        const auto result = load_runbook_text(text, "restart.yaml", builtin_step_parsers());

        REQUIRE(result.runbooks.size() == 1);
        REQUIRE(result.warnings.size() == 2);
        CHECK(result.warnings[1].to_string() ==
              "restart.yaml:6:25: shell: placeholders are not substituted in shell scripts, so "
              "\"{{ alert.labels.instance }}\" stays as written: use "
              "\"$RUNBOOK_LABEL_INSTANCE\" or args:");
    }
    SECTION("in a one-line script, without spaces, for an annotation") {
        const std::string text =
            "name: restart\nsteps:\n  - name: restart\n"
            "    shell: 'echo {{alert.annotations.run-book}}'\n";

        const auto result = load_runbook_text(text, "restart.yaml", builtin_step_parsers());

        REQUIRE(result.warnings.size() == 2);
        CHECK(result.warnings[1].to_string() ==
              "restart.yaml:4:18: shell: placeholders are not substituted in shell scripts, so "
              "\"{{alert.annotations.run-book}}\" stays as written: use "
              "\"$RUNBOOK_ANNOTATION_RUN_BOOK\" or args:");
    }
    SECTION("a value without a variable, once per placeholder") {
        const std::string text =
            "name: restart\nsteps:\n  - name: restart\n"
            "    shell: echo {{ alert.status }} {{ run.id }}\n";

        const auto result = load_runbook_text(text, "restart.yaml", builtin_step_parsers());

        REQUIRE(result.warnings.size() == 3);
        CHECK(result.warnings[1].to_string() ==
              "restart.yaml:4:17: shell: placeholders are not substituted in shell scripts, so "
              "\"{{ alert.status }}\" stays as written: pass it with args: and use \"$1\"");
        CHECK(result.warnings[2].to_string() ==
              "restart.yaml:4:36: shell: placeholders are not substituted in shell scripts, so "
              "\"{{ run.id }}\" stays as written: use \"$RUNBOOK_RUN_ID\" or args:");
    }
}

TEST_CASE("process, shell and runbook key errors give file, line, column and what is wrong",
          "[runbook]") {
    struct Case {
        const char* what;
        std::string text;
        std::vector<std::string> errors;
    };
    const std::string argv_step = "name: disk\nsteps:\n  - name: df\n    argv: [df]\n";
    const std::string shell_step = "name: disk\nsteps:\n  - name: df\n";
    const std::vector<Case> cases = {
        {"concurrency 0",
         minimal_runbook("disk") + "concurrency: 0\n",
         {"disk.yaml:5:14: concurrency: must be from 1 to 10000, got 0"}},
        {"concurrency above the maximum",
         minimal_runbook("disk") + "concurrency: 10001\n",
         {"disk.yaml:5:14: concurrency: must be from 1 to 10000, got 10001"}},
        {"concurrency that is not a number",
         minimal_runbook("disk") + "concurrency: many\n",
         {"disk.yaml:5:14: concurrency: expected an integer, got \"many\""}},
        {"an empty lock",
         minimal_runbook("disk") + "lock: ''\n",
         {"disk.yaml:5:7: lock: expected a non-empty key (e.g. lock: \"restart-{{ "
          "alert.labels.instance }}\")"}},
        {"a lock with a bad placeholder",
         minimal_runbook("disk") + "lock: 'x-{{ alert.nope }}'\n",
         {"disk.yaml:5:7: lock: unknown placeholder \"alert.nope\" (known: alert.labels.NAME, "
          "alert.annotations.NAME, alert.fingerprint, alert.status, alert.starts_at, "
          "alert.generator_url, run.id, run.runbook, steps.STEP.outputs.KEY, "
          "params.NAME)"}},
        {"a list for lock",
         minimal_runbook("disk") + "lock: [a, b]\n",
         {"disk.yaml:5:7: lock: expected a string, got a list"}},
        {"SIGKILL as stop signal",
         argv_step + "    stop_signal: SIGKILL\n",
         {"disk.yaml:5:18: stop_signal: SIGKILL cannot be caught, so the program cannot stop "
          "cleanly (SIGKILL follows the stop signal after grace)"}},
        {"signal 9 as stop signal",
         argv_step + "    stop_signal: 9\n",
         {"disk.yaml:5:18: stop_signal: SIGKILL cannot be caught, so the program cannot stop "
          "cleanly (SIGKILL follows the stop signal after grace)"}},
        {"STOP as stop signal",
         argv_step + "    stop_signal: STOP\n",
         {"disk.yaml:5:18: stop_signal: SIGSTOP cannot be caught, so the program cannot stop "
          "cleanly (SIGKILL follows the stop signal after grace)"}},
        {"an unknown signal name",
         argv_step + "    stop_signal: SIGNICE\n",
         {"disk.yaml:5:18: stop_signal: unknown signal \"SIGNICE\" (write a name such as "
          "SIGTERM, TERM or SIGINT, or its number)"}},
        {"signal 0",
         argv_step + "    stop_signal: 0\n",
         {"disk.yaml:5:18: stop_signal: unknown signal \"0\" (write a name such as SIGTERM, "
          "TERM or SIGINT, or its number)"}},
        {"a zero grace",
         argv_step + "    grace: 0s\n",
         {"disk.yaml:5:12: grace: \"0s\" is not a positive duration (write e.g. 500ms, 30s, 5m, "
          "1h30m)"}},
        {"limits that are not a mapping",
         argv_step + "    limits: 3\n",
         {"disk.yaml:5:13: limits: expected a mapping, got a scalar"}},
        {"an unknown limit",
         argv_step + "    limits: {swap: 1GiB}\n",
         {"disk.yaml:5:14: unknown key \"swap\" in limits (expected one of: cpu, memory, "
          "open_files, processes)"}},
        {"a cpu limit in milliseconds",
         argv_step + "    limits: {cpu: 1500ms}\n",
         {"disk.yaml:5:19: limits.cpu: \"1500ms\" is not a whole number of seconds"}},
        {"a cpu limit below one second",
         argv_step + "    limits: {cpu: 500ms}\n",
         {"disk.yaml:5:19: limits.cpu: \"500ms\" is not a whole number of seconds"}},
        {"a memory limit without a unit",
         argv_step + "    limits: {memory: 512}\n",
         {"disk.yaml:5:22: limits.memory: \"512\" is not a size (write e.g. 512MiB or 2GiB; "
          "units B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"}},
        {"a memory limit with an unknown unit",
         argv_step + "    limits: {memory: 2G}\n",
         {"disk.yaml:5:22: limits.memory: \"2G\" is not a size (write e.g. 512MiB or 2GiB; "
          "units B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"}},
        {"a memory limit that overflows",
         argv_step + "    limits: {memory: 99999999999TiB}\n",
         {"disk.yaml:5:22: limits.memory: \"99999999999TiB\" is not a size (write e.g. 512MiB "
          "or 2GiB; units B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"}},
        {"a memory limit below 1MiB",
         argv_step + "    limits: {memory: 64KiB}\n",
         {"disk.yaml:5:22: limits.memory: must be at least 1MiB, got 64KiB"}},
        {"zero open files",
         argv_step + "    limits: {open_files: 0}\n",
         {"disk.yaml:5:26: limits.open_files: must be from 1 to 1048576, got 0"}},
        {"processes that are not a number",
         argv_step + "    limits: {processes: lots}\n",
         {"disk.yaml:5:25: limits.processes: expected an integer, got \"lots\""}},
        {"a user with a placeholder",
         argv_step + "    user: '{{ alert.labels.owner }}'\n",
         {"disk.yaml:5:11: user: cannot contain placeholders: alert values must not choose who "
          "runs the step"}},
        {"a user name with a space",
         argv_step + "    user: 'web admin'\n",
         {"disk.yaml:5:11: user: \"web admin\" is not a user name or number"}},
        {"an empty group",
         argv_step + "    group: ''\n",
         {"disk.yaml:5:12: group: \"\" is not a group name or number"}},
        {"a group id of -1 as unsigned",
         argv_step + "    group: 4294967295\n",
         {"disk.yaml:5:12: group: \"4294967295\" is not a group name or number"}},
        {"a list for user",
         argv_step + "    user: [root]\n",
         {"disk.yaml:5:11: user: expected a string, got a list"}},
        {"an empty shell script",
         shell_step + "    shell: ''\n",
         {"disk.yaml:4:12: shell: expected a non-empty script"}},
        {"a blank shell script",
         shell_step + "    shell: \"  \\n\"\n",
         {"disk.yaml:4:12: shell: expected a non-empty script"}},
        {"a list for the shell script",
         shell_step + "    shell: [echo, hi]\n",
         {"disk.yaml:4:12: shell: expected a string, got a list"}},
        {"a scalar for args",
         shell_step + "    shell: echo \"$1\"\n    args: hi\n",
         {"disk.yaml:5:11: args: expected a list of arguments, the script's \"$1\", \"$2\", ..."}},
        {"a bad placeholder in args",
         shell_step + "    shell: echo \"$1\"\n    args: ['{{ alert.nope }}']\n",
         {"disk.yaml:5:12: args: unknown placeholder \"alert.nope\" (known: alert.labels.NAME, "
          "alert.annotations.NAME, alert.fingerprint, alert.status, alert.starts_at, "
          "alert.generator_url, run.id, run.runbook, steps.STEP.outputs.KEY, "
          "params.NAME)"}},
        {"an unknown shell step key",
         shell_step + "    shell: date\n    argz: [x]\n",
         {"disk.yaml:5:5: unknown key \"argz\" in step (expected one of: name, description, "
          "timeout, retries, retry_on, idempotent, approval, shell, args, env, cwd, stop_signal, "
          "grace, "
          "limits, user, "
          "group)"}},
        {"args on an argv step",
         argv_step + "    args: [x]\n",
         {"disk.yaml:5:5: unknown key \"args\" in step (expected one of: name, description, "
          "timeout, retries, retry_on, idempotent, approval, argv, env, cwd, stop_signal, grace, "
          "limits, "
          "user, "
          "group)"}},
        {"a step with both argv and shell",
         argv_step + "    shell: date\n",
         {"disk.yaml:3:5: step has both argv: and shell: (a step has exactly one kind)"}},
        {"a reserved variable in a shell step",
         shell_step + "    shell: date\n    env: {RUNBOOK_X: y}\n",
         {"disk.yaml:5:11: env: \"RUNBOOK_X\" is reserved: runbookd sets the RUNBOOK_* variables "
          "itself"}},
    };

    for (const auto& c : cases) {
        CAPTURE(c.what, c.text);

        const auto errors = load_errors(c.text);

        CHECK(errors == c.errors);
    }
}

TEST_CASE("a step env value can name a configured secret, and only a configured one",
          "[runbook][secrets]") {
    const std::string text =
        "name: deploy\n"                      // 1
        "steps:\n"                            // 2
        "  - name: push\n"                    // 3
        "    argv: [push]\n"                  // 4
        "    env:\n"                          // 5
        "      TOKEN: {secret: api_token}\n"  // 6
        "      OTHER: {secret: nope}\n"       // 7
        "      BAD: {secrets: api_token}\n"   // 8
        "      PLAIN: value\n";               // 9
    const std::set<std::string> names = {"api_token"};
    const std::string good = text.substr(0, text.find("      OTHER")) + "      PLAIN: value\n";

    auto checked = load_runbook_text(text, "deploy.yaml", builtin_step_parsers(), &names);
    auto loaded = load_runbook_text(good, "deploy.yaml", builtin_step_parsers(), &names);
    auto unchecked = load_runbook_text(text.substr(0, text.find("      BAD")), "deploy.yaml",
                                       builtin_step_parsers());

    REQUIRE(checked.errors.size() == 2);
    CHECK(checked.errors[0].to_string() ==
          "deploy.yaml:7:23: env.OTHER: unknown secret \"nope\" (configured secrets: api_token)");
    CHECK(checked.errors[1].to_string() ==
          "deploy.yaml:8:13: unknown key \"secrets\" in env.BAD (expected one of: secret)");
    REQUIRE(loaded.errors.empty());
    const auto& step = dynamic_cast<const ArgvStepConfig&>(*loaded.runbooks[0]->steps[0].config);
    CHECK(step.secret_env ==
          std::vector<std::pair<std::string, std::string>>{{"TOKEN", "api_token"}});
    REQUIRE(step.env.size() == 1);
    CHECK(step.env[0].first == "PLAIN");
    CHECK(unchecked.errors.empty());  // runbookctl lint knows no configured names
}

TEST_CASE("a step can use the outputs of the steps before it", "[runbook]") {
    const std::string text = R"yaml(name: disk
steps:
  - name: decide
    argv: [/bin/true]
  - name: act
    argv: [echo, "{{ steps.decide.outputs.restart }}"]
)yaml";

    const auto result = load_runbook_text(text, "disk.yaml", builtin_step_parsers());

    CHECK(result.errors.empty());
    REQUIRE(result.runbooks.size() == 1);
}

TEST_CASE("a steps placeholder naming no earlier step is an error at its position", "[runbook]") {
    const std::string head = "name: disk\nsteps:\n  - name: first\n    argv: [/bin/true]\n";
    SECTION("a later step") {
        const std::string text =
            head +
            "  - name: act\n    argv: [echo, 'x {{ steps.after.outputs.a }}']\n"
            "  - name: after\n    argv: [/bin/true]\n";
        CHECK(load_errors(text) ==
              std::vector<std::string>{
                  "disk.yaml:6:24: argv: steps.after does not name an earlier step of this "
                  "runbook (a step can use the outputs of the steps before it)"});
    }
    SECTION("the step itself, in env") {
        const std::string text = head +
                                 "  - name: act\n    argv: [env]\n    env:\n"
                                 "      X: '{{ steps.act.outputs.a }}'\n";
        CHECK(load_errors(text) ==
              std::vector<std::string>{
                  "disk.yaml:8:14: env.X: steps.act does not name an earlier step of this "
                  "runbook (a step can use the outputs of the steps before it)"});
    }
    SECTION("a runbook key") {
        const std::string text = head + "lock: 'k-{{ steps.first.outputs.a }}'\n";
        CHECK(load_errors(text) ==
              std::vector<std::string>{"disk.yaml:5:13: lock: steps.first cannot be used here: "
                                       "step outputs exist only for the steps of a run"});
    }
}

TEST_CASE("a python step reads a module and function, or inline code with its file and line",
          "[runbook][python]") {
    const std::string text = R"yaml(name: disk
steps:
  - name: decide
    python: {module: ops.disk_tools, function: decide}
    timeout: 20s
    retries: 2
    idempotent: true
    grace: 2s
  - name: inline
    python:
      code: |
        ctx.set_output("n", 1)
)yaml";

    const auto result = load_runbook_text(text, "disk.yaml", builtin_step_parsers());

    REQUIRE(result.errors.empty());
    const auto& steps = result.runbooks.at(0)->steps;
    REQUIRE(steps.size() == 2);
    CHECK(steps[0].kind == "python");
    CHECK(steps[0].timeout == Duration(20'000));
    CHECK(steps[0].retry.attempts == 2);
    CHECK(steps[0].idempotent);
    const auto* decide = dynamic_cast<const runbookd::PythonStepConfig*>(steps[0].config.get());
    REQUIRE(decide != nullptr);
    CHECK(decide->module == "ops.disk_tools");
    CHECK(decide->function == "decide");
    CHECK(decide->grace == Duration(2'000));
    CHECK(decide->target() == "ops.disk_tools:decide");
    const auto* inline_code =
        dynamic_cast<const runbookd::PythonStepConfig*>(steps[1].config.get());
    REQUIRE(inline_code != nullptr);
    CHECK(inline_code->code == "ctx.set_output(\"n\", 1)\n");
    CHECK(inline_code->filename == "disk.yaml:12");
    CHECK(inline_code->target() == "disk.yaml:12");
}

TEST_CASE("python step errors give file, line, column and what is wrong", "[runbook][python]") {
    struct Case {
        const char* what;
        std::string text;
        std::vector<std::string> errors;
    };
    const std::string head = "name: disk\nsteps:\n  - name: py\n";
    const std::vector<Case> cases = {
        {"not a mapping",
         head + "    python: decide\n",
         {"disk.yaml:4:13: python: expected a mapping: {module: NAME, function: NAME} or {code: "
          "\"...\"}"}},
        {"both forms",
         head + "    python: {module: m, function: f, code: x}\n",
         {"disk.yaml:4:13: python: give either code or module and function, not both"}},
        {"a module without a function",
         head + "    python: {module: m}\n",
         {"disk.yaml:4:13: python: needs module and function (e.g. {module: disk_tools, "
          "function: decide}), or code"}},
        {"a bad module name",
         head + "    python: {module: 'ops..tools', function: f}\n",
         {"disk.yaml:4:22: python.module: \"ops..tools\" is not a module name (identifiers "
          "joined by dots, e.g. ops.disk_tools)"}},
        {"a bad function name",
         head + "    python: {module: m, function: 'do-it'}\n",
         {"disk.yaml:4:35: python.function: \"do-it\" is not a Python identifier"}},
        {"blank code",
         head + "    python: {code: '  '}\n",
         {"disk.yaml:4:20: python.code: expected non-empty Python code"}},
        {"an unknown key in python",
         head + "    python: {module: m, function: f, args: [1]}\n",
         {"disk.yaml:4:38: unknown key \"args\" in python (expected one of: module, function, "
          "code)"}},
        {"a process key that does not apply",
         head + "    python: {module: m, function: f}\n    env: {A: b}\n    user: nobody\n",
         {"disk.yaml:5:10: env: does not apply to python steps (they run in a worker process "
          "that runbookd configures: python.* in the config)",
          "disk.yaml:6:11: user: does not apply to python steps (they run in a worker process "
          "that runbookd configures: python.* in the config)"}},
        {"an unknown step key",
         head + "    python: {module: m, function: f}\n    modul: x\n",
         {"disk.yaml:5:5: unknown key \"modul\" in step (expected one of: name, description, "
          "timeout, retries, retry_on, idempotent, approval, python, grace, env, cwd, stop_signal, "
          "limits, "
          "user, group, args)"}},
    };
    for (const auto& c : cases) {
        SECTION(c.what) {
            CHECK(load_errors(c.text) == c.errors);
        }
    }
}
