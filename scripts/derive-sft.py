#!/usr/bin/env python3
"""Derives a supervised fine-tuning set from text files of documents
separated by lines holding only '%' (the fortunes' format): each document
becomes {"prompt": its first line, "response": the rest}; a one-line
document is split after its first sentence instead; documents that cannot
be split are left out. Writes JSONL to stdout, for
`kiln tokenize --format sft`.
Usage: derive-sft.py FILE... > sft.jsonl"""
import json
import re
import sys


def documents(path):
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        doc = []
        for line in f:
            if line.rstrip("\r\n") == "%":
                yield "".join(doc)
                doc = []
            else:
                doc.append(line)
        yield "".join(doc)


count = 0
for path in sys.argv[1:]:
    for doc in documents(path):
        doc = doc.strip()
        if not doc:
            continue
        if "\n" in doc:
            prompt, response = doc.split("\n", 1)
        else:
            m = re.search(r"[.!?] +", doc)
            if not m:
                continue
            prompt, response = doc[: m.end()].rstrip(), doc[m.end():]
        if prompt.strip() and response.strip():
            print(json.dumps({"prompt": prompt, "response": response}, ensure_ascii=False))
            count += 1
print(f"derive-sft: {count} examples", file=sys.stderr)
