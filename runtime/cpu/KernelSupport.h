//===- KernelSupport.h - shared helpers of the CPU kernels -----------------===//

#ifndef KILN_RUNTIME_CPU_KERNELSUPPORT_H
#define KILN_RUNTIME_CPU_KERNELSUPPORT_H

#include "runtime/cpu/HostTensor.h"
#include "runtime/cpu/Parallel.h"

#include <utility>

namespace kiln::cpu {

/// Calls fn with a value of the storage type of a float dtype (double for
/// f64, float otherwise), so kernels are written once as templates.
template <typename Fn> decltype(auto) withFloatType(DType dtype, Fn &&fn) {
  if (dtype == DType::F64)
    return fn(double{});
  return fn(float{});
}

/// Rows of the last dimension: (number of rows, row length).
inline std::pair<int64_t, int64_t> rowsOf(const HostTensor &x) {
  int64_t n = x.rank() ? x.dim(-1) : 1;
  return {n ? x.numel() / n : 0, n};
}

/// Shape without its last dimension.
inline std::vector<int64_t> dropLast(const std::vector<int64_t> &shape) {
  return std::vector<int64_t>(shape.begin(), shape.end() - (shape.empty() ? 0 : 1));
}

/// Grain sizes for parallelFor: enough work per chunk to beat the handoff.
constexpr int64_t kElementGrain = 1 << 15;
inline int64_t rowGrain(int64_t rowLength) { return std::max<int64_t>(1, kElementGrain / std::max<int64_t>(rowLength, 1)); }

} // namespace kiln::cpu

#endif // KILN_RUNTIME_CPU_KERNELSUPPORT_H
