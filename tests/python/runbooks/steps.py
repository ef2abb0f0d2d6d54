"""Step functions the worker tests run; each shows one behaviour."""

import atexit
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time


def trivial(ctx):
    return None


def prints(ctx):
    print("to stdout")
    print("to stderr", file=sys.stderr)


def outputs(ctx):
    ctx.set_output("first", [1, 2])
    ctx.log.info(f"labels {ctx.alert.labels['instance']}")
    return {"second": {"param": ctx.params["x"]}}


def raises(ctx):
    raise ValueError("disk is not full")


def exit_0(ctx):
    sys.exit(0)


def exit_3(ctx):
    sys.exit(3)


def runs_command(ctx):
    result = ctx.exec(["df", "-h"], timeout=5, env={"LC_ALL": "C"})
    return {"exit_code": result.exit_code, "stdout": result.stdout, "duration": result.duration}


def reads_secret(ctx):
    return {"token": ctx.secret("api-token")}


def leaves_thread(ctx):
    threading.Thread(target=time.sleep, args=(3,), name="poller").start()


_stale = {"thread": None, "errors": []}


def leaves_daemon_using_ctx(ctx):
    """A daemon thread that uses the step's ctx after the step has ended."""

    def use_ctx_later():
        time.sleep(0.3)
        calls = [lambda: ctx.log.info("late"), lambda: ctx.exec(["true"]),
                 lambda: ctx.secret("api-token"), lambda: ctx.set_output("late", 1)]
        for call in calls:
            try:
                call()
                _stale["errors"].append(None)
            except Exception as error:
                _stale["errors"].append(f"{type(error).__name__}: {error}")

    _stale["thread"] = threading.Thread(target=use_ctx_later, name="late", daemon=True)
    _stale["thread"].start()


def reports_stale_ctx(ctx):
    _stale["thread"].join(5)
    return {"errors": _stale["errors"]}


def leaves_daemon_ticker(ctx):
    threading.Thread(target=time.sleep, args=(3,), name="ticker", daemon=True).start()


def leaves_sleep(ctx):
    return {"pid": subprocess.Popen(["sleep", "300"]).pid}


def leaves_orphan(ctx):
    """A grandchild whose parent exited: no longer the worker's descendant, still in its group."""
    shell = subprocess.run(["sh", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"],
                           capture_output=True, text=True, check=True)
    return {"pid": int(shell.stdout)}


def huge_outputs(ctx):
    return {"big": "x" * (20 * 1024 * 1024)}


def changes_sigterm(ctx):
    signal.signal(signal.SIGTERM, lambda *_: None)


def adds_atexit(ctx):
    atexit.register(print, "bye")


def sets_alarm(ctx):
    signal.alarm(100)


def changes_environment(ctx):
    os.environ["RUNBOOK_TEST_LEAK"] = "1"
    os.chdir("/")


def reports_environment(ctx):
    return {"leak": os.environ.get("RUNBOOK_TEST_LEAK"), "cwd": os.getcwd()}


def segfaults(ctx):
    ctypes.string_at(0)


def exits_hard(ctx):
    os._exit(3)


def prints_then_exits_hard(ctx):
    print("before the exit")
    print("on stderr too", file=sys.stderr)
    os._exit(3)


def prints_then_loops(ctx):
    print("working")
    while True:
        time.sleep(0.1)


def busy_loop(ctx):
    while True:
        pass


def memory_bomb(ctx):
    blocks = []
    while True:
        blocks.append(bytearray(64 * 1024 * 1024))


def not_a_function(ctx):
    pass


NOT_CALLABLE = 42


def two_arguments(ctx, other):
    pass


def reports_interpreter(ctx):
    masks = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("SigCgt", "SigIgn"):
                masks[name] = int(value, 16)
    return {
        "executable": sys.executable,
        "path": sys.path,
        "dont_write_bytecode": sys.dont_write_bytecode,
        "sigint_caught": bool(masks["SigCgt"] & (1 << (signal.SIGINT - 1))),
        "sigpipe_ignored": bool(masks["SigIgn"] & (1 << (signal.SIGPIPE - 1))),
    }
