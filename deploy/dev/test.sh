#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, and integration tests
# against the real RabbitMQ, PostgreSQL and a validating FHIR R4 server that
# this script installs (npm) and starts, and a Synapse homeserver (PyPI,
# deploy/dev/synapse.sh) for the Matrix tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chartbridge/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

deploy/dev/services.sh
export FHIR_PORT="${FHIR_PORT:-8090}"
started_fhir=0
if ! deploy/dev/fhir-server.sh status >/dev/null 2>&1; then
  deploy/dev/fhir-server.sh start >/dev/null
  started_fhir=1
fi
export SYNAPSE_PORT="${SYNAPSE_PORT:-8448}"
started_synapse=0
if ! deploy/dev/synapse.sh status >/dev/null 2>&1; then
  deploy/dev/synapse.sh start >/dev/null
  started_synapse=1
fi
cleanup() {
  if [ "$started_fhir" = 1 ]; then deploy/dev/fhir-server.sh stop >/dev/null 2>&1 || true; fi
  if [ "$started_synapse" = 1 ]; then deploy/dev/synapse.sh stop >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT
export CHARTBRIDGE_TEST_FHIR_URL="http://127.0.0.1:$FHIR_PORT"
export CHARTBRIDGE_TEST_SYNAPSE_URL="$(deploy/dev/synapse.sh url)"
CHARTBRIDGE_TEST_SYNAPSE_SECRET="$(deploy/dev/synapse.sh secret)"
export CHARTBRIDGE_TEST_SYNAPSE_SECRET

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --lib --bins --tests
if python3 -c 'import cryptography' 2>/dev/null || python3 -m pip install --quiet cryptography >/dev/null 2>&1; then
  echo "== independent proof verifier (Python)"
  python3 deploy/tools/verify_bundle.py fixtures/proofs/sample-bundle.json \
    --content fixtures/proofs/sample-content.bin --key fixtures/proofs/sample.vkey
fi
