//===- Pipelines.cpp - the named pass pipelines of kiln --------------------===//
//
// The whole compiler in one readable place: each pipeline is a commented
// chain of addPass calls (docs/architecture.md §1). Phases arrive with
// their issues; the order here is the order of the training-step path.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

namespace kiln {

void buildTrainingPipeline(mlir::OpPassManager &pm, const TrainingPipelineOptions &options) {
  // Clean up what the frontend emitted (broadcasts of splats, x*1, ...).
  pm.addPass(mlir::createCanonicalizerPass());
  // Linear layers' biases into their matmuls, before precision assignment
  // so a bias is cast with its product.
  pm.addPass(createFuseMatmulBiasPass());
  // Low-precision compute where it is safe (a no-op for f32); autodiff
  // inherits the types.
  AssignPrecisionPassOptions precision;
  precision.policy = options.precision;
  pm.addPass(createAssignPrecisionPass(precision));
  // @forward -> @train_step: loss and one gradient per parameter; the seed
  // is the loss scale with dynamic loss scaling (f16).
  AutodiffPassOptions autodiff;
  autodiff.lossScale = options.lossScale >= 0
                           ? static_cast<double>(options.lossScale)
                           : (options.precision == "f16-mixed" ? 65536.0 : 0.0);
  pm.addPass(createAutodiffPass(autodiff));
  // Clipping, AdamW and gradient accumulation, with in-place updates.
  if (options.optimizer) {
    AttachOptimizerPassOptions opt;
    opt.beta1 = options.beta1;
    opt.beta2 = options.beta2;
    opt.epsilon = options.epsilon;
    opt.weightDecay = options.weightDecay;
    opt.decayRoles.assign(options.decayRoles.begin(), options.decayRoles.end());
    opt.maxGradNorm = options.maxGradNorm;
    opt.accumulateSteps = options.accumulateSteps;
    opt.lossScaleGrowthInterval = options.lossScaleGrowthInterval;
    opt.lossScaleGrowth = options.lossScaleGrowth;
    opt.lossScaleBackoff = options.lossScaleBackoff;
    pm.addPass(createAttachOptimizerPass(opt));
  }
  // The VJP rules build small redundancies (x*c twice, zero splats): fold
  // and share them.
  pm.addPass(mlir::createCanonicalizerPass());
  pm.addPass(mlir::createCSEPass());
  // Biases the VJP rules produced in matmul + add form, if any.
  pm.addPass(createFuseMatmulBiasPass());
}

llvm::Error runPasses(mlir::PassManager &pm, mlir::ModuleOp module, llvm::StringRef what) {
  std::string diagnostics;
  mlir::ScopedDiagnosticHandler handler(module.getContext(), [&](mlir::Diagnostic &diag) {
    llvm::raw_string_ostream os(diagnostics);
    os << diag.getLocation() << ": " << diag.str() << "\n";
    return mlir::success();
  });
  if (mlir::succeeded(pm.run(module)))
    return llvm::Error::success();
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 what + " failed:\n" + llvm::StringRef(diagnostics).rtrim());
}

void registerKilnPipelines() {
  mlir::PassPipelineRegistration<TrainingPipelineOptions>(
      "kiln-training-pipeline",
      "Build the training step from @forward: canonicalize, fuse-matmul-bias, "
      "assign-precision, autodiff, attach-optimizer, canonicalize, cse, fuse-matmul-bias",
      buildTrainingPipeline);
}

} // namespace kiln
