#!/usr/bin/env bash
# Webhook intake benchmark: runbookd against adnanh/webhook, side by side, on loopback.
#
#   bench/webhook_intake.sh                         # from the repository root
#   BENCH_DURATION=30s BENCH_CONNECTIONS=50 bench/webhook_intake.sh
#
# Every request POSTs a recorded Alertmanager notification, rewritten by
# bench/webhook_intake.lua so that each one is a new alert episode (new fingerprints and
# startsAt). Servers, one after the other, each under the same wrk load:
#   1. runbookd (release build), default durability (synchronous FULL), one runbook with one
#      step `/bin/true` for firing HostHighLoad alerts, fed
#      tests/fixtures/alertmanager/v4-one-resolved-one-firing.json: every request records a
#      delivery and two alerts and starts one run (the firing alert), which executes: the same
#      command per request as webhook runs. The goal is measured on this row.
#   2. The same runbookd fed v4-firing-two-alerts.json: two runs, so two commands, per request.
#   3. adnanh/webhook, hook running `/bin/true`, default mode (answers before the command runs).
#   4. adnanh/webhook, same hook with include-command-output-in-response (waits for it).
# Then it stops runbookd with SIGTERM and checks with sqlite3 that every 2xx answer left its
# rows. Nothing leaves 127.0.0.1. See docs/benchmarks.md for what the figures mean.
#
# Environment:
#   BENCH_DURATION        wrk duration per server (default 10s)
#   BENCH_CONNECTIONS     wrk connections (default 20)
#   BENCH_THREADS         wrk threads (default 2)
#   BENCH_SETTLE_TIMEOUT  seconds to wait, after the load, for a server to go idle (default 30)
#   BENCH_RUNBOOKD        use this runbookd binary instead of building the release preset
#   BENCH_INTAKE_ONLY     1 adds a row: runbookd whose runbook matches no alert, so that it
#                         records deliveries and alerts but starts no run (intake cost alone)
#   TMPDIR                where the temporary directory (and runbookd's database) goes
#   BENCH_KEEP            1 keeps the temporary directory (database, logs, wrk output)
#
# Exit status: 0 when the run completed and the durability checks passed, 1 otherwise.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

DURATION=${BENCH_DURATION:-10s}
CONNECTIONS=${BENCH_CONNECTIONS:-20}
THREADS=${BENCH_THREADS:-2}
SETTLE_TIMEOUT=${BENCH_SETTLE_TIMEOUT:-30}
KEEP=${BENCH_KEEP:-0}
PAYLOAD=tests/fixtures/alertmanager/v4-one-resolved-one-firing.json  # one firing, one resolved
PAYLOAD_TWO_RUNS=tests/fixtures/alertmanager/v4-firing-two-alerts.json
LUA=bench/webhook_intake.lua
HOOKS=bench/webhook_intake.hooks.json
RUNBOOK=bench/webhook_intake.runbook.yaml
INTAKE_PATH=/api/v1/webhooks/alertmanager

