// kiln/attention.cuh — scaled dot-product attention, one block per query
// row: the scores of the row live in shared memory (Tk floats), never in
// global memory. The backward recomputes the row's probabilities from the
// saved log-sum-exp and adds into dk, dv (zeroed first) with atomics.
// Grouped-query heads: query head h reads key/value head h / (H / HKV).
// Segments (`seg`, [B, T] ids, or null): a key of another segment than the
// query's gets probability 0.
// (A straightforward reference kernel; the tiled flash kernels replace it.)
#pragma once
#include "kiln/common.cuh"

namespace kiln {

template <typename T, typename S, i64 B, i64 H, i64 HKV, i64 TQ, i64 TK, i64 D, i64 DV, bool CAUSAL>
__device__ void attentionForward(const T *q, const T *k, const T *v, T *out, S *lse, float scale,
                                 const int *seg = nullptr) {
  typedef typename Compute<T>::type F;
  extern __shared__ unsigned char smem[];
  F *p = reinterpret_cast<F *>(smem);
  __shared__ F red[32];
  for (i64 row = blockIdx.x; row < B * H * TQ; row += gridDim.x) {
    i64 bh = row / TQ, i = row % TQ, b = bh / H, h = bh % H;
    i64 kvh = b * HKV + h / (H / HKV);
    const T *qi = q + row * D, *k0 = k + kvh * TK * D, *v0 = v + kvh * TK * DV;
    i64 n = CAUSAL ? i + 1 : TK;
    F m = negInf<F>();
    for (i64 j = threadIdx.x; j < n; j += blockDim.x) {
      F dot = 0;
      for (i64 c = 0; c < D; ++c)
        dot += (F)load(qi, c) * (F)load(k0, j * D + c);
      p[j] = seg && seg[b * TK + j] != seg[b * TK + i] ? negInf<F>() : dot * F(scale);
      m = fmax(m, p[j]);
    }
    m = blockMax(m, red);
    F s = 0;
    for (i64 j = threadIdx.x; j < n; j += blockDim.x) {
      p[j] = exp(p[j] - m);
      s += p[j];
    }
    s = blockSum(s, red); // also orders the writes of p before the reads below
    for (i64 c = threadIdx.x; c < DV; c += blockDim.x) {
      F acc = 0;
      for (i64 j = 0; j < n; ++j)
        acc += p[j] * (F)load(v0, j * DV + c);
      store(out, row * DV + c, acc / s);
    }
    if (threadIdx.x == 0)
      store(lse, row, m + log(s));
    __syncthreads();
  }
}

template <typename T, typename S, i64 B, i64 H, i64 HKV, i64 TQ, i64 TK, i64 D, i64 DV, bool CAUSAL>
__device__ void attentionBackward(const T *q, const T *k, const T *v, const T *out, const S *lse,
                                  const T *dout, T *dq, T *dk, T *dv, float scale,
                                  const int *seg = nullptr) {
  typedef typename Compute<T>::type F;
  extern __shared__ unsigned char smem[];
  F *p = reinterpret_cast<F *>(smem), *ds = p + TK;
  __shared__ F red[32];
  for (i64 row = blockIdx.x; row < B * H * TQ; row += gridDim.x) {
    i64 bh = row / TQ, i = row % TQ, b = bh / H, h = bh % H;
    i64 kvh = b * HKV + h / (H / HKV);
    const T *qi = q + row * D, *k0 = k + kvh * TK * D, *v0 = v + kvh * TK * DV;
    const T *doi = dout + row * DV, *oi = out + row * DV;
    i64 n = CAUSAL ? i + 1 : TK;
    F rowLse = (F)lse[row];
    F delta = 0; // rowsum(dout ⊙ out)
    for (i64 c = threadIdx.x; c < DV; c += blockDim.x)
      delta += (F)load(doi, c) * (F)load(oi, c);
    delta = blockSum(delta, red);
    for (i64 j = threadIdx.x; j < n; j += blockDim.x) {
      F dot = 0, dp = 0;
      for (i64 c = 0; c < D; ++c)
        dot += (F)load(qi, c) * (F)load(k0, j * D + c);
      for (i64 c = 0; c < DV; ++c)
        dp += (F)load(doi, c) * (F)load(v0, j * DV + c);
      p[j] = seg && seg[b * TK + j] != seg[b * TK + i] ? F(0) : exp(dot * F(scale) - rowLse);
      ds[j] = p[j] * (dp - delta) * F(scale);
    }
    __syncthreads();
    for (i64 c = threadIdx.x; c < D; c += blockDim.x) {
      F acc = 0;
      for (i64 j = 0; j < n; ++j)
        acc += ds[j] * (F)load(k0, j * D + c);
      store(dq, row * D + c, acc);
    }
    for (i64 e = threadIdx.x; e < n * D; e += blockDim.x) {
      i64 j = e / D, c = e % D;
      atomicAdd(dk + kvh * TK * D + j * D + c, (T)(ds[j] * (F)load(qi, c)));
    }
    for (i64 e = threadIdx.x; e < n * DV; e += blockDim.x) {
      i64 j = e / DV, c = e % DV;
      atomicAdd(dv + kvh * TK * DV + j * DV + c, (T)(p[j] * (F)load(doi, c)));
    }
    __syncthreads();
  }
}

} // namespace kiln
