//===- Collectives.cpp - threads as the ranks of a mesh --------------------===//

#include "runtime/cpu/Collectives.h"

#include <chrono>
#include "runtime/cpu/Kernels.h"

#include "llvm/Support/FormatVariadic.h"

#include <thread>

namespace kiln::cpu {

Collectives::~Collectives() = default;

llvm::Expected<HostTensor> Collectives::allToAll(const HostTensor &x, llvm::StringRef axis,
                                                 int64_t splitDim, int64_t concatDim) {
  // The gathered value's part k along splitDim is rank k's parts, in rank
  // order along concatDim: the exchange's result.
  auto all = allGather(x, axis, concatDim);
  if (!all)
    return all.takeError();
  return partOf(*all, splitDim, coordinate(axis), groupSize(axis));
}

HostTensor partOf(const HostTensor &x, int64_t dim, int64_t k, int64_t n) {
  std::vector<int64_t> start(x.shape().size(), 0), limit = x.shape(),
                       strides(x.shape().size(), 1);
  int64_t part = x.shape()[dim] / n;
  start[dim] = k * part;
  limit[dim] = start[dim] + part;
  return kernels::slice(x, start, limit, strides);
}

llvm::StringRef nameOf(CollectiveKind kind) {
  switch (kind) {
  case CollectiveKind::AllReduce:
    return "all_reduce";
  case CollectiveKind::AllGather:
    return "all_gather";
  case CollectiveKind::ReduceScatter:
    return "reduce_scatter";
  }
  llvm_unreachable("a collective kind");
}

llvm::Expected<HostTensor> combine(CollectiveKind kind, llvm::ArrayRef<const HostTensor *> members,
                                   llvm::ArrayRef<int64_t> ranks, llvm::StringRef axis,
                                   int64_t dim, int64_t coordinate) {
  for (size_t k = 1; k < members.size(); ++k)
    if (members[k]->dtype() != members[0]->dtype() || members[k]->shape() != members[0]->shape())
      return llvm::createStringError(
          llvm::inconvertibleErrorCode(),
          llvm::formatv("{0} over {1}: rank {2} has {3} but rank {4} has {5} (the ranks run "
                        "different programs)",
                        nameOf(kind), axis, ranks[0], members[0]->typeString(), ranks[k],
                        members[k]->typeString()));
  if (kind == CollectiveKind::AllGather) {
    std::vector<HostTensor> parts;
    for (const HostTensor *m : members)
      parts.push_back(*m);
    return kernels::concat(parts, dim);
  }
  HostTensor sum = members[0]->clone();
  const int64_t n = sum.numel();
  for (size_t k = 1; k < members.size(); ++k) {
    // HostTensor::set's arithmetic (a double sum rounded to the storage),
    // without its per-element switch for the common types.
    if (sum.dtype() == DType::F64) {
      double *out = sum.data<double>();
      const double *in = members[k]->data<double>();
      for (int64_t i = 0; i < n; ++i)
        out[i] += in[i];
    } else if (sum.dtype() == DType::F32) {
      float *out = sum.data<float>();
      const float *in = members[k]->data<float>();
      for (int64_t i = 0; i < n; ++i)
        out[i] = static_cast<float>(static_cast<double>(out[i]) + static_cast<double>(in[i]));
    } else {
      for (int64_t i = 0; i < n; ++i)
        sum.set(i, sum.get(i) + members[k]->get(i));
    }
  }
  sum.roundToDType();
  if (kind == CollectiveKind::AllReduce)
    return sum;
  return partOf(sum, dim, coordinate, static_cast<int64_t>(members.size()));
}

llvm::Error Collectives::send(const HostTensor &, llvm::StringRef axis, int64_t, int64_t) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 "kiln.send over '" + axis +
                                     "': this communicator has no point-to-point transfers "
                                     "(pipeline stages run on the CPU's thread mesh)");
}

llvm::Expected<HostTensor> Collectives::recv(llvm::StringRef axis, int64_t, int64_t) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 "kiln.recv over '" + axis +
                                     "': this communicator has no point-to-point transfers "
                                     "(pipeline stages run on the CPU's thread mesh)");
}

class ThreadMesh::Rank : public Collectives {
public:
  Rank(ThreadMesh &mesh, int64_t rank) : mesh_(mesh), rank_(rank) {}

  llvm::Expected<HostTensor> allReduce(const HostTensor &x, llvm::StringRef axis) override {
    return collective(CollectiveKind::AllReduce, x, axis, 0);
  }
  llvm::Expected<HostTensor> allGather(const HostTensor &x, llvm::StringRef axis,
                                       int64_t dim) override {
    return collective(CollectiveKind::AllGather, x, axis, dim);
  }
  llvm::Expected<HostTensor> reduceScatter(const HostTensor &x, llvm::StringRef axis,
                                           int64_t dim) override {
    return collective(CollectiveKind::ReduceScatter, x, axis, dim);
  }

