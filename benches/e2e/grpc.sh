#!/usr/bin/env bash
# End-to-end gRPC benchmark: grayproxy against nginx's grpc_pass, unary
# calls, same backends, same machine, interleaved A/B rounds.
#
#   benches/e2e/grpc.sh                                   # 3 rounds, release build
#   PROFILE=quick-release ROUNDS=1 DURATION=5 LAT_DURATION=5 benches/e2e/grpc.sh
#
# What it does (loopback only; everything it starts it stops, by PID):
#   * installs nginx and h2load (apt: nginx, nghttp2-client) if missing;
#   * builds grayproxy and examples/grpc_backend ($PROFILE, default release);
#   * starts the backend (two h2c gRPC servers, stable and canary, answering
#     /reco.Recommender/Recommend with a 3-item reply and OK trailers, no
#     service time) on CPU 1;
#   * starts nginx (worker_processes 1, grpc_pass to an upstream with
#     weight=9/1 and keepalive) and grayproxy (workers = 1, two h2 upstreams,
#     canary_weight 10, no sticky key: h2load sends the same headers on every
#     call) on CPU 0;
#   * per round, for each proxy (order alternates between rounds):
#       - saturating run: h2load (1 thread, $CONNS connections x $STREAMS
#         concurrent streams, gRPC-framed request body, content-type
#         application/grpc, te: trailers) on CPU 1 — calls/s, the proxy's CPU
#         from /proc/PID/stat (master and worker for nginx), calls/s per core;
#       - fixed rate: h2load --rps at $RATE calls/s in total over $LAT_CONNS
#         connections — p50/p99/p99.9 from h2load's per-request log (h2load
#         paces each connection; no coordinated-omission correction);
#       - RSS after the load;
#   * checks that grayproxy counted every call as grpc_status OK (or
#     CANCELLED: the calls in flight when h2load stops);
#   * prints medians with min–max and the ratios grayproxy / nginx.
# Needs 2 CPUs. About 1 + ROUNDS * 2 * (DURATION + LAT_DURATION + 2) s after
# the build.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}          # seconds per saturating run
LAT_DURATION=${LAT_DURATION:-10}  # seconds per fixed-rate run
RATE=${RATE:-2000}                # calls/s of the fixed-rate run (all connections)
CONNS=${CONNS:-16}                # h2 connections of the saturating run
STREAMS=${STREAMS:-8}             # concurrent streams per connection (saturating)
LAT_CONNS=${LAT_CONNS:-8}         # h2 connections of the fixed-rate run
PORT_BASE=${PORT_BASE:-28280}     # consecutive loopback ports from here
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
NICE=${NICE:--10}                 # every benchmark process alike, above other work on a shared box
PROFILE=${PROFILE:-release}       # cargo profile of the build (quick-release: no LTO, faster build)
GRAYPROXY_BIN=${GRAYPROXY_BIN:-}  # prebuilt binaries: skip the build
BACKEND_BIN=${BACKEND_BIN:-}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d /tmp/grayproxy-grpc-e2e.XXXXXX)
LOG_TAG=e2e-grpc
# shellcheck source=lib.sh
source "$HERE/lib.sh"
METHOD=/reco.Recommender/Recommend

# ---------------------------------------------------------------- tools
if ! command -v nginx >/dev/null || ! command -v h2load >/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then
        log "need nginx and h2load; run as root or apt-get install -y nginx nghttp2-client"
        exit 1
    fi
    log "installing nginx and h2load"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx nghttp2-client >/dev/null
fi
for tool in python3 taskset curl ss; do
    command -v "$tool" >/dev/null || { log "missing $tool"; exit 1; }
done
if [[ $(nproc) -lt 2 ]]; then log "needs 2 CPUs"; exit 1; fi

OUT_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"
if [[ -z "$GRAYPROXY_BIN" || -z "$BACKEND_BIN" ]]; then
    log "building grayproxy and examples/grpc_backend ($PROFILE)"
    (cd "$ROOT" && cargo build --profile "$PROFILE" --quiet --bin grayproxy --example grpc_backend)
fi
GRAYPROXY=${GRAYPROXY_BIN:-$OUT_DIR/grayproxy}
BACKEND=${BACKEND_BIN:-$OUT_DIR/examples/grpc_backend}


# ---------------------------------------------------------------- start
require_free_ports "$PORT_PEER" "$PORT_GRAY" "$PORT_ADMIN"
mkdir -p "$WORK/tmp" "$WORK/state"

# RecommendRequest { user_id: "user-4242", count: 3 }, gRPC-framed.
python3 - "$WORK/request.bin" <<'PY'
import sys
user = b"user-4242"
msg = b"\x0a" + bytes([len(user)]) + user + b"\x10\x03"
open(sys.argv[1], "wb").write(b"\x00" + len(msg).to_bytes(4, "big") + msg)
PY

log "starting the gRPC backends (CPU $LOAD_CPU)"
pin_bg "$LOAD_CPU" "$BACKEND" >"$WORK/backend.out" 2>"$WORK/backend.err" &
PIDS+=($!)
for _ in $(seq 1 100); do
    [[ $(wc -l <"$WORK/backend.out") -ge 2 ]] && break
    sleep 0.1
