#!/usr/bin/env bash
# What shadow traffic costs the user: p99 at a fixed rate with every
# request mirrored to the canary (shadow at 100 %) against the same proxy
# and backends without shadow, in the same run, interleaved rounds.
#
#   benches/e2e/shadow_p99.sh                      # 6 rounds of 10 s per side
#   ROUNDS=8 DURATION=15 RATE=2000 benches/e2e/shadow_p99.sh
#   GRAYPROXY_BIN=… SHADOW_LOAD_BIN=… benches/e2e/shadow_p99.sh   # prebuilt, no build
#
# What it does (loopback only; everything it starts it stops, by PID):
#   * builds grayproxy and examples/shadow_load (profile quick-release);
#   * starts two `shadow_load backend`s (a 2.7 KB 20-item JSON answer; the
#     canary's list moved by two places, so every pair has differences to
#     find) and the load generator on CPU $LOAD_CPU, grayproxy (workers = 1)
#     on CPU $PROXY_CPU, with two routes to the same backends: `/api/recommend`
#     without shadow, `/on` with `[routes.shadow] percent = 100` (ranked-list
#     comparison at k = 10, noise floor at the default 10 %);
#   * per round, both routes (the order alternates between rounds): an
#     open-loop run at $RATE req/s over $CONNS connections (latency counted
#     from when each request was due: no coordinated omission);
#   * prints each round, then medians with min–max and the ratio on/off,
#     and the shadow report (mirrored, compared, skipped) as a check that
#     the mirroring really ran at 100 %.
# Needs 2 CPUs. About ROUNDS * 2 * (DURATION + 1) s after the build.
set -euo pipefail

ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-10}
RATE=${RATE:-2000}
CONNS=${CONNS:-16}
PORT_BASE=${PORT_BASE:-28280}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d /tmp/grayproxy-shadow-p99.XXXXXX)
LOG_TAG=shadow-p99
# shellcheck source=lib.sh
source "$HERE/lib.sh"

for tool in python3 taskset curl ss; do
    command -v "$tool" >/dev/null || { log "missing $tool"; exit 1; }
done
if [[ $(nproc) -lt 2 ]]; then log "needs 2 CPUs"; exit 1; fi
require_free_ports "$PORT_STABLE" "$PORT_CANARY" "$PORT_GRAY" "$PORT_ADMIN"

OUT="${CARGO_TARGET_DIR:-$ROOT/target}/quick-release"
if [[ -z "${GRAYPROXY_BIN:-}" || -z "${SHADOW_LOAD_BIN:-}" ]]; then
    log "building grayproxy and examples/shadow_load (quick-release)"
    (cd "$ROOT" && cargo build --profile quick-release --quiet --bin grayproxy --example shadow_load)
fi
GRAYPROXY=${GRAYPROXY_BIN:-$OUT/grayproxy}
LOAD=${SHADOW_LOAD_BIN:-$OUT/examples/shadow_load}

mkdir -p "$WORK/state"
cat >"$WORK/grayproxy.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT_GRAY"
workers = 1

[admin]
listen = "127.0.0.1:$PORT_ADMIN"

[state]
dir = "$WORK/state"

[upstreams.reco-v1]
endpoints = ["127.0.0.1:$PORT_STABLE"]
[upstreams.reco-v2]
endpoints = ["127.0.0.1:$PORT_CANARY"]

[[routes]]
name = "off"
match = { path_prefix = "/api/recommend" }
stable = "reco-v1"
canary = "reco-v2"

[[routes]]
name = "on"
match = { path_prefix = "/on" }
stable = "reco-v1"
canary = "reco-v2"

  [routes.shadow]
  percent = 100
  items = "items"
  item_id = "id"
  k = 10
  ignore = ["generated_at"]
EOF

taskset -c "$LOAD_CPU" "$LOAD" backend "127.0.0.1:$PORT_STABLE" stable &
PIDS+=($!)
taskset -c "$LOAD_CPU" "$LOAD" backend "127.0.0.1:$PORT_CANARY" canary &
PIDS+=($!)
wait_port "$PORT_STABLE"
wait_port "$PORT_CANARY"
RUST_LOG=warn taskset -c "$PROXY_CPU" "$GRAYPROXY" run --config "$WORK/grayproxy.toml" \
    2>"$WORK/grayproxy.log" &
PIDS+=($!)
wait_port "$PORT_GRAY"

run_side() { # run_side on|off → one JSON line
    local path=/api/recommend
    [[ $1 == on ]] && path=/on
    taskset -c "$LOAD_CPU" "$LOAD" load "http://127.0.0.1:$PORT_GRAY$path" "$RATE" "$DURATION" "$CONNS"
}

log "warm-up (2 s per route)"
DURATION=2 run_side off >/dev/null
DURATION=2 run_side on >/dev/null

: >"$WORK/results"
for round in $(seq 1 "$ROUNDS"); do
    order="off on"
    (( round % 2 == 0 )) && order="on off"
    for side in $order; do
        line=$(run_side "$side")
        echo "$round $side $line" >>"$WORK/results"
        log "round $round $side: $line"
        sleep 1
    done
done

curl -fsS "http://127.0.0.1:$PORT_ADMIN/status" >"$WORK/status.json"
python3 - "$WORK/results" "$WORK/status.json" "$RATE" <<'PY'
import json, statistics, sys
rows = [l.split(" ", 2) for l in open(sys.argv[1])]
by = {"off": [], "on": []}
for _, side, js in rows:
    by[side].append(json.loads(js))
def summary(key, side):
    v = [r[key] for r in by[side]]
    return statistics.median(v), min(v), max(v)
print(f"fixed rate {sys.argv[3]} req/s, {len(by['off'])} interleaved rounds per side")
print(f"{'':10} {'p50 ms':>22} {'p99 ms':>22} {'p99.9 ms':>22} {'req/s':>8} {'errors':>7}")
for side in ("off", "on"):
    cells = []
    for key in ("p50_ms", "p99_ms", "p999_ms"):
        m, lo, hi = summary(key, side)
        cells.append(f"{m:7.2f} ({lo:5.2f}–{hi:6.2f})")
    rps = statistics.median(r["rps"] for r in by[side])
    errors = sum(r["errors"] for r in by[side])
    print(f"shadow {side:3} {cells[0]:>22} {cells[1]:>22} {cells[2]:>22} {rps:8.0f} {errors:7}")
ratios = [on["p99_ms"] / off["p99_ms"] for off, on in zip(by["off"], by["on"])]
print("p99 on/off per round: " + " ".join(f"{r:.2f}" for r in ratios))
print(f"p99 on/off: median {statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}); "
      f"ratio of median p99s {summary('p99_ms', 'on')[0] / summary('p99_ms', 'off')[0]:.2f}")
status = json.load(open(sys.argv[2]))
for r in status["routes"]:
    s = r.get("shadow")
    if s:
        print(f"route {r['name']}: mirrored {s['mirrored']} compared {s['compared']} skipped {s['skipped']} "
              f"canary errors {s['canary_errors']} rbo mean {s['rbo']['mean']}")
PY
