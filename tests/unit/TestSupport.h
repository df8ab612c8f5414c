//===- TestSupport.h - helpers shared by the unit tests --------------------===//

#ifndef KILN_TESTS_UNIT_TESTSUPPORT_H
#define KILN_TESTS_UNIT_TESTSUPPORT_H

#include "runtime/Random.h"
#include "runtime/cpu/HostTensor.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/IR/OwningOpRef.h"

#include <string>

namespace kiln::test {

/// A context with the kiln and func dialects loaded.
std::unique_ptr<mlir::MLIRContext> makeContext();

/// Parses `source` as a module; fails the current test (and returns null)
/// with the parser's diagnostics when it does not parse or verify.
mlir::OwningOpRef<mlir::ModuleOp> parse(mlir::MLIRContext &ctx, const std::string &source);

/// Parses `source` and returns the diagnostics it produced (empty when it
/// parsed and verified).
std::string parseErrors(mlir::MLIRContext &ctx, const std::string &source);

/// A rank-0 f32 tensor holding `v` (a step input such as lr).
cpu::HostTensor scalarTensor(double v);

/// The largest |a - b| over the largest |a| (1e-30 at least): the
/// relative difference the mesh and pipeline tests bound.
double worstRelative(const cpu::HostTensor &a, const cpu::HostTensor &b);

/// A [b, t] i32 batch of token ids uniform in [0, vocab).
cpu::HostTensor randomTokens(Rng &rng, int64_t b, int64_t t, int64_t vocab);

/// A TCP port on the loopback interface that was free a moment ago (for
/// tests whose ranks connect over TCP).
int freePort();

} // namespace kiln::test

#endif // KILN_TESTS_UNIT_TESTSUPPORT_H
