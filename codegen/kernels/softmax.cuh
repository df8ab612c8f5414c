// kiln/softmax.cuh — softmax, log-softmax and the softmax backward over the
// last dimension, one warp per row.
#pragma once
#include "kiln/common.cuh"

namespace kiln {

template <typename T, i64 ROWS, i64 N, bool LOG>
__device__ void softmaxForward(const T *x, T *y) {
  typedef typename Compute<T>::type F;
  i64 warps = (i64)gridDim.x * (blockDim.x / 32);
  int lane = threadIdx.x % 32;
  for (i64 r = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32; r < ROWS; r += warps) {
    const T *xr = x + r * N;
    F m = negInf<F>();
    for (i64 j = lane; j < N; j += 32)
      m = fmax(m, (F)load(xr, j));
    m = warpMax(m);
    F s = 0;
    for (i64 j = lane; j < N; j += 32)
      s += exp((F)load(xr, j) - m);
    s = warpSum(s);
    F logS = log(s), inv = F(1) / s;
    for (i64 j = lane; j < N; j += 32) {
      F v = (F)load(xr, j) - m;
      store(y + r * N, j, LOG ? v - logS : exp(v) * inv);
    }
  }
}

// dx = y · (dy − Σ dy·y)
template <typename T, i64 ROWS, i64 N>
__device__ void softmaxBackward(const T *y, const T *dy, T *dx) {
  typedef typename Compute<T>::type F;
  i64 warps = (i64)gridDim.x * (blockDim.x / 32);
  int lane = threadIdx.x % 32;
  for (i64 r = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32; r < ROWS; r += warps) {
    F dot = 0;
    for (i64 j = lane; j < N; j += 32)
      dot += (F)load(y, r * N + j) * (F)load(dy, r * N + j);
    dot = warpSum(dot);
    for (i64 j = lane; j < N; j += 32)
      store(dx, r * N + j, (F)load(y, r * N + j) * ((F)load(dy, r * N + j) - dot));
  }
}

} // namespace kiln
