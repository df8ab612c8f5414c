//===- Recompute.cpp - keep or recompute what the backward reads ----------===//
//
// The backward of a training step reads forward values (activations), and
// each stays live from its forward op to its last backward reader: at the
// end of the forward they are all live at once, which is the step's memory
// peak. kiln-recompute trades FLOPs for that memory (Chen et al. 2016,
// "Training deep nets with sublinear memory cost"; Korthikanti et al. 2022
// for the selective form):
//
//   1. Per function with a result named kiln.output = "loss": the forward
//      is the ops the loss and the metrics beside it depend on, the
//      backward starts at the first other op (a function without one, like
//      an evaluation's forward, is left alone). A forward value a backward
//      op reads is saved.
//   2. The policy marks forward ops to recompute (see Passes.td): selective
//      marks cheap ops whose operands are kept anyway (arguments,
//      constants, saved values) or themselves recomputed, in program order,
//      but not those made from parameters alone;
//      full marks every op of a block but those whose results other blocks
//      read (the block's outputs are the next block's inputs, kept).
//   3. Each saved value of a marked op, in the order of its first backward
//      reader, is cloned right before that reader — its marked producers
//      first, each op once per function (IRMapping) — and every backward
//      reader reads the clone. The clones made for an earlier reader come
//      before every later one, so they dominate it.
//   4. With a memory budget, candidates are planned on copies of the module
//      (kiln-fuse as configured, kiln-plan-buffers) until one fits.
//
//===----------------------------------------------------------------------===//

#include "ir/KilnOps.h"
#include "passes/PassUtils.h"
#include "passes/Passes.h"
#include "support/Units.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/IRMapping.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/Debug.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>

namespace kiln {
#define GEN_PASS_DEF_RECOMPUTEPASS
#include "passes/Passes.h.inc"
} // namespace kiln

#define DEBUG_TYPE "kiln-recompute"

using namespace mlir;

