//===- PassPreservation.h - "this pass preserves results" as a test --------===//
//
// Runs each function of a module on the CPU interpreter before and after a
// pass pipeline, with the same random inputs, and expects the results to
// agree within a tolerance stated by the caller (per pass); or two pipelines
// against each other. docs/architecture.md, "Testing", lists which passes
// have such a test.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_TESTS_UNIT_PASSPRESERVATION_H
#define KILN_TESTS_UNIT_PASSPRESERVATION_H

#include "runtime/cpu/HostTensor.h"

#include "mlir/IR/BuiltinOps.h"

#include <functional>
#include <string>

namespace kiln::test {

/// Fills argument `index` of a function with test data.
using InputFiller = std::function<void(unsigned index, cpu::HostTensor &arg)>;

/// Floats N(0, 1), integers uniform in [0, intBound).
InputFiller randomInputs(uint64_t seed, int64_t intBound = 2);

/// Interprets every function of `module` before and after `pipeline` (a
/// textual pass pipeline on the module, e.g. "builtin.module(canonicalize)")
/// on the same inputs, and expects each result to agree within `tolerance`:
/// max |after − before| / max(1, |before|). Reports the function, result and
/// worst element on failure. The module is modified (the pipeline runs on it).
void expectPassPreserves(mlir::ModuleOp module, const std::string &pipeline, double tolerance,
                         const InputFiller &fill = randomInputs(0));

/// Runs `reference` on `module` and `candidate` on a copy of it, then
/// interprets every function of both on the same inputs and expects them
/// to agree within `tolerance` (as above). For rewrites whose effect shows
/// only after later passes: fusing before autodiff, compared on the
/// gradients.
void expectPipelinesAgree(mlir::ModuleOp module, const std::string &reference,
                          const std::string &candidate, double tolerance,
                          const InputFiller &fill = randomInputs(0));

} // namespace kiln::test

#endif // KILN_TESTS_UNIT_PASSPRESERVATION_H
