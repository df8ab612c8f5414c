#!/usr/bin/env bash
# The README's first command: set kiln up on a fresh Debian 12 machine and run
# the main job, then sample from the trained model.
#  - with a CUDA GPU (nvidia-smi lists one): GPT-2 124M in bf16-mixed on the
#    English text of Debian packages — the fortunes and the GCIDE dictionary
#    (dict-gcide, installed here), 16.9 M GPT-2 tokens — for 2,000 steps
#    (configs/gpu-quickstart.toml); it reports validation loss, tok/s and MFU.
#  - otherwise: a small byte-level GPT trained on the CPU on the fortunes
#    (configs/default.toml, the embedded default).
# KILN_QUICKSTART=cpu or =gpu picks one; extra arguments go to kiln train
# (e.g. --set train.steps=500).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

mode=${KILN_QUICKSTART:-auto}
if [ "$mode" = auto ]; then
  mode=cpu
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    mode=gpu
  fi
fi

fortunes=()
for f in /usr/share/games/fortunes/*; do
  case "$f" in *.dat|*.u8) continue ;; esac
  [ -f "$f" ] && fortunes+=("$f")
done

# A run directory of its own: runs/NAME, then runs/NAME-2, ... (kiln refuses
# to mix a new run into an earlier one's directory).
free_run_dir() {
  local run=runs/$1
  for n in $(seq 2 1000); do
    [ -n "$(ls -A "$run" 2>/dev/null)" ] || break
    run=runs/$1-$n
  done
  echo "$run"
}

if [ "$mode" = gpu ]; then
  gcide=/usr/share/dictd/gcide.dict.dz
  if [ ! -f "$gcide" ]; then
    echo "quickstart: installing dict-gcide (the GCIDE dictionary, 40 MB of English)"
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends dict-gcide
  fi
  # The dictionary is read compressed (dictzip is gzip); its paragraphs and
  # the fortunes are the documents, 5 % of them held out for validation.
  if [ ! -f data/english-gpt2/train_000000.bin ]; then
    build/bin/kiln tokenize --tokenizer gpt2 --split-on % --split-on '' --val-fraction 0.05 \
      --out data/english-gpt2 "$gcide" "${fortunes[@]}"
  fi
  run=$(free_run_dir gpt2-124m)
  build/bin/kiln train configs/gpu-quickstart.toml --set run.dir="$run" "$@"
  echo
  echo "A sample from the trained model (kiln sample $run --prompt ...):"
  build/bin/kiln sample "$run" --prompt "The meaning of" --tokens 100 --temperature 0.8 --seed 1
  exit 0
fi

# The CPU run: one document per fortune (separated by lines holding "%").
if [ ! -f data/fortunes/train_000000.bin ]; then
  build/bin/kiln tokenize --tokenizer byte --split-on % --val-fraction 0.05 \
    --out data/fortunes "${fortunes[@]}"
fi
run=$(free_run_dir default)
build/bin/kiln train --set run.dir="$run" "$@"
echo
echo "A sample from the trained model (kiln sample $run --prompt ...):"
build/bin/kiln sample "$run" --prompt "The " --tokens 200 --temperature 0.8 --seed 1
