#!/usr/bin/env python3
"""Writes each line of the UTF-8 file argv[1] as a JSONL document {"text": line}."""
import json
import sys

with open(sys.argv[1], encoding="utf-8", newline="") as f:
    for line in f.read().split("\n"):
        print(json.dumps({"text": line}))
