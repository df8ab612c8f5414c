//===- WrongKernelPlugin.cpp - a plugin whose CUDA kernel is planted wrong -===//
//
// The planted bug of `kiln bisect --device cuda` (bench/gpu.sh, stage
// bisect): its pass turns the residual add of the MLP in block h.1
// (`x + mlp(ln_2(x))`) into `test.add`, whose CPU reference is a correct add
// and whose CUDA kernel adds 0.5 more at element 3. Training on the CPU is
// therefore unchanged, and the GPU kernel is wrong by a little: bisect must
// name this op and kernel, with its model scope.
//
//===----------------------------------------------------------------------===//

#include "ir/CustomKernel.h"
#include "ir/KilnOps.h"
#include "passes/PassUtils.h"
#include "passes/Plugin.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"

using namespace mlir;

namespace {

RankedTensorType typeOf(Value v) { return cast<RankedTensorType>(v.getType()); }

struct WrongAddPass final : PassWrapper<WrongAddPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(WrongAddPass)
  StringRef getArgument() const final { return "test-wrong-add"; }
  StringRef getDescription() const final { return "h.1.mlp's residual add into test.add"; }
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
                                           "test.add", target->getOperands(), DictionaryAttr());
    target.replaceAllUsesWith(op.getResult(0));
    target.erase();
  }
};

void registerWrongKernel(kiln::PluginRegistrar &r) {
  kiln::CustomKernel k;
  k.name = "test.add";
  k.cpu = [](kiln::CustomKernelOp, llvm::ArrayRef<kiln::CpuTensorRef> in,
             llvm::ArrayRef<kiln::CpuTensorRef> out) -> llvm::Error {
    for (int64_t i = 0; i < out[0].numel(); ++i)
      out[0].data[i] = in[0].data[i] + in[1].data[i];
    return llvm::Error::success();
  };
  k.cuda = [](kiln::CustomKernelOp op) -> llvm::Expected<kiln::CudaLaunch> {
    auto c = [&](Value v) { return kiln::cudaTypeOf(typeOf(v).getElementType()); };
    std::string tz = c(op.getResult(0));
    int64_t n = typeOf(op.getResult(0)).getNumElements();
    kiln::CudaLaunch l;
    l.source = "#include <cuda_bf16.h>\n#include <cuda_fp16.h>\nextern \"C\" __global__ void @NAME@(const " +
               c(op.getOperand(0)) + " *x, const " + c(op.getOperand(1)) + " *y, " + tz +
               " *z) {\n  for (long long i = blockIdx.x * 256ll + threadIdx.x; i < " + std::to_string(n) +
               "ll; i += gridDim.x * 256ll)\n    z[i] = (" + tz +
               ")((float)x[i] + (float)y[i] + (i == 3 ? 0.5f : 0.0f)); // planted: +0.5 at element 3\n}\n";
    l.block = {256, 1, 1};
    l.grid = {std::min<int64_t>((n + 255) / 256, 4096), 1, 1};
    return l;
  };
  k.vjp = [](kiln::CustomKernelOp, OpBuilder &, ValueRange cot, llvm::SmallVectorImpl<Value> &out) {
    out.append({cot[0], cot[0]});
    return success();
  };
  k.flops = [](kiln::CustomKernelOp op) { return kiln::numElements(op.getResult(0).getType()); };
  r.addKernel(std::move(k));
  r.addPass<WrongAddPass>();
}

} // namespace

KILN_PLUGIN("test-wrong-kernel", registerWrongKernel)
