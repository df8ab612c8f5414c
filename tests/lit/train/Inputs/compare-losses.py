"""Compares the training losses of two runs' metrics.jsonl, step by step:
every step present in both (up to --steps), the relative difference at most
--tolerance.
Prints the worst difference and the number of steps compared."""
import argparse
import json

p = argparse.ArgumentParser()
p.add_argument("a")
p.add_argument("b")
p.add_argument("--tolerance", type=float, required=True)
p.add_argument("--steps", type=int, default=0, help="compare only steps up to this one")
args = p.parse_args()


def losses(path):
    return {r["step"]: r["loss"] for r in map(json.loads, open(path)) if "loss" in r}


a, b = losses(args.a), losses(args.b)
steps = sorted(s for s in set(a) & set(b) if not args.steps or s <= args.steps)
worst = max(abs(a[s] - b[s]) / abs(a[s]) for s in steps)
print(f"{len(steps)} steps compared, worst relative difference {worst:.1e}")
if not steps or worst > args.tolerance:
    print(f"FAIL: above {args.tolerance}")
    raise SystemExit(1)
print("OK")
