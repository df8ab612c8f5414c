//===- PipelineUnroll.cpp - a pipeline stage's whole step as one function --===//
//
// kiln-pipeline-unroll (Passes.td has the contract): for each stage, its
// schedule's forwards and backwards and its apply inlined in order into
// @stage<s>_step, and one forward into @stage<s>_eval, with the transfers
// of each action in runs the CUDA executor posts as one NCCL group; then a
// simulation of every stage's runs proves the step cannot deadlock under
// NCCL's rules (a send waits for its receive; messages between two ranks
// match in the order posted).
//
//===----------------------------------------------------------------------===//

#include "ir/KilnAttrs.h"
#include "ir/KilnOps.h"
#include "ir/PipelineSchedule.h"
#include "passes/PassUtils.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/Dominance.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Transforms/CSE.h"
#include "mlir/Transforms/RegionUtils.h"
#include "llvm/ADT/MapVector.h"

#include <map>
#include <set>

namespace kiln {
#define GEN_PASS_DEF_PIPELINEUNROLLPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;

namespace kiln {

namespace {

/// One thing a stage's step does that another stage takes part in: a run
/// of transfers (posted together) or a collective over `pp`.
struct CommEvent {
  struct Transfer {
    bool send;
    int64_t peer, channel;
    Operation *op;
  };
  std::vector<Transfer> transfers; ///< empty: a collective over pp
  Operation *collective = nullptr;
};

/// A kiln.send's or kiln.recv's peer and channel.
std::pair<int64_t, int64_t> peerAndChannel(Operation *op) {
  return {op->getAttrOfType<IntegerAttr>("peer").getInt(),
          op->getAttrOfType<IntegerAttr>("channel").getInt()};
}

/// The events of `fn` in program order.
std::vector<CommEvent> commEvents(func::FuncOp fn) {
  std::vector<CommEvent> events;
  bool inRun = false;
  for (Operation &op : fn.getBody().front()) {
    if (isa<SendOp, RecvOp>(op)) {
      if (!inRun)
        events.emplace_back();
      auto [peer, channel] = peerAndChannel(&op);
      events.back().transfers.push_back({isa<SendOp>(op), peer, channel, &op});
      inRun = true;
      continue;
    }
    inRun = false;
    auto axis = op.getAttrOfType<StringAttr>("axis");
    if (isCollective(&op) && axis && axis.getValue() == "pp") {
      events.emplace_back();
      events.back().collective = &op;
    }
  }
  return events;
}

struct PipelineUnrollPass final : impl::PipelineUnrollPassBase<PipelineUnrollPass> {
  using Base::Base;

  int64_t stages_ = 0, micro_ = 0;
  int64_t nextCastGroup_ = 0, nextBucket_ = 0;
  /// Per rank: its actions, in order.
  std::vector<std::vector<PipelineAction>> actions_;
  /// Stages a rank (interleaved 1F1B): stage c on rank c mod stages_.
  int64_t virtual_ = 1;
  /// Every stage's forward outputs (the loss, metrics) by name, with type.
  std::map<std::string, RankedTensorType> outputs_;

  InFlightDiagnostic fail(Location loc) {
    signalPassFailure();
    return emitError(loc) << "kiln-pipeline-unroll: ";
  }

