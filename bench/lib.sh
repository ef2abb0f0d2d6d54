# Shared by the bench/ scripts; sourced, not run. The caller defines say() and die() and sets
# TMP (its temporary directory) before calling these.

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
