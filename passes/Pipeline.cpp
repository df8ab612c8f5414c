//===- Pipeline.cpp - pipeline stages, send/recv and a schedule ------------===//
//
// kiln-pipeline (Passes.td has the whole contract): @accumulate_step and
// @apply_step become, for each of the `stages` stages, a forward, a
// backward and an apply function, with kiln.send/kiln.recv where a value
// crosses stages, and the micro-batch schedule (GPipe or 1F1B) as data on
// the module (with `virtual-stages`, interleaved: several stages a rank,
// one apply per rank). The split is decided per op from the parameters' transformer
// blocks and the direction values flow (forward values toward the last
// stage, gradients toward the first), so any model whose parameters are
// named by block splits, with or without recomputation.
//
//===----------------------------------------------------------------------===//

#include "ir/KilnAttrs.h"
#include "ir/KilnOps.h"
#include "ir/PipelineSchedule.h"
#include "passes/PassUtils.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Interfaces/SideEffectInterfaces.h"
#include "llvm/ADT/BitVector.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/MapVector.h"

#include <climits>
#include <cstring>
#include <map>
#include <set>

namespace kiln {
#define GEN_PASS_DEF_PIPELINEPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;

namespace kiln {

int64_t interleavedForwardsAhead(int64_t stages, int64_t chunks, int64_t microbatches,
                                 int64_t rank) {
  return std::min((stages - rank - 1) * 2 + (chunks - 1) * stages, microbatches * chunks);
}

std::vector<std::vector<std::string>> pipelineSchedule(llvm::StringRef schedule, int64_t stages,
                                                       int64_t microbatches, int64_t chunks) {
  std::vector<std::vector<std::string>> actions(static_cast<size_t>(stages));
  if (chunks > 1) {
    // Interleaved 1F1B (Narayanan et al. 2021, sec. 2.2; the order of
    // Megatron-LM's schedule): rank r holds stages r, r + p, ...; its
    // forwards go through the micro-batches in groups of p, each group
    // through its chunks in turn (the backwards through them in reverse);
    // (p - r - 1)·2 + (v - 1)·p forwards run ahead, then one forward and
    // one backward in turn. Action "F3.5": micro-batch 3 on stage 5.
    const int64_t p = stages, v = chunks, total = microbatches * chunks;
    for (int64_t r = 0; r < p; ++r) {
      auto &a = actions[static_cast<size_t>(r)];
      auto act = [&](char kind, int64_t i) {
        int64_t local = (i % (p * v)) / p;
        if (kind == 'B')
          local = v - 1 - local;
        int64_t k = (i / (p * v)) * p + i % p;
        a.push_back(std::string(1, kind) + std::to_string(k) + "." + std::to_string(local * p + r));
      };
      int64_t warmup = interleavedForwardsAhead(p, v, microbatches, r);
      for (int64_t i = 0; i < warmup; ++i)
        act('F', i);
      for (int64_t i = 0; i + warmup < total; ++i) {
        act('F', i + warmup);
        act('B', i);
      }
      for (int64_t i = total - warmup; i < total; ++i)
        act('B', i);
    }
    return actions;
  }
  for (int64_t s = 0; s < stages; ++s) {
    auto &a = actions[static_cast<size_t>(s)];
    auto f = [&](int64_t k) { a.push_back("F" + std::to_string(k)); };
    auto b = [&](int64_t k) { a.push_back("B" + std::to_string(k)); };
    if (schedule == "gpipe") {
      for (int64_t k = 0; k < microbatches; ++k)
        f(k);
      for (int64_t k = 0; k < microbatches; ++k)
        b(k);
      continue;
    }
    // 1F1B: p-s-1 forwards ahead (the last stage none), then one forward
    // and one backward in turn, then the backwards left.
    int64_t warmup = std::min(stages - s - 1, microbatches);
    for (int64_t k = 0; k < warmup; ++k)
      f(k);
    for (int64_t k = 0; k + warmup < microbatches; ++k) {
      f(k + warmup);
      b(k);
    }
    for (int64_t k = microbatches - warmup; k < microbatches; ++k)
      b(k);
  }
  return actions;
}

namespace {

constexpr int kForward = 0, kBackward = 1;

/// The blocks, as indices: -1 before the first transformer block, n after
/// the last.
struct Blocks {
  std::vector<std::string> names; ///< in order of first use
  llvm::StringMap<int> ofParam;   ///< parameter name -> block index
  int64_t size() const { return static_cast<int64_t>(names.size()); }
};

struct PipelinePass final : impl::PipelinePassBase<PipelinePass> {
  using Base::Base;

  func::FuncOp acc_, apply_;
  Block *body_ = nullptr;
  llvm::DenseSet<Operation *> forward_;
  llvm::DenseMap<Operation *, int> blockOfOp_; ///< absent: made of constants and inputs
  Blocks blocks_;
  std::vector<int64_t> stageOfBlock_;
  /// Function index (2·stage + phase) of each op that has a block.
  llvm::DenseMap<Operation *, int> place_;
  /// The stages that receive a value, with the channel of each.
  llvm::MapVector<Value, std::map<int64_t, int64_t>> sends_;
  /// Foreign values the forward of a stage reads (received there).
  std::vector<llvm::DenseSet<Value>> forwardReceives_;
  /// Per stage: forward values its backward reads, in the order the
  /// backward asked for them (the forward's `saved.N` results).
  std::vector<llvm::SmallVector<Value>> saved_;
  int64_t nextChannel_ = 0;
  /// A gradient accumulator's part made on another stage than its owner's
  /// (a tied embedding's head gradient): summed there into a transient
  /// state of its own, sent to the owner once a step by the apply.
  struct PartialAccumulator {
    std::string state;       ///< "<param>.grad_acc.stage<t>"
    int64_t stage;           ///< where it is summed
    std::string accumulator; ///< the owner's "<param>.grad_acc"
    int64_t owner;
    /// The sum's collective over the stage's mesh (all_reduce or
    /// reduce_scatter over dp), kept to apply to the received part; null
    /// when there is none.
    Operation *collective = nullptr;
    int64_t channel = -1;
  };
  std::vector<PartialAccumulator> partials_;

  InFlightDiagnostic fail(Location loc) {
    signalPassFailure();
    return emitError(loc) << "kiln-pipeline: ";
  }

  /// The stages: `stages` ranks along pp, each holding `virtualStages`
  /// of them (interleaved 1F1B); stage c runs on rank c mod stages.
  int64_t chunks() const { return stages * virtualStages; }
  int64_t rankOf(int64_t stage) const { return stage % stages; }

