//===- PassUtils.h - checks the kiln passes share ---------------------------===//

#ifndef KILN_PASSES_PASSUTILS_H
#define KILN_PASSES_PASSUTILS_H

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/PatternMatch.h"
#include "llvm/ADT/StringRef.h"

#include <string>

namespace kiln {

/// kiln's passes work on functions with a body of one block (the form the
/// frontend builds and every pass keeps). A declaration or a function with
/// several blocks gets an error naming `pass` and the function.
mlir::LogicalResult checkOneBlockBody(mlir::func::FuncOp func, llvm::StringRef pass);

/// The model scope an op was built in ("h.3.mlp"): its NameLoc's name, or
/// that of the first location of a FusedLoc; "" when it has none.
std::string scopeOf(mlir::Operation *op);

/// The transformer block an op belongs to: its model scope up to the first
/// numeric component ("h.3" of "h.3.attn.qkv", "layers.0" of
/// "layers.0.mlp"), or "" outside blocks.
std::string blockOf(mlir::Operation *op);

/// The same for a dotted name (a parameter's "h.3.attn.qkv.w" is in block
/// "h.3"); "" when no component is numeric.
std::string blockOfName(llvm::StringRef name);

/// One past the last kiln.param or kiln.state argument of `func`: where a
/// pass inserts a new state, so no parameter's or state's index moves.
unsigned afterStateArguments(mlir::func::FuncOp func);

/// Inserts a state argument at afterStateArguments (no parameter's or
/// state's index moves); results aliasing an argument after it are
/// renumbered. Null if the function refuses it.
mlir::BlockArgument insertStateArgument(mlir::func::FuncOp func, mlir::Type type,
                                        mlir::DictionaryAttr attrs, mlir::Location loc);

/// A pass option's value as a person writes it (%g: 0.9, 1e-08, nan) for
/// diagnostics.
std::string formatOption(double value);

/// Applies `patterns` to `op` with the greedy driver, and only them: no
/// folding or constant CSE behind a pass's back (canonicalize does those).
mlir::LogicalResult applyOnly(mlir::Operation *op, mlir::RewritePatternSet &&patterns);

} // namespace kiln

#endif // KILN_PASSES_PASSUTILS_H
