//===- GradCheck.h - autodiff gradients vs f64 central differences ---------===//
//
// The check behind `kiln gradcheck` and the VJP unit tests: differentiate
// @forward with kiln-autodiff, run @train_step on the CPU interpreter, and
// compare each parameter's gradient with central finite differences of
// @forward, (f(p + h) − f(p − h)) / 2h.
//
// Error of one entry: |analytic − numeric| / max(‖analytic‖∞, 1e-12), the
// norm taken over the whole gradient tensor — a relative error that does not
// blow up on entries that happen to be near zero.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_TOOLS_SUPPORT_GRADCHECK_H
#define KILN_TOOLS_SUPPORT_GRADCHECK_H

#include "runtime/cpu/HostTensor.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace kiln::tooling {

struct GradCheckOptions {
  /// Entries checked per parameter tensor (all of them when the tensor is
  /// smaller); chosen at random.
  int64_t samplesPerTensor = 16;
  double step = 1e-5;
  uint64_t seed = 0;
};

struct TensorGradCheck {
  std::string name;
  int64_t checked = 0;
  double worstError = 0.0; ///< see the header comment
  int64_t worstIndex = -1;
  double analytic = 0.0, numeric = 0.0; ///< at worstIndex
};

/// Checks every kiln.param of @forward in `module` (not modified). `args`
/// holds one tensor per argument of @forward (parameters and inputs).
llvm::Expected<std::vector<TensorGradCheck>>
gradCheck(mlir::ModuleOp module, llvm::ArrayRef<cpu::HostTensor> args,
          const GradCheckOptions &options);

} // namespace kiln::tooling

#endif // KILN_TOOLS_SUPPORT_GRADCHECK_H
