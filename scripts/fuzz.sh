#!/usr/bin/env bash
# fuzz.sh [SECONDS]: runs each libFuzzer target of build-san/ (scripts/
# test-sanitized.sh builds it) for SECONDS (default 60) from its seed
# corpus; inputs it finds go to a scratch corpus. A crash fails the script
# and leaves the input as build-san/fuzz/crash-*: add it to
# tests/fuzz/corpus/<target>/ with the fix, so ctest replays it from then on.
# FUZZ_TARGETS="ir config" picks targets (default: all five). FUZZ_RUNS=N
# stops each after N inputs, from a fixed seed (FUZZ_SEED, default 1), so
# that CI tries the same inputs on every clone: a gate, not a lottery; the
# time limit still bounds a slow machine.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-abort_on_error=1:halt_on_error=1:print_stacktrace=1}
mkdir -p build-san/fuzz
for target in ${FUZZ_TARGETS:-ir safetensors shard config tokenizer}; do
  scratch=build-san/fuzz/corpus-$target
  mkdir -p "$scratch"
  seeds=(tests/fuzz/corpus/$target)
  case $target in
    ir) seeds+=(tests/lit/ops tests/lit/passes) ;;
    config) seeds+=(configs) ;;
  esac
  echo "fuzz: $target for ${seconds} s${FUZZ_RUNS:+ or $FUZZ_RUNS inputs}"
  log=build-san/fuzz/$target.log
  limits=(-max_total_time="$seconds")
  [[ -n ${FUZZ_RUNS:-} ]] && limits+=(-runs="$FUZZ_RUNS" -seed="${FUZZ_SEED:-1}")
  if ! (cd build-san/fuzz && ../bin/fuzz-$target "${limits[@]}" -print_final_stats=1 \
      -max_len=65536 -rss_limit_mb=4096 -timeout=30 \
      "$(basename "$scratch")" "${seeds[@]/#/../../}" > "$target.log" 2>&1); then
    # The report from its first line (stack, shadow bytes, the input);
    # the log's tail where no sanitizer line is found.
    if grep -q '==ERROR\|runtime error\|deadly signal' "$log"; then
      sed -n '/==ERROR\|runtime error\|deadly signal/,$p' "$log" | head -n 200
    else
      tail -n 60 "$log"
    fi
    echo "fuzz: fuzz-$target failed; the input is in build-san/fuzz/crash-* (full log: $log)" >&2
    exit 1
  fi
  tail -n 6 "$log"
done
