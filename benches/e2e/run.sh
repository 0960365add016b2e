#!/usr/bin/env bash
# End-to-end benchmark: grayproxy against nginx as the peer proxy, same split,
# same backends, same machine, interleaved A/B rounds.
#
#   benches/e2e/run.sh            # 3 rounds (default)
#   ROUNDS=5 DURATION=10 benches/e2e/run.sh
#   BARE=1 benches/e2e/run.sh     # also examples/bare_hyper_proxy: the floor
#                                 # hyper + tokio set, without grayproxy's work
#
# What it does (loopback only; everything it starts it stops, by PID):
#   * installs nginx and wrk (apt) and oha (cargo install --locked) if missing;
#   * builds grayproxy in release mode;
#   * starts two nginx backends (264-byte JSON body, keep-alive) on CPU 1;
#   * starts nginx (worker_processes 1, weight=9/1, upstream keepalive) and
#     grayproxy (workers = 1, 90/10 on a sticky header, 4 rules) on CPU 0;
#   * per round, for each proxy (order alternates between rounds):
#       - saturating run: wrk (1 thread, $CONNS connections, 10k user ids) on
#         CPU 1 — req/s, the proxy's CPU use from /proc/PID/stat
#         (utime+stime, master and workers for nginx), req/s per proxy core,
#         and the canary share counted in the backends' access logs;
#       - fixed rate: oha at $RATE req/s with coordinated-omission correction
#         (--latency-correction) — p50/p99/p99.9;
#       - RSS after the load (VmRSS, summed over master and worker for nginx);
#   * prints medians with min–max and the ratios grayproxy / nginx.
# Needs 2 CPUs. Bounded: about 1 + ROUNDS * 2 * (DURATION + LAT_DURATION + 2) s
# after the build (under 3 minutes with the defaults).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}          # seconds per saturating run
LAT_DURATION=${LAT_DURATION:-10}  # seconds per fixed-rate run
RATE=${RATE:-2000}                # req/s of the fixed-rate run
CONNS=${CONNS:-64}                # connections of the saturating run
LAT_CONNS=${LAT_CONNS:-16}        # connections of the fixed-rate run
PORT_BASE=${PORT_BASE:-28180}     # five consecutive loopback ports from here
PROXY_CPU=${PROXY_CPU:-0}
NICE=${NICE:--10}                 # every benchmark process alike, above other work on a shared box
GRAYPROXY_BIN=${GRAYPROXY_BIN:-}  # a prebuilt grayproxy (e.g. an older build, for before/after); skips the build
LOAD_CPU=${LOAD_CPU:-1}
BARE=${BARE:-}                    # 1: measure examples/bare_hyper_proxy as a third proxy

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d /tmp/grayproxy-e2e.XXXXXX)
LOG_TAG=e2e
# shellcheck source=lib.sh
source "$HERE/lib.sh"

# ---------------------------------------------------------------- tools
need_root_for() {
    if [[ $(id -u) -ne 0 ]]; then
        log "need $1; run as root or install it first"
        exit 1
    fi
}
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
    need_root_for "nginx and wrk (apt-get install -y nginx wrk)"
    log "installing nginx and wrk"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx wrk >/dev/null
fi
for tool in python3 taskset curl ss; do
    command -v "$tool" >/dev/null || { log "missing $tool"; exit 1; }
done
OHA=$(command -v oha || true)
if [[ -z "$OHA" && -x "$HOME/.cargo/bin/oha" ]]; then OHA="$HOME/.cargo/bin/oha"; fi
if [[ -z "$OHA" ]]; then
    log "installing oha (cargo install oha --locked; a few minutes, once)"
    cargo install oha --locked >&2
    OHA="$HOME/.cargo/bin/oha"
fi
if [[ $(nproc) -lt 2 ]]; then log "needs 2 CPUs"; exit 1; fi

grayproxy_binary
if [[ -n "$BARE" ]]; then
    log "building examples/bare_hyper_proxy (release)"
    (cd "$ROOT" && cargo build --release --quiet --example bare_hyper_proxy)
    BARE_PROXY="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/bare_hyper_proxy"
fi

# ---------------------------------------------------------------- ports, configs
require_free_ports "$PORT_STABLE" "$PORT_CANARY" "$PORT_PEER" "$PORT_GRAY" "$PORT_ADMIN" "$PORT_BARE"

