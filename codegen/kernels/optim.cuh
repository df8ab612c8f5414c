// kiln/optim.cuh — AdamW over every parameter in one launch, the casts of
// the step's parameters to the low type in one launch, and the global
// gradient norm, all "multi-tensor": a table of chunks (tensor, first
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

/// A cast of one tensor in a multi-tensor cast launch (arena offsets).
struct CastTensor {
  i64 src, dst, size;
};

/// dst[i] = src[i] converted (rounded to nearest even, as kiln.cast) over
/// the chunk's elements: 8 a thread at a time with 16-byte accesses when
/// both tensors are 16-byte aligned (chunks start at multiples of 8
/// elements), the rest one by one. S and D are 2 or 4 bytes wide.
template <typename S, typename D>
__device__ void castChunk(char *arena, const CastTensor &t, i64 begin, i64 end) {
  const S *src = reinterpret_cast<const S *>(arena + t.src);
  D *dst = reinterpret_cast<D *>(arena + t.dst);
  constexpr int V = 8;
  static_assert(V * sizeof(S) % 16 == 0 && V * sizeof(D) % 16 == 0, "16-byte vectors");
  i64 vecEnd = begin;
  if (t.src % 16 == 0 && t.dst % 16 == 0 && begin % V == 0) {
    vecEnd = begin + (end - begin) / V * V;
    for (i64 i = begin + (i64)threadIdx.x * V; i < vecEnd; i += (i64)blockDim.x * V) {
      uint4 in[V * sizeof(S) / 16], out[V * sizeof(D) / 16];
#pragma unroll
      for (int k = 0; k < (int)(V * sizeof(S) / 16); ++k)
        in[k] = reinterpret_cast<const uint4 *>(src + i)[k];
      const S *x = reinterpret_cast<const S *>(in);
      D *y = reinterpret_cast<D *>(out);
#pragma unroll
      for (int k = 0; k < V; ++k)
        store(y, k, load(x, k));
#pragma unroll
      for (int k = 0; k < (int)(V * sizeof(D) / 16); ++k)
        reinterpret_cast<uint4 *>(dst + i)[k] = out[k];
    }
  }
  for (i64 i = vecEnd + threadIdx.x; i < end; i += blockDim.x)
    store(dst, i, load(src, i));
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
