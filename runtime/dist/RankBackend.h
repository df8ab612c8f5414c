//===- RankBackend.h - this process as one rank of a mesh ------------------===//
//
// The Backend of one rank process of a partitioned module (kiln-partition):
// its own rank's functions run on a local backend — the CPU interpreter, or
// a GPU — whose collectives go through the group, and the training
// loop above it sees global tensors, as with MeshCpuBackend: it gives a
// rank the whole batch, of which it keeps its part (the rows of its
// data-parallel coordinate), or just that part (batchRows: the loop reads
// only those rows); outputs are replicated; parameters and states come back whole
// (split ones gathered through the group, so every rank must ask for them
// together, at the same step).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_DIST_RANKBACKEND_H
#define KILN_RUNTIME_DIST_RANKBACKEND_H

#include "runtime/Backend.h"
#include "runtime/MeshLayout.h"
#include "runtime/dist/SocketGroup.h"

#include <memory>
#include <optional>

namespace kiln::dist {

/// Every rank's part of state `name` whole, `t` being this rank's: one
/// all_gather over each axis `layout` splits it along (none: `t`). A
/// collective: every rank of those axes calls it, in the same order.
llvm::Expected<cpu::HostTensor> gatherState(SocketGroup &group, const MeshLayout &layout,
                                            llvm::StringRef name, cpu::HostTensor t);

class RankBackend final : public Backend {
public:
  /// Rank `group.rank()`'s part on `local`, whose collectives already go
  /// through `group` (CpuBackend::setCollectives, the CUDA executor's
  /// options); `group` outlives it.
  /// `collectives` says how they travel, for describe().
  RankBackend(SocketGroup &group, std::unique_ptr<Backend> local,
              std::string collectives = "collectives over TCP through rank 0")
      : group_(group), local_(std::move(local)), collectives_(std::move(collectives)) {}

  llvm::StringRef name() const override { return local_->name(); }
  llvm::Error load(mlir::ModuleOp module, uint64_t seed) override;
  llvm::Expected<int64_t> memoryNeeded(mlir::ModuleOp module) override {
    return local_->memoryNeeded(module);
  }
  llvm::Expected<TensorMap> run(llvm::StringRef fn, const TensorMap &inputs) override;
  bool hasFunction(llvm::StringRef fn) const override { return local_->hasFunction(fn); }
  std::pair<int64_t, int64_t> batchRows(llvm::StringRef fn, int64_t batch) const override;
  Backend &local() { return *local_; }
  llvm::Expected<NamedTensors> params() override;
  llvm::Expected<NamedTensors> optimizerStates() override;
  llvm::Error setState(const NamedTensors &tensors) override;
  std::string describe() const override;

private:
  /// `local` with each split tensor gathered whole from the ranks.
  llvm::Expected<NamedTensors> gather(llvm::Expected<NamedTensors> local);

  SocketGroup &group_;
  std::unique_ptr<Backend> local_;
  std::string collectives_;
  std::optional<MeshLayout> layout_;
};

} // namespace kiln::dist

#endif // KILN_RUNTIME_DIST_RANKBACKEND_H
