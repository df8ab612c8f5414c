//===- KilnSharding.cpp - each op's sharding rule --------------------------===//
//
// ShardingRuleOpInterface for every kiln op: which dimensions of operands
// and results are the same factor (split the same way on every rank), which
// factors are summed away (their results become partial sums), and which
// dimensions must stay whole (-1: a softmax's row, a norm's features, a
// position index). docs/sharding.md explains how propagation uses them.
//
//===----------------------------------------------------------------------===//

#include "ir/KilnOps.h"

using namespace mlir;
using namespace kiln;

namespace {

ArrayRef<int64_t> shapeOf(Value v) { return cast<RankedTensorType>(v.getType()).getShape(); }

/// Builds a rule factor by factor.
struct RuleBuilder {
  ShardingRule rule;
  int64_t factor(int64_t size) {
    rule.factorSizes.push_back(size);
    return static_cast<int64_t>(rule.factorSizes.size()) - 1;
  }
  /// One new factor per dimension of `v`.
  SmallVector<int64_t> freshFactors(Value v) {
    SmallVector<int64_t> f;
    for (int64_t size : shapeOf(v))
      f.push_back(factor(size));
    return f;
  }
};

/// `factors` with the trailing `n` dimensions made whole.
SmallVector<int64_t> wholeTrailing(SmallVector<int64_t> factors, unsigned n) {
  for (unsigned i = 0; i < n && i < factors.size(); ++i)
    factors[factors.size() - 1 - i] = -1;
  return factors;
}

/// Every operand and result of the first result's rank shares one factor per
/// dimension; rank-0 operands (a learning rate) have none. The trailing
/// `whole` dimensions stay whole (a row-wise op).
ShardingRule sameDims(Operation *op, unsigned whole = 0) {
  RuleBuilder b;
  SmallVector<int64_t> f = wholeTrailing(b.freshFactors(op->getResult(0)), whole);
  auto factorsOf = [&](Value v) {
    return shapeOf(v).empty() ? SmallVector<int64_t>() : f;
  };
  for (Value v : op->getOperands())
    b.rule.operandFactors.push_back(factorsOf(v));
  for (Value v : op->getResults())
    b.rule.resultFactors.push_back(factorsOf(v));
  return b.rule;
}

/// Every dimension of every operand and result whole: an op that needs all
/// of its data on each rank.
ShardingRule allWhole(Operation *op) {
  ShardingRule rule;
  for (Value v : op->getOperands())
    rule.operandFactors.emplace_back(shapeOf(v).size(), -1);
  for (Value v : op->getResults())
    rule.resultFactors.emplace_back(shapeOf(v).size(), -1);
  return rule;
}

/// One operand, one result of its rank: dimension d passes through (one
/// shared factor) where `passes(d)`, else stays whole (a sliced or padded
/// dimension).
ShardingRule passThroughWhere(Operation *op, llvm::function_ref<bool(size_t)> passes) {
  RuleBuilder b;
  SmallVector<int64_t> f;
  for (auto [d, size] : llvm::enumerate(shapeOf(op->getOperand(0))))
    f.push_back(passes(d) ? b.factor(size) : -1);
  b.rule.operandFactors.push_back(f);
  b.rule.resultFactors.push_back(f);
  return b.rule;
}

/// A row-wise composite's factors: `x` with its last dimension (the row:
/// features, vocabulary) whole, and the row factors alone (statistics,
/// targets, per-row losses).
struct RowFactors {
  SmallVector<int64_t> x, rows;
};
RowFactors rowFactors(RuleBuilder &b, Value x) {
  SmallVector<int64_t> f = wholeTrailing(b.freshFactors(x), 1);
  return {f, SmallVector<int64_t>(f.begin(), f.end() - 1)};
}

/// A reduction over `dims`: the kept dimensions are shared with the result,
/// the reduced ones are factors of the operand only (summed away), or whole
/// when the reduction is not a sum.
ShardingRule reduction(Operation *op, ArrayRef<int64_t> dims, bool isSum) {
  RuleBuilder b;
  SmallVector<int64_t> in, out;
  for (auto [d, size] : llvm::enumerate(shapeOf(op->getOperand(0)))) {
    bool reduced = llvm::is_contained(dims, static_cast<int64_t>(d));
    int64_t f = reduced && !isSum ? -1 : b.factor(size);
    in.push_back(f);
    if (!reduced)
      out.push_back(f);
  }
  b.rule.operandFactors.push_back(in);
  b.rule.resultFactors.push_back(out);
  return b.rule;
}

} // namespace

