#!/usr/bin/env bash
# bench/tokenize.sh — tokenization throughput: kiln tokenize on one thread and
# on all cores beside js-tiktoken (one thread; JavaScript has no threads in
# its encoder) on the same text and machine, for gpt2, cl100k_base and
# o200k_base. Corpora: the fortunes (2.6 MB, documents split on '%') and the
# GCIDE dictionary (40 MB, one document, read from Debian's dict-gcide .dz:
# kiln reads the gzip directly; js-tiktoken gets the decompressed text).
# kiln's MB/s is the whole command (read, decompress, tokenize, write
# shards); js-tiktoken's is encode() alone, the text already in memory.
# Prints a markdown table last. Usage: bench/tokenize.sh [BUILD]
set -euo pipefail
cd "$(dirname "$0")/.."
KILN=${1:-build}/bin/kiln
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
files=()
for f in /usr/share/games/fortunes/*; do
  case "$f" in *.dat|*.u8) continue ;; esac
  [ -f "$f" ] && files+=("$f")
done
cat "${files[@]}" > "$tmp/fortunes.txt"
gcide=/usr/share/dictd/gcide.dict.dz
[ -f "$gcide" ] || { echo "install dict-gcide (apt) for the large corpus" >&2; exit 1; }
zcat "$gcide" > "$tmp/gcide.txt"
cores=$(nproc)

mbps() { # bytes seconds
  python3 -c "print(f'{$1 / 1e6 / $2:.2f}')"
}
run_kiln() { # encoding threads input [split]
  local split=()
  [ -n "${4:-}" ] && split=(--split-on "$4")
  local start end
  start=$(date +%s.%N)
  "$KILN" tokenize --quiet --tokenizer "$1" --threads "$2" --val-fraction 0 "${split[@]}" \
    --out "$tmp/out" "$3" > "$tmp/log"
  end=$(date +%s.%N)
  tokens=$(sed -n 's/.*train: \([0-9]*\) tokens.*/\1/p' "$tmp/log")
  echo "$(python3 -c "print($end - $start)") $tokens"
}

rows=()
for corpus in fortunes gcide; do
  if [ $corpus = fortunes ]; then input="$tmp/fortunes.txt"; split=%; text="$tmp/fortunes.txt"
  else input="$gcide"; split=""; text="$tmp/gcide.txt"; fi
  bytes=$(stat -c %s "$text")
  for enc in gpt2 cl100k_base o200k_base; do
    read -r t1 n1 < <(run_kiln $enc 1 "$input" "$split")
    read -r tn nn < <(run_kiln $enc "$cores" "$input" "$split")
    read -r _ _ js jsn < <(node bench/tokenize-js.mjs $enc "$text" $split)
    k1=$(mbps "$bytes" "$t1"); kn=$(mbps "$bytes" "$tn")
    rows+=("| $corpus | $enc | $k1 | $kn | $js | $(python3 -c "print(f'{$k1 / $js:.1f}x / {$kn / $js:.1f}x')") | $n1 / $jsn |")
  done
done
echo
echo "Machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); $(node --version) js-tiktoken $(node -p 'require("./node_modules/js-tiktoken/package.json").version')"
echo "| corpus | encoding | kiln 1 thread MB/s | kiln $cores threads MB/s | js-tiktoken MB/s | kiln/js (1, $cores) | tokens kiln / js |"
echo "|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
