//===- Interpreter.h - the reference CPU interpreter of kiln IR ------------===//
//
// Runs one func.func of kiln IR on host tensors: the reference semantics of
// every op, used by the tests (pass preservation, gradient checks), by
// `kiln gradcheck`, and for training small models on the CPU. It runs the
// IR after any pass.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CPU_INTERPRETER_H
#define KILN_RUNTIME_CPU_INTERPRETER_H

#include "runtime/cpu/HostTensor.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/Support/Error.h"

#include <memory>
#include <vector>

namespace kiln::cpu {

class Collectives;

/// One op on the given operand tensors, as run() would compute it, its
/// results appended to `results` (a kiln.constant takes no operands).
/// Collectives are not supported here. `kiln bisect --device cuda` checks
/// each generated kernel against it on the kernel's own inputs.
llvm::Error evaluateOp(mlir::Operation *op, llvm::ArrayRef<const HostTensor *> operands,
                       llvm::SmallVectorImpl<HostTensor> &results);

class Interpreter {
public:
  /// Prepares `func` for repeated runs. Fails, naming the op, when the
  /// function holds an op or an element type the interpreter does not know.
  static llvm::Expected<std::unique_ptr<Interpreter>> create(mlir::func::FuncOp func);
  ~Interpreter();

  /// Runs the function on `args` (one per argument, of its type) and returns
  /// its results. Data-dependent failures (an id outside a table) name the op.
  llvm::Expected<std::vector<HostTensor>> run(llvm::ArrayRef<HostTensor> args);

  mlir::func::FuncOp function() const { return func_; }

  /// The communicator a partitioned function's kiln.all_reduce and
  /// kiln.all_gather use (not owned); without one they are an error.
  void setCollectives(Collectives *collectives) { collectives_ = collectives; }

  /// With `check`, run() stops at the first op that writes a NaN or +inf
  /// into a float result (-inf is what attention masks write) and names it:
  /// `train.check_numerics`. create() sets it from the module's
  /// kiln.check_numerics attribute.
  void setCheckNumerics(bool check) { checkNumerics_ = check; }

  /// The most bytes of temporaries (op results and constants) a run of
  /// `func` holds at once — the same liveness run() follows; saturates at
  /// INT64_MAX for types too large to count.
  static int64_t peakTemporaryBytes(mlir::func::FuncOp func);

private:
  struct Step;
  explicit Interpreter(mlir::func::FuncOp func);
  llvm::Error prepare();
  llvm::Error runCollective(mlir::Operation *op, const HostTensor &x,
                            llvm::SmallVectorImpl<HostTensor> &out);
  /// kiln.send (no result) or kiln.recv through the collectives.
  llvm::Error runTransfer(mlir::Operation *op, const std::vector<HostTensor> &slots,
                          const Step &step, llvm::SmallVectorImpl<HostTensor> &out);

  mlir::func::FuncOp func_;
  std::vector<Step> steps_;
  unsigned numSlots_ = 0;
  std::vector<unsigned> resultSlots_;
  Collectives *collectives_ = nullptr;
  bool checkNumerics_ = false;
};

/// The host tensor type of an MLIR tensor type (dtype and shape); fails for
/// element types the interpreter does not support.
llvm::Expected<std::pair<DType, std::vector<int64_t>>> hostTypeOf(mlir::Type type);

} // namespace kiln::cpu

#endif // KILN_RUNTIME_CPU_INTERPRETER_H