namespace kiln {

SmallVector<int64_t> ShardingRule::reducedFactors(unsigned result) const {
  SmallVector<int64_t> reduced;
  for (const auto &operand : operandFactors)
    for (int64_t f : operand)
      if (f >= 0 && !llvm::is_contained(resultFactors[result], f) && !llvm::is_contained(reduced, f))
        reduced.push_back(f);
  return reduced;
}

} // namespace kiln

// Elementwise ops: one factor per dimension, shared by all.
#define KILN_SAME_DIMS_RULE(Op)                                                                    \
  FailureOr<ShardingRule> Op::getShardingRule() { return sameDims(getOperation()); }
#define KILN_UNARY(Op, fn) KILN_SAME_DIMS_RULE(Op)
#define KILN_BINARY(Op, fn) KILN_SAME_DIMS_RULE(Op)
#include "ir/ElementwiseOps.def"
KILN_SAME_DIMS_RULE(GeluOp)
KILN_SAME_DIMS_RULE(CastOp)
KILN_SAME_DIMS_RULE(CompareOp)
KILN_SAME_DIMS_RULE(SelectOp)
KILN_SAME_DIMS_RULE(GeluGradOp)
// The optimizer is elementwise over parameter, gradient and moments; its
// scalars (lr, step, grad_scale, skip) are rank 0.
KILN_SAME_DIMS_RULE(AdamWUpdateOp)
#undef KILN_SAME_DIMS_RULE

// Row-wise ops: the last dimension (the row) stays whole.
FailureOr<ShardingRule> SoftmaxOp::getShardingRule() { return sameDims(getOperation(), 1); }
FailureOr<ShardingRule> LogSoftmaxOp::getShardingRule() { return sameDims(getOperation(), 1); }
FailureOr<ShardingRule> SoftmaxGradOp::getShardingRule() { return sameDims(getOperation(), 1); }
// Rotary embedding: the positions (T) and the rotated pairs (D) stay
// whole; any other dimension (batch, heads) may split.
FailureOr<ShardingRule> RopeOp::getShardingRule() {
  RuleBuilder b;
  SmallVector<int64_t> f = b.freshFactors(getResult());
  f[positionDim()] = -1;
  f.back() = -1;
  b.rule.operandFactors = {f};
  b.rule.resultFactors = {f};
  return b.rule;
}

FailureOr<ShardingRule> ReduceSumOp::getShardingRule() {
  return reduction(getOperation(), getDims(), /*isSum=*/true);
}
FailureOr<ShardingRule> ReduceMeanOp::getShardingRule() {
  ShardingRule rule = reduction(getOperation(), getDims(), /*isSum=*/true);
  rule.meanReduction = true;
  return rule;
}
// A max over split dimensions is not a sum of per-rank maxima.
FailureOr<ShardingRule> ReduceMaxOp::getShardingRule() {
  return reduction(getOperation(), getDims(), /*isSum=*/false);
}

FailureOr<ShardingRule> TransposeOp::getShardingRule() {
  RuleBuilder b;
  SmallVector<int64_t> in = b.freshFactors(getOperand()), out;
  for (int64_t p : getPermutation())
    out.push_back(in[p]);
  b.rule.operandFactors.push_back(in);
  b.rule.resultFactors.push_back(out);
  return b.rule;
}

// Dimensions sliced or padded stay whole; the others pass through.
FailureOr<ShardingRule> SliceOp::getShardingRule() {
  ArrayRef<int64_t> shape = shapeOf(getOperand());
  return passThroughWhere(getOperation(), [&](size_t d) {
    return getStartIndices()[d] == 0 && getLimitIndices()[d] == shape[d] && getStrides()[d] == 1;
  });
}

FailureOr<ShardingRule> PadOp::getShardingRule() {
  return passThroughWhere(getOperation(), [&](size_t d) {
    return getLow()[d] == 0 && getHigh()[d] == 0 && getInterior()[d] == 0;
  });
}

FailureOr<ShardingRule> ConcatOp::getShardingRule() {
  RuleBuilder b;
  SmallVector<int64_t> f = b.freshFactors(getResult());
  f[getDim()] = -1;
  for (size_t i = 0; i < getInputs().size(); ++i)
    b.rule.operandFactors.push_back(f);
  b.rule.resultFactors.push_back(f);
  return b.rule;
}

