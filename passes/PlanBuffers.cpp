//===- PlanBuffers.cpp - every tensor an offset in one arena per device ----===//
//
// Assigns every value of every function a byte offset in one arena, so that
// the peak memory is known before anything runs:
//
//   1. Persistent region, shared by all functions: parameters (kiln.param),
//      optimizer states (kiln.state) and step inputs (kiln.input), each name
//      once, in order of first appearance; then a fixed workspace (cuBLASLt
//      and the kernels' partial sums).
//   2. Per function, above the persistent region (functions run one at a
//      time, so they share it): liveness over the ops in program order. A
//      value lives from its op to its last use (the return counts as the
//      end). Reshapes share their operand's buffer. Splat constants whose
//      users are all elementwise ops get no buffer (codegen inlines them as
//      literals); other constants are materialized at their first use.
//   3. A result marked kiln.aliases takes its argument's buffer (an in-place
//      update) when no op after its producer still reads the argument;
//      otherwise it gets a buffer of its own and codegen copies it back at
//      the end.
//   4. Buffers are placed best-fit into the gaps freed by dead values
//      (aligned to `alignment`), else above the high-water mark.
//
// Results: `kiln.offset` on arguments, `kiln.offsets` (one per result, -1
// for none) on ops, and on each function `kiln.memory`, a dictionary of the
// bytes of params, states, inputs, workspace, the scratch peak, the
// gradients live at that peak, and the total.
//
//===----------------------------------------------------------------------===//

#include "ir/KilnOps.h"
#include "passes/PassUtils.h"
#include "passes/Passes.h"
#include "passes/PlanBuffersUtils.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SetVector.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/MathExtras.h"

#include <map>

namespace kiln {
#define GEN_PASS_DEF_PLANBUFFERSPASS
#include "passes/Passes.h.inc"
} // namespace kiln

#define DEBUG_TYPE "kiln-plan-buffers"

using namespace mlir;

namespace kiln {

std::optional<std::pair<unsigned, unsigned>> inPlaceOperand(Operation *op) {
  if (isa<CrossEntropyGradOp>(op))
    return std::pair<unsigned, unsigned>{0, 0}; // logits -> dlogits
  // The rows add into init (its copy, when init lives on).
  if (auto e = dyn_cast<EmbeddingGradOp>(op);
      e && e.getInit() && e.getInit().getType() == e.getType())
    return std::pair<unsigned, unsigned>{2, 0};
  // A sum over ranks in place (NCCL allows it): the bytes stay the
  // gradient's until its reader, so the compute stream does not wait for
  // the collective before then, and no second buffer is needed.
  if (isa<AllReduceOp>(op))
    return std::pair<unsigned, unsigned>{0, 0};
  if (auto fusion = dyn_cast<FusionOp>(op); fusion && fusion.isCrossEntropyFusion()) {
    auto body = matchCrossEntropyFusion(fusion);
    if (failed(body))
      return std::nullopt;
    auto logits = cast<BlockArgument>(body->forward.getLogits());
    for (auto [i, v] : llvm::enumerate(fusion.getYield().getValues()))
      if (v == body->grad.getDlogits())
        return std::pair<unsigned, unsigned>{logits.getArgNumber(), i};
  }
  return std::nullopt;
}

bool isInlinedConstant(Operation *op) {
  auto constant = dyn_cast<ConstantOp>(op);
  if (!constant || !isa<SplatElementsAttr>(constant.getValue()))
    return false;
  return llvm::all_of(constant->getUsers(), [](Operation *user) {
    return user->hasTrait<OpTrait::Elementwise>() && !isa<func::ReturnOp>(user);
  });
}

namespace {

int64_t alignUp(int64_t n, int64_t a) { return (n + a - 1) / a * a; }

/// Best-fit placement of buffers with known lifetimes.
class Arena {
public:
  Arena(int64_t base, int64_t alignment) : top_(base), base_(base), alignment_(alignment) {}

  int64_t allocate(int64_t bytes) {
    bytes = alignUp(std::max<int64_t>(bytes, 1), alignment_);
    auto best = free_.end();
    for (auto it = free_.begin(); it != free_.end(); ++it)
      if (it->second >= bytes && (best == free_.end() || it->second < best->second))
        best = it;
    if (best != free_.end()) {
      int64_t offset = best->first, left = best->second - bytes;
      free_.erase(best);
      if (left > 0)
        free_[offset + bytes] = left;
      live_ += bytes;
      return offset;
    }
    int64_t offset = top_;
    top_ += bytes;
    live_ += bytes;
    return offset;
  }

