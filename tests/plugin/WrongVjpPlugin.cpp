//===- WrongVjpPlugin.cpp - a plugin whose VJP is planted wrong ------------===//
//
// The planted bug `kiln gradcheck` must catch (tests/lit/tools/
// kiln-gradcheck.test): its pass turns block h.1's MLP residual add into
// `test.add_wrong_vjp`, whose forward (CPU and CUDA) is a correct add and
// whose VJP sends twice the cotangent to its first operand — so gradients
// upstream of the add go wrong, and the final norm's, downstream, stay
// right.
//
//===----------------------------------------------------------------------===//

#include "ir/CustomKernel.h"
#include "ir/KilnBuilders.h"
#include "ir/KilnOps.h"
#include "passes/PassUtils.h"
#include "passes/Plugin.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

using namespace mlir;

namespace {

RankedTensorType typeOf(Value v) { return cast<RankedTensorType>(v.getType()); }

struct WrongVjpAddPass final : PassWrapper<WrongVjpAddPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(WrongVjpAddPass)
  StringRef getArgument() const final { return "test-wrong-vjp-add"; }
  StringRef getDescription() const final { return "h.1.mlp's residual add into test.add_wrong_vjp"; }
  void runOnOperation() final {
    kiln::AddOp target;
    getOperation().walk([&](kiln::AddOp add) {
      if (!target && kiln::scopeOf(add) == "h.1.mlp" && add.getLhs().getType() == add.getType() &&
          add.getRhs().getType() == add.getType() && typeOf(add).getRank() == 3)
        target = add;
    });
    if (!target)
      return;
    OpBuilder b(target);
    auto op = kiln::CustomKernelOp::create(b, target.getLoc(), TypeRange{target.getType()},
                                           "test.add_wrong_vjp", target->getOperands(),
                                           DictionaryAttr());
    target.replaceAllUsesWith(op.getResult(0));
    target.erase();
  }
};

void registerWrongVjp(kiln::PluginRegistrar &r) {
  kiln::CustomKernel k;
  k.name = "test.add_wrong_vjp";
  k.cpu = [](kiln::CustomKernelOp, llvm::ArrayRef<kiln::CpuTensorRef> in,
             llvm::ArrayRef<kiln::CpuTensorRef> out) -> llvm::Error {
    for (int64_t i = 0; i < out[0].numel(); ++i)
      out[0].data[i] = in[0].data[i] + in[1].data[i];
    return llvm::Error::success();
  };
  k.vjp = [](kiln::CustomKernelOp op, OpBuilder &b, ValueRange cot,
             llvm::SmallVectorImpl<Value> &out) {
    Value twice = cot[0] ? kiln::build::scale(b, op.getLoc(), cot[0], 2.0) : Value(); // planted
    out.append({twice, cot[0]});
    return success();
  };
  r.addKernel(std::move(k));
  r.addPass<WrongVjpAddPass>();
}

} // namespace

KILN_PLUGIN("test-wrong-vjp", registerWrongVjp)
