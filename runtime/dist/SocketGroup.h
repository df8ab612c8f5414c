//===- SocketGroup.h - the ranks of a mesh as processes, over TCP ----------===//
//
// One process per rank (kiln train --ranks N, mpirun, srun, torchrun): the
// processes find each other through rank 0, which listens on a TCP port;
// every other rank connects to it. A collective is one round trip through
// rank 0: each rank sends its tensor, rank 0 combines every group's in rank
// order (cpu::combine, the same arithmetic as ThreadMesh, so a run's numbers
// do not depend on whether its ranks are threads or processes) and sends
// each rank its result. That is simple and slow: it carries the CPU
// interpreter's small tensors and the training loop's control messages
// (stop now, gather a checkpoint); the GPU's gradients go through NCCL.
//
// A failing rank never leaves the others hanging: it sends rank 0 its
// reason (abort), rank 0 passes it on to everyone, and a collective that
// waits longer than the timeout fails naming the ranks it waited for. A
// rank that dies without a word closes its connection, which rank 0 reads
// as the end of that rank.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_DIST_SOCKETGROUP_H
#define KILN_RUNTIME_DIST_SOCKETGROUP_H

#include "runtime/MeshLayout.h"
#include "runtime/cpu/Collectives.h"

#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kiln::dist {

struct GroupOptions {
  int64_t rank = 0, size = 1;
  /// Where rank 0 listens: its host name or address, and a port.
  std::string host = "127.0.0.1";
  int port = 0;
  /// How long connecting, or one collective, may wait for the other ranks.
  double timeoutSeconds = 600;
  /// The job the ranks belong to (the launcher's id for it; "" when none is
  /// known). Rank 0 turns away a process of another job that connects to
  /// its port (two runs that chose one port) and goes on waiting for its
  /// own; that process fails saying so.
  std::string job;
};

class SocketGroup final : public cpu::Collectives {
public:
  /// Connects the ranks: rank 0 listens on `port` and waits for the others,
  /// which connect to `host`:`port` (retrying until rank 0 listens). It
  /// returns once every rank is present; a rank missing after the timeout,
  /// or two processes claiming one rank, is an error on every rank.
  static llvm::Expected<std::unique_ptr<SocketGroup>> connect(const GroupOptions &options);
  ~SocketGroup() override;

  int64_t rank() const { return options_.rank; }
  int64_t size() const { return options_.size; }
  /// The mesh the collectives' axes name (its ranks are this group's).
  void setMesh(MeshAxes mesh) { mesh_ = std::move(mesh); }

  llvm::Expected<cpu::HostTensor> allReduce(const cpu::HostTensor &x,
                                            llvm::StringRef axis) override;
  llvm::Expected<cpu::HostTensor> allGather(const cpu::HostTensor &x, llvm::StringRef axis,
                                            int64_t dim) override;
  llvm::Expected<cpu::HostTensor> reduceScatter(const cpu::HostTensor &x, llvm::StringRef axis,
                                                int64_t dim) override;
  int64_t coordinate(llvm::StringRef axis) const override {
    return meshCoordinate(mesh_, options_.rank, axis);
  }
  int64_t groupSize(llvm::StringRef axis) const override { return meshAxisSize(mesh_, axis); }

  /// Whether `flag` is set on any rank (a collective: every rank calls it).
  llvm::Expected<bool> any(bool flag);
  /// The largest of every rank's `value` (a collective).
  llvm::Expected<int64_t> max(int64_t value);

  /// A closed connection or an abort waiting on a socket, without
  /// blocking and without taking a collective's message off the wire. Rank
  /// 0 passes what it finds on to the other ranks.
  std::optional<std::string> peerFailure(llvm::StringRef during) override;

  /// Tells the other ranks this one failed, with `reason`: their current or
  /// next collective fails with "rank R failed: REASON". The group is
  /// unusable afterwards; a second call does nothing.
  void abort(llvm::StringRef reason) override;

private:
  SocketGroup(GroupOptions options) : options_(std::move(options)) {}
  llvm::Error listenAndAccept();
  llvm::Error connectToRoot();
  /// One collective (or, with an empty `axis`, an agreement over every
  /// rank): `x` in, this rank's result out.
  llvm::Expected<cpu::HostTensor> exchange(cpu::CollectiveKind kind, const cpu::HostTensor &x,
                                           llvm::StringRef axis, int64_t dim);
  /// Rank 0's part of a collective: every peer's contribution in, every
  /// peer's result out.
  llvm::Expected<cpu::HostTensor> coordinate(cpu::CollectiveKind kind, const cpu::HostTensor &x,
                                             llvm::StringRef axis, int64_t dim,
                                             const std::string &what);
  /// Rank 0: tells every peer but `except` that the group failed.
  void abortPeers(const std::string &reason, int64_t except);
  llvm::Error failed(std::string reason);

  GroupOptions options_;
  MeshAxes mesh_;
  int listener_ = -1;
  /// Rank 0: the socket of each rank (index 0 unused); others: [0] is the
  /// connection to rank 0.
  std::vector<int> sockets_;
  uint64_t sequence_ = 0;
  /// Why the group failed (set once; every later call fails with it).
  std::string failure_;
};

} // namespace kiln::dist

#endif // KILN_RUNTIME_DIST_SOCKETGROUP_H
