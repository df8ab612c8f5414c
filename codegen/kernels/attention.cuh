// kiln/attention.cuh — scaled dot-product attention, one block per query
// row: the scores of the row live in shared memory (Tk floats), never in
// global memory. The backward recomputes the row's probabilities from the
// saved log-sum-exp and adds into dk, dv (zeroed first) with atomics.
// Grouped-query heads: query head h reads key/value head h / (H / HKV).
// Segments (`seg`, [B, T] ids, or null): a key of another segment than the
// query's gets probability 0.
// With BTHD, q, k, v, out and the gradients are [B, T, H, D] (sequence-
// major) instead of [B, H, T, D]; lse is [B, H, TQ] either way. With
// PACK = 3 too, q, k and v (and dq, dk, dv) are parts of one
// [B, T, H, 3, D] tensor (kiln.attention_qkv): rows 3·H·D apart.
// (A straightforward reference kernel; the tiled flash kernels replace it.)
#pragma once
#include "kiln/common.cuh"

namespace kiln {

// Element offset of row t of head h of batch b, D elements a row, in a
// [B, HEADS, T, D] tensor or, with BTHD, a [B, T, HEADS, PACK·D] one.
template <i64 HEADS, i64 T, i64 D, bool BTHD, int PACK = 1>
__device__ __forceinline__ i64 headRow(i64 b, i64 h, i64 t) {
  return BTHD ? ((b * T + t) * HEADS + h) * (PACK * D) : ((b * HEADS + h) * T + t) * D;
}

template <typename T, typename S, i64 B, i64 H, i64 HKV, i64 TQ, i64 TK, i64 D, i64 DV, bool CAUSAL,
          bool BTHD = false, int PACK = 1>
__device__ void attentionForward(const T *q, const T *k, const T *v, T *out, S *lse, float scale,
                                 const int *seg = nullptr) {
  typedef typename Compute<T>::type F;
  extern __shared__ unsigned char smem[];
  F *p = reinterpret_cast<F *>(smem);
  __shared__ F red[32];
  for (i64 row = blockIdx.x; row < B * H * TQ; row += gridDim.x) {
    i64 bh = row / TQ, i = row % TQ, b = bh / H, h = bh % H;
    i64 kh = h / (H / HKV);
    // Key j's row is j·KS (j·VS) elements after key 0's.
    constexpr i64 KS = BTHD ? HKV * D * PACK : D, VS = BTHD ? HKV * DV * PACK : DV;
    const T *qi = q + headRow<H, TQ, D, BTHD, PACK>(b, h, i),
            *k0 = k + headRow<HKV, TK, D, BTHD, PACK>(b, kh, 0),
            *v0 = v + headRow<HKV, TK, DV, BTHD, PACK>(b, kh, 0);
    T *oi = out + headRow<H, TQ, DV, BTHD>(b, h, i);
    i64 n = CAUSAL ? i + 1 : TK;
    F m = negInf<F>();
    for (i64 j = threadIdx.x; j < n; j += blockDim.x) {
      F dot = 0;
      for (i64 c = 0; c < D; ++c)
        dot += (F)load(qi, c) * (F)load(k0, j * KS + c);
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
        acc += p[j] * (F)load(v0, j * VS + c);
      store(oi, c, acc / s);
    }
    if (threadIdx.x == 0)
      store(lse, row, m + log(s));
    __syncthreads();
  }
}

template <typename T, typename S, i64 B, i64 H, i64 HKV, i64 TQ, i64 TK, i64 D, i64 DV, bool CAUSAL,
          bool BTHD = false, int PACK = 1>
__device__ void attentionBackward(const T *q, const T *k, const T *v, const T *out, const S *lse,
                                  const T *dout, T *dq, T *dk, T *dv, float scale,
                                  const int *seg = nullptr) {
  typedef typename Compute<T>::type F;
  extern __shared__ unsigned char smem[];
  F *p = reinterpret_cast<F *>(smem), *ds = p + TK;
  __shared__ F red[32];
  for (i64 row = blockIdx.x; row < B * H * TQ; row += gridDim.x) {
    i64 bh = row / TQ, i = row % TQ, b = bh / H, h = bh % H;
    i64 kh = h / (H / HKV);
    constexpr i64 KS = BTHD ? HKV * D * PACK : D, VS = BTHD ? HKV * DV * PACK : DV;
    const i64 kOff = headRow<HKV, TK, D, BTHD, PACK>(b, kh, 0),
              vOff = headRow<HKV, TK, DV, BTHD, PACK>(b, kh, 0);
    const T *qi = q + headRow<H, TQ, D, BTHD, PACK>(b, h, i), *k0 = k + kOff, *v0 = v + vOff;
    const T *doi = dout + headRow<H, TQ, DV, BTHD>(b, h, i), *oi = out + headRow<H, TQ, DV, BTHD>(b, h, i);
    T *dqi = dq + headRow<H, TQ, D, BTHD, PACK>(b, h, i);
    i64 n = CAUSAL ? i + 1 : TK;
    F rowLse = (F)lse[row];
    F delta = 0; // rowsum(dout ⊙ out)
    for (i64 c = threadIdx.x; c < DV; c += blockDim.x)
      delta += (F)load(doi, c) * (F)load(oi, c);
    delta = blockSum(delta, red);
    for (i64 j = threadIdx.x; j < n; j += blockDim.x) {
      F dot = 0, dp = 0;
      for (i64 c = 0; c < D; ++c)
        dot += (F)load(qi, c) * (F)load(k0, j * KS + c);
      for (i64 c = 0; c < DV; ++c)
        dp += (F)load(doi, c) * (F)load(v0, j * VS + c);
      p[j] = seg && seg[b * TK + j] != seg[b * TK + i] ? F(0) : exp(dot * F(scale) - rowLse);
      ds[j] = p[j] * (dp - delta) * F(scale);
    }
    __syncthreads();
    for (i64 c = threadIdx.x; c < D; c += blockDim.x) {
      F acc = 0;
      for (i64 j = 0; j < n; ++j)
        acc += ds[j] * (F)load(k0, j * KS + c);
      store(dqi, c, acc);
    }
    for (i64 e = threadIdx.x; e < n * D; e += blockDim.x) {
      i64 j = e / D, c = e % D;
      atomicAdd(dk + kOff + j * KS + c, (T)(ds[j] * (F)load(qi, c)));
    }
    for (i64 e = threadIdx.x; e < n * DV; e += blockDim.x) {
      i64 j = e / DV, c = e % DV;
      atomicAdd(dv + vOff + j * VS + c, (T)(p[j] * (F)load(doi, c)));
    }
    __syncthreads();
  }
}

} // namespace kiln
