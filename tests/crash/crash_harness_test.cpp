// The crash harness: the real runbookd killed with SIGKILL at random instants while clients post
// distinct and duplicate notifications; then the promises of docs/intake.md and docs/runs.md are
// checked against the database, the steps' own files and /proc. Design: docs/crash-testing.md.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "exec/process.hpp"
#include "support/support.hpp"

namespace {

using namespace runbookd;
using namespace std::chrono_literals;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kDefaultKills = 50;
constexpr int kCooledInstances = 10;
const std::vector<std::string> kKinds = {"quick", "nap", "multi", "cooled", "resumed"};

// A whole number from the environment, or `fallback` when unset; a bad value stops the test
// with the variable named.
std::uint64_t env_number(const char* name, std::uint64_t fallback) {
    const char* text = std::getenv(name);
    if (text == nullptr || *text == '\0') {
        return fallback;
    }
    char* end = nullptr;
    const unsigned long long value = std::strtoull(text, &end, 10);
    if (*end != '\0') {
        throw std::runtime_error(fmt::format("{}=\"{}\": expected a whole number", name, text));
    }
    return value;
}

struct Settings {
    std::uint64_t seed = 0;
    std::uint64_t kills = kDefaultKills;
    bool keep = false;
};

Settings settings_from_env() {
    Settings s;
    s.seed = env_number("RUNBOOKD_CRASH_SEED", std::random_device{}());
    s.kills = env_number("RUNBOOKD_CRASH_KILLS", kDefaultKills);
    s.keep = env_number("RUNBOOKD_CRASH_KEEP", 0) != 0;
    return s;
}

// --- the runbooks ----------------------------------------------------------------------------

// Appends this step's line to the run's file: what the steps themselves saw run.
constexpr const char* kRecordLine =
    R"(printf '%s %s %s %s %s\n' "$RUNBOOK_RUNBOOK" "$RUNBOOK_ALERT_FINGERPRINT" )"
    R"("$RUNBOOK_LABEL_EPISODE" "$RUNBOOK_STEP" "$RUNBOOK_ATTEMPT" >> "$CRASH_OUT/$RUNBOOK_RUN_ID")";

std::string step_yaml(const std::string& name, bool nap, const std::string& env,
                      bool idempotent = false) {
    std::string script = nap ? "sleep \"$RUNBOOK_LABEL_NAP\"\n        " : "";
    script += kRecordLine;
    return fmt::format("  - name: {}\n{}    shell: |\n        {}\n    env: {}\n", name,
                       idempotent ? "    idempotent: true\n" : "", script, env);
}

test::RunbookFiles harness_runbooks(const std::string& marker, const std::string& out_dir) {
    const std::string env =
        fmt::format("{{CRASH_HARNESS_MARKER: \"{}\", CRASH_OUT: \"{}\"}}", marker, out_dir);
    const auto head = [](const std::string& kind) {
        return fmt::format("name: {0}\nmatchers: ['alertname=\"CrashHarness\"', 'kind=\"{0}\"']\n",
                           kind);
    };
    test::RunbookFiles files;
    files["quick.yaml"] = head("quick") + "steps:\n  - name: check\n    argv: [/bin/true]\n" +
                          "    env: " + env + "\n" + step_yaml("finish", false, env);
    files["nap.yaml"] = head("nap") + "steps:\n" + step_yaml("finish", true, env);
    files["multi.yaml"] = head("multi") + "steps:\n" + step_yaml("begin", false, env) +
                          step_yaml("nap", true, env) + step_yaml("finish", false, env);
    files["cooled.yaml"] = head("cooled") +
                           "dedup: \"{{ alert.labels.instance }}\"\ncooldown: 1h\nsteps:\n" +
                           step_yaml("finish", true, env);
    // A kill during `begin` resumes the run (the step runs again); during `finish` it ends
    // the run interrupted.
    files["resumed.yaml"] = head("resumed") + "steps:\n" + step_yaml("begin", true, env, true) +
                            step_yaml("finish", false, env);
    return files;
}

// --- the client: notifications, and which alerts were acknowledged ---------------------------

struct AlertSpec {
    int episode = 0;  // also the alert's `episode` label; later episodes start later
    std::string fingerprint;
    std::string starts_at;
    std::string kind;
    std::string instance;
    std::string nap;  // seconds, for `sleep`
};

struct Notification {
    std::vector<int> alerts;  // indexes into Traffic's alerts
    std::string body;
};

// What the clients send and what came back. Thread-safe.
class Traffic {
  public:
    explicit Traffic(std::uint64_t seed) : rng_(seed) {}