// An operand dimension of size 1 broadcast to more stays whole; the
// result's new dimensions are factors of the result only (free to split:
// each rank broadcasts into its own part).
FailureOr<ShardingRule> BroadcastInDimOp::getShardingRule() {
  RuleBuilder b;
  ArrayRef<int64_t> in = shapeOf(getOperand()), out = shapeOf(getResult());
  SmallVector<int64_t> inF(in.size(), -1), outF(out.size(), -1);
  for (auto [i, d] : llvm::enumerate(getDims()))
    if (in[i] == out[d])
      inF[i] = outF[d] = b.factor(out[d]);
  for (auto [d, f] : llvm::enumerate(outF))
    if (f < 0 && !llvm::is_contained(getDims(), static_cast<int64_t>(d)))
      f = b.factor(out[d]);
  b.rule.operandFactors.push_back(inF);
  b.rule.resultFactors.push_back(outF);
  return b.rule;
}

// A reshape groups dimensions that merge or split ([B, T, C] -> [B·T, C],
// [B, T, C] -> [B, T, H, D]); the major dimensions of a group share a
// factor the size of the smaller one (splitting B·T over dp splits B), the
// minor ones stay whole.
FailureOr<ShardingRule> ReshapeOp::getShardingRule() {
  RuleBuilder b;
  ArrayRef<int64_t> in = shapeOf(getOperand()), out = shapeOf(getResult());
  SmallVector<int64_t> inF(in.size(), -1), outF(out.size(), -1);
  size_t i = 0, o = 0;
  while (i < in.size() && o < out.size()) {
    // Size-1 dimensions form no group.
    if (in[i] == 1) {
      ++i;
      continue;
    }
    if (out[o] == 1) {
      ++o;
      continue;
    }
    size_t i0 = i, o0 = o;
    int64_t a = in[i++], c = out[o++];
    while (a != c) {
      if (a < c && i < in.size())
        a *= in[i++];
      else if (c < a && o < out.size())
        c *= out[o++];
      else
        break;
    }
    if (a != c)
      break; // no clean grouping: the rest stays whole
    inF[i0] = outF[o0] = b.factor(std::min(in[i0], out[o0]));
    // A major dimension shared only when the smaller divides the larger.
    if (std::max(in[i0], out[o0]) % std::min(in[i0], out[o0]) != 0)
      inF[i0] = outF[o0] = -1;
  }
  b.rule.operandFactors.push_back(inF);
  b.rule.resultFactors.push_back(outF);
  return b.rule;
}

// The iota dimension counts positions: whole. The others are free.
FailureOr<ShardingRule> IotaOp::getShardingRule() {
  RuleBuilder b;
  SmallVector<int64_t> f = b.freshFactors(getResult());
  f[getDim()] = -1;
  b.rule.resultFactors.push_back(f);
  return b.rule;
}

// A splat splits anywhere (each rank makes its part); other constants
// stay whole.
FailureOr<ShardingRule> ConstantOp::getShardingRule() {
  auto dense = dyn_cast<DenseElementsAttr>(getValue());
  if (dense && dense.isSplat()) {
    RuleBuilder b;
    b.rule.resultFactors.push_back(b.freshFactors(getResult()));
    return b.rule;
  }
  return allWhole(getOperation());
}

// [batch…, M, K] x [batch…, K, N] -> [batch…, M, N], K summed; a plain
// matrix operand has no batch dimensions.
FailureOr<ShardingRule> MatmulOp::getShardingRule() {
  RuleBuilder b;
  ArrayRef<int64_t> out = shapeOf(getResult());
  size_t batch = out.size() - 2;
  SmallVector<int64_t> outF = b.freshFactors(getResult());
  int64_t m = outF[batch], n = outF[batch + 1];
  size_t lhsRank = shapeOf(getLhs()).size();
  int64_t k = b.factor(shapeOf(getLhs())[getTransposeA() ? lhsRank - 2 : lhsRank - 1]);
  auto operandFactors = [&](Value v, int64_t rows, int64_t cols, bool transposed) {
    size_t rank = shapeOf(v).size();
    SmallVector<int64_t> f;
    for (size_t d = 0; d + 2 < rank; ++d)
      f.push_back(outF[d]);
    f.push_back(transposed ? cols : rows);
    f.push_back(transposed ? rows : cols);
    return f;
  };
  b.rule.operandFactors.push_back(operandFactors(getLhs(), m, k, getTransposeA()));
  b.rule.operandFactors.push_back(operandFactors(getRhs(), k, n, getTransposeB()));
  if (getBias())
    b.rule.operandFactors.push_back({n});
  b.rule.resultFactors.push_back(outF);
  return b.rule;
}

