//===- FuseAttention.cpp - softmax(q·kᵀ·s + mask)·v into kiln.attention ---===//
//
// Attention written with primitives becomes one kiln.attention, whose
// kernels never store the [B, H, Tq, Tk] scores and whose VJP
// (kiln.attention_grad) recomputes them from q, k and the saved
// log-sum-exp. The match, from the last op back:
//
//   1. The anchor: `kiln.matmul %p, %v` of rank 4, no transposes, where %p
//      is `kiln.softmax %s` (over the last dimension, which is the only one
//      kiln.softmax has), possibly through a kiln.cast.
//   2. The mask on %s, optional: `select(keep, x, -inf)` (or
//      `select(drop, -inf, x)`), or `add(x, M)` with M zero where kept and
//      at most -1e4 where dropped (exp underflows to exactly 0 there in
//      f32). keep/drop/M are constants, or iota/compare/select computations,
//      broadcast over the leading dimensions; they must be exactly the
//      causal pattern (key j visible from query i iff j <= i), decided for
//      every offset i - j, or every element of a constant. A second
//      `select(same, x, -inf)`, before or after the causal one (or alone),
//      may keep only the keys of the query's segment — packed documents —
//      when `same` is `seg[b, i] == seg[b, j]`: a compare eq of two
//      broadcast_in_dim of one [B, T] integer tensor, one along the query
//      axis and one along the key axis (reshaped to [B, 1, T, T] and
//      broadcast over the heads); the op then takes `segments`. Any other
//      mask is left alone — in particular a document mask is never dropped
//      into a plain causal kernel.
//   3. A scale, optional: `mul(x, c)`/`div(x, c)` with c a splat constant,
//      on the scores or on q (where the frontend puts it).
//   4. The product: `kiln.matmul %q, %k transpose_b`, or with %k a
//      `kiln.transpose [0, 1, 3, 2]`. Casts (from kiln-assign-precision)
//      may sit between any two of these steps.
//   5. Grouped heads: %k and %v may be `reshape(broadcast_in_dim(kv))` from
//      [B, Hkv, Tk, D] to [B, Hkv, G, Tk, D] to [B, Hkv·G, Tk, D] (the
//      broadcast adding the G axis, or expanding a unit axis a reshape put
//      there); the op takes kv itself, so the broadcast is never stored.
//   6. Sequence-major operands: when q, k and v (kv for grouped heads) are
//      each `kiln.transpose [0, 2, 1, 3]` of a [B, T, H, D] value — heads
//      split off a projection's output — the op takes those values with
//      layout = "bthd", and a user `kiln.transpose [0, 2, 1, 3]` of the
//      result (back to [B, T, H, D] for the output projection) reads the
//      op's output directly: none of the transposes is stored, here or,
//      through the VJP, in the backward. A `kiln.rope` (positions along
//      dimension 2) on such a transpose, q and k in Llama, counts too: the
//      rope moves before the transpose, with its positions along dimension
//      1.
//   7. Packed projections: when, in addition, the [B, T, H, D] values are
//      `reshape(slice(x))` of parts 0, 1 and 2 of the fourth dimension of
//      one [B, T, H, 3, D] value x (a q/k/v projection whose columns are
//      ordered (head, q|k|v, D), as GPT-2's attn.qkv), without grouped
//      heads or a cast between, the fused op is `kiln.attention_qkv x`: the
//      kernels read the three parts in place, and the backward writes the
//      gradient of x as one tensor (no slices, no concatenation).
//
// Every intermediate value must have exactly one user (the scores or the
// probabilities used elsewhere would have to be stored anyway); otherwise,
// or when any step does not match, the IR is left as it is.
//
//===----------------------------------------------------------------------===//

#include "ir/KilnBuilders.h"
#include "ir/KilnOps.h"
#include "passes/PassUtils.h"
#include "passes/Passes.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/PatternMatch.h"
#include "llvm/Support/Debug.h"

#include <cmath>
#include <optional>

namespace kiln {
#define GEN_PASS_DEF_FUSEATTENTIONPASS
#include "passes/Passes.h.inc"
} // namespace kiln