    // The next notification for client 0 or 1 to post.
    std::shared_ptr<const Notification> next(int client);
    void record(const Notification& n, const Result<http::ClientResponse>& answer);

    struct Counts {
        std::uint64_t posted = 0, acknowledged = 0, refused = 0, other_status = 0;
        std::uint64_t concurrent_pairs = 0;  // notifications both clients posted at once
    };
    Counts counts() const;
    // Copies, for the checks once the clients stopped.
    std::vector<AlertSpec> alerts() const;
    std::vector<bool> acknowledged() const;

  private:
    AlertSpec new_episode();
    std::shared_ptr<Notification> make_notification(std::vector<int> alerts) const;

    mutable std::mutex mu_;
    std::mt19937_64 rng_;
    std::vector<AlertSpec> alerts_;
    std::vector<bool> acknowledged_;
    std::vector<std::shared_ptr<Notification>> sent_;
    std::shared_ptr<Notification> twin_;  // for the other client too: a concurrent duplicate
    int twin_client_ = 0;                 // the client that drew it
    std::condition_variable twin_taken_;
    Counts counts_;
};

std::string starts_at_text(int episode) {
    const int day = 1 + episode / 86400;
    const int second = episode % 86400;
    return fmt::format("2026-11-{:02}T{:02}:{:02}:{:02}Z", day, second / 3600, second / 60 % 60,
                       second % 60);
}

AlertSpec Traffic::new_episode() {
    AlertSpec a;
    a.episode = static_cast<int>(alerts_.size());
    a.starts_at = starts_at_text(a.episode);
    a.nap = fmt::format("0.{:03}", std::uniform_int_distribution<int>(50, 500)(rng_));
    if (!alerts_.empty() && std::bernoulli_distribution(0.15)(rng_)) {
        // The same alert fired again: a later episode of an earlier fingerprint.
        const auto& earlier =
            alerts_[std::uniform_int_distribution<std::size_t>(0, alerts_.size() - 1)(rng_)];
        a.fingerprint = earlier.fingerprint;
        a.kind = earlier.kind;
        a.instance = earlier.instance;
        return a;
    }
    a.fingerprint = fmt::format("c{:015x}", alerts_.size());
    a.kind = kKinds[std::uniform_int_distribution<std::size_t>(0, kKinds.size() - 1)(rng_)];
    const int host = std::uniform_int_distribution<int>(0, kCooledInstances - 1)(rng_);
    a.instance = a.kind == "cooled" ? fmt::format("host-{}", host) : "node-" + a.fingerprint;
    return a;
}

std::shared_ptr<Notification> Traffic::make_notification(std::vector<int> alerts) const {
    Json list = Json::array();
    for (const int i : alerts) {
        const AlertSpec& a = alerts_[static_cast<std::size_t>(i)];
        list.push_back({{"status", "firing"},
                        {"labels",
                         {{"alertname", "CrashHarness"},
                          {"kind", a.kind},
                          {"instance", a.instance},
                          {"episode", std::to_string(a.episode)},
                          {"nap", a.nap}}},
                        {"annotations", Json::object()},
                        {"startsAt", a.starts_at},
                        {"endsAt", "0001-01-01T00:00:00Z"},
                        {"generatorURL", "http://prometheus:9090/graph"},
                        {"fingerprint", a.fingerprint}});
    }
    auto n = std::make_shared<Notification>();
    n->alerts = std::move(alerts);
    const Json body = {{"version", "4"},
                       {"receiver", "runbookd"},
                       {"status", "firing"},
                       {"groupKey", "{}:{alertname=\"CrashHarness\"}"},
                       {"alerts", std::move(list)},
                       {"truncatedAlerts", 0}};
    n->body = body.dump();
    return n;
}

std::shared_ptr<const Notification> Traffic::next(int client) {
    std::unique_lock lock(mu_);
    if (twin_ && twin_client_ != client) {
        ++counts_.concurrent_pairs;
        twin_taken_.notify_all();
        return std::exchange(twin_, nullptr);
    }
    if (!sent_.empty() && std::bernoulli_distribution(0.25)(rng_)) {
        // An exact re-send of an earlier notification, as Alertmanager does.
        return sent_[std::uniform_int_distribution<std::size_t>(0, sent_.size() - 1)(rng_)];
    }
    std::vector<int> indexes;
    const int count = std::uniform_int_distribution<int>(1, 3)(rng_);
    for (int i = 0; i < count; ++i) {
        alerts_.push_back(new_episode());
        acknowledged_.push_back(false);
        indexes.push_back(alerts_.back().episode);
    }
    auto n = make_notification(std::move(indexes));
    sent_.push_back(n);
    if (std::bernoulli_distribution(0.3)(rng_)) {
        // Both clients post it at once, like two Alertmanager peers: wait until the other one
        // has taken it (it may be stopping: then post it alone).
        twin_ = n;
        twin_client_ = client;
        if (!twin_taken_.wait_for(lock, 500ms, [this] { return twin_ == nullptr; })) {
            twin_ = nullptr;
        }
    }
    return n;
}

void Traffic::record(const Notification& n, const Result<http::ClientResponse>& answer) {
    std::lock_guard lock(mu_);
    ++counts_.posted;
    if (!answer) {
        ++counts_.refused;
        return;
    }
    if (answer->status < 200 || answer->status > 299) {
        ++counts_.other_status;
        return;
    }
    ++counts_.acknowledged;
    for (const int i : n.alerts) {
        acknowledged_[static_cast<std::size_t>(i)] = true;
    }
}

Traffic::Counts Traffic::counts() const {
    std::lock_guard lock(mu_);
    return counts_;
}

std::vector<AlertSpec> Traffic::alerts() const {
    std::lock_guard lock(mu_);
    return alerts_;
}

std::vector<bool> Traffic::acknowledged() const {
    std::lock_guard lock(mu_);
    return acknowledged_;
}

// Two threads posting what Traffic hands out until stopped (also when the object goes).
class Clients {
  public:
    Clients(Traffic& traffic, std::string url, std::uint64_t seed) {
        for (int client = 0; client < 2; ++client) {
            threads_.emplace_back([this, &traffic, url, seed, client] {
                post_until_stopped(traffic, url, client, seed + static_cast<std::uint64_t>(client));
            });
        }
    }
    ~Clients() { stop(); }
    Clients(const Clients&) = delete;
    Clients& operator=(const Clients&) = delete;

