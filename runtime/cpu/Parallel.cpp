//===- Parallel.cpp - a small persistent thread pool -----------------------===//

#include "runtime/cpu/Parallel.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace kiln::cpu {
namespace {

/// Workers wait for a generation counter to change, run their chunk of the
/// current job, and count down; the caller runs chunk 0 and waits.
class Pool {
public:
  explicit Pool(int threads) { resize(threads); }
  ~Pool() { stop(); }

  int size() const { return static_cast<int>(workers_.size()) + 1; }

  void resize(int threads) {
    stop();
    stopping_ = false;
    for (int i = 1; i < threads; ++i)
      workers_.emplace_back([this, i] { loop(i); });
  }

  void run(int chunks, const std::function<void(int)> &job) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = &job;
      chunks_ = chunks;
      pending_ = chunks - 1;
      ++generation_;
    }
    cv_.notify_all();
    job(0);
    std::unique_lock<std::mutex> lock(mu_);
    done_.wait(lock, [&] { return pending_ == 0; });
    job_ = nullptr;
  }

private:
  void loop(int index) {
    uint64_t seen = 0;
    while (true) {
      const std::function<void(int)> *job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] { return stopping_ || generation_ != seen; });
        if (stopping_)
          return;
        seen = generation_;
        if (index >= chunks_)
          continue;
        job = job_;
      }
      (*job)(index);
      std::lock_guard<std::mutex> lock(mu_);
      if (--pending_ == 0)
        done_.notify_one();
    }
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto &t : workers_)
      t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable cv_, done_;
  const std::function<void(int)> *job_ = nullptr;
  int chunks_ = 0, pending_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

int defaultThreads() { return std::max(1u, std::thread::hardware_concurrency()); }

Pool &pool() {
  static Pool p(defaultThreads());
  return p;
}

std::mutex runMutex; // one parallelFor at a time (nested calls run inline)
thread_local bool insideParallel = false;

} // namespace

InlineScope::InlineScope() : previous_(insideParallel) { insideParallel = true; }
InlineScope::~InlineScope() { insideParallel = previous_; }

int numThreads() { return pool().size(); }

void setNumThreads(int n) {
  std::lock_guard<std::mutex> lock(runMutex);
  pool().resize(std::max(1, n));
}

void parallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)> &fn) {
  if (n <= 0)
    return;
  int threads = numThreads();
  if (insideParallel || threads == 1 || n < 2 * std::max<int64_t>(grain, 1)) {
    fn(0, n);
    return;
  }
  int chunks = static_cast<int>(std::min<int64_t>(threads, n / std::max<int64_t>(grain, 1)));
  std::lock_guard<std::mutex> lock(runMutex);
  pool().run(chunks, [&](int c) {
    insideParallel = true;
    int64_t begin = n * c / chunks, end = n * (c + 1) / chunks;
    fn(begin, end);
    insideParallel = false;
  });
}

} // namespace kiln::cpu
