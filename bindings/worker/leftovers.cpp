#include "leftovers.hpp"

#include <cerrno>
#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <thread>

#include <sys/wait.h>
#include <unistd.h>

namespace runbookd::worker {
namespace {

namespace fs = std::filesystem;

// A process that forks while the group is scanned escapes one scan; a few rounds catch a
// process tree that is still growing, and a fork loop cannot keep the worker here forever.
constexpr int kMaxRounds = 8;
// How long a killed child of the worker may take to become reapable (SIGKILL is not instant for
// a process in uninterruptible sleep); after that it is reaped at a later step's end.
constexpr auto kReapWait = std::chrono::milliseconds(1000);

struct ProcessStat {
    pid_t pid = 0;
    pid_t parent = 0;
    pid_t group = 0;
    char state = '?';
    std::string name;
};

// /proc/PID/stat: "PID (COMM) STATE PPID PGRP ..."; COMM may hold spaces and parentheses, so
// it ends at the last ')'.
std::optional<ProcessStat> read_stat(pid_t pid) {
    std::ifstream file("/proc/" + std::to_string(pid) + "/stat");
    std::string line;
    if (!std::getline(file, line)) {
        return std::nullopt;
    }
    std::size_t open = line.find('(');
    std::size_t close = line.rfind(')');
    if (open == std::string::npos || close == std::string::npos || close < open) {
        return std::nullopt;
    }
    ProcessStat stat;
    stat.pid = pid;
    stat.name = line.substr(open + 1, close - open - 1);
    std::istringstream rest(line.substr(close + 1));
    if (!(rest >> stat.state >> stat.parent >> stat.group)) {
        return std::nullopt;
    }
    return stat;
}

std::vector<ProcessStat> all_processes() {
    std::vector<ProcessStat> found;
    std::error_code error;
    for (const auto& entry : fs::directory_iterator("/proc", error)) {
        const std::string name = entry.path().filename().string();
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos) {
            continue;
        }
        if (auto stat = read_stat(static_cast<pid_t>(std::stol(name)))) {
            found.push_back(std::move(*stat));
        }
    }
    return found;
}

bool descends_from(pid_t pid, pid_t ancestor, const std::map<pid_t, pid_t>& parents) {
    for (int depth = 0; depth < 64 && pid > 1; ++depth) {
        auto parent = parents.find(pid);
        if (parent == parents.end()) {
            return false;
        }
        if (parent->second == ancestor) {
            return true;
        }
        pid = parent->second;
    }
    return false;
}

// One scan: SIGKILL to each live member not killed before; returns whether there was one.
bool kill_round(std::vector<LeftProcess>& killed, std::set<pid_t>& seen,
                std::set<pid_t>& children) {
    const pid_t self = ::getpid();
    const pid_t group = ::getpgrp();
    const std::vector<ProcessStat> processes = all_processes();
    std::map<pid_t, pid_t> parents;
    for (const ProcessStat& p : processes) {
        parents[p.pid] = p.parent;
    }
    bool found = false;
    for (const ProcessStat& p : processes) {
        bool member = p.group == group && p.pid != self && p.state != 'Z' && p.state != 'X';
        if (!member || seen.count(p.pid) != 0) {
            continue;
        }
        if (self != group && !descends_from(p.pid, self, parents)) {
            continue;
        }
        if (::kill(p.pid, SIGKILL) == 0) {
            found = true;
            seen.insert(p.pid);
            killed.push_back(LeftProcess{p.pid, p.name});
            if (p.parent == self) {
                children.insert(p.pid);
            }
        }
    }
    return found;
}

void reap(std::set<pid_t> children) {
    const auto deadline = std::chrono::steady_clock::now() + kReapWait;
    while (!children.empty() && std::chrono::steady_clock::now() < deadline) {
        for (auto it = children.begin(); it != children.end();) {
            pid_t done = ::waitpid(*it, nullptr, WNOHANG);
            it = (done == *it || (done < 0 && errno == ECHILD)) ? children.erase(it) : ++it;
        }
        if (!children.empty()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
    }
    // Children that had already exited (a step's subprocess nobody waited for).
    while (::waitpid(-1, nullptr, WNOHANG) > 0) {
    }
}

}  // namespace

std::vector<LeftProcess> kill_left_processes() {
    std::vector<LeftProcess> killed;
    std::set<pid_t> seen;
    std::set<pid_t> children;
    for (int round = 0; round < kMaxRounds && kill_round(killed, seen, children); ++round) {
    }
    reap(std::move(children));
    return killed;
}

std::string describe_killed(const std::vector<LeftProcess>& killed) {
    std::string text = "killed " + std::to_string(killed.size()) +
                       (killed.size() == 1 ? " process" : " processes") +
                       " the step left running: ";
    for (std::size_t i = 0; i < killed.size(); ++i) {
        text +=
            (i == 0 ? "" : ", ") + killed[i].name + " (pid " + std::to_string(killed[i].pid) + ")";
    }
    return text;
}

}  // namespace runbookd::worker
