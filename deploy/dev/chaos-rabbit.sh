#!/usr/bin/env bash
# A private RabbitMQ node for tests that restart the broker (the chaos run,
# tests/faults.rs). It never touches the shared node on 5672: own node name,
# ports, data and log directories, config, Erlang cookie (HOME), and no
# plugins (no management port).
#
#   deploy/dev/chaos-rabbit.sh start|stop|restart|stop_app|start_app|status|url
#
# Environment: CHAOS_RABBIT_PORT (5673), CHAOS_RABBIT_DIST_PORT (25673),
# CHAOS_RABBIT_NODE (chartbridge-chaos@localhost),
# CHAOS_RABBIT_DIR (~/.cache/chartbridge/chaos-rabbit/<port>).
# With CHAOS_RABBIT_TLS_DIR (holding ca.pem, server.pem, server.key) the
# node also listens for AMQP over TLS on CHAOS_RABBIT_TLS_PORT (port + 1),
# requires a client certificate there and offers EXTERNAL login (the
# certificate's common name is the user; plugin rabbitmq_auth_mechanism_ssl)
# besides PLAIN (tests/broker_tls.rs).
set -euo pipefail

PORT="${CHAOS_RABBIT_PORT:-5673}"
DIST_PORT="${CHAOS_RABBIT_DIST_PORT:-$((PORT + 20000))}"
NODE="${CHAOS_RABBIT_NODE:-chartbridge-chaos-$PORT@localhost}"
DIR="${CHAOS_RABBIT_DIR:-$HOME/.cache/chartbridge/chaos-rabbit/$PORT}"
BIN=/usr/lib/rabbitmq/bin

if [ ! -x "$BIN/rabbitmq-server" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "chaos-rabbit: installing rabbitmq-server (Debian package)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server >/dev/null
  fi
  [ -x "$BIN/rabbitmq-server" ] || { echo "chaos-rabbit: rabbitmq-server is not installed" >&2; exit 1; }
fi

mkdir -p "$DIR/home" "$DIR/mnesia" "$DIR/log"
cat >"$DIR/rabbitmq.conf" <<EOF
listeners.tcp.local = 127.0.0.1:$PORT
loopback_users = none
log.console = false
log.file.level = warning
EOF
: >"$DIR/rabbitmq-env.conf"
echo "[]." >"$DIR/enabled_plugins"
TLS_DIR="${CHAOS_RABBIT_TLS_DIR:-}"
TLS_PORT="${CHAOS_RABBIT_TLS_PORT:-$((PORT + 1))}"
if [ -n "$TLS_DIR" ]; then
  cat >>"$DIR/rabbitmq.conf" <<EOF
listeners.ssl.default = 127.0.0.1:$TLS_PORT
ssl_options.cacertfile = $TLS_DIR/ca.pem
ssl_options.certfile = $TLS_DIR/server.pem
ssl_options.keyfile = $TLS_DIR/server.key
ssl_options.verify = verify_peer
ssl_options.fail_if_no_peer_cert = true
auth_mechanisms.1 = EXTERNAL
auth_mechanisms.2 = PLAIN
ssl_cert_login_from = common_name
EOF
  echo "[rabbitmq_auth_mechanism_ssl]." >"$DIR/enabled_plugins"
fi

# Everything the scripts read comes from here, not from /etc/rabbitmq.
export HOME="$DIR/home"
export RABBITMQ_NODENAME="$NODE"
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT="$PORT"
export RABBITMQ_DIST_PORT="$DIST_PORT"
export RABBITMQ_CONFIG_FILE="$DIR/rabbitmq.conf"
export RABBITMQ_CONF_ENV_FILE="$DIR/rabbitmq-env.conf"
export RABBITMQ_ENABLED_PLUGINS_FILE="$DIR/enabled_plugins"
export RABBITMQ_MNESIA_BASE="$DIR/mnesia"
export RABBITMQ_LOG_BASE="$DIR/log"
export RABBITMQ_PID_FILE="$DIR/pid"
export ERL_EPMD_ADDRESS=127.0.0.1

ctl() { "$BIN/rabbitmqctl" -n "$NODE" "$@"; }
tls_open() { [ -z "$TLS_DIR" ] || (exec 3<>"/dev/tcp/127.0.0.1/$TLS_PORT") 2>/dev/null; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }
wait_port() {
  for _ in $(seq 1 120); do
    port_open && return 0
    sleep 0.5
  done
  echo "chaos-rabbit: $NODE does not listen on $PORT (log: $DIR/log)" >&2
  return 1
}

case "${1:-}" in
  start)
    if port_open; then
      echo "amqp://guest:guest@127.0.0.1:$PORT/%2f"
      exit 0
    fi
    "$BIN/rabbitmq-server" -detached >/dev/null 2>&1
    wait_port
    ctl await_startup >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do tls_open && break; sleep 0.5; done
    tls_open || { echo "chaos-rabbit: no TLS listener on $TLS_PORT (log: $DIR/log)" >&2; exit 1; }
    echo "amqp://guest:guest@127.0.0.1:$PORT/%2f"
    ;;
  ctl)
    shift
    ctl "$@"
    ;;
  stop)
    ctl stop >/dev/null 2>&1 || true
    if [ -f "$DIR/pid" ]; then
      pid=$(cat "$DIR/pid")
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$DIR/pid"
    fi
    ;;
  stop_app) ctl stop_app >/dev/null ;;
  start_app)
    ctl start_app >/dev/null
    wait_port
    ;;
  restart)
    ctl stop_app >/dev/null
    ctl start_app >/dev/null
    wait_port
    ;;
  status) port_open && ctl status >/dev/null 2>&1 ;;
  url) echo "amqp://guest:guest@127.0.0.1:$PORT/%2f" ;;
  *)
    echo "usage: $0 start|stop|restart|stop_app|start_app|status|url|ctl ARGS..." >&2
    exit 2
    ;;
esac
