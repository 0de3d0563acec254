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

# --- Kafka-protocol broker for development and tests -------------------------------------------
# tansu (Apache-2.0, Kafka-compatible, in Rust): there is no Docker, Apache Kafka or Redpanda on
# this machine kind. Built once per machine with `cargo install`, kept in the git-ignored .tools/
# directory and in a machine-wide cache that fresh clones (CI) copy instead of rebuilding.
TANSU_VERSION=0.6.0
KAFKA_HOST=${KAFKA_HOST:-127.0.0.1}
KAFKA_PORT=${KAFKA_PORT:-9092}
TOOLS_DIR=${TOOLS_DIR:-$PWD/.tools}
TOOLS_CACHE=${TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parking-tools}
TANSU_BIN=$TOOLS_DIR/bin/tansu

ensure_tansu() {
  if [ -x "$TANSU_BIN" ] && [ "$(cat "$TOOLS_DIR/tansu.version" 2>/dev/null)" = "$TANSU_VERSION" ]; then
    return 0
  fi
  mkdir -p "$TOOLS_DIR/bin"
  local cached=$TOOLS_CACHE/tansu-$TANSU_VERSION/bin/tansu
  if [ ! -x "$cached" ]; then
    log "building the tansu $TANSU_VERSION broker (once per machine, ~12 min on 2 cores)"
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore \
      --root "$TOOLS_CACHE/tansu-$TANSU_VERSION"
  fi
  cp "$cached" "$TANSU_BIN"
  echo "$TANSU_VERSION" >"$TOOLS_DIR/tansu.version"
}

# Debian packages the build and the tests need: libssl-dev and pkg-config (rdkafka's TLS links
# the system OpenSSL), openssl and socat (the TLS relay tests put a TLS proxy with a certificate
# of their own in front of a broker). Installed with apt-get only when missing.
ensure_packages() {
  local missing=() command
  # Each of these commands comes in the Debian package of the same name.
  for command in openssl socat pkg-config; do
    command -v "$command" >/dev/null 2>&1 || missing+=("$command")
  done
  dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]} (apt-get)"
  local sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

broker_ready() {
  (exec 3<>"/dev/tcp/$KAFKA_HOST/$KAFKA_PORT") 2>/dev/null
}

# Starts the broker on $KAFKA_HOST:$KAFKA_PORT unless something already listens there. Its log
# and pid go to .tools/. Storage is in memory: a restart forgets every topic, which the relay
# re-creates at start-up.
ensure_broker() {
  ensure_tansu
  if broker_ready; then
    return 0
  fi
  log "starting the tansu broker on $KAFKA_HOST:$KAFKA_PORT"
  nohup "$TANSU_BIN" broker \
    --listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
    --advertised-listener-url "tcp://$KAFKA_HOST:$KAFKA_PORT" \
    --storage-engine memory://tansu/ >"$TOOLS_DIR/tansu.log" 2>&1 &
  echo $! >"$TOOLS_DIR/tansu.pid"
  for _ in $(seq 1 100); do
    broker_ready && return 0
    sleep 0.1
  done
  echo "the broker did not start; see $TOOLS_DIR/tansu.log" >&2
  return 1
}
