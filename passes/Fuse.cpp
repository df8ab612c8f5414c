//===- Fuse.cpp - elementwise chains into kiln.fusion regions --------------===//
//
// Loop fusion over the finished training step: a chain of elementwise ops
// (casts included) over tensors of one shape becomes one kiln.fusion whose
// body is those ops, so codegen emits one kernel that reads the chain's
// inputs once and writes its result once, instead of one kernel per op with
// every intermediate through device memory.
//
// Grouping, in reverse program order: an elementwise op joins the group of
// one of its users when the group has its shape and every other user of
// the op comes after the group's last op; otherwise it starts a group. The
// fusion is placed at the group's last op and yields each member's value
// that is used outside (a value needed both in the chain and after it is
// a second result). Such groups are convex (no path leaves a group and
// comes back): the outside users all follow every member. Nothing is
// recomputed: every op runs exactly once, in a kernel that moves fewer
// bytes, so no cost model is needed to accept a group; the pass reports
// the bytes it keeps out of device memory.
//
// Splat constants are cloned into the bodies (literals in the kernel).
//
// GEMM epilogues come first (option `epilogues`): what cuBLASLt computes
// in a GEMM's epilogue becomes a kiln.fusion around the matmul, which
// codegen runs as one cuBLASLt call (matchGemmEpilogue says which bodies):
//   gelu tanh (matmul)                 forward MLP, the product kept for the
//                                      backward when it is used there
//   gelu_grad tanh (x, matmul)         backward MLP (its row sum, the
//                                      first linear layer's bias gradient,
//                                      joins the weight gradient's GEMM:
//                                      DGELU_BGRAD is slow in cuBLASLt)
//   matmul transpose_a + row sum of its rhs      a weight gradient and the
//                                      same layer's bias gradient (both
//                                      optionally widened to f32)
// and a norm's output cast folds into the norm (and a widening cast of a
// norm gradient's dy into the gradient). A loop fusion is placed at
// its last op, an epilogue at its GEMM when its inputs are ready there;
// the values used outside are its results, so this needs their other users
// after the last op. Then (option `fold-casts`) a bf16/f16
// product whose only user is a cast to f32 that no elementwise op reads
// (the cast would be a kernel of its own) produces f32 directly.
//
// Norm fusions (option `norms`): a layer or RMS norm ends a group the way
// an elementwise user does, so the chain computing its input (the residual
// add) fuses into it; a norm's gradient joins the group of the elementwise
// ops reading its dx (the residual gradient's add and cast) as its first
// op. Codegen runs each as one warp-per-row kernel holding the row in
// registers (isFusibleNorm says which rows fit).
//
// A norm gradient's fusion also takes a column sum of one of its values
// (a reduce_sum over all rows, and its widening to f32): the bias gradient
// of the projection the residual gradient flows into, which the kernel
// accumulates from registers instead of the weight gradient's GEMM
// summing it again (BGRADA is left out for such sums).
//
// Embedding gradients (option `embedding-init`): an add of an embedding
// gradient's table and another gradient of that table (a tied
// embedding's head) becomes the embedding gradient's `init`: its
// rows add into that value, in place when it dies there. Run before the
// cast fold, so the head's bf16 product widened for it writes f32 itself.
//
// Attention gradients (option `attention-bias`), before the epilogues: the
// column sum of an attention_qkv_grad's dqkv (the qkv projection's bias
// gradient) joins the gradient in an attention-gradient fusion, whose flash
// kernels sum dk's and dv's columns from the registers holding them and
// dq's as they convert it, instead of a reduction reading dqkv again.
//
// Siblings (option `siblings`): a group joins a later group of its shape
// reading one of the same values when the earlier group's other readers
// all come after the later one (mergeSiblings), so the value is read once.
//
// Broadcasts (option `broadcasts`): a broadcast_in_dim read by a loop
// fusion is cloned into its body over the broadcast's operand, which the
// kernel reads through the broadcast's index map, so the broadcast tensor
// is never written (a [T, C] position table added to [B, T, C]; the
// [T, T] causal mask selected into [B, H, T, T] scores when attention is
// not fused). One op reading a broadcast is enough for a fusion. The
// original stays while anything else reads it.
//
// Working copies (option `adamw-copies`), first: a parameter's cast to
// bf16/f16 becomes a state argument that its AdamW update writes beside the
// f32 master (kiln.copy_of; writeCopiesInAdamW), so no cast runs.
//
// Reductions (option `reductions`): a reduce_sum, reduce_max or
// reduce_mean of a float tensor ends a group the way a forward norm does:
// the elementwise ops computing its operand join it, and codegen runs the
// reduction's kernel reading each element through them (a reduction
// fusion; a value of the chain used after it is a side output). A
// reduction of a norm gradient's dx or of a value computed from it is left
// alone: those ops are the norm fusion's.
// (Recomputation is kiln-recompute's, before this pass: its clones are
// ordinary ops here.)
//
//===----------------------------------------------------------------------===//

#include "ir/KilnOps.h"
#include "passes/PassUtils.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/IR/SymbolTable.h"
#include "llvm/ADT/MapVector.h"
#include "llvm/ADT/SetVector.h"

#include <map>
#include <numeric>

namespace kiln {
#define GEN_PASS_DEF_FUSEPASS
#include "passes/Passes.h.inc"
} // namespace kiln

#define DEBUG_TYPE "kiln-fuse"

using namespace mlir;

