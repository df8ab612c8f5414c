//===- MeshCpuBackend.h - a partitioned step on CPU threads ----------------===//
//
// The Backend for a module partitioned over a mesh (kiln-partition): one
// CpuBackend per rank, each rank a thread, their collectives through
// ThreadMesh. The training loop sees one backend with global tensors: it
// splits each input by the argument's kiln.sharding (the batch rows of a
// data-parallel rank), and returns outputs and state whole (replicated
// values from rank 0, split ones gathered), so logs, checkpoints and
// sampling do not change with the mesh.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CPU_MESHCPUBACKEND_H
#define KILN_RUNTIME_CPU_MESHCPUBACKEND_H

#include "runtime/MeshLayout.h"
#include "runtime/cpu/Collectives.h"
#include "runtime/cpu/CpuBackend.h"

#include <memory>
#include <optional>

namespace kiln::cpu {

class MeshCpuBackend final : public Backend {
public:
  llvm::StringRef name() const override { return "cpu"; }
  llvm::Error load(mlir::ModuleOp module, uint64_t seed) override;
  llvm::Expected<int64_t> memoryNeeded(mlir::ModuleOp module) override;
  llvm::Expected<TensorMap> run(llvm::StringRef fn, const TensorMap &inputs) override;
  bool hasFunction(llvm::StringRef fn) const override { return ranks_[0]->hasFunction(fn); }
  /// Whole tensors: split ones (ZeRO) gathered from the ranks holding them.
  llvm::Expected<NamedTensors> params() override {
    auto p = ranks_[0]->params();
    return p ? gather(std::move(*p)) : p.takeError();
  }
  llvm::Expected<NamedTensors> optimizerStates() override {
    auto s = ranks_[0]->optimizerStates();
    return s ? gather(std::move(*s)) : s.takeError();
  }
  llvm::Error setState(const NamedTensors &tensors) override;
  std::string describe() const override;

private:
  /// `local0` (rank 0's tensors) with each split one replaced by the whole.
  llvm::Expected<NamedTensors> gather(NamedTensors local0);

  std::optional<MeshLayout> layout_;
  std::unique_ptr<ThreadMesh> mesh_;
  std::vector<std::unique_ptr<CpuBackend>> ranks_;
};

} // namespace kiln::cpu

#endif // KILN_RUNTIME_CPU_MESHCPUBACKEND_H
