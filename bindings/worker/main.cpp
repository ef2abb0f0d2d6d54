// runbookd-python-worker: runs Python steps for runbookd (docs/python-steps.md).
//
//   runbookd-python-worker [--channel-fd N] --runbooks DIR [--path DIR]...
//                          [--package-dir DIR] [--memory-limit BYTES]
//   runbookd-python-worker check --runbooks DIR [--path DIR]... [--package-dir DIR]
//                          MODULE:FUNCTION...

#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <unistd.h>

#include "worker.hpp"

namespace {

namespace fs = std::filesystem;
using runbookd::worker::WorkerOptions;

struct CommandLine {
    bool check = false;
    WorkerOptions options;
    std::vector<std::string> targets;
};

// The package built next to this executable: <build>/bindings/runbookd-python-worker finds
// <build>/python, an installed <prefix>/libexec/runbookd/... finds <prefix>/libexec/python.
std::string default_package_dir() {
    std::error_code error;
    fs::path self = fs::read_symlink("/proc/self/exe", error);
    if (error) {
        return "";
    }
    return (self.parent_path().parent_path() / "python").string();
}

std::optional<std::uint64_t> parse_bytes(const std::string& text) {
    try {
        std::size_t used = 0;
        unsigned long long value = std::stoull(text, &used);
        if (used != text.size() || value == 0) {
            return std::nullopt;
        }
        return value;
    } catch (const std::exception&) {
        return std::nullopt;
    }
}

// Returns the error text, or nothing when the flag and its value were taken.
std::optional<std::string> take_flag(const std::string& flag, const std::string& value,
                                     CommandLine& line) {
    WorkerOptions& o = line.options;
    if (flag == "--runbooks") {
        o.runbooks_dir = value;
    } else if (flag == "--path") {
        o.paths.push_back(value);
    } else if (flag == "--package-dir") {
        o.package_dir = value;
    } else if (flag == "--channel-fd" && !line.check) {
        auto fd = parse_bytes(value);
        if (!fd || *fd > 1024) {
            return "--channel-fd needs a descriptor number";
        }
        o.channel_fd = static_cast<int>(*fd);
    } else if (flag == "--memory-limit" && !line.check) {
        o.memory_limit = parse_bytes(value);
        if (!o.memory_limit) {
            return "--memory-limit needs a number of bytes";
        }
    } else {
        return "unknown option " + flag;
    }
    return std::nullopt;
}

std::optional<std::string> parse(int argc, char** argv, CommandLine& line) {
    std::vector<std::string> args(argv + 1, argv + argc);
    std::size_t i = 0;
    if (!args.empty() && args[0] == "check") {
        line.check = true;
        i = 1;
    }
    for (; i < args.size(); ++i) {
        if (args[i].rfind("--", 0) != 0) {
            if (!line.check) {
                return "unexpected argument " + args[i];
            }
            line.targets.push_back(args[i]);
        } else if (i + 1 >= args.size()) {
            return args[i] + " needs a value";
        } else if (auto error = take_flag(args[i], args[i + 1], line)) {
            return error;
        } else {
            ++i;
        }
    }
    if (line.options.runbooks_dir.empty()) {
        return "--runbooks DIR is required";
    }
    if (line.options.package_dir.empty()) {
        line.options.package_dir = default_package_dir();
    }
    if (!fs::exists(fs::path(line.options.package_dir) / "runbook" / "__init__.py")) {
        return "no runbook package in '" + line.options.package_dir + "' (pass --package-dir)";
    }
    return std::nullopt;
}

}  // namespace

int main(int argc, char** argv) {
    namespace worker = runbookd::worker;
    CommandLine line;
    if (auto error = parse(argc, argv, line)) {
        std::fprintf(stderr, "runbookd-python-worker: %s\n", error->c_str());
        return worker::kExitBroken;
    }
    if (auto error = worker::start_interpreter(line.options)) {
        std::fprintf(stderr, "runbookd-python-worker: %s\n", error->c_str());
        return worker::kExitBroken;
    }
    if (line.check) {
        worker::exit_worker(worker::check(line.targets));
    }
    worker::exit_worker(worker::serve(line.options));
}