  int64_t stageOfBlock(int block) const {
    if (block < 0)
      return 0;
    if (block >= blocks_.size())
      return chunks() - 1;
    return stageOfBlock_[static_cast<size_t>(block)];
  }

  StringAttr paramOf(Value v) {
    auto arg = dyn_cast<BlockArgument>(v);
    if (!arg || arg.getOwner() != body_)
      return {};
    return acc_.getArgAttrOfType<StringAttr>(arg.getArgNumber(), KilnDialect::kParamAttrName);
  }

  /// The parameter `v` is a view of: the parameter itself, or a cast,
  /// all_gather (ZeRO-3), reshape or transpose of one, or a chain of those.
  StringAttr viewOf(Value v) {
    while (true) {
      if (StringAttr p = paramOf(v))
        return p;
      Operation *def = v.getDefiningOp();
      if (!def || def->getNumOperands() != 1 || def->getNumResults() != 1 ||
          !isa<CastOp, AllGatherOp, ReshapeOp, TransposeOp>(def))
        return {};
      v = def->getOperand(0);
    }
  }

  void runOnOperation() override {
    if (stages <= 1)
      return;
    ModuleOp module = getOperation();
    if (microbatches < 1)
      return (void)(fail(module.getLoc()) << "microbatches = " << static_cast<int64_t>(microbatches)
                                          << " must be at least 1");
    if (schedule != "1f1b" && schedule != "gpipe")
      return (void)(fail(module.getLoc())
                    << "schedule '" << std::string(schedule) << "' is not one of 1f1b, gpipe");
    if (virtualStages < 1 ||
        (virtualStages > 1 && (schedule != "1f1b" || microbatches % stages != 0)))
      return (void)(fail(module.getLoc())
                    << "virtual-stages = " << static_cast<int64_t>(virtualStages)
                    << ": interleaved stages need schedule 1f1b and micro-batches a multiple of "
                       "the stages");
    auto mesh = module->getAttrOfType<MeshAttr>(KilnDialect::kMeshAttrName);
    if (mesh && llvm::any_of(mesh.getNames(), [](StringAttr n) { return n == "pp"; }))
      return (void)(fail(module.getLoc())
                    << "the module's mesh " << mesh << " already has a pp axis");
    acc_ = module.lookupSymbol<func::FuncOp>("accumulate_step");
    apply_ = module.lookupSymbol<func::FuncOp>("apply_step");
    if (!acc_ || !apply_)
      return (void)(fail(module.getLoc())
                    << "needs @accumulate_step and @apply_step: run kiln-attach-optimizer "
                       "with accumulate-steps = the micro-batches first");
    if (failed(checkOneBlockBody(acc_, "kiln-pipeline")) ||
        failed(checkOneBlockBody(apply_, "kiln-pipeline")))
      return signalPassFailure();
    body_ = &acc_.getBody().front();
    if (failed(classify()) || failed(assignBlocks()) || failed(cut()))
      return;
    for (Operation &op : body_->without_terminator())
      if (auto it = blockOfOp_.find(&op); it != blockOfOp_.end())
        place_[&op] = static_cast<int>(2 * stageOfBlock(it->second) +
                                       (forward_.contains(&op) ? kForward : kBackward));
    if (failed(splitAccumulators()) || failed(planTransfers()))
      return;
    OpBuilder b(module.getBodyRegion());
    b.setInsertionPoint(acc_);
    std::vector<func::FuncOp> fns(static_cast<size_t>(2 * chunks()));
    saved_.assign(static_cast<size_t>(chunks()), {});
    for (int64_t s = 0; s < chunks(); ++s) {
      // The backward first: it says which forward values to keep.
      func::FuncOp bwd = buildFunction(b, s, kBackward);
      func::FuncOp fwd = buildFunction(b, s, kForward);
      if (!bwd || !fwd)
        return signalPassFailure();
      fwd->moveBefore(bwd);
      fns[static_cast<size_t>(2 * s)] = fwd;
      fns[static_cast<size_t>(2 * s + 1)] = bwd;
    }
    if (failed(buildApply(b, fns)))
      return signalPassFailure();
    for (func::FuncOp fn : fns)
      eraseUnusedArguments(fn);
    // The schedule, as data.
    Builder attrs(&getContext());
    SmallVector<Attribute> perStage;
    for (const auto &actions : pipelineSchedule(schedule, stages, microbatches, virtualStages)) {
      SmallVector<Attribute> list;
      for (const std::string &a : actions)
        list.push_back(attrs.getStringAttr(a));
      perStage.push_back(attrs.getArrayAttr(list));
    }
    SmallVector<Attribute> blockNames;
    for (int64_t s = 0; s < chunks(); ++s) {
      std::string names;
      for (int64_t k = 0; k < blocks_.size(); ++k)
        if (stageOfBlock_[static_cast<size_t>(k)] == s)
          names += (names.empty() ? "" : ",") + blocks_.names[static_cast<size_t>(k)];
      blockNames.push_back(attrs.getStringAttr(names));
    }
    module->setAttr(
        "kiln.pipeline",
        attrs.getDictionaryAttr({
            attrs.getNamedAttr("stages", attrs.getI64IntegerAttr(stages)),
            attrs.getNamedAttr("virtual_stages", attrs.getI64IntegerAttr(virtualStages)),
            attrs.getNamedAttr("microbatches", attrs.getI64IntegerAttr(microbatches)),
            attrs.getNamedAttr("schedule", attrs.getStringAttr(schedule)),
            attrs.getNamedAttr("axis", attrs.getStringAttr("pp")),
            attrs.getNamedAttr("actions", attrs.getArrayAttr(perStage)),
            attrs.getNamedAttr("blocks", attrs.getArrayAttr(blockNames)),
        }));
    // pp first (outermost): a stage's ranks are consecutive, and the
    // partitioned step's axes (dp, tp) keep their groups inside a stage.
    SmallVector<StringAttr> names{attrs.getStringAttr("pp")};
    SmallVector<int64_t> sizes{stages};
    if (mesh) {
      llvm::append_range(names, mesh.getNames());
      llvm::append_range(sizes, mesh.getSizes());
    }
    module->setAttr(KilnDialect::kMeshAttrName, MeshAttr::get(&getContext(), names, sizes));
    acc_.erase();
    apply_.erase();
  }

