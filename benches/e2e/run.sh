#!/usr/bin/env bash
# Menshen end-to-end benchmark: Menshen as a TLS-terminating reverse proxy beside
# nginx and HAProxy (and a "direct" nginx, no proxy), measured with the shared harness
# (../shared/bench/run.sh, or /work/shared/bench): HTTP/1.1 and HTTP/2 keep-alive
# req/s (1 KiB), full and resumed TLS handshakes/s, 1 MiB transfer MiB/s, and the
# proxy's CPU time per request. Loopback only, 2 cores (proxy on core 0, load +
# upstream on core 1), RSA-2048, access logs on everywhere.
#
# Usage: benches/e2e/run.sh            # full run, ~6-8 min
#        QUICK=1 benches/e2e/run.sh    # smoke run, < 2 min
# Other harness knobs (REPS, DURATION, CASES, TARGETS, PORT_BASE, ...) pass through.
# Results: <temp copy>/results/<stamp>/ (summary.txt, results.jsonl, raw/).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
SRC=${BENCH_SRC:-}
for d in "$REPO/../shared/bench" /work/shared/bench; do
    [[ -z "$SRC" && -x "$d/run.sh" ]] && SRC=$d
done
[[ -n "$SRC" ]] || { echo "benchmark harness not found (set BENCH_SRC)" >&2; exit 1; }

(cd "$REPO" && cargo build --release)

WORK=$(mktemp -d /tmp/menshen-bench.XXXXXX)
cp -r "$SRC" "$WORK/bench" && chmod -R u+w "$WORK/bench"   # harness writes tools/ and results/
echo "harness copy: $WORK/bench" >&2

export GATEWAY_NAME=menshen
export GATEWAY_CONFIG=$REPO/benches/e2e/menshen.toml.in
export GATEWAY_CMD="$REPO/target/release/menshen run -c \$BENCH_RUNDIR/gateway.conf"
export GATEWAY_PORT=${GATEWAY_PORT:-$(( ${PORT_BASE:-18440} + 7 ))}
# Menshen writes one JSONL file per day in its time zone (UTC in the template), in
# the harness's log dir; the file also holds conn.open/conn.close records, so the
# "logged" column reads > 100% (about 300% in hsfull/hsresume: open + request + close).
# A run that crosses UTC midnight switches files and under-counts the log check.
export GATEWAY_LOG=menshen-$(date -u +%Y%m%d).jsonl

cd "$WORK/bench" && exec ./run.sh
