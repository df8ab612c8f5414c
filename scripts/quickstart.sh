#!/usr/bin/env bash
# The README's first command: set kiln up on a fresh Debian 12 machine and
# run the main job. Until `kiln train` exists, the main job is `kiln version`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
build/bin/kiln version