#define DEBUG_TYPE "kiln-fuse-attention"
#define DBGS() (llvm::dbgs() << "[" DEBUG_TYPE "] ")

using namespace mlir;

namespace kiln {
namespace {

/// Masked scores at or below this are "dropped": exp(-1e4 + anything a
/// softmax row can hold) is 0 in f32.
constexpr double kDropped = -1e4;

/// `v` without the kiln.cast ops in front of it (each with one use when
/// `singleUse`).
Value throughCasts(Value v, bool singleUse = true) {
  while (auto cast = v.getDefiningOp<CastOp>()) {
    if (singleUse && !cast->hasOneUse())
      break;
    v = cast.getOperand();
  }
  return v;
}

bool oneUse(Value v) { return v.hasOneUse(); }

/// The value of a float splat constant (through casts), if `v` is one.
std::optional<double> splatValue(Value v) {
  auto constant = throughCasts(v, /*singleUse=*/false).getDefiningOp<ConstantOp>();
  if (!constant)
    return std::nullopt;
  auto splat = dyn_cast<SplatElementsAttr>(constant.getValue());
  if (!splat || !isa<FloatType>(splat.getElementType()))
    return std::nullopt;
  return splat.getSplatValue<APFloat>().convertToDouble();
}

/// `v` of rank >= 2 without a broadcast of its last two dimensions over
/// leading ones: the [T, T] source of a mask.
Value throughMaskBroadcast(Value v) {
  v = throughCasts(v, /*singleUse=*/false);
  if (auto b = v.getDefiningOp<BroadcastInDimOp>()) {
    int64_t rank = build::typeOf(b.getResult()).getRank();
    ArrayRef<int64_t> dims = b.getDims();
    if (dims.size() == 2 && dims[0] == rank - 2 && dims[1] == rank - 1)
      return b.getOperand();
  }
  return v;
}

//===----------------------------------------------------------------------===//
// Mask analysis: is a [.., T, T] mask exactly the causal pattern?
//===----------------------------------------------------------------------===//

/// An integer value over a [T, T] grid as a·i + b·j + c (i the row, j the
/// column), if it is one: iota, splat integer constants, broadcasts, adds
/// and subtracts of those.
struct Affine {
  int64_t a = 0, b = 0, c = 0;
};

std::optional<Affine> affineOf(Value v) {
  v = throughMaskBroadcast(v);
  Operation *def = v.getDefiningOp();
  if (!def)
    return std::nullopt;
  if (auto iota = dyn_cast<IotaOp>(def)) {
    int64_t rank = build::typeOf(iota.getResult()).getRank();
    if (static_cast<int64_t>(iota.getDim()) == rank - 2)
      return Affine{1, 0, 0};
    if (static_cast<int64_t>(iota.getDim()) == rank - 1)
      return Affine{0, 1, 0};
    return std::nullopt;
  }
  if (auto constant = dyn_cast<ConstantOp>(def)) {
    auto splat = dyn_cast<SplatElementsAttr>(constant.getValue());
    if (!splat || !isa<IntegerType>(splat.getElementType()))
      return std::nullopt;
    return Affine{0, 0, splat.getSplatValue<APInt>().getSExtValue()};
  }
  if (isa<AddOp, SubOp>(def)) {
    auto x = affineOf(def->getOperand(0)), y = affineOf(def->getOperand(1));
    if (!x || !y)
      return std::nullopt;
    int64_t s = isa<SubOp>(def) ? -1 : 1;
    return Affine{x->a + s * y->a, x->b + s * y->b, x->c + s * y->c};
  }
  return std::nullopt;
}

bool compares(CompareDirection dir, int64_t x) {
  switch (dir) {
  case CompareDirection::eq: return x == 0;
  case CompareDirection::ne: return x != 0;
  case CompareDirection::lt: return x < 0;
  case CompareDirection::le: return x <= 0;
  case CompareDirection::gt: return x > 0;
  case CompareDirection::ge: return x >= 0;
  }
  return false;
}

/// Whether boolean `m` over a [T, T] grid equals `want(i, j)` for every
/// element, where `want` depends only on i - j (`causal`: j <= i) or its
/// negation (`!causal`: j > i).
bool isCausalPattern(Value m, int64_t t, bool keep);

/// For a compare of affine forms: its value at every offset d = i - j.
bool comparesCausally(CompareOp cmp, int64_t t, bool keep) {
  auto x = affineOf(cmp.getLhs()), y = affineOf(cmp.getRhs());
  if (!x || !y)
    return false;
  // (x - y) = a·i + b·j + c; causal patterns depend on i - j only.
  int64_t a = x->a - y->a, b = x->b - y->b, c = x->c - y->c;
  if (a != -b || a == 0)
    return false;
  for (int64_t d = -(t - 1); d <= t - 1; ++d)
    if (compares(cmp.getDirection(), a * d + c) != (keep ? d >= 0 : d < 0))
      return false;
  return true;
}

bool isCausalPattern(Value m, int64_t t, bool keep) {
  m = throughMaskBroadcast(m);
  if (auto cmp = m.getDefiningOp<CompareOp>())
    return comparesCausally(cmp, t, keep);
  if (auto constant = m.getDefiningOp<ConstantOp>()) {
    auto dense = dyn_cast<DenseElementsAttr>(constant.getValue());
    auto type = build::typeOf(constant.getResult());
    if (!dense || type.getRank() != 2 || !type.getElementType().isInteger(1))
      return false;
    int64_t i = 0;
    for (bool v : dense.getValues<bool>()) {
      int64_t row = i / t, col = i % t;
      if (v != (keep ? col <= row : col > row))
        return false;
      ++i;
    }
    return true;
  }
  return false;
}

/// Whether float `m` over [T, T] is 0 where causal attention keeps a key
/// and at most kDropped where it drops one.
bool isCausalAdditive(Value m, int64_t t) {
  m = throughMaskBroadcast(m);
  if (auto select = m.getDefiningOp<SelectOp>()) {
    auto x = splatValue(select.getOnTrue()), y = splatValue(select.getOnFalse());
    if (x && y && *x == 0 && *y <= kDropped)
      return isCausalPattern(select.getCond(), t, /*keep=*/true);
    if (x && y && *y == 0 && *x <= kDropped)
      return isCausalPattern(select.getCond(), t, /*keep=*/false);
    return false;
  }
  auto constant = m.getDefiningOp<ConstantOp>();
  auto dense = constant ? dyn_cast<DenseElementsAttr>(constant.getValue()) : nullptr;
  if (!dense || build::typeOf(constant.getResult()).getRank() != 2 ||
      !isa<FloatType>(dense.getElementType()))
    return false;
  int64_t i = 0;
  for (APFloat v : dense.getValues<APFloat>()) {
    int64_t row = i / t, col = i % t;
    double x = v.convertToDouble();
    if (col <= row ? x != 0 : !(x <= kDropped))
      return false;
    ++i;
  }
  return true;
}

/// `seg` ([B, T] integers) when boolean `m` over [B, .., T, T] is
/// seg[b, i] == seg[b, j] (i the query, j the key); else null.
Value sameSegmentSource(Value m, int64_t t) {
  m = throughCasts(m, /*singleUse=*/false);
  // Broadcast over the heads: [B, 1, T, T] -> [B, H, T, T], dims in order.
  if (auto b = m.getDefiningOp<BroadcastInDimOp>()) {
    int64_t rank = build::typeOf(b.getResult()).getRank();
    ArrayRef<int64_t> dims = b.getDims();
    bool inOrder = static_cast<int64_t>(dims.size()) == rank;
    for (int64_t i = 0; inOrder && i < rank; ++i)
      inOrder = dims[i] == i;
    if (!inOrder)
      return {};
    m = b.getOperand();
  }
  // [B, T, T] reshaped to [B, 1, T, T].
  if (auto r = m.getDefiningOp<ReshapeOp>()) {
    auto from = build::typeOf(r.getOperand()), to = build::typeOf(r.getResult());
    if (from.getRank() != 3 || to.getRank() != 4 || to.getDimSize(1) != 1 ||
        from.getDimSize(0) != to.getDimSize(0))
      return {};
    m = r.getOperand();
  }
  auto cmp = m.getDefiningOp<CompareOp>();
  if (!cmp || cmp.getDirection() != CompareDirection::eq)
    return {};
  auto grid = build::typeOf(cmp.getResult());
  int64_t rank = grid.getRank();
  if (rank < 3 || grid.getDimSize(rank - 1) != t || grid.getDimSize(rank - 2) != t)
    return {};
  // Each side: seg broadcast with its T along the query (rank - 2) or the
  // key (rank - 1) axis, its batch along 0.
  Value source;
  bool query = false, key = false;
  for (Value side : {cmp.getLhs(), cmp.getRhs()}) {
    auto b = side.getDefiningOp<BroadcastInDimOp>();
    if (!b)
      return {};
    auto src = build::typeOf(b.getOperand());
    ArrayRef<int64_t> dims = b.getDims();
    if (src.getRank() != 2 || src.getDimSize(1) != t || !isa<IntegerType>(src.getElementType()) ||
        dims.size() != 2 || dims[0] != 0 || src.getDimSize(0) != grid.getDimSize(0))
      return {};
    if (source && b.getOperand() != source)
      return {};
    source = b.getOperand();
    query |= dims[1] == rank - 2;
    key |= dims[1] == rank - 1;
  }
  return query && key ? source : Value();
}

//===----------------------------------------------------------------------===//
// The pattern
//===----------------------------------------------------------------------===//

/// What the match found, outside in.
struct Match {
  Value q, k, v;
  Value segments; ///< [B, T] ids: attention within each segment
  double scale = 1.0;
  bool causal = false;
  SmallVector<Operation *> chain; ///< the ops the fused op replaces (for the debug log)
};

/// `v` through a single-use `mul(x, c)` or `div(x, c)` by a splat: x, with
/// the factor folded into `scale`.
Value peelScale(Value v, double &scale) {
  Operation *def = v.getDefiningOp();
  if (!def || !oneUse(v))
    return v;
  if (auto mul = dyn_cast<MulOp>(def)) {
    if (auto c = splatValue(mul.getRhs()); c && std::isfinite(*c)) {
      scale *= *c;
      return mul.getLhs();
    }
    if (auto c = splatValue(mul.getLhs()); c && std::isfinite(*c)) {
      scale *= *c;
      return mul.getRhs();
    }
  }
  if (auto div = dyn_cast<DivOp>(def))
    if (auto c = splatValue(div.getRhs()); c && std::isfinite(*c) && *c != 0) {
      scale /= *c;
      return div.getLhs();
    }
  return v;
}

/// kv of a grouped-query broadcast [B, Hkv, T, D] -> [B, Hkv, G, T, D] ->
/// [B, H, T, D], written `reshape(broadcast_in_dim(kv) dims [0, 1, 3, 4])`
/// or, as NumPy-style broadcasting writes it (the frontend's Llama),
/// `reshape(broadcast_in_dim(reshape(kv) to [B, Hkv, 1, T, D]) dims
/// [0, 1, 2, 3, 4])`; else `x` itself.
Value throughHeadBroadcast(Value x) {
  auto reshape = x.getDefiningOp<ReshapeOp>();
  if (!reshape || !oneUse(x))
    return x;
  auto broadcast = reshape.getOperand().getDefiningOp<BroadcastInDimOp>();
  if (!broadcast || !broadcast->hasOneUse())
    return x;
  Value src = broadcast.getOperand();
  auto srcType = build::typeOf(src), mid = build::typeOf(broadcast.getResult());
  ArrayRef<int64_t> dims = broadcast.getDims();
  if (mid.getRank() != 5 || mid.getDimSize(1) * mid.getDimSize(2) != build::typeOf(x).getDimSize(1))
    return x;
  if (srcType.getRank() == 4 && dims == ArrayRef<int64_t>({0, 1, 3, 4}))
    return src;
  if (srcType.getRank() == 5 && dims == ArrayRef<int64_t>({0, 1, 2, 3, 4}) &&
      srcType.getDimSize(2) == 1) {
    auto unit = src.getDefiningOp<ReshapeOp>();
    auto kv = unit ? build::typeOf(unit.getOperand()) : RankedTensorType();
    if (unit && unit->hasOneUse() && kv.getRank() == 4 && kv.getDimSize(0) == mid.getDimSize(0) &&
        kv.getDimSize(1) == mid.getDimSize(1) && kv.getDimSize(2) == mid.getDimSize(3) &&
        kv.getDimSize(3) == mid.getDimSize(4))
      return unit.getOperand();
  }
  return x;
}

/// [B, H, T, D] <-> [B, T, H, D].
constexpr int64_t kSwapHeadsAndPositions[] = {0, 2, 1, 3};

/// y when `x` is `kiln.transpose y [0, 2, 1, 3]` and the attention is its
/// only user (step 6); else null.
Value fromSequenceMajor(Value x) {
  auto t = x.getDefiningOp<TransposeOp>();
  if (!t || !oneUse(x) || t.getPermutation() != ArrayRef<int64_t>(kSwapHeadsAndPositions))
    return Value();
  return t.getOperand();
}

/// The [B, T, H, D] form of an operand (step 6): the value under its
/// transpose, and the rope to re-apply to it when the transpose was under
/// a rope over the positions (Llama's q and k).
struct SequenceMajor {
  Value value;
  RopeOp rope;
  /// The operand in [B, T, H, D]: `value`, or the rope of it along
  /// dimension 1 (built here, at the rewriter's insertion point).
  Value build(PatternRewriter &rewriter) {
    if (!rope)
      return value;
    return RopeOp::create(rewriter, rope.getLoc(), value.getType(), value, rope.getThetaAttr(),
                          rope.getInverseAttr(), rewriter.getI64IntegerAttr(1));
  }
};
std::optional<SequenceMajor> sequenceMajor(Value x) {
  if (Value y = fromSequenceMajor(x))
    return SequenceMajor{y, RopeOp()};
  auto rope = x.getDefiningOp<RopeOp>();
  if (!rope || !oneUse(x) || rope.positionDim() != 2)
    return std::nullopt;
  if (Value y = fromSequenceMajor(rope.getOperand()))
    return SequenceMajor{y, rope};
  return std::nullopt;
}

/// Part `part` of dimension 3 of a [B, T, H, 3, D] value, as [B, T, H, D]:
/// `reshape(slice(x))` taking exactly that part whole otherwise, each only
/// read here; else null.
Value packedPart(Value v, int64_t part) {
  auto reshape = v.getDefiningOp<ReshapeOp>();
  if (!reshape || !oneUse(v))
    return Value();
  auto slice = reshape.getOperand().getDefiningOp<SliceOp>();
  if (!slice || !slice->hasOneUse())
    return Value();
  Value x = slice.getOperand();
  auto shape = build::typeOf(x).getShape();
  if (shape.size() != 5 || shape[3] != 3 || build::typeOf(v).getShape() !=
                                                ArrayRef<int64_t>({shape[0], shape[1], shape[2], shape[4]}))
    return Value();
  SmallVector<int64_t> start{0, 0, 0, part, 0}, limit(shape);
  limit[3] = part + 1;
  if (slice.getStartIndices() != ArrayRef<int64_t>(start) ||
      slice.getLimitIndices() != ArrayRef<int64_t>(limit) ||
      llvm::any_of(slice.getStrides(), [](int64_t s) { return s != 1; }))
    return Value();
  return x;
}

/// The [B, T, H, 3, D] value q, k and v are parts 0, 1 and 2 of (step 7);
/// else null.
Value packedSource(Value q, Value k, Value v) {
  Value x = packedPart(q, 0);
  if (!x || packedPart(k, 1) != x || packedPart(v, 2) != x)
    return Value();
  return x;
}

struct FuseAttentionPattern final : OpRewritePattern<MatmulOp> {
  FuseAttentionPattern(MLIRContext *ctx, llvm::Statistic &numFused)
      : OpRewritePattern(ctx), numFused(numFused) {}

