//===- AddRmsNorm.cpp - a kiln plugin: residual add + RMSNorm in one kernel ===//
//
// Every pre-norm transformer (Llama) adds a block's output to the residual
// stream and normalizes the sum for the next block:
//
//   %h = kiln.add %x, %r                        // the residual stream
//   %y, %rstd = kiln.rms_norm %h, %w            // the next block's input
//
// Unfused, that is two kernels: the add writes h, the norm reads it back.
// This plugin's pass rewrites the pair into one custom kernel that reads x
// and r once and writes h, y and rstd:
//
//   %h, %y, %rstd = kiln.custom_kernel "example.add_rms_norm" (%x, %r, %w)
//       {params = {epsilon = 1.0e-05 : f64}} : (...) -> (...)
//
// and registers what kiln needs to compile, run and differentiate it: the
// CUDA kernel, an f64 reference for the interpreter, the VJP (IR: the
// norm's gradient plus the residual's), the precision rule (y in the low
// type its matmuls read, h and rstd in f32), the sharding rule (rows split,
// the normalized dimension whole) and the cost. docs/plugins.md walks
// through it; build it against an installed kiln:
//
//   cmake -S examples/plugins/add-rms-norm -B build-plugin -G Ninja \
//     -DCMAKE_PREFIX_PATH=<kiln prefix>
//   cmake --build build-plugin
//   kiln train configs/llama-tiny.toml --plugin build-plugin/kiln-add-rms-norm.so
//
//===----------------------------------------------------------------------===//

#include "ir/CustomKernel.h"
#include "ir/KilnBuilders.h"
#include "ir/KilnOps.h"
#include "passes/Plugin.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Pass/Pass.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>

using namespace mlir;

