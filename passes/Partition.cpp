//===- Partition.cpp - the per-rank program and its collectives ------------===//
//
// After kiln-propagate-sharding every value has a global layout. This pass
// rewrites the function into what each rank runs: per-rank shapes, and a
// collective wherever an op needs an operand in another layout than the one
// it was made in (docs/sharding.md, "Partitioning").
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"
#include "passes/ShardingUtils.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"


namespace kiln {
#define GEN_PASS_DEF_PARTITIONPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

struct PartitionPass : public kiln::impl::PartitionPassBase<PartitionPass> {
  using Base::Base;

  MeshAttr mesh_;
  /// The global layout of every value of the function (read before any
  /// type changes).
  llvm::DenseMap<Value, ShardingAttr> layout_;
  /// Converted values: (value, wanted layout) -> the value in that layout.
  llvm::DenseMap<std::pair<Value, Attribute>, Value> converted_;
  /// Means rescaled for their split (the scaling op -> the mean).
  llvm::DenseMap<Operation *, Operation *> scaledMeans_;
  /// Each op's rule, taken from the global shapes before any changes.
  llvm::DenseMap<Operation *, FailureOr<ShardingRule>> rules_;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    mesh_ = getMesh(module);
    auto func = module.lookupSymbol<func::FuncOp>(function);
    if (!func) {
      module.emitError() << "kiln-partition: no function @" << function;
      return signalPassFailure();
    }
    if (!mesh_) {
      module.emitError() << "kiln-partition: the module has no kiln.mesh (run "
                            "kiln-propagate-sharding first)";
      return signalPassFailure();
    }
    Block &body = func.getBody().front();
    for (BlockArgument arg : func.getArguments())
      layout_[arg] = getSharding(arg);
    SmallVector<Operation *> ops;
    for (Operation &op : body.without_terminator()) {
      ops.push_back(&op);
      for (Value v : op.getResults())
        layout_[v] = getSharding(v);
      auto ruleOp = dyn_cast<ShardingRuleOpInterface>(op);
      rules_.try_emplace(&op, ruleOp ? ruleOp.getShardingRule() : FailureOr<ShardingRule>());
    }
    for (BlockArgument arg : func.getArguments())
      arg.setType(localType(arg, layout_[arg]));
    for (Operation *op : ops)
      if (failed(partitionOp(op)))
        return signalPassFailure();
    auto ret = cast<func::ReturnOp>(body.getTerminator());
    SmallVector<Type> resultTypes;
    for (auto [i, operand] : llvm::enumerate(ret->getOpOperands())) {
      Value v = operand.get();
      auto want = func.getResultAttrOfType<ShardingAttr>(i, KilnDialect::kShardingAttrName);
      if (!want)
        want = ShardingAttr::getReplicated(&getContext(), layout_[v].getDims().size());
      FailureOr<Value> c = convert(v, want, ret, "the function result");
      if (failed(c))
        return signalPassFailure();
      operand.set(*c);
      resultTypes.push_back(c->getType());
    }
    func.setFunctionType(FunctionType::get(&getContext(), body.getArgumentTypes(), resultTypes));
    for (Operation *op : ops)
      op->removeAttr(KilnDialect::kShardingsAttrName);
    func->setAttr(KilnDialect::kPartitionedAttrName, UnitAttr::get(&getContext()));
  }

  int64_t axisSize(StringRef axis) const { return mesh_.getAxisSize(axis); }

  RankedTensorType localType(Value v, ShardingAttr s) {
    auto t = cast<RankedTensorType>(v.getType());
    return RankedTensorType::get(s.localShape(t.getShape(), mesh_), t.getElementType());
  }

  /// The layout operand or result `factors` must have when the op's
  /// factors are split as `factorAxis` says.
  ShardingAttr wanted(ArrayRef<int64_t> factors, ArrayRef<StringAttr> factorAxis) {
    SmallVector<StringAttr> dims;
    for (int64_t f : factors)
      dims.push_back(f < 0 ? StringAttr::get(&getContext(), "") : factorAxis[f]);
    return ShardingAttr::get(&getContext(), dims, {});
  }

