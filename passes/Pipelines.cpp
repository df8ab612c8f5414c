//===- Pipelines.cpp - the named pass pipelines of kiln --------------------===//
//
// The whole compiler in one readable place: each pipeline is a commented
// chain of addPass calls (docs/architecture.md §1). Phases arrive with
// their issues; the order here is the order of the training-step path.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

namespace kiln {

void buildTrainingPipeline(mlir::OpPassManager &pm, const TrainingPipelineOptions &options) {
  // Clean up what the frontend emitted (broadcasts of splats, x*1, ...).
  pm.addPass(mlir::createCanonicalizerPass());
  // @forward -> @train_step: loss and one gradient per parameter.
  pm.addPass(createAutodiffPass());
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
    pm.addPass(createAttachOptimizerPass(opt));
  }
  // The VJP rules build small redundancies (x*c twice, zero splats): fold
  // and share them.
  pm.addPass(mlir::createCanonicalizerPass());
  pm.addPass(mlir::createCSEPass());
  // Linear layers' biases into their GEMMs (cuBLASLt's bias epilogue).
  pm.addPass(createFuseMatmulBiasPass());
}

void registerKilnPipelines() {
  mlir::PassPipelineRegistration<TrainingPipelineOptions>(
      "kiln-training-pipeline",
      "Build the training step from @forward: canonicalize, autodiff, attach-optimizer, "
      "canonicalize, cse, fuse-matmul-bias",
      buildTrainingPipeline);
}

} // namespace kiln
