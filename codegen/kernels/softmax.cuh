// kiln/softmax.cuh — softmax, log-softmax and the softmax backward over the
// last dimension, one warp per row. Rows of N = 32·V·CHUNKS elements (V per
// 16-byte vector) take the register path: each lane loads its CHUNKS
// vectors once, so the row is read from memory once and written once; other
// rows loop over memory (three reads).
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

// The register path of softmaxForward: lane l holds vectors l, l+32, ...
template <typename T, i64 ROWS, i64 N, bool LOG, int V>
__device__ void softmaxForwardVec(const T *x, T *y) {
  typedef typename Compute<T>::type F;
  constexpr int CHUNKS = N / (32 * V);
  static_assert(CHUNKS * 32 * V == N, "a row is whole vectors for every lane");
  i64 warps = (i64)gridDim.x * (blockDim.x / 32);
  int lane = threadIdx.x % 32;
  for (i64 r = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32; r < ROWS; r += warps) {
    F v[CHUNKS][V];
    F m = negInf<F>();
#pragma unroll
    for (int c = 0; c < CHUNKS; ++c) {
      T a[V];
      loadVec<V>(x + r * N, c * 32 + lane, a);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        v[c][k] = (F)load(a, k);
        m = fmax(m, v[c][k]);
      }
    }
    m = warpMax(m);
    F s = 0;
#pragma unroll
    for (int c = 0; c < CHUNKS; ++c)
#pragma unroll
      for (int k = 0; k < V; ++k) {
        v[c][k] -= m;
        s += exp(v[c][k]);
      }
    s = warpSum(s);
    F logS = log(s), inv = F(1) / s;
#pragma unroll
    for (int c = 0; c < CHUNKS; ++c) {
      T a[V];
#pragma unroll
      for (int k = 0; k < V; ++k)
        store(a, k, LOG ? v[c][k] - logS : exp(v[c][k]) * inv);
      storeVec<V>(y + r * N, c * 32 + lane, a);
    }
  }
}

// The register path of softmaxBackward.
template <typename T, i64 ROWS, i64 N, int V>
__device__ void softmaxBackwardVec(const T *y, const T *dy, T *dx) {
  typedef typename Compute<T>::type F;
  constexpr int CHUNKS = N / (32 * V);
  static_assert(CHUNKS * 32 * V == N, "a row is whole vectors for every lane");
  i64 warps = (i64)gridDim.x * (blockDim.x / 32);
  int lane = threadIdx.x % 32;
  for (i64 r = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32; r < ROWS; r += warps) {
    F yv[CHUNKS][V], gv[CHUNKS][V];
    F dot = 0;
#pragma unroll
    for (int c = 0; c < CHUNKS; ++c) {
      T a[V], b[V];
      loadVec<V>(y + r * N, c * 32 + lane, a);
      loadVec<V>(dy + r * N, c * 32 + lane, b);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        yv[c][k] = (F)load(a, k);
        gv[c][k] = (F)load(b, k);
        dot += yv[c][k] * gv[c][k];
      }
    }
    dot = warpSum(dot);
#pragma unroll
    for (int c = 0; c < CHUNKS; ++c) {
      T a[V];
#pragma unroll
      for (int k = 0; k < V; ++k)
        store(a, k, yv[c][k] * (gv[c][k] - dot));
      storeVec<V>(dx + r * N, c * 32 + lane, a);
    }
  }
}

} // namespace kiln