done
STABLE=$(awk '$1 == "stable" {print $2}' "$WORK/backend.out")
CANARY=$(awk '$1 == "canary" {print $2}' "$WORK/backend.out")
[[ -n "$STABLE" && -n "$CANARY" ]] || { log "the backend did not start: $(cat "$WORK/backend.err")"; exit 1; }

cat >"$WORK/grayproxy.toml" <<EOF
[server]
listen = "127.0.0.1:$PORT_GRAY"
workers = 1

[admin]
listen = "127.0.0.1:$PORT_ADMIN"

[state]
dir = "$WORK/state"

[upstreams.reco-v1]
endpoints = ["$STABLE"]
protocol = "h2"
[upstreams.reco-v2]
endpoints = ["$CANARY"]
protocol = "h2"

[[routes]]
name = "recommend"
match = { path_prefix = "/reco.Recommender/" }
stable = "reco-v1"
canary = "reco-v2"
canary_weight = 10.0
EOF

cat >"$WORK/peer.conf" <<EOF
worker_processes 1;
daemon off;
pid $WORK/peer.pid;
error_log $WORK/peer-error.log warn;
events { worker_connections 4096; }
http {
    client_body_temp_path $WORK/tmp/body;
    proxy_temp_path $WORK/tmp/proxy;
    fastcgi_temp_path $WORK/tmp/fastcgi;
    uwsgi_temp_path $WORK/tmp/uwsgi;
    scgi_temp_path $WORK/tmp/scgi;
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    upstream reco {
        server $STABLE weight=9;
        server $CANARY weight=1;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$PORT_PEER http2 backlog=4096;
        http2_max_concurrent_streams 256;
        location / { grpc_pass grpc://reco; }
    }
}
EOF

log "starting nginx (grpc_pass) and grayproxy (CPU $PROXY_CPU)"
pin_bg "$PROXY_CPU" nginx -c "$WORK/peer.conf" -p "$WORK" -e "$WORK/peer-error.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
pin_bg "$PROXY_CPU" env RUST_LOG=warn "$GRAYPROXY" run --config "$WORK/grayproxy.toml" \
    2>"$WORK/grayproxy.log" &
GRAY_PID=$!
PIDS+=("$GRAY_PID")

# One gRPC call through port $1; prints its grpc-status (from the trailers).
grpc_call() {
    curl -sS --http2-prior-knowledge -o /dev/null -D - --max-time 2 \
        -H 'content-type: application/grpc' -H 'te: trailers' \
        --data-binary @"$WORK/request.bin" "http://127.0.0.1:$1$METHOD" 2>/dev/null |
        awk -F': ' 'tolower($1) == "grpc-status" {gsub(/\r/, "", $2); print $2}'
}
for port in "$PORT_PEER" "$PORT_GRAY"; do
    for i in $(seq 1 100); do
        [[ "$(grpc_call "$port")" == 0 ]] && break
        [[ $i -eq 100 ]] && { log "no gRPC OK through port $port"; exit 1; }
        sleep 0.1
    done
done

# ---------------------------------------------------------------- measure
RESULTS="$WORK/results.tsv"
: >"$RESULTS"
TICKS=$(getconf CLK_TCK)
H2LOAD_GRPC=(-d "$WORK/request.bin" -H 'content-type: application/grpc' -H 'te: trailers')

saturate() { # name port pid round
    local name=$1 port=$2 pid=$3 round=$4 t0 c0 t1 c1 out rps failed
    t0=$(now); c0=$(cpu_ticks "$pid")
    out=$(pin "$LOAD_CPU" h2load -t1 -c"$CONNS" -m"$STREAMS" -D "$DURATION" "${H2LOAD_GRPC[@]}" \
        "http://127.0.0.1:$port$METHOD")
    c1=$(cpu_ticks "$pid"); t1=$(now)
    rps=$(awk '/^finished in/ {print $4}' <<<"$out")
    failed=$(awk '/^requests:/ {print $10 + $12}' <<<"$out")
    [[ "$failed" == 0 ]] || log "$name round $round: $(grep -E '^(requests|status codes):' <<<"$out" | tr '\n' ' ')"
    printf '%s\t%s\tsat\t%s\t%s\n' "$name" "$round" "$rps" \
        "$(python3 -c "print(($c1-$c0)/$TICKS/($t1-$t0))")" >>"$RESULTS"
}

latency() { # name port pid round
    local name=$1 port=$2 pid=$3 round=$4
    rm -f "$WORK/h2load.log"
    pin "$LOAD_CPU" h2load -t1 -c"$LAT_CONNS" -m1 --rps "$((RATE / LAT_CONNS))" -D "$LAT_DURATION" \
        --log-file "$WORK/h2load.log" "${H2LOAD_GRPC[@]}" "http://127.0.0.1:$port$METHOD" >/dev/null
    # Log lines: start (µs since epoch), HTTP status, duration (µs).
    python3 - "$name" "$round" "$(rss_kib "$pid")" "$WORK/h2load.log" >>"$RESULTS" <<'PY'
import sys
name, rnd, rss, path = sys.argv[1:5]
rows = [l.split() for l in open(path) if l.strip()]
ok = sorted(int(r[2]) / 1000 for r in rows if r[1] == "200")
bad = sum(1 for r in rows if r[1] != "200")
q = lambda p: ok[min(len(ok) - 1, int(p * len(ok)))]
print(f"{name}\t{rnd}\tlat\t{q(0.5):.4f}\t{q(0.99):.4f}\t{q(0.999):.4f}\t{len(ok)}\t{bad}\t{rss}")
PY
}

log "warm-up"
for port in "$PORT_PEER" "$PORT_GRAY"; do
    pin "$LOAD_CPU" h2load -t1 -c"$CONNS" -m"$STREAMS" -D 2 "${H2LOAD_GRPC[@]}" \
        "http://127.0.0.1:$port$METHOD" >/dev/null
done

for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then order="nginx grayproxy"; else order="grayproxy nginx"; fi
    for name in $order; do
        case $name in
            nginx) port=$PORT_PEER pid=$NGINX_PID ;;
            grayproxy) port=$PORT_GRAY pid=$GRAY_PID ;;
        esac
        log "round $round/$ROUNDS: $name saturating (${DURATION}s), then ${RATE} calls/s (${LAT_DURATION}s)"
        saturate "$name" "$port" "$pid" "$round"
        latency "$name" "$port" "$pid" "$round"
    done
