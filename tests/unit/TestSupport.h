//===- TestSupport.h - helpers shared by the unit tests --------------------===//

#ifndef KILN_TESTS_UNIT_TESTSUPPORT_H
#define KILN_TESTS_UNIT_TESTSUPPORT_H

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"

#include <string>

namespace kiln::test {

/// A context with the kiln and func dialects loaded.
std::unique_ptr<mlir::MLIRContext> makeContext();

/// Parses `source` as a module; fails the current test (and returns null)
/// with the parser's diagnostics when it does not parse or verify.
mlir::OwningOpRef<mlir::ModuleOp> parse(mlir::MLIRContext &ctx, const std::string &source);

/// Parses `source` and returns the diagnostics it produced (empty when it
/// parsed and verified).
std::string parseErrors(mlir::MLIRContext &ctx, const std::string &source);

} // namespace kiln::test

#endif // KILN_TESTS_UNIT_TESTSUPPORT_H
