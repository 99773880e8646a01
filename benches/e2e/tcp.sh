#!/usr/bin/env bash
# =============================================================================
# tcp.sh - Menshen's tcp (layer 4) listeners beside HAProxy in mode tcp, in ONE run,
# on this 2-core machine, loopback only, bounded in time.
#
# Targets (the proxies pinned to core PROXY_CPU, one thread each):
#   direct          no proxy: the load tool talks to the upstream (the ceiling)
#   haproxy         HAProxy, mode tcp, nbthread 1, option tcplog (default: no splice)
#   haproxy-splice  the same HAProxy process, listeners with splice forced both ways
#                   (option splice-request + splice-response): what splice is worth
#   menshen         Menshen tcp listener, guard = "none" (taskset to one core makes it
#                   pick its single-threaded runtime), audit log on
#   menshen-ssh     the same Menshen, guard = "ssh" (connection rate only: iperf3
#                   cannot send an SSH identification line first)
# Upstreams and load tools are pinned to core LOAD_CPU:
#   bulk1 / bulk8   iperf3 client -> proxy -> iperf3 server, 1 / BULK_PAR (8) parallel
#                   connections, client to server direction, DURATION seconds: MiB/s
#   crr             tcpload (benches/e2e/tcpload, built here): CRR_CONNS (32) loops of
#                   connect, send REQ_BYTES (64: an SSH identification line padded),
#                   read REP_BYTES (64), close: new connections per second
# For each run the proxy's CPU time (utime+stime of the whole process, /proc/PID/stat)
# is taken before and after: "proxy CPU us/MiB" and "us/conn" are the figures that
# stay put on a busy machine; MiB/s and conn/s also depend on what else runs.
# On two cores the load side (iperf3 client + server, or tcpload client + server) costs
# about as much CPU per MiB or per connection as a proxy, so core LOAD_CPU saturates
# first and MiB/s and conn/s are mostly load-bound; the "load core busy" and "proxy
# process CPU, % of its core" rows show it. The ssh guard costs latency (the gateway
# connects upstream only after the client's first line) more than CPU.
# Order: rep -> case -> target, the target order rotated every rep; medians of REPS.
# The gateway must have tcp listeners (kind = "tcp"): the run stops at `menshen check`
# otherwise; if its ssh guard does not pass tcpload's identification line, menshen-ssh
# is dropped with a warning.
#
# Usage (from anywhere):
#   benches/e2e/tcp.sh                   # full run: 10 s per case, medians of 3 (~8 min)
#   QUICK=1 benches/e2e/tcp.sh           # 3 s per case, one rep (~1 min)
#   MENSHEN_BIN=/path/to/menshen benches/e2e/tcp.sh   # a prebuilt gateway, no cargo build
#   TARGETS="haproxy menshen" CASES=crr REPS=5 DURATION=5 benches/e2e/tcp.sh
#   SYSCALLS=1 benches/e2e/tcp.sh        # + the proxy's syscalls per MiB / per connection
#                                        # (perf stat on tracepoints: slows the proxies a
#                                        # little, so CPU figures of such a run are not
#                                        # comparable with a plain run)
# Knobs: QUICK DURATION(integer s) REPS CASES TARGETS PROXY_CPU LOAD_CPU BULK_PAR
#   CRR_CONNS REQ_BYTES REP_BYTES PORT_BASE(18600) SETTLE OUT KEEP_TMP=1 MENSHEN_BIN SYSCALLS
# Needs: haproxy iperf3 openssl python3 taskset ss, cargo (apt-get install -y haproxy
#   iperf3 openssl python3 util-linux iproute2).
# Results: $OUT (default target/bench-tcp/<UTC stamp>/): summary.md, results.jsonl,
#   meta.txt, raw/. Everything started here is stopped by PID on exit (trap);
#   nothing but 127.0.0.1 is used. Builds run under nice; measured processes do not.
# =============================================================================
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
PY="python3 $HERE/tcp_report.py"

QUICK=${QUICK:-0}
if [[ "$QUICK" == 1 ]]; then
    DURATION=${DURATION:-3}
    REPS=${REPS:-1}
    SETTLE=${SETTLE:-0.3}
else
    DURATION=${DURATION:-10}
    REPS=${REPS:-3}
    SETTLE=${SETTLE:-1}
