"""The real runbookd-python-worker driven over a socket pair, speaking the protocol of
docs/python-steps.md the way runbookd does. Every worker a test starts is stopped by its PID."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import struct
import subprocess
import threading
import time

import pytest

from conftest import RUNBOOKS

CONTEXT = {
    "alert": {
        "labels": {"instance": "db1"},
        "annotations": {},
        "status": "firing",
        "fingerprint": "abc",
        "starts_at": "2026-12-05T01:02:03.456Z",
        "ends_at": None,
        "generator_url": "",
    },
    "run": {"id": 42, "runbook": "disk-full", "trigger": "alert", "actor": "alertmanager"},
    "step": {"name": "decide", "index": 1, "attempt": 1},
    "params": {"x": 7},
    "steps": {},
    "dry_run": False,
    "timeout_ms": 30000,
}


class Worker:
    def __init__(self, binary: str, *extra: str, own_group: bool = True) -> None:
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # runbookd passes its end as descriptor 3; any number works through --channel-fd. Like
        # runbookd, the worker gets its own process group: it kills what a step leaves in it.
        self.process = subprocess.Popen(
            [binary, "--channel-fd", str(theirs.fileno()), "--runbooks", str(RUNBOOKS), *extra],
            pass_fds=(theirs.fileno(),),
            stderr=subprocess.PIPE,
            process_group=0 if own_group else None,
        )
        theirs.close()
        self.sock.settimeout(20)
        self.step_id = 0

    def send(self, body: dict, fds: list[int] | None = None) -> None:
        data = json.dumps(body).encode()
        frame = struct.pack(">I", len(data)) + data
        if fds:
            socket.send_fds(self.sock, [frame[:1]], fds)
            self.sock.sendall(frame[1:])
        else:
            self.sock.sendall(frame)

    def receive(self) -> dict | None:
        header = self._exact(4)
        if header is None:
            return None
        (size,) = struct.unpack(">I", header)
        return json.loads(self._exact(size))

    def _exact(self, size: int) -> bytes | None:
        data = b""
        while len(data) < size:
            chunk = self.sock.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        return data

    def start(self, target: dict, context: dict | None = None) -> tuple[int, int]:
        """Sends a run message with fresh pipes; returns the read ends (stdout, stderr)."""
        self.step_id += 1
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        self.send(
            {"type": "run", "step": self.step_id, "target": target, "context": context or CONTEXT},
            [out_write, err_write],
        )
        os.close(out_write)
        os.close(err_write)
        return out_read, err_read

    def run(self, target: dict, context: dict | None = None, replies=None) -> "StepRun":
        """Runs a step to its result; answers requests with replies(request)."""
        run = StepRun(*self.start(target, context))
        while True:
            message = self.receive()
            if message is None:
                run.finish(None)
                return run
            run.messages.append(message)
            if message["type"] == "request":
                self.send(replies(message))
            elif message["type"] == "result":
                run.finish(message)
                return run

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self.sock.close()


class StepRun:
    def __init__(self, out_fd: int, err_fd: int) -> None:
        self.messages: list[dict] = []
        self.result: dict | None = None
        self._out = _Reader(out_fd)
        self._err = _Reader(err_fd)

    def finish(self, result: dict | None) -> None:
        self.result = result
        self.stdout = self._out.join()
        self.stderr = self._err.join()


class _Reader:
    """Reads a pipe to its end-of-file in a thread (the end of a step's output)."""

    def __init__(self, fd: int) -> None:
        self.data = b""
        self.thread = threading.Thread(target=self._read, args=(fd,), daemon=True)
        self.thread.start()

    def _read(self, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            self.data = pipe.read()

    def join(self) -> str:
        self.thread.join(10)
        assert not self.thread.is_alive(), "the step's pipe never reached end-of-file"
        return self.data.decode()


@pytest.fixture
def worker(worker_binary):
    started = []

    def start(*extra: str, own_group: bool = True) -> Worker:
        w = Worker(worker_binary, *extra, own_group=own_group)
        started.append(w)
        hello = w.receive()
        assert hello is not None, w.process.stderr.read().decode()
        assert hello["type"] == "hello"
        w.hello = hello
        return w

    yield start
    for w in started:
        w.stop()


def step(function: str) -> dict:
    return {"module": "steps", "function": function}


def test_hello_names_the_protocol_the_pid_and_the_package(worker):
    w = worker()

    assert w.hello["protocol"] == 1
    assert w.hello["pid"] == w.process.pid
    assert w.hello["python"].startswith("3.11")
    assert w.hello["runbook_module"].endswith("runbook")


def test_a_trivial_step_succeeds_and_exit_ends_the_worker(worker):
    w = worker()

    run = w.run(step("trivial"))
    w.send({"type": "exit"})

    assert run.result == {
        "type": "result", "step": 1, "ok": True, "exit_code": 0, "outputs": {},
        "error": None, "left_behind": [],
    }
    assert w.process.wait(10) == 0


def test_print_lands_in_the_steps_pipes_and_they_reach_end_of_file(worker):
    w = worker()

    run = w.run(step("prints"))

    assert run.stdout == "to stdout\n"
    assert run.stderr == "to stderr\n"


def test_outputs_merge_set_output_and_the_returned_dict_and_logs_are_sent(worker):
    w = worker()

    run = w.run(step("outputs"))

    assert run.result["outputs"] == {"first": [1, 2], "second": {"param": 7}}
    assert {"type": "log", "step": 1, "level": "info", "message": "labels db1"} in run.messages


def test_an_exception_fails_the_step_with_its_traceback_in_stderr_and_error(worker):
    w = worker()

    run = w.run(step("raises"))

    assert not run.result["ok"]
    assert run.result["exit_code"] == 1
    assert run.result["error"]["type"] == "ValueError"
    assert run.result["error"]["message"] == "disk is not full"
    assert 'steps.py", line' in run.result["error"]["traceback"]
    assert "ValueError: disk is not full" in run.stderr


@pytest.mark.parametrize("function,ok,code", [("exit_0", True, 0), ("exit_3", False, 3)])
def test_sys_exit_sets_the_exit_code(worker, function, ok, code):
    w = worker()

    run = w.run(step(function))

    assert (run.result["ok"], run.result["exit_code"]) == (ok, code)


def test_exec_is_a_request_answered_by_a_reply(worker):
    w = worker()
    result = {
        "argv": ["df", "-h"], "exit_code": 0, "signal": None, "timed_out": False,
        "stdout": "Filesystem", "stderr": "", "stdout_bytes": 10, "stderr_bytes": 0,
        "duration_ms": 1500, "error": None,
    }

    run = w.run(step("runs_command"), replies=lambda r: {
        "type": "reply", "id": r["id"], "ok": True, "result": result})

    request = next(m for m in run.messages if m["type"] == "request")
    assert request["op"] == "exec"
    assert request["argv"] == ["df", "-h"]
    assert request["timeout_ms"] == 5000
    assert request["env"] == {"LC_ALL": "C"}
    assert request["step"] == 1
    assert run.result["outputs"] == {"exit_code": 0, "stdout": "Filesystem", "duration": 1.5}


def test_a_secret_is_a_request_and_a_refusal_raises_secret_error(worker):
    w = worker()

    given = w.run(step("reads_secret"), replies=lambda r: {
        "type": "reply", "id": r["id"], "ok": True, "value": "s3cret"})
    refused = w.run(step("reads_secret"), replies=lambda r: {
        "type": "reply", "id": r["id"], "ok": False, "error": "no such secret"})

    assert given.messages[0]["op"] == "secret"
    assert given.messages[0]["name"] == "api-token"
    assert given.result["outputs"] == {"token": "s3cret"}
    assert refused.result["error"]["type"] == "runbook.SecretError"
    assert "no such secret" in refused.result["error"]["message"]


def test_inline_code_runs_with_ctx_and_its_traceback_names_the_file_and_line(worker):
    w = worker()
    code = "ctx.set_output('seen', ctx.run.runbook)\n\nraise RuntimeError('inline failed')\n"

    run = w.run({"code": code, "filename": "runbooks/disk-full.yaml", "line": 10})

    assert run.result["outputs"] == {"seen": "disk-full"}
    assert 'File "runbooks/disk-full.yaml", line 12' in run.result["error"]["traceback"]
    assert "RuntimeError: inline failed" in run.stderr


def test_inline_code_names_the_runbook_files_lines_and_shows_them(worker, tmp_path):
    runbook_file = tmp_path / "checks.yaml"
    runbook_file.write_text("steps:\n  - python:\n      code: |\n        n = 1\n        n / 0\n")
    w = worker()

    run = w.run({"code": "n = 1\nn / 0\n", "filename": str(runbook_file), "line": 4})

    assert run.result["error"]["traceback"] == (
        "Traceback (most recent call last):\n"
        f'  File "{runbook_file}", line 5, in <module>\n'
        "    n / 0\n"
        "ZeroDivisionError: division by zero\n")


def test_a_syntax_error_in_inline_code_shows_only_its_place_in_the_runbook(worker):
    w = worker()

    run = w.run({"code": "ok = 1\nx = (\n", "filename": "runbooks/disk-full.yaml", "line": 10})

    assert run.result["error"]["type"] == "SyntaxError"
    assert run.result["error"]["traceback"] == (
        '  File "runbooks/disk-full.yaml", line 11\n'
        "    x = (\n"
        "        ^\n"
        "SyntaxError: '(' was never closed\n")
    assert run.stderr == run.result["error"]["traceback"]


def test_inline_code_from_an_older_runbookd_takes_the_line_from_file_colon_line(worker):
    w = worker()

    run = w.run({"code": "\nraise RuntimeError('x')\n", "filename": "runbooks/disk-full.yaml:7"})

    assert 'File "runbooks/disk-full.yaml", line 8' in run.result["error"]["traceback"]


def test_a_syntax_error_in_a_module_shows_no_import_machinery(worker, tmp_path):
    (tmp_path / "broken_syntax.py").write_text("def f(:\n    pass\n")
    w = worker("--path", str(tmp_path))

    run = w.run({"module": "broken_syntax", "function": "f"})

    assert run.result["error"]["traceback"] == (
        f'  File "{tmp_path / "broken_syntax.py"}", line 1\n'
        "    def f(:\n"
        "          ^\n"
        "SyntaxError: invalid syntax\n")


def test_a_module_that_fails_to_import_fails_its_step_and_the_next_step_runs(worker):
    w = worker()

    broken = w.run({"module": "broken_import", "function": "anything"})
    missing = w.run(step("no_such_function"))
    fine = w.run(step("trivial"))

    assert broken.result["error"]["type"] == "ImportError"
    assert "this module cannot be imported" in broken.stderr
    assert missing.result["error"]["message"] == "module steps has no function no_such_function"
    assert fine.result["ok"]


@pytest.mark.parametrize("function,expected", [
    ("leaves_thread", 'non-daemon thread "poller" still running'),
    ("changes_sigterm", "handler of SIGTERM changed"),
    ("adds_atexit", "atexit function added"),
    ("sets_alarm", "alarm pending (cancelled)"),
])
def test_state_left_behind_fails_the_step_and_is_named(worker, function, expected):
    w = worker()

    run = w.run(step(function))

    assert run.result["left_behind"] == [expected]
    assert not run.result["ok"]
    assert run.result["error"]["type"] == "StateLeftBehind"


def test_a_ctx_used_after_its_step_ended_raises_and_sends_nothing(worker):
    w = worker()
    ended = 'RuntimeError: this ctx belongs to step "decide" (run 42) which has ended'

    first = w.run(step("leaves_daemon_using_ctx"))
    quiet = not select.select([w.sock], [], [], 0.8)[0]  # the thread's calls happen meanwhile
    later = w.run(step("reports_stale_ctx"), context={**CONTEXT, "run": {"id": 43}})

    assert first.result["ok"]
    assert quiet
    assert [m["type"] for m in later.messages] == ["result"]
    assert later.result["outputs"] == {"errors": [ended] * 4}


def test_a_daemon_thread_still_running_asks_for_retirement_and_the_step_stands(worker):
    w = worker()

    ticker = w.run(step("leaves_daemon_ticker"))

    assert ticker.result["ok"] and ticker.result["left_behind"] == []
    assert ticker.result["retire"] == ['daemon thread "ticker" still running']


def gone(pid: int) -> bool:
    """The process has ended: reaped, or a zombie its new parent has not reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.parametrize("function", ["leaves_sleep", "leaves_orphan"])
def test_processes_a_step_left_running_are_killed_and_named_in_its_stderr(worker, function):
    w = worker()
    started = time.monotonic()

    run = w.run(step(function))

    pid = run.result["outputs"]["pid"]
    assert run.result["ok"]
    assert run.stderr == (
        f"runbookd-python-worker: killed 1 process the step left running: sleep (pid {pid})\n")
    assert gone(pid)
    assert time.monotonic() - started < 5  # the pipes reached end-of-file without the sleep


def test_a_worker_that_does_not_lead_its_group_kills_only_its_own_descendants(worker):
    bystander = subprocess.Popen(["sleep", "30"])  # in this test's process group, like the worker
    try:
        w = worker(own_group=False)

        run = w.run(step("leaves_sleep"))

        assert run.stderr.startswith("runbookd-python-worker: killed 1 process")
        assert gone(run.result["outputs"]["pid"])
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait(10)


def test_outputs_over_64_kib_fail_the_step_with_the_reason_and_the_worker_lives(worker):
    w = worker()
    message = ("the step's outputs are 20971530 bytes as JSON, "
               "more than the limit of 65536 bytes")

    huge = w.run(step("huge_outputs"))
    after = w.run(step("trivial"))

    assert (huge.result["ok"], huge.result["exit_code"], huge.result["outputs"]) == (False, 1, {})
    assert huge.result["error"] == {"type": "OutputsTooLarge", "message": message, "traceback": ""}
    assert huge.stderr == message + "\n"
    assert after.result["ok"]


def test_environment_and_directory_are_restored_between_steps(worker):
    w = worker()
    cwd = os.getcwd()

    w.run(step("changes_environment"))
    run = w.run(step("reports_environment"))

    assert run.result["outputs"] == {"leak": None, "cwd": cwd}


def test_a_segfault_kills_the_worker_and_the_socket_closes(worker):
    w = worker()

    run = w.run(step("segfaults"))

    assert run.result is None
    assert w.process.wait(10) == -signal.SIGSEGV


def test_os_exit_ends_the_worker_with_that_status(worker):
    w = worker()

    run = w.run(step("exits_hard"))

    assert run.result is None
    assert w.process.wait(10) == 3


def test_a_busy_loop_keeps_running_until_the_caller_kills_the_worker(worker):
    w = worker()
    out_read, err_read = w.start(step("busy_loop"))

    time.sleep(0.5)
    still_running = w.process.poll() is None
    os.kill(w.process.pid, signal.SIGKILL)

    assert still_running
    assert w.process.wait(10) == -signal.SIGKILL
    for fd in (out_read, err_read):
        os.close(fd)


def test_what_a_step_printed_before_os_exit_reaches_its_pipes(worker):
    w = worker()

    run = w.run(step("prints_then_exits_hard"))

    assert run.result is None
    assert w.process.wait(10) == 3
    assert run.stdout == "before the exit\n"
    assert run.stderr == "on stderr too\n"


def test_what_a_step_printed_before_it_was_killed_reaches_its_pipe(worker):
    w = worker()
    out_read, err_read = w.start(step("prints_then_loops"))

    printed = b""
    while not printed.endswith(b"\n") and select.select([out_read], [], [], 5)[0]:
        printed += os.read(out_read, 100)
    os.kill(w.process.pid, signal.SIGKILL)

    assert printed == b"working\n"
    assert w.process.wait(10) == -signal.SIGKILL
    for fd in (out_read, err_read):
        os.close(fd)


def test_a_memory_bomb_raises_memory_error_under_the_limit_and_the_worker_lives(worker):
    w = worker("--memory-limit", str(256 * 1024 * 1024))

    bomb = w.run(step("memory_bomb"))
    after = w.run(step("trivial"))

    assert bomb.result["error"]["type"] == "MemoryError"
    assert after.result["ok"]


def test_end_of_file_on_the_socket_ends_the_worker_with_status_0(worker):
    w = worker()

    w.sock.shutdown(socket.SHUT_WR)

    assert w.process.wait(10) == 0


def test_an_oversized_frame_is_a_protocol_error(worker):
    w = worker()

    w.sock.sendall(struct.pack(">I", 16 * 1024 * 1024 + 1))

    assert w.process.wait(10) == 2
    assert b"16 MiB" in w.process.stderr.read()


def test_malformed_json_is_a_protocol_error(worker):
    w = worker()

    w.sock.sendall(struct.pack(">I", 5) + b"{nope")

    assert w.process.wait(10) == 2
    assert b"malformed frame" in w.process.stderr.read()


def check(binary: str, *targets: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, "check", "--runbooks", str(RUNBOOKS), *targets],
        capture_output=True, text=True, timeout=30, check=False,
    )


def test_check_accepts_functions_of_one_argument(worker_binary):
    done = check(worker_binary, "steps:trivial", "steps:outputs")

    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0
    assert [line["ok"] for line in lines] == [True, True]


def test_check_names_each_failing_target(worker_binary):
    done = check(worker_binary, "steps:trivial", "steps:two_arguments", "steps:NOT_CALLABLE",
                 "broken_import:x", "steps:absent")

    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1
    assert [line["ok"] for line in lines] == [True, False, False, False, False]
    assert "exactly one positional argument" in lines[1]["error"]
    assert "not callable" in lines[2]["error"]
    assert "ImportError" in lines[3]["error"]
    assert lines[4]["error"] == "module steps has no function absent"


def test_the_interpreter_is_isolated_and_names_the_configured_python(worker):
    w = worker("--path", "/opt/extra-steps")

    run = w.run(step("reports_interpreter"))

    outputs = run.result["outputs"]
    assert outputs["executable"] == "/usr/bin/python3"
    assert outputs["path"][:2] == [str(RUNBOOKS), "/opt/extra-steps"]
    assert "/usr/lib/python3.11" in outputs["path"]
    assert not any("build" in entry for entry in outputs["path"])  # PYTHONPATH is ignored
    assert outputs["dont_write_bytecode"] is True
    assert not outputs["sigint_caught"]  # no Python signal handlers installed
    assert not outputs["sigpipe_ignored"]
    assert not (RUNBOOKS / "__pycache__").exists()
