//===- Plan.h - the executable of a compiled module, as data ---------------===//
//
// A Plan is everything a device executor needs, and nothing it must derive:
// the arena size, the named buffers bound to the model (parameters, states,
// inputs, outputs) at fixed offsets, the CUDA C++ kernels, and per function
// the steps in order — kernel launches (grid, block, arguments), cuBLASLt
// GEMMs, memsets, copies and a partitioned step's collectives — each naming
// the IR op it implements. Codegen
// builds it; `kiln compile --emit=plan` saves it as plan.json plus one .cu
// file per kernel; the CUDA executor loads and runs it.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_PLAN_H
#define KILN_RUNTIME_PLAN_H

#include "runtime/cpu/HostTensor.h"

#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"

#include <array>
#include <optional>
#include <string>
#include <vector>

namespace kiln {

/// A tensor at a fixed arena offset that the outside world binds by name.
struct PlanBinding {
  enum class Kind { Param, State, Input, Output };
  Kind kind;
  std::string name;
  int64_t offset;
  cpu::DType dtype;
  std::vector<int64_t> shape;
  /// For outputs that replace an argument in place: the argument's name.
  std::string aliases;

  int64_t bytes() const { return cpu::product(shape) * static_cast<int64_t>(cpu::dtypeSize(dtype)); }
};

/// Bits kernels set in PlanMemory::errorFlag (kernels/common.cuh).
enum PlanError : uint32_t {
  kErrorBadId = 1,     ///< an embedding id outside the table
  kErrorBadTarget = 2, ///< a cross-entropy target at or past the valid classes
};

/// A kernel argument: a pointer into the arena, or an integer.
struct PlanArg {
  enum class Kind { Pointer, Int } kind;
  int64_t value; ///< arena offset, or the integer
};

/// What cuBLASLt computes after the product, in its column-major terms
/// (a vector has m entries, one per row of C).
enum class GemmEpilogue {
  None,          ///< C = AB (+ bias)
  Gelu,          ///< C = gelu(AB (+ bias)), tanh approximation
  GeluAux,       ///< ... and aux = AB (+ bias), gelu's input
  GeluGrad,      ///< C = gelu'(aux) · AB
  GeluGradBgrad, ///< ... and bias = the sums of C's rows
  BgradA,        ///< C = AB and bias = the sums of A's rows (over k)
};
llvm::StringRef gemmEpilogueName(GemmEpilogue e);
std::optional<GemmEpilogue> gemmEpilogueNamed(llvm::StringRef name);

/// C[b] = op(A[b]) · op(B[b]) (+ bias, + epilogue) in cuBLASLt's
/// column-major terms; codegen turns kiln's row-major matmul into this form.
struct GemmDesc {
  bool transA = false, transB = false;
  int64_t m = 0, n = 0, k = 0, lda = 0, ldb = 0, ldc = 0;
  int64_t batch = 1, strideA = 0, strideB = 0, strideC = 0;
  int64_t a = 0, b = 0, c = 0; ///< arena offsets
  /// Arena offset of a vector of m entries, or -1: the bias added (None,
  /// Gelu, GeluAux), or the bias gradient written (GeluGradBgrad, BgradA).
  int64_t bias = -1;
  GemmEpilogue epilogue = GemmEpilogue::None;
  /// Arena offset of gelu's input [n, m] (leading dimension m), or -1:
  /// written by GeluAux, read by GeluGrad and GeluGradBgrad.
  int64_t aux = -1;
  cpu::DType inType = cpu::DType::F32, outType = cpu::DType::F32;
};

/// What `g`'s epilogue needs: the aux matrix and bias-gradient vector
/// cuBLASLt will touch, one GEMM with m a multiple of 8. Codegen checks it
/// before emitting, Plan::validate when a plan is loaded.
llvm::Error validateEpilogue(const GemmDesc &g);

/// A collective of a step partitioned over a mesh (kiln-partition):
/// `kind` over mesh axis `axis` of the tensor at the step's src, the result
/// at its dst. The executor runs it through its rank's group. A pipeline
/// stage's transfers (kiln-pipeline) are `send` (of src; dst = src) and
/// `recv` (into dst; src = dst) to or from the rank at coordinate `peer`
/// along `axis`; a run of consecutive send/recv steps is posted as one
/// NCCL group (kiln-pipeline-unroll proved such runs cannot deadlock).
/// A run of consecutive steps of one `bucket` (kiln-bucket-collectives:
/// gradient sums) is one NCCL group too.
struct CollectiveDesc {
  /// all_reduce, all_gather, reduce_scatter, all_to_all, take_shard, send, recv
  std::string kind;
  std::string axis;
  int64_t peer = -1;    ///< send/recv: the other rank's coordinate along axis
  int64_t channel = -1; ///< send/recv: kiln.send's channel (for reading a plan)
  int64_t bucket = -1;  ///< all_reduce/reduce_scatter: kiln.bucket (-1: none)
  int64_t dim = 0; ///< the dimension gathered, scattered or taken (all_to_all: split)
  int64_t concatDim = 0; ///< all_to_all: the dimension the parts received are concatenated along
  cpu::DType dtype = cpu::DType::F32;
  std::vector<int64_t> shape, resultShape;

