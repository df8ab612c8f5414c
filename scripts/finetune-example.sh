#!/usr/bin/env bash
# The worked example of docs/finetuning.md, stage by stage: pre-train a small
# byte-level Llama on the fortunes corpus (Debian package `fortunes`), fine-
# tune it with SFT on prompt/response pairs derived from the same text (a
# fortune's first line -> the rest), then DPO on pairs preferring the true
# continuation over the same words shuffled. The commands are the doc's.
#
# Environment: KILN (the binary), RUNS and DATA (where runs and data go;
# runs/ and data/), PRE_STEPS, SFT_STEPS, DPO_STEPS (600, 300, 200; the
# tests make them small). A run directory that already holds a run is
# refused: remove $RUNS/fortunes-* to start over.
set -euo pipefail
cd "$(dirname "$0")/.."
kiln=${KILN:-build/bin/kiln}
runs=${RUNS:-runs}
data=${DATA:-data}
pre_steps=${PRE_STEPS:-600}
sft_steps=${SFT_STEPS:-300}
dpo_steps=${DPO_STEPS:-200}

fortunes=()
for f in /usr/share/games/fortunes/*; do
  case "$f" in *.dat|*.u8) continue ;; esac
  [ -f "$f" ] && fortunes+=("$f")
done
if [ ${#fortunes[@]} -eq 0 ]; then
  echo "finetune-example: no fortunes in /usr/share/games/fortunes (apt-get install fortunes)" >&2
  exit 1
fi

echo "== 1. pre-training on the fortunes"
if [ ! -f "$data/fortunes/train_000000.bin" ]; then
  "$kiln" tokenize --tokenizer byte --split-on % --val-fraction 0.05 \
    --out "$data/fortunes" "${fortunes[@]}"
fi
"$kiln" train configs/llama-fortunes.toml --set train.steps="$pre_steps" \
  --set "data.train=$data/fortunes/train_*.bin" --set "data.val=$data/fortunes/val_*.bin" \
  --set run.dir="$runs/fortunes-pretrain"

echo "== 2. supervised fine-tuning: first line -> the rest"
python3 scripts/derive.py sft "${fortunes[@]}" > "$data/fortunes-sft.jsonl"
"$kiln" tokenize --tokenizer byte --format sft --max-example-tokens 129 --val-fraction 0.05 \
  --out "$data/fortunes-sft" "$data/fortunes-sft.jsonl"
"$kiln" train configs/llama-fortunes.toml --set train.steps="$sft_steps" \
  --set "data.train=$data/fortunes-sft/train_*.bin" --set "data.val=$data/fortunes-sft/val_*.bin" \
  --set model.loss_normalization=targets --set model.init_from="$runs/fortunes-pretrain" \
  --set optim.lr=1e-3 --set optim.warmup_steps=10 --set eval.every=100 \
  --set run.dir="$runs/fortunes-sft"

echo "== 3. DPO: the true continuation over one cut after half its words"
python3 scripts/derive.py dpo "${fortunes[@]}" > "$data/fortunes-dpo.jsonl"
"$kiln" tokenize --tokenizer byte --format dpo --seq-len 128 --val-fraction 0.05 \
  --out "$data/fortunes-dpo" "$data/fortunes-dpo.jsonl"
"$kiln" train configs/llama-fortunes.toml --set train.steps="$dpo_steps" \
  --set "data.train=$data/fortunes-dpo/train_*.bin" --set "data.val=$data/fortunes-dpo/val_*.bin" \
  --set model.objective=dpo --set model.dpo_beta=0.1 --set model.init_from="$runs/fortunes-sft" \
  --set optim.lr=3e-4 --set optim.warmup_steps=10 --set eval.every=25 --set eval.batches=16 \
  --set run.dir="$runs/fortunes-dpo"

echo "== held-out preference accuracy (val_reward_accuracy in $runs/fortunes-dpo/metrics.jsonl)"
python3 - "$runs/fortunes-dpo/metrics.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    if "val_reward_accuracy" in r:
        print(f"step {r['step']:5d}  val loss {r['val_loss']:.4f}  accuracy {r['val_reward_accuracy']:.3f}  margin {r['val_reward_margin']:.3f}")
PY