    void stop() {
        stop_ = true;
        for (auto& t : threads_) {
            if (t.joinable()) {
                t.join();
            }
        }
    }

  private:
    void post_until_stopped(Traffic& traffic, const std::string& url, int client,
                            std::uint64_t seed) {
        std::mt19937_64 rng(seed);
        while (!stop_) {
            const auto n = traffic.next(client);
            traffic.record(*n, http::send_request("POST", url, n->body,
                                                  {{"Content-Type", "application/json"}}, 5s));
            std::this_thread::sleep_for(
                std::chrono::milliseconds(std::uniform_int_distribution<int>(30, 120)(rng)));
        }
    }

    std::atomic<bool> stop_{false};
    std::vector<std::thread> threads_;
};

// --- /proc: step processes carrying the marker -------------------------------------------------

struct MarkedProcess {
    pid_t pid = 0;
    std::uint64_t start_ticks = 0;
    std::map<std::string, std::string> env;  // RUNBOOK_RUN_ID, RUNBOOK_STEP, RUNBOOK_ATTEMPT, ...
};

// Live processes (not zombies) whose environment holds `entry` ("NAME=value"). Processes whose
// environ cannot be read (other users') are not seen.
std::vector<MarkedProcess> marked_processes(const std::string& entry) {
    std::vector<MarkedProcess> found;
    std::error_code ec;
    for (const auto& dir : std::filesystem::directory_iterator("/proc", ec)) {
        const std::string name = dir.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        std::string environ;
        try {
            environ = test::read_file(dir.path() / "environ");
        } catch (const std::exception&) {
            continue;
        }
        MarkedProcess p;
        bool marked = false;
        std::istringstream vars(environ);
        for (std::string var; std::getline(vars, var, '\0');) {
            marked = marked || var == entry;
            if (const auto eq = var.find('='); var.rfind("RUNBOOK_", 0) == 0 && eq != var.npos) {
                p.env[var.substr(0, eq)] = var.substr(eq + 1);
            }
        }
        p.pid = static_cast<pid_t>(std::stol(name));
        const auto ticks = exec::process_start_ticks(p.pid);
        if (marked && ticks && test::process_running(p.pid)) {
            p.start_ticks = *ticks;
            found.push_back(std::move(p));
        }
    }
    return found;
}

std::uint64_t uptime_ticks() {
    // Rounded, not truncated: 1234.57 s is 123457 ticks, not 123456.99...
    const double seconds = std::stod(test::read_file("/proc/uptime"));
    return static_cast<std::uint64_t>(
        std::llround(seconds * static_cast<double>(::sysconf(_SC_CLK_TCK))));
}

std::uint64_t ticks_to_ms(std::uint64_t ticks) {
    return ticks * 1000 / static_cast<std::uint64_t>(::sysconf(_SC_CLK_TCK));
}

// --- the harness -----------------------------------------------------------------------------

// Makes the test process a child subreaper and reaps, every 25 ms, the zombies of the steps a
// killed runbookd orphaned, as an init such as systemd does at once. Without it they go to
// PID 1, and an init that reaps late (seconds on some sandboxes) keeps their process groups
// alive as zombies, so that each recovery waits for them. runbookd itself is never reaped here:
// its Subprocess waits for it.
class OrphanReaper {
  public:
    OrphanReaper() {
        REQUIRE(::prctl(PR_SET_CHILD_SUBREAPER, 1) == 0);
        thread_ = std::thread([this] {
            while (!stop_) {
                reap_zombie_orphans();
                std::this_thread::sleep_for(25ms);
            }
        });
    }
    ~OrphanReaper() {
        stop_ = true;
        thread_.join();
        ::prctl(PR_SET_CHILD_SUBREAPER, 0);
        reap_zombie_orphans();
    }
    OrphanReaper(const OrphanReaper&) = delete;
    OrphanReaper& operator=(const OrphanReaper&) = delete;

