//===- AttachOptimizer.cpp - AdamW, clipping and accumulation as IR --------===//
//
// Turns the training step that autodiff built — (loss, metrics…, gradients)
// — into one
// that also updates the parameters, so a whole optimizer step is one function
// the backends run:
//
//   1. Find @train_step and, for each result marked kiln.grad, the parameter
//      argument it is the gradient of.
//   2. With accumulate-steps = 1: add the AdamW moments (kiln.state
//      "<param>.adam_m" / ".adam_v", zeros) after the parameters and the
//      per-step inputs lr and step at the end; compute the global gradient
//      norm, the clipping scale max_norm / max(norm, max_norm), one
//      kiln.adamw_update per parameter (weight decay only for the roles in
//      decay-roles), and return (loss, metrics…, grad_norm, new parameters,
//      new moments), each new value marked kiln.aliases of the argument it
//      replaces, so backends update in place.
//   3. Dynamic loss scaling, when autodiff seeded the backward with the
//      state "loss_scale" S: the gradients are S times too large. The norm
//      is taken of them and divided by S; AdamW's grad_scale gets a factor
//      1/S; a non-finite norm (inf or nan: norm − norm ≠ 0) sets AdamW's
//      skip, so nothing changes, and the scale becomes S·backoff; after
//      growth-interval clean steps in a row (the state
//      "loss_scale.good_steps") it becomes S·growth. The new scale and
//      count are results aliasing their states; `skipped` is an output.
//   4. With accumulate-steps = K > 1: @train_step becomes @accumulate_step,
//      which adds its gradients into accumulators (kiln.state
//      "<param>.grad_acc") and returns (loss, metrics…, accumulators), and a new
//      @apply_step(params, moments, accumulators, lr, step) applies AdamW to
//      the accumulated gradients scaled by 1/K (and the clipping scale) and
//      returns the accumulators zeroed for the next step.
//
//===----------------------------------------------------------------------===//

#include "ir/KilnBuilders.h"
#include "ir/KilnOps.h"
#include "passes/PassUtils.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/SymbolTable.h"

#include <cmath>

namespace kiln {
#define GEN_PASS_DEF_ATTACHOPTIMIZERPASS
#include "passes/Passes.h.inc"
} // namespace kiln

#define DEBUG_TYPE "kiln-attach-optimizer"

using namespace mlir;

namespace kiln {
namespace {

/// A parameter and its gradient in the step being rewritten.
/// A metric result of the step (kiln.output, after the loss): carried
/// through to the rewritten step's results unchanged.
struct Metric {
  Value value;
  StringAttr name;
};

struct ParamGrad {
  unsigned argIndex;
  StringAttr name;
  Value grad;
  bool decay;
};

RankedTensorType scalarF32(MLIRContext *ctx) {
  return RankedTensorType::get({}, Float32Type::get(ctx));
}

struct AttachOptimizerPass final : impl::AttachOptimizerPassBase<AttachOptimizerPass> {
  using Base::Base;

  SmallVector<Metric> metrics;

