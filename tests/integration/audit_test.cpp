#include "store/audit.hpp"

#include <csignal>
#include <filesystem>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sqlite3.h>

#include "common/hash.hpp"
#include "support/support.hpp"

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using test::query_value;

constexpr const char* kRunbook = R"(name: host-echo
matchers: ['alertname="HostHighLoad"']
steps:
  - name: show
    argv: [/bin/echo, "{{ alert.labels.instance }}"]
  - name: again
    argv: [/bin/echo, done]
)";

struct CommandResult {
    int exit_code = -1;
    std::string out;  // stdout and stderr together
};

CommandResult runbookctl(std::vector<std::string> args) {
    test::TempDir dir;
    args.insert(args.begin(), RUNBOOKCTL_BINARY);
    test::Subprocess process(std::move(args), dir.file("out.log"));
    const auto code = process.wait(20s);
    REQUIRE(code.has_value());
    return {*code, test::read_file(dir.file("out.log"))};
}

void exec_sql(const std::string& path, const std::string& sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    char* error = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
    const std::string message = error != nullptr ? error : "";
    sqlite3_free(error);
    sqlite3_close(db);
    INFO(sql << ": " << message);
    REQUIRE(rc == SQLITE_OK);
}

// A consistent copy of a database that runbookd may still be writing (WAL included).
void copy_database(const std::string& from, const std::string& to) {
    exec_sql(from, fmt::format("VACUUM INTO '{}'", to));
}

// What someone with write access to the file would do first.
constexpr const char* kDropTriggers =
    "DROP TRIGGER events_no_update; DROP TRIGGER events_no_delete;";

void deliver(test::TestDaemon& d) {
    REQUIRE(d.post("/api/v1/webhooks/alertmanager",
                   test::fixture("alertmanager/v4-firing-two-alerts.json"))
                .ok());
    REQUIRE(d.wait_runs_finished());
}

}  // namespace

TEST_CASE("audit verify catches an edited row, a deleted row and a reordered row", "[audit][cli]") {
    test::TestDaemon d(test::RunbookFiles{{"echo.yaml", kRunbook}});
    deliver(d);
    const std::string copy = d.dir().file("copy.db");
    copy_database(d.db(), copy);
    const std::string events = query_value(copy, "SELECT count(*) FROM events");
    REQUIRE(std::stoi(events) > 10);

    SECTION("an untouched database verifies, also while runbookd runs") {
        auto live = runbookctl({"audit", "verify", "--db", d.db()});
        auto r = runbookctl({"audit", "verify", "--db", copy});

        INFO(live.out);
        CHECK(live.exit_code == 0);
        CHECK(r.exit_code == 0);
        CHECK_THAT(r.out, Catch::Contains(fmt::format("audit chain intact: {} events (ids 1 to {})",
                                                      events, events)));
        CHECK_THAT(r.out, Catch::Contains(query_value(
                              copy, "SELECT hash FROM events ORDER BY id DESC LIMIT 1")));
    }
    SECTION("an edited row") {
        exec_sql(copy, std::string(kDropTriggers) +
                           "UPDATE events SET detail = '{\"state\":\"succeeded\"}' WHERE id = 5");

        auto r = runbookctl({"audit", "verify", "--db", copy});

        CHECK(r.exit_code == 1);
        CHECK_THAT(r.out, Catch::Contains("audit chain broken at event 5 (modified): event 5 was "
                                          "modified: its hash does not match its content"));
    }
    SECTION("a deleted row") {
        exec_sql(copy, std::string(kDropTriggers) + "DELETE FROM events WHERE id = 7");

        auto r = runbookctl({"audit", "verify", "--db", copy});

        CHECK(r.exit_code == 1);
        CHECK_THAT(r.out, Catch::Contains("audit chain broken at event 7 (deleted): event 7 is "
                                          "missing (deleted): the chain goes on at event 8"));
    }
    SECTION("two rows swapped") {
        const std::string columns =
            "at, kind, delivery_id, run_id, attempt_id, detail, "
            "prev_hash, hash";
        exec_sql(copy, std::string(kDropTriggers) +
                           fmt::format("CREATE TABLE saved AS SELECT * FROM events WHERE id IN "
                                       "(8, 9);"
                                       "UPDATE events SET ({0}) = (SELECT {0} FROM saved WHERE "
                                       "saved.id = 17 - events.id) WHERE id IN (8, 9);",
                                       columns));

        auto r = runbookctl({"audit", "verify", "--db", copy});

        CHECK(r.exit_code == 1);
        CHECK_THAT(r.out, Catch::Contains("audit chain broken at event 8 (reordered)"));
    }
    SECTION("a row replaced by one with a correct hash of its own") {
        // Whoever recomputes the hash of the row they changed still breaks the next link.
        const auto row =
            test::query(copy, "SELECT at, kind, run_id, prev_hash FROM events WHERE id = 3").at(0);
        const std::string detail = R"({"runbook":"forged","trigger":"alert"})";
        const std::string hash = audit::event_hash(
            {3, row[0], row[1], std::nullopt, std::stoll(row[2]), std::nullopt, detail, row[3]});
        exec_sql(copy, std::string(kDropTriggers) +
                           fmt::format("UPDATE events SET detail = '{}', hash = '{}', "
                                       "delivery_id = NULL, attempt_id = NULL WHERE id = 3",
                                       detail, hash));

        auto r = runbookctl({"-o", "json", "audit", "verify", "--db", copy});

        CHECK(r.exit_code == 1);
        const auto json = nlohmann::json::parse(r.out.substr(0, r.out.rfind('}') + 1));
        CHECK(json["intact"] == false);
        CHECK(json["event_id"] == 4);
        CHECK(json["problem"] == "inserted");
        CHECK_THAT(json["message"].get<std::string>(),
                   Catch::Contains("event 4 does not follow event 3"));
    }
}

