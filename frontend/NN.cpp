//===- NN.cpp - neural-network building blocks over the Graph API ----------===//

#include "frontend/NN.h"

#include <cmath>
#include <limits>

namespace kiln::frontend::nn {

Linear::Linear(Graph &g, llvm::StringRef name, int64_t in, int64_t out, bool hasBias,
               ParamInit init) {
  auto s = g.scope(name);
  weight = g.param("w", {in, out}, init);
  if (hasBias)
    bias = g.param("b", {out}, ParamInit::zeros(), "bias");
}

Tensor Linear::operator()(Tensor x) const {
  Tensor y = matmul(x, weight);
  return bias ? y + bias : y;
}

void Linear::columnParallel(Graph &g, llvm::StringRef axis) const {
  g.shard(weight, {"", axis});
  if (bias)
    g.shard(bias, {axis});
}

void Linear::rowParallel(Graph &g, llvm::StringRef axis) const { g.shard(weight, {axis, ""}); }

LayerNorm::LayerNorm(Graph &g, llvm::StringRef name, int64_t dim, double eps) : eps(eps) {
  auto s = g.scope(name);
  weight = g.param("w", {dim}, ParamInit::ones(), "norm");
  bias = g.param("b", {dim}, ParamInit::zeros(), "norm");
}

Tensor LayerNorm::operator()(Tensor x) const { return layerNorm(x, weight, bias, eps); }

RMSNorm::RMSNorm(Graph &g, llvm::StringRef name, int64_t dim, double eps) : eps(eps) {
  auto s = g.scope(name);
  weight = g.param("w", {dim}, ParamInit::ones(), "norm");
}

Tensor RMSNorm::operator()(Tensor x) const { return rmsNorm(x, weight, eps); }

Embedding::Embedding(Graph &g, llvm::StringRef name, int64_t count, int64_t dim,
                     ParamInit init) {
  weight = g.param(name, {count, dim}, init, "embedding");
}

Tensor Embedding::operator()(Tensor ids) const { return embedding(weight, ids); }

MLP::MLP(Graph &g, llvm::StringRef name, int64_t dim, int64_t hidden, ParamInit fcInit,
         ParamInit projInit)
    : fc(g, name.str() + ".fc", dim, hidden, true, fcInit),
      proj(g, name.str() + ".proj", hidden, dim, true, projInit) {
  // Tensor parallelism over tp: the hidden layer split, one all-reduce of
  // the projection's partial sums forward (and one backward).
  fc.columnParallel(g, "tp");
  proj.rowParallel(g, "tp");
}

Tensor MLP::operator()(Tensor x) const { return proj(gelu(fc(x), GeluApproximation::tanh)); }

MoE::MoE(Graph &g, llvm::StringRef name, int64_t dim, int64_t hidden, int64_t experts,
         int64_t topK, int64_t capacity, llvm::StringRef gating, ParamInit init,
         ParamInit projInit, Expert kind, int64_t groups, llvm::StringRef expertAxis)
    : experts(experts), topK(topK), capacity(capacity), hidden(hidden), groups(groups),
      gating(gating.str()), kind(kind) {
  auto s = g.scope(name);
  router = g.param("router.w", {dim, experts}, init);
  // Expert parallelism: each rank holds its share of the experts
  // (dimension 0). Tensor parallelism splits each expert as the dense MLP
  // is split: its hidden dimension over tp (Megatron's column-parallel
  // first matmul, row-parallel second; `hiddenDim` is where the hidden
  // dimension is, -1 for none).
  auto split = [&](const Tensor &t, int hiddenDim) {
    std::vector<llvm::StringRef> axes(static_cast<size_t>(t.type().getRank()), "");
    axes[0] = expertAxis;
    if (hiddenDim >= 0)
      axes[static_cast<size_t>(hiddenDim)] = "tp";
    g.shard(t, axes);
  };
  if (kind == Expert::SwiGLU) {
    gateWeight = g.param("experts.gate.w", {experts, dim, hidden}, init);
    upWeight = g.param("experts.up.w", {experts, dim, hidden}, init);
    downWeight = g.param("experts.down.w", {experts, hidden, dim}, projInit);
    split(gateWeight, 2);
    split(upWeight, 2);
    split(downWeight, 1);
    return;
  }
  fcWeight = g.param("experts.fc.w", {experts, dim, hidden}, init);
  fcBias = g.param("experts.fc.b", {experts, hidden}, ParamInit::zeros(), "bias");
  projWeight = g.param("experts.proj.w", {experts, hidden, dim}, projInit);
  projBias = g.param("experts.proj.b", {experts, dim}, ParamInit::zeros(), "bias");
  split(fcWeight, 2);
  split(fcBias, 1);
  split(projWeight, 1);
  split(projBias, -1);
}

Tensor MoE::runExperts(Tensor xe) const {
  const int64_t E = experts, S = xe.dim(1), C = xe.dim(2), H = hidden;
  if (kind == Expert::SwiGLU) {
    // Sequenced: operands of `*` are built in an unspecified order.
    Tensor u = matmul(xe, upWeight);
    Tensor gated = silu(matmul(xe, gateWeight));
    return matmul(gated * u, downWeight);
  }
  Tensor h = gelu(matmul(xe, fcWeight) + broadcastInDim(fcBias, {E, S, H}, {0, 2}),
                  GeluApproximation::tanh);
  return matmul(h, projWeight) + broadcastInDim(projBias, {E, S, C}, {0, 2});
}

MoE::Output MoE::operator()(Tensor x) const {
  Graph &g = x.graph();
  const int64_t C = x.dim(-1), N = x.type().getNumElements() / C, E = experts, K = topK,
                G = groups, n = N / G, cap = capacity;
  mlir::Type type = x.elementType();
  // The router decides in f32 (f64 in gradient checks): a low-precision
  // score would tie, and move the choice, more often.
  mlir::Type scoreType = type.isF64() ? type : g.f32();
  // Groups of consecutive tokens, each routed on its own: a split of the
  // batch splits the groups, and each rank routes its own.
  Tensor flat = reshape(x, {G, n, C});
  Tensor logits = cast(matmul(flat, router), scoreType); // [G, n, E]
  Tensor scores = gating == "sigmoid" ? sigmoid(logits) : softmax(logits);
  MoeRoute route = moeRoute(scores, K, cap);

  // Each choice's score: scores[g, i, expert[g, i, j]], through a one-hot mask.
  Tensor chosen =
      compare(CompareDirection::eq, broadcastInDim(route.expert, {G, n, K, E}, {0, 1, 2}),
              iota(g, {G, n, K, E}, 3, g.i32())); // [G, n, K, E]
  Tensor gates =
      sum(where(chosen, broadcastInDim(scores, {G, n, K, E}, {0, 1, 3}), 0.0), {3});
  // Sigmoid scores may all underflow to 0: the floor keeps 0/0 out.
  auto floored = [&](Tensor total) { return maximum(total, full(g, total.shape(), 1e-30, scoreType)); };
  if (K > 1)
    gates = gates / broadcastInDim(floored(sum(gates, {2})), {G, n, K}, {0, 1});

  // Dispatch: slot s of expert e holds token[g, e·cap + s] of its group; an
  // empty slot reads the zero row appended after the group's last token.
  Tensor tokens = concat({flat, full(g, {G, 1, C}, 0, type)}, 1); // [G, n + 1, C]
  Tensor dispatched = embedding(tokens, route.token);              // [G, E·cap, C]
  // The experts see every group's slots: [E, G·cap, C]. Under expert
  // parallelism this is where the tokens travel to their experts' ranks
  // (and back below): the partitioner's all_to_all.
  Tensor xe = G == 1 ? reshape(dispatched, {E, cap, C})
                     : reshape(transpose(reshape(dispatched, {G, E, cap, C}), {1, 0, 2, 3}),
                               {E, G * cap, C});
  Tensor ye = runExperts(xe);
  Tensor back = G == 1 ? reshape(ye, {G, E * cap, C})
                       : reshape(transpose(reshape(ye, {E, G, cap, C}), {1, 0, 2, 3}),
                                 {G, E * cap, C});
  // Combine: choice j of token i reads its slot's row; a dropped choice
  // (slot E·cap) reads the zero row appended after the group's last slot.
  Tensor rows = concat({back, full(g, {G, 1, C}, 0, type)}, 1);                // [G, E·cap + 1, C]
  Tensor picked = embedding(rows, route.slot);                                  // [G, n, K, C]
  Tensor weighted = picked * broadcastInDim(cast(gates, type), {G, n, K, C}, {0, 1, 2});
  Tensor y = K == 1 ? reshape(weighted, {G, n, C}) : sum(weighted, {2});

  // Switch Transformer's auxiliary loss (Fedus et al. 2021, eq. 4–6) over
  // the first choices of every token; f_e carries no gradient (it counts),
  // P_e does.
  Tensor first = cast(reshape(slice(chosen, 2, 0, 1), {G, n, E}), scoreType);
  Tensor share = mean(first, {0, 1});                                         // f_e [E]
  Tensor probs = gating == "sigmoid"
                     ? scores / broadcastInDim(floored(sum(scores, {2})), {G, n, E}, {0, 1})
                     : scores;
  Tensor balance = sum(share * mean(probs, {0, 1}), {0}) * static_cast<double>(E);
  Tensor dropSlot = full(g, {G, n, K}, static_cast<double>(E * cap), g.i32());
  Tensor dropped = mean(cast(compare(CompareDirection::eq, route.slot, dropSlot), scoreType));
  return {reshape(y, x.shape()), balance, dropped};
}

Tensor causalMask(Graph &g, int64_t t) {
  Tensor row = iota(g, {t, t}, 0, g.i32());
  Tensor col = iota(g, {t, t}, 1, g.i32());
  return compare(CompareDirection::ge, row, col);
}

Tensor sameSegmentMask(Tensor segments) {
  int64_t b = segments.dim(0), t = segments.dim(1);
  Tensor query = broadcastInDim(segments, {b, t, t}, {0, 1}); // seg[b, i]
  Tensor key = broadcastInDim(segments, {b, t, t}, {0, 2});   // seg[b, j]
  return reshape(compare(CompareDirection::eq, query, key), {b, 1, t, t});
}

Tensor maskScores(Tensor scores, Tensor segments) {
  Graph &g = scores.graph();
  const double dropped = -std::numeric_limits<double>::infinity();
  scores = where(causalMask(g, scores.dim(2)), scores, dropped);
  if (segments)
    scores = where(sameSegmentMask(segments), scores, dropped);
  return scores;
}

CausalSelfAttention::CausalSelfAttention(Graph &g, llvm::StringRef name, int64_t dim,
                                         int64_t heads, ParamInit qkvInit, ParamInit projInit)
    : qkv(g, name.str() + ".qkv", dim, 3 * dim, true, qkvInit),
      proj(g, name.str() + ".proj", dim, dim, true, projInit), heads(heads) {
  // Tensor parallelism over tp: heads split. The packed projection's
  // columns are head-major (head h's q, k, v side by side), so a split of
  // its 3C columns over tp is a split over heads.
  qkv.columnParallel(g, "tp");
  proj.rowParallel(g, "tp");
}

Tensor CausalSelfAttention::operator()(Tensor x, Tensor segments) const {
  int64_t b = x.dim(0), t = x.dim(1), c = x.dim(2), d = c / heads;
  // [B, T, 3C] with columns (head, q|k|v, D): see qkvHeadMajor.
  Tensor packed = reshape(qkv(x), {b, t, heads, 3, d});
  auto split = [&](int64_t i) {
    Tensor part = reshape(slice(packed, 3, i, i + 1), {b, t, heads, d});
    return transpose(part, {0, 2, 1, 3}); // [B, H, T, D]
  };
  Tensor q = split(0), k = split(1), v = split(2);
  // The 1/√D scale goes on q ([B,H,T,D]) rather than on the scores
  // ([B,H,T,T], T/D times larger): the same product, one pass over the
  // scores fewer forward and backward. For power-of-two D it is exact.
  Tensor scores = matmul(q * (1.0 / std::sqrt(static_cast<double>(d))), k, false, true);
  scores = maskScores(scores, segments);
  Tensor y = matmul(softmax(scores), v);                        // [B, H, T, D]
  y = reshape(transpose(y, {0, 2, 1, 3}), {b, t, c});
  return proj(y);
}

} // namespace kiln::frontend::nn