  /// Options in their ranges (written so that NaN is out of every range).
  LogicalResult checkOptions(ModuleOp module) {
    auto bad = [&](StringRef name, double value, StringRef range) {
      return mlir::emitError(module.getLoc())
             << "kiln-attach-optimizer: " << name << " = " << formatOption(value)
             << " is out of range (must be " << range << ")";
    };
    if (!(beta1 >= 0 && beta1 < 1))
      return bad("beta1", beta1, "in [0, 1)");
    if (!(beta2 >= 0 && beta2 < 1))
      return bad("beta2", beta2, "in [0, 1)");
    if (!(epsilon > 0 && std::isfinite(epsilon)))
      return bad("epsilon", epsilon, "positive");
    if (!(weightDecay >= 0 && std::isfinite(weightDecay)))
      return bad("weight-decay", weightDecay, "at least 0");
    if (!(maxGradNorm >= 0 && std::isfinite(maxGradNorm)))
      return bad("max-grad-norm", maxGradNorm, "at least 0; 0 disables clipping");
    if (accumulateSteps < 1)
      return bad("accumulate-steps", static_cast<double>(accumulateSteps), "at least 1");
    if (lossScaleGrowthInterval < 1)
      return bad("loss-scale-growth-interval", static_cast<double>(lossScaleGrowthInterval),
                 "at least 1");
    if (!(lossScaleGrowth >= 1 && std::isfinite(lossScaleGrowth)))
      return bad("loss-scale-growth", lossScaleGrowth, "at least 1");
    if (!(lossScaleBackoff > 0 && lossScaleBackoff <= 1))
      return bad("loss-scale-backoff", lossScaleBackoff, "in (0, 1]");
    return success();
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto step = module.lookupSymbol<func::FuncOp>("train_step");
    if (!step) {
      module.emitError() << "kiln-attach-optimizer: no @train_step (run kiln-autodiff first)";
      return signalPassFailure();
    }
    if (failed(checkOneBlockBody(step, "kiln-attach-optimizer")))
      return signalPassFailure();
    if (failed(checkOptions(module)))
      return signalPassFailure();
    FailureOr<SmallVector<ParamGrad>> params = collect(step);
    if (failed(params))
      return signalPassFailure();
    if (accumulateSteps == 1)
      attachToStep(step, *params);
    else
      splitForAccumulation(step, *params);
  }

  /// Pairs each kiln.grad result with its parameter argument.
  FailureOr<SmallVector<ParamGrad>> collect(func::FuncOp step) {
    auto ret = cast<func::ReturnOp>(step.getBody().front().getTerminator());
    if (ret.getNumOperands() < 1 || !step.getResultAttr(0, KilnDialect::kOutputAttrName)) {
      step.emitError() << "kiln-attach-optimizer: @train_step must return the loss first "
                          "(kiln.output = \"loss\")";
      return failure();
    }
    SmallVector<ParamGrad> params;
    metrics.clear();
    for (unsigned r = 1; r < ret.getNumOperands(); ++r) {
      auto name = step.getResultAttrOfType<StringAttr>(r, KilnDialect::kGradAttrName);
      if (!name) {
        auto metric = step.getResultAttrOfType<StringAttr>(r, KilnDialect::kOutputAttrName);
        if (metric && params.empty()) {
          metrics.push_back({ret.getOperand(r), metric});
          continue;
        }
        step.emitError() << "kiln-attach-optimizer: result #" << r
                         << " of @train_step is neither a metric (kiln.output, before the "
                            "gradients) nor a gradient (kiln.grad)";
        return failure();
      }
      for (unsigned a = 0; a < step.getNumArguments(); ++a) {
        if (step.getArgAttrOfType<StringAttr>(a, KilnDialect::kParamAttrName) != name)
          continue;
        auto role = step.getArgAttrOfType<StringAttr>(a, KilnDialect::kRoleAttrName);
        // Parameters without a role are weights; no decay-roles means weights.
        std::string roleName = role ? role.getValue().str() : "weight";
        bool decay = decayRoles.empty() ? roleName == "weight"
                                        : llvm::is_contained(decayRoles, roleName);
        params.push_back({a, name, ret.getOperand(r), decay});
      }
    }
    return params;
  }

  /// Inserts an argument named by `attr` = `name` (zero-initialized when a
  /// state) at `index`; returns the block argument.
  static BlockArgument addArg(func::FuncOp func, unsigned index, Type type, StringRef attr,
                              StringRef name) {
    Builder b(func.getContext());
    SmallVector<NamedAttribute> attrs{b.getNamedAttr(attr, b.getStringAttr(name))};
    if (attr == KilnDialect::kStateAttrName)
      attrs.push_back(b.getNamedAttr(KilnDialect::kInitAttrName, b.getStringAttr("zeros")));
    if (failed(func.insertArgument(index, type, b.getDictionaryAttr(attrs), func.getLoc())))
      return {};
    return func.getArgument(index);
  }

