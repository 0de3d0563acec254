#!/usr/bin/env bash
# Sets up and starts the whole system on a fresh machine of this kind: starts PostgreSQL if it
# is down, creates the `parking` database, builds and runs the server (which applies the
# migrations). Ctrl-C stops it. Configuration: see docs/operations.md (.env is read).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_postgres
ensure_database parking
export DATABASE_URL=${DATABASE_URL:-postgres://$PG_USER@$PG_HOST:$PG_PORT/parking}
log "building the workspace (the same artifacts the tests use)"
# The whole workspace, not `-p parking-api`: a subset resolves dependency features differently
# and would compile them a second time next to the test build.
cargo build --locked --workspace --bins
log "starting parking-api on ${BIND_ADDR:-127.0.0.1:8080}"
exec "${CARGO_TARGET_DIR:-target}/debug/parking-api" serve
