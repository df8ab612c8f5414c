#!/usr/bin/env bash
# One short pipelined run of the dense fortunes model as two rank processes
# sharing one GPU (as bench/gpu.sh pipeline-gpu), printing each rank's last
# lines: for finding where a run stops. pipeline_debug.sh SECONDS EXTRA...
cd "$(dirname "$0")/.."
BIN=/tmp/kiln-bin; mkdir -p $BIN
for f in .gpu/*.gz; do [ -x "$BIN/$(basename "$f" .gz)" ] || { gunzip -c "$f" > "$BIN/$(basename "$f" .gz)"; chmod +x "$BIN/$(basename "$f" .gz)"; }; done
KILN=$BIN/kiln
[ -d /tmp/fortunes-byte ] || $KILN tokenize --tokenizer byte --split-on % --val-fraction 0.05 \
  --out /tmp/fortunes-byte .gpu/corpus/fortunes/* | tail -1
secs=$1; shift
n=${RANKS:-2}
port=$((20000 + RANDOM % 20000)); pids=()
rm -rf /tmp/pipe-debug
for ((r = 0; r < n; r++)); do
  RANK=$r WORLD_SIZE=$n LOCAL_RANK=$r LOCAL_WORLD_SIZE=$n MASTER_PORT=$port \
    NCCL_HOSTID=kiln-rank-$r NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_SOCKET_IFNAME=lo \
    NCCL_DEBUG=WARN XDG_CACHE_HOME=/tmp/kiln-cache timeout -s INT -k 5 $secs $KILN train configs/moe-fortunes.toml \
    --set moe.experts=0 --set "data.train=/tmp/fortunes-byte/train_*.bin" \
    --set "data.val=/tmp/fortunes-byte/val_*.bin" --set train.precision=f32 --set train.steps=3 \
    --set train.log_every=1 --set eval.every=0 --set eval.sample_tokens=0 --set checkpoint.every=0 \
    --set parallel.pp=2 --set parallel.collectives=nccl --set run.dir=/tmp/pipe-debug "$@" \
    > /tmp/pipe-debug.rank$r.log 2>&1 &
  pids+=($!)
done
codes=(); for pid in "${pids[@]}"; do wait $pid; codes+=($?); done
echo "== $* : exit codes ${codes[*]}"
for ((r = 0; r < n; r++)); do echo "-- rank $r"; grep -v "^  " /tmp/pipe-debug.rank$r.log | tail -6 | cut -c1-300; done