  LogicalResult readSchedule(ModuleOp module) {
    // Read and checked as the backends read it (ir/PipelineSchedule.h).
    auto schedule = PipelineSchedule::of(module);
    if (!schedule)
      return fail(module.getLoc()) << llvm::toString(schedule.takeError());
    if (schedule->stages == 0)
      return fail(module.getLoc()) << "the module has no kiln.pipeline: run kiln-pipeline first";
    stages_ = schedule->stages;
    micro_ = schedule->microbatches;
    virtual_ = schedule->virtualStages;
    actions_ = std::move(schedule->actions);
    return success();
  }

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (failed(readSchedule(module)))
      return;
    for (int64_t s = 0; s < stages_ * virtual_; ++s)
      for (llvm::StringRef what : {"forward", "backward", "apply"})
        if ((what != "apply" || s < stages_) &&
            !module.lookupSymbol<func::FuncOp>(pipelineFunction(s, what)))
          return (void)(fail(module.getLoc())
                        << "the module has no @" << pipelineFunction(s, what));
    // The loss and metrics, from whichever stage computes each.
    for (int64_t s = 0; s < stages_ * virtual_; ++s) {
      auto fwd = module.lookupSymbol<func::FuncOp>(pipelineFunction(s, "forward"));
      for (unsigned i = 0; i < fwd.getNumResults(); ++i) {
        auto name = fwd.getResultAttrOfType<StringAttr>(i, KilnDialect::kOutputAttrName);
        if (!name || name.getValue().starts_with("saved."))
          continue;
        auto type = dyn_cast<RankedTensorType>(fwd.getResultTypes()[i]);
        if (!type || type.getRank() != 0 || !isa<FloatType>(type.getElementType()))
          return (void)(fail(fwd.getLoc()) << "output '" << name.getValue()
                                           << "' is not a float scalar; only those are summed "
                                              "over the stages");
        outputs_.emplace(name.getValue().str(), type);
      }
    }
    OpBuilder b(module.getBodyRegion());
    b.setInsertionPointToEnd(module.getBody());
    nextCastGroup_ = nextBucket_ = 0;
    for (int64_t s = 0; s < stages_; ++s) {
      for (llvm::StringRef what : {"step", "eval"})
        if (auto old = module.lookupSymbol<func::FuncOp>(pipelineFunction(s, what)))
          old.erase();
      func::FuncOp step = build(b, module, s, /*eval=*/false);
      func::FuncOp eval = step ? build(b, module, s, /*eval=*/true) : nullptr;
      if (!step || !eval)
        return signalPassFailure();
    }
    // Deadlock freedom: every stage's step together.
    if (failed(simulate(module)))
      return;
  }

