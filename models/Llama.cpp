//===- Llama.cpp - a Llama-style decoder -----------------------------------===//

#include "models/Llama.h"

#include "frontend/NN.h"

#include <cmath>
#include <limits>
#include <optional>

using namespace mlir;
using namespace kiln::frontend;

namespace kiln::models {

namespace {

/// Grouped-query causal self-attention with rotary embeddings; no biases.
struct LlamaAttention {
  LlamaAttention(Graph &g, const ModelConfig &c, ParamInit init)
      : q(g, "attn.q", c.n_embd, c.n_head * c.headDim(), false, init),
        k(g, "attn.k", c.n_embd, c.kvHeads() * c.headDim(), false, init),
        v(g, "attn.v", c.n_embd, c.kvHeads() * c.headDim(), false, init),
        o(g, "attn.o", c.n_head * c.headDim(), c.n_embd, false, init), heads(c.n_head),
        kvHeads(c.kvHeads()), theta(c.rope_theta) {
    // Tensor parallelism over tp: query and key/value heads split (tp
    // divides the key/value heads, so a rank's query heads read its own
    // key/value heads), one all-reduce after o.
    for (const nn::Linear *l : {&q, &k, &v})
      l->columnParallel(g, "tp");
    o.rowParallel(g, "tp");
  }

  Tensor operator()(Tensor x, Tensor segments) const {
    int64_t b = x.dim(0), t = x.dim(1), d = x.dim(2) / heads, group = heads / kvHeads;
    auto split = [&](Tensor y, int64_t h) { // [B, T, h·D] -> [B, h, T, D]
      return transpose(reshape(y, {b, t, h, d}), {0, 2, 1, 3});
    };
    Tensor qh = rope(split(q(x), heads), theta);
    Tensor kh = rope(split(k(x), kvHeads), theta);
    Tensor vh = split(v(x), kvHeads);
    // Query head h reads key/value head h / group (Hugging Face's repeat_kv).
    auto repeat = [&](Tensor y) {
      if (group == 1)
        return y;
      Tensor wide = broadcastTo(reshape(y, {b, kvHeads, 1, t, d}), {b, kvHeads, group, t, d});
      return reshape(wide, {b, heads, t, d});
    };
    kh = repeat(kh);
    vh = repeat(vh);
    Tensor scores = matmul(qh * (1.0 / std::sqrt(static_cast<double>(d))), kh, false, true);
    scores = nn::maskScores(scores, segments);
    Tensor y = matmul(softmax(scores), vh); // [B, H, T, D]
    return o(reshape(transpose(y, {0, 2, 1, 3}), {b, t, heads * d}));
  }

