"""Compares the training losses of two metrics.jsonl files step by step.

Prints `SAME <steps> <worst relative difference>` when every step's loss
agrees within the tolerance, else `DIFFERENT` with the first step that does
not. Usage: compare-losses.py A.jsonl B.jsonl TOLERANCE
"""
import json
import sys


def losses(path):
    rows = [json.loads(line) for line in open(path)]
    return {r["step"]: r["loss"] for r in rows if "loss" in r}


a, b, tolerance = losses(sys.argv[1]), losses(sys.argv[2]), float(sys.argv[3])
if not a or a.keys() != b.keys():
    print("DIFFERENT steps", sorted(a), sorted(b))
    sys.exit(0)
worst = 0.0
for step in sorted(a):
    rel = abs(a[step] - b[step]) / max(abs(a[step]), 1e-12)
    worst = max(worst, rel)
    if rel > tolerance:
        print("DIFFERENT at step", step, a[step], b[step], rel)
        sys.exit(0)
print("SAME", len(a), "%.1e" % worst)
