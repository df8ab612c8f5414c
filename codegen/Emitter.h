//===- Emitter.h - what the op emitters of codegen share -------------------===//

#ifndef KILN_CODEGEN_EMITTER_H
#define KILN_CODEGEN_EMITTER_H

#include "codegen/PlanBuilder.h"
#include "ir/KilnOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Operation.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/Error.h"

#include <array>
#include <string>
#include <vector>

namespace kiln::codegen {

/// The C type of a tensor's elements in kernels ("float", "__nv_bfloat16").
std::string cType(mlir::Type elementType);
/// The type kernels compute in for an element type: float (double for f64;
/// long long for integers, unsigned char for i1).
std::string computeType(mlir::Type elementType);
mlir::RankedTensorType tensorOf(mlir::Value v);

/// Emits the steps of one function into the Plan; shared by every emitter.
class Emitter {
public:
  /// scratch() records the largest request in `scratchWanted`, which the
  /// caller checks against the room once every step is emitted (buildPlan
  /// does, and compileToPlan re-plans with the room it asks for).
  Emitter(Plan &plan, PlanFunction &function, const CodegenOptions &options,
          llvm::StringMap<int> &kernelIndex, int64_t &scratchWanted)
      : plan_(plan), function_(function), options_(options), kernelIndex_(kernelIndex),
        scratchWanted_(scratchWanted) {}

  const CodegenOptions &options() const { return options_; }
  /// Records a decision in the Plan's notes (once per distinct text).
  void note(const std::string &text) {
    if (!llvm::is_contained(plan_.notes, text))
      plan_.notes.push_back(text);
  }

  /// The arena offset of a value's buffer; an error names the op when the
  /// value has none (an inlined constant used where a buffer is needed).
  llvm::Expected<int64_t> offsetOf(mlir::Value v);
  /// Whether `v` is a splat constant that kernels take as a literal.
  bool isInlined(mlir::Value v);
  /// The literal of an inlined constant, in `type`'s compute type.
  std::string literal(mlir::Value v);

  /// Adds a launch of `source` (a kernel whose entry is spelled @NAME@),
  /// emitted once per distinct source; `baseName` names it ("layer_norm").
  void launch(mlir::Operation *op, llvm::StringRef baseName, const std::string &source,
              std::array<int64_t, 3> grid, std::array<int64_t, 3> block,
              const std::vector<PlanArg> &args, int64_t sharedBytes = 0);
  void gemm(mlir::Operation *op, const GemmDesc &desc);
  void memset(mlir::Operation *op, int64_t dst, int64_t bytes);
  void copy(mlir::Operation *op, int64_t dst, int64_t src, int64_t bytes);
  void collective(mlir::Operation *op, int64_t dst, int64_t src, CollectiveDesc desc);

  /// The arena offset of the error word kernels set on out-of-range inputs
  /// (PlanError bits); the executor checks it after every run.
  int64_t errorFlag();
  /// train.check_numerics's two words (beside the error word).
  int64_t numericsFlag();
  /// Records each top-level op's position in `func`, for PlanStep::opIndex.
  void indexOps(mlir::func::FuncOp func) {
    int64_t i = 0;
    for (mlir::Operation &op : func.getBody().front())
      opIndex_[&op] = i++;
  }
  int64_t opIndex(mlir::Operation *op) const {
    auto it = opIndex_.find(op);
    return it == opIndex_.end() ? -1 : it->second;
  }
  /// Steps emitted into the function so far.
  size_t stepCount() const { return function_.steps.size(); }
  PlanStep &step(size_t i) { return function_.steps[i]; }

  /// Space for partial sums in the workspace (after cuBLASLt's part); valid
  /// until the next step. A request past the room is recorded, not refused
  /// (see the constructor).
  int64_t scratch(int64_t bytes);

  /// "kiln.add at loc(\"h.0.attn\")"
  static std::string describe(mlir::Operation *op);
  /// The comment block opening a kernel: the op and its types.
  static std::string header(mlir::Operation *op);
  /// Blocks for a grid-stride loop over `work` items with `threads` per block.
  int64_t gridFor(int64_t work, int64_t threads, int64_t perSm = 16) const;

