"""Checks a DPO run with a mixture of experts: the first step's margin and
DPO loss, and that the logged loss is the DPO loss plus 0.01 x the balance
loss at every step."""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1])]
steps = [r for r in rows if "moe_balance" in r and "step" in r and "val_loss" not in r]
first = steps[0]
print(f"step {first['step']} margin {first['reward_margin']:g} dpo_loss {first['dpo_loss']:.6f}")
worst = max(abs(r["loss"] - (r["dpo_loss"] + 0.01 * r["moe_balance"])) / abs(r["loss"])
            for r in steps)
print("objective = dpo_loss + 0.01 x balance at every step: "
      + ("OK" if worst < 1e-6 else f"off by {worst:.2e}"))
