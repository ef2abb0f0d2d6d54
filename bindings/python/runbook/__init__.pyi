# Type stubs of the runbook package, for editors and type checkers (the classes are pybind11's).
import datetime
from collections.abc import Mapping
from typing import Any

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

class Alert:
    """One alert of the notification that started the run."""

    @property
    def labels(self) -> dict[str, str]: ...
    @property
    def annotations(self) -> dict[str, str]: ...
    @property
    def status(self) -> str:
        """``firing`` or ``resolved``."""
    @property
    def fingerprint(self) -> str: ...
    @property
    def starts_at(self) -> datetime.datetime:
        """Timezone-aware, UTC."""
    @property
    def ends_at(self) -> datetime.datetime | None:
        """Timezone-aware, UTC; None while firing."""
    @property
    def generator_url(self) -> str: ...

class RunInfo:
    @property
    def id(self) -> int: ...
    @property
    def runbook(self) -> str: ...
    @property
    def trigger(self) -> str: ...
    @property
    def actor(self) -> str: ...

class StepInfo:
    @property
    def name(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def attempt(self) -> int: ...

class StepResult:
    """How an earlier step of the run ended (its latest attempt)."""

    @property
    def state(self) -> str: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def outputs(self) -> dict[str, Any]: ...
    @property
    def output(self) -> str:
        """An excerpt of the step's stdout."""

class Logger:
    """Lines for the attempt's audit trail (``attempt.log`` events)."""

    def info(self, message: object) -> None: ...
    def warning(self, message: object) -> None: ...
    def error(self, message: object) -> None: ...

class ExecRequest:
    @property
    def argv(self) -> list[str]: ...
    @property
    def timeout(self) -> float | None: ...
    @property
    def env(self) -> dict[str, str] | None: ...

class ExecResult:
    def __init__(
        self,
        argv: list[str],
        *,
        exit_code: int | None = 0,
        signal: int | None = None,
        timed_out: bool = False,
        stdout: str = "",
        stderr: str = "",
        stdout_bytes: int | None = None,
        stderr_bytes: int | None = None,
        duration: float = 0.0,
        error: str | None = None,
    ) -> None: ...
    @property
    def argv(self) -> list[str]: ...
    @property
    def exit_code(self) -> int | None:
        """None when killed by a signal, timed out or never started."""
    @property
    def signal(self) -> int | None: ...
    @property
    def timed_out(self) -> bool: ...
    @property
    def stdout(self) -> str: ...
    @property
    def stderr(self) -> str: ...
    @property
    def stdout_bytes(self) -> int: ...
    @property
    def stderr_bytes(self) -> int: ...
    @property
    def duration(self) -> float:
        """Seconds."""
    @property
    def error(self) -> str | None:
        """Why the command could not run, if it could not."""
    @property
    def ok(self) -> bool:
        """Exited with status 0, in time."""
    def check(self) -> ExecResult:
        """Returns self if ok, else raises ExecError."""

class ExecError(RuntimeError):
    result: ExecResult
    def __init__(self, result: ExecResult) -> None: ...

class SecretError(LookupError): ...

class Channel:
    """How a Context reaches the outside; subclass it to fake runbookd in tests."""

    def __init__(self) -> None: ...
    def log(self, level: str, message: str) -> None: ...
    def exec(self, request: ExecRequest) -> ExecResult: ...
    def secret(self, name: str) -> str: ...

class Context:
    """What a Python step function receives as ``ctx``."""

    def __init__(self, spec: dict[str, Any], channel: Channel) -> None: ...
    @property
    def alert(self) -> Alert | None:
        """None for a run started without an alert."""
    @property
    def run(self) -> RunInfo: ...
    @property
    def step(self) -> StepInfo: ...
    @property
    def params(self) -> dict[str, Any]: ...
    @property
    def steps(self) -> Mapping[str, StepResult]:
        """The steps of this run that ended before this one."""
    @property
    def log(self) -> Logger: ...
    @property
    def dry_run(self) -> bool: ...
    @property
    def deadline(self) -> float | None:
        """Seconds left before runbookd stops the step."""
    @property
    def outputs(self) -> dict[str, Any]:
        """The outputs set so far."""
    def set_output(self, key: str, value: Any) -> None:
        """Sets an output; the value must be JSON-serialisable (TypeError otherwise)."""
    def exec(
        self,
        argv: list[str],
        timeout: float | None = None,
        env: dict[str, str] | None = None,
    ) -> ExecResult:
        """Runs a command through runbookd; ``env`` adds to the step's environment."""
    def secret(self, name: str) -> str:
        """A secret's value; raises SecretError when it cannot be given."""
