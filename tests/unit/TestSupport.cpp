//===- TestSupport.cpp - helpers shared by the unit tests ------------------===//

#include "tests/unit/TestSupport.h"

#include "ir/KilnDialect.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/Parser/Parser.h"
#include "gtest/gtest.h"

using namespace mlir;

namespace kiln::test {

std::unique_ptr<MLIRContext> makeContext() {
  auto ctx = std::make_unique<MLIRContext>();
  ctx->loadDialect<KilnDialect, func::FuncDialect>();
  return ctx;
}

std::string parseErrors(MLIRContext &ctx, const std::string &source) {
  std::string errors;
  ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &diag) {
    errors += diag.str() + "\n";
    return success();
  });
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(source, &ctx);
  return errors;
}

OwningOpRef<ModuleOp> parse(MLIRContext &ctx, const std::string &source) {
  std::string errors;
  ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &diag) {
    errors += diag.str() + "\n";
    return success();
  });
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(source, &ctx);
  EXPECT_TRUE(module) << "failed to parse:\n" << source << "\n" << errors;
  return module;
}

} // namespace kiln::test
