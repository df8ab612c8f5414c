// kiln/norm.cuh — layer norm and RMS norm over the last dimension (C), one
// warp per row. The backward writes dx per row and each warp's partial sums
// of dweight/dbias to `partial`; a second kernel sums the partials per column
// (no atomics: the result does not depend on scheduling). The backward holds
// a row's x̂ and dy·w in registers between its two passes.
#pragma once
#include "kiln/common.cuh"

namespace kiln {

// y may be narrower than x (bf16/f16 for f32 x): the F result, rounded once.
template <typename T, typename S, i64 ROWS, i64 C, typename Y = T>
__device__ void layerNormForward(const T *x, const T *w, const T *b, Y *y, S *mean, S *rstd, float eps) {
  typedef typename Compute<T>::type F;
  i64 warps = (i64)gridDim.x * (blockDim.x / 32);
  int lane = threadIdx.x % 32;
  for (i64 r = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32; r < ROWS; r += warps) {
    const T *xr = x + r * C;
    F s = 0;
    for (i64 j = lane; j < C; j += 32)
      s += (F)load(xr, j);
    F m = warpSum(s) / F(C);
    F v = 0;
    for (i64 j = lane; j < C; j += 32) {
      F d = (F)load(xr, j) - m;
      v += d * d;
    }
    F rs = F(1) / sqrt(warpSum(v) / F(C) + F(eps));
    for (i64 j = lane; j < C; j += 32)
      store(y + r * C, j, ((F)load(xr, j) - m) * rs * (F)load(w, j) + (F)load(b, j));
    if (lane == 0) {
      store(mean, r, m);
      store(rstd, r, rs);
    }
  }
}

// dx, plus per-warp partials: partial[warp][0..C) = Σ dy·x̂ (dweight) and
// partial[warp][C..2C) = Σ dy (dbias), for the rows that warp handled. dy
// may be narrower than x (bf16/f16 for f32: kiln-fuse's folded widening).
template <typename T, typename S, i64 ROWS, i64 C, typename D>
__device__ void layerNormBackward(const T *x, const T *w, const S *mean, const S *rstd, const D *dy,
                                  T *dx, typename Compute<T>::type *partial) {
  typedef typename Compute<T>::type F;
  constexpr int PER_LANE = CEIL_DIV(C, 32);
  int lane = threadIdx.x % 32;
  i64 warpId = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32;
  i64 warps = (i64)gridDim.x * (blockDim.x / 32);
  F dw[PER_LANE], db[PER_LANE];
#pragma unroll
  for (int k = 0; k < PER_LANE; ++k)
    dw[k] = db[k] = 0;
  for (i64 r = warpId; r < ROWS; r += warps) {
    F m = (F)mean[r], rs = (F)rstd[r];
    F sumG = 0, sumGX = 0, xhat[PER_LANE], g[PER_LANE];
#pragma unroll
    for (int k = 0; k < PER_LANE; ++k) {
      i64 j = lane + 32 * k;
      xhat[k] = g[k] = 0;
      if (j < C) {
        F d = (F)load(dy, r * C + j);
        xhat[k] = ((F)load(x, r * C + j) - m) * rs;
        g[k] = d * (F)load(w, j);
        sumG += g[k];
        sumGX += g[k] * xhat[k];
        dw[k] += d * xhat[k];
        db[k] += d;
      }
    }
    F meanG = warpSum(sumG) / F(C), meanGX = warpSum(sumGX) / F(C);
#pragma unroll
    for (int k = 0; k < PER_LANE; ++k) {
      i64 j = lane + 32 * k;
      if (j < C)
        store(dx, r * C + j, rs * (g[k] - meanG - xhat[k] * meanGX));
    }
  }
#pragma unroll
  for (int k = 0; k < PER_LANE; ++k) {
    i64 j = lane + 32 * k;
    if (j < C) {
      partial[warpId * 2 * C + j] = dw[k];
      partial[warpId * 2 * C + C + j] = db[k];
    }
  }
}

template <typename T, typename S, i64 ROWS, i64 C, typename Y = T>
__device__ void rmsNormForward(const T *x, const T *w, Y *y, S *rstd, float eps) {
  typedef typename Compute<T>::type F;
  i64 warps = (i64)gridDim.x * (blockDim.x / 32);
  int lane = threadIdx.x % 32;
  for (i64 r = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32; r < ROWS; r += warps) {
    F s = 0;
    for (i64 j = lane; j < C; j += 32) {
      F v = (F)load(x, r * C + j);
      s += v * v;
    }
    F rs = F(1) / sqrt(warpSum(s) / F(C) + F(eps));
    for (i64 j = lane; j < C; j += 32)
      store(y, r * C + j, (F)load(x, r * C + j) * rs * (F)load(w, j));
    if (lane == 0)
      store(rstd, r, rs);
  }
}

// dx, plus per-warp partials of dweight = Σ dy·x̂ in partial[warp][0..C)
// (dy as in layerNormBackward).
template <typename T, typename S, i64 ROWS, i64 C, typename D>
__device__ void rmsNormBackward(const T *x, const T *w, const S *rstd, const D *dy, T *dx,
                                typename Compute<T>::type *partial) {
  typedef typename Compute<T>::type F;
  constexpr int PER_LANE = CEIL_DIV(C, 32);
  int lane = threadIdx.x % 32;
  i64 warpId = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32;
  i64 warps = (i64)gridDim.x * (blockDim.x / 32);
  F dw[PER_LANE];
#pragma unroll
  for (int k = 0; k < PER_LANE; ++k)
    dw[k] = 0;
  for (i64 r = warpId; r < ROWS; r += warps) {
    F rs = (F)rstd[r], sumGX = 0, xhat[PER_LANE], g[PER_LANE];
#pragma unroll
    for (int k = 0; k < PER_LANE; ++k) {
      i64 j = lane + 32 * k;
      xhat[k] = g[k] = 0;
      if (j < C) {
        F d = (F)load(dy, r * C + j);
        xhat[k] = (F)load(x, r * C + j) * rs;
        g[k] = d * (F)load(w, j);
        sumGX += g[k] * xhat[k];
        dw[k] += d * xhat[k];
      }
    }
    F meanGX = warpSum(sumGX) / F(C);
#pragma unroll
    for (int k = 0; k < PER_LANE; ++k) {
      i64 j = lane + 32 * k;
      if (j < C)
        store(dx, r * C + j, rs * (g[k] - xhat[k] * meanGX));
    }
  }
#pragma unroll
  for (int k = 0; k < PER_LANE; ++k) {
    i64 j = lane + 32 * k;
    if (j < C)
      partial[warpId * C + j] = dw[k];
  }
}

// ---- Norm fusions (kiln.fusion bodies holding a norm; codegen's
// emitNormFusion generates the functors) ----
//
// A warp per row, V consecutive elements per lane access (16-byte words):
// vector vi of row r is elements r·C + vi·V … + V−1, global vector index
// r·(C/V) + vi. The row stays in registers between the passes, so a
// fused prologue runs once per element.

// Forward (layer norm when CENTER, else RMS norm): `in(v, x)` computes the
// V norm inputs of global vector v (running the fused elementwise ops and
// storing their side outputs). y may be narrower than F (rounded once);
// mean/rstd may be null (not wanted).
template <typename F, int V, i64 ROWS, i64 C, bool CENTER, typename W, typename Y, typename S, class In>
__device__ void normForwardRows(const In &in, const W *w, const W *b, Y *y, S *mean, S *rstd, float eps) {
  static_assert(C % V == 0, "rows are whole vectors");
  constexpr i64 NV = C / V;
  constexpr int PER = CEIL_DIV(NV, 32);
  i64 warps = (i64)gridDim.x * (blockDim.x / 32);
  int lane = threadIdx.x % 32;
  for (i64 r = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32; r < ROWS; r += warps) {
    F x[PER][V];
    F s = 0;
#pragma unroll
    for (int k = 0; k < PER; ++k) {
      i64 vi = lane + 32 * k;
      if (vi < NV) {
        in(r * NV + vi, x[k]);
#pragma unroll
        for (int t = 0; t < V; ++t)
          s += x[k][t];
      }
    }
    F m = CENTER ? warpSum(s) / F(C) : F(0);
    F q = 0;
#pragma unroll
    for (int k = 0; k < PER; ++k)
      if (lane + 32 * k < NV)
#pragma unroll
        for (int t = 0; t < V; ++t) {
          F d = x[k][t] - m;
          q += d * d;
        }
    F rs = F(1) / sqrt(warpSum(q) / F(C) + F(eps));
#pragma unroll
    for (int k = 0; k < PER; ++k) {
      i64 vi = lane + 32 * k;
      if (vi < NV) {
        alignas(16) W wv[V];
        alignas(16) W bv[V];
        alignas(16) Y out[V];
        loadVec<V>(w, vi, wv);
        if (CENTER)
          loadVec<V>(b, vi, bv);
#pragma unroll
        for (int t = 0; t < V; ++t) {
          F o = (x[k][t] - m) * rs * (F)load(wv, t);
          if (CENTER)
            o += (F)load(bv, t);
          store(out, t, o);
        }
        storeVec<V>(y, r * NV + vi, out);
      }
    }
    if (lane == 0) {
      if (mean)
        store(mean, r, m);
      if (rstd)
        store(rstd, r, rs);
    }
  }
}

// sums[v·V …] += a: a warp's row of column sums in shared memory (its
// lanes own disjoint vectors), one 16-byte word at a time (fewer registers
// live). `a` may be a vector just stored in a narrower type (no copy).
template <int V, typename F, typename A>
__device__ __forceinline__ void addColumns(F *sums, i64 v, const A (&a)[V]) {
  static_assert((V * sizeof(F)) % 16 == 0, "a vector is whole 16-byte words");
  constexpr int E = 16 / sizeof(F);
#pragma unroll
  for (int w = 0; w < V / E; ++w) {
    uint4 *p = reinterpret_cast<uint4 *>(sums + v * V + w * E);
    uint4 word = *p;
    F *s = reinterpret_cast<F *>(&word);
#pragma unroll
    for (int t = 0; t < E; ++t)
      s[t] += (F)load(a, w * E + t);
    *p = word;
  }
}

// Backward: dx per row, handed to `out(v, dx, sums)` (which stores dx and
// the fused elementwise ops' outputs for global vector v, and adds the
// value a fusion sums over its rows into the warp's row `sums` of C in
// shared memory when SUMS), plus partial sums for sumPartialsTo, one row
// of PARTS vectors of C per block: Σ dy·x̂ (dweight), Σ dy (dbias, when
// CENTER), then the fusion's column sum. A block's 8 warps add theirs
// through the dynamic shared memory in a fixed order, so the partials are
// 8× fewer than warps and deterministic. Without a column sum each lane
// keeps its dweight/dbias columns in registers (8·32·V of F shared, to add
// them at the end); with one, every part accumulates in shared memory
// (PARTS·8·C of F: kiln-fuse keeps it within 96 KiB), which leaves the
// registers to the row (GPT-2: 113 registers, none spilled, against 128
// and 56 bytes spilled with the sum in registers too).
template <typename F, int V, i64 ROWS, i64 C, bool CENTER, int SUMS, typename T, typename W, typename S,
          typename D, class Out>
__device__ void normBackwardRows(const T *x, const W *w, const S *mean, const S *rstd, const D *dy,
                                 const Out &out, F *partial) {
  static_assert(C % V == 0, "rows are whole vectors");
  static_assert(SUMS == 0 || SUMS == 1, "a norm gradient's kernel accumulates at most one column sum");
  constexpr i64 NV = C / V;
  constexpr int PER = CEIL_DIV(NV, 32);
  constexpr int PARTS = (CENTER ? 2 : 1) + SUMS;
  constexpr bool SHARED = SUMS > 0;
  constexpr int WARPS = 8; // blockDim.x == 256
  extern __shared__ __align__(16) unsigned char normShared[];
  // [PARTS][WARPS][C] when SHARED, else [WARPS][32·V] to add the registers'.
  F *red = reinterpret_cast<F *>(normShared);
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  i64 warpId = blockIdx.x * (i64)WARPS + warp;
  i64 warps = (i64)gridDim.x * WARPS;
  auto rowOf = [&](int part) { return red + ((i64)part * WARPS + warp) * C; };
  F *sums = SUMS ? rowOf(PARTS - 1) : nullptr;
  if (SHARED) {
    for (int part = 0; part < PARTS; ++part)
      for (i64 j = lane; j < C; j += 32)
        rowOf(part)[j] = 0;
    __syncwarp();
  }
  alignas(16) F dw[SHARED ? 1 : PER][V];
  alignas(16) F db[SHARED ? 1 : PER][V];
  if (!SHARED)
#pragma unroll
    for (int k = 0; k < PER; ++k)
#pragma unroll
      for (int t = 0; t < V; ++t)
        dw[k][t] = db[k][t] = 0;
  for (i64 r = warpId; r < ROWS; r += warps) {
    F m = CENTER ? (F)mean[r] : F(0), rs = (F)rstd[r];
    F sumG = 0, sumGX = 0, xhat[PER][V], g[PER][V];
#pragma unroll
    for (int k = 0; k < PER; ++k) {
      i64 vi = lane + 32 * k;
      if (vi < NV) {
        alignas(16) T xv[V];
        alignas(16) D dv[V];
        alignas(16) W wv[V];
        loadVec<V>(x, r * NV + vi, xv);
        loadVec<V>(dy, r * NV + vi, dv);
        loadVec<V>(w, vi, wv);
        // What the functor reads after dx (the residual gradient it adds),
        // on its way to L2 while the row's sums are taken.
        out.prefetch(r * NV + vi);
        F pw[V], pb[V];
#pragma unroll
        for (int t = 0; t < V; ++t) {
          F d = (F)load(dv, t);
          xhat[k][t] = ((F)load(xv, t) - m) * rs;
          g[k][t] = d * (F)load(wv, t);
          sumG += g[k][t];
          sumGX += g[k][t] * xhat[k][t];
          if (SHARED) {
            pw[t] = d * xhat[k][t];
            pb[t] = d;
          } else {
            dw[SHARED ? 0 : k][t] += d * xhat[k][t];
            db[SHARED ? 0 : k][t] += d;
          }
        }
        if (SHARED) {
          addColumns<V>(rowOf(0), vi, pw);
          if (CENTER)
            addColumns<V>(rowOf(1), vi, pb);
        }
      }
    }
    F meanG = CENTER ? warpSum(sumG) / F(C) : F(0), meanGX = warpSum(sumGX) / F(C);
#pragma unroll
    for (int k = 0; k < PER; ++k) {
      i64 vi = lane + 32 * k;
      if (vi < NV) {
        F dx[V];
#pragma unroll
        for (int t = 0; t < V; ++t)
          dx[t] = rs * (g[k][t] - meanG - xhat[k][t] * meanGX);
        out(r * NV + vi, dx, sums);
      }
    }
  }
  // The block's partials, each part's warps' rows added in order.
  F *row = partial + blockIdx.x * (i64)PARTS * C;
  auto reduceBlock = [&](int part, const F *rows) {
    __syncthreads();
    for (i64 j = threadIdx.x; j < C; j += blockDim.x) {
      F total = 0;
#pragma unroll
      for (int q = 0; q < WARPS; ++q)
        total += rows[q * C + j];
      row[part * C + j] = total;
    }
    __syncthreads();
  };
  if (SHARED) {
    for (int part = 0; part < PARTS; ++part)
      reduceBlock(part, red + (i64)part * WARPS * C);
    return;
  }
  // Registers: a warp's 32·V columns of one k at a time through red
  // ([WARPS][32·V]).
  auto reduceRegisters = [&](int part, F (&a)[SHARED ? 1 : PER][V]) {
#pragma unroll
    for (int k = 0; k < PER; ++k) {
      storeVec<V>(red + warp * 32 * V, lane, a[SHARED ? 0 : k]);
      __syncthreads();
      for (int j = threadIdx.x; j < 32 * V; j += blockDim.x) {
        F total = 0;
#pragma unroll
        for (int q = 0; q < WARPS; ++q)
          total += red[q * 32 * V + j];
        if (k * 32 * V + j < C)
          row[part * C + k * 32 * V + j] = total;
      }
      __syncthreads();
    }
  };
  reduceRegisters(0, dw);
  if (CENTER)
    reduceRegisters(1, db);
}

// Column sums of `rows` partial rows of PARTS vectors of C (F): a block of
// 32×32 threads per 32 columns, each thread summing every 32nd row, the
// block's 32 rows of sums then added in shared memory (a fixed order:
// deterministic); `store(part, j, total)` writes column j of each part.
template <typename F, i64 C, i64 ROWS, int PARTS, class Store>
__device__ void sumPartialsTo(const F *partial, const Store &store) {
  __shared__ F sums[PARTS][32][33];
  i64 j = blockIdx.x * 32 + threadIdx.x;
#pragma unroll
  for (int part = 0; part < PARTS; ++part) {
    F a = 0;
    if (j < C)
      for (i64 p = threadIdx.y; p < ROWS; p += 32)
        a += partial[(p * PARTS + part) * C + j];
    sums[part][threadIdx.y][threadIdx.x] = a;
  }
  __syncthreads();
  if (threadIdx.y < PARTS && j < C) {
    F total = 0;
    for (int y = 0; y < 32; ++y)
      total += sums[threadIdx.y][y][threadIdx.x];
    store(threadIdx.y, j, total);
  }
}

} // namespace kiln
