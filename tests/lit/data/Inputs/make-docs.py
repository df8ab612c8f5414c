#!/usr/bin/env python3
"""Writes one corpus in the input forms `kiln tokenize` reads, into DIR:
docs.txt (documents separated by '%' lines), docs.jsonl (one {"text": ...}
object per document, the same text), and each of them gzip- and
zstd-compressed by the command-line tools. N documents (default 300) of
varied length, deterministic. Usage: make-docs.py DIR [N]"""
import gzip
import json
import os
import subprocess
import sys

out, n = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 300
os.makedirs(out, exist_ok=True)
words = ["kiln", "fires", "clay", "at", "1200", "degrees;", "the", "glaze", "melts", "—",
         "naïve", "日本", "😀", "don't", "WE'LL", "\t", "a\u0301"]
seed = 7
docs = []
for d in range(n):
    lines = []
    for _ in range(1 + d % 9):
        line = []
        for _ in range(3 + d % 17):
            seed = (seed * 1103515245 + 12345) % 2**31
            line.append(words[seed % len(words)])
        lines.append(" ".join(line))
    docs.append("\n".join(lines) + "\n")
with open(os.path.join(out, "docs.txt"), "w", encoding="utf-8") as f:
    f.write("%\n".join(docs))
with open(os.path.join(out, "docs.jsonl"), "w", encoding="utf-8") as f:
    for i, d in enumerate(docs):
        f.write(json.dumps({"id": i, "text": d}, ensure_ascii=i % 2 == 0) + "\n")
for name in ("docs.txt", "docs.jsonl"):
    path = os.path.join(out, name)
    subprocess.run(["gzip", "-k", "-f", path], check=True)
    subprocess.run(["zstd", "-q", "-f", path, "-o", path + ".zst"], check=True)
