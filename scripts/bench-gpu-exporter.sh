#!/usr/bin/env bash
# Exporter overhead for BENCHMARKS.md: CPU (summed over every thread, from schedstat, in ns) and
# memory of `vigil gpu-exporter --simulate` exporting OTLP to a release collector and serving
# /metrics scraped once per interval, for two shapes: 8 GPUs at 1 s and 64 nodes x 8 GPUs at 5 s.
# Each shape runs REPS times (median reported) with OTLP on, and once with --no-otlp for the split.
#
#   scripts/bench-gpu-exporter.sh [SECONDS] [REPS]     (defaults: 60 s windows, 3 repetitions)
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_WINDOW="${1:-60}"
REPS="${2:-3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vigil-target}"
cargo build --release --bin vigil >/dev/null
VIGIL="$CARGO_TARGET_DIR/release/vigil"
WORK="$(mktemp -d /tmp/vigil-gpu-bench.XXXXXX)"
GRPC=127.0.0.1:25317 HTTP=127.0.0.1:25318 QUERY=127.0.0.1:25470 PAGE=127.0.0.1:25400

"$VIGIL" serve --data-dir "$WORK/data" --otlp-grpc-addr $GRPC --otlp-http-addr $HTTP --query-addr $QUERY \
    >"$WORK/serve.out" 2>"$WORK/serve.log" &
SERVE=$!
trap 'kill $SERVE 2>/dev/null || true; kill $EXPORTER 2>/dev/null || true' EXIT
EXPORTER=""
for _ in $(seq 100); do grep -q listening "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done

cpu_ns() { cat /proc/"$1"/task/*/schedstat | awk '{s += $1} END {printf "%d", s}'; }

# run NODES GPUS INTERVAL_S OTLP(on|off) -> prints "cpu_percent rss_mib hwm_mib series"
run() {
    local nodes=$1 gpus=$2 interval=$3 otlp=$4
    local flags=(--otlp-endpoint "http://$GRPC")
    [ "$otlp" = off ] && flags=(--no-otlp)
    "$VIGIL" gpu-exporter --simulate --nodes "$nodes" --gpus-per-node "$gpus" --interval "${interval}s" \
        --listen $PAGE "${flags[@]}" >"$WORK/exporter.out" 2>"$WORK/exporter.log" &
    EXPORTER=$!
    for _ in $(seq 100); do grep -q "metrics=" "$WORK/exporter.out" 2>/dev/null && break; sleep 0.1; done
    # Warm up: first rounds register instruments and open the gRPC channel.
    sleep $((interval * 3))
    local start end series
    start=$(cpu_ns $EXPORTER)
    local t=0
    # Scrape the page once per interval, as Prometheus would.
    while [ $t -lt "$SECONDS_WINDOW" ]; do
        series=$(curl -s "http://$PAGE/metrics" | grep -vc '^#')
        sleep "$interval"
        t=$((t + interval))
    done
    end=$(cpu_ns $EXPORTER)
    local rss hwm
    rss=$(awk '/VmRSS/ {print $2}' /proc/$EXPORTER/status)
    hwm=$(awk '/VmHWM/ {print $2}' /proc/$EXPORTER/status)
    kill $EXPORTER; wait $EXPORTER 2>/dev/null || true
    awk -v s="$start" -v e="$end" -v w="$SECONDS_WINDOW" -v r="$rss" -v h="$hwm" -v n="$series" \
        'BEGIN {printf "%.3f %.1f %.1f %d\n", (e - s) / (w * 1e9) * 100, r / 1024, h / 1024, n}'
}

median() { sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

for shape in "1 8 1" "64 8 5"; do
    set -- $shape
    : >"$WORK/runs"
    for _ in $(seq "$REPS"); do run "$1" "$2" "$3" on >>"$WORK/runs"; done
    cpu=$(awk '{print $1}' "$WORK/runs" | median)
    rss=$(awk '{print $2}' "$WORK/runs" | median)
    hwm=$(awk '{print $3}' "$WORK/runs" | median)
    series=$(awk '{print $4}' "$WORK/runs" | median)
    off=$(run "$1" "$2" "$3" off)
    echo "shape=$1x$2 interval=${3}s series_on_page=$series otlp=on cpu_percent_of_one_core(median of $REPS)=$cpu rss_mib=$rss peak_rss_mib=$hwm runs=[$(awk '{printf "%s ", $1}' "$WORK/runs")]"
    echo "shape=$1x$2 interval=${3}s otlp=off cpu_percent_of_one_core=$(echo "$off" | awk '{print $1}') rss_mib=$(echo "$off" | awk '{print $2}')"
done
