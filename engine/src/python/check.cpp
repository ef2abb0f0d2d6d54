#include "python/check.hpp"

#include <algorithm>
#include <filesystem>
#include <map>
#include <optional>
#include <sstream>

#include <boost/asio/io_context.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <runbookd/python_step.hpp>

#include "exec/process.hpp"

namespace runbookd::python {
namespace {

using Json = nlohmann::json;

struct StepRef {
    std::string runbook;
    std::string step;
    SourceLocation location;
};

std::string default_worker() {
    std::error_code ec;
    const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    return ec ? std::string("runbookd-python-worker")
              : (self.parent_path() / "runbookd-python-worker").string();
}

// Every module:function target, with the steps that name it.
std::map<std::string, std::vector<StepRef>> python_targets(
    const std::vector<std::shared_ptr<const Runbook>>& runbooks) {
    std::map<std::string, std::vector<StepRef>> targets;
    for (const auto& runbook : runbooks) {
        for (const auto& step : runbook->steps) {
            const auto* config = dynamic_cast<const PythonStepConfig*>(step.config.get());
            if (config != nullptr && config->code.empty()) {
                targets[config->target()].push_back({runbook->name, step.name, step.location});
            }
        }
    }
    return targets;
}

Result<exec::ProcessResult> run_check(const std::vector<std::string>& argv,
                                      std::chrono::milliseconds timeout) {
    boost::asio::io_context io;
    exec::ProcessRunner runner(io);
    exec::ProcessSpec spec;
    spec.argv = argv;
    spec.env = {"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8"};
    spec.timeout = timeout;
    spec.grace = std::chrono::seconds(1);
    spec.excerpt_bytes = 4 << 20;  // one short line per target: all of it
    std::optional<exec::ProcessResult> result;
    runner.start(std::move(spec), [&result](exec::ProcessResult r) { result = std::move(r); });
    io.run();
    if (!result || result->ending == exec::ProcessResult::Ending::SpawnFailed) {
        return Error{ErrorCode::Unavailable,
                     fmt::format("cannot run {}: {}", argv.front(),
                                 result ? result->error : std::string("no result")),
                     ""};
    }
    return std::move(*result);
}

}  // namespace

Result<std::vector<Diagnostic>> check_python_steps(
    const std::vector<std::shared_ptr<const Runbook>>& runbooks,
    const PythonCheckOptions& options) {
    const auto targets = python_targets(runbooks);
    std::vector<Diagnostic> problems;
    if (targets.empty()) {
        return problems;
    }
    // The check runs in "/": relative directories are made absolute here.
    std::vector<std::string> argv = {options.worker.empty() ? default_worker() : options.worker,
                                     "check", "--runbooks",
                                     std::filesystem::absolute(options.runbooks_dir).string()};
    for (const auto& dir : options.path) {
        argv.insert(argv.end(), {"--path", std::filesystem::absolute(dir).string()});
    }
    for (const auto& [target, steps] : targets) {
        argv.push_back(target);
    }
    auto result = run_check(argv, options.timeout);
    if (!result) {
        return result.error();
    }
    if (result->timed_out) {
        return Error{ErrorCode::DeadlineExceeded,
                     fmt::format("python check ({}) did not finish within {} ms: a module may "
                                 "block at import",
                                 argv.front(), options.timeout.count()),
                     ""};
    }
    const bool finished = result->ending == exec::ProcessResult::Ending::Exited &&
                          (result->exit_code == 0 || result->exit_code == 1);
    if (!finished) {
        return Error{ErrorCode::Internal,
                     fmt::format("python check ({}) failed: {} {}", argv.front(), result->error,
                                 result->stderr_excerpt),
                     ""};
    }
    std::istringstream lines(result->stdout_excerpt);
    std::size_t answered = 0;
    for (std::string line; std::getline(lines, line);) {
        const Json answer = Json::parse(line, nullptr, false);
        if (!answer.is_object() || !answer.contains("target")) {
            continue;
        }
        ++answered;
        const auto found = targets.find(answer.value("target", ""));
        if (found == targets.end() || answer.value("ok", false)) {
            continue;
        }
        for (const auto& ref : found->second) {
            problems.push_back({ref.location, fmt::format("python step \"{}\": {}", ref.step,
                                                          answer.value("error", "check failed"))});
        }
    }
    if (answered != targets.size()) {
        return Error{ErrorCode::Internal,
                     fmt::format("python check ({}) answered for {} of {} targets: {}",
                                 argv.front(), answered, targets.size(), result->stderr_excerpt),
                     ""};
    }
    sort_by_location(problems);
    return problems;
}

}  // namespace runbookd::python
