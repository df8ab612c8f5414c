//===- Partition.cpp - the per-rank program and its collectives ------------===//
//
// After kiln-propagate-sharding every value has a global layout. This pass
// rewrites the function into what each rank runs: per-rank shapes, and a
// collective wherever an op needs an operand in another layout than the one
// it was made in (docs/sharding.md, "Partitioning").
//
//===----------------------------------------------------------------------===//

#include "passes/PassUtils.h"
#include "passes/Passes.h"
#include "passes/ShardingUtils.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

#include <map>


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
    if (!mesh_) {
      module.emitError() << "kiln-partition: the module has no kiln.mesh (run "
                            "kiln-propagate-sharding first)";
      return signalPassFailure();
    }
    auto funcs = functionsToShard(module, function, "kiln-partition");
    if (failed(funcs))
      return signalPassFailure();
    for (func::FuncOp func : *funcs)
      if ((!function.empty() || isSplit(func)) && failed(partition(func)))
        return signalPassFailure();
  }

  /// Whether anything of `func` is split or partial on the mesh (a function
  /// that is not runs whole on every rank, unchanged).
  bool isSplit(func::FuncOp func) {
    if (llvm::any_of(func.getArguments(),
                     [&](Value v) { return !normalize(getSharding(v)).isReplicated(); }))
      return true;
    bool any = false;
    func.walk([&](Operation *op) { any |= op->hasAttr(KilnDialect::kShardingsAttrName); });
    return any;
  }

  LogicalResult partition(func::FuncOp func) {
    layout_.clear();
    converted_.clear();
    rules_.clear();
    scaledMeans_.clear();
    Block &body = func.getBody().front();
    for (BlockArgument arg : func.getArguments())
      layout_[arg] = normalize(getSharding(arg));
    SmallVector<Operation *> ops;
    for (Operation &op : body.without_terminator()) {
      ops.push_back(&op);
      for (Value v : op.getResults())
        layout_[v] = normalize(getSharding(v));
      auto ruleOp = dyn_cast<ShardingRuleOpInterface>(op);
      rules_.try_emplace(&op, ruleOp ? ruleOp.getShardingRule() : FailureOr<ShardingRule>());
    }
    for (BlockArgument arg : func.getArguments())
      arg.setType(localType(arg, layout_[arg]));
    for (Operation *op : ops)
      if (failed(partitionOp(op)))
        return failure();
    auto ret = cast<func::ReturnOp>(body.getTerminator());
    SmallVector<Type> resultTypes;
    for (auto [i, operand] : llvm::enumerate(ret->getOpOperands())) {
      Value v = operand.get();
      auto want = func.getResultAttrOfType<ShardingAttr>(i, KilnDialect::kShardingAttrName);
      want = want ? normalize(want)
                  : ShardingAttr::getReplicated(&getContext(), layout_[v].getDims().size());
      FailureOr<Value> c = convert(v, want, ret, "the function result");
      if (failed(c))
        return failure();
      operand.set(*c);
      resultTypes.push_back(c->getType());
    }
    func.setFunctionType(FunctionType::get(&getContext(), body.getArgumentTypes(), resultTypes));
    func->setAttr(KilnDialect::kPartitionedAttrName, UnitAttr::get(&getContext()));
    // A reduction (all_reduce, reduce_scatter) runs as soon as its operand
    // exists, not where its first user needs it: a gradient's sum over dp
    // starts during the backward (on the GPU, NCCL's stream overlaps it
    // with the ops after), and under ZeRO-2/3 the whole gradient can be
    // freed there instead of at the optimizer. Gathers stay where they are (a
    // ZeRO-3 parameter gathered at the start would live all step).
    for (Operation &op : llvm::make_early_inc_range(body.without_terminator()))
      if (isa<AllReduceOp, ReduceScatterOp>(op))
        if (Operation *def = op.getOperand(0).getDefiningOp())
          op.moveAfter(def);
    prefetchGathers(body);
    return success();
  }

  /// Where a run of ops begins and ends: an op's transformer block ("h.3"),
  /// or its whole scope outside blocks ("embed").
  static std::string runOf(Operation *op) {
    std::string block = blockOf(op);
    return block.empty() ? scopeOf(op) : block;
  }

  /// A parameter, or its copy in the low precision (a cast of it).
  static bool isParameter(Value v) {
    while (auto cast = v.getDefiningOp<CastOp>())
      v = cast.getOperand();
    auto arg = dyn_cast<BlockArgument>(v);
    if (!arg)
      return false;
    auto func = dyn_cast<func::FuncOp>(arg.getOwner()->getParentOp());
    return func && func.getArgAttr(arg.getArgNumber(), KilnDialect::kParamAttrName);
  }

  /// A gather (a ZeRO-3 parameter's) is issued a block ahead of its first
  /// use: where the run of ops of the block before its user's begins, in
  /// program order (in the backward, the later block's gradient), but
  /// never before its operand exists. On the GPU it then runs on the
  /// collectives' stream while that block computes; the gathered copy
  /// lives one block longer. Gathers of activations (sequence parallelism)
  /// stay where they are: holding those longer costs far more memory.
  void prefetchGathers(Block &body) {
    // The first op of the block run before each op's own run.
    llvm::DenseMap<Operation *, Operation *> runBefore;
    Operation *runStart = nullptr, *previousRun = nullptr;
    std::string current;
    for (Operation &op : body.without_terminator()) {
      if (!isCollective(&op)) {
        std::string block = runOf(&op);
        if (!runStart || block != current) {
          previousRun = runStart;
          runStart = &op;
          current = block;
        }
      }
      runBefore[&op] = previousRun;
    }
    for (Operation &op : llvm::make_early_inc_range(body.without_terminator())) {
      auto gather = dyn_cast<AllGatherOp>(op);
      if (!gather || gather->use_empty() || !isParameter(gather.getOperand()))
        continue;
      Operation *user = nullptr;
      for (Operation *u : gather->getUsers())
        if (u->getBlock() == &body && (!user || u->isBeforeInBlock(user)))
          user = u;
      Operation *target = user ? runBefore.lookup(user) : nullptr;
      if (!target || !target->isBeforeInBlock(gather))
        continue;
      if (Operation *def = gather.getOperand().getDefiningOp())
        if (!def->isBeforeInBlock(target))
          target = def->getNextNode();
      if (target != gather.getOperation() && target->isBeforeInBlock(gather)) {
        gather->moveBefore(target);
        // Said in --explain-sharding's line for it.
        std::string where = runOf(target);
        gather.setCause((gather.getCause() + "; gathered a block ahead" +
                         (where.empty() ? "" : ", where \"" + where + "\" begins"))
                            .str());
      }
    }
  }

  /// `s` without the axes of size 1 (they split nothing).
  ShardingAttr normalize(ShardingAttr s) {
    auto real = [&](StringAttr a) {
      return a.getValue().empty() || axisSize(a.getValue()) > 1 ? a : StringAttr::get(&getContext(), "");
    };
    SmallVector<StringAttr> dims, partial;
    for (StringAttr a : s.getDims())
      dims.push_back(real(a));
    for (StringAttr a : s.getPartial())
      if (axisSize(a.getValue()) > 1)
        partial.push_back(a);
    return ShardingAttr::get(&getContext(), dims, partial);
  }

  /// "parameter h.0.mlp.fc.w" for a function argument.
  static std::string describeArgument(Value v) {
    auto arg = cast<BlockArgument>(v);
    auto func = cast<func::FuncOp>(arg.getOwner()->getParentOp());
    for (auto [attr, what] : {std::pair{KilnDialect::kParamAttrName, "parameter"},
                              std::pair{KilnDialect::kStateAttrName, "optimizer state"},
                              std::pair{KilnDialect::kInputAttrName, "input"}})
      if (auto name = func.getArgAttrOfType<StringAttr>(arg.getArgNumber(), attr))
        return std::string(what) + " " + name.getValue().str();
    return "argument #" + std::to_string(arg.getArgNumber());
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
    std::string source = producer ? describeOp(producer) : describeArgument(v);
    // A gradient is named by its parameter (the optimizer's operand).
    for (Operation *use : v.getUsers())
      if (auto adam = dyn_cast<AdamWUpdateOp>(use); adam && adam.getGrad() == v)
        if (auto param = dyn_cast<BlockArgument>(adam.getParam()))
          if (auto func = dyn_cast<func::FuncOp>(param.getOwner()->getParentOp()))
            if (auto name = func.getArgAttrOfType<StringAttr>(param.getArgNumber(),
                                                              KilnDialect::kParamAttrName))
              source = "the gradient of " + name.getValue().str() + " (" + source + ")";
    OpBuilder b(user);
    Location loc = user->getLoc();
    Value cur = v;
    SmallVector<StringRef> dims;
    for (StringAttr a : have.getDims())
      dims.push_back(a.getValue());
    ArrayRef<StringAttr> partial = have.getPartial();
    // A partial operand asked for (a sum of partial sums) must be partial
    // over those axes.
    for (StringAttr axis : want.getPartial())
      if (!llvm::is_contained(partial, axis))
        return user->emitError() << "kiln-partition: " << userText << " wants a partial sum over "
                                 << axis.getValue() << " that its operand is not (internal error)";
    // A conversion of v to its sum, made for an earlier user, serves as the
    // start (a ZeRO-1 gradient: summed once for the norm, then each rank's
    // part taken without more communication); never where a partial sum is
    // wanted.
    if (!partial.empty() && want.getPartial().empty())
      if (auto it = converted_.find({v, Attribute(have.withoutPartial())}); it != converted_.end()) {
        cur = it->second;
        partial = {};
      }
    auto withDim = [&](int64_t d, int64_t size) {
      auto t = cast<RankedTensorType>(cur.getType());
      SmallVector<int64_t> shape(t.getShape());
      shape[d] = size;
      return RankedTensorType::get(shape, t.getElementType());
    };
    // Partial sums first. Where the wanted layout splits a whole dimension
    // over the same axis, the sum is reduce-scattered into it.
    for (StringAttr axis : partial) {
      if (llvm::is_contained(want.getPartial(), axis))
        continue; // summed later (a sum of partial sums stays partial)
      int64_t d = 0, rank = static_cast<int64_t>(dims.size());
      while (d < rank && !(want.getAxis(d) == axis.getValue() && dims[d].empty() &&
                           !llvm::is_contained(dims, axis.getValue())))
        ++d;
      if (d < rank) {
        std::string cause = source + " leaves a partial sum over " + axis.getValue().str() + "; " +
                            userText.str() + " needs its part of dimension " +
                            std::to_string(d) + " summed";
        int64_t size = cast<RankedTensorType>(cur.getType()).getDimSize(d) / axisSize(axis.getValue());
        cur = ReduceScatterOp::create(b, loc, withDim(d, size), cur, axis.getValue(), d, cause);
        dims[d] = axis.getValue();
        continue;
      }
      std::string cause = source + " leaves a partial sum over " + axis.getValue().str() + "; " +
                          userText.str() + " needs it summed";
      cur = AllReduceOp::create(b, loc, cur.getType(), cur, axis.getValue(), cause);
    }
    // An axis that moves from one dimension to another (tokens split by
    // group, wanted split by expert): one all_to_all, each rank's part
    // exchanged, never the whole value gathered.
    for (size_t from = 0; from < dims.size(); ++from) {
      StringRef axis = dims[from];
      if (axis.empty() || want.getAxis(from) == axis)
        continue;
      size_t to = 0;
      while (to < dims.size() && !(dims[to].empty() && want.getAxis(to) == axis))
        ++to;
      if (to == dims.size())
        continue;
      auto t = cast<RankedTensorType>(cur.getType());
      SmallVector<int64_t> shape(t.getShape());
      shape[to] /= axisSize(axis);
      shape[from] *= axisSize(axis);
      std::string cause = source + " splits dimension " + std::to_string(from) + " over " +
                          axis.str() + "; " + userText.str() + " needs dimension " +
                          std::to_string(to) + " split over it instead";
      cur = AllToAllOp::create(b, loc, RankedTensorType::get(shape, t.getElementType()), cur, axis,
                               static_cast<int64_t>(to), static_cast<int64_t>(from), cause);
      dims[to] = axis;
      dims[from] = "";
    }
    // Then each dimension split one way and wanted another: gathered whole,
    // then (no communication) this rank's part taken.
    for (auto [d, axis] : llvm::enumerate(dims)) {
      StringRef wantAxis = want.getAxis(d);
      if (axis == wantAxis)
        continue;
      int64_t size = cast<RankedTensorType>(cur.getType()).getDimSize(d);
      if (!axis.empty()) {
        std::string cause = source + " splits dimension " + std::to_string(d) + " over " +
                            axis.str() + "; " + userText.str() + " needs it whole";
        size *= axisSize(axis);
        cur = AllGatherOp::create(b, loc, withDim(d, size), cur, axis, static_cast<int64_t>(d),
                                  cause);
      }
      if (!wantAxis.empty()) {
        std::string cause = userText.str() + " needs dimension " + std::to_string(d) +
                            " split over " + wantAxis.str() + "; " + source + " made it whole";
        size /= axisSize(wantAxis);
        cur = TakeShardOp::create(b, loc, withDim(d, size), cur, wantAxis, static_cast<int64_t>(d),
                                  cause);
      }
    }
    converted_[key] = cur;
    return cur;
  }

  /// The norm of all gradients, whatever their layouts: each operand is
  /// taken in the layout the optimizer wants it in (split under ZeRO, so a
  /// split gradient is never gathered for the norm), the sum of squares of
  /// each group of operands split over the same axes is all-reduced over
  /// them, and the norm is the root of the total.
  LogicalResult partitionNorm(GlobalNormOp norm) {
    std::string userText = describeOp(norm);
    std::map<std::string, SmallVector<Value>> groups; // split axes -> operands
    std::map<std::string, SmallVector<StringRef>> groupAxes;
    for (OpOperand &operand : norm->getOpOperands()) {
      Value v = operand.get();
      ShardingAttr target = layout_[v].withoutPartial();
      if (layout_[v].isPartial()) {
        target = ShardingAttr::getReplicated(&getContext(), target.getDims().size());
        for (Operation *use : v.getUsers())
          if (auto adam = dyn_cast<AdamWUpdateOp>(use); adam && adam.getGrad() == v)
            target = layout_[adam->getResult(0)].withoutPartial();
      }
      FailureOr<Value> c = convert(v, target, norm, userText);
      if (failed(c))
        return failure();
      std::string key;
      SmallVector<StringRef> axes;
      for (StringAttr a : target.getDims())
        if (!a.getValue().empty() && !llvm::is_contained(axes, a.getValue()))
          axes.push_back(a.getValue());
      llvm::sort(axes);
      for (StringRef a : axes)
        key += a.str() + ",";
      groups[key].push_back(*c);
      groupAxes[key] = axes;
    }
    if (groups.size() == 1 && groups.begin()->first.empty()) {
      norm->setOperands(groups.begin()->second);
      return success();
    }
    OpBuilder b(norm);
    Location loc = norm.getLoc();
    Type type = norm.getNorm().getType();
    Value total;
    for (auto &[key, operands] : groups) {
      Value n = GlobalNormOp::create(b, loc, type, operands);
      Value squares = MulOp::create(b, loc, type, n, n);
      for (StringRef axis : groupAxes[key])
        squares = AllReduceOp::create(
            b, loc, type, squares, axis,
            "the squares of gradients split over " + axis.str() + " (" +
                std::to_string(operands.size()) + " tensors); " + userText + " needs their sum");
      total = total ? AddOp::create(b, loc, type, total, squares).getResult() : squares;
    }
    Value result = SqrtOp::create(b, loc, type, total);
    layout_[result] = ShardingAttr::getReplicated(&getContext(), 0);
    norm.getNorm().replaceAllUsesWith(result);
    norm->erase();
    return success();
  }

  LogicalResult partitionOp(Operation *op) {
    // The layouts were read into layout_; the per-rank IR has no use for them.
    op->removeAttr(KilnDialect::kShardingsAttrName);
    if (auto norm = dyn_cast<GlobalNormOp>(op))
      return partitionNorm(norm);
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
      for (auto [d, factor] : llvm::enumerate(factors)) {
        const int64_t f = factor; // (a lambda below captures it)
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
      ShardingAttr want = wanted(rule->operandFactors[i], factorAxis);
      // An add or sub whose result propagation left partial takes its
      // operands partial over the same axes.
      if (isa<AddOp, SubOp>(op) && layout_[op->getResult(0)].isPartial())
        want = ShardingAttr::get(&getContext(), want.getDims(),
                                 layout_[op->getResult(0)].getPartial());
      FailureOr<Value> c = convert(operand.get(), want, op, userText);
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
    if (auto matmul = dyn_cast<MatmulOp>(op); matmul && matmul.getBias() &&
                                                 layout_[matmul.getResult()].isPartial())
      splitBias(matmul);
    return rewriteAttributes(op, *rule, factorAxis);
  }

  /// A matmul whose products are partial sums (a row-parallel layer) must
  /// add its bias once, not on every rank: the bias comes out of the
  /// cuBLASLt epilogue and is added after the partial products are summed.
  void splitBias(MatmulOp matmul) {
    Value result = matmul.getResult();
    ShardingAttr layout = layout_[result];
    Value bias = matmul.getBias();
    matmul.getBiasMutable().clear();
    OpBuilder b(matmul->getContext());
    b.setInsertionPointAfter(matmul);
    Location loc = matmul.getLoc();
    auto type = cast<RankedTensorType>(result.getType());
    int64_t rank = type.getRank();
    // Sequence parallelism: when the product's one user (the residual add)
    // wants a dimension split over a partial axis, the sum is
    // reduce-scattered into it (half an all-reduce's traffic) and the bias
    // added to this rank's part.
    SmallVector<StringAttr> dims(layout.getDims());
    Operation *user = result.hasOneUse() ? *result.getUsers().begin() : nullptr;
    ShardingAttr userLayout;
    if (user && user->hasTrait<kiln::OpTrait::Elementwise>() && user->getNumResults() == 1)
      userLayout = layout_[user->getResult(0)];
    Value sum = result;
    Operation *first = nullptr; // the collective that reads the partial product
    for (StringAttr axis : layout.getPartial()) {
      int64_t d = 0;
      while (userLayout && d < rank - 1 &&
             !(userLayout.getDims().size() == static_cast<size_t>(rank) &&
               userLayout.getAxis(d) == axis.getValue() && dims[d].getValue().empty()))
        ++d;
      if (userLayout && d < rank - 1) {
        auto t = cast<RankedTensorType>(sum.getType());
        SmallVector<int64_t> shape(t.getShape());
        shape[d] /= axisSize(axis.getValue());
        sum = ReduceScatterOp::create(
            b, loc, RankedTensorType::get(shape, t.getElementType()), sum, axis.getValue(), d,
            describeOp(matmul) + " leaves a partial sum over " + axis.getValue().str() + "; " +
                describeOp(user) + " needs its part of dimension " + std::to_string(d) +
                " summed (the bias added after, once)");
        dims[d] = axis;
      } else {
        sum = AllReduceOp::create(b, loc, sum.getType(), sum, axis.getValue(),
                                  describeOp(matmul) + " sums over " + axis.getValue().str() +
                                      " before its bias is added (once, not per rank)");
      }
      if (!first)
        first = sum.getDefiningOp();
    }
    auto local = cast<RankedTensorType>(sum.getType());
    Value broadcast =
        BroadcastInDimOp::create(b, loc, local, bias, ArrayRef<int64_t>{rank - 1});
    Value out = AddOp::create(b, loc, local, sum, broadcast);
    result.replaceUsesWithIf(out, [&](OpOperand &use) {
      return use.getOwner() != first && use.getOwner() != out.getDefiningOp();
    });
    ShardingAttr summed = ShardingAttr::get(&getContext(), dims, {});
    layout_[out] = summed;
    layout_[broadcast] = summed;
    layout_[sum] = summed;
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
    // A copy first: inserting `scaled` may grow the map and move `mean`'s entry.
    ShardingAttr meanLayout = layout_.lookup(mean);
    layout_[scaled] = meanLayout;
    return success();
  }
};

} // namespace
