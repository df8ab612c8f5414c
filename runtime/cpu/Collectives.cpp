//===- Collectives.cpp - threads as the ranks of a mesh --------------------===//

#include "runtime/cpu/Collectives.h"
#include "runtime/cpu/Kernels.h"

#include "llvm/Support/FormatVariadic.h"

#include <thread>

namespace kiln::cpu {

Collectives::~Collectives() = default;

HostTensor partOf(const HostTensor &x, int64_t dim, int64_t k, int64_t n) {
  std::vector<int64_t> start(x.shape().size(), 0), limit = x.shape(),
                       strides(x.shape().size(), 1);
  int64_t part = x.shape()[dim] / n;
  start[dim] = k * part;
  limit[dim] = start[dim] + part;
  return kernels::slice(x, start, limit, strides);
}

class ThreadMesh::Rank : public Collectives {
public:
  Rank(ThreadMesh &mesh, int64_t rank) : mesh_(mesh), rank_(rank) {}

  llvm::Expected<HostTensor> allReduce(const HostTensor &x, llvm::StringRef axis) override {
    std::vector<const HostTensor *> members;
    if (llvm::Error err = collect(x, axis, "all_reduce", members))
      return std::move(err);
    HostTensor sum = members[0]->clone();
    for (size_t k = 1; k < members.size(); ++k)
      for (int64_t i = 0, n = sum.numel(); i < n; ++i)
        sum.set(i, sum.get(i) + members[k]->get(i));
    sum.roundToDType();
    return finish(std::move(sum));
  }

  llvm::Expected<HostTensor> allGather(const HostTensor &x, llvm::StringRef axis,
                                       int64_t dim) override {
    std::vector<const HostTensor *> members;
    if (llvm::Error err = collect(x, axis, "all_gather", members))
      return std::move(err);
    std::vector<HostTensor> parts;
    for (const HostTensor *m : members)
      parts.push_back(*m);
    return finish(kernels::concat(parts, dim));
  }

  llvm::Expected<HostTensor> reduceScatter(const HostTensor &x, llvm::StringRef axis,
                                           int64_t dim) override {
    auto sum = allReduce(x, axis);
    if (!sum)
      return sum.takeError();
    return partOf(*sum, dim, coordinate(axis), groupSize(axis));
  }

  int64_t coordinate(llvm::StringRef axis) const override {
    return mesh_.coordinate(rank_, axis);
  }
  int64_t groupSize(llvm::StringRef axis) const override { return mesh_.axisSize(axis); }

private:
  /// Deposits `x` and returns the group's deposits in rank order; they stay
  /// valid until finish() (the second barrier).
  llvm::Error collect(const HostTensor &x, llvm::StringRef axis, llvm::StringRef what,
                      std::vector<const HostTensor *> &members) {
    if (llvm::Error err = mesh_.exchange(rank_, &x, what))
      return err;
    for (int64_t r : mesh_.group(rank_, axis)) {
      const HostTensor *m = mesh_.deposits_[r];
      if (m->dtype() != x.dtype() || m->shape() != x.shape())
        return llvm::createStringError(
            llvm::inconvertibleErrorCode(),
            llvm::formatv("{0} over {1}: rank {2} has {3} but rank {4} has {5} (the ranks run "
                          "different programs)",
                          what, axis, rank_, x.typeString(), r, m->typeString()));
      members.push_back(m);
    }
    return llvm::Error::success();
  }

  llvm::Expected<HostTensor> finish(HostTensor result) {
    // Nobody may leave (and free its deposit) before everyone has read.
    if (llvm::Error err = mesh_.exchange(rank_, nullptr, "the end of a collective"))
      return std::move(err);
    return result;
  }

  ThreadMesh &mesh_;
  int64_t rank_;
};

ThreadMesh::ThreadMesh(std::vector<std::pair<std::string, int64_t>> axes) : axes_(std::move(axes)) {
  for (auto &[name, size] : axes_)
    numRanks_ *= size;
  deposits_.assign(numRanks_, nullptr);
}

ThreadMesh::~ThreadMesh() = default;

int64_t ThreadMesh::coordinate(int64_t rank, llvm::StringRef axis) const {
  int64_t stride = numRanks_;
  for (auto &[name, size] : axes_) {
    stride /= size;
    if (name == axis)
      return rank / stride % size;
  }
  return 0;
}

int64_t ThreadMesh::axisSize(llvm::StringRef axis) const {
  for (auto &[name, size] : axes_)
    if (name == axis)
      return size;
  return 1;
}

std::vector<int64_t> ThreadMesh::group(int64_t rank, llvm::StringRef axis) const {
  int64_t stride = numRanks_, size = 1;
  for (auto &[name, n] : axes_) {
    stride /= n;
    if (name == axis) {
      size = n;
      break;
    }
  }
  if (size == 1)
    return {rank};
  int64_t first = rank - coordinate(rank, axis) * stride;
  std::vector<int64_t> members;
  for (int64_t k = 0; k < size; ++k)
    members.push_back(first + k * stride);
  return members;
}

bool ThreadMesh::wait(std::unique_lock<std::mutex> &lock) {
  uint64_t generation = generation_;
  if (++arrived_ == numRanks_) {
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
    return aborted_.empty();
  }
  cv_.wait(lock, [&] { return generation_ != generation || !aborted_.empty(); });
  return aborted_.empty();
}

llvm::Error ThreadMesh::exchange(int64_t rank, const HostTensor *x, llvm::StringRef what) {
  std::unique_lock<std::mutex> lock(mutex_);
  if (x)
    deposits_[rank] = x;
  if (!wait(lock))
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   llvm::formatv("rank {0} stopped waiting in {1}: {2}", rank,
                                                 what, aborted_));
  return llvm::Error::success();
}

llvm::Error ThreadMesh::run(const std::function<llvm::Error(int64_t, Collectives &)> &body) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    arrived_ = 0;
    aborted_.clear();
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
