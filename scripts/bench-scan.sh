#!/usr/bin/env bash
# Full-scan throughput for BENCHMARKS.md: SPANS spans (default 10,000,000) are loaded and flushed
# to Parquet, then `SELECT * FROM spans` is read three times each through Flight SQL (ADBC),
# through /api/v1/sql as an Arrow IPC stream, and by DuckDB from the same Parquet files.
# The HTTP door gathers its result before sending it, so this run lifts its result limits.
#
#   scripts/bench-scan.sh [SPANS]
set -euo pipefail
cd "$(dirname "$0")/.."
SPANS="${1:-10000000}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vigil-target}"
# VIGIL_BIN, when set, names the binary to measure (no build).
if [ -z "${VIGIL_BIN:-}" ]; then
    cargo build --workspace --bins --tests --release >/dev/null
fi
VIGIL="${VIGIL_BIN:-$CARGO_TARGET_DIR/release/vigil}"
.venv/bin/python -c 'import duckdb, adbc_driver_flightsql' 2>/dev/null \
    || .venv/bin/pip install --quiet --disable-pip-version-check duckdb -r tests/python/requirements.txt
WORK="$(mktemp -d /tmp/vigil-bench-scan.XXXXXX)"
GRPC=127.0.0.1:24417 HTTP=127.0.0.1:24418 QUERY=127.0.0.1:29570 FLIGHT=127.0.0.1:25051
serve() {
    VIGIL_QUERY__MAX_RESULT_ROWS=100000000 VIGIL_QUERY__MAX_RESULT_BYTES=100000000000 \
    VIGIL_QUERY__TIMEOUT_SECS=600 VIGIL_ANALYZER__ENABLED=false \
    "$VIGIL" serve --data-dir "$WORK/data" --otlp-grpc-addr $GRPC --otlp-http-addr $HTTP \
        --query-addr $QUERY --flight-sql-addr $FLIGHT >"$WORK/serve.out" 2>>"$WORK/serve.log" &
    SERVE=$!
    for _ in $(seq 300); do grep -q listening "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
}
serve
trap 'kill $SERVE 2>/dev/null || true; rm -rf "$WORK"' EXIT
"$VIGIL" loadgen --quiet --endpoint "http://$GRPC" --rate 0 --spans "$SPANS" --duration 3600 \
    --batch 1000 --concurrency 8 >/dev/null
# A clean stop flushes every buffer, so all three read the same Parquet files.
kill -TERM $SERVE; wait $SERVE || true
serve
"$VIGIL" query --url "http://$QUERY" "SELECT count(*) AS spans FROM spans"
.venv/bin/python scripts/bench_scan.py --flight "grpc://$FLIGHT" --http "http://$QUERY" \
    --parquet "$WORK/data/tables/spans"
