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

} // namespace kiln::cpu

#endif // KILN_RUNTIME_CPU_PARALLEL_H
