#!/usr/bin/env bash
# interrupt.sh DIR COMMAND...: runs COMMAND, waits until it has logged a
# training step (DIR/run/metrics.jsonl), sends SIGINT, prints its output and
# exit code.
dir=$1
shift
"$@" > "$dir/interrupt.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  if [ -s "$dir/run/metrics.jsonl" ]; then break; fi
  sleep 0.05
done
kill -INT "$pid"
wait "$pid"
code=$?
cat "$dir/interrupt.log"
echo "exit code $code"
