//===- KilnAttrs.h - attributes of the kiln dialect ------------------------===//

#ifndef KILN_IR_KILNATTRS_H
#define KILN_IR_KILNATTRS_H

#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/DialectImplementation.h"

#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"

#define GET_ATTRDEF_CLASSES
#include "ir/KilnAttrs.h.inc"

namespace kiln {
/// The mesh axes of a collective's group: one axis, or several joined by
/// ',' (major first: "edp,ep"; docs/ops.md, kiln.all_reduce).
llvm::SmallVector<llvm::StringRef, 2> groupAxes(llvm::StringRef group);
} // namespace kiln

#endif // KILN_IR_KILNATTRS_H
