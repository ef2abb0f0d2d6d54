#!/usr/bin/env bash
# Python steps benchmark: a trivial Python step run by runbookd's warm workers, side by side in
# one run with the same function run the way peers run Python actions: a `python3 -c`
# subprocess per step.
#
#   bench/python_steps.sh                           # from the repository root
#   BENCH_RUNS=5000 BENCH_SUBPROCESS_RUNS=500 bench/python_steps.sh
#
# Two release runbookd processes, one after the other, each with one runbook for the alert
# PyBench, one step calling bench_step.noop (returns {"ok": True}):
#   1. python:      `python: {module: bench_step, function: noop}`: a warm worker runs it.
#   2. subprocess:  `argv: [/usr/bin/python3, -c, "import bench_step ...; bench_step.noop(None)"]`:
#                   a new interpreter per step (Debian's /usr/bin/python3, not a pyenv shim).
# Each gets BENCH_RUNS (resp. BENCH_SUBPROCESS_RUNS) alerts, BENCH_PER_NOTIFICATION per POST from
# 4 client threads, and the time runs from the first POST until every run has ended. Both rows
# pay the same run overhead (intake commit, run and attempt records with fsync), so the ratio of
# runs per second is the end-to-end gain; the step's own duration (attempts.duration_ms, whole
# ms) is shown too. RSS is runbookd's and its children's (the warm workers) peak VmRSS.
#
# Environment:
#   BENCH_RUNS              runs of the python row (default 3000)
#   BENCH_SUBPROCESS_RUNS   runs of the subprocess row (default 300)
#   BENCH_PER_NOTIFICATION  alerts per POST (default 20)
#   BENCH_WORKERS           python.workers (default 4, runbookd's default)
#   BENCH_RUNBOOKD          use this runbookd (with runbookd-python-worker next to it and the
#                           runbook package in ../python) instead of building the release preset
#   BENCH_KEEP              1 keeps the temporary directory
#   TMPDIR                  where the temporary directory goes
#
# Exit status: 0 when both rows ran and every run succeeded; a missed goal is reported, not an
# error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

RUNS=${BENCH_RUNS:-3000}
SUB_RUNS=${BENCH_SUBPROCESS_RUNS:-300}
PER=${BENCH_PER_NOTIFICATION:-20}
WORKERS=${BENCH_WORKERS:-4}
KEEP=${BENCH_KEEP:-0}
PYTHON=/usr/bin/python3

say() { printf 'python_steps: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

for v in RUNS SUB_RUNS PER WORKERS; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v=\"${!v}\": expected a positive number"
done
[[ -x $PYTHON ]] || die "$PYTHON is missing: run scripts/install-deps"

STARTED=()
TMP=$(mktemp -d "${TMPDIR:-/tmp}/runbookd-python-bench.XXXXXX")
install_cleanup

if [[ -n ${BENCH_RUNBOOKD:-} ]]; then
    RUNBOOKD=$BENCH_RUNBOOKD
else
    build_release runbookd runbookd-python-worker runbook_core
    RUNBOOKD=build/release/engine/runbookd
fi
[[ -x $(dirname "$RUNBOOKD")/runbookd-python-worker ]] ||
    die "no runbookd-python-worker next to $RUNBOOKD"

cat >"$TMP/bench_step.py" <<'PY'
def noop(ctx):
    return {"ok": True}
PY

# runbookd_row TAG STEP_YAML RUNS: one runbookd with one runbook; leaves its BENCH line in
# $TMP/TAG.line. Not in a subshell, so that STARTED (and the cleanup) sees the runbookd.
runbookd_row() {
    local tag=$1 step=$2 runs=$3 port dir="$TMP/$1"
    mkdir -p "$dir/runbooks"
    cp "$TMP/bench_step.py" "$dir/runbooks/"
    printf 'name: bench-%s\nmatchers:\n  - alertname="PyBench"\nsteps:\n  - name: noop\n%s\n' \
        "$tag" "$step" >"$dir/runbooks/bench.yaml"
    printf 'python:\n  workers: %s\n' "$WORKERS" >"$dir/runbookd.yaml"
    port=$(free_port)
    "$RUNBOOKD" --config "$dir/runbookd.yaml" --runbooks "$dir/runbooks" --db "$dir/runbookd.db" \
        --listen "127.0.0.1:$port" --log-level warn >"$dir/runbookd.log" 2>&1 &
    local pid=$!
    STARTED+=("$pid")
    wait_ready "$pid" "runbookd ($tag)" "http://127.0.0.1:$port/readyz" '"ready":true' "$dir/runbookd.log"
    say "$tag: $runs runs, $PER alerts per notification (load average now:" \
        "$(cut -d' ' -f1-3 /proc/loadavg))"
    "$PYTHON" bench/python_steps.py "http://127.0.0.1:$port/api/v1/webhooks/alertmanager" \
        "$dir/runbookd.db" "$runs" "$PER" "$pid" >"$dir/bench.txt" ||
        die "$tag row failed: $(cat "$dir/bench.txt"); runbookd log: $(tail -n 20 "$dir/runbookd.log")"
    stop_pid "$pid" "runbookd ($tag)" 30 || true
    grep '^BENCH ' "$dir/bench.txt" >"$TMP/$tag.line"
}

field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }

runbookd_row python "    python: {module: bench_step, function: noop}" "$RUNS"
runbookd_row subprocess "    argv: [$PYTHON, -c, \"import json, sys; sys.path.insert(0, '$TMP/subprocess/runbooks'); import bench_step; print(json.dumps(bench_step.noop(None)))\"]" "$SUB_RUNS"
PY_LINE=$(cat "$TMP/python.line")
SUB_LINE=$(cat "$TMP/subprocess.line")

echo
echo "Python steps, end to end through runbookd ($(nproc) CPUs, $(uname -r))"
printf '%-12s %8s %10s %12s %12s %12s %14s\n' row runs runs/s "step p50" "step p99" \
    "runbookd RSS" "children RSS"
for row in python subprocess; do
    line=$PY_LINE
    [[ $row == subprocess ]] && line=$SUB_LINE
    printf '%-12s %8s %10s %10s ms %10s ms %9s MiB %11s MiB\n' "$row" "$(field "$line" runs)" \
        "$(field "$line" runs_per_s)" "$(field "$line" step_p50_ms)" \
        "$(field "$line" step_p99_ms)" \
        "$(awk -v k="$(field "$line" rss_kib)" 'BEGIN { printf "%.1f", k / 1024 }')" \
        "$(awk -v k="$(field "$line" workers_rss_kib)" 'BEGIN { printf "%.1f", k / 1024 }')"
done
ratio=$(awk -v a="$(field "$PY_LINE" runs_per_s)" -v b="$(field "$SUB_LINE" runs_per_s)" \
    'BEGIN { printf "%.1f", a / b }')
echo
echo "python ÷ subprocess, runs per second: ${ratio}× (goal ≥ 20×:" \
    "$(awk -v r="$ratio" 'BEGIN { print (r >= 20 ? "met" : "not met") }'))"
