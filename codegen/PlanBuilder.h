//===- PlanBuilder.h - from planned kiln IR to an executable Plan ----------===//
//
// Codegen walks each function of a module on which kiln-plan-buffers ran and
// emits, per op, the steps that compute it: a CUDA C++ kernel launch (an
// unfused op is a region of one: one kernel, named after the op, with a
// header naming its IR), a cuBLASLt GEMM for kiln.matmul, memsets and copies.
// Shapes are static, so every kernel is specialized to its shapes;
// identical kernels are emitted once.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_CODEGEN_PLANBUILDER_H
#define KILN_CODEGEN_PLANBUILDER_H

#include "runtime/Plan.h"

#include "mlir/IR/BuiltinOps.h"
#include "llvm/Support/Error.h"

#include <string>
#include <utility>
#include <vector>

namespace kiln::codegen {

struct CodegenOptions {
  std::string arch = "sm_90";
  /// Grids are sized from the device's multiprocessor count.
  int smCount = 132;
  /// The workspace kiln-plan-buffers reserves: cuBLASLt's 32 MiB and the
  /// kernels' partial sums.
  int64_t workspaceBytes = 64ll << 20;
  /// The flash-attention tiles, "" for kiln's choice per head dim, or
  /// "W,MT,BN,BW": forward warps, 16-row tiles per warp and key block,
  /// backward warps (bench/ times variants with it).
  std::string attentionTiles;
};

/// Checks that kiln can generate code for `arch` ("sm_XY" with an optional
/// "a"/"f" suffix, compute capability 8.0 or newer: the kernels use bf16
/// arithmetic and cp.async).
llvm::Error checkArch(llvm::StringRef arch);

/// The most shared memory a block of a kernel for `arch` may have (the
/// opt-in maximum): 227 KiB on compute capability 9.x, 10.x and 11.0, 163
/// KiB on 8.0 and 8.7, 99 KiB on 8.6, 8.9 and 12.x (CUDA C++ Programming
/// Guide, "Technical Specifications per Compute Capability"); 99 KiB for an
/// arch not in that table. Codegen sizes tiles by it and refuses a launch
/// that asks for more.
int64_t maxSharedBytes(llvm::StringRef arch);

/// buildPlan's error when the kernels' partial sums outgrow the workspace
/// kiln-plan-buffers reserved; `workspaceBytes` is a workspace they fit.
class WorkspaceTooSmall : public llvm::ErrorInfo<WorkspaceTooSmall> {
public:
  static char ID;
  WorkspaceTooSmall(int64_t wanted, int64_t room, int64_t workspaceBytes)
      : wanted(wanted), room(room), workspaceBytes(workspaceBytes) {}
  void log(llvm::raw_ostream &os) const override;
  std::error_code convertToErrorCode() const override { return llvm::inconvertibleErrorCode(); }
  int64_t wanted, room, workspaceBytes;
};

/// Builds the Plan of `module` (kiln-plan-buffers must have run). Fails,
/// naming the op, for ops codegen does not handle, and with
/// WorkspaceTooSmall when the partial sums outgrow the workspace.
llvm::Expected<Plan> buildPlan(mlir::ModuleOp module, const CodegenOptions &options);

/// The arena of `module`'s functions after kiln-plan-buffers: the shared
/// persistent region, the largest function's temporaries and total. Fails
/// for a function without a buffer plan.
llvm::Expected<PlanMemory> planMemory(mlir::ModuleOp module);

/// Fails when options.attentionTiles is set and malformed or asks for what
/// the arch lacks, whether or not a plan has an attention to use them on.
llvm::Error checkAttentionTiles(const CodegenOptions &options);

/// Runs kiln-plan-buffers on `module` (which it annotates) and builds the
/// Plan; pass failures come back as one error holding the diagnostics. When
/// the kernels' partial sums outgrow options.workspaceBytes, the buffers are
/// planned once more with the workspace they need (a note in the Plan).
llvm::Expected<Plan> compileToPlan(mlir::ModuleOp module, const CodegenOptions &options);

/// The groups kiln-group-casts marked in `func` (kiln.cast_group), in order:
/// codegen runs each as one multi-tensor launch where its last cast is
/// (unless train.check_numerics is on); `kiln bisect --device cuda` compares
/// them as a group. Fails, naming the op, when a group is not a run of
/// consecutive casts of `func`'s arguments or values with one (from, to) pair of f32,
/// bf16 and f16, none of them returned: the marks are stale.
llvm::Expected<std::vector<std::vector<mlir::Operation *>>> castGroupsOf(mlir::Operation *func);

/// kiln's kernel templates, "kiln/<name>.cuh" -> contents, which the
/// generated kernels include (NVRTC gets them as in-memory headers).
const std::vector<std::pair<std::string, std::string>> &kernelHeaders();

} // namespace kiln::codegen

#endif // KILN_CODEGEN_PLANBUILDER_H
