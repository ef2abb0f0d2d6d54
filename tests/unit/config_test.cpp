#include "daemon/config.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "support/support.hpp"

using runbookd::daemon::Config;
using runbookd::daemon::load_config_file;
using runbookd::daemon::parse_byte_size;
using runbookd::daemon::parse_listen;
using runbookd::test::TempDir;
using runbookd::test::write_file;
using namespace std::chrono_literals;

namespace {

const char* const kKnownRootKeys =
    "listen, runbooks, db, log, http, runs, exec, store, secrets, python, auth";

// Writes `text` as etc/runbookd.yaml in `dir` and loads it over a default Config.
runbookd::Status load(const TempDir& dir, const std::string& text, Config& config) {
    const auto path = dir.path() / "etc" / "runbookd.yaml";
    write_file(path, text);
    return load_config_file(path.string(), config);
}

std::string config_path(const TempDir& dir) {
    return (dir.path() / "etc" / "runbookd.yaml").string();
}

}  // namespace

TEST_CASE("a config file sets every section", "[config]") {
    TempDir dir;
    Config config;
    const std::string text = R"(listen: "127.0.0.1:9999"
runbooks: /srv/runbooks
db: /var/lib/runbookd/state.db
log:
  level: debug
  format: json
http:
  body_limit: 1MiB
  threads: 4
  max_connections: 50
  idle_timeout: 30s
  request_timeout: 5s
runs:
  max_concurrent: 3
  default_step_timeout: 2m
  default_run_timeout: 1h
  shutdown_grace: 7s
exec:
  kill_grace: 3s
  output_drain: 500ms
  output_excerpt: 16KiB
  cwd: /var/tmp
  max_processes: 40
  output_dir: /var/lib/runbookd/output
  output_cap: 1MiB
  default_limits:
    cpu: 2m
    memory: 2GiB
    open_files: 4096
store:
  synchronous: normal
  busy_timeout: 2s
  max_batch: 1
)";

    const auto status = load(dir, text, config);

    REQUIRE(status.ok());
    CHECK(config.listen == "127.0.0.1:9999");
    CHECK(config.runbooks_dir == "/srv/runbooks");
    CHECK(config.db_path == "/var/lib/runbookd/state.db");
    CHECK(config.log_level == "debug");
    CHECK(config.log_format == "json");
    CHECK(config.http.body_limit == 1024 * 1024);
    CHECK(config.http.threads == 4);
    CHECK(config.http.max_connections == 50);
    CHECK(config.http.idle_timeout == 30s);
    CHECK(config.http.request_timeout == 5s);
    CHECK(config.runs.max_concurrent_runs == 3);
    CHECK(config.runs.default_step_timeout == 2min);
    CHECK(config.runs.default_run_timeout == 1h);
    CHECK(config.shutdown_grace == 7s);
    CHECK(config.process.grace == 3s);
    CHECK(config.process.drain == 500ms);
    CHECK(config.process.excerpt_bytes == 16 * 1024);
    CHECK(config.process.cwd == "/var/tmp");
    CHECK(config.max_processes == 40);
    CHECK(config.process.output_dir == "/var/lib/runbookd/output");
    CHECK(config.process.output_cap_bytes == 1024 * 1024);
    CHECK(config.process.default_limits.cpu_seconds == 120);
    CHECK(config.process.default_limits.address_space_bytes == 2ULL << 30);
    CHECK(config.process.default_limits.open_files == 4096);
    CHECK_FALSE(config.process.default_limits.processes.has_value());
    CHECK_FALSE(config.synchronous_full);
    CHECK(config.busy_timeout_ms == 2000);
    CHECK(config.max_batch == 1);
}

TEST_CASE("relative paths in a config file are resolved against the file's directory", "[config]") {
    TempDir dir;
    Config config;

    const auto status = load(dir,
                             "runbooks: runbooks.d\ndb: ../state/./runbookd.db\n"
                             "auth:\n  tokens_file: tokens.yaml\n",
                             config);

    REQUIRE(status.ok());
    CHECK(config.runbooks_dir == (dir.path() / "etc" / "runbooks.d").string());
    CHECK(config.db_path == (dir.path() / "state" / "runbookd.db").string());
    CHECK(config.tokens_file == (dir.path() / "etc" / "tokens.yaml").string());
}

