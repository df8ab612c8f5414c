//===- Fuse.cpp - elementwise chains into kiln.fusion regions --------------===//
//
// Loop fusion over the finished training step: a chain of elementwise ops
// (casts included) over tensors of one shape becomes one kiln.fusion whose
// body is those ops, so codegen emits one kernel that reads the chain's
// inputs once and writes its result once, instead of one kernel per op with
// every intermediate through device memory.
//
// Grouping, in reverse program order: an elementwise op joins the group of
// its users when all of its users are in one group of its shape; otherwise
// it starts a group. So a member's value is used only inside its group but
// for the group's last op, whose results leave it. Such groups are convex
// (no path leaves a group and comes back): when an op joins, every member
// already there comes after it and its only users are members. Nothing is
// recomputed: every op runs exactly once, in a kernel that moves fewer
// bytes, so no cost model is needed to accept a group; the pass reports
// the bytes it keeps out of device memory.
//
// Splat constants are cloned into the bodies (literals in the kernel).
// Planned (docs/architecture.md, "Fusion"): multi-output groups (a value
// also needed after the group), a reduction at the end, broadcasts read
// through an index map, GEMM epilogues, and the recompute policies.
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

int64_t bytesOf(Value v) {
  auto t = cast<RankedTensorType>(v.getType());
  int64_t bits = t.getElementType().getIntOrFloatBitWidth();
  return t.getNumElements() * (bits <= 8 ? 1 : bits / 8);
}

struct FusePass final : impl::FusePassBase<FusePass> {
  using Base::Base;

  void runOnOperation() override {
    for (auto func : getOperation().getOps<func::FuncOp>())
      if (func.getBody().hasOneBlock())
        fuseBlock(func.getBody().front());
  }

  void fuseBlock(Block &block) {
    // Groups as lists of ops, built last op first.
    llvm::DenseMap<Operation *, unsigned> groupOf;
    std::vector<SmallVector<Operation *>> groups;
    for (Operation &op : llvm::reverse(block)) {
      if (!isFusible(&op))
        continue;
      std::optional<unsigned> joined;
      bool oneGroup = !op.getResult(0).use_empty();
      for (Operation *user : op.getResult(0).getUsers()) {
        auto it = groupOf.find(user);
        if (it == groupOf.end() || (joined && *joined != it->second)) {
          oneGroup = false;
          break;
        }
        joined = it->second;
      }
      if (oneGroup && joined &&
          cast<RankedTensorType>(groups[*joined].front()->getResult(0).getType()).getShape() ==
              cast<RankedTensorType>(op.getResult(0).getType()).getShape()) {
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

  /// Replaces `ops` (program order; only the last one's result is used
  /// outside) with one kiln.fusion at the last op.
  void buildFusion(ArrayRef<Operation *> ops) {
    llvm::SmallPtrSet<Operation *, 8> members(ops.begin(), ops.end());
    llvm::SetVector<Value> inputs;
    for (Operation *op : ops)
      for (Value v : op->getOperands()) {
        Operation *def = v.getDefiningOp();
        if ((def && members.contains(def)) || isSplatConstant(v))
          continue;
        inputs.insert(v);
      }
    Operation *last = ops.back();
    OpBuilder b(last);
    auto fusion = FusionOp::create(b, last->getLoc(), last->getResultTypes(), inputs.getArrayRef());
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
    YieldOp::create(inner, last->getLoc(), ValueRange{map.lookup(last->getResult(0))});
    last->getResult(0).replaceAllUsesWith(fusion.getResult(0));

    // What stays on chip: each intermediate's write and read.
    for (Operation *op : ops.drop_back())
      bytesKept += 2 * bytesOf(op->getResult(0));
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