done

# Every call grayproxy answered ended in grpc-status OK (its own count),
# but for CANCELLED: h2load stops at its deadline with calls in flight.
METRICS=$(curl -fsS "http://127.0.0.1:$PORT_ADMIN/metrics")
GRPC_CODES=$(awk -F'grpc_status="' '/^grayproxy_grpc_responses_total\{/ && $0 !~ / 0$/ {
    split($2, a, "\""); n = $0; sub(/.* /, "", n); s[a[1]] += n } END { for (c in s) printf "%s=%d ", c, s[c] }' <<<"$METRICS")
GRPC_NOT_OK=$(awk '/^grayproxy_grpc_responses_total\{/ && !/grpc_status="(OK|CANCELLED)"/ {s += $2} END {print s + 0}' <<<"$METRICS")
log "grayproxy counted calls by grpc-status: $GRPC_CODES"

# ---------------------------------------------------------------- report
python3 - "$RESULTS" "$ROUNDS" "$RATE" "$CONNS" "$STREAMS" <<'PY'
import statistics, sys
path, rounds, rate, conns, streams = sys.argv[1], int(sys.argv[2]), *sys.argv[3:6]
sat, lat = {}, {}
for line in open(path):
    f = line.rstrip("\n").split("\t")
    if f[2] == "sat":
        sat.setdefault(f[0], []).append(dict(rps=float(f[3]), cpu=float(f[4])))
    else:
        lat.setdefault(f[0], []).append(dict(
            p50=float(f[3]), p99=float(f[4]), p999=float(f[5]), bad=int(f[7]), rss=int(f[8]) / 1024))

def metric(name, key):
    if key in ("rps", "cpu"):
        return [r[key] for r in sat[name]]
    if key == "per_core":
        return [r["rps"] / r["cpu"] if r["cpu"] > 0 else float("nan") for r in sat[name]]
    return [r[key] for r in lat[name]]

rows = [
    ("gRPC unary calls/s (saturating, h2load)", "rps", "{:,.0f}"),
    ("proxy CPU (cores)", "cpu", "{:.2f}"),
    ("calls/s per proxy core", "per_core", "{:,.0f}"),
    (f"p50 at {rate} calls/s (ms)", "p50", "{:.3f}"),
    (f"p99 at {rate} calls/s (ms)", "p99", "{:.3f}"),
    (f"p99.9 at {rate} calls/s (ms)", "p999", "{:.3f}"),
    ("RSS after load (MiB)", "rss", "{:.1f}"),
]
def cell(values, fmt):
    med = statistics.median(values)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})", med

print()
print(f"gRPC unary: grayproxy vs nginx grpc_pass, {rounds} interleaved rounds, medians (min–max);")
print(f"proxy pinned to 1 core, h2load -t1 -c{conns} -m{streams} + backends on the other core")
print()
print("| metric | nginx | grayproxy | grayproxy / nginx |")
print("|---|---|---|---|")
for label, key, fmt in rows:
    n_cell, n_med = cell(metric("nginx", key), fmt)
    g_cell, g_med = cell(metric("grayproxy", key), fmt)
    ratio = g_med / n_med if n_med else float("nan")
    print(f"| {label} | {n_cell} | {g_cell} | {ratio:.2f} |")
for name in lat:
    bad = sum(r["bad"] for r in lat[name])
    if bad:
        print(f"\n{name}: {bad} fixed-rate calls without HTTP 200")
PY
[[ "$GRPC_NOT_OK" == 0 ]] || { log "grayproxy saw $GRPC_NOT_OK calls end neither OK nor CANCELLED"; exit 1; }
