#!/usr/bin/env bash
# Exec steps benchmark: runbookd's process runner against a raw posix_spawn + waitpid loop,
# side by side on this machine in one run.
#
#   bench/exec_steps.sh                             # from the repository root
#   BENCH_STEPS=20000 BENCH_ROUNDS=5 bench/exec_steps.sh
#
# Every row is one run of build/release/bench/exec_steps_bench (bench/exec_steps.cpp), a
# process of its own that starts BENCH_STEPS short steps (/bin/true), one after the other or
# C at a time, and prints one BENCH line:
#   raw-pipes   posix_spawn + waitpid, stdout and stderr on pipes read to their end, stdin on
#               /dev/null, own process group, default signals: what the runner does per step,
#               without the runner. The goal's reference.
#   raw-null    posix_spawn + waitpid with stdin, stdout and stderr on /dev/null (the least a
#               spawn can cost).
#   runner C=1  exec::ProcessRunner, one step in flight, the next started from the previous
#               one's completion: the like-for-like row for the goal.
#   runner C=8  the same with 8 steps in flight.
# Each of these runs as is and with BENCH_BALLAST_MIB MiB allocated and touched in the
# benchmark process first, in BENCH_ROUNDS interleaved rounds; the table shows medians.
# Then, for contrast and not part of the goal, plain fork + exec + waitpid without and with
# the ballast (BENCH_FORK_STEPS steps), and BENCH_CONCURRENT `sleep 2` steps at once through
# one runner, sampling its threads and RSS while they all run. Last, end to end through the
# real daemon (release runbookd on 127.0.0.1, its database in the temporary directory): one
# POSTed alert starts a runbook of BENCH_DAEMON_STEPS `/bin/true` steps, and steps/s comes
# from the attempts' timestamps in SQLite; it includes the audit's writes for every step.
#
# Environment:
#   BENCH_STEPS         steps per row (default 5000)
#   BENCH_ROUNDS        rounds of the raw and runner rows, interleaved (default 3)
#   BENCH_BALLAST_MIB   MiB the big-parent rows allocate and touch first (default 256)
#   BENCH_FORK_STEPS    steps of the fork contrast rows (default 300; each costs ms with ballast)
#   BENCH_CONCURRENT    steps running at once in the concurrent row (default 1000)
#   BENCH_DAEMON_STEPS  steps of the end-to-end daemon row (default 200; 0 skips the row)
#   BENCH_BINARY        use this exec_steps_bench instead of building the release preset
#   TMPDIR              where the temporary directory goes
#
# Exit status: 0 when every row ran and all its steps exited 0, 1 otherwise. A missed goal is
# reported, not an error.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=bench/lib.sh
source bench/lib.sh

STEPS=${BENCH_STEPS:-5000}
ROUNDS=${BENCH_ROUNDS:-3}
BALLAST=${BENCH_BALLAST_MIB:-256}
FORK_STEPS=${BENCH_FORK_STEPS:-300}
CONCURRENT=${BENCH_CONCURRENT:-1000}
DAEMON_STEPS=${BENCH_DAEMON_STEPS:-200}
PAYLOAD=tests/fixtures/alertmanager/v4-one-resolved-one-firing.json  # one firing HostHighLoad
GOAL_PERCENT=85

say() { printf 'exec_steps: %s\n' "$*" >&2; }
die() {
    say "error: $*"
    exit 1
}