  int64_t bytes() const { return cpu::product(shape) * static_cast<int64_t>(cpu::dtypeSize(dtype)); }
  int64_t resultBytes() const {
    return cpu::product(resultShape) * static_cast<int64_t>(cpu::dtypeSize(dtype));
  }
  bool isTransfer() const { return kind == "send" || kind == "recv"; }
};

struct PlanStep {
  enum class Kind { Launch, Gemm, Memset, Copy, Collective };
  Kind kind = Kind::Launch;
  std::string op; ///< "kiln.add at loc(\"h.0.attn\")"
  /// That op's position among its function's top-level ops (-1: none):
  /// `kiln bisect --device cuda` finds the op again in the compiled IR.
  int64_t opIndex = -1;
  // Launch
  int kernel = -1;
  std::array<int64_t, 3> grid{1, 1, 1}, block{1, 1, 1};
  int64_t sharedBytes = 0;
  std::vector<PlanArg> args;
  // Gemm
  GemmDesc gemm;
  // Memset / Copy (and Collective's dst and src)
  int64_t dst = 0, src = 0, bytes = 0;
  // Collective
  CollectiveDesc collective;
  /// Earlier Collective steps this step waits for first, when collectives
  /// run on a stream of their own (the CUDA executor with NCCL): each step
  /// that touches bytes an unfinished collective reads or writes names it
  /// here (codegen computes them from the buffer plan). Every collective
  /// is finished when the function ends.
  std::vector<int64_t> joins;
};

struct PlanKernel {
  std::string name;   ///< entry point (extern "C")
  std::string source; ///< CUDA C++
};

struct PlanFunction {
  std::string name;
  std::vector<PlanStep> steps;
  std::vector<PlanBinding> args, results;
};

/// Bytes by category (exact: the arena layout).
struct PlanMemory {
  int64_t params = 0, states = 0, inputs = 0, workspace = 0, workspaceOffset = 0;
  int64_t gradsAtPeak = 0; ///< gradients live at the training step's peak
  int64_t scratch = 0;     ///< the largest function's temporaries
  int64_t total = 0;       ///< the arena
  /// The part of the workspace (at workspaceOffset) cuBLASLt may use; the
  /// kernels' partial sums use the rest.
  int64_t gemmWorkspace = 32ll << 20;
  int64_t peakLive = 0; ///< temporaries live at once, at the peak
  /// A 32-bit word (the workspace's last 256 bytes) that kernels set when
  /// an input is out of range (kErrorBadId, ...); -1 when none is used.
  int64_t errorFlag = -1;
  /// train.check_numerics: two 32-bit words beside the error word, the step
  /// (+ 1) whose op first wrote a NaN or +inf and which of its results
  /// (kernels/check.cuh); -1 when the plan does not check.
  int64_t numericsFlag = -1;

  /// A few lines: the arena by category (params, optimizer states, inputs,
  /// workspace, temporaries with the gradients and activations at the peak).
  std::string describe() const;
};

struct Plan {
  /// Checks what a saved plan could get wrong: every binding, memset, copy
  /// and pointer argument inside the arena, kernel names that are
  /// identifiers (they name files). fromJSON runs it.
  llvm::Error validate() const;

  std::string arch = "sm_90";
  int smCount = 132;
  PlanMemory memory;
  std::vector<PlanKernel> kernels;
  /// Headers the kernels include ("kiln/common.cuh" -> contents); saved
  /// beside them so a saved plan compiles on its own.
  std::vector<std::pair<std::string, std::string>> headers;
  std::vector<PlanFunction> functions;
  /// Codegen's decisions worth reading (which attention kernel, its tiles,
  /// and why), once each; `kiln compile` prints them.
  std::vector<std::string> notes;
  /// train.deterministic: the kernels sum in a fixed order and the executor
  /// takes cuBLASLt's first heuristic algorithm for each GEMM (neither
  /// timed nor from the autotuning cache).
  bool deterministic = false;

  const PlanFunction *function(llvm::StringRef name) const;

  llvm::json::Value toJSON() const;
  static llvm::Expected<Plan> fromJSON(const llvm::json::Value &value);
  /// Writes DIR/plan.json, DIR/kernels/<name>.cu and the headers under
  /// DIR/kernels/.
  llvm::Error save(llvm::StringRef dir) const;
  /// Reads what save() wrote.
  static llvm::Expected<Plan> load(llvm::StringRef dir);
};

} // namespace kiln

#endif // KILN_RUNTIME_PLAN_H
