//===- Fuse.cpp - elementwise chains into kiln.fusion regions --------------===//
//
// Loop fusion over the finished training step: a chain of elementwise ops
// (casts included) over tensors of one shape becomes one kiln.fusion whose
// body is those ops, so codegen emits one kernel that reads the chain's
// inputs once and writes its result once, instead of one kernel per op with
// every intermediate through device memory.
//
// Grouping, in reverse program order: an elementwise op joins the group of
// one of its users when the group has its shape and every other user of
// the op comes after the group's last op; otherwise it starts a group. The
// fusion is placed at the group's last op and yields each member's value
// that is used outside (a value needed both in the chain and after it is
// a second result). Such groups are convex (no path leaves a group and
// comes back): the outside users all follow every member. Nothing is
// recomputed: every op runs exactly once, in a kernel that moves fewer
// bytes, so no cost model is needed to accept a group; the pass reports
// the bytes it keeps out of device memory.
//
// Splat constants are cloned into the bodies (literals in the kernel).
// Planned (docs/architecture.md, "kiln-fuse"): a reduction at the end,
// broadcasts read through an index map, casts into composite and GEMM
// epilogues, and the recompute policies.
//
//===----------------------------------------------------------------------===//

#include "ir/KilnOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/IRMapping.h"
#include "llvm/ADT/SetVector.h"

namespace kiln {
#define GEN_PASS_DEF_FUSEPASS
#include "passes/Passes.h.inc"
} // namespace kiln

#define DEBUG_TYPE "kiln-fuse"

using namespace mlir;

namespace kiln {
namespace {

bool isSplatConstant(Value v) {
  auto c = v.getDefiningOp<ConstantOp>();
  return c && isa<SplatElementsAttr>(c.getValue());
}

/// An op a loop fusion can hold: elementwise over static, non-empty tensors.
bool isFusible(Operation *op) {
  if (!op->hasTrait<OpTrait::Elementwise>() || op->getNumResults() != 1)
    return false;
  auto t = dyn_cast<RankedTensorType>(op->getResult(0).getType());
  return t && t.hasStaticShape() && t.getNumElements() > 0;
}

struct FusePass final : impl::FusePassBase<FusePass> {
  using Base::Base;

  void runOnOperation() override {
    for (auto func : getOperation().getOps<func::FuncOp>())
      if (func.getBody().hasOneBlock())
        fuseBlock(func.getBody().front());
  }

  void fuseBlock(Block &block) {
    llvm::DenseMap<Operation *, int64_t> index;
    for (Operation &op : block)
      index[&op] = static_cast<int64_t>(index.size());
    // Groups as lists of ops, built last op first: front() is the last op.
    llvm::DenseMap<Operation *, unsigned> groupOf;
    std::vector<SmallVector<Operation *>> groups;
    auto shapeOf = [](Operation *op) {
      return cast<RankedTensorType>(op->getResult(0).getType()).getShape();
    };
    for (Operation &op : llvm::reverse(block)) {
      if (!isFusible(&op))
        continue;
      // Join the group of one of the users when every other user comes
      // after that group's last op: the fusion is placed there, so those
      // users still follow it (and, being later, cannot lead back into
      // it). A value with such users becomes another result.
      std::optional<unsigned> joined;
      for (Operation *user : op.getResult(0).getUsers()) {
        auto it = groupOf.find(user);
        if (it == groupOf.end() || (joined && *joined == it->second))
          continue;
        unsigned g = it->second;
        if (shapeOf(groups[g].front()) != shapeOf(&op))
          continue;
        int64_t last = index[groups[g].front()];
        bool othersAfter = llvm::all_of(op.getResult(0).getUsers(), [&](Operation *other) {
          auto o = groupOf.find(other);
          return (o != groupOf.end() && o->second == g) || index[other] > last;
        });
        if (othersAfter) {
          joined = g;
          break;
        }
      }
      if (joined) {
        groups[*joined].push_back(&op);
        groupOf[&op] = *joined;
        continue;
      }
      groupOf[&op] = groups.size();
      groups.push_back({&op});
    }
    for (SmallVector<Operation *> &group : groups) {
      if (group.size() < 2)
        continue;
      std::reverse(group.begin(), group.end()); // program order
      buildFusion(group);
    }
  }

  /// Replaces `ops` (program order; their users outside come after the
  /// last one) with one kiln.fusion at the last op, whose results are the
  /// members' values used outside, in program order.
  void buildFusion(ArrayRef<Operation *> ops) {
    llvm::SmallPtrSet<Operation *, 8> members(ops.begin(), ops.end());
    llvm::SetVector<Value> inputs;
    SmallVector<Value> outputs;
    for (Operation *op : ops) {
      for (Value v : op->getOperands()) {
        Operation *def = v.getDefiningOp();
        if ((def && members.contains(def)) || isSplatConstant(v))
          continue;
        inputs.insert(v);
      }
      if (llvm::any_of(op->getResult(0).getUsers(),
                       [&](Operation *user) { return !members.contains(user); }))
        outputs.push_back(op->getResult(0));
    }
    if (outputs.empty())
      return; // dead code: nothing to fuse for
    Operation *last = ops.back();
    OpBuilder b(last);
    SmallVector<Type> types;
    for (Value v : outputs)
      types.push_back(v.getType());
    auto fusion = FusionOp::create(b, last->getLoc(), types, inputs.getArrayRef());
    Block *body = new Block();
    fusion.getBody().push_back(body);
    IRMapping map;
    for (Value v : inputs)
      map.map(v, body->addArgument(v.getType(), v.getLoc()));
    OpBuilder inner = OpBuilder::atBlockEnd(body);
    for (Operation *op : ops) {
      for (Value v : op->getOperands())
        if (isSplatConstant(v) && !map.contains(v))
          map.map(v, inner.clone(*v.getDefiningOp())->getResult(0));
      inner.clone(*op, map);
    }
    SmallVector<Value> yielded;
    for (Value v : outputs)
      yielded.push_back(map.lookup(v));
    YieldOp::create(inner, last->getLoc(), yielded);
    for (auto [v, result] : llvm::zip_equal(outputs, fusion.getResults()))
      v.replaceUsesWithIf(result, [&](OpOperand &use) { return !members.contains(use.getOwner()); });

    // What stays on chip: each intermediate's write and read (a result
    // used outside is still written, but read from registers inside).
    for (Operation *op : ops)
      if (!llvm::is_contained(outputs, op->getResult(0)))
        bytesKept += 2 * numBytes(op->getResult(0).getType());
    numFusions++;
    numOpsFused += ops.size();

    llvm::SmallSetVector<Operation *, 4> constants;
    for (Operation *op : llvm::reverse(ops)) {
      for (Value v : op->getOperands())
        if (isSplatConstant(v))
          constants.insert(v.getDefiningOp());
      op->erase();
    }
    for (Operation *c : constants)
      if (c->use_empty())
        c->erase();
  }
};

} // namespace
} // namespace kiln