TEST_CASE("audit prune while runbookd runs keeps verify green and still catches tampering",
          "[audit][cli]") {
    test::TestDaemon d(test::RunbookFiles{{"echo.yaml", kRunbook}});
    deliver(d);
    std::this_thread::sleep_for(10ms);
    const std::string before = Timestamp::now().to_rfc3339_millis();
    std::this_thread::sleep_for(10ms);
    const std::string old_events = query_value(d.db(), "SELECT count(*) FROM events");
    REQUIRE(d.post("/api/v1/webhooks/alertmanager",
                   test::fixture("alertmanager/v4-one-resolved-one-firing.json"))
                .ok());
    REQUIRE(d.wait_runs_finished());

    auto prune =
        runbookctl({"audit", "prune", "--db", d.db(), "--before", before, "--actor", "alice"});
    deliver(d);  // runbookd goes on appending after the prune
    auto verify = runbookctl({"audit", "verify", "--db", d.db()});

    INFO(prune.out);
    REQUIRE(prune.exit_code == 0);
    CHECK_THAT(prune.out, Catch::Contains(fmt::format("pruned {} events through event {}",
                                                      old_events, old_events)));
    INFO(verify.out);
    CHECK(verify.exit_code == 0);
    CHECK_THAT(verify.out, Catch::Contains(fmt::format("pruned through event {}", old_events)));
    CHECK_THAT(verify.out, Catch::Contains("by alice"));
    CHECK(query_value(d.db(), "SELECT min(id) FROM events") ==
          std::to_string(std::stoi(old_events) + 1));

    SECTION("deleting the first remaining event is caught") {
        const std::string copy = d.dir().file("copy.db");
        copy_database(d.db(), copy);
        const int first = std::stoi(old_events) + 1;
        exec_sql(copy, std::string(kDropTriggers) +
                           fmt::format("DELETE FROM events WHERE id = {}", first));

        auto r = runbookctl({"audit", "verify", "--db", copy});

        CHECK(r.exit_code == 1);
        CHECK_THAT(r.out, Catch::Contains(fmt::format("broken at event {} (deleted)", first)));
    }
    SECTION("editing a remaining event is caught") {
        const std::string copy = d.dir().file("copy.db");
        copy_database(d.db(), copy);
        exec_sql(copy, std::string(kDropTriggers) +
                           "UPDATE events SET kind = 'run.started' WHERE id = (SELECT max(id) "
                           "FROM events)");

        auto r = runbookctl({"audit", "verify", "--db", copy});

        CHECK(r.exit_code == 1);
        CHECK_THAT(r.out, Catch::Contains("(modified)"));
    }
}

