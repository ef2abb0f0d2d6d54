#include "support/support.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.hpp"

extern char** environ;

namespace runbookd::test {
namespace {

// Tests log at warn unless RUNBOOKD_TEST_LOG says otherwise (e.g. "debug").
struct LogSetup {
    LogSetup() {
        const char* level = std::getenv("RUNBOOKD_TEST_LOG");
        (void)log::setup(level != nullptr ? level : "warn", log::Format::Text);
    }
};
const LogSetup log_setup;

}  // namespace

TempDir::TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string pattern = std::string(base != nullptr ? base : "/tmp") + "/runbookd-test-XXXXXX";
    if (::mkdtemp(pattern.data()) == nullptr) {
        throw std::runtime_error(fmt::format("mkdtemp failed: {}", std::strerror(errno)));
    }
    path_ = pattern;
}

TempDir::~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
}

void write_file(const std::filesystem::path& path, const std::string& text) {
    std::filesystem::create_directories(path.parent_path());
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) {
        throw std::runtime_error("cannot write " + path.string());
    }
}

std::string read_file(const std::filesystem::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) {
        throw std::runtime_error("cannot read " + path.string());
    }
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
}

std::string fixture(const std::string& relative) {
    return read_file(std::filesystem::path(RUNBOOKD_FIXTURES_DIR) / relative);
}

bool process_running(pid_t pid) {
    if (::kill(pid, 0) != 0) {
        return false;
    }
    try {
        const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
        const auto close = stat.rfind(')');
        return close == std::string::npos || stat.size() <= close + 2 || stat[close + 2] != 'Z';
    } catch (const std::exception&) {
        return false;  // gone between the two looks
    }
}

Result<http::ClientResponse> post_notification(const std::string& base_url,
                                               const std::string& body) {
    return http::send_request("POST", base_url + "/api/v1/webhooks/alertmanager", body,
                              {{"Content-Type", "application/json"}});
}

bool wait_ready(const std::string& base_url, std::chrono::milliseconds timeout) {
    return wait_until([&] { return http::send_request("GET", base_url + "/").ok(); }, timeout);
}

bool wait_until(const std::function<bool()>& condition, std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (condition()) {
            return true;
        }
        if (std::chrono::steady_clock::now() >= deadline) {
            return false;
        }
        std::this_thread::sleep_for(20ms);
    }
}

std::uint16_t free_tcp_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    socklen_t len = sizeof addr;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        throw std::runtime_error(fmt::format("cannot find a free port: {}", std::strerror(errno)));
    }
    const std::uint16_t port = ntohs(addr.sin_port);
    ::close(fd);
    return port;
}

Subprocess::Subprocess(std::vector<std::string> argv, const std::string& log_file,
                       std::vector<std::string> extra_env) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                     0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK);
    posix_spawnattr_setpgroup(&attr, 0);
    sigset_t none;
    sigemptyset(&none);
    posix_spawnattr_setsigmask(&attr, &none);

    std::vector<char*> args;
    for (auto& a : argv) {
        args.push_back(a.data());
    }
    args.push_back(nullptr);
    std::vector<std::string> env_storage;
    for (char** e = environ; *e != nullptr; ++e) {
        env_storage.emplace_back(*e);
    }
    for (auto& e : extra_env) {
        env_storage.push_back(std::move(e));
    }
    std::vector<char*> envp;
    for (auto& e : env_storage) {
        envp.push_back(e.data());
    }
    envp.push_back(nullptr);

    const int rc = ::posix_spawn(&pid_, args[0], &actions, &attr, args.data(), envp.data());
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (rc != 0) {
        throw std::runtime_error(fmt::format("cannot start {}: {}", argv[0], std::strerror(rc)));
    }
}

Subprocess::~Subprocess() {
    stop();
}

bool Subprocess::running() {
    if (status_) {
        return false;
    }
    int status = 0;
    const pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
        status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        return false;
    }
    return r == 0;
}

void Subprocess::signal(int sig) {
    if (running()) {
        ::kill(pid_, sig);
    }
}

std::optional<int> Subprocess::wait(std::chrono::milliseconds timeout) {
    wait_until([this] { return !running(); }, timeout);
    return status_;
}

void Subprocess::stop(std::chrono::milliseconds grace) {
    if (pid_ <= 0 || status_) {
        return;
    }
    if (running()) {
        ::kill(-pid_, SIGTERM);
        if (!wait(grace)) {
            ::kill(-pid_, SIGKILL);
            wait(5s);
        }
    }
    // Anything the process left in its group goes too.
    ::kill(-pid_, SIGKILL);
}

std::vector<std::vector<std::string>> query(const std::string& db_path, const std::string& sql) {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(db_path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
        std::string message = sqlite3_errmsg(db);
        sqlite3_close(db);
        throw std::runtime_error("cannot open " + db_path + ": " + message);
    }
    sqlite3_busy_timeout(db, 5000);
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
        std::string message = sqlite3_errmsg(db);
        sqlite3_close(db);
        throw std::runtime_error("bad query " + sql + ": " + message);
    }
    std::vector<std::vector<std::string>> rows;
    while (sqlite3_step(stmt) == SQLITE_ROW) {
        std::vector<std::string> row;
        for (int i = 0; i < sqlite3_column_count(stmt); ++i) {
            if (sqlite3_column_type(stmt, i) == SQLITE_NULL) {
                row.emplace_back("NULL");
            } else {
                const auto* data = sqlite3_column_blob(stmt, i);
                const int size = sqlite3_column_bytes(stmt, i);
                row.emplace_back(data == nullptr ? ""
                                                 : std::string(static_cast<const char*>(data),
                                                               static_cast<std::size_t>(size)));
            }
        }
        rows.push_back(std::move(row));
    }
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return rows;
}

