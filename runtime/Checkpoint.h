//===- Checkpoint.h - training checkpoints, written atomically -------------===//
//
// A checkpoint is a directory:
//   model.safetensors      parameters (kiln names, global layout)
//   optimizer.safetensors  optimizer states (<param>.adam_m, .adam_v, ...)
//   state.json             step, data position, RNG state, loss scale,
//                          tokenizer, the resolved config (TOML text), the
//                          size and checksum of each tensor file, and a
//                          checksum of its own
// saveCheckpoint writes it under a temporary name and renames it into place,
// then points `latest` at it (also by rename), so a crash at any moment
// leaves the previous checkpoint loadable. loadCheckpoint verifies every
// checksum and every field's range before it returns anything.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CHECKPOINT_H
#define KILN_RUNTIME_CHECKPOINT_H

#include "runtime/Safetensors.h"
#include "runtime/data/DataLoader.h"

#include <array>
#include <functional>
#include <string>

namespace kiln {

struct TrainingState {
  /// The state format it was read in (written: always the newest). Format
  /// 2 stored GPT-2's attn.qkv in Hugging Face's q|k|v-major order;
  /// tooling::upgradeCheckpoint converts it.
  int64_t format = 3;
  int64_t step = 0;          ///< optimizer steps taken
  int64_t tokensSeen = 0;
  LoaderPosition data;        ///< the training loader's position
  std::array<uint64_t, 4> rng{}; ///< the run's RNG (sampling)
  double lossScale = 1.0;
  int64_t goodSteps = 0;      ///< steps since the loss scale last changed
  std::string tokenizer;      ///< "byte" or "gpt2"
  std::string tokenizerPath;  ///< its files (Tokenizer::create)
  std::string config;         ///< the resolved config, TOML
};

/// The metadata key and value kiln writes into a checkpoint's
/// model.safetensors since GPT-2's attn.qkv is head-major (state format 3),
/// so a lone copy of that file says which layout it holds.
inline constexpr const char *kLayoutMetadataKey = "kiln.qkv_layout";
inline constexpr const char *kLayoutHeadMajor = "head-major";

struct Checkpoint {
  NamedTensors params, optimizer;
  TrainingState state;
  std::string path; ///< the checkpoint directory it was loaded from
};

/// Saves `checkpoint` as `<dir>/step_<step>` (replacing one of the same
/// step) and points `<dir>/latest` at it; keeps the newest `keep`
/// checkpoints by step (0: all), the new one always among them. `beforeRename`, when given
/// and returning false, stops the save just before the rename, as a crash
/// would (tests). Returns the checkpoint's path.
llvm::Expected<std::string> saveCheckpoint(llvm::StringRef dir, const Checkpoint &checkpoint,
                                           int keep = 0,
                                           const std::function<bool()> &beforeRename = {});

/// Loads a checkpoint directory, or the latest one of a checkpoints
/// directory or of a run directory (which holds `checkpoints/`).
llvm::Expected<Checkpoint> loadCheckpoint(llvm::StringRef path);

/// Resolves `path` to the checkpoint directory loadCheckpoint would read.
llvm::Expected<std::string> resolveCheckpoint(llvm::StringRef path);

} // namespace kiln

#endif // KILN_RUNTIME_CHECKPOINT_H
