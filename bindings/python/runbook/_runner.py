"""How a step runs: the rules shared by runbookd-python-worker and runbook.testing.

Private to the runbook package; the worker calls it through the embedded interpreter so that a
step behaves the same under runbookd and under pytest.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import inspect
import json
import os
import signal
import sys
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

# runbookd refuses a step's outputs larger than this as compact JSON (python_executor.cpp).
MAX_OUTPUTS_BYTES = 64 * 1024

# Handlers a step may not change (docs/python-steps.md, "What a step may not leave behind").
WATCHED_SIGNALS = ("SIGTERM", "SIGINT", "SIGHUP", "SIGCHLD", "SIGPIPE", "SIGALRM")


@dataclass
class StepOutcome:
    """How one step ended: what the worker sends to runbookd in its ``result`` message."""

    ok: bool
    exit_code: int
    outputs: dict[str, Any]
    error: dict[str, str] | None = None
    left_behind: list[str] = field(default_factory=list)
    # Why the worker asks runbookd to retire it although the step's outcome stands (a daemon
    # thread still running); sent only when not empty.
    retire: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        message = {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "outputs": self.outputs,
            "error": self.error,
            "left_behind": self.left_behind,
        }
        if self.retire:
            message["retire"] = self.retire
        return json.dumps(message, allow_nan=False)


@dataclass
class AfterStep:
    """What a step left behind: ``left_behind`` fails it, ``retire`` only retires the worker."""

    left_behind: list[str] = field(default_factory=list)
    retire: list[str] = field(default_factory=list)


class TargetError(Exception):
    """A step's target cannot be called (function missing or not callable); no traceback."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


def run_step(function: Callable[[Any], Any], ctx: Any) -> StepOutcome:
    """For runbook.testing: calls ``function(ctx)`` with the worker's rules, including the checks
    of what the step left behind (against the state just before the call)."""
    state = WorkerState()
    try:
        outcome = _run(lambda: function(ctx), ctx)
    finally:
        _end(ctx)
    return finish(outcome, state.restore())


def run_message(target: dict[str, Any], spec: dict[str, Any], channel: Any) -> StepOutcome:
    """The worker's entry: builds ``ctx`` from a ``run`` message's context and runs the target."""
    from . import Context

    try:
        ctx = Context(spec, channel)
    except Exception as error:
        text = _traceback(error)
        sys.stderr.write(text)
        return StepOutcome(False, 1, {}, _error(_type_name(error), f"bad context: {error}", text))
    try:
        return run_target(target, ctx)
    finally:
        _end(ctx)


def _end(ctx: Any) -> None:
    """From here on the step's ctx refuses every call that acts: log, exec, secret, set_output."""
    end_step = getattr(ctx, "_end_step", None)  # a test may pass a ctx of its own making
    if end_step is not None:
        end_step()


def run_target(target: dict[str, Any], ctx: Any) -> StepOutcome:
    """Runs a ``run`` message's target: ``{module, function}`` or ``{code, filename[, line]}``."""
    if "code" in target:
        return _run(lambda: _run_code(target, ctx), ctx)
    return _run(lambda: load_function(target["module"], target["function"])(ctx), ctx)


def load_function(module_name: str, function_name: str) -> Callable[[Any], Any]:
    module = importlib.import_module(module_name)
    function = getattr(module, function_name, None)
    if function is None:
        raise TargetError("AttributeError", f"module {module_name} has no function {function_name}")
    if not callable(function):
        raise TargetError("TypeError", f"{module_name}.{function_name} is not callable")
    return function


def _run_code(target: dict[str, Any], ctx: Any) -> None:
    """Inline code runs as the body of a fresh module with ``ctx`` and ``runbook`` as globals.

    ``line`` (optional) is the line of the code's first line in ``filename``, so tracebacks and
    SyntaxErrors name the runbook file's own lines (and show them, through linecache).
    """
    filename, line = _inline_location(target)
    # Blank lines in front put every line, SyntaxError's included, at its line in the file.
    # dont_inherit: this module's `from __future__ import annotations` is not the step's.
    source = "\n" * (line - 1) + target["code"]
    code = compile(source, filename, "exec", dont_inherit=True)
    namespace = {"__name__": "__runbook_inline__", "ctx": ctx, "runbook": sys.modules["runbook"]}
    exec(code, namespace)


