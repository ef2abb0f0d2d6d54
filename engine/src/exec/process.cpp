// Boost.Process forks by default. fork() from a multi-threaded daemon write-protects every
// page for copy-on-write and interrupts the other cores to flush their TLBs; under load that
// cost more than the rest of a step's start. vfork() shares the address space until exec, so
// Boost.Process needs this switch before its headers to offer it (see docs/execution.md).
#define BOOST_POSIX_HAS_VFORK 1

#include "exec/process.hpp"

#include <array>
#include <cerrno>
#include <cstring>

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
#include <boost/process/start_dir.hpp>
#include <fcntl.h>
#include <fmt/format.h>
#include <linux/close_range.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.hpp"
#include "exec/output.hpp"

namespace runbookd::exec {
namespace {

namespace asio = boost::asio;
namespace bp = boost::process;

// Runs in the parent before fork (on_setup) and in the child between fork and exec
// (on_exec_setup). The child side may only make async-signal-safe calls: the parent has other
// threads, and one of them may hold the allocator's lock at the moment of fork.
struct ChildSetup : bp::extend::handler {
    char** envp = nullptr;
    int nice = 0;

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
    void on_exec_setup(Executor& /*exec*/) const {
        // Own process group, so that a stop reaches every descendant that stays in it.
        ::setpgid(0, 0);

        // Steps yield the CPU to runbookd itself, so that a busy step cannot starve intake,
        // probes or the audit writer. Raising the nice value needs no privilege.
        if (nice > 0) {
            ::setpriority(PRIO_PROCESS, 0, nice);
        }

        // Signal mask and dispositions are inherited across exec; start from defaults.
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        struct sigaction dfl {};
        dfl.sa_handler = SIG_DFL;
        for (const int sig : {SIGPIPE, SIGXFSZ, SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGCHLD}) {
            ::sigaction(sig, &dfl, nullptr);
        }

        // No descriptor of runbookd (database, sockets, other children's pipes) may survive
        // exec. Marking them close-on-exec keeps Boost.Process's own exec-error pipe working.
        if (::close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) != 0) {
            struct rlimit lim {};
            int max_fd = 65536;
            if (::getrlimit(RLIMIT_NOFILE, &lim) == 0 && lim.rlim_cur < 65536) {
                max_fd = static_cast<int>(lim.rlim_cur);
            }
            for (int fd = 3; fd < max_fd; ++fd) {
                ::fcntl(fd, F_SETFD, FD_CLOEXEC);
            }
        }
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

class ChildProcess final : public ProcessHandle, public std::enable_shared_from_this<ChildProcess> {
  public:
    ChildProcess(asio::io_context& io, ProcessSpec spec, std::function<void(ProcessResult)> done)
        : io_(io),
          spec_(std::move(spec)),
          done_(std::move(done)),
          out_(io, spec_.excerpt_bytes),
          err_(io, spec_.excerpt_bytes),
          pidfd_(io),
          timeout_timer_(io),
          grace_timer_(io),
          drain_timer_(io),
          log_(log::get("exec")) {}

    void start();
    void cancel(std::string reason) override;
    int pid() const override { return pid_; }

  private:
    struct Stream {
        Stream(asio::io_context& io, std::size_t excerpt_bytes)
            : pipe(io), capture(excerpt_bytes / 2, excerpt_bytes - excerpt_bytes / 2) {}
        bp::async_pipe pipe;
        OutputCapture capture;
        std::array<char, 16384> buffer{};
        bool open = true;
    };

    void fail_to_start(std::string error);
    void read(Stream& stream);
    void watch_exit();
    void on_leader_exit();
    void stop(std::string reason);
    void kill_group(int sig);
    void maybe_finish();
    void finish();
    std::string describe_ending(int status);

