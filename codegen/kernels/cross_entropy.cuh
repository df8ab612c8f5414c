// kiln/cross_entropy.cuh — softmax cross-entropy, one block per row of V
// logits. The forward keeps the log-sum-exp; the backward recomputes the
// probabilities from it (never stored): dlogits = dloss·(softmax − onehot).
// Classes at or past VALID (vocabulary padding) take no part and get zero
// gradient; a negative target is an ignored position (loss 0, no gradient);
// a target at or past VALID sets kErrorBadTarget in *error and counts as
// ignored.
//
// The *Vec forms read rows of whole 16-byte vectors (V a multiple of W, the
// elements per vector): the forward in one pass with an online maximum (a
// running sum rescaled when the maximum grows), the backward a vector at a
// time.
#pragma once
#include "kiln/common.cuh"

namespace kiln {

// Row r's target, -1 when ignored; one past VALID is flagged in *error (by
// the thread that `reports`) and ignored.
template <i64 VALID, typename I>
__device__ __forceinline__ i64 targetOf(const I *targets, i64 r, unsigned *error, bool reports) {
  i64 t = (i64)targets[r];
  if (t >= VALID) {
    if (reports)
      atomicOr(error, kErrorBadTarget);
    t = -1;
  }
  return t;
}

// The end of row r, once its log-sum-exp is known: lse and the loss at the
// target (0 for an ignored one).
template <i64 VALID, typename T, typename S, typename I, typename F>
__device__ void crossEntropyRowEnd(const T *row, const I *targets, S *loss, S *lse,
                                   unsigned *error, i64 r, F rowLse) {
  i64 t = targetOf<VALID>(targets, r, error, true);
  store(lse, r, rowLse);
  store(loss, r, t < 0 ? F(0) : rowLse - (F)load(row, t));
}

template <typename T, typename S, typename I, i64 ROWS, i64 V, i64 VALID>
__device__ void crossEntropyForward(const T *logits, const I *targets, S *loss, S *lse,
                                    unsigned *error) {
  typedef typename Compute<T>::type F;
  __shared__ F shared[32];
  for (i64 r = blockIdx.x; r < ROWS; r += gridDim.x) {
    const T *l = logits + r * V;
    F m = negInf<F>();
    for (i64 c = threadIdx.x; c < VALID; c += blockDim.x)
      m = fmax(m, (F)load(l, c));
    m = blockMax(m, shared);
    F s = 0;
    for (i64 c = threadIdx.x; c < VALID; c += blockDim.x)
      s += exp((F)load(l, c) - m);
    s = blockSum(s, shared);
    if (threadIdx.x == 0)
      crossEntropyRowEnd<VALID>(l, targets, loss, lse, error, r, m + log(s));
  }
}

template <typename T, typename S, typename I, i64 ROWS, i64 V, i64 VALID>
__device__ void crossEntropyBackward(const T *logits, const I *targets, const S *lse,
                                     const S *dloss, T *dlogits, unsigned *error) {
  typedef typename Compute<T>::type F;
  for (i64 r = blockIdx.x; r < ROWS; r += gridDim.x) {
    i64 t = targetOf<VALID>(targets, r, error, threadIdx.x == 0);
    F g = t < 0 ? F(0) : (F)dloss[r], rowLse = (F)lse[r];
    for (i64 c = threadIdx.x; c < V; c += blockDim.x) {
      F d = c < VALID && t >= 0 ? g * (exp((F)load(logits, r * V + c) - rowLse) - F(c == t)) : F(0);
      store(dlogits, r * V + c, d);
    }
  }
}

template <typename T, typename S, typename I, i64 ROWS, i64 V, i64 VALID, int W>
__device__ void crossEntropyForwardVec(const T *logits, const I *targets, S *loss, S *lse,
                                       unsigned *error) {
  typedef typename Compute<T>::type F;
  static_assert(V % W == 0, "rows are whole vectors");
  constexpr i64 NV = CEIL_DIV(VALID, W); // vectors holding a valid class
  __shared__ F shared[32];
  for (i64 r = blockIdx.x; r < ROWS; r += gridDim.x) {
    const T *l = logits + r * V;
    F m = negInf<F>(), s = 0;
    for (i64 v = threadIdx.x; v < NV; v += blockDim.x) {
      T a[W];
      loadVec<W>(l, v, a);
      F x[W], top = negInf<F>();
#pragma unroll
      for (int k = 0; k < W; ++k) {
        x[k] = v * W + k < VALID ? (F)load(a, k) : negInf<F>();
        top = fmax(top, x[k]);
      }
      if (top > m) {
        s *= exp(m - top);
        m = top;
      }
#pragma unroll
      for (int k = 0; k < W; ++k)
        s += exp(x[k] - m);
    }
    F rowMax = blockMax(m, shared);
    s = m == negInf<F>() ? F(0) : s * exp(m - rowMax);
    s = blockSum(s, shared);
    if (threadIdx.x == 0)
      crossEntropyRowEnd<VALID>(l, targets, loss, lse, error, r, rowMax + log(s));
  }
}

template <typename T, typename S, typename I, i64 ROWS, i64 V, i64 VALID, int W>
__device__ void crossEntropyBackwardVec(const T *logits, const I *targets, const S *lse,
                                        const S *dloss, T *dlogits, unsigned *error) {
  typedef typename Compute<T>::type F;
  static_assert(V % W == 0, "rows are whole vectors");
  for (i64 r = blockIdx.x; r < ROWS; r += gridDim.x) {
    i64 t = targetOf<VALID>(targets, r, error, threadIdx.x == 0);
    F g = t < 0 ? F(0) : (F)dloss[r], rowLse = (F)lse[r];
    for (i64 v = threadIdx.x; v < V / W; v += blockDim.x) {
      T a[W];
      loadVec<W>(logits + r * V, v, a);
#pragma unroll
      for (int k = 0; k < W; ++k) {
        i64 c = v * W + k;
        store(a, k, c < VALID && t >= 0 ? g * (exp((F)load(a, k) - rowLse) - F(c == t)) : F(0));
      }
      storeVec<W>(dlogits + r * V, v, a);
    }
  }
}

// A cross-entropy fusion (kiln-fuse): the forward and the gradient of each
// row in one block, the gradient written right after the row's
// log-sum-exp while the row is still in L2. dlogits may be logits itself
// (written in place): the target's logit is taken in the first pass, and
// each element is read before it is overwritten, by the same thread. lse
// may be null (not wanted).
//
// The kernel is bound by its instructions, not by memory (Nsight Compute
// on GPT-2's: the SMs 81 % busy, 0.81 instructions issued a cycle per
// scheduler, DRAM 62 %), so it spends few a element: the exponentials are
// base 2 on one MUFU instruction each (exp2Approx; log2 e folded into an
// FMA with the row's scaled maximum), the valid-class boundary and the
// target are checked only where they can be (the vectors before
// VALID / W hold valid classes only; the target's element is corrected
// once, by the thread that wrote it), an ignored row skips the
// exponentials, and the gradient is rounded two elements at a time.
template <typename T, typename S, typename I, i64 ROWS, i64 V, i64 VALID, int W>
__device__ void crossEntropyFusedVec(const T *logits, const I *targets, const S *dloss, S *loss,
                                     S *lse, T *dlogits, unsigned *error) {
  typedef typename Compute<T>::type F;
  static_assert(V % W == 0, "rows are whole vectors");
  constexpr i64 FULL = VALID / W;        // vectors of valid classes only
  constexpr i64 NV = CEIL_DIV(VALID, W); // vectors holding a valid class
  const F log2e = F(1.4426950408889634), ln2 = F(0.6931471805599453);
  __shared__ F shared[32];
  __shared__ F targetLogit;
  for (i64 r = blockIdx.x; r < ROWS; r += gridDim.x) {
    const T *l = logits + r * V;
    const i64 t = targetOf<VALID>(targets, r, error, threadIdx.x == 0);
    // Pass 1: an online maximum m of the logits and the sum of
    // 2^((x − m)·log2 e).
    F m = negInf<F>(), s = 0;
    for (i64 v = threadIdx.x; v < NV; v += blockDim.x) {
      alignas(16) T a[W];
      loadVec<W>(l, v, a);
      F x[W], top = negInf<F>();
#pragma unroll
      for (int k = 0; k < W; ++k) {
        x[k] = (F)load(a, k);
        if (v >= FULL && v * W + k >= VALID)
          x[k] = negInf<F>();
        top = fmax(top, x[k]);
      }
      if (t / W == v && t >= 0)
#pragma unroll
        for (int k = 0; k < W; ++k) // (a constant index keeps `a` in registers)
          if (k == t % W)
            targetLogit = (F)load(a, k);
      if (top > m) {
        s *= exp2Approx((m - top) * log2e);
        m = top;
      }
      const F mb = m * log2e;
#pragma unroll
      for (int k = 0; k < W; ++k)
        s += exp2Approx(fma(x[k], log2e, -mb));
    }
    F rowMax = blockMax(m, shared); // (its barriers publish targetLogit)
    s = m == negInf<F>() ? F(0) : s * exp2Approx((m - rowMax) * log2e);
    const F lse2 = rowMax * log2e + log2(blockSum(s, shared)), rowLse = lse2 * ln2;
    if (threadIdx.x == 0) {
      if (lse)
        store(lse, r, rowLse);
      store(loss, r, t < 0 ? F(0) : rowLse - targetLogit);
    }
    // Pass 2: dloss · (2^(x·log2 e − lse₂) − onehot), zero past VALID and
    // for an ignored row (a hard zero, as the unfused kernel writes: an
    // ignored row's logits may be inf).
    const bool ignored = t < 0;
    const F g = ignored ? F(0) : (F)dloss[r];
    for (i64 v = threadIdx.x; v < V / W; v += blockDim.x) {
      alignas(16) T a[W];
      F d[W];
      if (ignored) {
#pragma unroll
        for (int k = 0; k < W; ++k)
          d[k] = 0;
      } else {
        loadVec<W>(l, v, a);
#pragma unroll
        for (int k = 0; k < W; ++k)
          d[k] = g * exp2Approx(fma((F)load(a, k), log2e, -lse2));
      }
      if (v >= FULL) {
#pragma unroll
        for (int k = 0; k < W; ++k)
          if (v * W + k >= VALID)
            d[k] = 0;
      }
      if (t / W == v && t >= 0)
#pragma unroll
        for (int k = 0; k < W; ++k)
          if (k == t % W)
            d[k] -= g;
      storeRounded<W>(d, a);
      storeVec<W>(dlogits + r * V, v, a);
    }
    __syncthreads(); // targetLogit is rewritten by the next row
  }
}

} // namespace kiln
