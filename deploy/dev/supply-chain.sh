#!/usr/bin/env bash
# Supply-chain checks: the declared minimum Rust version against the
# dependencies' own; licences, banned crates and sources (deny.toml) with
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

# Cargo.toml's rust-version must be at least every dependency's
# `rust_version` (fhir-sdk 0.16 needs 1.95), and the toolchain must meet it.
msrv() {
  cargo metadata --format-version 1 --locked --all-features | python3 -c '
import json, subprocess, sys
def v(s):
    parts = [int(x) for x in (s or "0").split(".")]
    return tuple(parts + [0] * (3 - len(parts)))
m = json.load(sys.stdin)
ours = next(p for p in m["packages"] if p["name"] == "chartbridge")["rust_version"]
deps = [p for p in m["packages"] if p["name"] != "chartbridge"]
top = max(deps, key=lambda p: v(p.get("rust_version")))
need, name = top["rust_version"], top["name"] + " " + top["version"]
rustc = subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout.split()[1]
assert v(ours) >= v(need), "rust-version %s is below %s, which %s needs" % (ours, need, name)
assert v(rustc) >= v(ours), "rustc %s is older than rust-version %s" % (rustc, ours)
print("rust-version %s: the highest a dependency needs is %s (%s); rustc %s" % (ours, need, name, rustc))
'
}

case "${1:-check}" in
  check)
    msrv
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
