//===- KilnFolds.cpp - folders and canonicalization patterns ---------------===//
//
// Only rewrites that are obviously right: identities (x+0, x-0, x*1, x/1,
// cast/reshape/broadcast to the same type, identity transpose or slice),
// composition of transposes and of reshapes, broadcasts and float casts of
// splat constants, sums of zero-padded pieces that tile a tensor
// (concatenation), and the mask on a masked softmax's gradient (already
// zero where the mask is false). x+0 -> x ignores the sign of a zero x, as every training
// framework does.
//
//===----------------------------------------------------------------------===//

#include "ir/KilnOps.h"

#include "mlir/IR/Matchers.h"
#include "mlir/IR/PatternMatch.h"

#include <limits>

using namespace mlir;
using namespace kiln;

/// True when `attr` is a splat constant whose every element equals `value`.
static bool isSplatOf(Attribute attr, double value) {
  auto splat = dyn_cast_if_present<SplatElementsAttr>(attr);
  if (!splat)
    return false;
  Type elt = splat.getElementType();
  if (isa<FloatType>(elt))
    return splat.getSplatValue<APFloat>().convertToDouble() == value;
  if (isa<IntegerType>(elt))
    return splat.getSplatValue<APInt>().getSExtValue() == static_cast<int64_t>(value);
  return false;
}

OpFoldResult AddOp::fold(FoldAdaptor adaptor) {
  if (isSplatOf(adaptor.getRhs(), 0.0))
    return getLhs();
  if (isSplatOf(adaptor.getLhs(), 0.0))
    return getRhs();
  return {};
}

OpFoldResult SubOp::fold(FoldAdaptor adaptor) {
  if (isSplatOf(adaptor.getRhs(), 0.0))
    return getLhs();
  return {};
}

OpFoldResult MulOp::fold(FoldAdaptor adaptor) {
  if (isSplatOf(adaptor.getRhs(), 1.0))
    return getLhs();
  if (isSplatOf(adaptor.getLhs(), 1.0))
    return getRhs();
  return {};
}

OpFoldResult DivOp::fold(FoldAdaptor adaptor) {
  if (isSplatOf(adaptor.getRhs(), 1.0))
    return getLhs();
  return {};
}

OpFoldResult CastOp::fold(FoldAdaptor adaptor) {
  if (getOperand().getType() == getType())
    return getOperand();
  // A float splat cast to another float type: the splat of the rounded
  // value (round to nearest even, as the kernels and the interpreter do).
  auto splat = dyn_cast_if_present<SplatElementsAttr>(adaptor.getOperand());
  auto to = dyn_cast<FloatType>(getType().getElementType());
  if (splat && to && isa<FloatType>(splat.getElementType())) {
    APFloat value = splat.getSplatValue<APFloat>();
    bool lost = false;
    value.convert(to.getFloatSemantics(), APFloat::rmNearestTiesToEven, &lost);
    return SplatElementsAttr::get(getType(), value);
  }
  return {};
}

OpFoldResult ConstantOp::fold(FoldAdaptor) { return getValue(); }

OpFoldResult ReshapeOp::fold(FoldAdaptor adaptor) {
  if (getOperand().getType() == getType())
    return getOperand();
  if (auto splat = dyn_cast_if_present<SplatElementsAttr>(adaptor.getOperand()))
    return splat.resizeSplat(getType());
  return {};
}

OpFoldResult TransposeOp::fold(FoldAdaptor adaptor) {
  if (llvm::equal(getPermutation(), llvm::seq<int64_t>(0, getPermutation().size())))
    return getOperand();
  if (auto splat = dyn_cast_if_present<SplatElementsAttr>(adaptor.getOperand()))
    return splat.resizeSplat(getType());
  return {};
}

OpFoldResult SliceOp::fold(FoldAdaptor adaptor) {
  if (getOperand().getType() == getType())
    return getOperand();
  if (auto splat = dyn_cast_if_present<SplatElementsAttr>(adaptor.getOperand()))
    return splat.resizeSplat(getType());
  return {};
}

OpFoldResult PadOp::fold(FoldAdaptor) {
  if (getOperand().getType() == getType())
    return getOperand();
  return {};
}

OpFoldResult ConcatOp::fold(FoldAdaptor) {
  if (getInputs().size() == 1)
    return getInputs().front();
  return {};
}

OpFoldResult BroadcastInDimOp::fold(FoldAdaptor adaptor) {
  // Same type means dims is the identity (it is strictly increasing).
  if (getOperand().getType() == getType())
    return getOperand();
  if (auto splat = dyn_cast_if_present<SplatElementsAttr>(adaptor.getOperand()))
    return splat.resizeSplat(getType());
  return {};
}

namespace {
/// reshape(reshape(x)) -> reshape(x)
struct ComposeReshapes final : OpRewritePattern<ReshapeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(ReshapeOp op, PatternRewriter &rewriter) const override {
    auto inner = op.getOperand().getDefiningOp<ReshapeOp>();
    if (!inner)
      return failure();
    rewriter.replaceOpWithNewOp<ReshapeOp>(op, op.getType(), inner.getOperand());
    return success();
  }
};

