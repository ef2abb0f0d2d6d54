#pragma once

#include <memory>

#include "exec/process.hpp"
#include "python/pool.hpp"
#include "run/argv_executor.hpp"
#include "run/step_executor.hpp"

namespace runbookd::run {

// Runs `python:` steps in the pool's workers (docs/python-steps.md): borrows a worker (the
// wait counts against the step's timeout), gives it fresh stdout and stderr pipes read like an
// exec step's output, answers its `log`, `exec` and `secret` messages, and turns its `result`
// (or its death) into the attempt's outcome. `ctx.exec` commands run through `runner` with an
// exec step's guarantees. Everything on the run engine's thread.
std::shared_ptr<StepExecutor> make_python_executor(python::Pool& pool, exec::ProcessRunner& runner,
                                                   ProcessDefaults defaults);

}  // namespace runbookd::run
