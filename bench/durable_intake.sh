#!/usr/bin/env bash
# Durable intake benchmark: what group commit buys, and how long a restart takes to be ready.
#
#   bench/durable_intake.sh                         # from the repository root
#
# In one run, on the same filesystem ($TMPDIR):
#   a. runbookd intake with group commit (the default): wrk POSTs a recorded Alertmanager
#      notification, each request a new episode (bench/webhook_intake.lua); the runbook matches
#      no alert, so each request commits its delivery and two alerts and starts no run.
#   b. the same with one commit per request (store.max_batch: 1).
#   c. SQLite alone: one row INSERT + COMMIT per transaction, WAL, synchronous=FULL
#      (bench/sqlite_commit.cpp), the ceiling of one commit per request.
#   d. start to ready with 1,000 runs to recover: a runbookd with 1,000 running steps
#      (`sleep 3600`, one per run) is SIGKILLed; the time from starting the next runbookd to its
#      first `GET /readyz` 200 is measured, and every step's process group must be gone then.
# Printed: a, b, c, the ratios a/b and a/c, and d. Nothing leaves 127.0.0.1; every process the
# script starts is stopped by PID (the steps by their recorded process group) when it ends.
#
# Environment:
#   BENCH_DURATION   wrk duration for a and b (default 10s); c runs as long
#   BENCH_CONNECTIONS, BENCH_THREADS   wrk connections (20) and threads (2)
#   BENCH_RECOVER    runs left running for d (default 1000; 0 skips d)
#   BENCH_RUNBOOKD   a runbookd binary to use instead of building the release preset
#   BENCH_SQLITE     a sqlite_commit_bench binary to use instead of building it
#   TMPDIR           where the temporary directory and the databases go
#   BENCH_KEEP       1 keeps the temporary directory
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-20}
THREADS=${BENCH_THREADS:-2}
RECOVER=${BENCH_RECOVER:-1000}
KEEP=${BENCH_KEEP:-0}  # read by bench_cleanup (lib.sh)
PAYLOAD=tests/fixtures/alertmanager/v4-one-resolved-one-firing.json
LUA=bench/webhook_intake.lua
INTAKE_PATH=/api/v1/webhooks/alertmanager

say() { printf 'durable_intake: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

[[ $DURATION =~ ^([1-9][0-9]*)s$ ]] || die "BENCH_DURATION=\"$DURATION\": expected seconds, e.g. 10s"
SECONDS_C=${BASH_REMATCH[1]}
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ && $THREADS =~ ^[1-9][0-9]*$ ]] ||
    die "BENCH_CONNECTIONS and BENCH_THREADS must be numbers"
[[ $RECOVER =~ ^[0-9]+$ ]] || die "BENCH_RECOVER=\"$RECOVER\": expected a number"
need=(wrk sqlite3 curl)
[[ -n ${BENCH_RUNBOOKD:-} && -n ${BENCH_SQLITE:-} ]] || need+=(cmake ninja)
for tool in "${need[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || die "missing $tool: run scripts/install-deps"
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/runbookd-durable.XXXXXX")
STARTED=()  # PIDs this script started and has not reaped yet
STEP_GROUPS=()  # process groups of the steps of d, recorded by runbookd

# A recorded step group is ours only while its leader is still the `sleep` d started.
kill_step_groups() {
    local g
    for g in "${STEP_GROUPS[@]}"; do
        if [[ $(tr '\0' ' ' 2>/dev/null <"/proc/$g/cmdline") == "/bin/sleep 3600 " ]]; then
            kill -KILL -- "-$g" 2>/dev/null || true
        fi
    done
}

ON_EXIT=kill_step_groups  # run by bench_cleanup (lib.sh)
install_cleanup

# --- build ---------------------------------------------------------------------------------------

