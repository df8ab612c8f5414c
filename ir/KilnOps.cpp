//===- KilnOps.cpp - verifiers and custom assembly of kiln ops -------------===//
//
// Every verifier names the op (MLIR prefixes it) and both disagreeing types,
// so a bad shape coming from a model definition is found from the message.
//
//===----------------------------------------------------------------------===//

#include "ir/KilnOps.h"
#include "ir/KilnAttrs.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpImplementation.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallSet.h"

#include <limits>

using namespace mlir;
using namespace kiln;

//===----------------------------------------------------------------------===//
// Helpers
//===----------------------------------------------------------------------===//

static RankedTensorType tensorType(Value v) {
  return cast<RankedTensorType>(v.getType());
}

/// Element type of the statistics results of norms, cross-entropy and
/// attention: f64 for f64 inputs, otherwise f32.
static Type statsElementType(Type elementType) {
  if (elementType.isF64())
    return elementType;
  return Float32Type::get(elementType.getContext());
}

static std::string shapeString(ArrayRef<int64_t> shape) {
  std::string s = "[";
  for (auto [i, d] : llvm::enumerate(shape))
    s += (i ? ", " : "") + std::to_string(d);
  return s + "]";
}

LogicalResult kiln::OpTrait::detail::verifySameTypes(Operation *op) {
  if (op->getNumOperands() == 0)
    return success();
  Type first = op->getOperand(0).getType();
  for (auto [i, operand] : llvm::enumerate(op->getOperands()))
    if (operand.getType() != first)
      return op->emitOpError() << "operand #" << i << " type " << operand.getType()
                               << " does not match operand #0 type " << first;
  for (auto [i, result] : llvm::enumerate(op->getResults()))
    if (result.getType() != first)
      return op->emitOpError() << "result #" << i << " type " << result.getType()
                               << " does not match operand type " << first;
  return success();
}

LogicalResult kiln::OpTrait::detail::verifyBoundedTensors(Operation *op) {
  auto check = [&](Type type, StringRef what, unsigned i) -> LogicalResult {
    auto shaped = dyn_cast<ShapedType>(type);
    if (!shaped)
      return success();
    if (!shaped.hasStaticShape())
      return op->emitOpError() << what << " #" << i << " type " << type
                               << " must have a static shape";
    int64_t bytes = numBytes(type);
    if (bytes > kMaxTensorBytes)
      return op->emitOpError() << what << " #" << i << " type " << type << " holds "
                               << (bytes == std::numeric_limits<int64_t>::max()
                                       ? std::string("more than 2^63")
                                       : std::to_string(bytes))
                               << " bytes, more than kiln's limit of 2^48 bytes per tensor";
    return success();
  };
  for (auto [i, v] : llvm::enumerate(op->getOperands()))
    if (failed(check(v.getType(), "operand", i)))
      return failure();
  for (auto [i, v] : llvm::enumerate(op->getResults()))
    if (failed(check(v.getType(), "result", i)))
      return failure();
  return success();
}

/// Checks that `dims` is strictly increasing and inside [0, rank).
static LogicalResult verifyDimList(Operation *op, StringRef what,
                                   ArrayRef<int64_t> dims, int64_t rank) {
  for (auto [i, d] : llvm::enumerate(dims)) {
    if (d < 0 || d >= rank)
      return op->emitOpError() << what << " " << shapeString(dims)
                               << " has dimension " << d << " outside [0, " << rank
                               << ")";
    if (i > 0 && dims[i - 1] >= d)
      return op->emitOpError() << what << " " << shapeString(dims)
                               << " must be strictly increasing";
  }
  return success();
}

//===----------------------------------------------------------------------===//
// Custom assembly directives
//===----------------------------------------------------------------------===//

/// `: T` when all types are equal, else the functional form `: (A, B) -> C`.
static ParseResult parseSameTypesImpl(OpAsmParser &parser,
                                      MutableArrayRef<Type *> operands,
                                      Type *result) {
  Type type;
  SMLoc loc = parser.getCurrentLocation();
  if (parser.parseType(type))
    return failure();
  if (auto fn = dyn_cast<FunctionType>(type)) {
    if (fn.getNumInputs() != operands.size() || fn.getNumResults() != 1)
      return parser.emitError(loc) << "expected a function type with "
                                   << operands.size() << " inputs and 1 result";
    for (auto [slot, t] : llvm::zip(operands, fn.getInputs()))
      *slot = t;
    *result = fn.getResult(0);
    return success();
  }
  for (Type *slot : operands)
    *slot = type;
  *result = type;
  return success();
}

static void printSameTypesImpl(OpAsmPrinter &printer, ArrayRef<Type> operands,
                               Type result) {
  if (llvm::all_equal(operands) && operands.front() == result) {
    printer << result;
    return;
  }
  printer << FunctionType::get(result.getContext(), operands, result);
}

static ParseResult parseSameTypes(OpAsmParser &parser, Type &operand,
                                  Type &result) {
  Type *slots[] = {&operand};
  return parseSameTypesImpl(parser, slots, &result);
}
static ParseResult parseSameTypes(OpAsmParser &parser, Type &lhs, Type &rhs,
                                  Type &result) {
  Type *slots[] = {&lhs, &rhs};
  return parseSameTypesImpl(parser, slots, &result);
}
static void printSameTypes(OpAsmPrinter &printer, Operation *, Type operand,
                           Type result) {
  printSameTypesImpl(printer, {operand}, result);
}
static void printSameTypes(OpAsmPrinter &printer, Operation *, Type lhs,
                           Type rhs, Type result) {
  printSameTypesImpl(printer, {lhs, rhs}, result);
}

/// `: T` for operands of type T and a result of T's shape with i1 elements,
/// else the functional form.
static ParseResult parseCompareTypes(OpAsmParser &parser, Type &lhs, Type &rhs,
                                     Type &result) {
  Type type;
  if (parser.parseType(type))
    return failure();
  if (auto fn = dyn_cast<FunctionType>(type)) {
    if (fn.getNumInputs() != 2 || fn.getNumResults() != 1)
      return parser.emitError(parser.getCurrentLocation())
             << "expected a function type with 2 inputs and 1 result";
    lhs = fn.getInput(0);
    rhs = fn.getInput(1);
    result = fn.getResult(0);
    return success();
  }
  lhs = rhs = type;
  auto shaped = dyn_cast<ShapedType>(type);
  if (!shaped)
    return parser.emitError(parser.getCurrentLocation())
           << "expected a tensor type, got " << type;
  result = shaped.clone(IntegerType::get(type.getContext(), 1));
  return success();
}

static void printCompareTypes(OpAsmPrinter &printer, Operation *, Type lhs,
                              Type rhs, Type result) {
  auto shaped = dyn_cast<ShapedType>(lhs);
  if (lhs == rhs && shaped &&
      result == shaped.clone(IntegerType::get(lhs.getContext(), 1))) {
    printer << lhs;
    return;
  }
  printer << FunctionType::get(lhs.getContext(), {lhs, rhs}, {result});
}

/// `[start:limit(:stride)?, …]`; the stride is printed only when it is not 1.
static ParseResult parseSliceRanges(OpAsmParser &parser,
                                    DenseI64ArrayAttr &start,
                                    DenseI64ArrayAttr &limit,
                                    DenseI64ArrayAttr &strides) {
  SmallVector<int64_t> starts, limits, steps;
  auto parseRange = [&]() -> ParseResult {
    int64_t s, l, st = 1;
    if (parser.parseInteger(s) || parser.parseColon() || parser.parseInteger(l))
      return failure();
    if (succeeded(parser.parseOptionalColon()) && parser.parseInteger(st))
      return failure();
    starts.push_back(s);
    limits.push_back(l);
    steps.push_back(st);
    return success();
  };
  if (parser.parseCommaSeparatedList(OpAsmParser::Delimiter::Square, parseRange))
    return failure();
  MLIRContext *ctx = parser.getContext();
  start = DenseI64ArrayAttr::get(ctx, starts);
  limit = DenseI64ArrayAttr::get(ctx, limits);
  strides = DenseI64ArrayAttr::get(ctx, steps);
  return success();
}

static void printSliceRanges(OpAsmPrinter &printer, Operation *,
                             DenseI64ArrayAttr start, DenseI64ArrayAttr limit,
                             DenseI64ArrayAttr strides) {
  printer << "[";
  for (int64_t i = 0, e = start.size(); i < e; ++i) {
    if (i)
      printer << ", ";
    printer << start[i] << ":" << (i < limit.size() ? limit[i] : 0);
    if (i < strides.size() && strides[i] != 1)
      printer << ":" << strides[i];
  }
  printer << "]";
}

//===----------------------------------------------------------------------===//
// Elementwise verifiers
//===----------------------------------------------------------------------===//

LogicalResult CastOp::verify() {
  auto in = tensorType(getOperand()), out = tensorType(getResult());
  if (in.getShape() != out.getShape())
    return emitOpError() << "result type " << out
                         << " must have the shape of operand type " << in;
  return success();
}