// table [g…, V, C], ids [g…, i…] -> [g…, i…, C]; the batch dimensions g…
// are shared by all three. A row-split table (vocabulary parallel) is
// planned, so V stays whole.
FailureOr<ShardingRule> EmbeddingOp::getShardingRule() {
  RuleBuilder b;
  SmallVector<int64_t> outF = b.freshFactors(getResult());
  SmallVector<int64_t> ids(outF.begin(), outF.end() - 1);
  size_t batch = shapeOf(getTable()).size() - 2;
  SmallVector<int64_t> table(outF.begin(), outF.begin() + batch);
  table.append({-1, outF.back()});
  b.rule.operandFactors.push_back(table);
  b.rule.operandFactors.push_back(ids);
  b.rule.resultFactors.push_back(outF);
  return b.rule;
}

// The slots count over a group's tokens, so only the group dimensions may
// be split (shared by the scores and the three results): a rank holding
// part of a group's tokens would fill its experts differently.
FailureOr<ShardingRule> MoeRouteOp::getShardingRule() {
  RuleBuilder b;
  SmallVector<int64_t> groups;
  for (int64_t size : probsShape().drop_back(2))
    groups.push_back(b.factor(size));
  auto with = [&](std::initializer_list<int64_t> tail) {
    SmallVector<int64_t> f = groups;
    f.append(tail);
    return f;
  };
  b.rule.operandFactors.push_back(with({-1, -1}));
  b.rule.resultFactors = {with({-1, -1}), with({-1, -1}), with({-1})};
  return b.rule;
}

// ids [g…, i…], dy [g…, i…, C] -> [g…, V, C]: the ids' dimensions past the
// batch g… are summed away.
FailureOr<ShardingRule> EmbeddingGradOp::getShardingRule() {
  RuleBuilder b;
  SmallVector<int64_t> dy = b.freshFactors(getDy());
  size_t batch = shapeOf(getDtable()).size() - 2;
  b.rule.operandFactors.push_back(SmallVector<int64_t>(dy.begin(), dy.end() - 1));
  b.rule.operandFactors.push_back(dy);
  SmallVector<int64_t> table(dy.begin(), dy.begin() + batch);
  table.append({-1, dy.back()});
  b.rule.resultFactors.push_back(table);
  return b.rule;
}

// x [i…, C] normalized over C (whole); weight and bias [C]; statistics [i…].
FailureOr<ShardingRule> LayerNormOp::getShardingRule() {
  RuleBuilder b;
  auto [x, rows] = rowFactors(b, getX());
  b.rule.operandFactors = {x, {-1}, {-1}};
  b.rule.resultFactors = {x, rows, rows};
  return b.rule;
}

FailureOr<ShardingRule> RmsNormOp::getShardingRule() {
  RuleBuilder b;
  auto [x, rows] = rowFactors(b, getX());
  b.rule.operandFactors = {x, {-1}};
  b.rule.resultFactors = {x, rows};
  return b.rule;
}

// dweight and dbias sum over the rows: the row factors are reductions.
FailureOr<ShardingRule> LayerNormGradOp::getShardingRule() {
  RuleBuilder b;
  auto [x, rows] = rowFactors(b, getX());
  b.rule.operandFactors = {x, {-1}, rows, rows, x};
  b.rule.resultFactors = {x, {-1}, {-1}};
  return b.rule;
}

FailureOr<ShardingRule> RmsNormGradOp::getShardingRule() {
  RuleBuilder b;
  auto [x, rows] = rowFactors(b, getX());
  b.rule.operandFactors = {x, {-1}, rows, x};
  b.rule.resultFactors = {x, {-1}};
  return b.rule;
}

// logits [i…, V] (V whole: a vocabulary-parallel loss is planned),
// targets, loss and lse [i…].
FailureOr<ShardingRule> CrossEntropyOp::getShardingRule() {
  RuleBuilder b;
  auto [logits, rows] = rowFactors(b, getLogits());
  b.rule.operandFactors = {logits, rows};
  b.rule.resultFactors = {rows, rows};
  return b.rule;
}

FailureOr<ShardingRule> CrossEntropyGradOp::getShardingRule() {
  RuleBuilder b;
  auto [logits, rows] = rowFactors(b, getLogits());
  b.rule.operandFactors = {logits, rows, rows, rows};
  b.rule.resultFactors = {logits};
  return b.rule;
}