  /// Forward: what the loss and the metrics depend on.
  LogicalResult classify() {
    auto ret = cast<func::ReturnOp>(body_->getTerminator());
    SmallVector<Value> work;
    for (auto [i, v] : llvm::enumerate(ret.getOperands()))
      if (!acc_.getResultAttr(static_cast<unsigned>(i), KilnDialect::kAliasesAttrName))
        work.push_back(v);
    while (!work.empty()) {
      Operation *def = work.pop_back_val().getDefiningOp();
      if (!def || !forward_.insert(def).second)
        continue;
      llvm::append_range(work, def->getOperands());
    }
    for (Operation &op : body_->without_terminator())
      if (op.getNumRegions() != 0)
        return fail(op.getLoc()) << "'" << op.getName()
                                 << "' has a region: run kiln-pipeline before kiln-fuse";
    // kiln-fuse's working copies (a stage would read a copy no stage sends).
    for (func::FuncOp f : {acc_, apply_})
      for (unsigned i = 0; i < f.getNumArguments(); ++i)
        if (f.getArgAttr(i, KilnDialect::kCopyOfAttrName))
          return fail(f.getLoc()) << "@" << f.getSymName() << " has a working copy ("
                                  << KilnDialect::kCopyOfAttrName
                                  << "): run kiln-pipeline before kiln-fuse";
    return success();
  }

  LogicalResult assignBlocks() {
    // Parameters' blocks, in order of first use by the forward. A parameter
    // outside blocks (embeddings, the final norm) comes before them when
    // some forward op reads it with nothing else that depends on a block's
    // parameter (the embedding lookup), else after them (the final norm
    // reads the last block's output). Not by program order: kiln-partition
    // gathers a block's parameters ahead of their use.
    llvm::StringMap<bool> beforeBlocks;
    llvm::DenseSet<Value> dependsOnBlocks;
    for (Operation &op : body_->without_terminator()) {
      // Views of a parameter (its cast, its all_gather) read it where
      // their readers are.
      if (!forward_.contains(&op) || (op.getNumResults() == 1 && viewOf(op.getResult(0))))
        continue;
      bool depends = false;
      for (Value v : op.getOperands()) {
        StringAttr name = viewOf(v);
        depends |= dependsOnBlocks.contains(v) || (name && !blockOfName(name.getValue()).empty());
        if (!name || blocks_.ofParam.count(name))
          continue;
        std::string block = blockOfName(name.getValue());
        if (block.empty())
          continue;
        auto it = llvm::find(blocks_.names, block);
        if (it == blocks_.names.end()) {
          blocks_.names.push_back(block);
          it = std::prev(blocks_.names.end());
        }
        blocks_.ofParam[name] = static_cast<int>(it - blocks_.names.begin());
      }
      for (Value v : op.getOperands()) {
        StringAttr name = viewOf(v);
        if (!name || !blockOfName(name.getValue()).empty())
          continue;
        bool othersDepend = false;
        for (Value o : op.getOperands())
          othersDepend |= o != v && (dependsOnBlocks.contains(o) ||
                                     (viewOf(o) && !blockOfName(viewOf(o).getValue()).empty()));
        beforeBlocks[name] = beforeBlocks.lookup(name) || !othersDepend;
      }
      if (depends)
        for (Value r : op.getResults())
          dependsOnBlocks.insert(r);
    }
    if (blocks_.size() < chunks())
      return fail(acc_.getLoc()) << "stages = " << chunks()
                                 << " needs at least as many transformer "
                                 << "blocks (parameters named like h.0.*), the model has "
                                 << blocks_.size();
    for (auto &[name, before] : beforeBlocks)
      blocks_.ofParam[name] = before ? -1 : static_cast<int>(blocks_.size());
    // Every op's block: forward values flow to later blocks, gradients to
    // earlier ones. Forward ops first (a backward op reads them).
    auto blockOfOperand = [&](Value v, bool &gradient) -> std::optional<int> {
      gradient = false;
      if (StringAttr name = viewOf(v)) {
        auto it = blocks_.ofParam.find(name);
        return it == blocks_.ofParam.end() ? static_cast<int>(blocks_.size()) : it->second;
      }
      if (Operation *def = v.getDefiningOp(); def && blockOfOp_.count(def)) {
        gradient = !forward_.contains(def);
        return blockOfOp_[def];
      }
      return std::nullopt; // constants, step inputs, optimizer states
    };
    for (Operation &op : body_->without_terminator()) {
      if (!forward_.contains(&op))
        continue;
      // A view of a parameter (its bf16 cast, its ZeRO-3 all_gather) has no
      // block: each stage that reads it makes its own from the parameter,
      // as it does with what is made of constants, instead of receiving it
      // (a tied embedding's cast would cross the pipeline every
      // micro-batch, and its readers would look like one block's).
      if (op.getNumResults() == 1 && viewOf(op.getResult(0)))
        continue;
      std::optional<int> latest;
      bool gradient;
      for (Value v : op.getOperands())
        if (auto block = blockOfOperand(v, gradient))
          latest = std::max(latest.value_or(INT_MIN), *block);
      if (latest)
        blockOfOp_[&op] = *latest;
    }
    // A parameter or forward value the forward reads in several blocks (a
    // tied embedding, or its all_gather under ZeRO-3) says nothing about
    // where a backward op reading it belongs.
    llvm::DenseMap<StringAttr, std::set<int>> readIn;
    llvm::DenseMap<Value, std::set<int>> valueReadIn;
    for (Operation &op : body_->without_terminator())
      if (forward_.contains(&op) && blockOfOp_.count(&op))
        for (Value v : op.getOperands()) {
          if (StringAttr name = viewOf(v))
            readIn[name].insert(blockOfOp_[&op]);
          else
            valueReadIn[v].insert(blockOfOp_[&op]);
        }
    SmallVector<Operation *> plumbing; // backward ops that read only gradients
    // Forward ops kiln-recompute cloned into the backward are activations
    // (they flow forward, like the ops they copy): an op of the backward
    // that matches a forward op reading the same values or their copies.
    llvm::DenseMap<Operation *, Operation *> copyOf;
    auto original = [&](Value v) -> Value {
      Operation *def = v.getDefiningOp();
      if (!def || !copyOf.count(def))
        return v;
      return copyOf[def]->getResult(cast<OpResult>(v).getResultNumber());
    };
    for (Operation &op : body_->without_terminator()) {
      if (forward_.contains(&op) || op.getNumOperands() == 0)
        continue;
      Value first = original(op.getOperand(0));
      for (Operation *candidate : first.getUsers()) {
        if (!forward_.contains(candidate) || candidate->getName() != op.getName() ||
            candidate->getAttrDictionary() != op.getAttrDictionary() ||
            candidate->getResultTypes() != op.getResultTypes() ||
            candidate->getNumOperands() != op.getNumOperands())
          continue;
        bool same = true;
        for (auto [a, b] : llvm::zip(op.getOperands(), candidate->getOperands()))
          same &= original(a) == b;
        if (same) {
          copyOf[&op] = candidate;
          break;
        }
      }
    }
    // A backward op belongs with the activations and parameters it reads
    // (the latest block among them); one that reads only gradients where
    // the earliest of them was made.
    for (Operation &op : body_->without_terminator()) {
      if (forward_.contains(&op))
        continue;
      std::optional<int> latest, earliestGradient;
      for (Value v : op.getOperands()) {
        // A gradient accumulator belongs with its parameter.
        if (auto arg = dyn_cast<BlockArgument>(v); arg && arg.getOwner() == body_)
          if (auto state = acc_.getArgAttrOfType<StringAttr>(arg.getArgNumber(),
                                                             KilnDialect::kStateAttrName);
              state && state.getValue().ends_with(".grad_acc")) {
            auto param =
                StringAttr::get(&getContext(), state.getValue().drop_back(strlen(".grad_acc")));
            if (blocks_.ofParam.count(param) && readIn[param].size() <= 1)
              latest = std::max(latest.value_or(INT_MIN), blocks_.ofParam[param]);
            continue;
          }
        bool gradient;
        std::optional<int> block = blockOfOperand(v, gradient);
        if (!block)
          continue;
        if (Operation *def = v.getDefiningOp(); def && copyOf.count(def))
          gradient = false; // a recomputed activation
        if (StringAttr name = viewOf(v); name && readIn[name].size() > 1)
          continue;
        if (!gradient && valueReadIn.lookup(v).size() > 1)
          continue;
        if (gradient)
          earliestGradient = std::min(earliestGradient.value_or(INT_MAX), *block);
        else
          latest = std::max(latest.value_or(INT_MIN), *block);
      }
      if (copyOf.count(&op)) {
        // A copy of an op made of constants and inputs stays such: each
        // stage that reads it makes its own.
        if (blockOfOp_.count(copyOf[&op]))
          blockOfOp_[&op] = blockOfOp_.lookup(copyOf[&op]); // a copy: [] may grow the map
        else if (latest)
          blockOfOp_[&op] = *latest;
        continue;
      }
      // The block the model built the op in (autodiff gives a VJP its
      // forward op's scope), if any; never after a gradient it reads.
      auto scoped = llvm::find(blocks_.names, blockOf(&op));
      if (scoped != blocks_.names.end() && (latest || earliestGradient)) {
        int block = static_cast<int>(scoped - blocks_.names.begin());
        blockOfOp_[&op] = std::min(block, earliestGradient.value_or(INT_MAX));
        continue;
      }
      if (latest || earliestGradient)
        blockOfOp_[&op] = latest ? *latest : *earliestGradient;
      if (!latest && earliestGradient)
        plumbing.push_back(&op);
    }
    // An op that only reshapes, sums or slices one gradient moves to the
    // earlier block that reads its result (the bias gradient of a block's
    // last linear, the reshape before its weight gradient), so one value
    // crosses the cut instead of two.
    for (Operation *op : llvm::reverse(plumbing)) {
      int nonFree = 0;
      for (Value v : op->getOperands())
        if (Operation *def = v.getDefiningOp(); def && blockOfOp_.count(def))
          ++nonFree;
      if (nonFree != 1 || op->use_empty())
        continue;
      std::optional<int> users;
      for (Operation *user : op->getUsers()) {
        auto it = blockOfOp_.find(user);
        if (it == blockOfOp_.end() || it->second >= blockOfOp_[op]) {
          users.reset();
          break;
        }
        users = std::max(users.value_or(INT_MIN), it->second);
      }
      if (users)
        blockOfOp_[op] = *users;
    }
    return success();
  }

