//===- PlanBuffersUtils.h - rules buffer planning and codegen share --------===//

#ifndef KILN_PASSES_PLANBUFFERSUTILS_H
#define KILN_PASSES_PLANBUFFERSUTILS_H

#include "mlir/IR/Operation.h"

namespace kiln {

/// A splat kiln.constant whose users are all elementwise ops: it gets no
/// buffer, and codegen writes its value into those ops' kernels as a literal
/// (the attention scale, the -inf of the causal mask, ...).
bool isInlinedConstant(mlir::Operation *op);

} // namespace kiln

#endif // KILN_PASSES_PLANBUFFERSUTILS_H