  void release(int64_t offset, int64_t bytes) {
    bytes = alignUp(std::max<int64_t>(bytes, 1), alignment_);
    live_ -= bytes;
    free_[offset] = bytes;
    // Merge with the neighbours.
    auto it = free_.find(offset);
    if (it != free_.begin()) {
      auto prev = std::prev(it);
      if (prev->first + prev->second == it->first) {
        prev->second += it->second;
        free_.erase(it);
        it = prev;
      }
    }
    auto next = std::next(it);
    if (next != free_.end() && it->first + it->second == next->first) {
      it->second += next->second;
      free_.erase(next);
    }
  }

  int64_t highWater() const { return top_ - base_; }
  int64_t live() const { return live_; }

private:
  std::map<int64_t, int64_t> free_; // offset -> size
  int64_t top_, base_, alignment_, live_ = 0;
};

struct PlanBuffersPass final : impl::PlanBuffersPassBase<PlanBuffersPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    // Kernels read 16-byte words: offsets must be multiples of 16, and a
    // power of two keeps every multiple of the alignment one too.
    int64_t align = alignment, workspace = workspaceBytes;
    if (align < 16 || align > (int64_t(1) << 30) || !llvm::isPowerOf2_64(align)) {
      mlir::emitError(module.getLoc())
          << "kiln-plan-buffers: alignment = " << align << " must be a power of two from 16 to 2^30";
      return signalPassFailure();
    }
    if (workspace < 0 || workspace > (int64_t(1) << 40)) {
      mlir::emitError(module.getLoc())
          << "kiln-plan-buffers: workspace = " << workspace << " must be in [0, 2^40] bytes";
      return signalPassFailure();
    }
    Builder b(module.getContext());
    // 1. The persistent region.
    llvm::StringMap<std::pair<int64_t, Type>> persistent;
    int64_t top = 0, params = 0, states = 0, inputs = 0;
    for (auto func : module.getOps<func::FuncOp>()) {
      if (failed(checkOneBlockBody(func, "kiln-plan-buffers")))
        return signalPassFailure();
      for (unsigned i = 0; i < func.getNumArguments(); ++i) {
        if (numBytes(func.getArgumentTypes()[i]) > kMaxTensorBytes) {
          func.emitError() << "kiln-plan-buffers: argument #" << i << " of @" << func.getSymName()
                           << " is larger than kiln's limit of 2^48 bytes per tensor";
          return signalPassFailure();
        }
        std::string key;
        int64_t *category = nullptr;
        if (auto n = func.getArgAttrOfType<StringAttr>(i, KilnDialect::kParamAttrName)) {
          key = "param:" + n.getValue().str();
          category = &params;
        } else if (auto n = func.getArgAttrOfType<StringAttr>(i, KilnDialect::kStateAttrName)) {
          key = "state:" + n.getValue().str();
          category = &states;
        } else if (auto n = func.getArgAttrOfType<StringAttr>(i, KilnDialect::kInputAttrName)) {
          key = "input:" + n.getValue().str();
          category = &inputs;
        } else {
          func.emitError() << "kiln-plan-buffers: argument #" << i
                           << " has no kiln.param, kiln.state or kiln.input name";
          return signalPassFailure();
        }
        Type type = func.getArgumentTypes()[i];
        auto [it, inserted] = persistent.try_emplace(key, top, type);
        if (inserted) {
          int64_t bytes = alignUp(numBytes(type), alignment);
          top += bytes;
          *category += bytes;
        } else if (it->second.second != type) {
          // The same input name with another shape (e.g. tokens of @logits):
          // a buffer of its own.
          key += ":" + std::to_string(i) + ":" + func.getSymName().str();
          persistent[key] = {top, type};
          int64_t bytes = alignUp(numBytes(type), alignment);
          top += bytes;
          *category += bytes;
          func.setArgAttr(i, KilnDialect::kOffsetAttrName, b.getI64IntegerAttr(persistent[key].first));
          continue;
        }
        func.setArgAttr(i, KilnDialect::kOffsetAttrName, b.getI64IntegerAttr(persistent[key].first));
      }
    }
    int64_t workspaceOffset = top;
    top += alignUp(workspaceBytes, alignment);
    int64_t scratchBase = top;

