"""Python steps through a real runbookd and its real workers: outputs into a later step's argv,
failures recorded with their tracebacks, runbookd unharmed by a crashing step, and lint."""

import json
import os
import subprocess

from conftest import make_alert

TOOLS = '''
import ctypes
import sys


def decide(ctx):
    used = int(ctx.steps["usage"].output.strip())
    ctx.log.info(f"usage is {used}%")
    ctx.set_output("threshold", 90)
    return {"cleanup": "yes" if used >= 90 else "no", "mount": ctx.alert.labels["mountpoint"]}


def broken(ctx):
    return {"value": 1 / int(ctx.alert.labels["divisor"])}


def crash(ctx):
    ctypes.string_at(0)


def leave(ctx):
    sys.exit(int(ctx.alert.labels["code"]))
'''

RUNBOOK = """
name: disk
matchers:
  - alertname="DiskFull"
steps:
  - name: usage
    argv: [/bin/echo, "{{ alert.labels.used }}"]
  - name: decide
    python: {module: tools, function: decide}
  - name: act
    argv: [/bin/echo, "cleanup={{ steps.decide.outputs.cleanup }}", "{{ steps.decide.outputs.mount }}", "{{ steps.decide.outputs.threshold }}"]
"""

FAULTS = """
name: faults
matchers:
  - alertname="Fault"
steps:
  - name: fault
    python: {module: tools, function: "{{ alert.labels.fn }}"}
"""


def runbooks(**extra):
    files = {"tools.py": TOOLS, "disk.yaml": RUNBOOK}
    files.update(extra)
    return files


def test_outputs_of_a_python_step_become_a_later_steps_argv(runbookd):
    d = runbookd(runbooks())
    alert = make_alert({"alertname": "DiskFull", "used": "93", "mountpoint": "/var/lib/db"})
    run = d.wait_run(d.post_alerts(alert)["runs"][0]["run_id"])
    assert run["state"] == "succeeded", run
    usage, decide, act = run["attempts"]
    assert decide["kind"] == "python"
    assert decide["argv"] == ["python", "tools:decide"]
    assert decide["outputs"] == {"cleanup": "yes", "mount": "/var/lib/db", "threshold": 90}
    assert act["argv"] == ["/bin/echo", "cleanup=yes", "/var/lib/db", "90"]
    (log,) = d.query("SELECT detail FROM events WHERE kind = 'attempt.log'")
    assert "usage is 93%" in log["detail"]
    (stored,) = d.query("SELECT outputs FROM attempts WHERE step = 'decide'")
    assert json.loads(stored["outputs"])["cleanup"] == "yes"


def fault_run(d, fn, **labels):
    alert = make_alert({"alertname": "Fault", "fn": fn, **labels})
    return d.wait_run(d.post_alerts(alert)["runs"][0]["run_id"])


def test_failures_are_recorded_and_the_next_python_step_still_works(runbookd):
    # The function is fixed at load time, so each fault has its own runbook.
    files = runbooks()
    for fn in ("broken", "crash", "leave"):
        files[f"{fn}.yaml"] = FAULTS.replace("faults", fn).replace(
            'alertname="Fault"', f'alertname="Fault", fn="{fn}"').replace(
            '"{{ alert.labels.fn }}"', fn)
    d = runbookd(files)

    broken = fault_run(d, "broken", divisor="0")
    assert broken["state"] == "failed"
    (attempt,) = broken["attempts"]
    assert attempt["exit_code"] == 1
    assert attempt["error"].startswith("ZeroDivisionError")
    assert "Traceback" in attempt["stderr"] and "tools.py" in attempt["stderr"]

    crashed = fault_run(d, "crash")
    assert crashed["state"] == "failed"
    assert "SIGSEGV" in crashed["attempts"][0]["error"]

    left = fault_run(d, "leave", code="4")
    assert left["state"] == "failed"
    assert left["attempts"][0]["exit_code"] == 4

    # runbookd is still serving, and a fresh worker runs the next Python step.
    assert d.get("/livez").status == 200
    ok = d.wait_run(d.post_alerts(make_alert(
        {"alertname": "DiskFull", "used": "10", "mountpoint": "/"}))["runs"][0]["run_id"])
    assert ok["state"] == "succeeded"
    assert ok["attempts"][1]["outputs"]["cleanup"] == "no"


def test_lint_imports_the_modules_of_python_steps(tmp_path):
    directory = tmp_path / "runbooks"
    directory.mkdir()
    (directory / "tools.py").write_text(TOOLS)
    (directory / "disk.yaml").write_text(RUNBOOK.replace("function: decide", "function: decid"))
    lint = subprocess.run([os.environ["RUNBOOKCTL_BINARY"], "lint", str(directory)],
                          capture_output=True, text=True, timeout=60)
    assert lint.returncode == 1
    assert f"{directory}/disk.yaml:8:5: python step \"decide\": module tools has no " \
           "function decid" in lint.stdout


def test_runbookd_refuses_to_start_when_a_python_step_module_does_not_import(tmp_path):
    directory = tmp_path / "runbooks"
    directory.mkdir()
    (directory / "tools.py").write_text("import no_such_module\n")
    (directory / "disk.yaml").write_text(RUNBOOK)
    started = subprocess.run(
        [os.environ["RUNBOOKD_BINARY"], "--runbooks", str(directory), "--db",
         str(tmp_path / "db"), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60)
    assert started.returncode == 2
    assert f"{directory}/disk.yaml:8:5: python step \"decide\": cannot import tools: " \
           "ModuleNotFoundError: No module named 'no_such_module'" in started.stderr


def test_lint_lists_errors_in_file_and_line_order(tmp_path):
    directory = tmp_path / "runbooks"
    directory.mkdir()
    # The modules' names sort the other way round from the steps' lines.
    (directory / "two.yaml").write_text(
        "name: two\nmatchers: ['alertname=\"X\"']\nsteps:\n"
        "  - name: first\n    python: {module: zz_missing, function: f}\n"
        "  - name: second\n    python: {module: aa_missing, function: f}\n")
    lint = subprocess.run([os.environ["RUNBOOKCTL_BINARY"], "lint", str(directory)],
                          capture_output=True, text=True, timeout=60)
    assert lint.returncode == 1
    lines = lint.stdout.splitlines()
    assert [line.split(": ")[0] for line in lines] == [
        f"{directory}/two.yaml:4:5", f"{directory}/two.yaml:6:5"]
