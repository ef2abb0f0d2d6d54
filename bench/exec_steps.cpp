// Exec steps benchmark: how fast runbookd's ProcessRunner starts and reaps short steps,
// against a plain posix_spawn + waitpid loop in the same kind of process. One mode per
// invocation, each printing one machine-readable line that starts with "BENCH "; the driver
// bench/exec_steps.sh runs the modes side by side and prints the table and ratios.
//
//   exec_steps_bench --mode raw-pipes  --steps 5000 [--ballast-mib 256]
//   exec_steps_bench --mode raw-null   --steps 5000 [--ballast-mib 256]
//   exec_steps_bench --mode runner     --steps 5000 --concurrency 1 [--ballast-mib 256]
//   exec_steps_bench --mode fork       --steps 300 [--ballast-mib 256]
//   exec_steps_bench --mode concurrent --concurrency 1000 --sleep-s 2
//
// Exit status: 0 when every step ran and exited 0, 1 when one did not, 2 on bad arguments.
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.hpp"
#include "exec/process.hpp"

extern char** environ;

namespace {

namespace exec = runbookd::exec;
using Clock = std::chrono::steady_clock;
using Micros = std::chrono::microseconds;

struct Options {
    std::string mode;
    std::size_t steps = 5000;
    std::size_t concurrency = 1;
    std::size_t ballast_mib = 0;
    int sleep_s = 2;
    std::string program = "/bin/true";
};

// What one timed loop saw: wall time, per-spawn latencies and failures.
struct LoopResult {
    double seconds = 0;
    double self_cpu_us = 0;      // this process's user + system CPU time during the loop
    double children_cpu_us = 0;  // the same of the steps, once reaped
    std::vector<Micros> latencies;
    std::size_t failures = 0;
    std::string first_error;
};

[[noreturn]] void usage(const std::string& error) {
    std::fprintf(stderr,
                 "exec_steps_bench: %s\n"
                 "usage: exec_steps_bench --mode raw-pipes|raw-null|runner|fork|concurrent\n"
                 "       [--steps N] [--concurrency C] [--ballast-mib M] [--sleep-s S]\n"
                 "       [--program PATH]\n",
                 error.c_str());
    std::exit(2);
}

std::size_t parse_count(std::string_view flag, const char* text) {
    char* end = nullptr;
    errno = 0;
    const unsigned long long value = std::strtoull(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || text[0] == '-') {
        usage(fmt::format("{} \"{}\": expected a non-negative number", flag, text));
    }
    return static_cast<std::size_t>(value);
}

Options parse_options(int argc, char** argv) {
    Options o;
    for (int i = 1; i < argc; ++i) {
        const std::string_view flag = argv[i];
        if (i + 1 >= argc) {
            usage(fmt::format("{} needs a value", flag));
        }
        const char* value = argv[++i];
        if (flag == "--mode") {
            o.mode = value;
        } else if (flag == "--steps") {
            o.steps = parse_count(flag, value);
        } else if (flag == "--concurrency") {
            o.concurrency = parse_count(flag, value);
        } else if (flag == "--ballast-mib") {
            o.ballast_mib = parse_count(flag, value);
        } else if (flag == "--sleep-s") {
            o.sleep_s = static_cast<int>(std::min<std::size_t>(parse_count(flag, value), 3600));
        } else if (flag == "--program") {
            o.program = value;
        } else {
            usage(fmt::format("unknown option {}", flag));
        }
    }
    if (o.steps == 0 || o.concurrency == 0) {
        usage("--steps and --concurrency must be at least 1");
    }
    return o;
}

// A kB field of /proc/self/status ("VmRSS", "VmHWM", "Threads"), or -1.
long status_field(std::string_view name) {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line)) {
        if (line.size() > name.size() && line.compare(0, name.size(), name) == 0 &&
            line[name.size()] == ':') {
            return std::strtol(line.c_str() + name.size() + 1, nullptr, 10);
        }
    }
    return -1;
}

long count_entries(const char* dir) {
    std::error_code ec;
    long n = 0;
    for (auto it = std::filesystem::directory_iterator(dir, ec);
         !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
        ++n;
    }
    return n;
}

