//===- KilnDialect.cpp - dialect registration and argument attributes -----===//

#include "ir/KilnDialect.h"
#include "ir/KilnAttrs.h"
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
  registerAttributes();
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
  case Kind::Full:
    break;
  }
  std::string s;
  llvm::raw_string_ostream os(s);
  os << (kind == Kind::Normal ? "normal(" : "full(") << llvm::format("%.17g", stddev) << ")";
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
  } else if (text.consume_front("full(") && text.consume_back(")")) {
    double value;
    if (!text.trim().getAsDouble(value))
      return full(value);
  }
  return std::nullopt;
}

/// `kiln.sharding` on argument or result #index of `op`: a #kiln.sharding
/// with one entry per dimension of the value's type.
static LogicalResult verifyShardingAttr(Operation *op, StringRef what, unsigned index,
                                        Attribute value, Type type) {
  auto sharding = dyn_cast<ShardingAttr>(value);
  if (!sharding)
    return op->emitError() << "'kiln.sharding' on " << what << " #" << index
                           << " must be a #kiln.sharding, got " << value;
  auto tensor = dyn_cast<RankedTensorType>(type);
  if (tensor && static_cast<int64_t>(sharding.getDims().size()) != tensor.getRank())
    return op->emitError() << "'kiln.sharding' on " << what << " #" << index << " has "
                           << sharding.getDims().size() << " entries for " << type << " of rank "
                           << tensor.getRank();
  return success();
}

// `kiln.param`, `kiln.input` and `kiln.state` name an argument; the names are
// strings and unique within the function (checkpoints and sharding
// annotations use them). `kiln.init` and `kiln.role` describe a parameter.
LogicalResult KilnDialect::verifyRegionArgAttribute(Operation *op,
                                                    unsigned regionIndex,
                                                    unsigned argIndex,
                                                    NamedAttribute attr) {
  StringRef attrName = attr.getName().getValue();
  if (attrName == kInitAttrName) {
    auto text = dyn_cast<StringAttr>(attr.getValue());
    if (!text || !ParamInit::parse(text.getValue()))
      return op->emitError() << "'kiln.init' on argument #" << argIndex
                             << " must be \"zeros\", \"ones\", \"normal(STD)\" or \"full(V)\", got "
                             << attr.getValue();
    return success();
  }
  if (attrName == kRoleAttrName) {
    auto role = dyn_cast<StringAttr>(attr.getValue());
    if (!role || !llvm::is_contained({"weight", "bias", "norm", "embedding"}, role.getValue()))
      return op->emitError() << "'kiln.role' on argument #" << argIndex
                             << " must be \"weight\", \"bias\", \"norm\" or \"embedding\", got "
                             << attr.getValue();
    return success();
  }
  if (attrName == kShardingAttrName) {
    auto func = dyn_cast<FunctionOpInterface>(op);
    Type type = func && argIndex < func.getNumArguments() ? func.getArgumentTypes()[argIndex] : Type();
    return verifyShardingAttr(op, "argument", argIndex, attr.getValue(), type);
  }
  if (attrName == kOffsetAttrName) {
    auto offset = dyn_cast<IntegerAttr>(attr.getValue());
    if (!offset || offset.getInt() < 0)
      return op->emitError() << "'kiln.offset' on argument #" << argIndex
                             << " must be a non-negative byte offset, got " << attr.getValue();
    return success();
  }
  if (attrName == kCopyOfAttrName) {
    auto name = dyn_cast<StringAttr>(attr.getValue());
    if (!name || name.getValue().empty())
      return op->emitError() << "'kiln.copy_of' on argument #" << argIndex
                             << " must name a parameter, got " << attr.getValue();
    auto func = dyn_cast<FunctionOpInterface>(op);
    if (!func || argIndex >= func.getNumArguments())
      return success();
    if (!func.getArgAttr(argIndex, kStateAttrName))
      return op->emitError() << "'kiln.copy_of' on argument #" << argIndex
                             << " belongs on a kiln.state argument";
    auto copy = dyn_cast<RankedTensorType>(func.getArgumentTypes()[argIndex]);
    for (unsigned i = 0, e = func.getNumArguments(); i < e; ++i) {
      if (func.getArgAttrOfType<StringAttr>(i, kParamAttrName) != name)
        continue;
      auto param = dyn_cast<RankedTensorType>(func.getArgumentTypes()[i]);
      if (!copy || !param || copy.getShape() != param.getShape() ||
          !isa<FloatType>(copy.getElementType()) || !isa<FloatType>(param.getElementType()))
        return op->emitError() << "argument #" << argIndex << " of type " << copy
                               << " is a copy of parameter '" << name.getValue() << "' of type "
                               << param << "; both must be float tensors of one shape";
      return success();
    }
    return op->emitError() << "argument #" << argIndex << " is a copy of '" << name.getValue()
                           << "', which is no kiln.param of this function";
  }
  if (attrName == kTransientAttrName) {
    if (!isa<UnitAttr>(attr.getValue()))
      return op->emitError() << "'kiln.transient' on argument #" << argIndex
                             << " is a unit attribute, got " << attr.getValue();
    auto func = dyn_cast<FunctionOpInterface>(op);
    if (func && argIndex < func.getNumArguments() && !func.getArgAttr(argIndex, kStateAttrName))
      return op->emitError() << "'kiln.transient' on argument #" << argIndex
                             << " belongs on a kiln.state argument";
    return success();
  }
  const StringLiteral nameKinds[] = {kParamAttrName, kInputAttrName, kStateAttrName};
  if (!llvm::is_contained(nameKinds, attrName))
    return op->emitError()
           << "unknown kiln argument attribute '" << attrName << "' on argument #" << argIndex
           << " (expected kiln.param, kiln.input, kiln.state, kiln.init, "
              "kiln.role, kiln.copy_of, kiln.transient, kiln.sharding or kiln.offset)";
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
    for (StringRef otherKind : nameKinds) {
      auto otherName = func.getArgAttrOfType<StringAttr>(other, otherKind);
      if (otherName && otherName == name)
        return op->emitError()
               << "argument #" << argIndex << " and argument #" << other
               << " are both named \"" << name.getValue()
               << "\"; kiln.param/kiln.input/kiln.state names must be unique";
    }
  }
  for (StringRef otherKind : nameKinds)
    if (otherKind != attrName && func.getArgAttr(argIndex, otherKind))
      return op->emitError() << "argument #" << argIndex
                             << " has two roles: " << attrName << " and " << otherKind;
  return success();
}

