//===- DataLoader.h - batches of (tokens, targets) from token shards -------===//
//
// Two modes:
//   sequential — llm.c's: windows of B·T+1 tokens taken one after another
//     through the shards in order (targets are the tokens shifted by one);
//     past the last shard a new epoch starts at the first.
//   random — each sequence starts at a uniformly random token position of
//     the whole corpus (a random stream from the seed).
// Shards of rows (DPO pairs: TokenShard::rowTokens() > 0) are read row by
// row instead: a row of T+1 tokens gives one sequence (its first T tokens)
// and its targets (the last T), and rows come in groups (a chosen and a
// rejected response) that a batch never splits — sequential groups in
// order through all shards, or random groups.
// A rank of a data-parallel mesh reads only its rows of each global batch
// (LoaderOptions::rowBegin/rowCount): the loader walks the global batches —
// the same windows, the same random draws, the same position — and copies
// out the rows it keeps, so the ranks together read each batch once, and a
// run's batches (and its checkpoints' positions) do not depend on the mesh.
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
  int64_t batch = 1, seqLen = 1; ///< the global batch
  /// The rows of each batch this loader returns: [rowBegin, rowBegin +
  /// rowCount) (a rank's data-parallel share); rowCount 0 means all of them.
  int64_t rowBegin = 0, rowCount = 0;
  bool random = false;
  uint64_t seed = 0;
  int64_t vocabSize = 0; ///< tokens at or above this are an error (0: unchecked)
  /// Shards of rows: rows per group (2 for DPO pairs); batch must be a
  /// multiple of it.
  int64_t groupRows = 1;
};

/// Where a loader is; enough to continue exactly.
struct LoaderPosition {
  int64_t epoch = 0, shard = 0, offset = 0;
  std::array<uint64_t, 4> rng{};
  llvm::json::Value toJSON() const;
  static llvm::Expected<LoaderPosition> fromJSON(const llvm::json::Value &value);
};

/// Packed documents (model.document_masking): for token rows [B, T] whose
/// documents start with `eot`, each position's document — counted from 0 in
/// its row, a new one at each `eot` — and its index within that document
/// (0 at the `eot`), both i32 [B, T]. A row's first document, begun before
/// the row, counts its positions from the row's start.
void documentIds(const cpu::HostTensor &tokens, int32_t eot, cpu::HostTensor &segments,
                 cpu::HostTensor &positions);

class DataLoader {
public:
  /// Opens and validates every shard; fails naming the file when one is
  /// malformed, or when the data is too short for one sequence.
  static llvm::Expected<std::unique_ptr<DataLoader>> open(const LoaderOptions &options);

  /// The next batch: tokens and targets, each i32 [rows, T] (the rows kept
  /// of the global batch; all B by default). For shards of rows, `rows`
  /// (when given) receives their global row indices.
  void next(cpu::HostTensor &tokens, cpu::HostTensor &targets,
            std::vector<int64_t> *rows = nullptr);

  /// Shards of rows: whether these are, and how many rows there are.
  bool hasRows() const { return rowTokens_ > 0; }
  int64_t rowCount() const { return rowCount_; }
  /// The sequences and targets of global rows `rows`, each i32 [rows, T].
  void readRows(llvm::ArrayRef<int64_t> rows, cpu::HostTensor &tokens,
                cpu::HostTensor &targets) const;

  LoaderPosition position() const;
  llvm::Error seek(const LoaderPosition &position);
  /// Back to the start (for evaluation passes over the same batches).
  void reset();

  int64_t totalTokens() const { return total_; }
  const LoaderOptions &options() const { return options_; }
  /// From the next batch on, returns rows [first, first + count) of each
  /// (LoaderOptions::rowBegin/rowCount); an error when they are not rows of
  /// the batch.
  llvm::Error keepRows(int64_t first, int64_t count);
  /// The rows of each batch next() returns.
  int64_t keptRows() const { return options_.rowCount > 0 ? options_.rowCount : options_.batch; }

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
  /// Shards of rows: the row length, the total, and the first global row of
  /// each shard.
  int64_t rowTokens_ = 0, rowCount_ = 0;
  std::vector<int64_t> firstRow_;
  LoaderPosition pos_;
  Rng rng_;
};

} // namespace kiln

#endif // KILN_RUNTIME_DATA_DATALOADER_H
