//===- KilnVJP.cpp - reverse-mode rules of the kiln ops --------------------===//
//
// DifferentiableOpInterface::buildVJP for every differentiable op. Each rule
// gets one cotangent per result (null when that result needs no gradient)
// and appends one cotangent per operand (null for integer operands). Every
// rule is checked in f64 against central finite differences
// (tests/unit/passes/GradCheckTest.cpp).
//
//===----------------------------------------------------------------------===//

#include "ir/KilnBuilders.h"
#include "ir/KilnOps.h"

using namespace mlir;
using namespace kiln;
using namespace kiln::build;

namespace {

/// Appends null cotangents for every operand of `op` (an integer op, or one
/// whose result has no cotangent).
LogicalResult noGradients(Operation *op, SmallVectorImpl<Value> &out) {
  out.append(op->getNumOperands(), Value());
  return success();
}

/// The composites' statistics results (mean, rstd, lse) are saved for the
/// backward, not differentiated through.
LogicalResult rejectStatsCotangents(Operation *op, ValueRange cotangents) {
  for (auto [i, c] : llvm::enumerate(cotangents))
    if (i > 0 && c)
      return op->emitOpError() << "result #" << i
                               << " (a saved statistic) is used in the loss; "
                                  "differentiating through it is not supported";
  return success();
}

} // namespace

//===----------------------------------------------------------------------===//
// Elementwise
//===----------------------------------------------------------------------===//

LogicalResult AddOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!isFloat(getResult()) || !cot[0])
    return noGradients(*this, out);
  out.push_back(cot[0]);
  out.push_back(cot[0]);
  return success();
}

LogicalResult SubOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!isFloat(getResult()) || !cot[0])
    return noGradients(*this, out);
  out.push_back(cot[0]);
  out.push_back(neg(b, getLoc(), cot[0]));
  return success();
}

LogicalResult MulOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!isFloat(getResult()) || !cot[0])
    return noGradients(*this, out);
  out.push_back(mul(b, getLoc(), cot[0], getRhs()));
  out.push_back(mul(b, getLoc(), cot[0], getLhs()));
  return success();
}

// d(a/b) = da/b − db·a/b²; the second term reuses g/b.
LogicalResult DivOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0])
    return noGradients(*this, out);
  Location loc = getLoc();
  Value gOverB = div(b, loc, cot[0], getRhs());
  out.push_back(gOverB);
  out.push_back(neg(b, loc, mul(b, loc, gOverB, getResult())));
  return success();
}

// Ties send the whole gradient to the left operand.
LogicalResult MaxOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!isFloat(getResult()) || !cot[0])
    return noGradients(*this, out);
  Location loc = getLoc();
  Value leftWins = compare(b, loc, CompareDirection::ge, getLhs(), getRhs());
  Value zero = splatLike(b, loc, cot[0], 0.0);
  out.push_back(select(b, loc, leftWins, cot[0], zero));
  out.push_back(select(b, loc, leftWins, zero, cot[0]));
  return success();
}

LogicalResult NegOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!isFloat(getResult()) || !cot[0])
    return noGradients(*this, out);
  out.push_back(neg(b, getLoc(), cot[0]));
  return success();
}

LogicalResult ExpOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0])
    return noGradients(*this, out);
  out.push_back(mul(b, getLoc(), cot[0], getResult()));
  return success();
}

LogicalResult LogOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0])
    return noGradients(*this, out);
  out.push_back(div(b, getLoc(), cot[0], getOperand()));
  return success();
}

// d sqrt(x) = 1 / (2 sqrt(x))
LogicalResult SqrtOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0])
    return noGradients(*this, out);
  Location loc = getLoc();
  out.push_back(div(b, loc, scale(b, loc, cot[0], 0.5), getResult()));
  return success();
}