  /// A gradient accumulator `<param>.grad_acc`: a zero state, and
  /// transient — @apply_step zeroes it, so it is zero between steps:
  /// nothing to checkpoint, and a run with or without accumulation (or
  /// pipeline stages) resumes the other's checkpoints.
  static BlockArgument addAccumulator(func::FuncOp func, unsigned index, Type type,
                                      StringAttr param) {
    BlockArgument arg = addArg(func, index, type, KilnDialect::kStateAttrName,
                               (param.getValue() + ".grad_acc").str());
    if (arg)
      func.setArgAttr(index, KilnDialect::kTransientAttrName, UnitAttr::get(func.getContext()));
    return arg;
  }

  /// Dynamic loss scaling of one update (the scale S is a state argument).
  struct LossScaling {
    BlockArgument scale, goodSteps;
    Value skip;             ///< i1: the scaled gradients overflowed
    Value newScale, newGood, skipped;
  };

  /// The "loss_scale" state argument, if the step has one.
  static BlockArgument lossScaleArg(func::FuncOp func) {
    for (BlockArgument a : func.getArguments())
      if (auto name = func.getArgAttrOfType<StringAttr>(a.getArgNumber(), KilnDialect::kStateAttrName);
          name && name.getValue() == "loss_scale")
        return a;
    return {};
  }

  /// Adds the good-steps state to `func` and builds the overflow check and
  /// the next scale from `scaledNorm` (the norm of the still-scaled
  /// gradients). Returns the unscaled norm through `norm`.
  LossScaling scaleUpdate(OpBuilder &b, Location loc, func::FuncOp func, BlockArgument scaleArg,
                          Value scaledNorm, Value &norm) {
    LossScaling s;
    s.scale = scaleArg;
    s.goodSteps = addArg(func, afterStateArguments(func), scalarF32(b.getContext()),
                         KilnDialect::kStateAttrName, "loss_scale.good_steps");
    norm = build::div(b, loc, scaledNorm, s.scale);
    Value zero = build::splatLike(b, loc, s.scale, 0.0), one = build::splatLike(b, loc, s.scale, 1.0);
    s.skip = build::compare(b, loc, CompareDirection::ne, build::sub(b, loc, scaledNorm, scaledNorm), zero);
    Value good = build::add(b, loc, s.goodSteps, one);
    Value grow = build::compare(b, loc, CompareDirection::ge, good,
                                build::splatLike(b, loc, s.scale, static_cast<double>(lossScaleGrowthInterval)));
    Value grownScale = build::select(b, loc, grow, build::scale(b, loc, s.scale, lossScaleGrowth), s.scale);
    Value grownGood = build::select(b, loc, grow, zero, good);
    s.newScale = build::select(b, loc, s.skip, build::scale(b, loc, s.scale, lossScaleBackoff), grownScale);
    s.newGood = build::select(b, loc, s.skip, zero, grownGood);
    s.skipped = build::select(b, loc, s.skip, one, zero);
    return s;
  }

  /// global_norm of `grads` times `factor`, as tensor<f32>.
  Value gradNorm(OpBuilder &b, Location loc, ValueRange grads, double factor) {
    bool allF64 = llvm::all_of(grads, [](Value g) { return build::typeOf(g).getElementType().isF64(); });
    auto normType = RankedTensorType::get({}, allF64 ? Type(b.getF64Type()) : b.getF32Type());
    Value norm = GlobalNormOp::create(b, loc, normType, grads);
    norm = build::convert(b, loc, norm, b.getF32Type());
    return factor == 1.0 ? norm : build::scale(b, loc, norm, factor);
  }

  /// The factor every gradient is multiplied by: 1/K, times the clipping
  /// coefficient max_norm / max(norm, max_norm) when clipping is on.
  Value gradScale(OpBuilder &b, Location loc, Value norm) {
    auto scalar = scalarF32(b.getContext());
    Value scale = build::splat(b, loc, scalar, 1.0 / static_cast<double>(accumulateSteps));
    if (maxGradNorm <= 0.0)
      return scale;
    Value cap = build::splat(b, loc, scalar, maxGradNorm);
    Value clip = build::div(b, loc, cap, MaxOp::create(b, loc, scalar, norm, cap));
    return build::mul(b, loc, scale, clip);
  }

