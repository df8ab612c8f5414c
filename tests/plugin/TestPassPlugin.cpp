//===- TestPassPlugin.cpp - a pass plugin that kiln-opt loads in tests -----===//
//
// Proves that --load-pass-plugin works with the statically linked kiln-opt:
// the plugin links no MLIR itself and binds to the symbols kiln-opt exports.
//
//===----------------------------------------------------------------------===//

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Tools/Plugins/PassPlugin.h"
#include "llvm/Config/llvm-config.h"

using namespace mlir;

namespace {
/// Marks the module so a test can see that the plugin's pass ran.
struct MarkModulePass final : PassWrapper<MarkModulePass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(MarkModulePass)
  StringRef getArgument() const final { return "kiln-test-plugin-mark"; }
  StringRef getDescription() const final { return "Sets kiln.test_plugin on the module"; }
  void runOnOperation() final {
    getOperation()->setAttr("kiln.test_plugin", UnitAttr::get(&getContext()));
  }
};
} // namespace

extern "C" LLVM_ATTRIBUTE_WEAK PassPluginLibraryInfo mlirGetPassPluginInfo() {
  return {MLIR_PLUGIN_API_VERSION, "KilnTestPassPlugin", LLVM_VERSION_STRING,
          []() { PassRegistration<MarkModulePass>(); }};
}