// d x^(-1/2) = -1/2 · x^(-3/2) = -1/2 · y³
LogicalResult RsqrtOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0])
    return noGradients(*this, out);
  Location loc = getLoc();
  Value y = getResult();
  Value y3 = mul(b, loc, mul(b, loc, y, y), y);
  out.push_back(mul(b, loc, scale(b, loc, cot[0], -0.5), y3));
  return success();
}

// d tanh(x) = 1 − y²
LogicalResult TanhOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0])
    return noGradients(*this, out);
  Location loc = getLoc();
  Value y = getResult();
  Value d = sub(b, loc, splatLike(b, loc, y, 1.0), mul(b, loc, y, y));
  out.push_back(mul(b, loc, cot[0], d));
  return success();
}

// d σ(x) = y (1 − y)
LogicalResult SigmoidOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0])
    return noGradients(*this, out);
  Location loc = getLoc();
  Value y = getResult();
  Value d = mul(b, loc, y, sub(b, loc, splatLike(b, loc, y, 1.0), y));
  out.push_back(mul(b, loc, cot[0], d));
  return success();
}

LogicalResult GeluOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0])
    return noGradients(*this, out);
  out.push_back(GeluGradOp::create(b, getLoc(), getType(), getApproximate(), getOperand(), cot[0]));
  return success();
}

// d (x σ(x)) = σ(x) (1 + x (1 − σ(x)))
LogicalResult SiluOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0])
    return noGradients(*this, out);
  Location loc = getLoc();
  Value x = getOperand();
  Value s = SigmoidOp::create(b, loc, x.getType(), x);
  Value one = splatLike(b, loc, x, 1.0);
  Value d = mul(b, loc, s, add(b, loc, one, mul(b, loc, x, sub(b, loc, one, s))));
  out.push_back(mul(b, loc, cot[0], d));
  return success();
}

LogicalResult ReluOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0])
    return noGradients(*this, out);
  Location loc = getLoc();
  Value zero = splatLike(b, loc, getOperand(), 0.0);
  Value positive = compare(b, loc, CompareDirection::gt, getOperand(), zero);
  out.push_back(select(b, loc, positive, cot[0], zero));
  return success();
}

LogicalResult CastOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0] || !isFloat(getOperand()) || !isFloat(getResult()))
    return noGradients(*this, out);
  out.push_back(convert(b, getLoc(), cot[0], typeOf(getOperand()).getElementType()));
  return success();
}

LogicalResult SelectOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0] || !isFloat(getResult()))
    return noGradients(*this, out);
  Location loc = getLoc();
  Value zero = splatLike(b, loc, cot[0], 0.0);
  out.push_back(Value());
  out.push_back(select(b, loc, getCond(), cot[0], zero));
  out.push_back(select(b, loc, getCond(), zero, cot[0]));
  return success();
}

//===----------------------------------------------------------------------===//
// Shape ops
//===----------------------------------------------------------------------===//

LogicalResult ReshapeOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0] || !isFloat(getResult()))
    return noGradients(*this, out);
  out.push_back(reshape(b, getLoc(), cot[0], typeOf(getOperand()).getShape()));
  return success();
}

LogicalResult TransposeOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0] || !isFloat(getResult()))
    return noGradients(*this, out);
  ArrayRef<int64_t> perm = getPermutation();
  SmallVector<int64_t> inverse(perm.size());
  for (auto [i, p] : llvm::enumerate(perm))
    inverse[p] = i;
  out.push_back(transpose(b, getLoc(), cot[0], inverse));
  return success();
}

// The cotangent goes back where the slice took its elements from: a pad with
// zeros before (start), after, and between strided elements.
LogicalResult SliceOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0] || !isFloat(getResult()))
    return noGradients(*this, out);
  Location loc = getLoc();
  auto in = typeOf(getOperand()), res = getType();
  if (res.getNumElements() == 0) {
    out.push_back(splat(b, loc, in, 0.0));
    return success();
  }
  SmallVector<int64_t> low, high, interior;
  for (int64_t d = 0; d < in.getRank(); ++d) {
    int64_t start = getStartIndices()[d], stride = getStrides()[d];
    int64_t last = start + (res.getDimSize(d) - 1) * stride;
    low.push_back(start);
    high.push_back(in.getDimSize(d) - 1 - last);
    interior.push_back(stride - 1);
  }
  out.push_back(pad(b, loc, cot[0], low, high, interior));
  return success();
}

