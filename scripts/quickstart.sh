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

# A run directory of its own: runs/default, then runs/default-2, ... (kiln
# refuses to mix a new run into an earlier one's directory).
run=runs/default
for n in $(seq 2 1000); do
  [ -n "$(ls -A "$run" 2>/dev/null)" ] || break
  run=runs/default-$n
done
build/bin/kiln train --set run.dir="$run" "$@"
echo
echo "A sample from the trained model (kiln sample $run --prompt ...):"
build/bin/kiln sample "$run" --prompt "The " --tokens 200 --temperature 0.8 --seed 1
