#!/usr/bin/env bash
# Optional: build the Helios FHIR server (crates.io helios-hfs 0.2.7, R4 +
# SQLite) into the cache, for `CHARTBRIDGE_FHIR_SERVER=helios
# deploy/dev/fhir-server.sh start`.
#
# Takes 60-100 minutes on 2 cores and ~5 GB of RAM: never part of CI (whose
# limit is 90 minutes); run it by hand once per machine. Installs to
# ${CHARTBRIDGE_CACHE:-$HOME/.cache/chartbridge}/helios/bin/hfs.
set -euo pipefail

CACHE="${CHARTBRIDGE_CACHE:-$HOME/.cache/chartbridge}"
ROOT="$CACHE/helios"
VERSION=0.2.7

if [[ -x "$ROOT/bin/hfs" && "${1:-}" != "--force" ]]; then
  echo "build-helios: $ROOT/bin/hfs already exists (--force to rebuild)" >&2
  echo "$ROOT/bin/hfs"
  exit 0
fi
command -v cargo >/dev/null 2>&1 || { echo "build-helios: cargo not found" >&2; exit 1; }
mkdir -p "$ROOT"
echo "build-helios: building helios-hfs $VERSION into $ROOT (60-100 min on 2 cores)" >&2
# a target dir of its own, outside the repo, so that the project's target/ stays small
CARGO_TARGET_DIR="$ROOT/target" cargo install helios-hfs --version "$VERSION" --locked \
  --no-default-features --features R4,sqlite --root "$ROOT"
rm -rf "$ROOT/target"
echo "$ROOT/bin/hfs"
