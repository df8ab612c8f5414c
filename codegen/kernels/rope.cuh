// kiln/rope.cuh — rotary position embedding (rotate-half), one thread per
// (row, i < D/2) pair; positions count along the second-to-last dimension,
// or, with INNER > 1, along an earlier one: INNER rows (heads) per position.
// The frequencies θ^(−2i/D) come from the host (FREQ, D/2 doubles computed
// as the CPU reference computes them) and the angle t·freq is formed in
// double; for float tensors it is reduced to [−π, π] in double and its sine
// and cosine taken in float (within ~1e-7 of the double ones, against ~100
// double instructions for a double sincos of an angle up to T radians).
#pragma once
#include "kiln/common.cuh"

namespace kiln {

// sin and cos of `angle` (radians, in double) in the compute type.
__device__ __forceinline__ void ropeRotation(double angle, float &s, float &c) {
  constexpr double kTwoPi = 6.283185307179586, kInvTwoPi = 0.15915494309189535;
  const double turns = rint(angle * kInvTwoPi);
  sincosf((float)fma(-turns, kTwoPi, angle), &s, &c);
}
__device__ __forceinline__ void ropeRotation(double angle, double &s, double &c) {
  sincos(angle, &s, &c);
}

template <typename T, i64 ROWS, i64 TLEN, i64 D, bool INVERSE, i64 INNER = 1>
__device__ void rope(const T *x, T *y, const double *freq) {
  typedef typename Compute<T>::type F;
  constexpr i64 HALF = D / 2;
  i64 stride = (i64)gridDim.x * blockDim.x;
  for (i64 p = blockIdx.x * (i64)blockDim.x + threadIdx.x; p < ROWS * HALF; p += stride) {
    i64 r = p / HALF, i = p % HALF;
    F s, c;
    ropeRotation((double)((r / INNER) % TLEN) * freq[i], s, c);
    if (INVERSE)
      s = -s;
    F a = (F)load(x, r * D + i), b = (F)load(x, r * D + i + HALF);
    store(y, r * D + i, (F)(a * c - b * s));
    store(y, r * D + i + HALF, (F)(b * c + a * s));
  }
}

} // namespace kiln
