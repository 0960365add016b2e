#!/usr/bin/env bash
# Every benchmark behind docs/performance.md and the README's performance
# table, in one command, one summary at the end.
#
#   benches/e2e/all.sh                          # release build (fat LTO), ~30 minutes
#   PARTS="same callgrind" benches/e2e/all.sh   # only some parts
#   GRAYPROXY_BIN=/path/grayproxy BARE_BIN=/path/bare_hyper_proxy benches/e2e/all.sh  # no build
#   PROFILE=quick-release ROUNDS=1 DURATION=3 LAT_DURATION=3 benches/e2e/all.sh     # checks the scripts
#
# Parts, in this order (PARTS picks and orders them):
#   same       BARE=1 run.sh: nginx / grayproxy / bare hyper, one core each
#   workers    WORKERS=2 run.sh: nginx and grayproxy with 2 workers, sharing
#              both cores with the backends and wrk
#   routes     ROUTES=10000 run.sh: grayproxy with 10,000 routes (the load
#              hits the last) vs the same binary with 1 route
#   callgrind  callgrind.sh: instructions per request, grayproxy
#   callgrind-bare  BARE=1 callgrind.sh: the same for the bare hyper floor
#   callgrind-plain callgrind.sh with grayproxy-plain.toml.in: grayproxy with
#              no sticky key, rules or arm header (its path's own floor)
#   idle       idle_conns.sh: memory per idle keep-alive connection
#   large      ../large_config.sh: check, start-up, reload, RSS, /metrics
#              with 1,000 and 10,000 routes
#   criterion  cargo bench --bench routing: decide, route lookup at 10 /
#              1,000 / 10,000 routes, sticky_in with 100,000 ids
#
# The binaries are built once (grayproxy and examples/bare_hyper_proxy,
# cargo profile $PROFILE, default release) unless GRAYPROXY_BIN and BARE_BIN
# are both given, and every part gets them through GRAYPROXY_BIN / BARE_BIN
# or its binary argument. A part that fails (or runs longer than
# PART_TIMEOUT seconds) is reported as failed with the end of its stderr,
# and the next part still runs; the exit status is 1 if any part failed.
# Each part's stdout and stderr are kept in OUT (printed at the end).
set -uo pipefail

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10}
LAT_DURATION=${LAT_DURATION:-10}
PROFILE=${PROFILE:-release}
BIG_ROUTES=${BIG_ROUTES:-10000}     # routes of the `routes` part
MULTI_WORKERS=${MULTI_WORKERS:-2}   # workers of the `workers` part
PARTS=${PARTS:-"same workers routes callgrind callgrind-bare callgrind-plain idle large criterion"}
PART_TIMEOUT=${PART_TIMEOUT:-3600}
GRAYPROXY_BIN=${GRAYPROXY_BIN:-}
BARE_BIN=${BARE_BIN:-}
# The parts read these from the environment with meanings of their own
# (CONNS is connections per run in run.sh, the idle batch sizes in
# idle_conns.sh; ROUTES a count in run.sh, a list in large_config.sh):
# each part gets only what this script passes it.
unset WORKERS ROUTES BARE CONNS RUNS PROXIES PORT_BASE SECONDS_LOAD TOP CPUS RATE

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${OUT:-$(mktemp -d /tmp/grayproxy-bench.XXXXXX)}
mkdir -p "$OUT"
log() { printf '[all] %s\n' "$*" >&2; }

for part in $PARTS; do
    case $part in
        same | workers | routes | callgrind | callgrind-bare | callgrind-plain | idle | large | criterion) ;;
        *) log "unknown part '$part'"; exit 2 ;;
    esac
done

# ---------------------------------------------------------------- build once
if [[ -z "$GRAYPROXY_BIN" || -z "$BARE_BIN" ]]; then
    log "building grayproxy and examples/bare_hyper_proxy ($PROFILE)"
    if ! (cd "$ROOT" && cargo build --profile "$PROFILE" --bin grayproxy --example bare_hyper_proxy); then
        log "build failed; nothing measured"
        exit 1
    fi
    target="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"
    GRAYPROXY_BIN=${GRAYPROXY_BIN:-$target/grayproxy}
    BARE_BIN=${BARE_BIN:-$target/examples/bare_hyper_proxy}
fi
for bin in "$GRAYPROXY_BIN" "$BARE_BIN"; do
    [[ -x "$bin" ]] || { log "no binary at $bin"; exit 1; }
done
GRAYPROXY_BIN=$(realpath "$GRAYPROXY_BIN")
BARE_BIN=$(realpath "$BARE_BIN")
export GRAYPROXY_BIN BARE_BIN PROFILE

# ---------------------------------------------------------------- parts
declare -A STATUS SPENT
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
STARTED=$(date -u '+%Y-%m-%d %H:%M UTC')

# A part runs under `timeout`, in its own process group, which terminal
# signals do not reach: an interrupt is passed on to it (by PID), and the
# part's own clean-up stops what it started.
CURRENT=
interrupted() {
    log "interrupted; stopping the running part"
    if [[ -n "$CURRENT" ]]; then
        kill -TERM "$CURRENT" 2>/dev/null
        wait "$CURRENT" 2>/dev/null
    fi
    exit 130
}
trap interrupted INT TERM

