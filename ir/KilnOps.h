//===- KilnOps.h - ops of the kiln dialect ---------------------------------===//

#ifndef KILN_IR_KILNOPS_H
#define KILN_IR_KILNOPS_H

#include "ir/KilnDialect.h"
#include "ir/KilnInterfaces.h"

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/OpImplementation.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"

#include "ir/KilnEnums.h.inc"

namespace kiln::OpTrait {
namespace detail {
mlir::LogicalResult verifySameTypes(mlir::Operation *op);
mlir::LogicalResult verifyBoundedTensors(mlir::Operation *op);
} // namespace detail

/// Every tensor operand and result has a static shape and at most
/// kMaxTensorBytes bytes.
template <typename ConcreteType>
class BoundedTensors : public mlir::OpTrait::TraitBase<ConcreteType, BoundedTensors> {
public:
  static mlir::LogicalResult verifyTrait(mlir::Operation *op) {
    return detail::verifyBoundedTensors(op);
  }
};

/// Marks an elementwise op: each result element depends only on the operand
/// elements at the same index (fusion and codegen rely on it).
template <typename ConcreteType>
class Elementwise : public mlir::OpTrait::TraitBase<ConcreteType, Elementwise> {};

/// All operands and results have one type; a mismatch is reported with both
/// types named.
template <typename ConcreteType>
class SameTypes : public mlir::OpTrait::TraitBase<ConcreteType, SameTypes> {
public:
  static mlir::LogicalResult verifyTrait(mlir::Operation *op) {
    return detail::verifySameTypes(op);
  }
};
} // namespace kiln::OpTrait

namespace kiln {
struct CustomKernel; // ir/CustomKernel.h
} // namespace kiln

#define GET_OP_CLASSES
#include "ir/KilnOps.h.inc"

