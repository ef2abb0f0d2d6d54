#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <sys/types.h>

#include "daemon/config.hpp"
#include "daemon/daemon.hpp"
#include "http/client.hpp"

// Helpers shared by the tests: temporary directories, real child processes stopped by PID,
// an in-process runbookd on a free loopback port, and direct reads of SQLite files.
namespace runbookd::test {

using namespace std::chrono_literals;

// A fresh directory under $TMPDIR, removed with everything in it when the object goes.
class TempDir {
  public:
    TempDir();
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    const std::filesystem::path& path() const { return path_; }
    std::string file(const std::string& name) const { return (path_ / name).string(); }

  private:
    std::filesystem::path path_;
};

void write_file(const std::filesystem::path& path, const std::string& text);
std::string read_file(const std::filesystem::path& path);
// A file under tests/fixtures.
std::string fixture(const std::string& relative);

// Polls `condition` every 20 ms until it holds or `timeout` passes; returns whether it held.
bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout);

// True while `pid` runs: it exists and is not a zombie waiting for a parent to reap it.
bool process_running(pid_t pid);

// A TCP port on 127.0.0.1 that was free a moment ago (for programs that cannot report the
// port they bound).
std::uint16_t free_tcp_port();

// A child process in its own process group, started by the test and stopped by PID (the group
// gets SIGTERM, then SIGKILL) when the object goes.
class Subprocess {
  public:
    // Starts argv with stdout and stderr appended to `log_file`. Extra environment entries
    // ("NAME=value") are added to the test's own environment.
    Subprocess(std::vector<std::string> argv, const std::string& log_file,
               std::vector<std::string> extra_env = {});
    ~Subprocess();
    Subprocess(const Subprocess&) = delete;
    Subprocess& operator=(const Subprocess&) = delete;

    pid_t pid() const { return pid_; }
    bool running();
    // Sends `sig` to the process (not the group).
    void signal(int sig);
    // Waits for exit; returns the exit code, 128+signal when killed, or nullopt on timeout.
    std::optional<int> wait(std::chrono::milliseconds timeout);
    // SIGTERM to the group, then SIGKILL after `grace`; reaps the process.
    void stop(std::chrono::milliseconds grace = 5s);

  private:
    pid_t pid_ = -1;
    std::optional<int> status_;
};

struct CommandResult {
    int exit_code = -1;  // -1: it did not exit within 20 s (then stopped)
    std::string output;  // stdout and stderr together
};

// Runs argv to completion (at most 20 s), by PID.
CommandResult run_command(std::vector<std::string> argv);

// Posts an Alertmanager notification (JSON text) to the webhook of the runbookd at `base_url`.
Result<http::ClientResponse> post_notification(const std::string& base_url,
                                               const std::string& body);
// Waits until the runbookd at `base_url` answers; returns whether it did within `timeout`.
bool wait_ready(const std::string& base_url, std::chrono::milliseconds timeout = 10s);

// Rows of a query on a SQLite file, every column as text ("NULL" for NULL).
std::vector<std::vector<std::string>> query(const std::string& db_path, const std::string& sql);
// The single value of a query returning one row and one column.
std::string query_value(const std::string& db_path, const std::string& sql);
// Waits until query_value(db_path, sql) is `expected`; returns whether it was within `timeout`.
bool wait_query_value(const std::string& db_path, const std::string& sql,
                      const std::string& expected, std::chrono::milliseconds timeout);

// Runbook files by name, as written to a test's runbooks directory.
using RunbookFiles = std::map<std::string, std::string>;

// An Alertmanager notification (payload v4) of one firing alert with the labels `alertname` and
// `instance`: a new episode for each instance.
std::string firing_notification(const std::string& alertname, const std::string& instance);

// Runbook `gated` for alerts named "Gated": step `wait-for-gate` runs until `gate_file` exists,
// then step `after` echoes. A test holds a run in progress this way and lets it go.
std::string gated_runbook(const std::string& gate_file);

// runbookd running inside the test process on a free loopback port, with its own directory
// holding `runbooks/` and the database.
class TestDaemon {
  public:
    // `runbooks` maps file names to YAML text.
    explicit TestDaemon(const RunbookFiles& runbooks,
                        std::function<void(daemon::Config&)> adjust = {});
    ~TestDaemon();

    std::string url(const std::string& path = "") const;
    const std::string& db() const { return db_path_; }
    const TempDir& dir() const { return dir_; }
    daemon::Daemon& daemon() { return *daemon_; }

    Result<http::ClientResponse> get(const std::string& path) const;
    Result<http::ClientResponse> post(const std::string& path, const std::string& body,
                                      const std::string& content_type = "application/json") const;

    // Waits until every run is finished (no run queued or running).
    bool wait_runs_finished(std::chrono::milliseconds timeout = 20s) const;

  private:
    TempDir dir_;
    std::string db_path_;
    std::unique_ptr<daemon::Daemon> daemon_;
};

// The runbookd binary as a child process of the test (its own process group, stopped by PID),
// on a free loopback port, in a directory of its own holding runbooks/, runbookd.yaml,
// runbookd.log and, unless `db_path` says otherwise, runbookd.db.
class RunbookdProcess {
  public:
    RunbookdProcess(const RunbookFiles& runbooks, const std::string& config_yaml = "",
                    const std::string& db_path = "");

    std::string url(const std::string& path = "") const;
    const std::string& db() const { return db_path_; }
    const TempDir& dir() const { return dir_; }
    Subprocess& process() { return *process_; }
    std::string log() const { return read_file(dir_.file("runbookd.log")); }

    // Waits until GET /readyz answers 200.
    bool wait_ready(std::chrono::milliseconds timeout = 15s) const;
    Result<http::ClientResponse> get(const std::string& path) const;
    Result<http::ClientResponse> post(const std::string& path, const std::string& body) const;

  private:
    TempDir dir_;
    std::uint16_t port_ = 0;
    std::string db_path_;
    std::unique_ptr<Subprocess> process_;
};

}  // namespace runbookd::test
