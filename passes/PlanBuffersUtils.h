//===- PlanBuffersUtils.h - rules buffer planning and codegen share --------===//

#ifndef KILN_PASSES_PLANBUFFERSUTILS_H
#define KILN_PASSES_PLANBUFFERSUTILS_H

#include "mlir/IR/Operation.h"

#include <optional>

namespace kiln {

/// A splat kiln.constant whose users are all elementwise ops: it gets no
/// buffer, and codegen writes its value into those ops' kernels as a literal
/// (the attention scale, the -inf of the causal mask, ...).
bool isInlinedConstant(mlir::Operation *op);

/// An operand whose buffer a result may take when that operand dies at the
/// op, as (operand, result): the op's kernel (GPU and CPU) reads each
/// element of it before writing the same element of the result, at the
/// same offset, and its pointers are not __restrict__. Today
/// cross_entropy_grad's logits (the gradient is exp(logit - lse) - onehot,
/// element by element), also inside a cross-entropy fusion: the two
/// largest temporaries of a language model's step, one buffer.
std::optional<std::pair<unsigned, unsigned>> inPlaceOperand(mlir::Operation *op);

/// Why `op` cannot be a member of a kiln.cast_group in its function (one
/// multi-tensor launch converting a run of casts where the run's last cast
/// is; kiln-group-casts forms the runs, codegen checks their marks): ""
/// when it can. A member is a kiln.cast of an argument of its own function
/// or a value of its body, converting between f32, bf16 and f16 (what the
/// multi-tensor kernel rounds like kiln.cast), that is read, and is not a
/// result of the function (which may be placed over its argument). A cast
/// nobody reads is planned a buffer only for its own op, which the next
/// cast could reuse while the launch writes both. The run's other rules
/// (one pair of types, no member reading an earlier member's result) are
/// the run's, not one cast's.
std::string castGroupRefusal(mlir::Operation *op);

} // namespace kiln

#endif // KILN_PASSES_PLANBUFFERSUTILS_H
