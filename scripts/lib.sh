# Shared by the project's scripts: bring up what they need on this machine kind.
# shellcheck shell=bash

PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-postgres}

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# Starts the local PostgreSQL cluster if it is not accepting connections, and waits for it.
ensure_postgres() {
  if pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
    return 0
  fi
  log "starting PostgreSQL"
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 60); do
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT" && return 0
    sleep 0.5
  done
  echo "PostgreSQL did not become ready on $PG_HOST:$PG_PORT" >&2
  return 1
}

psql_admin() {
  psql -v ON_ERROR_STOP=1 -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres "$@"
}

# Creates database $1 if it does not exist.
ensure_database() {
  local name=$1
  if [ -z "$(psql_admin -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'")" ]; then
    log "creating database $name"
    psql_admin -c "CREATE DATABASE \"$name\""
  fi
}

# Drops the per-test databases that end-to-end tests create (parking_test_<uuid>).
drop_test_databases() {
  local db
  for db in $(psql_admin -tAc "SELECT datname FROM pg_database WHERE datname LIKE 'parking\_test\_%'"); do
    psql_admin -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null
  done
}
