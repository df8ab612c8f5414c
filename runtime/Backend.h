//===- Backend.h - what runs a compiled training module --------------------===//
//
// A backend holds the model state (parameters and optimizer states, by name)
// where it computes — host memory for the CPU interpreter, device memory for
// CUDA — and runs the module's functions on it. Arguments and results are
// bound by the names the IR carries: `kiln.param`/`kiln.state` arguments
// come from the state, `kiln.input` arguments from the call, results marked
// `kiln.aliases` go back into the state in place, results marked
// `kiln.output` are returned by name.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_BACKEND_H
#define KILN_RUNTIME_BACKEND_H

#include "runtime/Safetensors.h"
#include "runtime/cpu/HostTensor.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/Error.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace kiln {

using TensorMap = std::map<std::string, cpu::HostTensor>;

/// How one function's arguments and results bind to names.
struct FunctionBinding {
  struct Arg {
    enum Kind { Param, State, Input } kind;
    std::string name;
    cpu::DType dtype;
    std::vector<int64_t> shape;
    std::string init;   ///< kiln.init of params and states ("zeros" if absent)
    std::string copyOf; ///< kiln.copy_of: the parameter this state converts
    bool transient = false; ///< kiln.transient: its init value between steps
  };
  struct Result {
    int aliases = -1;   ///< argument it replaces, or -1
    std::string output; ///< kiln.output name (or "result<N>")
  };
  std::string name;
  std::vector<Arg> args;
  std::vector<Result> results;

  /// Reads the bindings of `func`; fails on an argument with no role or an
  /// unsupported type.
  static llvm::Expected<FunctionBinding> of(mlir::func::FuncOp func);
};

/// One tensor of a backend's state: a parameter or an optimizer state.
struct StateSpec {
  std::string name;
  bool isParam; ///< kiln.param (else kiln.state: moments, loss scale, ...)
  cpu::DType dtype;
  std::vector<int64_t> shape;
  std::string init;   ///< kiln.init ("zeros" if absent)
  std::string copyOf; ///< kiln.copy_of: a working copy of this parameter
                      ///< (derived from it, never checkpointed)
  bool transient = false; ///< kiln.transient: holds its init value between
                          ///< steps (a gradient accumulator), never checkpointed
};

/// Every parameter and state of `module`'s functions, once each, in order
/// of first appearance; functions sharing one must agree on its type.
llvm::Expected<std::vector<StateSpec>> stateSpecsOf(mlir::ModuleOp module);

/// The working copies (StateSpec::copyOf) of the parameters among
/// `tensors`: each converted from its parameter, as kiln.cast rounds.
/// Backends write these after `tensors` and skip any copy `tensors` gives.
NamedTensors copiesOf(llvm::ArrayRef<StateSpec> specs, const NamedTensors &tensors);

/// What argument `i` of `func` binds to, "param:w", "state:w.adam_m" or
/// "input:x" ("" for none): how tools match the arguments of two versions
/// of a function.
std::string argumentBinding(mlir::func::FuncOp func, unsigned i);

/// Sets each working-copy argument of `func` (kiln.copy_of) in `args` (one
/// tensor per argument) to its parameter's tensor converted, as the runtime
/// derives it.
void deriveCopyArguments(mlir::func::FuncOp func, std::vector<cpu::HostTensor> &args);

/// Whether `name` is a working copy of a parameter in `specs`.
bool isCopy(llvm::ArrayRef<StateSpec> specs, llvm::StringRef name);

/// Whether checkpoints hold `name` of `specs`: neither a working copy
/// (derived from its parameter) nor a transient state (its init value
/// between steps).
bool isCheckpointed(llvm::ArrayRef<StateSpec> specs, llvm::StringRef name);

