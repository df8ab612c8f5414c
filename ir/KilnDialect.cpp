//===- KilnDialect.cpp - dialect registration and argument attributes -----===//

#include "ir/KilnDialect.h"
#include "ir/KilnOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/Interfaces/FunctionInterfaces.h"
#include "llvm/Support/Format.h"

using namespace mlir;
using namespace kiln;

#include "ir/KilnDialect.cpp.inc"

void KilnDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "ir/KilnOps.cpp.inc"
      >();
}

Operation *KilnDialect::materializeConstant(OpBuilder &builder, Attribute value,
                                            Type type, Location loc) {
  auto elements = dyn_cast<ElementsAttr>(value);
  if (!elements || elements.getType() != type)
    return nullptr;
  return ConstantOp::create(builder, loc, type, elements);
}

std::string ParamInit::str() const {
  switch (kind) {
  case Kind::Zeros:
    return "zeros";
  case Kind::Ones:
    return "ones";
  case Kind::Normal:
    break;
  }
  std::string s;
  llvm::raw_string_ostream os(s);
  os << "normal(" << llvm::format("%g", stddev) << ")";
  return s;
}

std::optional<ParamInit> ParamInit::parse(StringRef text) {
  text = text.trim();
  if (text == "zeros")
    return zeros();
  if (text == "ones")
    return ones();
  if (text.consume_front("normal(") && text.consume_back(")")) {
    double stddev;
    if (!text.trim().getAsDouble(stddev) && stddev >= 0.0)
      return normal(stddev);
  }
  return std::nullopt;
}

// `kiln.param` and `kiln.input` name an argument; the names are strings and
// unique within the function (checkpoints and sharding annotations use them).
LogicalResult KilnDialect::verifyRegionArgAttribute(Operation *op,
                                                    unsigned regionIndex,
                                                    unsigned argIndex,
                                                    NamedAttribute attr) {
  StringRef attrName = attr.getName().getValue();
  if (attrName == kInitAttrName) {
    auto text = dyn_cast<StringAttr>(attr.getValue());
    if (!text || !ParamInit::parse(text.getValue()))
      return op->emitError() << "'kiln.init' on argument #" << argIndex
                             << " must be \"zeros\", \"ones\" or \"normal(STD)\", got "
                             << attr.getValue();
    return success();
  }
  if (attrName != kParamAttrName && attrName != kInputAttrName)
    return op->emitError() << "unknown kiln argument attribute '" << attrName
                           << "' on argument #" << argIndex
                           << " (expected kiln.param, kiln.input or kiln.init)";
  auto name = dyn_cast<StringAttr>(attr.getValue());
  if (!name || name.getValue().empty())
    return op->emitError() << "'" << attrName << "' on argument #" << argIndex
                           << " must be a non-empty string, got "
                           << attr.getValue();
  auto func = dyn_cast<FunctionOpInterface>(op);
  if (!func)
    return success();
  // Only the later argument of a duplicate pair reports, so each duplicate is
  // reported once.
  for (unsigned other = 0; other < argIndex; ++other) {
    for (StringRef otherKind : {kParamAttrName, kInputAttrName}) {
      auto otherName = func.getArgAttrOfType<StringAttr>(other, otherKind);
      if (otherName && otherName == name)
        return op->emitError()
               << "argument #" << argIndex << " and argument #" << other
               << " are both named \"" << name.getValue()
               << "\"; kiln.param/kiln.input names must be unique";
    }
  }
  if (attrName == kParamAttrName && func.getArgAttr(argIndex, kInputAttrName))
    return op->emitError() << "argument #" << argIndex
                           << " cannot be both a kiln.param and a kiln.input";
  return success();
}

// `kiln.output` names a result; `kiln.grad` says which parameter a result is
// the gradient of, and must name a kiln.param argument of the same type.
LogicalResult KilnDialect::verifyRegionResultAttribute(Operation *op,
                                                       unsigned regionIndex,
                                                       unsigned resultIndex,
                                                       NamedAttribute attr) {
  StringRef attrName = attr.getName().getValue();
  if (attrName != kOutputAttrName && attrName != kGradAttrName)
    return op->emitError() << "unknown kiln result attribute '" << attrName
                           << "' on result #" << resultIndex
                           << " (expected kiln.output or kiln.grad)";
  auto name = dyn_cast<StringAttr>(attr.getValue());
  if (!name || name.getValue().empty())
    return op->emitError() << "'" << attrName << "' on result #" << resultIndex
                           << " must be a non-empty string, got " << attr.getValue();
  auto func = dyn_cast<FunctionOpInterface>(op);
  if (!func || attrName != kGradAttrName)
    return success();
  for (unsigned i = 0, e = func.getNumArguments(); i < e; ++i) {
    auto param = func.getArgAttrOfType<StringAttr>(i, kParamAttrName);
    if (param != name)
      continue;
    Type argType = func.getArgumentTypes()[i];
    Type resultType = func.getResultTypes()[resultIndex];
    if (argType != resultType)
      return op->emitError() << "result #" << resultIndex << " of type " << resultType
                             << " is the gradient of parameter \"" << name.getValue()
                             << "\" of type " << argType << "; the types must match";
    return success();
  }
  return op->emitError() << "result #" << resultIndex << " is marked kiln.grad of \""
                         << name.getValue() << "\", but no argument is that kiln.param";
}
