"""The runbook module in a plain python3, and runbook.testing's harness."""

import atexit
import datetime
import signal
import sys
import threading

import pytest

import runbook
from runbook.testing import make_context, run_step


def test_the_context_exposes_the_alert_with_utc_datetimes():
    ctx = runbook.Context(
        {"alert": {"labels": {"severity": "page"}, "status": "firing",
                   "starts_at": "2026-12-05T01:02:03.456Z", "ends_at": "0001-01-01T00:00:00Z"}},
        runbook.testing.RecordingChannel(),
    )

    assert ctx.alert.labels == {"severity": "page"}
    assert ctx.alert.starts_at == datetime.datetime(
        2026, 12, 5, 1, 2, 3, 456000, tzinfo=datetime.timezone.utc)
    assert ctx.alert.ends_at is None


def test_a_run_without_an_alert_has_alert_none_and_read_only_properties():
    ctx = make_context(alert=False, params={"n": 1}, steps={"collect": {"outputs": {"k": "v"}}})

    assert ctx.alert is None
    assert ctx.params == {"n": 1}
    assert ctx.steps["collect"].outputs == {"k": "v"}
    assert ctx.steps["collect"].state == "succeeded"
    with pytest.raises(AttributeError):
        ctx.dry_run = True
    with pytest.raises(TypeError):
        ctx.steps["other"] = None


def test_deadline_counts_down_from_the_timeout():
    ctx = make_context(timeout=10)

    assert 9.0 < ctx.deadline <= 10.0
    assert make_context(timeout=None).deadline is None


def test_set_output_rejects_a_value_json_cannot_hold_and_names_the_key():
    ctx = make_context()

    ctx.set_output("fine", {"a": [1, 2.5, None]})
    with pytest.raises(TypeError, match="'when'"):
        ctx.set_output("when", datetime.datetime.now())
    with pytest.raises(TypeError, match="'nan'"):
        ctx.set_output("nan", float("nan"))

    assert ctx.outputs == {"fine": {"a": [1, 2.5, None]}}


def test_exec_validates_its_arguments():
    ctx = make_context(exec_results=[])

    with pytest.raises(TypeError, match="list of str"):
        ctx.exec("ls -l")
    with pytest.raises(TypeError, match="argv item"):
        ctx.exec(["ls", 3])
    with pytest.raises(ValueError):
        ctx.exec(["ls"], timeout=-1)
    with pytest.raises(TypeError, match="env"):
        ctx.exec(["ls"], env={"A": 1})


def test_a_fake_exec_result_is_returned_and_the_call_recorded():
    fake = runbook.ExecResult(["df"], exit_code=1, stderr="boom")
    ctx = make_context(exec_results={("df",): fake})

    result = ctx.exec(["df"], timeout=2.5, env={"X": "1"})

    assert result.exit_code == 1 and not result.ok and result.stderr_bytes == 4
    assert result.error == "exited with code 1"  # what runbookd sends for the command
    assert ctx.exec_calls[0].argv == ["df"] and ctx.exec_calls[0].timeout == 2.5
    failed = r"^command \['df'\] failed: exited with code 1$"
    with pytest.raises(runbook.ExecError, match=failed) as raised:
        result.check()
    assert raised.value.result is result


@pytest.mark.parametrize("fields,error", [
    ({}, None),
    ({"exit_code": 3}, "exited with code 3"),
    ({"exit_code": None, "signal": 9}, "killed by signal 9 (SIGKILL)"),
    ({"exit_code": None, "timed_out": True}, "timed out"),
    ({"exit_code": 3, "error": "given"}, "given"),
])
def test_a_fake_exec_results_error_reads_as_runbookds(fields, error):
    result = runbook.ExecResult(["x"], **fields)

    assert result.error == error
    assert result.ok is (error is None)


def test_an_exec_handler_decides_each_result():
    ctx = make_context(exec_handler=lambda r: runbook.ExecResult(r.argv, stdout="handled"))

    assert ctx.exec(["anything"]).stdout == "handled"


def test_exec_runs_the_command_for_real_by_default_and_honours_the_timeout():
    ctx = make_context()

    echoed = ctx.exec(["sh", "-c", "echo $GREETING; echo err >&2"], env={"GREETING": "hi"})
    slow = ctx.exec(["sleep", "5"], timeout=0.2)
    missing = ctx.exec(["/nonexistent/program"])

    assert (echoed.ok, echoed.stdout, echoed.stderr) == (True, "hi\n", "err\n")
    assert slow.timed_out and not slow.ok and slow.duration < 4
    assert slow.error == "timed out after 200 ms; killed by signal 9 (SIGKILL)"
    assert ctx.exec(["sh", "-c", "exit 3"]).error == "exited with code 3"
    assert missing.error and missing.exit_code is None


def test_logs_and_secrets_are_recorded():
    ctx = make_context(secrets={"token": "t"})

    ctx.log.info("one")
    ctx.log.error("two")

    assert ctx.logs == [("info", "one"), ("error", "two")]
    assert ctx.secret("token") == "t"
    with pytest.raises(runbook.SecretError):
        ctx.secret("other")


