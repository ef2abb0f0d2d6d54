// Boost.Process forks by default. fork() from a multi-threaded daemon write-protects every
// page for copy-on-write and interrupts the other cores to flush their TLBs; under load that
// cost more than the rest of a step's start. vfork() shares the address space until exec, so
// Boost.Process needs this switch before its headers to offer it (see docs/execution.md).
#define BOOST_POSIX_HAS_VFORK 1

#include "exec/process.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <deque>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/process/args.hpp>
#include <boost/process/async_pipe.hpp>
#include <boost/process/child.hpp>
#include <boost/process/exe.hpp>
#include <boost/process/extend.hpp>
#include <boost/process/io.hpp>
#include <boost/process/posix.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <grp.h>
#include <linux/close_range.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.hpp"
#include "exec/output.hpp"
#include "exec/step_output.hpp"
#include "metrics/runbookd_metrics.hpp"

namespace runbookd::exec {
namespace {

namespace asio = boost::asio;
namespace bp = boost::process;

// What failed in the child between vfork and exec. The child shares the parent's memory until
// exec, so it writes here and the parent reads it once vfork returns.
struct ChildReport {
    enum class Stage { None, Limit, Identity, Cwd };
    Stage stage = Stage::None;
    const char* what = "";  // static text naming the call, e.g. "setting RLIMIT_CPU"
    int error = 0;
};

struct LimitSetting {
    __rlimit_resource_t resource = RLIMIT_CPU;
    rlim_t value = 0;
    const char* what = "";
};

// Runs in the parent before fork (on_setup) and in the child between fork and exec
// (on_exec_setup). The child side may only make async-signal-safe calls: the parent has other
// threads, and one of them may hold the allocator's lock at the moment of fork.
struct ChildSetup : bp::extend::handler {
    char** envp = nullptr;
    int nice = 0;
    std::array<LimitSetting, 4> limits{};
    std::size_t limit_count = 0;
    bool switch_ids = false;
    uid_t uid = 0;
    gid_t gid = 0;
    const gid_t* groups = nullptr;
    std::size_t group_count = 0;
    const char* cwd = "/";
    int channel_fd = -1;
    bool die_with_parent = false;
    ChildReport* report = nullptr;

    template <typename Executor>
    void on_setup(Executor& exec) const {
        exec.env = envp;
    }

    // When exec fails, Boost.Process reports the error but only polls once for the child's
    // exit (WNOHANG) before forgetting its pid, so the child would stay a zombie. It has
    // already called _exit by then: wait for it here, while the pid is still known.
    template <typename Executor>
    void on_error(Executor& exec, const std::error_code& /*error*/) const {
        if (exec.pid > 0) {
            int status = 0;
            while (::waitpid(exec.pid, &status, 0) < 0 && errno == EINTR) {
            }
        }
    }

    template <typename Executor>
    void on_exec_setup(Executor& exec) const {
        // Own process group, so that a stop reaches every descendant that stays in it.
        ::setpgid(0, 0);

        // Steps yield the CPU to runbookd itself, so that a busy step cannot starve intake,
        // probes or the audit writer. Raising the nice value needs no privilege.
        if (nice > 0) {
            ::setpriority(PRIO_PROCESS, 0, nice);
        }
        reset_signals();
        if (die_with_parent) {
            // The parent here is the thread that spawned: runbookd's run engine thread.
            ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0UL, 0UL, 0UL);
        }
        // The channel becomes descriptor 3 (dup2 clears close-on-exec on the copy); every
        // other descriptor of runbookd is closed at exec as usual.
        if (channel_fd == 3) {
            ::fcntl(3, F_SETFD, 0);
        } else if (channel_fd >= 0) {
            ::dup2(channel_fd, 3);
        }
        close_descriptors_on_exec(channel_fd >= 0 ? 4U : 3U);

        for (std::size_t i = 0; i < limit_count; ++i) {
            // The CPU limit's hard value is a second above the soft one, so that the step
            // gets SIGXCPU first (and its record says so) rather than a bare SIGKILL.
            const rlim_t hard =
                limits[i].resource == RLIMIT_CPU ? limits[i].value + 1 : limits[i].value;
            const struct rlimit lim { limits[i].value, hard };
            if (::setrlimit(limits[i].resource, &lim) != 0) {
                fail(exec, ChildReport::Stage::Limit, limits[i].what);
            }
        }
        // Raw system calls: glibc's setuid() and friends broadcast the change to every thread
        // of the process, and in a vfork child that list is the parent's. The kernel applies
        // the raw calls to the calling task, which here is the whole child.
        if (switch_ids) {
            if (::syscall(SYS_setgroups, group_count, groups) != 0) {
                fail(exec, ChildReport::Stage::Identity, "setting the supplementary groups");
            }
            if (::syscall(SYS_setresgid, gid, gid, gid) != 0) {
                fail(exec, ChildReport::Stage::Identity, "setting the group id");
            }
            if (::syscall(SYS_setresuid, uid, uid, uid) != 0) {
                fail(exec, ChildReport::Stage::Identity, "setting the user id");
            }
        }
        // After the switch, so that the step's user needs access to its working directory.
        if (::chdir(cwd) != 0) {
            fail(exec, ChildReport::Stage::Cwd, "chdir");
        }
    }

