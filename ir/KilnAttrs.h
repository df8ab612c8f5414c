//===- KilnAttrs.h - attributes of the kiln dialect ------------------------===//

#ifndef KILN_IR_KILNATTRS_H
#define KILN_IR_KILNATTRS_H

#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/DialectImplementation.h"

#define GET_ATTRDEF_CLASSES
#include "ir/KilnAttrs.h.inc"

#endif // KILN_IR_KILNATTRS_H
