//===- GpuTestSupport.h - what the GPU tests share -------------------------===//
//
// GPU tests compare the CUDA backend with the CPU interpreter, the
// reference semantics of every op. Without a CUDA device each test is
// skipped (GTEST_SKIP), and ctest reports it as skipped; the tests carry the
// ctest label `gpu`.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_TESTS_GPU_GPUTESTSUPPORT_H
#define KILN_TESTS_GPU_GPUTESTSUPPORT_H

#include "runtime/cpu/HostTensor.h"

#include <gtest/gtest.h>

#include <string>

namespace kiln::test {

/// Skips the calling test when there is no CUDA device.
#define KILN_REQUIRE_GPU()                                                                         \
  do {                                                                                             \
    if (std::string why = ::kiln::test::noGpuReason(); !why.empty())                               \
      GTEST_SKIP() << why;                                                                         \
  } while (0)

/// Empty when a CUDA device is usable, else why not.
std::string noGpuReason();

/// The largest |a - b| and the largest |a - b| / max(|b|, floor) over all
/// elements; `worst` is the index of the element furthest outside
/// atol + rtol·|b|, or -1 when all are within.
struct Difference {
  double maxAbs = 0, maxRel = 0;
  int64_t worst = -1;
  double worstGot = 0, worstWant = 0;
};
Difference compare(const cpu::HostTensor &got, const cpu::HostTensor &want, double atol,
                   double rtol);

} // namespace kiln::test

#endif // KILN_TESTS_GPU_GPUTESTSUPPORT_H