    static void reset_signals() {
        // Signal mask and dispositions are inherited across exec; start from defaults.
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        for (const int sig : {SIGPIPE, SIGXFSZ, SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGCHLD}) {
            ::sigaction(sig, &dfl, nullptr);
        }
    }

    static void close_descriptors_on_exec(unsigned first) {
        // No descriptor of runbookd (database, sockets, other children's pipes) may survive
        // exec. Marking them close-on-exec keeps Boost.Process's own exec-error pipe working.
        if (::close_range(first, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
            struct rlimit lim {};
            int max_fd = 65536;
            if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < 65536) {
                max_fd = static_cast<int>(lim.rlim_cur);
            }
            for (int fd = static_cast<int>(first); fd < max_fd; ++fd) {
                ::fcntl(fd, F_SETFD, FD_CLOEXEC);
            }
        }
    }

    // Ends the child before exec. Boost.Process's error path with vfork stores the error code
    // in the shared executor, so the parent's start fails with it; the message given to it is
    // short enough not to allocate.
    template <typename Executor>
    [[noreturn]] void fail(Executor& exec, ChildReport::Stage stage, const char* what) const {
        const int err = errno;
        report->stage = stage;
        report->what = what;
        report->error = err;
        exec.set_error(std::error_code(err, std::system_category()), "setup failed");
        ::_exit(127);
    }
};

std::string env_value(const std::vector<std::string>& env, std::string_view name) {
    for (const auto& entry : env) {
        if (entry.size() > name.size() && entry.compare(0, name.size(), name) == 0 &&
            entry[name.size()] == '=') {
            return entry.substr(name.size() + 1);
        }
    }
    return {};
}

// The ids a step runs as, resolved in the parent: the child may not look anything up.
struct Identity {
    bool switch_ids = false;
    uid_t uid = 0;
    gid_t gid = 0;
    std::vector<gid_t> groups;
};

std::optional<unsigned long> parse_id(const std::string& text) {
    unsigned long value = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
    if (ec != std::errc() || end != text.data() + text.size() || value > 0xfffffffeUL) {
        return std::nullopt;
    }
    return value;
}

// Looks up a passwd entry by name or uid; returns false when there is none.
bool find_user(const std::string& name, std::optional<uid_t> uid, std::string& found_name,
               uid_t& found_uid, gid_t& found_gid) {
    std::vector<char> buffer(16384);
    struct passwd pw {};
    struct passwd* result = nullptr;
    int rc = 0;
    while (true) {
        rc = uid ? ::getpwuid_r(*uid, &pw, buffer.data(), buffer.size(), &result)
                 : ::getpwnam_r(name.c_str(), &pw, buffer.data(), buffer.size(), &result);
        if (rc != ERANGE || buffer.size() > (1U << 22)) {
            break;
        }
        buffer.resize(buffer.size() * 2);
    }
    if (rc != 0 || result == nullptr) {
        return false;
    }
    found_name = pw.pw_name;
    found_uid = pw.pw_uid;
    found_gid = pw.pw_gid;
    return true;
}

std::optional<gid_t> find_group(const std::string& name) {
    if (auto id = parse_id(name)) {
        return static_cast<gid_t>(*id);
    }
    std::vector<char> buffer(16384);
    struct group gr {};
    struct group* result = nullptr;
    int rc = 0;
    while ((rc = ::getgrnam_r(name.c_str(), &gr, buffer.data(), buffer.size(), &result)) ==
               ERANGE &&
           buffer.size() <= (1U << 22)) {
        buffer.resize(buffer.size() * 2);
    }
    if (rc != 0 || result == nullptr) {
        return std::nullopt;
    }
    return gr.gr_gid;
}

std::vector<gid_t> supplementary_groups(const std::string& user_name, gid_t gid) {
    if (user_name.empty()) {
        return {gid};
    }
    int count = 64;
    std::vector<gid_t> groups;
    for (int tries = 0; tries < 8; ++tries) {
        groups.resize(static_cast<std::size_t>(count));
        const int wanted = count;
        if (::getgrouplist(user_name.c_str(), gid, groups.data(), &count) >= 0) {
            groups.resize(static_cast<std::size_t>(count));
            return groups;
        }
        count = std::max(count, wanted * 2);
    }
    return {gid};
}

// Resolves spec.user and spec.group; returns an error text (without the "cannot start" part)
// or an empty string.
std::string resolve_identity(const ProcessSpec& spec, Identity& out) {
    if (spec.user.empty() && spec.group.empty()) {
        return {};
    }
    std::string name;
    uid_t uid = ::geteuid();
    gid_t gid = ::getegid();
    if (!spec.user.empty()) {
        const auto numeric = parse_id(spec.user);
        std::optional<uid_t> by_uid;
        if (numeric) {
            by_uid = static_cast<uid_t>(*numeric);
        }
        if (!find_user(spec.user, by_uid, name, uid, gid)) {
            if (!numeric) {
                return fmt::format("user \"{}\": no such user", spec.user);
            }
            // A uid without a passwd entry keeps runbookd's group unless one is given.
            uid = static_cast<uid_t>(*numeric);
            name.clear();
        }
    }
    if (!spec.group.empty()) {
        const auto found = find_group(spec.group);
        if (!found) {
            return fmt::format("group \"{}\": no such group", spec.group);
        }
        gid = *found;
    }
    if (::geteuid() != 0) {
        if (uid == ::geteuid() && gid == ::getegid()) {
            return {};
        }
        return spec.user.empty()
                   ? fmt::format(
                         "group \"{}\": runbookd is not running as root, so it cannot "
                         "switch groups",
                         spec.group)
                   : fmt::format(
                         "user \"{}\": runbookd is not running as root, so it cannot "
                         "switch users",
                         spec.user);
    }
    out.switch_ids = true;
    out.uid = uid;
    out.gid = gid;
    out.groups = spec.user.empty() ? std::vector<gid_t>{gid} : supplementary_groups(name, gid);
    return {};
}

class ChildProcess;

// The read end of a pipe the child now writes to, as a descriptor of its own (the pipe object
// is closed): the step's output is read by StepOutput.
int take_source(bp::async_pipe& pipe) {
    const int fd = ::fcntl(pipe.native_source(), F_DUPFD_CLOEXEC, 0);
    boost::system::error_code ignored;
    pipe.close(ignored);
    return fd;
}

}  // namespace