mkdir -p "$WORK/tmp" "$WORK/state"
fill backends.conf.in backends.conf
fill peer.conf.in peer.conf
fill grayproxy.toml.in grayproxy.toml

# ---------------------------------------------------------------- start

log "starting backends (CPU $LOAD_CPU), nginx and grayproxy (CPU $PROXY_CPU)"
pin_bg "$LOAD_CPU" nginx -c "$WORK/backends.conf" -p "$WORK" -e "$WORK/backends-error.log" &
PIDS+=($!)
wait_port "$PORT_STABLE"
wait_port "$PORT_CANARY"
pin_bg "$PROXY_CPU" nginx -c "$WORK/peer.conf" -p "$WORK" -e "$WORK/peer-error.log" &
NGINX_PID=$!
PIDS+=("$NGINX_PID")
pin_bg "$PROXY_CPU" env RUST_LOG=warn "$GRAYPROXY" run --config "$WORK/grayproxy.toml" \
    2>"$WORK/grayproxy.log" &
GRAY_PID=$!
PIDS+=("$GRAY_PID")
PROXIES="nginx grayproxy"
PROXY_PORTS="$PORT_PEER $PORT_GRAY"
if [[ -n "$BARE" ]]; then
    pin_bg "$PROXY_CPU" "$BARE_PROXY" "127.0.0.1:$PORT_BARE" "127.0.0.1:$PORT_STABLE" \
        "127.0.0.1:$PORT_CANARY" 2>"$WORK/bare.log" &
    BARE_PID=$!
    PIDS+=("$BARE_PID")
    PROXIES="$PROXIES bare"
    PROXY_PORTS="$PROXY_PORTS $PORT_BARE"
fi
wait_port "$PORT_PEER"
wait_port "$PORT_GRAY"
[[ -z "$BARE" ]] || wait_port "$PORT_BARE"
for p in $PROXY_PORTS; do
    got=$(curl -fsS "http://127.0.0.1:$p/api/recommend" -H 'x-user-id: probe' | wc -c)
    [[ $got -eq 264 ]] || { log "port $p answered $got bytes, not 264"; exit 1; }
done

# ---------------------------------------------------------------- measure
# The proxy's processes: the PID and its children (nginx's worker).
log_lines() { wc -l <"$WORK/$1.log"; }

RESULTS="$WORK/results.tsv"
: >"$RESULTS"
TICKS=$(getconf CLK_TCK)

saturate() { # name port pid round
    local name=$1 port=$2 pid=$3 round=$4
    sleep 1.2 # let the backends flush their access logs (flush=1s)
    local s0 c0 t0 c1 t1 s1 out rps errs
    s0=$(log_lines stable); c0=$(log_lines canary)
    t0=$(now); c0t=$(cpu_ticks "$pid")
    out=$(pin "$LOAD_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" -s "$HERE/users.lua" \
        "http://127.0.0.1:$port/api/recommend")
    c1t=$(cpu_ticks "$pid"); t1=$(now)
    sleep 1.2
    s1=$(log_lines stable); c1=$(log_lines canary)
    rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
    errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
    [[ -z "$errs" ]] || log "$name round $round: $errs"
    printf '%s\t%s\tsat\t%s\t%s\t%s\t%s\t%s\n' "$name" "$round" "$rps" \
        "$(python3 -c "print(($c1t-$c0t)/$TICKS/($t1-$t0))")" \
        "$((s1 - s0))" "$((c1 - c0))" "$(rss_kib "$pid")" >>"$RESULTS"
}

latency() { # name port pid round
    local name=$1 port=$2 pid=$3 round=$4
    pin "$LOAD_CPU" "$OHA" --no-tui --output-format json --latency-correction \
        -z "${LAT_DURATION}s" -q "$RATE" -c "$LAT_CONNS" -H 'x-user-id: user-4242' \
        "http://127.0.0.1:$port/api/recommend?item=42" >"$WORK/oha.json" 2>"$WORK/oha.err"
    python3 - "$name" "$round" "$(rss_kib "$pid")" "$WORK/oha.json" >>"$RESULTS" <<'PY'
import json, sys
name, rnd, rss, path = sys.argv[1:5]
d = json.load(open(path))
p = d["latencyPercentiles"]
ok = d["summary"].get("successRate", 1.0)
codes = d.get("statusCodeDistribution", {})
print(f"{name}\t{rnd}\tlat\t{p['p50']*1e3:.4f}\t{p['p99']*1e3:.4f}\t{p['p99.9']*1e3:.4f}\t{ok}\t{json.dumps(codes)}\t{rss}")
PY
}

