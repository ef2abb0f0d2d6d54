// Manual runs, parameters and dry runs over real HTTP (docs/manual-runs.md).

#include <cstdlib>
#include <filesystem>
#include <future>
#include <map>
#include <set>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <runbookd/step_parser.hpp>
#include <runbookd/store.hpp>

#include "support/support.hpp"

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using Json = nlohmann::json;
using test::query_value;
using test::RunbookFiles;
using test::TestDaemon;

constexpr const char* kRestartRunbook = R"(name: restart
description: restarts a service on a host
matchers: ['alertname="ServiceDown"']
params:
  host:
    description: the host
    required: true
    pattern: "[a-z0-9.-]+"
  mode:
    default: graceful
    choices: [graceful, hard]
  note: {}
steps:
  - name: show
    argv: [/usr/bin/printf, "%s|%s|%s", "{{ alert.labels.instance | default \"-\" }}",
           "{{ params.host }}", "{{ params.mode }}"]
  - name: env
    shell: printf '%s|%s|%s' "$RUNBOOK_PARAM_HOST" "$RUNBOOK_PARAM_MODE" "$RUNBOOK_LABEL_INSTANCE"
)";

// POSTs a manual run request; `key` sets the Idempotency-Key header.
Result<http::ClientResponse> request_run(const TestDaemon& d, const std::string& runbook,
                                         const std::string& body, const std::string& key = "") {
    std::vector<std::pair<std::string, std::string>> headers = {
        {"Content-Type", "application/json"}};
    if (!key.empty()) {
        headers.emplace_back("Idempotency-Key", key);
    }
    return http::send_request("POST", d.url("/api/v1/runbooks/" + runbook + "/runs"), body,
                              headers);
}

Json json_of(const Result<http::ClientResponse>& r) {
    REQUIRE(r.ok());
    INFO(r->body);
    return Json::parse(r->body);
}

std::string attempt_stdout(const TestDaemon& d, std::int64_t run, const std::string& step) {
    return query_value(d.db(), fmt::format("SELECT stdout_excerpt FROM attempts WHERE run_id = {} "
                                           "AND step = '{}'",
                                           run, step));
}

std::string count(const TestDaemon& d, const std::string& table) {
    return query_value(d.db(), "SELECT count(*) FROM " + table);
}

// runbookd_step_attempts_total summed over its labels.
double attempts_total(const TestDaemon& d) {
    double total = 0;
    auto r = d.get("/metrics");
    REQUIRE(r.ok());
    std::size_t pos = 0;
    while ((pos = r->body.find("\nrunbookd_step_attempts_total{", pos)) != std::string::npos) {
        const auto space = r->body.find(' ', r->body.find('}', pos));
        total += std::stod(r->body.substr(space + 1));
        pos = space;
    }
    return total;
}

}  // namespace

TEST_CASE("a manual run with labels and params runs, and its steps see both", "[manual]") {
    TestDaemon d(RunbookFiles{{"restart.yaml", kRestartRunbook}});

    auto r = request_run(d, "restart",
                         R"({"labels": {"instance": "db1:9100"}, "params": {"host": "db1"},
                             "reason": "disk full", "actor": "alice"})");
    const Json run = json_of(r);
    const std::int64_t id = run.at("id");
    REQUIRE(d.wait_runs_finished());

    CHECK(r->status == 201);
    CHECK(run["trigger"] == "manual");
    CHECK(run["actor"] == "alice");
    CHECK(run["labels"] == Json{{"instance", "db1:9100"}});
    CHECK(run["params"] == Json{{"host", "db1"}, {"mode", "graceful"}});
    CHECK(run["request_reason"] == "disk full");
    CHECK(run["dry_run"] == false);
    CHECK(run["warnings"].size() == 1);  // the labels lack alertname="ServiceDown"
    CHECK(query_value(d.db(), fmt::format("SELECT state FROM runs WHERE id = {}", id)) ==
          "succeeded");
    CHECK(attempt_stdout(d, id, "show") == "db1:9100|db1|graceful");
    CHECK(attempt_stdout(d, id, "env") == "db1|graceful|db1:9100");
    CHECK(query_value(d.db(), fmt::format("SELECT json_extract(detail, '$.actor') || ' ' || "
                                          "json_extract(detail, '$.reason') || ' ' || "
                                          "json_extract(detail, '$.params.mode') FROM events "
                                          "WHERE kind = 'run.requested' AND run_id = {}",
                                          id)) == "alice disk full graceful");
    CHECK(count(d, "alerts") == "0");
    CHECK(count(d, "episodes") == "0");
}

