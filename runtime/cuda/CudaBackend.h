//===- CudaBackend.h - the Backend that runs on one GPU --------------------===//
//
// Loading a module: a PlanCompiler (codegen, which the runtime does not
// depend on, so the caller passes it in) turns it into a Plan; a
// CudaExecutor compiles and loads the Plan; parameters and optimizer states
// are initialized on the host from the seed exactly as the CPU backend does
// (same values for the same seed) and copied into their arena buffers,
// where they stay: running a function moves only its inputs and outputs.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_CUDABACKEND_H
#define KILN_RUNTIME_CUDA_CUDABACKEND_H

#include "runtime/Backend.h"
#include "runtime/cuda/CudaExecutor.h"

#include <functional>

namespace kiln::cuda {

using PlanCompiler = std::function<llvm::Expected<Plan>(mlir::ModuleOp)>;

class CudaBackend final : public Backend {
public:
  CudaBackend(PlanCompiler compile, ExecutorOptions options)
      : compile_(std::move(compile)), options_(std::move(options)) {}

  llvm::StringRef name() const override { return "cuda"; }
  llvm::Error load(mlir::ModuleOp module, uint64_t seed) override;
  /// The plan's arena (compiling `module` to a plan, which annotates it).
  llvm::Expected<int64_t> memoryNeeded(mlir::ModuleOp module) override;
  llvm::Expected<TensorMap> run(llvm::StringRef fn, const TensorMap &inputs) override;
  bool hasFunction(llvm::StringRef fn) const override;
  llvm::Expected<NamedTensors> params() override { return collect(PlanBinding::Kind::Param); }
  llvm::Expected<NamedTensors> optimizerStates() override {
    return collect(PlanBinding::Kind::State);
  }
  llvm::Error setState(const NamedTensors &tensors) override;
  std::string describe() const override;

  CudaExecutor &executor() { return *executor_; }

  /// Where load() spent its time: codegen (buffer plan and kernel sources),
  /// the executor (CudaExecutor::stats), and the initial state (drawn on
  /// the host, copied in).
  struct LoadTimes {
    double plan = 0, executor = 0, init = 0;
  };
  const LoadTimes &loadTimes() const { return times_; }

private:
  llvm::Expected<NamedTensors> collect(PlanBinding::Kind kind);

  PlanCompiler compile_;
  ExecutorOptions options_;
  std::unique_ptr<CudaExecutor> executor_;
  /// Parameters and states by name, in order of first appearance.
  std::vector<PlanBinding> state_;
  LoadTimes times_;
};

} // namespace kiln::cuda

#endif // KILN_RUNTIME_CUDA_CUDABACKEND_H
