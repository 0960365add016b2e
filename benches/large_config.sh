#!/usr/bin/env bash
# Cost of a large config: `check` time, start-up time, RSS, reload time and
# /metrics scrape time of grayproxy with N routes (prefix routes mixed with
# host routes, as tests/large_config.rs generates them).
#
#   benches/large_config.sh                       # N = 1,000 and 10,000
#   ROUTES="10000" GRAYPROXY_BIN=/path/to/grayproxy benches/large_config.sh
#
# Uses target/quick-release/grayproxy unless GRAYPROXY_BIN is set (build it
# with `cargo build --profile quick-release`). Ports PORT_BASE and
# PORT_BASE+1 (default 48080). Bounded: about 30 s per N on a loaded 2-core
# machine. Prints one block per N.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${GRAYPROXY_BIN:-$HERE/../target/quick-release/grayproxy}
ROUTES=${ROUTES:-"1000 10000"}
PORT_BASE=${PORT_BASE:-48080}
WORK=$(mktemp -d)
PID=
cleanup() {
    if [[ -n "$PID" ]]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    [[ -n "${KEEP:-}" ]] || rm -rf "$WORK"
}
trap cleanup EXIT

# gen N FILE: the config with N routes.
gen() {
    awk -v n="$1" -v proxy="$PORT_BASE" -v admin="$((PORT_BASE + 1))" -v dir="$WORK/state" 'BEGIN {
        printf "[server]\nlisten = \"127.0.0.1:%d\"\n[admin]\nlisten = \"127.0.0.1:%d\"\n", proxy, admin
        printf "[state]\ndir = \"%s\"\n", dir
        printf "[upstreams.v1]\nendpoints = [\"127.0.0.1:9\"]\n[upstreams.v2]\nendpoints = [\"127.0.0.1:9\"]\n"
        for (i = 0; i < n; i++) {
            if (i % 2 == 0) m = sprintf("{ path_prefix = \"/svc/%d/\" }", i)
            else m = sprintf("{ host = \"h%d.example\", path_prefix = \"/api\" }", i)
            printf "[[routes]]\nname = \"r%d\"\nmatch = %s\nstable = \"v1\"\ncanary = \"v2\"\n", i, m
            printf "canary_weight = 5.0\nsticky = \"header:x-user-id\"\n"
            printf "[[routes.rules]]\nwhen = { header = \"x-canary\", equals = \"always\" }\nto = \"canary\"\n"
        }
    }' >"$2"
}

now() { date +%s.%N; }
since() { echo "$(now) - $1" | bc; }
rss() { awk '/VmRSS/ { print $2 " KiB" }' "/proc/$PID/status"; }

for n in $ROUTES; do
    cfg=$WORK/routes-$n.toml
    gen "$n" "$cfg"
    echo "== $n routes ($(wc -c <"$cfg") bytes)"
    /usr/bin/time -f "check: %e s wall, %U s user, %M KiB max RSS" "$BIN" check --config "$cfg" >/dev/null
    log=$WORK/run-$n.log
    t0=$(now)
    "$BIN" run --config "$cfg" >"$log" 2>&1 &
    PID=$!
    for _ in $(seq 1 3000); do grep -qs "grayproxy listening" "$log" && break; sleep 0.01; done
    echo "start-up (to listening): $(since "$t0") s"
    sleep 1
    echo "RSS after start: $(rss)"
    curl -s -o /dev/null -w "request to the last route: %{time_total} s (502: no backend)\n" \
        -H "host: h$((n - 1)).example" "http://127.0.0.1:$PORT_BASE/api/x"
    sed -i 's/canary_weight = 5.0/canary_weight = 6.0/' "$cfg"
    t0=$(now)
    kill -HUP "$PID"
    for _ in $(seq 1 3000); do grep -qs "config reloaded" "$log" && break; sleep 0.01; done
    echo "reload (SIGHUP to applied): $(since "$t0") s"
    sleep 1
    echo "RSS after reload: $(rss)"
    for _ in 1 2 3; do
        curl -s -o /dev/null -w "/metrics: %{time_total} s, %{size_download} bytes\n" \
            "http://127.0.0.1:$((PORT_BASE + 1))/metrics"
    done
    kill "$PID"; wait "$PID" 2>/dev/null || true
    PID=
done
