#!/usr/bin/env python3
"""Compares a kiln token shard made from a JSONL file whose documents are
the lines of TEXT with what the reference `spm_encode --output_format=id`
wrote for the same lines (IDS, one line of ids per input line). kiln leaves
out lines that are empty or only ASCII whitespace and writes its
end-of-text id before each document.
Usage: compare-spm.py TEXT IDS SHARD. Prints MATCH and the count or the first
difference; exits 1 on a difference."""
import struct
import sys

text_path, ids_path, shard_path = sys.argv[1:4]
with open(text_path, encoding="utf-8", newline="") as f:
    lines = f.read().split("\n")
with open(ids_path, encoding="utf-8", newline="") as f:
    id_lines = f.read().split("\n")
with open(shard_path, "rb") as f:
    data = f.read()
magic, version, count = struct.unpack_from("<3i", data, 0)
if magic != 20240520 or version not in (1, 2):
    sys.exit(f"not a token shard: magic {magic}, version {version}")
fmt = "<%d%s" % (count, "H" if version == 1 else "I")
got = list(struct.unpack_from(fmt, data, 1024))
eot = got[0]
expected = []
for line, ids in zip(lines, id_lines):
    if line.strip(" \t\n\v\f\r") == "":
        continue
    expected.append(eot)
    expected.extend(int(t) for t in ids.split())
for i in range(max(len(got), len(expected))):
    a = got[i] if i < len(got) else None
    b = expected[i] if i < len(expected) else None
    if a != b:
        print(f"MISMATCH at token {i}: kiln {a}, spm_encode {b}")
        print(f"  kiln:       {got[max(0, i - 5):i + 5]}")
        print(f"  spm_encode: {expected[max(0, i - 5):i + 5]}")
        sys.exit(1)
print(f"MATCH {len(got)} tokens, {sum(1 for t in got if t == eot)} documents, end-of-text {eot}")