namespace kiln {
namespace {

/// What to recompute: the cheap ops (selective) and the first `fullBlocks`
/// blocks in full (-1: all).
struct Choice {
  bool selective = false;
  int64_t fullBlocks = 0;
};

/// What a choice did to one function.
struct Outcome {
  int64_t ops = 0;        // ops cloned into the backward
  int64_t flops = 0;      // their FLOPs
  int64_t stepFlops = 0;  // the function's FLOPs before
  int64_t blocks = 0;     // transformer blocks in its forward
  int64_t fullBlocks = 0; // of which recomputed in full
  bool hasBackward = false;
};

/// Ops selective recomputes: a few FLOPs per element, no reduction across
/// the tensor, no communication.
bool isCheap(Operation *op) {
  return op->hasTrait<OpTrait::Elementwise>() ||
         isa<BroadcastInDimOp, ReshapeOp, TransposeOp, SliceOp, PadOp, ConcatOp, IotaOp,
             LayerNormOp, RmsNormOp, RopeOp>(op);
}

int64_t flopsOf(Operation *op) {
  auto cost = dyn_cast<CostOpInterface>(op);
  return cost ? cost.getFlops() : 0;
}

/// Whether `func` has a body and a result named kiln.output = "loss".
bool hasLoss(func::FuncOp func) {
  if (func.isExternal())
    return false;
  for (unsigned r = 0; r < func.getNumResults(); ++r)
    if (auto name = func.getResultAttrOfType<StringAttr>(r, KilnDialect::kOutputAttrName);
        name && name.getValue() == "loss")
      return true;
  return false;
}

/// The results the forward computes: the loss and the metrics beside it
/// (kiln.output), not the optimizer's outputs, which are computed from the
/// gradients (kiln-attach-optimizer's grad_norm and skipped).
llvm::SmallVector<Value> forwardResults(func::FuncOp func) {
  auto ret = cast<func::ReturnOp>(func.getBody().front().getTerminator());
  llvm::SmallVector<Value> results;
  for (unsigned r = 0; r < func.getNumResults(); ++r)
    if (auto name = func.getResultAttrOfType<StringAttr>(r, KilnDialect::kOutputAttrName);
        name && name.getValue() != "grad_norm" && name.getValue() != "skipped")
      results.push_back(ret.getOperand(r));
  return results;
}

/// Applies `choice` to `func` (one block, with a loss result).
Outcome recompute(func::FuncOp func, Choice choice) {
  Outcome out;
  Block &body = func.getBody().front();
  llvm::DenseMap<Operation *, int64_t> position;
  for (Operation &op : body) {
    position[&op] = static_cast<int64_t>(position.size());
    out.stepFlops += flopsOf(&op);
  }

  // 1. The forward: the backward slice of the loss and the metrics.
  llvm::DenseSet<Operation *> forward;
  llvm::SmallVector<Operation *> worklist;
  for (Value result : forwardResults(func))
    if (Operation *def = result.getDefiningOp())
      worklist.push_back(def);
  while (!worklist.empty()) {
    Operation *op = worklist.pop_back_val();
    if (!forward.insert(op).second)
      continue;
    for (Value operand : op->getOperands())
      if (Operation *def = operand.getDefiningOp())
        worklist.push_back(def);
  }
  // Where the backward starts: the first op outside the forward (constants
  // aside: canonicalization hoists them). Not after the forward's last op:
  // a partitioned step sums the loss over the ranks right before the
  // return, after the whole backward (a chain of all_reduces on a dp x tp
  // mesh); those forward ops form the results' tail.
  int64_t backwardStart = -1;
  for (Operation &op : body.without_terminator())
    if (!forward.contains(&op) && !op.hasTrait<mlir::OpTrait::ConstantLike>()) {
      backwardStart = position.lookup(&op);
      break;
    }
  auto isBackward = [&](Operation *op) {
    return op && backwardStart >= 0 && !forward.contains(op) && !isa<func::ReturnOp>(op) &&
           position.lookup(op) >= backwardStart;
  };
  // The backward readers of each forward value (the return does not count:
  // it reads the value where it is).
  llvm::DenseMap<Value, llvm::SmallVector<OpOperand *>> readers;
  for (Operation &op : body) {
    if (!forward.contains(&op))
      continue;
    for (Value result : op.getResults())
      for (OpOperand &use : result.getUses())
        if (isBackward(body.findAncestorOpInBlock(*use.getOwner())))
          readers[result].push_back(&use);
  }
  auto saved = [&](Value v) { return readers.contains(v); };
  out.hasBackward = llvm::any_of(body, [&](Operation &op) { return isBackward(&op); });

  // 2. Mark. Blocks in order of first appearance; the first fullBlocks are
  // recomputed in full.
  llvm::SmallVector<std::string> blocks;
  llvm::StringSet<> seen;
  for (Operation &op : body)
    if (forward.contains(&op))
      if (std::string block = blockOf(&op); !block.empty() && seen.insert(block).second)
        blocks.push_back(block);
  out.blocks = static_cast<int64_t>(blocks.size());
  out.fullBlocks = choice.fullBlocks < 0 ? out.blocks : std::min(choice.fullBlocks, out.blocks);
  llvm::StringSet<> full;
  for (int64_t i = 0; i < out.fullBlocks; ++i)
    full.insert(blocks[i]);

  // A value made from parameters alone (a weight's low-precision copy) is
  // not an activation: its size does not grow with the batch, and
  // recomputing it is a pass over every weight. Selective keeps it.
  auto fromParameters = [&](Operation *op) {
    bool any = false;
    for (Value v : op->getOperands()) {
      if (Operation *def = v.getDefiningOp()) {
        if (!def->hasTrait<mlir::OpTrait::ConstantLike>())
          return false;
        continue;
      }
      auto arg = cast<BlockArgument>(v);
      if (!func.getArgAttr(arg.getArgNumber(), KilnDialect::kParamAttrName) &&
          !func.getArgAttr(arg.getArgNumber(), KilnDialect::kStateAttrName))
        return false;
      any = true;
    }
    return any;
  };
  llvm::DenseSet<Operation *> marked;
  auto available = [&](Value v) {
    Operation *def = v.getDefiningOp();
    return !def || def->hasTrait<mlir::OpTrait::ConstantLike>() || saved(v) || marked.contains(def);
  };
  for (Operation &op : body) {
    if (!forward.contains(&op) || op.getNumRegions() || op.hasTrait<mlir::OpTrait::ConstantLike>())
      continue;
    std::string block = blockOf(&op);
    if (!block.empty() && full.contains(block)) {
      // A block's outputs (read by forward ops of another block or outside
      // blocks) are the next block's inputs: kept. Everything else in it is
      // recomputed.
      bool output = llvm::any_of(op.getUsers(), [&](Operation *user) {
        return forward.contains(user) && blockOf(user) != block;
      });
      if (!output)
        marked.insert(&op);
      continue;
    }
    if (choice.selective && isCheap(&op) && !fromParameters(&op) &&
        llvm::all_of(op.getOperands(), available))
      marked.insert(&op);
  }

  // 3. Clone into the backward, in the order of the first backward readers.
  struct Need {
    Value value;
    Operation *first;
  };
  llvm::SmallVector<Need> needs;
  for (Operation &op : body) {
    if (!marked.contains(&op))
      continue;
    for (Value result : op.getResults()) {
      auto it = readers.find(result);
      if (it == readers.end())
        continue;
      Operation *first = nullptr;
      for (OpOperand *use : it->second) {
        Operation *user = body.findAncestorOpInBlock(*use->getOwner());
        if (!first || position.lookup(user) < position.lookup(first))
          first = user;
      }
      needs.push_back({result, first});
    }
  }
  llvm::stable_sort(needs, [&](const Need &a, const Need &b) {
    return position.lookup(a.first) < position.lookup(b.first);
  });
  IRMapping clones;
  OpBuilder builder(func.getContext());
  // The clone of `v` (v itself when it is not recomputed), cloning what it
  // needs first, at the builder's insertion point.
  std::function<Value(Value)> cloneOf = [&](Value v) -> Value {
    Operation *def = v.getDefiningOp();
    if (!def || !marked.contains(def))
      return v;
    if (Value c = clones.lookupOrNull(v))
      return c;
    for (Value operand : def->getOperands())
      (void)cloneOf(operand);
    builder.clone(*def, clones);
    ++out.ops;
    out.flops += flopsOf(def);
    return clones.lookup(v);
  };
  for (const Need &need : needs) {
    builder.setInsertionPoint(need.first);
    Value copy = cloneOf(need.value);
    for (OpOperand *use : readers[need.value])
      use->set(copy);
  }
  return out;
}

/// The largest arena of the module's planned functions (kiln.memory total).
int64_t plannedArena(ModuleOp module) {
  int64_t total = 0;
  for (auto func : module.getOps<func::FuncOp>())
    if (auto memory = func->getAttrOfType<DictionaryAttr>(KilnDialect::kMemoryAttrName))
      if (auto t = memory.getAs<IntegerAttr>("total"))
        total = std::max(total, t.getInt());
  return total;
}

struct RecomputePass final : impl::RecomputePassBase<RecomputePass> {
  using Base::Base;

