#!/usr/bin/env bash
# Memory per idle keep-alive client connection: grayproxy against nginx as
# the peer proxy, same backends, same run.
#
#   benches/e2e/idle_conns.sh                 # N = 2000 and 5000, 3 runs each
#   CONNS="1000 5000" RUNS=5 benches/e2e/idle_conns.sh
#   GRAYPROXY_BIN=/tmp/old-grayproxy benches/e2e/idle_conns.sh   # before/after
#
# What it measures (loopback only; everything it starts it stops, by PID):
#   * two nginx backends (benches/e2e/backends.conf.in, 264-byte JSON body);
#   * per run, per N, per proxy (order alternates between runs), a FRESH proxy
#     process: grayproxy in release mode (benches/e2e/grayproxy.toml.in,
#     workers = 1) or nginx (benches/e2e/peer.conf.in, one worker);
#   * warm-up: 200 requests on 20 connections, then closed (first-use lazies,
#     the upstream pool, the metric label sets exist before the baseline);
#   * RSS before (VmRSS, master + worker for nginx); then N client
#     connections opened one after another, each sends ONE request
#     (GET /api/recommend, a distinct x-user-id), reads the full response and
#     stays open, idle; after SETTLE seconds, RSS after; every connection is
#     checked to be still open (the proxy did not close it) before it closes;
#   * (RSS after - RSS before) / N in bytes and KiB; medians (min–max).
#
# A fresh proxy per measurement matters: memory freed by an earlier batch of
# connections stays in the allocator and would be reused by the next batch,
# hiding the cost. The grayproxy config sets keepalive_timeout to 120 s, as
# peer.conf.in does for nginx, so that no idle connection of a large batch is
# closed before it is measured.
# Bounded: about RUNS * len(CONNS) * 2 * (2 + N / 3000) s after the build.
set -euo pipefail

CONNS=${CONNS:-"2000 5000"}
RUNS=${RUNS:-3}
SETTLE=${SETTLE:-1}               # seconds between the last response and RSS after
PORT_BASE=${PORT_BASE:-28380}     # five consecutive loopback ports from here
GRAYPROXY_BIN=${GRAYPROXY_BIN:-}  # a prebuilt grayproxy (e.g. an older build); skips the build
GRAYPROXY_ENV=${GRAYPROXY_ENV:-}  # extra environment for grayproxy, e.g. "MALLOC_ARENA_MAX=1"
PROXIES=${PROXIES:-"nginx grayproxy"}

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
WORK=$(mktemp -d /tmp/grayproxy-idle.XXXXXX)
PY=/usr/bin/python3
[[ -x $PY ]] || PY=$(command -v python3)
LOG_TAG=idle
# shellcheck source=lib.sh
source "$HERE/lib.sh"

# ---------------------------------------------------------------- tools, limits
if ! command -v nginx >/dev/null; then
    if [[ $(id -u) -ne 0 ]]; then log "need nginx (apt-get install -y nginx)"; exit 1; fi
    log "installing nginx"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx >/dev/null
fi
for tool in curl ss; do
    command -v "$tool" >/dev/null || { log "missing $tool"; exit 1; }
done
max_n=0
for n in $CONNS; do ((n > max_n)) && max_n=$n; done
want_fds=$((max_n + 1024))
if (($(ulimit -n) < want_fds)); then
    ulimit -n "$want_fds" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
fi
if (($(ulimit -n) < want_fds)); then
    log "open-file limit $(ulimit -n) is below $want_fds (N = $max_n); lower CONNS"
    exit 1
fi

grayproxy_binary

# ---------------------------------------------------------------- ports, configs
require_free_ports "$PORT_STABLE" "$PORT_CANARY" "$PORT_PEER" "$PORT_GRAY" "$PORT_ADMIN"

mkdir -p "$WORK/tmp" "$WORK/state"
fill backends.conf.in backends.conf
# Room for max_n clients (plus the upstream side) in nginx's one worker.
fill peer.conf.in peer.conf
sed -i -e "s/worker_connections [0-9]*;/worker_connections $((max_n * 2 + 1024));/" \
    -e "s/^worker_processes 1;/worker_processes 1;\nworker_rlimit_nofile $want_fds;/" "$WORK/peer.conf"
fill grayproxy.toml.in grayproxy.toml
sed -i -e 's/^workers = 1$/workers = 1\nkeepalive_timeout = "120s"\nmax_connections = '"$((max_n + 1024))"'/' \
    "$WORK/grayproxy.toml"
grep -q '^keepalive_timeout = "120s"' "$WORK/grayproxy.toml" || { log "could not patch grayproxy.toml"; exit 1; }

# ---------------------------------------------------------------- backends
log "starting backends"
nginx -c "$WORK/backends.conf" -p "$WORK" -e "$WORK/backends-error.log" &
PIDS+=($!)
wait_port "$PORT_STABLE"
wait_port "$PORT_CANARY"

# ---------------------------------------------------------------- measure
# The proxies are started and stopped (by PID) per measurement by the Python
# driver below; it prints one TSV line per measurement.
cat >"$WORK/idle.py" <<'PY'
import os, signal, socket, statistics, subprocess, sys, time