// Shared by the runner and its children, so that a child finishing after the runner is gone
// still has somewhere to return its slot.
struct ProcessRunner::State : std::enable_shared_from_this<ProcessRunner::State> {
    State(asio::io_context& context, RunnerOptions opts)
        : io(context), options(opts), sweep_timer(context), log(log::get("exec")) {}

    void release_slot();
    void start_waiting();
    std::vector<pid_t> kill_orphans();
    void arm_sweep();
    void forget_group_later(pid_t pgid);

    asio::io_context& io;
    RunnerOptions options;
    std::size_t running = 0;
    std::deque<std::shared_ptr<ChildProcess>> waiting;
    std::set<pid_t> leaders;  // pids of spawned step processes not yet reaped
    // Process groups of steps that have finished, most recent last: their members were sent
    // SIGKILL with the group; those re-parented here are reaped quietly, not as orphans.
    std::set<pid_t> finished_groups;
    std::deque<pid_t> finished_order;
    asio::steady_timer sweep_timer;
    bool sweep_armed = false;
    bool closed = false;
    std::shared_ptr<spdlog::logger> log;
};

namespace {

using State = ProcessRunner::State;

class ChildProcess final : public ProcessHandle, public std::enable_shared_from_this<ChildProcess> {
  public:
    ChildProcess(std::shared_ptr<State> state, ProcessSpec spec,
                 std::function<void(ProcessResult)> done)
        : state_(std::move(state)),
          io_(state_->io),
          spec_(std::move(spec)),
          done_(std::move(done)),
          out_pipe_(io_),
          err_pipe_(io_),
          output_(std::make_shared<StepOutput>(
              io_,
              StepOutput::Options{spec_.excerpt_bytes, spec_.redact, spec_.output_path,
                                  spec_.output_cap_bytes, spec_.log_context},
              [this](std::string kind, std::string detail) {
                  note(std::move(kind), std::move(detail));
              })),
          pidfd_(io_),
          timeout_timer_(io_),
          grace_timer_(io_),
          drain_timer_(io_),
          log_(log::get("exec")),
          requested_(std::chrono::steady_clock::now()) {}

    // Spawns the child; the caller has taken a slot for it.
    void spawn();
    void cancel(std::string reason) override;
    void cancel(std::string reason, Millis grace) override {
        spec_.grace = grace;
        cancel(std::move(reason));
    }
    int pid() const override { return pid_; }
    bool helper() const { return spec_.helper; }