  static PlanArg ptr(int64_t offset) { return {PlanArg::Kind::Pointer, offset}; }

private:
  Plan &plan_;
  PlanFunction &function_;
  const CodegenOptions &options_;
  llvm::StringMap<int> &kernelIndex_;
  llvm::DenseMap<mlir::Operation *, int64_t> opIndex_;
  int64_t &scratchWanted_;
};

/// The error word takes the workspace's last aligned slot.
constexpr int64_t kErrorWordBytes = 256;

/// Cuts `x / y` down to an int64 string ("123").
inline std::string str(int64_t v) { return std::to_string(v); }

/// `#include "kiln/<file>"` and a newline, for a kernel's source.
inline std::string include(const char *file) { return std::string("#include \"kiln/") + file + "\"\n"; }

inline llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

/// Elements of `elementType` per 16-byte word (16 for i1, stored as bytes)
/// when `n` of them are whole words, so that rows of n elements start on a
/// word; 0 otherwise. Kernels with 128-bit loads and stores ask this.
int64_t wordElements(mlir::Type elementType, int64_t n);

/// Statements (each line opening with `indent`) that compute the values of
/// `body` (elementwise ops and splat constants, in program order) from
/// `inputs`, whose element j is the expression in(j); `name` receives each
/// value's C name. A value in `readInside` is rounded to its element type
/// (a fused intermediate means what the unfused tensor meant).
llvm::Expected<std::string> elementwiseStatements(Emitter &e, llvm::ArrayRef<mlir::Value> inputs,
                                                  llvm::ArrayRef<mlir::Operation *> body,
                                                  llvm::function_ref<std::string(size_t)> in,
                                                  const std::string &indent,
                                                  const llvm::DenseSet<mlir::Value> &readInside,
                                                  llvm::DenseMap<mlir::Value, std::string> &name);
/// `x` rounded to `elementType` as a store and a load back would.
std::string roundedTo(mlir::Type elementType, const std::string &x);
/// The expression reading element `index` (C++) of kernel parameter in<j>,
/// whose elements are `elementType`, in its compute type: through
/// `through`'s index map when given; else a float through
/// kiln::load(`floatArgs`) (a vector in registers, or memory) and an
/// integer from memory.
std::string inputElement(size_t j, mlir::Type elementType, BroadcastInDimOp through,
                         const std::string &floatArgs, const std::string &index);
/// The element of `b`'s operand that element `e` (a C++ expression) of its
/// result reads, every shape a literal (kiln-fuse's broadcast reads).
std::string broadcastIndex(BroadcastInDimOp b, const std::string &e);
/// The broadcast reading the fusion body argument `arg`, if any (the
/// verifier: then every reader is that broadcast).
BroadcastInDimOp broadcastReader(mlir::Value arg);

// The op emitters (each file handles a family of ops; they return whether
// they handled `op`).
llvm::Expected<bool> emitElementwise(Emitter &e, mlir::Operation *op);
llvm::Expected<bool> emitDataMovement(Emitter &e, mlir::Operation *op);
llvm::Expected<bool> emitReduction(Emitter &e, mlir::Operation *op);
llvm::Expected<bool> emitComposite(Emitter &e, mlir::Operation *op);
llvm::Expected<bool> emitMatmul(Emitter &e, mlir::Operation *op);
/// The cuBLASLt epilogue that runs a kiln.fusion's GEMM epilogue body.
GemmEpilogue epilogueOf(const GemmEpilogueBody &body);
llvm::Error emitGlobalNorm(Emitter &e, mlir::Operation *op);
/// A collective of a partitioned step (kiln.all_reduce, all_gather,
/// reduce_scatter, take_shard): one Collective step, which the executor
/// runs through its rank's group.
llvm::Error emitCollective(Emitter &e, mlir::Operation *op);
/// Every kiln.adamw_update of a function in one multi-tensor launch.
llvm::Error emitAdamW(Emitter &e, llvm::ArrayRef<mlir::Operation *> ops);
/// A run of casts (a kiln.cast_group, codegen::castGroupsOf) as one
/// multi-tensor launch.
llvm::Error emitCastGroup(Emitter &e, llvm::ArrayRef<mlir::Operation *> ops);

} // namespace kiln::codegen

#endif // KILN_CODEGEN_EMITTER_H