// The inverse of pad: take every (interior+1)-th element after `low`.
LogicalResult PadOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0] || !isFloat(getResult()))
    return noGradients(*this, out);
  auto in = typeOf(getOperand());
  SmallVector<int64_t> start, limit, strides;
  for (int64_t d = 0; d < in.getRank(); ++d) {
    int64_t step = getInterior()[d] + 1;
    start.push_back(getLow()[d]);
    limit.push_back(getLow()[d] + (in.getDimSize(d) - 1) * step + 1);
    strides.push_back(step);
  }
  out.push_back(slice(b, getLoc(), cot[0], start, limit, strides));
  return success();
}

LogicalResult ConcatOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0] || !isFloat(getResult()))
    return noGradients(*this, out);
  auto res = getType();
  int64_t dim = getDim(), offset = 0;
  for (Value input : getInputs()) {
    SmallVector<int64_t> start(res.getRank(), 0), limit(res.getShape()),
        strides(res.getRank(), 1);
    start[dim] = offset;
    offset += typeOf(input).getDimSize(dim);
    limit[dim] = offset;
    out.push_back(slice(b, getLoc(), cot[0], start, limit, strides));
  }
  return success();
}

// Sum over the new dimensions and over those the operand had as size 1.
LogicalResult BroadcastInDimOp::buildVJP(OpBuilder &b, ValueRange cot,
                                         SmallVectorImpl<Value> &out) {
  if (!cot[0] || !isFloat(getResult()))
    return noGradients(*this, out);
  Location loc = getLoc();
  auto in = typeOf(getOperand()), res = getType();
  SmallVector<int64_t> summed;
  for (int64_t d = 0; d < res.getRank(); ++d) {
    auto *it = llvm::find(getDims(), d);
    if (it == getDims().end()) {
      summed.push_back(d);
      continue;
    }
    int64_t operandDim = it - getDims().begin();
    if (in.getDimSize(operandDim) == 1 && res.getDimSize(d) != 1)
      summed.push_back(d);
  }
  out.push_back(reshape(b, loc, reduceSum(b, loc, cot[0], summed), in.getShape()));
  return success();
}

//===----------------------------------------------------------------------===//
// Reductions
//===----------------------------------------------------------------------===//

/// The dimensions a reduction keeps, in order (where its result's dimensions
/// sit in the operand).
static SmallVector<int64_t> keptDims(int64_t rank, ArrayRef<int64_t> reduced) {
  SmallVector<int64_t> kept;
  for (int64_t d = 0; d < rank; ++d)
    if (!llvm::is_contained(reduced, d))
      kept.push_back(d);
  return kept;
}

LogicalResult ReduceSumOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0] || !isFloat(getResult()))
    return noGradients(*this, out);
  auto in = typeOf(getOperand());
  out.push_back(broadcastInDim(b, getLoc(), cot[0], in.getShape(),
                               keptDims(in.getRank(), getDims())));
  return success();
}

LogicalResult ReduceMeanOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0] || !isFloat(getResult()))
    return noGradients(*this, out);
  Location loc = getLoc();
  auto in = typeOf(getOperand());
  double count = static_cast<double>(in.getNumElements()) /
                 std::max<int64_t>(1, getType().getNumElements());
  Value scaled = scale(b, loc, cot[0], 1.0 / count);
  out.push_back(broadcastInDim(b, loc, scaled, in.getShape(), keptDims(in.getRank(), getDims())));
  return success();
}