work, gray_bin, gray_env, port_peer, port_gray, runs, settle = sys.argv[1:8]
conns = [int(n) for n in sys.argv[8].split()]
proxies = sys.argv[9].split()
runs, settle = int(runs), float(settle)
port = {"nginx": int(port_peer), "grayproxy": int(port_gray)}

def start(name):
    if name == "nginx":
        cmd = ["nginx", "-c", f"{work}/peer.conf", "-p", work, "-e", f"{work}/peer-error.log"]
        env = os.environ.copy()
    else:
        cmd = [gray_bin, "run", "--config", f"{work}/grayproxy.toml"]
        env = os.environ.copy()
        env["RUST_LOG"] = "warn"
        for kv in gray_env.split():
            k, _, v = kv.partition("=")
            env[k] = v
    log = open(f"{work}/{name}.log", "ab")
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=log)

def pids(pid):
    out = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            out += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out

def rss_bytes(pid):
    total = 0
    for p in pids(pid):
        with open(f"/proc/{p}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total

def huge_pages_kib(pid):
    # Anonymous memory backed by transparent huge pages: resident whether
    # touched or not, so it hides what an idle connection really touches.
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("AnonHugePages:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0

def request(sock, i):
    sock.sendall(b"GET /api/recommend HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                 b"User-Agent: idle-conns\r\nAccept: */*\r\n"
                 b"x-user-id: user-%d\r\n\r\n" % i)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("closed before the response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    length = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v)
    while len(rest) < length:
        chunk = sock.recv(4096)
        if not chunk:
            raise RuntimeError("closed mid-body")
        rest += chunk
    if status != b"200":
        raise RuntimeError(f"status {status!r}")

def wait_ready(p, name):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if p.poll() is not None:
            raise RuntimeError("proxy exited at start-up")
        try:
            with socket.create_connection(("127.0.0.1", port[name]), timeout=1) as s:
                request(s, 0)
                return
        except (OSError, RuntimeError):
            time.sleep(0.1)
    raise RuntimeError("proxy did not answer")

def still_open(sock):
    sock.setblocking(False)
    try:
        return sock.recv(1) != b""  # data on an idle connection is a surprise too
    except BlockingIOError:
        return True
    except OSError:
        return False

def measure(name, n):
    p = start(name)
    try:
        wait_ready(p, name)
        warm = [socket.create_connection(("127.0.0.1", port[name])) for _ in range(20)]
        for i in range(200):
            request(warm[i % 20], i)
        for s in warm:
            s.close()
        time.sleep(0.5)
        before = rss_bytes(p.pid)
        socks = []
        try:
            for i in range(n):
                s = socket.create_connection(("127.0.0.1", port[name]))
                socks.append(s)
                request(s, i)
            time.sleep(settle)
            after = rss_bytes(p.pid)
            huge = sum(huge_pages_kib(q) for q in pids(p.pid))
            closed = sum(1 for s in socks if not still_open(s))
        finally:
            for s in socks:
                s.close()
        return before, after, closed, huge
    finally:
        p.send_signal(signal.SIGTERM if name == "grayproxy" else signal.SIGQUIT)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()

for run in range(1, runs + 1):
    order = proxies if run % 2 else list(reversed(proxies))
    for n in conns:
        for name in order:
            before, after, closed, huge = measure(name, n)
            per = (after - before) / n
            print(f"[idle] run {run}/{runs} N={n} {name}: RSS {before/2**20:.1f} -> "
                  f"{after/2**20:.1f} MiB ({huge/1024:.0f} MiB in huge pages), {per:,.0f} B/conn"
                  + (f", {closed} closed by the proxy!" if closed else ""), file=sys.stderr)
            print(f"{name}\t{n}\t{run}\t{before}\t{after}\t{closed}", flush=True)
PY

RESULTS="$WORK/results.tsv"
$PY "$WORK/idle.py" "$WORK" "$GRAYPROXY" "$GRAYPROXY_ENV" "$PORT_PEER" "$PORT_GRAY" \
    "$RUNS" "$SETTLE" "$CONNS" "$PROXIES" >"$RESULTS"

# ---------------------------------------------------------------- report
$PY - "$RESULTS" "$RUNS" <<'PY'
import statistics, sys
path, runs = sys.argv[1], sys.argv[2]
rows = {}
for line in open(path):
    name, n, run, before, after, closed = line.split("\t")
    rows.setdefault((int(n), name), []).append(
        ((int(after) - int(before)) / int(n), int(before), int(after), int(closed)))
print()
print(f"memory per idle keep-alive client connection, {runs} runs, medians (min–max);")
print("a fresh proxy per measurement, one request per connection, then idle")
print()
print("| N | proxy | KiB / idle conn | bytes / idle conn | RSS before → after (MiB) |")
print("|---|---|---|---|---|")
for (n, name) in sorted(rows):
    r = rows[(n, name)]
    per = [x[0] for x in r]
    med = statistics.median(per)
    b = statistics.median(x[1] for x in r) / 2**20
    a = statistics.median(x[2] for x in r) / 2**20
    bad = sum(x[3] for x in r)
    note = f" ({bad} closed early!)" if bad else ""
    print(f"| {n:,} | {name} | {med/1024:.1f} ({min(per)/1024:.1f}–{max(per)/1024:.1f}) "
          f"| {med:,.0f} | {b:.1f} → {a:.1f}{note} |")
PY