namespace kiln {
namespace {

bool isSplatConstant(Value v) {
  auto c = v.getDefiningOp<ConstantOp>();
  return c && isa<SplatElementsAttr>(c.getValue());
}

/// An op a loop fusion can hold: elementwise over static, non-empty tensors.
bool isFusible(Operation *op) {
  if (!op->hasTrait<OpTrait::Elementwise>() || op->getNumResults() != 1)
    return false;
  auto t = dyn_cast<RankedTensorType>(op->getResult(0).getType());
  return t && t.hasStaticShape() && t.getNumElements() > 0;
}

/// A norm a norm fusion can hold (option `norms`): over the last dimension
/// of a static tensor of rank 2 or more, with rows of whole 16-byte words
/// in every float type (a multiple of 8) that fit a warp's registers (at
/// most 2048: the kernel keeps the row there between its passes).
bool isFusibleNorm(Operation *op) {
  if (!isNorm(op))
    return false;
  auto t = dyn_cast<RankedTensorType>(op->getResult(0).getType());
  if (!t || !t.hasStaticShape() || t.getRank() < 2 || t.getNumElements() == 0)
    return false;
  int64_t c = t.getShape().back();
  return c % 8 == 0 && c <= 2048;
}

bool isBackwardNorm(Operation *op) { return isa<LayerNormGradOp, RmsNormGradOp>(op); }

/// Whether `v` is a fusible norm gradient's dx or computed from one by at
/// most four elementwise ops of its shape (the residual gradient's add and
/// cast): the ops a norm fusion takes with the gradient.
bool readsNormGradient(Value v, int depth = 0) {
  Operation *def = v.getDefiningOp();
  if (!def || depth > 4)
    return false;
  if (isBackwardNorm(def))
    return isFusibleNorm(def) && v == def->getResult(0);
  return isFusible(def) && def->getResult(0).getType() == v.getType() &&
         llvm::any_of(def->getOperands(), [&](Value o) {
           auto t = dyn_cast<RankedTensorType>(o.getType());
           return t && t.getShape() == cast<RankedTensorType>(v.getType()).getShape() &&
                  readsNormGradient(o, depth + 1);
         });
}

/// A reduction a loop fusion can end in (option `reductions`): a
/// reduce_sum, reduce_max or reduce_mean of a static, non-empty float
/// tensor. One of a norm gradient's dx, or of a value computed from it, is
/// left alone: the elementwise ops after the gradient are the norm
/// fusion's (and a sum over every row its column sum). GPT-2's position
/// embedding gradient, the first block's residual gradient summed over the
/// batch, is one.
bool isFusibleReduction(Operation *op, bool norms) {
  if (!isReduction(op))
    return false;
  auto t = dyn_cast<RankedTensorType>(op->getOperand(0).getType());
  if (!t || !t.hasStaticShape() || t.getNumElements() == 0 || !isa<FloatType>(t.getElementType()))
    return false;
  return !(norms && readsNormGradient(op->getOperand(0)));
}

/// A broadcast a loop fusion can read through its index map (option
/// `broadcasts`): static shapes, the operand's not the result's (so the
/// operand cannot also be read directly by an op of the fusion's shape), an
/// operand that is not a splat constant (that one is a literal already).
BroadcastInDimOp readableBroadcast(Value v) {
  auto b = v.getDefiningOp<BroadcastInDimOp>();
  if (!b || isSplatConstant(b.getOperand()))
    return {};
  auto in = cast<RankedTensorType>(b.getOperand().getType());
  auto out = cast<RankedTensorType>(b.getType());
  bool fits = in.hasStaticShape() && out.hasStaticShape() && in.getShape() != out.getShape();
  return fits ? b : BroadcastInDimOp();
}

/// A matmul cuBLASLt can run with an epilogue: one GEMM (rank 2, or a
/// shared rank-2 rhs without transpose_a), one float element type it
/// supports, and columns a multiple of 8 (the aux matrix's leading
/// dimension and the vectors' alignment).
bool epilogueFits(MatmulOp mm) {
  auto a = cast<RankedTensorType>(mm.getLhs().getType());
  auto c = cast<RankedTensorType>(mm.getType());
  Type t = c.getElementType();
  bool single = c.getRank() == 2 ||
                (cast<RankedTensorType>(mm.getRhs().getType()).getRank() == 2 && !mm.getTransposeA());
  return single && a.getElementType() == t && (t.isF32() || t.isBF16() || t.isF16()) &&
         c.getShape().back() % 8 == 0 && c.hasStaticShape();
}

struct FusePass final : impl::FusePassBase<FusePass> {
  using Base::Base;

  void runOnOperation() override {
    // First, as it rewrites casts in other functions too (gradient
    // accumulation's @accumulate_step for @apply_step's updates).
    if (adamwCopies)
      for (auto func : getOperation().getOps<func::FuncOp>())
        if (func.getBody().hasOneBlock())
          writeCopiesInAdamW(func);
    for (auto func : getOperation().getOps<func::FuncOp>()) {
      if (!func.getBody().hasOneBlock())
        continue;
      if (attentionBias)
        fuseAttentionBiasGrads(func.getBody().front());
      if (epilogues)
        formEpilogues(func.getBody().front());
      if (embeddingInit)
        accumulateEmbeddingGrads(func.getBody().front());
      if (foldCasts)
        foldWideningCasts(func.getBody().front());
      if (crossEntropy)
        fuseCrossEntropies(func.getBody().front());
      fuseBlock(func.getBody().front());
    }
  }

  /// Whether `ops` may become one fusion at the last of them: every
  /// outside user of their values comes after it, and each of `results`
  /// (the values an epilogue must yield) is used outside (a dead one would
  /// not be yielded).
  static bool canFuse(ArrayRef<Operation *> ops, ArrayRef<Value> results) {
    Operation *last = *llvm::max_element(
        ops, [](Operation *a, Operation *b) { return a->isBeforeInBlock(b); });
    llvm::SmallPtrSet<Operation *, 4> members(ops.begin(), ops.end());
    auto outside = [&](Operation *user) { return !members.contains(user); };
    for (Operation *op : ops)
      for (Operation *user : op->getUsers())
        if (outside(user) && !last->isBeforeInBlock(user))
          return false;
    return llvm::all_of(results, [&](Value v) { return llvm::any_of(v.getUsers(), outside); });
  }

  /// Fuses `ops` (in any order) into a GEMM epilogue yielding `results`
  /// (and whatever else is used outside) if canFuse; returns whether it did.
  bool tryEpilogue(SmallVector<Operation *> ops, ArrayRef<Value> results) {
    if (!canFuse(ops, results))
      return false;
    llvm::sort(ops, [](Operation *a, Operation *b) { return a->isBeforeInBlock(b); });
    FusionOp fusion = buildFusion(ops, /*loop=*/false);
    assert(fusion && succeeded(matchGemmEpilogue(fusion)) && "kiln-fuse built a bad epilogue");
    (void)fusion;
    return true;
  }

