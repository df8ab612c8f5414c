//===- CpuBackend.cpp - the Backend of the CPU interpreter -----------------===//

#include "runtime/cpu/CpuBackend.h"

#include "runtime/ParamInit.h"

namespace kiln::cpu {

namespace {

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

} // namespace

llvm::Error CpuBackend::load(mlir::ModuleOp module, uint64_t seed) {
  std::vector<ParamInfo> toInit;
  for (auto func : module.getOps<mlir::func::FuncOp>()) {
    auto binding = FunctionBinding::of(func);
    if (!binding)
      return binding.takeError();
    auto interp = Interpreter::create(func);
    if (!interp)
      return interp.takeError();
    for (const auto &[i, arg] : llvm::enumerate(binding->args)) {
      if (arg.kind == FunctionBinding::Arg::Input)
        continue;
      auto [it, inserted] = kinds_.try_emplace(arg.name, arg.kind);
      if (inserted) {
        toInit.push_back({static_cast<unsigned>(i), arg.name, arg.dtype, arg.shape, arg.init});
        continue;
      }
      // Functions sharing a parameter must agree on its type.
      auto known = llvm::find_if(toInit, [&](const ParamInfo &p) { return p.name == arg.name; });
      if (known->dtype != arg.dtype || known->shape != arg.shape)
        return error("@" + binding->name + " declares '" + arg.name +
                     "' with another type than an earlier function");
    }
    std::string name = binding->name;
    functions_[name] = Function{std::move(*binding), std::move(*interp)};
  }
  auto values = initParams(toInit, seed);
  if (!values)
    return values.takeError();
  for (auto [info, value] : llvm::zip(toInit, *values))
    state_[info.name] = std::move(value);
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
    if (kinds_[name] == kind)
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
    state_[name] = t.clone();
  return llvm::Error::success();
}

} // namespace kiln::cpu
