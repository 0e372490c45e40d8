#!/usr/bin/env bash
# Runs every test: unit tests, end-to-end tests with real OTLP clients (Rust and the official
# Python SDK), real Flight SQL clients (ADBC, pyarrow), a real Prometheus and a real
# Alertmanager, and the terminal dashboard in a real terminal (tmux). Installs the Python clients
# into .venv, Grafana's dashboard schema into tests/grafana/node_modules, and the Debian packages
# the tests need (prometheus, prometheus-alertmanager, tmux) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http, pyarrow.flight, adbc_driver_flightsql' 2>/dev/null; then
    echo "==> installing the Python OpenTelemetry SDK and Flight SQL clients into .venv (tests/python/requirements.txt)"
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r tests/python/requirements.txt
fi
export VIGIL_PYTHON="$PWD/.venv/bin/python"

missing=""
command -v prometheus >/dev/null 2>&1 && command -v promtool >/dev/null 2>&1 || missing="$missing prometheus"
command -v prometheus-alertmanager >/dev/null 2>&1 || missing="$missing prometheus-alertmanager"
command -v tmux >/dev/null 2>&1 || missing="$missing tmux"
if [ -n "$missing" ]; then
    echo "==> installing Debian packages the end-to-end tests run:$missing"
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Grafana's published dashboard schema (@grafana/schema) and TypeScript, to check dashboards/.
if [ ! -d tests/grafana/node_modules/@grafana/schema ] || [ ! -d tests/grafana/node_modules/typescript ]; then
    command -v npm >/dev/null 2>&1 || { echo "npm (Node.js) is needed to check the Grafana dashboards" >&2; exit 1; }
    echo "==> installing Grafana's dashboard schema into tests/grafana (package-lock.json)"
    (cd tests/grafana && npm ci --no-audit --no-fund --silent)
fi

# The end-to-end tests start the `vigil` binary, so build it first.
cargo build --workspace --bins
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast "$@"
else
    cargo test --workspace --no-fail-fast "$@"
fi
