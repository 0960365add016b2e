#!/usr/bin/env bash
# Cost of a large config: `check` time, start-up time, RSS, reload time and
# /metrics scrape time of grayproxy with N routes (prefix routes mixed with
# host routes, as tests/large_config.rs generates them), and the latency of
# requests served while such a file is reloaded.
#
#   benches/large_config.sh                       # N = 1,000 and 10,000
#   ROUTES="10000" GRAYPROXY_BIN=/path/to/grayproxy benches/large_config.sh
#
# Uses target/quick-release/grayproxy unless GRAYPROXY_BIN is set (build it
# with `cargo build --profile quick-release`). grayproxy runs with
# `workers = 1` (one thread serves everything: the case where a reload that
# blocked the runtime would stall every request). Ports PORT_BASE to
# PORT_BASE+2 (default 28480: below the kernel's ephemeral range, 32768 and
# up, where a client socket of an earlier benchmark could hold the port).
#
# Reload under load (needs oha and nginx; skipped without them): nginx on
# PORT_BASE+2 answers every route; oha sends RATE requests a second
# (default 500, fixed rate, latency corrected for coordinated omission) to
# the last route for LOAD_S seconds (default 4), once without a reload and
# once with a SIGHUP (a changed file) one second in; printed: max, p99.9 and
# p99 latency of both runs and SIGHUP to "config reloaded".
#
# Bounded: about a minute per N on a loaded 2-core machine. Prints one
# block per N.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${GRAYPROXY_BIN:-$HERE/../target/quick-release/grayproxy}
ROUTES=${ROUTES:-"1000 10000"}
PORT_BASE=${PORT_BASE:-28480}
RATE=${RATE:-500}
LOAD_S=${LOAD_S:-4}
WORK=$(mktemp -d)
BACKEND=127.0.0.1:9
PID=
NGINX=
cleanup() {
    if [[ -n "$PID" ]]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    if [[ -n "$NGINX" ]]; then kill "$NGINX" 2>/dev/null || true; wait "$NGINX" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# gen N FILE: the config with N routes.
gen() {
    awk -v n="$1" -v proxy="$PORT_BASE" -v admin="$((PORT_BASE + 1))" -v dir="$WORK/state" -v be="$BACKEND" 'BEGIN {
        printf "[server]\nlisten = \"127.0.0.1:%d\"\nworkers = 1\n", proxy
        printf "[admin]\nlisten = \"127.0.0.1:%d\"\n", admin
        printf "[state]\ndir = \"%s\"\n", dir
        printf "[upstreams.v1]\nendpoints = [\"%s\"]\n[upstreams.v2]\nendpoints = [\"%s\"]\n", be, be
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
# cpu: the proxy's user + system CPU time so far, in seconds.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ print ($14 + $15) / hz }' "/proc/$PID/stat"; }
# wait_log FILE TEXT [AFTER_LINE]: until TEXT appears after line AFTER_LINE (≤ 30 s).
wait_log() {
    for _ in $(seq 1 3000); do tail -n "+$((${3:-0} + 1))" "$1" | grep -qs "$2" && return 0; sleep 0.01; done
    echo "timed out waiting for '$2' in $1" >&2
    return 1
}

# oha_run NAME HOST PATH: fixed-rate load on the proxy, JSON summary in $WORK/NAME.json.
oha_run() {
    oha --no-tui --output-format json -q "$RATE" --latency-correction -z "${LOAD_S}s" -c 8 \
        -H "host: $2" "http://127.0.0.1:$PORT_BASE$3" >"$WORK/$1.json" 2>/dev/null
}
# latency NAME: "max X ms, p99.9 Y ms, p99 Z ms (N answers, M failed)" of an oha run.
latency() {
    python3 - "$WORK/$1.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
p = r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
n = sum(codes.values())
# oha cuts the requests still running when its time is up: not failures.
errors = {k: v for k, v in r.get("errorDistribution", {}).items() if "deadline" not in k}
bad = n - codes.get("200", 0) + sum(errors.values())
print(f"max {r['summary']['slowest'] * 1000:.1f} ms, p99.9 {p['p99.9'] * 1000:.2f} ms, "
      f"p99 {p['p99'] * 1000:.2f} ms ({n} answers, {bad} failed{' ' + str(errors) if errors else ''})")
EOF
}

if command -v nginx >/dev/null && command -v oha >/dev/null; then
    BACKEND=127.0.0.1:$((PORT_BASE + 2))
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    server { listen $BACKEND; location / { return 200 "ok\n"; } }
}
EOF
    nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
    NGINX=$!
fi

mkdir -p "$WORK/etc"
for n in $ROUTES; do
    # The config alone in its directory: the proxy watches it, and its log
    # lines must not count as edits.
    cfg=$WORK/etc/routes-$n.toml
    gen "$n" "$cfg"
    echo "== $n routes ($(wc -c <"$cfg") bytes)"
    /usr/bin/time -f "check: %e s wall, %U s user + %S s sys CPU, %M KiB max RSS" \
        "$BIN" check --config "$cfg" >/dev/null
    log=$WORK/run-$n.log
    t0=$(now)
    "$BIN" run --config "$cfg" >"$log" 2>&1 &
    PID=$!
    wait_log "$log" "grayproxy listening"
    echo "start-up (to listening): $(since "$t0") s"
    sleep 1
    echo "RSS after start: $(rss)"
    host=h$((n - 1)).example
    curl -s -o /dev/null -w "request to the last route: %{time_total} s (HTTP %{http_code})\n" \
        -H "host: $host" "http://127.0.0.1:$PORT_BASE/api/x"
    sed -i 's/canary_weight = 5.0/canary_weight = 6.0/' "$cfg"
    lines=$(wc -l <"$log")
    c0=$(cpu)
    t0=$(now)
    kill -HUP "$PID"
    wait_log "$log" "config reloaded" "$lines"
    echo "reload (SIGHUP to applied): $(since "$t0") s wall, $(echo "$(cpu) - $c0" | bc) s CPU (the proxy idle otherwise)"
    sleep 1
    echo "RSS after reload: $(rss) (1 s after), $(sleep 2; rss) (3 s after)"
    if [[ -n "$NGINX" ]]; then
        oha_run "steady-$n" "$host" /api/x
        echo "requests at $RATE/s for ${LOAD_S} s, no reload:     $(latency "steady-$n")"
        sed -i 's/canary_weight = 6.0/canary_weight = 7.0/' "$cfg"
        oha_run "reload-$n" "$host" /api/x &
        load=$!
        sleep 1
        lines=$(wc -l <"$log")
        t0=$(now)
        kill -HUP "$PID"
        wait_log "$log" "config reloaded" "$lines"
        applied=$(since "$t0")
        wait "$load"
        echo "requests at $RATE/s for ${LOAD_S} s, SIGHUP at 1 s: $(latency "reload-$n")"
        echo "  (that reload: SIGHUP to applied $applied s)"
    fi
    for _ in 1 2 3; do
        curl -s -o /dev/null -w "/metrics: %{time_total} s, %{size_download} bytes\n" \
            "http://127.0.0.1:$((PORT_BASE + 1))/metrics"
    done
    kill "$PID"; wait "$PID" 2>/dev/null || true
    PID=
done