  /// A candidate of the budget search and its planned arena.
  struct Tried {
    Choice choice;
    int64_t arena;
  };

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (policy != "none" && policy != "selective" && policy != "full") {
      mlir::emitError(module.getLoc())
          << "kiln-recompute: policy '" << policy << "' is not one of none, selective, full";
      return signalPassFailure();
    }
    if (fullBlocks < -1) {
      mlir::emitError(module.getLoc())
          << "kiln-recompute: full-blocks = " << fullBlocks << " must be -1 (all) or at least 0";
      return signalPassFailure();
    }
    llvm::SmallVector<func::FuncOp> funcs;
    for (auto func : module.getOps<func::FuncOp>()) {
      if (!hasLoss(func))
        continue;
      if (failed(checkOneBlockBody(func, "kiln-recompute")))
        return signalPassFailure();
      funcs.push_back(func);
    }
    Choice start;
    start.selective = policy != "none";
    start.fullBlocks = policy == "full" ? fullBlocks.getValue() : 0;

    Choice choice = start;
    std::optional<int64_t> budget;
    llvm::SmallVector<Tried> tried;
    if (!memoryBudget.empty()) {
      auto bytes = parseByteSize(memoryBudget);
      if (!bytes) {
        mlir::emitError(module.getLoc())
            << "kiln-recompute: memory-budget: " << llvm::toString(bytes.takeError());
        return signalPassFailure();
      }
      budget = *bytes;
      FailureOr<Choice> fits = search(module, funcs, start, *budget, tried);
      if (failed(fits))
        return signalPassFailure();
      choice = *fits;
    }