TEST_CASE("without an actor the run records the caller's address", "[manual]") {
    TestDaemon d(RunbookFiles{{"restart.yaml", kRestartRunbook}});

    const Json run = json_of(request_run(d, "restart", R"({"params": {"host": "db1"}})"));

    CHECK_THAT(run["actor"].get<std::string>(), Catch::StartsWith("http:127.0.0.1:"));
    CHECK(run["warnings"].size() == 1);
    REQUIRE(d.wait_runs_finished());
}

TEST_CASE("a bad manual run request is refused naming the field, and nothing is recorded",
          "[manual]") {
    TestDaemon d(RunbookFiles{{"restart.yaml", kRestartRunbook}});
    struct Case {
        std::string body;
        std::string key;
        std::string field;
    };
    const Case c = GENERATE(values<Case>({
        {R"({"params": {"host": "db1", "nope": "x"}})", "", "params.nope"},
        {R"({"params": {}})", "", "params.host"},
        {R"({"params": {"host": ""}})", "", "params.host"},
        {R"({"params": {"host": "DB 1"}})", "", "params.host"},
        {R"({"params": {"host": "db1", "mode": "gentle"}})", "", "params.mode"},
        {R"({"params": {"host": 1}})", "", "params.host"},
        {R"({"params": {"host": "db1"}, "labels": {"instance": 5}})", "", "labels.instance"},
        {R"({"params": {"host": "db1"}, "labels": ["a"]})", "", "labels"},
        {R"({"params": {"host": "db1"}, "labels": {"a-b": "1", "a_b": "2"}})", "", "labels.a-b"},
        {R"({"params": {"host": "db1"}, "labels": {"bad name": "x"}})", "", "labels.bad name"},
        {R"({"params": {"host": "db1"}, "labels": {"1st": "x"}})", "", "labels.1st"},
        {R"({"params": {"host": "db1"}, "lables": {}})", "", "lables"},
        {R"({"params": {"host": "db1"}, "dry_run": "yes"})", "", "dry_run"},
        {R"({"params": {"host": "db1"}, "reason": 7})", "", "reason"},
        {R"({"params": {"host": "db1"}})", "has space", "Idempotency-Key"},
    }));

    auto r = request_run(d, "restart", c.body, c.key);

    INFO(c.body);
    const Json body = json_of(r);
    CHECK(r->status == 400);
    CHECK(body["error"]["code"] == "invalid_argument");
    CHECK(body["error"]["field"] == c.field);
    CHECK(count(d, "runs") == "0");
    CHECK(count(d, "events") == "0");
}

TEST_CASE("an unknown runbook is 404 and a body that is not JSON is 400", "[manual]") {
    TestDaemon d(RunbookFiles{{"restart.yaml", kRestartRunbook}});

    auto unknown = request_run(d, "nope", "{}");
    auto garbage = request_run(d, "restart", "not json");

    CHECK(unknown.ok());
    CHECK(unknown->status == 404);
    CHECK(json_of(unknown)["error"]["field"] == "name");
    CHECK(garbage->status == 400);
    CHECK(count(d, "runs") == "0");
}

