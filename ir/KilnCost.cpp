//===- KilnCost.cpp - CostOpInterface: FLOPs and bytes of every op ---------===//
//
// Conventions (docs/architecture.md, "Cost model"): a multiply-add is two
// FLOPs; each elementwise arithmetic or special-function step is one FLOP
// (per-op counts are in KilnOps.td); data movement is zero FLOPs. Bytes are
// the fewest a kernel must move: each operand read once, each result written
// once; a reshape moves nothing; an embedding reads only the gathered rows.
//
//===----------------------------------------------------------------------===//

#include "ir/KilnOps.h"

#include "llvm/Support/MathExtras.h"

#include <limits>

using namespace mlir;
using namespace kiln;

int64_t kiln::saturatingMul(int64_t a, int64_t b) {
  int64_t r;
  return llvm::MulOverflow(a, b, r) ? std::numeric_limits<int64_t>::max() : r;
}

int64_t kiln::saturatingAdd(int64_t a, int64_t b) {
  int64_t r;
  return llvm::AddOverflow(a, b, r) ? std::numeric_limits<int64_t>::max() : r;
}

int64_t kiln::numElements(Type type) {
  auto shaped = dyn_cast<ShapedType>(type);
  if (!shaped)
    return 1;
  if (!shaped.hasStaticShape())
    return 0;
  int64_t n = 1;
  for (int64_t d : shaped.getShape())
    n = saturatingMul(n, d);
  return n;
}

int64_t kiln::numBytes(Type type) {
  Type elt = type;
  if (auto shaped = dyn_cast<ShapedType>(type))
    elt = shaped.getElementType();
  int64_t bits = elt.isIntOrFloat() ? elt.getIntOrFloatBitWidth() : 0;
  return saturatingMul(numElements(type), std::max<int64_t>(1, (bits + 7) / 8));
}

int64_t kiln::detail::defaultBytesAccessed(Operation *op) {
  int64_t bytes = 0;
  for (Value v : op->getOperands())
    bytes = saturatingAdd(bytes, numBytes(v.getType()));
  for (Value v : op->getResults())
    bytes = saturatingAdd(bytes, numBytes(v.getType()));
  return bytes;
}

// Data movement ops do no arithmetic.
int64_t ReshapeOp::getFlops() { return 0; }
// The body's work; bytes are the default: the inputs read once, the results
// written once (what fusing saves is everything in between).
int64_t FusionOp::getFlops() {
  int64_t flops = 0;
  for (Operation &op : getBodyOps())
    if (auto cost = dyn_cast<CostOpInterface>(op))
      flops = saturatingAdd(flops, cost.getFlops());
  return flops;
}
int64_t ReshapeOp::getBytesAccessed() { return 0; }
int64_t TransposeOp::getFlops() { return 0; }
int64_t SliceOp::getFlops() { return 0; }
int64_t ConcatOp::getFlops() { return 0; }
int64_t BroadcastInDimOp::getFlops() { return 0; }
int64_t IotaOp::getFlops() { return 0; }
int64_t ConstantOp::getFlops() { return 0; }
int64_t EmbeddingOp::getFlops() { return 0; }
int64_t PadOp::getFlops() { return 0; }
// Collectives: an all-reduce adds (n-1)/n of its elements per rank; counted
// as traffic, not arithmetic, as the MFU report does.
int64_t AllReduceOp::getFlops() { return 0; }
int64_t AllGatherOp::getFlops() { return 0; }
int64_t ReduceScatterOp::getFlops() { return 0; }
int64_t AllToAllOp::getFlops() { return 0; }
int64_t TakeShardOp::getFlops() { return 0; }
int64_t SendOp::getFlops() { return 0; }
int64_t RecvOp::getFlops() { return 0; }

// One add per cotangent element scattered into the table.
int64_t EmbeddingGradOp::getFlops() { return numElements(getDy().getType()); }

// (Costs below multiply verified sizes, each at most kMaxTensorBytes, and
// saturate where a product of several could pass INT64_MAX.)

// Choosing k of E scores per token (k passes over the row), then one
// count per choice for the slots.
int64_t MoeRouteOp::getFlops() {
  return saturatingMul(numElements(getProbs().getType()), static_cast<int64_t>(getTopK()) + 1);
}

