#!/usr/bin/env python3
"""PyTorch references for kiln's GPU checks and benchmarks (run on the GPU host).

GPT-2 written out in plain PyTorch (pre-LN blocks, tanh GELU, tied embeddings,
causal attention through scaled_dot_product_attention), with Hugging Face
GPT-2 weight names and layouts (Conv1D weights are [in, out]), so it loads
what `kiln export` writes. Three modes:

  reference  load kiln's initial weights, train N steps on the same batches
             kiln reads (llm.c shard, sequential), with kiln's AdamW settings
             (decay on matrix weights only, clipping by max/max(norm, max)),
             and write the per-step losses as JSON;
  bench      time training steps (eager or torch.compile; f32, or bf16
             autocast) and report ms/step, tok/s, MFU and peak memory;
  gemms      run every GEMM shape kiln's step runs (from `kiln bench
             --gemms`) through torch.matmul and report both.

The MFU formula is kiln's (tools/kiln/Bench.cpp): 6·N + 12·L·d·T FLOPs per
token, N the parameters without vocabulary padding.
"""
import argparse
import json
import math
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


# --- the model ---------------------------------------------------------------

class Block(nn.Module):
    def __init__(self, d, n_head):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.c_attn_w = nn.Parameter(torch.empty(d, 3 * d))
        self.c_attn_b = nn.Parameter(torch.zeros(3 * d))
        self.attn_proj_w = nn.Parameter(torch.empty(d, d))
        self.attn_proj_b = nn.Parameter(torch.zeros(d))
        self.c_fc_w = nn.Parameter(torch.empty(d, 4 * d))
        self.c_fc_b = nn.Parameter(torch.zeros(4 * d))
        self.mlp_proj_w = nn.Parameter(torch.empty(4 * d, d))
        self.mlp_proj_b = nn.Parameter(torch.zeros(d))

    def forward(self, x):
        B, T, C = x.shape
        h = self.ln_1(x)
        qkv = torch.addmm(self.c_attn_b, h.view(-1, C), self.c_attn_w).view(B, T, 3 * C)
        q, k, v = qkv.split(C, dim=2)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(-1, C)
        x = x + torch.addmm(self.attn_proj_b, y, self.attn_proj_w).view(B, T, C)
        h = self.ln_2(x).view(-1, C)
        h = F.gelu(torch.addmm(self.c_fc_b, h, self.c_fc_w), approximate="tanh")
        return x + torch.addmm(self.mlp_proj_b, h, self.mlp_proj_w).view(B, T, C)