TEST_CASE("a param full of shell metacharacters stays one argument and runs nothing", "[manual]") {
    test::TempDir dir;
    const std::string canary = dir.file("pwned");
    TestDaemon d(RunbookFiles{{"echo.yaml", R"(name: echo
params:
  text: {required: true}
steps:
  - name: argv
    argv: [/usr/bin/printf, "[%s]", "{{ params.text }}"]
  - name: shell
    shell: printf '[%s]' "$1"
    args: ["{{ params.text }}"]
)"}});
    const std::string evil =
        fmt::format("x; touch {0} && echo $(touch {0}) `touch {0}` \"' | touch {0} > {0}", canary);

    const Json run = json_of(request_run(d, "echo", Json{{"params", {{"text", evil}}}}.dump()));
    REQUIRE(d.wait_runs_finished());

    const std::int64_t id = run.at("id");
    CHECK(attempt_stdout(d, id, "argv") == "[" + evil + "]");
    CHECK(attempt_stdout(d, id, "shell") == "[" + evil + "]");
    const Json argv = Json::parse(query_value(
        d.db(), fmt::format("SELECT argv FROM attempts WHERE run_id = {} AND step = 'argv'", id)));
    CHECK(argv.size() == 3);
    CHECK(argv[2] == evil);
    CHECK_FALSE(std::filesystem::exists(canary));
}

TEST_CASE("the same Idempotency-Key replays the run; with another request it is refused",
          "[manual]") {
    TestDaemon d(RunbookFiles{{"restart.yaml", kRestartRunbook}});
    const std::string body = R"({"params": {"host": "db1"}, "labels": {"instance": "db1"}})";

    auto first = request_run(d, "restart", body, "incident-42");
    auto again = request_run(d, "restart", body, "incident-42");
    auto other = request_run(d, "restart", R"({"params": {"host": "db2"}})", "incident-42");
    auto dry = request_run(d, "restart", R"({"params": {"host": "db1"}, "labels":
                               {"instance": "db1"}, "dry_run": true})",
                           "incident-42");
    REQUIRE(d.wait_runs_finished());

    CHECK(first->status == 201);
    CHECK(again->status == 200);
    CHECK(json_of(again)["id"] == json_of(first)["id"]);
    CHECK(json_of(first)["idempotency_key"] == "incident-42");
    CHECK(other->status == 409);
    CHECK(json_of(other)["error"]["code"] == "idempotency_key_reused");
    CHECK(dry->status == 409);
    CHECK(count(d, "runs") == "1");
    CHECK(query_value(d.db(), "SELECT count(*) FROM events WHERE kind = 'run.requested'") == "1");
}

TEST_CASE("a dry run renders every step, records the plan and starts no process", "[manual]") {
    test::TempDir dir;
    const std::string touched = dir.file("touched");
    ::setenv("RUNBOOKD_MANUAL_TEST_TOKEN", "s3cr3t-token-value", 1);
    TestDaemon d(RunbookFiles{{"touch.yaml", fmt::format(R"(name: touch
params:
  host: {{required: true}}
steps:
  - name: first
    argv: [touch, "{}"]
    env:
      TOKEN: {{secret: api_token}}
      TARGET: "{{{{ params.host }}}}"
    timeout: 7s
    retries: 2
  - name: second
    shell: touch "$1"
    args: ["{}-{{{{ steps.first.outputs.k }}}}"]
)",
                                                         touched, touched)}},
                 [](daemon::Config& c) {
                     c.secrets = {{"api_token", "", "RUNBOOKD_MANUAL_TEST_TOKEN"}};
                 });
    const double attempts_before = attempts_total(d);

    auto r = request_run(d, "touch", R"({"params": {"host": "db1"}, "dry_run": true})");
    const Json run = json_of(r);
    REQUIRE(d.wait_runs_finished());

    CHECK(r->status == 201);
    CHECK(run["state"] == "succeeded");
    CHECK(run["reason"] == "dry run: nothing executed");
    CHECK(run["dry_run"] == true);
    CHECK(run["attempts"].empty());
    const Json& steps = run.at("plan").at("steps");
    REQUIRE(steps.size() == 2);
    CHECK(steps[0]["argv"].back() == touched);
    CHECK_THAT(steps[0]["argv"][0].get<std::string>(), Catch::EndsWith("/touch"));
    CHECK(steps[0]["env"]["TARGET"] == "db1");
    CHECK(steps[0]["env"]["RUNBOOK_PARAM_HOST"] == "db1");
    CHECK(steps[0]["env"]["TOKEN"] != "s3cr3t-token-value");
    CHECK(steps[0]["timeout"] == "7s");
    CHECK(steps[0]["retries"] == 2);
    CHECK(steps[1]["argv"].back() == touched + "-<output k of step first>");
    CHECK(run.dump().find("s3cr3t-token-value") == std::string::npos);
    CHECK_FALSE(std::filesystem::exists(touched));
    CHECK(count(d, "attempts") == "0");
    CHECK(attempts_total(d) == attempts_before);
    CHECK(query_value(d.db(), "SELECT count(*) FROM events WHERE kind = 'run.planned'") == "1");
    CHECK(query_value(d.db(), "SELECT dry_run FROM runs") == "1");
    auto shown = json_of(d.get(fmt::format("/api/v1/runs/{}", run["id"].get<std::int64_t>())));
    CHECK(shown["plan"] == run["plan"]);
}

