//===- PipelineReport.h - what each pipeline stage holds and runs ----------===//

#ifndef KILN_TOOLS_SUPPORT_PIPELINEREPORT_H
#define KILN_TOOLS_SUPPORT_PIPELINEREPORT_H

#include "mlir/IR/BuiltinOps.h"

#include <string>
#include <vector>

namespace kiln::tooling {

/// One stage's share of a pipelined step, per micro-batch where it says so.
struct StageReport {
  std::string blocks;
  int64_t forwardOps = 0, backwardOps = 0;
  double forwardFlops = 0, backwardFlops = 0; ///< per micro-batch
  int64_t stateBytes = 0; ///< parameters, moments, accumulators of its rank (interleaved:
                          ///< all on the rank's first stage, 0 on its others)
  int64_t savedBytes = 0; ///< kept from a micro-batch's forward for its backward
  int64_t inFlight = 0;   ///< most micro-batches kept at once (the schedule)
  int64_t sentBytes = 0;  ///< sent per micro-batch (forward and backward)
  int64_t sentPerStep = 0; ///< sent once a step (the apply)
};

struct PipelineReport {
  /// Ranks along pp, and the stages each holds (interleaved 1F1B: stage c
  /// on rank c mod stages; perStage has stages x virtualStages entries).
  int64_t stages = 0, virtualStages = 1, microbatches = 0;
  std::string schedule;
  std::vector<StageReport> perStage;
  /// The schedule simulated with each stage's forward and backward taking
  /// time in proportion to their FLOPs (transfers free): the fraction of
  /// rank-time idle, and (p-1)/(m+p-1) (interleaved: (p-1)/(v·m+p-1)).
  double bubble = 0, formula = 0;
};

/// The report of a module kiln-pipeline split; stages = 0 when it has no
/// pipeline.
PipelineReport reportPipeline(mlir::ModuleOp module);

/// `kiln compile`'s summary of it; with `explain`, each stage's blocks,
/// FLOPs, memory and transfers, and the bubble (`--explain-pipeline`).
std::string describePipeline(mlir::ModuleOp module, bool explain);

} // namespace kiln::tooling

#endif // KILN_TOOLS_SUPPORT_PIPELINEREPORT_H
