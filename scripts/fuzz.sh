#!/usr/bin/env bash
# fuzz.sh [SECONDS]: runs each libFuzzer target of build-san/ (scripts/
# test-sanitized.sh builds it) for SECONDS (default 60) from its seed
# corpus; inputs it finds go to a scratch corpus. A crash fails the script
# and leaves the input as build-san/fuzz/crash-*: add it to
# tests/fuzz/corpus/<target>/ with the fix, so ctest replays it from then on.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-abort_on_error=1:halt_on_error=1:print_stacktrace=1}
mkdir -p build-san/fuzz
for target in ir safetensors shard config; do
  scratch=build-san/fuzz/corpus-$target
  mkdir -p "$scratch"
  seeds=(tests/fuzz/corpus/$target)
  case $target in
    ir) seeds+=(tests/lit/ops tests/lit/passes) ;;
    config) seeds+=(configs) ;;
  esac
  echo "fuzz: $target for ${seconds} s"
  (cd build-san/fuzz && ../bin/fuzz-$target -max_total_time="$seconds" -print_final_stats=1 \
      -max_len=65536 -rss_limit_mb=4096 -timeout=30 \
      "$(basename "$scratch")" "${seeds[@]/#/../../}" 2>&1 | tail -n 12)
done