  /// `v` (in its recorded layout) as `want`, inserting the collectives
  /// before `user`; one conversion per value and layout.
  FailureOr<Value> convert(Value v, ShardingAttr want, Operation *user, StringRef userText) {
    ShardingAttr have = layout_[v];
    if (have == want)
      return v;
    auto key = std::make_pair(v, Attribute(want));
    if (auto it = converted_.find(key); it != converted_.end())
      return it->second;
    Operation *producer = v.getDefiningOp();
    if (Operation *mean = scaledMeans_.lookup(producer))
      producer = mean;
    std::string source = producer ? describeOp(producer) : "the function argument";
    // A gradient is named by its parameter (the optimizer's operand).
    for (Operation *use : v.getUsers())
      if (auto adam = dyn_cast<AdamWUpdateOp>(use); adam && adam.getGrad() == v)
        if (auto param = dyn_cast<BlockArgument>(adam.getParam()))
          if (auto func = dyn_cast<func::FuncOp>(param.getOwner()->getParentOp()))
            if (auto name = func.getArgAttrOfType<StringAttr>(param.getArgNumber(),
                                                              KilnDialect::kParamAttrName))
              source = "the gradient of " + name.getValue().str() + " (" + source + ")";
    std::string cause;
    OpBuilder b(user);
    Value cur = v;
    ShardingAttr curLayout = have;
    // Partial sums first: each rank then holds the whole sum of its part.
    for (StringAttr axis : have.getPartial()) {
      cause = source + " leaves a partial sum over " + axis.getValue().str() + "; " +
              userText.str() + " needs it summed";
      cur = AllReduceOp::create(b, user->getLoc(), cur.getType(), cur, axis.getValue(), cause);
    }
    curLayout = curLayout.withoutPartial();
    // Then dimensions split one way and wanted another (or whole).
    for (auto [d, axis] : llvm::enumerate(curLayout.getDims())) {
      StringRef wantAxis = want.getAxis(d);
      if (axis.getValue() == wantAxis)
        continue;
      if (!wantAxis.empty()) {
        user->emitError() << "kiln-partition: " << userText << " needs dimension " << d
                          << " of a value from " << source << " split over '" << wantAxis
                          << "' but it is " << (axis.getValue().empty() ? "whole" : "split over '" + axis.getValue().str() + "'")
                          << "; taking each rank's part of a value (a local slice) is planned";
        return failure();
      }
      auto t = cast<RankedTensorType>(cur.getType());
      SmallVector<int64_t> shape(t.getShape());
      shape[d] *= axisSize(axis.getValue());
      cause = source + " splits dimension " + std::to_string(d) + " over " +
              axis.getValue().str() + "; " + userText.str() + " needs it whole";
      cur = AllGatherOp::create(b, user->getLoc(), RankedTensorType::get(shape, t.getElementType()),
                                cur, axis.getValue(), static_cast<int64_t>(d), cause);
    }
    converted_[key] = cur;
    return cur;
  }

