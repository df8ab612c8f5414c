"""moe.test's check of metrics.jsonl: each step's loss is lm_loss plus the
weighted balance loss (to the printed precision of a double), the dropped
share is a fraction, and the validation loss is the language model's."""
import json
import sys

records = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
steps = [r for r in records if "moe_balance" in r]
assert steps, "no step carries moe_balance"
for r in steps:
    want = r["lm_loss"] + 0.1 * r["moe_balance"]
    assert abs(r["loss"] - want) <= 1e-5 * abs(want), (r["step"], r["loss"], want)
    assert 0.0 <= r["moe_dropped"] < 1.0, r
    assert r["moe_balance"] > 0.0, r
print("loss = lm_loss + 0.1 * moe_balance at every step: OK")
vals = [r for r in records if "val_loss" in r]
assert vals, "no evaluation"
for r in vals:
    assert r["val_loss"] == r["val_lm_loss"], r
print("val_loss = val_lm_loss: OK")