fi
CASES=${CASES:-"bulk1 bulk8 crr"}
TARGETS=${TARGETS:-"direct haproxy haproxy-splice menshen menshen-ssh"}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BULK_PAR=${BULK_PAR:-8}
CRR_CONNS=${CRR_CONNS:-32}
REQ_BYTES=${REQ_BYTES:-64}
REP_BYTES=${REP_BYTES:-64}
PORT_BASE=${PORT_BASE:-18600}
SYSCALLS=${SYSCALLS:-0}
SYSCALL_EVENTS=raw_syscalls:sys_enter,syscalls:sys_enter_read,syscalls:sys_enter_write,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto,syscalls:sys_enter_splice,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_futex,syscalls:sys_enter_accept4,syscalls:sys_enter_connect
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
OUT=${OUT:-$REPO/target/bench-tcp/$STAMP}

# Ports: upstreams, then one listener per (proxy, case).
UP_BULK=$((PORT_BASE + 40)) UP_CRR=$((PORT_BASE + 41))
HA_BULK=$((PORT_BASE + 5)) HA_CRR=$((PORT_BASE + 6))
HAS_BULK=$((PORT_BASE + 15)) HAS_CRR=$((PORT_BASE + 16))
M_BULK=$((PORT_BASE + 7)) M_CRR=$((PORT_BASE + 8)) M_CRR_SSH=$((PORT_BASE + 9))

STARTED=()
declare -A PID=()
CLIENT_PID="" AUX_PID=""   # the load client of the current run, perf stat (SYSCALLS=1)

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ "$DURATION" =~ ^[0-9]+$ && "$DURATION" -ge 1 ]] || die "DURATION must be whole seconds (iperf3 -t)"
for c in $CASES; do case $c in bulk1|bulk8|crr) ;; *) die "unknown case $c" ;; esac; done
for t in $TARGETS; do
    case $t in direct|haproxy|haproxy-splice|menshen|menshen-ssh) ;; *) die "unknown target $t" ;; esac
done
has_target() { [[ " $TARGETS " == *" $1"* ]]; }   # prefix match: "menshen" also for menshen-ssh

# ------------------------------------------------------------------ checks & builds
for b in iperf3 openssl python3 taskset ss timeout; do
    command -v "$b" >/dev/null || die "missing $b (apt-get install -y iperf3 openssl python3 util-linux iproute2 coreutils)"
done
if [[ "$SYSCALLS" == 1 ]]; then
    command -v perf >/dev/null || die "SYSCALLS=1 needs perf (apt-get install -y linux-perf)"
    perf stat -e "$SYSCALL_EVENTS" -- true >/dev/null 2>&1 || die "SYSCALLS=1: perf cannot read the syscall tracepoints"
fi
if has_target haproxy; then command -v haproxy >/dev/null || die "missing haproxy (apt-get install -y haproxy)"; fi
NCPU=$(nproc)
for v in "$PROXY_CPU" "$LOAD_CPU"; do
    [[ "$v" =~ ^[0-9]+$ ]] && (( v < NCPU )) || die "cpu $v out of range (nproc=$NCPU)"
done
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

TCPLOAD=$REPO/target/tcpload/release/tcpload
log "building tcpload (nice)"
(cd "$HERE/tcpload" && CARGO_TARGET_DIR=$REPO/target/tcpload nice -n 10 cargo build --release --locked -q) \
    || die "tcpload build failed"
if has_target menshen; then
    if [[ -z "${MENSHEN_BIN:-}" ]]; then
        log "building menshen (nice, cargo build --release)"
        (cd "$REPO" && nice -n 10 cargo build --release -q) || die "menshen build failed"
        MENSHEN_BIN=$REPO/target/release/menshen
    fi
    [[ -x "$MENSHEN_BIN" ]] || die "no menshen binary at $MENSHEN_BIN"
fi

for p in $UP_BULK $UP_CRR $HA_BULK $HA_CRR $HAS_BULK $HAS_CRR $M_BULK $M_CRR $M_CRR_SSH; do
    [[ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]] || die "port $p already in use (set PORT_BASE=...)"
done

mkdir -p "$OUT/raw" || die "cannot create $OUT"
RUN=$(mktemp -d /tmp/menshen-tcpbench.XXXXXX)   # same disk as the repo here: the logs go there
LOGDIR=$RUN/logs
mkdir -p "$LOGDIR"
JSONL=$OUT/results.jsonl
: > "$JSONL"

