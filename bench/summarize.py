#!/usr/bin/env python3
"""The tables bench/gpu.sh ends with: every JSON result in a folder, side by side.

Ratios are kiln over PyTorch measured in the same run (tok/s: above 1 means
kiln is faster; memory: below 1 means kiln uses less).

    summarize.py DIR               the whole summary
    summarize.py --precision DIR   compare the 200-step runs (metrics-*.jsonl)
                                   and write DIR/precision.json
"""
import json
import os
import re
import sys


def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


def kiln_result(out, precision, batch):
    # bench/gpu.sh names results kiln-<precision>-b<B>.json; the first runs
    # (f32 only) wrote kiln-b<B>.json.
    r = load(f"{out}/kiln-{precision}-b{batch}.json")
    if r is None and precision == "f32":
        r = load(f"{out}/kiln-b{batch}.json")
    return r


def precision_runs(out):
    runs = {}
    for p in ("f32", "bf16-mixed", "f16-mixed"):
        try:
            recs = [json.loads(line) for line in open(f"{out}/metrics-{p}.jsonl")]
        except OSError:
            continue
        steps = [r for r in recs if "loss" in r]
        if not steps:
            continue
        last = steps[-10:]
        runs[p] = {"steps": len(steps),
                   "final_loss": sum(r["loss"] for r in last) / len(last),
                   "skipped": sum(1 for r in steps if r.get("skipped")),
                   "tok_per_s": sorted(r["tok_per_s"] for r in steps)[len(steps) // 2],
                   "losses": [r["loss"] for r in steps]}
    if "f32" in runs:
        base = runs["f32"]["final_loss"]
        for r in runs.values():
            r["rel_to_f32"] = (r["final_loss"] - base) / base
    return runs


def print_precision(runs):
    for p, r in runs.items():
        rel = r.get("rel_to_f32")
        print(f"  {p:11s} {r['steps']} steps: mean loss of the last 10 {r['final_loss']:.4f}"
              + (f" ({100 * rel:+.2f}% vs f32)" if rel is not None else "")
              + f", skipped {r['skipped']}, median {r['tok_per_s']:.0f} tok/s")


def main(out):
    rows = []
    for b in (16, 32):
        eager = {p: load(f"{out}/torch-eager-{p}-b{b}.json") for p in ("f32", "bf16")}
        for kp, tp in (("f32", "f32"), ("bf16-mixed", "bf16"), ("f16-mixed", None)):
            k = kiln_result(out, kp, b)
            if k:
                rows.append((f"kiln {kp}", b, k["step_ms"], k["tok_per_s"], k["mfu"], k["arena_bytes"],
                             k["compile_s"]))
                if tp and eager[tp]:
                    rows.append((f"kiln / torch eager {tp}", b, None, k["tok_per_s"] / eager[tp]["tok_per_s"],
                                 None, k["arena_bytes"] / eager[tp]["peak_mem_bytes"], None))
        for impl in ("eager", "compile"):
            for prec in ("f32", "bf16"):
                t = load(f"{out}/torch-{impl}-{prec}-b{b}.json")
                if t:
                    rows.append((f"torch {impl} {prec}", b, t["step_ms"], t["tok_per_s"], t["mfu"],
                                 t["peak_mem_bytes"], t["first_step_s"]))
    if rows:
        print(f"{'GPT-2 124M, T=1024':<26}{'B':>3}{'ms/step':>10}{'tok/s':>11}{'MFU':>7}{'mem GiB':>9}{'first/compile s':>17}")
        for name, b, ms, tps, mfu, mem, comp in rows:
            if ms is None:
                print(f"{name:<26}{b:>3}{'':>10}{tps:>10.2f}x{'':>7}{mem:>8.2f}x")
                continue
            print(f"{name:<26}{b:>3}{ms:>10.1f}{tps:>11.0f}{100 * mfu:>6.1f}%{mem / 2**30:>9.2f}{comp:>17.1f}")
    for p in ("f32", "bf16-mixed", "f16-mixed"):
        cold = load(f"{out}/kiln-{p}-b16-cold.json") or (load(f"{out}/kiln-b16-cold.json") if p == "f32" else None)
        warm = kiln_result(out, p, 16)
        if cold and warm:
            print(f"kiln {p} compile of the 124M step: cold {cold['compile_s']:.1f} s ({cold['nvrtc_compiled']} "
                  f"kernels through NVRTC in {cold['nvrtc_s']:.1f} s), warm {warm['compile_s']:.1f} s "
                  f"({warm['nvrtc_cached']} cached)")
    # bench/gpu.sh gemms: gemms-PRECISION-bBATCH.json (gemms.json before 2026-12-05).
    for name in sorted(f for f in os.listdir(out) if re.fullmatch(r"gemms(-.+)?\.json", f)):
        gemms = load(f"{out}/{name}")
        if not gemms:
            continue
        worst = min(g["ratio"] for g in gemms)
        label = name[len("gemms-"):-len(".json")] if name != "gemms.json" else "f32-b16"
        print(f"GEMMs ({label}): {len(gemms)} shapes, kiln/torch.matmul TFLOP/s from {worst:.2f}x to "
              f"{max(g['ratio'] for g in gemms):.2f}x; below 0.95x: "
              f"{sum(1 for g in gemms if g['ratio'] < 0.95)}")
    # bench/gpu.sh ab: the previous binary and this one, alternated.
    # (ab-MODEL-... when AB_CONFIG named another model.)
    models = sorted({m.group(1) + "-" for f in os.listdir(out)
                     if (m := re.match(r"ab-(.+?)-(?:f32|bf16-mixed|f16-mixed)-b\d+-", f))})
    for model in [""] + models:
        for b in (8, 16, 32):
            for p in ("f32", "bf16-mixed", "f16-mixed"):
                runs = {r: load(f"{out}/ab-{model}{p}-b{b}-{r}.json")
                        for r in ("before-1", "after-1", "after-2", "before-2")}
                if not all(runs.values()):
                    continue
                mean = lambda side: sum(runs[f"{side}-{i}"]["step_ms"] for i in (1, 2)) / 2
                ms = " ".join(f"{r} {v['step_ms']:.2f}" for r, v in runs.items())
                print(f"ab {model}{p} B={b}: {ms} ms; after/before step time "
                      f"{mean('after') / mean('before'):.3f}, arena "
                      f"{runs['after-1']['arena_bytes'] / 2**30:.2f} vs "
                      f"{runs['before-1']['arena_bytes'] / 2**30:.2f} GiB")
    # bench/gpu.sh recompute: each policy's step and arena.
    rc = sorted(f for f in os.listdir(out) if f.startswith("recompute-") and f.endswith(".json"))
    if rc:
        print(f"{'kiln-recompute':<34}{'ms/step':>10}{'tok/s':>11}{'arena GiB':>11}")
        for f in rc:
            r = load(f"{out}/{f}")
            if r and "step_ms" in r:
                print(f"{f[len('recompute-'):-5]:<34}{r['step_ms']:>10.1f}{r['tok_per_s']:>11.0f}"
                      f"{r['arena_bytes'] / 2**30:>11.2f}")
    ref = load(f"{out}/reference.json")
    if ref:
        print(f"124M vs PyTorch, {len(ref['steps'])} steps: worst relative loss difference {ref['worst_rel']:.2e}")
    runs = load(f"{out}/precision.json")
    if runs:
        print("124M, 200 steps from the same weights and batches:")
        print_precision(runs)
    # bench/gpu.sh two-gpu, two-gpu-check and two-gpu-pp write their tables;
    # the last thing printed should be them.
    for name in ("two-gpu.txt", "two-check-f32.txt", "two-check-bf16-mixed.txt", "two-pp.txt",
                 "two-moe.txt"):
        if os.path.exists(f"{out}/{name}"):
            print(f"{name[:-4]}:")
            print(open(f"{out}/{name}").read().rstrip())
    log = f"{out}/gpu-tests.log"
    if os.path.exists(log):
        lines = open(log).read().splitlines()
        summary = [l for l in lines if l.startswith("[  PASSED") or (l.startswith("[  FAILED  ]") and "test" in l)]
        print("GPU tests: " + "; ".join(summary[-3:]))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--precision":
        runs = precision_runs(sys.argv[2])
        print_precision(runs)
        json.dump(runs, open(f"{sys.argv[2]}/precision.json", "w"), indent=1)
    else:
        main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/kiln-bench")