def test_run_step_merges_a_returned_dict_after_set_output():
    def step(ctx):
        ctx.set_output("a", 1)
        return {"b": 2}

    result = run_step(step, make_context())

    assert result.ok and result.exit_code == 0
    assert result.outputs == {"a": 1, "b": 2}


@pytest.mark.parametrize("returned,ok", [(None, True), ({}, True), (5, False), ("x", False)])
def test_run_step_accepts_only_a_dict_or_none(returned, ok):
    result = run_step(lambda ctx: returned, make_context())

    assert result.ok is ok
    if not ok:
        assert result.error["type"] == "TypeError"


def test_run_step_fails_on_a_returned_value_json_cannot_hold():
    result = run_step(lambda ctx: {"bad": object()}, make_context())

    assert not result.ok and "'bad'" in result.error["message"]


@pytest.mark.parametrize("code,ok,exit_code", [(None, True, 0), (0, True, 0), (3, False, 3),
                                               ("text", False, 1)])
def test_run_step_applies_the_system_exit_rules(code, ok, exit_code, capsys):
    result = run_step(lambda ctx: sys.exit(code), make_context())

    assert (result.ok, result.exit_code) == (ok, exit_code)
    if code == "text":
        assert capsys.readouterr().err == "text\n"


def test_run_step_turns_an_exception_into_a_failure_with_its_traceback(capsys):
    def step(ctx):
        raise KeyError("missing")

    result = run_step(step, make_context())

    assert not result.ok and result.exit_code == 1
    assert result.error["type"] == "KeyError"
    assert "in step" in result.error["traceback"]
    assert "KeyError: 'missing'" in capsys.readouterr().err


def test_a_ctx_refuses_every_call_once_run_step_has_returned():
    kept = []
    ctx = make_context(step_name="collect", secrets={"token": "t"}, exec_results=[])

    run_step(kept.append, ctx)

    assert kept == [ctx]
    for call in (lambda: ctx.log.info("late"), lambda: ctx.exec(["true"]),
                 lambda: ctx.secret("token"), lambda: ctx.set_output("late", 1)):
        with pytest.raises(RuntimeError, match='step "collect" .run 1. which has ended'):
            call()
    assert ctx.logs == [] and ctx.exec_calls == [] and ctx.secrets_read == []
    assert ctx.outputs == {}


def test_run_step_fails_a_step_that_leaves_a_non_daemon_thread_running():
    release = threading.Event()

    result = run_step(
        lambda ctx: threading.Thread(target=release.wait, name="poller").start(), make_context())
    release.set()

    assert (result.ok, result.exit_code) == (False, 1)
    assert result.left_behind == ['non-daemon thread "poller" still running']
    assert result.error["type"] == "StateLeftBehind"


def test_run_step_names_a_daemon_thread_still_running_in_retire_and_the_step_stands():
    release = threading.Event()

    result = run_step(lambda ctx: threading.Thread(
        target=release.wait, name="ticker", daemon=True).start(), make_context())
    release.set()

    assert result.ok and result.left_behind == []
    assert result.retire == ['daemon thread "ticker" still running']


def test_run_step_fails_a_changed_signal_handler_and_puts_it_back():
    before = signal.getsignal(signal.SIGHUP)

    result = run_step(lambda ctx: signal.signal(signal.SIGHUP, lambda *_: None), make_context())

    assert not result.ok and result.left_behind == ["handler of SIGHUP changed"]
    assert signal.getsignal(signal.SIGHUP) == before


def test_run_step_fails_and_cancels_a_pending_alarm():
    result = run_step(lambda ctx: signal.alarm(100), make_context())

    assert not result.ok and result.left_behind == ["alarm pending (cancelled)"]
    assert signal.alarm(0) == 0


def test_run_step_fails_an_added_atexit_function():
    def goodbye():
        pass

    result = run_step(lambda ctx: atexit.register(goodbye), make_context())
    atexit.unregister(goodbye)

    assert not result.ok and result.left_behind == ["atexit function added"]


@pytest.mark.parametrize("size,ok", [(65536, True), (65537, False)])
def test_run_step_fails_outputs_over_64_kib_as_compact_json(size, ok):
    filler = "é" * ((size - len('{"k":""}')) // 2) + "x" * ((size - len('{"k":""}')) % 2)

    result = run_step(lambda ctx: {"k": filler}, make_context())

    assert result.ok is ok
    if not ok:
        assert result.outputs == {} and result.exit_code == 1
        assert result.error["type"] == "OutputsTooLarge"
        assert result.error["message"] == (
            "the step's outputs are 65537 bytes as JSON, more than the limit of 65536 bytes")


def test_the_stubs_cover_every_public_name():
    import pathlib

    stubs = (pathlib.Path(runbook.__file__).parent / "__init__.pyi").read_text()

    for name in runbook.__all__:
        assert f"class {name}" in stubs
    for name in [n for n in dir(runbook.Context) if not n.startswith("_")]:
        assert f"def {name}(" in stubs
