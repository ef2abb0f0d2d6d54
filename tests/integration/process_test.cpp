#include "exec/process.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <pwd.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "support/support.hpp"

namespace {

using namespace std::chrono_literals;
using runbookd::exec::ProcessResult;
using runbookd::exec::ProcessRunner;
using runbookd::exec::ProcessSpec;

std::vector<std::string> test_env() {
    return {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", "RUNBOOKD_TEST=1"};
}

ProcessSpec spec_for(std::vector<std::string> argv) {
    ProcessSpec spec;
    spec.argv = std::move(argv);
    spec.env = test_env();
    spec.timeout = 10s;
    spec.grace = 500ms;
    spec.drain = 300ms;
    return spec;
}

// Runs one child to completion on a private io_context.
ProcessResult run(ProcessSpec spec,
                  const std::function<void(runbookd::exec::ProcessHandle&)>& after_start = {}) {
    boost::asio::io_context io;
    ProcessRunner runner(io);
    std::optional<ProcessResult> result;
    auto handle = runner.start(std::move(spec), [&](ProcessResult r) { result = std::move(r); });
    if (after_start) {
        after_start(*handle);
    }
    io.run();
    REQUIRE(result.has_value());
    return std::move(*result);
}

// Gone, or a zombie waiting for its new parent to reap it: either way nothing runs.
bool process_gone(pid_t pid) {
    return !runbookd::test::process_running(pid);
}

// Children of this test process that have exited but were never reaped.
int zombie_children() {
    int count = 0;
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
        const std::string name = entry.path().filename().string();
        if (name.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        std::string stat;
        try {
            stat = runbookd::test::read_file(entry.path() / "stat");
        } catch (const std::exception&) {
            continue;
        }
        const auto close = stat.rfind(')');
        if (close == std::string::npos) {
            continue;
        }
        std::istringstream fields(stat.substr(close + 2));
        char state = 0;
        long ppid = 0;
        fields >> state >> ppid;
        if (state == 'Z' && ppid == ::getpid()) {
            UNSCOPED_INFO("zombie child " << name << " " << stat.substr(0, close + 1));
            ++count;
        }
    }
    return count;
}

}  // namespace

TEST_CASE("a program that exits 0 succeeds and its output is captured", "[process]") {
    auto r = run(spec_for({"/bin/sh", "-c", "echo hello; echo oops >&2"}));

    CHECK(r.succeeded());
    CHECK(r.ending == ProcessResult::Ending::Exited);
    CHECK(r.exit_code == 0);
    CHECK(r.error.empty());
    CHECK(r.stdout_excerpt == "hello\n");
    CHECK(r.stderr_excerpt == "oops\n");
    CHECK(r.stdout_bytes == 6);
}

TEST_CASE("a non-zero exit code is reported apart from a signal", "[process]") {
    SECTION("exit code") {
        auto r = run(spec_for({"/bin/sh", "-c", "exit 3"}));

        CHECK_FALSE(r.succeeded());
        CHECK(r.ending == ProcessResult::Ending::Exited);
        CHECK(r.exit_code == 3);
        CHECK(r.error == "exited with code 3");
    }
    SECTION("killed by a signal") {
        auto r = run(spec_for({"/bin/sh", "-c", "kill -KILL $$"}));

        CHECK_FALSE(r.succeeded());
        CHECK(r.ending == ProcessResult::Ending::Signaled);
        CHECK(r.signal == SIGKILL);
        CHECK(r.error == "killed by signal 9 (SIGKILL)");
    }
}

TEST_CASE("a program is looked up in the PATH of its own environment", "[process]") {
    auto r = run(spec_for({"true"}));

    CHECK(r.succeeded());
    CHECK((r.program == "/usr/bin/true" || r.program == "/bin/true"));
}

TEST_CASE("spawn errors name the path and the cause and start nothing", "[process]") {
    runbookd::test::TempDir dir;

    SECTION("missing program") {
        auto r = run(spec_for({"runbookd-no-such-program"}));

        CHECK(r.ending == ProcessResult::Ending::SpawnFailed);
        CHECK_THAT(r.error, Catch::Contains("runbookd-no-such-program") &&
                                Catch::Contains("not found in PATH"));
    }
    SECTION("missing absolute path") {
        auto r = run(spec_for({dir.file("missing")}));

        CHECK(r.ending == ProcessResult::Ending::SpawnFailed);
        CHECK_THAT(r.error, Catch::Contains(dir.file("missing")) &&
                                Catch::Contains("No such file or directory"));
    }
    SECTION("file without execute permission") {
        runbookd::test::write_file(dir.file("script.sh"), "#!/bin/sh\necho hi\n");

        auto r = run(spec_for({dir.file("script.sh")}));

        CHECK(r.ending == ProcessResult::Ending::SpawnFailed);
        CHECK_THAT(r.error, Catch::Contains("script.sh") && Catch::Contains("Permission denied"));
    }
    SECTION("script whose interpreter is missing (exec itself fails)") {
        runbookd::test::write_file(dir.file("script.sh"), "#!/nonexistent/interpreter\n");
        REQUIRE(::chmod(dir.file("script.sh").c_str(), 0755) == 0);

        auto r = run(spec_for({dir.file("script.sh")}));

        CHECK(r.ending == ProcessResult::Ending::SpawnFailed);
        CHECK_THAT(r.error,
                   Catch::Contains("script.sh") && Catch::Contains("No such file or directory"));
    }
    SECTION("working directory that does not exist") {
        auto spec = spec_for({"/bin/true"});
        spec.cwd = dir.file("nowhere");

        auto r = run(spec);

        CHECK(r.ending == ProcessResult::Ending::SpawnFailed);
        CHECK_THAT(r.error, Catch::Contains("working directory " + dir.file("nowhere")) &&
                                Catch::Contains("No such file or directory"));
    }
}

TEST_CASE("a step that outlives its timeout is stopped with SIGTERM", "[process]") {
    auto spec = spec_for({"/bin/sleep", "30"});
    spec.timeout = 200ms;
    const auto start = std::chrono::steady_clock::now();

    auto r = run(spec);

    CHECK(r.timed_out);
    CHECK(r.ending == ProcessResult::Ending::Signaled);
    CHECK(r.signal == SIGTERM);
    CHECK_FALSE(r.killed_after_grace);
    CHECK_THAT(r.error, Catch::Contains("timed out after 200 ms") && Catch::Contains("SIGTERM"));
    CHECK(std::chrono::steady_clock::now() - start < 5s);
}

TEST_CASE("a step that ignores SIGTERM is killed after the grace period", "[process]") {
    auto spec = spec_for({"/bin/sh", "-c", "trap '' TERM; while :; do sleep 1; done"});
    spec.timeout = 200ms;
    spec.grace = 300ms;
    const auto start = std::chrono::steady_clock::now();

    auto r = run(spec);

    CHECK(r.timed_out);
    CHECK(r.killed_after_grace);
    CHECK(r.ending == ProcessResult::Ending::Signaled);
    CHECK(r.signal == SIGKILL);
    CHECK_THAT(r.error, Catch::Contains("then SIGKILL after the 300 ms grace period"));
    CHECK(std::chrono::steady_clock::now() - start < 5s);
}

TEST_CASE("a grandchild holding stdout open does not keep the step alive", "[process]") {
    auto spec = spec_for({"/bin/sh", "-c", "sleep 30 & echo $!"});
    spec.drain = 300ms;
    const auto start = std::chrono::steady_clock::now();

    auto r = run(spec);

    CHECK(r.succeeded());
    CHECK(std::chrono::steady_clock::now() - start < 5s);
    const pid_t grandchild = std::stoi(r.stdout_excerpt);
    CHECK(runbookd::test::wait_until([&] { return process_gone(grandchild); }, 5s));
}

TEST_CASE("a timeout stops the whole process group, grandchildren included", "[process]") {
    runbookd::test::TempDir dir;
    const std::string pidfile = dir.file("grandchild.pid");
    auto spec = spec_for({"/bin/sh", "-c", "sleep 30 & echo $! > " + pidfile + "; wait"});
    spec.timeout = 300ms;

    auto r = run(spec);

    CHECK(r.timed_out);
    const pid_t grandchild = std::stoi(runbookd::test::read_file(pidfile));
    CHECK(runbookd::test::wait_until([&] { return process_gone(grandchild); }, 5s));
}

TEST_CASE("cancel stops the process and records the reason", "[process]") {
    auto r = run(spec_for({"/bin/sleep", "30"}),
                 [](runbookd::exec::ProcessHandle& h) { h.cancel("cancelled by the operator"); });

    CHECK(r.cancelled);
    CHECK_FALSE(r.succeeded());
    CHECK_THAT(r.error, Catch::StartsWith("cancelled by the operator"));
}

TEST_CASE("the child gets /dev/null as stdin and exactly the given environment", "[process]") {
    SECTION("stdin") {
        auto r = run(spec_for({"/bin/cat"}));

        CHECK(r.succeeded());
        CHECK(r.stdout_bytes == 0);
    }
    SECTION("environment") {
        auto r = run(spec_for({"/usr/bin/env"}));

        CHECK(r.stdout_excerpt ==
              "PATH=/usr/local/bin:/usr/bin:/bin\nLANG=C.UTF-8\nRUNBOOKD_TEST=1\n");
    }
}

TEST_CASE("the child inherits no file descriptor of runbookd", "[process]") {
    // A descriptor opened without O_CLOEXEC, as a careless library might.
    const int leaked = ::open("/dev/null", O_RDONLY);
    REQUIRE(leaked > 2);

    auto r = run(spec_for({"/bin/sh", "-c", "ls /proc/$$/fd"}));
    ::close(leaked);

    CHECK(r.succeeded());
    CHECK(r.stdout_excerpt == "0\n1\n2\n");
}

TEST_CASE("huge output is counted whole but kept bounded", "[process]") {
    auto spec = spec_for({"/usr/bin/head", "-c", "10000000", "/dev/zero"});
    spec.excerpt_bytes = 1024;

    auto r = run(spec);

    CHECK(r.succeeded());
    CHECK(r.stdout_bytes == 10'000'000);
    CHECK(r.stdout_excerpt.size() < 1024 + 64);
    CHECK_THAT(r.stdout_excerpt, Catch::Contains("[... 9998976 bytes omitted ...]"));
}

TEST_CASE("signal dispositions are reset to defaults in the child", "[process]") {
    // The test process ignores SIGPIPE; a child must not inherit that.
    struct sigaction ignore {};
    ignore.sa_handler = SIG_IGN;
    struct sigaction previous {};
    ::sigaction(SIGPIPE, &ignore, &previous);

    auto r = run(spec_for({"/bin/sh", "-c", "grep SigIgn /proc/self/status"}));
    ::sigaction(SIGPIPE, &previous, nullptr);

    CHECK(r.succeeded());
    // SIGPIPE is bit 13 (mask 0x1000); the shell may ignore nothing else by default.
    const auto hex = r.stdout_excerpt.substr(r.stdout_excerpt.find_first_of("0123456789abcdef"));
    CHECK((std::stoull(hex, nullptr, 16) & 0x1000ULL) == 0);
}

TEST_CASE("a step runs at the configured nice value", "[process]") {
    auto spec = spec_for({"/bin/sh", "-c", "cut -d ' ' -f 19 /proc/self/stat"});
    spec.nice = 7;
    const int own = ::getpriority(PRIO_PROCESS, 0);

    auto r = run(spec);

    CHECK(r.succeeded());
    CHECK(std::stoi(r.stdout_excerpt) == std::max(own, 7));
}

TEST_CASE("every child is reaped even after a failed exec", "[process]") {
    runbookd::test::TempDir dir;
    runbookd::test::write_file(dir.file("script.sh"), "#!/nonexistent/interpreter\n");
    REQUIRE(::chmod(dir.file("script.sh").c_str(), 0755) == 0);

    for (int i = 0; i < 5; ++i) {
        run(spec_for({dir.file("script.sh")}));
        run(spec_for({"/bin/sh", "-c", "exit 1"}));
        auto timed_out = spec_for({"/bin/sleep", "30"});
        timed_out.timeout = 50ms;
        run(timed_out);
    }

    CHECK(zombie_children() == 0);
}

namespace {

using runbookd::exec::ProcessHandle;

bool group_gone(pid_t pgid) {
    return ::kill(-pgid, 0) != 0 && errno == ESRCH;
}

std::vector<pid_t> pids_in(const std::string& path) {
    std::vector<pid_t> pids;
    std::istringstream in(runbookd::test::read_file(path));
    long pid = 0;
    while (in >> pid) {
        pids.push_back(static_cast<pid_t>(pid));
    }
    return pids;
}

std::vector<std::string> transition_kinds(const ProcessResult& r) {
    std::vector<std::string> kinds;
    for (const auto& t : r.transitions) {
        kinds.push_back(t.kind);
    }
    return kinds;
}

long status_field_kib(const std::string& field) {
    std::istringstream in(runbookd::test::read_file("/proc/self/status"));
    std::string line;
    while (std::getline(in, line)) {
        if (line.rfind(field + ":", 0) == 0) {
            return std::stol(line.substr(field.size() + 1));
        }
    }
    return -1;
}

std::size_t thread_count() {
    std::size_t n = 0;
    for ([[maybe_unused]] const auto& entry :
         std::filesystem::directory_iterator("/proc/self/task")) {
        ++n;
    }
    return n;
}

struct Timed {
    ProcessResult result;
    pid_t pid = -1;
    std::chrono::steady_clock::duration elapsed{};
};

Timed run_timed(ProcessSpec spec) {
    Timed t;
    const auto start = std::chrono::steady_clock::now();
    t.result = run(std::move(spec), [&](ProcessHandle& h) { t.pid = h.pid(); });
    t.elapsed = std::chrono::steady_clock::now() - start;
    return t;
}

// Deadline + grace + slack for a loaded 2-core machine.
constexpr auto kSlack = 3s;

}  // namespace

TEST_CASE("a helper that ignores SIGTERM is killed after the grace period, group and all",
          "[process]") {
    auto spec = spec_for({HELPER_IGNORE_TERM});
    spec.timeout = 300ms;
    spec.grace = 300ms;

    auto t = run_timed(spec);

    CHECK(t.elapsed < spec.timeout + spec.grace + kSlack);
    CHECK(t.result.timed_out);
    CHECK(t.result.killed_after_grace);
    CHECK(t.result.ending == ProcessResult::Ending::Signaled);
    CHECK(t.result.signal == SIGKILL);
    CHECK(transition_kinds(t.result) ==
          std::vector<std::string>{"stop_signal_sent", "grace_expired", "killed"});
    CHECK_THAT(t.result.transitions.at(0).detail,
               Catch::Contains("sent SIGTERM to process group " + std::to_string(t.pid)) &&
                   Catch::Contains("timed out after 300 ms"));
    CHECK(std::stoi(t.result.stdout_excerpt) == t.pid);
    CHECK(runbookd::test::wait_until([&] { return group_gone(t.pid); }, 5s));
}

TEST_CASE("a grandchild holding stdout is killed when the drain period ends", "[process]") {
    runbookd::test::TempDir dir;
    auto spec = spec_for({HELPER_HOLD_STDOUT, dir.file("grandchild.pid")});
    spec.drain = 300ms;

    auto t = run_timed(spec);

    CHECK(t.elapsed < spec.drain + kSlack);
    CHECK(t.result.succeeded());
    CHECK(t.result.exit_code == 0);
    CHECK(transition_kinds(t.result) == std::vector<std::string>{"drain_expired", "killed"});
    CHECK(runbookd::test::wait_until([&] { return group_gone(t.pid); }, 5s));
    for (const pid_t pid : pids_in(dir.file("grandchild.pid"))) {
        CHECK(runbookd::test::wait_until([&] { return process_gone(pid); }, 5s));
    }
}

TEST_CASE("a step forking many children has all of them killed on timeout", "[process]") {
    runbookd::test::TempDir dir;
    auto spec = spec_for({HELPER_FORK_MANY, "50", dir.file("children.pid")});
    spec.timeout = 500ms;
    spec.grace = 300ms;

    auto t = run_timed(spec);

    CHECK(t.elapsed < spec.timeout + spec.grace + kSlack);
    CHECK(t.result.timed_out);
    CHECK(t.result.ending == ProcessResult::Ending::Signaled);
    CHECK(t.result.signal == SIGTERM);
    CHECK(runbookd::test::wait_until([&] { return group_gone(t.pid); }, 5s));
    const auto children = pids_in(dir.file("children.pid"));
    CHECK(children.size() == 50);
    for (const pid_t pid : children) {
        CHECK(runbookd::test::wait_until([&] { return process_gone(pid); }, 5s));
    }
}

TEST_CASE("a step killed by a signal reports the signal, not an exit code", "[process]") {
    auto t = run_timed(spec_for({HELPER_DIE_BY_SIGNAL, std::to_string(SIGUSR1)}));

    CHECK(t.result.ending == ProcessResult::Ending::Signaled);
    CHECK(t.result.signal == SIGUSR1);
    CHECK(t.result.exit_code == -1);
    CHECK_FALSE(t.result.timed_out);
    CHECK(t.result.transitions.empty());
    CHECK(t.result.error == "killed by signal 10 (SIGUSR1)");
    CHECK(runbookd::test::wait_until([&] { return group_gone(t.pid); }, 5s));
}

TEST_CASE("a 1 GiB flood is counted exactly while memory and the output file stay bounded",
          "[process]") {
    runbookd::test::TempDir dir;
    auto spec = spec_for({HELPER_FLOOD, std::to_string(1LL << 30)});
    spec.timeout = 100s;
    spec.excerpt_bytes = 4096;
    spec.output_path = dir.file("out/flood.log");
    spec.output_cap_bytes = 1 << 20;
    const long rss_before = status_field_kib("VmRSS");

    auto t = run_timed(spec);

    const long rss_after = status_field_kib("VmRSS");
    CHECK(t.result.succeeded());
    CHECK(t.result.stdout_bytes == (1LL << 30));
    CHECK(rss_after - rss_before < 64 * 1024);
    CHECK(t.result.output_truncated);
    CHECK(t.result.output_stored_bytes == (1 << 20));
    CHECK(std::filesystem::file_size(spec.output_path) == (1U << 20));
    CHECK(transition_kinds(t.result) == std::vector<std::string>{"output_truncated"});
    CHECK(t.result.output_error.empty());
}

TEST_CASE("the output file holds every byte when under the cap", "[process]") {
    runbookd::test::TempDir dir;
    auto spec = spec_for({HELPER_FLOOD, "10000000"});
    spec.output_path = dir.file("a/b/flood.log");

    auto r = run(spec);

    CHECK(r.succeeded());
    CHECK(r.output_path == spec.output_path);
    CHECK(r.output_stored_bytes == 10'000'000);
    CHECK_FALSE(r.output_truncated);
    CHECK(std::filesystem::file_size(spec.output_path) == 10'000'000);
    struct stat st {};
    REQUIRE(::stat(spec.output_path.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0640);
    REQUIRE(::stat(dir.file("a/b").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0750);
}

TEST_CASE("invalid UTF-8 and NUL bytes are stored exactly as written", "[process]") {
    runbookd::test::TempDir dir;
    auto spec = spec_for({HELPER_BAD_UTF8});
    spec.output_path = dir.file("bad.log");
    const std::string out1("a\xff\0\xc3(\n", 6);
    const std::string err("\xed\xa0\x80\0b\n", 6);
    const std::string out2("\xf8\x88\x80\x80\x80\0\n", 7);

    auto r = run(spec);

    CHECK(r.succeeded());
    CHECK(r.stdout_excerpt == out1 + out2);
    CHECK(r.stderr_excerpt == err);
    CHECK(runbookd::test::read_file(spec.output_path) == out1 + err + out2);
    CHECK(r.output_stored_bytes == 19);
}

TEST_CASE("an output file that cannot be created is reported and the step still runs",
          "[process]") {
    runbookd::test::TempDir dir;
    runbookd::test::write_file(dir.file("exists.log"), "old");
    auto spec = spec_for({"/bin/sh", "-c", "echo hi"});
    spec.output_path = dir.file("exists.log");

    auto r = run(spec);

    CHECK(r.succeeded());
    CHECK(r.stdout_excerpt == "hi\n");
    CHECK_THAT(r.output_error,
               Catch::Contains(dir.file("exists.log")) && Catch::Contains("File exists"));
    CHECK(runbookd::test::read_file(spec.output_path) == "old");
}

TEST_CASE("a thousand concurrent steps run on one thread", "[process]") {
    if (runbookd::exec::raise_open_file_limit() < 4000) {
        WARN("RLIMIT_NOFILE hard limit below 4000: test skipped");
        return;
    }
    boost::asio::io_context io;
    ProcessRunner runner(io);
    const std::size_t threads_before = thread_count();
    int succeeded = 0;
    int finished = 0;

    for (int i = 0; i < 1000; ++i) {
        auto spec = spec_for({"/bin/sleep", "2"});
        spec.timeout = 60s;
        runner.start(spec, [&](ProcessResult r) {
            ++finished;
            succeeded += r.succeeded() ? 1 : 0;
            if (!r.succeeded()) {
                UNSCOPED_INFO("failed: " << r.error);
            }
        });
    }
    const std::size_t threads_running = thread_count();
    const std::size_t children_running = runner.running();
    io.run();

    CHECK(children_running == 1000);
    CHECK(threads_running == threads_before);
    CHECK(finished == 1000);
    CHECK(succeeded == 1000);
    CHECK(zombie_children() == 0);
}

TEST_CASE("the child sees only its three standard descriptors", "[process]") {
    const int leaked_file = ::open("/dev/null", O_RDONLY);
    int leaked_pipe[2];
    REQUIRE(::pipe(leaked_pipe) == 0);
    REQUIRE(leaked_file > 2);

    auto r = run(spec_for({HELPER_FD_REPORT}));
    ::close(leaked_file);
    ::close(leaked_pipe[0]);
    ::close(leaked_pipe[1]);

    REQUIRE(r.succeeded());
    std::istringstream lines(r.stdout_excerpt);
    std::map<int, std::string> fds;
    int fd = 0;
    std::string target;
    while (lines >> fd >> target) {
        fds[fd] = target;
    }
    CHECK(fds.size() == 4);  // 0, 1, 2 and the directory it is listing
    CHECK(fds[0] == "/dev/null");
    CHECK_THAT(fds[1], Catch::StartsWith("pipe:"));
    CHECK_THAT(fds[2], Catch::StartsWith("pipe:"));
    for (const auto& [number, where] : fds) {
        if (number > 2) {
            CHECK_THAT(where, Catch::EndsWith("/fd"));
        }
    }
}

TEST_CASE("a helper gets its channel as descriptor 3 and no other, and takes no slot",
          "[process][python]") {
    int pair[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
    const int leaked_file = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    boost::asio::io_context io;
    ProcessRunner runner(io, runbookd::exec::RunnerOptions{1, false});
    std::optional<ProcessResult> busy;
    std::optional<ProcessResult> helper;
    auto sleeper = spec_for({"/bin/sleep", "0.5"});
    runner.start(sleeper, [&](ProcessResult r) { busy = std::move(r); });
    auto spec = spec_for({HELPER_FD_REPORT});
    spec.channel_fd = pair[1];
    spec.helper = true;

    runner.start(spec, [&](ProcessResult r) { helper = std::move(r); });
    const std::size_t running = runner.running();
    const std::size_t waiting = runner.waiting();
    io.run();
    ::close(pair[0]);
    ::close(pair[1]);
    ::close(leaked_file);

    CHECK(running == 1);  // the sleeper; the helper started at once anyway
    CHECK(waiting == 0);
    REQUIRE(helper.has_value());
    REQUIRE(helper->succeeded());
    std::istringstream lines(helper->stdout_excerpt);
    std::map<int, std::string> fds;
    int fd = 0;
    std::string target;
    while (lines >> fd >> target) {
        fds[fd] = target;
    }
    CHECK(fds.size() == 5);  // 0, 1, 2, the channel and the directory it is listing
    CHECK_THAT(fds[3], Catch::StartsWith("socket:"));
    REQUIRE(busy.has_value());
    CHECK(busy->succeeded());
}

TEST_CASE("max_processes caps running children and queues the rest in order", "[process]") {
    runbookd::test::TempDir dir;
    boost::asio::io_context io;
    ProcessRunner runner(io, runbookd::exec::RunnerOptions{2, false});
    const std::string log = dir.file("events");
    std::vector<ProcessResult> results;

    for (int i = 0; i < 5; ++i) {
        auto spec = spec_for({"/bin/sh", "-c",
                              "echo \"$(date +%s%N) 1\" >> " + log +
                                  "; sleep 0.3; echo \"$(date +%s%N) -1\" >> " + log});
        runner.start(spec, [&](ProcessResult r) { results.push_back(std::move(r)); });
    }
    const std::size_t waiting = runner.waiting();
    io.run();

    CHECK(waiting == 3);
    REQUIRE(results.size() == 5);
    for (const auto& r : results) {
        CHECK(r.succeeded());
    }
    std::vector<std::pair<long long, int>> events;
    std::istringstream in(runbookd::test::read_file(log));
    long long at = 0;
    int delta = 0;
    while (in >> at >> delta) {
        events.emplace_back(at, delta);
    }
    std::sort(events.begin(), events.end());
    int now = 0;
    int most = 0;
    for (const auto& [when, change] : events) {
        now += change;
        most = std::max(most, now);
    }
    CHECK(events.size() == 10);
    CHECK(most == 2);
    CHECK(results.back().dispatch_latency > 500ms);
}

TEST_CASE("a queued step's timeout starts when it starts, and cancel leaves it unstarted",
          "[process]") {
    boost::asio::io_context io;
    ProcessRunner runner(io, runbookd::exec::RunnerOptions{1, false});
    std::map<std::string, ProcessResult> results;
    const auto keep = [&](std::string name) {
        return [&results, name](ProcessResult r) {
            results[name] = std::move(r);
        };
    };
    auto first = spec_for({"/bin/sleep", "0.6"});
    auto second = spec_for({"/bin/true"});
    second.timeout = 300ms;
    auto third = spec_for({"/bin/true"});

    runner.start(first, keep("first"));
    runner.start(second, keep("second"));
    auto handle = runner.start(third, keep("third"));
    handle->cancel("the run was cancelled");
    io.run();

    CHECK(results["first"].succeeded());
    CHECK(results["second"].succeeded());
    CHECK(results["second"].dispatch_latency > 400ms);
    CHECK(results["third"].cancelled);
    CHECK(results["third"].ending == ProcessResult::Ending::SpawnFailed);
    CHECK(results["third"].error == "the run was cancelled; the step was not started");
    CHECK(runner.running() == 0);
}

TEST_CASE("resource limits apply to the child", "[process]") {
    SECTION("open files") {
        auto spec = spec_for({"/bin/sh", "-c", "ulimit -n"});
        spec.limits.open_files = 16;

        auto r = run(spec);

        CHECK(r.succeeded());
        CHECK(r.stdout_excerpt == "16\n");
    }
    SECTION("CPU seconds end a busy loop") {
        auto spec = spec_for({"/bin/sh", "-c", "while :; do :; done"});
        spec.limits.cpu_seconds = 1;

        auto t = run_timed(spec);

        CHECK_FALSE(t.result.timed_out);
        CHECK(t.result.ending == ProcessResult::Ending::Signaled);
        // The soft limit comes first (SIGXCPU); SIGKILL only a second later.
        CHECK(t.result.signal == SIGXCPU);
        CHECK_THAT(t.result.error, Catch::Contains("the step's CPU limit is 1 s (limits.cpu)"));
        CHECK(t.elapsed < spec.timeout);
    }
    SECTION("a limit that cannot be set fails the spawn") {
        auto spec = spec_for({"/bin/true"});
        spec.limits.open_files = 1ULL << 40;

        auto r = run(spec);

        CHECK(r.ending == ProcessResult::Ending::SpawnFailed);
        CHECK(r.error == "cannot start /bin/true: setting RLIMIT_NOFILE: Operation not permitted");
        CHECK(zombie_children() == 0);
    }
}

TEST_CASE("a step runs as the user and group it names", "[process]") {
    SECTION("unknown user") {
        auto spec = spec_for({"/usr/bin/id", "-u"});
        spec.user = "runbookd-no-such-user";

        auto r = run(spec);

        CHECK(r.ending == ProcessResult::Ending::SpawnFailed);
        CHECK(r.error == "cannot start /usr/bin/id: user \"runbookd-no-such-user\": no such user");
    }
    SECTION("nobody") {
        struct passwd* nobody = ::getpwnam("nobody");
        REQUIRE(nobody != nullptr);
        auto spec = spec_for({"/bin/sh", "-c", "id -u; id -g"});
        spec.user = "nobody";

        auto r = run(spec);

        if (::geteuid() == 0) {
            CHECK(r.succeeded());
            CHECK(r.stdout_excerpt == fmt::format("{}\n{}\n", nobody->pw_uid, nobody->pw_gid));
        } else {
            CHECK(r.ending == ProcessResult::Ending::SpawnFailed);
            CHECK(r.error ==
                  "cannot start /bin/sh: user \"nobody\": runbookd is not running as "
                  "root, so it cannot switch users");
        }
    }
}

TEST_CASE("more spawn errors name the path and the errno text", "[process]") {
    runbookd::test::TempDir dir;

    SECTION("a directory as the program") {
        auto r = run(spec_for({dir.path().string()}));

        CHECK(r.ending == ProcessResult::Ending::SpawnFailed);
        CHECK(r.error == "cannot start " + dir.path().string() + ": Is a directory");
    }
    SECTION("a file with the execute bit that is no program") {
        runbookd::test::write_file(dir.file("junk"), "just some text\n");
        REQUIRE(::chmod(dir.file("junk").c_str(), 0755) == 0);

        auto r = run(spec_for({dir.file("junk")}));

        CHECK(r.ending == ProcessResult::Ending::SpawnFailed);
        CHECK(r.error == "cannot start " + dir.file("junk") + ": Exec format error");
    }
    SECTION("a working directory that is a file") {
        runbookd::test::write_file(dir.file("file"), "");
        auto spec = spec_for({"/bin/true"});
        spec.cwd = dir.file("file");

        auto r = run(spec);

        CHECK(r.ending == ProcessResult::Ending::SpawnFailed);
        CHECK(r.error == "cannot start /bin/true: working directory " + dir.file("file") +
                             ": not a directory");
    }
    SECTION("a working directory the step may not enter") {
        const std::string locked = dir.file("locked");
        REQUIRE(::mkdir(locked.c_str(), 0700) == 0);
        auto spec = spec_for({"/bin/true"});
        spec.cwd = locked;
        if (::geteuid() == 0) {
            spec.user = "nobody";  // root enters any directory
        } else {
            REQUIRE(::chmod(locked.c_str(), 0) == 0);
        }

        auto r = run(spec);
        ::chmod(locked.c_str(), 0700);

        CHECK(r.ending == ProcessResult::Ending::SpawnFailed);
        CHECK(r.error ==
              "cannot start /bin/true: working directory " + locked + ": Permission denied");
        CHECK(zombie_children() == 0);
    }
}

// The sweep kills every child of the process that is not a running step, so it runs in a
// forked copy of the test process whose only children are its steps.
TEST_CASE("an orphan that left the step's session is killed by the subreaper", "[process]") {
    runbookd::test::TempDir dir;
    const std::string pidfile = dir.file("orphan.pid");
    const std::string report = dir.file("report");

    const pid_t tester = ::fork();
    REQUIRE(tester >= 0);
    if (tester == 0) {
        int code = 0;
        std::string text;
        if (!runbookd::exec::become_subreaper()) {
            ::_exit(10);
        }
        boost::asio::io_context io;
        ProcessRunner runner(io, runbookd::exec::RunnerOptions{0, true});
        std::optional<ProcessResult> result;
        runner.start(spec_for({HELPER_ESCAPE_SESSION, pidfile}),
                     [&](ProcessResult r) { result = std::move(r); });
        io.run();
        if (!result || !result->succeeded()) {
            code = 11;
        } else {
            for (const auto& t : result->transitions) {
                text += t.kind + ": " + t.detail + "\n";
            }
        }
        runbookd::test::write_file(report, text);
        ::_exit(code);
    }
    int status = 0;
    REQUIRE(::waitpid(tester, &status, 0) == tester);

    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    const auto orphans = pids_in(pidfile);
    REQUIRE(orphans.size() == 1);
    CHECK(process_gone(orphans[0]));
    CHECK_THAT(runbookd::test::read_file(report),
               Catch::Contains("orphans_killed: ") &&
                   Catch::Contains("pids " + std::to_string(orphans[0])));
}
