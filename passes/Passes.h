//===- Passes.h - kiln pass declarations and registration ------------------===//

#ifndef KILN_PASSES_PASSES_H
#define KILN_PASSES_PASSES_H

#include "ir/KilnDialect.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/Error.h"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kiln {

#define GEN_PASS_DECL
#include "passes/Passes.h.inc"

/// Registers the named pass pipelines (Pipelines.cpp).
void registerKilnPipelines();

/// What kiln-training-pipeline runs, as the passes' own option structs
/// (generated from Passes.td, their single source).
struct TrainingPipelineOptions {
  /// kiln-fuse-attention (softmax(q·kᵀ)·v into kiln.attention).
  bool fuseAttention = true;
  /// kiln-fuse (GEMM epilogues, elementwise chains into kiln.fusion), last;
  /// none: not run.
  std::optional<FusePassOptions> fuse = FusePassOptions();
  AssignPrecisionPassOptions precision;
  AutodiffPassOptions autodiff;
  /// Clipping, AdamW and accumulation; none: the step returns gradients.
  std::optional<AttachOptimizerPassOptions> optimizer = AttachOptimizerPassOptions();
  /// kiln-propagate-sharding and kiln-partition on this mesh (before
  /// kiln-fuse); none: one device.
  std::optional<PropagateShardingPassOptions> sharding;
  /// kiln-recompute, after partitioning and before kiln-fuse; none: not
  /// run (everything the backward reads is kept). Its fuse options are set
  /// from `fuse` by the pipeline.
  std::optional<RecomputePassOptions> recompute;
  /// kiln-pipeline, after kiln-recompute and before kiln-fuse; none: one
  /// stage.
  std::optional<PipelinePassOptions> pipeline;
  /// kiln-bucket-collectives, after kiln-fuse, on a mesh; none: each sum
  /// runs alone.
  std::optional<BucketCollectivesPassOptions> buckets;
};

/// The order of each stage's micro-batch forwards ("F3") and backwards
/// ("B3") under `schedule` ("1f1b" or "gpipe"), as kiln-pipeline writes it.
/// With `chunks` > 1 (interleaved 1F1B) one list per rank of `stages`,
/// each action naming its stage too ("F3.5": micro-batch 3 on stage 5,
/// which is on rank 5 mod stages).
std::vector<std::vector<std::string>> pipelineSchedule(llvm::StringRef schedule, int64_t stages,
                                                       int64_t microbatches, int64_t chunks = 1);

/// Interleaved 1F1B: how many forwards rank `rank` of `stages` runs ahead
/// of its first backward, (p - r - 1)·2 + (v - 1)·p, at most all v·m; its
/// steady state (one forward, one backward in turn) follows.
int64_t interleavedForwardsAhead(int64_t stages, int64_t chunks, int64_t microbatches,
                                 int64_t rank);

/// What kiln-recompute chose for `func`, in one line for `kiln compile`
/// and the Plan's notes ("" when it did not run on it).
std::string describeRecompute(mlir::func::FuncOp func);

/// Runs `pm` on `module`; a failure comes back as one error: `what` failed,
/// followed by the diagnostics the passes emitted, one per line.
llvm::Error runPasses(mlir::PassManager &pm, mlir::ModuleOp module, llvm::StringRef what);

/// Registers a plugin's rewrite pass for the training pipeline: it runs
/// after kiln-fuse-attention and before kiln-assign-precision (so autodiff
/// uses the VJP of the kiln.custom_kernel ops it makes, and their precision
/// rule applies), in registration order; `kiln gradcheck` runs it before
/// autodiff. `factory` makes one instance per pipeline.
void registerPluginPass(std::function<std::unique_ptr<mlir::Pass>()> factory);
/// Adds every registered plugin pass to `pm`.
void addPluginPasses(mlir::OpPassManager &pm);
/// The registered plugin passes' arguments ("example-fuse-add-rms-norm").
std::vector<std::string> pluginPassNames();
/// The kiln version and plugin API of the running tool (KilnVersion.h as
/// it was built), which a plugin compares with its own.
const char *toolKilnVersion();
unsigned toolPluginApiVersion();

/// kiln-training-pipeline: @forward -> optimized @train_step.
void buildTrainingPipeline(mlir::OpPassManager &pm, const TrainingPipelineOptions &options);

/// Generated: registerKilnPasses() registers every kiln pass.
#define GEN_PASS_REGISTRATION
#include "passes/Passes.h.inc"

} // namespace kiln

#endif // KILN_PASSES_PASSES_H
