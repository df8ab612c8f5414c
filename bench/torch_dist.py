#!/usr/bin/env python3
"""PyTorch's side of kiln's multi-GPU benchmarks (issue #13), on the GPU host:

  torchrun --standalone --nproc_per_node 2 bench/torch_dist.py MODE [options]

MODE
  ddp        DistributedDataParallel: every rank a whole model, the gradients
             all-reduced in buckets during the backward (kiln's ZeRO 0)
  fsdp2      FSDP2 (fully_shard on each block and the root, bf16 parameters,
             f32 gradient reduction): --reshard frees each block's gathered
             parameters after its forward (ZeRO 3), --no-reshard keeps them
             until the backward (ZeRO 2's memory, ZeRO 3's optimizer)
  tp         tensor parallelism through DTensor's parallelize_module: q, k,
             v and the MLP's first linear split by columns (heads), the
             output projections by rows (Megatron); --sp adds sequence
             parallelism (norms and residuals split by positions, gathered
             before the attention and the MLP)
  allreduce  torch.distributed.all_reduce of f32 buffers of 1 MiB to 1 GiB:
             algorithm and bus bandwidth (nccl-tests' convention:
             bus = algorithm x 2(n-1)/n)

--batch is the rows each rank reads for ddp and fsdp2 (the job's batch is
--batch x ranks) and the rows of the whole group for tp (the model is split,
not the batch), as kiln's train.batch_size is the global batch split over dp.
The step is what torch_gpt2.py's bench times (bf16 autocast, fused AdamW
(foreach under tp), clipping at 1.0, the loss read back each step), the model the same GPT-2 with
nn.Linear layers (DTensor's styles shard modules, not raw parameters) and the
same parameter count. Rank 0 prints one JSON line: the median ms a step, the
job's tok/s, and per rank the largest peak of torch.cuda.max_memory_allocated
and max_memory_reserved over the ranks.
"""
import argparse
import json
import math
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, d, n_head):
        super().__init__()
        self.head_dim = d // n_head
        self.q = nn.Linear(d, d)
        self.k = nn.Linear(d, d)
        self.v = nn.Linear(d, d)
        self.o = nn.Linear(d, d)

    def forward(self, x):
        B, T, _ = x.shape
        # -1 heads: under tensor parallelism each rank holds its own heads.
        q = self.q(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        k = self.k(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        v = self.v(x).view(B, T, -1, self.head_dim).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(y.transpose(1, 2).reshape(B, T, -1))


class MLP(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fc = nn.Linear(d, 4 * d)
        self.proj = nn.Linear(4 * d, d)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x), approximate="tanh"))


