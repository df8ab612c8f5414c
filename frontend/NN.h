//===- NN.h - neural-network building blocks over the Graph API ------------===//
//
// Modules in the PyTorch style: the constructor declares the parameters
// (under the module's name scope), operator() applies them. Every block is
// written with dialect primitives and composites; causal self-attention in
// particular is spelled out (q·kᵀ, scale, iota/compare/select mask, softmax,
// ·v) so the attention-fusion pass can recognize it.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_FRONTEND_NN_H
#define KILN_FRONTEND_NN_H

#include "frontend/Graph.h"

namespace kiln::frontend::nn {

/// y = x·W + b with W stored [in, out] (GPT-2's Conv1D layout).
struct Linear {
  Linear(Graph &g, llvm::StringRef name, int64_t in, int64_t out, bool bias = true,
         ParamInit init = ParamInit::normal(0.02));
  Tensor operator()(Tensor x) const;
  /// Megatron's tensor parallelism over mesh axis `axis`: a column-parallel
  /// layer splits its outputs (weight [in, out] over out, and the bias), a
  /// row-parallel one its inputs (weight over in; the bias stays whole and
  /// is added after the partial products are summed).
  void columnParallel(Graph &g, llvm::StringRef axis) const;
  void rowParallel(Graph &g, llvm::StringRef axis) const;
  Tensor weight, bias;
};

struct LayerNorm {
  LayerNorm(Graph &g, llvm::StringRef name, int64_t dim, double eps = 1e-5);
  Tensor operator()(Tensor x) const;
  Tensor weight, bias;
  double eps;
};

struct RMSNorm {
  RMSNorm(Graph &g, llvm::StringRef name, int64_t dim, double eps = 1e-6);
  Tensor operator()(Tensor x) const;
  Tensor weight;
  double eps;
};

struct Embedding {
  Embedding(Graph &g, llvm::StringRef name, int64_t count, int64_t dim,
            ParamInit init = ParamInit::normal(0.02));
  Tensor operator()(Tensor ids) const;
  Tensor weight;
};

/// proj(gelu_tanh(fc(x))), hidden width `hidden`.
struct MLP {
  MLP(Graph &g, llvm::StringRef name, int64_t dim, int64_t hidden, ParamInit fcInit,
      ParamInit projInit);
  Tensor operator()(Tensor x) const;
  Linear fc, proj;
};

/// A mixture of experts in place of an MLP (GShard, Lepikhin et al. 2020;
/// Switch Transformer, Fedus et al. 2021): a router [C, E] scores each
/// token's experts ("softmax" over them or "sigmoid" of each, in f32),
/// kiln.moe_route picks its top_k and their capacity slots, the tokens
/// are gathered into [E, capacity, C], every expert — an MLP of hidden
/// width `hidden` — runs as one batched matmul, and each token's output is
/// the gate-weighted sum of its experts' rows (a dropped choice adds
/// nothing: the residual carries the token). The gates are the chosen
/// scores, renormalized to sum to 1 when top_k > 1.
/// Parameters: router.w [C, E] and, for a GELU MLP like nn::MLP (GPT-2),
/// experts.fc.{w [E, C, H], b [E, H]}, experts.proj.{w [E, H, C], b [E, C]};
/// for SwiGLU (Llama; Mixtral's experts, Jiang et al. 2024)
/// experts.gate.w, experts.up.w [E, C, H] and experts.down.w [E, H, C].
struct MoE {
  enum class Expert { GeluMlp, SwiGLU };
  /// The tokens are routed in `groups` equal groups, each with `capacity`
  /// slots per expert (GShard's groups). With `expertAxis` (a mesh axis,
  /// "" for none) the experts' weights are split over it along the experts:
  /// expert parallelism, the tokens exchanged by all_to_all.
  MoE(Graph &g, llvm::StringRef name, int64_t dim, int64_t hidden, int64_t experts,
      int64_t topK, int64_t capacity, llvm::StringRef gating, ParamInit init,
      ParamInit projInit, Expert kind = Expert::GeluMlp, int64_t groups = 1,
      llvm::StringRef expertAxis = "");
  struct Output {
    Tensor y;
    /// Switch's load-balancing loss E · Σ_e f_e · P_e (f_e: the share of
    /// first choices that went to e, P_e: e's mean score; 1 when balanced)
    /// and the share of choices dropped, both scalars in the scores' type.
    Tensor balance, dropped;
  };
  Output operator()(Tensor x) const;
  /// The experts' MLPs over the gathered tokens [E, slots, C].
  Tensor runExperts(Tensor xe) const;
  Tensor router, fcWeight, fcBias, projWeight, projBias; ///< GeluMlp
  Tensor gateWeight, upWeight, downWeight;               ///< SwiGLU
  int64_t experts, topK, capacity, hidden, groups;
  std::string gating;
  Expert kind;
};

/// Multi-head causal self-attention over x [B, T, C] with a fused qkv
/// projection [C, 3C] and an output projection [C, C]; with `segments`
/// ([B, T] document ids of packed rows) within each document only. The
/// fused projection's 3C outputs are head-major, (head, q|k|v, D), so that
/// tensor parallelism splits it over heads (Hugging Face stores GPT-2's
/// c_attn as (q|k|v, head, D); models::gpt2QkvFromHuggingFace converts).
/// Heads are split over tp: qkv column-parallel, proj row-parallel.
struct CausalSelfAttention {
  CausalSelfAttention(Graph &g, llvm::StringRef name, int64_t dim, int64_t heads,
                      ParamInit qkvInit, ParamInit projInit);
  Tensor operator()(Tensor x, Tensor segments = {}) const;
  Linear qkv, proj;
  int64_t heads;
};

/// The causal mask of a T×T score matrix: true where key j ≤ query i.
Tensor causalMask(Graph &g, int64_t t);

/// The document mask of packed rows: [B, 1, T, T], true where key j and
/// query i of row b are in one segment, seg[b, i] == seg[b, j] (broadcast
/// over the heads when applied to [B, H, T, T] scores).
Tensor sameSegmentMask(Tensor segments);

/// Scores [B, H, T, T] masked to causal attention, within segments when
/// `segments` is given: -inf where a query may not see a key.
Tensor maskScores(Tensor scores, Tensor segments);

} // namespace kiln::frontend::nn

#endif // KILN_FRONTEND_NN_H
