#!/usr/bin/env bash
# End-to-end benchmark: grayproxy against nginx as the peer proxy, same split,
# same backends, same machine, interleaved A/B rounds.
#
#   benches/e2e/run.sh            # 3 rounds (default)
#   ROUNDS=5 DURATION=10 benches/e2e/run.sh
#   BARE=1 benches/e2e/run.sh     # also examples/bare_hyper_proxy: the floor
#                                 # hyper + tokio set, without grayproxy's work
#   WORKERS=2 benches/e2e/run.sh  # multi-core: both proxies with 2 workers,
#                                 # everything unpinned over CPUs 0-1
#   ROUTES=10000 benches/e2e/run.sh  # grayproxy with 10,000 routes (the load
#                                 # hits the last) vs the same binary with 1
#   GRAYPROXY_BIN=... BARE_BIN=... benches/e2e/run.sh  # prebuilt, no build
#   benches/e2e/all.sh            # every benchmark of docs/performance.md
#
# What it does (loopback only; everything it starts it stops, by PID):
#   * installs nginx and wrk (apt) and oha (cargo install --locked) if missing;
#   * builds grayproxy ($PROFILE, default release) unless GRAYPROXY_BIN is set;
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
#   * prints medians with min–max and the ratios to the first proxy (nginx).
#
# Modes (each changes only what it names):
#   WORKERS=N  grayproxy `workers = N`, nginx and the backends
#              `worker_processes N`, wrk -tN; the proxies, the backends and the
#              load generators all share CPUs 0..N-1 (taskset, no per-process
#              pinning), so the whole machine saturates and req/s compares
#              what each proxy leaves to the rest. BARE is ignored (the bare
#              proxy has one thread).
#   ROUTES=N   no nginx: grayproxy with the usual config against grayproxy
#              with N routes, same binary — N-1 routes (path prefixes
#              /svc/{i}/ mixed with host routes h{i}.example + /api, as
#              benches/large_config.sh writes them) before the usual route,
#              which the load hits and which keeps its sticky key, 4 rules
#              and 90/10 split; ratios are to the 1-route config.
# Needs 2 CPUs (N with WORKERS=N). Bounded: about 1 + ROUNDS * proxies *
# (DURATION + LAT_DURATION + 2.4) s after the build (under 3 minutes with
# the defaults).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}          # seconds per saturating run
LAT_DURATION=${LAT_DURATION:-10}  # seconds per fixed-rate run
RATE=${RATE:-2000}                # req/s of the fixed-rate run
CONNS=${CONNS:-64}                # connections of the saturating run
LAT_CONNS=${LAT_CONNS:-16}        # connections of the fixed-rate run
PORT_BASE=${PORT_BASE:-28180}     # eight consecutive loopback ports from here
PROXY_CPU=${PROXY_CPU:-0}
NICE=${NICE:--10}                 # every benchmark process alike, above other work on a shared box
GRAYPROXY_BIN=${GRAYPROXY_BIN:-}  # a prebuilt grayproxy (e.g. an older build, for before/after); skips the build
BARE=${BARE:-}                    # 1: measure examples/bare_hyper_proxy as a third proxy
BARE_BIN=${BARE_BIN:-}            # a prebuilt bare_hyper_proxy; skips its build
PROFILE=${PROFILE:-release}       # cargo profile of the builds (quick-release: no LTO, faster)
WORKERS=${WORKERS:-1}             # N > 1: both proxies with N workers over CPUs 0..N-1
ROUTES=${ROUTES:-}                # N: grayproxy with N routes vs with 1 (no nginx)
if ! [[ $WORKERS =~ ^[1-9][0-9]*$ ]]; then echo "WORKERS must be a positive number" >&2; exit 1; fi
if [[ -n $ROUTES ]] && ! [[ $ROUTES =~ ^[1-9][0-9]*$ ]]; then echo "ROUTES must be a positive number" >&2; exit 1; fi
if ((WORKERS > 1)); then
    PROXY_CPU=${CPUS:-0-$((WORKERS - 1))} # every process of the run shares these
    LOAD_CPU=$PROXY_CPU
else
    LOAD_CPU=${LOAD_CPU:-1}
fi
WRK_THREADS=$WORKERS

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
want_cpus=$((WORKERS > 2 ? WORKERS : 2))
if [[ $(nproc) -lt $want_cpus ]]; then log "needs $want_cpus CPUs"; exit 1; fi
if [[ -n "$BARE" ]] && ((WORKERS > 1)); then
    log "BARE ignored with WORKERS=$WORKERS: examples/bare_hyper_proxy runs one thread"
    BARE=
fi
if [[ -n "$BARE" && -n "$ROUTES" ]]; then
    log "BARE ignored with ROUTES: that mode compares grayproxy with itself"
    BARE=
fi