/// transpose(transpose(x, p1), p2) -> transpose(x, p1∘p2): result dimension i
/// is x's dimension p1[p2[i]].
struct ComposeTransposes final : OpRewritePattern<TransposeOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(TransposeOp op, PatternRewriter &rewriter) const override {
    auto inner = op.getOperand().getDefiningOp<TransposeOp>();
    if (!inner)
      return failure();
    SmallVector<int64_t> composed;
    for (int64_t p : op.getPermutation())
      composed.push_back(inner.getPermutation()[p]);
    rewriter.replaceOpWithNewOp<TransposeOp>(op, op.getType(), inner.getOperand(),
                                             composed);
    return success();
  }
};
/// The piece of a zero padding along one dimension: `pad` pads `piece` with
/// zeros along `dim` only, so that it spans [begin, end) of the result.
struct PaddedPiece {
  Value piece;
  int64_t dim, begin, end;
};

std::optional<PaddedPiece> paddedPiece(Value v) {
  auto pad = v.getDefiningOp<PadOp>();
  if (!pad || !pad->hasOneUse())
    return std::nullopt;
  std::optional<PaddedPiece> found;
  for (auto [d, low, high, interior] :
       llvm::enumerate(pad.getLow(), pad.getHigh(), pad.getInterior())) {
    if (interior != 0)
      return std::nullopt;
    if (low == 0 && high == 0)
      continue;
    if (found)
      return std::nullopt; // padded along two dimensions
    int64_t size = pad.getOperand().getType().getDimSize(d);
    found = PaddedPiece{pad.getOperand(), static_cast<int64_t>(d), low, low + size};
  }
  return found;
}

/// add(pad(a), pad(b)) -> pad(concat(a, b)) when a and b are zero-padded
/// along the same dimension and b begins where a ends (or a where b ends):
/// every element of the sum is one piece's element or zero, which is what
/// the concatenation, padded, holds. Repeated, the VJP of splitting a
/// tensor into slices becomes one concat instead of pads and adds.
struct AddPaddedPieces final : OpRewritePattern<AddOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(AddOp op, PatternRewriter &rewriter) const override {
    auto a = paddedPiece(op.getLhs()), b = paddedPiece(op.getRhs());
    if (!a || !b || a->dim != b->dim)
      return failure();
    if (b->end == a->begin)
      std::swap(a, b);
    if (a->end != b->begin)
      return failure();
    int64_t dim = a->dim;
    SmallVector<Value> inputs;
    for (Value piece : {a->piece, b->piece}) {
      // Splice a concat along the same dimension that only this one reads.
      auto inner = piece.getDefiningOp<ConcatOp>();
      if (inner && static_cast<int64_t>(inner.getDim()) == dim && inner->hasOneUse())
        llvm::append_range(inputs, inner.getInputs());
      else
        inputs.push_back(piece);
    }
    auto type = op.getType();
    SmallVector<int64_t> shape(type.getShape());
    shape[dim] = b->end - a->begin;
    auto concatType = RankedTensorType::get(shape, type.getElementType());
    Value joined = ConcatOp::create(rewriter, op.getLoc(), concatType, inputs, dim);
    SmallVector<int64_t> low(type.getRank(), 0), high(type.getRank(), 0), interior(type.getRank(), 0);
    low[dim] = a->begin;
    high[dim] = type.getDimSize(dim) - b->end;
    rewriter.replaceOpWithNewOp<PadOp>(op, type, joined, low, high, interior);
    return success();
  }
};
/// True when `v` is a splat constant of `value` (after any folding).
bool isSplatConstant(Value v, double value) {
  Attribute attr;
  return matchPattern(v, m_Constant(&attr)) && isSplatOf(attr, value);
}

/// select(m, softmax_grad(y, dy), 0) -> softmax_grad(y, dy) when
/// y = softmax(select(m, x, -inf)): where m is false, y is exactly 0 (exp of
/// -inf), so softmax_grad's y·(dy − Σ dy·y) is 0 there already. (A row that
/// m masks entirely has a NaN softmax, and a NaN loss, either way.) This is
/// the backward of causal attention written with primitives: one pass over
/// the scores fewer.
struct DropMaskOnSoftmaxGrad final : OpRewritePattern<SelectOp> {
  using OpRewritePattern::OpRewritePattern;
  LogicalResult matchAndRewrite(SelectOp op, PatternRewriter &rewriter) const override {
    if (!isSplatConstant(op.getOnFalse(), 0.0))
      return failure();
    auto grad = op.getOnTrue().getDefiningOp<SoftmaxGradOp>();
    if (!grad)
      return failure();
    auto softmax = grad.getY().getDefiningOp<SoftmaxOp>();
    if (!softmax)
      return failure();
    auto masked = softmax.getOperand().getDefiningOp<SelectOp>();
    if (!masked || masked.getCond() != op.getCond() ||
        !isSplatConstant(masked.getOnFalse(), -std::numeric_limits<double>::infinity()))
      return failure();
    rewriter.replaceOp(op, grad.getResult());
    return success();
  }
};
} // namespace

void SelectOp::getCanonicalizationPatterns(RewritePatternSet &results, MLIRContext *context) {
  results.add<DropMaskOnSoftmaxGrad>(context);
}

void AddOp::getCanonicalizationPatterns(RewritePatternSet &results, MLIRContext *context) {
  results.add<AddPaddedPieces>(context);
}

void ReshapeOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                            MLIRContext *context) {
  results.add<ComposeReshapes>(context);
}

void TransposeOp::getCanonicalizationPatterns(RewritePatternSet &results,
                                              MLIRContext *context) {
  results.add<ComposeTransposes>(context);
}
