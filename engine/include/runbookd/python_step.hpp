#pragma once

#include <optional>
#include <string>

#include <runbookd/runbook.hpp>

namespace runbookd {

// `python:` steps: a function of a module, or inline code, run in one of runbookd's Python
// worker processes (docs/python-steps.md). Exactly one of the two forms:
//
//   - name: decide
//     python: {module: disk_tools.decide, function: decide}
//   - name: inline
//     python:
//       code: |
//         ctx.set_output("restart", True)
//
// Only `grace` of the process keys applies: the step runs in a worker that runbookd started
// with its own environment, directory, user and limits (python.* in the config).
struct PythonStepConfig final : StepConfig {
    std::string module;    // dotted module name; empty with inline code
    std::string function;  // a function of `module`
    std::string code;      // inline code; empty with module and function
    // Where inline code starts, "FILE:LINE": what the attempt records as its argv.
    std::string filename;
    // The same, apart: the runbook file and the line of the code's first line in it, sent to
    // the worker so that tracebacks and SyntaxErrors point into the runbook file.
    std::string source_file;
    int first_line = 1;
    std::optional<Duration> grace;  // stop signal → SIGKILL of the worker; empty: exec.kill_grace

    // What the attempt records as argv: "MODULE:FUNCTION" or "FILE:LINE".
    std::string target() const { return code.empty() ? module + ":" + function : filename; }
};

}  // namespace runbookd
