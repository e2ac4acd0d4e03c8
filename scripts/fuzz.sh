#!/usr/bin/env bash
# Fuzzes the audio decoder, the image decoder and the upload form reader (cargo fuzz, nightly,
# libFuzzer), each for FUZZ_SECONDS (default 600), and prints the figures the README quotes.
# A crash is copied to fuzz/regressions/<target>/ (replayed by server/tests/fuzz_seeds.rs in the
# test command) and the script fails.
#
#   scripts/fuzz.sh                 # all three, 10 minutes each
#   FUZZ_SECONDS=60 scripts/fuzz.sh audio_decode
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-600}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(audio_decode image_decode upload_form)

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo +nightly install cargo-fuzz --locked
fi

# No sanitizer (the code is safe Rust; what we look for is panics, overflows, aborts and
# unbounded memory), debug assertions on (integer overflow panics).
flags=(--sanitizer none --debug-assertions --fuzz-dir fuzz)
echo "== building the fuzz targets"
cargo +nightly fuzz build "${flags[@]}"

status=0
for target in "${targets[@]}"; do
  corpus="target/fuzz-corpus/$target"
  artifacts="target/fuzz-artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  log="target/fuzz-$target.log"
  echo "== $target for ${seconds}s"
  set +e
  cargo +nightly fuzz run "${flags[@]}" "$target" "$corpus" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=1024 -timeout=20 \
    -artifact_prefix="$artifacts/" -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')
  peak=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  echo "$target: exit $rc, ${runs} runs in ${seconds}s, coverage ${cov} edges, corpus $(ls "$corpus" | wc -l) inputs, peak RSS ${peak} MB"
  if [ "$rc" -ne 0 ]; then
    status=1
    mkdir -p "fuzz/regressions/$target"
    for crash in "$artifacts"/*; do
      [ -f "$crash" ] && cp "$crash" "fuzz/regressions/$target/" && echo "  crash: $crash"
    done
    tail -40 "$log"
  fi
done
exit $status
