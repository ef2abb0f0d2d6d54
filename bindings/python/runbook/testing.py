"""Unit-testing Python steps without runbookd.

    from runbook.testing import make_context, run_step

    def test_decide_restarts_when_disk_is_full():
        ctx = make_context(alert_labels={"instance": "db1"}, params={"threshold": 90})
        result = run_step(disk_tools.decide, ctx)
        assert result.ok
        assert result.outputs["action"] == "restart"

``make_context`` builds a real :class:`runbook.Context` (the class the worker builds) whose
channel records what the step does: ``ctx.logs``, ``ctx.exec_calls``, ``ctx.secrets_read``
and ``ctx.outputs``. ``ctx.exec`` really runs the command unless ``exec_results`` or
``exec_handler`` is given. ``run_step`` applies the worker's rules: a returned dict merges into
the outputs, ``None`` is fine, any other value fails, ``SystemExit`` and exceptions as in
runbookd, and what the step left behind (a non-daemon thread, a signal handler, an alarm, an
``atexit`` function) fails it; a daemon thread still running is named in ``retire``.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from . import Channel, Context, ExecRequest, ExecResult, SecretError
from ._runner import StepOutcome
from ._runner import run_step as _run_step

__all__ = ["FakeContext", "RecordingChannel", "StepOutcome", "make_context", "run_step"]

ExecHandler = Callable[[ExecRequest], ExecResult]


class RecordingChannel(Channel):
    """A channel that records logs and exec calls and serves secrets from a dict."""

    def __init__(
        self,
        secrets: Mapping[str, str] | None = None,
        exec_results: Mapping[tuple[str, ...], ExecResult] | Iterable[ExecResult] | None = None,
        exec_handler: ExecHandler | None = None,
    ) -> None:
        super().__init__()
        self.logs: list[tuple[str, str]] = []
        self.exec_calls: list[ExecRequest] = []
        self.secrets_read: list[str] = []
        self._secrets = dict(secrets or {})
        self._handler = exec_handler or _fake_handler(exec_results) or run_command

    def log(self, level: str, message: str) -> None:
        self.logs.append((level, message))

    def exec(self, request: ExecRequest) -> ExecResult:
        self.exec_calls.append(request)
        return self._handler(request)

    def secret(self, name: str) -> str:
        self.secrets_read.append(name)
        if name not in self._secrets:
            raise SecretError(f"secret {name!r} is not available: not given to make_context")
        return self._secrets[name]


def _fake_handler(results: Any) -> ExecHandler | None:
    """``exec_results`` as a handler: a dict keyed by argv tuple, or a list used in order."""
    if results is None:
        return None
    if isinstance(results, Mapping):
        table = {tuple(argv): result for argv, result in results.items()}

        def by_argv(request: ExecRequest) -> ExecResult:
            key = tuple(request.argv)
            if key not in table:
                raise AssertionError(f"no fake exec result for argv {list(key)!r}")
            return table[key]

        return by_argv
    queue = list(results)

    def in_order(request: ExecRequest) -> ExecResult:
        if not queue:
            raise AssertionError(f"no fake exec result left for argv {request.argv!r}")
        return queue.pop(0)

    return in_order


def run_command(request: ExecRequest) -> ExecResult:
    """Runs the command for real, as runbookd would: ``env`` adds to the environment."""
    env = dict(os.environ)
    env.update(request.env or {})
    started = time.monotonic()
    try:
        done = subprocess.run(
            request.argv,
            capture_output=True,
            env=env,
            timeout=request.timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as expired:
        # Like runbookd's error text; subprocess kills the command with SIGKILL.
        why = f"timed out after {round(request.timeout * 1000)} ms; killed by signal 9 (SIGKILL)"
        return _result(
            request, started, None, expired.stdout, expired.stderr, timed_out=True, error=why
        )
    except OSError as error:
        return _result(request, started, None, b"", b"", error=f"cannot run: {error}")
    return _result(request, started, done.returncode, done.stdout, done.stderr)


def _result(
    request: ExecRequest,
    started: float,
    returncode: int | None,
    out: bytes | None,
    err: bytes | None,
    timed_out: bool = False,
    error: str | None = None,
) -> ExecResult:
    out, err = out or b"", err or b""
    killed_by = -returncode if returncode is not None and returncode < 0 else None
    return ExecResult(
        list(request.argv),
        exit_code=None if killed_by is not None else returncode,
        signal=killed_by,
        timed_out=timed_out,
        stdout=out.decode("utf-8", "replace"),
        stderr=err.decode("utf-8", "replace"),
        stdout_bytes=len(out),
        stderr_bytes=len(err),
        duration=time.monotonic() - started,
        error=error,
    )


class FakeContext(Context):
    """A real runbook.Context for tests, with the recording channel's lists as attributes."""

    def __init__(
        self,
        *,
        alert_labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        alert: bool = True,
        status: str = "firing",
        params: Mapping[str, Any] | None = None,
        steps: Mapping[str, Mapping[str, Any]] | None = None,
        secrets: Mapping[str, str] | None = None,
        exec_results: Mapping[tuple[str, ...], ExecResult] | Iterable[ExecResult] | None = None,
        exec_handler: ExecHandler | None = None,
        runbook: str = "test",
        step_name: str = "step",
        attempt: int = 1,
        dry_run: bool = False,
        timeout: float | None = 30.0,
    ) -> None:
        self.channel = RecordingChannel(secrets, exec_results, exec_handler)
        spec = {
            "alert": _alert_spec(alert_labels, annotations, status) if alert else None,
            "run": {"id": 1, "runbook": runbook, "trigger": "test", "actor": "runbook.testing"},
            "step": {"name": step_name, "index": len(steps or {}), "attempt": attempt},
            "params": dict(params or {}),
            "steps": {name: _step_spec(result) for name, result in (steps or {}).items()},
            "dry_run": dry_run,
            "timeout_ms": None if timeout is None else int(timeout * 1000),
        }
        super().__init__(spec, self.channel)

    @property
    def logs(self) -> list[tuple[str, str]]:
        return self.channel.logs

    @property
    def exec_calls(self) -> list[ExecRequest]:
        return self.channel.exec_calls

    @property
    def secrets_read(self) -> list[str]:
        return self.channel.secrets_read


def _alert_spec(
    labels: Mapping[str, str] | None, annotations: Mapping[str, str] | None, status: str
) -> dict[str, Any]:
    return {
        "labels": dict(labels or {}),
        "annotations": dict(annotations or {}),
        "status": status,
        "fingerprint": "0000000000000000",
        "starts_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "ends_at": None,
        "generator_url": "",
    }


def _step_spec(result: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "state": result.get("state", "succeeded"),
        "exit_code": result.get("exit_code", 0),
        "outputs": dict(result.get("outputs", {})),
        "output": result.get("output", ""),
    }


def make_context(**kwargs: Any) -> FakeContext:
    """A FakeContext; see its arguments."""
    return FakeContext(**kwargs)


def run_step(function: Callable[[Any], Any], ctx: Context) -> StepOutcome:
    """Runs ``function(ctx)`` with the worker's rules and after-step checks; the traceback goes
    to sys.stderr. The ctx is dead afterwards, as in the worker."""
    return _run_step(function, ctx)
