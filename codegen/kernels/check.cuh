// train.check_numerics: a scan of one op's result after the op runs. The
// first scan (in stream order, so the earliest op) that finds a NaN or +inf
// writes its producing step + 1 into flag[0] and the result's index into
// flag[1]; later scans see the flag set and return at once. -inf passes:
// it is what attention masks write.
#pragma once
#include "kiln/common.cuh"

namespace kiln {

template <typename T, i64 N>
__device__ void checkFinite(const T *x, unsigned step, unsigned result, unsigned *flag) {
  if (*(volatile unsigned *)flag != 0u)
    return;
  typedef typename Compute<T>::type F;
  bool bad = false;
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < N; i += (i64)gridDim.x * blockDim.x) {
    F v = (F)load(x, i);
    bad |= isnan(v) || (isinf(v) && v > F(0));
  }
  if (bad && atomicCAS(flag, 0u, step + 1u) == 0u)
    flag[1] = result;
}

} // namespace kiln
