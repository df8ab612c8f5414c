//===- GroupCasts.cpp - runs of casts marked for one multi-tensor launch ---===//
//
// The step casts every parameter to the low type at its top, one kiln.cast
// after another, and widens the low-type gradients a reduction summed (the
// biases') for the optimizer near its end: many small launches. This pass
// finds the runs and marks them (kiln.cast_group); codegen converts each
// run in one launch where its last cast is, and kiln-plan-buffers keeps
// the run's operands alive until then. The decision lives in the IR, so
// the dumps show it.
//
//===----------------------------------------------------------------------===//

#include "ir/KilnOps.h"
#include "passes/PassUtils.h"
#include "passes/Passes.h"
#include "passes/PlanBuffersUtils.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

#include <optional>
#include <utility>
#include <vector>

namespace kiln {
#define GEN_PASS_DEF_GROUPCASTSPASS
#include "passes/Passes.h.inc"
} // namespace kiln

using namespace mlir;

namespace kiln {
namespace {

/// The (from, to) element types of a cast.
std::pair<Type, Type> typesOf(CastOp c) {
  return {cast<RankedTensorType>(c.getOperand().getType()).getElementType(),
          cast<RankedTensorType>(c.getType()).getElementType()};
}

struct GroupCastsPass final : impl::GroupCastsPassBase<GroupCastsPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    const bool check = module->hasAttr(KilnDialect::kCheckNumericsAttrName);
    for (auto func : module.getOps<func::FuncOp>()) {
      if (failed(checkOneBlockBody(func, "kiln-group-casts")))
        return signalPassFailure();
      // Marks from an earlier run go: the runs are found again.
      for (Operation &op : func.getBody().front())
        op.removeAttr(KilnDialect::kCastGroupAttrName);
      if (check)
        continue;
      Builder b(module.getContext());
      int64_t groups = 0;
      std::vector<Operation *> run;
      std::pair<Type, Type> runTypes; // of run.front(), when run is not empty
      auto close = [&] {
        if (run.size() >= 2) {
          for (Operation *op : run)
            op->setAttr(KilnDialect::kCastGroupAttrName, b.getI64IntegerAttr(groups));
          ++groups;
        }
        run.clear();
      };
      for (Operation &op : func.getBody().front()) {
        std::optional<std::pair<Type, Type>> types;
        if (castGroupRefusal(&op).empty())
          types = typesOf(cast<CastOp>(op));
        // One launch converts the whole run at once: a cast reading an
        // earlier member's result (a same-type cast after it) starts anew.
        bool readsRun = types && llvm::is_contained(run, op.getOperand(0).getDefiningOp());
        if (!types || readsRun || (!run.empty() && *types != runTypes))
          close();
        if (types) {
          if (run.empty())
            runTypes = *types;
          run.push_back(&op);
        }
      }
      close();
    }
  }
};

} // namespace

std::string castGroupRefusal(Operation *op) {
  auto c = dyn_cast<CastOp>(op);
  if (!c)
    return "is not a kiln.cast";
  auto func = op->getParentOfType<func::FuncOp>();
  if (auto arg = dyn_cast<BlockArgument>(c.getOperand());
      arg && arg.getOwner()->getParentOp() != func)
    return "reads a value from outside its function's body";
  auto [from, to] = typesOf(c);
  auto narrowFloat = [](Type t) { return t.isF32() || t.isBF16() || t.isF16(); };
  if (!narrowFloat(from) || !narrowFloat(to))
    return "converts other than between f32, bf16 and f16";
  if (c->use_empty())
    return "is not read";
  if (llvm::any_of(c->getUsers(), [](Operation *u) { return isa<func::ReturnOp>(u); }))
    return "is returned";
  return "";
}

} // namespace kiln