grayproxy_binary
if [[ -n "$BARE" ]]; then
    if [[ -n "$BARE_BIN" ]]; then
        BARE_PROXY=$BARE_BIN
    else
        log "building examples/bare_hyper_proxy ($PROFILE)"
        (cd "$ROOT" && cargo build --profile "$PROFILE" --quiet --example bare_hyper_proxy)
        BARE_PROXY="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/examples/bare_hyper_proxy"
    fi
    [[ -x "$BARE_PROXY" ]] || { log "no bare_hyper_proxy binary at $BARE_PROXY"; exit 1; }
fi

# ---------------------------------------------------------------- ports, configs
if [[ -n "$ROUTES" ]]; then
    PROXIES="grayproxy routes"
    require_free_ports "$PORT_STABLE" "$PORT_CANARY" "$PORT_GRAY" "$PORT_ADMIN" \
        "$PORT_ROUTES" "$PORT_ROUTES_ADMIN"
else
    PROXIES="nginx grayproxy${BARE:+ bare}"
    require_free_ports "$PORT_STABLE" "$PORT_CANARY" "$PORT_PEER" "$PORT_GRAY" "$PORT_ADMIN" \
        ${BARE:+"$PORT_BARE"}
fi

mkdir -p "$WORK/tmp" "$WORK/state" "$WORK/state-routes"
fill backends.conf.in backends.conf
fill peer.conf.in peer.conf
fill grayproxy.toml.in grayproxy.toml
if ((WORKERS > 1)); then
    sed -i "s/^worker_processes 1;/worker_processes $WORKERS;/" "$WORK/backends.conf" "$WORK/peer.conf"
    sed -i "s/^workers = 1$/workers = $WORKERS/" "$WORK/grayproxy.toml"
    grep -q "^worker_processes $WORKERS;" "$WORK/backends.conf" &&
        grep -q "^worker_processes $WORKERS;" "$WORK/peer.conf" &&
        grep -q "^workers = $WORKERS$" "$WORK/grayproxy.toml" ||
        { log "could not set $WORKERS workers in the configs"; exit 1; }
fi
if [[ -n "$ROUTES" ]]; then
    # The same file with its own ports and state dir, and ROUTES-1 routes
    # inserted before its one route: the load matches only the last.
    awk -v n="$ROUTES" -v gray="127.0.0.1:$PORT_GRAY\"" -v admin="127.0.0.1:$PORT_ADMIN\"" \
        -v routes="127.0.0.1:$PORT_ROUTES\"" -v routes_admin="127.0.0.1:$PORT_ROUTES_ADMIN\"" \
        -v state="$WORK/state\"" -v routes_state="$WORK/state-routes\"" '
        /^listen = / { sub(gray, routes); sub(admin, routes_admin) }
        /^dir = / { sub(state, routes_state) }
        /^\[\[routes\]\]/ && !done {
            for (i = 0; i < n - 1; i++) {
                if (i % 2 == 0) m = sprintf("{ path_prefix = \"/svc/%d/\" }", i)
                else m = sprintf("{ host = \"h%d.example\", path_prefix = \"/api\" }", i)
                printf "[[routes]]\nname = \"r%d\"\nmatch = %s\nstable = \"reco-v1\"\n", i, m
                printf "canary = \"reco-v2\"\ncanary_weight = 5.0\nsticky = \"header:x-user-id\"\n"
                printf "[[routes.rules]]\nwhen = { header = \"x-canary\", equals = \"always\" }\n"
                printf "to = \"canary\"\n\n"
            }
            done = 1
        }
        { print }' "$WORK/grayproxy.toml" >"$WORK/grayproxy-routes.toml"
    got=$(grep -c '^\[\[routes\]\]' "$WORK/grayproxy-routes.toml")
    grep -q "127.0.0.1:$PORT_ROUTES\"" "$WORK/grayproxy-routes.toml" &&
        grep -q "127.0.0.1:$PORT_ROUTES_ADMIN\"" "$WORK/grayproxy-routes.toml" &&
        grep -q "$WORK/state-routes\"" "$WORK/grayproxy-routes.toml" && [[ $got -eq $ROUTES ]] ||
        { log "could not write the $ROUTES-route config ($got routes)"; exit 1; }
    "$GRAYPROXY" check --config "$WORK/grayproxy-routes.toml" >"$WORK/check-routes.log" 2>&1 ||
        { log "grayproxy check rejects the $ROUTES-route config"; exit 1; }
fi

# ---------------------------------------------------------------- start