TEST_CASE("a dry run whose step cannot be rendered fails and says which step", "[manual]") {
    TestDaemon d(RunbookFiles{{"needs.yaml", R"(name: needs
steps:
  - name: show
    argv: [/bin/echo, "{{ alert.labels.instance }}"]
)"}});

    const Json run = json_of(request_run(d, "needs", R"({"dry_run": true})"));

    CHECK(run["state"] == "failed");
    CHECK_THAT(run["reason"].get<std::string>(),
               Catch::StartsWith("dry run: step \"show\" cannot be prepared: label \"instance\""));
    CHECK(run["plan"]["steps"][0].contains("error"));
    CHECK(count(d, "attempts") == "0");
}

TEST_CASE("alert runs get the declared defaults; a required param fails the step using it",
          "[manual]") {
    TestDaemon d(RunbookFiles{{"restart.yaml", kRestartRunbook}});

    REQUIRE(d.post("/api/v1/webhooks/alertmanager",
                   test::firing_notification("ServiceDown", "db9:9100"))
                ->status == 200);
    REQUIRE(d.wait_runs_finished());

    CHECK(query_value(d.db(), "SELECT state FROM runs") == "failed");
    CHECK_THAT(query_value(d.db(), "SELECT reason FROM runs"),
               Catch::Contains("param \"host\" has no value: it has no default"));
    CHECK(query_value(d.db(), "SELECT count(*) FROM attempts WHERE pid IS NOT NULL") == "0");
}

TEST_CASE("GET /api/v1/runbooks lists each runbook's params", "[manual]") {
    TestDaemon d(RunbookFiles{{"restart.yaml", kRestartRunbook}});

    const Json params = json_of(d.get("/api/v1/runbooks"))["runbooks"][0]["params"];

    REQUIRE(params.size() == 3);
    CHECK(params[0] == Json{{"name", "host"},
                            {"description", "the host"},
                            {"required", true},
                            {"default", nullptr},
                            {"pattern", "[a-z0-9.-]+"},
                            {"choices", Json::array()}});
    CHECK(params[1]["default"] == "graceful");
    CHECK(params[1]["choices"] == Json{"graceful", "hard"});
}

TEST_CASE("bad param declarations and undeclared params are load errors at file:line", "[manual]") {
    const auto errors = [](const std::string& text) {
        std::string out;
        for (const auto& e : load_runbook_text(text, "rb.yaml", builtin_step_parsers()).errors) {
            out += e.to_string() + "\n";
        }
        return out;
    };
    const std::string head = "name: rb\n";
    const std::string step = "steps:\n  - name: s\n    argv: [echo, \"{{ params.x }}\"]\n";

    CHECK_THAT(errors(head + step), Catch::Contains("rb.yaml:4:22: argv: params.x is not a "
                                                    "parameter of this runbook"));
    CHECK_THAT(errors(head + "params:\n  x: {pattern: \"(\"}\n" + step),
               Catch::Contains("rb.yaml:3:16: params.x.pattern: bad regular expression"));
    CHECK_THAT(errors(head + "params:\n  x: {default: c, choices: [a, b]}\n" + step),
               Catch::Contains("rb.yaml:3:16: params.x.default: \"c\" is not one of the choices"));
    CHECK_THAT(errors(head + "params:\n  x: {requird: true}\n" + step),
               Catch::Contains("rb.yaml:3:7: unknown key \"requird\" in params.x"));
    CHECK_THAT(errors(head + "params:\n  x: {}\n  x_y: {}\n  x-y: {}\n" + step),
               Catch::Contains("rb.yaml:5:3: parameters \"x_y\" and \"x-y\" both become "
                               "RUNBOOK_PARAM_X_Y"));
    CHECK_THAT(errors(head + "params:\n  x: {}\ndedup: \"{{ params.x }}\"\ncooldown: 1m\n" + step),
               Catch::Contains("params.x cannot be used here"));
    CHECK(errors(head + "params:\n  x: {default: a}\n" + step).empty());
}

TEST_CASE("runbookctl run: --wait exits 0 or 4 by the run's end, usage errors 2, API errors 1",
          "[manual][cli]") {
    TestDaemon d(
        RunbookFiles{{"ok.yaml", "name: ok\nsteps:\n  - name: s\n    argv: [/bin/true]\n"},
                     {"bad.yaml", "name: bad\nsteps:\n  - name: s\n    argv: [/bin/false]\n"},
                     {"restart.yaml", kRestartRunbook}});
    const auto ctl = [&d](std::vector<std::string> args) {
        args.insert(args.begin(), {RUNBOOKCTL_BINARY, "--url", d.url()});
        return test::run_command(args);
    };

    auto ok = ctl({"run", "ok", "--wait", "--reason", "test"});
    auto bad = ctl({"run", "bad", "--wait"});
    auto usage = ctl({"run", "ok", "--label", "novalue"});
    auto invalid = ctl({"run", "restart", "--param", "host=DB 1"});
    auto dry =
        ctl({"run", "restart", "--param", "host=db1", "--label", "instance=i1", "--dry-run"});
    auto json = ctl({"-o", "json", "run", "ok", "--wait", "--idempotency-key", "k1"});
    auto replay = ctl({"-o", "json", "run", "ok", "--wait", "--idempotency-key", "k1"});

    INFO(ok.output << bad.output << usage.output << invalid.output << dry.output);
    CHECK(ok.exit_code == 0);
    CHECK_THAT(ok.output, Catch::Contains("succeeded  runbook ok"));
    CHECK_THAT(ok.output, Catch::Contains("why:      test"));
    CHECK(bad.exit_code == 4);
    CHECK_THAT(bad.output, Catch::Contains("failed  runbook bad"));
    CHECK(usage.exit_code == 2);
    CHECK(invalid.exit_code == 1);
    CHECK_THAT(invalid.output, Catch::Contains("(field params.host)"));
    CHECK(dry.exit_code == 0);
    CHECK_THAT(dry.output, Catch::Contains("plan (dry run, nothing executed)"));
    CHECK_THAT(dry.output, Catch::Contains("params:   host=db1"));
    CHECK_THAT(dry.output, Catch::Contains("\"%s|%s|%s\" \"i1\" \"db1\" \"graceful\""));
    CHECK(json.exit_code == 0);
    CHECK(replay.exit_code == 0);
    CHECK(Json::parse(json.output.substr(json.output.find('{')))["id"] ==
          Json::parse(replay.output.substr(replay.output.find('{')))["id"]);
}

TEST_CASE("python steps see ctx.params; a dry run of one calls no worker", "[manual][python]") {
    test::TempDir dir;
    const std::string touched = dir.file("python-ran");
    TestDaemon d(RunbookFiles{{"py.yaml", fmt::format(R"(name: py
params:
  host: {{required: true}}
  mode: {{default: graceful}}
steps:
  - name: decide
    python:
      code: |
        open("{}", "w").write("ran")
        ctx.set_output("seen", ctx.params["host"] + "/" + ctx.params["mode"])
)",
                                                      touched)}},
                 [](daemon::Config& c) {
                     c.python.worker = PYTHON_WORKER_BINARY;
                     c.python.workers = 1;
                     c.python.startup_timeout = 10s;
                 });

    const Json dry =
        json_of(request_run(d, "py", R"({"params": {"host": "db1"}, "dry_run": true})"));
    const bool ran_in_dry_run = std::filesystem::exists(touched);
    const Json run = json_of(request_run(d, "py", R"({"params": {"host": "db1"}})"));
    REQUIRE(d.wait_runs_finished());

    CHECK(dry["state"] == "succeeded");
    CHECK(dry["plan"]["steps"][0]["python"]["params"] ==
          Json{{"host", "db1"}, {"mode", "graceful"}});
    CHECK(dry["plan"]["steps"][0]["argv"][0] == "python");
    CHECK_FALSE(ran_in_dry_run);
    CHECK(query_value(d.db(), fmt::format("SELECT json_extract(outputs, '$.seen') FROM attempts "
                                          "WHERE run_id = {}",
                                          run["id"].get<std::int64_t>())) == "db1/graceful");
    CHECK(std::filesystem::exists(touched));
}

TEST_CASE("manual runs skip cooldown but wait for a lock like any run", "[manual]") {
    test::TempDir dir;
    const std::string gate = dir.file("gate");
    TestDaemon d(RunbookFiles{{"held.yaml", fmt::format(R"(name: held
matchers: ['alertname="Held"']
dedup: all
cooldown: 1h
lock: one-at-a-time
steps:
  - name: wait-for-gate
    argv: [/bin/sh, -c, 'while [ ! -e {} ]; do sleep 0.05; done']
)",
                                                        gate)}});
    REQUIRE(
        d.post("/api/v1/webhooks/alertmanager", test::firing_notification("Held", "a"))->status ==
        200);
    REQUIRE(test::wait_query_value(d.db(), "SELECT state FROM runs WHERE id = 1", "running", 10s));

    const Json held =
        json_of(d.post("/api/v1/webhooks/alertmanager", test::firing_notification("Held", "b")));
    const Json manual = json_of(request_run(d, "held", R"({"labels": {"alertname": "Held"}})"));
    const bool waited =
        test::wait_query_value(d.db(), "SELECT reason FROM runs WHERE id = 2",
                               "waiting for lock \"one-at-a-time\" held by run 1", 10s);
    test::write_file(gate, "");
    REQUIRE(d.wait_runs_finished());

    REQUIRE(held["not_acted_on"].size() == 1);
    CHECK(held["not_acted_on"][0]["reason"] == "cooldown");
    CHECK(manual["id"] == 2);
    CHECK(waited);
    CHECK(query_value(d.db(), "SELECT state FROM runs WHERE id = 2") == "succeeded");
    CHECK(count(d, "episodes") == "1");
}