# ------------------------------------------------------------------ cleanup
cleanup() {
    local rc=$? i p
    trap - EXIT INT TERM
    for p in $CLIENT_PID $AUX_PID; do kill -TERM "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    for (( i=${#STARTED[@]}-1; i>=0; i-- )); do
        p=${STARTED[$i]}
        kill -TERM "$p" 2>/dev/null
    done
    for (( i=${#STARTED[@]}-1; i>=0; i-- )); do
        p=${STARTED[$i]}
        for _ in $(seq 1 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null
        wait "$p" 2>/dev/null
    done
    if [[ "${KEEP_TMP:-0}" == 1 ]]; then log "kept $RUN"; else rm -rf "$RUN"; fi
    exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

start_bg() {  # name cpu cmd...   (stdout+stderr to $RUN/name.out)
    local name=$1 cpu=$2; shift 2
    taskset -c "$cpu" "$@" >>"$RUN/$name.out" 2>&1 &
    PID[$name]=$!
    STARTED+=("$!")
}

wait_port() {  # port timeout_s name
    local i
    for (( i=0; i<$2*10; i++ )); do
        [[ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]] && return 0
        kill -0 "${PID[$3]}" 2>/dev/null || break
        sleep 0.1
    done
    log "$3 is not listening on :$1; its output:"; tail -20 "$RUN/$3.out" >&2
    die "$3 failed to start"
}

render() {  # template output
    sed -e "s#@RUN@#$RUN#g" -e "s#@LOGDIR@#$LOGDIR#g" -e "s#@CERT@#$RUN/cert.pem#g" \
        -e "s#@KEY@#$RUN/key.pem#g" -e "s#@UP_BULK@#$UP_BULK#g" -e "s#@UP_CRR@#$UP_CRR#g" \
        -e "s#@HA_BULK@#$HA_BULK#g" -e "s#@HA_CRR@#$HA_CRR#g" -e "s#@HAS_BULK@#$HAS_BULK#g" \
        -e "s#@HAS_CRR@#$HAS_CRR#g" -e "s#@PORT_BULK@#$M_BULK#g" -e "s#@PORT_CRR@#$M_CRR#g" \
        -e "s#@PORT_CRR_SSH@#$M_CRR_SSH#g" "$1" > "$2"
}

# ------------------------------------------------------------------ start
log "run dir $RUN, results $OUT"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$RUN/key.pem" -out "$RUN/cert.pem" -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost" >"$RUN/openssl.log" 2>&1 \
    || die "openssl: $(tail -3 "$RUN/openssl.log")"

start_bg iperf3-server "$LOAD_CPU" iperf3 -s -B 127.0.0.1 -p "$UP_BULK"
start_bg tcpload-server "$LOAD_CPU" "$TCPLOAD" serve --listen "127.0.0.1:$UP_CRR" --req "$REQ_BYTES" --rep "$REP_BYTES"
wait_port "$UP_BULK" 10 iperf3-server
wait_port "$UP_CRR" 10 tcpload-server

if has_target haproxy; then
    render "$HERE/tcp-haproxy.cfg.in" "$RUN/haproxy.cfg"
    haproxy -c -f "$RUN/haproxy.cfg" >"$RUN/haproxy.check" 2>&1 || die "haproxy config: $(cat "$RUN/haproxy.check")"
    # -db: foreground, one process; stdout is the connection log (option tcplog).
    taskset -c "$PROXY_CPU" haproxy -db -f "$RUN/haproxy.cfg" >>"$LOGDIR/haproxy.log" 2>>"$RUN/haproxy.out" &
    PID[haproxy]=$!; STARTED+=("$!")
    for p in $HA_BULK $HA_CRR $HAS_BULK $HAS_CRR; do wait_port "$p" 10 haproxy; done
fi
if has_target menshen; then
    render "$HERE/tcp-menshen.toml.in" "$RUN/menshen.toml"
    if ! "$MENSHEN_BIN" check -c "$RUN/menshen.toml" >"$RUN/menshen.check" 2>&1; then
        cat "$RUN/menshen.check" >&2
        die "menshen check refused the config (does $MENSHEN_BIN have tcp listeners, kind = \"tcp\"?)"
    fi
    start_bg menshen "$PROXY_CPU" "$MENSHEN_BIN" run -c "$RUN/menshen.toml"
    for (( i=0; i<200; i++ )); do   # ready once it printed its three listeners
        (( $(grep -c '^menshen: listener ' "$RUN/menshen.out" 2>/dev/null) >= 3 )) && break
        kill -0 "${PID[menshen]}" 2>/dev/null || break
        sleep 0.1
    done
    (( $(grep -c '^menshen: listener ' "$RUN/menshen.out" 2>/dev/null) >= 3 )) \
        || { tail -20 "$RUN/menshen.out" >&2; die "menshen did not start"; }
fi

proxy_of() {  # target -> process name in PID[] ("" for direct)
    case $1 in haproxy*) echo haproxy ;; menshen*) echo menshen ;; *) echo "" ;; esac
}
port_of() {  # target case -> port ("" = not applicable)
    local k=$2; k=${k%[0-9]}                       # bulk1/bulk8 -> bulk
    case $1:$k in
        direct:bulk) echo $UP_BULK ;;          direct:crr) echo $UP_CRR ;;
        haproxy:bulk) echo $HA_BULK ;;         haproxy:crr) echo $HA_CRR ;;
        haproxy-splice:bulk) echo $HAS_BULK ;; haproxy-splice:crr) echo $HAS_CRR ;;
        menshen:bulk) echo $M_BULK ;;          menshen:crr) echo $M_CRR ;;
        menshen-ssh:crr) echo $M_CRR_SSH ;;    *) echo "" ;;
    esac
}
log_of() {  # target -> its connection log (a glob for Menshen's daily file)
    case $1 in haproxy*) echo "$LOGDIR/haproxy.log" ;; menshen*) echo "$LOGDIR/menshen-*.jsonl" ;; *) echo "" ;; esac
}
log_size() {  # glob -> bytes in the newest match (0 if none)
    local f
    f=$(ls -t $1 2>/dev/null | head -1)
    [[ -n "$f" ]] && stat -c %s "$f" || echo 0
}
crr() {  # port duration conns
    timeout -k 2 $(( ${2%.*} + 20 )) taskset -c "$LOAD_CPU" "$TCPLOAD" crr --connect "127.0.0.1:$1" \
        --duration "$2" --conns "$3" --req "$REQ_BYTES" --rep "$REP_BYTES"
}