  /// Stage of each block: the user's cuts, or the cut whose most expensive
  /// stage is cheapest.
  LogicalResult cut() {
    int64_t n = blocks_.size();
    stageOfBlock_.assign(static_cast<size_t>(n), 0);
    // With virtual stages the cuts split the blocks into chunks() stages,
    // stage c running on rank c mod stages.
    if (!cuts.empty()) {
      if (static_cast<int64_t>(cuts.size()) != chunks() - 1)
        return fail(acc_.getLoc())
               << "cuts lists " << cuts.size() << " blocks; " << chunks() << " stages need "
               << chunks() - 1 << " (the first block of each stage after the first)";
      int64_t previous = 0;
      for (int64_t c : cuts) {
        if (c <= previous || c >= n)
          return fail(acc_.getLoc())
                 << "cuts must rise strictly between 1 and " << n - 1 << " (the model has " << n
                 << " blocks); got " << c << " after " << previous;
        previous = c;
      }
      for (int64_t k = 0, s = 0; k < n; ++k) {
        while (s < chunks() - 1 && k >= cuts[static_cast<size_t>(s)])
          ++s;
        stageOfBlock_[static_cast<size_t>(k)] = s;
      }
      return success();
    }
    std::vector<double> cost(static_cast<size_t>(n), 0.0);
    for (auto &[op, block] : blockOfOp_) {
      auto c = dyn_cast<CostOpInterface>(op);
      if (!c)
        continue;
      int64_t k = std::clamp<int64_t>(block, 0, n - 1);
      cost[static_cast<size_t>(k)] += static_cast<double>(c.getFlops());
    }
    // best[s][k]: the smallest largest-stage cost of blocks [0, k) in s stages.
    std::vector<double> prefix(static_cast<size_t>(n) + 1, 0.0);
    for (int64_t k = 0; k < n; ++k)
      prefix[static_cast<size_t>(k) + 1] =
          prefix[static_cast<size_t>(k)] + cost[static_cast<size_t>(k)];
    const double inf = std::numeric_limits<double>::infinity();
    const int64_t stages = chunks();
    std::vector<std::vector<double>> best(static_cast<size_t>(stages) + 1,
                                          std::vector<double>(static_cast<size_t>(n) + 1, inf));
    std::vector<std::vector<int64_t>> from(best.size(),
                                           std::vector<int64_t>(static_cast<size_t>(n) + 1, 0));
    best[0][0] = 0;
    for (int64_t s = 1; s <= stages; ++s)
      for (int64_t k = s; k <= n; ++k)
        for (int64_t j = s - 1; j < k; ++j) {
          double c = std::max(best[static_cast<size_t>(s) - 1][static_cast<size_t>(j)],
                              prefix[static_cast<size_t>(k)] - prefix[static_cast<size_t>(j)]);
          // Ties go to the later cut (earlier stages hold more activations
          // under 1F1B, so they get no more than their share).
          if (c <= best[static_cast<size_t>(s)][static_cast<size_t>(k)]) {
            best[static_cast<size_t>(s)][static_cast<size_t>(k)] = c;
            from[static_cast<size_t>(s)][static_cast<size_t>(k)] = j;
          }
        }
    for (int64_t s = stages, k = n; s > 0; --s) {
      int64_t j = from[static_cast<size_t>(s)][static_cast<size_t>(k)];
      for (int64_t i = j; i < k; ++i)
        stageOfBlock_[static_cast<size_t>(i)] = s - 1;
      k = j;
    }
    return success();
  }

