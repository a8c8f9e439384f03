#!/usr/bin/env bash
# A private PostgreSQL cluster that accepts TLS connections only, for
# tests/store_tls.rs. It never touches the shared cluster on 5432: its own
# data directory, port and certificate; run as the postgres user.
#
#   deploy/dev/tls-postgres.sh start|stop
#
# Environment: TLS_PG_PORT (5439), TLS_PG_DIR (data and log, created),
# TLS_PG_CERT_DIR (holding server.pem and server.key; required for start).
set -euo pipefail

PORT="${TLS_PG_PORT:-5439}"
DIR="${TLS_PG_DIR:-$HOME/.cache/chartbridge/tls-postgres/$PORT}"
BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case "${1:-}" in
  start)
    CERTS="${TLS_PG_CERT_DIR:?TLS_PG_CERT_DIR must name the directory with server.pem and server.key}"
    if [ -f "$DIR/data/postmaster.pid" ]; then
      echo "tls-postgres: already running on $PORT" >&2
      exit 0
    fi
    mkdir -p "$DIR"
    rm -rf "$DIR/data"
    [ "$(id -u)" = 0 ] && chown postgres: "$DIR"
    as_pg "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust >/dev/null
    install -m 0644 "$CERTS/server.pem" "$DIR/data/server.pem"
    install -m 0600 "$CERTS/server.key" "$DIR/data/server.key"
    [ "$(id -u)" = 0 ] && chown postgres: "$DIR/data/server.pem" "$DIR/data/server.key"
    cat >>"$DIR/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
ssl = on
ssl_cert_file = 'server.pem'
ssl_key_file = 'server.key'
CONF
    # TLS only: a plaintext attempt is rejected by the server too.
    cat >"$DIR/data/pg_hba.conf" <<CONF
local all all trust
hostssl all all 127.0.0.1/32 trust
hostnossl all all 127.0.0.1/32 reject
CONF
    as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w start >/dev/null
    echo "postgres://postgres@localhost:$PORT/postgres"
    ;;
  stop)
    if [ -f "$DIR/data/postmaster.pid" ]; then
      as_pg "$BIN/pg_ctl" -D "$DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
