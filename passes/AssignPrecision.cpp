//===- AssignPrecision.cpp - low-precision compute where it is safe --------===//
//
// Runs before autodiff, on every function, and gives each op a compute type
// under a policy: `f32` (changes nothing), `bf16-mixed` or `f16-mixed` (the
// low type L below). Parameters stay f32 (the master weights the optimizer
// updates); every conversion is an explicit kiln.cast, made once per value
// and type and placed right after the value's definition.
//
//   low          matmul (operands and bias in L, the result in L;
//                cuBLASLt accumulates in f32), attention (q, k, v and out in
//                L, the log-sum-exp in f32)
//   as is        cross_entropy: its logits stay in whatever type they come
//                (L after the head's matmul); its kernel computes in f32 and
//                loss and lse are f32
//   f32          layer_norm, rms_norm, reductions, global_norm,
//                adamw_update: float operands cast to f32
//   plugin's     kiln.custom_kernel: what its registration's precision
//                rule asks for (ir/CustomKernel.h), else as is
//   follow       elementwise, shape and data-movement ops, embedding, rope,
//                softmax and log_softmax: stored in their operands' type;
//                operands of two float types are promoted to f32, except
//                that a splat constant follows the other operands. Every
//                kernel computes in f32 whatever it stores (the softmax's
//                max, exponentials and sum included): the attention
//                probabilities are kept in L, as the matmul that reads them
//                would round them anyway (as flash attention does)
//
// Because it runs before autodiff, the backward inherits the types: a
// matmul's saved operands are its L casts, its cotangents arrive in L, and
// the VJP of each cast converts the gradient back, so every parameter's
// gradient is f32. Results keep the function's declared types (cast back
// where needed).
//
//===----------------------------------------------------------------------===//

#include "ir/CustomKernel.h"
#include "ir/KilnBuilders.h"
#include "ir/KilnOps.h"
#include "passes/PassUtils.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Verifier.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/TypeSwitch.h"

namespace kiln {
#define GEN_PASS_DEF_ASSIGNPRECISIONPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;

namespace kiln {
namespace {

enum class Class { Low, F32, Follow, Keep };

/// Every op kiln knows has a class; another op (a plugin's) is an error, not
/// a guess.
std::optional<Class> classify(Operation *op) {
  return llvm::TypeSwitch<Operation *, std::optional<Class>>(op)
      .Case<MatmulOp, AttentionOp, AttentionQkvOp>([](auto) { return Class::Low; })
      // A router chooses on f32 scores: rounded to the low type, near-equal
      // scores would tie.
      .Case<LayerNormOp, RmsNormOp, ReduceSumOp, ReduceMaxOp, ReduceMeanOp, GlobalNormOp,
            AdamWUpdateOp, MoeRouteOp>([](auto) { return Class::F32; })
      // Cross-entropy takes logits of any float type (its kernel computes in
      // f32; loss and lse are f32): keeping them low saves a copy of the
      // largest activation.
      .Case<CastOp, ConstantOp, IotaOp, CrossEntropyOp, func::ReturnOp>([](auto) { return Class::Keep; })
      // Elementwise math, data movement and row-wise ops store in their
      // operands' type.
#define KILN_UNARY(Op, fn) .Case<Op>([](auto) { return Class::Follow; })
#define KILN_BINARY(Op, fn) .Case<Op>([](auto) { return Class::Follow; })
#include "ir/ElementwiseOps.def"
      .Case<GeluOp, CompareOp, SelectOp, ReshapeOp, TransposeOp, SliceOp,
            PadOp, ConcatOp, BroadcastInDimOp, EmbeddingOp, SoftmaxOp, LogSoftmaxOp, RopeOp,
            GeluGradOp, SoftmaxGradOp, LayerNormGradOp, RmsNormGradOp, CrossEntropyGradOp,
            EmbeddingGradOp, AttentionGradOp, AttentionQkvGradOp>([](auto) { return Class::Follow; })
      .Default([](Operation *) { return std::nullopt; });
}

bool isFloatTensor(Value v) {
  auto t = dyn_cast<RankedTensorType>(v.getType());
  return t && isa<FloatType>(t.getElementType());
}

Type elementOf(Value v) { return cast<RankedTensorType>(v.getType()).getElementType(); }

RankedTensorType withElement(Type t, Type element) {
  auto r = cast<RankedTensorType>(t);
  return RankedTensorType::get(r.getShape(), element);
}

bool isSplatConstant(Value v) {
  auto c = v.getDefiningOp<ConstantOp>();
  return c && isa<SplatElementsAttr>(c.getValue());
}

struct AssignPrecisionPass final : impl::AssignPrecisionPassBase<AssignPrecisionPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    Builder b(module.getContext());
    Type low;
    if (policy == "f32")
      return;
    if (policy == "bf16-mixed")
      low = b.getBF16Type();
    else if (policy == "f16-mixed")
      low = b.getF16Type();
    else {
      module.emitError() << "kiln-assign-precision: unknown policy '" << policy
                         << "' (expected f32, bf16-mixed or f16-mixed)";
      return signalPassFailure();
    }
    // The casts made so far are per run: a pass instance may run again on
    // another module, whose values could reuse freed addresses.
    casts_.clear();
    for (auto func : module.getOps<func::FuncOp>()) {
      if (failed(checkOneBlockBody(func, "kiln-assign-precision")))
        return signalPassFailure();
      if (failed(assign(func, low)))
        return signalPassFailure();
    }
  }

