"""An on-call engineer runs a runbook by hand against the real runbookd binary: first a dry run
that shows what would happen and touches nothing, then the run itself, with runbookctl and over
HTTP (docs/manual-runs.md)."""

import json

RESTART = """
name: restart
description: restarts a service
matchers:
  - alertname="ServiceDown"
concurrency: 1
params:
  service:
    required: true
    pattern: "[a-z-]+"
  marker: {}
steps:
  - name: restart
    argv: [/usr/bin/touch, "{{ params.marker }}"]
  - name: report
    shell: printf '%s on %s' "$RUNBOOK_PARAM_SERVICE" "$RUNBOOK_LABEL_INSTANCE"
"""


def test_dry_run_then_run_by_hand(runbookd, tmp_path):
    marker = tmp_path / "restarted"
    daemon = runbookd({"restart.yaml": RESTART})
    params = ["--param", "service=api", "--param", f"marker={marker}", "--label", "instance=db1"]

    dry = daemon.ctl("-o", "json", "run", "restart", "--dry-run", "--reason", "look first",
                     *params)
    planned = json.loads(dry.stdout)

    assert planned["state"] == "succeeded"
    assert planned["plan"]["steps"][0]["argv"][1:] == [str(marker)]
    assert planned["plan"]["steps"][1]["env"]["RUNBOOK_PARAM_SERVICE"] == "api"
    assert not marker.exists()
    assert daemon.query("SELECT count(*) AS n FROM attempts")[0]["n"] == 0

    real = daemon.ctl("run", "restart", "--wait", "--reason", "api is down", *params)

    assert real.returncode == 0
    assert "succeeded  runbook restart" in real.stdout
    assert marker.exists()
    row = daemon.query("SELECT trigger, params, request_reason, dry_run FROM runs "
                       "ORDER BY id DESC LIMIT 1")[0]
    assert row["trigger"] == "manual"
    assert json.loads(row["params"]) == {"service": "api", "marker": str(marker)}
    assert row["request_reason"] == "api is down"
    assert row["dry_run"] == 0
    report = daemon.query("SELECT stdout_excerpt FROM attempts WHERE step = 'report'")[0]
    assert report["stdout_excerpt"] == b"api on db1"


def test_http_answer_has_location_and_replays_by_key(runbookd):
    daemon = runbookd({"restart.yaml": RESTART})
    body = {"params": {"service": "api"}, "labels": {"alertname": "ServiceDown"}}

    first = daemon.request("POST", "/api/v1/runbooks/restart/runs", body,
                           headers={"Idempotency-Key": "INC-7"})
    again = daemon.request("POST", "/api/v1/runbooks/restart/runs", body,
                           headers={"Idempotency-Key": "INC-7"})
    bad = daemon.request("POST", "/api/v1/runbooks/restart/runs",
                         {"params": {"service": "API!"}})

    assert first.status == 201
    assert first.headers["Location"] == f"/api/v1/runs/{first.json()['id']}"
    assert first.json()["warnings"] == []
    assert again.status == 200
    assert again.json()["id"] == first.json()["id"]
    assert bad.status == 400
    assert bad.json()["error"]["field"] == "params.service"
    # marker has no value (no default, not given): the step fails before anything starts
    assert daemon.wait_run(first.json()["id"])["state"] == "failed"
    assert len(daemon.query("SELECT id FROM runs")) == 1