namespace {
/// q [B, H, Tq, D], k and v [B, Hkv, Tk, D] (or [B, T, H, D] with layout
/// bthd, or packed in one qkv [B, T, H, 3, D]; lse is [B, H, Tq] in all):
/// batch and heads split, positions and features whole (sequence-parallel
/// attention is planned).
struct AttentionFactors {
  SmallVector<int64_t> q, kv, lse, segments, qkv;
};
AttentionFactors attentionFactors(RuleBuilder &b, const AttentionDims &dims) {
  int64_t batch = b.factor(dims.b);
  // Grouped heads (q's H a multiple of k's Hk, query head h reading
  // key/value head h / (H / Hk)): one factor the size of Hk, so a split
  // over n ranks (n dividing Hk) gives rank r query heads [r·H/n, (r+1)·H/n)
  // and exactly the key/value heads they read.
  int64_t heads = dims.h % dims.hkv == 0 ? b.factor(dims.hkv) : -1;
  SmallVector<int64_t> tensor = dims.sequenceMajor ? SmallVector<int64_t>{batch, -1, heads, -1}
                                                   : SmallVector<int64_t>{batch, heads, -1, -1};
  return {tensor, tensor, {batch, heads, -1}, {batch, -1}, {batch, -1, heads, -1, -1}};
}
} // namespace

FailureOr<ShardingRule> AttentionOp::getShardingRule() {
  RuleBuilder b;
  AttentionFactors f = attentionFactors(b, attentionDims(*this));
  b.rule.operandFactors = {f.q, f.kv, f.kv};
  if (getSegments())
    b.rule.operandFactors.push_back(f.segments);
  b.rule.resultFactors = {f.q, f.lse};
  return b.rule;
}

FailureOr<ShardingRule> AttentionGradOp::getShardingRule() {
  RuleBuilder b;
  AttentionFactors f = attentionFactors(b, attentionDims(*this));
  b.rule.operandFactors = {f.q, f.kv, f.kv, f.q, f.lse, f.q};
  if (getSegments())
    b.rule.operandFactors.push_back(f.segments);
  b.rule.resultFactors = {f.q, f.kv, f.kv};
  return b.rule;
}

// Packed q, k, v [B, T, H, 3, D]: batch and heads split, like
// kiln.attention's bthd operands (the q|k|v axis and D whole).
FailureOr<ShardingRule> AttentionQkvOp::getShardingRule() {
  RuleBuilder b;
  AttentionFactors f = attentionFactors(b, attentionDims(getQkv()));
  b.rule.operandFactors = {f.qkv};
  if (getSegments())
    b.rule.operandFactors.push_back(f.segments);
  b.rule.resultFactors = {f.q, f.lse};
  return b.rule;
}

FailureOr<ShardingRule> AttentionQkvGradOp::getShardingRule() {
  RuleBuilder b;
  AttentionFactors f = attentionFactors(b, attentionDims(getQkv()));
  b.rule.operandFactors = {f.qkv, f.q, f.lse, f.q};
  if (getSegments())
    b.rule.operandFactors.push_back(f.segments);
  b.rule.resultFactors = {f.qkv};
  return b.rule;
}

// The norm of everything: every input whole (a ZeRO-sharded norm as a
// partial sum of squares is planned).
FailureOr<ShardingRule> GlobalNormOp::getShardingRule() { return allWhole(getOperation()); }

// Fusion regions are formed after partitioning; they carry no rule.
FailureOr<ShardingRule> FusionOp::getShardingRule() { return failure(); }
FailureOr<ShardingRule> YieldOp::getShardingRule() { return failure(); }
// Collectives are what partitioning inserts; partitioned IR is per-rank and
// is not partitioned again.
FailureOr<ShardingRule> AllReduceOp::getShardingRule() { return failure(); }
FailureOr<ShardingRule> SendOp::getShardingRule() { return failure(); }
FailureOr<ShardingRule> RecvOp::getShardingRule() { return failure(); }
FailureOr<ShardingRule> AllGatherOp::getShardingRule() { return failure(); }
FailureOr<ShardingRule> ReduceScatterOp::getShardingRule() { return failure(); }
FailureOr<ShardingRule> AllToAllOp::getShardingRule() { return failure(); }
FailureOr<ShardingRule> TakeShardOp::getShardingRule() { return failure(); }
