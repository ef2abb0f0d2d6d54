"""On-call journeys through an approval gate: a run parks before a dangerous step, survives a
drain and a restart of runbookd, and runs the step only once someone allowed approves it."""

import time

from conftest import make_alert

GATED = """
name: restart-db
matchers:
  - alertname="DbDown"
steps:
  - name: look
    argv: [/bin/echo, looked]
  - name: restart
    approval:
      approvers: [alice]
      timeout: 30m
      message: restarting drops every connection
    argv: [/usr/bin/touch, "MARKER"]
"""


def wait_state(daemon, run_id, state, timeout=15):
    deadline = time.monotonic() + timeout
    run = daemon.run(run_id)
    while time.monotonic() < deadline:
        run = daemon.run(run_id)
        if run["state"] == state:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} is {run['state']}, not {state}:\n{daemon.log()}")


def test_a_waiting_run_survives_a_drain_and_runs_once_approved(runbookd, tmp_path):
    marker = tmp_path / "restarted"
    runbooks = {"gated.yaml": GATED.replace("MARKER", str(marker))}
    first = runbookd(runbooks)
    summary = first.post_alerts(make_alert({"alertname": "DbDown", "instance": "db-1"}))
    run_id = summary["runs"][0]["run_id"]
    waiting = wait_state(first, run_id, "waiting_approval")
    assert waiting["approvals"][0]["state"] == "pending"
    assert waiting["approvals"][0]["message"] == "restarting drops every connection"

    # A drain does not wait for a run that waits for a human; it stays waiting in the database.
    assert first.stop() == 0
    second = runbookd(runbooks)
    second.stop()
    second.db_path = first.db_path
    second.start()
    assert second.run(run_id)["state"] == "waiting_approval"
    assert not marker.exists()

    refused = second.ctl("approve", str(run_id), "restart", "--actor", "bob", check=False)
    approved = second.ctl("approve", str(run_id), "restart", "--actor", "alice",
                          "--comment", "replica is in sync")

    assert refused.returncode == 1
    assert "not_an_approver" in refused.stderr or "may not answer" in refused.stderr
    assert "approved by alice" in approved.stdout
    done = wait_state(second, run_id, "succeeded")
    assert marker.exists()
    (approval,) = done["approvals"]
    assert approval["state"] == "approved"
    assert approval["decided_by"] == "alice"
    assert approval["comment"] == "replica is in sync"
    kinds = [row["kind"] for row in second.query(
        "SELECT kind FROM events WHERE run_id = ? ORDER BY id", run_id)]
    assert kinds.index("approval.requested") < kinds.index("approval.approved")
    assert kinds[-1] == "run.finished"