# run_part NAME COMMAND...: stdout to OUT/NAME.out, stderr to OUT/NAME.err
# and the terminal; records the exit status and the time taken.
run_part() {
    local name=$1 t0=$SECONDS rc
    shift
    log "== $name: $*"
    timeout -k 30 "$PART_TIMEOUT" "$@" >"$OUT/$name.out" 2> >(tee "$OUT/$name.err" >&2) &
    CURRENT=$!
    wait "$CURRENT"
    rc=$?
    CURRENT=
    wait # the tee of its stderr
    STATUS[$name]=$rc
    SPENT[$name]=$((SECONDS - t0))
    if [[ $rc -eq 0 ]]; then
        cat "$OUT/$name.out" >&2
    else
        log "$name FAILED (exit $rc$([[ $rc -eq 124 ]] && echo ", timed out after ${PART_TIMEOUT}s"))"
    fi
}

RUN=(env ROUNDS="$ROUNDS" DURATION="$DURATION" LAT_DURATION="$LAT_DURATION" "$HERE/run.sh")
for part in $PARTS; do
    case $part in
        same) run_part same env BARE=1 "${RUN[@]}" ;;
        workers) run_part workers env WORKERS="$MULTI_WORKERS" "${RUN[@]}" ;;
        routes) run_part routes env ROUTES="$BIG_ROUTES" "${RUN[@]}" ;;
        callgrind) run_part callgrind "$HERE/callgrind.sh" "$GRAYPROXY_BIN" ;;
        callgrind-bare) run_part callgrind-bare env BARE=1 "$HERE/callgrind.sh" "$BARE_BIN" ;;
        callgrind-plain)
            run_part callgrind-plain env CONFIG_IN="$HERE/grayproxy-plain.toml.in" \
                "$HERE/callgrind.sh" "$GRAYPROXY_BIN"
            ;;
        idle) run_part idle "$HERE/idle_conns.sh" ;;
        large) run_part large "$ROOT/benches/large_config.sh" ;;
        criterion)
            # Its own build (the bench harness links the library); same profile.
            run_part criterion bash -c "set -o pipefail; cd '$ROOT' &&
                cargo bench --profile '$PROFILE' --bench routing -- 'decide|find_route|sticky_in' |
                grep -E '^(decide|find_route|sticky_in)|time:'"
            ;;
    esac
done

# ---------------------------------------------------------------- summary
describe() {
    case $1 in
        same) echo "same-run table: nginx / grayproxy / bare hyper, one core each (BARE=1 run.sh)" ;;
        workers) echo "multi-core: $MULTI_WORKERS workers each, all processes on the same $MULTI_WORKERS cores (WORKERS=$MULTI_WORKERS run.sh)" ;;
        routes) echo "route table: $BIG_ROUTES routes, the last one hit, vs 1 route (ROUTES=$BIG_ROUTES run.sh)" ;;
        callgrind) echo "instructions per proxied request, grayproxy (callgrind.sh)" ;;
        callgrind-bare) echo "instructions per proxied request, bare hyper floor (BARE=1 callgrind.sh)" ;;
        callgrind-plain) echo "instructions per proxied request, grayproxy without sticky key, rules or arm header (callgrind.sh, grayproxy-plain.toml.in)" ;;
        idle) echo "memory per idle keep-alive connection (idle_conns.sh)" ;;
        large) echo "large configs: check, start-up, reload, RSS, /metrics (benches/large_config.sh)" ;;
        criterion) echo "criterion: decide, route lookup, sticky_in (cargo bench --bench routing)" ;;
    esac
}
per_request() { awk '/per request:/ {print $NF}' "$OUT/$1.out" 2>/dev/null; }

{
    echo
    echo "# grayproxy benchmarks, $STARTED"
    echo
    echo "checkout: $(cd "$ROOT" && git describe --always --dirty 2>/dev/null || echo unknown)"
    echo "grayproxy: $GRAYPROXY_BIN"
    echo "bare hyper: $BARE_BIN"
    echo "ROUNDS=$ROUNDS DURATION=$DURATION LAT_DURATION=$LAT_DURATION PROFILE=$PROFILE"
    echo "load average before: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "each part's full stdout and stderr: $OUT"
    for part in $PARTS; do
        echo
        echo "## $(describe "$part")"
        echo
        if [[ ${STATUS[$part]} -eq 0 ]]; then
            echo "(ok, ${SPENT[$part]} s)"
            cat "$OUT/$part.out"
        else
            echo "**FAILED** (exit ${STATUS[$part]}, ${SPENT[$part]} s); last lines of its stderr:"
            tail -n 20 "$OUT/$part.err"
        fi
    done
    gray=$(per_request callgrind)
    bare=$(per_request callgrind-bare)
    plain=$(per_request callgrind-plain)
    if [[ -n "$gray" && -n "$bare" ]]; then
        echo
        echo "instructions per request, grayproxy / bare hyper: $gray / $bare = $(python3 -c "print(f'{$gray / $bare:.2f}')")"
    fi
    if [[ -n "$plain" && -n "$bare" ]]; then
        echo "instructions per request, plain grayproxy / bare hyper: $plain / $bare = $(python3 -c "print(f'{$plain / $bare:.2f}')")"
    fi
    echo
    echo "| part | status | seconds |"
    echo "|---|---|---|"
    for part in $PARTS; do
        if [[ ${STATUS[$part]} -eq 0 ]]; then s=ok; else s="FAILED (exit ${STATUS[$part]})"; fi
        echo "| $part | $s | ${SPENT[$part]} |"
    done
} | tee "$OUT/summary.md"
failed=0
for part in $PARTS; do [[ ${STATUS[$part]} -eq 0 ]] || failed=1; done
exit "$failed"
