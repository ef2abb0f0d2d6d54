"""The typed context of runbookd's Python steps.

A step is a function taking one argument, ``ctx`` (a :class:`Context`). runbookd's worker
builds it; ``runbook.testing`` builds one for unit tests without runbookd.
"""

from ._core import (
    Alert,
    Channel,
    Context,
    ExecRequest,
    ExecResult,
    Logger,
    RunInfo,
    StepInfo,
    StepResult,
)

__all__ = [
    "Alert",
    "Channel",
    "Context",
    "ExecError",
    "ExecRequest",
    "ExecResult",
    "Logger",
    "RunInfo",
    "SecretError",
    "StepInfo",
    "StepResult",
]


class ExecError(RuntimeError):
    """Raised by ExecResult.check() when the command did not exit with status 0."""

    def __init__(self, result: ExecResult) -> None:
        self.result = result
        super().__init__(f"command {result.argv!r} failed: {_describe(result)}")


class SecretError(LookupError):
    """Raised by Context.secret() when runbookd (or the test) cannot give the secret."""


def _describe(result: ExecResult) -> str:
    if result.error:
        return result.error
    if result.timed_out:
        return "timed out"
    if result.signal is not None:
        return f"killed by signal {result.signal}"
    return f"exited with code {result.exit_code}"
