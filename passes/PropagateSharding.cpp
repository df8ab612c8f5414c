//===- PropagateSharding.cpp - spread argument shardings to every value ----===//
//
// Fixed-point propagation over the ops' factor rules, forward and backward
// (docs/sharding.md). Only ever splits a dimension further (a whole one,
// or one split over a major part of the axes it gets), so it terminates:
// each sweep either splits something or stops.
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

/// The mesh axes (their indices) splitting one dimension, major first;
/// empty when whole.
using AxisList = SmallVector<int, 2>;

/// A value's layout while propagating: per dimension the mesh axes
/// splitting it, and the partial-sum axes as bits.
struct Layout {
  SmallVector<AxisList> dims;
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
  /// Dimensions split only for storage: ZeRO's split of a parameter, and
  /// what elementwise ops (its cast) make of it. They pass through
  /// elementwise ops and the optimizer's update, and drive no factor of any
  /// other op, which gathers the value instead (ZeRO 3's gather before
  /// use): an expert's bias split over edp does not split the slots'
  /// hidden dimension over edp where the slots are split by group over it.
  unsigned weakDims = 0;

  bool usesAxis(int axis) const {
    return (partial >> axis & 1) ||
           llvm::any_of(dims, [&](const AxisList &l) { return llvm::is_contained(l, axis); });
  }
  bool isReplicated() const {
    return partial == 0 && llvm::all_of(dims, [](const AxisList &l) { return l.empty(); });
  }
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

  /// The number of parts `axes` cut a dimension into.
  int64_t partsOf(ArrayRef<int> axes) const {
    int64_t n = 1;
    for (int a : axes)
      n *= mesh_.getSizes()[a];
    return n;
  }

