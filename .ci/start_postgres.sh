#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the multi-worker sweep test, listening on 127.0.0.1 only.
#
# Usage (from .ci/run):  eval "$(.ci/start_postgres.sh)"
# Prints `export MATHGPT_TEST_PG_URL=postgresql://...` on stdout; everything else goes to stderr.
# Idempotent: a server already running in $MATHGPT_PG_DIR is reused. Stop it with
#   su postgres -c "pg_ctl -D $MATHGPT_PG_DIR/data stop"
set -euo pipefail

PG_DIR="${MATHGPT_PG_DIR:-/tmp/mathgpt-pg}"
PORT="${MATHGPT_PG_PORT:-54329}"
DB=mathgpt_test
USER_NAME=mathgpt
PASSWORD=mathgpt-ci  # a loopback-only test server; not a secret

log() { echo "start_postgres: $*" >&2; }

pg_bin() {
  # The newest installed server's binaries (Debian keeps them out of PATH).
  local dir
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$dir" ] && echo "$dir"
}

if [ -z "$(pg_bin)" ]; then
  log "installing the Debian postgresql package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
BIN=$(pg_bin)
[ -n "$BIN" ] || { log "no PostgreSQL server binaries after install"; exit 1; }

# The server refuses to run as root: run it as the package's postgres user (created by the package).
as_pg() { if [ "$(id -u)" = 0 ]; then su postgres -s /bin/sh -c "$*"; else sh -c "$*"; fi; }

mkdir -p "$PG_DIR"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$PG_DIR"
if [ ! -f "$PG_DIR/data/PG_VERSION" ]; then
  log "initdb in $PG_DIR/data"
  as_pg "umask 077 && echo '$PASSWORD' > '$PG_DIR/pw' && '$BIN/initdb' -D '$PG_DIR/data' \
    -A scram-sha-256 --username=postgres --pwfile='$PG_DIR/pw' && rm '$PG_DIR/pw'" >&2
fi

if ! as_pg "'$BIN/pg_ctl' -D '$PG_DIR/data' status" >/dev/null 2>&1; then
  log "starting on 127.0.0.1:$PORT"
  # listen_addresses: loopback only; the unix socket lives in PG_DIR, not in /var/run.
  as_pg "'$BIN/pg_ctl' -D '$PG_DIR/data' -l '$PG_DIR/server.log' -w -t 60 \
    -o \"-c listen_addresses=127.0.0.1 -p $PORT -k '$PG_DIR' -c max_connections=100\" start" >&2
fi

psql_pg() { PGPASSWORD="$PASSWORD" psql -h 127.0.0.1 -p "$PORT" -U postgres -v ON_ERROR_STOP=1 -qtA "$@"; }
if [ -z "$(psql_pg -d postgres -c "SELECT 1 FROM pg_roles WHERE rolname='$USER_NAME'")" ]; then
  psql_pg -d postgres -c "CREATE ROLE $USER_NAME LOGIN PASSWORD '$PASSWORD'" >&2
fi
if [ -z "$(psql_pg -d postgres -c "SELECT 1 FROM pg_database WHERE datname='$DB'")" ]; then
  psql_pg -d postgres -c "CREATE DATABASE $DB OWNER $USER_NAME" >&2
fi
log "ready"
echo "export MATHGPT_TEST_PG_URL=postgresql://$USER_NAME:$PASSWORD@127.0.0.1:$PORT/$DB"
