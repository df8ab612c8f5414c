//===- MetricsLog.cpp - the metrics log of a run ---------------------------===//

#include "runtime/train/MetricsLog.h"

#include "support/Files.h"

#include "llvm/ADT/SmallVector.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"

namespace kiln {

std::vector<std::pair<llvm::StringRef, llvm::json::Object>>
MetricsLog::readRecords(llvm::StringRef text) {
  std::vector<std::pair<llvm::StringRef, llvm::json::Object>> records;
  llvm::SmallVector<llvm::StringRef> lines;
  text.split(lines, '\n', -1, false);
  for (llvm::StringRef line : lines) {
    auto json = llvm::json::parse(line);
    if (!json) {
      llvm::consumeError(json.takeError());
      continue;
    }
    if (llvm::json::Object *o = json->getAsObject())
      records.push_back({line, std::move(*o)});
  }
  return records;
}

llvm::Error MetricsLog::open(const std::string &path, std::optional<int64_t> keepUpToStep) {
  path_ = path;
  if (keepUpToStep) {
    std::string kept;
    if (auto old = llvm::MemoryBuffer::getFile(path))
      for (const auto &[line, record] : readRecords((*old)->getBuffer()))
        if (auto step = record.getInteger("step"); step && *step <= *keepUpToStep)
          kept += line.str() + "\n";
    if (llvm::Error err = writeFileAtomically(path, kept))
      return err;
  }
  std::error_code ec;
  os_ = std::make_unique<llvm::raw_fd_ostream>(path, ec, llvm::sys::fs::OF_Append);
  if (ec)
    return llvm::createStringError(ec, "cannot append to '" + path + "': " + ec.message());
  return llvm::Error::success();
}

llvm::Error MetricsLog::write(llvm::json::Object record) {
  *os_ << llvm::formatv("{0}", llvm::json::Value(std::move(record))) << "\n";
  os_->flush();
  if (!os_->has_error())
    return llvm::Error::success();
  // Cleared, or the stream's destructor would end the process with an LLVM
  // fatal error.
  std::error_code ec = os_->error();
  os_->clear_error();
  return llvm::createStringError(ec, "cannot write the metrics log '" + path_ + "': " + ec.message());
}

} // namespace kiln
