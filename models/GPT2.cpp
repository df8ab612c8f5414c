//===- GPT2.cpp - the GPT-2 model family -----------------------------------===//

#include "models/GPT2.h"

#include "frontend/NN.h"

#include <cmath>
#include <optional>

using namespace mlir;
using namespace kiln::frontend;

namespace kiln::models {

FailureOr<func::FuncOp> buildGPT2(ModuleOp module, const ModelConfig &config, int64_t batch,
                                  int64_t seqLen, Type floatType, GPT2Output output,
                                  StringRef name, std::vector<std::string> &errors) {
  Graph g(module, name);
  g.setFloatType(floatType);
  const int64_t B = batch, T = seqLen, C = config.n_embd, L = config.n_layer,
                Vp = config.paddedVocab();
  // nanoGPT's initialization: N(0, 0.02) everywhere, residual projections
  // scaled by 1/sqrt(2L) (GPT-2 paper §2.3), zero biases, unit norms.
  ParamInit init = ParamInit::normal(config.init_std);
  ParamInit residual = ParamInit::normal(config.init_std / std::sqrt(2.0 * L));

  nn::Embedding wte(g, "wte", Vp, C, init);
  nn::Embedding wpe(g, "wpe", config.block_size, C, init);
  struct Block {
    nn::LayerNorm ln1;
    nn::CausalSelfAttention attn;
    nn::LayerNorm ln2;
    std::optional<nn::MLP> mlp; ///< or, with moe.experts, the experts
    std::optional<nn::MoE> moe;
  };
  const MoeConfig &moe = config.moe;
  std::vector<Block> blocks;
  for (int64_t l = 0; l < L; ++l) {
    auto s = g.scope("h." + std::to_string(l));
    Block blk{nn::LayerNorm(g, "ln_1", C, config.layer_norm_eps),
              nn::CausalSelfAttention(g, "attn", C, config.n_head, init, residual),
              nn::LayerNorm(g, "ln_2", C, config.layer_norm_eps), std::nullopt, std::nullopt};
    if (moe.enabled())
      blk.moe.emplace(makeMoE(g, moe, C, 4 * C, B * T, output, init, residual,
                              nn::MoE::Expert::GeluMlp));
    else
      blk.mlp.emplace(g, "mlp", C, 4 * C, init, residual);
    blocks.push_back(std::move(blk));
  }
  nn::LayerNorm lnf(g, "ln_f", C, config.layer_norm_eps);

  StepInputs in = stepInputs(g, B, T, output, config);
  Tensor x;
  {
    auto s = g.scope("embed");
    // Packed documents: each position's own index within its document.
    Tensor positions = in.positions ? wpe(in.positions)            // [B, T, C]
                                    : slice(wpe.weight, 0, 0, T); // [T, C]
    x = wte(in.tokens) + positions;                               // [B, T, C]
  }
  // Mixture of experts: the layers' load-balancing losses and dropped
  // shares, averaged.
  Auxiliary aux;
  Tensor balance, dropped;
  for (int64_t l = 0; l < L; ++l) {
    auto s = g.scope("h." + std::to_string(l));
    Block &blk = blocks[l];
    {
      auto a = g.scope("attn");
      x = x + blk.attn(blk.ln1(x), in.segments);
    }
    if (blk.moe) {
      auto m = g.scope("moe");
      nn::MoE::Output out = (*blk.moe)(blk.ln2(x));
      x = x + out.y;
      balance = balance ? balance + out.balance : out.balance;
      dropped = dropped ? dropped + out.dropped : out.dropped;
      continue;
    }
    auto m = g.scope("mlp");
    x = x + (*blk.mlp)(blk.ln2(x));
  }
  aux = moeAuxiliary(g, balance, dropped, L, moe);
  Tensor logits;
  {
    auto s = g.scope("head");
    logits = matmul(lnf(x), wte.weight, false, true); // tied: [B, T, Vp]
  }
  return finishStep(g, module, logits, in, config, output, errors, aux);
}

int64_t moeCapacity(const MoeConfig &moe, int64_t tokens, GPT2Output output) {
  return output == GPT2Output::Logits ? tokens : moe.capacity(tokens / moeGroups(moe, output));
}

int64_t moeGroups(const MoeConfig &moe, GPT2Output output) {
  return output == GPT2Output::Logits ? 1 : moe.groups;
}

nn::MoE makeMoE(Graph &g, const MoeConfig &moe, int64_t dim, int64_t hidden, int64_t tokens,
                GPT2Output output, ParamInit init, ParamInit projInit, nn::MoE::Expert kind) {
  return nn::MoE(g, "moe", dim, hidden, moe.experts, moe.top_k, moeCapacity(moe, tokens, output),
                 moe.gating, init, projInit, kind, moeGroups(moe, output), moe.expert_axis);
}

Auxiliary moeAuxiliary(Graph &g, Tensor balance, Tensor dropped, int64_t layers,
                       const MoeConfig &moe) {
  Auxiliary aux;
  if (!balance)
    return aux;
  auto s = g.scope("moe");
  balance = balance / static_cast<double>(layers);
  aux.loss = balance * moe.aux_loss_weight;
  aux.metrics = {{balance, "moe_balance"}, {dropped / static_cast<double>(layers), "moe_dropped"}};
  return aux;
}

StepInputs stepInputs(Graph &g, int64_t batch, int64_t seqLen, GPT2Output output,
                      const ModelConfig &config) {
  // Data parallelism: the batch is split over the mesh's data-parallel
  // axes (a batch of one, as sampling runs, stays whole).
  std::vector<std::string> batchAxes = batch > 1 ? config.batch_axes : std::vector<std::string>();
  const std::vector<std::string> whole;
  StepInputs in;
  in.tokens = g.input("tokens", {batch, seqLen}, g.i32());
  g.shard(in.tokens, {batchAxes, whole});
  if (output != GPT2Output::Logits) {
    in.targets = g.input("targets", {batch, seqLen}, g.i32());
    g.shard(in.targets, {batchAxes, whole});
  }
  if (config.document_masking && output != GPT2Output::Logits) {
    in.segments = g.input("segments", {batch, seqLen}, g.i32());
    g.shard(in.segments, {batchAxes, whole});
    // Rotary embeddings are relative: within a document they see the same
    // offsets wherever it starts, so only learned absolute positions
    // (GPT-2's wpe) read the restarted ones.
    if (config.kind == "gpt2") {
      in.positions = g.input("positions", {batch, seqLen}, g.i32());
      g.shard(in.positions, {batchAxes, whole});
    }
  }
  if (output == GPT2Output::Loss && config.objective == "dpo") {
    in.refLogps = g.input("ref_logps", {batch}, g.floatType());
    g.shard(in.refLogps, {batchAxes});
  }
  return in;
}

namespace {

/// softplus(x) = log(1 + eˣ), as max(x, 0) + log(1 + e^−|x|): no overflow
/// for large x, no log(0) for very negative x.
Tensor softplus(Tensor x) {
  Graph &g = x.graph();
  Tensor zero = full(g, x.shape(), 0, x.elementType());
  Tensor magnitude = maximum(x, -x);
  return maximum(x, zero) + log(exp(-magnitude) + 1.0);
}

/// DPO's loss and metrics from the rows' log-probabilities [B] (row 2i
/// chosen, 2i+1 rejected) and the reference's.
std::vector<std::pair<Tensor, std::string>> dpoLoss(Tensor logps, Tensor refLogps, double beta) {
  Graph &g = logps.graph();
  int64_t pairs = logps.dim(0) / 2;
  // A value per row [B] as (chosen rows, rejected rows), each [B/2].
  auto split = [pairs](Tensor rows) {
    Tensor byPair = reshape(rows, {pairs, 2});
    return std::pair{reshape(slice(byPair, 1, 0, 1), {pairs}),
                     reshape(slice(byPair, 1, 1, 2), {pairs})};
  };
  // β·(log π − log ref): the implicit reward of each row.
  auto [chosen, rejected] = split((logps - refLogps) * beta);
  Tensor margin = chosen - rejected;
  // −log σ(m) = softplus(−m).
  Tensor loss = mean(softplus(-margin));
  Tensor zero = full(g, {pairs}, 0, margin.elementType());
  Tensor correct = cast(compare(CompareDirection::gt, margin, zero), margin.elementType());
  // The policy's own preference, without the reference: log π(c) > log π(r).
  auto [ownChosen, ownRejected] = split(logps);
  Tensor prefers =
      cast(compare(CompareDirection::gt, ownChosen, ownRejected), margin.elementType());
  return {{loss, "loss"},
          {mean(margin), "reward_margin"},
          {mean(correct), "reward_accuracy"},
          {mean(chosen), "chosen_reward"},
          {mean(rejected), "rejected_reward"},
          {mean(prefers), "logp_accuracy"}};
}

} // namespace

FailureOr<func::FuncOp> finishStep(Graph &g, ModuleOp module, Tensor logits, const StepInputs &in,
                                   const ModelConfig &config, GPT2Output output,
                                   std::vector<std::string> &errors, const Auxiliary &aux) {
  std::vector<std::pair<Tensor, std::string>> results{{logits, "logits"}};
  if (output != GPT2Output::Logits) {
    auto s = g.scope("loss");
    Tensor ce = crossEntropy(logits, in.targets, config.vocab_size); // 0 where no target
    if (output == GPT2Output::LogProbs) {
      results = {{-sum(ce, {1}), "logps"}};
    } else if (config.objective == "dpo") {
      results = dpoLoss(-sum(ce, {1}), in.refLogps, config.dpo_beta);
    } else if (config.loss_normalization != "targets") {
      results = {{mean(ce), "loss"}};
    } else {
      Type f = ce.type().getElementType();
      Tensor zero = full(g, in.targets.shape(), 0, in.targets.elementType());
      Tensor counted = cast(compare(CompareDirection::ge, in.targets, zero), f); // 1: a target
      Tensor count = maximum(sum(counted, {0, 1}), full(g, {}, 1, f));
      results = {{sum(ce, {0, 1}) / count, "loss"}};
    }
    // An auxiliary loss joins the objective; the objective's own loss (the
    // language model's, or DPO's) is reported beside it.
    if (output == GPT2Output::Loss && aux.loss) {
      Tensor lm = results[0].first;
      results[0].first = lm + cast(aux.loss, lm.elementType());
      results.push_back({lm, config.objective == "dpo" ? "dpo_loss" : "lm_loss"});
      for (const auto &m : aux.metrics)
        results.push_back({cast(m.first, lm.elementType()), m.second});
    }
  }
  std::vector<Tensor> values;
  for (const auto &r : results)
    values.push_back(r.first);
  auto func = g.finish(values);
  if (succeeded(func))
    for (auto [i, r] : llvm::enumerate(results))
      (*func).setResultAttr(i, KilnDialect::kOutputAttrName,
                            StringAttr::get(module.getContext(), r.second));
  for (const std::string &e : g.errors())
    errors.push_back(e);
  return func;
}

int64_t gpt2ParamCount(const ModelConfig &c, bool includePadding, bool activeOnly) {
  int64_t C = c.n_embd, V = includePadding ? c.paddedVocab() : c.vocab_size;
  int64_t mlp = C * 4 * C + 4 * C     // mlp.fc
                + 4 * C * C + C;      // mlp.proj
  if (c.moe.enabled()) // the router and the experts (or the top_k a token uses)
    mlp = C * c.moe.experts + (activeOnly ? c.moe.top_k : c.moe.experts) * mlp;
  int64_t perLayer = 2 * C                  // ln_1
                     + C * 3 * C + 3 * C    // attn.qkv
                     + C * C + C            // attn.proj
                     + 2 * C                // ln_2
                     + mlp;
  return V * C + c.block_size * C + c.n_layer * perLayer + 2 * C;
}

namespace {
// kiln's suffixes and Hugging Face's, per block.
const std::pair<const char *, const char *> kBlockNames[] = {
    {"ln_1.w", "ln_1.weight"},           {"ln_1.b", "ln_1.bias"},
    {"attn.qkv.w", "attn.c_attn.weight"}, {"attn.qkv.b", "attn.c_attn.bias"},
    {"attn.proj.w", "attn.c_proj.weight"}, {"attn.proj.b", "attn.c_proj.bias"},
    {"ln_2.w", "ln_2.weight"},           {"ln_2.b", "ln_2.bias"},
    {"mlp.fc.w", "mlp.c_fc.weight"},     {"mlp.fc.b", "mlp.c_fc.bias"},
    {"mlp.proj.w", "mlp.c_proj.weight"}, {"mlp.proj.b", "mlp.c_proj.bias"},
};
const std::pair<const char *, const char *> kTopNames[] = {
    {"wte", "wte.weight"}, {"wpe", "wpe.weight"}, {"ln_f.w", "ln_f.weight"}, {"ln_f.b", "ln_f.bias"}};
} // namespace

std::string gpt2HuggingFaceName(StringRef kilnName) {
  for (auto [k, h] : kTopNames)
    if (kilnName == k)
      return std::string("transformer.") + h;
  if (!kilnName.consume_front("h."))
    return "";
  auto [layer, rest] = kilnName.split('.');
  for (auto [k, h] : kBlockNames)
    if (rest == k)
      return "transformer.h." + layer.str() + "." + h;
  return "";
}

std::string gpt2KilnName(StringRef hfName) {
  hfName.consume_front("transformer.");
  for (auto [k, h] : kTopNames)
    if (hfName == h)
      return k;
  if (!hfName.consume_front("h."))
    return "";
  auto [layer, rest] = hfName.split('.');
  for (auto [k, h] : kBlockNames)
    if (rest == h)
      return "h." + layer.str() + "." + k;
  return "";
}

} // namespace kiln::models
