//===- Autodiff.cpp - reverse-mode autodiff: @forward -> @train_step -------===//
//
// Builds the training step from the forward function:
//
//   1. Check @forward: its first result is a rank-0 float tensor (the loss);
//      any further results are metrics — rank-0 tensors named with
//      kiln.output (DPO's reward margin, accuracy) — returned as they are,
//      never differentiated.
//   2. Clone it as @train_step, keeping argument names and attributes.
//   3. Activity: a value is active when it is a float that depends on some
//      kiln.param argument. Only active values get cotangents, so masks,
//      position ids and other constants cost nothing in the backward.
//   4. Seed the loss's cotangent with 1 — or, with loss-scale = S0 > 0, with
//      a new argument kiln.state "loss_scale" (f32, initially S0), so the
//      whole backward runs scaled and f16 gradients do not underflow
//      (kiln-attach-optimizer unscales, checks and adapts the scale).
//   5. Walk the forward ops in reverse. For each op with a cotangent on some
//      result and an active operand, call DifferentiableOpInterface::buildVJP
//      at the end of the function and add the operand cotangents it returns
//      into the running sums (a value used twice gets the sum of both).
//   6. Return (loss, metrics…, d loss/d param for every kiln.param in
//      argument order),
//      a zero tensor for a parameter the loss does not depend on; results are
//      named with kiln.output / kiln.grad.
//   7. Erase the dead ops the rules left behind.
//
//===----------------------------------------------------------------------===//

#include "ir/KilnBuilders.h"
#include "ir/KilnOps.h"
#include "passes/PassUtils.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/SymbolTable.h"
#include "mlir/Transforms/RegionUtils.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"

#include <cmath>

namespace kiln {
#define GEN_PASS_DEF_AUTODIFFPASS
#include "passes/Passes.h.inc"
} // namespace kiln

#define DEBUG_TYPE "kiln-autodiff"

using namespace mlir;

namespace kiln {
namespace {

bool isFloatTensor(Value v) {
  auto t = dyn_cast<RankedTensorType>(v.getType());
  return t && isa<FloatType>(t.getElementType());
}

/// Values that carry gradient: float tensors depending on a kiln.param.
llvm::DenseSet<Value> findActiveValues(func::FuncOp func) {
  llvm::DenseSet<Value> active;
  for (BlockArgument arg : func.getArguments())
    if (func.getArgAttr(arg.getArgNumber(), KilnDialect::kParamAttrName) && isFloatTensor(arg))
      active.insert(arg);
  func.walk([&](Operation *op) {
    if (llvm::none_of(op->getOperands(), [&](Value v) { return active.contains(v); }))
      return;
    for (Value r : op->getResults())
      if (isFloatTensor(r))
        active.insert(r);
  });
  return active;
}

struct AutodiffPass final : impl::AutodiffPassBase<AutodiffPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (!(lossScale >= 0 && std::isfinite(lossScale))) {
      mlir::emitError(module.getLoc())
          << "kiln-autodiff: loss-scale = " << formatOption(lossScale)
          << " must be a finite number, at least 0 (0: no loss scaling)";
      return signalPassFailure();
    }
    auto forward = module.lookupSymbol<func::FuncOp>(function);
    if (!forward) {
      module.emitError() << "kiln-autodiff: no function @" << function
                         << " to differentiate (set function=NAME)";
      return signalPassFailure();
    }
    if (failed(checkOneBlockBody(forward, "kiln-autodiff")))
      return signalPassFailure();
    if (Operation *existing = module.lookupSymbol(output)) {
      existing->emitError() << "kiln-autodiff: @" << output << " already exists";
      return signalPassFailure();
    }
    if (failed(checkLoss(forward)))
      return signalPassFailure();

    auto step = cast<func::FuncOp>(forward->clone());
    step.setSymName(output);
    SymbolTable(module).insert(step, std::next(Block::iterator(forward)));
    if (failed(differentiate(step)))
      return signalPassFailure();
  }

  LogicalResult checkLoss(func::FuncOp forward) {
    ArrayRef<Type> results = forward.getFunctionType().getResults();
    auto loss = results.empty() ? nullptr : dyn_cast<RankedTensorType>(results[0]);
    if (!loss || loss.getRank() != 0 || !isa<FloatType>(loss.getElementType())) {
      InFlightDiagnostic diag = forward.emitError()
                                << "kiln-autodiff: @" << forward.getSymName()
                                << " must return a scalar float loss (tensor<f32>) first; it "
                                   "returns (";
      llvm::interleaveComma(results, diag);
      return diag << ")";
    }
    for (unsigned r = 1; r < results.size(); ++r) {
      auto metric = dyn_cast<RankedTensorType>(results[r]);
      if (!metric || metric.getRank() != 0 ||
          !forward.getResultAttrOfType<StringAttr>(r, KilnDialect::kOutputAttrName))
        return forward.emitError()
               << "kiln-autodiff: result #" << r << " of @" << forward.getSymName()
               << " is not a metric: results after the loss must be scalars named with "
                  "kiln.output (it is "
               << results[r] << ")";
    }
    return success();
  }

