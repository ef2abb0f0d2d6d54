#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <pybind11/pybind11.h>
// Every translation unit that converts between C++ and Python must see the same type casters:
// one without the STL casters would instantiate a different caster for std::vector under the
// same name, and which one the linker keeps differs between builds.
#include <pybind11/stl.h>

// The classes of the `runbook` Python module: the typed context a Python step receives. The
// same definitions back the extension module `runbook._core` (plain python3, pytest) and the
// embedded module of runbookd-python-worker, so both give identical types.
namespace runbookd::bindings {

// A command a step asks runbookd to run through `ctx.exec`.
struct ExecRequest {
    std::vector<std::string> argv;
    std::optional<double> timeout;  // seconds; none: bounded by the step's own deadline
    std::optional<std::map<std::string, std::string>> env;
};

// How a command run through `ctx.exec` ended. `duration` is in seconds.
struct ExecResult {
    std::vector<std::string> argv;
    std::optional<int> exit_code;
    std::optional<int> signal;
    bool timed_out = false;
    std::string stdout_text;
    std::string stderr_text;
    std::int64_t stdout_bytes = 0;
    std::int64_t stderr_bytes = 0;
    double duration = 0.0;
    std::optional<std::string> error;

    bool ok() const { return !error && !timed_out && exit_code == 0; }
};

// The only way a Context reaches the outside: the worker's socket to runbookd, or a recording
// fake written in Python (runbook.testing). Called from Python threads with the GIL held; an
// implementation that blocks releases the GIL while it waits. Failures are raised as Python
// exceptions (this is the boundary with step code).
class Channel {
  public:
    virtual ~Channel() = default;
    virtual void log(const std::string& level, const std::string& message) = 0;
    virtual ExecResult exec(const ExecRequest& request) = 0;
    virtual std::string secret(const std::string& name) = 0;
};

// Adds Alert, RunInfo, StepInfo, StepResult, Logger, ExecRequest, ExecResult, Channel and
// Context to `module`.
void define_runbook_module(pybind11::module_& module);

}  // namespace runbookd::bindings