  private:
    std::string check_before_spawn(Identity& identity);
    void fail_to_start(std::string error);
    void watch_exit();
    void on_leader_exit();
    void stop(std::string reason);
    void kill_group(int sig);
    void note(std::string kind, std::string detail);
    void maybe_finish();
    void finish();
    void sweep_orphans();
    std::string describe_ending(int status);

    std::shared_ptr<State> state_;
    asio::io_context& io_;
    ProcessSpec spec_;
    std::function<void(ProcessResult)> done_;
    ProcessResult result_;
    bp::async_pipe out_pipe_;
    bp::async_pipe err_pipe_;
    std::shared_ptr<StepOutput> output_;
    asio::posix::stream_descriptor pidfd_;
    asio::steady_timer timeout_timer_;
    asio::steady_timer grace_timer_;
    asio::steady_timer drain_timer_;
    std::shared_ptr<spdlog::logger> log_;
    std::chrono::steady_clock::time_point requested_;
    std::chrono::steady_clock::time_point started_;
    std::string stop_reason_;
    pid_t pid_ = -1;
    bool holds_slot_ = false;
    bool leader_exited_ = false;
    bool stopping_ = false;
    bool finished_ = false;
};

void ChildProcess::fail_to_start(std::string error) {
    finished_ = true;
    result_.ending = ProcessResult::Ending::SpawnFailed;
    result_.error = std::move(error);
    result_.dispatch_latency = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - requested_);
    output_->close();
    if (holds_slot_) {
        holds_slot_ = false;
        state_->release_slot();
    }
    asio::post(io_, [self = shared_from_this()] { self->done_(std::move(self->result_)); });
}

// Problems found before any child exists; returns the error or an empty string.
std::string ChildProcess::check_before_spawn(Identity& identity) {
    if (spec_.argv.empty()) {
        return "cannot start: empty argv";
    }
    std::string error;
    result_.program = resolve_program(spec_.argv[0], spec_.env, error);
    if (result_.program.empty()) {
        return error;
    }
    struct stat st {};
    if (::stat(spec_.cwd.c_str(), &st) != 0) {
        return fmt::format("cannot start {}: working directory {}: {}", result_.program, spec_.cwd,
                           std::strerror(errno));
    }
    if (!S_ISDIR(st.st_mode)) {
        return fmt::format("cannot start {}: working directory {}: not a directory",
                           result_.program, spec_.cwd);
    }
    if (std::string e = resolve_identity(spec_, identity); !e.empty()) {
        return fmt::format("cannot start {}: {}", result_.program, e);
    }
    return {};
}

