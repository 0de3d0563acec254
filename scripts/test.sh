#!/usr/bin/env bash
# Runs the whole test suite: formatting, then every unit and end-to-end test of the workspace
# against the local PostgreSQL, which it starts if it is down, real Kafka-protocol brokers
# (tansu, built once per machine into .tools/; each relay test starts its own, some behind a
# TLS proxy) and real Stripe-protocol servers (localstripe, installed once per machine into a
# Python venv in ~/.cache/parking-tools; each payment test starts its own on loopback).
# Installs the Debian packages it needs if missing. One build, debug profile.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_packages
ensure_postgres
ensure_tansu
export TANSU_BIN
ensure_localstripe
export LOCALSTRIPE_PYTHON
drop_test_databases
trap drop_test_databases EXIT

log "checking formatting"
cargo fmt --all -- --check

export TEST_DATABASE_URL=${TEST_DATABASE_URL:-postgres://$PG_USER@$PG_HOST:$PG_PORT}
export RUST_LOG=${RUST_LOG:-warn}
if cargo nextest --version >/dev/null 2>&1; then
  log "running tests (cargo nextest)"
  cargo nextest run --locked --workspace --no-fail-fast
else
  log "running tests (cargo test; install cargo-nextest for per-test isolation and speed)"
  cargo test --locked --workspace --no-fail-fast
fi
