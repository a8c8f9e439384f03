#!/usr/bin/env bash
# Fuzzes the input boundary with cargo-fuzz (libFuzzer): event decoding
# (canonical, WhatsApp, Matrix), decode→classify→map, proof bundles and the
# HL7 v2 ADT parser.
#
#   deploy/dev/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Defaults: 240 s for each of the six targets. Corpora are seeded from
# fixtures/ (events, bad input, proofs, HL7) and fuzz/regressions/ on every run and
# kept in fuzz/corpus/ (not committed); crashes land in fuzz/artifacts/.
# One build (sanitizer-coverage, debug assertions on, no ASan: the targets are
# safe Rust, what we look for are panics) in ~/.cache/chartbridge/fuzz-target.
# The toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its flags.
# Prints, per target, libFuzzer's closing figures (runs, exec/s, corpus size)
# and exits non-zero if any target found a crash.
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
secs=${1:-240}
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(decode_canonical decode_whatsapp decode_matrix map proof_bundle hl7_adt)
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
  nice -n 19 cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/chartbridge/fuzz-target}
flags=(--sanitizer none --debug-assertions)

seed() {
  local target=$1 dir=fuzz/corpus/$1
  mkdir -p "$dir"
  case $target in
    hl7_adt)
      cp fixtures/hl7/*.hl7 fixtures/hl7/bad/*.hl7 "$dir/"
      ;;
    proof_bundle)
      cp fixtures/proofs/sample-bundle.json "$dir/"
      python3 -c 'import json,sys; sys.stdout.write(json.load(open(sys.argv[1]))["checkpoint"])' \
        fixtures/proofs/sample-bundle.json > "$dir/checkpoint.note"
      ;;
    *)
      for f in fixtures/events/* fixtures/bad/*; do
        case $f in *.toml) continue ;; esac
        cp "$f" "$dir/seed-$(basename "$f")"
      done
      ;;
  esac
  if [ -d "fuzz/regressions/$target" ]; then
    cp fuzz/regressions/"$target"/* "$dir/" 2>/dev/null || true
  fi
}

(cd fuzz && nice -n 19 cargo fuzz build "${flags[@]}")

status=0
summary=$root/fuzz/last-run.txt
: > "$summary"
for t in "${targets[@]}"; do
  seed "$t"
  log=$root/fuzz/$t.log
  set +e
  (cd fuzz && nice -n 19 cargo fuzz run "${flags[@]}" "$t" "corpus/$t" -- \
      -max_total_time="$secs" -max_len=65536 -rss_limit_mb=2048 -timeout=10 \
      -print_final_stats=1 >"$log" 2>&1)
  rc=$?
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  speed=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  crashes=$(find "fuzz/artifacts/$t" -type f 2>/dev/null | wc -l)
  line="$t: ${secs}s, $runs runs, $speed exec/s, corpus $corpus files, artifacts $crashes, exit $rc"
  echo "$line" | tee -a "$summary"
  if [ "$rc" -ne 0 ]; then
    status=1
    tail -40 "$log"
  fi
done
exit $status