  LogicalResult partitionOp(Operation *op) {
    const FailureOr<ShardingRule> &rule = rules_.find(op)->second;
    bool anySplit = llvm::any_of(op->getResults(), [&](Value v) { return !layout_[v].isReplicated(); }) ||
                    llvm::any_of(op->getOperands(), [&](Value v) { return !layout_[v].isReplicated(); });
    if (failed(rule)) {
      if (anySplit)
        return op->emitError() << "kiln-partition: " << op->getName()
                               << " has no sharding rule and touches a split value";
      return success();
    }
    // Each factor's axis: from the results' dimensions, then the operands'
    // (reduction factors appear only there).
    SmallVector<StringAttr> factorAxis(rule->factorSizes.size(), StringAttr::get(&getContext(), ""));
    auto gather = [&](Value v, ArrayRef<int64_t> factors, bool fromResult) {
      ShardingAttr s = layout_[v];
      for (auto [d, f] : llvm::enumerate(factors)) {
        if (f < 0 || !factorAxis[f].getValue().empty())
          continue;
        StringAttr a = s.getDims()[d];
        if (a.getValue().empty())
          continue;
        // An operand's split counts for a factor no result shows only when
        // a result lacking it is partial over that axis (propagation agreed
        // to split it).
        if (!fromResult && !llvm::any_of(llvm::enumerate(op->getResults()), [&](auto r) {
              return llvm::is_contained(rule->reducedFactors(r.index()), f) &&
                     llvm::is_contained(layout_[r.value()].getPartial(), a);
            }))
          continue;
        factorAxis[f] = a;
      }
    };
    for (auto [v, f] : llvm::zip_equal(op->getResults(), rule->resultFactors))
      gather(v, f, true);
    for (auto [v, f] : llvm::zip_equal(op->getOperands(), rule->operandFactors))
      gather(v, f, false);

    std::string userText = describeOp(op);
    for (auto [i, operand] : llvm::enumerate(op->getOpOperands())) {
      FailureOr<Value> c = convert(operand.get(), wanted(rule->operandFactors[i], factorAxis), op,
                                   userText);
      if (failed(c))
        return failure();
      operand.set(*c);
    }
    for (auto [v, f] : llvm::zip_equal(op->getResults(), rule->resultFactors)) {
      ShardingAttr s = layout_[v];
      if (wanted(f, factorAxis) != s.withoutPartial())
        return op->emitError() << "kiln-partition: result layout " << s
                               << " disagrees with the op's factors (internal error in "
                                  "kiln-propagate-sharding)";
      v.setType(localType(v, s));
    }
    return rewriteAttributes(op, *rule, factorAxis);
  }

  /// What changes besides the types: a slice's limits on split dimensions,
  /// a splat's shape, a mean over split dimensions.
  LogicalResult rewriteAttributes(Operation *op, const ShardingRule &rule,
                                  ArrayRef<StringAttr> factorAxis) {
    if (auto slice = dyn_cast<SliceOp>(op)) {
      SmallVector<int64_t> limits(slice.getLimitIndices());
      auto local = cast<RankedTensorType>(slice.getResult().getType()).getShape();
      for (size_t d = 0; d < limits.size(); ++d)
        if (rule.operandFactors[0][d] >= 0) // whole-range dimensions only
          limits[d] = local[d];
      slice.setLimitIndices(limits);
    } else if (auto constant = dyn_cast<ConstantOp>(op)) {
      auto dense = dyn_cast<DenseElementsAttr>(constant.getValue());
      auto type = cast<RankedTensorType>(constant.getResult().getType());
      if (dense && dense.getType() != type) {
        if (!dense.isSplat())
          return op->emitError() << "kiln-partition: a split constant must be a splat";
        constant.setValueAttr(dense.resizeSplat(type));
      }
    }
    if (!rule.meanReduction)
      return success();
    int64_t ranks = 1;
    for (int64_t f : rule.reducedFactors(0))
      if (!factorAxis[f].getValue().empty())
        ranks *= axisSize(factorAxis[f].getValue());
    if (ranks == 1)
      return success();
    // Each rank's mean is over 1/ranks of the elements: scaled by 1/ranks,
    // the partial sums add up to the global mean.
    Value mean = op->getResult(0);
    auto type = cast<RankedTensorType>(mean.getType());
    OpBuilder b(op->getContext());
    b.setInsertionPointAfter(op);
    auto elt = cast<FloatType>(type.getElementType());
    Value scale = ConstantOp::create(
        b, op->getLoc(), type,
        DenseElementsAttr::get(type, b.getFloatAttr(elt, 1.0 / static_cast<double>(ranks)).getValue()));
    Value scaled = MulOp::create(b, op->getLoc(), type, mean, scale);
    mean.replaceAllUsesExcept(scaled, scaled.getDefiningOp());
    scaledMeans_[scaled.getDefiningOp()] = op;
    layout_[scaled] = layout_[mean];
    return success();
  }
};

} // namespace