  void formEpilogues(Block &block) {
    SmallVector<GeluOp> gelus;
    SmallVector<GeluGradOp> geluGrads;
    SmallVector<ReduceSumOp> sums;
    for (Operation &op : block) {
      if (auto g = dyn_cast<GeluOp>(op))
        gelus.push_back(g);
      else if (auto g = dyn_cast<GeluGradOp>(op))
        geluGrads.push_back(g);
      else if (auto r = dyn_cast<ReduceSumOp>(op))
        sums.push_back(r);
    }
    auto tanh = [](auto op) { return op.getApproximate() == GeluApproximation::tanh; };

    // gelu(matmul [+ bias]); the product stays a result when the backward
    // (or anything else) uses it.
    for (GeluOp gelu : gelus) {
      auto mm = gelu.getOperand().getDefiningOp<MatmulOp>();
      if (!tanh(gelu) || !mm || !epilogueFits(mm) || mm->getBlock() != &block)
        continue;
      if (tryEpilogue({mm, gelu}, {gelu.getResult()})) {
        ++numEpilogues;
        ++numGelu;
      }
    }
    // gelu_grad(x, matmul). Its bias gradient (a row sum of it) is left to
    // the weight gradient's GEMM (BGRADA, below) or to a reduction kernel:
    // cuBLASLt's DGELU_BGRAD, which would sum it here, ran GPT-2's twelve
    // [16384, 3072] gelu_grad GEMMs in 5.38 ms on the H200 against 2.02 ms
    // for DGELU, where BGRADA costs 0.51 ms over the plain weight-gradient
    // GEMMs (bench/RESULTS.md, 2026-12-04).
    for (GeluGradOp grad : geluGrads) {
      auto mm = grad.getDy().getDefiningOp<MatmulOp>();
      if (!tanh(grad) || !mm || !epilogueFits(mm) || mm.getBias() || !mm->hasOneUse() ||
          mm->getBlock() != &block)
        continue;
      if (tryEpilogue({mm, grad}, {grad.getResult()})) {
        ++numEpilogues;
        ++numGeluGrad;
      }
    }
    // A weight gradient's matmul transpose_a and the row sum of its rhs
    // (the same layer's bias gradient).
    for (ReduceSumOp sum : sums) {
      if (!biasGradEpilogues || !sumsOverRows(sum) || sum->getBlock() != &block)
        continue;
      // A sum of a norm gradient's residual output is left to the norm
      // fusion (fuseBlock): its kernel has the rows in registers, where
      // BGRADA costs GPT-2's [16384, 768] weight gradients ~20 us each
      // (they lose split-K: bench/RESULTS.md, 2026-12-04).
      if (norms && readsNormGradient(sum.getOperand()))
        continue;
      Value dy = sum.getOperand();
      int64_t n = cast<RankedTensorType>(dy.getType()).getShape().back();
      auto weightGrad = [&](Value rhs) -> MatmulOp {
        for (Operation *user : rhs.getUsers()) {
          auto mm = dyn_cast<MatmulOp>(user);
          if (mm && mm.getRhs() == rhs && mm.getTransposeA() && !mm.getTransposeB() &&
              !mm.getBias() && mm->getBlock() == &block && epilogueFits(mm) &&
              cast<RankedTensorType>(mm.getType()).getElementType() ==
                  cast<RankedTensorType>(sum.getType()).getElementType())
            return mm;
        }
        return {};
      };
      MatmulOp mm;
      ReshapeOp reshape;
      if (cast<RankedTensorType>(dy.getType()).getRank() == 2)
        mm = weightGrad(dy);
      // The weight gradient reads dy reshaped to [rows, N] — or, when dy is
      // itself a reshape of some s (a head-major qkv gradient
      // [B, T, H, 3, D] viewed as [B, T, 3C] for the sum and as [B·T, 3C]
      // for the product), s reshaped to [rows, N]: the same matrix.
      auto viewsOf = [&](Value v) {
        SmallVector<ReshapeOp> views;
        for (Operation *user : v.getUsers())
          if (auto r = dyn_cast<ReshapeOp>(user);
              r && r.getResult() != dy && cast<RankedTensorType>(r.getType()).getRank() == 2 &&
              cast<RankedTensorType>(r.getType()).getShape().back() == n)
            views.push_back(r);
        return views;
      };
      SmallVector<ReshapeOp> views = viewsOf(dy);
      if (auto source = dy.getDefiningOp<ReshapeOp>())
        views.append(viewsOf(source.getOperand()));
      for (ReshapeOp r : views) {
        if (mm)
          break;
        if ((mm = weightGrad(r.getResult())))
          reshape = r;
      }
      if (!mm)
        continue;
      SmallVector<Operation *> ops{mm, sum};
      SmallVector<Value> results{mm.getResult(), sum.getResult()};
      // Both gradients widened to f32 (for the optimizer): cuBLASLt writes
      // them in f32 directly.
      auto widening = [](Value v) -> CastOp {
        auto c = v.hasOneUse() ? dyn_cast<CastOp>(*v.getUsers().begin()) : CastOp();
        return c && widensToF32(c) ? c : CastOp();
      };
      if (CastOp wideW = widening(mm.getResult()), wideB = widening(sum.getResult()); wideW && wideB) {
        ops.append({wideW, wideB});
        results = {wideW.getResult(), wideB.getResult()};
      }
      // (A private copy of the reshape, made below, has only mm as user.)
      bool own = reshape && reshape->hasOneUse() && reshape.getOperand() == dy;
      if (!canFuse(own ? SmallVector<Operation *>{mm, sum, reshape} : ops, results))
        continue;
      if (reshape) {
        // The body reshapes its own copy of dy when the reshape has other
        // users or reshapes dy's source.
        if (!own) {
          OpBuilder b(mm);
          auto copy = ReshapeOp::create(b, reshape.getLoc(), reshape.getType(), dy);
          mm.getRhsMutable().assign(copy.getResult());
          reshape = copy;
        }
        ops.push_back(reshape);
      }
      if (tryEpilogue(ops, results)) {
        ++numEpilogues;
        ++numBiasGrads;
      }
    }
    // A norm's f32 output read only by a cast to bf16/f16: the norm writes
    // the narrow type itself (the same rounding of the same f32 value, so
    // this changes no result). (Collected now: the epilogues above took
    // some casts into their bodies.)
    SmallVector<CastOp> casts(block.getOps<CastOp>());
    for (CastOp c : casts) {
      Operation *norm = c.getOperand().getDefiningOp();
      if (!isa_and_nonnull<LayerNormOp, RmsNormOp>(norm) || c.getOperand() != norm->getResult(0) ||
          !c.getOperand().hasOneUse() || norm->getBlock() != &block)
        continue;
      auto from = cast<RankedTensorType>(c.getOperand().getType());
      auto to = cast<RankedTensorType>(c.getType());
      if (!from.getElementType().isF32() || !(to.getElementType().isBF16() || to.getElementType().isF16()))
        continue;
      norm->getResult(0).setType(to);
      c.getResult().replaceAllUsesWith(norm->getResult(0));
      c->erase();
      ++numNormCasts;
    }
    // A widening cast (bf16/f16 to f32) read only as a norm gradient's dy
    // (the VJP of a norm writing bf16 widens its cotangent back): the
    // gradient reads the narrow value and widens it as it loads (exact,
    // so no result changes), and the product before it stays narrow —
    // instead of a GEMM writing f32 that the norm's gradient reads again
    // (GPT-2: 25 [B·T, 768] tensors, half their bytes written and read).
    SmallVector<CastOp> widenings(block.getOps<CastOp>());
    for (CastOp c : widenings) {
      if (!c->hasOneUse() || !widensToF32(c))
        continue;
      Operation *grad = *c->getUsers().begin();
      OpOperand *dy = nullptr;
      if (auto g = dyn_cast<LayerNormGradOp>(grad))
        dy = &g.getDyMutable();
      else if (auto g = dyn_cast<RmsNormGradOp>(grad))
        dy = &g.getDyMutable();
      if (!dy || dy->get() != c.getResult() || grad->getBlock() != &block)
        continue;
      dy->set(c.getOperand());
      c->erase();
      ++numNormGradCasts;
    }
  }

