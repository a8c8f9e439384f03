#!/usr/bin/env bash
# Supply-chain checks: licences, banned crates and sources (deny.toml) with
# cargo-deny; `sbom` writes a CycloneDX SBOM with cargo-cyclonedx.
#   deploy/dev/supply-chain.sh check       # what .ci/run runs
#   deploy/dev/supply-chain.sh sbom [DIR]  # CycloneDX JSON into DIR (default target/sbom)
# Tools are installed from crates.io into ~/.cargo/bin on first use.
# Advisories need the RustSec database, fetched from GitHub, which the
# build network does not reach: with CHARTBRIDGE_ADVISORIES=1 they are
# checked offline against the copy cargo-deny keeps in
# ~/.cargo/advisory-dbs (place a clone of rustsec/advisory-db there).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"

need() { # tool crate version
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "supply-chain: installing $2 $3 from crates.io" >&2
    cargo install --quiet --locked "$2" --version "$3" >&2
  fi
}

case "${1:-check}" in
  check)
    need cargo-deny cargo-deny 0.20.2
    checks=(licenses bans sources)
    if [ "${CHARTBRIDGE_ADVISORIES:-0}" = 1 ]; then
      exec cargo deny --all-features --offline check advisories "${checks[@]}"
    fi
    exec cargo deny --all-features check "${checks[@]}"
    ;;
  sbom)
    need cargo-cyclonedx cargo-cyclonedx 0.5.9
    out="${2:-target/sbom}"
    mkdir -p "$out"
    cargo cyclonedx --format json --all-features --override-filename chartbridge.cdx >&2
    mv chartbridge.cdx.json "$out/"
    echo "$out/chartbridge.cdx.json"
    ;;
  *) echo "usage: $0 check|sbom [DIR]" >&2; exit 2 ;;
esac