LogicalResult CompareOp::verify() {
  auto lhs = tensorType(getLhs()), rhs = tensorType(getRhs());
  if (lhs != rhs)
    return emitOpError() << "operand types differ: " << lhs << " vs " << rhs;
  auto res = tensorType(getResult());
  if (res.getShape() != lhs.getShape())
    return emitOpError() << "result type " << res
                         << " must have the shape of operand type " << lhs;
  return success();
}

LogicalResult SelectOp::verify() {
  auto onTrue = tensorType(getOnTrue()), onFalse = tensorType(getOnFalse());
  auto res = tensorType(getResult()), cond = tensorType(getCond());
  if (onTrue != onFalse)
    return emitOpError() << "branch types differ: " << onTrue << " vs " << onFalse;
  if (res != onTrue)
    return emitOpError() << "result type " << res << " does not match branch type "
                         << onTrue;
  if (cond.getShape() != res.getShape())
    return emitOpError() << "condition type " << cond
                         << " must have the shape of result type " << res;
  return success();
}

//===----------------------------------------------------------------------===//
// Shape op verifiers
//===----------------------------------------------------------------------===//

LogicalResult ReshapeOp::verify() {
  auto in = tensorType(getOperand()), out = tensorType(getResult());
  if (in.getElementType() != out.getElementType())
    return emitOpError() << "element types differ: " << in << " vs " << out;
  if (in.getNumElements() != out.getNumElements())
    return emitOpError() << "cannot reshape " << in << " (" << in.getNumElements()
                         << " elements) to " << out << " (" << out.getNumElements()
                         << " elements)";
  return success();
}

LogicalResult TransposeOp::verify() {
  auto in = tensorType(getOperand()), out = tensorType(getResult());
  ArrayRef<int64_t> perm = getPermutation();
  if (static_cast<int64_t>(perm.size()) != in.getRank())
    return emitOpError() << "permutation " << shapeString(perm) << " has "
                         << perm.size() << " entries for operand type " << in;
  llvm::SmallSet<int64_t, 8> seen;
  for (int64_t p : perm)
    if (p < 0 || p >= in.getRank() || !seen.insert(p).second)
      return emitOpError() << "permutation " << shapeString(perm)
                           << " is not a permutation of [0, " << in.getRank() << ")";
  SmallVector<int64_t> expected;
  for (int64_t p : perm)
    expected.push_back(in.getDimSize(p));
  if (out.getElementType() != in.getElementType() || out.getShape() != ArrayRef(expected))
    return emitOpError() << "result type " << out << " does not match operand type "
                         << in << " permuted by " << shapeString(perm)
                         << " (expected shape " << shapeString(expected) << ")";
  return success();
}

LogicalResult SliceOp::verify() {
  auto in = tensorType(getOperand()), out = tensorType(getResult());
  ArrayRef<int64_t> start = getStartIndices(), limit = getLimitIndices(),
                    strides = getStrides();
  int64_t rank = in.getRank();
  if (static_cast<int64_t>(start.size()) != rank ||
      static_cast<int64_t>(limit.size()) != rank ||
      static_cast<int64_t>(strides.size()) != rank)
    return emitOpError() << "slice ranges have " << start.size()
                         << " entries for operand type " << in << " of rank " << rank;
  SmallVector<int64_t> expected;
  for (int64_t d = 0; d < rank; ++d) {
    if (strides[d] <= 0)
      return emitOpError() << "stride " << strides[d] << " of dimension " << d
                           << " must be positive";
    if (start[d] < 0 || start[d] > limit[d] || limit[d] > in.getDimSize(d))
      return emitOpError() << "range " << start[d] << ":" << limit[d]
                           << " of dimension " << d << " is outside operand type "
                           << in;
    expected.push_back((limit[d] - start[d] + strides[d] - 1) / strides[d]);
  }
  if (out.getElementType() != in.getElementType() || out.getShape() != ArrayRef(expected))
    return emitOpError() << "result type " << out << " does not match the slice of "
                         << in << " (expected shape " << shapeString(expected) << ")";
  return success();
}

LogicalResult ConcatOp::verify() {
  if (getInputs().empty())
    return emitOpError() << "needs at least one input";
  auto first = tensorType(getInputs().front()), out = tensorType(getResult());
  int64_t dim = getDim();
  if (dim < 0 || dim >= first.getRank())
    return emitOpError() << "dim " << dim << " is outside the rank of input type "
                         << first;
  SmallVector<int64_t> expected(first.getShape());
  expected[dim] = 0;
  for (auto [i, input] : llvm::enumerate(getInputs())) {
    auto t = tensorType(input);
    if (t.getElementType() != first.getElementType() || t.getRank() != first.getRank())
      return emitOpError() << "input #" << i << " type " << t
                           << " does not match input #0 type " << first;
    for (int64_t d = 0; d < t.getRank(); ++d)
      if (d != dim && t.getDimSize(d) != first.getDimSize(d))
        return emitOpError() << "input #" << i << " type " << t
                             << " differs from input #0 type " << first
                             << " in dimension " << d << " (only dim " << dim
                             << " may differ)";
    expected[dim] += t.getDimSize(dim);
  }
  if (out.getElementType() != first.getElementType() ||
      out.getShape() != ArrayRef(expected))
    return emitOpError() << "result type " << out
                         << " does not match the concatenation (expected shape "
                         << shapeString(expected) << " of " << first.getElementType()
                         << ")";
  return success();
}

LogicalResult BroadcastInDimOp::verify() {
  auto in = tensorType(getOperand()), out = tensorType(getResult());
  ArrayRef<int64_t> dims = getDims();
  if (in.getElementType() != out.getElementType())
    return emitOpError() << "element types differ: " << in << " vs " << out;
  if (static_cast<int64_t>(dims.size()) != in.getRank())
    return emitOpError() << "dims " << shapeString(dims) << " has " << dims.size()
                         << " entries for operand type " << in;
  if (failed(verifyDimList(*this, "dims", dims, out.getRank())))
    return failure();
  for (auto [i, d] : llvm::enumerate(dims))
    if (in.getDimSize(i) != 1 && in.getDimSize(i) != out.getDimSize(d))
      return emitOpError() << "operand type " << in << " dimension " << i
                           << " (size " << in.getDimSize(i)
                           << ") cannot broadcast to result type " << out
                           << " dimension " << d << " (size " << out.getDimSize(d)
                           << ")";
  return success();
}

LogicalResult IotaOp::verify() {
  auto out = tensorType(getResult());
  if (static_cast<int64_t>(getDim()) < 0 || static_cast<int64_t>(getDim()) >= out.getRank())
    return emitOpError() << "dim " << getDim() << " is outside the rank of result type "
                         << out;
  return success();
}

//===----------------------------------------------------------------------===//
// Reductions
//===----------------------------------------------------------------------===//

static LogicalResult verifyReduction(Operation *op, ArrayRef<int64_t> dims) {
  auto in = tensorType(op->getOperand(0)), out = tensorType(op->getResult(0));
  if (failed(verifyDimList(op, "dims", dims, in.getRank())))
    return failure();
  SmallVector<int64_t> expected;
  for (int64_t d = 0; d < in.getRank(); ++d)
    if (!llvm::is_contained(dims, d))
      expected.push_back(in.getDimSize(d));
  if (out.getElementType() != in.getElementType() || out.getShape() != ArrayRef(expected))
    return op->emitOpError() << "result type " << out << " does not match operand type "
                             << in << " reduced over " << shapeString(dims)
                             << " (expected shape " << shapeString(expected) << ")";
  return success();
}

LogicalResult ReduceSumOp::verify() { return verifyReduction(*this, getDims()); }
LogicalResult ReduceMaxOp::verify() { return verifyReduction(*this, getDims()); }
LogicalResult ReduceMeanOp::verify() { return verifyReduction(*this, getDims()); }

//===----------------------------------------------------------------------===//
// Matmul
//===----------------------------------------------------------------------===//

LogicalResult MatmulOp::verify() {
  auto a = tensorType(getLhs()), b = tensorType(getRhs()), c = tensorType(getResult());
  if (a.getRank() < 2 || b.getRank() < 2)
    return emitOpError() << "operands must have rank >= 2, got " << a << " and " << b;
  if (a.getElementType() != b.getElementType())
    return emitOpError() << "operand element types differ: " << a << " vs " << b;
  Type in = a.getElementType(), outElt = c.getElementType();
  bool lowToF32 = (in.isBF16() || in.isF16()) && outElt.isF32();
  if (outElt != in && !lowToF32)
    return emitOpError() << "result type " << c << " has element type " << outElt
                         << "; expected " << in << " (or f32 for bf16/f16 operands)";
  int64_t ra = a.getRank(), rb = b.getRank();
  ArrayRef<int64_t> batchA = a.getShape().drop_back(2), batchB = b.getShape().drop_back(2);
  if (ra > 2 && rb > 2 && batchA != batchB)
    return emitOpError() << "batch dimensions differ: " << a << " vs " << b;
  int64_t m = getTransposeA() ? a.getDimSize(ra - 1) : a.getDimSize(ra - 2);
  int64_t ka = getTransposeA() ? a.getDimSize(ra - 2) : a.getDimSize(ra - 1);
  int64_t kb = getTransposeB() ? b.getDimSize(rb - 1) : b.getDimSize(rb - 2);
  int64_t n = getTransposeB() ? b.getDimSize(rb - 2) : b.getDimSize(rb - 1);
  if (ka != kb)
    return emitOpError() << "contracting dimensions differ: " << a
                         << (getTransposeA() ? " (transposed)" : "") << " has K=" << ka
                         << ", " << b << (getTransposeB() ? " (transposed)" : "")
                         << " has K=" << kb;
  SmallVector<int64_t> expected(ra > 2 ? batchA : batchB);
  expected.push_back(m);
  expected.push_back(n);
  if (c.getShape() != ArrayRef(expected))
    return emitOpError() << "result type " << c << " does not match " << a << " x " << b
                         << " (expected shape " << shapeString(expected) << ")";
  if (Value biasValue = getBias()) {
    auto bias = tensorType(biasValue);
    if (bias.getRank() != 1 || bias.getDimSize(0) != n || bias.getElementType() != outElt)
      return emitOpError() << "bias type " << bias << " must be a vector of the result's " << n
                           << " columns of " << outElt << " (result type " << c << ")";
  }
  return success();
}