for v in STEPS ROUNDS BALLAST FORK_STEPS CONCURRENT; do
    [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v=\"${!v}\": expected a positive number"
done
[[ $DAEMON_STEPS =~ ^[0-9]+$ ]] || die "BENCH_DAEMON_STEPS=\"$DAEMON_STEPS\": expected a number"
[[ -x /bin/true && -x /bin/sleep ]] || die "/bin/true and /bin/sleep are needed"
need=()
[[ -n ${BENCH_BINARY:-} ]] || need+=(cmake ninja)
((DAEMON_STEPS == 0)) || need+=(curl sqlite3)
for tool in "${need[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || die "missing $tool: run scripts/install-deps"
done
((DAEMON_STEPS == 0)) || [[ -f $PAYLOAD ]] || die "$PAYLOAD is missing"

# --- processes and temporary files: the one benchmark process running is stopped by PID -------

TMP=$(mktemp -d "${TMPDIR:-/tmp}/runbookd-exec-bench.XXXXXX")
CURRENT=""  # PID of the exec_steps_bench or runbookd running now

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    if [[ -n $CURRENT ]]; then
        kill -TERM "$CURRENT" 2>/dev/null || true
        wait "$CURRENT" 2>/dev/null || true
    fi
    rm -rf -- "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT
trap 'say "terminated"; exit 143' TERM

# --- build ---------------------------------------------------------------------------------------

RUNBOOKD=build/release/engine/runbookd
TARGETS=(exec_steps_bench)
((DAEMON_STEPS == 0)) || TARGETS+=(runbookd)
if [[ -n ${BENCH_BINARY:-} ]]; then
    BIN=$BENCH_BINARY
    [[ -x $BIN ]] || die "BENCH_BINARY=$BIN is not an executable"
    TARGETS=(runbookd)
fi
if [[ -z ${BENCH_BINARY:-} ]] || ((DAEMON_STEPS > 0)); then
    BIN=${BIN:-build/release/bench/exec_steps_bench}
    build_release "${TARGETS[@]}"
fi

# --- rows ----------------------------------------------------------------------------------------

RESULTS=$TMP/results.txt  # one line per run: "TAG key=value ..."
: >"$RESULTS"

# run_row TAG ARGS...: runs the benchmark program once and appends its BENCH line under TAG.
run_row() {
    local tag=$1 out="$TMP/row.out" rc=0
    shift
    say "$tag: exec_steps_bench $* (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    "$BIN" "$@" >"$out" 2>"$TMP/row.err" &
    CURRENT=$!
    wait "$CURRENT" || rc=$?
    CURRENT=""
    local line
    line=$(grep '^BENCH ' "$out" || true)
    if ((rc != 0)) || [[ -z $line ]]; then
        cat "$TMP/row.err" >&2
        die "$tag failed (exit status $rc)"
    fi
    echo "$tag ${line#BENCH }" >>"$RESULTS"
}

# Interleaved, so that a noisy moment on the shared machine hits every row about equally.
for round in $(seq "$ROUNDS"); do
    for mib in 0 "$BALLAST"; do
        b=""
        ((mib == 0)) || b="_ballast"
        run_row "raw_pipes$b" --mode raw-pipes --steps "$STEPS" --ballast-mib "$mib"
        run_row "runner_c1$b" --mode runner --steps "$STEPS" --concurrency 1 --ballast-mib "$mib"
        run_row "raw_null$b" --mode raw-null --steps "$STEPS" --ballast-mib "$mib"
        run_row "runner_c8$b" --mode runner --steps "$STEPS" --concurrency 8 --ballast-mib "$mib"
    done
    say "round $round of $ROUNDS done"
done
run_row fork --mode fork --steps "$FORK_STEPS" --ballast-mib 0
run_row fork_ballast --mode fork --steps "$FORK_STEPS" --ballast-mib "$BALLAST"
run_row concurrent --mode concurrent --concurrency "$CONCURRENT" --sleep-s 2


# The daemon row: one run of DAEMON_STEPS `/bin/true` steps, timed from the attempts' rows.
run_daemon_row() {
    local dir="$TMP/daemon" port url db q state="" _
    mkdir -p "$dir/runbooks"
    {
        echo "name: bench-steps"
        echo "description: Benchmark runbook, $DAEMON_STEPS steps that run /bin/true"
        echo "matchers:"
        echo "  - alertname=\"HostHighLoad\""
        echo "on: [firing]"
        echo "steps:"
        for i in $(seq "$DAEMON_STEPS"); do
            printf '  - name: s%d\n    argv: [/bin/true]\n' "$i"
        done
    } >"$dir/runbooks/bench-steps.yaml"
    port=$(free_port)
    url="http://127.0.0.1:$port"
    db="$dir/runbookd.db"
    say "daemon: runbookd on 127.0.0.1:$port, one alert, $DAEMON_STEPS steps (load average" \
        "$(cut -d' ' -f1-3 /proc/loadavg))"
    "$RUNBOOKD" --runbooks "$dir/runbooks" --db "$db" --listen "127.0.0.1:$port" \
        --log-level warn >"$dir/runbookd.log" 2>&1 &
    CURRENT=$!
    for _ in $(seq 100); do
        curl -s --max-time 1 "$url/" 2>/dev/null | grep -q '"name":"runbookd"' && break
        kill -0 "$CURRENT" 2>/dev/null || die "runbookd exited: $(tail -n 5 "$dir/runbookd.log")"
        sleep 0.1
    done
    curl -sf --max-time 5 -H 'Content-Type: application/json' --data-binary "@$PAYLOAD" \
        "$url/api/v1/webhooks/alertmanager" >/dev/null || die "runbookd did not accept the alert"
    q=(sqlite3 -batch -noheader "$db")
    for _ in $(seq 600); do
        state=$("${q[@]}" "SELECT coalesce(group_concat(state), '') FROM runs" 2>/dev/null || true)
        [[ $state == succeeded || $state == failed || $state == cancelled ]] && break
        sleep 0.1
    done
    kill -TERM "$CURRENT" 2>/dev/null || true
    wait "$CURRENT" 2>/dev/null || true
    CURRENT=""
    [[ $state == succeeded ]] || die "the daemon's run did not succeed within 60 s (state: $state)"
    "${q[@]}" "SELECT count(*),
                      sum(state = 'succeeded'),
                      (julianday(max(finished_at)) - julianday(min(started_at))) * 86400.0,
                      avg(duration_ms)
               FROM attempts" | tr '|' ' ' >"$TMP/daemon.txt"
    local attempts ok seconds
    read -r attempts ok seconds _ <"$TMP/daemon.txt"
    ((attempts == DAEMON_STEPS && ok == DAEMON_STEPS)) ||
        die "daemon: $attempts attempts, $ok succeeded, expected $DAEMON_STEPS"
    echo "daemon steps=$attempts seconds=$seconds steps_per_s=$(awk -v n="$attempts" \
        -v s="$seconds" 'BEGIN { printf "%.1f", (s > 0 ? n / s : 0) }')" >>"$RESULTS"
}
((DAEMON_STEPS == 0)) || run_daemon_row

# --- report --------------------------------------------------------------------------------------

# get TAG KEY: the median of KEY over TAG's runs.
get() {
    awk -v tag="$1" -v key="$2" '
        $1 == tag { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) v[n++] = kv[2] } }
        END {
            if (n == 0) { print "n/a"; exit }
            for (i = 0; i < n; i++) for (j = i + 1; j < n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
            print (n % 2) ? v[int(n / 2)] : (v[n / 2 - 1] + v[n / 2]) / 2
        }' "$RESULTS"
}
# all TAG KEY: every run's KEY, comma-separated, in run order.
all() {
    awk -v tag="$1" -v key="$2" '
        $1 == tag { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) s = s (s == "" ? "" : ",") kv[2] } }
        END { print s }' "$RESULTS"
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else print "n/a" }'; }
pct() { awk -v r="$1" 'BEGIN { printf "%.1f%%", 100 * r }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }'; }
label() {
    case $1 in
    raw_pipes*) echo "raw posix_spawn, pipes" ;;
    raw_null*) echo "raw posix_spawn, /dev/null" ;;
    runner_c1*) echo "ProcessRunner C=1" ;;
    runner_c8*) echo "ProcessRunner C=8" ;;
    fork*) echo "fork+exec (contrast)" ;;
    esac
}