  /// AdamW on every parameter; returns (new param, new m, new v) triples.
  SmallVector<std::array<Value, 3>> update(OpBuilder &b, Location loc, func::FuncOp func,
                                           ArrayRef<ParamGrad> params, ArrayRef<Value> grads,
                                           ArrayRef<BlockArgument> ms, ArrayRef<BlockArgument> vs,
                                           Value lr, Value stepIndex, Value scale, Value skip) {
    SmallVector<std::array<Value, 3>> updated;
    for (auto [i, p] : llvm::enumerate(params)) {
      Value param = func.getArgument(p.argIndex);
      auto op = AdamWUpdateOp::create(
          b, loc, TypeRange{param.getType(), ms[i].getType(), vs[i].getType()}, param, grads[i],
          ms[i], vs[i], lr, stepIndex, scale, skip, b.getF32FloatAttr(beta1), b.getF32FloatAttr(beta2),
          b.getF32FloatAttr(epsilon), b.getF32FloatAttr(p.decay ? weightDecay : 0.0));
      updated.push_back({op.getNewParam(), op.getNewM(), op.getNewV()});
    }
    return updated;
  }

  /// Adds m and v arguments for every parameter. They go after the
  /// parameters, so the parameters' argument indices stay valid.
  void addMoments(func::FuncOp func, ArrayRef<ParamGrad> params, SmallVectorImpl<BlockArgument> &ms,
                  SmallVectorImpl<BlockArgument> &vs) {
    for (const ParamGrad &p : params) {
      Type t = func.getArgument(p.argIndex).getType();
      ms.push_back(addArg(func, afterStateArguments(func), t, KilnDialect::kStateAttrName,
                          (p.name.getValue() + ".adam_m").str()));
    }
    for (const ParamGrad &p : params) {
      Type t = func.getArgument(p.argIndex).getType();
      vs.push_back(addArg(func, afterStateArguments(func), t, KilnDialect::kStateAttrName,
                          (p.name.getValue() + ".adam_v").str()));
    }
  }

  /// The step's metrics, after the loss.
  void appendMetrics(SmallVectorImpl<Value> &results,
                     SmallVectorImpl<std::pair<StringRef, StringRef>> &names) const {
    for (const Metric &m : metrics) {
      results.push_back(m.value);
      names.push_back({KilnDialect::kOutputAttrName, m.name.getValue()});
    }
  }

  /// Replaces the terminator of `func` with `return results` and names them.
  static void setResults(func::FuncOp func, ArrayRef<Value> results,
                         ArrayRef<std::pair<StringRef, StringRef>> names,
                         ArrayRef<std::pair<unsigned, BlockArgument>> aliases) {
    Block &body = func.getBody().front();
    Operation *old = body.getTerminator();
    OpBuilder b(old);
    func::ReturnOp::create(b, old->getLoc(), results);
    old->erase();
    SmallVector<Type> types;
    for (Value v : results)
      types.push_back(v.getType());
    func.setFunctionType(FunctionType::get(func.getContext(), func.getArgumentTypes(), types));
    func.removeResAttrsAttr();
    for (auto [i, name] : llvm::enumerate(names))
      func.setResultAttr(i, name.first, b.getStringAttr(name.second));
    for (auto [index, arg] : aliases)
      func.setResultAttr(index, KilnDialect::kAliasesAttrName,
                         b.getI64IntegerAttr(arg.getArgNumber()));
  }

