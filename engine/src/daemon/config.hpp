#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <runbookd/result.hpp>
#include <runbookd/runbook.hpp>
#include <runbookd/timestamp.hpp>

#include "http/message.hpp"
#include "intake/alertmanager_intake.hpp"
#include "python/pool.hpp"
#include "run/argv_executor.hpp"
#include "run/scheduler.hpp"

namespace runbookd::daemon {

// One entry of the config's `secrets:` map: where runbookd reads the value at start.
struct SecretSource {
    std::string name;
    std::string file;  // exactly one of file and env is set
    std::string env;
};

// Everything runbookd can be told, from the YAML file given with --config and from flags
// (flags win). Defaults are documented in docs/configuration.md.
struct Config {
    std::string listen = "127.0.0.1:9095";
    std::string runbooks_dir = "runbooks";
    std::string db_path = "runbookd.db";
    std::string log_level = "info";
    std::string log_format = "text";

    http::ServerOptions http;  // host and port come from `listen`
    // http.max_pending_deliveries and runs.max_queued: when the webhook answers 503 overloaded.
    intake::IntakeLimits intake;
    run::SchedulerOptions runs;
    run::ProcessDefaults process;
    std::size_t max_processes = 256;  // exec.max_processes: step processes running at once
    // Not read from the file. The daemon makes itself a child subreaper and kills every child
    // that is not a running step; a test embedding the daemon next to children of its own
    // turns this off.
    bool reap_orphans = true;
    // Not read from the file: the time the intake stamps on each delivery, which decides
    // cooldowns and budgets. Empty: the system clock. Tests set it to step over boundaries.
    std::function<Timestamp()> clock;
    Duration shutdown_grace{20'000};
    bool synchronous_full = true;
    int busy_timeout_ms = 5000;
    std::vector<SecretSource> secrets;
    // auth.tokens_file: the principals allowed to use the API (docs/auth.md). Empty: the API is
    // open and runbookd only listens on loopback.
    std::string tokens_file;
    // store.max_batch: writes committed together at most (1: one commit per write).
    std::size_t max_batch = 256;
    // python: the worker pool. An empty `worker` means runbookd-python-worker next to the
    // runbookd executable; the daemon fills in runbooks_dir, env, cwd, grace and nice.
    python::PoolOptions python;
};

// A secret's name and value, as read at start.
using SecretValues = std::vector<std::pair<std::string, std::string>>;

// Reads every configured secret: a file's content without one trailing newline, or an
// environment variable of runbookd. A missing or unreadable file, an unset variable, an empty
// value or one holding a NUL byte is an error naming the secret and its source.
Result<SecretValues> read_secrets(const std::vector<SecretSource>& sources);

// Reads a config file over `config`. Every problem is reported as "file:line:column: message".
Status load_config_file(const std::string& path, Config& config);

// Splits "HOST:PORT" ("127.0.0.1:9095", "[::1]:9095", ":9095" for all addresses).
Status parse_listen(std::string_view listen, std::string& host, std::uint16_t& port);

// Parses "8MiB", "512KiB", "1GiB" or a plain number of bytes.
std::optional<std::size_t> parse_byte_size(std::string_view text);

}  // namespace runbookd::daemon
