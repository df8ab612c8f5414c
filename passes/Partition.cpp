//===- Partition.cpp - the per-rank program and its collectives ------------===//
//
// After kiln-propagate-sharding every value has a global layout. This pass
// rewrites the function into what each rank runs: per-rank shapes, and a
// collective wherever an op needs an operand in another layout than the one
// it was made in (docs/sharding.md, "Partitioning").
//
//===----------------------------------------------------------------------===//

#include "ir/KilnBuilders.h"
#include "passes/PassUtils.h"
#include "passes/Passes.h"
#include "passes/ShardingUtils.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

#include "llvm/ADT/StringExtras.h"

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
      want =
          want ? normalize(want) : ShardingAttr::getReplicated(&getContext(), layout_[v].getRank());
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
    SmallVector<ShardingAttr::Axes> dims;
    SmallVector<StringAttr> partial;
    for (const ShardingAttr::Axes &axes : s.getAllAxes()) {
      dims.emplace_back();
      for (StringAttr a : axes)
        if (axisSize(a.getValue()) > 1)
          dims.back().push_back(a);
    }
    for (StringAttr a : s.getPartial())
      if (axisSize(a.getValue()) > 1)
        partial.push_back(a);
    return ShardingAttr::of(&getContext(), dims, partial);
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

  /// The size of `axis`, or of a group of axes joined by ','.
  int64_t axisSize(StringRef axis) const { return mesh_.getAxisSize(axis); }

  /// A collective's group over `axes`, major first: "edp,ep" (one
  /// collective over every rank they span; kiln.all_reduce).
  static std::string groupOf(ArrayRef<StringRef> axes) { return llvm::join(axes, ","); }

  /// `axes` in the mesh's order (a sum's group has no order of its own;
  /// this one names it the same way everywhere, one NCCL communicator).
  SmallVector<StringRef, 2> inMeshOrder(ArrayRef<StringRef> axes) const {
    SmallVector<StringRef, 2> ordered;
    for (StringAttr name : mesh_.getNames())
      if (llvm::is_contained(axes, name.getValue()))
        ordered.push_back(name.getValue());
    for (StringRef a : axes) // (an axis the mesh lacks, last)
      if (!llvm::is_contained(ordered, a))
        ordered.push_back(a);
    return ordered;
  }

  RankedTensorType localType(Value v, ShardingAttr s) {
    auto t = cast<RankedTensorType>(v.getType());
    return RankedTensorType::get(s.localShape(t.getShape(), mesh_), t.getElementType());
  }

  /// The layout operand or result `factors` must have when the op's
  /// factors are split as `factorAxes` says.
  ShardingAttr wanted(ArrayRef<int64_t> factors, ArrayRef<ShardingAttr::Axes> factorAxes) {
    SmallVector<ShardingAttr::Axes> dims;
    for (int64_t f : factors)
      dims.push_back(f < 0 ? ShardingAttr::Axes() : factorAxes[f]);
    return ShardingAttr::of(&getContext(), dims, {});
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
    // Per dimension, the axes splitting it now and those wanted, major
    // first. A dimension split over [a, b] holds, on the rank with
    // coordinates (i, j), chunk i·|b| + j: appending an axis cuts a rank's
    // chunk further (a reduce_scatter or a take_shard over it), and only
    // the last (minor) axis can leave by itself (an all_gather or an
    // all_to_all over it).
    auto names = [](ShardingAttr s, unsigned d) {
      SmallVector<StringRef, 2> axes;
      for (StringAttr a : s.getAxes(d))
        axes.push_back(a.getValue());
      return axes;
    };
    SmallVector<SmallVector<StringRef, 2>> dims, wantDims;
    for (unsigned d = 0; d < have.getRank(); ++d) {
      dims.push_back(names(have, d));
      wantDims.push_back(names(want, d));
    }
    auto splitsOver = [&](StringRef axis) {
      return llvm::any_of(dims, [&](ArrayRef<StringRef> l) { return llvm::is_contained(l, axis); });
    };
    // Whether dimension d's wanted axes begin with its current ones.
    auto onTheWay = [&](size_t d) {
      return wantDims[d].size() >= dims[d].size() &&
             llvm::equal(ArrayRef(wantDims[d]).take_front(dims[d].size()), dims[d]);
    };
    // Whether `axis` is the next axis dimension d wants.
    auto nextWanted = [&](size_t d, StringRef axis) {
      return onTheWay(d) && wantDims[d].size() > dims[d].size() &&
             wantDims[d][dims[d].size()] == axis;
    };
    ArrayRef<StringAttr> partial = have.getPartial();
    // A partial operand asked for (a sum of partial sums) is partial over
    // those axes already, or whole over them (a gradient accumulator's
    // summand that came summed): it is kept on the axis's first rank and
    // zero on the others, an exact partial sum.
    for (StringAttr axis : want.getPartial())
      if (!llvm::is_contained(partial, axis)) {
        if (splitsOver(axis.getValue()))
          return user->emitError()
                 << "kiln-partition: " << userText << " wants a partial sum over "
                 << axis.getValue() << " of a value split over it (internal error)";
        cur = onFirstRank(b, loc, cur, axis.getValue(),
                          userText.str() + " needs a partial sum over " + axis.getValue().str() +
                              "; " + source + " made it whole");
      }
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
    // Partial sums first. Where the wanted layout splits a dimension over
    // the axis next, the sum is reduce-scattered into it (over edp, then
    // ep, for a gradient wanted split over both).
    SmallVector<StringRef> toSum;
    for (StringAttr axis : partial)
      if (!llvm::is_contained(want.getPartial(), axis))
        toSum.push_back(axis.getValue()); // (else summed later: a sum of partial sums)
    // The axes dimension d wants next, in order, while each is one of
    // `pool` and splits no dimension: those one collective can add to d.
    auto wantedRun = [&](size_t d, ArrayRef<StringRef> pool) {
      SmallVector<StringRef, 2> run;
      if (!onTheWay(d))
        return run;
      for (size_t i = dims[d].size(); i < wantDims[d].size(); ++i) {
        StringRef axis = wantDims[d][i];
        if (!llvm::is_contained(pool, axis) || splitsOver(axis))
          break;
        run.push_back(axis);
      }
      return run;
    };
    for (bool scattered = true; scattered;) {
      scattered = false;
      for (size_t d = 0; d < dims.size() && !scattered; ++d) {
        SmallVector<StringRef, 2> run = wantedRun(d, toSum);
        if (run.empty())
          continue;
        std::string over = groupOf(run);
        std::string cause = source + " leaves a partial sum over " + over + "; " + userText.str() +
                            " needs its part of dimension " + std::to_string(d) + " summed";
        int64_t size = cast<RankedTensorType>(cur.getType()).getDimSize(d) / axisSize(over);
        cur = ReduceScatterOp::create(b, loc, withDim(d, size), cur, over, d, cause);
        for (StringRef axis : run) {
          dims[d].push_back(axis);
          llvm::erase(toSum, axis);
        }
        scattered = true;
      }
    }
    // The rest summed by one all_reduce over all of them.
    if (!toSum.empty()) {
      std::string over = groupOf(inMeshOrder(toSum));
      std::string cause = source + " leaves a partial sum over " + over + "; " + userText.str() +
                          " needs it summed";
      cur = AllReduceOp::create(b, loc, cur.getType(), cur, over, cause);
    }
    // An axis that moves from one dimension to another (tokens split by
    // group, wanted split by expert): one all_to_all, each rank's part
    // exchanged, never the whole value gathered.
    for (bool moved = true; moved;) {
      moved = false;
      for (size_t from = 0; from < dims.size() && !moved; ++from) {
        if (dims[from].empty() || onTheWay(from))
          continue;
        StringRef axis = dims[from].back();
        size_t to = 0;
        while (to < dims.size() && !(to != from && nextWanted(to, axis)))
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
        cur = AllToAllOp::create(b, loc, RankedTensorType::get(shape, t.getElementType()), cur,
                                 axis, static_cast<int64_t>(to), static_cast<int64_t>(from), cause);
        dims[to].push_back(axis);
        dims[from].pop_back();
        moved = true;
      }
    }
    // Then each dimension split one way and wanted another: the axes past
    // the common major part gathered (minor first), then (no
    // communication) this rank's part taken for each wanted axis, once no
    // other dimension is split over it.
    // (The minor axes that must go, gathered by one all_gather over all of
    // them: the group's coordinate orders the chunks as the dimension did.)
    auto gatherExtra = [&](size_t d) {
      SmallVector<StringRef, 2> run;
      while (!onTheWay(d))
        run.insert(run.begin(), dims[d].pop_back_val());
      if (run.empty())
        return;
      std::string over = groupOf(run);
      std::string cause = source + " splits dimension " + std::to_string(d) + " over " + over +
                          "; " + userText.str() +
                          (dims[d].empty() ? " needs it whole" : " needs it split over fewer axes");
      int64_t size = cast<RankedTensorType>(cur.getType()).getDimSize(d) * axisSize(over);
      cur =
          AllGatherOp::create(b, loc, withDim(d, size), cur, over, static_cast<int64_t>(d), cause);
    };
    auto takeWanted = [&](size_t d) {
      SmallVector<StringRef, 2> run;
      for (size_t i = dims[d].size(); i < wantDims[d].size() && !splitsOver(wantDims[d][i]); ++i)
        run.push_back(wantDims[d][i]);
      if (run.empty())
        return;
      std::string over = groupOf(run);
      std::string cause = userText.str() + " needs dimension " + std::to_string(d) +
                          " split over " + over + "; " + source +
                          (dims[d].empty() ? " made it whole" : " made it split less");
      int64_t size = cast<RankedTensorType>(cur.getType()).getDimSize(d) / axisSize(over);
      cur =
          TakeShardOp::create(b, loc, withDim(d, size), cur, over, static_cast<int64_t>(d), cause);
      dims[d].append(run.begin(), run.end());
    };
    for (size_t d = 0; d < dims.size(); ++d) {
      gatherExtra(d);
      takeWanted(d);
    }
    for (size_t d = 0; d < dims.size(); ++d) {
      takeWanted(d);
      if (dims[d] != wantDims[d])
        return user->emitError() << "kiln-partition: cannot convert " << have << " to " << want
                                 << " for " << userText << " (internal error)";
    }
    converted_[key] = cur;
    return cur;
  }

  /// `v` on the rank whose coordinate along `axis` is 0, zero on the
  /// others: a whole value as a partial sum over `axis`. The coordinate is
  /// this rank's part of an iota over the axis (kiln.take_shard, no
  /// communication).
  Value onFirstRank(OpBuilder &b, Location loc, Value v, StringRef axis, const std::string &cause) {
    auto type = cast<RankedTensorType>(v.getType());
    auto i32 = b.getI32Type();
    Value iota = IotaOp::create(b, loc, RankedTensorType::get({axisSize(axis)}, i32), 0);
    Value mine = TakeShardOp::create(b, loc, RankedTensorType::get({1}, i32), iota, axis, 0, cause);
    Value first = build::compare(b, loc, CompareDirection::eq, mine,
                                 build::splat(b, loc, RankedTensorType::get({1}, i32), 0));
    if (type.getRank() == 0)
      first = build::reshape(b, loc, first, {});
    else
      first = build::broadcastInDim(b, loc, first, type.getShape(), {0});
    return build::select(b, loc, first, v, build::splatLike(b, loc, v, 0.0));
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
        target = ShardingAttr::getReplicated(&getContext(), target.getRank());
        for (Operation *use : v.getUsers())
          if (auto adam = dyn_cast<AdamWUpdateOp>(use); adam && adam.getGrad() == v)
            target = layout_[adam->getResult(0)].withoutPartial();
      }
      FailureOr<Value> c = convert(v, target, norm, userText);
      if (failed(c))
        return failure();
      std::string key;
      SmallVector<StringRef> axes;
      for (const ShardingAttr::Axes &list : target.getAllAxes())
        for (StringAttr a : list)
          if (!llvm::is_contained(axes, a.getValue()))
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
      if (!groupAxes[key].empty()) {
        std::string over = groupOf(inMeshOrder(groupAxes[key]));
        squares = AllReduceOp::create(b, loc, type, squares, over,
                                      "the squares of gradients split over " + over + " (" +
                                          std::to_string(operands.size()) + " tensors); " +
                                          userText + " needs their sum");
      }
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
    SmallVector<ShardingAttr::Axes> factorAxes(rule->factorSizes.size());
    auto gather = [&](Value v, ArrayRef<int64_t> factors, bool fromResult) {
      ShardingAttr s = layout_[v];
      for (auto [d, factor] : llvm::enumerate(factors)) {
        const int64_t f = factor; // (a lambda below captures it)
        if (f < 0 || (fromResult && !factorAxes[f].empty()))
          continue;
        ShardingAttr::Axes axes = s.getAxes(d);
        // An operand's split counts for a factor no result shows only as
        // far as a result lacking it is partial over its axes (propagation
        // agreed to split it that far); of several operands, the one that
        // goes furthest (propagation extends a factor's axes so).
        if (!fromResult) {
          ShardingAttr::Axes summed;
          for (StringAttr a : axes) {
            if (!llvm::any_of(llvm::enumerate(op->getResults()), [&](auto r) {
                  return llvm::is_contained(rule->reducedFactors(r.index()), f) &&
                         llvm::is_contained(layout_[r.value()].getPartial(), a);
                }))
              break;
            summed.push_back(a);
          }
          axes = summed;
          if (axes.size() <= factorAxes[f].size())
            continue;
        }
        factorAxes[f] = axes;
      }
    };
    for (auto [v, f] : llvm::zip_equal(op->getResults(), rule->resultFactors))
      gather(v, f, true);
    for (auto [v, f] : llvm::zip_equal(op->getOperands(), rule->operandFactors))
      gather(v, f, false);

    std::string userText = describeOp(op);
    for (auto [i, operand] : llvm::enumerate(op->getOpOperands())) {
      ShardingAttr want = wanted(rule->operandFactors[i], factorAxes);
      // An add or sub whose result propagation left partial takes its
      // operands partial over the same axes; so does an op a partial sum
      // passes through.
      if ((isa<AddOp, SubOp>(op) || passesPartialSums(op)) && layout_[op->getResult(0)].isPartial())
        want = ShardingAttr::get(&getContext(), want.getDims(),
                                 layout_[op->getResult(0)].getPartial());
      FailureOr<Value> c = convert(operand.get(), want, op, userText);
      if (failed(c))
        return failure();
      operand.set(*c);
    }
    for (auto [v, f] : llvm::zip_equal(op->getResults(), rule->resultFactors)) {
      ShardingAttr s = layout_[v];
      if (wanted(f, factorAxes) != s.withoutPartial())
        return op->emitError() << "kiln-partition: result layout " << s
                               << " disagrees with the op's factors (internal error in "
                                  "kiln-propagate-sharding)";
      v.setType(localType(v, s));
    }
    if (auto matmul = dyn_cast<MatmulOp>(op); matmul && matmul.getBias() &&
                                                 layout_[matmul.getResult()].isPartial())
      splitBias(matmul);
    return rewriteAttributes(op, *rule, factorAxes);
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
    SmallVector<ShardingAttr::Axes> dims = layout.getAllAxes();
    Operation *user = result.hasOneUse() ? *result.getUsers().begin() : nullptr;
    ShardingAttr userLayout;
    if (user && user->hasTrait<kiln::OpTrait::Elementwise>() && user->getNumResults() == 1)
      userLayout = layout_[user->getResult(0)];
    Value sum = result;
    Operation *first = nullptr; // the collective that reads the partial product
    // Whether the user's dimension d is this one's axes and then `axis`.
    auto nextWanted = [&](int64_t d, StringAttr axis) {
      ShardingAttr::Axes want = userLayout.getAxes(d);
      return userLayout.getRank() == static_cast<size_t>(rank) &&
             want.size() == dims[d].size() + 1 && want.back() == axis &&
             llvm::equal(ArrayRef(want).drop_back(), dims[d]) &&
             !llvm::any_of(dims,
                           [&](ArrayRef<StringAttr> l) { return llvm::is_contained(l, axis); });
    };
    for (StringAttr axis : layout.getPartial()) {
      int64_t d = 0;
      while (userLayout && d < rank - 1 && !nextWanted(d, axis))
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
        dims[d].push_back(axis);
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
    ShardingAttr summed = ShardingAttr::of(&getContext(), dims, {});
    layout_[out] = summed;
    layout_[broadcast] = summed;
    layout_[sum] = summed;
  }

  /// What changes besides the types: a slice's limits on split dimensions,
  /// a splat's shape, a mean over split dimensions.
  LogicalResult rewriteAttributes(Operation *op, const ShardingRule &rule,
                                  ArrayRef<ShardingAttr::Axes> factorAxes) {
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
      for (StringAttr a : factorAxes[f])
        ranks *= axisSize(a.getValue());
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
