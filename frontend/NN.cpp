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
         ParamInit projInit, Expert kind)
    : experts(experts), topK(topK), capacity(capacity), hidden(hidden), gating(gating.str()),
      kind(kind) {
  auto s = g.scope(name);
  router = g.param("router.w", {dim, experts}, init);
  if (kind == Expert::SwiGLU) {
    gateWeight = g.param("experts.gate.w", {experts, dim, hidden}, init);
    upWeight = g.param("experts.up.w", {experts, dim, hidden}, init);
    downWeight = g.param("experts.down.w", {experts, hidden, dim}, projInit);
    return;
  }
  fcWeight = g.param("experts.fc.w", {experts, dim, hidden}, init);
  fcBias = g.param("experts.fc.b", {experts, hidden}, ParamInit::zeros(), "bias");
  projWeight = g.param("experts.proj.w", {experts, hidden, dim}, projInit);
  projBias = g.param("experts.proj.b", {experts, dim}, ParamInit::zeros(), "bias");
}

Tensor MoE::runExperts(Tensor xe) const {
  const int64_t E = experts, C = xe.dim(2), H = hidden;
  if (kind == Expert::SwiGLU) {
    // Sequenced: operands of `*` are built in an unspecified order.
    Tensor u = matmul(xe, upWeight);
    Tensor gated = silu(matmul(xe, gateWeight));
    return matmul(gated * u, downWeight);
  }
  Tensor h = gelu(matmul(xe, fcWeight) + broadcastInDim(fcBias, {E, capacity, H}, {0, 2}),
                  GeluApproximation::tanh);
  return matmul(h, projWeight) + broadcastInDim(projBias, {E, capacity, C}, {0, 2});
}

MoE::Output MoE::operator()(Tensor x) const {
  Graph &g = x.graph();
  const int64_t C = x.dim(-1), N = x.type().getNumElements() / C, E = experts, K = topK;
  mlir::Type type = x.elementType();
  // The router decides in f32 (f64 in gradient checks): a low-precision
  // score would tie, and move the choice, more often.
  mlir::Type scoreType = type.isF64() ? type : g.f32();
  Tensor flat = reshape(x, {N, C});
  Tensor logits = cast(matmul(flat, router), scoreType); // [N, E]
  Tensor scores = gating == "sigmoid" ? sigmoid(logits) : softmax(logits);
  MoeRoute route = moeRoute(scores, K, capacity);

  // Each choice's score: scores[n, expert[n, j]], through a one-hot mask.
  Tensor chosen = compare(CompareDirection::eq, broadcastInDim(route.expert, {N, K, E}, {0, 1}),
                          iota(g, {N, K, E}, 2, g.i32())); // [N, K, E]
  Tensor gates = sum(where(chosen, broadcastInDim(scores, {N, K, E}, {0, 2}), 0.0), {2});
  // Sigmoid scores may all underflow to 0: the floor keeps 0/0 out.
  auto floored = [&](Tensor total) { return maximum(total, full(g, total.shape(), 1e-30, scoreType)); };
  if (K > 1)
    gates = gates / broadcastInDim(floored(sum(gates, {1})), {N, K}, {0});

  // Dispatch: slot s of expert e holds token[e·capacity + s]; an empty
  // slot reads the zero row appended after the last token.
  Tensor tokens = concat({flat, full(g, {1, C}, 0, type)}, 0);               // [N + 1, C]
  Tensor xe = reshape(embedding(tokens, route.token), {E, capacity, C});      // [E, cap, C]
  Tensor ye = runExperts(xe); // [E, cap, C]
  // Combine: choice j of token n reads its slot's row; a dropped choice
  // (slot E·capacity) reads the zero row appended after the last slot.
  Tensor rows = concat({reshape(ye, {E * capacity, C}), full(g, {1, C}, 0, type)}, 0);
  Tensor picked = embedding(rows, route.slot);                                // [N, K, C]
  Tensor weighted = picked * broadcastInDim(cast(gates, type), {N, K, C}, {0, 1});
  Tensor y = K == 1 ? reshape(weighted, {N, C}) : sum(weighted, {1});

  // Switch Transformer's auxiliary loss (Fedus et al. 2021, eq. 4–6) over
  // the first choices; f_e carries no gradient (it counts), P_e does.
  Tensor first = cast(reshape(slice(chosen, 1, 0, 1), {N, E}), scoreType);
  Tensor share = mean(first, {0});                                            // f_e [E]
  Tensor probs = gating == "sigmoid"
                     ? scores / broadcastInDim(floored(sum(scores, {1})), {N, E}, {0})
                     : scores;
  Tensor balance = sum(share * mean(probs, {0}), {0}) * static_cast<double>(E);
  Tensor dropSlot = full(g, {N, K}, static_cast<double>(E * capacity), g.i32());
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
