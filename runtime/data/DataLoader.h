//===- DataLoader.h - batches of (tokens, targets) from token shards -------===//
//
// Two modes:
//   sequential — llm.c's: windows of B·T+1 tokens taken one after another
//     through the shards in order (targets are the tokens shifted by one);
//     rank r of W takes the r-th window of each group of W, so ranks never
//     overlap; past the last shard a new epoch starts at the first.
//   random — each sequence starts at a uniformly random token position of
//     the whole corpus (a per-rank random stream from the seed).
// The position is a small struct that checkpoints save, so a resumed run
// sees exactly the batches an uninterrupted one would.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_DATA_DATALOADER_H
#define KILN_RUNTIME_DATA_DATALOADER_H

#include "runtime/Random.h"
#include "runtime/cpu/HostTensor.h"
#include "runtime/data/TokenShard.h"

#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"

#include <memory>
#include <optional>
#include <vector>

namespace kiln {

struct LoaderOptions {
  std::vector<std::string> files; ///< shard paths (expandGlob)
  int64_t batch = 1, seqLen = 1;
  int64_t rank = 0, worldSize = 1;
  bool random = false;
  uint64_t seed = 0;
  int64_t vocabSize = 0; ///< tokens at or above this are an error (0: unchecked)
};

/// Where a loader is; enough to continue exactly.
struct LoaderPosition {
  int64_t epoch = 0, shard = 0, offset = 0;
  std::array<uint64_t, 4> rng{};
  llvm::json::Value toJSON() const;
  static llvm::Expected<LoaderPosition> fromJSON(const llvm::json::Value &value);
};

class DataLoader {
public:
  /// Opens and validates every shard; fails naming the file when one is
  /// malformed, or when the data is too short for one sequence.
  static llvm::Expected<std::unique_ptr<DataLoader>> open(const LoaderOptions &options);

  /// The next batch: tokens and targets, each i32 [B, T].
  void next(cpu::HostTensor &tokens, cpu::HostTensor &targets);

  LoaderPosition position() const;
  llvm::Error seek(const LoaderPosition &position);
  /// Back to the start (for evaluation passes over the same batches).
  void reset();

  int64_t totalTokens() const { return total_; }
  const LoaderOptions &options() const { return options_; }

private:
  explicit DataLoader(LoaderOptions options) : options_(std::move(options)) {}
  /// Token i of the corpus counted from the start of `shard`.
  int32_t token(int64_t shard, int64_t i) const { return shards_[shard][i]; }
  /// Token i as a target: -1 (no loss) where the shard's loss mask is 0.
  int32_t target(int64_t shard, int64_t i) const {
    const std::optional<TokenShard> &mask = masks_[shard];
    return mask && (*mask)[i] == 0 ? -1 : shards_[shard][i];
  }

  LoaderOptions options_;
  std::vector<TokenShard> shards_;
  /// Loss masks (SFT data): `train_000000.mask` beside `train_000000.bin`,
  /// a shard of 0/1 flags, one per token; 1 where the token is a target.
  std::vector<std::optional<TokenShard>> masks_;
  int64_t total_ = 0;
  LoaderPosition pos_;
  Rng rng_;
};

} // namespace kiln

#endif // KILN_RUNTIME_DATA_DATALOADER_H