say() { printf 'webhook_intake: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

# --- arguments and tools -----------------------------------------------------------------------

[[ $DURATION =~ ^[1-9][0-9]*[smh]?$ ]] || die "BENCH_DURATION=\"$DURATION\": expected e.g. 10s"
[[ $CONNECTIONS =~ ^[1-9][0-9]*$ ]] || die "BENCH_CONNECTIONS=\"$CONNECTIONS\": expected a number"
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "BENCH_THREADS=\"$THREADS\": expected a number"
((CONNECTIONS >= THREADS)) || die "BENCH_CONNECTIONS must be at least BENCH_THREADS ($THREADS)"
[[ $SETTLE_TIMEOUT =~ ^[0-9]+$ ]] || die "BENCH_SETTLE_TIMEOUT=\"$SETTLE_TIMEOUT\": expected seconds"
for f in "$PAYLOAD" "$PAYLOAD_TWO_RUNS" "$LUA" "$HOOKS" "$RUNBOOK"; do
    [[ -f $f ]] || die "$f is missing; run from a complete runbookd checkout"
done

need=(wrk webhook sqlite3 curl)
[[ -n ${BENCH_RUNBOOKD:-} ]] || need+=(cmake ninja)
missing=()
for tool in "${need[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    die "missing ${missing[*]}: run scripts/install-deps (Debian packages wrk, webhook, sqlite3, ...)"
fi

# --- processes and temporary files: everything started here is stopped by PID on exit ----------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/runbookd-bench.XXXXXX")
STARTED=()  # PIDs of the servers this script started and has not reaped yet

install_cleanup


cpu_ticks() {  # user + system clock ticks of $1 so far
    local stat
    stat=$(<"/proc/$1/stat") || return 1
    stat=${stat##*) }  # drop "pid (comm) ", comm may hold spaces
    local -a f
    read -r -a f <<<"$stat"
    echo $((f[11] + f[12]))
}

has_children() {
    local c
    c=$(cat /proc/"$1"/task/*/children 2>/dev/null | tr -d ' \n')
    [[ -n $c ]]
}

# wait_idle PID TIMEOUT_S: waits until PID has no child and used under 3% of a core for a whole
# second. Prints the seconds that took, or ">TIMEOUT" if it never went idle.
wait_idle() {
    local pid=$1 timeout=$2 hz start before after now
    hz=$(getconf CLK_TCK)
    start=$(date +%s.%N)
    before=$(cpu_ticks "$pid") || { echo "exited"; return; }
    while :; do
        sleep 1
        after=$(cpu_ticks "$pid") || { echo "exited"; return; }
        now=$(date +%s.%N)
        if ((100 * (after - before) < 3 * hz)) && ! has_children "$pid"; then
            awk -v a="$start" -v b="$now" 'BEGIN { printf "%.0f\n", b - a - 1 }'
            return
        fi
        if awk -v a="$start" -v b="$now" -v t="$timeout" 'BEGIN { exit !(b - a >= t) }'; then
            echo ">$timeout"
            return
        fi
        before=$after
    done
}

status_kib() {  # status_kib PID FIELD: a kB field of /proc/PID/status
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"
}

# run_wrk NAME URL: runs the load with NAME's payload, keeps wrk's report, and loads its BENCH
# line into RES_<NAME>.
run_wrk() {
    local name=$1 url=$2 out="$TMP/wrk-$1.txt" rc=0 payload=$PAYLOAD
    [[ $name == runbookd_two ]] && payload=$PAYLOAD_TWO_RUNS
    say "$name: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency (load average now:" \
        "$(cut -d' ' -f1-3 /proc/loadavg))"
    # In the background and waited for, so that it is in STARTED: whatever ends this script
    # (Ctrl-C, an error) also stops wrk, by PID.
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$LUA" "$url" -- \
        "$ROOT/$payload" >"$out" 2>&1 &
    local wrk_pid=$!
    STARTED+=("$wrk_pid")
    wait "$wrk_pid" || rc=$?
    forget_pid "$wrk_pid"
    local line
    line=$(grep '^BENCH ' "$out" || true)
    if ((rc != 0)) || [[ -z $line ]]; then
        say "wrk failed against $name (exit $rc); its output:"
        cat "$out" >&2
        exit 1
    fi
    local -n res="RES_$name"
    local kv
    for kv in ${line#BENCH }; do
        # shellcheck disable=SC2034  # res refers to RES_<name>
        res[${kv%%=*}]=${kv#*=}
    done
}

# --- build ---------------------------------------------------------------------------------------

if [[ -n ${BENCH_RUNBOOKD:-} ]]; then
    RUNBOOKD=$BENCH_RUNBOOKD
    [[ -x $RUNBOOKD ]] || die "BENCH_RUNBOOKD=$RUNBOOKD is not an executable"
else
    RUNBOOKD=build/release/engine/runbookd
    build_release runbookd
fi
RUNBOOKD_VERSION=$("$RUNBOOKD" --version 2>&1 | head -n 1 || true)
WEBHOOK_VERSION=$(webhook -version 2>&1 || true)
ALERTS_PER_REQUEST=$(grep -o '"fingerprint"' "$PAYLOAD" | wc -l)
FIRING_PER_REQUEST=$(grep -o '"status":"firing","labels"' "$PAYLOAD" | wc -l)
[[ $(grep -o '"fingerprint"' "$PAYLOAD_TWO_RUNS" | wc -l) == "$ALERTS_PER_REQUEST" ]] ||
    die "$PAYLOAD and $PAYLOAD_TWO_RUNS must hold as many alerts"
DB_FS=$(findmnt -n -o FSTYPE -T "$TMP" 2>/dev/null || stat -f -c %T "$TMP")
case $DB_FS in
tmpfs | ramfs) say "warning: $TMP is on $DB_FS, where fsync costs nothing; set TMPDIR to a" \
    "directory on a disk to measure durable intake" ;;
esac

SERVERS=(runbookd runbookd_two)
[[ ${BENCH_INTAKE_ONLY:-0} == 1 ]] && SERVERS+=(runbookd_intake)
SERVERS+=(webhook webhook_wait)
declare -A RES_runbookd=() RES_runbookd_two=() RES_runbookd_intake=() RES_webhook=() RES_webhook_wait=()
declare -A RSS_PEAK=() RSS_IDLE=() SETTLE=() STOPPED=()

# --- runbookd ------------------------------------------------------------------------------------

# bench_runbookd TAG: TAG runbookd has the benchmark runbook; runbookd_intake has it with a
# matcher no alert satisfies, so that it records deliveries and alerts but starts no run.
bench_runbookd() {
    local tag=$1 port pid
    mkdir "$TMP/$tag.runbooks"
    if [[ $tag != runbookd_intake ]]; then
        cp "$RUNBOOK" "$TMP/$tag.runbooks/bench-true.yaml"
    else
        sed 's/alertname="HostHighLoad"/alertname="BenchMatchesNothing"/' "$RUNBOOK" \
            >"$TMP/$tag.runbooks/bench-true.yaml"
    fi
    # webhook's default mode queues commands without bound. runbookd answers 503 overloaded once
    # runs.max_queued runs wait (docs/intake.md, Overload), which this load reaches within a
    # second: right in production, but then the rows would compare refusals with acceptances.
    # The limit is lifted here so that every request is taken, as webhook takes it.
    printf 'runs:\n  max_queued: 10000000\n' >"$TMP/$tag.yaml"
    port=$(free_port)
    say "$tag: starting $RUNBOOKD_VERSION on 127.0.0.1:$port"
    "$RUNBOOKD" --config "$TMP/$tag.yaml" --runbooks "$TMP/$tag.runbooks" --db "$TMP/$tag.db" \
        --listen "127.0.0.1:$port" --log-level warn >"$TMP/$tag.log" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    wait_ready "$pid" "$tag" "http://127.0.0.1:$port/" '"name":"runbookd"' "$TMP/$tag.log"
    RSS_IDLE[$tag]=$(status_kib "$pid" VmRSS)
    run_wrk "$tag" "http://127.0.0.1:$port$INTAKE_PATH"
    if ! is_running "$pid"; then
        say "$tag DIED during the load; its output:"
        tail -n 40 "$TMP/$tag.log" >&2
        local rc=0
        wait "$pid" || rc=$?
        forget_pid "$pid"
        die "$tag exited with status $rc during the load (BENCH_KEEP=1 keeps its database)"
    fi
    say "$tag: waiting up to ${SETTLE_TIMEOUT}s for queued runs to drain"
    SETTLE[$tag]=$(wait_idle "$pid" "$SETTLE_TIMEOUT")
    RSS_PEAK[$tag]=$(status_kib "$pid" VmHWM)
    local forced=""
    stop_pid "$pid" "$tag" 60 || forced=", needed SIGKILL"
    STOPPED[$tag]="stopped by SIGTERM in ${STOP_SECONDS}s, exit status $STOP_RC$forced"
    say "$tag: ${STOPPED[$tag]}"
}

for tag in "${SERVERS[@]}"; do
    if [[ $tag == runbookd* ]]; then
        bench_runbookd "$tag"
    fi
done

# --- adnanh/webhook, one process per mode --------------------------------------------------------

for mode in webhook webhook_wait; do
    hook=bench-true
    [[ $mode == webhook_wait ]] && hook=bench-true-wait
    port=$(free_port)
    say "$mode: starting $WEBHOOK_VERSION on 127.0.0.1:$port, hook $hook"
    webhook -hooks "$HOOKS" -ip 127.0.0.1 -port "$port" >"$TMP/$mode.log" 2>&1 &
    pid=$!
    STARTED+=("$pid")
    wait_ready "$pid" "$mode" "http://127.0.0.1:$port/" '^OK' "$TMP/$mode.log"
    RSS_IDLE[$mode]=$(status_kib "$pid" VmRSS)
    run_wrk "$mode" "http://127.0.0.1:$port/hooks/$hook"
    is_running "$pid" || die "webhook ($mode) died during the load; output: $(tail -n 5 "$TMP/$mode.log")"
    say "$mode: waiting up to ${SETTLE_TIMEOUT}s for its commands to finish"
    SETTLE[$mode]=$(wait_idle "$pid" "$SETTLE_TIMEOUT")
    RSS_PEAK[$mode]=$(status_kib "$pid" VmHWM)
    stop_pid "$pid" "$mode" 30 || true
done

# --- report --------------------------------------------------------------------------------------

ms() { awk -v u="$1" 'BEGIN { printf "%.2f ms", u / 1000 }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
label() {
    case $1 in
    runbookd) echo "runbookd (1 run per request)" ;;
    runbookd_two) echo "runbookd (2 runs per request)" ;;
    runbookd_intake) echo "runbookd intake only (no run)" ;;
    webhook) echo "webhook default (no wait)" ;;
    webhook_wait) echo "webhook wait for command" ;;
    esac
}

echo
echo "Webhook intake benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ)"
echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo);" \
    "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "load: wrk -t$THREADS -c$CONNECTIONS -d$DURATION --latency, each request a new episode of" \
    "the $ALERTS_PER_REQUEST alerts in $PAYLOAD ($FIRING_PER_REQUEST firing);" \
    "the 2-runs row gets $PAYLOAD_TWO_RUNS"
echo "$RUNBOOKD_VERSION (synchronous FULL, database on $DB_FS); $WEBHOOK_VERSION;" \
    "$(wrk -v 2>&1 | head -n 1 | cut -d' ' -f1-2)"
echo
fmt='%-30s %9s %10s %10s %8s %8s %8s %10s %10s %10s\n'
# shellcheck disable=SC2059
printf "$fmt" server "req/s" p50 p99 2xx non-2xx sock-err "idle RSS" "peak RSS" "idle after"
for s in "${SERVERS[@]}"; do
    declare -n r="RES_$s"
    # shellcheck disable=SC2059
    printf "$fmt" "$(label "$s")" "${r[rps]}" "$(ms "${r[p50_us]}")" "$(ms "${r[p99_us]}")" \
        "${r[s2xx]}" "${r[non2xx]}" "${r[sockerr]}" "$(mib "${RSS_IDLE[$s]}")" \
        "$(mib "${RSS_PEAK[$s]}")" "${SETTLE[$s]} s"
    unset -n r
done
echo "(non-2xx: answers with another status; sock-err: wrk connect/read/write errors and timeouts;"
echo " idle after: seconds from the end of the load until the server had no child and used under"
echo " 3% CPU: runbookd works through its queued runs then, webhook through its pending commands)"
echo
R_DEFAULT=$(ratio "${RES_runbookd[rps]}" "${RES_webhook[rps]}")
R_WAIT=$(ratio "${RES_runbookd[rps]}" "${RES_webhook_wait[rps]}")
GOAL=$(awk -v r="$R_DEFAULT" 'BEGIN { print (r + 0 >= 2 ? "MET" : "NOT MET") }')
# req/s counts every answer: with refusals (non-2xx) the comparison says nothing.
if [[ ${RES_runbookd[non2xx]} != 0 || ${RES_webhook[non2xx]} != 0 ]]; then
    GOAL="NOT MEASURED (non-2xx answers; see FAILED below)"
fi
echo "runbookd req/s ÷ webhook default mode req/s:      ${R_DEFAULT}×  (one command per request each)"
echo "runbookd req/s ÷ webhook wait-for-command req/s:  ${R_WAIT}×"
echo "runbookd 2 runs per request ÷ webhook default:    $(ratio "${RES_runbookd_two[rps]}" \
    "${RES_webhook[rps]}")×  (runbookd runs twice the commands)"
if [[ -n ${RES_runbookd_intake[rps]:-} ]]; then
    echo "runbookd intake only ÷ webhook default mode:      $(ratio "${RES_runbookd_intake[rps]}" \
        "${RES_webhook[rps]}")×"
fi
echo "goal: runbookd ≥ 2× webhook (default mode): $GOAL"

# Every 2xx answer promises a committed delivery. Requests wrk had written but whose answer it
# had not read when its time was up may have been committed too, so the check is
# 2xx <= deliveries <= requests written.
failures=()
check_durability() {
    local tag=$1 db="$TMP/$1.db"
    local -n rr="RES_$1"
    local q=(sqlite3 -batch -noheader "$db")
    local deliveries alerts runs states attempts quick
    deliveries=$("${q[@]}" 'SELECT count(*) FROM deliveries')
    alerts=$("${q[@]}" 'SELECT count(*) FROM alerts')
    runs=$("${q[@]}" 'SELECT count(*) FROM runs')
    states=$("${q[@]}" "SELECT coalesce(group_concat(state || '=' || n, ' '), 'none') FROM
                        (SELECT state, count(*) AS n FROM runs GROUP BY state ORDER BY state)")
    attempts=$("${q[@]}" 'SELECT count(*) FROM attempts')
    quick=$("${q[@]}" 'PRAGMA quick_check')
    local s2xx=${rr[s2xx]} sent=${rr[sent]} answered=${rr[responses]}
    local runs_expected=$((FIRING_PER_REQUEST * deliveries))
    [[ $tag == runbookd_two ]] && runs_expected=$alerts
    [[ $tag == runbookd_intake ]] && runs_expected=0
    echo
    echo "$tag durability (${STOPPED[$tag]}):"
    echo "  wrk: $sent requests written, $answered answered, $s2xx 2xx," \
        "$((sent - answered)) unanswered when wrk stopped"
    echo "  sqlite3: deliveries=$deliveries alerts=$alerts runs=$runs ($states)" \
        "attempts=$attempts quick_check=$quick"
    echo "  deliveries - 2xx = $((deliveries - s2xx)) (committed, answer not read before wrk" \
        "stopped); alerts = $ALERTS_PER_REQUEST × deliveries:" \
        "$( ((alerts == ALERTS_PER_REQUEST * deliveries)) && echo yes || echo NO)"
    local f=()
    ((deliveries >= s2xx)) || f+=("$((s2xx - deliveries)) deliveries answered 2xx are MISSING")
    ((deliveries <= sent)) || f+=("more deliveries ($deliveries) than requests written ($sent)")
    ((alerts == ALERTS_PER_REQUEST * deliveries)) ||
        f+=("alerts=$alerts, expected $ALERTS_PER_REQUEST × $deliveries deliveries")
    ((runs == runs_expected)) || f+=("runs=$runs, expected $runs_expected")
    [[ $quick == ok ]] || f+=("PRAGMA quick_check: $quick")
    [[ ${STOPPED[$tag]} == *"exit status 0" ]] || f+=("not a clean stop: ${STOPPED[$tag]}")
    ((rr[non2xx] == 0)) || f+=("${rr[non2xx]} non-2xx answers (3xx=${rr[s3xx]}\
 4xx=${rr[s4xx]} 5xx=${rr[s5xx]} other=${rr[sother]})")
    ((rr[sockerr] == 0)) || f+=("${rr[sockerr]} socket errors (connect=${rr[err_connect]}\
 read=${rr[err_read]} write=${rr[err_write]} timeout=${rr[err_timeout]})")
    if [[ -s $TMP/$tag.log ]]; then
        echo "  $tag log (warn and above): $(wc -l <"$TMP/$tag.log") lines, first ones:"
        head -n 5 "$TMP/$tag.log" | sed 's/^/    /'
    fi
    if ((${#f[@]})); then
        echo "  FAILED:"
        printf '    - %s\n' "${f[@]}"
        failures+=("${f[@]/#/$tag: }")
    else
        local what="its delivery and its $ALERTS_PER_REQUEST alerts"
        [[ $tag == runbookd_intake ]] || what+=" and their runs"
        echo "  PASS: every 2xx answer left $what"
    fi
}
for tag in "${SERVERS[@]}"; do
    if [[ $tag == runbookd* ]]; then
        check_durability "$tag"
    fi
done

if ((${#failures[@]})); then
    echo
    echo "FAILED (${#failures[@]} problems)$([[ $KEEP == 1 ]] || echo "; rerun with BENCH_KEEP=1" \
        "to keep the databases and logs")"
    exit 1
fi