  private:
    static void reap_zombie_orphans() {
        const std::string self = std::to_string(::getpid());
        std::error_code ec;
        for (const auto& dir : std::filesystem::directory_iterator("/proc", ec)) {
            std::string stat;
            try {
                stat = test::read_file(dir.path() / "stat");
            } catch (const std::exception&) {
                continue;
            }
            // pid (comm) state ppid ...
            const auto close = stat.rfind(')');
            const auto open = stat.find('(');
            if (close == std::string::npos || open == std::string::npos) {
                continue;
            }
            std::istringstream rest(stat.substr(close + 2));
            std::string state, ppid;
            rest >> state >> ppid;
            if (state == "Z" && ppid == self &&
                stat.substr(open + 1, close - open - 1) != "runbookd") {
                ::waitpid(static_cast<pid_t>(std::stol(stat)), nullptr, WNOHANG);
            }
        }
    }

    std::atomic<bool> stop_{false};
    std::thread thread_;
};

struct Summary {
    std::uint64_t kills = 0, kills_before_ready = 0;
    std::vector<std::int64_t> ready_ms;  // start to first answer, per start that answered
};

// Each broken promise, in words, with its evidence.
struct Findings {
    std::vector<std::string> integrity, leftovers, unacknowledged, duplicates, stuck;
    std::vector<std::string> exited;   // runbookd ended before the harness killed it
    std::vector<std::string> vacuous;  // the run proved nothing: no traffic, no kill mid-run
};

class Harness {
  public:
    explicit Harness(const Settings& settings);
    ~Harness();
    Harness(const Harness&) = delete;
    Harness& operator=(const Harness&) = delete;

    void run();
    const Findings& findings() const { return findings_; }

  private:
    std::vector<std::string> daemon_argv() const;
    bool answers() const;
    void kill_cycle(std::mt19937_64& rng);
    void check_integrity(const std::string& when);
    void find_leftovers(std::uint64_t started_before, const std::string& when);
    bool final_start_and_drain();
    void check_acknowledged();
    void check_once_per_episode();
    void check_step_files();
    void check_not_vacuous();
    void print_summary(double seconds);
    std::string log_tail() const;

