#!/usr/bin/env bash
# The checking configuration (issue #10; DESIGN: "keep a build without
# NDEBUG and with sanitizers"): clang 22 with assertions on, AddressSanitizer
# and UndefinedBehaviorSanitizer (every report fatal), libFuzzer targets.
# Builds into build-san/, runs the unit and lit suites there, then each fuzz
# target for FUZZ_SECONDS (default 60) from its seed corpus, or for
# FUZZ_RUNS inputs from a fixed seed (what .ci/run does).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh   # the Release build and the common packages

missing=()
for p in clang-22 libclang-rt-22-dev; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "test-sanitized: installing ${missing[*]}"
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

cmake -G Ninja -S . -B build-san -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_C_COMPILER=clang-22 -DCMAKE_CXX_COMPILER=clang++-22 \
  -DCMAKE_C_FLAGS_DEBUG="-O1 -g" -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" \
  -DKILN_STATIC_LLVM=OFF -DKILN_ENABLE_ASSERTIONS=ON -DKILN_SANITIZE=address,undefined \
  -DKILN_ENABLE_FUZZERS=ON
cmake --build build-san

# A sanitizer report aborts (a crash, which `not` in lit does not accept),
# rather than exiting 1 like an ordinary error would.
export ASAN_OPTIONS=abort_on_error=1:detect_leaks=1:strict_string_checks=1
export UBSAN_OPTIONS=abort_on_error=1:halt_on_error=1:print_stacktrace=1
(cd build-san && ctest --output-on-failure -j "$(nproc)")
bash scripts/fuzz.sh "${FUZZ_SECONDS:-60}"