echo
echo "Exec steps benchmark, $(date -u +%Y-%m-%dT%H:%M:%SZ), commit" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null ||
        echo ' (with local changes)')"
echo "machine: $(nproc) cores, $(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)," \
    "kernel $(uname -r); load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "steps: /bin/true, $STEPS per row, medians of $ROUNDS interleaved rounds; ballast" \
    "$BALLAST MiB; fork rows $FORK_STEPS steps, 1 round"
echo
fmt='%-28s %8s %9s %20s %7s %7s %10s %10s %10s\n'
# shellcheck disable=SC2059
printf "$fmt" row ballast "steps/s" "steps/s per round" "p50 µs" "p99 µs" "CPU µs" "child CPU" "RSS"
for tag in raw_pipes runner_c1 raw_null runner_c8 raw_pipes_ballast runner_c1_ballast \
    raw_null_ballast runner_c8_ballast fork fork_ballast; do
    b="0"
    [[ $tag == *_ballast ]] && b="$BALLAST MiB"
    # shellcheck disable=SC2059
    printf "$fmt" "$(label "$tag")" "$b" "$(get "$tag" steps_per_s)" "$(all "$tag" steps_per_s)" \
        "$(get "$tag" p50_us)" "$(get "$tag" p99_us)" "$(get "$tag" self_cpu_us_per_step)" \
        "$(get "$tag" child_cpu_us_per_step)" "$(mib "$(get "$tag" vmrss_kib)")"
