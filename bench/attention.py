#!/usr/bin/env python3
"""The PyTorch side of kiln's attention benchmark (bench/gpu.sh, stage
`attention`). Three modes:

  torch  times torch.nn.functional.scaled_dot_product_attention with each of
         its backends (flash = FlashAttention-2, efficient = memory-efficient,
         cudnn) at one shape: forward, and forward + backward
         (torch.autograd.grad), CUDA events around ITERS replays after WARMUP,
         the median of REPEATS such means; one JSON line per backend;
  check  compares the outputs `kiln bench --attention --dump FILE` wrote with
         PyTorch's on the same inputs, upcast to f32 (the reference: the math
         backend), as ‖kiln − ref‖ / ‖ref‖ per tensor; and, for scale, the
         same error of SDPA's flash backend in the low type;
  table  the kiln and torch JSON lines side by side, with ratios.

FLOPs as FlashAttention counts them: 4·B·H·T·T·D for the forward (halved when
causal), 2.5 times that for the backward.
"""
import argparse
import json
import statistics
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION}


def flops(b, h, t, d, causal):
    return 4.0 * b * h * t * t * d * (0.5 if causal else 1.0)


def timed(fn, warmup, iters, repeats):
    for _ in range(warmup):
        fn()
    means = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        torch.cuda.synchronize()
        means.append(start.elapsed_time(end) / iters)
    return statistics.median(means)


def run_torch(args):
    dtype = {"bf16": torch.bfloat16, "f16": torch.float16}[args.dtype]
    b, h, t, d = args.shape
    gen = torch.Generator(device="cuda").manual_seed(7)
    q, k, v, do = (torch.randn(b, h, t, d, device="cuda", dtype=dtype, generator=gen) for _ in range(4))
    for x in (q, k, v):
        x.requires_grad_(True)
    f = flops(b, h, t, d, args.causal)
    for name, backend in BACKENDS.items():
        row = {"backend": name, "b": b, "h": h, "t": t, "d": d, "causal": args.causal, "dtype": args.dtype}
        try:
            with sdpa_kernel(backend):
                fwd = lambda: F.scaled_dot_product_attention(q, k, v, is_causal=args.causal)
                both = lambda: torch.autograd.grad(fwd(), (q, k, v), do)
                ms_f = timed(fwd, args.warmup, args.iters, args.repeats)
                ms_b = timed(both, args.warmup, args.iters, args.repeats)
            row.update(fwd_ms=ms_f, fwdbwd_ms=ms_b, fwd_tflops=f / (ms_f * 1e-3) / 1e12,
                       fwdbwd_tflops=3.5 * f / (ms_b * 1e-3) / 1e12)
        except RuntimeError as e:  # a backend that does not take this shape
            row["error"] = str(e).splitlines()[0][:200]
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "a") as out:
                out.write(json.dumps(row) + "\n")


def rel(x, ref):
    return ((x.float() - ref.float()).norm() / ref.float().norm()).item()


def run_check(args):
    from safetensors.torch import load_file
    t = {k: v.cuda() for k, v in load_file(args.dump).items()}
    q, k, v, do = t["q"], t["k"], t["v"], t["dout"]
    groups = q.shape[1] // k.shape[1]
    scale = q.shape[-1] ** -0.5

    def grads(q_, k_, v_, backend):
        q_, k_, v_ = (x.detach().requires_grad_(True) for x in (q_, k_, v_))
        with sdpa_kernel(backend):
            kk = k_.repeat_interleave(groups, dim=1) if groups > 1 else k_
            vv = v_.repeat_interleave(groups, dim=1) if groups > 1 else v_
            o = F.scaled_dot_product_attention(q_, kk, vv, is_causal=args.causal, scale=scale)
        dq, dk, dv = torch.autograd.grad(o, (q_, k_, v_), do.to(o.dtype))
        return o, dq, dk, dv

    ref = grads(q.float(), k.float(), v.float(), SDPBackend.MATH)
    names = ["out", "dq", "dk", "dv"]
    kiln = [t[n] for n in names]
    row = {"shape": list(q.shape), "kv_heads": k.shape[1], "causal": args.causal}
    for n, x, r in zip(names, kiln, ref):
        row["kiln_" + n] = rel(x, r)
    try:
        flash = grads(q, k, v, SDPBackend.FLASH_ATTENTION)
        for n, x, r in zip(names, flash, ref):
            row["torch_flash_" + n] = rel(x, r)
    except RuntimeError:
        pass
    worst = max(row["kiln_" + n] for n in names)
    row["pass"] = worst < args.tolerance
    print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a") as out:
            out.write(json.dumps(row) + "\n")
    return 0 if row["pass"] else 1


def run_table(args):
    kiln = [json.loads(l) for l in open(args.kiln)]
    torch_ = [json.loads(l) for l in open(args.torch)]
    key = lambda r: (r["b"], r["h"], r["t"], r["d"], r["causal"])
    print(f"{'B,H,T,D':<16}{'causal':>7}{'kiln tiles':>13}{'kiln fwd':>10}{'fa2 fwd':>9}{'cudnn':>7}"
          f"{'kiln bwd ms':>12}{'kiln f+b':>10}{'fa2 f+b':>9}{'cudnn':>7}{'vs fa2':>8}{'vs cudnn':>9}")
    for r in kiln:  # every variant: backward = forward+backward − forward
        k_ = key(r)
        t = {x["backend"]: x for x in torch_ if key(x) == k_ and "error" not in x}
        fa, cu = t.get("flash", {}), t.get("cudnn", {})
        ratio = lambda a, b: f"{a / b:.2f}x" if a and b else "-"
        print(f"{','.join(map(str, k_[:4])):<16}{str(k_[4]):>7}{r['tiles']:>13}{r['fwd_tflops']:>10.0f}"
              f"{fa.get('fwd_tflops', 0):>9.0f}{cu.get('fwd_tflops', 0):>7.0f}"
              f"{r['fwdbwd_ms'] - r['fwd_ms']:>12.3f}{r['fwdbwd_tflops']:>10.0f}"
              f"{fa.get('fwdbwd_tflops', 0):>9.0f}{cu.get('fwdbwd_tflops', 0):>7.0f}"
              f"{ratio(r['fwdbwd_tflops'], fa.get('fwdbwd_tflops')):>8}"
              f"{ratio(r['fwdbwd_tflops'], cu.get('fwdbwd_tflops')):>9}")
    print("TFLOP/s: 4·B·H·T²·D forward (halved causal), ×3.5 forward+backward; fa2 = SDPA's flash backend")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["torch", "check", "table"])
    p.add_argument("--shape", type=lambda s: [int(x) for x in s.split(",")], help="B,H,T,D")
    p.add_argument("--causal", action="store_true")
    p.add_argument("--dtype", default="bf16", choices=["bf16", "f16"])
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--dump", help="check: the file `kiln bench --attention --dump` wrote")
    p.add_argument("--tolerance", type=float, default=2e-2, help="check: largest ‖kiln − ref‖/‖ref‖")
    p.add_argument("--kiln", help="table: kiln's JSON lines")
    p.add_argument("--torch", help="table: torch's JSON lines")
    p.add_argument("--out", help="append JSON lines here")
    args = p.parse_args()
    if args.mode == "torch":
        run_torch(args)
    elif args.mode == "check":
        sys.exit(run_check(args))
    else:
        run_table(args)


if __name__ == "__main__":
    main()
