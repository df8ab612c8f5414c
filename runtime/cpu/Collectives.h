//===- Collectives.h - collectives for the CPU interpreter -----------------===//
//
// A partitioned step (kiln-partition) calls kiln.all_reduce and
// kiln.all_gather; on the CPU each rank is a thread of one process and
// ThreadMesh is their communicator, so any mesh runs on a laptop and the
// sharding passes are tested without GPUs (docs/sharding.md).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CPU_COLLECTIVES_H
#define KILN_RUNTIME_CPU_COLLECTIVES_H

#include "runtime/MeshLayout.h"
#include "runtime/cpu/HostTensor.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <condition_variable>
#include <deque>
#include <map>
#include <tuple>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace kiln::cpu {

/// The collectives one rank calls. Every rank of the mesh calls the same
/// collectives in the same order (each runs the same program).
class Collectives {
public:
  virtual ~Collectives();
  /// The sum of `x` over this rank's group along mesh axis `axis`, added in
  /// rank order: the same bytes on every rank of the group.
  virtual llvm::Expected<HostTensor> allReduce(const HostTensor &x, llvm::StringRef axis) = 0;
  /// The group's `x` concatenated along `dim` in rank order.
  virtual llvm::Expected<HostTensor> allGather(const HostTensor &x, llvm::StringRef axis,
                                               int64_t dim) = 0;
  /// This rank's part (along `dim`) of the group's sum.
  virtual llvm::Expected<HostTensor> reduceScatter(const HostTensor &x, llvm::StringRef axis,
                                                   int64_t dim) = 0;
  /// Each rank's `x` cut into the group's size of parts along `splitDim`,
  /// part k to rank k; the parts received concatenated along `concatDim`
  /// in rank order (kiln.all_to_all). By default an all_gather along
  /// `concatDim` and this rank's part of it: the same values, more bytes
  /// moved, which the CPU ranks do not mind.
  virtual llvm::Expected<HostTensor> allToAll(const HostTensor &x, llvm::StringRef axis,
                                              int64_t splitDim, int64_t concatDim);
  /// Point to point (kiln.send / kiln.recv, pipeline stages): `x` to the
  /// rank of this one's group along `axis` at coordinate `peer`, on
  /// `channel`, without waiting for it to be received; and the next
  /// tensor sent to this rank on `channel` by the one at `peer`, waiting
  /// for it. By default: not supported by this communicator.
  virtual llvm::Error send(const HostTensor &x, llvm::StringRef axis, int64_t peer,
                           int64_t channel);
  virtual llvm::Expected<HostTensor> recv(llvm::StringRef axis, int64_t peer, int64_t channel);
  /// This rank's index in its group along `axis`, and the group's size.
  virtual int64_t coordinate(llvm::StringRef axis) const = 0;
  virtual int64_t groupSize(llvm::StringRef axis) const = 0;
  /// Without waiting: why another rank is known to have failed or ended (a
  /// closed connection, an abort it sent), or nothing. A runtime that waits
  /// for collectives outside the group (NCCL on the GPU) asks this while it
  /// waits, so a dead peer ends the wait at once and is named. `during`
  /// says what this rank was doing. The group is unusable once it answers.
  virtual std::optional<std::string> peerFailure(llvm::StringRef during) {
    (void)during;
    return std::nullopt;
  }
  /// Tells the other ranks this one failed, with `reason` (where the group
  /// can: processes; threads learn it from the failing rank's return).
  virtual void abort(llvm::StringRef reason) { (void)reason; }
};

/// Part `k` of `n` equal parts of `x` along `dim`.
HostTensor partOf(const HostTensor &x, int64_t dim, int64_t k, int64_t n);

/// The collectives, as data (a communicator that moves tensors between
/// processes sends the kind).
enum class CollectiveKind : uint8_t { AllReduce, AllGather, ReduceScatter };
llvm::StringRef nameOf(CollectiveKind kind); ///< "all_reduce", ...

/// What `kind` gives the member at `coordinate` of a group whose
/// contributions are `members`, in rank order: the sum (added in that order,
/// so every member gets the same bytes), the concatenation along `dim`, or
/// the member's part of the sum along `dim`. Fails, naming the collective
/// and `axis`, when the members' types differ (the ranks run different
/// programs).
llvm::Expected<HostTensor> combine(CollectiveKind kind, llvm::ArrayRef<const HostTensor *> members,
                                   llvm::ArrayRef<int64_t> ranks, llvm::StringRef axis,
                                   int64_t dim, int64_t coordinate);

/// The ranks of a mesh as threads of this process. Ranks are numbered
/// row-major over the axes (the last axis varies fastest), as #kiln.mesh
/// says.
class ThreadMesh {
public:
  explicit ThreadMesh(MeshAxes axes);
  ~ThreadMesh();

  int64_t numRanks() const { return numRanks_; }
  /// Rank `rank`'s coordinate along axis `axis` (0 for an axis the mesh
  /// does not have), and the axis's size (1 then).
  int64_t coordinate(int64_t rank, llvm::StringRef axis) const;
  int64_t axisSize(llvm::StringRef axis) const;

  /// Runs `body(rank, collectives)` on one thread per rank and waits for
  /// all. When a rank fails, the ranks waiting in a collective are woken
  /// with an error naming it (never a hang); the first failure is returned,
  /// prefixed with its rank.
  llvm::Error run(const std::function<llvm::Error(int64_t rank, Collectives &)> &body);
  /// Seconds rank `rank` spent waiting in recv since the last run() began.
  double recvWaitSeconds(int64_t rank) const { return recvWait_[static_cast<size_t>(rank)]; }

private:
  class Rank;
  friend class Rank;
  /// Waits until every rank of `group` has arrived, after depositing `x`
  /// (when not null) for the group to read; a deposit stays readable until
  /// the group's next exchange has been reached by all of it. Groups of
  /// different axes meet apart (pipeline stages run different programs).
  llvm::Error exchange(int64_t rank, const std::vector<int64_t> &group, const HostTensor *x,
                       llvm::StringRef what);
  bool wait(std::unique_lock<std::mutex> &lock, const std::vector<int64_t> &group);
  std::vector<int64_t> group(int64_t rank, llvm::StringRef axis) const;
  /// The rank at `coordinate` along `axis` in `rank`'s group.
  llvm::Expected<int64_t> peer(int64_t rank, llvm::StringRef axis, int64_t coordinate) const;

  MeshAxes axes_;
  int64_t numRanks_ = 1;
  std::mutex mutex_;
  std::condition_variable cv_;
  struct Barrier {
    int64_t arrived = 0;
    uint64_t generation = 0;
  };
  std::map<std::vector<int64_t>, Barrier> barriers_; ///< by the group's ranks
  std::string aborted_;
  std::vector<const HostTensor *> deposits_;
  /// Sent and not yet received: (from, to, channel) -> tensors in order.
  std::map<std::tuple<int64_t, int64_t, int64_t>, std::deque<HostTensor>> mailbox_;
  std::vector<double> recvWait_;
};

} // namespace kiln::cpu

#endif // KILN_RUNTIME_CPU_COLLECTIVES_H