class GPT(nn.Module):
    def __init__(self, n_layer, n_head, d, vocab, rows, block_size):
        super().__init__()
        self.vocab = vocab
        self.wte = nn.Parameter(torch.empty(rows, d))
        self.wpe = nn.Parameter(torch.empty(block_size, d))
        self.h = nn.ModuleList(Block(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d, eps=1e-5)

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.wte[idx] + self.wpe[:T]
        for block in self.h:
            x = block(x)
        x = self.ln_f(x)
        logits = x @ self.wte.t()
        logits = logits[..., : self.vocab].float()
        return F.cross_entropy(logits.reshape(-1, self.vocab), targets.reshape(-1))

    def hf_names(self):
        """(Hugging Face name, parameter, decays?) for every parameter."""
        out = [("transformer.wte.weight", self.wte, False), ("transformer.wpe.weight", self.wpe, False)]
        for i, b in enumerate(self.h):
            p = f"transformer.h.{i}."
            out += [(p + "ln_1.weight", b.ln_1.weight, False), (p + "ln_1.bias", b.ln_1.bias, False),
                    (p + "attn.c_attn.weight", b.c_attn_w, True), (p + "attn.c_attn.bias", b.c_attn_b, False),
                    (p + "attn.c_proj.weight", b.attn_proj_w, True), (p + "attn.c_proj.bias", b.attn_proj_b, False),
                    (p + "ln_2.weight", b.ln_2.weight, False), (p + "ln_2.bias", b.ln_2.bias, False),
                    (p + "mlp.c_fc.weight", b.c_fc_w, True), (p + "mlp.c_fc.bias", b.c_fc_b, False),
                    (p + "mlp.c_proj.weight", b.mlp_proj_w, True), (p + "mlp.c_proj.bias", b.mlp_proj_b, False)]
        out += [("transformer.ln_f.weight", self.ln_f.weight, False), ("transformer.ln_f.bias", self.ln_f.bias, False)]
        return out

    def init_random(self, seed):
        g = torch.Generator().manual_seed(seed)
        n_layer = len(self.h)
        for name, p, _ in self.hf_names():
            with torch.no_grad():
                if name.endswith("ln_1.weight") or name.endswith("ln_2.weight") or name.endswith("ln_f.weight"):
                    p.fill_(1.0)
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("c_proj.weight") else 0.02
                    p.copy_(torch.randn(p.shape, generator=g) * std)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", f"{name}: {info['dtype']}"
        a, b = info["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype=np.float32).copy()).view(info["shape"])
    return out


def load_weights(model, path):
    tensors = read_safetensors(path)
    for name, p, _ in model.hf_names():
        t = tensors.pop(name)
        with torch.no_grad():
            if name == "transformer.wte.weight" and t.shape[0] != p.shape[0]:
                p.zero_()
                p[: t.shape[0]].copy_(t)
            else:
                assert tuple(t.shape) == tuple(p.shape), f"{name}: {tuple(t.shape)} vs {tuple(p.shape)}"
                p.copy_(t)
    assert not tensors, f"unused tensors: {sorted(tensors)[:5]}"


# --- data: kiln's sequential loader --------------------------------------------

def read_shard(path):
    with open(path, "rb") as f:
        header = np.frombuffer(f.read(256 * 4), dtype=np.int32)
        assert header[0] == 20240520, f"{path}: not an llm.c shard"
        return np.frombuffer(f.read(), dtype=np.uint16).astype(np.int64)


def batches(tokens, B, T):
    """kiln's DataLoader in sequential mode, one shard, one rank."""
    offset = 0
    while True:
        if offset + B * T + 1 > len(tokens):
            offset = 0
        chunk = tokens[offset : offset + B * T + 1]
        yield torch.from_numpy(chunk[:-1].reshape(B, T).copy()), torch.from_numpy(chunk[1:].reshape(B, T).copy())
        offset += B * T


# --- modes ---------------------------------------------------------------------

def make_optimizer(model, lr, fused=False):
    decay = [p for _, p, d in model.hf_names() if d]
    no_decay = [p for _, p, d in model.hf_names() if not d]
    return torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                             lr=lr, betas=(0.9, 0.95), eps=1e-8, fused=fused)


def clip(model, max_norm):
    """kiln's clipping: every gradient times max / max(norm, max)."""
    grads = [p.grad for _, p, _ in model.hf_names()]
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads))
    scale = max_norm / max(norm.item(), max_norm)
    for g in grads:
        g.mul_(scale)
    return norm.item()


def reference(args):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda"
    model = GPT(args.n_layer, args.n_head, args.n_embd, args.vocab, args.vocab, args.block_size)
    load_weights(model, args.weights)
    model.to(dev)
    opt = make_optimizer(model, args.lr)
    data = batches(read_shard(args.data), args.batch, args.seq)
    losses, norms = [], []
    for step in range(args.steps):
        x, y = next(data)
        loss = model(x.to(dev), y.to(dev))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norms.append(clip(model, 1.0))
        opt.step()
        losses.append(loss.item())
        print(f"  torch step {step + 1:2d}: loss {losses[-1]:.6f} grad norm {norms[-1]:.4f}", flush=True)
    json.dump({"loss": losses, "grad_norm": norms}, open(args.out, "w"))


