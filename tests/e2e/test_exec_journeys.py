"""The main journeys through a real runbookd, from the outside: Alertmanager notifications in,
HTTP answers, audit rows and side effects out."""

import json
import time

from conftest import make_alert, make_notification

DIAGNOSE = """
name: diagnose
matchers:
  - alertname="DiskFull"
steps:
  - name: where
    argv: [/bin/echo, "mount={{ alert.labels.mountpoint }}", "{{ alert.annotations.summary | default \\"none\\" }}"]
  - name: fail
    argv: [/bin/sh, -c, "echo broken >&2; exit 3"]
  - name: never
    argv: [/bin/echo, never]
"""

SIDE_EFFECT = """
name: touch
matchers:
  - alertname="Touch"
steps:
  - name: touch
    argv: [/usr/bin/touch, "{{ alert.labels.path }}"]
    cwd: CWD
"""

SLOW = """
name: slow
matchers:
  - alertname="Slow"
steps:
  - name: sleep
    argv: [/bin/sleep, "30"]
    timeout: 300ms
"""


def test_firing_alert_runs_its_runbook_and_leaves_the_record(runbookd):
    d = runbookd({"diagnose.yaml": DIAGNOSE})
    alert = make_alert({"alertname": "DiskFull", "mountpoint": "/var lib"},
                       annotations={"summary": "it's $(full)"})
    summary = d.post_alerts(alert)
    assert summary["alerts_received"] == 1
    assert summary["runs_started"] == 1
    (started,) = summary["runs"]
    assert started["runbook"] == "diagnose"

    run = d.wait_run(started["run_id"])
    assert run["state"] == "failed"
    steps = [(a["step"], a["state"], a["exit_code"]) for a in run["attempts"]]
    # The run stops at the first failed step: "never" has no attempt.
    assert steps == [("where", "succeeded", 0), ("fail", "failed", 3)]
    where = run["attempts"][0]
    # Values with spaces, quotes and $(...) stay one literal argv element each.
    assert where["argv"] == ["/bin/echo", "mount=/var lib", "it's $(full)"]
    assert where["stdout"] == "mount=/var lib it's $(full)\n"
    assert "broken" in run["attempts"][1]["stderr"]

    (delivery,) = d.query("SELECT * FROM deliveries WHERE id = ?", summary["delivery_id"])
    assert delivery["alert_count"] == 1
    (row,) = d.query("SELECT fingerprint, status, labels, outcome FROM alerts")
    assert row["fingerprint"] == alert["fingerprint"]
    assert json.loads(row["labels"]) == alert["labels"]
    kinds = {e["kind"] for e in d.query("SELECT kind FROM events")}
    assert {"delivery.received", "run.queued", "run.started", "attempt.started",
            "attempt.finished", "run.finished"} <= kinds


def test_a_redelivered_notification_starts_nothing_twice(runbookd):
    d = runbookd({"diagnose.yaml": DIAGNOSE})
    alert = make_alert({"alertname": "DiskFull", "mountpoint": "/"})
    first = d.post_alerts(alert)
    again = d.post_alerts(alert)  # Alertmanager in HA sends the same episode again
    assert first["runs_started"] == 1
    assert again["runs_started"] == 0
    assert [n["reason"] for n in again["not_acted_on"]] == ["duplicate"]
    assert len(d.query("SELECT id FROM runs")) == 1
    assert len(d.query("SELECT id FROM deliveries")) == 2  # every delivery is recorded


def test_unmatched_and_resolved_alerts_are_recorded_with_their_reason(runbookd):
    d = runbookd({"diagnose.yaml": DIAGNOSE})
    summary = d.post_alerts(make_alert({"alertname": "Other"}),
                            make_alert({"alertname": "DiskFull"}, status="resolved"))
    assert summary["runs_started"] == 0
    assert sorted(n["reason"] for n in summary["not_acted_on"]) == [
        "no_matching_runbook", "status_ignored"]
    outcomes = sorted(r["outcome"] for r in d.query("SELECT outcome FROM alerts"))
    assert outcomes == ["no_matching_runbook", "status_ignored"]