//===----------------------------------------------------------------------===//
// Composites
//===----------------------------------------------------------------------===//

/// A gather's or scatter-add's table [g…, V, C] (`what`: "table" or
/// "result") against its ids [g…, i…]: the table's batch dimensions lead
/// the ids'.
static LogicalResult verifyBatchedTable(Operation *op, StringRef what, RankedTensorType table,
                                        RankedTensorType ids) {
  if (table.getRank() < 2)
    return op->emitOpError() << what << " type " << table
                             << " must be [g…, V, C] (a matrix, or a batch of them)";
  int64_t batch = table.getRank() - 2;
  if (ids.getRank() < batch || ids.getShape().take_front(batch) != table.getShape().take_front(batch))
    return op->emitOpError() << "ids type " << ids << " must start with the table's " << batch
                             << " batch dimensions (" << what << " type " << table << ")";
  return success();
}

LogicalResult EmbeddingOp::verify() {
  auto table = tensorType(getTable()), ids = tensorType(getIds()),
       out = tensorType(getResult());
  if (failed(verifyBatchedTable(*this, "table", table, ids)))
    return failure();
  SmallVector<int64_t> expected(ids.getShape());
  expected.push_back(table.getShape().back());
  if (out.getElementType() != table.getElementType() ||
      out.getShape() != ArrayRef(expected))
    return emitOpError() << "result type " << out << " does not match table type "
                         << table << " gathered by ids type " << ids
                         << " (expected shape " << shapeString(expected) << ")";
  return success();
}

/// Checks a per-channel parameter (norm weight or bias) against x [..., C].
static LogicalResult verifyChannelParam(Operation *op, StringRef name, Value param,
                                        RankedTensorType x) {
  auto t = tensorType(param);
  auto expected = RankedTensorType::get({x.getShape().back()}, x.getElementType());
  if (t != expected)
    return op->emitOpError() << name << " type " << t << " must be " << expected
                             << " to match input type " << x;
  return success();
}

/// Checks a statistics result: x's shape without its last dimension, in f32
/// (f64 for f64 inputs).
static LogicalResult verifyRowStats(Operation *op, StringRef name, Value stats,
                                    RankedTensorType x) {
  auto t = tensorType(stats);
  auto expected = RankedTensorType::get(x.getShape().drop_back(),
                                        statsElementType(x.getElementType()));
  if (t != expected)
    return op->emitOpError() << name << " type " << t << " must be " << expected
                             << " for input type " << x;
  return success();
}

/// Whether `narrow` is `wide`'s type, or for an f32 `wide` its shape in
/// bf16/f16: a norm's output and a norm gradient's dy, where kiln-fuse
/// folds a narrowing (or widening) cast into the norm.
static bool sameOrNarrowedF32(RankedTensorType wide, RankedTensorType narrow) {
  Type w = wide.getElementType(), n = narrow.getElementType();
  return narrow.getShape() == wide.getShape() &&
         (n == w || (w.isF32() && (n.isBF16() || n.isF16())));
}

/// A norm's output has the input's type, or for f32 input a bf16/f16
/// one (the normalized f32 value rounded: kiln-fuse's folded cast).
static LogicalResult verifyNorm(Operation *op, RankedTensorType x, Value y) {
  if (x.getRank() < 1)
    return op->emitOpError() << "input type " << x << " must have rank >= 1";
  if (!sameOrNarrowedF32(x, tensorType(y)))
    return op->emitOpError() << "output type " << y.getType() << " does not match input type "
                             << x << " (nor is it its shape in bf16/f16 for an f32 input)";
  return success();
}

LogicalResult LayerNormOp::verify() {
  auto x = tensorType(getX());
  if (failed(verifyNorm(*this, x, getY())) ||
      failed(verifyChannelParam(*this, "weight", getWeight(), x)) ||
      failed(verifyChannelParam(*this, "bias", getBias(), x)) ||
      failed(verifyRowStats(*this, "mean", getMean(), x)) ||
      failed(verifyRowStats(*this, "rstd", getRstd(), x)))
    return failure();
  return success();
}

LogicalResult RmsNormOp::verify() {
  auto x = tensorType(getX());
  if (failed(verifyNorm(*this, x, getY())) ||
      failed(verifyChannelParam(*this, "weight", getWeight(), x)) ||
      failed(verifyRowStats(*this, "rstd", getRstd(), x)))
    return failure();
  return success();
}

LogicalResult RopeOp::verify() {
  auto x = tensorType(getOperand());
  if (x.getRank() < 2 || x.getShape().back() % 2 != 0 || x.getShape().back() == 0)
    return emitOpError() << "operand type " << x
                         << " must be [..., T, D] with an even head dimension D";
  if (getTheta().convertToFloat() <= 0.0f)
    return emitOpError() << "theta must be positive";
  if (auto d = getPositionDim();
      d && (static_cast<int64_t>(*d) < 0 || static_cast<int64_t>(*d) > x.getRank() - 2))
    return emitOpError() << "position_dim " << static_cast<int64_t>(*d) << " must be in [0, "
                         << x.getRank() - 2 << "] for operand type " << x
                         << " (the last dimension is D)";
  return success();
}

LogicalResult MoeRouteOp::verify() {
  auto probs = tensorType(getProbs());
  if (probs.getRank() < 2)
    return emitOpError() << "probs type " << probs
                         << " must be [g…, N, E] (groups, tokens, experts)";
  int64_t n = numTokens(), e = numExperts();
  SmallVector<int64_t> groups(probs.getShape().drop_back(2));
  auto withGroups = [&](std::initializer_list<int64_t> tail) {
    SmallVector<int64_t> shape = groups;
    shape.append(tail);
    return shape;
  };
  int64_t k = static_cast<int64_t>(getTopK()), c = static_cast<int64_t>(getCapacity());
  if (k < 1 || k > e)
    return emitOpError() << "top_k " << k << " must be in [1, " << e << "] (the experts)";
  if (c < 1)
    return emitOpError() << "capacity " << c << " must be at least 1";
  // Slots and tokens count up to E·capacity and N, which must fit the ids.
  auto fits = [](Value v, int64_t largest) {
    unsigned bits = tensorType(v).getElementType().getIntOrFloatBitWidth();
    return bits >= 64 || largest <= std::numeric_limits<int32_t>::max();
  };
  auto expect = [&](Value v, ArrayRef<int64_t> shape, StringRef name) -> LogicalResult {
    if (tensorType(v).getShape() != shape)
      return emitOpError() << name << " type " << tensorType(v) << " must have shape ["
                           << llvm::make_range(shape.begin(), shape.end()) << "]";
    return success();
  };
  if (failed(expect(getExpert(), withGroups({n, k}), "expert")) ||
      failed(expect(getSlot(), withGroups({n, k}), "slot")) ||
      failed(expect(getToken(), withGroups({e * c}), "token")))
    return failure();
  Type index = tensorType(getExpert()).getElementType();
  if (tensorType(getSlot()).getElementType() != index ||
      tensorType(getToken()).getElementType() != index)
    return emitOpError() << "expert, slot and token must share one integer type";
  if (!fits(getSlot(), e * c) || !fits(getToken(), n))
    return emitOpError() << "slots (" << e * c << ") or tokens (" << n
                         << ") do not fit the i32 results; use i64";
  return success();
}

int64_t CrossEntropyOp::getNumValidClasses() {
  if (auto valid = getValidClasses())
    return *valid;
  return tensorType(getLogits()).getShape().back();
}

LogicalResult CrossEntropyOp::verify() {
  auto logits = tensorType(getLogits()), targets = tensorType(getTargets());
  if (logits.getRank() < 1)
    return emitOpError() << "logits type " << logits << " must have rank >= 1";
  if (targets.getShape() != logits.getShape().drop_back())
    return emitOpError() << "targets type " << targets
                         << " must have the shape of logits type " << logits
                         << " without its last dimension";
  if (failed(verifyRowStats(*this, "loss", getLoss(), logits)) ||
      failed(verifyRowStats(*this, "lse", getLse(), logits)))
    return failure();
  int64_t v = logits.getShape().back();
  if (auto valid = getValidClasses();
      valid && (static_cast<int64_t>(*valid) <= 0 || static_cast<int64_t>(*valid) > v))
    return emitOpError() << "valid_classes " << *valid << " must be in [1, " << v
                         << "] for logits type " << logits;
  return success();
}

