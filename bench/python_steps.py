"""Driver of bench/python_steps.sh: posts alerts to one runbookd, waits for their runs, and
prints one BENCH line measured from runbookd's own audit (SQLite) and /proc.

    python_steps.py URL DB RUNS PER_NOTIFICATION PID
"""

import datetime
import json
import os
import sqlite3
import sys
import threading
import time
import urllib.request


def post(url, body):
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=60) as r:
        if r.status != 200:
            raise SystemExit(f"runbookd answered {r.status}")


def notifications(runs, per):
    base = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    for start in range(0, runs, per):
        alerts = []
        for i in range(start, min(start + per, runs)):
            alerts.append({
                "status": "firing", "labels": {"alertname": "PyBench", "n": str(i)},
                "annotations": {}, "fingerprint": f"{i:016x}",
                "startsAt": (base + datetime.timedelta(seconds=i)).isoformat(),
                "endsAt": "0001-01-01T00:00:00Z", "generatorURL": ""})
        yield json.dumps({"version": "4", "status": "firing", "receiver": "bench",
                          "groupKey": "bench", "alerts": alerts, "groupLabels": {},
                          "commonLabels": {}, "commonAnnotations": {},
                          "externalURL": "http://127.0.0.1"}).encode()


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    """Direct children of every thread of pid (workers are started by runbookd's run engine
    thread, not its main thread)."""
    found = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(p) for p in f.read().split()]
        except OSError:
            pass
    return found


def main():
    url, db_path, runs, per, pid = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(
        sys.argv[4]), int(sys.argv[5])
    bodies = list(notifications(runs, per))
    started = time.monotonic()
    lock = threading.Lock()

    def poster():
        while True:
            with lock:
                if not bodies:
                    return
                body = bodies.pop()
            post(url, body)

    threads = [threading.Thread(target=poster) for _ in range(4)]
    for t in threads:
        t.start()
    peak_workers_rss = 0
    peak_rss = 0
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    while True:
        peak_rss = max(peak_rss, rss_kib(pid))
        workers = [c for c in children(pid) if rss_kib(c) > 0]
        peak_workers_rss = max(peak_workers_rss, sum(rss_kib(c) for c in workers))
        done, = db.execute("SELECT count(*) FROM runs WHERE state NOT IN ('queued', 'running')"
                           ).fetchone()
        if done >= runs:
            break
        if time.monotonic() - started > 600:
            raise SystemExit(f"only {done} of {runs} runs ended within 600 s")
        time.sleep(0.02)
    elapsed = time.monotonic() - started
    for t in threads:
        t.join()
    states = dict(db.execute("SELECT state, count(*) FROM runs GROUP BY state").fetchall())
    durations = sorted(d for (d,) in db.execute("SELECT duration_ms FROM attempts"))
    failures = db.execute("SELECT error, stderr_excerpt FROM attempts WHERE state != 'succeeded'"
                          " LIMIT 1").fetchall()
    p50 = durations[len(durations) // 2] if durations else -1
    p99 = durations[min(len(durations) - 1, len(durations) * 99 // 100)] if durations else -1
    print(f"BENCH runs={runs} seconds={elapsed:.3f} runs_per_s={runs / elapsed:.1f} "
          f"step_p50_ms={p50} step_p99_ms={p99} succeeded={states.get('succeeded', 0)} "
          f"rss_kib={peak_rss} workers_rss_kib={peak_workers_rss}")
    if states.get("succeeded", 0) != runs:
        print(f"runs not succeeded: {states}; first failure: {failures}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
