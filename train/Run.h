//===- Run.h - a training run, in one process or over a mesh's ranks -------===//
//
// What `kiln train` does once its flags and config are read, as a library
// call, so a test or another frontend runs exactly the same thing: find out
// whether this process is one rank of several (its launcher's variables,
// Launch.h) or should start them itself (--ranks / --gpus), check that the
// ranks fit the mesh and the host before anything starts, join the group,
// run the loop (Loop.h), and on a failure tell the other ranks.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_TRAIN_RUN_H
#define KILN_TRAIN_RUN_H

#include "runtime/dist/SocketGroup.h"
#include "train/Launch.h"
#include "train/Loop.h"

#include <memory>

#include <optional>
#include <string>
#include <vector>

namespace kiln::tooling {

struct RunRequest {
  /// Resume, run directory, signal flag, terminal output (group and
  /// localRanks are set by runTraining).
  TrainOptions options;
  /// Start this many rank processes on this host (`kiln train --ranks N`);
  /// `gpus` the same on the GPU (--gpus N: train.device = "cuda", the GPU
  /// count and NCCL checked first). At most one of the two.
  std::optional<int64_t> ranks, gpus;
  /// The command line that starts this program again as one rank (program
  /// first), for ranks or gpus.
  std::vector<std::string> relaunch;
  /// Where this process sits among the ranks; by default its environment's
  /// (rankEnvironment()).
  std::optional<RankEnvironment> where;
};

/// Runs `config` as `request` says and returns the exit code (0 done,
/// 128 + signal when a signal stopped it with a checkpoint, a failed rank's
/// code when it started the ranks). Rank 0 writes to `out`; other ranks
/// print nothing. A failure on one rank of several is passed to the others
/// (they stop too), and its message begins "rank R: ".
/// This process's group among the ranks `where` describes (SocketGroup's
/// rendezvous at rank 0's host and port, the launcher's job id), each
/// collective waiting at most `timeoutSeconds`.
llvm::Expected<std::unique_ptr<dist::SocketGroup>> connectRanks(const RankEnvironment &where,
                                                                double timeoutSeconds);

llvm::Expected<int> runTraining(RunConfig config, const RunRequest &request,
                                llvm::raw_ostream &out);

} // namespace kiln::tooling

#endif // KILN_TRAIN_RUN_H
