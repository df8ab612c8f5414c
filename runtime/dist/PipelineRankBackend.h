//===- PipelineRankBackend.h - one rank process of a pipeline --------------===//
//
// The Backend of one rank process of a module kiln-pipeline split into
// stages (kiln train --ranks N with parallel.pp > 1, on GPUs). The rank
// runs its stage only: `prepare` (kiln-pipeline-unroll, given by the
// caller, which links the passes) writes @stage<s>_step — the stage's
// whole schedule and its optimizer step as one function, so the GPU runs
// it as one CUDA graph, its sends and receives through NCCL — and
// @stage<s>_eval, and the local backend (a CudaBackend) loads just those.
//
// The training loop above sees one model, as with RankBackend:
// `train_step` takes the step's micro-batches one after another (each
// rank keeps, of each, its rows along the stage's data-parallel axes);
// `forward` evaluates one micro-batch through the stages; the loss and
// metrics come back on every rank (the step sums them over pp). The state
// is the whole model's: each rank holds and initializes its stage's part
// (the same values as one device), params() and optimizerStates() gather
// every stage's on every rank (each rank must call them at the same step),
// and setState() keeps what this rank's stage holds.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_DIST_PIPELINERANKBACKEND_H
#define KILN_RUNTIME_DIST_PIPELINERANKBACKEND_H

#include "runtime/Backend.h"
#include "runtime/MeshLayout.h"
#include "runtime/cpu/PipelineCpuBackend.h"
#include "runtime/dist/SocketGroup.h"

#include "mlir/IR/OwningOpRef.h"

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>

namespace kiln::dist {

/// Writes every stage's @stage<s>_step and @stage<s>_eval into a pipelined
/// module (kiln-pipeline-unroll, which also proves the steps' transfers
/// cannot deadlock: that needs every stage's).
using PipelinePrepare = std::function<llvm::Error(mlir::ModuleOp module)>;

class PipelineRankBackend final : public Backend {
public:
  /// `group` outlives it; `local`'s collectives already go through it.
  PipelineRankBackend(SocketGroup &group, std::unique_ptr<Backend> local, PipelinePrepare prepare,
                      std::string collectives)
      : group_(group), local_(std::move(local)), prepare_(std::move(prepare)),
        collectives_(std::move(collectives)) {}

  llvm::StringRef name() const override { return local_->name(); }
  llvm::Error load(mlir::ModuleOp module, uint64_t seed) override;
  llvm::Expected<int64_t> memoryNeeded(mlir::ModuleOp module) override;
  /// `train_step` (every micro-batch) and `forward` (one, evaluation).
  llvm::Expected<TensorMap> run(llvm::StringRef fn, const TensorMap &inputs) override;
  bool hasFunction(llvm::StringRef fn) const override {
    return fn == "train_step" || fn == "forward";
  }
  llvm::Expected<NamedTensors> params() override { return gather(true); }
  llvm::Expected<NamedTensors> optimizerStates() override { return gather(false); }
  llvm::Error setState(const NamedTensors &tensors) override;
  std::string describe() const override;

  int64_t stage() const { return stage_; }

private:
  /// This rank's stage alone, unrolled (a clone of `module`).
  llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>> stageModule(mlir::ModuleOp module);
  llvm::Expected<NamedTensors> gather(bool params);

  SocketGroup &group_;
  std::unique_ptr<Backend> local_;
  PipelinePrepare prepare_;
  std::string collectives_;
  std::optional<MeshLayout> layout_;
  PipelineSchedule schedule_;
  int64_t stage_ = 0;
  /// Which stage updates each state of the whole model.
  std::map<std::string, int64_t> owner_;
  /// The names this rank's stage holds.
  std::set<std::string> mine_;
};

} // namespace kiln::dist

#endif // KILN_RUNTIME_DIST_PIPELINERANKBACKEND_H
