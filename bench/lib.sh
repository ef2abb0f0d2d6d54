# shellcheck shell=bash
# Shared by the bench/ scripts; sourced, not run. The caller defines say() and die() and sets
# TMP (its temporary directory) before calling these. STARTED holds the PIDs of the processes
# the caller started and has not reaped yet; its EXIT trap stops them with stop_pid.

# A TCP port on 127.0.0.1 that no socket uses now, below the ephemeral range client sockets
# come from. The caller checks that its server answers on it, so a lost race is reported.
free_port() {
    local port hex _
    for _ in $(seq 200); do
        port=$((20000 + RANDOM % 12000))
        hex=$(printf '%04X' "$port")
        if ! awk -v h="$hex" 'FNR > 1 { split($2, a, ":"); if (a[2] == h) f = 1 }
                              END { exit !f }' /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    die "found no free TCP port on 127.0.0.1"
}

# build_release TARGET...: configures the release preset if needed and builds the targets;
# the output goes to $TMP/build.log, whose tail is shown on failure.
build_release() {
    if [[ ! -f build/release/build.ninja ]]; then
        say "configuring the release preset (cmake --preset release)"
        cmake --preset release >"$TMP/build.log" 2>&1 || {
            tail -n 30 "$TMP/build.log" >&2
            die "cmake --preset release failed"
        }
    fi
    say "building $* (cmake --build --preset release --target $*)"
    cmake --build --preset release --target "$@" >>"$TMP/build.log" 2>&1 || {
        tail -n 30 "$TMP/build.log" >&2
        die "building $* failed"
    }
}

is_running() {  # true while $1 exists and is not a zombie waiting to be reaped
    local state
    state=$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null) || return 1
    [[ -n $state && $state != Z ]]
}

forget_pid() {
    local keep=() p
    for p in "${STARTED[@]}"; do
        [[ $p == "$1" ]] || keep+=("$p")
    done
    STARTED=("${keep[@]}")
}

# stop_pid PID NAME TIMEOUT_S: SIGTERM, wait up to TIMEOUT_S, then SIGKILL. Sets STOP_RC (exit
# status, 128+n after a signal) and STOP_SECONDS; returns 1 if SIGKILL was needed.
# shellcheck disable=SC2034  # STOP_RC and STOP_SECONDS are for the caller
stop_pid() {
    local pid=$1 name=$2 timeout=$3 start end forced=0
    start=$(date +%s.%N)
    kill -TERM "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + timeout))
    while is_running "$pid"; do
        if ((SECONDS >= deadline)); then
            say "$name (pid $pid) still running ${timeout}s after SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            forced=1
            break
        fi
        sleep 0.05
    done
    STOP_RC=0
    wait "$pid" 2>/dev/null || STOP_RC=$?
    end=$(date +%s.%N)
    STOP_SECONDS=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.2f", b - a }')
    forget_pid "$pid"
    return "$forced"
}

# wait_ready PID NAME URL PATTERN LOG: polls URL until its body matches PATTERN (10 s at most).
wait_ready() {
    local pid=$1 name=$2 url=$3 pattern=$4 log=$5 _
    for _ in $(seq 100); do
        if ! is_running "$pid"; then
            say "$name exited before answering; its output:"
            tail -n 20 "$log" >&2
            exit 1
        fi
        if curl -s --max-time 1 "$url" 2>/dev/null | grep -q "$pattern"; then
            return
        fi
        sleep 0.1
    done
    say "$name did not answer $url within 10 s; its output:"
    tail -n 20 "$log" >&2
    exit 1
}

# install_cleanup: on exit, also after Ctrl-C or SIGTERM, stops every PID still in STARTED,
# runs the command in ON_EXIT if the caller set one, and removes $TMP unless KEEP=1.
install_cleanup() {
    trap bench_cleanup EXIT
    trap 'say "interrupted"; exit 130' INT
    trap 'say "terminated"; exit 143' TERM
}

bench_cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${STARTED[@]}"; do
        stop_pid "$pid" "pid $pid" 10 || true
    done
    if [[ -n ${ON_EXIT:-} ]]; then
        "$ON_EXIT" || true
    fi
    if [[ ${KEEP:-0} == 1 ]]; then
        say "kept $TMP"
    else
        rm -rf -- "$TMP"
    fi
    exit "$rc"
}