class Block(nn.Module):
    def __init__(self, d, n_head):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.attn = Attention(d, n_head)
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.mlp = MLP(d)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, n_layer, n_head, d, vocab, rows, block_size):
        super().__init__()
        self.vocab = vocab
        self.wte = nn.Embedding(rows, d)
        self.wpe = nn.Embedding(block_size, d)
        self.h = nn.ModuleList(Block(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d, eps=1e-5)
        # Set by --sp: the residual stream's layout between the embedding
        # and the final norm (a DTensor split by positions).
        self.sequence_mesh = None

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        if self.sequence_mesh is not None:
            from torch.distributed.tensor import DTensor, Replicate, Shard
            x = DTensor.from_local(x, self.sequence_mesh, [Replicate()]).redistribute(
                self.sequence_mesh, [Shard(1)])
        for block in self.h:
            x = block(x)
        if self.sequence_mesh is not None:
            from torch.distributed.tensor import Replicate
            x = x.redistribute(self.sequence_mesh, [Replicate()]).to_local()
        x = self.ln_f(x)
        logits = (x @ self.wte.weight.t())[..., : self.vocab].float()
        return F.cross_entropy(logits.reshape(-1, self.vocab), targets.reshape(-1))

    def init_random(self, seed):
        """GPT-2's initialization (0.02, the residual projections scaled by
        1/sqrt(2 L)), as kiln and torch_gpt2.py draw it."""
        g = torch.Generator().manual_seed(seed)
        std_proj = 0.02 / math.sqrt(2 * len(self.h))
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.endswith("bias"):
                    p.zero_()
                elif ".ln_" in name or name.startswith("ln_f"):
                    p.fill_(1.0)
                else:
                    std = std_proj if name.endswith(("attn.o.weight", "mlp.proj.weight")) else 0.02
                    p.copy_(torch.randn(p.shape, generator=g) * std)


def decays(name, p):
    """AdamW's weight decay on matrix weights only, as kiln."""
    return p.dim() == 2 and not name.startswith(("wte", "wpe"))


def optimizer(model, fused=True):
    # One group per (decay, DTensor or not): the fused kernel runs per group,
    # and tensor parallelism leaves the embeddings and the final norm plain
    # tensors beside DTensor linears.
    from torch.distributed.tensor import DTensor
    groups = {}
    for name, p in model.named_parameters():
        key = (decays(name, p), isinstance(p, DTensor))
        groups.setdefault(key, []).append(p)
    return torch.optim.AdamW([{"params": ps, "weight_decay": 0.1 if d else 0.0}
                              for (d, _), ps in groups.items()],
                             lr=1e-4, betas=(0.9, 0.95), eps=1e-8,
                             fused=fused, foreach=None if fused else True)


def clip_tensor_parallel(model, max_norm, group):
    """Clipping at max_norm over parameters of which some are split DTensors
    (their squares summed over the ranks) and some plain, replicated
    tensors (counted once)."""
    from torch.distributed.tensor import DTensor
    split = torch.zeros((), device="cuda")
    whole = torch.zeros((), device="cuda")
    grads = []
    for p in model.parameters():
        if p.grad is None:
            continue
        g = p.grad
        # Under sequence parallelism a replicated norm weight's gradient
        # comes out Partial (each rank summed its own positions): summed
        # here, before the norm and before the optimizer reads it.
        if isinstance(g, DTensor) and any(pl.is_partial() for pl in g.placements):
            p.grad = g = g.redistribute(g.device_mesh, p.placements)
        if isinstance(g, DTensor):
            local = g.to_local()
            if any(pl.is_shard() for pl in g.placements):
                split += local.float().pow(2).sum()
            else:
                whole += local.float().pow(2).sum()
            grads.append(local)
        else:
            whole += g.float().pow(2).sum()
            grads.append(g)
    dist.all_reduce(split, group=group)
    coef = torch.clamp(max_norm / ((split + whole).sqrt() + 1e-6), max=1.0)
    torch._foreach_mul_(grads, coef)


def parallelize_tensor(model, mesh, sp):
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import (ColwiseParallel, PrepareModuleInput,
                                                   RowwiseParallel, SequenceParallel,
                                                   parallelize_module)
    out = Shard(1) if sp else Replicate()
    for block in model.h:
        plan = {
            "attn.q": ColwiseParallel(), "attn.k": ColwiseParallel(), "attn.v": ColwiseParallel(),
            "attn.o": RowwiseParallel(output_layouts=out, use_local_output=not sp),
            "mlp.fc": ColwiseParallel(),
            "mlp.proj": RowwiseParallel(output_layouts=out, use_local_output=not sp),
        }
        if sp:
            gather = PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),))
            plan.update({"ln_1": SequenceParallel(), "ln_2": SequenceParallel(),
                         "attn": gather, "mlp": gather})
        else:
            # The attention's input as one replicated DTensor for q, k and v:
            # their input gradients are summed over the ranks once, not
            # three times.
            plan["attn"] = PrepareModuleInput(input_layouts=(Replicate(),),
                                              desired_input_layouts=(Replicate(),))
        parallelize_module(block, mesh, plan)
    if sp:
        model.sequence_mesh = mesh


