//===- PassUtils.cpp - checks the kiln passes share -------------------------===//

#include "passes/PassUtils.h"

#include "ir/KilnDialect.h"

#include "mlir/Transforms/GreedyPatternRewriteDriver.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringExtras.h"

#include <cstdio>

namespace kiln {

mlir::LogicalResult checkOneBlockBody(mlir::func::FuncOp func, llvm::StringRef pass) {
  if (func.isExternal())
    return func.emitError() << pass << ": @" << func.getSymName()
                            << " has no body (a declaration); kiln passes need a defined function";
  if (!func.getBody().hasOneBlock())
    return func.emitError() << pass << ": @" << func.getSymName() << " has "
                            << func.getBody().getBlocks().size()
                            << " blocks; kiln passes need a body of one block";
  return mlir::success();
}

mlir::LogicalResult applyOnly(mlir::Operation *op, mlir::RewritePatternSet &&patterns) {
  mlir::GreedyRewriteConfig config;
  config.enableFolding(false).enableConstantCSE(false);
  return mlir::applyPatternsGreedily(op, std::move(patterns), config);
}

std::string scopeOf(mlir::Operation *op) {
  mlir::Location loc = op->getLoc();
  if (auto fused = mlir::dyn_cast<mlir::FusedLoc>(loc); fused && !fused.getLocations().empty())
    loc = fused.getLocations().front();
  if (auto name = mlir::dyn_cast<mlir::NameLoc>(loc))
    return name.getName().str();
  return "";
}

std::string blockOf(mlir::Operation *op) { return blockOfName(scopeOf(op)); }

std::string blockOfName(llvm::StringRef scope) {
  llvm::SmallVector<llvm::StringRef> parts;
  scope.split(parts, '.');
  size_t length = 0;
  for (llvm::StringRef part : parts) {
    length += part.size();
    if (!part.empty() && llvm::all_of(part, llvm::isDigit))
      return scope.substr(0, length).str();
    ++length; // the dot
  }
  return "";
}

unsigned afterStateArguments(mlir::func::FuncOp func) {
  unsigned index = 0;
  for (unsigned a = 0; a < func.getNumArguments(); ++a)
    if (func.getArgAttr(a, KilnDialect::kParamAttrName) ||
        func.getArgAttr(a, KilnDialect::kStateAttrName))
      index = a + 1;
  return index;
}

mlir::BlockArgument insertStateArgument(mlir::func::FuncOp func, mlir::Type type,
                                        mlir::DictionaryAttr attrs, mlir::Location loc) {
  unsigned at = afterStateArguments(func);
  if (mlir::failed(func.insertArgument(at, type, attrs, loc)))
    return {};
  mlir::Builder b(func.getContext());
  for (unsigned r = 0; r < func.getNumResults(); ++r)
    if (auto alias = func.getResultAttrOfType<mlir::IntegerAttr>(r, KilnDialect::kAliasesAttrName);
        alias && alias.getInt() >= at)
      func.setResultAttr(r, KilnDialect::kAliasesAttrName, b.getI64IntegerAttr(alias.getInt() + 1));
  return func.getArgument(at);
}

std::string formatOption(double value) {
  char text[32];
  std::snprintf(text, sizeof(text), "%g", value);
  return text;
}

} // namespace kiln
