#!/usr/bin/env bash
# Sets up and starts the whole system on a fresh machine of this kind: starts PostgreSQL if it
# is down, creates the `parking` database, starts the Kafka-protocol broker (tansu, built once
# per machine: ~12 min the first time) unless KAFKA_BROKERS is set or WITHOUT_KAFKA=1, builds
# and runs the server (which applies the migrations and relays the log to the broker).
# Payments: unless STRIPE_SECRET_KEY is set (in the environment or .env), it starts a local
# Stripe-protocol server (localstripe on 127.0.0.1:8420, installed once per machine, ~10 s),
# points the server at it and registers the server's webhook there, so a newcomer can book and
# pay locally with no Stripe account (no money moves). Ctrl-C stops the server; the broker and
# localstripe keep running (.tools/tansu.pid, .tools/localstripe.pid). Configuration: see
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
if [ -z "${STRIPE_SECRET_KEY:-}" ] && ! grep -qsE '^\s*(export\s+)?STRIPE_SECRET_KEY=' .env; then
  export STRIPE_SECRET_KEY=sk_test_local
  export STRIPE_WEBHOOK_SECRET=${STRIPE_WEBHOOK_SECRET:-whsec_local_development_secret}
  export STRIPE_API_BASE=http://$LOCALSTRIPE_HOST:$LOCALSTRIPE_PORT
  ensure_localstripe
  start_localstripe
fi
log "building the workspace (the same artifacts the tests use)"
# The whole workspace, not `-p parking-api`: a subset resolves dependency features differently
# and would compile them a second time next to the test build.
cargo build --locked --workspace --bins
log "starting parking-api on ${BIND_ADDR:-127.0.0.1:8080}"
exec "${CARGO_TARGET_DIR:-target}/debug/parking-api" serve
