#!/usr/bin/env bash
# The chaos run (tests/chaos.rs, docs/chaos.md): events through the real
# worker, the real FHIR server behind a fault-injecting proxy, SIGKILLs and
# broker restarts on a private RabbitMQ node; checks the invariants and
# prints one summary line `chaos: events=… lost=0 duplicates=0 …`.
#
#   deploy/dev/chaos.sh            the short variant (as in CI)
#   deploy/dev/chaos.sh --long     10000 events, 24 kills, 2 broker restarts
#   CHAOS_EVENTS=10000 CHAOS_KILLS=25 deploy/dev/chaos.sh   any size
#
# Set CHAOS_RELEASE=1 to build with --release. Exits non-zero on a violation.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chartbridge/target}"

if [ "${1:-}" = "--long" ]; then
  export CHAOS_EVENTS="${CHAOS_EVENTS:-10000}"
  export CHAOS_KILLS="${CHAOS_KILLS:-24}"
  export CHAOS_BROKER_RESTARTS="${CHAOS_BROKER_RESTARTS:-2}"
  export CHAOS_OUTAGE_SECS="${CHAOS_OUTAGE_SECS:-15}"
  export CHAOS_AUDIT_SAMPLE="${CHAOS_AUDIT_SAMPLE:-200}"
  export CHAOS_LIMIT_SECS="${CHAOS_LIMIT_SECS:-3600}"
fi

deploy/dev/services.sh
export FHIR_PORT="${FHIR_PORT:-8090}"
started_fhir=0
if ! deploy/dev/fhir-server.sh status >/dev/null 2>&1; then
  deploy/dev/fhir-server.sh start >/dev/null
  started_fhir=1
fi
cleanup() {
  CHAOS_RABBIT_PORT="${CHAOS_RABBIT_PORT:-5673}" deploy/dev/chaos-rabbit.sh stop || true
  if [ "$started_fhir" = 1 ]; then deploy/dev/fhir-server.sh stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
export CHARTBRIDGE_TEST_FHIR_URL="http://127.0.0.1:$FHIR_PORT"

profile=()
if [ "${CHAOS_RELEASE:-0}" = 1 ]; then profile=(--release); fi
set +e
cargo test "${profile[@]}" --test chaos -- --nocapture --test-threads 1 2>&1 |
  tee "${CHAOS_LOG:-/tmp/chartbridge-chaos.log}" | grep -E '^chaos|chaos violation|panicked|^test result'
status=${PIPESTATUS[0]}
exit "$status"