  /// Whether `v`'s producer can make dimension `d` split into `parts`: an
  /// argument cannot change, an op result only where its rule has a factor
  /// there that `parts` divides (a reshape's [B, T, H·D] dimension is the
  /// factor H: split over 4 ranks only when 4 divides H).
  bool canSplit(Value v, size_t d, int64_t parts) {
    auto result = dyn_cast<OpResult>(v);
    if (!result)
      return false;
    const FailureOr<ShardingRule> &rule = ruleOf(result.getOwner());
    if (failed(rule) || result.getResultNumber() >= rule->resultFactors.size())
      return false;
    int64_t f = rule->resultFactors[result.getResultNumber()][d];
    return f >= 0 && rule->factorSizes[f] % parts == 0;
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
    if (localAccumulation && function.empty())
      splitAccumulation(module);
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
        layouts_[v] = Layout{SmallVector<AxisList>(rankOf(v)), 0, false};
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

  static bool isAccumulator(func::FuncOp func, unsigned i) {
    return func.getArgAttr(i, KilnDialect::kStateAttrName) &&
           func.getArgAttr(i, KilnDialect::kTransientAttrName);
  }

  /// Gradient accumulation on the data axes without ZeRO (DDP's no_sync):
  /// @accumulate_step's accumulators become partial sums over the data
  /// axes (each rank adds its own micro-batches' gradients; the add of
  /// two partial sums stays one, so nothing is communicated), and a copy
  /// @accumulate_last_step, which the training loop runs for the last
  /// micro-batch, returns them summed: partitioning all-reduces each as
  /// soon as its last gradient is added, during that backward. @apply_step
  /// reads them summed and returns them zeroed (zero is a partial sum of
  /// zeros for the next step). Each accumulator is split as its parameter
  /// (a tensor-parallel weight's over tp, an expert's over ep) and partial
  /// over the other data axes. With ZeRO the accumulators are split over
  /// dp instead (each micro-batch's gradient reduce-scattered into them).
  void splitAccumulation(ModuleOp module) {
    SmallVector<StringAttr> axes = dataAxes(mesh_);
    auto acc = module.lookupSymbol<func::FuncOp>("accumulate_step");
    auto apply = module.lookupSymbol<func::FuncOp>("apply_step");
    if (axes.empty() || zero > 0 || !acc || !apply || module.lookupSymbol("accumulate_last_step"))
      return;
    OpBuilder b(module.getContext());
    b.setInsertionPointAfter(acc);
    auto last = cast<func::FuncOp>(b.clone(*acc));
    last.setSymName("accumulate_last_step");
    for (func::FuncOp f : {acc, last, apply})
      for (unsigned i = 0; i < f.getNumArguments(); ++i) {
        if (!isAccumulator(f, i))
          continue;
        // The parameter's layout: "<param>.grad_acc" beside "<param>".
        StringRef name = f.getArgAttrOfType<StringAttr>(i, KilnDialect::kStateAttrName).getValue();
        name.consume_back(".grad_acc");
        ShardingAttr s = getSharding(f.getArgument(i));
        for (BlockArgument p : f.getArguments())
          if (auto param =
                  f.getArgAttrOfType<StringAttr>(p.getArgNumber(), KilnDialect::kParamAttrName);
              param && param.getValue() == name && p.getType() == f.getArgument(i).getType())
            s = getSharding(p).withoutPartial();
        SmallVector<StringAttr> partial;
        if (f != apply)
          for (StringAttr a : axes)
            if (!s.splitsOver(a.getValue()))
              partial.push_back(a);
        f.setArgAttr(i, KilnDialect::kShardingAttrName,
                     ShardingAttr::get(&getContext(), s.getDims(), partial));
      }
    // The last micro-batch returns the accumulators summed.
    for (unsigned r = 0; r < last.getNumResults(); ++r)
      if (auto alias = last.getResultAttrOfType<IntegerAttr>(r, KilnDialect::kAliasesAttrName))
        if (isAccumulator(last, alias.getInt()))
          last.setResultAttr(r, KilnDialect::kShardingAttrName,
                             getSharding(last.getArgument(alias.getInt())).withoutPartial());
  }

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

  /// ZeRO: optimizer states (and with stage 3 parameters) split over the
  /// data-parallel axes (dp, or edp and ep where experts are split over a
  /// part of the data-parallel ranks) along their first dimension those
  /// divide, unless annotated already: a state already split over some of
  /// them (an expert's moments over ep) is split over the others.
  void annotateZero(func::FuncOp func) {
    for (BlockArgument arg : func.getArguments()) {
      unsigned i = arg.getArgNumber();
      bool state = func.getArgAttr(i, KilnDialect::kStateAttrName) != nullptr;
      bool param = func.getArgAttr(i, KilnDialect::kParamAttrName) != nullptr;
      if (!(state || (param && zero >= 3)))
        continue;
      auto shape = cast<RankedTensorType>(arg.getType()).getShape();
      // On top of an existing layout (a tensor-parallel weight's): the
      // first dimension it leaves whole.
      auto existing = func.getArgAttrOfType<ShardingAttr>(i, KilnDialect::kShardingAttrName);
      SmallVector<ShardingAttr::Axes> dims =
          existing ? existing.getAllAxes() : SmallVector<ShardingAttr::Axes>(shape.size());
      ShardingAttr::Axes axes;
      int64_t parts = 1;
      for (StringAttr a : dataAxes(mesh_))
        if (!existing || !existing.splitsOver(a.getValue())) {
          axes.push_back(a);
          parts *= mesh_.getAxisSize(a.getValue());
        }
      if (parts == 1)
        continue;
      for (auto [d, size] : llvm::enumerate(shape)) {
        if (llvm::any_of(dims[d], [&](StringAttr a) { return mesh_.getAxisSize(a) > 1; }) ||
            size % parts != 0)
          continue;
        dims[d] = axes;
        func.setArgAttr(i, KilnDialect::kShardingAttrName,
                        ShardingAttr::of(&getContext(), dims, {}));
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
      auto existing = func.getArgAttrOfType<ShardingAttr>(i, KilnDialect::kShardingAttrName);
      SmallVector<ShardingAttr::Axes> dims =
          existing ? existing.getAllAxes() : SmallVector<ShardingAttr::Axes>(2);
      if (!dims[1].empty() || (existing && existing.splitsOver("tp")))
        continue;
      dims[1] = {StringAttr::get(&getContext(), "tp")};
      func.setArgAttr(i, KilnDialect::kShardingAttrName, ShardingAttr::of(&getContext(), dims, {}));
    }
  }

  LogicalResult initArguments(func::FuncOp func, ArrayRef<ShardingAttr> written) {
    for (BlockArgument arg : func.getArguments()) {
      Layout layout{SmallVector<AxisList>(rankOf(arg)), 0, true};
      ShardingAttr s = getSharding(arg);
      ShardingAttr mine = written[arg.getArgNumber()];
      layout.input = func.getArgAttr(arg.getArgNumber(), KilnDialect::kInputAttrName) != nullptr;
      for (auto [d, axes] : llvm::enumerate(s.getAllAxes())) {
        if (axes.empty())
          continue;
        if (mine.getAxes(d) == axes)
          layout.pinnedDims |= 1u << d;
        else if (func.getArgAttr(arg.getArgNumber(), KilnDialect::kParamAttrName))
          layout.weakDims |= 1u << d;
        AxisList list;
        for (StringAttr axis : axes) {
          FailureOr<int> a = axisIndex(axis.getValue());
          if (failed(a))
            return func.emitError() << "kiln-propagate-sharding: argument #" << arg.getArgNumber()
                                    << " is split over axis '" << axis.getValue()
                                    << "', which the mesh " << mesh_ << " does not have";
          if (*a >= 0)
            list.push_back(*a);
        }
        int64_t size = cast<RankedTensorType>(arg.getType()).getDimSize(d);
        if (size % partsOf(list) != 0) {
          std::string over;
          for (StringAttr axis : axes)
            over += (over.empty() ? "'" : " x '") + axis.getValue().str() + "'";
          return func.emitError() << "kiln-propagate-sharding: argument #" << arg.getArgNumber()
                                  << " (" << arg.getType() << ") splits dimension " << d
                                  << " of size " << size << " over " << over << " of size "
                                  << partsOf(list) << ", which does not divide it";
        }
        layout.dims[d] = list;
      }
      // Partial only where local-accumulation made it so: a gradient
      // accumulator holding this rank's summands.
      for (StringAttr axis : s.getPartial()) {
        FailureOr<int> a = axisIndex(axis.getValue());
        if (!isAccumulator(func, arg.getArgNumber()) || failed(a))
          return func.emitError() << "kiln-propagate-sharding: argument #" << arg.getArgNumber()
                                  << " is marked partial; arguments are whole or split (only "
                                     "local-accumulation's gradient accumulators are partial)";
        if (*a >= 0)
          layout.partial |= 1u << *a;
      }
      layouts_[arg] = layout;
    }
    return success();
  }

  /// What a visit has decided so far: each factor's axes, major first
  /// (empty: whole); whether they came from the model's annotations
  /// (pinned) or only from storage splits (weak); the axes taken.
  struct FactorState {
    SmallVector<AxisList> axes;
    SmallVector<bool> pinned, weak;
    unsigned used = 0;
  };

  /// One operand's proposal: its factors (-1 where it proposes nothing)
  /// and the dimensions whose splits count.
  struct Read {
    Value value;
    SmallVector<int64_t> factors;
    unsigned dimsToRead;
  };

  /// A factor takes a dimension's axes, or the longest major part of them
  /// that no other factor has taken and whose parts divide it (a value
  /// split over edp and ep, met where ep splits another factor, gives
  /// edp; the value is converted by moving ep). A later dimension whose
  /// axes extend the factor's (edp, then edp and ep) splits it further.
  void gather(FactorState &s, const ShardingRule &rule, bool passesWeak, Value v,
              ArrayRef<int64_t> factors, unsigned dimsToRead) {
    const Layout &l = layouts_[v];
    for (auto [d, f] : llvm::enumerate(factors)) {
      const bool weak = l.weakDims >> d & 1;
      if (f < 0 || d >= l.dims.size() || !(dimsToRead >> d & 1) || (weak && !passesWeak))
        continue;
      AxisList &have = s.axes[f];
      ArrayRef<int> list = l.dims[d];
      if (list.size() <= have.size() || list.take_front(have.size()) != ArrayRef<int>(have))
        continue;
      AxisList take = have;
      for (int a : list.drop_front(have.size())) {
        if ((s.used >> a & 1) || rule.factorSizes[f] % (partsOf(take) * mesh_.getSizes()[a]) != 0)
          break;
        take.push_back(a);
      }
      if (take.size() == have.size())
        continue;
      s.pinned[f] = s.pinned[f] || ((l.pinnedDims >> d & 1) && !l.input);
      s.weak[f] = have.empty() ? weak : s.weak[f] && weak;
      for (int a : take)
        s.used |= 1u << a;
      have = take;
    }
  }

  /// The bytes a rank sends to bring `v` from its layout to the one
  /// `factors` get from `s` (docs/sharding.md, "Conflicts"): per dimension,
  /// the axes it loses (those after the part it keeps) leave by an
  /// all_to_all where the wanted layout splits another dimension over them
  /// (a rank keeps 1/n of its part and sends the rest), by an all_gather
  /// otherwise (it sends its part to the n - 1 others). Splitting a whole
  /// dimension, or one further, takes a slice: free.
  double conversionBytes(Value v, ArrayRef<int64_t> factors, const FactorState &s) {
    const Layout &l = layouts_[v];
    if (l.isReplicated())
      return 0;
    int64_t parts = 1;
    for (const AxisList &axes : l.dims)
      parts *= partsOf(axes);
    const double local = static_cast<double>(numBytes(v.getType())) / parts;
    double bytes = 0;
    for (auto [d, have] : llvm::enumerate(l.dims)) {
      const int64_t f = d < factors.size() ? factors[d] : -1;
      ArrayRef<int> want = f >= 0 ? ArrayRef<int>(s.axes[f]) : ArrayRef<int>();
      size_t kept = 0;
      while (kept < have.size() && kept < want.size() && have[kept] == want[kept])
        ++kept;
      ArrayRef<int> lost = ArrayRef<int>(have).drop_front(kept);
      if (lost.empty())
        continue;
      const double n = static_cast<double>(partsOf(lost));
      bool moves = llvm::all_of(lost, [&](int a) {
        return llvm::any_of(llvm::enumerate(factors), [&](auto e) {
          return e.index() != d && e.value() >= 0 && llvm::is_contained(s.axes[e.value()], a);
        });
      });
      bytes += moves ? local * (n - 1) / n : local * (n - 1);
    }
    return bytes;
  }

  /// Conflict policy after the annotations (docs/sharding.md, "Conflicts"):
  /// where the operands of one tier propose different axes for a factor,
  /// or the same axis for two factors, the one read first wins. Each tier
  /// is read with the operand whose proposal, taken first, leaves the
  /// fewest bytes to convert (its own and every later tier's reads
  /// following in program order); ties keep program order.
  void orderByCost(Operation *op, const ShardingRule &rule, bool passesWeak,
                   const FactorState &start, MutableArrayRef<SmallVector<Read>> tiers) {
    // Nothing conflicts unless two operands are split.
    if (llvm::count_if(op->getOperands(), [&](Value v) { return !layouts_[v].isReplicated(); }) < 2)
      return;
    FactorState before = start;
    for (size_t t = 0; t < tiers.size(); ++t) {
      SmallVector<Read> &tier = tiers[t];
      size_t best = 0;
      double bestBytes = 0;
      for (size_t first = 0; first < tier.size(); ++first) {
        if (first > 0 && (layouts_[tier[first].value].isReplicated() ||
                          llvm::all_of(tier[first].factors, [](int64_t f) { return f < 0; })))
          continue;
        FactorState s = before;
        gather(s, rule, passesWeak, tier[first].value, tier[first].factors, tier[first].dimsToRead);
        for (size_t u = t; u < tiers.size(); ++u)
          for (auto [i, r] : llvm::enumerate(tiers[u]))
            if (u != t || i != first)
              gather(s, rule, passesWeak, r.value, r.factors, r.dimsToRead);
        double bytes = 0;
        for (auto [v, f] : llvm::zip_equal(op->getOperands(), rule.operandFactors))
          bytes += conversionBytes(v, f, s);
        if (first == 0 || bytes < bestBytes) {
          best = first;
          bestBytes = bytes;
        }
      }
      if (best != 0)
        std::rotate(tier.begin(), tier.begin() + best, tier.begin() + best + 1);
      for (const Read &r : tier)
        gather(before, rule, passesWeak, r.value, r.factors, r.dimsToRead);
    }
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
    const bool passesWeak = op->hasTrait<kiln::OpTrait::Elementwise>() || isa<AdamWUpdateOp>(op);
    FactorState state;
    state.axes.resize(numFactors);
    state.pinned.assign(numFactors, false);
    state.weak.assign(numFactors, false);
    for (auto [v, f] : llvm::zip_equal(op->getResults(), rule->resultFactors))
      gather(state, *rule, passesWeak, v, f, ~0u);
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
    // Four tiers, each reading every operand: surviving factors from the
    // written splits, surviving factors from any split, then every factor
    // from the written splits, then from any.
    SmallVector<SmallVector<Read>> tiers(4);
    for (auto [i, v] : llvm::enumerate(op->getOperands())) {
      ArrayRef<int64_t> f = rule->operandFactors[i];
      const unsigned pinned = layouts_[v].pinnedDims;
      tiers[0].push_back({v, only(f, true), pinned});
      tiers[1].push_back({v, only(f, true), ~0u});
      tiers[2].push_back({v, SmallVector<int64_t>(f), pinned});
      tiers[3].push_back({v, SmallVector<int64_t>(f), ~0u});
    }
    orderByCost(op, *rule, passesWeak, state, tiers);
    for (ArrayRef<Read> tier : tiers)
      for (const Read &r : tier)
        gather(state, *rule, passesWeak, r.value, r.factors, r.dimsToRead);
    ArrayRef<AxisList> factorAxes = state.axes;
    ArrayRef<bool> factorPinned = state.pinned, factorWeak = state.weak;

    bool changed = false;
    auto apply = [&](Value v, ArrayRef<int64_t> factors) {
      Layout &l = layouts_[v];
      if (l.fixed)
        return;
      auto shape = cast<RankedTensorType>(v.getType()).getShape();
      for (auto [d, f] : llvm::enumerate(factors)) {
        if (f < 0 || factorAxes[f].empty())
          continue;
        const AxisList &axes = factorAxes[f];
        // A split that came from the model's annotations is marked so.
        if (l.dims[d] == axes && factorPinned[f] && !(l.pinnedDims >> d & 1)) {
          l.pinnedDims |= 1u << d;
          changed = true;
        }
        // Only ever splits further: a whole dimension, or one whose axes
        // are the major part of the factor's.
        ArrayRef<int> have = l.dims[d];
        if (have.size() >= axes.size() || ArrayRef<int>(axes).take_front(have.size()) != have)
          continue;
        int64_t parts = partsOf(axes);
        if (llvm::any_of(ArrayRef<int>(axes).drop_front(have.size()),
                         [&](int a) { return l.usesAxis(a); }) ||
            shape[d] % parts != 0 || !canSplit(v, d, parts))
          continue;
        l.dims[d] = axes;
        if (factorPinned[f])
          l.pinnedDims |= 1u << d;
        if (factorWeak[f])
          l.weakDims |= 1u << d;
        else
          l.weakDims &= ~(1u << d);
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
      for (int64_t f : rule->reducedFactors(r))
        for (int a : factorAxes[f]) {
          if (l.usesAxis(a))
            continue;
          l.partial |= 1u << a;
          changed = true;
        }
    }
    // A sum or difference of partial sums over an axis is a partial sum
    // over it: summed once after it rather than once per operand (a tied
    // embedding's two gradient halves cost one all_reduce, not two).
    // A gradient accumulator (an argument partial over the data axes)
    // keeps its sum partial whatever it adds: an addend that came whole is
    // kept on one rank of the axis (zero on the others), not the
    // accumulator summed each micro-batch.
    if (isa<AddOp, SubOp>(op)) {
      Layout &l = layouts_[op->getResult(0)];
      unsigned common = ~0u, accumulated = 0;
      for (Value v : op->getOperands()) {
        const Layout &o = layouts_[v];
        common &= o.dims == l.dims ? o.partial : 0u;
        if (o.fixed && o.dims == l.dims)
          accumulated |= o.partial;
      }
      common |= accumulated;
      for (int a = 0; a < static_cast<int>(mesh_.getSizes().size()); ++a)
        if ((common >> a & 1) && !l.usesAxis(a) && !l.fixed) {
          l.partial |= 1u << a;
          changed = true;
        }
    }
    // Reshapes, transposes and slices are linear in their one operand and
    // no larger: its partial sum passes through, summed later (or, added
    // into a gradient accumulator, not before the last micro-batch).
    if (passesPartialSums(op)) {
      Layout &l = layouts_[op->getResult(0)];
      const unsigned partial = layouts_[op->getOperand(0)].partial;
      for (int a = 0; a < static_cast<int>(mesh_.getSizes().size()); ++a)
        if ((partial >> a & 1) && !l.usesAxis(a) && !l.fixed) {
          l.partial |= 1u << a;
          changed = true;
        }
    }
    return changed;
  }

  ShardingAttr toAttr(const Layout &l) {
    MLIRContext *ctx = &getContext();
    SmallVector<ShardingAttr::Axes> dims;
    SmallVector<StringAttr> partial;
    for (const AxisList &axes : l.dims) {
      dims.emplace_back();
      for (int a : axes)
        dims.back().push_back(mesh_.getNames()[a]);
    }
    for (size_t a = 0; a < mesh_.getNames().size(); ++a)
      if (l.partial >> a & 1)
        partial.push_back(mesh_.getNames()[a]);
    return ShardingAttr::of(ctx, dims, partial);
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
