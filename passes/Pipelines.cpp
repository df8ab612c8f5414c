//===- Pipelines.cpp - the named pass pipelines of kiln --------------------===//
//
// The whole compiler in one readable place: each pipeline is a commented
// chain of addPass calls (DESIGN §1). Phases arrive with their issues.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

namespace kiln {

void registerKilnPipelines() {}

} // namespace kiln
