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
started_oauth=0
started_mllp=0
cleanup() {
  if [ "$started_fhir" = 1 ]; then deploy/dev/fhir-server.sh stop >/dev/null 2>&1 || true; fi
  if [ "$started_synapse" = 1 ]; then deploy/dev/synapse.sh stop >/dev/null 2>&1 || true; fi
  if [ "$started_oauth" = 1 ]; then deploy/dev/oauth-server.sh stop >/dev/null 2>&1 || true; fi
  if [ "$started_mllp" = 1 ]; then deploy/dev/mllp-peer.sh stop >/dev/null 2>&1 || true; fi
  # Private RabbitMQ nodes of tests/faults.rs and tests/chaos.rs (they stop
  # them themselves; this covers an aborted run).
  for port in 5673 5674; do CHAOS_RABBIT_PORT=$port deploy/dev/chaos-rabbit.sh stop >/dev/null 2>&1 || true; done
  # The TLS node of tests/broker_tls.rs (5675, TLS 5676) and the TLS-only
  # PostgreSQL cluster of tests/store_tls.rs (5439) live in the tests' own
  # temporary directories and are stopped by them; this ends what an aborted
  # run left listening.
  for pid in $(ss -Hltnp 'sport = :5675 or sport = :5439' 2>/dev/null | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
    kill "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT
export CHARTBRIDGE_TEST_FHIR_URL="http://127.0.0.1:$FHIR_PORT"
export CHARTBRIDGE_TEST_SYNAPSE_URL="$(deploy/dev/synapse.sh url)"
CHARTBRIDGE_TEST_SYNAPSE_SECRET="$(deploy/dev/synapse.sh secret)"
export CHARTBRIDGE_TEST_SYNAPSE_SECRET
# OAuth2 authorization server for tests/kis_auth.rs
export OAUTH_PORT="${OAUTH_PORT:-8190}"
if ! deploy/dev/oauth-server.sh status >/dev/null 2>&1; then
  deploy/dev/oauth-server.sh start >/dev/null
  started_oauth=1
fi
export CHARTBRIDGE_TEST_OAUTH_URL="http://127.0.0.1:$OAUTH_PORT"
# HL7 v2 MLLP receiver for tests/kis_mdm.rs
export MLLP_PORT="${MLLP_PORT:-2575}"
if ! deploy/dev/mllp-peer.sh status >/dev/null 2>&1; then
  deploy/dev/mllp-peer.sh start >/dev/null
  started_mllp=1
fi
export CHARTBRIDGE_TEST_MLLP_PORT="$MLLP_PORT"

echo "== supply chain (cargo deny: licenses, bans, sources)"
deploy/dev/supply-chain.sh check
echo "== cargo fmt --check"
cargo fmt --all -- --check
# The Matrix source's end-to-end encryption (matrix-sdk) is the cargo
# feature e2ee: lints and tests run with it (tests/matrix_e2ee.rs needs it);
# the build without it is checked too (docs/benchmarks.md has the costs).
echo "== cargo clippy (features: e2ee)"
cargo clippy --all-targets --features e2ee --quiet -- -D warnings
echo "== cargo check (no features)"
cargo check --lib --bins --quiet
# The independent proof verifier (Python, `cryptography` for Ed25519) runs
# on the fixtures below and inside tests/media_minimise.rs.
python3 -c 'import cryptography' 2>/dev/null || python3 -m pip install --quiet cryptography
# The console's browser tests (tests/console_*.rs) drive Debian's chromium
# through chromedriver; installed here when missing (as root), otherwise
# those tests skip with a message.
if ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing chromium and chromium-driver (console browser tests)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
      || { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver >/dev/null 2>&1; } \
      || true
  fi
fi
if command -v chromedriver >/dev/null; then
  export CHARTBRIDGE_TEST_REQUIRE_BROWSER=1
else
  echo "console browser tests SKIP: chromedriver not found (apt-get install chromium chromium-driver as root)"
fi
echo "== cargo test (features: e2ee)"
cargo test --features e2ee --lib --bins --tests
if python3 -c 'import cryptography' 2>/dev/null || python3 -m pip install --quiet cryptography >/dev/null 2>&1; then
  echo "== independent proof verifier (Python): v1 and v2 sample bundles"
  python3 deploy/tools/verify_bundle.py fixtures/proofs/sample-bundle.json \
    --content fixtures/proofs/sample-content.bin --key fixtures/proofs/sample.vkey
  python3 deploy/tools/verify_bundle.py fixtures/proofs/sample-v2-bundle.json \
    --content fixtures/proofs/sample-v2-content.bin --key fixtures/proofs/sample.vkey
  python3 deploy/tools/verify_bundle.py fixtures/proofs/sample-v2-bundle.json \
    --content fixtures/proofs/sample-v2-received.bin --key fixtures/proofs/sample.vkey
fi
# Alert rules: syntax and unit tests (promtool, Debian package prometheus).
if ! command -v promtool >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 \
    || { apt-get update >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1; } \
    || true
fi
if command -v promtool >/dev/null; then
  echo "== promtool: alert rules"
  promtool check rules deploy/prometheus/chartbridge-rules.yml
  promtool test rules deploy/prometheus/chartbridge-rules.test.yml
else
  echo "== promtool not available: alert rules not checked"
fi
# Packaging: systemd unit, Kubernetes manifests, compose file, RabbitMQ
# definitions (deploy/dev/check-packaging.sh; the image build is
# deploy/dev/image.sh, not run here).
deploy/dev/check-packaging.sh
