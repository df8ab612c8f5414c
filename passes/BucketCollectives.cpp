//===- BucketCollectives.cpp - gradient sums gathered into NCCL groups -----===//
//
// kiln-partition sums each gradient right after it is made: one small
// collective per tensor. This pass gathers consecutive sums over one mesh
// axis into buckets of a byte size, moves each bucket's members next to
// each other, and marks them (kiln.bucket); the executor posts a bucket as
// one NCCL group. The decision lives in the IR, so the dumps show it.
//
//===----------------------------------------------------------------------===//

#include "ir/KilnAttrs.h"
#include "ir/KilnInterfaces.h"
#include "ir/KilnOps.h"
#include "passes/PassUtils.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

#include <vector>

namespace kiln {
#define GEN_PASS_DEF_BUCKETCOLLECTIVESPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;

namespace kiln {
namespace {

/// Whether a collective's group (an axis, or several joined by ',') spans
/// `axis`: a gradient's sum over dp alone or over dp and tp together.
bool spans(llvm::StringRef group, llvm::StringRef axis) {
  return llvm::is_contained(groupAxes(group), axis);
}

/// Whether `op` is a sum over `axis` the executor can post inside a group:
/// an all_reduce, or a reduce_scatter that needs no regrouping (every
/// dimension before the split one is 1).
bool bucketable(Operation &op, llvm::StringRef axis) {
  if (auto sum = dyn_cast<AllReduceOp>(op))
    return spans(sum.getAxis(), axis);
  auto scatter = dyn_cast<ReduceScatterOp>(op);
  if (!scatter || !spans(scatter.getAxis(), axis))
    return false;
  auto type = cast<RankedTensorType>(scatter.getOperand().getType());
  for (int64_t d = 0; d < static_cast<int64_t>(scatter.getDim()); ++d)
    if (type.getDimSize(d) != 1)
      return false;
  return true;
}

struct BucketCollectivesPass final : impl::BucketCollectivesPassBase<BucketCollectivesPass> {
  using BucketCollectivesPassBase::BucketCollectivesPassBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (bytes < 0) {
      module.emitError() << "kiln-bucket-collectives: bytes = " << static_cast<int64_t>(bytes)
                         << " is negative";
      return signalPassFailure();
    }
    for (auto func : module.getOps<func::FuncOp>()) {
      if (failed(checkOneBlockBody(func, "kiln-bucket-collectives")))
        return signalPassFailure();
      // Marks from an earlier run go: the buckets are formed again.
      for (Operation &op : func.getBody().front())
        op.removeAttr(KilnDialect::kBucketAttrName);
      if (bytes > 0)
        bucketFunction(func);
    }
  }

  void bucketFunction(func::FuncOp func) {
    Builder b(func.getContext());
    int64_t buckets = 0, filled = 0;
    std::vector<Operation *> open; // the members so far, in order
    llvm::SmallPtrSet<Operation *, 16> members;
    // The open bucket's members, moved in order to follow each other just
    // before `at` (the last member, which stays, or the op that reads one).
    auto close = [&](Operation *at) {
      for (Operation *m : open)
        if (m != at)
          m->moveBefore(at);
      if (open.size() >= 2) {
        for (Operation *m : open)
          m->setAttr(KilnDialect::kBucketAttrName, b.getI64IntegerAttr(buckets));
        ++buckets;
      }
      open.clear();
      members.clear();
      filled = 0;
    };
    std::vector<Operation *> ops;
    for (Operation &op : func.getBody().front())
      ops.push_back(&op);
    for (Operation *op : ops) {
      if (!open.empty()) {
        // Something that must see a member done, or a transfer whose order
        // against the stages' other transfers kiln-pipeline-unroll proved:
        // the bucket closes before it.
        bool reads = isa<SendOp, RecvOp>(op) || op->hasTrait<mlir::OpTrait::IsTerminator>();
        for (Value v : op->getOperands())
          reads |= v.getDefiningOp() && members.count(v.getDefiningOp());
        if (reads)
          close(op);
      }
      if (!bucketable(*op, axis))
        continue;
      open.push_back(op);
      members.insert(op);
      filled += numBytes(op->getOperand(0).getType());
      if (filled >= bytes)
        close(op);
    }
  }
};

} // namespace
} // namespace kiln
