//===- Launch.h - where a rank process sits, and starting local ranks ------===//
//
// A run over a mesh is one process per rank. Each process learns its rank
// from its environment, as the launchers people already use set it:
// torchrun-style RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT
// (which `kiln train --ranks N` sets for the processes it starts itself),
// Open MPI's OMPI_COMM_WORLD_* (mpirun), or Slurm's SLURM_PROCID /
// SLURM_NTASKS / SLURM_LOCALID (srun). Rank 0's address and port come from
// MASTER_ADDR and MASTER_PORT under every launcher (127.0.0.1 and 29500 when
// every rank is on this host).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_TRAIN_LAUNCH_H
#define KILN_TRAIN_LAUNCH_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/raw_ostream.h"

#include <string>

namespace kiln::tooling {

struct RankEnvironment {
  int64_t rank = 0, size = 1, localRank = 0, localSize = 1;
  /// Rank 0's host and port (the group's rendezvous).
  std::string host = "127.0.0.1";
  int port = 29500;
  /// Which launcher's variables these are ("" when there is one rank).
  std::string launcher;
  /// The id of this job from the launcher that started the ranks, so that
  /// two runs that chose one port tell their ranks apart: KILN_JOB (set by
  /// `kiln train --ranks N`) or TORCHELASTIC_RUN_ID (torchrun-style),
  /// SLURM_JOB_ID.SLURM_STEP_ID (srun), PMIX_NAMESPACE or
  /// OMPI_MCA_orte_ess_jobid (mpirun); "" when it sets none.
  std::string job;
  /// Started by `kiln train --ranks N` (KILN_RANKS_LAUNCHER), whose command
  /// line the ranks share.
  bool byKiln = false;
};

/// This process's place among the ranks, from its environment; one rank
/// when no launcher set any. Inconsistent variables (a rank not below the
/// size, a port that is not a number) are an error naming them.
llvm::Expected<RankEnvironment> rankEnvironment();

/// Starts `ranks` processes of this program on this host with `args` (the
/// command line, program first) and the variables above, and waits for them.
/// Rank 0 writes to this process's output; the others' standard output is
/// discarded, their errors are shown. SIGINT, SIGTERM and SIGHUP are passed
/// on to every rank once (they stop together after a step, with a
/// checkpoint). When a rank fails, the others are told through their group
/// and given `graceSeconds` to end before they are killed. Returns the exit
/// code: rank 0's when every rank ended the same way, else the first
/// failure's, after a line per failed rank on `err`.
/// `who` starts each message about a rank ("kiln train: rank 1 (pid …)
/// was killed by signal 9").
llvm::Expected<int> launchLocalRanks(int64_t ranks, llvm::ArrayRef<std::string> args,
                                     llvm::raw_ostream &err, double graceSeconds = 30,
                                     llvm::StringRef who = "kiln train");

} // namespace kiln::tooling

#endif // KILN_TRAIN_LAUNCH_H
