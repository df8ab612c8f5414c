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
