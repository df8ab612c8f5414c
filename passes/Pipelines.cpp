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

void buildTrainingPipeline(mlir::OpPassManager &pm) {
  // Clean up what the frontend emitted (broadcasts of splats, x*1, ...).
  pm.addPass(mlir::createCanonicalizerPass());
  // @forward -> @train_step: loss and one gradient per parameter.
  pm.addPass(createAutodiffPass());
  // The VJP rules build small redundancies (x*c twice, zero splats): fold
  // and share them.
  pm.addPass(mlir::createCanonicalizerPass());
  pm.addPass(mlir::createCSEPass());
}

void registerKilnPipelines() {
  mlir::PassPipelineRegistration<>(
      "kiln-training-pipeline",
      "Build the training step from @forward: canonicalize, autodiff, canonicalize, cse",
      buildTrainingPipeline);
}

} // namespace kiln