  /// AdamW writes the working copies (option `adamw-copies`). A parameter
  /// argument that is cast to one narrower float type (bf16/f16 under the
  /// mixed policies) and updated by a kiln.adamw_update the function returns
  /// in place of it: the casts become a new state argument, the copy
  /// (kiln.copy_of the parameter, which the runtime derives whenever the
  /// parameter is set), and the update yields the new parameter converted as
  /// a fourth result that the function returns in place of the copy. The
  /// step then reads what the previous step's update wrote: one pass over
  /// the parameter instead of two, the same bits as the cast.
  ///
  /// With gradient accumulation the updates are in @apply_step and the
  /// casts in @accumulate_step, which runs K times a step: the copy is then
  /// a state of both, read by @accumulate_step (the runtime shares states
  /// by name) and written by @apply_step's update.
  ///
  /// On a mesh the copy is split as its parameter (kiln.sharding): each
  /// rank's update writes its part, and the step reads it where it cast the
  /// part — a replicated or tensor-parallel parameter whole, a ZeRO-3
  /// parameter before its gather, which then gathers bf16 as before. Under
  /// ZeRO 1 and 2 the update reads a shard taken from the whole parameter
  /// (kiln.take_shard) and its result is gathered; a copy there would need a
  /// second gather (of the copy, beside the f32 parameter's), more bytes
  /// than the cast it saves, so those parameters keep their casts. Not
  /// across pipeline stages (kiln.pipeline): planned.
  void writeCopiesInAdamW(func::FuncOp func) {
    if (getOperation()->hasAttr("kiln.pipeline"))
      return;
    Block &block = func.getBody().front();
    auto ret = dyn_cast<func::ReturnOp>(block.getTerminator());
    if (!ret)
      return;
    // The updates the function returns in place of their parameters, in
    // argument order.
    std::map<unsigned, AdamWUpdateOp> updates;
    for (unsigned r = 0; r < ret.getNumOperands(); ++r) {
      auto alias = func.getResultAttrOfType<IntegerAttr>(r, KilnDialect::kAliasesAttrName);
      auto update = ret.getOperand(r).getDefiningOp<AdamWUpdateOp>();
      if (!alias || !update || update.getNewParam() != ret.getOperand(r) || update.getNewCopy())
        continue;
      auto param = dyn_cast<BlockArgument>(update.getParam());
      if (param && param.getOwner() == &block && param.getArgNumber() == alias.getInt() &&
          func.getArgAttr(param.getArgNumber(), KilnDialect::kParamAttrName))
        updates[param.getArgNumber()] = update;
    }
    // Each parameter's casts (all to one narrower float type, none
    // returned, read only before the last update: the one AdamW launch
    // there writes the copy over its state), found before any argument
    // moves.
    Operation *lastUpdate = nullptr;
    for (AdamWUpdateOp update : block.getOps<AdamWUpdateOp>())
      lastUpdate = update;
    struct Copy {
      AdamWUpdateOp update;
      SmallVector<CastOp> casts;
      RankedTensorType type;
      StringRef param;                 ///< the parameter's name
      /// its casts in each of `readers`
      SmallVector<SmallVector<CastOp>> readerCasts;
    };
    // The functions whose casts of the same parameters the copies replace
    // too: @accumulate_step (and on data-parallel ranks
    // @accumulate_last_step) for @apply_step (they run wholly before it).
    SmallVector<func::FuncOp> readers;
    if (func.getSymName() == "apply_step")
      for (StringRef name : {"accumulate_step", "accumulate_last_step"})
        if (auto reader = SymbolTable::lookupNearestSymbolFrom<func::FuncOp>(
                func, StringAttr::get(func.getContext(), name));
            reader && reader.getBody().hasOneBlock())
          readers.push_back(reader);
    SmallVector<Copy> copies;
    for (auto [index, update] : updates) {
      BlockArgument param = func.getArgument(index);
      Copy copy{update, {}, {}, {}, SmallVector<SmallVector<CastOp>>(readers.size())};
      copy.param = func.getArgAttrOfType<StringAttr>(index, KilnDialect::kParamAttrName).getValue();
      bool ok = true;
      // `param`'s casts, all to one narrower type, none returned; in this
      // function none read at or after the last update.
      auto collect = [&](Value value, Block &in, bool here, SmallVector<CastOp> &casts) {
        for (Operation *user : value.getUsers()) {
          auto c = dyn_cast<CastOp>(user);
          if (!c)
            continue;
          auto to = cast<RankedTensorType>(c.getType());
          Type from = cast<RankedTensorType>(value.getType()).getElementType();
          bool narrower =
              (to.getElementType().isBF16() || to.getElementType().isF16()) && from.isF32();
          bool returned =
              llvm::any_of(c->getUsers(), [](Operation *u) { return isa<func::ReturnOp>(u); });
          bool late = here && llvm::any_of(c->getUsers(), [&](Operation *u) {
                        Operation *at = in.findAncestorOpInBlock(*u);
                        return !at || !at->isBeforeInBlock(lastUpdate);
                      });
          if (!narrower || returned || late || (copy.type && copy.type != to)) {
            ok = false;
            return;
          }
          copy.type = to;
          casts.push_back(c);
        }
      };
      collect(param, block, true, copy.casts);
      for (auto [reader, readerCasts] : llvm::zip_equal(readers, copy.readerCasts)) {
        Block &readerBlock = reader.getBody().front();
        for (BlockArgument arg : readerBlock.getArguments())
          if (reader.getArgAttr(arg.getArgNumber(), KilnDialect::kParamAttrName) ==
                  func.getArgAttr(index, KilnDialect::kParamAttrName) &&
              arg.getType() == param.getType() &&
              reader.getArgAttr(arg.getArgNumber(), KilnDialect::kShardingAttrName) ==
                  func.getArgAttr(index, KilnDialect::kShardingAttrName)) {
            // Not where @accumulate_step returns the parameter or a result
            // in its place (it would change it, and the copy with it).
            bool aliased = false;
            for (unsigned r = 0; r < reader.getNumResults(); ++r)
              if (auto alias =
                      reader.getResultAttrOfType<IntegerAttr>(r, KilnDialect::kAliasesAttrName))
                aliased |= alias.getInt() == arg.getArgNumber();
            if (aliased ||
                llvm::any_of(arg.getUsers(), [](Operation *u) { return isa<func::ReturnOp>(u); }))
              ok = false;
            else
              collect(arg, readerBlock, false, readerCasts);
          }
      }
      if (!ok ||
          (copy.casts.empty() && llvm::all_of(copy.readerCasts, [](auto &c) { return c.empty(); })))
        continue;
      copies.push_back(std::move(copy));
    }
    if (copies.empty())
      return;
    OpBuilder b(func.getContext());
    for (Copy &copy : copies) {
      std::string name =
          (copy.param + (copy.type.getElementType().isBF16() ? ".bf16" : ".f16")).str();
      SmallVector<NamedAttribute> named{
          b.getNamedAttr(KilnDialect::kStateAttrName, b.getStringAttr(name)),
          b.getNamedAttr(KilnDialect::kCopyOfAttrName, b.getStringAttr(copy.param))};
      // Split as its parameter (the update's operand) where the function
      // is partitioned; elsewhere a parameter's kiln.sharding is the model's
      // annotation, which the copy does not repeat.
      Attribute sharding =
          func->hasAttr(KilnDialect::kPartitionedAttrName)
              ? func.getArgAttr(cast<BlockArgument>(copy.update.getParam()).getArgNumber(),
                                KilnDialect::kShardingAttrName)
              : Attribute();
      if (sharding)
        named.push_back(b.getNamedAttr(KilnDialect::kShardingAttrName, sharding));
      auto attrs = b.getDictionaryAttr(named);
      // The copy as a state argument of `f`, read where `casts` were.
      auto readCopy = [&](func::FuncOp f, ArrayRef<CastOp> casts) {
        BlockArgument arg = insertStateArgument(f, copy.type, attrs, copy.update.getLoc());
        for (CastOp c : arg ? casts : ArrayRef<CastOp>()) {
          c.getResult().replaceAllUsesWith(arg);
          c->erase();
        }
        return arg;
      };
      BlockArgument state = readCopy(func, copy.casts);
      if (!state)
        return signalPassFailure();
      // A state of the readers too (read only: no result aliases it).
      for (auto [reader, readerCasts] : llvm::zip_equal(readers, copy.readerCasts))
        if (!readerCasts.empty() && !readCopy(reader, readerCasts))
          return signalPassFailure();
      // The update again, with the copy as its fourth result.
      AdamWUpdateOp old = copy.update;
      b.setInsertionPoint(old);
      SmallVector<Type> types(old->getResultTypes());
      types.push_back(copy.type);
      auto update =
          AdamWUpdateOp::create(b, old.getLoc(), types, old->getOperands(), old->getAttrs());
      for (unsigned r = 0; r < old->getNumResults(); ++r)
        old->getResult(r).replaceAllUsesWith(update->getResult(r));
      old->erase();
      unsigned result = func.getNumResults();
      SmallVector<NamedAttribute> resultAttrs{
          b.getNamedAttr(KilnDialect::kAliasesAttrName, b.getI64IntegerAttr(state.getArgNumber()))};
      if (sharding)
        resultAttrs.push_back(b.getNamedAttr(KilnDialect::kShardingAttrName, sharding));
      if (failed(func.insertResult(result, copy.type, b.getDictionaryAttr(resultAttrs))))
        return signalPassFailure();
      ret->insertOperands(result, update.getNewCopy());
      ++numAdamWCopies;
    }
  }

