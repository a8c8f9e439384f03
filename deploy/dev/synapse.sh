#!/usr/bin/env bash
# Local Synapse homeserver for chartbridge's Matrix integration tests.
#
#   deploy/dev/synapse.sh start    install (if needed), configure, start, wait for /health, print the base URL
#   deploy/dev/synapse.sh stop     stop the server and wait for it to exit
#   deploy/dev/synapse.sh status   "running ..." (exit 0) or "stopped" (exit 3)
#   deploy/dev/synapse.sh url      print the base URL
#   deploy/dev/synapse.sh secret   print the registration shared secret
#
# Synapse comes from PyPI (matrix-synapse, pinned) into a virtualenv under
# $CHARTBRIDGE_CACHE/synapse. The server listens on 127.0.0.1 only, stores in
# SQLite, has no federation, raised rate limits and
# redaction_retention_period: 0s (redacted content is purged at once).
#
# Environment:
#   SYNAPSE_PORT (8448)                       port on 127.0.0.1
#   CHARTBRIDGE_CACHE (~/.cache/chartbridge)  venv, data, pid file and log
#   SYNAPSE_START_TIMEOUT (90)                seconds to wait for /health
set -euo pipefail

VERSION="1.163.2"
CACHE="${CHARTBRIDGE_CACHE:-$HOME/.cache/chartbridge}"
ROOT="$CACHE/synapse"
VENV="$ROOT/venv-$VERSION"
PORT="${SYNAPSE_PORT:-8448}"
HOST=127.0.0.1
BASE_URL="http://$HOST:$PORT"
DATA="$ROOT/data-$PORT"
CONFIG="$DATA/homeserver.yaml"
PID_FILE="$DATA/homeserver.pid"
LOG_FILE="$DATA/homeserver.log"
SECRET_FILE="$DATA/registration_shared_secret"
TIMEOUT="${SYNAPSE_START_TIMEOUT:-90}"

say() { echo "synapse: $*" >&2; }
die() { say "error: $*"; exit 1; }

probe() {
  curl -fsS --max-time 2 "$BASE_URL/health" 2>/dev/null | grep -q OK
}

running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q synapse || return 1
  fi
  echo "$pid"
}

install() {
  if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import synapse' 2>/dev/null; then
    return
  fi
  say "installing matrix-synapse==$VERSION into $VENV"
  mkdir -p "$ROOT"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --upgrade pip >&2
  "$VENV/bin/pip" install --quiet --prefer-binary "matrix-synapse==$VERSION" >&2
}

configure() {
  mkdir -p "$DATA/media_store"
  if [[ ! -s "$SECRET_FILE" ]]; then
    (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$SECRET_FILE")
  fi
  if [[ ! -f "$DATA/signing.key" ]]; then
    "$VENV/bin/python" -m synapse.app.homeserver --server-name localhost \
      --config-path "$DATA/generated.yaml" --generate-config --report-stats=no \
      --data-directory "$DATA" >/dev/null
    cp "$DATA/localhost.signing.key" "$DATA/signing.key"
  fi
  local secret
  secret="$(cat "$SECRET_FILE")"
  cat >"$CONFIG" <<YAML
server_name: "localhost"
public_baseurl: "$BASE_URL/"
pid_file: "$PID_FILE"
signing_key_path: "$DATA/signing.key"
report_stats: false
suppress_key_server_warning: true
trusted_key_servers: []
federation_domain_whitelist: []
listeners:
  - port: $PORT
    bind_addresses: ["$HOST"]
    type: http
    tls: false
    x_forwarded: false
    resources:
      - names: [client]
        compress: false
database:
  name: sqlite3
  args:
    database: "$DATA/homeserver.db"
media_store_path: "$DATA/media_store"
enable_media_repo: true
enable_authenticated_media: true
max_upload_size: 50M
registration_shared_secret: "$secret"
enable_registration: false
redaction_retention_period: 0s
forget_rooms_on_leave: false
presence:
  enabled: false
rc_message: {per_second: 10000, burst_count: 10000}
rc_registration: {per_second: 10000, burst_count: 10000}
rc_login:
  address: {per_second: 10000, burst_count: 10000}
  account: {per_second: 10000, burst_count: 10000}
  failed_attempts: {per_second: 10000, burst_count: 10000}
rc_admin_redaction: {per_second: 10000, burst_count: 10000}
rc_joins:
  local: {per_second: 10000, burst_count: 10000}
  remote: {per_second: 10000, burst_count: 10000}
rc_invites:
  per_room: {per_second: 10000, burst_count: 10000}
  per_user: {per_second: 10000, burst_count: 10000}
  per_issuer: {per_second: 10000, burst_count: 10000}
rc_media_create: {per_second: 10000, burst_count: 10000}
log_config: "$DATA/log.yaml"
YAML
  cat >"$DATA/log.yaml" <<YAML
version: 1
formatters:
  precise:
    format: '%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(message)s'
handlers:
  file:
    class: logging.FileHandler
    formatter: precise
    filename: "$LOG_FILE"
root:
  level: WARNING
  handlers: [file]
disable_existing_loggers: false
YAML
}

start() {
  if pid="$(running_pid)" && probe; then
    echo "$BASE_URL"
    return
  fi
  install
  configure
  say "starting on $BASE_URL"
  "$VENV/bin/python" -m synapse.app.homeserver --config-path "$CONFIG" --daemonize >&2
  local waited=0
  until probe; do
    sleep 0.5
    waited=$((waited + 1))
    if (( waited > TIMEOUT * 2 )); then
      die "no /health answer after ${TIMEOUT}s; see $LOG_FILE"
    fi
  done
  echo "$BASE_URL"
}

stop() {
  local pid
  if ! pid="$(running_pid)"; then
    say "not running"
    return 0
  fi
  kill -TERM "$pid"
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || { rm -f "$PID_FILE"; say "stopped"; return 0; }
    sleep 0.2
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$PID_FILE"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    if pid="$(running_pid)" && probe; then echo "running (pid $pid) at $BASE_URL"; else echo stopped; exit 3; fi ;;
  url) echo "$BASE_URL" ;;
  secret) cat "$SECRET_FILE" ;;
  *) echo "usage: $0 start|stop|status|url|secret" >&2; exit 2 ;;
esac
