// kiln/rope.cuh — rotary position embedding (rotate-half), one thread per
// (row, i < D/2) pair; positions count along the second-to-last dimension,
// or, with INNER > 1, along an earlier one: INNER rows (heads) per position.
// The angle is computed in double, as the CPU reference does.
#pragma once
#include "kiln/common.cuh"

namespace kiln {

template <typename T, i64 ROWS, i64 TLEN, i64 D, bool INVERSE, i64 INNER = 1>
__device__ void rope(const T *x, T *y, double theta) {
  typedef typename Compute<T>::type F;
  constexpr i64 HALF = D / 2;
  i64 stride = (i64)gridDim.x * blockDim.x;
  for (i64 p = blockIdx.x * (i64)blockDim.x + threadIdx.x; p < ROWS * HALF; p += stride) {
    i64 r = p / HALF, i = p % HALF;
    double angle = (double)((r / INNER) % TLEN) * pow(theta, -2.0 * (double)i / (double)D);
    double s, c;
    sincos(angle, &s, &c);
    if (INVERSE)
      s = -s;
    F a = (F)load(x, r * D + i), b = (F)load(x, r * D + i + HALF);
    store(y, r * D + i, (F)(a * c - b * s));
    store(y, r * D + i + HALF, (F)(b * c + a * s));
  }
}

} // namespace kiln
