//===- CpuBackend.cpp - the Backend of the CPU interpreter -----------------===//

#include "runtime/cpu/CpuBackend.h"

#include "runtime/ParamInit.h"

#include "llvm/Support/MathExtras.h"
#include "llvm/Support/MemoryBuffer.h"

#include <limits>

namespace kiln::cpu {

namespace {

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}


int64_t saturatingAdd(int64_t a, int64_t b) {
  int64_t sum;
  return llvm::AddOverflow(a, b, sum) ? std::numeric_limits<int64_t>::max() : sum;
}

} // namespace

std::optional<int64_t> availableHostMemory() {
  std::optional<int64_t> available;
  if (auto meminfo = llvm::MemoryBuffer::getFileAsStream("/proc/meminfo")) {
    llvm::SmallVector<llvm::StringRef> lines;
    (*meminfo)->getBuffer().split(lines, '\n');
    for (llvm::StringRef line : lines) {
      if (!line.consume_front("MemAvailable:"))
        continue;
      line = line.trim();
      int64_t kib;
      if (line.consume_back("kB") && !line.trim().getAsInteger(10, kib))
        available = kib * 1024;
    }
  }
  auto readInt = [](const char *path) -> std::optional<int64_t> {
    auto file = llvm::MemoryBuffer::getFileAsStream(path);
    int64_t v;
    if (!file || (*file)->getBuffer().trim().getAsInteger(10, v))
      return std::nullopt; // absent, or "max"
    return v;
  };
  if (auto limit = readInt("/sys/fs/cgroup/memory.max")) {
    int64_t free = *limit - readInt("/sys/fs/cgroup/memory.current").value_or(0);
    available = available ? std::min(*available, free) : free;
  }
  return available;
}

llvm::Expected<int64_t> CpuBackend::memoryNeeded(mlir::ModuleOp module) {
  auto specs = stateSpecsOf(module);
  if (!specs)
    return specs.takeError();
  int64_t state = 0, temporaries = 0;
  for (const StateSpec &spec : *specs) {
    auto bytes = checkedBytes(spec.shape, static_cast<int64_t>(storageSize(spec.dtype)));
    state = saturatingAdd(state, bytes ? *bytes : std::numeric_limits<int64_t>::max());
  }
  // Functions run one at a time; each holds its temporaries only while it runs.
  for (auto func : module.getOps<mlir::func::FuncOp>())
    temporaries = std::max(temporaries, Interpreter::peakTemporaryBytes(func));
  return saturatingAdd(state, temporaries);
}

llvm::Error CpuBackend::load(mlir::ModuleOp module, uint64_t seed) {
  auto specs = stateSpecsOf(module);
  if (!specs)
    return specs.takeError();
  auto needed = memoryNeeded(module);
  if (!needed)
    return needed.takeError();
  if (auto available = availableHostMemory(); available && *needed > *available)
    return llvm::make_error<OutOfMemoryError>("host memory", *needed, *available);
  for (auto func : module.getOps<mlir::func::FuncOp>()) {
    auto binding = FunctionBinding::of(func);
    if (!binding)
      return binding.takeError();
    auto interp = Interpreter::create(func);
    if (!interp)
      return interp.takeError();
    (*interp)->setCollectives(collectives_);
    std::string name = binding->name;
    functions_[name] = Function{std::move(*binding), std::move(*interp)};
  }
  specs_ = std::move(*specs);
  auto values = initParams(specs_, seed);
  if (!values)
    return values.takeError();
  for (auto [spec, value] : llvm::zip(specs_, *values)) {
    kinds_[spec.name] = spec.isParam ? FunctionBinding::Arg::Param : FunctionBinding::Arg::State;
    state_[spec.name] = std::move(value);
  }
  // The working copies, from the initial parameters (sharing their storage).
  for (auto &[name, t] : copiesOf(specs_, NamedTensors(state_.begin(), state_.end())))
    state_[name] = std::move(t);
  return llvm::Error::success();
}

llvm::Expected<TensorMap> CpuBackend::run(llvm::StringRef fn, const TensorMap &inputs) {
  auto it = functions_.find(fn.str());
  if (it == functions_.end())
    return error("the compiled module has no function @" + fn);
  Function &f = it->second;
  std::vector<HostTensor> args;
  for (const FunctionBinding::Arg &arg : f.binding.args) {
    if (arg.kind != FunctionBinding::Arg::Input) {
      args.push_back(state_.at(arg.name));
      continue;
    }
    auto in = inputs.find(arg.name);
    if (in == inputs.end())
      return error("@" + fn + " needs the input '" + arg.name + "'");
    args.push_back(in->second);
  }
  auto results = f.interpreter->run(args);
  if (!results)
    return results.takeError();
  TensorMap outputs;
  for (const auto &[r, binding] : llvm::enumerate(f.binding.results)) {
    if (binding.aliases >= 0)
      state_[f.binding.args[binding.aliases].name] = std::move((*results)[r]);
    else
      outputs[binding.output] = std::move((*results)[r]);
  }
  return outputs;
}

NamedTensors CpuBackend::collect(FunctionBinding::Arg::Kind kind) {
  NamedTensors out;
  for (const auto &[name, t] : state_)
    if (kinds_[name] == kind && isCheckpointed(specs_, name))
      out.push_back({name, t});
  return out;
}

llvm::Error CpuBackend::setState(const NamedTensors &tensors) {
  for (const auto &[name, t] : tensors) {
    auto it = state_.find(name);
    if (it == state_.end())
      return error("the checkpoint has '" + name + "', which this model does not");
    if (it->second.dtype() != t.dtype() || it->second.shape() != t.shape())
      return error("'" + name + "' is " + t.typeString() + " in the checkpoint but " +
                   it->second.typeString() + " in this model");
  }
  for (const auto &[name, t] : tensors)
    if (!isCopy(specs_, name))
      state_[name] = t.clone();
  for (auto &[name, t] : copiesOf(specs_, tensors))
    state_[name] = std::move(t);
  return llvm::Error::success();
}

} // namespace kiln::cpu