namespace kiln {
/// What kiln-partition inserts between ranks: kiln.all_reduce, all_gather,
/// reduce_scatter, all_to_all and take_shard (each with an `axis` and a `cause`).
inline bool isCollective(mlir::Operation *op) {
  return mlir::isa<AllReduceOp, AllGatherOp, ReduceScatterOp, AllToAllOp, TakeShardOp>(op);
}

/// The sizes of an attention's q [B, H, Tq, D], k [B, Hkv, Tk, D] and
/// v [B, Hkv, Tk, Dv] in either layout (kiln.attention's `layout`): with
/// `sequenceMajor` the tensors are [B, T, H, D] and heads are dimension 2.
struct AttentionDims {
  int64_t b, h, hkv, tq, tk, d, dv;
  bool sequenceMajor;
  /// q, k and v are the parts of one [B, T, H, 3, D] tensor
  /// (kiln.attention_qkv): a head's rows are 3·H·D elements apart.
  bool packed = false;
  /// The dimension of q, k, v and out holding the heads / the positions.
  int64_t headDim() const { return sequenceMajor ? 2 : 1; }
  int64_t seqDim() const { return sequenceMajor ? 1 : 2; }
  /// The shape of a [B, heads, T, D] tensor in this layout.
  llvm::SmallVector<int64_t> shape(int64_t heads, int64_t t, int64_t dim) const {
    if (sequenceMajor)
      return {b, t, heads, dim};
    return {b, heads, t, dim};
  }
  /// The 4-byte words of the flash backward's counters at the end of the
  /// gradient's scratch: the ordered backward's ticket and a turn counter
  /// per (batch · head, query block of 64 rows), used under
  /// train.deterministic, then the key blocks done per batch · kv head.
  int64_t orderWords() const { return 1 + b * h * ((tq + 63) / 64) + b * hkv; }
};
AttentionDims attentionDims(mlir::Value q, mlir::Value k, mlir::Value v, bool sequenceMajor);
inline AttentionDims attentionDims(AttentionOp op) {
  return attentionDims(op.getQ(), op.getK(), op.getV(), op.isSequenceMajor());
}
inline AttentionDims attentionDims(AttentionGradOp op) {
  return attentionDims(op.getQ(), op.getK(), op.getV(), op.isSequenceMajor());
}
/// A packed qkv [B, T, H, 3, D]: sequence-major, Hkv = H, Tk = Tq, Dv = D.
AttentionDims attentionDims(mlir::Value qkv);

/// `r` sums over every dimension of its operand but the last (a bias
/// gradient), in the operand's element type.
bool sumsOverRows(ReduceSumOp r);
/// `c` widens bf16/f16 to f32.
bool widensToF32(CastOp c);
/// `op` is a row norm or its gradient (layer_norm, rms_norm, their _grad).
bool isNorm(mlir::Operation *op);
/// A reduce_sum, reduce_max or reduce_mean.
bool isReduction(mlir::Operation *op);
/// `b` keeps rows whole: its operand's last dimension is the result's last,
/// at full size, so each row of the result is a contiguous row of the
/// operand (a [T, C] table in [B, T, C]; a kernel may read it in vectors).
bool keepsRows(BroadcastInDimOp b);
/// `op` is one of the plain elementwise ops of ir/ElementwiseOps.def (no
/// attributes; its math is one function of ir/ScalarMath.h).
bool isPlainElementwise(mlir::Operation *op);

/// A kiln.fusion that is one GEMM with a cuBLASLt epilogue (kiln-fuse forms
/// them; see kiln.fusion). The values are in the fusion's body.
struct GemmEpilogueBody {
  enum class Activation {
    None,    ///< the product (+ bias)
    Gelu,    ///< gelu(product + bias), tanh approximation
    GeluGrad ///< gelu'(aux) · product
  };
  Activation activation = Activation::None;
  MatmulOp matmul;
  mlir::Value aux;           ///< GeluGrad: gelu's input (a body argument)
  mlir::Value out;           ///< the main result: the activation's, else the product
  mlir::Value preActivation; ///< Gelu: the product + bias, when yielded
  ReduceSumOp biasGrad;      ///< a sum over all rows, or null
  mlir::Value biasGradOut;   ///< the yielded bias gradient: the sum, or its widening cast
  bool biasGradOfRhs = false; ///< sums the rhs over its rows (else the output)
};

/// The GEMM epilogue `fusion`'s body spells, or failure with the reason in
/// `why`. One of (yields in any order):
///   matmul [bias] -> gelu tanh            yields gelu [, matmul]
///   matmul -> gelu_grad tanh %aux, _      yields gelu_grad [, reduce_sum of it]
///   matmul transpose_a (rhs [K, N] or a reshape of [.., N] to it), and
///   reduce_sum of the rhs over all but its last dimension   yields both,
///   or both through casts from bf16/f16 to f32 (the GEMM writes f32)
/// The GEMM is a single one (a rank-2 product, or a shared rank-2 rhs and
/// no transpose_a) with one element type throughout.
mlir::FailureOr<GemmEpilogueBody> matchGemmEpilogue(FusionOp fusion, std::string *why = nullptr);

/// A kiln.fusion holding one row norm (kiln-fuse forms them; see
/// kiln.fusion). The ops are in the fusion's body.
struct NormFusionBody {
  mlir::Operation *norm = nullptr; ///< layer_norm, rms_norm or their _grad
  bool backward = false;           ///< a _grad: elementwise ops read its dx
  bool center = false;             ///< a layer norm (mean and bias), not RMS
  /// The elementwise ops (and splat constants, and broadcasts of body
  /// arguments that keep rows whole) in program order: before the norm,
  /// computing its x (forward); after it, reading dx (backward).
  llvm::SmallVector<mlir::Operation *> elementwise;
  /// Backward only: a column sum of a row value (dx or an elementwise
  /// value), a reduce_sum over every dimension but the last, optionally
  /// widened to f32 by a cast (`widen`); `out` is the yielded vector. At
  /// most one (the kernel accumulates it in shared memory).
  ReduceSumOp columnSum;
  CastOp widen;
  mlir::Value columnSumOut;
};

/// The norm fusion `fusion`'s body spells, or failure with the reason in
/// `why`:
///   forward:  elementwise ops over [.., C] whose values (or a body
///             argument) the norm reads as x; its weight (and bias) are
///             body arguments; nothing in the body reads its results; y
///             is yielded (mean/rstd when used)
///   backward: the _grad's operands are body arguments; elementwise ops
///             over [.., C] read its dx (and body arguments); dweight
///             (and dbias) are yielded; at most one reduce_sum of dx or
///             of an elementwise value over all rows (a bias gradient),
///             yielded directly or through a cast to f32
/// The norm is over the last dimension of a tensor of rank 2 or more.
mlir::FailureOr<NormFusionBody> matchNormFusion(FusionOp fusion, std::string *why = nullptr);

/// A kiln.fusion holding a cross-entropy and its gradient (kiln-fuse forms
/// them; see kiln.fusion).
struct CrossEntropyFusionBody {
  CrossEntropyOp forward;
  CrossEntropyGradOp grad;
};

/// The cross-entropy fusion `fusion`'s body spells, or failure with the
/// reason in `why`: `kiln.cross_entropy %logits, %targets` and
/// `kiln.cross_entropy_grad %logits, %targets, %lse, %dloss` of the same
/// body arguments (and valid classes), the gradient reading the forward's
/// lse and a dloss that is a body argument; the loss and dlogits yielded
/// (lse when used outside).
mlir::FailureOr<CrossEntropyFusionBody> matchCrossEntropyFusion(FusionOp fusion,
                                                                std::string *why = nullptr);
/// A kiln.fusion holding an attention gradient and the column sum of its
/// dqkv (kiln-fuse forms them; see kiln.fusion). The ops are in the
/// fusion's body.
struct AttentionGradFusionBody {
  AttentionQkvGradOp grad;
  ReshapeOp reshape;  ///< dqkv as [.., 3·H·D] for the sum, or null
  ReduceSumOp sum;    ///< over every row of dqkv: [3·H·D] or [H, 3, D] values
  CastOp widen;       ///< the sum widened to f32, or null
  mlir::Value sumOut; ///< the yielded column sum: `sum`'s, or `widen`'s
};

/// The attention-gradient fusion `fusion`'s body spells, or failure with
/// the reason in `why`: `kiln.attention_qkv_grad` of body arguments; a
/// reduce_sum of its dqkv over dimensions [0, 1] (rank 5), or of a reshape
/// of it to [.., 3·H·D] over every dimension but the last; optionally a
/// cast of the sum from bf16/f16 to f32; dqkv and the (widened) sum
/// yielded, nothing else in the body.
mlir::FailureOr<AttentionGradFusionBody> matchAttentionGradFusion(FusionOp fusion,
                                                                  std::string *why = nullptr);

/// A kiln.fusion whose loop ends in a reduction (kiln-fuse forms them; see
/// kiln.fusion). The ops are in the fusion's body.
struct ReductionFusionBody {
  mlir::Operation *reduce = nullptr; ///< reduce_sum, reduce_max or reduce_mean
  /// The elementwise ops, splat constants and broadcasts of body arguments
  /// (in program order), every value of the loop's shape: the reduction's
  /// operand's.
  llvm::SmallVector<mlir::Operation *> elementwise;
};

/// The reduction fusion `fusion`'s body spells, or failure with the reason
/// in `why`: elementwise ops (and splat constants and broadcasts of body
/// arguments) over one float shape, and one reduce_sum, reduce_max or
/// reduce_mean of a float value of that shape, which nothing in the body
/// reads and which is yielded; every other yielded value (a side output,
/// written as the reduction reads its elements) has the loop's shape.
mlir::FailureOr<ReductionFusionBody> matchReductionFusion(FusionOp fusion,
                                                          std::string *why = nullptr);
} // namespace kiln

#endif // KILN_IR_KILNOPS_H