    Settings settings_;
    Findings findings_;
    std::optional<test::TempDir> temp_;
    std::filesystem::path dir_;
    std::string db_, url_, marker_;
    std::uint16_t port_ = 0;
    Traffic traffic_;
    OrphanReaper reaper_;
    std::vector<std::uint64_t> kill_ticks_;  // uptime at each kill
    Summary summary_;
};

Harness::Harness(const Settings& settings) : settings_(settings), traffic_(settings.seed) {
    if (settings_.keep) {
        const char* base = std::getenv("TMPDIR");
        std::string pattern =
            std::string(base != nullptr ? base : "/tmp") + "/runbookd-crash-XXXXXX";
        REQUIRE(::mkdtemp(pattern.data()) != nullptr);
        dir_ = pattern;
    } else {
        temp_.emplace();
        dir_ = temp_->path();
    }
    db_ = (dir_ / "runbookd.db").string();
    marker_ = fmt::format("CRASH_HARNESS_MARKER={}-{}", ::getpid(), settings_.seed);
    std::filesystem::create_directories(dir_ / "out");
    for (const auto& [name, text] :
         harness_runbooks(marker_.substr(marker_.find('=') + 1), (dir_ / "out").string())) {
        test::write_file(dir_ / "runbooks" / name, text);
    }
    port_ = test::free_tcp_port();
    url_ = fmt::format("http://127.0.0.1:{}", port_);
}

Harness::~Harness() {
    // Never leave a step of this test behind, whatever failed.
    for (const auto& p : marked_processes(marker_)) {
        ::kill(p.pid, SIGKILL);
    }
    if (settings_.keep) {
        std::cout << "crash harness: kept " << dir_.string() << "\n";
    }
}

std::vector<std::string> Harness::daemon_argv() const {
    return {RUNBOOKD_BINARY,
            "--listen",
            fmt::format("127.0.0.1:{}", port_),
            "--runbooks",
            (dir_ / "runbooks").string(),
            "--db",
            db_,
            "--log-level",
            "warn"};
}

std::string Harness::log_tail() const {
    std::string log;
    try {
        log = test::read_file(dir_ / "runbookd.log");
    } catch (const std::exception& e) {
        return e.what();
    }
    return log.substr(log.size() > 2000 ? log.size() - 2000 : 0);
}

bool Harness::answers() const {
    auto r = http::send_request("GET", url_ + "/", {}, {}, 200ms);
    return r.ok() && r->status == 200;
}

void Harness::run() {
    const auto begin = Clock::now();
    std::cout << fmt::format("crash harness: seed={} kills={} dir={}\n", settings_.seed,
                             settings_.kills, dir_.string())
              << std::flush;
    std::mt19937_64 rng(settings_.seed ^ 0x5eedULL);
    {
        Clients clients(traffic_, url_ + "/api/v1/webhooks/alertmanager", settings_.seed + 1);
        for (std::uint64_t k = 0; k < settings_.kills; ++k) {
            kill_cycle(rng);
        }
    }
    if (!final_start_and_drain()) {
        return;
    }
    check_integrity("after the final shutdown");
    find_leftovers(std::numeric_limits<std::uint64_t>::max(), "after the final shutdown");
    check_acknowledged();
    check_once_per_episode();
    check_step_files();
    check_not_vacuous();
    print_summary(std::chrono::duration<double>(Clock::now() - begin).count());
}

// One start of runbookd and its SIGKILL: one in four within the first 120 ms (start-up and
// recovery take 20-80 ms in the dev build), the rest between 120 ms and 1.5 s.
void Harness::kill_cycle(std::mt19937_64& rng) {
    const auto delay =
        std::chrono::milliseconds(std::bernoulli_distribution(0.25)(rng)
                                      ? std::uniform_int_distribution<int>(0, 120)(rng)
                                      : std::uniform_int_distribution<int>(120, 1500)(rng));
    const auto started = Clock::now();
    test::Subprocess daemon(daemon_argv(), (dir_ / "runbookd.log").string());
    const auto daemon_ticks = exec::process_start_ticks(daemon.pid());
    test::write_file(dir_ / "runbookd.pid", std::to_string(daemon.pid()));  // for bench/
    bool ready = false;
    while (Clock::now() - started < delay) {
        if (!ready && answers()) {
            ready = true;
            summary_.ready_ms.push_back(
                std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started)
                    .count());
            find_leftovers(daemon_ticks.value_or(0),
                           fmt::format("after start {}", summary_.kills + 1));
        }
        std::this_thread::sleep_for(5ms);
    }
    if (!daemon.running()) {
        findings_.exited.push_back(
            fmt::format("start {}: runbookd exited with status {} before "
                        "the kill; its log ends:\n{}",
                        summary_.kills + 1, daemon.wait(0ms).value_or(-1), log_tail()));
    }
    daemon.signal(SIGKILL);
    kill_ticks_.push_back(uptime_ticks());
    REQUIRE(daemon.wait(10s).has_value());
    ++summary_.kills;
    summary_.kills_before_ready += ready ? 0 : 1;
    check_integrity(fmt::format("after kill {} ({} ms after start{})", summary_.kills,
                                delay.count(), ready ? "" : ", before it answered"));
}

