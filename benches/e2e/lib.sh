# Shared by the benches/e2e scripts (sourced, not run): the work directory
# and its clean-up by PID, the loopback ports, the 264-byte JSON bodies, the
# config templates, and waiting for a port to answer.
# The sourcing script sets HERE (this folder), WORK (a fresh temp dir),
# LOG_TAG and PORT_BASE first.

PIDS=()

log() { printf '[%s] %s\n' "$LOG_TAG" "$*" >&2; }

# Stops what the script started (PIDS), and only that; keeps WORK if KEEP is set.
# On a failure, the end of every log in WORK goes to stderr first, so the
# reason is shown even when WORK is removed.
cleanup() {
    local status=$? pid f
    if [[ $status -ne 0 ]]; then
        for f in "$WORK"/*.log; do
            [[ -s "$f" && "$f" != */stable.log && "$f" != */canary.log ]] || continue
            log "exit $status; last lines of $(basename "$f"):"
            tail -n 15 "$f" >&2 || true
        done
    fi
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -z "${KEEP:-}" ]]; then rm -rf "$WORK"; else log "kept $WORK"; fi
}
trap cleanup EXIT

PORT_STABLE=$PORT_BASE
PORT_CANARY=$((PORT_BASE + 1))
PORT_PEER=$((PORT_BASE + 2))
PORT_GRAY=$((PORT_BASE + 3))
PORT_ADMIN=$((PORT_BASE + 4))
PORT_BARE=$((PORT_BASE + 5))
PORT_ROUTES=$((PORT_BASE + 6))       # run.sh ROUTES=N: the grayproxy with N routes
PORT_ROUTES_ADMIN=$((PORT_BASE + 7)) # and its admin listener

# Exits when any of the given ports is already listened on.
require_free_ports() {
    local p
    for p in "$@"; do
        if ss -Hltn "sport = :$p" | grep -q .; then
            log "port $p is in use; set PORT_BASE"
            exit 1
        fi
    done
}

# A 264-byte JSON body; the two arms differ only in the model name.
body() {
    local head="{\"model\":\"$1\",\"items\":[{\"id\":1001,\"score\":0.97},{\"id\":1002,\"score\":0.91},{\"id\":1003,\"score\":0.88},{\"id\":1004,\"score\":0.85},{\"id\":1005,\"score\":0.81}],\"pad\":\""
    local tail='"}'
    local pad=$((264 - ${#head} - ${#tail}))
    printf '%s%s%s' "$head" "$(printf 'x%.0s' $(seq 1 "$pad"))" "$tail"
}
BODY_STABLE=$(body reco-v1)
BODY_CANARY=$(body reco-v2)
[[ ${#BODY_STABLE} -eq 264 && ${#BODY_CANARY} -eq 264 ]] || { log "body is not 264 bytes"; exit 1; }

# fill TEMPLATE OUTPUT: HERE/TEMPLATE with the @PLACEHOLDERS@ filled, into WORK/OUTPUT.
fill() {
    sed -e "s#@DIR@#$WORK#g" \
        -e "s#@PORT_STABLE@#$PORT_STABLE#g" -e "s#@PORT_CANARY@#$PORT_CANARY#g" \
        -e "s#@PORT_PEER@#$PORT_PEER#g" -e "s#@PORT_GRAY@#$PORT_GRAY#g" \
        -e "s#@PORT_ADMIN@#$PORT_ADMIN#g" \
        -e "s#@BODY_STABLE@#$BODY_STABLE#g" -e "s#@BODY_CANARY@#$BODY_CANARY#g" \
        "$HERE/$1" >"$WORK/$2"
}

# Waits up to $2 seconds (default 10) for a proxy or backend on port $1 to
# answer; exits if none does.
wait_port() {
    local i
    for i in $(seq 1 "$((${2:-10} * 10))"); do
        if curl -fsS -o /dev/null "http://127.0.0.1:$1/api/recommend" -H 'x-user-id: probe' 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    log "nothing answers on port $1"
    exit 1
}

# Sets GRAYPROXY: GRAYPROXY_BIN when given (e.g. an older build for a
# before/after), else a fresh build of this checkout with cargo profile
# $PROFILE (default release; needs ROOT).
grayproxy_binary() {
    if [[ -n "${GRAYPROXY_BIN:-}" ]]; then
        GRAYPROXY=$GRAYPROXY_BIN
    else
        local profile=${PROFILE:-release}
        log "building grayproxy ($profile)"
        (cd "$ROOT" && cargo build --profile "$profile" --quiet --bin grayproxy)
        GRAYPROXY="${CARGO_TARGET_DIR:-$ROOT/target}/$profile/grayproxy"
    fi
    [[ -x "$GRAYPROXY" ]] || { log "no grayproxy binary at $GRAYPROXY"; exit 1; }
}

# ---------------------------------------------------------------- pinning and /proc
# Pinned, and niced alike (root only; otherwise plain). `pin_bg ... &`
# execs, so that $! is the PID of the program itself.
pin() {
    local cpu=$1
    shift
    if [[ $(id -u) -eq 0 ]]; then
        nice -n "$NICE" taskset -c "$cpu" "$@"
    else
        taskset -c "$cpu" "$@"
    fi
}
pin_bg() {
    local cpu=$1
    shift
    if [[ $(id -u) -eq 0 ]]; then
        exec nice -n "$NICE" taskset -c "$cpu" "$@"
    else
        exec taskset -c "$cpu" "$@"
    fi
}
proc_pids() { echo "$1"; cat "/proc/$1/task/$1/children" 2>/dev/null || true; }
# utime + stime in clock ticks, summed over the proxy's processes.
cpu_ticks() {
    local total=0 pid fields
    for pid in $(proc_pids "$1"); do
        fields=$(sed 's/^.*) //' "/proc/$pid/stat")
        total=$((total + $(awk '{print $12 + $13}' <<<"$fields")))
    done
    echo "$total"
}
rss_kib() {
    local total=0 pid
    for pid in $(proc_pids "$1"); do
        total=$((total + $(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")))
    done
    echo "$total"
}
now() { date +%s.%N; }
