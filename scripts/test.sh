#!/usr/bin/env bash
# Runs every test: unit tests, end-to-end tests with real OTLP clients (Rust and the official
# Python SDK) and a real Prometheus. Installs the Python clients into .venv and the Debian
# packages the tests need (prometheus, for prometheus and promtool) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http' 2>/dev/null; then
    echo "==> installing the Python OpenTelemetry SDK into .venv (tests/python/requirements.txt)"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
export VIGIL_PYTHON="$PWD/.venv/bin/python"

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    echo "==> installing the Debian package prometheus (the GPU exporter tests scrape with it)"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

# The end-to-end tests start the `vigil` binary, so build it first.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