void Harness::check_integrity(const std::string& when) {
    if (!std::filesystem::exists(db_)) {
        return;  // killed before it created the database
    }
    std::string result;
    try {
        result = test::query_value(db_, "PRAGMA integrity_check");
    } catch (const std::exception& e) {
        result = e.what();
    }
    if (result != "ok") {
        findings_.integrity.push_back(when + ": " + result);
    }
}

// Marked processes that started before `started_before` (clock ticks after boot) and still run:
// steps a killed runbookd left behind that recovery did not stop. Each is reported and killed.
void Harness::find_leftovers(std::uint64_t started_before, const std::string& when) {
    for (const auto& p : marked_processes(marker_)) {
        if (p.start_ticks > started_before) {
            continue;
        }
        // The first kill at or after its start orphaned it (times are in 10 ms ticks).
        const auto killed_at =
            std::lower_bound(kill_ticks_.begin(), kill_ticks_.end(), p.start_ticks);
        const std::string ran =
            killed_at != kill_ticks_.end()
                ? fmt::format("had run {} ms at kill {}", ticks_to_ms(*killed_at - p.start_ticks),
                              killed_at - kill_ticks_.begin() + 1)
            : kill_ticks_.empty()
                ? "started before any kill"
                : fmt::format("started {} ms after kill {}",
                              ticks_to_ms(p.start_ticks - kill_ticks_.back()), kill_ticks_.size());
        std::string recorded = "no attempt row";
        const auto run = p.env.count("RUNBOOK_RUN_ID") ? p.env.at("RUNBOOK_RUN_ID") : "?";
        try {
            const auto rows = test::query(
                db_, fmt::format("SELECT coalesce(pid, 'no pid'), state FROM attempts WHERE "
                                 "run_id = {} AND step = '{}' AND attempt = {}",
                                 std::stoll(run), p.env.at("RUNBOOK_STEP"),
                                 std::stoll(p.env.at("RUNBOOK_ATTEMPT"))));
            if (!rows.empty()) {
                recorded = fmt::format("attempt row pid={} state={}", rows[0][0], rows[0][1]);
            }
        } catch (const std::exception& e) {
            recorded = e.what();
        }
        findings_.leftovers.push_back(fmt::format(
            "{}: pid {} run {} step {} attempt {}: {}; {}", when, p.pid, run,
            p.env.count("RUNBOOK_STEP") ? p.env.at("RUNBOOK_STEP") : "?",
            p.env.count("RUNBOOK_ATTEMPT") ? p.env.at("RUNBOOK_ATTEMPT") : "?", ran, recorded));
        ::kill(p.pid, SIGKILL);
    }
}

// Whether runbookd answered after the last start (the checks of the database need it).
bool Harness::final_start_and_drain() {
    test::Subprocess daemon(daemon_argv(), (dir_ / "runbookd.log").string());
    const auto daemon_ticks = exec::process_start_ticks(daemon.pid());
    test::write_file(dir_ / "runbookd.pid", std::to_string(daemon.pid()));
    if (!test::wait_until([this] { return answers(); }, 30s)) {
        findings_.stuck.push_back(
            "runbookd did not answer within 30 s of the last start; its log "
            "ends:\n" +
            log_tail());
        return false;
    }
    find_leftovers(daemon_ticks.value_or(0), "after the final start");
    const auto unfinished = [this] {
        return test::query_value(db_,
                                 "SELECT count(*) FROM runs WHERE state IN ('queued', "
                                 "'running')");
    };
    if (!test::wait_until([&] { return unfinished() == "0"; }, 60s)) {
        findings_.stuck.push_back(unfinished() +
                                  " runs still queued or running 60 s after the last start");
    }
    daemon.signal(SIGTERM);
    const auto code = daemon.wait(30s);
    if (code != 0) {
        findings_.stuck.push_back(fmt::format("the final SIGTERM: exit status {}",
                                              code ? std::to_string(*code) : "none within 30 s"));
    }
    return true;
}

