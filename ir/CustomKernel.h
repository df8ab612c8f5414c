//===- CustomKernel.h - kernels a plugin gives kiln, with their rules ------===//
//
// A plugin's fused kernel is an op, `kiln.custom_kernel "NAME"(...)`, whose
// meaning lives in one registration: a CustomKernel with its CUDA C++ kernel
// and launch rule (codegen), a reference implementation in f64 (the CPU
// interpreter), its VJP as IR (autodiff), its precision and sharding rules
// and its cost. kiln's passes, codegen and interpreter look the name up here;
// nothing else in kiln knows the kernel. docs/plugins.md walks through one.
//
// Everything a plugin calls is in this header (inline) or in the kiln
// dialect, which `kiln` and `kiln-opt` export to the plugins they load.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_IR_CUSTOMKERNEL_H
#define KILN_IR_CUSTOMKERNEL_H

#include "ir/KilnInterfaces.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Diagnostics.h"
#include "llvm/ADT/APFloat.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace kiln {

class CustomKernelOp;

/// One tensor of the reference implementation: row-major f64 values
/// (integers and booleans as exact doubles). Inputs are read-only; outputs
/// come zero-filled in the result's shape, and the interpreter rounds what
/// the reference writes to the result's element type.
struct CpuTensorRef {
  llvm::ArrayRef<int64_t> shape;
  double *data = nullptr;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape)
      n *= d;
    return n;
  }
};

/// What codegen launches for one op: a CUDA C++ source with one
/// `extern "C" __global__` entry spelled @NAME@ (codegen names it), taking
/// one pointer per operand (const) and then one per result, in order.
/// Shapes are static, so the source is specialized to the op's types and
/// params (kiln's own kernels are, too); identical sources are compiled once.
struct CudaLaunch {
  std::string source;
  std::array<int64_t, 3> grid{1, 1, 1}, block{1, 1, 1};
  int64_t sharedBytes = 0;
};

/// The element types of a custom kernel's operands and results under a mixed
/// precision policy (kiln-assign-precision): null keeps the type as it is.
/// An operand of another float type is cast to the type given; a result
/// takes it.
struct PrecisionChoice {
  llvm::SmallVector<mlir::Type> operands, results;
};

struct CustomKernel {
  /// The op's name, `<plugin>.<kernel>` by convention ("example.add_rms_norm").
  std::string name;
  /// Where it came from (the plugin's path), for messages; kiln sets it.
  std::string origin;

  /// Checks operand/result types and params beyond what every custom kernel
  /// must satisfy (static shapes); report with `op.emitOpError()`. Optional.
  std::function<mlir::LogicalResult(CustomKernelOp op)> verify;
  /// The CUDA kernel of one op. Required for codegen.
  std::function<llvm::Expected<CudaLaunch>(CustomKernelOp op)> cuda;
  /// The reference: computes `outputs` from `inputs` in f64. Required for
  /// the CPU interpreter.
  std::function<llvm::Error(CustomKernelOp op, llvm::ArrayRef<CpuTensorRef> inputs,
                            llvm::ArrayRef<CpuTensorRef> outputs)>
      cpu;
  /// The VJP, built with `builder` where the backward goes: one cotangent
  /// per result (null when unused) in, one per operand (null: none) out.
  /// Without it the op cannot be differentiated.
  std::function<mlir::LogicalResult(CustomKernelOp op, mlir::OpBuilder &builder,
                                    mlir::ValueRange resultCotangents,
                                    llvm::SmallVectorImpl<mlir::Value> &operandCotangents)>
      vjp;
  /// Types under a mixed policy with low type `low`. Without it the op keeps
  /// the types it has (its kernel reads them as they come).
  std::function<PrecisionChoice(CustomKernelOp op, mlir::Type low)> precision;
  /// The factor mapping of its dimensions (see ShardingRule). Without it the
  /// op cannot be partitioned over a mesh.
  std::function<mlir::FailureOr<ShardingRule>(CustomKernelOp op)> sharding;
  /// Floating-point operations of one execution; bytes are every operand
  /// read and every result written once. Without it: 0 FLOPs.
  std::function<int64_t(CustomKernelOp op)> flops;
};

/// Registers `kernel` (plugins call it from their registration function).
/// A name registered before is an error naming both origins.
llvm::Error registerCustomKernel(CustomKernel kernel);
/// The registered kernel named `name`, or null.
const CustomKernel *lookupCustomKernel(llvm::StringRef name);
/// Every registered name, sorted (for messages and `kiln version`).
std::vector<std::string> customKernelNames();

/// The CUDA C type of an element type, for a plugin's kernel source
/// ("float", "__nv_bfloat16", "__half", "double", "int", "long long",
/// "unsigned char" for i1, which kiln stores a byte each); "" for others.
inline std::string cudaTypeOf(mlir::Type t) {
  if (t.isF32())
    return "float";
  if (t.isBF16())
    return "__nv_bfloat16";
  if (t.isF16())
    return "__half";
  if (t.isF64())
    return "double";
  if (t.isInteger(32))
    return "int";
  if (t.isInteger(64))
    return "long long";
  if (t.isInteger(1))
    return "unsigned char";
  return "";
}

/// `v` rounded to nearest even in float type `t` (unchanged for f64 and
/// non-float types): what the reference does where the kernel rounds an
/// intermediate it stores (the interpreter rounds the outputs itself).
inline double roundTo(double v, mlir::Type t) {
  auto f = llvm::dyn_cast<mlir::FloatType>(t);
  if (!f || t.isF64())
    return v;
  if (t.isF32())
    return static_cast<double>(static_cast<float>(v));
  llvm::APFloat a(v);
  bool lost = false;
  a.convert(f.getFloatSemantics(), llvm::APFloat::rmNearestTiesToEven, &lost);
  a.convert(llvm::APFloat::IEEEdouble(), llvm::APFloat::rmNearestTiesToEven, &lost);
  return a.convertToDouble();
}

} // namespace kiln

#endif // KILN_IR_CUSTOMKERNEL_H