AttentionDims kiln::attentionDims(Value q, Value k, Value v, bool sequenceMajor) {
  auto qs = cast<RankedTensorType>(q.getType()).getShape(),
       ks = cast<RankedTensorType>(k.getType()).getShape(),
       vs = cast<RankedTensorType>(v.getType()).getShape();
  int hd = sequenceMajor ? 2 : 1, sd = sequenceMajor ? 1 : 2;
  return {qs[0], qs[hd], ks[hd], qs[sd], ks[sd], qs[3], vs[3], sequenceMajor};
}

AttentionDims kiln::attentionDims(Value qkv) {
  auto s = cast<RankedTensorType>(qkv.getType()).getShape();
  return {s[0], s[2], s[2], s[1], s[1], s[4], s[4], /*sequenceMajor=*/true, /*packed=*/true};
}

/// Checks qkv, out, lse (and segments) of kiln.attention_qkv(_grad).
static LogicalResult verifyPackedAttention(Operation *op, Value qkvv, Value outv, Value lsev,
                                           Value segments) {
  auto qkv = tensorType(qkvv), out = tensorType(outv), lse = tensorType(lsev);
  if (qkv.getRank() != 5 || qkv.getDimSize(3) != 3)
    return op->emitOpError() << "qkv must be [B, T, H, 3, D] (q, k and v of each head "
                                "one after another); got "
                             << qkv;
  AttentionDims a = attentionDims(qkvv);
  auto expectedOut = RankedTensorType::get({a.b, a.tq, a.h, a.d}, qkv.getElementType());
  if (out != expectedOut)
    return op->emitOpError() << "output type " << out << " must be " << expectedOut;
  auto expectedLse =
      RankedTensorType::get({a.b, a.h, a.tq}, statsElementType(qkv.getElementType()));
  if (lse != expectedLse)
    return op->emitOpError() << "lse type " << lse << " must be " << expectedLse;
  if (segments) {
    auto seg = tensorType(segments);
    if (seg.getShape() != ArrayRef<int64_t>({a.b, a.tq}))
      return op->emitOpError() << "segments type " << seg << " must be [B, T] = [" << a.b
                               << ", " << a.tq << "] for qkv " << qkv;
  }
  return success();
}

LogicalResult AttentionQkvOp::verify() {
  return verifyPackedAttention(*this, getQkv(), getOut(), getLse(), getSegments());
}

/// Checks q, k, v, out and lse of an attention (forward or backward).
static LogicalResult verifyAttention(Operation *op, Value qv, Value kv, Value vv,
                                     Value outv, Value lsev, Value segments, bool causal,
                                     std::optional<StringRef> layout) {
  auto q = tensorType(qv), k = tensorType(kv), v = tensorType(vv);
  auto out = tensorType(outv), lse = tensorType(lsev);
  if (layout && *layout != "bthd" && *layout != "bhtd")
    return op->emitOpError() << "layout must be \"bhtd\" (the default) or \"bthd\"; got \""
                             << *layout << "\"";
  bool seqMajor = layout && *layout == "bthd";
  const char *form = seqMajor ? "[B, T, H, D] (layout bthd)" : "[B, H, T, D]";
  if (q.getRank() != 4 || k.getRank() != 4 || v.getRank() != 4)
    return op->emitOpError() << "q, k and v must be " << form << "; got " << q << ", " << k
                             << ", " << v;
  if (k.getElementType() != q.getElementType() || v.getElementType() != q.getElementType())
    return op->emitOpError() << "element types of q " << q << ", k " << k << " and v " << v
                             << " differ";
  AttentionDims dims = attentionDims(qv, kv, vv, seqMajor);
  int64_t b = dims.b, h = dims.h, tq = dims.tq, d = dims.d, hkv = dims.hkv, tk = dims.tk;
  if (k.getDimSize(0) != b || k.getDimSize(3) != d)
    return op->emitOpError() << "k type " << k << " must match q type " << q
                             << " in batch and head dimension";
  if (v.getDimSize(0) != b || v.getDimSize(dims.headDim()) != hkv ||
      v.getDimSize(dims.seqDim()) != tk)
    return op->emitOpError() << "v type " << v << " must match k type " << k
                             << " in batch, heads and sequence length";
  if (hkv == 0 || h % hkv != 0)
    return op->emitOpError() << "query heads (" << h << " in " << q
                             << ") must be a multiple of key/value heads (" << hkv
                             << " in " << k << ")";
  if (causal && tq != tk)
    return op->emitOpError() << "causal attention needs equal query and key lengths; got "
                             << q << " and " << k;
  if (segments) {
    auto seg = tensorType(segments);
    if (tq != tk || seg.getShape() != ArrayRef<int64_t>({b, tq}))
      return op->emitOpError() << "segments type " << seg << " must be [B, T] = [" << b << ", "
                               << tq << "], with equal query and key lengths (q " << q
                               << ", k " << k << ")";
  }
  auto expectedOut = RankedTensorType::get(dims.shape(h, tq, dims.dv), q.getElementType());
  if (out != expectedOut)
    return op->emitOpError() << "output type " << out << " must be " << expectedOut;
  auto expectedLse =
      RankedTensorType::get({b, h, tq}, statsElementType(q.getElementType()));
  if (lse != expectedLse)
    return op->emitOpError() << "lse type " << lse << " must be " << expectedLse;
  return success();
}

LogicalResult AttentionOp::verify() {
  return verifyAttention(*this, getQ(), getK(), getV(), getOut(), getLse(), getSegments(),
                         getCausal(), getLayout());
}

/// Checks that a gradient result has the type of the value it is the
/// gradient of.
static LogicalResult verifyGradType(Operation *op, StringRef name, Value grad,
                                    Value of) {
  if (grad.getType() != of.getType())
    return op->emitOpError() << name << " type " << grad.getType() << " must be "
                             << of.getType();
  return success();
}

//===----------------------------------------------------------------------===//
// Backward ops
//===----------------------------------------------------------------------===//

LogicalResult PadOp::verify() {
  auto in = tensorType(getOperand()), out = tensorType(getResult());
  ArrayRef<int64_t> low = getLow(), high = getHigh(), interior = getInterior();
  int64_t rank = in.getRank();
  if (static_cast<int64_t>(low.size()) != rank || static_cast<int64_t>(high.size()) != rank ||
      static_cast<int64_t>(interior.size()) != rank)
    return emitOpError() << "low, high and interior need " << rank
                         << " entries each for operand type " << in;
  SmallVector<int64_t> expected;
  for (int64_t d = 0; d < rank; ++d) {
    if (low[d] < 0 || high[d] < 0 || interior[d] < 0)
      return emitOpError() << "padding of dimension " << d << " must not be negative";
    int64_t n = in.getDimSize(d);
    expected.push_back(low[d] + high[d] + n + (n > 0 ? (n - 1) * interior[d] : 0));
  }
  if (out.getElementType() != in.getElementType() || out.getShape() != ArrayRef(expected))
    return emitOpError() << "result type " << out << " does not match operand type " << in
                         << " padded (expected shape " << shapeString(expected) << ")";
  return success();
}

/// A norm gradient's dy has x's type, or for f32 x a bf16/f16 one
/// (kiln-fuse's folded widening of a narrowed norm's cotangent).
static LogicalResult verifyNormDy(Operation *op, Value dy, Value x) {
  auto d = tensorType(dy), t = tensorType(x);
  if (!sameOrNarrowedF32(t, d))
    return op->emitOpError() << "dy type " << d << " must be " << t
                             << " (or its shape in bf16/f16 for an f32 input)";
  return success();
}

LogicalResult LayerNormGradOp::verify() {
  auto x = tensorType(getX());
  if (x.getRank() < 1)
    return emitOpError() << "input type " << x << " must have rank >= 1";
  if (failed(verifyChannelParam(*this, "weight", getWeight(), x)) ||
      failed(verifyRowStats(*this, "mean", getMean(), x)) ||
      failed(verifyRowStats(*this, "rstd", getRstd(), x)) ||
      failed(verifyNormDy(*this, getDy(), getX())) ||
      failed(verifyGradType(*this, "dx", getDx(), getX())) ||
      failed(verifyGradType(*this, "dweight", getDweight(), getWeight())) ||
      failed(verifyGradType(*this, "dbias", getDbias(), getWeight())))
    return failure();
  return success();
}

LogicalResult RmsNormGradOp::verify() {
  auto x = tensorType(getX());
  if (x.getRank() < 1)
    return emitOpError() << "input type " << x << " must have rank >= 1";
  if (failed(verifyChannelParam(*this, "weight", getWeight(), x)) ||
      failed(verifyRowStats(*this, "rstd", getRstd(), x)) ||
      failed(verifyNormDy(*this, getDy(), getX())) ||
      failed(verifyGradType(*this, "dx", getDx(), getX())) ||
      failed(verifyGradType(*this, "dweight", getDweight(), getWeight())))
    return failure();
  return success();
}

