//===- KilnBuilders.cpp - create kiln ops with their result types inferred -===//

#include "ir/KilnBuilders.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/ADT/STLExtras.h"

using namespace mlir;

namespace kiln::build {

RankedTensorType typeOf(Value v) { return cast<RankedTensorType>(v.getType()); }

bool isFloat(Value v) { return isa<FloatType>(typeOf(v).getElementType()); }

Value splat(OpBuilder &b, Location loc, RankedTensorType type, double value) {
  Type elt = type.getElementType();
  Attribute scalar;
  if (auto ft = dyn_cast<FloatType>(elt))
    scalar = b.getFloatAttr(ft, value);
  else
    scalar = b.getIntegerAttr(elt, static_cast<int64_t>(value));
  return ConstantOp::create(b, loc, type, SplatElementsAttr::get(type, scalar));
}

Value splatLike(OpBuilder &b, Location loc, Value like, double value) {
  return splat(b, loc, typeOf(like), value);
}

Value add(OpBuilder &b, Location loc, Value x, Value y) {
  return AddOp::create(b, loc, x.getType(), x, y);
}
Value sub(OpBuilder &b, Location loc, Value x, Value y) {
  return SubOp::create(b, loc, x.getType(), x, y);
}
Value mul(OpBuilder &b, Location loc, Value x, Value y) {
  return MulOp::create(b, loc, x.getType(), x, y);
}
Value div(OpBuilder &b, Location loc, Value x, Value y) {
  return DivOp::create(b, loc, x.getType(), x, y);
}
Value neg(OpBuilder &b, Location loc, Value x) { return NegOp::create(b, loc, x.getType(), x); }

Value scale(OpBuilder &b, Location loc, Value x, double c) {
  return mul(b, loc, x, splatLike(b, loc, x, c));
}

Value convert(OpBuilder &b, Location loc, Value x, Type elementType) {
  if (typeOf(x).getElementType() == elementType)
    return x;
  return CastOp::create(b, loc, typeOf(x).clone(elementType), x);
}

Value compare(OpBuilder &b, Location loc, CompareDirection dir, Value x, Value y) {
  return CompareOp::create(b, loc, typeOf(x).clone(b.getI1Type()), dir, x, y);
}

Value select(OpBuilder &b, Location loc, Value cond, Value x, Value y) {
  return SelectOp::create(b, loc, x.getType(), cond, x, y);
}

Value reshape(OpBuilder &b, Location loc, Value x, ArrayRef<int64_t> shape) {
  auto type = typeOf(x).clone(shape);
  if (type == x.getType())
    return x;
  return ReshapeOp::create(b, loc, type, x);
}

Value transpose(OpBuilder &b, Location loc, Value x, ArrayRef<int64_t> perm) {
  auto in = typeOf(x);
  SmallVector<int64_t> shape;
  for (int64_t p : perm)
    shape.push_back(in.getDimSize(p));
  return TransposeOp::create(b, loc, in.clone(shape), x, perm);
}

Value broadcastInDim(OpBuilder &b, Location loc, Value x, ArrayRef<int64_t> shape,
                     ArrayRef<int64_t> dims) {
  auto type = typeOf(x).clone(shape);
  if (type == x.getType())
    return x;
  return BroadcastInDimOp::create(b, loc, type, x, dims);
}

Value slice(OpBuilder &b, Location loc, Value x, ArrayRef<int64_t> start,
            ArrayRef<int64_t> limit, ArrayRef<int64_t> strides) {
  SmallVector<int64_t> shape;
  for (auto [s, l, st] : llvm::zip(start, limit, strides))
    shape.push_back((l - s + st - 1) / st);
  return SliceOp::create(b, loc, typeOf(x).clone(shape), x, start, limit, strides);
}

Value pad(OpBuilder &b, Location loc, Value x, ArrayRef<int64_t> low, ArrayRef<int64_t> high,
          ArrayRef<int64_t> interior) {
  auto in = typeOf(x);
  SmallVector<int64_t> shape;
  for (int64_t d = 0; d < in.getRank(); ++d) {
    int64_t n = in.getDimSize(d);
    shape.push_back(low[d] + high[d] + n + (n > 0 ? (n - 1) * interior[d] : 0));
  }
  return PadOp::create(b, loc, in.clone(shape), x, low, high, interior);
}

Value concat(OpBuilder &b, Location loc, ValueRange xs, int64_t dim) {
  SmallVector<int64_t> shape(typeOf(xs.front()).getShape());
  shape[dim] = 0;
  for (Value x : xs)
    shape[dim] += typeOf(x).getDimSize(dim);
  return ConcatOp::create(b, loc, typeOf(xs.front()).clone(shape), xs, dim);
}

static SmallVector<int64_t> reducedShape(RankedTensorType in, ArrayRef<int64_t> dims) {
  SmallVector<int64_t> shape;
  for (int64_t d = 0; d < in.getRank(); ++d)
    if (!llvm::is_contained(dims, d))
      shape.push_back(in.getDimSize(d));
  return shape;
}

Value reduceSum(OpBuilder &b, Location loc, Value x, ArrayRef<int64_t> dims) {
  if (dims.empty())
    return x;
  return ReduceSumOp::create(b, loc, typeOf(x).clone(reducedShape(typeOf(x), dims)), x, dims);
}
Value reduceMax(OpBuilder &b, Location loc, Value x, ArrayRef<int64_t> dims) {
  if (dims.empty())
    return x;
  return ReduceMaxOp::create(b, loc, typeOf(x).clone(reducedShape(typeOf(x), dims)), x, dims);
}
Value reduceMean(OpBuilder &b, Location loc, Value x, ArrayRef<int64_t> dims) {
  if (dims.empty())
    return x;
  return ReduceMeanOp::create(b, loc, typeOf(x).clone(reducedShape(typeOf(x), dims)), x, dims);
}

Value matmul(OpBuilder &b, Location loc, Value x, Value y, bool transposeA, bool transposeB,
             Type resultElementType) {
  auto a = typeOf(x), c = typeOf(y);
  int64_t ra = a.getRank(), rc = c.getRank();
  int64_t m = transposeA ? a.getDimSize(ra - 1) : a.getDimSize(ra - 2);
  int64_t n = transposeB ? c.getDimSize(rc - 2) : c.getDimSize(rc - 1);
  SmallVector<int64_t> shape(ra > 2 ? a.getShape().drop_back(2) : c.getShape().drop_back(2));
  shape.push_back(m);
  shape.push_back(n);
  Type elt = resultElementType ? resultElementType : a.getElementType();
  auto op = MatmulOp::create(b, loc, RankedTensorType::get(shape, elt), x, y, /*bias=*/Value());
  if (transposeA)
    op.setTransposeA(true);
  if (transposeB)
    op.setTransposeB(true);
  return op;
}

Value sumToShape(OpBuilder &b, Location loc, Value x, ArrayRef<int64_t> shape) {
  auto in = typeOf(x);
  if (in.getShape() == shape)
    return x;
  int64_t lead = in.getRank() - static_cast<int64_t>(shape.size());
  SmallVector<int64_t> dims;
  for (int64_t d = 0; d < in.getRank(); ++d)
    if (d < lead || (shape[d - lead] == 1 && in.getDimSize(d) != 1))
      dims.push_back(d);
  return reshape(b, loc, reduceSum(b, loc, x, dims), shape);
}

} // namespace kiln::build