    for (func::FuncOp func : funcs) {
      Outcome out = recompute(func, choice);
      numCloned += out.ops;
      LLVM_DEBUG(llvm::dbgs() << "kiln-recompute: @" << func.getSymName() << ": "
                              << describe(choice) << ", " << out.ops << " ops cloned, "
                              << out.flops << " FLOPs of " << out.stepFlops << "\n");
      if (!out.hasBackward)
        continue; // a forward alone (evaluation): nothing is read later
      Builder b(func.getContext());
      llvm::StringRef name = out.fullBlocks > 0 ? "full" : choice.selective ? "selective" : "none";
      llvm::SmallVector<NamedAttribute> entries{
          b.getNamedAttr("policy", b.getStringAttr(name)),
          b.getNamedAttr("full_blocks", b.getI64IntegerAttr(out.fullBlocks)),
          b.getNamedAttr("blocks", b.getI64IntegerAttr(out.blocks)),
          b.getNamedAttr("ops", b.getI64IntegerAttr(out.ops)),
          b.getNamedAttr("flops", b.getI64IntegerAttr(out.flops)),
          b.getNamedAttr("step_flops", b.getI64IntegerAttr(out.stepFlops))};
      if (budget) {
        entries.push_back(b.getNamedAttr("budget", b.getI64IntegerAttr(*budget)));
        llvm::SmallVector<Attribute> candidates;
        for (const Tried &t : tried)
          candidates.push_back(b.getDictionaryAttr(
              {b.getNamedAttr("selective", b.getBoolAttr(t.choice.selective)),
               b.getNamedAttr("full_blocks", b.getI64IntegerAttr(t.choice.fullBlocks)),
               b.getNamedAttr("arena", b.getI64IntegerAttr(t.arena))}));
        entries.push_back(b.getNamedAttr("tried", b.getArrayAttr(candidates)));
      }
      func->setAttr(KilnDialect::kRecomputeAttrName, b.getDictionaryAttr(entries));
    }
  }

  /// The planned arena of `module` under `choice`, from a copy.
  FailureOr<int64_t> plan(ModuleOp module, Choice choice) {
    OwningOpRef<ModuleOp> copy = module.clone();
    for (auto func : copy->getOps<func::FuncOp>())
      if (hasLoss(func))
        (void)recompute(func, choice);
    PassManager pm(module.getContext());
    if (fuse) {
      FusePassOptions options;
      options.epilogues = epilogues;
      options.foldCasts = foldCasts;
      options.norms = norms;
      options.embeddingInit = embeddingInit;
      options.adamwCopies = adamwCopies;
      options.crossEntropy = crossEntropy;
      options.attentionBias = attentionBias;
      options.broadcasts = broadcasts;
      options.siblings = siblings;
      options.reductions = reductions;
      options.biasGradEpilogues = biasGradEpilogues;
      pm.addPass(createFusePass(options));
    }
    if (bucketBytes > 0) {
      BucketCollectivesPassOptions buckets;
      buckets.bytes = bucketBytes;
      pm.addPass(createBucketCollectivesPass(buckets));
    }
    pm.addPass(createPlanBuffersPass());
    if (failed(pm.run(*copy)))
      return failure();
    return plannedArena(*copy);
  }

  /// The first candidate from `start` whose arena fits `budget`: none,
  /// selective, then full on 1, 2, ... blocks (binary search: more blocks
  /// recomputed never plan a larger arena... nearly; the search takes the
  /// smallest count it finds to fit).
  FailureOr<Choice> search(ModuleOp module, llvm::ArrayRef<func::FuncOp> funcs, Choice start,
                           int64_t budget, llvm::SmallVectorImpl<Tried> &tried) {
    // Choice{} marks nothing, so this only counts the blocks.
    int64_t blocks = 0;
    for (func::FuncOp func : funcs)
      blocks = std::max(blocks, recompute(func, Choice{}).blocks);
    auto attempt = [&](Choice c) -> FailureOr<bool> {
      FailureOr<int64_t> arena = plan(module, c);
      if (failed(arena)) {
        mlir::emitError(module.getLoc())
            << "kiln-recompute: planning the candidate '" << describe(c)
            << "' failed (the errors above are about a copy of the module, with it applied)";
        return failure();
      }
      tried.push_back({c, *arena});
      ++numCandidates;
      LLVM_DEBUG(llvm::dbgs() << "kiln-recompute: candidate " << describe(c) << " plans "
                              << *arena << " bytes (budget " << budget << ")\n");
      return *arena <= budget;
    };
    // Full on k blocks needs blocks; without any, full is selective.
    if (blocks == 0 && start.fullBlocks != 0)
      start.fullBlocks = 0;
    llvm::SmallVector<Choice> ladder;
    if (!start.selective)
      ladder.push_back(Choice{});
    if (start.fullBlocks == 0)
      ladder.push_back(Choice{true, 0});
    for (Choice c : ladder) {
      FailureOr<bool> fits = attempt(c);
      if (failed(fits))
        return failure();
      if (*fits)
        return c;
    }
    // Full recomputation of k blocks: the smallest k in [lo, blocks] that fits.
    int64_t hi = blocks;
    int64_t lo = std::clamp<int64_t>(start.fullBlocks < 0 ? blocks : start.fullBlocks, 1,
                                     std::max<int64_t>(blocks, 1));
    if (blocks == 0)
      return fail(module, budget, tried);
    FailureOr<bool> fitsAll = attempt(Choice{true, hi});
    if (failed(fitsAll))
      return failure();
    if (!*fitsAll)
      return fail(module, budget, tried);
    while (lo < hi) {
      int64_t mid = lo + (hi - lo) / 2;
      FailureOr<bool> fits = attempt(Choice{true, mid});
      if (failed(fits))
        return failure();
      if (*fits)
        hi = mid;
      else
        lo = mid + 1;
    }
    return Choice{true, hi};
  }