  /// An add of an embedding gradient's table, its only reader, and another
  /// value of its type (GPT-2's tied wte: the head's weight gradient,
  /// widened to f32): the gradient, moved to the add, adds its rows into
  /// that value (`init`; in place when it dies there), so the table is not
  /// zeroed, and not written and read again by the add. The interpreter
  /// adds init after the rows, as the add did (no result changes).
  void accumulateEmbeddingGrads(Block &block) {
    SmallVector<EmbeddingGradOp> grads(block.getOps<EmbeddingGradOp>());
    for (EmbeddingGradOp grad : grads) {
      if (grad.getInit() || !grad->hasOneUse())
        continue;
      auto add = dyn_cast<AddOp>(*grad->getUsers().begin());
      if (!add || add->getBlock() != &block || add.getLhs() == add.getRhs())
        continue;
      Value other = add.getLhs() == grad.getResult() ? add.getRhs() : add.getLhs();
      if (other.getType() != grad.getType())
        continue;
      // At the add: the other value (the head's gradient, widened) may be
      // made after the embedding gradient. A widening cast read only here
      // goes too: the gradient widens its init as it copies it, so the
      // product stays bf16 until the end of the backward (in f32 it would
      // add its width to the step's peak, +140 MB in GPT-2's bf16 step).
      auto widen = other.getDefiningOp<CastOp>();
      bool narrow = widen && widensToF32(widen) && widen->hasOneUse();
      OpBuilder b(add);
      auto fused = EmbeddingGradOp::create(b, grad.getLoc(), grad.getType(), grad.getIds(),
                                           grad.getDy(), narrow ? widen.getOperand() : other);
      add.getResult().replaceAllUsesWith(fused.getResult());
      add->erase();
      grad->erase();
      if (narrow)
        widen->erase();
      ++numEmbeddingInits;
    }
  }

  /// A widening cast of a product that would be a kernel of its own: the
  /// GEMM writes f32.
  void foldWideningCasts(Block &block) {
    SmallVector<CastOp> casts(block.getOps<CastOp>());
    for (CastOp c : casts) {
      auto mm = c.getOperand().getDefiningOp<MatmulOp>();
      if (!mm || !mm->hasOneUse() || mm.getBias() || mm->getBlock() != &block)
        continue;
      auto out = cast<RankedTensorType>(c.getType());
      if (mm.getType().getElementType() != mm.getLhs().getType().getElementType() ||
          !widensToF32(c) ||
          llvm::any_of(c->getUsers(), [](Operation *user) { return isFusible(user); }))
        continue;
      OpBuilder b(mm);
      auto wide = MatmulOp::create(b, mm.getLoc(), out, mm.getLhs(), mm.getRhs(), Value(),
                                   mm.getTransposeAAttr(), mm.getTransposeBAttr());
      c.getResult().replaceAllUsesWith(wide.getResult());
      c->erase();
      mm->erase();
      ++numCastsFolded;
    }
  }

  /// Moves the ops computing `v` that come after `point` to just before
  /// it, when they are pure, region-free and read (transitively) only
  /// values defined before `point`: the loss's seed (under f16-mixed the
  /// loss scale times 1/N, broadcast) is made where autodiff starts the
  /// backward, after the forward, but depends on nothing computed there.
  /// Returns whether `v` is then defined before `point`.
  static bool hoistBefore(Value v, Operation *point) {
    SmallVector<Operation *> moves;
    llvm::SmallPtrSet<Operation *, 8> seen;
    SmallVector<Value> work{v};
    while (!work.empty()) {
      Operation *def = work.pop_back_val().getDefiningOp();
      if (!def || def->getBlock() != point->getBlock() || def->isBeforeInBlock(point))
        continue;
      if (def == point || !isPure(def) || def->getNumRegions() || moves.size() >= 8)
        return false;
      if (!seen.insert(def).second)
        continue;
      moves.push_back(def);
      llvm::append_range(work, def->getOperands());
    }
    llvm::sort(moves, [](Operation *a, Operation *b) { return a->isBeforeInBlock(b); });
    for (Operation *op : moves)
      op->moveBefore(point);
    return true;
  }

  /// Attention-gradient fusions (option `attention-bias`): the column sum
  /// of an attention_qkv_grad's dqkv (the qkv projection's bias gradient:
  /// a reduce_sum of dqkv reshaped to [.., 3·H·D] over every dimension but
  /// the last, or of dqkv over [B, T]) and its widening cast to f32 join
  /// the gradient, placed where the gradient was (the sum reads nothing
  /// else). The reshape stays outside for its other readers; a clone of
  /// it feeds the sum. Runs before the epilogues, so a weight gradient's
  /// BGRADA (bias-grad-epilogues) does not take the sum first.
  void fuseAttentionBiasGrads(Block &block) {
    SmallVector<AttentionQkvGradOp> grads(block.getOps<AttentionQkvGradOp>());
    for (AttentionQkvGradOp grad : grads) {
      Value dqkv = grad.getDqkv();
      auto type = cast<RankedTensorType>(dqkv.getType());
      if (!type.hasStaticShape() || type.getRank() != 5)
        continue;
      int64_t width = type.getDimSize(2) * type.getDimSize(3) * type.getDimSize(4);
      ReshapeOp reshape;
      ReduceSumOp sum;
      auto sumOf = [&](Value v) -> ReduceSumOp {
        for (Operation *user : v.getUsers())
          if (auto r = dyn_cast<ReduceSumOp>(user);
              r && r->getBlock() == &block && !r->use_empty() && !r.getDims().empty() &&
              r.getType().getElementType() == type.getElementType())
            return r;
        return {};
      };
      if (ReduceSumOp r = sumOf(dqkv); r && r.getDims() == ArrayRef<int64_t>{0, 1}) {
        sum = r;
      } else {
        for (Operation *user : dqkv.getUsers()) {
          auto rs = dyn_cast<ReshapeOp>(user);
          if (!rs || cast<RankedTensorType>(rs.getType()).getShape().back() != width)
            continue;
          if (ReduceSumOp r = sumOf(rs.getResult()); r && sumsOverRows(r)) {
            reshape = rs;
            sum = r;
            break;
          }
        }
      }
      if (!sum)
        continue;
      CastOp widen;
      if (sum->hasOneUse())
        if (auto c = dyn_cast<CastOp>(*sum->getUsers().begin()); c && widensToF32(c))
          widen = c;
      Value sumOut = widen ? widen.getResult() : sum.getResult();

      llvm::SetVector<Value> inputs(grad->getOperands().begin(), grad->getOperands().end());
      OpBuilder b(grad);
      IRMapping map;
      auto [fusion, inner] = emptyFusion(b, grad.getLoc(), {dqkv.getType(), sumOut.getType()},
                                         inputs.getArrayRef(), map);
      inner.clone(*grad, map);
      if (reshape)
        inner.clone(*reshape, map);
      inner.clone(*sum, map);
      if (widen)
        inner.clone(*widen, map);
      YieldOp::create(inner, grad.getLoc(), ValueRange{map.lookup(dqkv), map.lookup(sumOut)});
      sumOut.replaceAllUsesWith(fusion.getResult(1));
      if (widen)
        widen->erase();
      sum->erase();
      if (reshape && reshape->use_empty())
        reshape->erase();
      dqkv.replaceAllUsesWith(fusion.getResult(0));
      grad->erase();
      assert(succeeded(matchAttentionGradFusion(fusion)) &&
             "kiln-fuse built a bad attention-gradient fusion");
      ++numAttentionBiasSums;
    }
  }

