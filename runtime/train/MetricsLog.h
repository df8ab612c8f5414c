//===- MetricsLog.h - the metrics log of a run: one JSON object per line ---===//

#ifndef KILN_RUNTIME_TRAIN_METRICSLOG_H
#define KILN_RUNTIME_TRAIN_METRICSLOG_H

#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kiln {

/// metrics.jsonl: a record per step, evaluation and sample.
class MetricsLog {
public:
  /// Opens `path` for appending; on resume, first keeps only the records up
  /// to `keepUpToStep` (rewritten atomically).
  llvm::Error open(const std::string &path, std::optional<int64_t> keepUpToStep);

  /// Appends a record. A write error (a full disk) is returned, and the
  /// stream stays usable (a later write may succeed).
  llvm::Error write(llvm::json::Object record);

  const std::string &path() const { return path_; }

  /// The records of a metrics log's text with their lines, in order; lines
  /// that are not JSON objects (a record cut by a crash) are skipped.
  static std::vector<std::pair<llvm::StringRef, llvm::json::Object>>
  readRecords(llvm::StringRef text);

private:
  std::string path_;
  std::unique_ptr<llvm::raw_fd_ostream> os_;
};

} // namespace kiln

#endif // KILN_RUNTIME_TRAIN_METRICSLOG_H