# ------------------------------------------------------------------ verify
# Each target answers tcpload without errors; the ssh guard passes tcpload's request and
# refuses bytes that are not SSH (the guard is live, not a pass-through).
for t in $TARGETS; do
    p=$(port_of "$t" crr)
    r=$(crr "$p" 0.5 2 2>&1)
    if ! grep -q '"errors":0' <<<"$r" || grep -q '"ok":0,' <<<"$r"; then
        if [[ $t == menshen-ssh ]]; then
            log "WARNING: menshen-ssh does not pass tcpload's SSH identification line: $r"
            log "         (guard = \"ssh\" not working in this build?) - dropping menshen-ssh"
            TARGETS=$(sed 's/ *menshen-ssh//' <<<"$TARGETS")
            continue
        fi
        die "$t: check failed: $r"
    fi
    if [[ $t == menshen-ssh ]]; then
        refused=$(python3 - "$p" <<'EOF'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=8)
s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + b"x" * 40)
try:
    print("refused" if s.recv(100) == b"" else "ANSWERED")
except ConnectionResetError:
    print("refused")
except socket.timeout:
    print("TIMEOUT")
EOF
)
        [[ $refused == refused ]] || die "menshen-ssh: a non-SSH client was not refused ($refused)"
    fi
done
[[ -n "${TARGETS// /}" ]] || die "no targets left"

{
    echo "date_utc: $(date -u '+%Y-%m-%d %H:%M:%S')"
    echo "host: $(lscpu | sed -n 's/^Model name:[[:space:]]*//p'), $NCPU CPUs, kernel $(uname -r)"
    echo "uptime at start: $(uptime)"
    has_target haproxy && echo "haproxy: $(haproxy -v | head -1)"
    echo "iperf3: $(iperf3 --version | head -1)"
    echo "script: $REPO at $(git -C "$REPO" log -1 --format='%h %s' 2>/dev/null)"
    if has_target menshen; then
        echo "menshen: $MENSHEN_BIN ($(stat -c '%y' "$MENSHEN_BIN" | cut -d. -f1), sha256 $(sha256sum "$MENSHEN_BIN" | cut -c1-12))"
    fi
    echo "settings: DURATION=$DURATION REPS=$REPS CASES='$CASES' TARGETS='$TARGETS' PROXY_CPU=$PROXY_CPU LOAD_CPU=$LOAD_CPU BULK_PAR=$BULK_PAR CRR_CONNS=$CRR_CONNS REQ_BYTES=$REQ_BYTES REP_BYTES=$REP_BYTES"
    [[ "$SYSCALLS" == 1 ]] && echo "SYSCALLS=1: perf stat -e $SYSCALL_EVENTS on the proxy during each run"
    echo "checks passed: every target answered tcpload; menshen-ssh refused a non-SSH client"
} | tee "$OUT/meta.txt" >&2