// Every alert of a 2xx delivery is in `alerts` with an outcome its runbook explains.
void Harness::check_acknowledged() {
    std::map<std::string, std::vector<std::string>> outcomes;  // episode -> outcomes
    for (auto& row :
         test::query(db_, "SELECT json_extract(labels, '$.episode'), outcome FROM alerts")) {
        outcomes[row[0]].push_back(row[1]);
    }
    // Runbook and fingerprint -> the latest episode that started a run; cooled instances run.
    std::map<std::pair<std::string, std::string>, int> latest;
    std::set<std::string> cooled_ran;
    for (auto& row :
         test::query(db_,
                     "SELECT r.runbook, a.fingerprint, json_extract(a.labels, '$.episode'), "
                     "json_extract(a.labels, '$.instance') FROM episodes e JOIN runs r ON r.id = "
                     "e.run_id JOIN alerts a ON a.id = r.alert_id")) {
        int& e = latest[{row[0], row[1]}];
        e = std::max(e, std::stoi(row[2]) + 1);
        if (row[0] == "cooled") {
            cooled_ran.insert(row[3]);
        }
    }
    const auto alerts = traffic_.alerts();
    const auto acked = traffic_.acknowledged();
    for (std::size_t i = 0; i < alerts.size(); ++i) {
        if (!acked[i]) {
            continue;
        }
        const AlertSpec& a = alerts[i];
        const auto& seen = outcomes[std::to_string(a.episode)];
        const bool covered = latest[{a.kind, a.fingerprint}] > a.episode ||
                             (a.kind == "cooled" && cooled_ran.count(a.instance) != 0);
        std::string wrong;
        for (const auto& o : seen) {
            if (o != "run_started" && o != "duplicate" &&
                !(o == "cooldown" && a.kind == "cooled")) {
                wrong = o;
            }
        }
        if (seen.empty() || !covered || !wrong.empty()) {
            findings_.unacknowledged.push_back(fmt::format(
                "episode {} (fingerprint {}, startsAt {}, runbook {}) was acknowledged but has {} "
                "alert rows{}{}",
                a.episode, a.fingerprint, a.starts_at, a.kind, seen.size(),
                covered ? "" : ", no run of its runbook for it or a later episode",
                wrong.empty() ? "" : ", outcome " + wrong));
        }
    }
}

// The database's side: one run per (runbook, episode), one per cooled instance.
void Harness::check_once_per_episode() {
    for (auto& row :
         test::query(db_,
                     "SELECT r.runbook, a.fingerprint, a.starts_at, group_concat(r.id) FROM runs r "
                     "JOIN alerts a ON a.id = r.alert_id GROUP BY 1, 2, 3 HAVING count(*) > 1")) {
        findings_.duplicates.push_back(
            fmt::format("runbook {} episode ({}, {}) has runs {}", row[0], row[1], row[2], row[3]));
    }
    for (auto& row :
         test::query(db_,
                     "SELECT json_extract(a.labels, '$.instance'), group_concat(r.id) FROM runs r "
                     "JOIN alerts a ON a.id = r.alert_id WHERE r.runbook = 'cooled' GROUP BY 1 "
                     "HAVING count(*) > 1")) {
        findings_.duplicates.push_back(fmt::format(
            "cooled instance {} ran twice within its cooldown: runs {}", row[0], row[1]));
    }
}

// The steps' side: what they appended to out/<run id>.
void Harness::check_step_files() {
    std::map<std::string, std::vector<std::string>> runs;  // run id -> runbook, episode, state
    for (auto& row : test::query(db_,
                                 "SELECT r.id, r.runbook, json_extract(a.labels, "
                                 "'$.episode'), r.state FROM runs r JOIN alerts a ON a.id "
                                 "= r.alert_id")) {
        runs[row[0]] = {row[1], row[2], row[3]};
    }
    std::map<std::string, std::set<std::string>> episode_runs;  // "runbook episode" -> run ids
    std::map<std::string, int> finished;                        // run id -> finish lines
    for (const auto& file : std::filesystem::directory_iterator(dir_ / "out")) {
        const std::string run = file.path().filename().string();
        std::istringstream lines(test::read_file(file.path()));
        for (std::string line; std::getline(lines, line);) {
            std::istringstream fields(line);
            std::string runbook, fingerprint, episode, step, attempt;
            fields >> runbook >> fingerprint >> episode >> step >> attempt;
            episode_runs[runbook + " " + episode].insert(run);
            finished[run] += step == "finish" ? 1 : 0;
            const auto db = runs.find(run);
            if (db == runs.end() || db->second[0] != runbook || db->second[1] != episode) {
                findings_.duplicates.push_back(fmt::format(
                    "step line \"{}\" of run {} does not match the database's run", line, run));
            }
        }
    }
    for (const auto& [episode, ids] : episode_runs) {
        if (ids.size() > 1) {
            findings_.duplicates.push_back(
                fmt::format("steps of {} ran in {} runs", episode, ids.size()));
        }
    }
    for (const auto& [run, row] : runs) {
        const int count = finished.count(run) != 0 ? finished[run] : 0;
        if (count > 1 || (row[2] == "succeeded" && count != 1)) {
            findings_.duplicates.push_back(
                fmt::format("run {} ({}) is {} with {} finish lines", run, row[0], row[2], count));
        }
    }
}

