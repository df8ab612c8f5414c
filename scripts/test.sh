#!/usr/bin/env bash
# Sets up and builds kiln (scripts/setup.sh), then runs the whole test suite:
# the lit suite (FileCheck tests of IR, passes and tools) and the GoogleTest
# unit tests, under one ctest. GPU tests are skipped on machines without one.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cd build
ctest --output-on-failure -j "$(nproc)"