def _inline_location(target: dict[str, Any]) -> tuple[str, int]:
    """``filename`` and ``line``; an older runbookd sends ``filename`` as "FILE:LINE" alone."""
    filename = target.get("filename") or "<inline>"
    line = target.get("line")
    if line is None:
        path, _, number = filename.rpartition(":")
        if path and number.isdigit():
            filename, line = path, int(number)
    return filename, max(int(line or 1), 1)


def _run(call: Callable[[], Any], ctx: Any) -> StepOutcome:
    return _bounded(_call(call, ctx))


def _bounded(outcome: StepOutcome) -> StepOutcome:
    """Outputs over runbookd's limit fail the step here, with a reason, instead of making a
    ``result`` frame runbookd refuses (or, past 16 MiB, one the worker cannot send)."""
    text = json.dumps(outcome.outputs, separators=(",", ":"), ensure_ascii=False)
    size = len(text.encode("utf-8", "replace"))
    if size <= MAX_OUTPUTS_BYTES:
        return outcome
    message = (
        f"the step's outputs are {size} bytes as JSON, "
        f"more than the limit of {MAX_OUTPUTS_BYTES} bytes"
    )
    print(message, file=sys.stderr)
    outcome.outputs = {}
    if outcome.ok:  # a step that failed anyway keeps its own error
        outcome.ok = False
        outcome.exit_code = 1
        outcome.error = _error("OutputsTooLarge", message, "")
    return outcome


def _call(call: Callable[[], Any], ctx: Any) -> StepOutcome:
    try:
        returned = call()
    except SystemExit as exit_:
        return _exit_outcome(exit_.code, ctx)
    except TargetError as error:
        print(str(error), file=sys.stderr)
        return StepOutcome(False, 1, ctx.outputs, _error(error.type_name, str(error), ""))
    except BaseException as error:  # noqa: B036 - a step's KeyboardInterrupt fails the step too
        text = _traceback(error)
        sys.stderr.write(text)
        return StepOutcome(False, 1, ctx.outputs, _error(_type_name(error), str(error), text))
    return _returned_outcome(returned, ctx)


def _exit_outcome(code: Any, ctx: Any) -> StepOutcome:
    if code is None:
        return StepOutcome(True, 0, ctx.outputs)
    if isinstance(code, int):
        return StepOutcome(code == 0, int(code), ctx.outputs)
    # Like python3 itself: a non-integer exit code is printed and the status is 1.
    print(code, file=sys.stderr)
    return StepOutcome(False, 1, ctx.outputs, _error("SystemExit", str(code), ""))


def _returned_outcome(returned: Any, ctx: Any) -> StepOutcome:
    if returned is None:
        return StepOutcome(True, 0, ctx.outputs)
    if not isinstance(returned, dict):
        message = (
            f"step function returned {type(returned).__name__}, expected a dict of outputs or None"
        )
        print(message, file=sys.stderr)
        return StepOutcome(False, 1, ctx.outputs, _error("TypeError", message, ""))
    for key, value in returned.items():
        if not isinstance(key, str):
            message = f"step function returned an output key that is not a str: {key!r}"
            print(message, file=sys.stderr)
            return StepOutcome(False, 1, ctx.outputs, _error("TypeError", message, ""))
        try:
            ctx.set_output(key, value)
        except TypeError as error:
            print(str(error), file=sys.stderr)
            return StepOutcome(False, 1, ctx.outputs, _error("TypeError", str(error), ""))
    return StepOutcome(True, 0, ctx.outputs)


def _error(type_name: str, message: str, text: str) -> dict[str, str]:
    return {"type": type_name, "message": message, "traceback": text}


def _type_name(error: BaseException) -> str:
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _is_loader(filename: str) -> bool:
    """A frame of the machinery that loads and calls a step: never the step's own."""
    return (
        filename == __file__
        or filename == importlib.__file__
        or filename.startswith("<frozen importlib")
    )


