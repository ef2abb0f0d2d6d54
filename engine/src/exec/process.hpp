#pragma once

#include <chrono>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>

#include <runbookd/result.hpp>
#include <runbookd/timestamp.hpp>

namespace runbookd::exec {

using Millis = std::chrono::milliseconds;

// Limits applied with setrlimit in the child before exec (soft = hard = value). Unset ones are
// inherited from runbookd.
struct ResourceLimits {
    std::optional<std::uint64_t> cpu_seconds;          // RLIMIT_CPU: SIGXCPU, then SIGKILL
    std::optional<std::uint64_t> address_space_bytes;  // RLIMIT_AS
    std::optional<std::uint64_t> open_files;           // RLIMIT_NOFILE
    // RLIMIT_NPROC counts every process of the step's user, not of the step alone, and the
    // kernel does not apply it to root.
    std::optional<std::uint64_t> processes;
};

// One thing that happened to an attempt's processes, in the order it happened.
struct Transition {
    Timestamp at;
    // "stop_signal_sent", "grace_expired", "killed", "drain_expired", "output_truncated",
    // "orphans_killed"
    std::string kind;
    std::string detail;  // in words, e.g. "sent SIGTERM to process group 1234: timed out ..."
};

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
    // Called once on the runner's thread right after the child started (not when it could not),
    // with its pid, which is also its process group id. The pid stays the child's until the
    // completion runs (it is reaped just before).
    std::function<void(pid_t pid)> on_spawned;
    // Fields naming the attempt on every log line about this process, e.g.
    // "run=4 step=df attempt=1 " (with a trailing space), or empty.
    std::string log_context;
    ResourceLimits limits;
    std::string user;   // name or numeric uid; empty: runbookd's own
    std::string group;  // name or numeric gid; empty: the user's primary group (or runbookd's)
    // Non-empty: the whole combined stdout and stderr, in arrival order, is written to this
    // new file (created with its missing parent directories; an existing file is an error).
    std::string output_path;
    std::int64_t output_cap_bytes = 16 << 20;  // stored at most; the rest is counted only
    // (name, value): every occurrence of a value in stdout or stderr becomes "[secret:NAME]"
    // before it reaches the excerpts or the output file; byte counts are of the redacted
    // streams.
    std::vector<std::pair<std::string, std::string>> redact;
    // A descriptor of runbookd that the child gets as its descriptor 3, the only one above 2
    // it keeps (a Python worker's end of its socket); -1: none.
    int channel_fd = -1;
    // A helper process of runbookd (a Python worker), not a step: it runs until stopped (no
    // timeout), takes no slot of max_processes, and gets SIGKILL when runbookd's run engine
    // thread ends (PR_SET_PDEATHSIG), so it never outlives runbookd. Like a step's process it
    // leads its own group, so reap_orphans leaves it and its group alone.
    bool helper = false;
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
    std::vector<Transition> transitions;
    std::string output_path;  // the file written, empty if none
    std::int64_t output_stored_bytes = 0;
    bool output_truncated = false;
    // Writing the output file failed (disk full...): the step still ran; this says why.
    std::string output_error;
    // From ProcessRunner::start() until the child was spawned, including the wait for a slot.
    std::chrono::microseconds dispatch_latency{0};

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
    // An attempt still waiting for a slot is not started: it completes (posted) with
    // `cancelled`, Ending::SpawnFailed and "<reason>; the step was not started".
    virtual void cancel(std::string reason) = 0;
    // cancel() with `grace` between the stop signal and SIGKILL instead of the spec's.
    virtual void cancel(std::string reason, Millis grace) = 0;
    virtual int pid() const = 0;  // -1 until the child is spawned
};

struct RunnerOptions {
    // Step processes running at once at most (0: unlimited). Further start() calls wait, first
    // come first served, until a child is reaped. Helpers (ProcessSpec::helper) do not count.
    std::size_t max_processes = 0;
    // Kill every child of runbookd that is not a running step's leader, after each attempt and
    // every second while steps run. Only for a process whose children are all steps and which
    // is a subreaper (become_subreaper()): the daemon. See docs/execution.md.
    bool reap_orphans = false;
};

// Starts child processes and watches them on one io_context. Each child runs in its own
// process group with stdin on /dev/null, stdout and stderr on pipes, default signal
// dispositions and no file descriptor of runbookd. Its exit is watched through a pidfd, so
// no SIGCHLD handler is involved.
//
// Thread model: start(), cancel(), running(), waiting() and the completion all run on the
// io_context's thread. Started children keep the runner's shared state alive, so the runner
// may go first; starts still queued when it goes are never run nor completed.
class ProcessRunner {
  public:
    explicit ProcessRunner(boost::asio::io_context& io, RunnerOptions options = {});
    ~ProcessRunner();
    ProcessRunner(const ProcessRunner&) = delete;
    ProcessRunner& operator=(const ProcessRunner&) = delete;

    // Starts `spec`, or queues it while max_processes children run. `done` runs exactly once,
    // on the io_context, after the child is reaped and its output closed (or at once, posted,
    // when it cannot start).
    std::shared_ptr<ProcessHandle> start(ProcessSpec spec, std::function<void(ProcessResult)> done);

    std::size_t running() const;  // children spawned and not yet reaped
    std::size_t waiting() const;  // start() calls queued for a slot

    struct State;  // shared with the children it started; defined in process.cpp

  private:
    std::shared_ptr<State> state_;
};

// Raises the soft RLIMIT_NOFILE to the hard limit (each running step holds three descriptors
// in runbookd); returns the soft limit now in force.
std::uint64_t raise_open_file_limit();

// Makes this process a child subreaper (PR_SET_CHILD_SUBREAPER), so that the orphans of steps
// are re-parented to it instead of to PID 1, where a runner with reap_orphans finds them.
Status become_subreaper();

// Finds `name` in the PATH entry of `env` (a list of "NAME=value"); returns the path, or an
// empty string with `error` set when it is not found or not executable.
std::string resolve_program(const std::string& name, const std::vector<std::string>& env,
                            std::string& error);

std::string signal_name(int signal);

// The start time of process `pid` in clock ticks after boot (field 22 of /proc/PID/stat), or
// nothing when no such process exists.
std::optional<std::uint64_t> process_start_ticks(pid_t pid);

// Every step's environment carries this variable, set to a value that names the database of
// the runbookd that started it, so that the next runbookd on that database can find what a
// crash left running even when no pid was recorded (docs/runs.md, Restart).
inline constexpr std::string_view kInstanceEnv = "RUNBOOKD_INSTANCE";

// The process groups that have at least one member that is not a zombie: a group whose
// members have all exited but wait to be reaped by someone else (init reaps orphans when it
// gets to it) has nothing left to stop. One scan of /proc.
std::set<pid_t> live_process_groups();

// The processes, other than this one, whose initial environment holds `entry` ("NAME=value")
// as one of its variables. Processes this user may not inspect are skipped.
std::vector<pid_t> processes_with_env(std::string_view entry);

}  // namespace runbookd::exec