  /// A gradient accumulator the step updates as `acc + C(a + b + …)`
  /// (C: nothing, or the linear sum over the stage's mesh, all_reduce or
  /// reduce_scatter) whose summands are made on other stages than the
  /// update's (GPT-2's tied wte: the embedding's gradient on the first
  /// stage, the head's on the last): each other stage t sums its summands
  /// into a transient state of its own, `<param>.grad_acc.stage<t>`, which
  /// its apply sends to the owner once a step, and the owner's apply adds
  /// C(what it receives) to its accumulator before using it. One transfer
  /// a step instead of one a micro-batch (Megatron sums the tied
  /// embedding's gradients once a step too); the sum's order changes.
  LogicalResult splitAccumulators() {
    auto ret = cast<func::ReturnOp>(body_->getTerminator());
    MLIRContext *ctx = &getContext();
    for (unsigned i = 0; i < ret.getNumOperands(); ++i) {
      auto alias = acc_.getResultAttrOfType<IntegerAttr>(i, KilnDialect::kAliasesAttrName);
      if (!alias)
        continue;
      auto accArg = body_->getArgument(static_cast<unsigned>(alias.getInt()));
      auto state =
          acc_.getArgAttrOfType<StringAttr>(accArg.getArgNumber(), KilnDialect::kStateAttrName);
      auto update = ret.getOperand(i).getDefiningOp<AddOp>();
      if (!state || !state.getValue().ends_with(".grad_acc") || !update || !place_.count(update) ||
          (update.getLhs() != accArg && update.getRhs() != accArg))
        continue;
      int64_t owner = place_[update] / 2;
      Value sum = update.getLhs() == accArg ? update.getRhs() : update.getLhs();
      Operation *collective = sum.getDefiningOp();
      if (collective && isa<AllReduceOp, ReduceScatterOp>(collective) && collective->hasOneUse() &&
          place_.count(collective))
        sum = collective->getOperand(0);
      else
        collective = nullptr;
      // The summands: the leaves of a tree of adds, each read once.
      SmallVector<Value> leaves;
      SmallVector<Operation *> tree;
      std::function<void(Value)> walk = [&](Value v) {
        auto add = v.getDefiningOp<AddOp>();
        if (add && add->hasOneUse() && place_.count(add) && !forward_.contains(add) &&
            add.getLhs() != add.getRhs()) {
          tree.push_back(add);
          walk(add.getLhs());
          walk(add.getRhs());
          return;
        }
        leaves.push_back(v);
      };
      walk(sum);
      // Each summand's stage. A widening cast or reshape of a summand made
      // on another stage (bf16-mixed's head gradient, widened to f32) went
      // to the stage that reads it: it goes back (`moved`), and what
      // crossed each micro-batch was its operand.
      std::map<int64_t, SmallVector<Value>> byStage;
      llvm::DenseMap<Operation *, int> moved;
      int64_t crossing = 0, partialBytes = 0;
      bool placed = true;
      for (Value leaf : leaves) {
        Operation *def = leaf.getDefiningOp();
        placed &= def && place_.count(def) && place_[def] % 2 == kBackward;
        if (!placed)
          break;
        int at = place_[def];
        Value sent = leaf;
        if (isa<CastOp, ReshapeOp>(def) && def->hasOneUse())
          if (Operation *from = def->getOperand(0).getDefiningOp(); from && place_.count(from) &&
                                                                    place_[from] % 2 == kBackward &&
                                                                    place_[from] / 2 != at / 2) {
            at = place_[from];
            moved[def] = at;
            sent = def->getOperand(0);
          }
        auto &values = byStage[at / 2];
        if (at / 2 != owner) {
          crossing += bytesOf(sent.getType());
          if (values.empty())
            partialBytes += bytesOf(leaf.getType());
        }
        values.push_back(leaf);
      }
      // Only where it moves fewer bytes: the summands crossed every
      // micro-batch, a partial sum crosses once a step (in the
      // accumulator's type: f32 where bf16 crossed).
      if (!placed || byStage.size() < 2 || !byStage.count(owner) ||
          partialBytes >= crossing * static_cast<int64_t>(microbatches))
        continue;
      for (auto [op, at] : moved)
        place_[op] = at;
      std::string param = state.getValue().drop_back(strlen(".grad_acc")).str();
      OpBuilder b(update);
      auto sumOf = [&](ArrayRef<Value> values, int at) {
        Value total = values.front();
        for (Value v : values.drop_front()) {
          total = AddOp::create(b, update.getLoc(), total.getType(), total, v);
          place_[total.getDefiningOp()] = at;
        }
        return total;
      };
      // The owner's summands, through the collective, into its accumulator.
      Value own = sumOf(byStage[owner], static_cast<int>(2 * owner + kBackward));
      if (collective) {
        IRMapping map;
        map.map(collective->getOperand(0), own);
        Operation *c = b.clone(*collective, map);
        place_[c] = static_cast<int>(2 * owner + kBackward);
        own = c->getResult(0);
      }
      auto total = AddOp::create(b, update.getLoc(), update.getType(), accArg, own);
      place_[total] = static_cast<int>(2 * owner + kBackward);
      ret->setOperand(i, total);
      // Each other stage's, into a transient state of its own.
      for (auto &[stage, values] : byStage) {
        if (stage == owner)
          continue;
        Type type = values.front().getType();
        std::string name = param + ".grad_acc.stage" + std::to_string(stage);
        Builder ab(ctx);
        auto attrs = ab.getDictionaryAttr(
            {ab.getNamedAttr(KilnDialect::kStateAttrName, ab.getStringAttr(name)),
             ab.getNamedAttr(KilnDialect::kInitAttrName, ab.getStringAttr("zeros")),
             ab.getNamedAttr(KilnDialect::kTransientAttrName, ab.getUnitAttr())});
        BlockArgument part = insertStateArgument(acc_, type, attrs, update.getLoc());
        BlockArgument applied = insertStateArgument(apply_, type, attrs, update.getLoc());
        if (!part || !applied)
          return fail(update.getLoc()) << "cannot add the state '" << name << "'";
        Value mine = sumOf(values, static_cast<int>(2 * stage + kBackward));
        auto next = AddOp::create(b, update.getLoc(), type, part, mine);
        place_[next] = static_cast<int>(2 * stage + kBackward);
        unsigned r = acc_.getNumResults();
        if (failed(acc_.insertResult(
                r, type,
                ab.getDictionaryAttr({ab.getNamedAttr(
                    KilnDialect::kAliasesAttrName, ab.getI64IntegerAttr(part.getArgNumber()))}))))
          return fail(update.getLoc()) << "cannot return the state '" << name << "'";
        ret->insertOperands(r, next.getResult());
        // @apply_step zeroes it, as it does the accumulators.
        auto applyRet = cast<func::ReturnOp>(apply_.getBody().front().getTerminator());
        OpBuilder zb(applyRet);
        auto shaped = cast<ShapedType>(type);
        Value zeros = ConstantOp::create(
            zb, update.getLoc(), type,
            DenseElementsAttr::get(shaped, zb.getFloatAttr(shaped.getElementType(), 0)));
        unsigned ar = apply_.getNumResults();
        if (failed(apply_.insertResult(ar, type,
                                       ab.getDictionaryAttr({ab.getNamedAttr(
                                           KilnDialect::kAliasesAttrName,
                                           ab.getI64IntegerAttr(applied.getArgNumber()))}))))
          return fail(update.getLoc()) << "cannot return the state '" << name << "'";
        applyRet->insertOperands(ar, zeros);
        partials_.push_back({name, stage, state.getValue().str(), owner, collective, -1});
      }
      // The old sum is dead: no stage computes it.
      place_.erase(update);
      for (Operation *op : tree)
        place_.erase(op);
      if (collective)
        place_.erase(collective);
    }
    return success();
  }