  LogicalResult matchAndRewrite(MatmulOp pv, PatternRewriter &rewriter) const override {
    auto match = matchAttention(pv);
    if (failed(match))
      return rewriter.notifyMatchFailure(pv, "not softmax(q·kᵀ·scale + causal mask)·v");
    Match &m = *match;
    LLVM_DEBUG(DBGS() << "fusing " << m.chain.size() << " ops at " << pv.getLoc()
                      << (m.causal ? " (causal" : " (no mask")
                      << (m.segments ? ", segments" : "") << ", scale " << m.scale << ")\n");
    // 6. Sequence-major operands (a scale on q before its transpose folds
    // into the op's scale as well).
    std::optional<SequenceMajor> sq = sequenceMajor(m.q), sk = sequenceMajor(m.k),
                                 sv = sequenceMajor(m.v);
    bool seqMajor = sq && sk && sv;
    if (seqMajor) {
      if (!sq->rope) // a scale under the transpose (under a rope it stays)
        sq->value = peelScale(sq->value, m.scale);
      m.q = sq->build(rewriter);
      m.k = sk->build(rewriter);
      m.v = sv->build(rewriter);
    }
    // q, k and v in q's element type (after precision assignment all three
    // are the low type already; a grouped k/v is cast before its broadcast).
    Type element = build::typeOf(m.q).getElementType();
    Type stats = element.isF64() ? Type(rewriter.getF64Type()) : Type(rewriter.getF32Type());
    auto scale = rewriter.getF32FloatAttr(static_cast<float>(m.scale));
    UnitAttr causal = m.causal ? rewriter.getUnitAttr() : UnitAttr();
    Value fusedOut;
    // 7. Packed projections.
    if (Value qkv = seqMajor ? packedSource(m.q, m.k, m.v) : Value()) {
      AttentionDims dims = attentionDims(qkv);
      auto attention = AttentionQkvOp::create(
          rewriter, pv.getLoc(), RankedTensorType::get({dims.b, dims.tq, dims.h, dims.d}, element),
          RankedTensorType::get({dims.b, dims.h, dims.tq}, stats), qkv, m.segments, scale, causal);
      fusedOut = attention.getOut();
    } else {
      Value q = m.q, k = build::convert(rewriter, pv.getLoc(), m.k, element),
            v = build::convert(rewriter, pv.getLoc(), m.v, element);
      AttentionDims dims = attentionDims(q, k, v, seqMajor);
      auto outType = RankedTensorType::get(dims.shape(dims.h, dims.tq, dims.dv), element);
      auto lseType = RankedTensorType::get({dims.b, dims.h, dims.tq}, stats);
      auto attention = AttentionOp::create(rewriter, pv.getLoc(), outType, lseType, q, k, v,
                                           m.segments, scale, causal,
                                           seqMajor ? rewriter.getStringAttr("bthd") : StringAttr());
      fusedOut = attention.getOut();
    }
    Value out = build::convert(rewriter, pv.getLoc(), fusedOut,
                               build::typeOf(pv.getResult()).getElementType());
    if (seqMajor) {
      // Users transposing back to [B, T, H, D] take the output as it is;
      // any other user gets the head-major value.
      for (Operation *user : llvm::to_vector(pv->getUsers()))
        if (auto t = dyn_cast<TransposeOp>(user);
            t && t.getPermutation() == ArrayRef<int64_t>(kSwapHeadsAndPositions))
          rewriter.replaceOp(t, out);
      if (pv->use_empty()) {
        rewriter.eraseOp(pv);
        ++numFused;
        return success();
      }
      out = build::transpose(rewriter, pv.getLoc(), out, kSwapHeadsAndPositions);
    }
    rewriter.replaceOp(pv, out);
    ++numFused;
    return success();
  }