LogicalResult CrossEntropyGradOp::verify() {
  auto logits = tensorType(getLogits()), targets = tensorType(getTargets());
  if (logits.getRank() < 1)
    return emitOpError() << "logits type " << logits << " must have rank >= 1";
  if (targets.getShape() != logits.getShape().drop_back())
    return emitOpError() << "targets type " << targets
                         << " must have the shape of logits type " << logits
                         << " without its last dimension";
  if (failed(verifyRowStats(*this, "lse", getLse(), logits)) ||
      failed(verifyRowStats(*this, "dloss", getDloss(), logits)) ||
      failed(verifyGradType(*this, "dlogits", getDlogits(), getLogits())))
    return failure();
  int64_t v = logits.getShape().back();
  if (auto valid = getValidClasses();
      valid && (static_cast<int64_t>(*valid) <= 0 || static_cast<int64_t>(*valid) > v))
    return emitOpError() << "valid_classes " << *valid << " must be in [1, " << v
                         << "] for logits type " << logits;
  return success();
}

LogicalResult EmbeddingGradOp::verify() {
  auto ids = tensorType(getIds()), dy = tensorType(getDy()), out = tensorType(getDtable());
  if (failed(verifyBatchedTable(*this, "result", out, ids)))
    return failure();
  SmallVector<int64_t> expected(ids.getShape());
  expected.push_back(out.getShape().back());
  if (dy.getElementType() != out.getElementType() || dy.getShape() != ArrayRef(expected))
    return emitOpError() << "cotangent type " << dy << " does not match ids type " << ids
                         << " and table type " << out << " (expected shape "
                         << shapeString(expected) << ")";
  if (Value init = getInit()) {
    auto in = tensorType(init);
    Type t = in.getElementType();
    bool narrowed = out.getElementType().isF32() && (t.isBF16() || t.isF16());
    if (in.getShape() != out.getShape() || (t != out.getElementType() && !narrowed))
      return emitOpError() << "init type " << init.getType() << " must be the result type " << out
                           << " (or its shape in bf16/f16 for an f32 result)";
  }
  return success();
}

LogicalResult AttentionGradOp::verify() {
  if (failed(verifyAttention(*this, getQ(), getK(), getV(), getOut(), getLse(), getSegments(),
                             getCausal(), getLayout())) ||
      failed(verifyGradType(*this, "dout", getDout(), getOut())) ||
      failed(verifyGradType(*this, "dq", getDq(), getQ())) ||
      failed(verifyGradType(*this, "dk", getDk(), getK())) ||
      failed(verifyGradType(*this, "dv", getDv(), getV())))
    return failure();
  return success();
}

LogicalResult AttentionQkvGradOp::verify() {
  if (failed(verifyPackedAttention(*this, getQkv(), getOut(), getLse(), getSegments())) ||
      failed(verifyGradType(*this, "dout", getDout(), getOut())) ||
      failed(verifyGradType(*this, "dqkv", getDqkv(), getQkv())))
    return failure();
  return success();
}

//===----------------------------------------------------------------------===//
// Training ops
//===----------------------------------------------------------------------===//

/// `whole` and `part` differ only in dimension `dim`, by a whole factor
/// (the split of a collective).
static LogicalResult verifySplit(Operation *op, Type wholeType, Type partType, int64_t dim,
                                 StringRef what) {
  auto whole = cast<RankedTensorType>(wholeType), part = cast<RankedTensorType>(partType);
  bool ok = whole.getElementType() == part.getElementType() && whole.getRank() == part.getRank() &&
            dim >= 0 && dim < whole.getRank();
  for (int64_t d = 0; ok && d < whole.getRank(); ++d)
    ok = d == dim ? part.getDimSize(d) > 0 && whole.getDimSize(d) % part.getDimSize(d) == 0
                  : whole.getDimSize(d) == part.getDimSize(d);
  if (!ok)
    return op->emitOpError() << what << " " << wholeType << " and " << partType
                             << " along dimension " << dim
                             << "; they must differ only in that dimension, by a whole factor";
  return success();
}

/// A collective's group: a mesh axis, or several joined by ',' (each
/// named once, none empty).
static LogicalResult verifyGroup(Operation *op, StringRef axis) {
  SmallVector<StringRef, 2> parts = kiln::groupAxes(axis);
  for (size_t i = 0; i < parts.size(); ++i)
    if (parts[i].empty() || llvm::is_contained(ArrayRef(parts).take_front(i), parts[i]))
      return op->emitOpError() << "group '" << axis
                               << "': name a mesh axis, or several joined by ',' "
                                  "(each once, major first)";
  return success();
}

LogicalResult AllReduceOp::verify() { return verifyGroup(*this, getAxis()); }

LogicalResult AllGatherOp::verify() {
  if (failed(verifyGroup(*this, getAxis())))
    return failure();
  return verifySplit(*this, getResult().getType(), getOperand().getType(),
                     static_cast<int64_t>(getDim()), "gathers into");
}

LogicalResult ReduceScatterOp::verify() {
  if (failed(verifyGroup(*this, getAxis())))
    return failure();
  return verifySplit(*this, getOperand().getType(), getResult().getType(),
                     static_cast<int64_t>(getDim()), "scatters");
}

LogicalResult TakeShardOp::verify() {
  if (failed(verifyGroup(*this, getAxis())))
    return failure();
  return verifySplit(*this, getOperand().getType(), getResult().getType(),
                     static_cast<int64_t>(getDim()), "takes a part of");
}

LogicalResult AllToAllOp::verify() {
  auto in = tensorType(getOperand()), out = tensorType(getResult());
  int64_t rank = in.getRank(), split = static_cast<int64_t>(getSplitDim()),
          concat = static_cast<int64_t>(getConcatDim());
  bool ok = in.getElementType() == out.getElementType() && out.getRank() == rank &&
            split >= 0 && split < rank && concat >= 0 && concat < rank && split != concat &&
            out.getDimSize(split) > 0 && in.getDimSize(split) % out.getDimSize(split) == 0;
  int64_t n = ok ? in.getDimSize(split) / out.getDimSize(split) : 1;
  for (int64_t d = 0; ok && d < rank; ++d)
    ok = d == split || out.getDimSize(d) == (d == concat ? n : 1) * in.getDimSize(d);
  if (!ok)
    return emitOpError() << "exchanges " << in << " into " << out << " splitting dimension "
                         << split << " and concatenating dimension " << concat
                         << "; the result must have the first divided and the second "
                            "multiplied by one whole factor, the rest equal";
  return success();
}

// A pipeline transfer names a stage and a channel, both counted from 0.
template <typename Op> LogicalResult verifyTransfer(Op op) {
  if (static_cast<int64_t>(op.getPeer()) < 0 || static_cast<int64_t>(op.getChannel()) < 0)
    return op.emitOpError() << "peer " << static_cast<int64_t>(op.getPeer()) << " and channel "
                            << static_cast<int64_t>(op.getChannel())
                            << " must both be at least 0";
  if (op.getAxis().empty())
    return op.emitOpError() << "needs the mesh axis its peer is counted along";
  return success();
}

LogicalResult SendOp::verify() { return verifyTransfer(*this); }
LogicalResult RecvOp::verify() { return verifyTransfer(*this); }

LogicalResult GlobalNormOp::verify() {
  if (getInputs().empty())
    return emitOpError() << "needs at least one input";
  bool allF64 = llvm::all_of(getInputs(), [](Value v) {
    return tensorType(v).getElementType().isF64();
  });
  Type elt = allF64 ? Type(Float64Type::get(getContext())) : Float32Type::get(getContext());
  auto expected = RankedTensorType::get({}, elt);
  if (getNorm().getType() != expected)
    return emitOpError() << "result type " << getNorm().getType() << " must be " << expected;
  return success();
}

LogicalResult AdamWUpdateOp::verify() {
  auto p = tensorType(getParam()), g = tensorType(getGrad()), m = tensorType(getM()),
       v = tensorType(getV());
  if (g.getShape() != p.getShape())
    return emitOpError() << "grad type " << g << " must have the shape of param type " << p;
  if (m.getShape() != p.getShape())
    return emitOpError() << "m type " << m << " must have the shape of param type " << p;
  if (v != m)
    return emitOpError() << "v type " << v << " must match m type " << m;
  auto scalar = RankedTensorType::get({}, Float32Type::get(getContext()));
  for (auto [name, value] : {std::pair<StringRef, Value>{"lr", getLr()},
                             {"step", getStep()},
                             {"grad_scale", getGradScale()}})
    if (value.getType() != scalar)
      return emitOpError() << name << " type " << value.getType() << " must be " << scalar;
  if (Value skip = getSkip()) {
    auto flag = RankedTensorType::get({}, IntegerType::get(getContext(), 1));
    if (skip.getType() != flag)
      return emitOpError() << "skip type " << skip.getType() << " must be " << flag;
  }
  if (getNewParam().getType() != p)
    return emitOpError() << "new_param type " << getNewParam().getType()
                         << " must be param type " << p;
  if (getNewM().getType() != m || getNewV().getType() != m)
    return emitOpError() << "new moment types " << getNewM().getType() << " and "
                         << getNewV().getType() << " must be m type " << m;
  if (Value copy = getNewCopy()) {
    auto c = tensorType(copy);
    if (c.getShape() != p.getShape() || c.getElementType() == p.getElementType())
      return emitOpError() << "new_copy type " << c << " must have the shape of param type " << p
                           << " and another element type";
  }
  float b1 = getBeta1().convertToFloat(), b2 = getBeta2().convertToFloat();
  if (!(b1 >= 0.0f && b1 < 1.0f) || !(b2 >= 0.0f && b2 < 1.0f))
    return emitOpError() << "beta1 = " << b1 << " and beta2 = " << b2 << " must be in [0, 1)";
  if (!(getEpsilon().convertToFloat() > 0.0f) || getWeightDecay().convertToFloat() < 0.0f)
    return emitOpError() << "epsilon must be positive and weight_decay non-negative";
  return success();
}