  void attachToStep(func::FuncOp step, ArrayRef<ParamGrad> params) {
    MLIRContext *ctx = step.getContext();
    SmallVector<BlockArgument> ms, vs;
    ArrayRef<ParamGrad> ps = params;
    addMoments(step, params, ms, vs);
    unsigned n = step.getNumArguments();
    BlockArgument lr = addArg(step, n, scalarF32(ctx), KilnDialect::kInputAttrName, "lr");
    BlockArgument stepIndex = addArg(step, n + 1, scalarF32(ctx), KilnDialect::kInputAttrName, "step");

    Operation *ret = step.getBody().front().getTerminator();
    Value loss = ret->getOperand(0);
    OpBuilder b(ret);
    Location loc = NameLoc::get(b.getStringAttr("optimizer"));
    SmallVector<Value> grads;
    for (const ParamGrad &p : ps)
      grads.push_back(p.grad);
    Value norm = gradNorm(b, loc, grads, 1.0);
    std::optional<LossScaling> scaling;
    if (BlockArgument scaleArg = lossScaleArg(step))
      scaling = scaleUpdate(b, loc, step, scaleArg, Value(norm), norm);
    Value scale = gradScale(b, loc, norm);
    if (scaling)
      scale = build::div(b, loc, scale, scaling->scale);
    auto updated = update(b, loc, step, ps, grads, ms, vs, lr, stepIndex, scale,
                          scaling ? scaling->skip : Value());

    SmallVector<Value> results{loss};
    SmallVector<std::pair<StringRef, StringRef>> names{{KilnDialect::kOutputAttrName, "loss"}};
    appendMetrics(results, names);
    results.push_back(norm);
    names.push_back({KilnDialect::kOutputAttrName, "grad_norm"});
    if (scaling) {
      results.push_back(scaling->skipped);
      names.push_back({KilnDialect::kOutputAttrName, "skipped"});
    }
    SmallVector<std::pair<unsigned, BlockArgument>> aliases;
    for (auto [i, u] : llvm::enumerate(updated)) {
      aliases.push_back({static_cast<unsigned>(results.size()), step.getArgument(ps[i].argIndex)});
      results.push_back(u[0]);
    }
    for (auto [i, u] : llvm::enumerate(updated)) {
      aliases.push_back({static_cast<unsigned>(results.size()), ms[i]});
      results.push_back(u[1]);
    }
    for (auto [i, u] : llvm::enumerate(updated)) {
      aliases.push_back({static_cast<unsigned>(results.size()), vs[i]});
      results.push_back(u[2]);
    }
    if (scaling)
      appendScaleResults(*scaling, results, aliases);
    setResults(step, results, names, aliases);
  }

  static void appendScaleResults(const LossScaling &s, SmallVectorImpl<Value> &results,
                                 SmallVectorImpl<std::pair<unsigned, BlockArgument>> &aliases) {
    aliases.push_back({static_cast<unsigned>(results.size()), s.scale});
    results.push_back(s.newScale);
    aliases.push_back({static_cast<unsigned>(results.size()), s.goodSteps});
    results.push_back(s.newGood);
  }

