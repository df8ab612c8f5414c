//===- CpuBackend.h - the Backend of the CPU interpreter -------------------===//

#ifndef KILN_RUNTIME_CPU_CPUBACKEND_H
#define KILN_RUNTIME_CPU_CPUBACKEND_H

#include "runtime/Backend.h"
#include "runtime/cpu/Interpreter.h"

#include <memory>
#include <optional>

namespace kiln::cpu {

/// Bytes a new allocation can take without swapping: MemAvailable, capped
/// by the cgroup's limit when one is set; nullopt when neither is known.
std::optional<int64_t> availableHostMemory();

class CpuBackend final : public Backend {
public:
  llvm::StringRef name() const override { return "cpu"; }
  llvm::Error load(mlir::ModuleOp module, uint64_t seed) override;
  llvm::Expected<int64_t> memoryNeeded(mlir::ModuleOp module) override;
  llvm::Expected<TensorMap> run(llvm::StringRef fn, const TensorMap &inputs) override;
  bool hasFunction(llvm::StringRef fn) const override { return functions_.count(fn.str()); }
  llvm::Expected<NamedTensors> params() override { return collect(FunctionBinding::Arg::Param); }
  llvm::Expected<NamedTensors> optimizerStates() override {
    return collect(FunctionBinding::Arg::State);
  }
  /// Any parameter or state by name, working copies and transient states
  /// (gradient accumulators) included; null when there is none.
  const HostTensor *stateTensor(llvm::StringRef name) const {
    auto it = state_.find(name.str());
    return it == state_.end() ? nullptr : &it->second;
  }
  llvm::Error setState(const NamedTensors &tensors) override;
  /// The collectives every function's kiln.all_reduce/all_gather use
  /// (MeshCpuBackend sets its rank's for each run, a rank process its
  /// group once); null: none. Kept for functions loaded later.
  void setCollectives(Collectives *collectives) {
    collectives_ = collectives;
    for (auto &[name, f] : functions_)
      f.interpreter->setCollectives(collectives);
  }

private:
  struct Function {
    FunctionBinding binding;
    std::unique_ptr<Interpreter> interpreter;
  };
  NamedTensors collect(FunctionBinding::Arg::Kind kind);

  std::map<std::string, Function> functions_;
  Collectives *collectives_ = nullptr;
  TensorMap state_;
  std::map<std::string, FunctionBinding::Arg::Kind> kinds_;
};

} // namespace kiln::cpu

#endif // KILN_RUNTIME_CPU_CPUBACKEND_H
