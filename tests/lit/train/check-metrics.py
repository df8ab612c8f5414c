"""Checks a run's metrics.jsonl: the final validation loss is at least
--min-drop nats below the first training loss. Prints both."""
import argparse
import json

p = argparse.ArgumentParser()
p.add_argument("metrics")
p.add_argument("--min-drop", type=float, required=True)
a = p.parse_args()
records = [json.loads(line) for line in open(a.metrics) if line.strip()]
first = next(r["loss"] for r in records if "loss" in r)
final = [r["val_loss"] for r in records if "val_loss" in r][-1]
drop = first - final
print(f"first train loss {first:.4f}, final val loss {final:.4f}, drop {drop:.4f}")
if drop < a.min_drop:
    print(f"FAIL: the loss fell by {drop:.4f} < {a.min_drop}")
    raise SystemExit(1)
print("OK")
