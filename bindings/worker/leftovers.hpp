#pragma once

#include <string>
#include <vector>

#include <sys/types.h>

namespace runbookd::worker {

// A process a step left running, killed by the worker after the step's function returned.
struct LeftProcess {
    pid_t pid = 0;
    std::string name;  // the command name of /proc/PID/stat
};

// Sends SIGKILL to every process of the worker's process group other than the worker itself
// (what a step started with subprocess and left running, orphans included) and reaps the
// worker's own children. runbookd starts the worker as the leader of its own group; a worker
// that does not lead its group (started by hand from a shell) kills only its descendants, never
// the rest of someone else's group. Called from the main thread between steps, without the GIL.
std::vector<LeftProcess> kill_left_processes();

// "killed 1 process the step left running: sleep (pid 10003)".
std::string describe_killed(const std::vector<LeftProcess>& killed);

}  // namespace runbookd::worker