void ChildProcess::spawn() {
    holds_slot_ = !spec_.helper;
    Identity identity;
    if (std::string error = check_before_spawn(identity); !error.empty()) {
        fail_to_start(std::move(error));
        return;
    }

    std::vector<char*> envp;
    envp.reserve(spec_.env.size() + 1);
    for (auto& entry : spec_.env) {
        envp.push_back(entry.data());
    }
    envp.push_back(nullptr);
    ChildReport report;
    ChildSetup setup;
    setup.envp = envp.data();
    setup.nice = spec_.nice;
    const auto add_limit = [&setup](const std::optional<std::uint64_t>& value,
                                    __rlimit_resource_t resource, const char* what) {
        if (value) {
            setup.limits[setup.limit_count++] = LimitSetting{resource, *value, what};
        }
    };
    add_limit(spec_.limits.cpu_seconds, RLIMIT_CPU, "setting RLIMIT_CPU");
    add_limit(spec_.limits.address_space_bytes, RLIMIT_AS, "setting RLIMIT_AS");
    add_limit(spec_.limits.open_files, RLIMIT_NOFILE, "setting RLIMIT_NOFILE");
    add_limit(spec_.limits.processes, RLIMIT_NPROC, "setting RLIMIT_NPROC");
    setup.switch_ids = identity.switch_ids;
    setup.uid = identity.uid;
    setup.gid = identity.gid;
    setup.groups = identity.groups.data();
    setup.group_count = identity.groups.size();
    setup.cwd = spec_.cwd.c_str();
    setup.channel_fd = spec_.channel_fd;
    setup.die_with_parent = spec_.helper;
    setup.report = &report;
    const std::vector<std::string> args(spec_.argv.begin() + 1, spec_.argv.end());

    std::error_code ec;
    auto stdin_null = (bp::std_in < bp::null);
    auto stdout_pipe = (bp::std_out > out_pipe_);
    auto stderr_pipe = (bp::std_err > err_pipe_);
    bp::child child(bp::exe = result_.program, bp::args = args, stdin_null, stdout_pipe,
                    stderr_pipe, setup, bp::posix::use_vfork, ec);
    result_.dispatch_latency = std::chrono::duration_cast<std::chrono::microseconds>(
        std::chrono::steady_clock::now() - requested_);
    if (ec) {
        const std::string cause = report.error != 0 ? std::strerror(report.error) : ec.message();
        switch (report.stage) {
            case ChildReport::Stage::Limit:
                fail_to_start(
                    fmt::format("cannot start {}: {}: {}", result_.program, report.what, cause));
                break;
            case ChildReport::Stage::Identity:
                fail_to_start(fmt::format("cannot start {}: {} \"{}\": {}: {}", result_.program,
                                          spec_.user.empty() ? "group" : "user",
                                          spec_.user.empty() ? spec_.group : spec_.user,
                                          report.what, cause));
                break;
            case ChildReport::Stage::Cwd:
                fail_to_start(fmt::format("cannot start {}: working directory {}: {}",
                                          result_.program, spec_.cwd, cause));
                break;
            case ChildReport::Stage::None:
                fail_to_start(fmt::format("cannot start {}: {}", result_.program, cause));
                break;
        }
        return;
    }
    pid_ = child.id();
    child.detach();  // reaped below through the pidfd, not by the child object
    state_->leaders.insert(pid_);
    started_ = std::chrono::steady_clock::now();

    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    if (pidfd < 0) {
        const int err = errno;
        kill_group(SIGKILL);
        int status = 0;
        ::waitpid(pid_, &status, 0);
        state_->leaders.erase(pid_);
        fail_to_start(
            fmt::format("cannot watch {}: pidfd_open: {} (runbookd needs Linux 5.3 or "
                        "newer)",
                        result_.program, std::strerror(err)));
        return;
    }
    pidfd_.assign(pidfd);

    log_->debug("process started {}pid={} program={}", spec_.log_context, pid_,
                log::quote(result_.program));
    if (spec_.on_spawned) {
        spec_.on_spawned(pid_);
    }
    output_->start(take_source(out_pipe_), take_source(err_pipe_),
                   [self = shared_from_this()] { self->maybe_finish(); });
    watch_exit();
    state_->arm_sweep();
    if (spec_.helper) {
        return;  // runs until stopped
    }
    timeout_timer_.expires_after(spec_.timeout);
    timeout_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
        if (!e && !self->finished_ && !self->leader_exited_) {
            self->result_.timed_out = true;
            self->stop(fmt::format("timed out after {} ms", self->spec_.timeout.count()));
        }
    });
}

void ChildProcess::watch_exit() {
    pidfd_.async_wait(asio::posix::stream_descriptor::wait_read,
                      [self = shared_from_this()](const boost::system::error_code& e) {
                          if (!e) {
                              self->on_leader_exit();
                          }
                      });
}

void ChildProcess::on_leader_exit() {
    leader_exited_ = true;
    timeout_timer_.cancel();
    grace_timer_.cancel();
    if (!output_->open()) {
        finish();
        return;
    }
    // Something the program started still holds its output open. Give it a moment, then
    // stop the group: the step is over when its program is.
    drain_timer_.expires_after(spec_.drain);
    drain_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
        if (!e && !self->finished_) {
            self->log_->warn("output still open after exit {}pid={} drain_ms={}",
                             self->spec_.log_context, self->pid_, self->spec_.drain.count());
            self->note("drain_expired",
                       fmt::format("output still open {} ms after process {} exited",
                                   self->spec_.drain.count(), self->pid_));
            metrics::runbookd_metrics().process_kill(metrics::KillReason::DrainExpired);
            self->note("killed", fmt::format("sent SIGKILL to process group {}: output still "
                                             "open after the drain period",
                                             self->pid_));
            self->finish();
        }
    });
}

void ChildProcess::cancel(std::string reason) {
    if (finished_ || stopping_) {
        return;
    }
    result_.cancelled = true;
    if (pid_ < 0) {
        // Still waiting for a slot: never started.
        auto& waiting = state_->waiting;
        waiting.erase(std::remove(waiting.begin(), waiting.end(), shared_from_this()),
                      waiting.end());
        fail_to_start(reason + "; the step was not started");
        return;
    }
    stop(std::move(reason));
}