# ------------------------------------------------------------------ run
run_one() {  # target case rep
    local t=$1 c=$2 rep=$3 id="r$3-$2-$1" port tool proxy lg off=0
    local raw=$OUT/raw/$id.txt
    port=$(port_of "$t" "$c")
    [[ -n "$port" ]] || return 0
    proxy=$(proxy_of "$t")
    lg=$(log_of "$t")
    [[ -n "$lg" ]] && off=$(log_size "$lg")
    local upstream=tcpload-server
    [[ $c == bulk* ]] && upstream=iperf3-server
    local sc="" scout=$OUT/raw/$id.syscalls
    if [[ "$SYSCALLS" == 1 && -n "$proxy" ]]; then   # count the proxy's syscalls (tracepoints)
        perf stat -x, -o "$scout" -e "$SYSCALL_EVENTS" -p "${PID[$proxy]}" 2>/dev/null &
        AUX_PID=$!; sc=$scout
        sleep 0.3
    fi
    $PY snap "$RUN/snap.a" ${proxy:+${PID[$proxy]}} "${PID[$upstream]}"
    # The client runs in the background so that a signal reaches the trap at once.
    case $c in
        bulk1|bulk8) tool=iperf3
            local par=1; [[ $c == bulk8 ]] && par=$BULK_PAR
            timeout -k 2 $((DURATION + 20)) taskset -c "$LOAD_CPU" iperf3 -c 127.0.0.1 -p "$port" \
                -t "$DURATION" -P "$par" -J >"$raw" 2>&1 &
            CLIENT_PID=$! ;;
        crr) tool=tcpload
            crr "$port" "$DURATION" "$CRR_CONNS" >"$raw" 2>&1 &
            CLIENT_PID=$! ;;
    esac
    wait "$CLIENT_PID"; CLIENT_PID=""
    $PY snap "$RUN/snap.b" ${proxy:+${PID[$proxy]}} "${PID[$upstream]}"
    if [[ -n "$AUX_PID" ]]; then kill -INT "$AUX_PID" 2>/dev/null; wait "$AUX_PID" 2>/dev/null; AUX_PID=""; fi
    sleep "$SETTLE"   # let the last connections' log lines land before counting them
    $PY record "$JSONL" id="$id" target="$t" case="$c" rep="$rep" tool="$tool" raw="$raw" \
        snap_a="$RUN/snap.a" snap_b="$RUN/snap.b" proxy_pid="${proxy:+${PID[$proxy]}}" \
        upstream_pid="${PID[$upstream]}" proxy_core="$PROXY_CPU" load_core="$LOAD_CPU" \
        log="$lg" log_off="$off" syscalls="$sc"
}

log "warm-up"
for t in $TARGETS; do
    p=$(port_of "$t" bulk1)
    [[ -n "$p" ]] && timeout 15 taskset -c "$LOAD_CPU" iperf3 -c 127.0.0.1 -p "$p" -t 1 -P 2 >/dev/null 2>&1
    crr "$(port_of "$t" crr)" 1 "$CRR_CONNS" >/dev/null 2>&1
done

read -r -a TA <<<"$TARGETS"
NT=${#TA[@]}
log "running: reps=$REPS cases='$CASES' targets='$TARGETS', ${DURATION}s each"
T0=$(date +%s)
for (( rep=1; rep<=REPS; rep++ )); do
    log "rep $rep/$REPS  (load avg: $(cut -d' ' -f1-3 /proc/loadavg))"
    for c in $CASES; do
        for (( k=0; k<NT; k++ )); do
            run_one "${TA[$(( (k + rep - 1) % NT ))]}" "$c" "$rep"
        done
    done
done
log "load runs took $(( $(date +%s) - T0 ))s; uptime at end: $(uptime)"
echo "uptime at end: $(uptime)" >> "$OUT/meta.txt"

{
    echo "# TCP proxies, $(date -u '+%Y-%m-%d %H:%M UTC'): proxy on core $PROXY_CPU, load + upstream on core $LOAD_CPU"
    echo
    echo "Command: $( [[ $QUICK == 1 ]] && echo 'QUICK=1 ')benches/e2e/tcp.sh  (DURATION=${DURATION}s, REPS=$REPS, crr: $CRR_CONNS loops, ${REQ_BYTES} B request / ${REP_BYTES} B reply; bulk8: $BULK_PAR connections)"
    sed -n -e 's/^uptime at \(start\|end\): /load at \1: /p' -e '/^settings: /p' -e '/^menshen: /p' \
        "$OUT/meta.txt" | sed 's/^/    /'
    $PY summary "$JSONL"
} | tee "$OUT/summary.md"
log "results in $OUT (summary.md, results.jsonl, meta.txt, raw/)"
