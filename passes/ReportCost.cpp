//===- ReportCost.cpp - attach FLOP and byte counts to functions -----------===//

#include "ir/KilnOps.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/raw_ostream.h"

namespace kiln {
#define GEN_PASS_DEF_REPORTCOSTPASS
#include "passes/Passes.h.inc"
} // namespace kiln

#define DEBUG_TYPE "kiln-report-cost"

using namespace mlir;

namespace kiln {
namespace {

struct ReportCostPass final : impl::ReportCostPassBase<ReportCostPass> {
  using Base::Base;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    Builder b(module.getContext());
    for (auto func : module.getOps<func::FuncOp>()) {
      int64_t flops = 0, bytes = 0;
      // The function's own ops: a kiln.fusion counts its body once.
      for (auto op : func.getBody().getOps<CostOpInterface>()) {
        int64_t opFlops = op.getFlops(), opBytes = op.getBytesAccessed();
        flops = saturatingAdd(flops, opFlops);
        bytes = saturatingAdd(bytes, opBytes);
        if (annotateOps) {
          op->setAttr("kiln.flops", b.getI64IntegerAttr(opFlops));
          op->setAttr("kiln.bytes", b.getI64IntegerAttr(opBytes));
        }
      }
      func->setAttr("kiln.flops", b.getI64IntegerAttr(flops));
      func->setAttr("kiln.bytes", b.getI64IntegerAttr(bytes));
      if (print)
        llvm::outs() << "@" << func.getSymName() << ": "
                     << llvm::format("%.6g", static_cast<double>(flops)) << " FLOPs, "
                     << llvm::format("%.6g", static_cast<double>(bytes)) << " bytes\n";
    }
  }
};

} // namespace
} // namespace kiln