void ChildProcess::stop(std::string reason) {
    if (stopping_) {
        return;
    }
    stopping_ = true;
    stop_reason_ = std::move(reason);
    log_->info("stopping process group {}pid={} signal={} reason={}", spec_.log_context, pid_,
               signal_name(spec_.stop_signal), log::quote(stop_reason_));
    kill_group(spec_.stop_signal);
    metrics::runbookd_metrics().process_kill(result_.timed_out ? metrics::KillReason::Timeout
                                                               : metrics::KillReason::Cancel);
    note("stop_signal_sent", fmt::format("sent {} to process group {}: {}",
                                         signal_name(spec_.stop_signal), pid_, stop_reason_));
    grace_timer_.expires_after(spec_.grace);
    grace_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
        if (!e && !self->finished_ && !self->leader_exited_) {
            self->log_->warn("grace period expired, killing process group {}pid={} grace_ms={}",
                             self->spec_.log_context, self->pid_, self->spec_.grace.count());
            self->note("grace_expired", fmt::format("process {} still ran {} ms after {}",
                                                    self->pid_, self->spec_.grace.count(),
                                                    signal_name(self->spec_.stop_signal)));
            self->result_.killed_after_grace = true;
            self->kill_group(SIGKILL);
            metrics::runbookd_metrics().process_kill(metrics::KillReason::GraceExpired);
            self->note("killed", fmt::format("sent SIGKILL to process group {}", self->pid_));
        }
    });
}

void ChildProcess::kill_group(int sig) {
    // The leader is not reaped before finish(), so its pid still names this group.
    if (pid_ > 0 && ::kill(-pid_, sig) != 0 && errno != ESRCH) {
        log_->warn("signalling process group failed {}pid={} signal={} error={}", spec_.log_context,
                   pid_, signal_name(sig), log::quote(std::strerror(errno)));
    }
}

void ChildProcess::note(std::string kind, std::string detail) {
    result_.transitions.push_back(Transition{Timestamp::now(), std::move(kind), std::move(detail)});
}

void ChildProcess::maybe_finish() {
    if (leader_exited_ && !output_->open()) {
        finish();
    }
}

void ChildProcess::finish() {
    if (finished_) {
        return;
    }
    finished_ = true;
    // Whatever of the group outlived its leader goes now, before the leader is reaped.
    kill_group(SIGKILL);
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    state_->leaders.erase(pid_);
    state_->forget_group_later(pid_);
    // Members of the group that were re-parented here (their parent in the group exited
    // first) and are already dead: reap them now.
    if (state_->options.reap_orphans) {
        int member_status = 0;
        while (::waitpid(-pid_, &member_status, WNOHANG) > 0) {
        }
    }
    if (holds_slot_) {
        holds_slot_ = false;
        state_->release_slot();
    }
    sweep_orphans();

    timeout_timer_.cancel();
    grace_timer_.cancel();
    drain_timer_.cancel();
    boost::system::error_code ignored;
    pidfd_.close(ignored);
    output_->close();
    output_->fill(result_);

    result_.duration =
        std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - started_);
    result_.error = describe_ending(status);
    log_->debug("process reaped {}pid={} status={} duration_ms={}", spec_.log_context, pid_, status,
                result_.duration.count());
    asio::post(io_, [self = shared_from_this()] { self->done_(std::move(self->result_)); });
}

void ChildProcess::sweep_orphans() {
    if (!state_->options.reap_orphans) {
        return;
    }
    const auto pids = state_->kill_orphans();
    if (pids.empty()) {
        return;
    }
    note("orphans_killed",
         fmt::format("sent SIGKILL to {} process(es) left behind outside the step's process "
                     "group, pids {}",
                     pids.size(), fmt::join(pids, ", ")));
}

std::string ChildProcess::describe_ending(int status) {
    std::string how;
    if (WIFEXITED(status)) {
        result_.ending = ProcessResult::Ending::Exited;
        result_.exit_code = WEXITSTATUS(status);
        if (result_.exit_code != 0) {
            how = fmt::format("exited with code {}", result_.exit_code);
        }
    } else if (WIFSIGNALED(status)) {
        result_.ending = ProcessResult::Ending::Signaled;
        result_.signal = WTERMSIG(status);
        how = fmt::format("killed by signal {} ({})", result_.signal, signal_name(result_.signal));
        if (spec_.limits.cpu_seconds &&
            (result_.signal == SIGXCPU || (result_.signal == SIGKILL && !stopping_))) {
            how += fmt::format("; the step's CPU limit is {} s (limits.cpu)",
                               *spec_.limits.cpu_seconds);
        }
    }
    if (!stopping_) {
        return how;
    }
    std::string out = stop_reason_;
    out += fmt::format("; sent {} to the process group", signal_name(spec_.stop_signal));
    if (result_.killed_after_grace) {
        out += fmt::format(", then SIGKILL after the {} ms grace period", spec_.grace.count());
    }
    if (!how.empty()) {
        out += "; " + how;
    }
    return out;
}

