#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace runbookd::worker {

// Exit statuses of runbookd-python-worker.
inline constexpr int kExitOk = 0;
inline constexpr int kExitCheckFailed = 1;
inline constexpr int kExitBroken = 2;  // usage, start-up or protocol error: a line on stderr

struct WorkerOptions {
    int channel_fd = 3;
    std::string runbooks_dir;
    std::vector<std::string> paths;  // after the runbooks directory on sys.path
    std::string package_dir;         // the directory holding the runbook package
    std::optional<std::uint64_t> memory_limit;
};

// Starts the isolated interpreter and imports the runbook package from options.package_dir,
// with runbook._core the classes compiled into this executable. Returns the error text on
// failure. Called once, from the main thread.
std::optional<std::string> start_interpreter(const WorkerOptions& options);

// Speaks the protocol on options.channel_fd until `exit`, end-of-file or a protocol error;
// returns the exit status.
int serve(const WorkerOptions& options);

// Checks MODULE:FUNCTION targets for lint: one JSON line each on stdout.
int check(const std::vector<std::string>& targets);

// Ends the process without finalising the interpreter (see worker.cpp).
[[noreturn]] void exit_worker(int status);

}  // namespace runbookd::worker