TEST_CASE("the python section sets the worker pool, relative paths from the file", "[config]") {
    TempDir dir;
    Config config;

    const auto status = load(dir, R"(python:
  workers: 2
  max_steps_per_worker: 50
  memory_limit: 512MiB
  startup_timeout: 3s
  path: [lib, /opt/py]
  worker: bin/worker
)",
                             config);

    REQUIRE(status.ok());
    CHECK(config.python.workers == 2);
    CHECK(config.python.max_steps_per_worker == 50);
    CHECK(config.python.memory_limit == 512ULL << 20);
    CHECK(config.python.startup_timeout == std::chrono::seconds(3));
    CHECK(config.python.path ==
          std::vector<std::string>{(dir.path() / "etc" / "lib").string(), "/opt/py"});
    CHECK(config.python.worker == (dir.path() / "etc" / "bin" / "worker").string());
}

TEST_CASE("python section errors are located", "[config]") {
    TempDir dir;
    Config config;

    const auto status = load(dir, "python:\n  workers: 0\n  path: lib\n", config);

    REQUIRE_FALSE(status.ok());
    CHECK(status.error().describe() ==
          config_path(dir) +
              ":2:12: python.workers: expected a whole number from 1 to 256, got "
              "\"0\"\n" +
              config_path(dir) + ":3:9: python.path: expected a list of directories");
}

TEST_CASE("settings missing from a config file keep their values", "[config]") {
    TempDir dir;
    Config config;
    config.listen = "127.0.0.1:1234";

    SECTION("an empty file") {
        const auto status = load(dir, "", config);

        REQUIRE(status.ok());
        CHECK(config.listen == "127.0.0.1:1234");
        CHECK(config.runbooks_dir == "runbooks");
        CHECK(config.http.threads == 2);
        CHECK(config.synchronous_full);
    }
    SECTION("a file with one section") {
        const auto status = load(dir, "http:\n  threads: 8\n", config);

        REQUIRE(status.ok());
        CHECK(config.http.threads == 8);
        CHECK(config.http.body_limit == 8 * 1024 * 1024);
        CHECK(config.listen == "127.0.0.1:1234");
        CHECK(config.db_path == "runbookd.db");
    }
}

TEST_CASE("config file errors give file, line, column and what is wrong", "[config]") {
    struct Case {
        const char* what;
        std::string text;
        std::string error;  // after "<path>:"
    };
    const std::vector<Case> cases = {
        {"an unknown top-level key", "listen: \":9095\"\nlisten_port: 9095\n",
         std::string("2:1: unknown key \"listen_port\" in config (expected one of: ") +
             kKnownRootKeys + ")"},
        {"an unknown key in a section", "http:\n  threads: 4\n  workers: 2\n",
         "3:3: unknown key \"workers\" in http (expected one of: body_limit, threads, "
         "max_connections, idle_timeout, request_timeout, max_pending_deliveries, tls)"},
        {"a duplicate key", "log:\n  level: info\n  level: debug\n",
         "3:3: duplicate key \"level\" (first at line 2)"},
        {"a root that is not a mapping", "listen here\n",
         "1:1: config: expected a mapping, got a scalar"},
        {"a section that is not a mapping", "log: debug\n",
         "1:6: log: expected a mapping, got a scalar"},
        {"a list where a string belongs", "listen: [a, b]\n",
         "1:9: listen: expected a string, got a list"},
        {"a bad duration", "runs:\n  default_step_timeout: 5 minutes\n",
         "2:25: runs.default_step_timeout: \"5 minutes\" is not a positive duration (write e.g. "
         "500ms, 30s, 5m, 1h30m)"},
        {"a zero duration", "exec:\n  kill_grace: 0ms\n",
         "2:15: exec.kill_grace: \"0ms\" is not a positive duration (write e.g. 500ms, 30s, 5m, "
         "1h30m)"},
        {"a bad size", "http:\n  body_limit: 8MB\n",
         "2:15: http.body_limit: \"8MB\" is not a size (write e.g. 8MiB, 512KiB or a number of "
         "bytes)"},
        {"a zero size", "exec:\n  output_excerpt: 0\n",
         "2:19: exec.output_excerpt: \"0\" is not a size (write e.g. 8MiB, 512KiB or a number of "
         "bytes)"},
        {"a count out of range", "http:\n  threads: 65\n",
         "2:12: http.threads: expected a whole number from 1 to 64, got \"65\""},
        {"a count that is not a number", "runs:\n  max_concurrent: many\n",
         "2:19: runs.max_concurrent: expected a whole number from 1 to 10000, got \"many\""},
        {"a process cap out of range", "exec:\n  max_processes: 0\n",
         "2:18: exec.max_processes: expected a whole number from 1 to 100000, got \"0\""},
        {"a bad synchronous mode", "store:\n  synchronous: extra\n",
         "2:16: store.synchronous: expected full or normal, got \"extra\""},
        {"a zero batch", "store:\n  max_batch: 0\n",
         "2:14: store.max_batch: expected a whole number from 1 to 100000, got \"0\""},
    };

    for (const auto& c : cases) {
        CAPTURE(c.what, c.text);
        TempDir dir;
        Config config;

        const auto status = load(dir, c.text, config);

        REQUIRE_FALSE(status.ok());
        CHECK(status.error().code == runbookd::ErrorCode::InvalidArgument);
        CHECK(status.error().describe() == config_path(dir) + ":" + c.error);
    }
}