  /// The cast of `v` to element type `to`, made once (right after `v` is
  /// defined, so every user can reach it).
  Value castTo(Value v, Type to) {
    if (elementOf(v) == to)
      return v;
    auto key = std::make_pair(v, to);
    if (auto it = casts_.find(key); it != casts_.end())
      return it->second;
    OpBuilder builder(v.getContext());
    if (auto arg = dyn_cast<BlockArgument>(v))
      builder.setInsertionPointToStart(arg.getOwner());
    else
      builder.setInsertionPointAfter(v.getDefiningOp());
    Value c = build::convert(builder, v.getLoc(), v, to);
    casts_[key] = c;
    return c;
  }

  /// A plugin's kernel: the types its precision rule asks for (none: as is).
  void assignCustom(CustomKernelOp op, Type low) {
    const CustomKernel *def = op.getDefinition();
    if (!def || !def->precision)
      return;
    PrecisionChoice choice = def->precision(op, low);
    for (OpOperand &operand : op->getOpOperands()) {
      unsigned i = operand.getOperandNumber();
      if (i < choice.operands.size() && choice.operands[i] && isFloatTensor(operand.get()))
        operand.set(castTo(operand.get(), choice.operands[i]));
    }
    for (OpResult r : op->getResults()) {
      unsigned i = r.getResultNumber();
      if (i < choice.results.size() && choice.results[i] && isFloatTensor(r))
        r.setType(withElement(r.getType(), choice.results[i]));
    }
  }

  LogicalResult assign(func::FuncOp func, Type low) {
    Type f32 = Float32Type::get(func.getContext());
    SmallVector<Operation *> ops;
    for (Operation &op : func.getBody().front())
      ops.push_back(&op);
    for (Operation *op : ops) {
      if (auto custom = dyn_cast<CustomKernelOp>(op)) {
        assignCustom(custom, low);
        continue;
      }
      std::optional<Class> cls = classify(op);
      if (!cls) {
        op->emitOpError() << "has no precision rule (kiln-assign-precision knows kiln's ops)";
        return failure();
      }
      Class kind = *cls;
      if (kind == Class::Keep)
        continue;
      // The type each float operand is computed in.
      Type target;
      switch (kind) {
      case Class::Low:
        target = low;
        break;
      case Class::F32:
        target = f32;
        break;
      default: {
        // Follow: the non-constant float operands' common type (f32 when
        // they disagree); splat constants adapt to it.
        for (Value v : op->getOperands()) {
          if (!isFloatTensor(v) || isSplatConstant(v))
            continue;
          if (!target)
            target = elementOf(v);
          else if (target != elementOf(v))
            target = f32;
        }
        break;
      }
      }
      if (!target)
        continue; // no float operands
      for (OpOperand &operand : op->getOpOperands()) {
        Value v = operand.get();
        if (!isFloatTensor(v) || elementOf(v) == target)
          continue;
        operand.set(castTo(v, target));
      }
      // Result types follow the compute type, except the f32 statistics.
      for (OpResult r : op->getResults()) {
        if (!isFloatTensor(r))
          continue;
        Type want = target;
        if (isa<AttentionOp, AttentionQkvOp>(op) && r.getResultNumber() == 1)
          want = f32; // attention's log-sum-exp
        if (isa<LayerNormOp, RmsNormOp>(op) && r.getResultNumber() > 0)
          want = f32; // statistics
        r.setType(withElement(r.getType(), want));
      }
    }
    // The function keeps its declared result types.
    auto ret = cast<func::ReturnOp>(func.getBody().front().getTerminator());
    for (auto [i, declared] : llvm::enumerate(func.getResultTypes()))
      if (ret.getOperand(i).getType() != declared)
        ret.setOperand(i, castTo(ret.getOperand(i), cast<RankedTensorType>(declared).getElementType()));
    return mlir::verify(func);
  }

  llvm::DenseMap<std::pair<Value, Type>, Value> casts_;
};

} // namespace
} // namespace kiln
