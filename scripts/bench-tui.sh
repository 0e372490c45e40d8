#!/usr/bin/env bash
# The terminal dashboard against a loaded collector: 10 million spans (with their metrics and
# logs) and 64 simulated GPUs. Reports each view's full refresh time (`vigil tui --bench`) and
# the dashboard's own CPU over a minute at a 1 s refresh with nobody at the keys (in tmux).
#
#   scripts/bench-tui.sh                       # release build, 10M spans
#   BENCH_SPANS=2000000 BENCH_PROFILE=dev scripts/bench-tui.sh
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${BENCH_PROFILE:-release}"
spans="${BENCH_SPANS:-10000000}"
target="${CARGO_TARGET_DIR:-target}"
case "$profile" in dev) dir=debug ;; *) dir="$profile" ;; esac
# VIGIL_BIN, when set, is the binary to measure (a release build kept from earlier).
if [ -z "${VIGIL_BIN:-}" ]; then
    cargo build --profile "$profile" -p vigil
fi
bin="${VIGIL_BIN:-$target/$dir/vigil}"
command -v tmux >/dev/null || { echo "tmux is needed (apt-get install tmux)" >&2; exit 1; }

work="$(mktemp -d "${TMPDIR:-/tmp}/vigil-bench-tui.XXXXXX")"
pids=()
cleanup() {
    tmux -L vigil-bench-tui kill-server 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
grpc=$(port); http=$(port); query=$(port); flight=$(port)
"$bin" serve --data-dir "$work/data" --otlp-grpc-addr "127.0.0.1:$grpc" \
    --otlp-http-addr "127.0.0.1:$http" --query-addr "127.0.0.1:$query" \
    --flight-sql-addr "127.0.0.1:$flight" 2>"$work/serve.log" &
pids+=($!)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$query/readyz" >/dev/null && break; sleep 0.2; done
"$bin" gpu-exporter --simulate --nodes 8 --gpus-per-node 8 --interval 5s \
    --otlp-endpoint "http://127.0.0.1:$grpc" --listen 127.0.0.1:0 --fault straggler:3/2:60s \
    2>"$work/exporter.log" &
pids+=($!)
echo "==> loading $spans spans (with metrics and logs) and 64 simulated GPUs"
"$bin" loadgen --endpoint "http://127.0.0.1:$grpc" --rate 0 --spans "$spans" --duration 3600 \
    --metrics --logs --quiet --host-name sim-node-00,sim-node-01,sim-node-02,sim-node-03
"$bin" query --url "http://127.0.0.1:$query" \
    "SELECT count(*) AS spans, count(DISTINCT request_model) AS models FROM spans"
"$bin" query --url "http://127.0.0.1:$query" \
    "SELECT count(DISTINCT attributes['UUID']) AS gpus FROM metrics WHERE metric_name = 'DCGM_FI_DEV_SM_CLOCK'"

echo "==> each view's full refresh over the last hour (all $spans spans), 20 runs"
"$bin" tui --url "http://127.0.0.1:$flight" --bench 20 --bench-range 1h
echo "==> the same over the last 15 minutes (the dashboard's default range)"
"$bin" tui --url "http://127.0.0.1:$flight" --bench 20 --bench-range 15m

echo "==> the dashboard's CPU over 60 s at a 1 s refresh, on the overview, nobody typing"
tmux -L vigil-bench-tui -f /dev/null new-session -d -x 200 -y 60 \
    "$bin tui --url http://127.0.0.1:$flight --refresh 1s"
sleep 10
# The dashboard itself, not the shell tmux started it with (which matches the same pattern).
tui_pid=""
for pid in $(pgrep -f "tui --url http://127.0.0.1:$flight --refresh 1s"); do
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = vigil ]; then tui_pid=$pid; fi
done
[ -n "$tui_pid" ] || { echo "the dashboard is not running" >&2; exit 1; }
ticks() { awk '{print $14 + $15}' "/proc/$tui_pid/stat"; }
hz=$(getconf CLK_TCK)
before=$(ticks)
sleep 60
after=$(ticks)
awk -v d="$((after - before))" -v hz="$hz" 'BEGIN { printf "vigil tui: %.2f%% of one core (%d ticks in 60 s)\n", d / hz / 60 * 100, d }'
rss=$(awk '/VmRSS/ {print $2}' "/proc/$tui_pid/status")
echo "vigil tui: RSS $((rss / 1024)) MiB"

# BENCH_HOLD=<seconds> keeps the loaded collector up afterwards, to try statements against it.
if [ -n "${BENCH_HOLD:-}" ]; then
    echo "==> holding the collector for $BENCH_HOLD s: SQL at http://127.0.0.1:$query, Flight SQL at http://127.0.0.1:$flight"
    sleep "$BENCH_HOLD"
fi
