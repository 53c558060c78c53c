#!/usr/bin/env bash
# The PostgreSQL and Redis of `make test` (and `make bench`): private ones under var/, started
# when they do not answer, unless TEST_DATABASE_URL / TEST_BROKER_URL name servers to use.
# Prints TEST_DATABASE_URL=... and TEST_BROKER_URL=... on stdout (for eval), the rest on stderr.
# `scripts/test-services.sh stop` stops the private ones (their data stays in var/test-*).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PG=$ROOT/var/test-postgres
REDIS=$ROOT/var/test-redis
say() { echo "test services: $*" >&2; }
die() { say "$*"; exit 1; }

# initdb and postgres refuse to run as root: as root, the cluster belongs to the postgres system
# user that Debian's server package creates (make setup-test installs it). A clone that user
# cannot reach (under /root, say) keeps its cluster in /var/tmp instead, one per clone.
if [ "$(id -u)" -eq 0 ] && id postgres >/dev/null 2>&1 \
  && ! setpriv --reuid=postgres --regid=postgres --init-groups -- test -x "$ROOT"; then
  PG=/var/tmp/lmweb-test-postgres-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)
fi
if [ "$(id -u)" -eq 0 ]; then
  as_owner() { (cd "$PG" && setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"); }
else
  as_owner() { (cd "$PG" && "$@"); }
fi
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Ours answers on its own socket (the socket's name holds the port), not just some server there.
pg_answers() {
  [ -s "$PG/port" ] && "$(pg_bin)/pg_isready" -q -h "$PG/run" -p "$(cat "$PG/port")" -U postgres
}
redis_answers() {
  [ -s "$REDIS/port" ] &&
    [ "$(redis-cli -s "$REDIS/redis.sock" config get port 2>/dev/null | tail -1)" = "$(cat "$REDIS/port")" ]
}

start_postgres() {
  local bin port
  bin=$(pg_bin)
  [ -x "$bin/initdb" ] || die "no PostgreSQL server under /usr/lib/postgresql: run make setup-test"
  mkdir -p "$PG"
  [ "$(id -u)" -ne 0 ] || chown -R postgres:postgres "$PG"
  as_owner test -w "$PG" || die "the postgres user cannot reach $PG (a folder above it is closed \
to other users): clone the repository where it can, or set TEST_DATABASE_URL"
  if [ ! -s "$PG/data/PG_VERSION" ]; then
    say "creating a PostgreSQL cluster in $PG/data"
    rm -rf "$PG/data"
    as_owner "$bin/initdb" -D "$PG/data" -U postgres -E UTF8 --no-locale --auth=trust >/dev/null
    # Trust for its own user only, over its socket and 127.0.0.1; nothing else gets in.
    printf '%s\n' "local all postgres trust" "host all postgres 127.0.0.1/32 trust" \
      | as_owner tee "$PG/data/pg_hba.conf" >/dev/null
    # Throwaway test data: durability is not worth its cost here.
    printf '%s\n' "listen_addresses = '127.0.0.1'" "unix_socket_directories = '$PG/run'" \
      "max_connections = 200" "fsync = off" "synchronous_commit = off" "full_page_writes = off" \
      | as_owner tee -a "$PG/data/postgresql.conf" >/dev/null
  fi
  as_owner mkdir -p "$PG/run"
  # A port of its own, chosen when it starts (a fixed one could be taken on a shared machine).
  port=$(free_port)
  echo "$port" | as_owner tee "$PG/port" >/dev/null
  say "starting PostgreSQL on 127.0.0.1:$port (log $PG/postgres.log)"
  as_owner "$bin/pg_ctl" -D "$PG/data" -l "$PG/postgres.log" -o "-p $port" -w -t 60 start >/dev/null \
    || die "PostgreSQL did not start; see $PG/postgres.log"
}

start_redis() {
  local port
  command -v redis-server >/dev/null || die "no redis-server: run make setup"
  mkdir -p "$REDIS"
  port=$(free_port)
  echo "$port" >"$REDIS/port"
  say "starting Redis on 127.0.0.1:$port (log $REDIS/redis.log)"
  redis-server --bind 127.0.0.1 --port "$port" --unixsocket "$REDIS/redis.sock" \
    --unixsocketperm 700 --dir "$REDIS" --pidfile "$REDIS/redis.pid" --logfile "$REDIS/redis.log" \
    --daemonize yes --save "" --appendonly no
  for _ in $(seq 50); do redis_answers && return; sleep 0.1; done
  die "Redis did not start; see $REDIS/redis.log"
}

if [ "${1:-}" = stop ]; then
  if pg_answers; then as_owner "$(pg_bin)/pg_ctl" -D "$PG/data" -m fast -w stop >/dev/null; fi
  if redis_answers; then redis-cli -s "$REDIS/redis.sock" shutdown nosave >/dev/null || true; fi
  say "stopped (data kept in $PG and $REDIS)"
  exit 0
fi

if [ -n "${TEST_DATABASE_URL:-}" ]; then
  database=$TEST_DATABASE_URL
  say "PostgreSQL: $database (TEST_DATABASE_URL)"
else
  pg_answers || start_postgres
  port=$(cat "$PG/port")
  database=postgres://postgres@127.0.0.1:$port/lmweb
  if [ -z "$("$(pg_bin)/psql" -h "$PG/run" -p "$port" -U postgres -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = 'lmweb'")" ]; then
    "$(pg_bin)/createdb" -h "$PG/run" -p "$port" -U postgres lmweb
  fi
  say "PostgreSQL: $database (private, data in $PG)"
fi

if [ -n "${TEST_BROKER_URL:-}" ]; then
  broker=$TEST_BROKER_URL
  say "Redis: $broker (TEST_BROKER_URL)"
else
  redis_answers || start_redis
  broker=redis://127.0.0.1:$(cat "$REDIS/port")/15
  say "Redis: $broker (private, in $REDIS)"
fi

printf 'TEST_DATABASE_URL=%q\nTEST_BROKER_URL=%q\n' "$database" "$broker"
