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
# of their own in front of a broker), ffmpeg (the vision worker reads RTSP and video files
# through it, and its tests make camera streams with it; ~40 s), and PostGIS for the local
# PostgreSQL (~15 s). Each installed once per machine with apt-get, only when missing.
ensure_packages() {
  local missing=() command
  # Each of these commands comes in the Debian package of the same name.
  for command in openssl socat pkg-config ffmpeg; do
    command -v "$command" >/dev/null 2>&1 || missing+=("$command")
  done
  dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
  # PostGIS for the local PostgreSQL: `NEARBY_SEARCH=postgis` and its test and benchmark.
  local postgis
  postgis="postgresql-$(ls /etc/postgresql | sort -V | tail -n 1)-postgis-3"
  dpkg -s "$postgis" >/dev/null 2>&1 || missing+=("$postgis")
  [ ${#missing[@]} -eq 0 ] && return 0
  apt_install "${missing[@]}"
}

# Installs the Debian packages named, with sudo unless root.
apt_install() {
  log "installing $* (apt-get)"
  local sudo=
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
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

# --- Stripe-protocol server for development and tests -------------------------------------------
# localstripe (GPL-3.0, a fake Stripe API in Python, run as a separate program, not linked): the
# tests pay with it end to end, and scripts/dev.sh lets a newcomer book and pay locally with no
# Stripe account. Installed once per machine into a Python venv in the machine-wide cache.
LOCALSTRIPE_VERSION=1.15.10
LOCALSTRIPE_HOST=${LOCALSTRIPE_HOST:-127.0.0.1}
LOCALSTRIPE_PORT=${LOCALSTRIPE_PORT:-8420}
LOCALSTRIPE_PYTHON=${LOCALSTRIPE_PYTHON:-$TOOLS_CACHE/localstripe-$LOCALSTRIPE_VERSION/bin/python}

# A LOCALSTRIPE_PYTHON set by hand is taken as it is; the default one is made here if missing.
ensure_localstripe() {
  local venv=$TOOLS_CACHE/localstripe-$LOCALSTRIPE_VERSION
  if [ "$LOCALSTRIPE_PYTHON" != "$venv/bin/python" ]; then
    [ -x "$LOCALSTRIPE_PYTHON" ] && return 0
    echo "LOCALSTRIPE_PYTHON=$LOCALSTRIPE_PYTHON is not an executable" >&2
    return 1
  fi
  # pip writes the package's dist-info once it is installed: a venv cut short is made again.
  if [ -x "$LOCALSTRIPE_PYTHON" ] &&
    compgen -G "$venv/lib/python3*/site-packages/localstripe-$LOCALSTRIPE_VERSION.dist-info" >/dev/null; then
    return 0
  fi
  log "installing localstripe $LOCALSTRIPE_VERSION into $venv (once per machine, ~10 s)"
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
  rm -rf "$venv"
  local output
  if ! output=$(python3 -m venv "$venv" 2>&1); then
    # Debian's python3 comes without ensurepip, which venv needs: it is in python3-venv.
    if ! grep -q ensurepip <<<"$output"; then
      echo "$output" >&2
      return 1
    fi
    apt_install python3-venv
    rm -rf "$venv"
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install -q --disable-pip-version-check "localstripe==$LOCALSTRIPE_VERSION"
}

localstripe_ready() {
  (exec 3<>"/dev/tcp/$LOCALSTRIPE_HOST/$LOCALSTRIPE_PORT") 2>/dev/null
}

# Starts localstripe on $LOCALSTRIPE_HOST:$LOCALSTRIPE_PORT unless something already listens
# there, then (again, every time) registers the dev server's webhook endpoint with the secret
# $STRIPE_WEBHOOK_SECRET. Its log and pid go to .tools/. State is in memory: a restart forgets
# every payment and webhook. (localstripe also pickles its state to a fixed /tmp file; it never
# reads it back this way, so writing it is switched off. TMPDIR is its own all the same.)
start_localstripe() {
  if ! localstripe_ready; then
    log "starting localstripe on $LOCALSTRIPE_HOST:$LOCALSTRIPE_PORT"
    mkdir -p "$TOOLS_DIR/localstripe-state"
    TMPDIR=$TOOLS_DIR/localstripe-state nohup "$LOCALSTRIPE_PYTHON" -c "
from aiohttp import web
import localstripe.resources
localstripe.resources.Store.dump_to_disk = lambda self: None
from localstripe.server import app
web.run_app(app, host='$LOCALSTRIPE_HOST', port=$LOCALSTRIPE_PORT)
" >"$TOOLS_DIR/localstripe.log" 2>&1 &
    echo $! >"$TOOLS_DIR/localstripe.pid"
    for _ in $(seq 1 100); do
      localstripe_ready && break
      sleep 0.1
    done
    if ! localstripe_ready; then
      echo "localstripe did not start; see $TOOLS_DIR/localstripe.log" >&2
      return 1
    fi
  fi
  local hook=http://${BIND_ADDR:-127.0.0.1:8080}/api/v1/payments/webhook
  if ! curl -sf -o /dev/null -X POST \
    "http://$LOCALSTRIPE_HOST:$LOCALSTRIPE_PORT/_config/webhooks/parking-dev" \
    --data-urlencode "url=$hook" --data-urlencode "secret=$STRIPE_WEBHOOK_SECRET"; then
    echo "localstripe on $LOCALSTRIPE_HOST:$LOCALSTRIPE_PORT refused the webhook $hook" >&2
    return 1
  fi
}
