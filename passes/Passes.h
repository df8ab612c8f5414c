//===- Passes.h - kiln pass declarations and registration ------------------===//

#ifndef KILN_PASSES_PASSES_H
#define KILN_PASSES_PASSES_H

#include "ir/KilnDialect.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/Error.h"

namespace kiln {

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

/// Registers the named pass pipelines (Pipelines.cpp).
void registerKilnPipelines();

/// Options of kiln-training-pipeline (also settable as text:
/// `kiln-training-pipeline{accumulate-steps=4 max-grad-norm=0}`).
struct TrainingPipelineOptions : public mlir::PassPipelineOptions<TrainingPipelineOptions> {
  Option<bool> optimizer{*this, "optimizer",
                         llvm::cl::desc("Attach AdamW (kiln-attach-optimizer)"),
                         llvm::cl::init(true)};
  Option<double> beta1{*this, "beta1", llvm::cl::desc("AdamW β1"), llvm::cl::init(0.9)};
  Option<double> beta2{*this, "beta2", llvm::cl::desc("AdamW β2"), llvm::cl::init(0.95)};
  Option<double> epsilon{*this, "epsilon", llvm::cl::desc("AdamW ε"), llvm::cl::init(1e-8)};
  Option<double> weightDecay{*this, "weight-decay", llvm::cl::desc("Decoupled weight decay"),
                             llvm::cl::init(0.1)};
  ListOption<std::string> decayRoles{*this, "decay-roles",
                                     llvm::cl::desc("Parameter roles that get weight decay")};
  Option<double> maxGradNorm{*this, "max-grad-norm",
                             llvm::cl::desc("Gradient clipping norm (0: off)"), llvm::cl::init(1.0)};
  Option<int64_t> accumulateSteps{*this, "accumulate-steps",
                                  llvm::cl::desc("Micro-batches per optimizer step"),
                                  llvm::cl::init(1)};
  Option<std::string> precision{*this, "precision",
                                llvm::cl::desc("f32, bf16-mixed or f16-mixed (kiln-assign-precision)"),
                                llvm::cl::init("f32")};
  Option<double> lossScale{*this, "loss-scale",
                           llvm::cl::desc("Initial dynamic loss scale (0: none; f16-mixed "
                                          "defaults to 65536)"),
                           llvm::cl::init(-1)};
  Option<int64_t> lossScaleGrowthInterval{*this, "loss-scale-growth-interval",
                                          llvm::cl::desc("Clean steps before the scale grows"),
                                          llvm::cl::init(2000)};
  Option<double> lossScaleGrowth{*this, "loss-scale-growth", llvm::cl::desc("Growth factor"),
                                 llvm::cl::init(2.0)};
  Option<double> lossScaleBackoff{*this, "loss-scale-backoff",
                                  llvm::cl::desc("Factor after an overflow"), llvm::cl::init(0.5)};
};

/// Runs `pm` on `module`; a failure comes back as one error: `what` failed,
/// followed by the diagnostics the passes emitted, one per line.
llvm::Error runPasses(mlir::PassManager &pm, mlir::ModuleOp module, llvm::StringRef what);

/// kiln-training-pipeline: @forward -> optimized @train_step.
void buildTrainingPipeline(mlir::OpPassManager &pm, const TrainingPipelineOptions &options);

/// Generated: registerKilnPasses() registers every kiln pass.
#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

} // namespace kiln

#endif // KILN_PASSES_PASSES_H
