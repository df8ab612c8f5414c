"""Counts the gradient accumulators (`*.grad_acc`) in a safetensors file."""
import json
import struct
import sys

with open(sys.argv[1], "rb") as f:
    (n,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(n))
names = [k for k in header if k != "__metadata__"]
accumulators = [k for k in names if k.endswith(".grad_acc")]
print(f"{len(accumulators)} accumulators among {len(names)} optimizer states")