TEST_CASE("a dry run left queued by a crash is planned at the next start, running nothing",
          "[manual]") {
    test::TempDir dir;
    const std::string db = dir.file("runbookd.db");
    const std::string touched = dir.file("touched");
    const std::string text =
        fmt::format("name: touch\nsteps:\n  - name: t\n    argv: [touch, \"{}\"]\n", touched);
    {
        auto loaded = load_runbook_text(text, "touch.yaml", builtin_step_parsers());
        REQUIRE(loaded.runbooks.size() == 1);
        auto store = open_sqlite_store(SqliteOptions{db});
        REQUIRE(store.ok());
        REQUIRE((*store)->record_runbooks(loaded.runbooks).ok());
        auto request = std::make_shared<ManualRunRequest>();
        request->runbook = "touch";
        request->runbook_hash = loaded.runbooks[0]->content_hash;
        request->actor = "alice";
        request->dry_run = true;
        request->requested_at = Timestamp::now();
        std::promise<Result<ManualRunReceipt>> recorded;
        (*store)->record_manual_run(
            request, [&recorded](Result<ManualRunReceipt> r) { recorded.set_value(std::move(r)); });
        REQUIRE(recorded.get_future().get().ok());
        (*store)->close();
    }
    REQUIRE(query_value(db, "SELECT state FROM runs") == "queued");

    test::RunbookdProcess daemon(RunbookFiles{{"touch.yaml", text}}, "", db);
    REQUIRE(daemon.wait_ready());

    CHECK(test::wait_query_value(db, "SELECT state || ' ' || reason FROM runs",
                                 "succeeded dry run: nothing executed", 10s));
    CHECK(query_value(db, "SELECT count(*) FROM events WHERE kind = 'run.planned'") == "1");
    CHECK(query_value(db, "SELECT count(*) FROM attempts") == "0");
    CHECK_FALSE(std::filesystem::exists(touched));
}

TEST_CASE("submits with one Idempotency-Key at once start one run", "[manual]") {
    TestDaemon d(RunbookFiles{{"restart.yaml", kRestartRunbook}});
    std::vector<std::future<Result<http::ClientResponse>>> answers;

    for (int i = 0; i < 8; ++i) {
        answers.push_back(std::async(std::launch::async, [&d] {
            return request_run(d, "restart", R"({"params": {"host": "db1"}})", "double-click");
        }));
    }
    std::map<unsigned, int> statuses;
    std::set<std::int64_t> ids;
    for (auto& answer : answers) {
        const auto r = answer.get();
        REQUIRE(r.ok());
        ++statuses[r->status];
        ids.insert(Json::parse(r->body).at("id").get<std::int64_t>());
    }
    REQUIRE(d.wait_runs_finished());

    CHECK(statuses[201] == 1);
    CHECK(statuses[200] == 7);
    CHECK(ids.size() == 1);
    CHECK(count(d, "runs") == "1");
}