  LogicalResult differentiate(func::FuncOp step) {
    Block &body = step.getBody().front();
    auto ret = cast<func::ReturnOp>(body.getTerminator());
    Value loss = ret.getOperand(0);
    llvm::DenseSet<Value> active = findActiveValues(step);
    SmallVector<Operation *> forwardOps;
    for (Operation &op : body.without_terminator())
      forwardOps.push_back(&op);

    OpBuilder b(ret);
    llvm::DenseMap<Value, Value> cotangent;
    auto accumulate = [&](Value v, Value c) {
      Value &slot = cotangent[v];
      slot = slot ? build::add(b, c.getLoc(), slot, c) : c;
    };
    if (active.contains(loss)) {
      if (lossScale > 0) {
        auto f32 = RankedTensorType::get({}, b.getF32Type());
        Builder ab(step.getContext());
        // Right after the parameters, where states go.
        unsigned index = 0;
        for (unsigned a = 0; a < step.getNumArguments(); ++a)
          if (step.getArgAttr(a, KilnDialect::kParamAttrName))
            index = a + 1;
        (void)step.insertArgument(
            index, f32,
            ab.getDictionaryAttr({ab.getNamedAttr(KilnDialect::kStateAttrName, ab.getStringAttr("loss_scale")),
                                  ab.getNamedAttr(KilnDialect::kInitAttrName,
                                                  ab.getStringAttr(ParamInit::full(lossScale).str()))}),
            step.getLoc());
        cotangent[loss] = build::convert(b, loss.getLoc(), step.getArgument(index),
                                         build::typeOf(loss).getElementType());
      } else {
        cotangent[loss] = build::splatLike(b, loss.getLoc(), loss, 1.0);
      }
    }

    for (Operation *op : llvm::reverse(forwardOps)) {
      SmallVector<Value> resultCotangents;
      bool anyCotangent = false;
      for (Value r : op->getResults()) {
        resultCotangents.push_back(cotangent.lookup(r));
        anyCotangent |= static_cast<bool>(resultCotangents.back());
      }
      bool anyActiveOperand =
          llvm::any_of(op->getOperands(), [&](Value v) { return active.contains(v); });
      if (!anyCotangent || !anyActiveOperand)
        continue;
      auto diffOp = dyn_cast<DifferentiableOpInterface>(op);
      if (!diffOp)
        return op->emitOpError() << "has no VJP rule (DifferentiableOpInterface), but the "
                                    "loss depends on it through a parameter";
      SmallVector<Value> operandCotangents;
      if (failed(diffOp.buildVJP(b, resultCotangents, operandCotangents)))
        return failure();
      if (operandCotangents.size() != op->getNumOperands())
        return op->emitOpError() << "VJP rule returned " << operandCotangents.size()
                                 << " cotangents for " << op->getNumOperands() << " operands";
      for (auto [operand, c] : llvm::zip(op->getOperands(), operandCotangents)) {
        if (!c || !active.contains(operand))
          continue;
        if (c.getType() != operand.getType())
          return op->emitOpError() << "VJP rule produced a cotangent of type " << c.getType()
                                   << " for an operand of type " << operand.getType();
        accumulate(operand, c);
      }
    }

    // The new signature: (loss, metrics…, one gradient per parameter).
    SmallVector<Value> results{loss};
    SmallVector<Type> resultTypes{loss.getType()};
    SmallVector<StringAttr> metricNames;
    for (unsigned r = 1; r < ret.getNumOperands(); ++r) {
      results.push_back(ret.getOperand(r));
      resultTypes.push_back(ret.getOperand(r).getType());
      metricNames.push_back(step.getResultAttrOfType<StringAttr>(r, KilnDialect::kOutputAttrName));
    }
    SmallVector<std::pair<unsigned, StringAttr>> grads;
    for (BlockArgument arg : step.getArguments()) {
      auto name = step.getArgAttrOfType<StringAttr>(arg.getArgNumber(),
                                                    KilnDialect::kParamAttrName);
      if (!name || !isFloatTensor(arg))
        continue;
      Value g = cotangent.lookup(arg);
      if (!g)
        g = build::splatLike(b, arg.getLoc(), arg, 0.0);
      grads.push_back({static_cast<unsigned>(results.size()), name});
      results.push_back(g);
      resultTypes.push_back(arg.getType());
    }
    func::ReturnOp::create(b, ret.getLoc(), results);
    ret.erase();
    step.setFunctionType(FunctionType::get(step.getContext(), step.getArgumentTypes(), resultTypes));
    step.removeResAttrsAttr();
    Builder attrs(step.getContext());
    step.setResultAttr(0, KilnDialect::kOutputAttrName, attrs.getStringAttr("loss"));
    for (auto [i, name] : llvm::enumerate(metricNames))
      step.setResultAttr(1 + i, KilnDialect::kOutputAttrName, name);
    for (auto [index, name] : grads)
      step.setResultAttr(index, KilnDialect::kGradAttrName, name);

    // Rules build cotangents for every operand of an op, including inactive
    // ones; drop what nothing uses.
    for (Operation &op : llvm::make_early_inc_range(llvm::reverse(body)))
      if (isOpTriviallyDead(&op))
        op.erase();
    return success();
  }
};

} // namespace
} // namespace kiln
