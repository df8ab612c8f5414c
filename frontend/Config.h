//===- Config.h - the run configuration: one struct, TOML and --set --------===//
//
// Every option of a run lives in RunConfig. One schema (Config.cpp) binds each
// field to its dotted TOML key, type, range and help, and drives loading a
// TOML file, `--set key=value` overrides, validation and printing the
// resolved config. Unknown keys, wrong types and out-of-range values are
// errors that name the key and the file.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_FRONTEND_CONFIG_H
#define KILN_FRONTEND_CONFIG_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>
#include <vector>

namespace kiln {

struct ModelConfig {
  std::string kind = "gpt2";
  int64_t n_layer = 12;
  int64_t n_head = 12;
  int64_t n_embd = 768;
  int64_t vocab_size = 50257;
  /// The embedding table is padded to a multiple of this for aligned
  /// kernels (50257 -> 50304 with 64); the padding never changes the loss.
  int64_t vocab_multiple = 64;
  int64_t block_size = 1024;
  double layer_norm_eps = 1e-5;
  double init_std = 0.02;

  /// vocab_size rounded up to vocab_multiple.
  int64_t paddedVocab() const {
    return (vocab_size + vocab_multiple - 1) / vocab_multiple * vocab_multiple;
  }
  int64_t headDim() const { return n_embd / n_head; }
};

struct TrainConfig {
  int64_t batch_size = 4;
  /// Tokens per sequence; 0 means model.block_size.
  int64_t seq_len = 0;
  int64_t seed = 1337;
};

struct RunConfig {
  ModelConfig model;
  TrainConfig train;

  /// Sequence length after defaults (train.seq_len or model.block_size).
  int64_t seqLen() const { return train.seq_len ? train.seq_len : model.block_size; }

  /// Loads `path` over the defaults. `displayName` is used in messages.
  static llvm::Expected<RunConfig> loadFile(llvm::StringRef path);
  /// Parses TOML text over the defaults (`source` names it in messages).
  static llvm::Expected<RunConfig> parse(llvm::StringRef toml, llvm::StringRef source);
  /// Applies `key=value` overrides; the value is TOML (`4`, `1e-3`, `"x"`),
  /// or a bare string.
  llvm::Error applyOverrides(llvm::ArrayRef<std::string> assignments);
  /// Cross-field checks (n_embd divisible by n_head, ...).
  llvm::Error validate(llvm::StringRef source) const;
  /// The resolved config as TOML, every key listed.
  std::string toToml() const;
};

} // namespace kiln

#endif // KILN_FRONTEND_CONFIG_H
