//===- MatmulFlops.cpp - an out-of-tree kiln-opt pass plugin ---------------===//
//
// The smallest plugin that uses kiln's dialect from outside the tree: a pass
// that adds up the FLOPs of every kiln.matmul through kiln's
// CostOpInterface and records them per function (`example.matmul_flops`),
// with the share of the function's total. Built against the installed SDK:
//
//   cmake -S examples/plugins/matmul-flops -B build-plugin -G Ninja \
//     -DCMAKE_PREFIX_PATH=<kiln prefix>
//   cmake --build build-plugin
//   kiln-opt step.mlir --load-pass-plugin=build-plugin/kiln-matmul-flops.so \
//     --pass-pipeline='builtin.module(example-matmul-flops)'
//
//===----------------------------------------------------------------------===//

#include "ir/KilnOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Tools/Plugins/PassPlugin.h"
#include "llvm/Config/llvm-config.h"

using namespace mlir;

namespace {

struct MatmulFlopsPass final : PassWrapper<MatmulFlopsPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(MatmulFlopsPass)
  StringRef getArgument() const final { return "example-matmul-flops"; }
  StringRef getDescription() const final {
    return "Records each function's kiln.matmul FLOPs and their share of all FLOPs";
  }
  void runOnOperation() final {
    getOperation().walk([&](func::FuncOp func) {
      int64_t matmul = 0, all = 0;
      func.walk([&](kiln::CostOpInterface op) {
        all += op.getFlops();
        if (isa<kiln::MatmulOp>(op.getOperation()))
          matmul += op.getFlops();
      });
      Builder b(&getContext());
      func->setAttr("example.matmul_flops", b.getI64IntegerAttr(matmul));
      func->setAttr("example.matmul_share",
                    b.getF64FloatAttr(all ? static_cast<double>(matmul) / all : 0.0));
    });
  }
};

} // namespace

extern "C" LLVM_ATTRIBUTE_WEAK PassPluginLibraryInfo mlirGetPassPluginInfo() {
  return {MLIR_PLUGIN_API_VERSION, "KilnMatmulFlops", LLVM_VERSION_STRING,
          []() { PassRegistration<MatmulFlopsPass>(); }};
}
