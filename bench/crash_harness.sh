#!/usr/bin/env bash
# Crash harness, the long variant: the release runbookd killed with SIGKILL BENCH_CRASH_KILLS
# times at random instants while two clients post distinct and duplicate notifications; then
# every invariant of docs/crash-testing.md is checked. It runs the CI test's own code (the
# `crash_tests` program, tests/crash/crash_harness_test.cpp) built with the release preset.
#
#   bench/crash_harness.sh                          # from the repository root, 200 kills
#   BENCH_CRASH_KILLS=500 BENCH_CRASH_SEED=42 bench/crash_harness.sh
#
# Environment:
#   BENCH_CRASH_KILLS   kills (default 200)
#   BENCH_CRASH_SEED    the harness's seed (default: random, printed)
#   BENCH_KEEP          1 keeps the harness's directory (database, logs, step files) and
#                       prints its path
#   TMPDIR              where the temporary directories go
#
# Prints the harness's summary as a table. Exit status: the harness's (0 when every invariant
# held, 1 when one failed: the failures are printed above the table).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

KILLS=${BENCH_CRASH_KILLS:-200}
SEED=${BENCH_CRASH_SEED:-}

say() { printf 'crash_harness: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

[[ $KILLS =~ ^[1-9][0-9]*$ ]] || die "BENCH_CRASH_KILLS=\"$KILLS\": expected a positive number"
[[ -z $SEED || $SEED =~ ^[0-9]+$ ]] || die "BENCH_CRASH_SEED=\"$SEED\": expected a whole number"
for tool in cmake ninja; do
    command -v "$tool" >/dev/null 2>&1 || die "missing $tool: run scripts/install-deps"
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/runbookd-crash-bench.XXXXXX")
HARNESS_TMP=$TMP  # the harness's own directory goes in here; outside TMP with BENCH_KEEP=1
[[ ${BENCH_KEEP:-0} != 1 ]] || HARNESS_TMP=$(mktemp -d "${TMPDIR:-/tmp}/runbookd-crash-kept.XXXXXX")
CURRENT=""  # PID of the harness while it runs

# Catch2 ends the harness on SIGINT or SIGTERM without running its destructors, so the runbookd
# it had started (a process group of its own) is stopped here, by the PID the harness wrote.
# Steps end by themselves: none runs longer than 0.5 s.
cleanup() {
    local rc=$? pidfile pid _
    trap - EXIT INT TERM
    if [[ -n $CURRENT ]]; then
        kill -TERM "$CURRENT" 2>/dev/null || true
        wait "$CURRENT" 2>/dev/null || true
        for pidfile in "$HARNESS_TMP"/runbookd-*/runbookd.pid; do
            [[ -f $pidfile ]] || continue
            pid=$(<"$pidfile")
            [[ $(cat "/proc/$pid/comm" 2>/dev/null) == runbookd ]] || continue
            kill -TERM -- "-$pid" 2>/dev/null || true
            for _ in $(seq 50); do
                [[ -d /proc/$pid ]] || break
                sleep 0.1
            done
            if [[ -d /proc/$pid ]]; then
                kill -KILL -- "-$pid" 2>/dev/null || true
                sleep 1  # steps it orphaned end within 0.5 s; their last lines go first
            fi
        done
    fi
    rm -rf -- "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

build_release runbookd crash_tests

env_args=(RUNBOOKD_CRASH_KILLS="$KILLS")
[[ -z $SEED ]] || env_args+=(RUNBOOKD_CRASH_SEED="$SEED")
[[ ${BENCH_KEEP:-0} != 1 ]] || env_args+=(RUNBOOKD_CRASH_KEEP=1)
say "running build/release/tests/crash_tests with $KILLS kills (load average" \
    "$(cut -d' ' -f1-3 /proc/loadavg))"
rc=0
env "${env_args[@]}" TMPDIR="$HARNESS_TMP" build/release/tests/crash_tests >"$TMP/harness.out" 2>&1 &
CURRENT=$!
wait "$CURRENT" || rc=$?
CURRENT=""

summary=$(grep '^crash harness: seed=.* episodes=' "$TMP/harness.out" || true)
if [[ -z $summary ]]; then
    cat "$TMP/harness.out" >&2
    die "the harness printed no summary (exit status $rc)"
fi
((rc == 0)) || cat "$TMP/harness.out"

# field KEY: the value of KEY=... in the summary line.
field() { tr ' ' '\n' <<<"$summary" | awk -F= -v k="$1" '$1 == k { print substr($0, length(k) + 2) }'; }

echo
echo "Crash harness, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null ||
        echo ' (with local changes)'), release build"
echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
    "kernel $(uname -r); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
printf '%-44s %s\n' "seed" "$(field seed)" \
    "kills (before runbookd answered)" "$(field kills) ($(field kills_before_ready))" \
    "start to first answer, p50 / max" "$(field ready_ms_p50) ms / $(field ready_ms_max) ms" \
    "deliveries posted / acknowledged (2xx)" "$(field deliveries) / $(field acknowledged)" \
    "deliveries refused or cut (runbookd down)" "$(field refused)" \
    "answers other than 2xx" "$(field other_status)" \
    "notifications both clients posted at once" "$(field concurrent_pairs)" \
    "episodes sent / acknowledged" "$(field episodes) / $(field episodes_acknowledged)" \
    "runs (by state)" "$(field runs) ($(field runs_by_state))" \
    "runs interrupted by a kill" "$(field interrupted)" \
    "interrupted runs resumed (idempotent step run again)" "$(field resumed)" \
    "acknowledged alerts missing" "$(field unacknowledged_missing)" \
    "duplicates found" "$(field duplicates)" \
    "leftover step processes" "$(field leftovers)" \
    "runs stuck at the end" "$(field stuck)" \
    "integrity_check failures" "$(field integrity_failures)" \
    "time" "$(field seconds) s"
grep '^crash harness: kept ' "$TMP/harness.out" || true
echo
if ((rc == 0)); then
    echo "every invariant held"
else
    echo "an invariant failed (exit status $rc): see the harness's output above"
fi
exit "$rc"