  /// A cross_entropy and its gradient over the same logits and targets,
  /// the gradient's dloss computable before the forward (the loss's seed;
  /// hoistBefore), every class row whole 16-byte words: one fusion where
  /// the forward was (its loss is read before the gradient; everything the
  /// gradient's users read comes later).
  void fuseCrossEntropies(Block &block) {
    SmallVector<CrossEntropyGradOp> grads(block.getOps<CrossEntropyGradOp>());
    for (CrossEntropyGradOp grad : grads) {
      auto forward = grad.getLse().getDefiningOp<CrossEntropyOp>();
      if (!forward || forward->getBlock() != &block || forward.getLogits() != grad.getLogits() ||
          forward.getTargets() != grad.getTargets() ||
          forward.getValidClassesAttr() != grad.getValidClassesAttr() ||
          forward.getLoss().use_empty())
        continue;
      auto logits = cast<RankedTensorType>(grad.getLogits().getType());
      if (!logits.hasStaticShape() || logits.getRank() < 1 || logits.getShape().back() % 8 != 0)
        continue;
      if (!hoistBefore(grad.getDloss(), forward))
        continue;
      FusionOp fusion = buildFusion({forward, grad}, /*loop=*/false, /*at=*/forward);
      assert(fusion && succeeded(matchCrossEntropyFusion(fusion)) &&
             "kiln-fuse built a bad cross-entropy fusion");
      (void)fusion;
      ++numCrossEntropyFusions;
    }
  }

  void fuseBlock(Block &block) {
    llvm::DenseMap<Operation *, int64_t> index;
    for (Operation &op : block)
      index[&op] = static_cast<int64_t>(index.size());
    // Groups as lists of ops, built last op first: front() is the last op.
    llvm::DenseMap<Operation *, unsigned> groupOf;
    std::vector<SmallVector<Operation *>> groups;
    // The norm of each group that has one (a norm fusion), and the
    // reduction of each that ends in one (a reduction fusion).
    llvm::DenseMap<unsigned, Operation *> normOf, reduceOf;
    auto shapeOf = [](Operation *op) {
      return cast<RankedTensorType>(op->getResult(0).getType()).getShape();
    };
    // The shape of a group's loop: a reduction's operand's.
    auto loopShapeOf = [&](unsigned g) {
      if (Operation *r = reduceOf.lookup(g))
        return cast<RankedTensorType>(r->getOperand(0).getType()).getShape();
      return shapeOf(groups[g].front());
    };
    for (Operation &op : llvm::reverse(block)) {
      // A reduction ends a group: the elementwise ops computing its
      // operand join it as they would a user of their shape.
      if (reductions && !op.use_empty() && isFusibleReduction(&op, norms)) {
        reduceOf[groups.size()] = &op;
        groupOf[&op] = groups.size();
        groups.push_back({&op});
        continue;
      }
      // (A norm fusion yields the norm's output, or its gradient's weight
      // and bias gradients: a norm with those dead stays unfused.)
      bool norm = norms && isFusibleNorm(&op) &&
                  (isBackwardNorm(&op) ? llvm::none_of(op.getResults().drop_front(),
                                                       [](Value v) { return v.use_empty(); })
                                       : !op.getResult(0).use_empty());
      if (!isFusible(&op) && !norm)
        continue;
      // A norm ends a norm fusion: the elementwise ops computing its input
      // join it as the ops before it did (its results' users are not
      // fused with it: they start their own groups).
      if (norm && !isBackwardNorm(&op)) {
        normOf[groups.size()] = &op;
        groupOf[&op] = groups.size();
        groups.push_back({&op});
        continue;
      }
      // Join the group of one of the users when every other user comes
      // after that group's last op: the fusion is placed there, so those
      // users still follow it (and, being later, cannot lead back into
      // it). A value with such users becomes another result. A norm's
      // gradient joins the group of its dx's elementwise readers as its
      // first op; nothing joins a group before such a norm.
      std::optional<unsigned> joined;
      for (Operation *user : op.getResult(0).getUsers()) {
        auto it = groupOf.find(user);
        if (it == groupOf.end() || (joined && *joined == it->second))
          continue;
        unsigned g = it->second;
        if (loopShapeOf(g) != shapeOf(&op))
          continue;
        if (Operation *n = normOf.lookup(g); n && (norm || isBackwardNorm(n)))
          continue;
        if (norm && reduceOf.count(g))
          continue;
        int64_t last = index[groups[g].front()];
        bool othersAfter = llvm::all_of(op.getUsers(), [&](Operation *other) {
          auto o = groupOf.find(other);
          return (o != groupOf.end() && o->second == g) || index[other] > last;
        });
        if (othersAfter) {
          joined = g;
          break;
        }
      }
      if (joined) {
        groups[*joined].push_back(&op);
        groupOf[&op] = *joined;
        if (norm)
          normOf[*joined] = &op;
        continue;
      }
      // A norm's gradient no elementwise op reads stays unfused, unless a
      // column sum of its dx can join it (columnSumOf, below).
      if (norm) {
        if (columnSumFits(&op) && columnSumOf({&op})) {
          normOf[groups.size()] = &op;
          groupOf[&op] = groups.size();
          groups.push_back({&op});
        }
        continue;
      }
      groupOf[&op] = groups.size();
      groups.push_back({&op});
    }
    if (siblings) {
      // (Neither a norm's group nor a reduction's takes a sibling.)
      llvm::DenseMap<unsigned, Operation *> pinned = normOf;
      pinned.insert(reduceOf.begin(), reduceOf.end());
      mergeSiblings(groups, groupOf, pinned, index);
    }
    auto readsBroadcast = [&](ArrayRef<Operation *> group) {
      return broadcasts && llvm::any_of(group, [](Operation *op) {
               return llvm::any_of(op->getOperands(), [](Value v) { return readableBroadcast(v); });
             });
    };
    for (auto [g, group] : llvm::enumerate(groups)) {
      // (One op reading a broadcast fuses with it: its kernel reads the
      // broadcast's operand, and the broadcast is not written.)
      if (group.empty())
        continue;
      llvm::sort(group, [&](Operation *a, Operation *b) { return index[a] < index[b]; });
      // A norm gradient's fusion takes a column sum of one of its values
      // (and the sum's widening to f32) and stays where its last op was:
      // the sum reads nothing else, and its readers come later.
      std::optional<SmallVector<Operation *, 2>> sum;
      if (Operation *n = normOf.lookup(g); n && isBackwardNorm(n) && columnSumFits(n))
        sum = columnSumOf(group);
      if (group.size() < 2 && !sum &&
          (normOf.count(g) || reduceOf.count(g) || !readsBroadcast(group)))
        continue;
      Operation *at = nullptr;
      if (sum) {
        at = group.back();
        group.append(sum->begin(), sum->end());
        ++numColumnSums;
      }
      // (Named for the norm's gradient, not the sum's cast; `at` is one of
      // the ops buildFusion erases, so its location is taken first.)
      std::optional<Location> atLoc;
      if (at)
        atLoc = at->getLoc();
      FusionOp fusion = buildFusion(group, /*loop=*/true, at);
      if (fusion && atLoc)
        fusion->setLoc(*atLoc);
      if (fusion && normOf.count(g)) {
        assert(succeeded(matchNormFusion(fusion)) && "kiln-fuse built a bad norm fusion");
        ++numNormFusions;
      }
      if (fusion && reduceOf.count(g)) {
        assert(succeeded(matchReductionFusion(fusion)) &&
               "kiln-fuse built a bad reduction fusion");
        ++numReductionFusions;
      }
    }
  }