  FailureOr<Choice> fail(ModuleOp module, int64_t budget, llvm::ArrayRef<Tried> tried) {
    InFlightDiagnostic diag = mlir::emitError(module.getLoc());
    diag << "kiln-recompute: no recomputation fits the memory budget of " << formatBytes(budget)
         << " (" << memoryBudget << ")";
    if (tried.empty()) {
      diag << ": nothing to recompute";
      return failure();
    }
    const Tried *smallest = &tried.front();
    for (const Tried &t : tried)
      if (t.arena < smallest->arena)
        smallest = &t;
    diag << "; the smallest arena it can plan is " << formatBytes(smallest->arena) << " ("
         << smallest->arena << " bytes, " << describe(smallest->choice)
         << ") — set the budget to at least that, or lower train.batch_size. Planned:";
    for (auto [i, t] : llvm::enumerate(tried))
      diag << (i ? "; " : " ") << describe(t.choice) << " " << formatBytes(t.arena);
    return failure();
  }

  static std::string describe(Choice c) {
    if (c.fullBlocks != 0)
      return c.fullBlocks < 0 ? std::string("full")
                              : llvm::formatv("full on {0} block(s)", c.fullBlocks).str();
    return c.selective ? "selective" : "none";
  }
};

} // namespace

std::string describeRecompute(func::FuncOp func) {
  auto rc = func->getAttrOfType<DictionaryAttr>(KilnDialect::kRecomputeAttrName);
  if (!rc)
    return "";
  auto integer = [&](llvm::StringRef key) {
    auto a = rc.getAs<IntegerAttr>(key);
    return a ? a.getInt() : 0;
  };
  auto policyAttr = rc.getAs<StringAttr>("policy");
  std::string policy = policyAttr ? policyAttr.getValue().str() : "?";
  int64_t fullBlocks = integer("full_blocks"), blocks = integer("blocks");
  std::string what = policy;
  if (fullBlocks > 0 && fullBlocks < blocks)
    what = llvm::formatv("full on {0} of {1} blocks, selective elsewhere", fullBlocks, blocks);
  else if (fullBlocks > 0)
    what = llvm::formatv("full, {0} blocks", blocks);
  double flops = static_cast<double>(integer("flops")),
         step = static_cast<double>(integer("step_flops"));
  std::string line = llvm::formatv("kiln-recompute: @{0} ({1}) recomputes {2} ops in the backward, "
                                   "+{3:f1} GFLOP a step (+{4:f1} %)",
                                   func.getSymName(), what, integer("ops"), flops / 1e9,
                                   step > 0 ? 100.0 * flops / step : 0.0)
                         .str();
  if (auto budget = rc.getAs<IntegerAttr>("budget")) {
    line += "; memory budget " + formatBytes(budget.getInt()) + ", planned:";
    if (auto tried = rc.getAs<ArrayAttr>("tried"))
      for (Attribute t : tried) {
        auto entry = dyn_cast<DictionaryAttr>(t);
        auto selective = entry ? entry.getAs<BoolAttr>("selective") : nullptr;
        auto full = entry ? entry.getAs<IntegerAttr>("full_blocks") : nullptr;
        auto arena = entry ? entry.getAs<IntegerAttr>("arena") : nullptr;
        if (!selective || !full || !arena)
          continue; // not what the pass writes
        line += " " + RecomputePass::describe(Choice{selective.getValue(), full.getInt()}) +
                " " + formatBytes(arena.getInt()) + ";";
      }
    line.pop_back();
  }
  return line;
}

} // namespace kiln