  static int64_t bytesOf(Type type) {
    auto t = cast<RankedTensorType>(type);
    return t.getNumElements() * static_cast<int64_t>((t.getElementTypeBitWidth() + 7) / 8);
  }

  /// The channels: one per value and stage that reads it elsewhere.
  LogicalResult planTransfers() {
    forwardReceives_.assign(static_cast<size_t>(chunks()), {});
    for (Operation &op : body_->without_terminator()) {
      auto it = place_.find(&op);
      if (it == place_.end())
        continue;
      int here = it->second;
      for (Value v : op.getOperands()) {
        Operation *def = v.getDefiningOp();
        if (!def || !place_.count(def))
          continue;
        int there = place_[def];
        if (there / 2 == here / 2)
          continue;
        if (there % 2 == kBackward && there / 2 < here / 2)
          return fail(op.getLoc()) << "'" << op.getName() << "' on stage " << here / 2
                                   << " reads a gradient made on the earlier stage " << there / 2
                                   << " by " << describe(v) << ": this op's block cannot be placed";
        if (there % 2 == kForward && here % 2 == kForward && there / 2 > here / 2)
          return fail(op.getLoc())
                 << "'" << op.getName() << "' in the forward of stage " << here / 2
                 << " reads a value made on the later stage " << there / 2 << " by " << describe(v)
                 << ": this op's block cannot be placed";
        auto &channels = sends_[v];
        if (!channels.count(here / 2))
          channels[here / 2] = nextChannel_++;
        if (here % 2 == kForward)
          forwardReceives_[static_cast<size_t>(here / 2)].insert(v);
      }
    }
    return success();
  }

  std::string describe(Value v) {
    Operation *def = v.getDefiningOp();
    std::string scope = def ? scopeOf(def) : "";
    return "'" + def->getName().getStringRef().str() + "'" + (scope.empty() ? "" : " of " + scope);
  }

  /// `@stage<s>_forward` or `_backward`: the stage's ops of that phase,
  /// with every original argument (unused ones erased later), received
  /// values, and what the backward keeps from the forward.
  func::FuncOp buildFunction(OpBuilder &b, int64_t s, int phase) {
    int here = static_cast<int>(2 * s + phase);
    std::string name = pipelineFunction(s, phase == kForward ? "forward" : "backward");
    SmallVector<Type> argTypes(acc_.getArgumentTypes());
    auto fn = func::FuncOp::create(b, acc_.getLoc(), name, b.getFunctionType(argTypes, {}));
    SmallVector<DictionaryAttr> argAttrs;
    for (unsigned i = 0; i < acc_.getNumArguments(); ++i)
      argAttrs.push_back(acc_.getArgAttrDict(i) ? acc_.getArgAttrDict(i) : b.getDictionaryAttr({}));
    // Each part of a partitioned step is partitioned; what kiln-recompute
    // chose for the whole step is said once, on the first function.
    for (NamedAttribute a : acc_->getDiscardableAttrs())
      if (a.getName() == KilnDialect::kPartitionedAttrName || (s == 0 && phase == kForward))
        fn->setAttr(a.getName(), a.getValue());
    Block *entry = fn.addEntryBlock();
    OpBuilder fb = OpBuilder::atBlockEnd(entry);
    IRMapping map;
    for (auto [from, to] : llvm::zip(body_->getArguments(), entry->getArguments()))
      map.map(from, to);
    bool failedHere = false;
    std::function<Value(Value)> operand = [&](Value v) -> Value {
      if (Value m = map.lookupOrNull(v))
        return m;
      Operation *def = v.getDefiningOp();
      if (!place_.count(def)) { // constants and what is made of them: a copy
        for (Value o : def->getOperands())
          operand(o);
        fb.clone(*def, map);
        return map.lookup(v);
      }
      int there = place_[def];
      bool keptByForward = there == 2 * s || (phase == kBackward &&
                                              forwardReceives_[static_cast<size_t>(s)].contains(v));
      if (phase == kBackward && keptByForward) {
        auto &saved = saved_[static_cast<size_t>(s)];
        size_t index = static_cast<size_t>(llvm::find(saved, v) - saved.begin());
        if (index == saved.size())
          saved.push_back(v);
        BlockArgument arg = entry->addArgument(v.getType(), v.getLoc());
        argAttrs.push_back(fb.getDictionaryAttr(fb.getNamedAttr(
            KilnDialect::kInputAttrName, fb.getStringAttr("saved." + std::to_string(index)))));
        map.map(v, arg);
        return arg;
      }
      auto channels = sends_.find(v);
      if (channels == sends_.end() || !channels->second.count(s)) {
        failedHere = true;
        fail(def->getLoc()) << "internal: no channel from stage " << there / 2 << " to " << s;
        return v;
      }
      Value r =
          RecvOp::create(fb, def->getLoc(), v.getType(), static_cast<uint64_t>(rankOf(there / 2)),
                         "pp", static_cast<uint64_t>(channels->second[s]),
                         describe(v) + " from stage " + std::to_string(there / 2));
      map.map(v, r);
      return r;
    };
    for (Operation &op : body_->without_terminator()) {
      auto it = place_.find(&op);
      if (it == place_.end() || it->second != here)
        continue;
      for (Value v : op.getOperands())
        operand(v);
      if (failedHere)
        return nullptr;
      Operation *copy = fb.clone(op, map);
      for (auto [orig, mine] : llvm::zip(op.getResults(), copy->getResults())) {
        auto channels = sends_.find(orig);
        if (channels == sends_.end())
          continue;
        for (auto [to, channel] : channels->second)
          SendOp::create(fb, op.getLoc(), mine, static_cast<uint64_t>(rankOf(to)), "pp",
                         static_cast<uint64_t>(channel),
                         describe(orig) + " to stage " + std::to_string(to));
      }
    }
    // Results: the step's results made here, then (forward) the values the
    // backward keeps.
    auto ret = cast<func::ReturnOp>(body_->getTerminator());
    SmallVector<Value> results;
    SmallVector<DictionaryAttr> resultAttrs;
    for (auto [i, v] : llvm::enumerate(ret.getOperands())) {
      Operation *def = v.getDefiningOp();
      if (!def || !place_.count(def)) {
        fail(acc_.getLoc()) << "result #" << i
                            << " of @accumulate_step is not computed by the step";
        return nullptr;
      }
      if (place_[def] != here)
        continue;
      results.push_back(map.lookup(v));
      resultAttrs.push_back(acc_.getResultAttrDict(static_cast<unsigned>(i))
                                ? acc_.getResultAttrDict(static_cast<unsigned>(i))
                                : fb.getDictionaryAttr({}));
    }
    if (phase == kForward)
      for (auto [k, v] : llvm::enumerate(saved_[static_cast<size_t>(s)])) {
        results.push_back(operand(v));
        resultAttrs.push_back(fb.getDictionaryAttr(fb.getNamedAttr(
            KilnDialect::kOutputAttrName, fb.getStringAttr("saved." + std::to_string(k)))));
      }
    func::ReturnOp::create(fb, acc_.getLoc(), results);
    SmallVector<Type> types(entry->getArgumentTypes());
    fn.setFunctionType(fb.getFunctionType(types, ValueRange(results).getTypes()));
    fn.setAllArgAttrs(argAttrs);
    fn.setAllResultAttrs(resultAttrs);
    return fn;
  }