def _traceback(error: BaseException) -> str:
    """The traceback trimmed to the step's own frames: the runner's and the import machinery's
    are dropped, so a SyntaxError shows only where it is, as python3 shows it."""
    exception = traceback.TracebackException.from_exception(error)
    kept = [frame for frame in exception.stack if not _is_loader(frame.filename)]
    exception.stack = traceback.StackSummary.from_list(kept)
    return "".join(exception.format())


class WorkerState:
    """What a step may change, taken once when the worker starts (runbook.testing: before each
    step).

    ``restore()`` after each step puts os.environ, the current directory, sys.path and sys.argv
    back, and names what the step left behind that cannot be undone safely.
    """

    def __init__(self) -> None:
        self.environ = dict(os.environ)
        self.cwd = os.getcwd()
        self.path = list(sys.path)
        self.argv = list(sys.argv)
        self.handlers = {name: signal.getsignal(getattr(signal, name)) for name in WATCHED_SIGNALS}
        self.atexit_count = atexit._ncallbacks()
        self.threads = set(threading.enumerate())
        # Under pytest a timer may already run (pytest-timeout); only a new one is the step's.
        self.timer_running = signal.getitimer(signal.ITIMER_REAL)[0] > 0

    def restore(self) -> AfterStep:
        after = AfterStep()
        for thread in threading.enumerate():
            if thread in self.threads or not thread.is_alive():
                continue
            kind = "daemon thread" if thread.daemon else "non-daemon thread"
            found = after.retire if thread.daemon else after.left_behind
            found.append(f'{kind} "{thread.name}" still running')
        self._restore_handlers(after.left_behind)
        if not self.timer_running and signal.getitimer(signal.ITIMER_REAL)[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, 0)
            after.left_behind.append("alarm pending (cancelled)")
        if atexit._ncallbacks() > self.atexit_count:
            after.left_behind.append("atexit function added")
        os.environ.clear()
        os.environ.update(self.environ)
        with contextlib.suppress(OSError):
            os.chdir(self.cwd)
        sys.path[:] = self.path
        sys.argv[:] = self.argv
        return after

    def _restore_handlers(self, left_behind: list[str]) -> None:
        for name, handler in self.handlers.items():
            number = getattr(signal, name)
            if signal.getsignal(number) != handler:
                left_behind.append(f"handler of {name} changed")
                # Only the main thread may set handlers (runbook.testing may run elsewhere).
                if handler is not None and threading.current_thread() is threading.main_thread():
                    signal.signal(number, handler)


def finish(outcome: StepOutcome, after: AfterStep) -> StepOutcome:
    """A step that left state behind fails, whatever it returned; a daemon thread still running
    leaves the outcome as it is and asks for the worker to be retired."""
    left_behind = after.left_behind
    outcome.left_behind = left_behind
    outcome.retire = after.retire
    if left_behind and outcome.ok:
        message = "python step left state behind: " + "; ".join(left_behind)
        outcome.ok = False
        outcome.exit_code = 1
        outcome.error = _error("StateLeftBehind", message, "")
    return outcome


def check_target(spec: str) -> dict[str, Any]:
    """For ``runbookd-python-worker check``: can ``MODULE:FUNCTION`` be run as a step?"""
    module_name, _, function_name = spec.partition(":")
    if not module_name or not function_name:
        return {"target": spec, "ok": False, "error": "expected MODULE:FUNCTION"}
    try:
        # What a module prints at import must not mix with the JSON lines on stdout.
        with contextlib.redirect_stdout(sys.stderr):
            function = load_function(module_name, function_name)
    except TargetError as error:
        return {"target": spec, "ok": False, "error": str(error)}
    except BaseException as error:  # noqa: B036 - SystemExit at import is a broken module too
        message = f"cannot import {module_name}: {_type_name(error)}: {error}"
        return {"target": spec, "ok": False, "error": message}
    try:
        inspect.signature(function).bind(None)
    except TypeError as error:
        message = f"{spec} must accept exactly one positional argument (ctx): {error}"
        return {"target": spec, "ok": False, "error": message}
    except ValueError:
        pass  # no signature to inspect (a builtin): it is called and judged at run time
    return {"target": spec, "ok": True, "error": None}
