#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <runbookd/result.hpp>
#include <runbookd/runbook.hpp>

namespace runbookd::python {

// What `runbookctl lint` and runbookd's start need to import the modules of python steps.
struct PythonCheckOptions {
    std::string runbooks_dir;
    std::vector<std::string> path;  // python.path of the config
    std::string worker;             // empty: runbookd-python-worker next to this program
    // The whole check; a module that blocks at import (on the network, a lock) must not hang
    // runbookd's start or lint for ever.
    std::chrono::milliseconds timeout{30'000};
};

// Imports the module of every `python: {module, function}` step of `runbooks` in a separate
// process (the worker's `check` mode) and returns one diagnostic, at the step, for each step
// whose module does not import or whose function is missing, not callable or does not take
// one argument. An Error when the check itself could not run (no worker, it crashed).
// Inline `code:` is not checked here: the worker compiles it when the step runs.
Result<std::vector<Diagnostic>> check_python_steps(
    const std::vector<std::shared_ptr<const Runbook>>& runbooks, const PythonCheckOptions& options);

}  // namespace runbookd::python
