//===- TokenShard.h - llm.c's token shard files ----------------------------===//
//
// A shard is a header of 256 little-endian int32 — magic 20240520, version
// (1: uint16 tokens, 2: uint32 tokens), token count, then zeros — followed by
// the tokens (Karpathy's llm.c, dev/data/data_common.py). kiln's one
// addition: int 3 is the row length of a shard of fixed-length rows (DPO
// pairs, `kiln tokenize --format dpo`), 0 for a stream of documents; llm.c
// ignores it.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_DATA_TOKENSHARD_H
#define KILN_RUNTIME_DATA_TOKENSHARD_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

namespace kiln {

constexpr int32_t kShardMagic = 20240520;
constexpr size_t kShardHeaderInts = 256;

/// A shard mapped into memory and validated.
class TokenShard {
public:
  /// Opens and validates `path`: magic, version, a size that matches the
  /// token count, and (when vocabSize > 0) every token below vocabSize.
  static llvm::Expected<TokenShard> open(llvm::StringRef path, int64_t vocabSize);
  /// The same checks on a shard's bytes already in memory (`buffer`'s
  /// identifier names it in messages).
  static llvm::Expected<TokenShard> parse(std::unique_ptr<llvm::MemoryBuffer> buffer,
                                          int64_t vocabSize);

  const std::string &path() const { return path_; }
  int64_t size() const { return count_; }
  /// Tokens per row of a shard of rows; 0 for a stream.
  int64_t rowTokens() const { return rowTokens_; }
  int32_t operator[](int64_t i) const;

private:
  std::string path_;
  std::shared_ptr<llvm::MemoryBuffer> buffer_;
  int64_t count_ = 0, rowTokens_ = 0;
  int version_ = 1;
};

/// Writes tokens as a shard (version 1 when every token fits in uint16,
/// else 2), atomically: a temporary file renamed over `path`. `rowTokens`
/// > 0 marks a shard of rows of that length.
llvm::Error writeShard(llvm::StringRef path, llvm::ArrayRef<int32_t> tokens,
                       int64_t rowTokens = 0);

/// Writes a shard as its tokens come, holding only a small buffer: the
/// header's count is filled in by finish(). Not atomic — for files in a
/// staging directory that is moved into place as a whole (kiln tokenize).
class ShardWriter {
public:
  /// Version 1 (uint16 ids) when `vocabSize` fits, else 2; `rowTokens` as
  /// for writeShard (finish() checks the count is whole rows).
  static llvm::Expected<std::unique_ptr<ShardWriter>> create(llvm::StringRef path,
                                                             int64_t vocabSize,
                                                             int64_t rowTokens = 0);
  ~ShardWriter();
  llvm::Error append(llvm::ArrayRef<int32_t> tokens);
  /// Writes the count, flushes and closes the file.
  llvm::Error finish();
  int64_t size() const { return count_; }

private:
  ShardWriter() = default;
  llvm::Error flushBuffer();

  std::string path_;
  std::FILE *file_ = nullptr;
  int width_ = 2;
  int64_t count_ = 0, rowTokens_ = 0;
  std::string buffer_;
};

/// Expands a glob (`data/train_*.bin`) into sorted paths; a pattern without
/// wildcards is returned as is. No match is an error naming the pattern.
llvm::Expected<std::vector<std::string>> expandGlob(llvm::StringRef pattern);

} // namespace kiln

#endif // KILN_RUNTIME_DATA_TOKENSHARD_H