  /// `@stage<r>_apply`, one per rank r (with interleaved stages, for all
  /// of r's stages): @apply_step for the parameters whose gradient the
  /// rank accumulates; the norm's squares summed over the ranks; a
  /// parameter the rank reads but another updates received from it.
  LogicalResult buildApply(OpBuilder &b, llvm::ArrayRef<func::FuncOp> fns) {
    // Who accumulates each parameter's gradient, and who reads it.
    llvm::StringMap<int64_t> owner;
    auto ret = cast<func::ReturnOp>(body_->getTerminator());
    for (auto [i, v] : llvm::enumerate(ret.getOperands())) {
      auto alias = acc_.getResultAttrOfType<IntegerAttr>(static_cast<unsigned>(i),
                                                         KilnDialect::kAliasesAttrName);
      if (!alias)
        continue;
      auto state = acc_.getArgAttrOfType<StringAttr>(static_cast<unsigned>(alias.getInt()),
                                                     KilnDialect::kStateAttrName);
      if (state && state.getValue().ends_with(".grad_acc"))
        owner[state.getValue().drop_back(strlen(".grad_acc"))] =
            rankOf(place_[v.getDefiningOp()] / 2);
    }
    std::map<std::string, std::set<int64_t>> readers;
    for (size_t f = 0; f < fns.size(); ++f) {
      func::FuncOp fn = fns[f];
      for (BlockArgument arg : fn.getArguments())
        if (auto name =
                fn.getArgAttrOfType<StringAttr>(arg.getArgNumber(), KilnDialect::kParamAttrName);
            name && !arg.use_empty())
          readers[name.getValue().str()].insert(rankOf(static_cast<int64_t>(f) / 2));
    }
    // Which parameter a state belongs to ("h.0.attn.qkv.w.adam_m").
    auto paramOfState = [&](llvm::StringRef state) -> std::string {
      for (size_t dot = state.rfind('.'); dot != llvm::StringRef::npos && dot > 0;
           dot = state.rfind('.', dot - 1))
        if (owner.count(state.substr(0, dot)))
          return state.substr(0, dot).str();
      return "";
    };
    std::map<std::pair<std::string, int64_t>, int64_t> channels;
    for (auto &[param, stages] : readers)
      for (int64_t s : stages)
        if (owner.count(param) && owner[param] != s)
          channels[{param, s}] = nextChannel_++;
    for (PartialAccumulator &p : partials_)
      p.channel = nextChannel_++;
    auto partialOf = [&](llvm::StringRef state) -> const PartialAccumulator * {
      for (const PartialAccumulator &p : partials_)
        if (p.state == state)
          return &p;
      return nullptr;
    };
    for (int64_t s = 0; s < stages; ++s) {
      b.setInsertionPoint(apply_);
      auto fn = cast<func::FuncOp>(b.clone(*apply_));
      fn.setSymName(pipelineFunction(s, "apply"));
      Block &body = fn.getBody().front();
      auto argName = [&](unsigned i, llvm::StringRef attr) {
        auto n = fn.getArgAttrOfType<StringAttr>(i, attr);
        return n ? n.getValue().str() : std::string();
      };
      // What the stage updates: its parameters and their states; states
      // of no parameter (the loss scale) every stage keeps alike.
      auto ownedArg = [&](unsigned i) -> std::optional<bool> {
        std::string p = argName(i, KilnDialect::kParamAttrName);
        if (!p.empty())
          return owner.count(p) && owner[p] == s;
        std::string st = argName(i, KilnDialect::kStateAttrName);
        if (const PartialAccumulator *partial = partialOf(st))
          return rankOf(partial->stage) == s;
        if (!st.empty()) {
          std::string of = paramOfState(st);
          if (of.empty())
            return std::nullopt;
          return owner[of] == s;
        }
        return std::nullopt;
      };
      // Partial accumulators: sent by the stage that sums one to the
      // owner of its accumulator, which adds it (through the sum's
      // collective) before anything reads the accumulator.
      SmallVector<std::pair<BlockArgument, Value>> completed;
      OpBuilder pb = OpBuilder::atBlockBegin(&body);
      for (const PartialAccumulator &p : partials_) {
        const int64_t from = rankOf(p.stage), to = rankOf(p.owner);
        if (from != s && to != s)
          continue;
        BlockArgument part, acc;
        for (BlockArgument arg : body.getArguments()) {
          std::string st = argName(arg.getArgNumber(), KilnDialect::kStateAttrName);
          if (st == p.state)
            part = arg;
          else if (st == p.accumulator)
            acc = arg;
        }
        if (!part || !acc)
          return fail(fn.getLoc())
                 << "internal: @apply_step lacks '" << p.state << "' or '" << p.accumulator << "'";
        std::string what =
            "the part of '" + p.accumulator + "' summed on stage " + std::to_string(p.stage);
        if (from == s && to != s) {
          SendOp::create(pb, fn.getLoc(), part, static_cast<uint64_t>(to), "pp",
                         static_cast<uint64_t>(p.channel),
                         what + ", to stage " + std::to_string(p.owner) + " once a step");
          continue;
        }
        // Received, or (interleaved stages of one rank) its own.
        Value received = from == to ? Value(part)
                                    : RecvOp::create(pb, fn.getLoc(), part.getType(),
                                                     static_cast<uint64_t>(from), "pp",
                                                     static_cast<uint64_t>(p.channel), what)
                                          .getResult();
        if (p.collective) {
          IRMapping map;
          map.map(p.collective->getOperand(0), received);
          received = pb.clone(*p.collective, map)->getResult(0);
        }
        if (received.getType() != acc.getType())
          return fail(fn.getLoc())
                 << "internal: '" << p.state << "' does not sum into '" << p.accumulator << "'";
        completed.push_back(
            {acc, AddOp::create(pb, fn.getLoc(), acc.getType(), acc, received).getResult()});
      }
      auto fret = cast<func::ReturnOp>(body.getTerminator());
      OpBuilder rb(fret);
      SmallVector<Value> results;
      SmallVector<DictionaryAttr> attrs;
      for (auto [i, v] : llvm::enumerate(fret.getOperands())) {
        auto alias = fn.getResultAttrOfType<IntegerAttr>(static_cast<unsigned>(i),
                                                         KilnDialect::kAliasesAttrName);
        DictionaryAttr dict = fn.getResultAttrDict(static_cast<unsigned>(i));
        if (!alias) {
          results.push_back(v);
          attrs.push_back(dict);
          continue;
        }
        unsigned a = static_cast<unsigned>(alias.getInt());
        std::optional<bool> owned = ownedArg(a);
        std::string param = argName(a, KilnDialect::kParamAttrName);
        if (!owned || *owned) {
          results.push_back(v);
          attrs.push_back(dict);
          // A parameter other stages read too goes to them.
          if (!param.empty() && v.getDefiningOp())
            for (int64_t to : readers[param])
              if (to != s) {
                OpBuilder sb(v.getContext());
                sb.setInsertionPointAfter(v.getDefiningOp());
                SendOp::create(sb, v.getLoc(), v, static_cast<uint64_t>(to), "pp",
                               static_cast<uint64_t>(channels[{param, to}]),
                               "parameter '" + param + "' updated by stage " + std::to_string(s) +
                                   " to stage " + std::to_string(to));
              }
          continue;
        }
        if (!param.empty() && readers[param].count(s)) {
          results.push_back(RecvOp::create(
              rb, v.getLoc(), v.getType(), static_cast<uint64_t>(owner[param]), "pp",
              static_cast<uint64_t>(channels[{param, s}]),
              "parameter '" + param + "' updated by stage " + std::to_string(owner[param])));
          attrs.push_back(dict);
        }
      }
      // The gradient norm: this stage's accumulators, squares summed over pp.
      SmallVector<GlobalNormOp> norms;
      fn.walk([&](GlobalNormOp n) { norms.push_back(n); });
      for (GlobalNormOp norm : norms) {
        SmallVector<Value> mine;
        for (Value v : norm.getInputs()) {
          auto arg = dyn_cast<BlockArgument>(v);
          if (arg && ownedArg(arg.getArgNumber()).value_or(false))
            mine.push_back(v);
        }
        OpBuilder nb(norm);
        Location loc = norm.getLoc();
        Type type = norm.getNorm().getType();
        Value squares;
        if (mine.empty()) {
          auto shaped = cast<ShapedType>(type);
          squares = ConstantOp::create(
              nb, loc, type,
              DenseElementsAttr::get(shaped, nb.getFloatAttr(shaped.getElementType(), 0)));
        } else {
          Value n = GlobalNormOp::create(nb, loc, type, mine);
          squares = MulOp::create(nb, loc, type, n, n);
        }
        Value total = AllReduceOp::create(nb, loc, type, squares, "pp",
                                          "the squares of stage " + std::to_string(s) + "'s " +
                                              std::to_string(mine.size()) +
                                              " gradients; the gradient norm needs every stage's");
        norm.getNorm().replaceAllUsesWith(SqrtOp::create(nb, loc, type, total).getResult());
        norm->erase();
      }
      // Every reader of a completed accumulator (the norm above included)
      // reads it whole.
      for (auto [acc, whole] : completed)
        acc.replaceAllUsesExcept(whole, whole.getDefiningOp());
      func::ReturnOp::create(rb, fret.getLoc(), results);
      fret->erase();
      fn.setFunctionType(b.getFunctionType(fn.getArgumentTypes(), ValueRange(results).getTypes()));
      fn.setAllResultAttrs(attrs);
      // What no result needs any more (other stages' updates).
      SmallVector<Operation *> ops;
      for (Operation &op : body.without_terminator())
        ops.push_back(&op);
      for (Operation *op : llvm::reverse(ops))
        if (isOpTriviallyDead(op))
          op->erase();
      eraseUnusedArguments(fn);
    }
    return success();
  }

