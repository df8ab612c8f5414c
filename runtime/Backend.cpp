//===- Backend.cpp - bindings of a function's arguments and results --------===//

#include "runtime/Backend.h"

#include "ir/KilnDialect.h"
#include "runtime/cpu/Interpreter.h"
#include "runtime/cpu/Kernels.h"

#include "llvm/Support/FormatVariadic.h"

#include <set>

using namespace mlir;

namespace kiln {

char OutOfMemoryError::ID = 0;

void OutOfMemoryError::log(llvm::raw_ostream &os) const {
  os << llvm::formatv("this run needs {0:f2} GiB of {1} but {2:f2} GiB is free", needed / 1073741824.0,
                      where, available / 1073741824.0);
}

llvm::Expected<FunctionBinding> FunctionBinding::of(func::FuncOp func) {
  FunctionBinding b;
  b.name = func.getSymName().str();
  for (unsigned i = 0, e = func.getNumArguments(); i < e; ++i) {
    auto type = cpu::hostTypeOf(func.getArgumentTypes()[i]);
    if (!type)
      return type.takeError();
    Arg arg{Arg::Input, "", type->first, type->second, "zeros", "", false};
    if (auto n = func.getArgAttrOfType<StringAttr>(i, KilnDialect::kParamAttrName)) {
      arg.kind = Arg::Param;
      arg.name = n.getValue().str();
    } else if (auto n = func.getArgAttrOfType<StringAttr>(i, KilnDialect::kStateAttrName)) {
      arg.kind = Arg::State;
      arg.name = n.getValue().str();
    } else if (auto n = func.getArgAttrOfType<StringAttr>(i, KilnDialect::kInputAttrName)) {
      arg.name = n.getValue().str();
    } else {
      return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                     "@" + b.name + " argument #" + std::to_string(i) +
                                         " has no kiln.param, kiln.state or kiln.input name");
    }
    if (auto init = func.getArgAttrOfType<StringAttr>(i, KilnDialect::kInitAttrName))
      arg.init = init.getValue().str();
    if (auto copy = func.getArgAttrOfType<StringAttr>(i, KilnDialect::kCopyOfAttrName))
      arg.copyOf = copy.getValue().str();
    arg.transient = static_cast<bool>(func.getArgAttr(i, KilnDialect::kTransientAttrName));
    b.args.push_back(std::move(arg));
  }
  for (unsigned i = 0, e = func.getNumResults(); i < e; ++i) {
    Result r;
    if (auto alias = func.getResultAttrOfType<IntegerAttr>(i, KilnDialect::kAliasesAttrName)) {
      int64_t a = alias.getInt();
      if (a < 0 || a >= static_cast<int64_t>(b.args.size()) || b.args[a].kind == Arg::Input)
        return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                       "@" + b.name + " result #" + std::to_string(i) +
                                           ": kiln.aliases = " + std::to_string(a) +
                                           " names no parameter or state argument");
      r.aliases = static_cast<int>(a);
    }
    if (auto out = func.getResultAttrOfType<StringAttr>(i, KilnDialect::kOutputAttrName))
      r.output = out.getValue().str();
    else if (auto grad = func.getResultAttrOfType<StringAttr>(i, KilnDialect::kGradAttrName))
      r.output = "grad." + grad.getValue().str();
    else
      r.output = "result" + std::to_string(i);
    b.results.push_back(std::move(r));
  }
  return b;
}

llvm::Expected<std::vector<StateSpec>> stateSpecsOf(ModuleOp module) {
  std::vector<StateSpec> specs;
  for (auto func : module.getOps<func::FuncOp>()) {
    auto binding = FunctionBinding::of(func);
    if (!binding)
      return binding.takeError();
    for (const FunctionBinding::Arg &arg : binding->args) {
      if (arg.kind == FunctionBinding::Arg::Input)
        continue;
      auto known = llvm::find_if(specs, [&](const StateSpec &s) { return s.name == arg.name; });
      if (known == specs.end()) {
        specs.push_back({arg.name, arg.kind == FunctionBinding::Arg::Param, arg.dtype, arg.shape,
                         arg.init, arg.copyOf, arg.transient});
        continue;
      }
      if (known->dtype != arg.dtype || known->shape != arg.shape || known->copyOf != arg.copyOf ||
          known->transient != arg.transient)
        return llvm::createStringError(
            llvm::inconvertibleErrorCode(),
            "@" + binding->name + " declares '" + arg.name + "' as " +
                cpu::typeString(arg.dtype, arg.shape) + ", another function as " +
                cpu::typeString(known->dtype, known->shape));
    }
  }
  return specs;
}

NamedTensors copiesOf(llvm::ArrayRef<StateSpec> specs, const NamedTensors &tensors) {
  NamedTensors copies;
  for (const StateSpec &spec : specs) {
    if (spec.copyOf.empty())
      continue;
    for (const auto &[name, t] : tensors)
      if (name == spec.copyOf)
        copies.push_back({spec.name, cpu::kernels::cast(t, spec.dtype)});
  }
  return copies;
}