  void splitForAccumulation(func::FuncOp step, ArrayRef<ParamGrad> params) {
    MLIRContext *ctx = step.getContext();
    // @accumulate_step: (params, accumulators, inputs) -> (loss, acc + grad).
    step.setSymName("accumulate_step");
    SmallVector<BlockArgument> accs;
    for (const ParamGrad &p : params)
      accs.push_back(addAccumulator(step, afterStateArguments(step),
                                    step.getArgument(p.argIndex).getType(), p.name));
    {
      Operation *ret = step.getBody().front().getTerminator();
      Value loss = ret->getOperand(0);
      OpBuilder b(ret);
      SmallVector<Value> results{loss};
      SmallVector<std::pair<StringRef, StringRef>> names{{KilnDialect::kOutputAttrName, "loss"}};
      appendMetrics(results, names);
      SmallVector<std::pair<unsigned, BlockArgument>> aliases;
      for (auto [i, p] : llvm::enumerate(params)) {
        aliases.push_back({static_cast<unsigned>(results.size()), accs[i]});
        results.push_back(build::add(b, p.grad.getLoc(), accs[i], p.grad));
      }
      setResults(step, results, names, aliases);
    }

    // @apply_step: (params, moments, accumulators, lr, step)
    //   -> (grad_norm, new params, new moments, zeroed accumulators).
    OpBuilder mb(ctx);
    mb.setInsertionPointAfter(step);
    auto apply = func::FuncOp::create(mb, NameLoc::get(mb.getStringAttr("optimizer")),
                                      "apply_step", mb.getFunctionType({}, {}));
    Block *body = apply.addEntryBlock();
    SmallVector<ParamGrad> ps;
    for (const ParamGrad &p : params) {
      unsigned index = apply.getNumArguments();
      Builder ab(ctx);
      SmallVector<NamedAttribute> attrs{
          ab.getNamedAttr(KilnDialect::kParamAttrName, p.name)};
      // The model's sharding annotation too (tensor parallelism): the
      // update must split the parameter as the step that reads it does.
      for (StringRef extra : {KilnDialect::kInitAttrName, KilnDialect::kRoleAttrName,
                              KilnDialect::kShardingAttrName})
        if (Attribute a = step.getArgAttr(p.argIndex, extra))
          attrs.push_back(ab.getNamedAttr(extra, a));
      (void)apply.insertArgument(index, step.getArgument(p.argIndex).getType(),
                                 ab.getDictionaryAttr(attrs), apply.getLoc());
      ps.push_back({index, p.name, Value(), p.decay});
    }
    SmallVector<BlockArgument> ms, vs, accArgs;
    addMoments(apply, ps, ms, vs);
    for (const ParamGrad &p : ps)
      accArgs.push_back(addAccumulator(apply, apply.getNumArguments(),
                                       apply.getArgument(p.argIndex).getType(), p.name));
    unsigned n = apply.getNumArguments();
    BlockArgument lr = addArg(apply, n, scalarF32(ctx), KilnDialect::kInputAttrName, "lr");
    BlockArgument stepIndex = addArg(apply, n + 1, scalarF32(ctx), KilnDialect::kInputAttrName, "step");

    // With loss scaling the accumulators hold scaled gradients: the scale
    // (shared with @accumulate_step by name) comes in too.
    BlockArgument scaleArg;
    if (BlockArgument stepScale = lossScaleArg(step)) {
      scaleArg = addArg(apply, afterStateArguments(apply), scalarF32(ctx),
                        KilnDialect::kStateAttrName, "loss_scale");
      apply.setArgAttr(scaleArg.getArgNumber(), KilnDialect::kInitAttrName,
                       step.getArgAttr(stepScale.getArgNumber(), KilnDialect::kInitAttrName));
    }

    OpBuilder b = OpBuilder::atBlockEnd(body);
    Location loc = apply.getLoc();
    SmallVector<Value> grads(accArgs.begin(), accArgs.end());
    // The accumulators hold K gradients summed: their mean is 1/K of that.
    Value norm = gradNorm(b, loc, grads, 1.0 / static_cast<double>(accumulateSteps));
    std::optional<LossScaling> scaling;
    if (scaleArg)
      scaling = scaleUpdate(b, loc, apply, scaleArg, Value(norm), norm);
    Value scale = gradScale(b, loc, norm);
    if (scaling)
      scale = build::div(b, loc, scale, scaling->scale);
    auto updated = update(b, loc, apply, ps, grads, ms, vs, lr, stepIndex, scale,
                          scaling ? scaling->skip : Value());
    func::ReturnOp::create(b, loc, ValueRange{});
    SmallVector<Value> results{norm};
    SmallVector<std::pair<StringRef, StringRef>> names{{KilnDialect::kOutputAttrName, "grad_norm"}};
    if (scaling) {
      results.push_back(scaling->skipped);
      names.push_back({KilnDialect::kOutputAttrName, "skipped"});
    }
    SmallVector<std::pair<unsigned, BlockArgument>> aliases;
    for (int part = 0; part < 3; ++part)
      for (auto [i, u] : llvm::enumerate(updated)) {
        BlockArgument target = part == 0 ? apply.getArgument(ps[i].argIndex)
                                         : (part == 1 ? ms[i] : vs[i]);
        aliases.push_back({static_cast<unsigned>(results.size()), target});
        results.push_back(u[part]);
      }
    b.setInsertionPoint(body->getTerminator());
    for (BlockArgument acc : accArgs) {
      aliases.push_back({static_cast<unsigned>(results.size()), acc});
      results.push_back(build::splatLike(b, loc, acc, 0.0));
    }
    if (scaling)
      appendScaleResults(*scaling, results, aliases);
    setResults(apply, results, names, aliases);
  }
};

} // namespace
} // namespace kiln