  /// Drops arguments nothing reads, keeping kiln.aliases pointing at the
  /// same arguments.
  static void eraseUnusedArguments(func::FuncOp fn) {
    llvm::BitVector unused(fn.getNumArguments());
    std::vector<int64_t> newIndex(fn.getNumArguments(), -1);
    int64_t next = 0;
    for (BlockArgument arg : fn.getArguments()) {
      bool aliased = false;
      for (unsigned r = 0; r < fn.getNumResults(); ++r)
        if (auto a = fn.getResultAttrOfType<IntegerAttr>(r, KilnDialect::kAliasesAttrName))
          aliased |= a.getInt() == arg.getArgNumber();
      if (arg.use_empty() && !aliased)
        unused.set(arg.getArgNumber());
      else
        newIndex[arg.getArgNumber()] = next++;
    }
    Builder b(fn.getContext());
    for (unsigned r = 0; r < fn.getNumResults(); ++r)
      if (auto a = fn.getResultAttrOfType<IntegerAttr>(r, KilnDialect::kAliasesAttrName))
        fn.setResultAttr(r, KilnDialect::kAliasesAttrName,
                         b.getI64IntegerAttr(newIndex[static_cast<size_t>(a.getInt())]));
    (void)fn.eraseArguments(unused);
  }
};

} // namespace
} // namespace kiln