def time_steps(one_step, warmup, steps):
    """Peak memory reset, then `warmup` untimed steps (the first one's wall
    time returned: compilation), then the median of `steps` timed ones, ms."""
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    one_step()
    first_s = time.time() - t0
    for _ in range(warmup - 1):
        one_step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        one_step()
        times.append((time.perf_counter() - t) * 1e3)
    return first_s, sorted(times)[len(times) // 2]


def bench(args):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = "cuda"
    rows = (args.vocab + 63) // 64 * 64
    model = GPT(args.n_layer, args.n_head, args.n_embd, args.vocab, rows, args.block_size)
    model.init_random(1337)
    model.to(dev)
    opt = make_optimizer(model, 1e-4, fused=True)
    step_fn = model
    if args.compile:
        step_fn = torch.compile(model)
    dtype = {"f32": None, "bf16": torch.bfloat16}[args.precision]
    g = torch.Generator(device=dev).manual_seed(1)

    def one_step():
        x = torch.randint(0, args.vocab, (args.batch, args.seq), device=dev, generator=g)
        y = torch.randint(0, args.vocab, (args.batch, args.seq), device=dev, generator=g)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            loss = step_fn(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        return loss.item()  # synchronizes, as kiln's step returns its loss

    compile_s, ms = time_steps(one_step, args.warmup, args.steps)  # torch.compile() is lazy
    n = sum(p.numel() for _, p, _ in model.hf_names()) - (rows - args.vocab) * args.n_embd
    tokens = args.batch * args.seq
    flops = (6 * n + 12 * args.n_layer * args.n_embd * args.seq) * tokens
    peak = {"f32": 67e12, "bf16": 989e12}[args.precision]
    result = {"impl": "torch.compile" if args.compile else "torch eager", "precision": args.precision,
              "batch": args.batch, "seq_len": args.seq, "step_ms": ms, "tok_per_s": tokens / (ms * 1e-3),
              "mfu": flops / (ms * 1e-3) / peak, "peak_mem_bytes": torch.cuda.max_memory_allocated(),
              "first_step_s": compile_s, "params": n}
    if args.profile:
        try:
            result["profile"] = profile_steps(one_step, 3)
        except Exception as e:  # the timing above stands without it
            print(f"  profile failed: {e!r}")
    print(json.dumps(result))
    if args.out:
        json.dump(result, open(args.out, "w"))


def kernel_kind(name):
    """The class of a CUDA kernel by its name, as kiln's --profile splits a step:
    GEMMs (cuBLAS/cuBLASLt, CUTLASS), attention (flash, cuDNN, memory-efficient),
    copies, and the rest (Triton and ATen elementwise, norms, reductions, AdamW)."""
    n = name.lower()
    if n.startswith("memcpy") or n.startswith("memset"):
        return "copy"
    if any(s in n for s in ("flash", "fmha", "attention", "cudnn", "mem_eff")):
        return "attention"
    if any(s in n for s in ("gemm", "nvjet", "cutlass", "xmma", "cublas", "splitk")):
        return "gemm"
    return "other"


def profile_steps(one_step, steps):
    """GPU time by kernel class over `steps` steps (after the timed ones),
    per step, and the twelve largest kernels: the same split as kiln's
    `bench --profile`, so the two steps can be compared class by class."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            one_step()
        torch.cuda.synchronize()
    by_kind, by_name, launches = {}, {}, 0
    for e in prof.events():
        if e.device_type != torch.autograd.DeviceType.CUDA:
            continue
        us = e.time_range.end - e.time_range.start
        kind = kernel_kind(e.name)
        by_kind[kind] = by_kind.get(kind, 0.0) + us / 1e3 / steps
        by_name[e.name] = by_name.get(e.name, 0.0) + us / 1e3 / steps
        launches += kind != "copy"
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:12]
    total = sum(by_kind.values())
    print(f"  profile: {steps} steps, {total:.2f} ms of kernels a step, {launches / steps:.0f} launches: "
          + ", ".join(f"{k} {v:.2f}" for k, v in sorted(by_kind.items(), key=lambda kv: -kv[1])))
    for name, ms in top:
        print(f"    {ms:7.3f} ms  [{kernel_kind(name)}] {name[:110]}")
    return {"kernel_ms": total, "launches": launches / steps, "by_kind_ms": by_kind,
            "top": [{"name": n, "ms": ms, "kind": kernel_kind(n)} for n, ms in top]}


def gemms(args):
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = "cuda"
    rows = json.load(open(args.gemms))
    out = []
    for r in rows:
        # kiln's column-major C[m,n] = op(A)·op(B) is row-major Cᵀ[n,m] = op(B)ᵀ·op(A)ᵀ:
        # X plays op(B)ᵀ ([n,k]), Y plays op(A)ᵀ ([k,m]), with the same memory layouts.
        b, m, n, k = r["batch"], r["m"], r["n"], r["k"]
        # kiln's operand type (bf16 or f16 in the mixed precisions); torch's
        # output is that type too (kiln's may be f32, which writes 2x the bytes).
        dtype = {"bf16": torch.bfloat16, "f16": torch.float16}.get(r.get("in_type", "f32"), torch.float32)

        def operand(rows_, cols, transposed, shared):
            shape = (rows_, cols) if not transposed else (cols, rows_)
            lead = () if (b == 1 or shared) else (b,)
            t = torch.randn(lead + shape, device=dev, dtype=dtype)
            return t.transpose(-1, -2) if transposed else t

        X = operand(n, k, r["trans_b"], r["shared_b"])
        Y = operand(k, m, r["trans_a"], r["shared_a"])
        if b > 1 and X.dim() == 2 and Y.dim() == 2:
            X = X.expand(b, n, k)
        for _ in range(3):
            torch.matmul(X, Y)
        torch.cuda.synchronize()
        reps = 20
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        for _ in range(reps):
            torch.matmul(X, Y)
        e1.record()
        torch.cuda.synchronize()
        ms = e0.elapsed_time(e1) / reps
        flops = 2.0 * m * n * k * b
        out.append(dict(r, torch_ms=ms, torch_tflops=flops / (ms * 1e-3) / 1e12,
                        ratio=(flops / (r["ms"] * 1e-3)) / (flops / (ms * 1e-3))))
    json.dump(out, open(args.out, "w"), indent=1)
    for o in out:
        print(f"  gemm m={o['m']} n={o['n']} k={o['k']} b={o['batch']} "
              f"{'T' if o['trans_a'] else 'N'}{'T' if o['trans_b'] else 'N'} {o.get('in_type', 'f32')}"
              f"->{o.get('out_type', 'f32')} {o.get('epilogue', 'none')} x{o.get('count', 1)}: kiln {o['tflops']:.1f} "
              f"torch {o['torch_tflops']:.1f} TFLOP/s ({o['ratio']:.2f}x)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["reference", "bench", "gemms"])
    p.add_argument("--n-layer", type=int, default=12)
    p.add_argument("--n-head", type=int, default=12)
    p.add_argument("--n-embd", type=int, default=768)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--block-size", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--lr", type=float, default=6e-4)
    p.add_argument("--weights", help="reference: kiln's initial weights (kiln export CONFIG --hf FILE)")
    p.add_argument("--data", help="reference: the llm.c token shard kiln trains on")
    p.add_argument("--compile", action="store_true", help="bench: torch.compile the model")
    p.add_argument("--precision", choices=["f32", "bf16"], default="f32")
    p.add_argument("--gemms", help="gemms: the JSON `kiln bench --gemms` wrote")
    p.add_argument("--profile", action="store_true",
                   help="bench: then profile 3 steps and print GPU time by kernel class (gemm, attention, other)")
    p.add_argument("--out", help="where to write the JSON results")
    args = p.parse_args()
    {"reference": reference, "bench": bench, "gemms": gemms}[args.mode](args)


if __name__ == "__main__":
    sys.exit(main())