/// Checks `tensors` against the specs of one group (parameters, or optimizer
/// states): each must exist in the model with the same dtype and shape, and
/// every tensor of the group must be present (working copies excepted: they
/// are derived from the parameters) — unless `partial`, where the
/// missing ones keep their initial values and their names are returned.
/// `source` names where the tensors came from in messages.
llvm::Expected<std::vector<std::string>> checkStateComplete(llvm::ArrayRef<StateSpec> specs,
                                                           const NamedTensors &tensors,
                                                           bool params, bool partial,
                                                           llvm::StringRef source);

/// A load that would not fit: what it needs and what is free where it runs
/// (host RAM, device memory). Callers can catch it (llvm::handleErrors) to
/// suggest a batch that fits.
class OutOfMemoryError : public llvm::ErrorInfo<OutOfMemoryError> {
public:
  static char ID;
  OutOfMemoryError(std::string where, int64_t needed, int64_t available)
      : where(std::move(where)), needed(needed), available(available) {}
  void log(llvm::raw_ostream &os) const override;
  std::error_code convertToErrorCode() const override { return llvm::inconvertibleErrorCode(); }

  std::string where; ///< "host memory", "device memory of NVIDIA H200"
  int64_t needed, available;
};

class Backend {
public:
  virtual ~Backend() = default;
  virtual llvm::StringRef name() const = 0;

  /// Prepares every function of `module` and allocates the state its
  /// parameters and states describe, initialized per kiln.init from `seed`.
  /// Fails with an OutOfMemoryError, before allocating, when the module's
  /// memory does not fit.
  virtual llvm::Error load(mlir::ModuleOp module, uint64_t seed) = 0;

  /// The bytes loading and running `module` takes here (state and the
  /// largest function's temporaries), computed without allocating.
  virtual llvm::Expected<int64_t> memoryNeeded(mlir::ModuleOp module) = 0;

  /// Runs function `fn` with the given inputs and returns its named outputs;
  /// aliased results update the state in place.
  virtual llvm::Expected<TensorMap> run(llvm::StringRef fn, const TensorMap &inputs) = 0;

  /// The rows [first, first + count) of a global batch of `batch` rows that
  /// function `fn`'s batch inputs (tokens, targets, ...) take on this
  /// process: all of them, except on one rank of a mesh that splits the
  /// batch — its data-parallel share, which is then all its inputs need
  /// (run() takes them whole or as just these rows).
  virtual std::pair<int64_t, int64_t> batchRows(llvm::StringRef fn, int64_t batch) const {
    (void)fn;
    return {0, batch};
  }

  /// Whether the loaded module has function `fn`.
  virtual bool hasFunction(llvm::StringRef fn) const = 0;

  /// Copies the state to the host: parameters, and optimizer states (the
  /// parameters' working copies left out: they are derived).
  virtual llvm::Expected<NamedTensors> params() = 0;
  virtual llvm::Expected<NamedTensors> optimizerStates() = 0;
  /// Overwrites state tensors by name; each must exist with the same dtype
  /// and shape (an error names the first that does not). Tensors not given
  /// keep their values: use loadState to require a complete set. A given
  /// parameter's working copy is derived from it again (copiesOf).
  virtual llvm::Error setState(const NamedTensors &tensors) = 0;

  /// The parameters and states of the loaded module.
  llvm::ArrayRef<StateSpec> stateSpecs() const { return specs_; }

  /// Replaces the parameters (`params`) or the optimizer states with
  /// `tensors`, which must be complete (checkStateComplete) unless
  /// `partial`; returns the names that kept their initial values.
  llvm::Expected<std::vector<std::string>> loadState(const NamedTensors &tensors, bool params,
                                                     bool partial, llvm::StringRef source);

  /// Lines about where it runs, what loading cost and the memory it uses
  /// (printed before the first step); empty when there is nothing to say.
  virtual std::string describe() const { return {}; }
  /// Lines about what the run's steps did here (printed at the end of a
  /// run: a pipeline's measured bubble); empty when there is nothing.
  virtual std::string summary() const { return {}; }

protected:
  std::vector<StateSpec> specs_; ///< set by load()
};

} // namespace kiln

#endif // KILN_RUNTIME_BACKEND_H
