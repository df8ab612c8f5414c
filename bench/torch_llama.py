#!/usr/bin/env python3
"""The PyTorch reference of kiln's Llama-style model (run on the GPU host).

Llama written out in plain PyTorch the way Hugging Face's LlamaForCausalLM
computes it — RMSNorm in f32, rotary embeddings with rotate_half (inv_freq
= 1 / theta^(2i/D)), grouped-query attention through repeat_kv and
scaled_dot_product_attention, SwiGLU, an untied lm_head, no biases — with
Hugging Face's names and layouts (nn.Linear weights [out, in]), so it loads
what `kiln export CONFIG --hf FILE` writes for a llama config.

  reference  load kiln's initial weights, train N f32 steps on the same
             batches kiln reads (llm.c shard, sequential) with kiln's AdamW
             settings (decay on matrix weights, not embeddings or norms;
             clipping by max / max(norm, max)); write the per-step losses
             and gradient norms as JSON.
  bench      time training steps on random tokens as an expert would run
             them: bf16 autocast, fused AdamW, SDPA's default backend,
             foreach clipping; eager or --compile (torch.compile); report
             ms/step (median), tok/s, MFU (kiln's formula: 6·N + 12·L·d·T
             FLOPs per token, 989 TFLOP/s bf16 peak) and peak memory.
"""
import argparse
import json
import sys

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from torch_gpt2 import batches, read_safetensors, read_shard, time_steps  # noqa: E402


class RMSNorm(nn.Module):
    def __init__(self, d, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.eps = eps

    def forward(self, x):
        var = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x.float() * torch.rsqrt(var + self.eps)).to(x.dtype)


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


