//===- PipelineSchedule.h - the schedule kiln-pipeline writes --------------===//
//
// `kiln.pipeline` on a pipelined module: the stages, micro-batches and
// each rank's actions (F<k>/B<k>, or F<k>.<stage> with virtual stages),
// read and checked once here for the pass that unrolls them
// (kiln-pipeline-unroll) and the backends that run them.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_IR_PIPELINESCHEDULE_H
#define KILN_IR_PIPELINESCHEDULE_H

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kiln {

/// One action of a pipeline schedule: a micro-batch's forward or backward
/// on one stage.
struct PipelineAction {
  char kind;     ///< 'F' or 'B'
  int64_t k;     ///< the micro-batch
  int64_t stage; ///< the stage (with interleaving, one of its rank's)
};

/// The schedule kiln-pipeline wrote on a module (`kiln.pipeline`).
struct PipelineSchedule {
  /// Ranks along pp (`stages`), each holding `virtualStages` stages
  /// (interleaved 1F1B; stage c on rank c mod stages).
  int64_t stages = 1, virtualStages = 1, microbatches = 1;
  std::string name; ///< "1f1b" or "gpipe"
  /// Per rank: its actions, in order.
  std::vector<std::vector<PipelineAction>> actions;
  /// Per stage (stages x virtualStages): the transformer blocks it holds
  /// ("h.0,h.1").
  std::vector<std::string> blocks;
  int64_t numStages() const { return stages * virtualStages; }
  /// Reads it; fails with the reason when the attribute is malformed; none
  /// (stages = 0) when the module has no pipeline.
  static llvm::Expected<PipelineSchedule> of(mlir::ModuleOp module);
  /// Most micro-batches whose forward ran and backward did not, per stage.
  std::vector<int64_t> inFlight() const;
};

/// @stage<s>_<what>: the name kiln-pipeline (forward, backward, apply) and
/// kiln-pipeline-unroll (step, eval) give stage s's functions.
std::string pipelineFunction(int64_t stage, llvm::StringRef what);

/// Erases every function of an unrolled module (kiln-pipeline-unroll) but
/// stage `stage`'s @stage<s>_step and @stage<s>_eval: what that stage's
/// rank processes compile and run.
void keepOnlyStage(mlir::ModuleOp module, int64_t stage);

} // namespace kiln

#endif // KILN_IR_PIPELINESCHEDULE_H
