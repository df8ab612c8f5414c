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
  i64 copy;              ///< the working copy's offset, or -1 for none
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
// One element's update (f = the update's compute type).
template <typename F>
__device__ __forceinline__ void adamwElement(F &p, F grad, F &m, F &v, F b1, F b2, F c1, F c2, F eps,
                                             F lr, F decay) {
  const F one = 1;
  m = b1 * m + (one - b1) * grad;
  v = b2 * v + (one - b2) * grad * grad;
  F update = (m / c1) / (sqrt(v / c2) + eps);
  p = p * (one - lr * decay) - lr * update;
}

// V new parameter values converted to the working copy's type C, as
// kiln.cast rounds them: one store of V·sizeof(C) bytes (8 or 16) when it
// is whole 8-byte words.
template <int V, typename C, typename P>
__device__ __forceinline__ void storeCopy(C *c, i64 i, const P (&pv)[V]) {
  alignas(16) C cv[V];
#pragma unroll
  for (int k = 0; k < V; ++k)
    store(cv, k, load(pv, k));
  if constexpr (V * sizeof(C) % 16 == 0) {
    storeVec<V>(c, i / V, cv);
  } else if constexpr (V * sizeof(C) % 8 == 0) {
#pragma unroll
    for (int j = 0; j < (int)(V * sizeof(C) / 8); ++j)
      reinterpret_cast<uint2 *>(c + i)[j] = reinterpret_cast<const uint2 *>(cv)[j];
  } else {
#pragma unroll
    for (int k = 0; k < V; ++k)
      c[i + k] = cv[k];
  }
}

// Elements [begin, end) of one tensor: 16-byte vectors of every operand
// (V elements of the narrowest type) when its offsets and `begin` allow,
// the rest one element at a time; the same arithmetic either way. With a
// working copy (t.copy >= 0) the new parameter is also written converted
// to C.
template <typename P, typename G, typename M, typename C>
__device__ void adamwChunk(char *arena, const AdamTensor &t, i64 begin, i64 end, float lr,
                           float step, float gradScale) {
  typedef typename Compute<P>::type PF;
  typedef typename Compute<M>::type MF;
  typedef decltype(PF(0) + MF(0)) F;
  P *p = reinterpret_cast<P *>(arena + t.param);
  const G *g = reinterpret_cast<const G *>(arena + t.grad);
  M *m = reinterpret_cast<M *>(arena + t.m), *v = reinterpret_cast<M *>(arena + t.v);
  C *copy = t.copy < 0 ? nullptr : reinterpret_cast<C *>(arena + t.copy);
  const F b1 = t.beta1, b2 = t.beta2, one = 1;
  const F c1 = one - pow(b1, F(step)), c2 = one - pow(b2, F(step));
  const F eps = t.eps, lrF = lr, decay = t.weightDecay, scale = gradScale;
  constexpr int NARROW = sizeof(P) < sizeof(G) ? (sizeof(P) < sizeof(M) ? sizeof(P) : sizeof(M))
                                               : (sizeof(G) < sizeof(M) ? sizeof(G) : sizeof(M));
  constexpr int V = 16 / NARROW;
  i64 vecEnd = begin;
  if ((t.param | t.grad | t.m | t.v | (copy ? t.copy : 0)) % 16 == 0 && begin % V == 0) {
    vecEnd = begin + (end - begin) / V * V;
    for (i64 i = begin + (i64)threadIdx.x * V; i < vecEnd; i += (i64)blockDim.x * V) {
      alignas(16) P pv[V];
      alignas(16) G gv[V];
      alignas(16) M mv[V], vv[V];
      loadVec<V>(p, i / V, pv);
      loadVec<V>(g, i / V, gv);
      loadVec<V>(m, i / V, mv);
      loadVec<V>(v, i / V, vv);
#pragma unroll
      for (int k = 0; k < V; ++k) {
        F pk = F(load(pv, k)), mk = F(load(mv, k)), vk = F(load(vv, k));
        adamwElement(pk, F(load(gv, k)) * scale, mk, vk, b1, b2, c1, c2, eps, lrF, decay);
        store(pv, k, pk);
        store(mv, k, mk);
        store(vv, k, vk);
      }
      storeVec<V>(p, i / V, pv);
      storeVec<V>(m, i / V, mv);
      storeVec<V>(v, i / V, vv);
      if (copy)
        storeCopy<V>(copy, i, pv);
    }
  }
  for (i64 i = vecEnd + threadIdx.x; i < end; i += blockDim.x) {
    F pk = F(load(p, i)), mk = F(load(m, i)), vk = F(load(v, i));
    adamwElement(pk, F(load(g, i)) * scale, mk, vk, b1, b2, c1, c2, eps, lrF, decay);
    store(p, i, pk);
    store(m, i, mk);
    store(v, i, vk);
    if (copy)
      store(copy, i, load(p, i));
  }
}

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