#define GET_OP_CLASSES
#include "ir/KilnOps.cpp.inc"

//===----------------------------------------------------------------------===//
// kiln.fusion
//===----------------------------------------------------------------------===//

YieldOp FusionOp::getYield() { return cast<YieldOp>(getBody().front().getTerminator()); }

bool kiln::sumsOverRows(ReduceSumOp r) {
  auto t = tensorType(r.getOperand());
  auto rows = llvm::to_vector(llvm::seq<int64_t>(0, t.getRank() - 1));
  return r.getDims() == ArrayRef(rows) &&
         tensorType(r.getResult()).getElementType() == t.getElementType();
}

bool kiln::widensToF32(CastOp c) {
  Type in = tensorType(c.getOperand()).getElementType();
  return (in.isBF16() || in.isF16()) && tensorType(c.getResult()).getElementType().isF32();
}

bool kiln::keepsRows(BroadcastInDimOp b) {
  auto in = tensorType(b.getOperand());
  auto out = tensorType(b.getResult());
  return in.getRank() >= 1 && b.getDims().back() == out.getRank() - 1 &&
         in.getShape().back() == out.getShape().back();
}

bool kiln::isPlainElementwise(Operation *op) {
#define KILN_UNARY(Op, fn) isa<Op>(op) ||
#define KILN_BINARY(Op, fn) isa<Op>(op) ||
  return
#include "ir/ElementwiseOps.def"
      false;
}

bool kiln::isNorm(Operation *op) {
  return isa<LayerNormOp, RmsNormOp, LayerNormGradOp, RmsNormGradOp>(op);
}

/// `v` is an argument of `fusion`'s body.
static bool isBodyArgument(FusionOp fusion, Value v) {
  auto arg = dyn_cast<BlockArgument>(v);
  return arg && arg.getOwner() == &fusion.getBody().front();
}

bool FusionOp::isGemmEpilogue() {
  return llvm::any_of(getBodyOps(), [](Operation &op) { return isa<MatmulOp>(op); });
}

FailureOr<GemmEpilogueBody> kiln::matchGemmEpilogue(FusionOp fusion, std::string *why) {
  auto fail = [&](const Twine &reason) -> FailureOr<GemmEpilogueBody> {
    if (why)
      *why = reason.str();
    return failure();
  };
  auto isArg = [&](Value v) { return isBodyArgument(fusion, v); };
  GemmEpilogueBody g;
  SmallVector<Operation *> rest;
  for (Operation &op : fusion.getBodyOps()) {
    if (auto mm = dyn_cast<MatmulOp>(op)) {
      if (g.matmul)
        return fail("it holds two matmuls");
      g.matmul = mm;
    } else {
      rest.push_back(&op);
    }
  }
  if (!g.matmul)
    return fail("it holds no matmul");
  MatmulOp mm = g.matmul;
  auto a = tensorType(mm.getLhs()), c = tensorType(mm.getResult());
  Value rhs = mm.getRhs();
  auto reshape = rhs.getDefiningOp<ReshapeOp>();
  Value rhsSource = reshape ? reshape.getOperand() : rhs;
  if (!isArg(mm.getLhs()) || !isArg(rhsSource) || (mm.getBias() && !isArg(mm.getBias())))
    return fail("the matmul's operands must be the fusion's inputs (the rhs possibly reshaped)");
  if (a.getElementType() != c.getElementType())
    return fail("the matmul changes the element type");
  int64_t rb = tensorType(rhs).getRank();
  bool single = c.getRank() == 2 || (rb == 2 && !mm.getTransposeA());
  if (!single)
    return fail("the matmul is a batch of products, not one GEMM");

  SmallVector<Value> yielded(fusion.getYield().getValues());
  auto yields = [&](Value v) { return llvm::is_contained(yielded, v); };
  auto only = [&](Value v, Operation *user) {
    return llvm::all_of(v.getUsers(), [&](Operation *u) { return u == user || isa<YieldOp>(u); });
  };
  Operation *activation = nullptr;
  SmallVector<CastOp> casts;
  for (Operation *op : rest) {
    if (reshape && op == reshape.getOperation())
      continue;
    if (auto c = dyn_cast<CastOp>(op)) {
      casts.push_back(c);
      continue;
    }
    if (auto r = dyn_cast<ReduceSumOp>(op)) {
      if (g.biasGrad)
        return fail("it holds two reductions");
      g.biasGrad = r;
    } else if (isa<GeluOp, GeluGradOp>(op) && !activation) {
      activation = op;
    } else {
      return fail(Twine("'") + op->getName().getStringRef() +
                  "' is not part of a GEMM epilogue (gelu, gelu_grad, a bias-gradient sum)");
    }
  }
  if (reshape && !only(reshape.getResult(), mm))
    return fail("the reshaped rhs is used by more than the matmul");

  if (auto gelu = dyn_cast_or_null<GeluOp>(activation)) {
    if (gelu.getApproximate() != GeluApproximation::tanh)
      return fail("cuBLASLt's GELU epilogue is the tanh approximation");
    if (gelu.getOperand() != mm.getResult() || !only(mm.getResult(), gelu) || g.biasGrad || reshape)
      return fail("a GELU epilogue is gelu(matmul [+ bias]), its input optionally yielded");
    g.activation = GemmEpilogueBody::Activation::Gelu;
    g.out = gelu.getResult();
    if (yields(mm.getResult()))
      g.preActivation = mm.getResult();
  } else if (auto grad = dyn_cast_or_null<GeluGradOp>(activation)) {
    if (grad.getApproximate() != GeluApproximation::tanh)
      return fail("cuBLASLt's GELU epilogue is the tanh approximation");
    if (grad.getDy() != mm.getResult() || !isArg(grad.getX()) || !only(mm.getResult(), grad) ||
        yields(mm.getResult()) || mm.getBias() || reshape)
      return fail("a GELU-gradient epilogue is gelu_grad(input, matmul)");
    g.activation = GemmEpilogueBody::Activation::GeluGrad;
    g.aux = grad.getX();
    g.out = grad.getResult();
    if (g.biasGrad && (g.biasGrad.getOperand() != g.out || !sumsOverRows(g.biasGrad)))
      return fail("the bias gradient must sum the GELU gradient over all rows");
  } else {
    g.out = mm.getResult();
    if (!g.biasGrad)
      return fail("a GEMM fusion needs an epilogue (gelu, gelu_grad or a bias-gradient sum)");
    if (g.biasGrad.getOperand() != rhsSource || !sumsOverRows(g.biasGrad) || !mm.getTransposeA() ||
        mm.getTransposeB() || rb != 2 || mm.getBias() ||
        tensorType(rhsSource).getShape().back() != tensorType(rhs).getShape().back())
      return fail("a bias-gradient epilogue sums the rhs [K, N] (or the [.., N] it reshapes) over "
                  "its rows, in a matmul transpose_a");
    g.biasGradOfRhs = true;
  }
  if (g.biasGrad)
    g.biasGradOut = g.biasGrad.getResult();
  // Output casts: a weight gradient and its bias gradient both widened to
  // f32 (cuBLASLt writes the product and the vector in the output's type).
  if (!casts.empty()) {
    auto widens = [&](CastOp c, Value from) {
      return c.getOperand() == from && widensToF32(c) && only(from, c) && !yields(from);
    };
    if (!g.biasGradOfRhs || casts.size() != 2)
      return fail("casts in a GEMM epilogue widen both a weight gradient and its bias gradient");
    if (!widens(casts[0], g.out))
      std::swap(casts[0], casts[1]);
    if (!widens(casts[0], g.out) || !widens(casts[1], g.biasGradOut))
      return fail("the casts must widen the product and the bias gradient (bf16/f16 to f32), "
                  "their only use");
    g.out = casts[0].getResult();
    g.biasGradOut = casts[1].getResult();
  }
  if (!yields(g.out) || (g.biasGrad && !yields(g.biasGradOut)))
    return fail("the epilogue's results must be yielded");
  for (auto [i, v] : llvm::enumerate(yielded))
    if ((v != g.out && v != g.preActivation && (!g.biasGrad || v != g.biasGradOut)) ||
        llvm::is_contained(ArrayRef(yielded).take_front(i), v))
      return fail("it yields a value other than the epilogue's results, or one twice");
  return g;
}