done
echo "(p50/p99: dispatch latency, from the step being ready to its exec: for the runner"
echo " ProcessResult::dispatch_latency, for raw from before the pipes to posix_spawn's return,"
echo " for fork until fork returned in the parent; CPU µs: the benchmark process's own user +"
echo " system CPU per step, child CPU: the steps' own, per step; RSS: the benchmark process)"
echo
if ((DAEMON_STEPS > 0)); then
    echo "daemon end to end (includes the audit's writes per step): $(get daemon steps) steps of" \
        "one run in $(awk -v s="$(get daemon seconds)" 'BEGIN { printf "%.3f", s }') s" \
        "(first attempt started to last finished) = $(get daemon steps_per_s) steps/s," \
        "$(pct "$(ratio "$(get daemon steps_per_s)" "$(get raw_pipes steps_per_s)")") of raw (pipes)"
fi
echo "concurrent: $(get concurrent steps) × sleep 2 through one ProcessRunner:" \
    "all started in $(get concurrent all_started_s) s, all done in $(get concurrent all_done_s) s;" \
    "while $(get concurrent peak_running) ran: $(get concurrent threads) threads," \
    "$(get concurrent fds) open descriptors (RLIMIT_NOFILE $(get concurrent nofile))," \
    "VmRSS $(mib "$(get concurrent vmrss_kib)"), VmHWM $(mib "$(get concurrent vmhwm_kib)");" \
    "dispatch p50 $(get concurrent p50_us) µs, p99 $(get concurrent p99_us) µs"
echo

R_C1=$(ratio "$(get runner_c1 steps_per_s)" "$(get raw_pipes steps_per_s)")
R_C1_B=$(ratio "$(get runner_c1_ballast steps_per_s)" "$(get raw_pipes_ballast steps_per_s)")
echo "runner C=1 ÷ raw (pipes), no ballast:          $(pct "$R_C1")   (the goal)"
echo "runner C=1 ÷ raw (pipes), $BALLAST MiB ballast:     $(pct "$R_C1_B")   (the goal)"
echo "runner C=1 ÷ raw (/dev/null), no ballast:      $(pct "$(ratio "$(get runner_c1 steps_per_s)" \
    "$(get raw_null steps_per_s)")")"
echo "runner C=8 ÷ raw (pipes), no ballast:          $(pct "$(ratio "$(get runner_c8 steps_per_s)" \
    "$(get raw_pipes steps_per_s)")")"
R_RUNNER_B=$(ratio "$(get runner_c1_ballast steps_per_s)" "$(get runner_c1 steps_per_s)")
echo "runner C=1 with ballast ÷ without:             $(pct "$R_RUNNER_B")"
echo "runner C=8 with ballast ÷ without:             $(pct "$(ratio \
    "$(get runner_c8_ballast steps_per_s)" "$(get runner_c8 steps_per_s)")")"
echo "raw (pipes) with ballast ÷ without:            $(pct "$(ratio \
    "$(get raw_pipes_ballast steps_per_s)" "$(get raw_pipes steps_per_s)")")"
echo "fork with ballast ÷ without (contrast):        $(pct "$(ratio \
    "$(get fork_ballast steps_per_s)" "$(get fork steps_per_s)")")"
echo "runner C=1 ÷ fork, both with ballast:          $(ratio "$(get runner_c1_ballast steps_per_s)" \
    "$(get fork_ballast steps_per_s)")×"
MET=$(awk -v a="$R_C1" -v b="$R_C1_B" -v g="$GOAL_PERCENT" \
    'BEGIN { print (100 * a >= g && 100 * b >= g) ? "MET" : "NOT MET" }')
FLAT=$(awk -v r="$R_RUNNER_B" 'BEGIN { print (r >= 0.9) ? "yes" : "NO" }')
echo "goal runner ≥ $GOAL_PERCENT% of raw: $MET (no ballast $(pct "$R_C1"), ballast $(pct "$R_C1_B"))"
echo "spawn cost flat with runbookd's memory (runner with ballast ≥ 90% of without): $FLAT"