RUNBOOKD=${BENCH_RUNBOOKD:-build/release/engine/runbookd}
SQLITE_BENCH=${BENCH_SQLITE:-build/release/bench/sqlite_commit_bench}
targets=()
[[ -n ${BENCH_RUNBOOKD:-} ]] || targets+=(runbookd)
[[ -n ${BENCH_SQLITE:-} ]] || targets+=(sqlite_commit_bench)
((${#targets[@]} == 0)) || build_release "${targets[@]}"
[[ -x $RUNBOOKD && -x $SQLITE_BENCH ]] || die "$RUNBOOKD or $SQLITE_BENCH is not an executable"
DB_FS=$(findmnt -n -o FSTYPE -T "$TMP" 2>/dev/null || stat -f -c %T "$TMP")
case $DB_FS in
tmpfs | ramfs) say "warning: $TMP is on $DB_FS, where fsync costs nothing; set TMPDIR to a" \
    "directory on a disk" ;;
esac

# start_runbookd TAG CONFIG_YAML: starts runbookd with TAG's directory (runbooks in
# $TMP/TAG.runbooks); sets PID, PORT and NOW (the time just before the start).
start_runbookd() {
    local tag=$1
    printf '%s\n' "$2" >"$TMP/$tag.yaml"
    PORT=$(free_port)
    NOW=$(date +%s.%N)
    "$RUNBOOKD" --config "$TMP/$tag.yaml" --runbooks "$TMP/$tag.runbooks" --db "$TMP/$tag.db" \
        --listen "127.0.0.1:$PORT" --log-level warn >>"$TMP/$tag.log" 2>&1 &
    PID=$!
    STARTED+=("$PID")
}

# seconds_to_ready T0: polls the runbookd of PID and PORT every 10 ms until /readyz answers 200;
# prints the seconds since T0.
seconds_to_ready() {
    until [[ $(curl -s --max-time 1 "http://127.0.0.1:$PORT/readyz" 2>/dev/null) == *'"ready":true'* ]]; do
        is_running "$PID" || die "runbookd (pid $PID) exited before it was ready"
        sleep 0.01
    done
    awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'
}

# --- a and b: runbookd intake, group commit and one commit per request ---------------------------

declare -A RPS=() S2XX=() NON2XX=() P99=() ROWS=()
intake_row() {
    local tag=$1 config=$2 out="$TMP/wrk-$1.txt" rc=0
    mkdir -p "$TMP/$tag.runbooks"
    printf '%s\n' 'name: matches-nothing' "matchers: ['alertname=\"BenchMatchesNothing\"']" \
        'steps:' '  - name: noop' '    argv: [/bin/true]' >"$TMP/$tag.runbooks/none.yaml"
    start_runbookd "$tag" "$config"
    wait_ready "$PID" "$tag" "http://127.0.0.1:$PORT/readyz" '"ready":true' "$TMP/$tag.log"
    say "$tag: wrk -t$THREADS -c$CONNECTIONS -d$DURATION (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$LUA" \
        "http://127.0.0.1:$PORT$INTAKE_PATH" -- "$ROOT/$PAYLOAD" >"$out" 2>&1 &
    local wrk_pid=$!
    STARTED+=("$wrk_pid")
    wait "$wrk_pid" || rc=$?
    forget_pid "$wrk_pid"
    local line
    line=$(grep '^BENCH ' "$out" || true)
    if ((rc != 0)) || [[ -z $line ]]; then
        die "wrk failed against $tag (exit $rc): $(cat "$out")"
    fi
    local -A r=()
    local kv
    for kv in ${line#BENCH }; do
        r[${kv%%=*}]=${kv#*=}
    done
    RPS[$tag]=${r[rps]}
    S2XX[$tag]=${r[s2xx]}
    NON2XX[$tag]=$((r[non2xx] + r[sockerr]))
    P99[$tag]=$(awk -v u="${r[p99_us]}" 'BEGIN { printf "%.2f ms", u / 1000 }')
    stop_pid "$PID" "$tag" 30 || die "$tag needed SIGKILL to stop"
    ((STOP_RC == 0)) || die "$tag exited with status $STOP_RC"
    ROWS[$tag]=$(sqlite3 -batch -noheader "$TMP/$tag.db" 'SELECT count(*) FROM deliveries')
    ((ROWS[$tag] >= S2XX[$tag])) ||
        die "$tag: ${S2XX[$tag]} deliveries answered 2xx but only ${ROWS[$tag]} recorded"
}
intake_row group_commit ""
intake_row one_commit $'store:\n  max_batch: 1'

# --- c: SQLite alone -----------------------------------------------------------------------------

say "sqlite: one row per commit for ${SECONDS_C}s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
line=$("$SQLITE_BENCH" --db "$TMP/raw.db" --seconds "$SECONDS_C")
RAW_RATE=$(sed -n 's/.* rate=\([0-9.]*\).*/\1/p' <<<"$line")
[[ -n $RAW_RATE ]] || die "sqlite_commit_bench printed no rate: $line"

# --- d: start to ready with runs to recover ------------------------------------------------------

RECOVER_SECONDS=n/a
EMPTY_SECONDS=n/a
RECOVER_NOTE="skipped (BENCH_RECOVER=0)"
if ((RECOVER > 0)); then
    mkdir -p "$TMP/recover.runbooks"
    printf '%s\n' 'name: nap' "matchers: ['alertname=\"BenchRecover\"']" 'steps:' \
        '  - name: nap' '    argv: [/bin/sleep, "3600"]' >"$TMP/recover.runbooks/nap.yaml"
    config="runs:
  max_concurrent: $((RECOVER + 10))
exec:
  max_processes: $((RECOVER + 10))"
    {
        printf '{"version":"4","status":"firing","receiver":"r","groupKey":"g","alerts":['
        for ((i = 1; i <= RECOVER; i++)); do
            ((i == 1)) || printf ','
            printf '{"status":"firing","labels":{"alertname":"BenchRecover","n":"%d"},' "$i"
            printf '"annotations":{},"startsAt":"2026-12-04T15:00:00Z",'
            printf '"endsAt":"0001-01-01T00:00:00Z","fingerprint":"%016x"}' "$i"
        done
        printf ']}'
    } >"$TMP/recover.json"
    start_runbookd recover "$config"
    first=$PID
    EMPTY_SECONDS=$(seconds_to_ready "$NOW")
    answer=$(curl -s --max-time 60 -H 'Content-Type: application/json' \
        --data-binary @"$TMP/recover.json" "http://127.0.0.1:$PORT$INTAKE_PATH")
    [[ $answer == *"\"runs_started\":$RECOVER,"* ]] ||
        die "the recovery notification did not start $RECOVER runs: ${answer:0:300}"
    say "recover: waiting for $RECOVER steps to run and record their process"
    for _ in $(seq 600); do
        n=$(sqlite3 -batch -noheader "$TMP/recover.db" 'SELECT count(pid) FROM attempts')
        ((n < RECOVER)) || break
        sleep 0.2
    done
    mapfile -t STEP_GROUPS < <(sqlite3 -batch -noheader "$TMP/recover.db" \
        'SELECT pid FROM attempts WHERE pid IS NOT NULL')
    ((${#STEP_GROUPS[@]} == RECOVER)) || die "only ${#STEP_GROUPS[@]} of $RECOVER steps recorded"
    kill -KILL "$first"
    wait "$first" 2>/dev/null || true
    forget_pid "$first"
    alive_before=0
    for g in "${STEP_GROUPS[@]}"; do
        kill -0 -- "-$g" 2>/dev/null && alive_before=$((alive_before + 1))
    done
    say "recover: runbookd SIGKILLed, $alive_before step groups left running; restarting" \
        "(load average $(cut -d' ' -f1-3 /proc/loadavg))"
    start_runbookd recover "$config"
    RECOVER_SECONDS=$(seconds_to_ready "$NOW")
    # A group counts as alive while a member is not a zombie: after the SIGKILL the steps are
    # orphans, and reaping their zombies is init's work, not runbookd's.
    declare -A live_groups=()
    while read -r pgid stat; do
        [[ $stat == Z* ]] || live_groups[$pgid]=1
    done < <(ps -e -o pgid=,stat=)
    alive=0
    for g in "${STEP_GROUPS[@]}"; do
        [[ -n ${live_groups[$g]:-} ]] && alive=$((alive + 1))
    done
    states=$(sqlite3 -batch -noheader "$TMP/recover.db" \
        "SELECT group_concat(state || '=' || n, ' ') FROM
         (SELECT state, count(*) AS n FROM runs GROUP BY state ORDER BY state)")
    RECOVER_NOTE="$alive_before step groups left by the SIGKILL, $alive still alive at ready; runs: $states"
    stop_pid "$PID" recover 30 || true
    ((alive == 0)) || die "recover: $alive step process groups still alive when runbookd was ready"
fi

# --- report --------------------------------------------------------------------------------------

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
echo "Durable intake benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo);" \
    "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg); databases on $DB_FS"
echo "$("$RUNBOOKD" --version 2>&1 | head -n 1), synchronous FULL; wrk -t$THREADS -c$CONNECTIONS" \
    "-d$DURATION, each request a new episode of the 2 alerts in $PAYLOAD, no run started"
echo
fmt='%-44s %12s %10s %10s %10s\n'
# shellcheck disable=SC2059
printf "$fmt" row "per second" p99 2xx "non-2xx"
# shellcheck disable=SC2059
printf "$fmt" "a. runbookd, group commit (default)" "${RPS[group_commit]}" "${P99[group_commit]}" \
    "${S2XX[group_commit]}" "${NON2XX[group_commit]}"
# shellcheck disable=SC2059
printf "$fmt" "b. runbookd, one commit per request" "${RPS[one_commit]}" "${P99[one_commit]}" \
    "${S2XX[one_commit]}" "${NON2XX[one_commit]}"
# shellcheck disable=SC2059
printf "$fmt" "c. SQLite alone, one row per commit" "$RAW_RATE" "" "" ""
echo
echo "a/b (what group commit buys):                 $(ratio "${RPS[group_commit]}" "${RPS[one_commit]}")×"
echo "a/c (against SQLite's raw commit rate):       $(ratio "${RPS[group_commit]}" "$RAW_RATE")×"
echo "b/c (one commit per request against raw):     $(ratio "${RPS[one_commit]}" "$RAW_RATE")×"
echo "d. start to /readyz 200 with $RECOVER runs to recover: $RECOVER_SECONDS s ($RECOVER_NOTE);"
echo "   the same runbookd on its then empty database: $EMPTY_SECONDS s"