class Layer(nn.Module):
    def __init__(self, a):
        super().__init__()
        d, h, kv, i = a.n_embd, a.n_head, a.n_kv_head, a.intermediate_size
        self.h, self.kv, self.hd = h, kv, d // h
        self.input_layernorm = RMSNorm(d, a.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(d, a.rms_norm_eps)
        self.q_proj = nn.Linear(d, h * self.hd, bias=False)
        self.k_proj = nn.Linear(d, kv * self.hd, bias=False)
        self.v_proj = nn.Linear(d, kv * self.hd, bias=False)
        self.o_proj = nn.Linear(h * self.hd, d, bias=False)
        self.gate_proj = nn.Linear(d, i, bias=False)
        self.up_proj = nn.Linear(d, i, bias=False)
        self.down_proj = nn.Linear(i, d, bias=False)

    def forward(self, x, cos, sin, block_mask=None):
        B, T, _ = x.shape
        y = self.input_layernorm(x)
        q = self.q_proj(y).view(B, T, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(y).view(B, T, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(y).view(B, T, self.kv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.h // self.kv  # Hugging Face's repeat_kv: head h reads kv head h // rep
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        if block_mask is None:
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # packed documents: FlexAttention with a document-causal block mask
            a = flex(q, k, v, block_mask=block_mask)
        x = x + self.o_proj(a.transpose(1, 2).reshape(B, T, -1))
        y = self.post_attention_layernorm(x)
        return x + self.down_proj(F.silu(self.gate_proj(y)) * self.up_proj(y))


class Llama(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.embed_tokens = nn.Embedding(a.vocab, a.n_embd)
        self.layers = nn.ModuleList(Layer(a) for _ in range(a.n_layer))
        self.norm = RMSNorm(a.n_embd, a.rms_norm_eps)
        self.lm_head = nn.Linear(a.n_embd, a.vocab, bias=False)
        hd = a.n_embd // a.n_head
        inv_freq = 1.0 / (a.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, idx, targets, block_mask=None):
        T = idx.shape[1]
        t = torch.arange(T, device=idx.device).float()
        freqs = torch.outer(t, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        x = self.embed_tokens(idx)
        for layer in self.layers:
            x = layer(x, cos, sin, block_mask)
        logits = self.lm_head(self.norm(x))
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))

    def hf_params(self):
        """(Hugging Face name, parameter, decayed)."""
        out = [("model.embed_tokens.weight", self.embed_tokens.weight, False)]
        for i, l in enumerate(self.layers):
            p = f"model.layers.{i}."
            out += [(p + "input_layernorm.weight", l.input_layernorm.weight, False),
                    (p + "post_attention_layernorm.weight", l.post_attention_layernorm.weight, False)]
            for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
                out.append((p + f"self_attn.{n}.weight", getattr(l, n).weight, True))
            for n in ("gate_proj", "up_proj", "down_proj"):
                out.append((p + f"mlp.{n}.weight", getattr(l, n).weight, True))
        out += [("model.norm.weight", self.norm.weight, False), ("lm_head.weight", self.lm_head.weight, True)]
        return out


def reference(a):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = Llama(a)
    tensors = read_safetensors(a.weights)
    with torch.no_grad():
        for name, p, _ in model.hf_params():
            t = tensors.pop(name)
            assert tuple(t.shape) == tuple(p.shape), f"{name}: {tuple(t.shape)} vs {tuple(p.shape)}"
            p.copy_(t)
    assert not tensors, f"unused tensors: {sorted(tensors)[:5]}"
    model.to("cuda")
    params = model.hf_params()
    opt = torch.optim.AdamW([{"params": [p for _, p, d in params if d], "weight_decay": 0.1},
                             {"params": [p for _, p, d in params if not d], "weight_decay": 0.0}],
                            lr=a.lr, betas=(0.9, 0.95), eps=1e-8)
    data = batches(read_shard(a.data), a.batch, a.seq)
    losses, norms = [], []
    for step in range(a.steps):
        x, y = next(data)
        loss = model(x.cuda(), y.cuda())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for _, p, _ in params]
        norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
        for g in grads:
            g.mul_(1.0 / max(norm, 1.0))
        opt.step()
        losses.append(loss.item())
        norms.append(norm)
        print(f"  torch step {step + 1:2d}: loss {losses[-1]:.6f} grad norm {norm:.4f}", flush=True)
    json.dump({"loss": losses, "grad_norm": norms}, open(a.out, "w"))


flex = None


def document_mask(seq, doc_len):
    """FlexAttention's block mask for rows of documents of doc_len tokens,
    causal within each (rotary positions need no restart: they are relative)."""
    global flex
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    flex = torch.compile(flex_attention)  # FlexAttention's kernels come from compiling it
    doc = torch.arange(seq, device="cuda") // doc_len

    def mask_mod(b, h, q, kv):
        return (q >= kv) & (doc[q] == doc[kv])

    return create_block_mask(mask_mod, B=None, H=None, Q_LEN=seq, KV_LEN=seq, device="cuda")


def bench(a):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(1337)
    model = Llama(a)
    with torch.no_grad():
        for name, p, _ in model.hf_params():
            if p.dim() == 2:
                p.normal_(0.0, 0.02)
    model.to("cuda")
    params = model.hf_params()
    opt = torch.optim.AdamW([{"params": [p for _, p, d in params if d], "weight_decay": 0.1},
                             {"params": [p for _, p, d in params if not d], "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    step_fn = torch.compile(model) if a.compile else model
    g = torch.Generator(device="cuda").manual_seed(1)
    block_mask = document_mask(a.seq, a.doc_len) if a.doc_len else None

    def one_step():
        x = torch.randint(0, a.vocab, (a.batch, a.seq), device="cuda", generator=g)
        y = torch.randint(0, a.vocab, (a.batch, a.seq), device="cuda", generator=g)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_fn(x, y, block_mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        return loss.item()  # synchronizes, as kiln's step returns its loss

    first_s, ms = time_steps(one_step, 3, a.steps)
    n = sum(p.numel() for _, p, _ in params)
    tokens = a.batch * a.seq
    flops = (6 * n + 12 * a.n_layer * a.n_embd * a.seq) * tokens
    result = {"impl": "torch.compile" if a.compile else "torch eager", "precision": "bf16",
              "attention": f"flex, documents of {a.doc_len}" if a.doc_len else "sdpa causal",
              "batch": a.batch, "seq_len": a.seq, "step_ms": ms, "tok_per_s": tokens / (ms * 1e-3),
              "mfu": flops / (ms * 1e-3) / 989e12, "peak_mem_bytes": torch.cuda.max_memory_allocated(),
              "first_step_s": first_s, "params": n}
    print(json.dumps(result))
    json.dump(result, open(a.out, "w"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["reference", "bench"])
    for name, kind, default in [("n-layer", int, 12), ("n-head", int, 12), ("n-kv-head", int, 4),
                                ("n-embd", int, 768), ("intermediate-size", int, 2048),
                                ("vocab", int, 50257), ("rope-theta", float, 10000.0),
                                ("rms-norm-eps", float, 1e-5), ("batch", int, 16), ("seq", int, 1024),
                                ("steps", int, 20), ("lr", float, 6e-4)]:
        p.add_argument("--" + name, type=kind, default=default)
    p.add_argument("--weights", help="reference: kiln's initial weights (kiln export CONFIG --hf FILE)")
    p.add_argument("--data", help="reference: the llm.c token shard kiln trains on")
    p.add_argument("--compile", action="store_true", help="bench: torch.compile the model")
    p.add_argument("--doc-len", type=int, default=0,
                   help="bench: packed documents of this many tokens, attention masked to each "
                        "(FlexAttention); 0: plain causal SDPA")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if a.mode == "reference":
        if not a.weights or not a.data:
            p.error("reference needs --weights and --data")
        reference(a)
    else:
        bench(a)


if __name__ == "__main__":
    main()