  /// Steps 1-5 of the file comment; failure when any does not match.
  FailureOr<Match> matchAttention(MatmulOp pv) const {
    Match m;
    auto type = build::typeOf(pv.getResult());
    if (type.getRank() != 4 || pv.getTransposeA() || pv.getTransposeB() || pv.getBias() ||
        !isa<FloatType>(type.getElementType()))
      return failure();
    // 1. The probabilities.
    Value p = throughCasts(pv.getLhs());
    auto softmax = p.getDefiningOp<SoftmaxOp>();
    if (!softmax || !oneUse(p))
      return failure();
    m.chain.push_back(softmax);
    Value s = throughCasts(softmax.getOperand());
    int64_t tq = build::typeOf(s).getDimSize(2), tk = build::typeOf(s).getDimSize(3);
    // 2. The mask: a causal select and a segment select, in either order.
    bool selected = false;
    for (int i = 0; i < 2; ++i) {
      auto select = s.getDefiningOp<SelectOp>();
      if (!select || !oneUse(s))
        break;
      auto t = splatValue(select.getOnTrue()), f = splatValue(select.getOnFalse());
      Value segments;
      if (!m.causal && f && *f <= kDropped && tq == tk &&
          isCausalPattern(select.getCond(), tk, /*keep=*/true)) {
        s = select.getOnTrue();
        m.causal = true;
      } else if (!m.causal && t && *t <= kDropped && tq == tk &&
                 isCausalPattern(select.getCond(), tk, /*keep=*/false)) {
        s = select.getOnFalse();
        m.causal = true;
      } else if (!m.segments && f && *f <= kDropped && tq == tk &&
                 (segments = sameSegmentSource(select.getCond(), tk))) {
        s = select.getOnTrue();
        m.segments = segments;
      } else {
        return failure(); // a mask, but not one kiln.attention expresses
      }
      selected = true;
      m.chain.push_back(select);
      s = throughCasts(s);
    }
    if (auto add = s.getDefiningOp<AddOp>(); !selected && add && oneUse(s)) {
      for (unsigned side : {0u, 1u})
        if (tq == tk && isCausalAdditive(add->getOperand(side), tk)) {
          s = add->getOperand(1 - side);
          m.causal = true;
          break;
        }
      if (!m.causal)
        return failure(); // an additive mask kiln.attention cannot express
      m.chain.push_back(add);
    }
    s = throughCasts(s);
    // 3. A scale on the scores.
    s = throughCasts(peelScale(s, m.scale));
    // 4. The product q·kᵀ.
    auto qk = s.getDefiningOp<MatmulOp>();
    if (!qk || !oneUse(s) || qk.getTransposeA() || qk.getBias() ||
        build::typeOf(qk.getResult()).getRank() != 4)
      return failure();
    m.chain.push_back(qk);
    Value k = qk.getRhs();
    if (!qk.getTransposeB()) {
      auto t = k.getDefiningOp<TransposeOp>();
      if (!t || !oneUse(k) || t.getPermutation() != ArrayRef<int64_t>({0, 1, 3, 2}))
        return failure();
      k = t.getOperand();
    }
    // A scale on q (only directly: through a cast it would be rounded
    // differently).
    m.q = peelScale(qk.getLhs(), m.scale);
    // 5. Grouped heads (through the cast precision assignment put after the
    // broadcast); plain k and v stay as they are.
    m.k = k;
    if (Value kv = throughHeadBroadcast(throughCasts(k)); kv != throughCasts(k))
      m.k = kv;
    m.v = pv.getRhs();
    if (Value kv = throughHeadBroadcast(throughCasts(m.v)); kv != throughCasts(m.v))
      m.v = kv;
    auto kt = build::typeOf(m.k), vt = build::typeOf(m.v);
    if (kt.getDimSize(1) != vt.getDimSize(1) || kt.getDimSize(2) != vt.getDimSize(2))
      return failure();
    return m;
  }

  llvm::Statistic &numFused;
};

struct FuseAttentionPass final : impl::FuseAttentionPassBase<FuseAttentionPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseAttentionPattern>(&getContext(), numFused);
    if (failed(applyOnly(getOperation(), std::move(patterns))))
      return signalPassFailure();
  }
};

} // namespace
} // namespace kiln