// Pids of this process's children, from every thread's children list (an orphan is
// re-parented to one of the subreaper's threads).
std::vector<pid_t> own_children() {
    std::vector<pid_t> pids;
    std::error_code ec;
    for (const auto& task : std::filesystem::directory_iterator("/proc/self/task", ec)) {
        std::ifstream in(task.path() / "children");
        long pid = 0;
        while (in >> pid) {
            pids.push_back(static_cast<pid_t>(pid));
        }
    }
    return pids;
}

std::string process_name(pid_t pid) {
    std::ifstream in(fmt::format("/proc/{}/comm", pid));
    std::string name;
    std::getline(in, name);
    return name;
}

}  // namespace

void ProcessRunner::State::release_slot() {
    --running;
    if (!waiting.empty()) {
        // Posted: a completion handler is no place to spawn from (docs/execution.md).
        asio::post(io, [self = shared_from_this()] { self->start_waiting(); });
    }
}

void ProcessRunner::State::start_waiting() {
    while (!waiting.empty() && (options.max_processes == 0 || running < options.max_processes)) {
        auto child = std::move(waiting.front());
        waiting.pop_front();
        ++running;
        child->spawn();
    }
}

void ProcessRunner::State::forget_group_later(pid_t pgid) {
    constexpr std::size_t kRemembered = 4096;
    if (finished_groups.insert(pgid).second) {
        finished_order.push_back(pgid);
    }
    while (finished_order.size() > kRemembered) {
        finished_groups.erase(finished_order.front());
        finished_order.pop_front();
    }
}

std::vector<pid_t> ProcessRunner::State::kill_orphans() {
    std::vector<pid_t> killed;
    // Killing an orphan re-parents its own children here in turn; a few rounds catch them.
    for (int round = 0; round < 8; ++round) {
        bool found = false;
        for (const pid_t pid : own_children()) {
            if (leaders.count(pid) != 0) {
                continue;
            }
            const pid_t pgid = ::getpgid(pid);
            if (pgid > 0 && leaders.count(pgid) != 0) {
                // Still in a running step's group (its parent exited first): that step's
                // stop or end kills it with the group.
                continue;
            }
            if (pgid > 0 && finished_groups.count(pgid) != 0) {
                // A member of a finished step's group, already sent SIGKILL with it.
                ::kill(pid, SIGKILL);
                int status = 0;
                while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
                }
                continue;
            }
            found = true;
            const std::string name = process_name(pid);
            if (::getpgid(pid) == pid) {
                ::kill(-pid, SIGKILL);
            }
            ::kill(pid, SIGKILL);
            int status = 0;
            while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            log->warn("orphan of a step killed pid={} command={}", pid, log::quote(name));
            metrics::runbookd_metrics().process_kill(metrics::KillReason::Orphan);
            killed.push_back(pid);
        }
        if (!found) {
            break;
        }
    }
    return killed;
}

void ProcessRunner::State::arm_sweep() {
    if (!options.reap_orphans || sweep_armed || closed) {
        return;
    }
    sweep_armed = true;
    sweep_timer.expires_after(std::chrono::seconds(1));
    sweep_timer.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
        self->sweep_armed = false;
        if (e || self->closed) {
            return;
        }
        const bool found = !self->kill_orphans().empty();
        if (found || !self->leaders.empty()) {
            self->arm_sweep();
        }
    });
}

ProcessRunner::ProcessRunner(boost::asio::io_context& io, RunnerOptions options)
    : state_(std::make_shared<State>(io, options)) {}

ProcessRunner::~ProcessRunner() {
    state_->closed = true;
    state_->sweep_timer.cancel();
}

std::shared_ptr<ProcessHandle> ProcessRunner::start(ProcessSpec spec,
                                                    std::function<void(ProcessResult)> done) {
    auto child = std::make_shared<ChildProcess>(state_, std::move(spec), std::move(done));
    if (child->helper()) {
        child->spawn();
        return child;
    }
    if (state_->options.max_processes != 0 &&
        (state_->running >= state_->options.max_processes || !state_->waiting.empty())) {
        state_->waiting.push_back(child);
        return child;
    }
    ++state_->running;
    child->spawn();
    return child;
}

std::size_t ProcessRunner::running() const {
    return state_->running;
}

std::size_t ProcessRunner::waiting() const {
    return state_->waiting.size();
}

std::uint64_t raise_open_file_limit() {
    struct rlimit lim {};
    if (::getrlimit(RLIMIT_NOFILE, &lim) != 0) {
        return 0;
    }
    if (lim.rlim_cur < lim.rlim_max) {
        struct rlimit raised = lim;
        raised.rlim_cur = lim.rlim_max;
        if (::setrlimit(RLIMIT_NOFILE, &raised) == 0) {
            lim = raised;
        }
    }
    return lim.rlim_cur;
}

