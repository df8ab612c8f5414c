//===- Parallel.h - a small persistent thread pool for the CPU interpreter -===//

#ifndef KILN_RUNTIME_CPU_PARALLEL_H
#define KILN_RUNTIME_CPU_PARALLEL_H

#include <cstdint>
#include <functional>

namespace kiln::cpu {

/// Runs fn(begin, end) over [0, n) split into contiguous chunks on the pool
/// (and the calling thread). Work below `grain` items runs inline.
void parallelFor(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)> &fn);

/// Threads the pool uses (the calling thread included).
int numThreads();
/// Sets the number of threads (>= 1); takes effect at the next parallelFor.
void setNumThreads(int n);
/// While it lives, parallelFor on the constructing thread runs inline: a
/// pipeline stage's thread computes on one core, as a stage on a device of
/// its own would, instead of queueing for the shared pool.
class InlineScope {
public:
  InlineScope();
  ~InlineScope();
  InlineScope(const InlineScope &) = delete;
  InlineScope &operator=(const InlineScope &) = delete;

private:
  bool previous_;
};

} // namespace kiln::cpu

#endif // KILN_RUNTIME_CPU_PARALLEL_H