def test_label_values_never_reach_a_shell(runbookd, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    d = runbookd({"touch.yaml": SIDE_EFFECT.replace("CWD", str(work))})
    # Were any of it given to a shell, "pwned" would appear in the step's directory.
    hostile = "x; touch pwned $(touch pwned) `touch pwned`\nnext"
    run = d.wait_run(d.post_alerts(make_alert({"alertname": "Touch", "path": hostile}))
                     ["runs"][0]["run_id"])
    assert run["state"] == "succeeded"
    assert run["attempts"][0]["argv"] == ["/usr/bin/touch", hostile]
    # touch created exactly the one oddly named file, and nothing else ran.
    assert [p.name for p in work.iterdir()] == [hostile]


def test_a_step_past_its_timeout_is_stopped_and_the_run_fails(runbookd):
    d = runbookd({"slow.yaml": SLOW})
    run = d.wait_run(d.post_alerts(make_alert({"alertname": "Slow"}))["runs"][0]["run_id"])
    assert run["state"] == "failed"
    (attempt,) = run["attempts"]
    assert attempt["signal"] == 15
    assert "timed out" in attempt["error"]
    assert attempt["duration_ms"] < 5000


def test_bad_requests_get_a_json_error_and_record_nothing(runbookd):
    d = runbookd({"diagnose.yaml": DIAGNOSE})
    path = "/api/v1/webhooks/alertmanager"
    cases = [
        (d.request("POST", path, b"{not json"), 400, "invalid_payload"),
        (d.request("POST", path, {"version": "4", "alerts": "no"}), 400, "invalid_payload"),
        (d.request("POST", path, make_notification(make_alert({"alertname": "DiskFull"})),
                   content_type="text/plain"), 415, "unsupported_media_type"),
        (d.request("GET", "/api/v1/nothing-here"), 404, "not_found"),
        (d.request("DELETE", path), 405, "method_not_allowed"),
    ]
    for response, status, code in cases:
        assert response.status == status, response.body
        assert response.json()["error"]["code"] == code, response.body
    bad_field = cases[1][0].json()["error"]
    assert bad_field["field"] == "alerts"
    assert d.query("SELECT count(*) AS n FROM deliveries") == [{"n": 0}]
    assert d.query("SELECT count(*) AS n FROM runs") == [{"n": 0}]


def test_runbookctl_shows_the_run_and_the_audit_chain_verifies(runbookd):
    d = runbookd({"diagnose.yaml": DIAGNOSE})
    run_id = d.post_alerts(make_alert({"alertname": "DiskFull", "mountpoint": "/"}))[
        "runs"][0]["run_id"]
    d.wait_run(run_id)
    listed = json.loads(d.ctl("-o", "json", "runs", "list").stdout)
    assert [r["id"] for r in listed["runs"]] == [run_id]
    shown = d.ctl("runs", "show", str(run_id)).stdout
    assert "where" in shown and "mount=/" in shown
    verify = json.loads(d.ctl("-o", "json", "audit", "verify", "--db", str(d.db_path)).stdout)
    assert verify["intact"] is True
    assert verify["events"] >= 6


def test_a_real_alertmanager_delivers_and_the_runbook_runs_once(runbookd, alertmanager):
    d = runbookd({"diagnose.yaml": DIAGNOSE})
    am = alertmanager(d)
    am.post([{"labels": {"alertname": "DiskFull", "mountpoint": "/data"},
              "annotations": {"summary": "disk full"}}])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not d.query("SELECT id FROM runs"):
        time.sleep(0.1)
    (row,) = d.query("SELECT id FROM runs")
    run = d.wait_run(row["id"])
    assert run["attempts"][0]["argv"] == ["/bin/echo", "mount=/data", "disk full"]
    (delivery,) = d.query("SELECT source, receiver, status FROM deliveries LIMIT 1")
    assert delivery["receiver"] == "runbookd"
    assert delivery["status"] == "firing"
    # Alertmanager sends the group again at each group_interval while something changes; the
    # episode still runs its runbook once.
    time.sleep(2.5)
    assert len(d.query("SELECT id FROM runs")) == 1
