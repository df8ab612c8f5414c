#!/usr/bin/env bash
# interrupt.sh DIR SIGNAL COUNT COMMAND...: runs COMMAND, waits until it has
# logged a training step (a new line in DIR/run/metrics.jsonl), sends SIGNAL COUNT times
# (a tenth of a second apart), prints its output and exit code. A command
# still running 60 s later is killed (the test then fails on its output).
# With LINES=N in the environment it waits for N new lines instead of one.
dir=$1 signal=$2 count=$3
shift 3
lines() { wc -l < "$dir/run/metrics.jsonl" 2>/dev/null || echo 0; }
before=$(lines)
"$@" > "$dir/interrupt.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
  if [ "$(lines)" -ge "$((before + ${LINES:-1}))" ]; then break; fi
  sleep 0.05
done
for _ in $(seq 1 "$count"); do
  kill -"$signal" "$pid" 2>/dev/null
  sleep 0.1
done
( sleep 60; kill -KILL "$pid" 2>/dev/null ) &
watchdog=$!
wait "$pid"
code=$?
kill "$watchdog" 2>/dev/null
cat "$dir/interrupt.log"
echo "exit code $code"