std::string argumentBinding(func::FuncOp func, unsigned i) {
  for (StringRef kind :
       {KilnDialect::kParamAttrName, KilnDialect::kStateAttrName, KilnDialect::kInputAttrName})
    if (auto name = func.getArgAttrOfType<StringAttr>(i, kind))
      return (kind + ":" + name.getValue()).str();
  return "";
}

void deriveCopyArguments(func::FuncOp func, std::vector<cpu::HostTensor> &args) {
  for (unsigned i = 0; i < func.getNumArguments() && i < args.size(); ++i) {
    auto of = func.getArgAttrOfType<StringAttr>(i, KilnDialect::kCopyOfAttrName);
    if (!of || !args[i].defined())
      continue;
    for (unsigned p = 0; p < func.getNumArguments() && p < args.size(); ++p)
      if (func.getArgAttrOfType<StringAttr>(p, KilnDialect::kParamAttrName) == of &&
          args[p].defined())
        args[i] = cpu::kernels::cast(args[p], args[i].dtype());
  }
}

bool isCopy(llvm::ArrayRef<StateSpec> specs, llvm::StringRef name) {
  return llvm::any_of(specs,
                      [&](const StateSpec &s) { return s.name == name && !s.copyOf.empty(); });
}

bool isCheckpointed(llvm::ArrayRef<StateSpec> specs, llvm::StringRef name) {
  return llvm::none_of(specs, [&](const StateSpec &s) {
    return s.name == name && (!s.copyOf.empty() || s.transient);
  });
}

/// A gradient accumulator in a checkpoint written before accumulators
/// were transient (kiln.transient, 2026-12-04): named `<param>.grad_acc`
/// and zero, as every accumulator is between steps.
static bool isOldAccumulator(llvm::StringRef name, const cpu::HostTensor &t) {
  if (!name.ends_with(".grad_acc"))
    return false;
  for (int64_t i = 0; i < t.numel(); ++i)
    if (t.get(i) != 0)
      return false;
  return true;
}

llvm::Expected<std::vector<std::string>> checkStateComplete(llvm::ArrayRef<StateSpec> specs,
                                                           const NamedTensors &tensors,
                                                           bool params, bool partial,
                                                           llvm::StringRef source) {
  auto error = [&](const llvm::Twine &message) {
    return llvm::createStringError(llvm::inconvertibleErrorCode(), source + ": " + message);
  };
  llvm::StringRef group = params ? "parameter" : "optimizer state";
  std::set<std::string> given;
  for (const auto &entry : tensors) {
    const std::string &name = entry.first;
    const cpu::HostTensor &t = entry.second;
    auto spec = llvm::find_if(specs, [&](const StateSpec &s) { return s.name == name; });
    if (spec != specs.end() && (!spec->copyOf.empty() || spec->transient))
      continue; // derived from its parameter, or its init value, whatever is given
    if (spec == specs.end() && isOldAccumulator(name, t))
      continue;
    if (spec == specs.end() || spec->isParam != params)
      return error("has " + group + " '" + name + "', which this model does not");
    if (spec->dtype != t.dtype() || spec->shape != t.shape())
      return error("'" + name + "' is " + t.typeString() + " there but " +
                   cpu::typeString(spec->dtype, spec->shape) + " in this model");
    given.insert(name);
  }
  std::vector<std::string> missing;
  for (const StateSpec &spec : specs)
    if (spec.isParam == params && spec.copyOf.empty() && !spec.transient && !given.count(spec.name))
      missing.push_back(spec.name);
  if (!missing.empty() && !partial) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 8; ++i)
      list += (i ? ", " : "") + missing[i];
    if (missing.size() > 8)
      list += ", ...";
    return error(llvm::Twine("lacks ") + std::to_string(missing.size()) + " of the model's " +
                 std::to_string(missing.size() + given.size()) + " " + group + "s (" + list +
                 "): it was written for another model or is incomplete");
  }
  return missing;
}

llvm::Expected<std::vector<std::string>> Backend::loadState(const NamedTensors &tensors,
                                                            bool params, bool partial,
                                                            llvm::StringRef source) {
  auto fresh = checkStateComplete(specs_, tensors, params, partial, source);
  if (!fresh)
    return fresh.takeError();
  // Transient states keep their values (their init value between steps),
  // and an older checkpoint's accumulators are dropped.
  NamedTensors kept;
  for (const auto &[key, t] : tensors) {
    const std::string &name = key; // (the lambda captures it)
    auto spec = llvm::find_if(specs_, [&](const StateSpec &s) { return s.name == name; });
    if (spec == specs_.end() ? isOldAccumulator(name, t) : spec->transient)
      continue;
    kept.push_back({name, t});
  }
  if (llvm::Error err = setState(kept))
    return std::move(err);
  return fresh;
}

} // namespace kiln
