//===- KilnInterfaces.h - cost, differentiation and sharding interfaces ----===//

#ifndef KILN_IR_KILNINTERFACES_H
#define KILN_IR_KILNINTERFACES_H

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpDefinition.h"
#include "llvm/ADT/SmallVector.h"
#include "mlir/Support/LLVM.h"

namespace kiln {

/// An einsum-like description of an op's dimensions (Shardy's factors).
/// Every tensor dimension maps to one factor, or -1 when the dimension
/// must be whole on every rank (a softmax's row, a norm's features). Dims
/// that map to one factor are split the same way. A factor of the operands
/// that a result lacks is reduced for that result, always by a sum: when it
/// is split, each rank holds a partial sum of that result. Matmul
/// `[M,K]x[K,N]->[M,N]` has factors {m, k, n} with operand dims
/// {{m,k},{k,n}}, result dims {{m,n}} and k reduced; layer_norm_grad's
/// row factors are kept by dx and reduced for dweight and dbias.
/// `factorSizes[f]` is the extent a mesh axis must divide to split f.
struct ShardingRule {
  llvm::SmallVector<int64_t> factorSizes;
  llvm::SmallVector<llvm::SmallVector<int64_t>> operandFactors;
  llvm::SmallVector<llvm::SmallVector<int64_t>> resultFactors;
  /// The op divides its sum by the reduced extent (kiln.reduce_mean): split
  /// over n ranks, each rank's mean counts 1/n of the global one.
  bool meanReduction = false;

  /// The factors of operands that result `result` lacks.
  llvm::SmallVector<int64_t> reducedFactors(unsigned result) const;
};

/// The largest tensor kiln accepts (every op verifies it): 2^48 bytes, 256
/// TiB. Sums of thousands of them stay far below INT64_MAX, so sizes and
/// offsets past the verifier need no further overflow checks.
constexpr int64_t kMaxTensorBytes = int64_t(1) << 48;

/// a·b and a + b of non-negative counts, clamped to INT64_MAX (FLOPs and
/// bytes are never negative, however large the shapes).
int64_t saturatingMul(int64_t a, int64_t b);
int64_t saturatingAdd(int64_t a, int64_t b);

/// Number of elements of a statically shaped tensor type (1 for scalars and
/// rank-0 tensors; 0 for a dynamic shape), saturating.
int64_t numElements(mlir::Type type);
/// Bytes of a statically shaped tensor type (i1 counts one byte an
/// element), saturating.
int64_t numBytes(mlir::Type type);

namespace detail {
/// Every operand read once plus every result written once.
int64_t defaultBytesAccessed(mlir::Operation *op);
} // namespace detail

} // namespace kiln

#include "ir/KilnInterfaces.h.inc"

#endif // KILN_IR_KILNINTERFACES_H
