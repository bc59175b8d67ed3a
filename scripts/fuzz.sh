#!/usr/bin/env bash
# Runs every decoder fuzz target (cargo fuzz, libFuzzer) for a bounded time each.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     default 30
#
# Needs the nightly toolchain (rustup) and cargo-fuzz (installed from crates.io when missing).
# Seeds live in fuzz/corpus/<target>; new inputs go to a scratch copy, not into the repo. A
# crash stops the script and leaves its input in fuzz/artifacts/<target>/: turn it into a
# regression test (crates/decode/tests/contract.rs) before fixing it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/fuzz"
secs=${1:-30}
rustup toolchain list | grep -q '^nightly' || { echo "fuzz: the nightly toolchain is required (rustup toolchain install nightly)" >&2; exit 1; }
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in decode_deal decode_activity decode_roster decode_target; do
  mkdir -p "$scratch/$target"
  echo "fuzz: $target for ${secs}s"
  rc=0
  cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
    -max_total_time="$secs" -max_len=70000 -print_final_stats=1 >"$scratch/$target.log" 2>&1 || rc=$?
  grep -E "^(stat::number_of_executed_units|stat::new_units_added|==[0-9]+==|SUMMARY|Done)" \
    "$scratch/$target.log" || true
  if [ "$rc" -ne 0 ]; then
    tail -n 30 "$scratch/$target.log" >&2
    echo "fuzz: $target failed (exit $rc); crashing inputs are in fuzz/artifacts/$target" >&2
    exit 1
  fi
done
echo "fuzz: no crash"
