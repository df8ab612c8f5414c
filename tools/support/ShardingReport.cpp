//===- ShardingReport.cpp - what a partitioned step communicates -----------===//

#include "tools/support/ShardingReport.h"

#include "ir/KilnAttrs.h"
#include "ir/KilnOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/Support/FormatVariadic.h"

#include <map>
#include <set>

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
    std::set<int64_t> buckets;
    int64_t bucketed = 0, bucketedBytes = 0; // the sums in buckets, their bytes
    func.walk([&](Operation *op) {
      if (!isCollective(op))
        return;
      std::string kind = op->getName().stripDialect().str();
      std::string axis = op->getAttrOfType<StringAttr>("axis").getValue().str();
      StringRef cause = op->getAttrOfType<StringAttr>("cause").getValue();
      // What a rank contributes: an all-gather's output, a reduction's
      // input; taking a shard moves nothing (listed for the reader).
      int64_t bytes = isa<TakeShardOp>(op) ? 0
                      : isa<AllGatherOp>(op) ? numBytes(op->getResult(0).getType())
                                             : numBytes(op->getOperand(0).getType());
      auto &t = totals[{kind, axis}];
      ++t.first;
      t.second += bytes;
      auto bucket = op->getAttrOfType<IntegerAttr>(KilnDialect::kBucketAttrName);
      if (bucket) {
        buckets.insert(bucket.getInt());
        ++bucketed;
        bucketedBytes += bytes;
      }
      if (everyCollective)
        lines += llvm::formatv("    {0,-14} over {1,-3} {2,10}  {3}{4}\n", kind, axis,
                               bytesText(bytes), cause,
                               bucket ? llvm::formatv(" [bucket {0}]", bucket.getInt()).str()
                                      : std::string())
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
    if (!buckets.empty())
      os << llvm::formatv("\n    {0} of them in {1} bucket{2} (one NCCL group each, {3} on "
                          "average; parallel.bucket_mb)",
                          bucketed, buckets.size(), buckets.size() == 1 ? "" : "s",
                          bytesText(bucketedBytes / static_cast<int64_t>(buckets.size())));
    os << "\n" << lines;
  }
  return out;
}

} // namespace kiln::tooling
