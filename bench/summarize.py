#!/usr/bin/env python3
"""The table bench/gpu.sh ends with: every JSON result in a folder, side by side.

Ratios are kiln over PyTorch measured in the same run (tok/s: higher is
better for kiln above 1; memory: lower is better below 1).
"""
import glob
import json
import os
import sys


def load(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None


def main(out):
    rows = []
    for b in (16, 32):
        kiln = load(f"{out}/kiln-b{b}.json")
        eager = load(f"{out}/torch-eager-f32-b{b}.json")
        if kiln:
            rows.append(("kiln f32", b, kiln["step_ms"], kiln["tok_per_s"], kiln["mfu"],
                         kiln["arena_bytes"], kiln["compile_s"], None))
        for impl in ("eager", "compile"):
            for prec in ("f32", "bf16"):
                t = load(f"{out}/torch-{impl}-{prec}-b{b}.json")
                if t:
                    rows.append((f"torch {impl} {prec}", b, t["step_ms"], t["tok_per_s"], t["mfu"],
                                 t["peak_mem_bytes"], t["first_step_s"], None))
        if kiln and eager:
            rows.append(("kiln / torch eager f32", b, None, kiln["tok_per_s"] / eager["tok_per_s"], None,
                         kiln["arena_bytes"] / eager["peak_mem_bytes"], None, None))
    if rows:
        print(f"{'GPT-2 124M, T=1024':<26}{'B':>3}{'ms/step':>10}{'tok/s':>11}{'MFU':>7}{'mem GiB':>9}{'first/compile s':>17}")
        for name, b, ms, tps, mfu, mem, comp, _ in rows:
            if ms is None:
                print(f"{name:<26}{b:>3}{'':>10}{tps:>10.2f}x{'':>7}{mem:>8.2f}x")
                continue
            print(f"{name:<26}{b:>3}{ms:>10.1f}{tps:>11.0f}{100 * mfu:>6.1f}%{mem / 2**30:>9.2f}{comp:>17.1f}")
    cold, warm = load(f"{out}/kiln-b16-cold.json"), load(f"{out}/kiln-b16.json")
    if cold and warm:
        print(f"kiln compile of the 124M step: cold {cold['compile_s']:.1f} s ({cold['nvrtc_compiled']} kernels "
              f"through NVRTC in {cold['nvrtc_s']:.1f} s), warm {warm['compile_s']:.1f} s "
              f"({warm['nvrtc_cached']} cached)")
    gemms = load(f"{out}/gemms.json")
    if gemms:
        worst = min(g["ratio"] for g in gemms)
        print(f"GEMMs: {len(gemms)} shapes, kiln/torch.matmul TFLOP/s from {worst:.2f}x to "
              f"{max(g['ratio'] for g in gemms):.2f}x; below 0.95x: "
              f"{sum(1 for g in gemms if g['ratio'] < 0.95)}")
    ref = load(f"{out}/reference.json")
    if ref:
        print(f"124M vs PyTorch, {len(ref['steps'])} steps: worst relative loss difference {ref['worst_rel']:.2e}")
    log = f"{out}/gpu-tests.log"
    if os.path.exists(log):
        lines = open(log).read().splitlines()
        summary = [l for l in lines if l.startswith("[  PASSED") or l.startswith("[  FAILED  ]") and "test" in l]
        print("GPU tests: " + "; ".join(summary[-3:]))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/kiln-bench")
