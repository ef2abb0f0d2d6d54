#pragma once

#include <chrono>
#include <csignal>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

namespace runbookd::exec {

using Millis = std::chrono::milliseconds;

// What to run, fully rendered: no placeholders, no shell.
struct ProcessSpec {
    std::vector<std::string> argv;  // argv[0]: a path, or a name looked up in the env's PATH
    std::vector<std::string> env;   // the complete environment, "NAME=value"
    std::string cwd = "/";
    Millis timeout{300'000};
    Millis grace{5'000};  // between the stop signal and SIGKILL
    int stop_signal = SIGTERM;
    Millis drain{2'000};               // after the program exits, how long its output may stay open
    std::size_t excerpt_bytes = 8192;  // per stream, split between head and tail
    int nice = 0;                      // added to the child's nice value (0-19)
    // Fields naming the attempt on every log line about this process, e.g.
    // "run=4 step=df attempt=1 " (with a trailing space), or empty.
    std::string log_context;
};

struct ProcessResult {
    enum class Ending { Exited, Signaled, SpawnFailed };

    Ending ending = Ending::SpawnFailed;
    int exit_code = -1;  // with Exited
    int signal = 0;      // with Signaled
    bool timed_out = false;
    bool cancelled = false;
    bool killed_after_grace = false;
    std::string program;  // the resolved path that was executed
    std::string error;    // empty on exit code 0; otherwise what went wrong, in words
    std::string stdout_excerpt;
    std::string stderr_excerpt;
    std::int64_t stdout_bytes = 0;
    std::int64_t stderr_bytes = 0;
    Millis duration{0};

    bool succeeded() const {
        return ending == Ending::Exited && exit_code == 0 && !timed_out && !cancelled;
    }
};

// A running child, for stopping it early.
class ProcessHandle {
  public:
    virtual ~ProcessHandle() = default;
    // Stops the whole process group: the spec's stop signal, then SIGKILL after the grace
    // period. The completion still runs once, with `cancelled` set and `reason` as its error.
    virtual void cancel(std::string reason) = 0;
    virtual int pid() const = 0;
};

// Starts child processes and watches them on one io_context. Each child runs in its own
// process group with stdin on /dev/null, stdout and stderr on pipes, default signal
// dispositions and no file descriptor of runbookd. Its exit is watched through a pidfd, so
// no SIGCHLD handler is involved.
//
// Thread model: start(), cancel() and the completion all run on the io_context's thread.
class ProcessRunner {
  public:
    explicit ProcessRunner(boost::asio::io_context& io) : io_(io) {}

    // Starts `spec`. `done` runs exactly once, on the io_context, after the child is reaped
    // and its output closed (or at once, posted, when it cannot start).
    std::shared_ptr<ProcessHandle> start(ProcessSpec spec, std::function<void(ProcessResult)> done);

  private:
    boost::asio::io_context& io_;
};

// Finds `name` in the PATH entry of `env` (a list of "NAME=value"); returns the path, or an
// empty string with `error` set when it is not found or not executable.
std::string resolve_program(const std::string& name, const std::vector<std::string>& env,
                            std::string& error);

std::string signal_name(int signal);

}  // namespace runbookd::exec
