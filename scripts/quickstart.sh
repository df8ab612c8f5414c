#!/usr/bin/env bash
# The README's first command: set kiln up on a fresh Debian 12 machine and run
# the main job — a small byte-level GPT trained on the CPU on the fortunes
# corpus, then a sample from it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

# The corpus: the text files of the Debian package `fortunes`, one document
# per fortune (separated by lines holding "%").
if [ ! -f data/fortunes/train_000000.bin ]; then
  files=()
  for f in /usr/share/games/fortunes/*; do
    case "$f" in *.dat|*.u8) continue ;; esac
    [ -f "$f" ] && files+=("$f")
  done
  build/bin/kiln tokenize --tokenizer byte --split-on % --val-fraction 0.05 \
    --out data/fortunes "${files[@]}"
fi

build/bin/kiln train "$@"
echo
echo "A sample from the trained model (kiln sample runs/default --prompt ...):"
build/bin/kiln sample runs/default --prompt "The " --tokens 200 --temperature 0.8 --seed 1