  nn::Linear q, k, v, o;
  int64_t heads, kvHeads;
  double theta;
};

struct SwiGLU {
  SwiGLU(Graph &g, const ModelConfig &c, ParamInit init)
      : gate(g, "mlp.gate", c.n_embd, c.intermediate_size, false, init),
        up(g, "mlp.up", c.n_embd, c.intermediate_size, false, init),
        down(g, "mlp.down", c.intermediate_size, c.n_embd, false, init) {
    // Megatron's split of the MLP over tp: gate and up by columns, down by rows.
    gate.columnParallel(g, "tp");
    up.columnParallel(g, "tp");
    down.rowParallel(g, "tp");
  }
  Tensor operator()(Tensor x) const {
    // Sequenced: the two operands of `*` would be built in an unspecified
    // order (GCC's -O3 and sanitizer builds differed, so did their IR).
    Tensor u = up(x);
    Tensor g = silu(gate(x));
    return down(g * u);
  }
  nn::Linear gate, up, down;
};

} // namespace

FailureOr<func::FuncOp> buildLlama(ModuleOp module, const ModelConfig &config, int64_t batch,
                                   int64_t seqLen, Type floatType, GPT2Output output,
                                   StringRef name, std::vector<std::string> &errors) {
  Graph g(module, name);
  g.setFloatType(floatType);
  const int64_t B = batch, T = seqLen, C = config.n_embd, L = config.n_layer,
                Vp = config.paddedVocab();
  // Hugging Face's LlamaPreTrainedModel: N(0, initializer_range) for every
  // linear and embedding, unit norms.
  ParamInit init = ParamInit::normal(config.init_std);
  nn::Embedding embed(g, "embed", Vp, C, init);
  struct Block {
    nn::RMSNorm attnNorm;
    LlamaAttention attn;
    nn::RMSNorm mlpNorm;
    std::optional<SwiGLU> mlp; ///< or, with moe.experts, SwiGLU experts (Mixtral)
    std::optional<nn::MoE> moe;
  };
  const MoeConfig &moe = config.moe;
  std::vector<Block> blocks;
  for (int64_t l = 0; l < L; ++l) {
    auto s = g.scope("layers." + std::to_string(l));
    Block blk{nn::RMSNorm(g, "attn_norm", C, config.rms_norm_eps), LlamaAttention(g, config, init),
              nn::RMSNorm(g, "mlp_norm", C, config.rms_norm_eps), std::nullopt, std::nullopt};
    if (moe.enabled())
      blk.moe.emplace(makeMoE(g, moe, C, config.intermediate_size, B * T, output, init, init,
                              nn::MoE::Expert::SwiGLU));
    else
      blk.mlp.emplace(g, config, init);
    blocks.push_back(std::move(blk));
  }
  nn::RMSNorm norm(g, "norm", C, config.rms_norm_eps);
  nn::Linear head(g, "lm_head", C, Vp, false, init);

  StepInputs in = stepInputs(g, B, T, output, config);
  Tensor x;
  {
    auto s = g.scope("embed");
    x = embed(in.tokens); // [B, T, C]
  }
  Tensor balance, dropped; // a mixture of experts' losses, summed over the layers
  for (int64_t l = 0; l < L; ++l) {
    auto s = g.scope("layers." + std::to_string(l));
    Block &blk = blocks[l];
    {
      auto a = g.scope("attn");
      x = x + blk.attn(blk.attnNorm(x), in.segments);
    }
    if (blk.moe) {
      auto m = g.scope("moe");
      nn::MoE::Output out = (*blk.moe)(blk.mlpNorm(x));
      x = x + out.y;
      balance = balance ? balance + out.balance : out.balance;
      dropped = dropped ? dropped + out.dropped : out.dropped;
      continue;
    }
    auto m = g.scope("mlp");
    x = x + (*blk.mlp)(blk.mlpNorm(x));
  }
  Auxiliary aux = moeAuxiliary(g, balance, dropped, L, moe);
  Tensor logits;
  {
    auto s = g.scope("head");
    logits = head(norm(x)); // [B, T, Vp]
  }
  return finishStep(g, module, logits, in, config, output, errors, aux);
}

int64_t llamaParamCount(const ModelConfig &c, bool includePadding, bool activeOnly) {
  int64_t C = c.n_embd, V = includePadding ? c.paddedVocab() : c.vocab_size,
          D = c.headDim(), I = c.intermediate_size;
  int64_t mlp = 3 * C * I; // gate, up, down
  if (c.moe.enabled())     // the router and the experts (or the top_k a token uses)
    mlp = C * c.moe.experts + (activeOnly ? c.moe.top_k : c.moe.experts) * mlp;
  int64_t perLayer = C                                  // attn_norm
                     + C * c.n_head * D                 // q
                     + 2 * C * c.kvHeads() * D          // k, v
                     + c.n_head * D * C                 // o
                     + C                                // mlp_norm
                     + mlp;
  return 2 * V * C + c.n_layer * perLayer + C;
}

namespace {
struct Name {
  const char *kiln, *hf;
  bool transposed;
};
const Name kBlockNames[] = {
    {"attn_norm.w", "input_layernorm.weight", false},
    {"attn.q.w", "self_attn.q_proj.weight", true},
    {"attn.k.w", "self_attn.k_proj.weight", true},
    {"attn.v.w", "self_attn.v_proj.weight", true},
    {"attn.o.w", "self_attn.o_proj.weight", true},
    {"mlp_norm.w", "post_attention_layernorm.weight", false},
    {"mlp.gate.w", "mlp.gate_proj.weight", true},
    {"mlp.up.w", "mlp.up_proj.weight", true},
    {"mlp.down.w", "mlp.down_proj.weight", true},
};
const Name kTopNames[] = {{"embed", "model.embed_tokens.weight", false},
                          {"norm.w", "model.norm.weight", false},
                          {"lm_head.w", "lm_head.weight", true}};
} // namespace

namespace {
/// A name in one naming (kiln's or Hugging Face's) in the other.
std::string translate(StringRef name, bool toHuggingFace, bool *transposed) {
  auto from = [&](const Name &n) { return StringRef(toHuggingFace ? n.kiln : n.hf); };
  auto to = [&](const Name &n) { return StringRef(toHuggingFace ? n.hf : n.kiln); };
  auto found = [&](const Name &n, std::string result) {
    if (transposed)
      *transposed = n.transposed;
    return result;
  };
  for (const Name &n : kTopNames)
    if (name == from(n))
      return found(n, to(n).str());
  StringRef layersFrom = toHuggingFace ? "layers." : "model.layers.";
  StringRef layersTo = toHuggingFace ? "model.layers." : "layers.";
  if (!name.consume_front(layersFrom))
    return "";
  auto [layer, rest] = name.split('.');
  for (const Name &n : kBlockNames)
    if (rest == from(n))
      return found(n, (layersTo + layer + "." + to(n)).str());
  return "";
}
} // namespace

std::string llamaHuggingFaceName(StringRef kilnName, bool *transposed) {
  return translate(kilnName, /*toHuggingFace=*/true, transposed);
}

std::string llamaKilnName(StringRef hfName, bool *transposed) {
  return translate(hfName, /*toHuggingFace=*/false, transposed);
}

} // namespace kiln::models
