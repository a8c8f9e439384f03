#!/usr/bin/env bash
# The throughput benchmarks in one go, release profile (docs/benchmarks.md):
# the raw-broker baseline; chartbridge against a null KIS on SQLite and
# PostgreSQL; 1, 2 and 4 worker processes on one PostgreSQL database;
# latency at half the measured maximum; chartbridge against the dev FHIR
# server beside that server's own ingest of the same bundles, one message
# per transaction and kis.batch_max = 16; a 20 and a 200 MiB medium
# (peak RSS of the worker binary). Every figure is printed beside its
# baseline as a ratio.
#
#   deploy/dev/bench.sh                     # 10,000 events (takes ~15 min with the build)
#   BENCH_EVENTS=2000 deploy/dev/bench.sh   # shorter
#
# RabbitMQ and PostgreSQL as for the tests (deploy/dev/services.sh); a
# fresh dev FHIR server is started on BENCH_FHIR_PORT (8095) and stopped at
# the end, so the dev-KIS figures are not those of a server other runs
# filled. The output is also kept in $CARGO_TARGET_DIR/bench/e2e.txt and
# $CARGO_TARGET_DIR/bench/media.txt.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chartbridge/target}"

deploy/dev/services.sh
port="${BENCH_FHIR_PORT:-8095}"
FHIR_PORT="$port" deploy/dev/fhir-server.sh stop >/dev/null 2>&1 || true
FHIR_PORT="$port" deploy/dev/fhir-server.sh start >/dev/null
trap 'FHIR_PORT="$port" deploy/dev/fhir-server.sh stop >/dev/null 2>&1 || true' EXIT
export CHARTBRIDGE_TEST_FHIR_URL="http://127.0.0.1:$port"

export BENCH_EVENTS="${BENCH_EVENTS:-10000}"
export BENCH_KIS="${BENCH_KIS:-null,dev}"
export BENCH_WORKERS="${BENCH_WORKERS:-1,2,4}"
export BENCH_LATENCY="${BENCH_LATENCY:-1}"
export BENCH_BATCH="${BENCH_BATCH:-16}"
mkdir -p "$CARGO_TARGET_DIR/bench"
cargo bench --bench e2e 2>&1 | grep -v '^\s*\(Compiling\|Finished\|Running\)' | tee "$CARGO_TARGET_DIR/bench/e2e.txt"
cargo bench --bench media 2>&1 | grep -v '^\s*\(Compiling\|Finished\|Running\)' | tee "$CARGO_TARGET_DIR/bench/media.txt"
