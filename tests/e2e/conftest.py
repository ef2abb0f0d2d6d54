"""Fixtures of the end-to-end suite: a real runbookd binary on a loopback port, its own
runbooks directory and SQLite file, driven over HTTP like Alertmanager and on-call engineers
drive it. CTest passes the binaries' paths (RUNBOOKD_BINARY, RUNBOOKCTL_BINARY)."""

import datetime
import hashlib
import itertools
import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def _binary(variable):
    path = os.environ.get(variable)
    if not path or not os.access(path, os.X_OK):
        raise RuntimeError(f"{variable} must name the built binary (ctest sets it); got {path!r}")
    return path


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Response:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def json(self):
        return json.loads(self.body)


_sequence = itertools.count(1)


def make_alert(labels, status="firing", annotations=None, starts_at=None, ends_at=None):
    """One alert as Alertmanager's webhook (payload version 4) lists it. Every call makes a new
    episode (its own startsAt) unless starts_at is given."""
    if starts_at is None:
        base = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
        starts_at = (base + datetime.timedelta(seconds=next(_sequence))).isoformat().replace(
            "+00:00", "Z")
    fingerprint = hashlib.sha256(
        json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "status": status,
        "labels": labels,
        "annotations": annotations or {},
        "startsAt": starts_at,
        "endsAt": ends_at or ("2026-01-02T00:00:00Z" if status == "resolved"
                              else "0001-01-01T00:00:00Z"),
        "generatorURL": "http://prometheus.example:9090/graph",
        "fingerprint": fingerprint,
    }


def make_notification(*alerts):
    firing = any(a["status"] == "firing" for a in alerts)
    common = dict(alerts[0]["labels"]) if alerts else {}
    for a in alerts[1:]:
        common = {k: v for k, v in common.items() if a["labels"].get(k) == v}
    return {
        "receiver": "runbookd",
        "status": "firing" if firing else "resolved",
        "alerts": list(alerts),
        "groupLabels": {"alertname": common.get("alertname", "")},
        "commonLabels": common,
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example:9093",
        "version": "4",
        "groupKey": '{}:{alertname="%s"}' % common.get("alertname", ""),
        "truncatedAlerts": 0,
    }


class Runbookd:
    """One runbookd process. Stopped (by its PID) when the test ends."""

    def __init__(self, directory, runbooks, config=""):
        self.dir = Path(directory)
        self.runbooks_dir = self.dir / "runbooks"
        self.runbooks_dir.mkdir(parents=True)
        for name, text in runbooks.items():
            (self.runbooks_dir / name).write_text(text)
        self.config_path = self.dir / "runbookd.yaml"
        self.config_path.write_text(config)
        self.db_path = self.dir / "runbookd.db"
        self.log_path = self.dir / "runbookd.log"
        self.port = free_port()
        self.process = None

    def start(self, timeout=20):
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [_binary("RUNBOOKD_BINARY"), "--config", str(self.config_path), "--listen",
                 f"127.0.0.1:{self.port}", "--runbooks", str(self.runbooks_dir), "--db",
                 str(self.db_path)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"runbookd exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self.get("/readyz").status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"runbookd not ready within {timeout} s:\n{self.log()}")

    def stop(self, timeout=30):
        """SIGTERM (drain), then SIGKILL if it has not exited; returns its exit status."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"runbookd did not stop within {timeout} s:\n{self.log()}")

    def log(self):
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def url(self, path):
        return f"http://127.0.0.1:{self.port}{path}"

    def request(self, method, path, body=None, content_type="application/json", headers=None):
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        request = urllib.request.Request(self.url(path), data=data, method=method)
        if data is not None and content_type:
            request.add_header("Content-Type", content_type)
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as r:
                return Response(r.status, dict(r.headers), r.read())
        except urllib.error.HTTPError as e:
            return Response(e.code, dict(e.headers), e.read())

    def get(self, path):
        return self.request("GET", path)

    def post_alerts(self, *alerts):
        r = self.request("POST", "/api/v1/webhooks/alertmanager", make_notification(*alerts))
        assert r.status == 200, r.body
        return r.json()

    def query(self, sql, *args):
        """Rows from the audit database, read-only (WAL: safe while runbookd writes)."""
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute(sql, args)]
        finally:
            db.close()

    def run(self, run_id):
        r = self.get(f"/api/v1/runs/{run_id}")
        assert r.status == 200, r.body
        return r.json()

    def wait_run(self, run_id, timeout=30):
        """The run once it has ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if run["state"] not in ("queued", "running"):
                return run
            time.sleep(0.05)
        raise AssertionError(f"run {run_id} still {run['state']} after {timeout} s:\n{self.log()}")

    def ctl(self, *args, check=True):
        result = subprocess.run([_binary("RUNBOOKCTL_BINARY"), "--url", self.url(""), *args],
                                capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"runbookctl {' '.join(args)} exited {result.returncode}: "
                                 f"{result.stdout}{result.stderr}")
        return result


@pytest.fixture
def runbookd(tmp_path):
    """runbookd(runbooks={file: yaml}, config=yaml) starts one; all are stopped at the end."""
    started = []

    def start(runbooks, config=""):
        daemon = Runbookd(tmp_path / f"runbookd-{len(started)}", runbooks, config)
        started.append(daemon)
        return daemon.start()

    yield start
    for daemon in started:
        daemon.stop()


ALERTMANAGER_CONFIG = """route:
  receiver: runbookd
  group_by: ['alertname']
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
receivers:
  - name: runbookd
    webhook_configs:
      - url: http://127.0.0.1:{port}/api/v1/webhooks/alertmanager
        send_resolved: true
"""


class Alertmanager:
    """Debian's prometheus-alertmanager on a loopback port, clustering off, its own storage,
    a webhook receiver pointing at one runbookd."""

    def __init__(self, directory, runbookd_port):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True)
        (self.dir / "alertmanager.yml").write_text(ALERTMANAGER_CONFIG.format(port=runbookd_port))
        self.port = free_port()
        binary = os.environ.get("ALERTMANAGER_BINARY", "/usr/bin/prometheus-alertmanager")
        with open(self.dir / "alertmanager.log", "ab") as log:
            self.process = subprocess.Popen(
                [binary, f"--config.file={self.dir / 'alertmanager.yml'}",
                 f"--storage.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError("alertmanager not ready within 20 s")

    def post(self, alerts):
        """Alerts into Alertmanager's v2 API, as Prometheus sends them."""
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/v2/alerts",
                                         data=json.dumps(alerts).encode(), method="POST")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=10) as r:
            assert r.status == 200

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


@pytest.fixture
def alertmanager(tmp_path):
    """alertmanager(runbookd) starts a real Alertmanager posting to that runbookd."""
    started = []

    def start(daemon):
        am = Alertmanager(tmp_path / f"alertmanager-{len(started)}", daemon.port)
        started.append(am)
        return am

    yield start
    for am in started:
        am.stop()