  /// Whether the kernel of norm gradient `norm`'s fusion can accumulate a
  /// column sum: its parts (dweight, dbias, the sum), 8 warps' rows of C in
  /// f32 (f64 for f64 x) each, within 96 KiB of shared memory (what every
  /// GPU from sm_80 on gives a block: C ≤ 1024 for a layer norm in f32).
  static bool columnSumFits(Operation *norm) {
    auto x = cast<RankedTensorType>(norm->getOperand(0).getType());
    int64_t parts = isa<LayerNormGradOp>(norm) ? 3 : 2;
    int64_t bytes = x.getElementType().isF64() ? 8 : 4;
    return parts * 8 * x.getShape().back() * bytes <= 96 * 1024;
  }

  /// A reduce_sum of a value of `group` (a norm gradient's) over every
  /// dimension but the last, and its widening cast to f32 when that is its
  /// only reader: the ops a norm fusion adds (at most one sum).
  static std::optional<SmallVector<Operation *, 2>> columnSumOf(ArrayRef<Operation *> group) {
    for (Operation *op : group)
      for (Operation *user : op->getResult(0).getUsers()) {
        auto sum = dyn_cast<ReduceSumOp>(user);
        if (!sum || sum->getBlock() != op->getBlock() || !sumsOverRows(sum) ||
            !isa<FloatType>(cast<RankedTensorType>(sum.getType()).getElementType()) ||
            sum->use_empty())
          continue;
        SmallVector<Operation *, 2> ops{sum};
        if (sum->hasOneUse())
          if (auto c = dyn_cast<CastOp>(*sum->getUsers().begin()); c && widensToF32(c))
            ops.push_back(c);
        return ops;
      }
    return std::nullopt;
  }

  /// Sibling fusion (option `siblings`): a group joins a later group of its
  /// shape that reads one of the same values (neither with a norm), when
  /// every outside reader of its values comes after the later group's last
  /// op (where the merged fusion is placed: no path leaves the merged group
  /// and comes back). The shared values are then read once: SwiGLU's
  /// backward computes du = dh·silu(g) and dg = dh·u·silu'(g) from the same
  /// dh, one kernel instead of two. Groups are in `groups` (any order of
  /// their ops); a merged one is emptied.
  void mergeSiblings(std::vector<SmallVector<Operation *>> &groups,
                     llvm::DenseMap<Operation *, unsigned> &groupOf,
                     const llvm::DenseMap<unsigned, Operation *> &normOf,
                     llvm::DenseMap<Operation *, int64_t> &index) {
    auto lastOf = [&](unsigned g) {
      int64_t last = -1;
      for (Operation *op : groups[g])
        last = std::max(last, index[op]);
      return last;
    };
    auto shapeOf = [&](unsigned g) {
      return cast<RankedTensorType>(groups[g].front()->getResult(0).getType()).getShape();
    };
    // The groups reading each value from outside (splat constants aside:
    // they are literals), in the order the groups were made.
    llvm::MapVector<Value, SmallVector<unsigned>> readers;
    auto addReaders = [&](unsigned g) {
      for (Operation *op : groups[g])
        for (Value v : op->getOperands()) {
          Operation *def = v.getDefiningOp();
          auto it = def ? groupOf.find(def) : groupOf.end();
          if ((it != groupOf.end() && it->second == g) || isSplatConstant(v))
            continue;
          auto &list = readers[v];
          if (!llvm::is_contained(list, g))
            list.push_back(g);
        }
    };
    for (unsigned g = 0; g < groups.size(); ++g)
      addReaders(g);
    SmallVector<unsigned> order(groups.size());
    std::iota(order.begin(), order.end(), 0u);
    llvm::sort(order, [&](unsigned a, unsigned b) { return lastOf(a) < lastOf(b); });
    for (unsigned g : order) {
      if (groups[g].empty() || normOf.count(g))
        continue;
      for (size_t k = 0; k < readers.size(); ++k) {
        auto &[v, list] = *(readers.begin() + k);
        if (!llvm::is_contained(list, g))
          continue;
        for (unsigned h : SmallVector<unsigned>(list)) {
          if (h == g || groups[h].empty() || normOf.count(h) || lastOf(h) >= lastOf(g) ||
              shapeOf(h) != shapeOf(g))
            continue;
          int64_t last = lastOf(g);
          bool after = llvm::all_of(groups[h], [&](Operation *op) {
            return llvm::all_of(op->getUsers(), [&](Operation *user) {
              auto it = groupOf.find(user);
              bool inside = it != groupOf.end() && (it->second == h || it->second == g);
              return inside || index[user] > last;
            });
          });
          if (!after)
            continue;
          for (Operation *op : groups[h]) {
            groupOf[op] = g;
            groups[g].push_back(op);
          }
          groups[h].clear();
          addReaders(g);
          ++numSiblings;
        }
      }
    }
  }

  /// Where a fusion of `ops` (program order) reading `inputs` goes. A loop
  /// fusion: at its last op (its results are as large as its inputs, so
  /// earlier would only lengthen their lives). A GEMM epilogue: where its
  /// GEMM was, when every input is ready there — a weight gradient's
  /// widening cast sits at the end of the backward (autodiff differentiates
  /// the forward's parameter casts last), and placing the GEMM there would
  /// keep its activation and output gradient alive through the backward.
  static Operation *placement(ArrayRef<Operation *> ops, ArrayRef<Value> inputs, bool loop) {
    if (loop)
      return ops.back();
    auto gemm = llvm::find_if(ops, [](Operation *op) { return isa<MatmulOp>(op); });
    if (gemm == ops.end())
      return ops.back();
    bool ready = llvm::all_of(inputs, [&](Value v) {
      Operation *def = v.getDefiningOp();
      return !def || def->isBeforeInBlock(*gemm);
    });
    return ready ? *gemm : ops.back();
  }