    // 2-4. Each function's scratch.
    for (auto func : module.getOps<func::FuncOp>())
      if (failed(planFunction(func, scratchBase)))
        return signalPassFailure();
    for (auto func : module.getOps<func::FuncOp>()) {
      auto memory = llvm::cast<DictionaryAttr>(func->getAttr(KilnDialect::kMemoryAttrName));
      SmallVector<NamedAttribute> entries(memory.begin(), memory.end());
      entries.push_back(b.getNamedAttr("params", b.getI64IntegerAttr(params)));
      entries.push_back(b.getNamedAttr("states", b.getI64IntegerAttr(states)));
      entries.push_back(b.getNamedAttr("inputs", b.getI64IntegerAttr(inputs)));
      entries.push_back(b.getNamedAttr("workspace", b.getI64IntegerAttr(alignUp(workspaceBytes, alignment))));
      entries.push_back(b.getNamedAttr("workspace_offset", b.getI64IntegerAttr(workspaceOffset)));
      int64_t scratch = llvm::cast<IntegerAttr>(memory.get("scratch")).getInt();
      entries.push_back(b.getNamedAttr("total", b.getI64IntegerAttr(scratchBase + scratch)));
      func->setAttr(KilnDialect::kMemoryAttrName, b.getDictionaryAttr(entries));
    }
  }

