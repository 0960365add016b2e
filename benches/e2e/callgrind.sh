#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: a noise-free
# before/after for optimisations on a busy machine (wall-clock is not).
#
#   benches/e2e/callgrind.sh [BINARY]     # default target/release/grayproxy
#   BARE=1 benches/e2e/callgrind.sh [BINARY]  # the floor: examples/bare_hyper_proxy
#                                         # (default target/release/examples/…)
#   CG_OUT=/tmp/x.cg ...                  # keep the dump (for callgrind_annotate)
#   CONFIG_IN=benches/e2e/grayproxy-plain.toml.in ...  # another config template
#                                         # (plain: no sticky key, rules or arm header)
#
# Starts the run.sh backends and grayproxy (same config) under
# valgrind --tool=callgrind, warms up, zeroes the counters, sends a fixed
# load with wrk for $SECONDS_LOAD seconds, dumps, and prints
# instructions / request and the top functions (inclusive).
# Needs nginx, wrk, valgrind (apt-get install -y valgrind).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BARE=${BARE:-}
if [[ -n "$BARE" ]]; then
    BIN=${1:-$ROOT/target/release/examples/bare_hyper_proxy}
else
    BIN=${1:-$ROOT/target/release/grayproxy}
fi
[[ -x "$BIN" ]] || { echo "no binary at $BIN" >&2; exit 1; }
SECONDS_LOAD=${SECONDS_LOAD:-10}
CONNS=${CONNS:-8}
PORT_BASE=${PORT_BASE:-28280}
WORK=$(mktemp -d /tmp/grayproxy-callgrind.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    [[ -n "${KEEP:-}" ]] && echo "kept $WORK" >&2 || rm -rf "$WORK"
}
trap cleanup EXIT

PORT_STABLE=$PORT_BASE PORT_CANARY=$((PORT_BASE + 1)) PORT_GRAY=$((PORT_BASE + 3)) PORT_ADMIN=$((PORT_BASE + 4))
BODY='{"ok":true}'
mkdir -p "$WORK/tmp" "$WORK/state"
CONFIG_IN=${CONFIG_IN:-$HERE/grayproxy.toml.in}
for f in backends.conf grayproxy.toml; do
    src="$HERE/$f.in"
    [[ $f == grayproxy.toml ]] && src=$CONFIG_IN
    sed -e "s#@DIR@#$WORK#g" -e "s#@PORT_STABLE@#$PORT_STABLE#g" -e "s#@PORT_CANARY@#$PORT_CANARY#g" \
        -e "s#@PORT_GRAY@#$PORT_GRAY#g" -e "s#@PORT_ADMIN@#$PORT_ADMIN#g" \
        -e "s#@BODY_STABLE@#$BODY#g" -e "s#@BODY_CANARY@#$BODY#g" "$src" >"$WORK/$f"
done
nginx -c "$WORK/backends.conf" -p "$WORK" -e "$WORK/backends-error.log" &
PIDS+=($!)
if [[ -n "$BARE" ]]; then # same port, same backends, its own 90/10 pick
    CMD=("$BIN" "127.0.0.1:$PORT_GRAY" "127.0.0.1:$PORT_STABLE" "127.0.0.1:$PORT_CANARY")
else
    CMD=("$BIN" run --config "$WORK/grayproxy.toml")
fi
RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.out" \
    "${CMD[@]}" 2>"$WORK/valgrind.log" &
VG=$!
PIDS+=("$VG")
ready=
for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "http://127.0.0.1:$PORT_GRAY/api/recommend" 2>/dev/null && { ready=1; break; }
    sleep 0.1
done
if [[ -z "$ready" ]]; then
    echo "the proxy under valgrind did not answer in 30 s; valgrind.log:" >&2
    tail -n 20 "$WORK/valgrind.log" >&2
    exit 1
fi
wrk -t1 -c"$CONNS" -d3s -s "$HERE/users.lua" "http://127.0.0.1:$PORT_GRAY/api/recommend" >/dev/null
callgrind_control -z "$VG" >/dev/null
out=$(wrk -t1 -c"$CONNS" -d"${SECONDS_LOAD}s" -s "$HERE/users.lua" "http://127.0.0.1:$PORT_GRAY/api/recommend")
callgrind_control -d "$VG" >/dev/null
requests=$(awk '/requests in/ {print $1}' <<<"$out")
[[ "${requests:-0}" -gt 0 ]] || { echo "no requests completed: $out" >&2; exit 1; }
sleep 1
dump=$(ls -t "$WORK"/cg.out* | grep -v '^'"$WORK/cg.out"'$' | head -1)
total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
[[ -n "${CG_OUT:-}" ]] && cp "$dump" "$CG_OUT"
echo "requests: $requests  instructions: $total  per request: $((total / requests))"
if [[ -n "${TOP:-}" ]]; then
    callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | head -n "$((TOP + 25))"
    callgrind_annotate "$dump" 2>/dev/null | head -n "$((TOP + 25))"
fi
