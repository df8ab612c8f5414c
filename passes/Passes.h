//===- Passes.h - kiln pass declarations and registration ------------------===//

#ifndef KILN_PASSES_PASSES_H
#define KILN_PASSES_PASSES_H

#include "ir/KilnDialect.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"

namespace kiln {

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

/// Registers the named pass pipelines (Pipelines.cpp).
void registerKilnPipelines();

/// kiln-training-pipeline: @forward -> optimized @train_step.
void buildTrainingPipeline(mlir::OpPassManager &pm);

/// Generated: registerKilnPasses() registers every kiln pass.
#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

} // namespace kiln

#endif // KILN_PASSES_PASSES_H