  /// @stage<s>_step (or _eval) of rank s: with interleaving, the
  /// forwards and backwards of all its stages (s, s + stages_, ...).
  func::FuncOp build(OpBuilder &b, ModuleOp module, int64_t s, bool eval) {
    func::FuncOp apply = module.lookupSymbol<func::FuncOp>(pipelineFunction(s, "apply"));
    std::map<int64_t, func::FuncOp> forwards, backwards;
    SmallVector<func::FuncOp> used;
    for (int64_t c = s; c < stages_ * virtual_; c += stages_) {
      forwards[c] = module.lookupSymbol<func::FuncOp>(pipelineFunction(c, "forward"));
      backwards[c] = module.lookupSymbol<func::FuncOp>(pipelineFunction(c, "backward"));
      used.push_back(forwards[c]);
      if (!eval)
        used.push_back(backwards[c]);
    }
    if (!eval)
      used.push_back(apply);
    // The arguments: every state the functions read, once, then the inputs.
    struct Arg {
      Type type;
      DictionaryAttr attrs;
    };
    llvm::MapVector<StringAttr, Arg> states, inputs;
    for (func::FuncOp fn : used)
      for (unsigned i = 0; i < fn.getNumArguments(); ++i) {
        Type type = fn.getArgumentTypes()[i];
        if (auto name = stateName(fn, i)) {
          auto [it, fresh] = states.insert({name, {type, fn.getArgAttrDict(i)}});
          if (!fresh && it->second.type != type)
            return (fail(fn.getLoc()) << "state '" << name.getValue()
                                      << "' has two types across the stage's functions"),
                   nullptr;
          continue;
        }
        auto name = fn.getArgAttrOfType<StringAttr>(i, KilnDialect::kInputAttrName);
        if (!name)
          return (fail(fn.getLoc()) << "argument " << i << " has no role"), nullptr;
        if (name.getValue().starts_with("saved."))
          continue;
        // A batch input (one with rows) holds every micro-batch's rows.
        auto ranked = cast<RankedTensorType>(type);
        if (!eval && ranked.getRank() >= 1 && fn != apply) {
          SmallVector<int64_t> shape(ranked.getShape());
          shape[0] *= micro_;
          type = RankedTensorType::get(shape, ranked.getElementType());
        }
        // Without a sharding: the runtime hands each rank its rows.
        NamedAttrList attrs(fn.getArgAttrDict(i));
        attrs.erase(KilnDialect::kShardingAttrName);
        auto [it, fresh] = inputs.insert({name, {type, attrs.getDictionary(&getContext())}});
        if (!fresh && it->second.type != type && fn != apply)
          return (fail(fn.getLoc()) << "input '" << name.getValue()
                                    << "' has two shapes across the stage's functions"),
                 nullptr;
      }
    SmallVector<Type> argTypes;
    SmallVector<Attribute> argAttrs;
    for (auto &[name, a] : states) {
      argTypes.push_back(a.type);
      argAttrs.push_back(a.attrs);
    }
    for (auto &[name, a] : inputs) {
      argTypes.push_back(a.type);
      argAttrs.push_back(a.attrs);
    }
    Location loc = forwards.begin()->second.getLoc();
    auto fn = func::FuncOp::create(b, loc, pipelineFunction(s, eval ? "eval" : "step"),
                                   b.getFunctionType(argTypes, {}));
    fn.setArgAttrsAttr(b.getArrayAttr(argAttrs));
    Block *entry = fn.addEntryBlock();
    OpBuilder body = OpBuilder::atBlockEnd(entry);

    llvm::DenseMap<StringAttr, Value> current; // each state's latest value
    llvm::DenseMap<StringAttr, Value> inputArg;
    for (auto [i, named] : llvm::enumerate(states))
      current[named.first] = entry->getArgument(static_cast<unsigned>(i));
    for (auto [i, named] : llvm::enumerate(inputs))
      inputArg[named.first] = entry->getArgument(static_cast<unsigned>(states.size() + i));

    // Per (stage, micro-batch).
    std::map<std::pair<int64_t, int64_t>, llvm::DenseMap<StringAttr, Value>> saved;
    int64_t stage = s;                                          // the stage being inlined
    std::map<std::string, Value> sums;                          // forward outputs, summed
    llvm::MapVector<StringAttr, Value> applied;                 // apply's outputs
    // Inlining `callee` for micro-batch k (apply: k = 0) in three parts:
    // its receives, its body (and results), its sends.
    struct Inlined {
      func::FuncOp callee;
      int64_t k;
      int which; ///< 0 forward, 1 backward, 2 apply
      int64_t stage;
      IRMapping map;
      SmallVector<Operation *> recvs, sends, early;
    };
    auto byPeerChannel = [](Operation *x, Operation *y) {
      return peerAndChannel(x) < peerAndChannel(y);
    };
    // Receives first (an action's inputs from other stages), each run
    // sorted by peer and channel.
    auto receive = [&](Inlined &in) {
      Block &src = in.callee.getBody().front();
      bool action = in.which != 2;
      // Sends last (an apply's too: codegen runs its AdamW updates as one
      // launch at the last, so an updated parameter is sent after it) —
      // except an apply's sends of its arguments (a partial gradient
      // accumulator, which its owner receives before the norm's pp sum),
      // which go first.
      for (Operation &op : src)
        if (isa<RecvOp>(op) && action)
          in.recvs.push_back(&op);
        else if (isa<SendOp>(op) && !action && isa<BlockArgument>(op.getOperand(0)))
          in.early.push_back(&op);
        else if (isa<SendOp>(op))
          in.sends.push_back(&op);
      llvm::stable_sort(in.recvs, byPeerChannel);
      llvm::stable_sort(in.sends, byPeerChannel);
      llvm::stable_sort(in.early, byPeerChannel);
      for (Operation *op : in.recvs)
        body.clone(*op, in.map);
    };
    auto compute = [&](Inlined &in) -> LogicalResult {
      func::FuncOp callee = in.callee;
      IRMapping &map = in.map;
      const int64_t k = in.k, stage = in.stage;
      const int which = in.which;
      Block &src = callee.getBody().front();
      bool action = which != 2;
      for (unsigned i = 0; i < callee.getNumArguments(); ++i) {
        BlockArgument arg = src.getArgument(i);
        if (auto name = stateName(callee, i)) {
          map.map(arg, current.at(name));
          continue;
        }
        auto name = callee.getArgAttrOfType<StringAttr>(i, KilnDialect::kInputAttrName);
        if (name.getValue().starts_with("saved.")) {
          Value v = saved[{stage, k}].lookup(name);
          if (!v)
            return fail(callee.getLoc()) << "backward of micro-batch " << k << " reads '"
                                         << name.getValue() << "', which its forward did not keep";
          map.map(arg, v);
          continue;
        }
        Value whole = inputArg.at(name);
        auto type = cast<RankedTensorType>(arg.getType());
        if (whole.getType() == type) {
          map.map(arg, whole);
          continue;
        }
        // This micro-batch's rows.
        SmallVector<int64_t> start(type.getRank(), 0), limit(type.getShape()),
            strides(type.getRank(), 1);
        start[0] = k * type.getDimSize(0);
        limit[0] = start[0] + type.getDimSize(0);
        map.map(arg, SliceOp::create(body, arg.getLoc(), type, whole, start, limit, strides));
      }
      // kiln-group-casts and kiln-bucket-collectives number their groups
      // per function: each inlined copy gets its own numbers.
      llvm::DenseMap<int64_t, int64_t> groups, buckets;
      auto renumber = [&](Operation *copy, llvm::StringRef attr,
                          llvm::DenseMap<int64_t, int64_t> &numbers, int64_t &next) {
        if (auto g = copy->getAttrOfType<IntegerAttr>(attr)) {
          auto [it, fresh] = numbers.insert({g.getInt(), next});
          next += fresh;
          copy->setAttr(attr, body.getI64IntegerAttr(it->second));
        }
      };
      for (Operation *op : in.early)
        body.clone(*op, map);
      for (Operation &op : src.without_terminator()) {
        if (isa<SendOp>(op) || (action && isa<RecvOp>(op)))
          continue;
        Operation *copy = body.clone(op, map);
        renumber(copy, KilnDialect::kCastGroupAttrName, groups, nextCastGroup_);
        renumber(copy, KilnDialect::kBucketAttrName, buckets, nextBucket_);
      }
      auto ret = cast<func::ReturnOp>(src.getTerminator());
      for (unsigned i = 0; i < callee.getNumResults(); ++i) {
        Value v = map.lookupOrDefault(ret.getOperand(i));
        if (auto aliases =
                callee.getResultAttrOfType<IntegerAttr>(i, KilnDialect::kAliasesAttrName)) {
          current[stateName(callee, static_cast<unsigned>(aliases.getInt()))] = v;
          continue;
        }
        auto name = callee.getResultAttrOfType<StringAttr>(i, KilnDialect::kOutputAttrName);
        if (!name)
          return fail(callee.getLoc()) << "result " << i << " is neither an output nor in place";
        if (which == 0 && name.getValue().starts_with("saved.")) {
          saved[{stage, k}][name] = v;
        } else if (which == 0) {
          Value &sum = sums[name.getValue().str()];
          sum = sum ? AddOp::create(body, loc, v.getType(), sum, v).getResult() : v;
        } else {
          applied[name] = v;
        }
      }
      return success();
    };
    auto send = [&](Inlined &in) {
      for (Operation *op : in.sends)
        body.clone(*op, in.map);
    };
    // Inlines actions together: every receive, then each body in turn,
    // then every send.
    auto inlineTogether = [&](MutableArrayRef<Inlined> all) -> LogicalResult {
      for (Inlined &in : all)
        receive(in);
      for (Inlined &in : all)
        if (failed(compute(in)))
          return failure();
      for (Inlined &in : all)
        send(in);
      return success();
    };
    auto inline_ = [&](func::FuncOp callee, int64_t k, int which) -> LogicalResult {
      Inlined in{callee, k, which, stage, {}, {}, {}, {}};
      return inlineTogether(MutableArrayRef<Inlined>(&in, 1));
    };
    if (eval) {
      for (auto &[c, forward] : forwards) {
        stage = c;
        if (failed(inline_(forward, 0, 0)))
          return nullptr;
      }
    } else {
      // With interleaved stages each forward and backward of the steady
      // state run as one unit (Megatron-LM's batching): both receives, both
      // bodies, both sends, so a rank's sends to a neighbour and its
      // receives from it go in one NCCL group where the order of the
      // stages' actions would otherwise make each wait for the other. The
      // steady state follows the (p-r-1)·2 + (v-1)·p forwards run ahead
      // (kiln-pipeline's interleaved schedule); a rank whose forwards all
      // run ahead has none, and pairing its last forward with its first
      // backward would deadlock (its forward's output is what that
      // backward's gradient waits for).
      const auto &mine = actions_[static_cast<size_t>(s)];
      const int64_t total = micro_ * virtual_;
      const int64_t ahead = interleavedForwardsAhead(stages_, virtual_, micro_, s);
      for (size_t a = 0; a < mine.size(); ++a) {
        auto [kind, k, c] = mine[a];
        const int64_t at = static_cast<int64_t>(a);
        bool pair = virtual_ > 1 && kind == 'F' && at >= ahead && at < 2 * total - ahead &&
                    (at - ahead) % 2 == 0 && a + 1 < mine.size() && mine[a + 1].kind == 'B';
        SmallVector<Inlined, 2> unit;
        unit.push_back(
            {kind == 'F' ? forwards[c] : backwards[c], k, kind == 'F' ? 0 : 1, c, {}, {}, {}, {}});
        if (pair) {
          auto [kindB, kB, cB] = mine[++a];
          unit.push_back({backwards[cB], kB, 1, cB, {}, {}, {}, {}});
        }
        if (failed(inlineTogether(unit)))
          return nullptr;
        for (const Inlined &in : unit)
          if (in.which == 1)
            saved.erase({in.stage, in.k});
      }
      stage = s;
      if (failed(inline_(apply, 0, 2)))
        return nullptr;
    }
    // The loss and metrics: the micro-batches' mean, on every stage.
    SmallVector<Value> results;
    SmallVector<Attribute> resultAttrs;
    const int64_t count = eval ? 1 : micro_;
    for (auto &[name, type] : outputs_) {
      auto elt = cast<FloatType>(type.getElementType());
      Value v = sums.count(name) ? sums[name] : Value();
      if (v && count > 1) {
        Value scale = ConstantOp::create(
            body, loc, type,
            DenseElementsAttr::get(
                type, body.getFloatAttr(elt, 1.0 / static_cast<double>(count)).getValue()));
        v = MulOp::create(body, loc, type, v, scale);
      }
      if (!v)
        v = ConstantOp::create(body, loc, type,
                               DenseElementsAttr::get(type, body.getFloatAttr(elt, 0).getValue()));
      v = AllReduceOp::create(body, loc, type, v, "pp",
                              "'" + name + "' from the stage that computes it, to every stage");
      results.push_back(v);
      resultAttrs.push_back(body.getDictionaryAttr(
          body.getNamedAttr(KilnDialect::kOutputAttrName, body.getStringAttr(name))));
    }
    for (auto &[name, v] : applied) {
      results.push_back(v);
      resultAttrs.push_back(
          body.getDictionaryAttr(body.getNamedAttr(KilnDialect::kOutputAttrName, name)));
    }
    for (auto [i, named] : llvm::enumerate(states)) {
      Value v = current.at(named.first);
      if (v == entry->getArgument(static_cast<unsigned>(i)))
        continue;
      results.push_back(v);
      resultAttrs.push_back(body.getDictionaryAttr(body.getNamedAttr(
          KilnDialect::kAliasesAttrName, body.getI64IntegerAttr(static_cast<int64_t>(i)))));
    }
    func::ReturnOp::create(body, loc, results);
    fn.setFunctionType(b.getFunctionType(argTypes, ValueRange(results).getTypes()));
    fn.setResAttrsAttr(b.getArrayAttr(resultAttrs));
    // What only the dropped `saved.N` values needed (evaluation), and one
    // copy of what every action recomputes alike (the weights' casts, a
    // mask).
    IRRewriter rewriter(&getContext());
    (void)runRegionDCE(rewriter, fn.getBody());
    DominanceInfo dominance(fn);
    eliminateCommonSubExpressions(rewriter, dominance, fn);
    return fn;
  }

