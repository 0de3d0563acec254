#!/usr/bin/env bash
# Sets up and starts the whole system on a fresh machine of this kind: starts PostgreSQL if it
# is down, creates the `parking` database, starts the Kafka-protocol broker (tansu, built once
# per machine: ~12 min the first time) unless KAFKA_BROKERS is set or WITHOUT_KAFKA=1, builds
# and runs the server (which applies the migrations and relays the log to the broker). Ctrl-C
# stops the server; the broker keeps running (.tools/tansu.pid). Configuration: see
# docs/operations.md (.env is read).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_packages
ensure_postgres
ensure_database parking
export DATABASE_URL=${DATABASE_URL:-postgres://$PG_USER@$PG_HOST:$PG_PORT/parking}
if [ -z "${KAFKA_BROKERS:-}" ] && [ "${WITHOUT_KAFKA:-0}" != 1 ]; then
  ensure_broker
  export KAFKA_BROKERS=$KAFKA_HOST:$KAFKA_PORT
fi
log "building the workspace (the same artifacts the tests use)"
# The whole workspace, not `-p parking-api`: a subset resolves dependency features differently
# and would compile them a second time next to the test build.
cargo build --locked --workspace --bins
log "starting parking-api on ${BIND_ADDR:-127.0.0.1:8080}"
exec "${CARGO_TARGET_DIR:-target}/debug/parking-api" serve