  /// Replaces `ops` (program order; their users outside come after the
  /// last one, or after `at` when given) with one kiln.fusion (at `at`, or
  /// see placement), whose results are the members' values used outside,
  /// in program order. `loop`: a loop fusion (for the statistics).
  /// A kiln.fusion at `b` of `types` over `inputs` with an empty body, each
  /// input mapped in `map` to its body argument, and a builder at the body's
  /// end (the caller clones the ops and adds the yield).
  static std::pair<FusionOp, OpBuilder> emptyFusion(OpBuilder &b, Location loc, TypeRange types,
                                                    ArrayRef<Value> inputs, IRMapping &map) {
    auto fusion = FusionOp::create(b, loc, types, inputs);
    Block *body = new Block();
    fusion.getBody().push_back(body);
    for (Value v : inputs)
      map.map(v, body->addArgument(v.getType(), v.getLoc()));
    return {fusion, OpBuilder::atBlockEnd(body)};
  }

  FusionOp buildFusion(ArrayRef<Operation *> ops, bool loop, Operation *at = nullptr) {
    llvm::SmallPtrSet<Operation *, 8> members(ops.begin(), ops.end());
    // A loop fusion's splat constants become literals in its body; a GEMM
    // epilogue's operands are the GEMM's and cuBLASLt's, tensors in memory
    // (a loss's constant gradient can be a GEMM's operand), and so are a
    // norm's (its kernel reads them as tensors: a constant weight, or a
    // splat dy).
    auto inlined = [&](Operation *user, Value v) {
      return loop && isSplatConstant(v) &&
             !isNorm(user);
    };
    // A loop fusion reads a broadcast's operand through its index map: the
    // broadcast is cloned into the body (each fusion reading it gets its
    // own clone; the original stays for other readers). A norm fusion's
    // elementwise ops do too when the broadcast keeps rows whole (its
    // kernel reads rows of vectors); the norm's own operands are tensors.
    bool normFusion = llvm::any_of(ops, [](Operation *op) { return isNorm(op); });
    auto readsThrough = [&](Operation *user, Value v) -> BroadcastInDimOp {
      if (!loop || !broadcasts || isNorm(user))
        return {};
      BroadcastInDimOp b = readableBroadcast(v);
      return b && (!normFusion || keepsRows(b)) ? b : BroadcastInDimOp();
    };
    // A broadcast stays a tensor for all when a member reads it as one
    // (the norm), reads its operand directly (the operand would be a body
    // argument read two ways), or computes its operand.
    llvm::DenseSet<Value> asTensor, readDirectly;
    for (Operation *op : ops)
      for (Value v : op->getOperands())
        readDirectly.insert(v);
    for (Operation *op : ops)
      for (Value v : op->getOperands()) {
        BroadcastInDimOp b = readableBroadcast(v);
        Operation *def = b ? b.getOperand().getDefiningOp() : nullptr;
        if (b && (!readsThrough(op, v) || readDirectly.contains(b.getOperand()) ||
                  (def && members.contains(def))))
          asTensor.insert(v);
      }
    auto throughIndexMap = [&](Operation *user, Value v) -> BroadcastInDimOp {
      return asTensor.contains(v) ? BroadcastInDimOp() : readsThrough(user, v);
    };
    // The operands read through an index map, and the broadcast each one's
    // body argument belongs to (an operand broadcast two ways is read
    // through the first; the other broadcast is an input as it was).
    llvm::DenseMap<Value, BroadcastInDimOp> mapOf;
    llvm::DenseSet<Value> readThrough; // the broadcasts' results so read
    auto viaBroadcast = [&](Operation *user, Value v) -> BroadcastInDimOp {
      BroadcastInDimOp b = throughIndexMap(user, v);
      if (!b)
        return {};
      auto [it, fresh] = mapOf.try_emplace(b.getOperand(), b);
      BroadcastInDimOp first = it->second;
      if (first.getType() != b.getType() || first.getDims() != b.getDims())
        return {};
      readThrough.insert(v);
      return b;
    };
    llvm::SetVector<Value> inputs;
    SmallVector<Value> outputs;
    for (Operation *op : ops) {
      for (Value v : op->getOperands()) {
        Operation *def = v.getDefiningOp();
        if ((def && members.contains(def)) || inlined(op, v))
          continue;
        if (BroadcastInDimOp b = viaBroadcast(op, v)) {
          inputs.insert(b.getOperand());
          continue;
        }
        inputs.insert(v);
      }
      for (Value result : op->getResults())
        if (llvm::any_of(result.getUsers(),
                         [&](Operation *user) { return !members.contains(user); }))
          outputs.push_back(result);
    }
    if (outputs.empty())
      return {}; // dead code: nothing to fuse for
    Operation *last = ops.back();
    OpBuilder b(at ? at : placement(ops, inputs.getArrayRef(), loop));
    SmallVector<Type> types;
    for (Value v : outputs)
      types.push_back(v.getType());
    IRMapping map;
    auto [fusion, inner] = emptyFusion(b, last->getLoc(), types, inputs.getArrayRef(), map);
    // (Equal broadcasts of one operand share the first one's clone.)
    llvm::SmallSetVector<Operation *, 2> broadcastsRead;
    llvm::DenseMap<Value, Value> cloneOf; // operand -> its broadcast's clone
    for (Operation *op : ops) {
      for (Value v : op->getOperands()) {
        if (inlined(op, v) && !map.contains(v))
          map.map(v, inner.clone(*v.getDefiningOp())->getResult(0));
        if (!readThrough.contains(v) || map.contains(v))
          continue;
        auto b = v.getDefiningOp<BroadcastInDimOp>();
        Value &clone = cloneOf[b.getOperand()];
        if (!clone)
          clone = inner.clone(*b, map)->getResult(0);
        map.map(v, clone);
        broadcastsRead.insert(b);
      }
      inner.clone(*op, map);
    }
    SmallVector<Value> yielded;
    for (Value v : outputs)
      yielded.push_back(map.lookup(v));
    YieldOp::create(inner, last->getLoc(), yielded);
    for (auto [v, result] : llvm::zip_equal(outputs, fusion.getResults()))
      v.replaceUsesWithIf(result, [&](OpOperand &use) { return !members.contains(use.getOwner()); });

    // What stays on chip: each intermediate's write and read (a result
    // used outside is still written, but read from registers inside).
    if (loop) {
      for (Operation *op : ops)
        for (Value result : op->getResults())
          if (!llvm::is_contained(outputs, result))
            bytesKept += 2 * numBytes(result.getType());
      numFusions++;
      numOpsFused += ops.size();
    }
    numBroadcastsRead += broadcastsRead.size();

    llvm::SmallSetVector<Operation *, 4> constants;
    for (Operation *op : llvm::reverse(ops)) {
      for (Value v : op->getOperands())
        if (isSplatConstant(v))
          constants.insert(v.getDefiningOp());
      op->erase();
    }
    for (Operation *c : constants)
      if (c->use_empty())
        c->erase();
    for (Operation *b : broadcastsRead)
      if (b->use_empty()) {
        // Its write and the fusion's read of it stay on chip.
        bytesKept += 2 * numBytes(b->getResult(0).getType());
        b->erase();
      }
    return fusion;
  }
};

} // namespace
} // namespace kiln
