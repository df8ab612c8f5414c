//===- Kernels.h - reference implementations of the kiln ops on the CPU ----===//
//
// Each function computes one op on HostTensors. Float math runs in the
// storage type (float for f32/bf16/f16, double for f64) with sums
// accumulated in double; results in bf16/f16 are rounded to nearest even
// before they are returned. Shapes are assumed verified (the IR verifier ran);
// data-dependent errors (an id outside the table) are returned as llvm::Error.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CPU_KERNELS_H
#define KILN_RUNTIME_CPU_KERNELS_H

#include "runtime/cpu/HostTensor.h"

#include "llvm/Support/Error.h"

#include <tuple>

namespace kiln::cpu::kernels {

/// The plain elementwise ops (ir/ElementwiseOps.def, each named after its
/// function in ir/ScalarMath.h) and gelu's two forms.
enum class Unary {
#define KILN_UNARY(Op, fn) fn,
#include "ir/ElementwiseOps.def"
  geluTanh,
  geluErf
};
enum class Binary {
#define KILN_BINARY(Op, fn) fn,
#include "ir/ElementwiseOps.def"
};
enum class Compare { Eq, Ne, Lt, Le, Gt, Ge };
enum class Reduce { Sum, Max, Mean };

// Elementwise
HostTensor unary(Unary kind, const HostTensor &x);
HostTensor binary(Binary kind, const HostTensor &a, const HostTensor &b);
HostTensor geluGrad(bool tanhApprox, const HostTensor &x, const HostTensor &dy);
HostTensor cast(const HostTensor &x, DType to);
HostTensor compare(Compare kind, const HostTensor &a, const HostTensor &b);
HostTensor select(const HostTensor &cond, const HostTensor &a, const HostTensor &b);

// Shape
HostTensor transpose(const HostTensor &x, llvm::ArrayRef<int64_t> perm);
HostTensor broadcastInDim(const HostTensor &x, llvm::ArrayRef<int64_t> shape,
                          llvm::ArrayRef<int64_t> dims);
HostTensor slice(const HostTensor &x, llvm::ArrayRef<int64_t> start,
                 llvm::ArrayRef<int64_t> limit, llvm::ArrayRef<int64_t> strides);
HostTensor pad(const HostTensor &x, llvm::ArrayRef<int64_t> low, llvm::ArrayRef<int64_t> high,
               llvm::ArrayRef<int64_t> interior);
HostTensor concat(llvm::ArrayRef<HostTensor> xs, int64_t dim);
HostTensor iota(DType dtype, llvm::ArrayRef<int64_t> shape, int64_t dim);
HostTensor reduce(Reduce kind, const HostTensor &x, llvm::ArrayRef<int64_t> dims);

// Linear algebra
HostTensor matmul(const HostTensor &a, const HostTensor &b, bool transposeA, bool transposeB,
                  DType resultType, llvm::ArrayRef<int64_t> resultShape);
/// `segments` ([B, T] ids, or null): a query sees only keys of its segment.
std::tuple<HostTensor, HostTensor> attention(const HostTensor &q, const HostTensor &k,
                                             const HostTensor &v, const HostTensor *segments,
                                             double scale, bool causal, DType statsType);
std::tuple<HostTensor, HostTensor, HostTensor>
attentionGrad(const HostTensor &q, const HostTensor &k, const HostTensor &v,
              const HostTensor &out, const HostTensor &lse, const HostTensor &dout,
              const HostTensor *segments, double scale, bool causal);

// Neural-network composites
/// A table [g…, V, C] with batch dimensions g… gathers each batch's ids
/// [g…, i…] from its own [V, C] (kiln.embedding).
llvm::Expected<HostTensor> embedding(const HostTensor &table, const HostTensor &ids);
llvm::Expected<HostTensor> embeddingGrad(const HostTensor &ids, const HostTensor &dy,
                                         llvm::ArrayRef<int64_t> tableShape);
HostTensor softmax(const HostTensor &x, bool log);
HostTensor softmaxGrad(const HostTensor &y, const HostTensor &dy);
std::tuple<HostTensor, HostTensor, HostTensor> layerNorm(const HostTensor &x,
                                                         const HostTensor &w,
                                                         const HostTensor &b, double eps,
                                                         DType statsType);
std::tuple<HostTensor, HostTensor, HostTensor>
layerNormGrad(const HostTensor &x, const HostTensor &w, const HostTensor &mean,
              const HostTensor &rstd, const HostTensor &dy);
std::tuple<HostTensor, HostTensor> rmsNorm(const HostTensor &x, const HostTensor &w,
                                           double eps, DType statsType);
std::tuple<HostTensor, HostTensor> rmsNormGrad(const HostTensor &x, const HostTensor &w,
                                               const HostTensor &rstd, const HostTensor &dy);
/// Positions along `positionDim` (rank − 2 when negative).
HostTensor rope(const HostTensor &x, double theta, bool inverse, int64_t positionDim = -1);
/// kiln.moe_route: each token's top_k experts, the slot each choice got
/// (E·capacity: dropped) and the token in each slot (N: empty), as
/// `indexType` tensors; scores [g…, N, E] route each group g on its own.
std::tuple<HostTensor, HostTensor, HostTensor> moeRoute(const HostTensor &probs, int64_t topK,
                                                        int64_t capacity, DType indexType);
llvm::Expected<std::tuple<HostTensor, HostTensor>>
crossEntropy(const HostTensor &logits, const HostTensor &targets, int64_t validClasses,
             DType statsType);
llvm::Expected<HostTensor> crossEntropyGrad(const HostTensor &logits,
                                            const HostTensor &targets, const HostTensor &lse,
                                            const HostTensor &dloss, int64_t validClasses);

// Training
HostTensor globalNorm(llvm::ArrayRef<const HostTensor *> xs, DType resultType);
/// One AdamW step (kiln.adamw_update); see the op's description.
std::tuple<HostTensor, HostTensor, HostTensor>
adamw(const HostTensor &p, const HostTensor &g, const HostTensor &m, const HostTensor &v,
      double lr, double step, double gradScale, double beta1, double beta2, double eps,
      double weightDecay);

} // namespace kiln::cpu::kernels

#endif // KILN_RUNTIME_CPU_KERNELS_H