Status become_subreaper() {
    if (::prctl(PR_SET_CHILD_SUBREAPER, 1UL, 0UL, 0UL, 0UL) != 0) {
        return make_error(ErrorCode::Internal, fmt::format("becoming a child subreaper failed: {}",
                                                           std::strerror(errno)));
    }
    return {};
}

std::string resolve_program(const std::string& name, const std::vector<std::string>& env,
                            std::string& error) {
    if (name.find('/') != std::string::npos) {
        struct stat st {};
        if (::stat(name.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
            error = fmt::format("cannot start {}: {}", name, std::strerror(EISDIR));
            return {};
        }
        if (::access(name.c_str(), X_OK) != 0) {
            error = fmt::format("cannot start {}: {}", name, std::strerror(errno));
            return {};
        }
        return name;
    }
    const std::string path = env_value(env, "PATH");
    std::string denied;
    std::size_t begin = 0;
    while (begin <= path.size()) {
        std::size_t end = path.find(':', begin);
        if (end == std::string::npos) {
            end = path.size();
        }
        std::string dir = path.substr(begin, end - begin);
        if (dir.empty()) {
            dir = ".";
        }
        std::string candidate = dir + "/" + name;
        struct stat st {};
        if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
            if (::access(candidate.c_str(), X_OK) == 0) {
                return candidate;
            }
            denied = candidate;
        }
        begin = end + 1;
    }
    if (!denied.empty()) {
        error = fmt::format("cannot start {}: {}", denied, std::strerror(EACCES));
    } else {
        error = fmt::format("cannot start {}: not found in PATH ({})", name, path);
    }
    return {};
}

namespace {

// The fields of /proc/PID/stat from field 3 (state) on. "pid (comm) state ppid pgrp ...":
// comm may hold spaces and parentheses, so the fields restart after the last ')'.
std::optional<std::istringstream> stat_fields(const std::filesystem::path& stat_file) {
    std::ifstream in(stat_file);
    std::string stat;
    if (!std::getline(in, stat)) {
        return std::nullopt;
    }
    const auto close = stat.rfind(')');
    if (close == std::string::npos) {
        return std::nullopt;
    }
    return std::istringstream(stat.substr(close + 1));
}

// Every process id in /proc.
std::vector<pid_t> all_pids() {
    std::vector<pid_t> pids;
    std::error_code ec;
    for (const auto& dirent : std::filesystem::directory_iterator("/proc", ec)) {
        const std::string name = dirent.path().filename().string();
        pid_t pid = 0;
        const auto [ptr, err] = std::from_chars(name.data(), name.data() + name.size(), pid);
        if (err == std::errc{} && ptr == name.data() + name.size()) {
            pids.push_back(pid);
        }
    }
    return pids;
}

}  // namespace

std::optional<std::uint64_t> process_start_ticks(pid_t pid) {
    auto fields = stat_fields(fmt::format("/proc/{}/stat", pid));
    if (!fields) {
        return std::nullopt;
    }
    // Skip fields 3-21, then read starttime (22).
    std::string field;
    for (int i = 3; i < 22 && *fields >> field; ++i) {
    }
    std::uint64_t ticks = 0;
    if (!(*fields >> ticks)) {
        return std::nullopt;
    }
    return ticks;
}

std::set<pid_t> live_process_groups() {
    std::set<pid_t> groups;
    for (const pid_t pid : all_pids()) {
        auto fields = stat_fields(fmt::format("/proc/{}/stat", pid));
        char state = 0;
        pid_t ppid = 0;
        pid_t pgrp = 0;
        if (fields && *fields >> state >> ppid >> pgrp && state != 'Z' && state != 'X') {
            groups.insert(pgrp);
        }
    }
    return groups;
}

std::vector<pid_t> processes_with_env(std::string_view entry) {
    std::vector<pid_t> found;
    const pid_t self = ::getpid();
    for (const pid_t pid : all_pids()) {
        if (pid == self) {
            continue;
        }
        std::ifstream in(fmt::format("/proc/{}/environ", pid), std::ios::binary);
        std::string variable;
        while (std::getline(in, variable, '\0')) {
            if (variable == entry) {
                found.push_back(pid);
                break;
            }
        }
    }
    return found;
}

std::string signal_name(int signal) {
    const char* abbrev = ::sigabbrev_np(signal);
    if (abbrev == nullptr) {
        return fmt::format("signal {}", signal);
    }
    return fmt::format("SIG{}", abbrev);
}

}  // namespace runbookd::exec