bool FusionOp::isNormFusion() {
  return llvm::any_of(getBodyOps(), [](Operation &op) { return isNorm(&op); });
}

FailureOr<NormFusionBody> kiln::matchNormFusion(FusionOp fusion, std::string *why) {
  auto fail = [&](const Twine &reason) -> FailureOr<NormFusionBody> {
    if (why)
      *why = reason.str();
    return failure();
  };
  NormFusionBody n;
  for (Operation &op : fusion.getBodyOps()) {
    if (isNorm(&op)) {
      if (n.norm)
        return fail("it holds two norms");
      n.norm = &op;
      continue;
    }
    auto c = dyn_cast<ConstantOp>(op);
    if (auto r = dyn_cast<ReduceSumOp>(op)) {
      if (n.columnSum)
        return fail("it holds two column sums (a norm gradient's kernel accumulates at most one)");
      n.columnSum = r;
      continue;
    }
    if (auto cast = dyn_cast<CastOp>(op); cast && n.columnSum && cast.getOperand() == n.columnSum) {
      n.widen = cast;
      continue;
    }
    if (auto b = dyn_cast<BroadcastInDimOp>(op)) {
      // Read through its index map a row at a time.
      if (!isBodyArgument(fusion, b.getOperand()) || !keepsRows(b))
        return fail("a broadcast must keep the rows of a body argument whole");
      n.elementwise.push_back(&op);
      continue;
    }
    if (!op.hasTrait<OpTrait::Elementwise>() && !(c && isa<SplatElementsAttr>(c.getValue())))
      return fail("'" + op.getName().getStringRef() +
                  "' is neither elementwise nor a splat constant");
    n.elementwise.push_back(&op);
  }
  if (!n.norm)
    return fail("it holds no norm");
  n.backward = isa<LayerNormGradOp, RmsNormGradOp>(n.norm);
  n.center = isa<LayerNormOp, LayerNormGradOp>(n.norm);
  Operation *norm = n.norm;
  auto rowType = tensorType(n.backward ? norm->getResult(0) : norm->getOperand(0));
  if (rowType.getRank() < 2)
    return fail("the norm's rows are not a tensor of rank 2 or more");
  auto isArg = [&](Value v) { return isBodyArgument(fusion, v); };
  for (Operation *op : n.elementwise) {
    if (op->isBeforeInBlock(norm) == n.backward)
      return fail(n.backward ? "an elementwise op comes before the norm's gradient"
                             : "an elementwise op comes after the norm");
    for (Value v : op->getResults())
      if (tensorType(v).getShape() != rowType.getShape())
        return fail("an elementwise value does not have the norm's row shape");
  }
  YieldOp yield = fusion.getYield();
  auto yielded = [&](Value v) { return llvm::is_contained(yield.getValues(), v); };
  if (n.backward) {
    if (!llvm::all_of(norm->getOperands(), isArg))
      return fail("the norm gradient's operands must be body arguments");
    for (Value v : norm->getResults().drop_front())
      if (!yielded(v))
        return fail("the norm's weight (and bias) gradients must be yielded");
    for (Operation *op : n.elementwise)
      for (Value v : op->getOperands())
        if (!isArg(v) && !v.getDefiningOp<ConstantOp>() && v != norm->getResult(0) &&
            !llvm::is_contained(n.elementwise, v.getDefiningOp()))
          return fail("an elementwise op reads a norm gradient result other than dx");
    if (ReduceSumOp sum = n.columnSum) {
      Value from = sum.getOperand();
      if (from != norm->getResult(0) && !llvm::is_contained(n.elementwise, from.getDefiningOp()))
        return fail("the column sum must read dx or an elementwise value");
      if (!sumsOverRows(sum) || !isa<FloatType>(tensorType(from).getElementType()))
        return fail("the column sum must sum floats over every dimension but the last, in the "
                    "element type it reads");
      n.columnSumOut = sum.getResult();
      if (n.widen) {
        if (!widensToF32(n.widen) || !sum->hasOneUse())
          return fail("a cast of the column sum must widen it (bf16/f16 to f32), its only use");
        n.columnSumOut = n.widen.getResult();
      }
      for (Operation *user : n.columnSumOut.getUsers())
        if (!isa<YieldOp>(user))
          return fail("an op of the body reads the column sum");
      if (!yielded(n.columnSumOut))
        return fail("the column sum must be yielded");
    }
  } else {
    if (n.columnSum)
      return fail("a column sum belongs to a norm gradient's fusion, not a forward norm's");
    if (!llvm::all_of(norm->getOperands().drop_front(), isArg))
      return fail("the norm's weight and bias must be body arguments");
    Value x = norm->getOperand(0);
    if (!isArg(x) && !llvm::is_contained(n.elementwise, x.getDefiningOp()))
      return fail("the norm's input is neither a body argument nor an elementwise value");
    for (Value v : norm->getResults())
      for (Operation *user : v.getUsers())
        if (!isa<YieldOp>(user))
          return fail("an op of the body reads the norm's results");
    if (!yielded(norm->getResult(0)))
      return fail("the norm's output must be yielded");
  }
  return n;
}

bool FusionOp::isCrossEntropyFusion() {
  return llvm::any_of(getBodyOps(), [](Operation &op) { return isa<CrossEntropyGradOp>(op); });
}

FailureOr<CrossEntropyFusionBody> kiln::matchCrossEntropyFusion(FusionOp fusion, std::string *why) {
  auto fail = [&](const Twine &reason) -> FailureOr<CrossEntropyFusionBody> {
    if (why)
      *why = reason.str();
    return failure();
  };
  auto ops = llvm::to_vector(llvm::make_pointer_range(fusion.getBodyOps()));
  if (ops.size() != 2)
    return fail("its body is not a cross_entropy and its gradient");
  auto forward = dyn_cast<CrossEntropyOp>(ops[0]);
  auto grad = dyn_cast<CrossEntropyGradOp>(ops[1]);
  if (!forward || !grad)
    return fail("its body is not a cross_entropy and its gradient");
  auto isArg = [&](Value v) { return isBodyArgument(fusion, v); };
  if (!isArg(forward.getLogits()) || !isArg(forward.getTargets()) || !isArg(grad.getDloss()))
    return fail("the logits, targets and dloss must be body arguments");
  if (grad.getLogits() != forward.getLogits() || grad.getTargets() != forward.getTargets() ||
      grad.getLse() != forward.getLse())
    return fail("the gradient must read the forward's logits, targets and lse");
  if (grad.getValidClasses() != forward.getValidClasses())
    return fail("the forward and the gradient count different valid classes");
  YieldOp yield = fusion.getYield();
  if (!llvm::is_contained(yield.getValues(), forward.getLoss()) ||
      !llvm::is_contained(yield.getValues(), grad.getDlogits()))
    return fail("the loss and dlogits must be yielded");
  return CrossEntropyFusionBody{forward, grad};
}

bool FusionOp::isAttentionGradFusion() {
  return llvm::any_of(getBodyOps(), [](Operation &op) { return isa<AttentionQkvGradOp>(op); });
}

FailureOr<AttentionGradFusionBody> kiln::matchAttentionGradFusion(FusionOp fusion,
                                                                  std::string *why) {
  auto fail = [&](const Twine &reason) -> FailureOr<AttentionGradFusionBody> {
    if (why)
      *why = reason.str();
    return failure();
  };
  AttentionGradFusionBody a;
  for (Operation &op : fusion.getBodyOps()) {
    if (auto g = dyn_cast<AttentionQkvGradOp>(op); g && !a.grad)
      a.grad = g;
    else if (auto r = dyn_cast<ReshapeOp>(op); r && !a.reshape)
      a.reshape = r;
    else if (auto s = dyn_cast<ReduceSumOp>(op); s && !a.sum)
      a.sum = s;
    else if (auto c = dyn_cast<CastOp>(op); c && !a.widen)
      a.widen = c;
    else
      return fail("its body holds " + op.getName().getStringRef() +
                  " beside an attention_qkv_grad, a reshape, a reduce_sum and a cast");
  }
  if (!a.grad || !a.sum)
    return fail("its body is not an attention_qkv_grad and a column sum of its dqkv");
  for (Value v : a.grad->getOperands())
    if (!isBodyArgument(fusion, v))
      return fail("the attention gradient's operands must be body arguments");
  Value dqkv = a.grad.getDqkv();
  auto qkvType = cast<RankedTensorType>(dqkv.getType());
  ArrayRef<int64_t> s = qkvType.getShape(); // [B, T, H, 3, D]
  int64_t width = s[2] * s[3] * s[4];
  auto summed = cast<RankedTensorType>(a.sum.getOperand().getType());
  ArrayRef<int64_t> dims = a.sum.getDims();
  bool overRows = !dims.empty() && static_cast<int64_t>(dims.size()) == summed.getRank() - 1 &&
                  llvm::all_of(llvm::enumerate(dims),
                               [](auto d) { return d.value() == static_cast<int64_t>(d.index()); });
  if (a.reshape) {
    if (a.reshape.getOperand() != dqkv || a.sum.getOperand() != a.reshape.getResult())
      return fail("the reshape must be of dqkv and the sum's operand");
    if (!overRows || summed.getShape().back() != width)
      return fail("the sum must be over every dimension of dqkv as [.., 3·H·D] but the last");
  } else if (a.sum.getOperand() != dqkv || dims != ArrayRef<int64_t>{0, 1}) {
    return fail("the sum must be of dqkv over its dimensions [0, 1]");
  }
  Type low = qkvType.getElementType();
  auto sumType = cast<RankedTensorType>(a.sum.getType());
  if (sumType.getElementType() != low)
    return fail("the sum must be in dqkv's element type");
  a.sumOut = a.sum.getResult();
  if (a.widen) {
    if (a.widen.getOperand() != a.sum.getResult() || !isa<BFloat16Type, Float16Type>(low) ||
        !cast<RankedTensorType>(a.widen.getType()).getElementType().isF32())
      return fail("the cast must widen the bf16/f16 sum to f32");
    a.sumOut = a.widen.getResult();
  }
  auto yielded = fusion.getYield().getValues();
  if (yielded.size() != 2 || yielded[0] != dqkv || yielded[1] != a.sumOut)
    return fail("it must yield dqkv and the (widened) sum, in that order");
  for (Operation *user : dqkv.getUsers())
    if (user != a.reshape && user != a.sum && !isa<YieldOp>(user))
      return fail("dqkv has another reader in the body");
  if ((a.widen && !a.sum->hasOneUse()) || (a.reshape && !a.reshape->hasOneUse()))
    return fail("the sum and the reshape must have one reader each");
  return a;
}