TEST_CASE("audit commands report bad input clearly", "[audit][cli]") {
    test::TempDir dir;

    auto missing = runbookctl({"audit", "verify", "--db", dir.file("none.db")});
    auto bad_date =
        runbookctl({"audit", "prune", "--db", dir.file("none.db"), "--before", "last tuesday"});

    CHECK(missing.exit_code == 1);
    CHECK_THAT(missing.out, Catch::Contains("database " + dir.file("none.db") + " does not exist"));
    CHECK(bad_date.exit_code == 2);
    CHECK_THAT(bad_date.out, Catch::Contains("--before \"last tuesday\" is not a date"));
}

namespace {

constexpr const char* kSecretValue = "s3cr3t-Zq9-value";

// Every file under `dir` (recursively) except `skip` that holds `needle` anywhere in its bytes.
std::vector<std::string> files_holding(const std::filesystem::path& dir, const std::string& needle,
                                       const std::string& skip) {
    std::vector<std::string> found;
    for (const auto& entry : std::filesystem::recursive_directory_iterator(dir)) {
        if (entry.is_regular_file() && entry.path().string() != skip &&
            test::read_file(entry.path()).find(needle) != std::string::npos) {
            found.push_back(entry.path().string());
        }
    }
    return found;
}

}  // namespace

TEST_CASE("a secret reaches its step's environment only: not the audit, output files or log",
          "[audit][secrets]") {
    test::TempDir dir;
    test::write_file(dir.file("token"), std::string(kSecretValue) + "\n");
    test::write_file(dir.file("runbookd.yaml"), "secrets:\n  api_token: {file: token}\n");
    test::write_file(dir.file("runbooks/leak.yaml"), fmt::format(R"yaml(name: leak
matchers: ['alertname="HostHighLoad"']
steps:
  - name: echo-secret
    shell: |
      echo "token is $TOKEN"
      printf '%s' "$TOKEN" >&2
      [ "$(printf %s "$TOKEN" | sha256sum | cut -c1-64)" = "{}" ] && echo "token matches"
      exit 3
    env:
      TOKEN: {{secret: api_token}}
)yaml",
                                                                 sha256_hex(kSecretValue)));
    const std::uint16_t port = test::free_tcp_port();
    const std::string db = dir.file("runbookd.db");
    const std::string log = dir.file("runbookd.log");
    test::Subprocess daemon({RUNBOOKD_BINARY, "--config", dir.file("runbookd.yaml"), "--listen",
                             fmt::format("127.0.0.1:{}", port), "--runbooks", dir.file("runbooks"),
                             "--db", db, "--log-level", "trace"},
                            log);
    const std::string url = fmt::format("http://127.0.0.1:{}", port);
    REQUIRE(test::wait_ready(url));

    REQUIRE(
        test::post_notification(url, test::fixture("alertmanager/v4-firing-two-alerts.json")).ok());
    REQUIRE(test::wait_until(
        [&] { return query_value(db, "SELECT count(*) FROM runs WHERE state = 'failed'") == "2"; },
        10s));
    daemon.signal(SIGTERM);
    REQUIRE(daemon.wait(10s) == 0);

    INFO(test::read_file(log));
    CHECK(test::query(db, "SELECT DISTINCT stdout_excerpt, stderr_excerpt FROM attempts") ==
          std::vector<std::vector<std::string>>{
              {"token is [secret:api_token]\ntoken matches\n", "[secret:api_token]"}});
    CHECK(query_value(db,
                      "SELECT count(*) FROM events WHERE kind = 'attempt.finished' AND "
                      "json_extract(detail, '$.exit_code') = 3") == "2");
    const std::string output = query_value(db, "SELECT output_path FROM attempts LIMIT 1");
    CHECK_THAT(test::read_file(output), Catch::Contains("[secret:api_token]"));
    CHECK_THAT(test::read_file(log), Catch::Contains("secrets read count=1 names=api_token"));
    // The database (with its WAL), the output files and the log: no byte of the value.
    CHECK(files_holding(dir.path(), kSecretValue, dir.file("token")).empty());
}