log "starting backends (CPU $LOAD_CPU) and $PROXIES (CPU $PROXY_CPU)"
pin_bg "$LOAD_CPU" nginx -c "$WORK/backends.conf" -p "$WORK" -e "$WORK/backends-error.log" &
PIDS+=($!)
wait_port "$PORT_STABLE"
wait_port "$PORT_CANARY"
PROXY_PORTS=
for name in $PROXIES; do
    case $name in
        nginx)
            pin_bg "$PROXY_CPU" nginx -c "$WORK/peer.conf" -p "$WORK" -e "$WORK/peer-error.log" &
            NGINX_PID=$! port=$PORT_PEER ;;
        grayproxy)
            pin_bg "$PROXY_CPU" env RUST_LOG=warn "$GRAYPROXY" run --config "$WORK/grayproxy.toml" \
                2>"$WORK/grayproxy.log" &
            GRAY_PID=$! port=$PORT_GRAY ;;
        routes)
            pin_bg "$PROXY_CPU" env RUST_LOG=warn "$GRAYPROXY" run \
                --config "$WORK/grayproxy-routes.toml" 2>"$WORK/grayproxy-routes.log" &
            ROUTES_PID=$! port=$PORT_ROUTES ;;
        bare)
            pin_bg "$PROXY_CPU" "$BARE_PROXY" "127.0.0.1:$PORT_BARE" "127.0.0.1:$PORT_STABLE" \
                "127.0.0.1:$PORT_CANARY" 2>"$WORK/bare.log" &
            BARE_PID=$! port=$PORT_BARE ;;
    esac
    PIDS+=($!)
    PROXY_PORTS="$PROXY_PORTS $port"
done
for p in $PROXY_PORTS; do wait_port "$p" 60; done # 60 s: a large config takes seconds to load
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
    out=$(pin "$LOAD_CPU" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" -s "$HERE/users.lua" \
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
    pin "$LOAD_CPU" wrk -t"$WRK_THREADS" -c"$CONNS" -d2s -s "$HERE/users.lua" \
        "http://127.0.0.1:$port/api/recommend" >/dev/null
done

for round in $(seq 1 "$ROUNDS"); do
    if ((round % 2)); then order=$PROXIES; else order=$(tr ' ' '\n' <<<"$PROXIES" | tac | tr '\n' ' '); fi
    for name in $order; do
        case $name in
            nginx) port=$PORT_PEER pid=$NGINX_PID ;;
            grayproxy) port=$PORT_GRAY pid=$GRAY_PID ;;
            bare) port=$PORT_BARE pid=$BARE_PID ;;
            routes) port=$PORT_ROUTES pid=$ROUTES_PID ;;
        esac
        [[ -d /proc/$pid ]] || { log "$name (PID $pid) has exited"; exit 1; }
        log "round $round/$ROUNDS: $name saturating (${DURATION}s), then ${RATE} req/s (${LAT_DURATION}s)"
        saturate "$name" "$port" "$pid" "$round"
        latency "$name" "$port" "$pid" "$round"
    done
done

# ---------------------------------------------------------------- report
if [[ -n "$ROUTES" ]]; then
    PLACEMENT="both pinned to CPU $PROXY_CPU with workers = $WORKERS, wrk -t$WRK_THREADS -c$CONNS + backends on CPU $LOAD_CPU; same binary, the load hits the last of the $ROUTES routes"
elif ((WORKERS > 1)); then
    PLACEMENT="grayproxy workers = $WORKERS, nginx worker_processes $WORKERS; proxies, backends ($WORKERS workers) and wrk -t$WRK_THREADS -c$CONNS all share CPUs $PROXY_CPU, unpinned within them"
else
    PLACEMENT="proxy pinned to 1 core, wrk -t1 -c$CONNS + backends on the other core"
fi
python3 - "$RESULTS" "$ROUNDS" "$RATE" "$PROXIES" "${ROUTES:-1}" "$PLACEMENT" <<'PY'
import statistics, sys
path, rounds, rate, proxies, routes, placement = sys.argv[1:7]
rounds, proxies = int(rounds), proxies.split()
# Column label and the short name in ratio headers; the first proxy is the base.
names = {
    "nginx": ("nginx", "nginx"),
    "grayproxy": ("grayproxy", "grayproxy"),
    "bare": ("bare hyper", "bare"),
    "routes": (f"grayproxy, {int(routes):,} routes", f"{int(routes):,} routes"),
}
if "routes" in proxies:
    names["grayproxy"] = ("grayproxy, 1 route", "1 route")
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

base, others = proxies[0], proxies[1:]
print()
print(f"{' vs '.join(names[p][0] for p in proxies)}, {rounds} interleaved rounds, medians (min–max);")
print(placement)
print()
print("| metric | " + " | ".join(names[p][0] for p in proxies) + " | "
      + " | ".join(f"{names[p][1]} / {names[base][1]}" for p in others) + " |")
print("|---" * (1 + len(proxies) + len(others)) + "|")
for label, key, fmt in rows:
    cells, meds = [], {}
    for p in proxies:
        c, meds[p] = cell(metric(p, key), fmt)
        cells.append(c)
    ratios = [f"{meds[p] / meds[base]:.2f}" if meds[base] else "nan" for p in others]
    print(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
for name in proxies:
    bad = [r for r in lat[name] if r["ok"] < 1.0]
    if bad:
        print(f"\n{name}: fixed-rate runs with failures: {[r['codes'] for r in bad]}")
PY