TEST_CASE("every error in a config file is reported, one per line", "[config]") {
    TempDir dir;
    Config config;

    const auto status =
        load(dir, "colour: red\nhttp:\n  body_limit: lots\nruns:\n  shutdown_grace: 1y\n", config);

    REQUIRE_FALSE(status.ok());
    const std::string path = config_path(dir);
    CHECK(status.error().describe() ==
          path + ":1:1: unknown key \"colour\" in config (expected one of: " + kKnownRootKeys +
              ")\n" + path +
              ":3:15: http.body_limit: \"lots\" is not a size (write e.g. 8MiB, 512KiB or a "
              "number of bytes)\n" +
              path +
              ":5:19: runs.shutdown_grace: \"1y\" is not a positive duration (write e.g. 500ms, "
              "30s, 5m, 1h30m)");
}

TEST_CASE("a config file with a YAML syntax error names the position", "[config]") {
    TempDir dir;
    Config config;

    const auto status = load(dir, "log:\n  level: [debug\n", config);

    REQUIRE_FALSE(status.ok());
    CHECK(status.error().where == config_path(dir) + ":3:1");
    CHECK(status.error().message == "YAML syntax error: end of sequence flow not found");
}

TEST_CASE("a config file that cannot be read is an error", "[config]") {
    TempDir dir;
    Config config;
    const std::string path = dir.file("missing.yaml");

    const auto status = load_config_file(path, config);

    REQUIRE_FALSE(status.ok());
    CHECK(status.error().message ==
          "cannot read config file " + path + ": No such file or directory");
}

TEST_CASE("parse_listen splits host and port", "[config]") {
    struct Case {
        std::string listen;
        std::string host;
        std::uint16_t port;
    };
    const std::vector<Case> cases = {
        {"127.0.0.1:9095", "127.0.0.1", 9095},
        {"[::1]:80", "::1", 80},
        {"[::]:9095", "::", 9095},
        {":9095", "0.0.0.0", 9095},
        {"localhost:0", "localhost", 0},
        {"0.0.0.0:65535", "0.0.0.0", 65535},
    };

    for (const auto& c : cases) {
        CAPTURE(c.listen);
        std::string host = "unset";
        std::uint16_t port = 1;

        const auto status = parse_listen(c.listen, host, port);

        REQUIRE(status.ok());
        CHECK(host == c.host);
        CHECK(port == c.port);
    }
}

TEST_CASE("parse_listen rejects an address without a valid port", "[config]") {
    struct Case {
        std::string listen;
        std::string message;
    };
    const std::vector<Case> cases = {
        {"localhost", "listen address \"localhost\" needs HOST:PORT"},
        {"", "listen address \"\" needs HOST:PORT"},
        {"127.0.0.1:", "listen address \"127.0.0.1:\": bad port \"\""},
        {"127.0.0.1:http", "listen address \"127.0.0.1:http\": bad port \"http\""},
        {"127.0.0.1:65536", "listen address \"127.0.0.1:65536\": bad port \"65536\""},
        {"127.0.0.1:-1", "listen address \"127.0.0.1:-1\": bad port \"-1\""},
        {"127.0.0.1:+80", "listen address \"127.0.0.1:+80\": bad port \"+80\""},
        {"127.0.0.1:80 ", "listen address \"127.0.0.1:80 \": bad port \"80 \""},
        {"127.0.0.1:99999999999",
         "listen address \"127.0.0.1:99999999999\": bad port "
         "\"99999999999\""},
        {"[::1]", "listen address \"[::1]\": bad port \"1]\""},
    };

    for (const auto& c : cases) {
        CAPTURE(c.listen);
        std::string host = "unset";
        std::uint16_t port = 1;

        const auto status = parse_listen(c.listen, host, port);

        REQUIRE_FALSE(status.ok());
        CHECK(status.error().message == c.message);
        CHECK(host == "unset");
        CHECK(port == 1);
    }
}

