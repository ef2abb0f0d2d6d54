#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <nlohmann/json.hpp>
#include <spdlog/logger.h>

#include "exec/process.hpp"

namespace runbookd::python {

// How the pool starts and keeps its workers (config `python:`, docs/configuration.md).
struct PoolOptions {
    std::size_t workers = 4;  // at most, so Python steps running at once
    std::size_t max_steps_per_worker = 1000;
    std::uint64_t memory_limit = 1ULL << 30;  // RLIMIT_AS of each worker
    exec::Millis startup_timeout{10'000};     // spawn → hello
    std::vector<std::string> path;            // --path DIR..., after the runbooks directory
    std::string worker;                       // the runbookd-python-worker executable
    std::string runbooks_dir;
    std::vector<std::string> env;  // the worker's whole environment, RUNBOOKD_INSTANCE included
    std::string cwd = "/";
    exec::Millis grace{5'000};  // stop signal → SIGKILL when a worker is stopped
    int nice = 0;
};

// How a worker that was running a step ended.
struct WorkerEnd {
    // Why runbookd stopped it ("python worker broke the protocol: ...", or the reason the step
    // gave to Worker::stop); empty when it ended by itself.
    std::string stop_reason;
    // Killed by a signal that runbookd sent (it had been told to stop), not one of its own
    // making (a segfault, the OOM killer).
    bool signal_from_runbookd = false;
    // How it ended (ending, exit code, signal) and the transitions of stopping it
    // (stop_signal_sent, grace_expired, killed).
    exec::ProcessResult result;
};

// The step a busy worker runs: where its messages go.
class StepChannel {
  public:
    virtual ~StepChannel() = default;
    // A `log`, `request` or `result` frame of the step.
    virtual void on_message(const nlohmann::json& message) = 0;
    // The worker is gone (reaped). Nothing more comes from it.
    virtual void on_worker_lost(WorkerEnd end) = 0;
};

class Pool;

// One worker process and runbookd's end of its socket (docs/python-steps.md, Protocol).
// Owned by the pool; a step borrows it between Pool::acquire and Pool::release.
class Worker : public std::enable_shared_from_this<Worker> {
  public:
    enum class State { Starting, Idle, Busy, Retiring, Gone };

    Worker(Pool& pool, int channel);
    ~Worker();
    Worker(const Worker&) = delete;
    Worker& operator=(const Worker&) = delete;

    int pid() const { return pid_; }
    State state() const { return state_; }
    std::size_t steps_run() const { return steps_run_; }

    // Makes `channel` the receiver of this worker's step messages; returns the step id for
    // the `run` frame.
    std::int64_t begin_step(std::shared_ptr<StepChannel> channel);
    // Queues one frame; `fds` (closed here once sent, or when the worker goes) ride on its
    // first byte as SCM_RIGHTS.
    void send(const nlohmann::json& message, std::vector<int> fds = {});
    // Stops the worker's process group: its stop signal, `grace`, then SIGKILL. The step, if
    // any, then gets on_worker_lost with `reason` in front of how the worker ended.
    void stop(std::string reason, exec::Millis grace);

  private:
    friend class Pool;
    std::uint64_t generation_ = 0;  // the pool's generation when this worker was started
    struct Outgoing {
        std::string bytes;
        std::vector<int> fds;
        std::size_t sent = 0;
    };

    void spawned(std::shared_ptr<exec::ProcessHandle> handle);
    void read();
    void on_frame(const std::string& text);
    void broke(std::string why);  // protocol error: the worker is killed
    // After the worker closed its channel: stopped unless it exits soon by itself.
    void stop_if_lingering();
    void flush();
    void on_exit(exec::ProcessResult result);
    void close_pending_fds();

    Pool& pool_;
    boost::asio::posix::stream_descriptor channel_;
    boost::asio::steady_timer timer_;  // startup timeout, then the exit grace when retiring
    std::shared_ptr<exec::ProcessHandle> handle_;
    std::shared_ptr<StepChannel> step_;
    State state_ = State::Starting;
    int pid_ = -1;
    std::size_t steps_run_ = 0;
    std::int64_t next_step_ = 1;
    bool said_hello_ = false;
    bool writing_ = false;
    bool channel_closed_ = false;
    bool stop_sent_ = false;   // stop() was called: a SIGTERM or SIGKILL is runbookd's
    std::string lost_reason_;  // why runbookd stopped it, put before how it ended
    std::string inbox_;        // bytes read, not yet a whole frame
    std::array<char, 65536> buffer_{};
    std::deque<Outgoing> outbox_;
};

// Starts, hands out, watches, retires and replaces Python workers; queues steps when every
// worker is busy (first come, first served). Workers are ProcessRunner helpers: their own
// process groups, RUNBOOKD_INSTANCE in their environment (crash recovery finds them), no slot
// of exec.max_processes and no orphan sweep (docs/python-steps.md).
//
// Thread model: everything, callbacks included, on the io_context's thread (the run engine's).
class Pool {
  public:
    Pool(boost::asio::io_context& io, exec::ProcessRunner& runner, PoolOptions options);
    ~Pool();
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;

    using Ready = std::function<void(std::shared_ptr<Worker>)>;
    using Failed = std::function<void(std::string why)>;
    // Calls `ready` (never from inside this call) with an idle worker as soon as one is free;
    // returns a ticket for withdraw(). Starts workers as needed, up to `workers`. Calls
    // `failed` instead when no worker can start: a start failed and no worker is left to
    // wait for (a step should not wait out its timeout behind a broken interpreter).
    std::uint64_t acquire(Ready ready, Failed failed);
    // Gives up waiting; `ready` will not be called.
    void withdraw(std::uint64_t ticket);
    // Takes a worker back after its step: idle again, or retired when `retire` is set or it has
    // run max_steps_per_worker steps.
    void release(std::shared_ptr<Worker> worker, bool retire);
    // After a reload: idle and starting workers are retired now and
    // busy ones when their step ends, so that every step from here on runs in a worker that
    // imported the modules as they are now. Replacements start as usual.
    void recycle();
    // Starts the workers now (runbookd starts them at once when a runbook has a Python step).
    void warm_up();
    // runbookd has begun to shut down: no worker is started any more (one stopped with a
    // cancelled step is not replaced), and steps that find no worker fail at once.
    void stop_starting();
    // Tells every worker to exit (SIGKILL after 1 s) and calls `done` once all are reaped.
    void shutdown(std::function<void()> done);
    // The last start failure in words (with the worker's stderr), empty once a worker starts.
    const std::string& start_error() const { return start_error_; }
    std::size_t size() const { return workers_.size(); }
    boost::asio::io_context& io() const { return io_; }

  private:
    friend class Worker;
    struct Waiter {
        std::uint64_t ticket;
        Ready ready;
        Failed failed;
    };
    // True while a worker is starting, idle or busy: a waiter can still get one.
    bool has_live_worker() const;
    // Fails every waiter with the last start error when a start failed and no worker is left
    // (the next start waits for its backoff).
    void fail_waiters_if_hopeless();

    void fill();
    void spawn();
    void on_ready(const std::shared_ptr<Worker>& worker);
    void on_gone(const std::shared_ptr<Worker>& worker, const exec::ProcessResult& result);
    void hand_out();
    void retire(const std::shared_ptr<Worker>& worker);

    boost::asio::io_context& io_;
    exec::ProcessRunner& runner_;
    PoolOptions options_;
    std::shared_ptr<spdlog::logger> log_;
    std::vector<std::shared_ptr<Worker>> workers_;
    std::deque<Waiter> waiters_;
    std::uint64_t next_ticket_ = 1;
    bool warm_ = false;
    bool shutting_down_ = false;
    bool no_starts_ = false;        // stop_starting() was called
    std::uint64_t generation_ = 0;  // recycle() count; a worker of an older one is retired
    std::function<void()> shut_down_;
    int start_failures_ = 0;  // in a row; sets the restart backoff
    bool restart_pending_ = false;
    boost::asio::steady_timer restart_timer_;
    std::string start_error_;
};

// "python worker died: killed by signal 11 (SIGSEGV)" or "... exited with status 3".
std::string describe_worker_end(const exec::ProcessResult& result);

}  // namespace runbookd::python
