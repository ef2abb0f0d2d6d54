#include "exec/process.hpp"

#include <chrono>
#include <filesystem>
#include <sstream>
#include <string>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
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

bool process_gone(pid_t pid) {
    // Gone, or a zombie waiting for its new parent to reap it: either way nothing runs.
    if (::kill(pid, 0) != 0) {
        return true;
    }
    try {
        const std::string stat =
            runbookd::test::read_file("/proc/" + std::to_string(pid) + "/stat");
        const auto close = stat.rfind(')');
        return close != std::string::npos && stat.size() > close + 2 && stat[close + 2] == 'Z';
    } catch (const std::exception&) {
        return true;
    }
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
