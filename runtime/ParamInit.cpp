//===- ParamInit.cpp - initial parameter values from kiln.init -------------===//

#include "runtime/ParamInit.h"

#include "runtime/cpu/Parallel.h"

#include "ir/KilnDialect.h"
#include "runtime/Random.h"
#include "runtime/cpu/Interpreter.h"

using namespace mlir;

namespace kiln {

llvm::Expected<std::vector<ParamInfo>> paramsOf(func::FuncOp func) {
  std::vector<ParamInfo> params;
  for (unsigned i = 0, e = func.getNumArguments(); i < e; ++i) {
    auto name = func.getArgAttrOfType<StringAttr>(i, KilnDialect::kParamAttrName);
    if (!name)
      continue;
    auto type = cpu::hostTypeOf(func.getArgumentTypes()[i]);
    if (!type)
      return type.takeError();
    auto init = func.getArgAttrOfType<StringAttr>(i, KilnDialect::kInitAttrName);
    params.push_back({i, name.getValue().str(), type->first, type->second,
                      init ? init.getValue().str() : "zeros"});
  }
  return params;
}

llvm::Expected<std::vector<cpu::HostTensor>> initParams(llvm::ArrayRef<ParamInfo> params,
                                                        uint64_t seed) {
  std::vector<ParamInit> inits;
  for (const ParamInfo &p : params) {
    auto init = ParamInit::parse(p.init);
    if (!init)
      return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                     "parameter '" + p.name + "' has a malformed kiln.init \"" +
                                         p.init + "\"");
    inits.push_back(*init);
  }
  // Each parameter draws from its own stream (seed, name), so they fill in
  // parallel and the values do not depend on the order.
  std::vector<cpu::HostTensor> values(params.size());
  cpu::parallelFor(static_cast<int64_t>(params.size()), 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      const ParamInfo &p = params[k];
      const ParamInit &init = inits[k];
      cpu::HostTensor t(p.dtype, p.shape);
      Rng rng(seed, p.name);
      for (int64_t i = 0; i < t.numel(); ++i) {
        switch (init.kind) {
        case ParamInit::Kind::Zeros: break;
        case ParamInit::Kind::Ones: t.set(i, 1.0); break;
        case ParamInit::Kind::Normal: t.set(i, init.stddev * rng.normal()); break;
        case ParamInit::Kind::Full: t.set(i, init.stddev); break;
        }
      }
      values[k] = std::move(t);
    }
  });
  return values;
}

llvm::Expected<std::vector<cpu::HostTensor>> initParams(llvm::ArrayRef<StateSpec> specs,
                                                        uint64_t seed) {
  std::vector<ParamInfo> params;
  for (const StateSpec &s : specs)
    params.push_back({0, s.name, s.dtype, s.shape, s.init});
  return initParams(params, seed);
}

} // namespace kiln
