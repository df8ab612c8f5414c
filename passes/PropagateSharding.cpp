//===- PropagateSharding.cpp - spread argument shardings to every value ----===//
//
// Fixed-point propagation over the ops' factor rules, forward and backward
// (docs/sharding.md). Only ever splits a dimension that was whole, so it
// terminates: each sweep either splits something or stops.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"
#include "passes/ShardingUtils.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"

namespace kiln {
#define GEN_PASS_DEF_PROPAGATESHARDINGPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;
using namespace kiln;

namespace {

/// A value's layout while propagating: per dimension the index of the
/// mesh axis splitting it (-1: whole), and the partial-sum axes as bits.
struct Layout {
  SmallVector<int> dims;
  unsigned partial = 0;
  /// Function arguments: the caller's layout, never changed.
  bool fixed = false;
  /// The dimensions whose split the model wrote (a column-parallel
  /// weight's), or that took their axis from such a split through the
  /// ops' factors (the expert dimension of an expert-parallel matmul's
  /// result, and of its gradients), as opposed to one this pass added
  /// (ZeRO's, sequence parallelism's, the batch's as it spreads). At an
  /// op, these axes win over others.
  unsigned pinnedDims = 0;
  /// An input (the batch): its pinned dimensions win at the ops that read
  /// it but do not spread (a weight's split wins where the two meet later).
  bool input = false;

