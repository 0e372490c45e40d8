#!/usr/bin/env bash
# End-to-end benchmarks for BENCHMARKS.md: OTLP/gRPC ingest (loadgen in its own process, WAL on,
# Parquet flushing), collector RSS and CPU during it, bytes per span on disk against OTLP bytes
# sent, and the latency of three dashboard queries over the stored spans.
#
#   scripts/bench.sh [SPANS] [CONCURRENCY]     (defaults: 10000000 spans, 8 requests in flight)
#   VIGIL_BIN=/path/to/vigil scripts/bench.sh  (a binary built elsewhere, for an A/B)
set -euo pipefail
cd "$(dirname "$0")/.."
SPANS="${1:-10000000}"
CONCURRENCY="${2:-8}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vigil-target}"
if [ -n "${VIGIL_BIN:-}" ]; then
    VIGIL="$VIGIL_BIN"
else
    cargo build --release --bin vigil >/dev/null
    VIGIL="$CARGO_TARGET_DIR/release/vigil"
fi
WORK="$(mktemp -d /tmp/vigil-bench.XXXXXX)"
GRPC=127.0.0.1:24317 HTTP=127.0.0.1:24318 QUERY=127.0.0.1:29470

"$VIGIL" serve --data-dir "$WORK/data" --otlp-grpc-addr $GRPC --otlp-http-addr $HTTP --query-addr $QUERY \
    >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVE=$!
trap 'kill $SERVE 2>/dev/null || true' EXIT
for _ in $(seq 100); do grep -q listening "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done

# Sample the collector's RSS and CPU time while loadgen runs.
CLK=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' /proc/$SERVE/stat; }
(
    peak=0
    while kill -0 $SERVE 2>/dev/null; do
        rss=$(awk '/VmRSS/ {print $2}' /proc/$SERVE/status)
        [ "$rss" -gt "$peak" ] && peak=$rss && echo "$peak" >"$WORK/peak_rss_kb"
        sleep 0.2
    done
) &
SAMPLER=$!
T0=$(cpu_ticks)
"$VIGIL" loadgen --quiet --endpoint "http://$GRPC" --rate 0 --spans "$SPANS" --duration 3600 \
    --batch 1000 --concurrency "$CONCURRENCY" >"$WORK/loadgen.json"
T1=$(cpu_ticks)
kill $SAMPLER 2>/dev/null || true
SECONDS_RUN=$(python3 -c "import json;print(json.load(open('$WORK/loadgen.json'))['seconds'])")

echo "== ingest"
cat "$WORK/loadgen.json"
python3 - "$WORK/loadgen.json" "$T0" "$T1" "$CLK" "$(cat "$WORK/peak_rss_kb")" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
t0, t1, clk, peak = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cpu = (t1 - t0) / clk
print(f"accepted {s['accepted_spans']} spans in {s['seconds']:.1f} s = {s['accepted_spans_per_second']:.0f} spans/s; "
      f"export latency p50 {s['export_latency_ms_p50']} ms p99 {s['export_latency_ms_p99']} ms")
print(f"collector CPU {cpu:.1f} s = {cpu / s['seconds']:.2f} cores; peak RSS {peak / 1024:.0f} MiB; "
      f"OTLP protobuf sent {s['request_bytes'] / s['sent_spans']:.0f} bytes/span")
PY

echo "== queries over the stored spans (p50/p95 of 20 runs, client-side, JSON over HTTP)"
Q=( "SELECT response_model, approx_percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ns) AS p95_ns FROM spans WHERE time > now() - interval '1 hour' AND response_model IS NOT NULL GROUP BY 1"
    "SELECT date_bin(interval '1 minute', time) AS minute, response_model, sum(output_tokens) / 60.0 AS tokens_per_s FROM spans WHERE time > now() - interval '1 hour' AND response_model IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2"
    "SELECT service_name, avg(CASE WHEN status_code = 'error' THEN 1.0 ELSE 0.0 END) AS error_rate, count(*) AS spans FROM spans WHERE time > now() - interval '1 hour' GROUP BY 1" )
NAMES=( "p95 latency by model, last hour" "tokens/s by model per minute, last hour" "error rate by service, last hour" )
"$VIGIL" query --url "http://$QUERY" "SELECT count(*) AS stored_spans FROM spans"
for i in 0 1 2; do
    echo "-- ${NAMES[$i]} (data partly in memory)"
    "$VIGIL" query --url "http://$QUERY" --bench 20 "${Q[$i]}"
done

echo "== flush everything, restart, query again (all in Parquet)"
kill -TERM $SERVE; wait $SERVE || true
"$VIGIL" serve --data-dir "$WORK/data" --otlp-grpc-addr $GRPC --otlp-http-addr $HTTP --query-addr $QUERY \
    >"$WORK/serve.out" 2>>"$WORK/serve.log" &
SERVE=$!
for _ in $(seq 100); do grep -q listening "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
for i in 0 1 2; do
    echo "-- ${NAMES[$i]} (all in Parquet)"
    "$VIGIL" query --url "http://$QUERY" --bench 20 "${Q[$i]}"
done

echo "== bytes on disk"
ROWS=$("$VIGIL" query --url "http://$QUERY" --format csv "SELECT count(*) FROM spans" | tail -1)
BYTES=$(find "$WORK/data/tables/spans" -name '*.parquet' -printf '%s\n' | awk '{s += $1} END {print s}')
FILES=$(find "$WORK/data/tables/spans" -name '*.parquet' | wc -l)
python3 -c "
import json
s = json.load(open('$WORK/loadgen.json'))
print(f'spans: $ROWS in $FILES Parquet files, $BYTES bytes = {$BYTES / $ROWS:.1f} bytes/span; '
      f'OTLP protobuf {s[\"request_bytes\"] / s[\"sent_spans\"]:.0f} bytes/span = {s[\"request_bytes\"] / s[\"sent_spans\"] / ($BYTES / $ROWS):.1f}x smaller on disk')"
kill -TERM $SERVE; wait $SERVE || true
rm -rf "$WORK"
