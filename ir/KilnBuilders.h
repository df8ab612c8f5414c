//===- KilnBuilders.h - create kiln ops with their result types inferred ---===//
//
// Thin helpers over `OpTy::create` that compute result types from operand
// types, used by the VJP rules, the passes and the frontend. They do not
// broadcast: operands must already agree (the frontend adds NumPy-style
// broadcasting on top).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_IR_KILNBUILDERS_H
#define KILN_IR_KILNBUILDERS_H

#include "ir/KilnOps.h"

#include "mlir/IR/Builders.h"

namespace kiln::build {

mlir::RankedTensorType typeOf(mlir::Value v);
bool isFloat(mlir::Value v);

/// A constant tensor of `type` whose every element is `value`.
mlir::Value splat(mlir::OpBuilder &b, mlir::Location loc, mlir::RankedTensorType type,
                  double value);
/// A constant with the type of `like` whose every element is `value`.
mlir::Value splatLike(mlir::OpBuilder &b, mlir::Location loc, mlir::Value like, double value);

mlir::Value add(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x, mlir::Value y);
mlir::Value sub(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x, mlir::Value y);
mlir::Value mul(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x, mlir::Value y);
mlir::Value div(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x, mlir::Value y);
mlir::Value neg(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x);
/// x * c for a constant c.
mlir::Value scale(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x, double c);
/// kiln.cast to `elementType` (x itself when it already has it).
mlir::Value convert(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x, mlir::Type elementType);
mlir::Value compare(mlir::OpBuilder &b, mlir::Location loc, CompareDirection dir,
                    mlir::Value x, mlir::Value y);
mlir::Value select(mlir::OpBuilder &b, mlir::Location loc, mlir::Value cond, mlir::Value x,
                   mlir::Value y);

mlir::Value reshape(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x,
                    llvm::ArrayRef<int64_t> shape);
mlir::Value transpose(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x,
                      llvm::ArrayRef<int64_t> perm);
mlir::Value broadcastInDim(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x,
                           llvm::ArrayRef<int64_t> shape, llvm::ArrayRef<int64_t> dims);
mlir::Value slice(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x,
                  llvm::ArrayRef<int64_t> start, llvm::ArrayRef<int64_t> limit,
                  llvm::ArrayRef<int64_t> strides);
mlir::Value pad(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x,
                llvm::ArrayRef<int64_t> low, llvm::ArrayRef<int64_t> high,
                llvm::ArrayRef<int64_t> interior);
mlir::Value concat(mlir::OpBuilder &b, mlir::Location loc, mlir::ValueRange xs, int64_t dim);

mlir::Value reduceSum(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x,
                      llvm::ArrayRef<int64_t> dims);
mlir::Value reduceMax(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x,
                      llvm::ArrayRef<int64_t> dims);
mlir::Value reduceMean(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x,
                       llvm::ArrayRef<int64_t> dims);

/// Batched matmul; the result element type is the operands' unless given.
mlir::Value matmul(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x, mlir::Value y,
                   bool transposeA = false, bool transposeB = false,
                   mlir::Type resultElementType = {});

/// Sums `x` down to `shape` by NumPy broadcasting rules in reverse: leading
/// dimensions are summed away and dimensions of size 1 in `shape` summed
/// with the size kept. Returns x when the shapes already agree.
mlir::Value sumToShape(mlir::OpBuilder &b, mlir::Location loc, mlir::Value x,
                       llvm::ArrayRef<int64_t> shape);

} // namespace kiln::build

#endif // KILN_IR_KILNBUILDERS_H
