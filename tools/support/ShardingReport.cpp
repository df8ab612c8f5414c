//===- ShardingReport.cpp - what a partitioned step communicates -----------===//

#include "tools/support/ShardingReport.h"

#include "ir/KilnAttrs.h"
#include "ir/KilnOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/Support/FormatVariadic.h"

#include <map>

using namespace mlir;

namespace kiln::tooling {

namespace {
std::string bytesText(int64_t bytes) {
  if (bytes < 1024)
    return llvm::formatv("{0} B", bytes).str();
  if (bytes < (int64_t(1) << 20))
    return llvm::formatv("{0:f1} KiB", bytes / 1024.0).str();
  return llvm::formatv("{0:f1} MiB", bytes / double(int64_t(1) << 20)).str();
}
} // namespace

std::string describeSharding(ModuleOp module, bool everyCollective) {
  auto mesh = module->getAttrOfType<MeshAttr>(KilnDialect::kMeshAttrName);
  if (!mesh)
    return "";
  std::string out;
  llvm::raw_string_ostream os(out);
  os << "mesh " << mesh << ": " << mesh.getNumRanks() << " ranks\n";
  for (auto func : module.getOps<func::FuncOp>()) {
    // (kind, axis) -> (count, bytes)
    std::map<std::pair<std::string, std::string>, std::pair<int64_t, int64_t>> totals;
    std::string lines;
    func.walk([&](Operation *op) {
      std::string kind, axis, cause;
      int64_t bytes = 0;
      if (auto r = dyn_cast<AllReduceOp>(op)) {
        kind = "all_reduce";
        axis = r.getAxis().str();
        cause = r.getCause().str();
        bytes = numBytes(r.getOperand().getType());
      } else if (auto g = dyn_cast<AllGatherOp>(op)) {
        kind = "all_gather";
        axis = g.getAxis().str();
        cause = g.getCause().str();
        bytes = numBytes(g.getResult().getType());
      } else if (auto rs = dyn_cast<ReduceScatterOp>(op)) {
        kind = "reduce_scatter";
        axis = rs.getAxis().str();
        cause = rs.getCause().str();
        bytes = numBytes(rs.getOperand().getType());
      } else if (auto t = dyn_cast<TakeShardOp>(op)) {
        kind = "take_shard"; // no communication: counted for the reader
        axis = t.getAxis().str();
        cause = t.getCause().str();
        bytes = 0;
      } else {
        return;
      }
      auto &t = totals[{kind, axis}];
      ++t.first;
      t.second += bytes;
      if (everyCollective)
        lines += llvm::formatv("    {0,-14} over {1,-3} {2,10}  {3}\n", kind, axis,
                               bytesText(bytes), cause)
                     .str();
    });
    if (totals.empty())
      continue;
    os << "  @" << func.getSymName() << ":";
    bool first = true;
    for (auto &[key, t] : totals) {
      os << (first ? " " : ", ")
         << llvm::formatv("{0} {1} over {2} ({3} a rank)", t.first, key.first, key.second,
                          bytesText(t.second));
      first = false;
    }
    os << "\n" << lines;
  }
  return out;
}

} // namespace kiln::tooling