// Reads the scores (once per expert's scan: the choices are read back,
// not recomputed) and writes the three integer results.
int64_t MoeRouteOp::getBytesAccessed() {
  return saturatingAdd(saturatingAdd(numBytes(getProbs().getType()),
                                     saturatingMul(2 + numExperts(), numBytes(getExpert().getType()))),
                       saturatingAdd(numBytes(getSlot().getType()), numBytes(getToken().getType())));
}

// Reads the ids and only the rows they select; writes the result.
int64_t EmbeddingOp::getBytesAccessed() {
  return saturatingAdd(numBytes(getIds().getType()), saturatingMul(2, numBytes(getType())));
}

// 2·batch·M·N·K: one multiply and one add per term of every dot product,
// plus one add per element for a bias.
int64_t MatmulOp::getFlops() {
  auto a = cast<RankedTensorType>(getLhs().getType());
  int64_t k = getTransposeA() ? a.getShape()[a.getRank() - 2] : a.getShape().back();
  return saturatingAdd(saturatingMul(saturatingMul(2, numElements(getType())), k),
                       getBias() ? numElements(getType()) : 0);
}

// max, subtract-and-exp, sum and the target pick: about 4 FLOPs per logit.
int64_t CrossEntropyOp::getFlops() { return saturatingMul(4, numElements(getLogits().getType())); }

// q·kᵀ is 2·Tq·Tk·D and P·v is 2·Tq·Tk·Dv per head; a causal mask skips half
// of the (Tq, Tk) square. The softmax itself is not counted (as in the
// usual MFU formulas).
/// `2·B·H·Tq·Tk·(dFactor·D + dvFactor·Dv)`, halved when causal.
static int64_t attentionFlops(const AttentionDims &a, bool causal, int64_t dFactor,
                              int64_t dvFactor) {
  int64_t flops = 2;
  for (int64_t f : {a.b, a.h, a.tq, a.tk, saturatingAdd(saturatingMul(dFactor, a.d), saturatingMul(dvFactor, a.dv))})
    flops = saturatingMul(flops, f);
  return causal ? flops / 2 : flops;
}

int64_t AttentionOp::getFlops() { return attentionFlops(attentionDims(*this), getCausal(), 1, 1); }

// The backward recomputes q·kᵀ, then forms dv = Pᵀ·dout, dP = dout·vᵀ,
// dq = dS·k and dk = dSᵀ·q: three products over D and two over Dv.
int64_t AttentionGradOp::getFlops() {
  return attentionFlops(attentionDims(*this), getCausal(), 3, 2);
}

int64_t AttentionQkvOp::getFlops() { return attentionFlops(attentionDims(getQkv()), getCausal(), 1, 1); }
int64_t AttentionQkvGradOp::getFlops() {
  return attentionFlops(attentionDims(getQkv()), getCausal(), 3, 2);
}
namespace {
// The f32 dq accumulator [B, H, Tq, D], rowsum(dout ⊙ out) [B, H, Tq], and
// the flash backward's counters (AttentionDims::orderWords): 4-byte words
// each.
int64_t attentionGradScratch(const AttentionDims &a) {
  int64_t heads = saturatingMul(a.b, a.h);
  int64_t rows = saturatingMul(heads, a.tq);
  return saturatingMul(4, saturatingAdd(saturatingMul(rows, a.d + 1), a.orderWords()));
}
} // namespace

int64_t AttentionQkvGradOp::getScratchBytes() {
  return attentionGradScratch(attentionDims(getQkv()));
}

int64_t AttentionGradOp::getScratchBytes() { return attentionGradScratch(attentionDims(*this)); }

// The attention gradient's, when the fusion holds one (an attention-gradient
// fusion's kernels are the gradient's).
int64_t FusionOp::getScratchBytes() {
  int64_t bytes = 0;
  for (Operation &op : getBodyOps())
    if (auto scratch = dyn_cast<ScratchOpInterface>(op))
      bytes = saturatingAdd(bytes, scratch.getScratchBytes());
  return bytes;
}

// One multiply-add per element.
int64_t GlobalNormOp::getFlops() {
  int64_t n = 0;
  for (Value v : getInputs())
    n = saturatingAdd(n, numElements(v.getType()));
  return saturatingMul(2, n);
}

// Scale, two moment updates, bias corrections, sqrt, divide, decay: about
// 12 FLOPs per parameter.
int64_t AdamWUpdateOp::getFlops() { return saturatingMul(12, numElements(getParam().getType())); }