TEST_CASE("parse_byte_size reads binary units and plain byte counts", "[config]") {
    struct Case {
        std::string text;
        std::optional<std::size_t> bytes;
    };
    const std::vector<Case> cases = {
        {"0", 0},
        {"100", 100},
        {"100B", 100},
        {"512KiB", 512 * 1024},
        {"8MiB", 8 * 1024 * 1024},
        {"1GiB", std::size_t{1024} * 1024 * 1024},
        {"", std::nullopt},
        {"MiB", std::nullopt},
        {"8 MiB", std::nullopt},
        {"8mib", std::nullopt},
        {"8MB", std::nullopt},
        {"8KB", std::nullopt},
        {"8MiBs", std::nullopt},
        {"1.5MiB", std::nullopt},
        {"-1", std::nullopt},
        {" 8MiB", std::nullopt},
        {"18446744073709551615GiB", std::nullopt},
        {"17179869184GiB", std::nullopt},
        {"99999999999999999999", std::nullopt},
    };

    for (const auto& c : cases) {
        CAPTURE(c.text);

        const auto bytes = parse_byte_size(c.text);

        CHECK(bytes == c.bytes);
    }
}

TEST_CASE("a typo in a section does not hide its other errors, listed in line order", "[config]") {
    TempDir dir;
    Config config;

    const auto status = load(dir,
                             "http:\n  threads: 0\nruns:\n  max_concurent: 2\n"
                             "  shutdown_grace: soon\nexec:\n  nice: 25\n",
                             config);

    REQUIRE_FALSE(status.ok());
    const std::string file = config_path(dir);
    CHECK(status.error().message ==
          file + ":2:12: http.threads: expected a whole number from 1 to 64, got \"0\"\n" + file +
              ":4:3: unknown key \"max_concurent\" in runs (expected one of: max_concurrent, "
              "max_queued, "
              "default_step_timeout, default_run_timeout, shutdown_grace)\n" +
              file +
              ":5:19: runs.shutdown_grace: \"soon\" is not a positive duration (write e.g. "
              "500ms, 30s, 5m, 1h30m)\n" +
              file + ":7:9: exec.nice: expected a whole number from 0 to 19, got \"25\"");
}

TEST_CASE("secrets are read from files and variables at start, by name", "[config][secrets]") {
    TempDir dir;
    write_file(dir.path() / "etc" / "token", "s3cr3t-from-file\n");
    ::setenv("RUNBOOKD_TEST_SECRET", "s3cr3t-from-env", 1);
    Config config;
    REQUIRE(load(dir,
                 "secrets:\n"
                 "  api_token: {file: token}\n"
                 "  db-password: {env: RUNBOOKD_TEST_SECRET}\n",
                 config)
                .ok());

    auto values = runbookd::daemon::read_secrets(config.secrets);

    REQUIRE(values.ok());
    CHECK(*values == runbookd::daemon::SecretValues{{"api_token", "s3cr3t-from-file"},
                                                    {"db-password", "s3cr3t-from-env"}});
    CHECK(config.secrets[0].file == (dir.path() / "etc" / "token").string());
}

TEST_CASE("a secret that cannot be read stops the start, naming it and its source",
          "[config][secrets]") {
    TempDir dir;
    ::unsetenv("RUNBOOKD_TEST_UNSET");
    write_file(dir.path() / "empty", "\n");

    auto missing_file = runbookd::daemon::read_secrets({{"api", dir.file("none"), ""}});
    auto unset = runbookd::daemon::read_secrets({{"db", "", "RUNBOOKD_TEST_UNSET"}});
    auto empty = runbookd::daemon::read_secrets({{"blank", dir.file("empty"), ""}});

    REQUIRE_FALSE(missing_file.ok());
    CHECK(missing_file.error().message ==
          "secret \"api\": cannot read file " + dir.file("none") + ": No such file or directory");
    REQUIRE_FALSE(unset.ok());
    CHECK(unset.error().message ==
          "secret \"db\": environment variable RUNBOOKD_TEST_UNSET is not set");
    REQUIRE_FALSE(empty.ok());
    CHECK(empty.error().message == "secret \"blank\": file " + dir.file("empty") + " is empty");
}

TEST_CASE("a secret entry must name exactly one source", "[config][secrets]") {
    TempDir dir;
    Config config;

    auto s = load(dir,
                  "secrets:\n"
                  "  both: {file: a, env: B}\n"
                  "  neither: {}\n"
                  "  \"bad name\": {env: X}\n"
                  "  other: {vault: x}\n",
                  config);

    REQUIRE_FALSE(s.ok());
    const auto path = config_path(dir);
    CHECK_THAT(s.error().message,
               Catch::Contains(path + ":2:9: secrets.both: expected exactly one of file or env"));
    CHECK_THAT(
        s.error().message,
        Catch::Contains(path + ":3:12: secrets.neither: expected exactly one of file or env"));
    CHECK_THAT(s.error().message,
               Catch::Contains(path + ":4:3: secrets: \"bad name\" is not a valid secret name"));
    CHECK_THAT(s.error().message, Catch::Contains(path + ":5:11: unknown key \"vault\""));
}