  /// The kiln.param or kiln.state name of argument i.
  static StringAttr stateName(func::FuncOp fn, unsigned i) {
    if (auto p = fn.getArgAttrOfType<StringAttr>(i, KilnDialect::kParamAttrName))
      return p;
    return fn.getArgAttrOfType<StringAttr>(i, KilnDialect::kStateAttrName);
  }

  /// Runs every stage's step under NCCL's rules: a run of transfers is
  /// posted together and done when each of its transfers met its
  /// counterpart in the peer's current run; the n-th message from one
  /// stage to another is the n-th the other receives from it (NCCL has no
  /// tags), which must be on the same channel; a collective over pp waits
  /// for every stage.
  LogicalResult simulate(ModuleOp module) {
    for (llvm::StringRef what : {"step", "eval"}) {
      std::vector<std::vector<CommEvent>> events;
      for (int64_t s = 0; s < stages_; ++s) {
        events.push_back(commEvents(module.lookupSymbol<func::FuncOp>(pipelineFunction(s, what))));
      }
      const size_t n = events.size();
      std::vector<size_t> at(n, 0);
      std::vector<std::vector<char>> done(n);
      // Messages posted so far from a to b (sent, received).
      std::map<std::pair<size_t, size_t>, int64_t> sentCount, recvCount;
      // The index of each transfer among its pair's messages.
      std::vector<std::vector<int64_t>> order(n);
      auto enter = [&](size_t s) {
        done[s].clear();
        order[s].clear();
        if (at[s] >= events[s].size())
          return;
        for (const auto &t : events[s][at[s]].transfers) {
          auto key = t.send ? std::pair<size_t, size_t>(s, static_cast<size_t>(t.peer))
                            : std::pair<size_t, size_t>(static_cast<size_t>(t.peer), s);
          order[s].push_back((t.send ? sentCount : recvCount)[key]++);
          done[s].push_back(0);
        }
      };
      for (size_t s = 0; s < n; ++s)
        enter(s);
      for (bool progress = true; progress;) {
        progress = false;
        // A collective over pp: every stage at one.
        bool allAtCollective = true;
        for (size_t s = 0; s < n; ++s)
          allAtCollective &= at[s] < events[s].size() && events[s][at[s]].collective;
        if (allAtCollective) {
          for (size_t s = 0; s < n; ++s) {
            ++at[s];
            enter(s);
          }
          progress = true;
          continue;
        }
        for (size_t s = 0; s < n; ++s) {
          if (at[s] >= events[s].size() || events[s][at[s]].collective)
            continue;
          const CommEvent &mine = events[s][at[s]];
          for (size_t i = 0; i < mine.transfers.size(); ++i) {
            const auto &t = mine.transfers[i];
            if (done[s][i] || !t.send)
              continue;
            size_t peer = static_cast<size_t>(t.peer);
            if (peer >= n || at[peer] >= events[peer].size() || events[peer][at[peer]].collective)
              continue;
            const CommEvent &theirs = events[peer][at[peer]];
            for (size_t j = 0; j < theirs.transfers.size(); ++j) {
              const auto &u = theirs.transfers[j];
              if (u.send || done[peer][j] || static_cast<size_t>(u.peer) != s ||
                  order[peer][j] != order[s][i])
                continue;
              if (u.channel != t.channel)
                return fail(t.op->getLoc())
                       << "@" << pipelineFunction(static_cast<int64_t>(s), what) << "'s message "
                       << order[s][i] << " to stage " << peer << " is on channel " << t.channel
                       << " but stage " << peer << " receives it as channel " << u.channel
                       << " (NCCL matches messages between two ranks in order)";
              done[s][i] = done[peer][j] = 1;
              progress = true;
            }
          }
        }
        for (size_t s = 0; s < n; ++s)
          if (at[s] < events[s].size() && !events[s][at[s]].collective &&
              llvm::all_of(done[s], [](char d) { return d; })) {
            ++at[s];
            enter(s);
            progress = true;
          }
      }
      for (size_t s = 0; s < n; ++s)
        if (at[s] < events[s].size()) {
          const CommEvent &stuck = events[s][at[s]];
          Operation *op = stuck.collective ? stuck.collective : stuck.transfers.front().op;
          return fail(op->getLoc())
                 << "@" << pipelineFunction(static_cast<int64_t>(s), what)
                 << " would wait forever at " << op->getName() << " (its transfer run " << at[s]
                 << "): the stages' sends and receives do not meet";
        }
    }
    return success();
  }
};

} // namespace

} // namespace kiln
