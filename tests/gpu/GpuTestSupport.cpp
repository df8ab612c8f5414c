//===- GpuTestSupport.cpp - what the GPU tests share -----------------------===//

#include "tests/gpu/GpuTestSupport.h"

#include "runtime/cuda/CudaApi.h"

#include <cmath>

namespace kiln::test {

std::string noGpuReason() {
  auto dev = cuda::device();
  if (dev)
    return "";
  return llvm::toString(dev.takeError());
}

Difference compare(const cpu::HostTensor &got, const cpu::HostTensor &want, double atol,
                   double rtol) {
  Difference d;
  double worstExcess = 0;
  for (int64_t i = 0; i < want.numel(); ++i) {
    double g = got.get(i), w = want.get(i);
    double diff = std::fabs(g - w);
    if (std::isnan(g) != std::isnan(w) || std::isinf(g) != std::isinf(w))
      diff = INFINITY;
    else if (std::isnan(w) || (std::isinf(w) && g == w))
      diff = 0;
    d.maxAbs = std::max(d.maxAbs, diff);
    d.maxRel = std::max(d.maxRel, diff / std::max(std::fabs(w), 1e-6));
    double excess = diff - (atol + rtol * std::fabs(w));
    if (excess > worstExcess) {
      worstExcess = excess;
      d.worst = i;
      d.worstGot = g;
      d.worstWant = w;
    }
  }
  return d;
}

} // namespace kiln::test
