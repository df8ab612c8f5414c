//===- PipelineCpuBackend.h - pipeline stages on CPU threads ---------------===//
//
// The Backend for a module kiln-pipeline split into stages: one CpuBackend
// per stage, each a thread, their kiln.send/kiln.recv and the gradient
// norm's all_reduce through a ThreadMesh over `pp`. `train_step` takes the
// step's micro-batches as one batch (their rows one after another), cuts
// it, and runs every stage's forwards and backwards in the order the
// module's schedule (`kiln.pipeline`) lists, then each stage's apply. The
// training loop sees one backend: outputs are the micro-batches' mean,
// parameters and states come from the stage that updates them, and the
// other functions (evaluation, sampling) run on stage 0's thread with the
// current parameters.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CPU_PIPELINECPUBACKEND_H
#define KILN_RUNTIME_CPU_PIPELINECPUBACKEND_H

#include "ir/PipelineSchedule.h"
#include "runtime/MeshLayout.h"
#include "runtime/cpu/Collectives.h"
#include "runtime/cpu/CpuBackend.h"

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kiln::cpu {

/// Which rank (pp coordinate) updates each state of a pipelined module:
/// the one of the first stage whose backward or apply writes it in place,
/// else of the first that reads it.
llvm::Expected<std::map<std::string, int64_t>> pipelineOwners(mlir::ModuleOp module,
                                                              const PipelineSchedule &schedule);

/// The inputs of an unrolled stage function (@stage<s>_step with `m`
/// micro-batches, @stage<s>_eval with 1) as rank `rank` of pp coordinate
/// `stage` takes them: of each micro-batch's rows (the batch cut in m), the
/// rank's part along the axes its stages' forwards (stage, stage + stride,
/// ... below `stages`; stride = stages for one stage a rank) split them
/// over, one after another; scalars whole.
TensorMap unrolledInputs(const MeshLayout &layout, int64_t stage, int64_t stride, int64_t stages,
                         int64_t rank, const TensorMap &inputs, int64_t m);

class PipelineCpuBackend final : public Backend {
public:
  /// Runs each rank's @stage<s>_step and @stage<s>_eval (kiln-pipeline-unroll
  /// wrote them) instead of the schedule's actions one by one: the form a
  /// GPU rank runs, checked here on the interpreter. No bubble is measured.
  /// Set before load().
  void setUnrolled(bool unrolled) { unrolled_ = unrolled; }

  llvm::StringRef name() const override { return "cpu"; }
  llvm::Error load(mlir::ModuleOp module, uint64_t seed) override;
  llvm::Expected<int64_t> memoryNeeded(mlir::ModuleOp module) override;
  /// `train_step`: one optimizer step over every micro-batch; any other
  /// function of the module on stage 0.
  llvm::Expected<TensorMap> run(llvm::StringRef fn, const TensorMap &inputs) override;
  bool hasFunction(llvm::StringRef fn) const override {
    return fn == "train_step" || ranks_[0]->hasFunction(fn);
  }
  llvm::Expected<NamedTensors> params() override { return gather(true); }
  llvm::Expected<NamedTensors> optimizerStates() override { return gather(false); }
  llvm::Error setState(const NamedTensors &tensors) override;
  std::string describe() const override;
  /// The measured bubble: the fraction of stage-time the stages waited
  /// during their forwards and backwards, over every step but the first.
  std::string summary() const override;
  /// The same, as a number (0 before the second step).
  double measuredBubble() const;

private:
  llvm::Expected<TensorMap> step(const TensorMap &inputs);
  /// @stage<s>_`what` on every rank (`what`: step or eval).
  llvm::Expected<TensorMap> runUnrolled(llvm::StringRef what, const TensorMap &inputs);
  /// Each state from the stage that updates it (whole: gathered from the
  /// stage's ranks when split over them).
  llvm::Expected<NamedTensors> gather(bool params);
  int64_t stageOf(int64_t rank) const;
  /// Whether `rank` is its stage's first (coordinate 0 on every other axis).
  bool leads(int64_t rank) const;
  /// `inputs` as rank `rank` takes them in `fn`: split ones, its part.
  TensorMap localInputs(const TensorMap &inputs, llvm::StringRef fn, int64_t rank) const;
  std::optional<MeshLayout> layout_;
  PipelineSchedule schedule_;
  bool unrolled_ = false;
  std::unique_ptr<ThreadMesh> mesh_;
  std::vector<std::unique_ptr<CpuBackend>> ranks_;
  std::map<std::string, int64_t> owner_; ///< state name -> stage updating it
  /// Stage 0's copies of the other stages' parameters are stale.
  bool stale_ = false;
  /// Steps timed (all but the first), their stages' busy seconds and the
  /// seconds from a step's start to its last backward, summed.
  int64_t steps_ = 0, timedSteps_ = 0;
  double busySeconds_ = 0, spanSeconds_ = 0;
};

} // namespace kiln::cpu

#endif // KILN_RUNTIME_CPU_PIPELINECPUBACKEND_H