// The checks above pass trivially when nothing ran: the run must have had acknowledged
// deliveries, succeeded runs with their lines, and runs that a kill interrupted.
void Harness::check_not_vacuous() {
    const auto count = [this](const std::string& where) {
        return std::stoll(test::query_value(db_, "SELECT count(*) FROM runs WHERE " + where));
    };
    std::size_t files = 0;
    for ([[maybe_unused]] const auto& f : std::filesystem::directory_iterator(dir_ / "out")) {
        ++files;
    }
    if (traffic_.counts().acknowledged == 0) {
        findings_.vacuous.push_back("no delivery was acknowledged");
    }
    if (count("state = 'succeeded'") == 0 || files == 0) {
        findings_.vacuous.push_back(
            fmt::format("no run succeeded or no step wrote its line "
                        "({} files)",
                        files));
    }
    if (summary_.kills >= 5 && count("reason LIKE 'interrupted%'") == 0) {
        findings_.vacuous.push_back("no kill interrupted a run");
    }
    if (summary_.kills >= 20 &&
        count("id IN (SELECT run_id FROM events WHERE kind = 'run.resumed')") == 0) {
        findings_.vacuous.push_back("no interrupted run was resumed");
    }
}

void Harness::print_summary(double seconds) {
    const auto counts = traffic_.counts();
    const auto acked = traffic_.acknowledged();
    std::string by_state;
    for (const auto& row : test::query(db_, "SELECT state, count(*) FROM runs GROUP BY 1")) {
        by_state += fmt::format("{}{}={}", by_state.empty() ? "" : ",", row[0], row[1]);
    }
    auto ready = summary_.ready_ms;
    std::sort(ready.begin(), ready.end());
    const auto ready_at = [&ready](std::size_t percent) {
        return ready.empty() ? -1 : ready[(ready.size() - 1) * percent / 100];
    };
    std::cout << fmt::format(
        "crash harness: seed={} kills={} kills_before_ready={} ready_ms_p50={} ready_ms_max={} "
        "deliveries={} acknowledged={} refused={} other_status={} concurrent_pairs={} episodes={} "
        "episodes_acknowledged={} runs={} runs_by_state={} interrupted={} resumed={} "
        "duplicates={} "
        "leftovers={} unacknowledged_missing={} stuck={} integrity_failures={} seconds={:.1f}\n",
        settings_.seed, summary_.kills, summary_.kills_before_ready, ready_at(50), ready_at(100),
        counts.posted, counts.acknowledged, counts.refused, counts.other_status,
        counts.concurrent_pairs, acked.size(), std::count(acked.begin(), acked.end(), true),
        test::query_value(db_, "SELECT count(*) FROM runs"), by_state,
        test::query_value(db_, "SELECT count(*) FROM runs WHERE reason LIKE 'interrupted%'"),
        test::query_value(db_,
                          "SELECT count(DISTINCT run_id) FROM events WHERE kind = 'run.resumed'"),
        findings_.duplicates.size(), findings_.leftovers.size(), findings_.unacknowledged.size(),
        findings_.stuck.size(), findings_.integrity.size(), seconds);
    std::cout << std::flush;
}

std::string lines(const std::vector<std::string>& items) {
    std::string text;
    for (const auto& item : items) {
        text += item + "\n";
    }
    return text;
}

}  // namespace

TEST_CASE("runbookd killed at random instants loses no acknowledged alert and repeats no episode",
          "[crash]") {
    const Settings settings = settings_from_env();
    Harness harness(settings);

    harness.run();
    const Findings& f = harness.findings();

    INFO("seed " << settings.seed << " (repeat with RUNBOOKD_CRASH_SEED=" << settings.seed << ")");
    const std::vector<std::pair<const char*, const std::vector<std::string>*>> promises = {
        {"integrity_check failed", &f.integrity},   {"acknowledged but missing", &f.unacknowledged},
        {"executed more than once", &f.duplicates}, {"stuck at the end", &f.stuck},
        {"runbookd exited by itself", &f.exited},   {"the run proved nothing", &f.vacuous},
        {"leftover step processes", &f.leftovers},
    };
    for (const auto& [what, findings] : promises) {
        INFO(what << ":\n" << lines(*findings));
        CHECK(findings->empty());
    }
}