std::string query_value(const std::string& db_path, const std::string& sql) {
    auto rows = query(db_path, sql);
    if (rows.size() != 1 || rows[0].size() != 1) {
        throw std::runtime_error(
            fmt::format("expected one value from {}, got {} rows", sql, rows.size()));
    }
    return rows[0][0];
}

std::string firing_notification(const std::string& alertname, const std::string& instance) {
    return fmt::format(R"({{"version":"4","status":"firing","receiver":"r","groupKey":"g",
        "alerts":[{{"status":"firing","labels":{{"alertname":"{}","instance":"{}"}},
        "annotations":{{}},"startsAt":"2026-12-04T15:00:00Z",
        "endsAt":"0001-01-01T00:00:00Z"}}]}})",
                       alertname, instance);
}

std::string gated_runbook(const std::string& gate_file) {
    return fmt::format(R"(name: gated
matchers: ['alertname="Gated"']
steps:
  - name: wait-for-gate
    argv: [/bin/sh, -c, 'while [ ! -e {} ]; do sleep 0.05; done; echo through the gate']
  - name: after
    argv: [/bin/echo, after the gate]
)",
                       gate_file);
}

TestDaemon::TestDaemon(const RunbookFiles& runbooks, std::function<void(daemon::Config&)> adjust) {
    std::filesystem::create_directories(dir_.path() / "runbooks");
    for (const auto& [name, text] : runbooks) {
        write_file(dir_.path() / "runbooks" / name, text);
    }
    db_path_ = dir_.file("runbookd.db");
    daemon::Config config;
    config.listen = "127.0.0.1:0";
    config.runbooks_dir = dir_.file("runbooks");
    config.db_path = db_path_;
    config.shutdown_grace = 2s;
    // The test process has children of its own (Alertmanager, helpers) that must survive.
    config.reap_orphans = false;
    if (adjust) {
        adjust(config);
    }
    daemon_ = std::make_unique<daemon::Daemon>(config);
    if (auto s = daemon_->start(); !s) {
        throw std::runtime_error("runbookd did not start: " + s.error().describe());
    }
}

TestDaemon::~TestDaemon() {
    daemon_->shutdown();
}

std::string TestDaemon::url(const std::string& path) const {
    return fmt::format("http://127.0.0.1:{}{}", daemon_->port(), path);
}

Result<http::ClientResponse> TestDaemon::get(const std::string& path) const {
    return http::send_request("GET", url(path));
}

Result<http::ClientResponse> TestDaemon::post(const std::string& path, const std::string& body,
                                              const std::string& content_type) const {
    std::vector<std::pair<std::string, std::string>> headers;
    if (!content_type.empty()) {
        headers.emplace_back("Content-Type", content_type);
    }
    return http::send_request("POST", url(path), body, headers);
}

bool TestDaemon::wait_runs_finished(std::chrono::milliseconds timeout) const {
    return wait_until(
        [this] {
            return query_value(db_path_,
                               "SELECT count(*) FROM runs WHERE state IN ('queued', "
                               "'running')") == "0";
        },
        timeout);
}

bool wait_query_value(const std::string& db_path, const std::string& sql,
                      const std::string& expected, std::chrono::milliseconds timeout) {
    return wait_until([&] { return query_value(db_path, sql) == expected; }, timeout);
}

CommandResult run_command(std::vector<std::string> argv) {
    TempDir dir;
    const std::string log = dir.file("out.log");
    Subprocess process(std::move(argv), log);
    const auto code = process.wait(20s);
    return {code.value_or(-1), read_file(log)};
}

RunbookdProcess::RunbookdProcess(const RunbookFiles& runbooks, const std::string& config_yaml,
                                 const std::string& db_path)
    : port_(free_tcp_port()), db_path_(db_path.empty() ? dir_.file("runbookd.db") : db_path) {
    std::filesystem::create_directories(dir_.path() / "runbooks");
    for (const auto& [name, text] : runbooks) {
        write_file(dir_.path() / "runbooks" / name, text);
    }
    write_file(dir_.file("runbookd.yaml"), config_yaml);
    process_ = std::make_unique<Subprocess>(
        std::vector<std::string>{RUNBOOKD_BINARY, "--config", dir_.file("runbookd.yaml"),
                                 "--listen", fmt::format("127.0.0.1:{}", port_), "--runbooks",
                                 dir_.file("runbooks"), "--db", db_path_},
        dir_.file("runbookd.log"));
}

std::string RunbookdProcess::url(const std::string& path) const {
    return fmt::format("http://127.0.0.1:{}{}", port_, path);
}

bool RunbookdProcess::wait_ready(std::chrono::milliseconds timeout) const {
    return wait_until(
        [this] {
            auto r = get("/readyz");
            return r.ok() && r->status == 200;
        },
        timeout);
}

Result<http::ClientResponse> RunbookdProcess::get(const std::string& path) const {
    return http::send_request("GET", url(path));
}

Result<http::ClientResponse> RunbookdProcess::post(const std::string& path,
                                                   const std::string& body) const {
    return http::send_request("POST", url(path), body, {{"Content-Type", "application/json"}});
}

}  // namespace runbookd::test