// `kiln.output` names a result; `kiln.grad` says which parameter a result is
// the gradient of, and must name a kiln.param argument of the same type.
LogicalResult KilnDialect::verifyRegionResultAttribute(Operation *op,
                                                       unsigned regionIndex,
                                                       unsigned resultIndex,
                                                       NamedAttribute attr) {
  StringRef attrName = attr.getName().getValue();
  auto func = dyn_cast<FunctionOpInterface>(op);
  if (attrName == kAliasesAttrName) {
    auto index = dyn_cast<IntegerAttr>(attr.getValue());
    if (!index)
      return op->emitError() << "'kiln.aliases' on result #" << resultIndex
                             << " must be an argument index, got " << attr.getValue();
    if (!func)
      return success();
    int64_t arg = index.getInt();
    if (arg < 0 || arg >= static_cast<int64_t>(func.getNumArguments()))
      return op->emitError() << "result #" << resultIndex << " aliases argument #" << arg
                             << ", which does not exist";
    Type argType = func.getArgumentTypes()[arg];
    Type resultType = func.getResultTypes()[resultIndex];
    if (argType != resultType)
      return op->emitError() << "result #" << resultIndex << " of type " << resultType
                             << " aliases argument #" << arg << " of type " << argType
                             << "; the types must match";
    return success();
  }
  if (attrName == kShardingAttrName)
    return verifyShardingAttr(op, "result", resultIndex, attr.getValue(),
                              func && resultIndex < func.getNumResults()
                                  ? func.getResultTypes()[resultIndex]
                                  : Type());
  if (attrName != kOutputAttrName && attrName != kGradAttrName)
    return op->emitError() << "unknown kiln result attribute '" << attrName
                           << "' on result #" << resultIndex
                           << " (expected kiln.output, kiln.grad, kiln.aliases or kiln.sharding)";
  auto name = dyn_cast<StringAttr>(attr.getValue());
  if (!name || name.getValue().empty())
    return op->emitError() << "'" << attrName << "' on result #" << resultIndex
                           << " must be a non-empty string, got " << attr.getValue();
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