  llvm::Error send(const HostTensor &x, llvm::StringRef axis, int64_t peer,
                   int64_t channel) override {
    auto to = mesh_.peer(rank_, axis, peer);
    if (!to)
      return to.takeError();
    // A copy (made before the lock): the sender's tensor may be reused once
    // this returns.
    HostTensor copy = x.clone();
    std::lock_guard<std::mutex> lock(mesh_.mutex_);
    mesh_.mailbox_[{rank_, *to, channel}].push_back(std::move(copy));
    mesh_.cv_.notify_all();
    return llvm::Error::success();
  }
  llvm::Expected<HostTensor> recv(llvm::StringRef axis, int64_t peer, int64_t channel) override {
    auto from = mesh_.peer(rank_, axis, peer);
    if (!from)
      return from.takeError();
    std::unique_lock<std::mutex> lock(mesh_.mutex_);
    auto &queue = mesh_.mailbox_[{*from, rank_, channel}];
    auto began = std::chrono::steady_clock::now();
    mesh_.cv_.wait(lock, [&] { return !queue.empty() || !mesh_.aborted_.empty(); });
    mesh_.recvWait_[static_cast<size_t>(rank_)] +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - began).count();
    if (queue.empty())
      return llvm::createStringError(
          llvm::inconvertibleErrorCode(),
          llvm::formatv("rank {0} stopped waiting for channel {1} from rank {2}: {3}", rank_,
                        channel, *from, mesh_.aborted_));
    HostTensor x = std::move(queue.front());
    queue.pop_front();
    return x;
  }
  int64_t coordinate(llvm::StringRef axis) const override {
    return mesh_.coordinate(rank_, axis);
  }
  int64_t groupSize(llvm::StringRef axis) const override { return mesh_.axisSize(axis); }

private:
  /// Deposits `x`, combines the group's deposits, and waits until every
  /// rank has read them (nobody may free its deposit before).
  llvm::Expected<HostTensor> collective(CollectiveKind kind, const HostTensor &x,
                                        llvm::StringRef axis, int64_t dim) {
    std::vector<int64_t> ranks = mesh_.group(rank_, axis);
    if (llvm::Error err = mesh_.exchange(rank_, ranks, &x, nameOf(kind)))
      return std::move(err);
    std::vector<const HostTensor *> members;
    for (int64_t r : ranks)
      members.push_back(mesh_.deposits_[r]);
    auto result = combine(kind, members, ranks, axis, dim, coordinate(axis));
    if (llvm::Error err = mesh_.exchange(rank_, ranks, nullptr, "the end of a collective")) {
      if (!result)
        llvm::consumeError(result.takeError());
      return std::move(err);
    }
    return result;
  }

  ThreadMesh &mesh_;
  int64_t rank_;
};

ThreadMesh::ThreadMesh(MeshAxes axes) : axes_(std::move(axes)) {
  for (auto &[name, size] : axes_)
    numRanks_ *= size;
  deposits_.assign(numRanks_, nullptr);
  recvWait_.assign(static_cast<size_t>(numRanks_), 0.0);
}

ThreadMesh::~ThreadMesh() = default;

int64_t ThreadMesh::coordinate(int64_t rank, llvm::StringRef axis) const {
  return meshCoordinate(axes_, rank, axis);
}

int64_t ThreadMesh::axisSize(llvm::StringRef axis) const { return meshAxisSize(axes_, axis); }

llvm::Expected<int64_t> ThreadMesh::peer(int64_t rank, llvm::StringRef axis,
                                         int64_t coordinate) const {
  std::vector<int64_t> ranks = group(rank, axis);
  if (coordinate < 0 || coordinate >= static_cast<int64_t>(ranks.size()))
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   llvm::formatv("rank {0}: no peer {1} along mesh axis '{2}' "
                                                 "({3} ranks)",
                                                 rank, coordinate, axis, ranks.size()));
  return ranks[static_cast<size_t>(coordinate)];
}
std::vector<int64_t> ThreadMesh::group(int64_t rank, llvm::StringRef axis) const {
  return meshGroup(axes_, rank, axis);
}

bool ThreadMesh::wait(std::unique_lock<std::mutex> &lock, const std::vector<int64_t> &group) {
  Barrier &b = barriers_[group];
  uint64_t generation = b.generation;
  if (++b.arrived == static_cast<int64_t>(group.size())) {
    b.arrived = 0;
    ++b.generation;
    cv_.notify_all();
    return aborted_.empty();
  }
  cv_.wait(lock, [&] { return b.generation != generation || !aborted_.empty(); });
  return aborted_.empty();
}

llvm::Error ThreadMesh::exchange(int64_t rank, const std::vector<int64_t> &group,
                                 const HostTensor *x, llvm::StringRef what) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (x)
    deposits_[rank] = x;
  if (!wait(lock, group))
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   llvm::formatv("rank {0} stopped waiting in {1}: {2}", rank,
                                                 what, aborted_));
  return llvm::Error::success();
}

llvm::Error ThreadMesh::run(const std::function<llvm::Error(int64_t, Collectives &)> &body) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    barriers_.clear();
    aborted_.clear();
    mailbox_.clear();
    recvWait_.assign(static_cast<size_t>(numRanks_), 0.0);
  }
  std::vector<std::string> errors(numRanks_);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < numRanks_; ++r)
    threads.emplace_back([&, r] {
      Rank rank(*this, r);
      if (llvm::Error err = body(r, rank)) {
        errors[r] = llvm::toString(std::move(err));
        std::lock_guard<std::mutex> lock(mutex_);
        if (aborted_.empty())
          aborted_ = "rank " + std::to_string(r) + " failed";
        cv_.notify_all();
      }
    });
  for (std::thread &t : threads)
    t.join();
  // The rank that failed first, not the ones it woke.
  for (int64_t r = 0; r < numRanks_; ++r)
    if (!errors[r].empty() && aborted_ == "rank " + std::to_string(r) + " failed")
      return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                     "rank " + std::to_string(r) + ": " + errors[r]);
  return llvm::Error::success();
}

} // namespace kiln::cpu