  bool usesAxis(int axis) const {
    return (partial >> axis & 1) || llvm::is_contained(dims, axis);
  }
  bool isReplicated() const { return partial == 0 && llvm::all_of(dims, [](int a) { return a < 0; }); }
};

struct PropagateShardingPass
    : public kiln::impl::PropagateShardingPassBase<PropagateShardingPass> {
  using Base::Base;

  MeshAttr mesh_;
  llvm::DenseMap<Value, Layout> layouts_;
  /// Each op's rule, computed once.
  llvm::DenseMap<Operation *, FailureOr<ShardingRule>> rules_;

  const FailureOr<ShardingRule> &ruleOf(Operation *op) {
    auto it = rules_.find(op);
    if (it == rules_.end()) {
      auto ruleOp = dyn_cast<ShardingRuleOpInterface>(op);
      it = rules_.try_emplace(op, ruleOp ? ruleOp.getShardingRule() : FailureOr<ShardingRule>())
               .first;
    }
    return it->second;
  }

  /// Whether `v`'s producer can make dimension `d` split over axis `a`: an
  /// argument cannot change, an op result only where its rule has a factor
  /// there that the axis divides (a reshape's [B, T, H·D] dimension is the
  /// factor H: split over 4 ranks only when 4 divides H).
  bool canSplit(Value v, size_t d, int a) {
    auto result = dyn_cast<OpResult>(v);
    if (!result)
      return false;
    const FailureOr<ShardingRule> &rule = ruleOf(result.getOwner());
    if (failed(rule) || result.getResultNumber() >= rule->resultFactors.size())
      return false;
    int64_t f = rule->resultFactors[result.getResultNumber()][d];
    return f >= 0 && rule->factorSizes[f] % mesh_.getSizes()[a] == 0;
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    mesh_ = getMesh(module);
    if (!mesh_) {
      if (mesh.empty()) {
        module.emitError() << "kiln-propagate-sharding: the module has no kiln.mesh and no "
                              "mesh option was given (e.g. mesh=dp=2)";
        return signalPassFailure();
      }
      std::string error;
      FailureOr<MeshAttr> parsed = parseMesh(&getContext(), mesh, error);
      if (failed(parsed)) {
        module.emitError() << "kiln-propagate-sharding: " << error;
        return signalPassFailure();
      }
      mesh_ = *parsed;
      module->setAttr(KilnDialect::kMeshAttrName, mesh_);
    }
    auto funcs = functionsToShard(module, function, "kiln-propagate-sharding");
    if (failed(funcs))
      return signalPassFailure();
    for (func::FuncOp func : *funcs)
      if (failed(propagate(func)))
        return signalPassFailure();
  }

  LogicalResult propagate(func::FuncOp func) {
    layouts_.clear();
    rules_.clear();
    annotateMoments(func);
    // What the model wrote (with the moments that copy it), before this
    // pass adds its own marks.
    SmallVector<ShardingAttr> written;
    for (BlockArgument arg : func.getArguments())
      written.push_back(getSharding(arg));
    if (zero > 0)
      annotateZero(func);
    if (sequenceParallel)
      annotateSequence(func);
    if (failed(initArguments(func, written)))
      return failure();
    SmallVector<Operation *> ops;
    for (Operation &op : func.getBody().front().without_terminator())
      ops.push_back(&op);
    for (Operation *op : ops)
      for (Value v : op->getResults())
        layouts_[v] = Layout{SmallVector<int>(rankOf(v), -1), 0, false};
    // Each sweep splits at least one more dimension or ends the loop; the
    // dimensions are finite, so this ends.
    for (bool changed = true; changed;) {
      changed = false;
      for (Operation *op : ops) {
        FailureOr<bool> c = visit(op);
        if (failed(c))
          return failure();
        changed |= *c;
      }
      for (Operation *op : llvm::reverse(ops)) {
        FailureOr<bool> c = visit(op);
        if (failed(c))
          return failure();
        changed |= *c;
      }
    }
    record(func, ops);
    return success();
  }

  static int64_t rankOf(Value v) { return cast<RankedTensorType>(v.getType()).getRank(); }

  /// The mesh axis index of `name`; -1 for an axis of size 1 (splits
  /// nothing) ; fails for an axis the mesh does not have.
  FailureOr<int> axisIndex(StringRef name) {
    for (auto [i, n] : llvm::enumerate(mesh_.getNames()))
      if (n.getValue() == name)
        return mesh_.getSizes()[i] > 1 ? static_cast<int>(i) : -1;
    return failure();
  }

  /// An optimizer's moments take the layout of their parameter (a
  /// column-parallel weight's moments are split like it), unless annotated.
  void annotateMoments(func::FuncOp func) {
    func.walk([&](AdamWUpdateOp adam) {
      auto param = dyn_cast<BlockArgument>(adam.getParam());
      if (!param || param.getOwner()->getParentOp() != func)
        return;
      auto layout = func.getArgAttrOfType<ShardingAttr>(param.getArgNumber(),
                                                        KilnDialect::kShardingAttrName);
      if (!layout)
        return;
      for (Value moment : {adam.getM(), adam.getV()})
        if (auto arg = dyn_cast<BlockArgument>(moment);
            arg && arg.getOwner()->getParentOp() == func && arg.getType() == param.getType() &&
            !func.getArgAttr(arg.getArgNumber(), KilnDialect::kShardingAttrName))
          func.setArgAttr(arg.getArgNumber(), KilnDialect::kShardingAttrName, layout);
    });
  }

  /// ZeRO: optimizer states (and with stage 3 parameters) split over dp
  /// along their first dimension dp divides, unless annotated already.
  void annotateZero(func::FuncOp func) {
    int64_t dp = mesh_.getAxisSize("dp");
    if (dp == 1)
      return;
    for (BlockArgument arg : func.getArguments()) {
      unsigned i = arg.getArgNumber();
      bool state = func.getArgAttr(i, KilnDialect::kStateAttrName) != nullptr;
      bool param = func.getArgAttr(i, KilnDialect::kParamAttrName) != nullptr;
      if (!(state || (param && zero >= 3)))
        continue;
      auto shape = cast<RankedTensorType>(arg.getType()).getShape();
      // On top of an existing layout (a tensor-parallel weight's): the
      // first dimension it leaves whole.
      SmallVector<StringAttr> dims(shape.size(), StringAttr::get(&getContext(), ""));
      if (auto existing = func.getArgAttrOfType<ShardingAttr>(i, KilnDialect::kShardingAttrName))
        dims.assign(existing.getDims().begin(), existing.getDims().end());
      if (llvm::any_of(dims, [](StringAttr a) { return a.getValue() == "dp"; }))
        continue;
      for (auto [d, size] : llvm::enumerate(shape)) {
        int64_t split = dims[d].getValue().empty() ? 1 : mesh_.getAxisSize(dims[d].getValue());
        if (split != 1 || size % dp != 0)
          continue;
        dims[d] = StringAttr::get(&getContext(), "dp");
        func.setArgAttr(i, KilnDialect::kShardingAttrName,
                        ShardingAttr::get(&getContext(), dims, {}));
        break;
      }
    }
  }

  /// Sequence parallelism: every [batch, sequence] input's sequence
  /// dimension split over tp (where tp divides it), beside its batch split.
  void annotateSequence(func::FuncOp func) {
    int64_t tp = mesh_.getAxisSize("tp");
    if (tp == 1)
      return;
    for (BlockArgument arg : func.getArguments()) {
      unsigned i = arg.getArgNumber();
      auto shape = cast<RankedTensorType>(arg.getType()).getShape();
      if (!func.getArgAttr(i, KilnDialect::kInputAttrName) || shape.size() != 2 ||
          shape[1] % tp != 0)
        continue;
      SmallVector<StringAttr> dims(2, StringAttr::get(&getContext(), ""));
      if (auto existing = func.getArgAttrOfType<ShardingAttr>(i, KilnDialect::kShardingAttrName))
        dims.assign(existing.getDims().begin(), existing.getDims().end());
      if (!dims[1].getValue().empty() ||
          llvm::any_of(dims, [](StringAttr a) { return a.getValue() == "tp"; }))
        continue;
      dims[1] = StringAttr::get(&getContext(), "tp");
      func.setArgAttr(i, KilnDialect::kShardingAttrName, ShardingAttr::get(&getContext(), dims, {}));
    }
  }

  LogicalResult initArguments(func::FuncOp func, ArrayRef<ShardingAttr> written) {
    for (BlockArgument arg : func.getArguments()) {
      Layout layout{SmallVector<int>(rankOf(arg), -1), 0, true};
      ShardingAttr s = getSharding(arg);
      ShardingAttr mine = written[arg.getArgNumber()];
      layout.input = func.getArgAttr(arg.getArgNumber(), KilnDialect::kInputAttrName) != nullptr;
      for (auto [d, axis] : llvm::enumerate(s.getDims())) {
        if (axis.getValue().empty())
          continue;
        if (d < mine.getDims().size() && mine.getDims()[d] == axis)
          layout.pinnedDims |= 1u << d;
        FailureOr<int> a = axisIndex(axis.getValue());
        if (failed(a))
          return func.emitError() << "kiln-propagate-sharding: argument #" << arg.getArgNumber()
                                  << " is split over axis '" << axis.getValue()
                                  << "', which the mesh " << mesh_ << " does not have";
        if (*a < 0)
          continue;
        int64_t size = cast<RankedTensorType>(arg.getType()).getDimSize(d);
        if (size % mesh_.getSizes()[*a] != 0)
          return func.emitError() << "kiln-propagate-sharding: argument #" << arg.getArgNumber()
                                  << " (" << arg.getType() << ") splits dimension " << d
                                  << " of size " << size << " over '" << axis.getValue()
                                  << "' of size " << mesh_.getSizes()[*a]
                                  << ", which does not divide it";
        layout.dims[d] = *a;
      }
      if (!s.getPartial().empty())
        return func.emitError() << "kiln-propagate-sharding: argument #" << arg.getArgNumber()
                                << " is marked partial; arguments are whole or split";
      layouts_[arg] = layout;
    }
    return success();
  }

  /// One op: find each factor's axis, then split every dimension of it that
  /// is still whole. Returns whether anything changed.
  FailureOr<bool> visit(Operation *op) {
    const FailureOr<ShardingRule> &rule = ruleOf(op);
    if (failed(rule)) {
      auto split = [&](Value v) { return !layouts_[v].isReplicated(); };
      if (llvm::any_of(op->getOperands(), split) || llvm::any_of(op->getResults(), split))
        return op->emitError() << "kiln-propagate-sharding: " << op->getName()
                               << " has no sharding rule, and it reads or makes a split value "
                                  "(only kiln ops other than kiln.fusion and collectives have "
                                  "rules)";
      return false;
    }
    size_t numFactors = rule->factorSizes.size();
    SmallVector<int> factorAxis(numFactors, -1);
    SmallVector<bool> factorPinned(numFactors, false);
    unsigned used = 0;
    auto gather = [&](Value v, ArrayRef<int64_t> factors, unsigned dimsToRead) {
      const Layout &l = layouts_[v];
      for (auto [d, f] : llvm::enumerate(factors)) {
        if (f < 0 || d >= l.dims.size() || !(dimsToRead >> d & 1))
          continue;
        int a = l.dims[d];
        if (a < 0 || factorAxis[f] >= 0 || (used >> a & 1) ||
            rule->factorSizes[f] % mesh_.getSizes()[a] != 0)
          continue;
        factorAxis[f] = a;
        factorPinned[f] = (l.pinnedDims >> d & 1) && !l.input;
        used |= 1u << a;
      }
    };
    for (auto [v, f] : llvm::zip_equal(op->getResults(), rule->resultFactors))
      gather(v, f, ~0u);
    // The model's own annotations next: with sequence parallelism a norm's
    // output split by positions meets a column-parallel weight at the
    // matmul, and the weight's split wins (the activation is gathered, the
    // weight never is). A factor the op sums away is taken from them last,
    // after every factor that survives into a result: an axis that can
    // stay a split is not made a partial sum (the scatter-add of a mixture
    // of experts' slot gradients, split by expert, into its tokens, split
    // by group: the gradients move to the tokens' ranks, by all_to_all,
    // rather than every rank summing a whole table of tokens).
    SmallVector<bool> survives(numFactors, false);
    for (ArrayRef<int64_t> factors : rule->resultFactors)
      for (int64_t f : factors)
        if (f >= 0)
          survives[f] = true;
    auto only = [&](ArrayRef<int64_t> factors, bool surviving) {
      SmallVector<int64_t> kept(factors);
      for (int64_t &f : kept)
        if (f >= 0 && survives[f] != surviving)
          f = -1;
      return kept;
    };
    for (auto [v, f] : llvm::zip_equal(op->getOperands(), rule->operandFactors))
      gather(v, only(f, true), layouts_[v].pinnedDims);
    for (auto [v, f] : llvm::zip_equal(op->getOperands(), rule->operandFactors))
      gather(v, only(f, true), ~0u);
    for (auto [v, f] : llvm::zip_equal(op->getOperands(), rule->operandFactors))
      gather(v, f, layouts_[v].pinnedDims);
    for (auto [v, f] : llvm::zip_equal(op->getOperands(), rule->operandFactors))
      gather(v, f, ~0u);

    bool changed = false;
    auto apply = [&](Value v, ArrayRef<int64_t> factors) {
      Layout &l = layouts_[v];
      if (l.fixed)
        return;
      auto shape = cast<RankedTensorType>(v.getType()).getShape();
      for (auto [d, f] : llvm::enumerate(factors)) {
        if (f < 0 || factorAxis[f] < 0)
          continue;
        int a = factorAxis[f];
        // A split that came from the model's annotations is marked so.
        if (l.dims[d] == a && factorPinned[f] && !(l.pinnedDims >> d & 1)) {
          l.pinnedDims |= 1u << d;
          changed = true;
        }
        if (l.dims[d] >= 0)
          continue;
        if (l.usesAxis(a) || shape[d] % mesh_.getSizes()[a] != 0 || !canSplit(v, d, a))
          continue;
        l.dims[d] = a;
        if (factorPinned[f])
          l.pinnedDims |= 1u << d;
        changed = true;
      }
    };
    for (auto [v, f] : llvm::zip_equal(op->getResults(), rule->resultFactors))
      apply(v, f);
    for (auto [v, f] : llvm::zip_equal(op->getOperands(), rule->operandFactors))
      apply(v, f);
    // A split factor a result lacks leaves that result a partial sum.
    for (auto [r, v] : llvm::enumerate(op->getResults())) {
      Layout &l = layouts_[v];
      for (int64_t f : rule->reducedFactors(r)) {
        int a = factorAxis[f];
        if (a < 0 || (l.partial >> a & 1) || llvm::is_contained(l.dims, a))
          continue;
        l.partial |= 1u << a;
        changed = true;
      }
    }
    // A sum or difference of partial sums over an axis is a partial sum
    // over it: summed once after it rather than once per operand (a tied
    // embedding's two gradient halves cost one all_reduce, not two).
    if (isa<AddOp, SubOp>(op)) {
      Layout &l = layouts_[op->getResult(0)];
      unsigned common = ~0u;
      for (Value v : op->getOperands()) {
        const Layout &o = layouts_[v];
        common &= o.dims == l.dims ? o.partial : 0u;
      }
      for (int a = 0; a < static_cast<int>(mesh_.getSizes().size()); ++a)
        if ((common >> a & 1) && !(l.partial >> a & 1) && !llvm::is_contained(l.dims, a) &&
            !l.fixed) {
          l.partial |= 1u << a;
          changed = true;
        }
    }
    return changed;
  }

  ShardingAttr toAttr(const Layout &l) {
    MLIRContext *ctx = &getContext();
    SmallVector<StringAttr> dims, partial;
    for (int a : l.dims)
      dims.push_back(a < 0 ? StringAttr::get(ctx, "") : mesh_.getNames()[a]);
    for (size_t a = 0; a < mesh_.getNames().size(); ++a)
      if (l.partial >> a & 1)
        partial.push_back(mesh_.getNames()[a]);
    return ShardingAttr::get(ctx, dims, partial);
  }

  void record(func::FuncOp func, ArrayRef<Operation *> ops) {
    for (Operation *op : ops) {
      bool any = llvm::any_of(op->getResults(), [&](Value v) { return !layouts_[v].isReplicated(); });
      if (!any) {
        op->removeAttr(KilnDialect::kShardingsAttrName);
        continue;
      }
      SmallVector<Attribute> all;
      for (Value v : op->getResults())
        all.push_back(toAttr(layouts_[v]));
      op->setAttr(KilnDialect::kShardingsAttrName, ArrayAttr::get(&getContext(), all));
    }
    // A result that replaces an argument in place has the argument's layout;
    // the others (loss, logits) are whole for the caller unless it said
    // otherwise (partitioning sums or gathers them before the return).
    for (unsigned i = 0; i < func.getNumResults(); ++i) {
      if (func.getResultAttr(i, KilnDialect::kShardingAttrName))
        continue;
      auto alias = func.getResultAttrOfType<IntegerAttr>(i, KilnDialect::kAliasesAttrName);
      if (!alias)
        continue;
      const Layout &l = layouts_[func.getArgument(alias.getInt())];
      if (!l.isReplicated())
        func.setResultAttr(i, KilnDialect::kShardingAttrName, toAttr(l));
    }
  }
};

} // namespace
