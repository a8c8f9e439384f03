#!/usr/bin/env bash
# MLLP peer (HL7 v2 receiver, `hl7` from PyPI) for tests/kis_mdm.rs.
#
#   deploy/dev/mllp-peer.sh start|stop|status|dir
#
# Env: MLLP_PORT (2575); CHARTBRIDGE_CACHE (~/.cache/chartbridge): the venv,
# pid file, log and received messages live in $CHARTBRIDGE_CACHE/mllp.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${CHARTBRIDGE_CACHE:-$HOME/.cache/chartbridge}"
DIR="$CACHE/mllp"
PORT="${MLLP_PORT:-2575}"
PID_FILE="$DIR/mllp-$PORT.pid"
LOG_FILE="$DIR/mllp-$PORT.log"
MSG_DIR="$DIR/received-$PORT"

say() { echo "mllp-peer: $*" >&2; }
die() { say "error: $*"; exit 1; }

running_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(cat "$PID_FILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'mllp_peer.py' || return 1
  echo "$pid"
}

install() {
  mkdir -p "$DIR"
  if [[ ! -x "$DIR/venv/bin/python" ]]; then
    python3 -m venv "$DIR/venv" || die "python3 -m venv failed"
  fi
  if ! "$DIR/venv/bin/python" -c 'import hl7.mllp' 2>/dev/null; then
    say "installing hl7 (PyPI) into $DIR/venv"
    "$DIR/venv/bin/pip" install --quiet 'hl7==0.4.5' >&2 || die "pip install hl7 failed"
  fi
}

ready() { (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; }

cmd_start() {
  if pid="$(running_pid)"; then say "already running (pid $pid)"; echo "127.0.0.1:$PORT"; return 0; fi
  install
  : >"$LOG_FILE"
  (
    trap '' HUP
    exec "$DIR/venv/bin/python" "$SCRIPT_DIR/mllp_peer.py" "$PORT" "$MSG_DIR" </dev/null >>"$LOG_FILE" 2>&1
  ) &
  echo $! >"$PID_FILE"
  for _ in $(seq 1 100); do
    if ready; then say "started (pid $(cat "$PID_FILE")); log: $LOG_FILE"; echo "127.0.0.1:$PORT"; return 0; fi
    sleep 0.1
  done
  tail -n 20 "$LOG_FILE" >&2 || true
  die "not listening on $PORT"
}

cmd_stop() {
  if pid="$(running_pid)"; then
    kill -TERM "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    say "stopped (pid $pid)"
  fi
  rm -f "$PID_FILE"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) if pid="$(running_pid)"; then echo "running (pid $pid) on 127.0.0.1:$PORT"; else echo stopped; exit 3; fi ;;
  dir) echo "$MSG_DIR" ;;
  *) echo "usage: $0 start|stop|status|dir" >&2; exit 2 ;;
esac