  LogicalResult planFunction(func::FuncOp func, int64_t scratchBase) {
    Builder b(func.getContext());
    Block &body = func.getBody().front();
    auto ret = cast<func::ReturnOp>(body.getTerminator());
    llvm::DenseMap<Operation *, int> index;
    int n = 0;
    for (Operation &op : body)
      index[&op] = n++;
    const int end = n; // the return

    // Which buffer each value uses: its own, an alias (reshape), an argument
    // (in place), or none.
    llvm::DenseMap<Value, Value> root;
    auto rootOf = [&](Value v) {
      while (root.count(v))
        v = root[v];
      return v;
    };
    for (Operation &op : body)
      if (auto reshape = dyn_cast<ReshapeOp>(op))
        root[reshape.getResult()] = reshape.getOperand();

    // Live ranges of the roots: the last op reading each (the return is
    // `end`), and the last reader that is not the return.
    llvm::DenseMap<Value, int> lastUse, lastRead;
    for (Operation &op : body)
      for (Value operand : op.getOperands()) {
        Value r = rootOf(operand);
        if (&op == ret.getOperation()) {
          lastUse[r] = end;
          continue;
        }
        lastUse[r] = std::max(lastUse.lookup(r), index[&op]);
        lastRead[r] = std::max(lastRead.lookup(r), index[&op]);
      }

    // Codegen runs all AdamW updates of a function as one multi-tensor
    // launch at the last of them: their operands live until then, and so do
    // their results (which it writes then, read by nothing or not).
    SmallVector<AdamWUpdateOp> updates(body.getOps<AdamWUpdateOp>());
    if (!updates.empty()) {
      int last = index[updates.back()];
      for (AdamWUpdateOp update : updates) {
        for (Value operand : update->getOperands())
          lastUse[rootOf(operand)] = std::max(lastUse[rootOf(operand)], last);
        for (Value result : update->getResults())
          lastUse[rootOf(result)] = std::max(lastUse.lookup(rootOf(result)), last);
      }
    }
    // The CUDA executor posts a run of consecutive kiln.send/kiln.recv, or
    // of consecutive sums of one kiln.bucket (kiln-bucket-collectives), as
    // one NCCL group, and codegen converts a kiln.cast_group's casts
    // (kiln-group-casts) in one launch where its last cast is: each op of
    // the run reads its operands until the run ends, so nothing the run
    // writes may land in their bytes. A bucket's sum may still run in place
    // (its result over its operand, as NCCL allows; decided below with the
    // run's members).
    struct Run {
      int end;
      SmallVector<Operation *> members;
    };
    std::vector<Run> runs;
    llvm::DenseMap<Operation *, size_t> runOf;
    auto groupOf = [](Operation &op) -> std::optional<int64_t> {
      if (isa<SendOp, RecvOp>(op))
        return -1; // transfers
      if (auto b = op.getAttrOfType<IntegerAttr>(KilnDialect::kBucketAttrName))
        return b.getInt();
      if (auto c = op.getAttrOfType<IntegerAttr>(KilnDialect::kCastGroupAttrName))
        return -2 - c.getInt(); // apart from the buckets' numbers and the transfers
      return std::nullopt;
    };
    for (auto it = body.begin(); it != body.end();) {
      std::optional<int64_t> group = groupOf(*it);
      if (!group) {
        ++it;
        continue;
      }
      auto runEnd = it;
      while (std::next(runEnd) != body.end() && groupOf(*std::next(runEnd)) == group)
        ++runEnd;
      int last = index[&*runEnd];
      runs.push_back({last, {}});
      for (; it != std::next(runEnd); ++it) {
        runOf[&*it] = runs.size() - 1;
        runs.back().members.push_back(&*it);
        for (Value operand : it->getOperands())
          lastUse[rootOf(operand)] = std::max(lastUse[rootOf(operand)], last);
      }
    }
    auto runsAt = [&](Operation *op) {
      return isa<AdamWUpdateOp>(op) ? index[updates.back()] : index[op];
    };

    // In-place results: the producer reads the argument only element by
    // element (or not at all) and nothing reads the argument, through any
    // reshape of it, after the producer runs.
    llvm::DenseMap<Value, BlockArgument> inPlace;
    for (unsigned r = 0; r < ret.getNumOperands(); ++r) {
      auto alias = func.getResultAttrOfType<IntegerAttr>(r, KilnDialect::kAliasesAttrName);
      if (!alias)
        continue;
      BlockArgument arg = func.getArgument(alias.getInt());
      Value v = ret.getOperand(r);
      Operation *producer = v.getDefiningOp();
      if (!producer || root.count(v) || isa<ConstantOp>(producer) || inPlace.count(v))
        continue;
      bool readsArg = llvm::any_of(producer->getOperands(),
                                   [&](Value operand) { return rootOf(operand) == arg; });
      bool elementwise = producer->hasTrait<OpTrait::Elementwise>() ||
                         isa<AdamWUpdateOp>(producer) ||
                         (isa<FusionOp>(producer) && cast<FusionOp>(producer).isLoopFusion());
      if (readsArg && !elementwise)
        continue;
      if (!lastRead.count(arg) || lastRead[arg] <= runsAt(producer))
        inPlace[v] = arg;
    }

    Arena arena(scratchBase, alignment);
    llvm::DenseMap<Value, int64_t> offset;
    for (BlockArgument arg : func.getArguments())
      offset[arg] = func.getArgAttrOfType<IntegerAttr>(arg.getArgNumber(), KilnDialect::kOffsetAttrName).getInt();
    // Gradients: the values AdamW consumes as gradients, for the summary.
    llvm::DenseSet<Value> grads;
    func.walk([&](AdamWUpdateOp op) { grads.insert(rootOf(op.getGrad())); });
    for (unsigned r = 0; r < ret.getNumOperands(); ++r)
      if (func.getResultAttr(r, KilnDialect::kGradAttrName))
        grads.insert(rootOf(ret.getOperand(r)));
    int64_t peak = 0, gradsAtPeak = 0, liveGrads = 0;
    // record-live: the values holding arena bytes now, and a copy at the peak.
    llvm::SetVector<Value> holding;
    SmallVector<Value> atPeak;
    int peakIndex = -1;
    // Values to release after each op.
    std::vector<SmallVector<Value>> dying(end + 1);
    for (auto &[v, at] : lastUse)
      dying[at].push_back(v);

    for (Operation &op : body) {
      if (&op == ret.getOperation())
        break;
      SmallVector<int64_t> offsets;
      for (Value result : op.getResults()) {
        if (root.count(result)) { // a reshape: its operand's buffer
          auto it = offset.find(rootOf(result));
          offsets.push_back(it == offset.end() ? -1 : it->second);
          continue;
        }
        if (isInlinedConstant(&op)) {
          offsets.push_back(-1);
          continue;
        }
        if (auto it = inPlace.find(result); it != inPlace.end()) {
          int64_t argOffset = func.getArgAttrOfType<IntegerAttr>(it->second.getArgNumber(), KilnDialect::kOffsetAttrName).getInt();
          offset[result] = argOffset;
          offsets.push_back(argOffset);
          continue;
        }
        if (!lastUse.count(result) && !result.use_empty()) {
          offsets.push_back(-1);
          continue;
        }
        // The result takes over an operand's buffer that dies here.
        if (auto i = inPlaceOperand(&op);
            i && result == op.getResult(i->second) && !result.use_empty()) {
          Value dead = rootOf(op.getOperand(i->first));
          auto it = offset.find(dead);
          // Nothing after this op reads the operand. In a run (one NCCL
          // group, the operand kept to the run's end): no op after this one
          // reads it, and no other member of the run.
          auto run = runOf.find(&op);
          bool lastReader;
          if (run == runOf.end()) {
            lastReader = lastUse.lookup(dead) == index[&op];
          } else {
            const Run &r = runs[run->second];
            lastReader = lastUse.lookup(dead) == r.end && lastRead.lookup(dead) == index[&op] &&
                         llvm::none_of(r.members, [&](Operation *m) {
                           return m != &op && llvm::any_of(m->getOperands(), [&](Value v) {
                                    return rootOf(v) == dead;
                                  });
                         });
          }
          if (!isa<BlockArgument>(dead) && !inPlace.count(dead) && it != offset.end() &&
              lastReader &&
              numBytes(dead.getType()) == numBytes(result.getType()) && !grads.contains(dead)) {
            int64_t taken = it->second; // offset[result] may rehash the map
            offset[result] = taken;
            offsets.push_back(taken);
            // The buffer now belongs to the result: released when it dies.
            llvm::erase(dying[lastUse.lookup(dead)], dead);
            if (recordLive) {
              holding.remove(dead);
              holding.insert(result);
            }
            if (grads.contains(result))
              liveGrads += numBytes(result.getType());
            continue;
          }
        }
        if (result.use_empty()) { // a result nobody reads (layer_norm's mean in @forward)
          int64_t o = arena.allocate(numBytes(result.getType()));
          offset[result] = o;
          offsets.push_back(o);
          // Released after its op (an AdamW update's: after the last
          // update, where the launch writes it; `dying` has it already).
          if (!lastUse.count(result))
            dying[index[&op]].push_back(result);
          if (recordLive)
            holding.insert(result);
          continue;
        }
        int64_t o = arena.allocate(numBytes(result.getType()));
        offset[result] = o;
        offsets.push_back(o);
        if (recordLive)
          holding.insert(result);
        if (grads.contains(result))
          liveGrads += numBytes(result.getType());
      }
      op.setAttr(KilnDialect::kOffsetsAttrName, b.getDenseI64ArrayAttr(offsets));
      // Scratch lives while the op runs: placed beside its results, released
      // with the op's dead values.
      int64_t scratchBytes = 0, scratchOffset = -1;
      if (auto scratch = dyn_cast<ScratchOpInterface>(op))
        scratchBytes = scratch.getScratchBytes();
      if (scratchBytes > 0) {
        scratchOffset = arena.allocate(scratchBytes);
        op.setAttr(KilnDialect::kScratchOffsetAttrName, b.getI64IntegerAttr(scratchOffset));
      }
      if (recordLive)
        op.setAttr("kiln.live", b.getI64IntegerAttr(arena.live()));
      if (arena.live() > peak) {
        peak = arena.live();
        gradsAtPeak = liveGrads;
        if (recordLive) {
          atPeak.assign(holding.begin(), holding.end());
          peakIndex = index[&op];
        }
      }
      if (scratchOffset >= 0)
        arena.release(scratchOffset, scratchBytes);
      for (Value v : dying[index[&op]]) {
        auto it = offset.find(v);
        if (it == offset.end() || inPlace.count(v) || isa<BlockArgument>(v))
          continue;
        arena.release(it->second, numBytes(v.getType()));
        holding.remove(v);
        if (grads.contains(v))
          liveGrads -= numBytes(v.getType());
      }
    }
    if (recordLive) {
      SmallVector<Attribute> residents;
      for (Value v : atPeak) {
        auto result = cast<OpResult>(v);
        auto it = lastUse.find(v);
        residents.push_back(b.getDenseI64ArrayAttr(
            {index[result.getOwner()], result.getResultNumber(), numBytes(v.getType()),
             it == lastUse.end() ? index[result.getOwner()] : it->second}));
      }
      func->setAttr("kiln.peak",
                    b.getDictionaryAttr({b.getNamedAttr("op", b.getI64IntegerAttr(peakIndex)),
                                         b.getNamedAttr("residents", b.getArrayAttr(residents))}));
    }
    func->setAttr(KilnDialect::kMemoryAttrName,
                  b.getDictionaryAttr({b.getNamedAttr("scratch", b.getI64IntegerAttr(arena.highWater())),
                                       b.getNamedAttr("peak_live", b.getI64IntegerAttr(peak)),
                                       b.getNamedAttr("grads_at_peak", b.getI64IntegerAttr(gradsAtPeak))}));
    return success();
  }
};

} // namespace
} // namespace kiln