TEST_CASE("runbookd refuses to start on a secret it cannot read, naming it", "[audit][secrets]") {
    test::TempDir dir;
    test::write_file(dir.file("runbookd.yaml"), "secrets:\n  api_token: {file: missing}\n");
    test::write_file(dir.file("runbooks/x.yaml"),
                     "name: x\nsteps:\n  - name: a\n    argv: [env]\n    env:\n"
                     "      T: {secret: other}\n");
    const std::vector<std::string> argv = {
        RUNBOOKD_BINARY,  "--config",           dir.file("runbookd.yaml"),
        "--runbooks",     dir.file("runbooks"), "--db",
        dir.file("x.db"), "--listen",           "127.0.0.1:0"};

    const auto start = [&](const std::string& log) {
        test::Subprocess p(argv, log);
        const auto code = p.wait(10s);
        return std::make_pair(code, test::read_file(log));
    };

    auto missing = start(dir.file("first.log"));
    test::write_file(dir.file("missing"), "value\n");
    auto unknown = start(dir.file("second.log"));

    CHECK(missing.first == 2);
    CHECK_THAT(missing.second,
               Catch::Contains("secret \"api_token\": cannot read file " + dir.file("missing")));
    CHECK(unknown.first == 2);
    CHECK_THAT(unknown.second,
               Catch::Contains(dir.file("runbooks/x.yaml") +
                               ":6:19: env.T: unknown secret \"other\" (configured secrets: "
                               "api_token)"));
}

TEST_CASE("an event appended outside runbookd does not stop it from recording deliveries",
          "[audit]") {
    test::TestDaemon d(test::RunbookFiles{{"echo.yaml", kRunbook}});
    deliver(d);
    // A correctly chained event, written by someone else while runbookd runs.
    const auto head = query_value(d.db(),
                                  "SELECT id || ' ' || hash FROM events ORDER BY id DESC "
                                  "LIMIT 1");
    const std::int64_t id = std::stoll(head.substr(0, head.find(' '))) + 1;
    const std::string prev = head.substr(head.find(' ') + 1);
    const std::string at = "2026-12-04T23:00:00.000Z";
    const std::string hash =
        audit::event_hash({id, at, "forged", std::nullopt, std::nullopt, std::nullopt, "{}", prev});
    exec_sql(d.db(), fmt::format("INSERT INTO events (id, at, kind, detail, prev_hash, hash) "
                                 "VALUES ({}, '{}', 'forged', '{{}}', '{}', '{}')",
                                 id, at, prev, hash));

    auto r = d.post("/api/v1/webhooks/alertmanager",
                    test::fixture("alertmanager/v4-firing-two-alerts.json"));
    REQUIRE(r.ok());
    // The same notification again: its episodes already ran, so nothing new starts, but the
    // delivery is recorded (the writer chained on from the foreign event).
    CHECK(r->status == 200);
    REQUIRE(d.wait_runs_finished());
    CHECK(query_value(d.db(), "SELECT count(*) FROM deliveries") == "2");
    CHECK(query_value(d.db(), "SELECT count(*) FROM events WHERE id > " + std::to_string(id)) !=
          "0");
    CHECK(runbookctl({"audit", "verify", "--db", d.db()}).exit_code == 0);
}
