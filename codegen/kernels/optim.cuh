// kiln/optim.cuh — AdamW over every parameter in one launch, and the global
// gradient norm, both "multi-tensor": a table of chunks (tensor, first
// element) assigns each block one piece of one tensor. Offsets are into the
// arena, whose base the kernels receive.
#pragma once
#include "kiln/common.cuh"

namespace kiln {

struct AdamTensor {
  i64 param, grad, m, v; ///< arena offsets
  i64 size;
  float beta1, beta2, eps, weightDecay;
};

struct Chunk {
  int tensor;
  i64 begin, end;
};

/// One AdamW step of the chunk's elements (see kiln.adamw_update).
/// Computes in double when the parameter or its moments are f64 (as the CPU
/// interpreter always does), else in float.
template <typename P, typename G, typename M>
__device__ void adamwChunk(char *arena, const AdamTensor &t, i64 begin, i64 end, float lr,
                           float step, float gradScale) {
  typedef typename Compute<P>::type PF;
  typedef typename Compute<M>::type MF;
  typedef decltype(PF(0) + MF(0)) F;
  P *p = reinterpret_cast<P *>(arena + t.param);
  const G *g = reinterpret_cast<const G *>(arena + t.grad);
  M *m = reinterpret_cast<M *>(arena + t.m), *v = reinterpret_cast<M *>(arena + t.v);
  const F b1 = t.beta1, b2 = t.beta2, one = 1;
  const F c1 = one - pow(b1, F(step)), c2 = one - pow(b2, F(step));
  for (i64 i = begin + threadIdx.x; i < end; i += blockDim.x) {
    F grad = F(load(g, i)) * F(gradScale);
    F mi = b1 * F(load(m, i)) + (one - b1) * grad;
    F vi = b2 * F(load(v, i)) + (one - b2) * grad * grad;
    F update = (mi / c1) / (sqrt(vi / c2) + F(t.eps));
    store(p, i, F(load(p, i)) * (one - F(lr) * F(t.weightDecay)) - F(lr) * update);
    store(m, i, mi);
    store(v, i, vi);
  }
}

/// Σ x² over the chunk into partial[blockIdx.x], accumulated in A (double
/// for f64 inputs, else float).
template <typename T, typename A>
__device__ void sumSquaresChunk(const char *arena, i64 offset, i64 begin, i64 end, A *partial) {
  __shared__ A red[32];
  const T *x = reinterpret_cast<const T *>(arena + offset);
  A s = 0;
  for (i64 i = begin + threadIdx.x; i < end; i += blockDim.x) {
    A v = load(x, i);
    s += v * v;
  }
  s = blockSum(s, red);
  if (threadIdx.x == 0)
    partial[blockIdx.x] = s;
}

/// out = sqrt(Σ partial), one block.
template <typename S, typename A, i64 N> __device__ void sqrtOfSum(const A *partial, S *out) {
  __shared__ A red[32];
  A s = 0;
  for (i64 i = threadIdx.x; i < N; i += blockDim.x)
    s += partial[i];
  s = blockSum(s, red);
  if (threadIdx.x == 0)
    store(out, 0, sqrt(s));
}

} // namespace kiln
