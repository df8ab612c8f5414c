//===- CudaBackend.cpp - the Backend that runs on one GPU ------------------===//

#include "runtime/cuda/CudaBackend.h"

#include "runtime/ParamInit.h"
#include "runtime/cuda/CudaApi.h"

#include "llvm/Support/FormatVariadic.h"

#include <chrono>

namespace kiln::cuda {

namespace {

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

} // namespace

llvm::Error CudaBackend::load(mlir::ModuleOp module, uint64_t seed) {
  auto specs = stateSpecsOf(module);
  if (!specs)
    return specs.takeError();
  specs_ = std::move(*specs);
  using Clock = std::chrono::steady_clock;
  auto since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  auto start = Clock::now();
  auto plan = compile_(module);
  if (!plan)
    return plan.takeError();
  times_.plan = since(start);
  start = Clock::now();
  auto executor = CudaExecutor::create(std::move(*plan), options_);
  if (!executor)
    return executor.takeError();
  executor_ = std::move(*executor);
  times_.executor = since(start);
  start = Clock::now();

  for (const PlanFunction &f : executor_->plan().functions)
    for (const PlanBinding &b : f.args)
      if (b.kind != PlanBinding::Kind::Input &&
          llvm::none_of(state_, [&](const PlanBinding &s) { return s.name == b.name; }))
        state_.push_back(b);
  auto values = initParams(specs_, seed);
  if (!values)
    return values.takeError();
  NamedTensors initial;
  for (auto [spec, value] : llvm::zip(specs_, *values))
    initial.push_back({spec.name, std::move(value)});
  llvm::Error err = setState(initial);
  times_.init = since(start);
  return err;
}

llvm::Expected<int64_t> CudaBackend::memoryNeeded(mlir::ModuleOp module) {
  auto plan = compile_(module);
  if (!plan)
    return plan.takeError();
  return plan->memory.total;
}

bool CudaBackend::hasFunction(llvm::StringRef fn) const {
  return executor_ && executor_->plan().function(fn) != nullptr;
}

llvm::Expected<TensorMap> CudaBackend::run(llvm::StringRef fn, const TensorMap &inputs) {
  if (!executor_)
    return error("the CUDA backend has no module loaded");
  auto outputs = executor_->run(fn, inputs);
  if (!outputs)
    return outputs.takeError();
  return TensorMap(std::make_move_iterator(outputs->begin()), std::make_move_iterator(outputs->end()));
}

llvm::Expected<NamedTensors> CudaBackend::collect(PlanBinding::Kind kind) {
  NamedTensors out;
  std::vector<char> bytes;
  for (const PlanBinding &b : state_) {
    if (b.kind != kind || !isCheckpointed(specs_, b.name))
      continue;
    bytes.resize(static_cast<size_t>(b.bytes()));
    if (llvm::Error err = executor_->read(b.offset, bytes.data(), b.bytes()))
      return std::move(err);
    out.push_back({b.name, unpackFromDevice(bytes.data(), b.dtype, b.shape)});
  }
  return out;
}

llvm::Error CudaBackend::setState(const NamedTensors &tensors) {
  auto find = [&](const std::string &name) -> const PlanBinding * {
    for (const PlanBinding &b : state_)
      if (b.name == name)
        return &b;
    return nullptr;
  };
  for (const auto &[name, t] : tensors) {
    const PlanBinding *b = find(name);
    if (!b)
      return error("the checkpoint has '" + name + "', which this model does not");
    if (b->dtype != t.dtype() || b->shape != t.shape())
      return error(llvm::formatv("'{0}' is {1} in the checkpoint but {2} in this model", name,
                                 t.typeString(), cpu::typeString(b->dtype, b->shape)));
  }
  std::vector<char> bytes;
  auto write = [&](const std::string &name, const cpu::HostTensor &t) -> llvm::Error {
    const PlanBinding *b = find(name);
    if (!b)
      return error("'" + name + "' is in this model's state but not in its plan");
    bytes.resize(static_cast<size_t>(b->bytes()));
    packForDevice(t, bytes.data());
    return executor_->write(b->offset, bytes.data(), b->bytes());
  };
  // The given tensors (a working copy is derived instead), then the copies.
  for (const auto &[name, t] : tensors)
    if (!isCopy(specs_, name))
      if (llvm::Error err = write(name, t))
        return err;
  for (const auto &[name, t] : copiesOf(specs_, tensors))
    if (llvm::Error err = write(name, t))
      return err;
  return llvm::Error::success();
}

std::string CudaBackend::describe() const {
  if (!executor_)
    return "cuda (nothing loaded)";
  const auto &s = executor_->stats();
  auto dev = device();
  std::string name = dev ? dev->name : "?";
  if (dev && dev->count > 1)
    name = llvm::formatv("GPU {0} of {1}, {2}", dev->ordinal, dev->count, name).str();
  if (!dev)
    llvm::consumeError(dev.takeError());
  return llvm::formatv("{0}: codegen {1:f2} s; {2} kernels ({3} compiled by NVRTC, {4} cached) "
                       "{5:f2} s; {6} GEMM shapes ({7} from the autotuning cache) {8:f2} s; "
                       "initial state {9:f2} s\n",
                       name, times_.plan, executor_->plan().kernels.size(), s.nvrtc.compiled,
                       s.nvrtc.cached, s.nvrtc.seconds, s.gemmShapes, s.gemmShapesCached,
                       s.autotuneSeconds, times_.init)
             .str() +
         executor_->plan().memory.describe();
}

} // namespace kiln::cuda