log "warm-up"
for port in $PROXY_PORTS; do
    pin "$LOAD_CPU" wrk -t1 -c"$CONNS" -d2s -s "$HERE/users.lua" \
        "http://127.0.0.1:$port/api/recommend" >/dev/null
done

for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then order=$PROXIES; else order=$(tr ' ' '\n' <<<"$PROXIES" | tac | tr '\n' ' '); fi
    for name in $order; do
        case $name in
            nginx) port=$PORT_PEER pid=$NGINX_PID ;;
            grayproxy) port=$PORT_GRAY pid=$GRAY_PID ;;
            bare) port=$PORT_BARE pid=$BARE_PID ;;
        esac
        log "round $round/$ROUNDS: $name saturating (${DURATION}s), then ${RATE} req/s (${LAT_DURATION}s)"
        saturate "$name" "$port" "$pid" "$round"
        latency "$name" "$port" "$pid" "$round"
    done
done

# ---------------------------------------------------------------- report
python3 - "$RESULTS" "$ROUNDS" "$RATE" "$CONNS" <<'PY'
import statistics, sys
path, rounds, rate, conns = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
sat, lat = {}, {}
for line in open(path):
    f = line.rstrip("\n").split("\t")
    if f[2] == "sat":
        sat.setdefault(f[0], []).append(dict(
            rps=float(f[3]), cpu=float(f[4]), stable=int(f[5]), canary=int(f[6]),
            rss=int(f[7]) / 1024))
    else:
        lat.setdefault(f[0], []).append(dict(
            p50=float(f[3]), p99=float(f[4]), p999=float(f[5]), ok=float(f[6]),
            codes=f[7], rss=int(f[8]) / 1024))

def metric(name, key):
    if key in ("rps", "cpu", "stable", "canary"):
        return [r[key] for r in sat[name]]
    if key == "per_core":
        return [r["rps"] / r["cpu"] if r["cpu"] > 0 else float("nan") for r in sat[name]]
    if key == "share":
        return [100 * r["canary"] / max(1, r["canary"] + r["stable"]) for r in sat[name]]
    if key == "rss":
        return [r["rss"] for r in lat[name]]
    return [r[key] for r in lat[name]]

rows = [
    ("req/s (saturating, wrk)", "rps", "{:,.0f}"),
    ("proxy CPU (cores)", "cpu", "{:.2f}"),
    ("req/s per proxy core", "per_core", "{:,.0f}"),
    (f"p50 at {rate} req/s (ms)", "p50", "{:.3f}"),
    (f"p99 at {rate} req/s (ms)", "p99", "{:.3f}"),
    (f"p99.9 at {rate} req/s (ms)", "p999", "{:.3f}"),
    ("RSS after load (MiB)", "rss", "{:.1f}"),
    ("canary share (%, want 10)", "share", "{:.2f}"),
]
def cell(values, fmt):
    med = statistics.median(values)
    return f"{fmt.format(med)} ({fmt.format(min(values))}–{fmt.format(max(values))})", med

bare = "bare" in sat
print()
print(f"grayproxy vs nginx, {rounds} interleaved rounds, medians (min–max);")
print(f"proxy pinned to 1 core, wrk -t1 -c{conns} + backends on the other core")
print()
if bare:
    print("| metric | nginx | grayproxy | bare hyper | grayproxy / nginx | bare / nginx |")
    print("|---|---|---|---|---|---|")
else:
    print("| metric | nginx | grayproxy | grayproxy / nginx |")
    print("|---|---|---|---|")
for label, key, fmt in rows:
    n_cell, n_med = cell(metric("nginx", key), fmt)
    g_cell, g_med = cell(metric("grayproxy", key), fmt)
    ratio = g_med / n_med if n_med else float("nan")
    if bare:
        b_cell, b_med = cell(metric("bare", key), fmt)
        b_ratio = b_med / n_med if n_med else float("nan")
        print(f"| {label} | {n_cell} | {g_cell} | {b_cell} | {ratio:.2f} | {b_ratio:.2f} |")
    else:
        print(f"| {label} | {n_cell} | {g_cell} | {ratio:.2f} |")
for name in sat:
    bad = [r for r in lat[name] if r["ok"] < 1.0]
    if bad:
        print(f"\n{name}: fixed-rate runs with failures: {[r['codes'] for r in bad]}")
PY