    asio::io_context& io_;
    ProcessSpec spec_;
    std::function<void(ProcessResult)> done_;
    ProcessResult result_;
    Stream out_;
    Stream err_;
    asio::posix::stream_descriptor pidfd_;
    asio::steady_timer timeout_timer_;
    asio::steady_timer grace_timer_;
    asio::steady_timer drain_timer_;
    std::shared_ptr<spdlog::logger> log_;
    std::chrono::steady_clock::time_point started_;
    std::string stop_reason_;
    pid_t pid_ = -1;
    bool leader_exited_ = false;
    bool stopping_ = false;
    bool finished_ = false;
};

void ChildProcess::fail_to_start(std::string error) {
    finished_ = true;
    result_.ending = ProcessResult::Ending::SpawnFailed;
    result_.error = std::move(error);
    asio::post(io_, [self = shared_from_this()] { self->done_(std::move(self->result_)); });
}

void ChildProcess::start() {
    started_ = std::chrono::steady_clock::now();
    if (spec_.argv.empty()) {
        fail_to_start("cannot start: empty argv");
        return;
    }
    std::string error;
    result_.program = resolve_program(spec_.argv[0], spec_.env, error);
    if (result_.program.empty()) {
        fail_to_start(std::move(error));
        return;
    }
    struct stat st {};
    if (::stat(spec_.cwd.c_str(), &st) != 0) {
        fail_to_start(fmt::format("cannot start {}: working directory {}: {}", result_.program,
                                  spec_.cwd, std::strerror(errno)));
        return;
    }
    if (!S_ISDIR(st.st_mode)) {
        fail_to_start(fmt::format("cannot start {}: working directory {}: not a directory",
                                  result_.program, spec_.cwd));
        return;
    }

    std::vector<char*> envp;
    envp.reserve(spec_.env.size() + 1);
    for (auto& entry : spec_.env) {
        envp.push_back(entry.data());
    }
    envp.push_back(nullptr);
    ChildSetup setup;
    setup.envp = envp.data();
    setup.nice = spec_.nice;
    const std::vector<std::string> args(spec_.argv.begin() + 1, spec_.argv.end());

    std::error_code ec;
    auto stdin_null = (bp::std_in < bp::null);
    auto stdout_pipe = (bp::std_out > out_.pipe);
    auto stderr_pipe = (bp::std_err > err_.pipe);
    bp::child child(bp::exe = result_.program, bp::args = args, bp::start_dir = spec_.cwd,
                    stdin_null, stdout_pipe, stderr_pipe, setup, bp::posix::use_vfork, ec);
    if (ec) {
        fail_to_start(fmt::format("cannot start {}: {}", result_.program, ec.message()));
        return;
    }
    pid_ = child.id();
    child.detach();  // reaped below through the pidfd, not by the child object

    const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
    if (pidfd < 0) {
        const int err = errno;
        kill_group(SIGKILL);
        int status = 0;
        ::waitpid(pid_, &status, 0);
        fail_to_start(
            fmt::format("cannot watch {}: pidfd_open: {} (runbookd needs Linux 5.3 or "
                        "newer)",
                        result_.program, std::strerror(err)));
        return;
    }
    pidfd_.assign(pidfd);

    log_->debug("process started {}pid={} program={}", spec_.log_context, pid_,
                log::quote(result_.program));
    read(out_);
    read(err_);
    watch_exit();
    timeout_timer_.expires_after(spec_.timeout);
    timeout_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
        if (!e && !self->finished_ && !self->leader_exited_) {
            self->result_.timed_out = true;
            self->stop(fmt::format("timed out after {} ms", self->spec_.timeout.count()));
        }
    });
}

void ChildProcess::read(Stream& stream) {
    stream.pipe.async_read_some(
        asio::buffer(stream.buffer),
        [self = shared_from_this(), &stream](const boost::system::error_code& e, std::size_t n) {
            if (n > 0) {
                stream.capture.append(std::string_view(stream.buffer.data(), n));
            }
            if (e) {
                stream.open = false;
                self->maybe_finish();
                return;
            }
            self->read(stream);
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
    if (!out_.open && !err_.open) {
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
            self->finish();
        }
    });
}

void ChildProcess::cancel(std::string reason) {
    if (finished_ || stopping_) {
        return;
    }
    result_.cancelled = true;
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
    grace_timer_.expires_after(spec_.grace);
    grace_timer_.async_wait([self = shared_from_this()](const boost::system::error_code& e) {
        if (!e && !self->finished_ && !self->leader_exited_) {
            self->log_->warn("grace period expired, killing process group {}pid={} grace_ms={}",
                             self->spec_.log_context, self->pid_, self->spec_.grace.count());
            self->result_.killed_after_grace = true;
            self->kill_group(SIGKILL);
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

void ChildProcess::maybe_finish() {
    if (leader_exited_ && !out_.open && !err_.open) {
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

    timeout_timer_.cancel();
    grace_timer_.cancel();
    drain_timer_.cancel();
    boost::system::error_code ignored;
    pidfd_.close(ignored);
    out_.pipe.close(ignored);
    err_.pipe.close(ignored);

    result_.duration =
        std::chrono::duration_cast<Millis>(std::chrono::steady_clock::now() - started_);
    result_.stdout_excerpt = out_.capture.excerpt();
    result_.stderr_excerpt = err_.capture.excerpt();
    result_.stdout_bytes = out_.capture.total_bytes();
    result_.stderr_bytes = err_.capture.total_bytes();
    result_.error = describe_ending(status);
    log_->debug("process reaped {}pid={} status={} duration_ms={}", spec_.log_context, pid_, status,
                result_.duration.count());
    asio::post(io_, [self = shared_from_this()] { self->done_(std::move(self->result_)); });
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

}  // namespace

std::shared_ptr<ProcessHandle> ProcessRunner::start(ProcessSpec spec,
                                                    std::function<void(ProcessResult)> done) {
    auto child = std::make_shared<ChildProcess>(io_, std::move(spec), std::move(done));
    child->start();
    return child;
}

std::string resolve_program(const std::string& name, const std::vector<std::string>& env,
                            std::string& error) {
    if (name.find('/') != std::string::npos) {
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

std::string signal_name(int signal) {
    const char* abbrev = ::sigabbrev_np(signal);
    if (abbrev == nullptr) {
        return fmt::format("signal {}", signal);
    }
    return fmt::format("SIG{}", abbrev);
}

}  // namespace runbookd::exec