// Makes this process big before anything is measured: `mib` MiB, every page written, so that
// the pages are resident and mapped in its page tables as a long-running daemon's heap is.
std::unique_ptr<char[]> allocate_ballast(std::size_t mib) {
    if (mib == 0) {
        return nullptr;
    }
    const std::size_t bytes = mib << 20;
    auto ballast = std::make_unique<char[]>(bytes);
    const auto page = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
    for (std::size_t i = 0; i < bytes; i += page) {
        ballast[i] = static_cast<char>(i / page);
    }
    return ballast;
}

Micros percentile(std::vector<Micros> values, double p) {
    if (values.empty()) {
        return Micros{0};
    }
    std::sort(values.begin(), values.end());
    const auto rank = static_cast<std::size_t>(p * static_cast<double>(values.size() - 1) + 0.5);
    return values[std::min(rank, values.size() - 1)];
}

double cpu_us(int who) {
    struct rusage usage {};
    ::getrusage(who, &usage);
    const auto us = [](const timeval& t) {
        return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_usec);
    };
    return us(usage.ru_utime) + us(usage.ru_stime);
}

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

std::vector<std::string> bench_env() {
    return {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C"};
}

std::vector<char*> c_strings(std::vector<std::string>& strings) {
    std::vector<char*> out;
    out.reserve(strings.size() + 1);
    for (auto& s : strings) {
        out.push_back(s.data());
    }
    out.push_back(nullptr);
    return out;
}

void note_failure(LoopResult& r, std::string error) {
    if (r.failures++ == 0) {
        r.first_error = std::move(error);
    }
}

bool exited_zero(int status) {
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int wait_for(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return status;
}

// Reads `fd` until end of file and closes it.
void drain(int fd) {
    char buffer[4096];
    while (true) {
        const ssize_t n = ::read(fd, buffer, sizeof buffer);
        if (n == 0 || (n < 0 && errno != EINTR)) {
            break;
        }
    }
    ::close(fd);
}

// One posix_spawn of the raw loop. With `pipes`, the like-for-like version of what the runner
// does: stdin on /dev/null, stdout and stderr on pipes read to their end, own process group,
// default signal dispositions. Without, stdin, stdout and stderr all on /dev/null.
bool raw_spawn_once(const Options& o, bool pipes, char** args, char** envp, LoopResult& r) {
    // Timed like dispatch_latency: from "ready" (before the pipes exist) to exec.
    const auto t0 = Clock::now();
    int out[2] = {-1, -1};
    int err[2] = {-1, -1};
    if (pipes && (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0)) {
        note_failure(r, fmt::format("pipe2 failed: {}", std::strerror(errno)));
        return false;
    }
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attr;
    posix_spawn_file_actions_init(&actions);
    posix_spawnattr_init(&attr);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    if (pipes) {
        posix_spawn_file_actions_adddup2(&actions, out[1], 1);
        posix_spawn_file_actions_adddup2(&actions, err[1], 2);
        sigset_t all;
        sigfillset(&all);
        posix_spawnattr_setsigdefault(&attr, &all);
        posix_spawnattr_setpgroup(&attr, 0);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF);
    } else {
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
    }

    pid_t pid = -1;
    const int rc = ::posix_spawn(&pid, o.program.c_str(), &actions, &attr, args, envp);
    r.latencies.push_back(std::chrono::duration_cast<Micros>(Clock::now() - t0));
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (pipes) {
        ::close(out[1]);
        ::close(err[1]);
        drain(out[0]);
        drain(err[0]);
    }
    if (rc != 0) {
        note_failure(r, fmt::format("posix_spawn failed: {}", std::strerror(rc)));
        return false;
    }
    if (!exited_zero(wait_for(pid))) {
        note_failure(r, fmt::format("{} did not exit 0", o.program));
    }
    return true;
}

LoopResult run_raw(const Options& o, bool pipes) {
    std::vector<std::string> argv_strings{o.program};
    std::vector<std::string> env_strings = bench_env();
    auto args = c_strings(argv_strings);
    auto envp = c_strings(env_strings);
    LoopResult r;
    r.latencies.reserve(o.steps);
    const auto start = Clock::now();
    for (std::size_t i = 0; i < o.steps; ++i) {
        raw_spawn_once(o, pipes, args.data(), envp.data(), r);
    }
    r.seconds = seconds_since(start);
    return r;
}

// For contrast only: what spawning costs when the parent's address space is copied, as plain
// fork() does (and Boost.Process does unless told to use vfork).
LoopResult run_fork(const Options& o) {
    std::vector<std::string> argv_strings{o.program};
    std::vector<std::string> env_strings = bench_env();
    auto args = c_strings(argv_strings);
    auto envp = c_strings(env_strings);
    LoopResult r;
    r.latencies.reserve(o.steps);
    const auto start = Clock::now();
    for (std::size_t i = 0; i < o.steps; ++i) {
        const auto t0 = Clock::now();
        const pid_t pid = ::fork();
        if (pid == 0) {
            ::setpgid(0, 0);
            const int null = ::open("/dev/null", O_RDWR);
            ::dup2(null, 0);
            ::dup2(null, 1);
            ::dup2(null, 2);
            ::execve(args[0], args.data(), envp.data());
            ::_exit(127);
        }
        r.latencies.push_back(std::chrono::duration_cast<Micros>(Clock::now() - t0));
        if (pid < 0) {
            note_failure(r, fmt::format("fork failed: {}", std::strerror(errno)));
            continue;
        }
        if (!exited_zero(wait_for(pid))) {
            note_failure(r, fmt::format("{} did not exit 0", o.program));
        }
    }
    r.seconds = seconds_since(start);
    return r;
}

// The daemon's defaults otherwise: 8 KiB excerpts, no output file, no limits, own identity.
exec::ProcessSpec step_spec(std::vector<std::string> argv) {
    exec::ProcessSpec spec;
    spec.argv = std::move(argv);
    spec.env = bench_env();
    spec.cwd = "/";
    spec.timeout = exec::Millis{60'000};
    return spec;
}

// Keeps `in_flight` steps running through one ProcessRunner until `total` have completed; a
// completion starts the next step, as the run engine does when a step's successor is ready.
class RunnerLoop {
  public:
    RunnerLoop(boost::asio::io_context& io, exec::ProcessRunner& runner, exec::ProcessSpec spec,
               std::size_t total)
        : io_(io), runner_(runner), spec_(std::move(spec)), total_(total) {
        result_.latencies.reserve(total);
    }

    LoopResult run(std::size_t in_flight) {
        const auto start = Clock::now();
        for (std::size_t i = 0; i < std::min(in_flight, total_); ++i) {
            start_one();
        }
        io_.run();
        result_.seconds = seconds_since(start);
        return std::move(result_);
    }

  private:
    void start_one() {
        ++started_;
        runner_.start(spec_, [this](exec::ProcessResult r) { on_done(std::move(r)); });
    }

    void on_done(exec::ProcessResult r) {
        result_.latencies.push_back(r.dispatch_latency);
        if (!r.succeeded()) {
            note_failure(result_, r.error.empty() ? "step failed" : r.error);
        }
        if (started_ < total_) {
            start_one();
        }
    }

    boost::asio::io_context& io_;
    exec::ProcessRunner& runner_;
    exec::ProcessSpec spec_;
    std::size_t total_;
    std::size_t started_ = 0;
    LoopResult result_;
};

LoopResult run_runner(const Options& o) {
    boost::asio::io_context io;
    exec::ProcessRunner runner(io, exec::RunnerOptions{});
    RunnerLoop loop(io, runner, step_spec({o.program}), o.steps);
    return loop.run(o.concurrency);
}

void print_loop(const Options& o, const LoopResult& r) {
    const double rate = r.seconds > 0 ? static_cast<double>(o.steps) / r.seconds : 0;
    std::printf(
        "BENCH mode=%s steps=%zu concurrency=%zu ballast_mib=%zu seconds=%.3f "
        "steps_per_s=%.1f p50_us=%lld p99_us=%lld max_us=%lld self_cpu_us_per_step=%.1f "
        "child_cpu_us_per_step=%.1f vmrss_kib=%ld failures=%zu\n",
        o.mode.c_str(), o.steps, o.concurrency, o.ballast_mib, r.seconds, rate,
        static_cast<long long>(percentile(r.latencies, 0.50).count()),
        static_cast<long long>(percentile(r.latencies, 0.99).count()),
        static_cast<long long>(percentile(r.latencies, 1.0).count()),
        r.self_cpu_us / static_cast<double>(o.steps),
        r.children_cpu_us / static_cast<double>(o.steps), status_field("VmRSS"), r.failures);
    if (r.failures != 0) {
        std::fprintf(stderr, "exec_steps_bench: %zu of %zu steps failed, first: %s\n", r.failures,
                     o.steps, r.first_error.c_str());
    }
}

// What the concurrent mode saw while every step was running.
struct ConcurrentSample {
    long threads = 0;
    long tasks = 0;
    long vmrss_kib = 0;
    long fds = 0;
    double all_started_s = 0;
    double all_done_s = 0;
    std::size_t peak_running = 0;
};

// Starts `concurrency` steps of `sleep S` at once through one ProcessRunner and samples the
// process (threads, RSS, descriptors) on the io_context's own thread while they run, so that
// the sampling adds no thread of its own.
int run_concurrent(const Options& o) {
    const std::uint64_t nofile = exec::raise_open_file_limit();
    boost::asio::io_context io;
    exec::ProcessRunner runner(io, exec::RunnerOptions{});
    const exec::ProcessSpec spec = step_spec({"/bin/sleep", std::to_string(o.sleep_s)});
    ConcurrentSample s;
    LoopResult r;
    std::size_t done = 0;
    const auto start = Clock::now();
    for (std::size_t i = 0; i < o.concurrency; ++i) {
        runner.start(spec, [&](exec::ProcessResult result) {
            r.latencies.push_back(result.dispatch_latency);
            if (!result.succeeded()) {
                note_failure(r, result.error);
            }
            if (++done == o.concurrency) {
                s.all_done_s = seconds_since(start);
            }
        });
    }
    s.all_started_s = seconds_since(start);

    boost::asio::steady_timer sampler(io);
    std::function<void()> sample = [&] {
        if (runner.running() >= s.peak_running) {
            s.peak_running = runner.running();
            s.threads = status_field("Threads");
            s.tasks = count_entries("/proc/self/task");
            s.vmrss_kib = std::max(s.vmrss_kib, status_field("VmRSS"));
            s.fds = count_entries("/proc/self/fd");
        }
        if (done < o.concurrency) {
            sampler.expires_after(std::chrono::milliseconds(100));
            sampler.async_wait([&](const boost::system::error_code& e) {
                if (!e) {
                    sample();
                }
            });
        }
    };
    sample();
    io.run();

    std::printf(
        "BENCH mode=concurrent steps=%zu sleep_s=%d nofile=%llu all_started_s=%.3f "
        "all_done_s=%.3f peak_running=%zu threads=%ld tasks=%ld fds=%ld vmrss_kib=%ld "
        "vmhwm_kib=%ld p50_us=%lld p99_us=%lld failures=%zu\n",
        o.concurrency, o.sleep_s, static_cast<unsigned long long>(nofile), s.all_started_s,
        s.all_done_s, s.peak_running, s.threads, s.tasks, s.fds, s.vmrss_kib, status_field("VmHWM"),
        static_cast<long long>(percentile(r.latencies, 0.50).count()),
        static_cast<long long>(percentile(r.latencies, 0.99).count()), r.failures);
    if (r.failures != 0) {
        std::fprintf(stderr, "exec_steps_bench: %zu of %zu steps failed, first: %s\n", r.failures,
                     o.concurrency, r.first_error.c_str());
    }
    return r.failures == 0 && r.latencies.size() == o.concurrency ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    const Options o = parse_options(argc, argv);
    if (!runbookd::log::setup("warn", runbookd::log::Format::Text)) {
        return 2;
    }
    const auto ballast = allocate_ballast(o.ballast_mib);

    LoopResult r;
    const double self_before = cpu_us(RUSAGE_SELF);
    const double children_before = cpu_us(RUSAGE_CHILDREN);
    if (o.mode == "raw-pipes" || o.mode == "raw-null") {
        r = run_raw(o, o.mode == "raw-pipes");
    } else if (o.mode == "runner") {
        r = run_runner(o);
    } else if (o.mode == "fork") {
        r = run_fork(o);
    } else if (o.mode == "concurrent") {
        return run_concurrent(o);
    } else {
        usage(fmt::format("unknown mode \"{}\"", o.mode));
    }
    r.self_cpu_us = cpu_us(RUSAGE_SELF) - self_before;
    r.children_cpu_us = cpu_us(RUSAGE_CHILDREN) - children_before;
    print_loop(o, r);
    return r.failures == 0 && r.latencies.size() == o.steps ? 0 : 1;
}