bool kiln::isReduction(Operation *op) { return isa<ReduceSumOp, ReduceMaxOp, ReduceMeanOp>(op); }

bool FusionOp::isReductionFusion() {
  return !isGemmEpilogue() && !isNormFusion() && !isCrossEntropyFusion() &&
         !isAttentionGradFusion() &&
         llvm::any_of(getBodyOps(), [](Operation &op) { return isReduction(&op); });
}

FailureOr<ReductionFusionBody> kiln::matchReductionFusion(FusionOp fusion, std::string *why) {
  auto fail = [&](const Twine &reason) -> FailureOr<ReductionFusionBody> {
    if (why)
      *why = reason.str();
    return failure();
  };
  ReductionFusionBody r;
  for (Operation &op : fusion.getBodyOps()) {
    if (isReduction(&op)) {
      if (r.reduce)
        return fail("it holds two reductions (its kernel is one reduction's)");
      r.reduce = &op;
      continue;
    }
    auto c = dyn_cast<ConstantOp>(op);
    auto b = dyn_cast<BroadcastInDimOp>(op);
    if (b && !isBodyArgument(fusion, b.getOperand()))
      return fail("a broadcast must broadcast a body argument");
    if (!b && !op.hasTrait<OpTrait::Elementwise>() && !(c && isa<SplatElementsAttr>(c.getValue())))
      return fail("'" + op.getName().getStringRef() +
                  "' is neither elementwise, a broadcast of a body argument nor a splat constant");
    r.elementwise.push_back(&op);
  }
  if (!r.reduce)
    return fail("it holds no reduction");
  auto loop = tensorType(r.reduce->getOperand(0));
  if (!isa<FloatType>(loop.getElementType()))
    return fail("the reduction's operand is not a float tensor");
  for (Operation *op : r.elementwise)
    for (Value v : op->getResults())
      if (tensorType(v).getShape() != loop.getShape())
        return fail("a value of the body does not have the reduction's operand's shape");
  for (Value v : fusion.getBody().getArguments()) {
    bool throughBroadcast =
        llvm::any_of(v.getUsers(), [](Operation *op) { return isa<BroadcastInDimOp>(op); });
    if (!throughBroadcast && tensorType(v).getShape() != loop.getShape())
      return fail("a body argument does not have the reduction's operand's shape");
  }
  Value result = r.reduce->getResult(0);
  if (llvm::any_of(result.getUsers(), [](Operation *op) { return !isa<YieldOp>(op); }))
    return fail("an op of the body reads the reduction's result");
  YieldOp yield = fusion.getYield();
  if (!llvm::is_contained(yield.getValues(), result))
    return fail("the reduction's result must be yielded");
  for (auto [i, v] : llvm::enumerate(yield.getValues())) {
    if (llvm::is_contained(yield.getValues().take_front(i), v))
      return fail("it yields a value twice");
    if (v != result &&
        (isBodyArgument(fusion, v) || tensorType(v).getShape() != loop.getShape()))
      return fail("a side output must be a value the body computes, of the loop's shape");
  }
  return r;
}

LogicalResult FusionOp::verifyRegions() {
  Block &body = getBody().front();
  if (body.getNumArguments() != getInputs().size())
    return emitOpError() << "has " << getInputs().size() << " inputs but its body takes "
                         << body.getNumArguments() << " arguments";
  for (auto [i, input, arg] : llvm::enumerate(getInputs(), body.getArguments()))
    if (input.getType() != arg.getType())
      return emitOpError() << "input #" << i << " has type " << input.getType()
                           << " but body argument #" << i << " has type " << arg.getType();
  auto yield = body.empty() ? YieldOp() : dyn_cast<YieldOp>(body.back());
  if (!yield)
    return emitOpError() << "body must end in kiln.yield";
  if (yield.getValues().getTypes() != getResultTypes())
    return emitOpError() << "yields " << yield.getValues().getTypes().size()
                         << " values whose types differ from its results'";
  if (getNumResults() == 0)
    return emitOpError() << "must have at least one result";
  // An argument read through a broadcast has one index map: every reader
  // is the same broadcast.
  for (Value v : body.getArguments()) {
    auto readers = llvm::to_vector(v.getUsers());
    auto first = llvm::find_if(readers, [](Operation *op) { return isa<BroadcastInDimOp>(op); });
    if (first == readers.end())
      continue;
    auto broadcast = cast<BroadcastInDimOp>(*first);
    for (Operation *user : readers) {
      auto other = dyn_cast<BroadcastInDimOp>(user);
      if (!other || other.getType() != broadcast.getType() || other.getDims() != broadcast.getDims())
        return emitOpError() << "body argument of type " << v.getType()
                             << " must be read by one kind of broadcast only";
    }
  }
  // A GEMM with an epilogue.
  if (isGemmEpilogue()) {
    std::string why;
    if (failed(matchGemmEpilogue(*this, &why)))
      return emitOpError() << "holds a matmul but is not a GEMM epilogue: " << why;
    return success();
  }
  if (isNormFusion()) {
    std::string why;
    if (failed(matchNormFusion(*this, &why)))
      return emitOpError() << "holds a norm but is not a norm fusion: " << why;
    return success();
  }
  if (isAttentionGradFusion()) {
    std::string why;
    if (failed(matchAttentionGradFusion(*this, &why)))
      return emitOpError() << "holds an attention gradient but is not an attention-gradient "
                              "fusion: "
                           << why;
    return success();
  }
  if (isCrossEntropyFusion()) {
    std::string why;
    if (failed(matchCrossEntropyFusion(*this, &why)))
      return emitOpError() << "holds a cross-entropy gradient but is not a cross-entropy fusion: "
                           << why;
    return success();
  }
  if (isReductionFusion()) {
    std::string why;
    if (failed(matchReductionFusion(*this, &why)))
      return emitOpError() << "holds a reduction but is not a reduction fusion: " << why;
    return success();
  }
  // A loop fusion: every value in the body has the results' shape, but for
  // the arguments read through a broadcast (an index map: the broadcast is
  // never materialized).
  ArrayRef<int64_t> shape = tensorType(getResult(0)).getShape();
  for (Operation &op : body.without_terminator()) {
    bool splat = false;
    if (auto c = dyn_cast<ConstantOp>(op))
      splat = isa<SplatElementsAttr>(c.getValue());
    auto broadcast = dyn_cast<BroadcastInDimOp>(op);
    if (broadcast && !isBodyArgument(*this, broadcast.getOperand()))
      return op.emitOpError() << "in a kiln.fusion body must broadcast a body argument";
    if (!op.hasTrait<OpTrait::Elementwise>() && !splat && !broadcast)
      return op.emitOpError() << "cannot be in a kiln.fusion body: only elementwise ops, "
                                 "broadcasts of its arguments and splat constants can (a "
                                 "loop fusion)";
  }
  for (Value v : body.getArguments()) {
    if (llvm::any_of(v.getUsers(), [](Operation *op) { return isa<BroadcastInDimOp>(op); }))
      continue;
    if (tensorType(v).getShape() != shape)
      return emitOpError() << "body argument of type " << v.getType()
                           << " does not have the results' shape";
  }
  for (Operation &op : body.without_terminator())
    for (Value v : op.getResults())
      if (tensorType(v).getShape() != shape)
        return op.emitOpError() << "result of type " << v.getType()
                                << " does not have the fusion's shape";
  return success();
}