// Ties share the gradient equally, as in JAX.
LogicalResult ReduceMaxOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0] || !isFloat(getResult()))
    return noGradients(*this, out);
  Location loc = getLoc();
  auto in = typeOf(getOperand());
  SmallVector<int64_t> kept = keptDims(in.getRank(), getDims());
  Value maxB = broadcastInDim(b, loc, getResult(), in.getShape(), kept);
  Value isMax = convert(b, loc, compare(b, loc, CompareDirection::eq, getOperand(), maxB),
                     in.getElementType());
  Value count = reduceSum(b, loc, isMax, getDims());
  Value share = broadcastInDim(b, loc, div(b, loc, cot[0], count), in.getShape(), kept);
  out.push_back(mul(b, loc, share, isMax));
  return success();
}

//===----------------------------------------------------------------------===//
// Matmul
//===----------------------------------------------------------------------===//

// C = op(A)·op(B). With g = dC:
//   no transposes:  dA = g·Bᵀ      dB = Aᵀ·g
//   transpose_a:    dA = B·gᵀ      dB = A·g
//   transpose_b:    dA = g·B       dB = gᵀ·A
//   both:           dA = Bᵀ·gᵀ     dB = gᵀ·Aᵀ
// A weight shared across the batch gets the batch summed: for dB with A
// batched and not transposed this is one matmul over the flattened rows.
LogicalResult MatmulOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0] || !isFloat(getResult()))
    return noGradients(*this, out);
  Location loc = getLoc();
  Value a = getLhs(), bm = getRhs();
  auto aType = typeOf(a), bType = typeOf(bm);
  // Mixed precision: a bf16/f16 product with an f32 result gets its
  // cotangent in the operands' type.
  Value g = convert(b, loc, cot[0], aType.getElementType());
  bool ta = getTransposeA(), tb = getTransposeB();

  Value dA = ta ? matmul(b, loc, bm, g, tb, true) : matmul(b, loc, g, bm, false, !tb);
  Value dB;
  if (aType.getRank() > 2 && bType.getRank() == 2 && !ta) {
    int64_t rows = aType.getNumElements() / aType.getShape().back();
    Value aFlat = reshape(b, loc, a, {rows, aType.getShape().back()});
    Value gFlat = reshape(b, loc, g, {rows, typeOf(g).getShape().back()});
    dB = tb ? matmul(b, loc, gFlat, aFlat, true, false) : matmul(b, loc, aFlat, gFlat, true, false);
  } else {
    dB = tb ? matmul(b, loc, g, a, true, ta) : matmul(b, loc, a, g, !ta, false);
  }
  out.push_back(sumToShape(b, loc, dA, aType.getShape()));
  out.push_back(sumToShape(b, loc, dB, bType.getShape()));
  if (Value bias = getBias())
    out.push_back(sumToShape(b, loc, cot[0], typeOf(bias).getShape()));
  return success();
}

//===----------------------------------------------------------------------===//
// Composites
//===----------------------------------------------------------------------===//

LogicalResult EmbeddingOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0])
    return noGradients(*this, out);
  out.push_back(
      EmbeddingGradOp::create(b, getLoc(), getTable().getType(), getIds(), cot[0], Value()));
  out.push_back(Value());
  return success();
}

LogicalResult SoftmaxOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0])
    return noGradients(*this, out);
  out.push_back(SoftmaxGradOp::create(b, getLoc(), getType(), getResult(), cot[0]));
  return success();
}

// y = x − lse(x): dx = g − softmax(x)·Σg = g − exp(y)·Σg.
LogicalResult LogSoftmaxOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0])
    return noGradients(*this, out);
  Location loc = getLoc();
  auto t = getType();
  int64_t last = t.getRank() - 1;
  SmallVector<int64_t> kept = keptDims(t.getRank(), {last});
  Value sumG = broadcastInDim(b, loc, reduceSum(b, loc, cot[0], {last}), t.getShape(), kept);
  Value p = ExpOp::create(b, loc, t, getResult());
  out.push_back(sub(b, loc, cot[0], mul(b, loc, p, sumG)));
  return success();
}

