//===- KilnOps.h - ops of the kiln dialect ---------------------------------===//

#ifndef KILN_IR_KILNOPS_H
#define KILN_IR_KILNOPS_H

#include "ir/KilnDialect.h"
#include "ir/KilnInterfaces.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "ir/KilnEnums.h.inc"

namespace kiln::OpTrait {
namespace detail {
mlir::LogicalResult verifySameTypes(mlir::Operation *op);
mlir::LogicalResult verifyBoundedTensors(mlir::Operation *op);
} // namespace detail

/// Every tensor operand and result has a static shape and at most
/// kMaxTensorBytes bytes.
template <typename ConcreteType>
class BoundedTensors : public mlir::OpTrait::TraitBase<ConcreteType, BoundedTensors> {
public:
  static mlir::LogicalResult verifyTrait(mlir::Operation *op) {
    return detail::verifyBoundedTensors(op);
  }
};

/// Marks an elementwise op: each result element depends only on the operand
/// elements at the same index (fusion and codegen rely on it).
template <typename ConcreteType>
class Elementwise : public mlir::OpTrait::TraitBase<ConcreteType, Elementwise> {};

/// All operands and results have one type; a mismatch is reported with both
/// types named.
template <typename ConcreteType>
class SameTypes : public mlir::OpTrait::TraitBase<ConcreteType, SameTypes> {
public:
  static mlir::LogicalResult verifyTrait(mlir::Operation *op) {
    return detail::verifySameTypes(op);
  }
};
} // namespace kiln::OpTrait

#define GET_OP_CLASSES
#include "ir/KilnOps.h.inc"

namespace kiln {
/// What kiln-partition inserts between ranks: kiln.all_reduce, all_gather,
/// reduce_scatter and take_shard (each with an `axis` and a `cause`).
inline bool isCollective(mlir::Operation *op) {
  return mlir::isa<AllReduceOp, AllGatherOp, ReduceScatterOp, TakeShardOp>(op);
}
} // namespace kiln

#endif // KILN_IR_KILNOPS_H
