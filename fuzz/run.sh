#!/usr/bin/env bash
# Runs every cargo-fuzz target for SECONDS each (default 10): `fuzz/run.sh`
# in CI, `fuzz/run.sh 600` for a longer run on demand. Extra arguments go
# to libFuzzer (`fuzz/run.sh 60 -max_len=65536`); FUZZ_TARGETS="a b" picks targets.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`) and a nightly
# compiler: rustup's nightly if installed, else the stable one with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags).
#
# Each target reads its committed seeds in fuzz/corpus/<target>/ and grows a
# working corpus in fuzz/target/corpus/<target>/ (not committed), so a run
# never rewrites the seeds. A crash leaves its input in
# fuzz/artifacts/<target>/ and the script fails after running every target.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-10}"
shift || true
case "$seconds" in
  '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS] [libFuzzer flags...]" >&2; exit 2 ;;
esac

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "fuzz/run.sh: cargo-fuzz is not installed: cargo install cargo-fuzz --locked" >&2
  exit 2
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  fuzz=(cargo +nightly fuzz)
else
  export RUSTC_BOOTSTRAP=1
  fuzz=(cargo fuzz)
fi

targets="${FUZZ_TARGETS:-$("${fuzz[@]}" list)}"
started=$SECONDS
"${fuzz[@]}" build
echo "fuzz/run.sh: built in $((SECONDS - started))s"

failed=()
for target in $targets; do
  mkdir -p "corpus/$target" "target/corpus/$target"
  echo "==> $target for ${seconds}s"
  # The working corpus comes first: libFuzzer adds new inputs to the first
  # directory only.
  if ! "${fuzz[@]}" run "$target" "target/corpus/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "$@"; then
    failed+=("$target")
  fi
done

echo "fuzz/run.sh: done in $((SECONDS - started))s"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz/run.sh: failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