LogicalResult LayerNormOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (failed(rejectStatsCotangents(*this, cot)))
    return failure();
  if (!cot[0])
    return noGradients(*this, out);
  // A narrowed y is a cast of the f32 one: its cotangent widens back.
  Value dy = cot[0];
  if (dy.getType() != getX().getType())
    dy = CastOp::create(b, getLoc(), getX().getType(), dy);
  auto grad = LayerNormGradOp::create(b, getLoc(), getX().getType(), getWeight().getType(),
                                      getBias().getType(), getX(), getWeight(), getMean(),
                                      getRstd(), dy);
  out.append({grad.getDx(), grad.getDweight(), grad.getDbias()});
  return success();
}

LogicalResult RmsNormOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (failed(rejectStatsCotangents(*this, cot)))
    return failure();
  if (!cot[0])
    return noGradients(*this, out);
  Value dy = cot[0];
  if (dy.getType() != getX().getType())
    dy = CastOp::create(b, getLoc(), getX().getType(), dy);
  auto grad = RmsNormGradOp::create(b, getLoc(), getX().getType(), getWeight().getType(),
                                    getX(), getWeight(), getRstd(), dy);
  out.append({grad.getDx(), grad.getDweight()});
  return success();
}

// A rotation: its VJP is the rotation by the opposite angle.
LogicalResult RopeOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (!cot[0])
    return noGradients(*this, out);
  auto inverse = RopeOp::create(b, getLoc(), getType(), cot[0], getThetaAttr(),
                                getInverse() ? UnitAttr() : b.getUnitAttr(), getPositionDimAttr());
  out.push_back(inverse);
  return success();
}

LogicalResult CrossEntropyOp::buildVJP(OpBuilder &b, ValueRange cot,
                                       SmallVectorImpl<Value> &out) {
  if (failed(rejectStatsCotangents(*this, cot)))
    return failure();
  if (!cot[0])
    return noGradients(*this, out);
  auto grad = CrossEntropyGradOp::create(b, getLoc(), getLogits().getType(), getLogits(),
                                         getTargets(), getLse(), cot[0], getValidClassesAttr());
  out.push_back(grad);
  out.push_back(Value());
  return success();
}

LogicalResult AttentionQkvOp::buildVJP(OpBuilder &b, ValueRange cot,
                                       SmallVectorImpl<Value> &out) {
  if (failed(rejectStatsCotangents(*this, cot)))
    return failure();
  if (!cot[0])
    return noGradients(*this, out);
  Value dout = convert(b, getLoc(), cot[0], typeOf(getOut()).getElementType());
  auto grad = AttentionQkvGradOp::create(b, getLoc(), getQkv().getType(), getQkv(), getOut(),
                                         getLse(), dout, getSegments(), getScaleAttr(),
                                         getCausalAttr());
  out.push_back(grad.getDqkv());
  if (getSegments())
    out.push_back(Value()); // integer ids: no cotangent
  return success();
}

LogicalResult AttentionOp::buildVJP(OpBuilder &b, ValueRange cot, SmallVectorImpl<Value> &out) {
  if (failed(rejectStatsCotangents(*this, cot)))
    return failure();
  if (!cot[0])
    return noGradients(*this, out);
  Value dout = convert(b, getLoc(), cot[0], typeOf(getOut()).getElementType());
  auto grad = AttentionGradOp::create(b, getLoc(), getQ().getType(), getK().getType(),
                                      getV().getType(), getQ(), getK(), getV(), getOut(),
                                      getLse(), dout, getSegments(), getScaleAttr(),
                                      getCausalAttr(), getLayoutAttr());
  out.append({grad.getDq(), grad.getDk(), grad.getDv()});
  if (getSegments())
    out.push_back(Value()); // integer ids: no cotangent
  return success();
}
