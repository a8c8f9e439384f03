#!/usr/bin/env bash
# Local OAuth 2.0 authorization server (oidc-provider from npm) for the KIS
# auth tests (tests/kis_auth.rs): client credentials with client secret and
# SMART Backend Services private_key_jwt (RS384/ES384), introspection,
# revocation. Clients and their test-only keys: deploy/dev/oauth/server.mjs,
# fixtures/oauth/.
#
#   deploy/dev/oauth-server.sh start|stop|status|url|install (install: only the node packages)
#
# Env: OAUTH_PORT (8190); CHARTBRIDGE_CACHE (~/.cache/chartbridge): packages,
# pid file and log in $CHARTBRIDGE_CACHE/oauth-server.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$SCRIPT_DIR/../.." && pwd)"
SRC_DIR="$SCRIPT_DIR/oauth"
CACHE="${CHARTBRIDGE_CACHE:-$HOME/.cache/chartbridge}"
DIR="$CACHE/oauth-server"
PORT="${OAUTH_PORT:-8190}"
BASE_URL="http://127.0.0.1:$PORT"
PID_FILE="$DIR/oauth-$PORT.pid"
LOG_FILE="$DIR/oauth-$PORT.log"

say() { echo "oauth-server: $*" >&2; }
die() { say "error: $*"; exit 1; }

probe() {
  local url="$BASE_URL/.well-known/openid-configuration" body
  if command -v curl >/dev/null 2>&1; then
    body="$(curl -fsS --max-time 2 "$url" 2>/dev/null)" || return 1
  else
    body="$(node -e 'fetch(process.argv[1], { signal: AbortSignal.timeout(2000) })
      .then(async (r) => { if (!r.ok) process.exit(1); process.stdout.write(await r.text()); })
      .catch(() => process.exit(1));' "$url" 2>/dev/null)" || return 1
  fi
  [[ "$body" == *'"token_endpoint"'* ]]
}

running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'server.mjs' || return 1
  echo "$pid"
}

install_packages() {
  command -v npm >/dev/null 2>&1 || die "npm not found on PATH"
  mkdir -p "$DIR"
  local want have
  want="$(sha256sum "$SRC_DIR/package-lock.json" | cut -d' ' -f1)"
  have="$(cat "$DIR/.lock.sha256" 2>/dev/null || true)"
  if [[ "$want" != "$have" || ! -d "$DIR/node_modules/oidc-provider" ]]; then
    say "installing node packages into $DIR (npm ci)"
    cp "$SRC_DIR/package.json" "$SRC_DIR/package-lock.json" "$DIR/"
    (cd "$DIR" && npm ci --no-audit --no-fund --loglevel=error >&2) || die "npm ci failed in $DIR"
    echo "$want" >"$DIR/.lock.sha256"
  fi
  cp "$SRC_DIR/server.mjs" "$DIR/server.mjs"
}

cmd_start() {
  local pid
  if pid="$(running_pid)" && probe; then
    say "already running (pid $pid)"
    echo "$BASE_URL"
    return 0
  fi
  install_packages
  : >"$LOG_FILE"
  (
    cd "$DIR"
    trap '' HUP
    OAUTH_PORT="$PORT" OAUTH_KEYS_DIR="$REPO/fixtures/oauth" exec node server.mjs </dev/null >>"$LOG_FILE" 2>&1
  ) &
  echo $! >"$PID_FILE"
  for _ in $(seq 1 100); do
    if probe; then
      say "started (pid $(cat "$PID_FILE")); log: $LOG_FILE"
      echo "$BASE_URL"
      return 0
    fi
    sleep 0.2
  done
  tail -n 20 "$LOG_FILE" >&2 || true
  die "not ready at $BASE_URL"
}

cmd_stop() {
  local pid
  if pid="$(running_pid)"; then
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    say "stopped (pid $pid)"
  fi
  rm -f "$PID_FILE"
}

case "${1:-}" in
  start) cmd_start ;;
  install) install_packages ;;
  stop) cmd_stop ;;
  status) if pid="$(running_pid)"; then echo "running (pid $pid) at $BASE_URL"; else echo stopped; exit 3; fi ;;
  url) echo "$BASE_URL" ;;
  *) echo "usage: $0 start|stop|status|url|install" >&2; exit 2 ;;
esac
