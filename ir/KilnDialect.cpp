//===- KilnDialect.cpp - dialect registration and argument attributes -----===//

#include "ir/KilnDialect.h"
#include "ir/KilnOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/Interfaces/FunctionInterfaces.h"

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

// `kiln.param` and `kiln.input` name an argument; the names are strings and
// unique within the function (checkpoints and sharding annotations use them).
LogicalResult KilnDialect::verifyRegionArgAttribute(Operation *op,
                                                    unsigned regionIndex,
                                                    unsigned argIndex,
                                                    NamedAttribute attr) {
  StringRef attrName = attr.getName().getValue();
  if (attrName != kParamAttrName && attrName != kInputAttrName)
    return op->emitError() << "unknown kiln argument attribute '" << attrName
                           << "' on argument #" << argIndex
                           << " (expected kiln.param or kiln.input)";
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
