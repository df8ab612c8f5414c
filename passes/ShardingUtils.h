//===- ShardingUtils.h - what propagation and partitioning share -----------===//

#ifndef KILN_PASSES_SHARDINGUTILS_H
#define KILN_PASSES_SHARDINGUTILS_H

#include "ir/KilnAttrs.h"
#include "ir/KilnOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

namespace kiln {

/// The module's kiln.mesh, or null.
MeshAttr getMesh(mlir::ModuleOp module);

/// The mesh's data-parallel axes of size > 1, in mesh order: `dp`, or
/// `edp` and `ep` when a mixture of experts' experts are split over part
/// of the data-parallel ranks (parallel.ep < parallel.dp: the ranks as an
/// edp × ep grid, the batch split over both, the experts over ep).
llvm::SmallVector<mlir::StringAttr> dataAxes(MeshAttr mesh);

/// Ops linear in their one operand and no larger than it (reshape,
/// transpose, slice): a partial sum passes through them and is summed
/// after, or (an accumulator's summand) never. (A zero pad is linear too,
/// but summing after it moves more bytes.)
bool passesPartialSums(mlir::Operation *op);

/// Parses `dp=2,tp=1` into a mesh; an error names what is wrong.
llvm::FailureOr<MeshAttr> parseMesh(mlir::MLIRContext *context, llvm::StringRef text,
                                    std::string &error);

/// The sharding recorded for `v`: a function argument's `kiln.sharding`,
/// an op result's entry in `kiln.shardings`; replicated when none.
ShardingAttr getSharding(mlir::Value v);


/// The functions a sharding pass works on: @`name`, or with `name` empty
/// every one of `module` defined here (declarations have nothing to
/// rewrite). Fails, with an error naming `pass`, when @`name` does not
/// exist or a function has more than one block.
mlir::FailureOr<llvm::SmallVector<mlir::func::FuncOp>>
functionsToShard(mlir::ModuleOp module, llvm::StringRef name, llvm::StringRef pass);

/// A readable place for an op in messages: its name and its location's
/// name (`kiln.matmul at "h.0.mlp"`).
std::string describeOp(mlir::Operation *op);

} // namespace kiln

#endif // KILN_PASSES_SHARDINGUTILS_H
