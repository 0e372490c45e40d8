#!/usr/bin/env bash
# PromQL and remote-write, vigil against a real Prometheus (Debian's `prometheus`) in one run on
# the same data: 2,000 dcgm-exporter series (1,000 GPUs' utilization and energy counter) for 24 h
# at 15 s, remote-written into both by four shards; then `query_range` over them for 24 h at a
# 15 s step and the dcgm dashboard's instant queries, median of 3 each.
#
#   scripts/bench-promql.sh                              # release build, 1,000 GPUs, 24 h
#   BENCH_SERIES=100 BENCH_HOURS=2 BENCH_PROFILE=dev scripts/bench-promql.sh
#   BENCH_HOLD=900 scripts/bench-promql.sh                # keep both up afterwards
#
# The harness is the ignored test `bench_promql_against_prometheus` in tests/tests/promql.rs; it
# prints the table BENCHMARKS.md records.
set -euo pipefail
cd "$(dirname "$0")/.."

profile="${BENCH_PROFILE:-release}"
target="${CARGO_TARGET_DIR:-target}"
case "$profile" in dev) dir=debug ;; *) dir="$profile" ;; esac
# VIGIL_BIN, when set, is the binary to measure (a release build kept from earlier).
if [ -z "${VIGIL_BIN:-}" ]; then
    cargo build --profile "$profile" -p vigil
fi
export VIGIL_BIN="${VIGIL_BIN:-$PWD/$target/$dir/vigil}"
command -v prometheus >/dev/null || { echo "prometheus is needed (apt-get install prometheus)" >&2; exit 1; }
export BENCH_SERIES="${BENCH_SERIES:-1000}" BENCH_HOURS="${BENCH_HOURS:-24}"
# The harness only sends and times; the binaries it measures are release builds.
cargo test -p vigil-tests --test promql -- --ignored --exact bench_promql_against_prometheus --nocapture
