//===- Backend.cpp - bindings of a function's arguments and results --------===//

#include "runtime/Backend.h"

#include "ir/KilnDialect.h"
#include "runtime/cpu/Interpreter.h"

using namespace mlir;

namespace kiln {

llvm::Expected<FunctionBinding> FunctionBinding::of(func::FuncOp func) {
  FunctionBinding b;
  b.name = func.getSymName().str();
  for (unsigned i = 0, e = func.getNumArguments(); i < e; ++i) {
    auto type = cpu::hostTypeOf(func.getArgumentTypes()[i]);
    if (!type)
      return type.takeError();
    Arg arg{Arg::Input, "", type->first, type->second, "zeros"};
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
    b.args.push_back(std::move(arg));
  }
  for (unsigned i = 0, e = func.getNumResults(); i < e; ++i) {
    Result r;
    if (auto alias = func.getResultAttrOfType<IntegerAttr>(i, KilnDialect::kAliasesAttrName))
      r.aliases = static_cast<int>(alias.getInt());
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

} // namespace kiln