namespace {

constexpr const char *kKernel = "example.add_rms_norm";
/// Each lane keeps its share of a row in registers: rows up to this wide.
constexpr int64_t kMaxWidth = 4096;

RankedTensorType typeOf(Value v) { return cast<RankedTensorType>(v.getType()); }

//===----------------------------------------------------------------------===//
// The rewrite
//===----------------------------------------------------------------------===//

/// rms_norm(add(x, r), w) -> custom_kernel; the add's other users read h.
struct FuseAddRmsNormPass final : PassWrapper<FuseAddRmsNormPass, OperationPass<ModuleOp>> {
  MLIR_DEFINE_EXPLICIT_INTERNAL_INLINE_TYPE_ID(FuseAddRmsNormPass)
  StringRef getArgument() const final { return "example-fuse-add-rms-norm"; }
  StringRef getDescription() const final {
    return "Fuses a residual add and the RMSNorm of its sum into example.add_rms_norm";
  }
  void runOnOperation() final {
    SmallVector<kiln::RmsNormOp> norms;
    getOperation().walk([&](kiln::RmsNormOp n) { norms.push_back(n); });
    for (kiln::RmsNormOp norm : norms) {
      auto add = norm.getX().getDefiningOp<kiln::AddOp>();
      if (!add || add.getLhs().getType() != add.getType() ||
          add.getRhs().getType() != add.getType() || typeOf(add).getShape().back() > kMaxWidth)
        continue;
      // The fused op goes where the add was (its users, the norm among
      // them, all follow it), so w must be defined before the add.
      Value w = norm.getWeight();
      if (Operation *def = w.getDefiningOp();
          def && (def->getBlock() != add->getBlock() || !def->isBeforeInBlock(add)))
        continue;
      OpBuilder b(add);
      Builder attrs(&getContext());
      auto params = attrs.getDictionaryAttr(attrs.getNamedAttr(
          "epsilon", attrs.getF64FloatAttr(norm.getEpsilon().convertToDouble())));
      auto fused = kiln::CustomKernelOp::create(
          b, norm.getLoc(),
          TypeRange{add.getType(), norm.getY().getType(), norm.getRstd().getType()}, kKernel,
          ValueRange{add.getLhs(), add.getRhs(), norm.getWeight()}, params);
      add.getResult().replaceAllUsesWith(fused.getResult(0));
      norm.getY().replaceAllUsesWith(fused.getResult(1));
      norm.getRstd().replaceAllUsesWith(fused.getResult(2));
      norm.erase();
      add.erase();
    }
  }
};

//===----------------------------------------------------------------------===//
// The kernel's rules
//===----------------------------------------------------------------------===//

LogicalResult verify(kiln::CustomKernelOp op) {
  if (op.getNumOperands() != 3 || op.getNumResults() != 3)
    return op.emitOpError() << "'" << kKernel << "' takes (x, r, w) and returns (h, y, rstd)";
  RankedTensorType x = typeOf(op.getOperand(0)), r = typeOf(op.getOperand(1)),
                   w = typeOf(op.getOperand(2));
  ArrayRef<int64_t> shape = x.getShape();
  if (shape.empty() || shape.back() == 0 || r.getShape() != shape || w.getRank() != 1 ||
      w.getDimSize(0) != shape.back())
    return op.emitOpError() << "'" << kKernel << "': x " << x << " and r " << r
                            << " must have one shape [..., C] with C > 0 and w " << w << " be [C]";
  SmallVector<int64_t> rows(shape.drop_back());
  for (unsigned i : {0u, 1u})
    if (typeOf(op.getResult(i)).getShape() != shape)
      return op.emitOpError() << "'" << kKernel << "': result " << i << " must have x's shape";
  if (typeOf(op.getResult(2)).getShape() != ArrayRef<int64_t>(rows))
    return op.emitOpError() << "'" << kKernel << "': rstd must have x's shape without C";
  for (Value v : llvm::concat<Value>(op.getOperands(), op.getResults()))
    if (!isa<FloatType>(typeOf(v).getElementType()))
      return op.emitOpError() << "'" << kKernel << "' takes and returns float tensors";
  if (op.getParam("epsilon", -1.0) < 0)
    return op.emitOpError() << "'" << kKernel << "' needs params = {epsilon = ...} (>= 0)";
  return success();
}

/// The f64 reference: h = x + r rounded to h's type, as stored; y and rstd
/// from that h, as the unfused rms_norm reads it.
llvm::Error reference(kiln::CustomKernelOp op, ArrayRef<kiln::CpuTensorRef> in,
                      ArrayRef<kiln::CpuTensorRef> out) {
  Type hType = typeOf(op.getResult(0)).getElementType();
  int64_t c = in[2].numel(), rows = in[0].numel() / c;
  double eps = op.getParam("epsilon", 0.0);
  for (int64_t i = 0; i < rows; ++i) {
    double ss = 0;
    for (int64_t j = 0; j < c; ++j) {
      double h = kiln::roundTo(in[0].data[i * c + j] + in[1].data[i * c + j], hType);
      out[0].data[i * c + j] = h;
      ss += h * h;
    }
    double rs = 1.0 / std::sqrt(ss / static_cast<double>(c) + eps);
    for (int64_t j = 0; j < c; ++j)
      out[1].data[i * c + j] = out[0].data[i * c + j] * rs * in[2].data[j];
    out[2].data[i] = rs;
  }
  return llvm::Error::success();
}

/// One warp a row. Each lane reads its share of x and r first (4 adjacent
/// elements per access when C is a multiple of 128: 16-byte loads of f32,
/// 8-byte of bf16), keeps the sums in registers, and writes h, y and rstd.
/// Pointers are __restrict__ (kiln never aliases an op's operands with its
/// results), so the loads of a row are all in flight at once.
llvm::Expected<kiln::CudaLaunch> cuda(kiln::CustomKernelOp op) {
  int64_t c = typeOf(op.getOperand(2)).getDimSize(0);
  int64_t rows = typeOf(op.getOperand(0)).getNumElements() / c;
  if (c > kMaxWidth)
    return llvm::createStringError(llvm::formatv("rows of {0} exceed the {1} it handles", c, kMaxWidth));
  std::string types[6];
  bool f64 = false;
  for (auto [i, v] : llvm::enumerate(llvm::concat<Value>(op.getOperands(), op.getResults()))) {
    types[i] = kiln::cudaTypeOf(typeOf(v).getElementType());
    f64 |= types[i] == "double";
  }
  int vec = c % 128 == 0 ? 4 : 1;
  kiln::CudaLaunch launch;
  launch.source = llvm::formatv(R"cuda(#include <cuda_bf16.h>
#include <cuda_fp16.h>

typedef {0} F;
// N adjacent elements at p + i as F, and back (N = 1 or 4; i a multiple of N).
template <int N> __device__ __forceinline__ void ld(const float *p, long long i, F *v) {{
  if (N == 4) {{ float4 a = *reinterpret_cast<const float4 *>(p + i); v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w; }
  else v[0] = p[i];
}
template <int N> __device__ __forceinline__ void ld(const double *p, long long i, F *v) {{
  for (int k = 0; k < N; ++k) v[k] = (F)p[i + k];
}
template <int N> __device__ __forceinline__ void ld(const __nv_bfloat16 *p, long long i, F *v) {{
  if (N == 4) {{
    uint2 u = *reinterpret_cast<const uint2 *>(p + i);
    float2 a = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162 *>(&u.x));
    float2 b = __bfloat1622float2(*reinterpret_cast<__nv_bfloat162 *>(&u.y));
    v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y;
  } else v[0] = __bfloat162float(p[i]);
}
template <int N> __device__ __forceinline__ void ld(const __half *p, long long i, F *v) {{
  if (N == 4) {{
    uint2 u = *reinterpret_cast<const uint2 *>(p + i);
    float2 a = __half22float2(*reinterpret_cast<__half2 *>(&u.x));
    float2 b = __half22float2(*reinterpret_cast<__half2 *>(&u.y));
    v[0] = a.x; v[1] = a.y; v[2] = b.x; v[3] = b.y;
  } else v[0] = __half2float(p[i]);
}
template <int N> __device__ __forceinline__ void st(float *p, long long i, const F *v) {{
  if (N == 4) *reinterpret_cast<float4 *>(p + i) = make_float4(v[0], v[1], v[2], v[3]);
  else p[i] = (float)v[0];
}
template <int N> __device__ __forceinline__ void st(double *p, long long i, const F *v) {{
  for (int k = 0; k < N; ++k) p[i + k] = (double)v[k];
}
template <int N> __device__ __forceinline__ void st(__nv_bfloat16 *p, long long i, const F *v) {{
  if (N == 4) {{
    uint2 u;
    *reinterpret_cast<__nv_bfloat162 *>(&u.x) = __floats2bfloat162_rn(v[0], v[1]);
    *reinterpret_cast<__nv_bfloat162 *>(&u.y) = __floats2bfloat162_rn(v[2], v[3]);
    *reinterpret_cast<uint2 *>(p + i) = u;
  } else p[i] = __float2bfloat16_rn((float)v[0]);
}
template <int N> __device__ __forceinline__ void st(__half *p, long long i, const F *v) {{
  if (N == 4) {{
    uint2 u;
    *reinterpret_cast<__half2 *>(&u.x) = __floats2half2_rn(v[0], v[1]);
    *reinterpret_cast<__half2 *>(&u.y) = __floats2half2_rn(v[2], v[3]);
    *reinterpret_cast<uint2 *>(p + i) = u;
  } else p[i] = __float2half_rn((float)v[0]);
}
// v as stored in T and read back: what the unfused norm would read.
__device__ __forceinline__ F rounded(const float *, F v) {{ return (F)(float)v; }
__device__ __forceinline__ F rounded(const double *, F v) {{ return v; }
__device__ __forceinline__ F rounded(const __nv_bfloat16 *, F v) {{ return (F)__bfloat162float(__float2bfloat16_rn((float)v)); }
__device__ __forceinline__ F rounded(const __half *, F v) {{ return (F)__half2float(__float2half_rn((float)v)); }

#define ROWS {1}ll
#define C {2}ll
#define VEC {10}
// Accesses per lane: VEC elements each, 32 lanes side by side.
#define PER_LANE ((C + 32 * VEC - 1) / (32 * VEC))

extern "C" __global__ void __launch_bounds__(256)
@NAME@(const {3} *__restrict__ x, const {4} *__restrict__ r, const {5} *__restrict__ w,
       {6} *__restrict__ h, {7} *__restrict__ y, {8} *__restrict__ rstd) {{
  const int lane = threadIdx.x & 31;
  const long long warps = (long long)gridDim.x * (blockDim.x / 32);
  for (long long row = (long long)blockIdx.x * (blockDim.x / 32) + threadIdx.x / 32; row < ROWS;
       row += warps) {{
    const long long base = row * C;
    F v[PER_LANE][VEC], b[VEC];
#pragma unroll
    for (int k = 0; k < PER_LANE; ++k) {{
      const long long j = (lane + 32ll * k) * VEC;
      if (j < C) {{
        ld<VEC>(x, base + j, v[k]);
        ld<VEC>(r, base + j, b);
#pragma unroll
        for (int e = 0; e < VEC; ++e) v[k][e] += b[e];
      }
    }
    F ss = 0;
#pragma unroll
    for (int k = 0; k < PER_LANE; ++k) {{
      const long long j = (lane + 32ll * k) * VEC;
      if (j < C) {{
        st<VEC>(h, base + j, v[k]);
#pragma unroll
        for (int e = 0; e < VEC; ++e) {{
          v[k][e] = rounded(h, v[k][e]);
          ss += v[k][e] * v[k][e];
        }
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1)
      ss += __shfl_xor_sync(0xffffffffu, ss, o);
    const F rs = F(1) / sqrt(ss / F(C) + F({9:e17}));
#pragma unroll
    for (int k = 0; k < PER_LANE; ++k) {{
      const long long j = (lane + 32ll * k) * VEC;
      if (j < C) {{
        ld<VEC>(w, j, b);
#pragma unroll
        for (int e = 0; e < VEC; ++e) b[e] = v[k][e] * rs * b[e];
        st<VEC>(y, base + j, b);
      }
    }
    if (lane == 0)
      st<1>(rstd, row, &rs);
  }
}
)cuda",
                                f64 ? "double" : "float", rows, c, types[0], types[1], types[2],
                                types[3], types[4], types[5], op.getParam("epsilon", 0.0), vec)
                      .str();
  launch.block = {256, 1, 1};
  launch.grid = {std::max<int64_t>(1, (rows + 7) / 8), 1, 1};
  return launch;
}

/// dh_total = dh + rms_norm_grad(h, w, rstd, dy).dx reaches x and r whole;
/// dw is the norm's.
LogicalResult vjp(kiln::CustomKernelOp op, OpBuilder &b, ValueRange cot,
                  SmallVectorImpl<Value> &out) {
  Location loc = op.getLoc();
  if (cot[2])
    return op.emitOpError() << "'" << kKernel << "': rstd is a statistic, not differentiable";
  Value h = op.getResult(0), w = op.getOperand(2);
  Value dh = cot[0], dw;
  if (Value dy = cot[1]) {
    if (typeOf(dy) != typeOf(h))
      dy = kiln::build::convert(b, loc, dy, typeOf(h).getElementType());
    Value wh = w;
    if (typeOf(w).getElementType() != typeOf(h).getElementType())
      wh = kiln::build::convert(b, loc, w, typeOf(h).getElementType());
    auto grad = kiln::RmsNormGradOp::create(b, loc, typeOf(h), typeOf(wh), h, wh, op.getResult(2), dy);
    dh = dh ? kiln::build::add(b, loc, dh, grad.getDx()) : grad.getDx();
    dw = grad.getDweight();
    if (typeOf(dw) != typeOf(w))
      dw = kiln::build::convert(b, loc, dw, typeOf(w).getElementType());
  }
  for (unsigned i : {0u, 1u}) {
    Value d = dh;
    if (d && typeOf(d) != typeOf(op.getOperand(i)))
      d = kiln::build::convert(b, loc, d, typeOf(op.getOperand(i)).getElementType());
    out.push_back(d);
  }
  out.push_back(dw);
  return success();
}

/// x and r as they come (the kernel reads any float type), w in f32; h and
/// rstd in f32, y in the low type: its readers are the next block's
/// matmuls, which would cast it anyway.
kiln::PrecisionChoice precision(kiln::CustomKernelOp op, Type low) {
  Type f32 = Float32Type::get(op.getContext());
  return {{Type(), Type(), f32}, {f32, low, f32}};
}

/// Rows split over a mesh as they please; the normalized dimension whole.
FailureOr<kiln::ShardingRule> sharding(kiln::CustomKernelOp op) {
  kiln::ShardingRule rule;
  ArrayRef<int64_t> shape = typeOf(op.getOperand(0)).getShape();
  SmallVector<int64_t> rows, full;
  for (int64_t size : shape.drop_back()) {
    rows.push_back(static_cast<int64_t>(rule.factorSizes.size()));
    rule.factorSizes.push_back(size);
  }
  full = rows;
  full.push_back(-1);
  rule.operandFactors = {full, full, {-1}};
  rule.resultFactors = {full, full, rows};
  return rule;
}

/// The add, the squares' sum and the scaling: 5 an element.
int64_t flops(kiln::CustomKernelOp op) {
  return kiln::saturatingMul(5, kiln::numElements(op.getOperand(0).getType()));
}

void registerAddRmsNorm(kiln::PluginRegistrar &registrar) {
  kiln::CustomKernel kernel;
  kernel.name = kKernel;
  kernel.verify = verify;
  kernel.cuda = cuda;
  kernel.cpu = reference;
  kernel.vjp = vjp;
  kernel.precision = precision;
  kernel.sharding = sharding;
  kernel.flops = flops;
  registrar.addKernel(std::move(kernel));
  registrar.addPass<FuseAddRmsNormPass>();
}

} // namespace

KILN_PLUGIN("example-add-rms-norm", registerAddRmsNorm)