def train_bench(args, rank, world):
    dev = "cuda"
    rows = (args.vocab + 63) // 64 * 64
    model = GPT(args.n_layer, args.n_head, args.n_embd, args.vocab, rows, args.block_size)
    model.init_random(1337)
    model.to(dev)
    n = sum(p.numel() for p in model.parameters()) - (rows - args.vocab) * args.n_embd
    step_fn = model
    clip = lambda: torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
    batch = args.batch
    if args.mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel
        step_fn = DistributedDataParallel(model, device_ids=[torch.cuda.current_device()])
        if args.compile:
            step_fn = torch.compile(step_fn)
    elif args.mode == "fsdp2":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        for block in model.h:
            if args.compile:
                block.compile()
            fully_shard(block, mp_policy=mp, reshard_after_forward=args.reshard)
        fully_shard(model, mp_policy=mp, reshard_after_forward=args.reshard)
    elif args.mode == "tp":
        from torch.distributed.device_mesh import init_device_mesh
        mesh = init_device_mesh("cuda", (world,))
        parallelize_tensor(model, mesh, args.sp)
        if args.compile:
            for block in model.h:
                block.compile()
        clip = lambda: clip_tensor_parallel(model, 1.0, mesh.get_group())
        # Every rank reads the same rows: the group computes one batch.
        batch = args.batch
    # Fused AdamW, except over DTensor TP's mix of DTensor and plain
    # parameters: the multi-tensor (foreach) kernels there, as torchtitan.
    opt = optimizer(model, fused=args.mode != "tp")
    # The same tokens on every rank under tp; each rank its own under dp.
    g = torch.Generator(device=dev).manual_seed(1 if args.mode == "tp" else 1 + rank)

    def one_step():
        x = torch.randint(0, args.vocab, (batch, args.seq), device=dev, generator=g)
        y = torch.randint(0, args.vocab, (batch, args.seq), device=dev, generator=g)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_fn(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip()
        opt.step()
        return loss.item()

    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    first_loss = one_step()
    first_s = time.time() - t0
    for _ in range(args.warmup - 1):
        one_step()
    times = []
    for _ in range(args.steps):
        dist.barrier()
        t = time.perf_counter()
        last_loss = one_step()
        times.append((time.perf_counter() - t) * 1e3)
    ms = sorted(times)[len(times) // 2]
    mem = torch.tensor([torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()],
                       dtype=torch.float64, device=dev)
    dist.all_reduce(mem, op=dist.ReduceOp.MAX)
    job_rows = batch if args.mode == "tp" else batch * world
    label = {"ddp": "DDP", "fsdp2": "FSDP2 " + ("reshard (ZeRO 3)" if args.reshard else "no reshard (ZeRO 2)"),
             "tp": "DTensor TP" + (" + SP" if args.sp else "")}[args.mode]
    return {"impl": "torch " + label + (" compiled" if args.compile else ""), "mode": args.mode,
            "ranks": world, "rows_per_rank": batch if args.mode != "tp" else None, "job_rows": job_rows,
            "seq_len": args.seq, "params": n, "step_ms": ms, "tok_per_s": job_rows * args.seq / (ms * 1e-3),
            "peak_allocated_bytes": int(mem[0].item()), "peak_reserved_bytes": int(mem[1].item()),
            "first_step_s": first_s, "first_loss": first_loss, "last_loss": last_loss,
            "torch": torch.__version__}


def allreduce_bench(args, rank, world):
    results = []
    size = 1 << 20
    while size <= args.max_bytes:
        x = torch.ones(size // 4, dtype=torch.float32, device="cuda")
        iters = max(5, min(200, (1 << 32) // size))
        for _ in range(5):
            dist.all_reduce(x)
        torch.cuda.synchronize()
        dist.barrier()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            dist.all_reduce(x)
        end.record()
        torch.cuda.synchronize()
        s = start.elapsed_time(end) / 1e3 / iters
        t = torch.tensor([s], dtype=torch.float64, device="cuda")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        s = t.item()
        algbw = size / s / 1e9
        results.append({"bytes": size, "us": s * 1e6, "algbw_GBps": algbw,
                        "busbw_GBps": algbw * 2 * (world - 1) / world})
        size *= 4
    return {"impl": "torch.distributed all_reduce (NCCL)", "ranks": world, "dtype": "f32",
            "sizes": results, "torch": torch.__version__,
            "nccl": ".".join(map(str, torch.cuda.nccl.version()))}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["ddp", "fsdp2", "tp", "allreduce"])
    p.add_argument("--n-layer", type=int, default=12)
    p.add_argument("--n-head", type=int, default=12)
    p.add_argument("--n-embd", type=int, default=768)
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--block-size", type=int, default=1024)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="torch.compile (DDP: the model; else each block)")
    p.add_argument("--reshard", action=argparse.BooleanOptionalAction, default=True,
                   help="fsdp2: free the gathered parameters after each block's forward")
    p.add_argument("--sp", action="store_true", help="tp: sequence parallelism too")
    p.add_argument("--max-bytes", type=int, default=1 << 30, help="allreduce: the largest buffer")
    p.add_argument("--out", help="rank 0 writes the JSON here too")
    args = p.parse_args()

    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch.cuda.set_device(local)
    dist.init_process_group("nccl", device_id=torch.device("cuda", local))
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    result = allreduce_bench(args, rank, world) if args.mode == "allreduce" else train_bench(args, rank, world)
    if rank == 0:
        print(json.dumps(result), flush=True)
        if args.out:
            json.dump(result, open(args.out, "w"))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
