#!/usr/bin/env python3
"""bench/moe_curves.py — mixtures of experts beside the dense model.

Reads kiln run directories' metrics.jsonl (bench/gpu.sh moe), prints a
table (the language model's training loss — the mean of the last 50
steps — the validation losses, tokens/s, the experts' balance and dropped
share) and writes an SVG with every run's curves: training lm loss
(smoothed over 25 steps, solid) and the validation loss at each
evaluation (dashed).

    python3 bench/moe_curves.py OUT.svg NAME=RUN_DIR...
"""
import json
import sys


def read(run):
    train, val = [], []
    with open(f"{run}/metrics.jsonl") as f:
        for line in f:
            r = json.loads(line)
            if "val_loss" in r:
                val.append((r["step"], r["val_loss"]))
            elif "loss" in r:
                train.append(r)
    return train, val


def smooth(points, width):
    out = []
    for i in range(len(points)):
        window = points[max(0, i - width + 1): i + 1]
        out.append((points[i][0], sum(v for _, v in window) / len(window)))
    return out


def main():
    svg = sys.argv[1]
    runs = {}
    for arg in sys.argv[2:]:
        name, run = arg.split("=", 1)
        runs[name] = read(run)
    print("| model | lm loss (last 50 steps) | val loss (last) | best val | tok/s (median) | balance | dropped |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    curves = {}
    for name, (train, val) in runs.items():
        lm = [(r["step"], r.get("lm_loss", r["loss"])) for r in train]
        last = [v for _, v in lm[-50:]]
        speeds = sorted(r["tok_per_s"] for r in train[10:]) or [0]
        balance = [r["moe_balance"] for r in train[-50:] if "moe_balance" in r]
        dropped = [r["moe_dropped"] for r in train[-50:] if "moe_dropped" in r]
        fmt = lambda xs, f: f.format(sum(xs) / len(xs)) if xs else "-"
        print(f"| {name} | {sum(last) / len(last):.4f} | {val[-1][1]:.4f} | "
              f"{min(v for _, v in val):.4f} | {speeds[len(speeds) // 2]:.0f} | "
              f"{fmt(balance, '{:.3f}')} | {fmt(dropped, '{:.2%}')} |")
        curves[name] = (smooth(lm, 25), val)
    write_svg(svg, curves)


def write_svg(path, curves):
    W, H, M = 720, 420, 50
    points = [p for train, val in curves.values() for p in train + val]
    x1 = max(s for s, _ in points)
    lo = min(v for _, v in points)
    hi = min(max(v for _, v in points), lo + 4)
    sx = lambda s: M + (W - 2 * M) * s / x1
    sy = lambda v: H - M - (H - 2 * M) * (min(v, hi) - lo) / (hi - lo)
    palette = ["#c0392b", "#2980b9", "#2c3e50", "#27ae60", "#8e44ad"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
             f'<rect width="{W}" height="{H}" fill="white"/>',
             f'<line x1="{M}" y1="{H - M}" x2="{W - M}" y2="{H - M}" stroke="black"/>',
             f'<line x1="{M}" y1="{M}" x2="{M}" y2="{H - M}" stroke="black"/>',
             f'<text x="{W / 2}" y="{H - 12}" text-anchor="middle">step</text>',
             f'<text x="{M}" y="{M - 20}">language-model loss: training (smoothed, solid) and validation (dashed)</text>']
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        parts.append(f'<text x="{M - 6}" y="{sy(v) + 4:.1f}" text-anchor="end">{v:.2f}</text>')
    for i in range(5):
        s = x1 * i / 4
        parts.append(f'<text x="{sx(s):.1f}" y="{H - M + 16}" text-anchor="middle">{s:.0f}</text>')
    for k, (name, (train, val)) in enumerate(curves.items()):
        c = palette[k % len(palette)]
        line = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in train)
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{line}"/>')
        line = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in val)
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-dasharray="5,3" stroke-width="1.5" points="{line}"/>')
        parts.append(f'<text x="{W - M - 120}" y="{M + 16 * k}" fill="{c}">{name}</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


if __name__ == "__main__":
    main()
