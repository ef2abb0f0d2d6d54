#!/usr/bin/env bash
# CPU cost of the webhook intake path with and without metrics: two runbookd binaries under the
# same wrk load, alternated, each on loopback with a runbook that matches no alert (every
# request records a delivery and two alerts and starts nothing, so only intake is measured).
#
#   bench/metrics_overhead.sh BASELINE_RUNBOOKD METRICS_RUNBOOKD
#
# Prints, per round and binary: requests, req/s, and runbookd's CPU time per request in µs,
# for the whole process (utime+stime summed over /proc/PID/task/*/stat before and after the
# load). Environment: BENCH_DURATION (default 10s), BENCH_ROUNDS (3),
# BENCH_CONNECTIONS (20). Nothing leaves 127.0.0.1.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DURATION=${BENCH_DURATION:-10s}
ROUNDS=${BENCH_ROUNDS:-3}
CONNECTIONS=${BENCH_CONNECTIONS:-20}
PAYLOAD=tests/fixtures/alertmanager/v4-one-resolved-one-firing.json
[ $# -eq 2 ] || { echo "usage: $0 BASELINE_RUNBOOKD METRICS_RUNBOOKD" >&2; exit 2; }
tmp=$(mktemp -d)
pid=
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
mkdir -p "$tmp/runbooks"
cat > "$tmp/runbooks/none.yaml" <<'YAML'
name: matches-nothing
matchers: ['alertname="NeverSent"']
steps:
  - name: noop
    argv: [/bin/true]
YAML

# ticks NAME_PATTERN: utime+stime of runbookd's threads whose name matches ('.': all of them).
ticks() {
    local total=0 f line
    for f in /proc/"$pid"/task/*/stat; do
        line=$(cat "$f" 2>/dev/null) || continue
        local comm=${line#*(}; comm=${comm%%)*}
        [[ $comm =~ $1 ]] || continue
        local rest=${line##*) }
        read -r -a fields <<< "$rest"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

run_one() {  # LABEL BINARY
    local label=$1 binary=$2 port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    rm -f "$tmp"/db*
    "$binary" --listen "127.0.0.1:$port" --runbooks "$tmp/runbooks" --db "$tmp/db" \
        > "$tmp/$label.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$port/readyz" > /dev/null && break
        sleep 0.1
    done
    # Every thread of runbookd (io threads, store writer, run engine): the whole process.
    local before
    before=$(ticks .)
    wrk -t2 -c"$CONNECTIONS" -d"$DURATION" -s bench/webhook_intake.lua \
        "http://127.0.0.1:$port/api/v1/webhooks/alertmanager" -- "$PAYLOAD" > "$tmp/wrk.txt" 2>&1
    local after requests rps hz
    after=$(ticks .)
    requests=$(awk '/requests in/ {print $1}' "$tmp/wrk.txt")
    rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk.txt")
    hz=$(getconf CLK_TCK)
    printf '%-9s requests=%-7s req/s=%-9s cpu_us_per_request=%s\n' "$label" "$requests" "$rps" \
        "$(python3 -c "print(round(($after - $before) * 1e6 / $hz / $requests, 2))")"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
}

for round in $(seq "$ROUNDS"); do
    echo "round $round"
    run_one baseline "$1"
    run_one metrics "$2"
done
