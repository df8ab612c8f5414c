// kiln/embedding.cuh — row gather, and its backward: a scatter-add of the
// cotangent rows into a zeroed table (atomics: rows with the same id add up).
// An id outside [0, ROWS) sets kErrorBadId in *error (the executor reports
// it) and reads or adds nothing. With batch dimensions the table is tables
// of ROWS rows, one per PER consecutive ids (PER = IDS: one table).
#pragma once
#include "kiln/common.cuh"

namespace kiln {

template <typename T, typename I, i64 IDS, i64 C, i64 ROWS, i64 PER>
__device__ void embeddingForward(const T *table, const I *ids, T *out, unsigned *error) {
  i64 stride = (i64)gridDim.x * blockDim.x;
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < IDS * C; i += stride) {
    i64 id = (i64)ids[i / C];
    if (id < 0 || id >= ROWS) {
      atomicOr(error, kErrorBadId);
      out[i] = T(0);
      continue;
    }
    out[i] = table[((i / C) / PER * ROWS + id) * C + i % C];
  }
}

template <typename T, typename I, i64 IDS, i64 C, i64 ROWS, i64 PER>
__device__ void embeddingBackward(const I *ids, const T *dy, T *dtable, unsigned *error) {
  i64 stride = (i64)gridDim.x * blockDim.x;
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < IDS * C; i += stride) {
    i64 id = (i64)ids[i / C];
    if (id < 0 || id >= ROWS) {
      atomicOr(error, kErrorBadId);
      continue;
    }
    atomicAdd(dtable + ((i / C) / PER * ROWS + id) * C + i % C, dy[i]);
  }
}

// embeddingBackward's sums in a fixed order (train.deterministic): every
// element of the table takes its cotangent rows in token order. Block x
// owns RB rows [r0, r0 + RB) of table x / ⌈ROWS/RB⌉, held in shared memory
// (dynamic, RB·C elements) from dtable's init to the end. Each round its
// warps scan 512 consecutive ids each (CHUNK = 4096 a round), list the
// positions whose ids fall in its rows in order, and then its threads add
// those rows, column c always by the same thread, in position order. A bad
// id is flagged by the blocks of row 0.
template <typename T, typename I, i64 IDS, i64 C, i64 ROWS, i64 PER, int RB>
__device__ void embeddingBackwardOrdered(const I *ids, const T *dy, T *dtable, unsigned *error) {
  constexpr int WARPS = 8, SPAN = 512, CHUNK = WARPS * SPAN;
  constexpr i64 BLOCKS_PER_TABLE = CEIL_DIV(ROWS, (i64)RB);
  extern __shared__ __align__(16) unsigned char smem[];
  T *rows = reinterpret_cast<T *>(smem); // [RB][C]
  __shared__ int hits[CHUNK], count[WARPS];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const i64 table = blockIdx.x / BLOCKS_PER_TABLE, r0 = blockIdx.x % BLOCKS_PER_TABLE * RB;
  const i64 rb = ROWS - r0 < RB ? ROWS - r0 : RB;
  T *dst = dtable + (table * ROWS + r0) * C;
  for (i64 i = threadIdx.x; i < rb * C; i += blockDim.x)
    rows[i] = dst[i];
  const I *tids = ids + table * PER;
  const T *tdy = dy + table * PER * C;
  for (i64 base = 0; base < PER; base += CHUNK) {
    int n = 0; // this warp's hits so far (the same in every lane)
#pragma unroll 4
    for (int k = 0; k < SPAN; k += 32) {
      const i64 p = base + warp * SPAN + k + lane;
      const i64 id = p < PER ? (i64)tids[p] : -1;
      if (p < PER && (id < 0 || id >= ROWS) && r0 == 0)
        atomicOr(error, kErrorBadId);
      const bool hit = id >= r0 && id < r0 + rb;
      const unsigned mask = __ballot_sync(0xffffffffu, hit);
      if (hit)
        hits[warp * SPAN + n + __popc(mask & ((1u << lane) - 1))] = (int)(p - base);
      n += __popc(mask);
    }
    if (lane == 0)
      count[warp] = n;
    __syncthreads(); // the lists (and, the first time, the rows)
    for (int w = 0; w < WARPS; ++w)
      for (int h = 0; h < count[w]; ++h) {
        const i64 p = base + hits[w * SPAN + h];
        T *row = rows + ((i64)tids[p] - r0) * C;
        const T *from = tdy + p * C;
        for (i64 c = threadIdx.x; c < C; c += blockDim.x)
          row[c] += from[c];
      }
    __syncthreads(); // the lists are rewritten next round
  }
  for (i64 i = threadIdx.x; i < rb * C; i += blockDim.x)
    dst[i] = rows[i];
}

// out = in widened (bf16/f16 to f32; or copied): the table an embedding
// gradient with a narrower init adds its rows into. From 16-bit to 32-bit
// types, 4 elements a thread when N allows: an 8-byte load and one 16-byte
// store, so a warp's store is 512 contiguous bytes (with 8 elements a
// thread each of its two stores wrote half of every sector it touched: 49 %
// of DRAM bandwidth on the H200). Otherwise 16-byte loads of in when N is
// whole vectors of 8.
template <typename T, typename S, i64 N> __device__ void widenInto(const S *in, T *out) {
  i64 stride = (i64)gridDim.x * blockDim.x;
  i64 first = blockIdx.x * (i64)blockDim.x + threadIdx.x;
  if constexpr (sizeof(S) == 2 && sizeof(T) == 4 && N % 4 == 0) {
    for (i64 v = first; v < N / 4; v += stride) {
      alignas(8) S a[4];
      alignas(16) T b[4];
      *reinterpret_cast<uint2 *>(a) = reinterpret_cast<const uint2 *>(in)[v];
#pragma unroll
      for (int t = 0; t < 4; ++t)
        store(b, t, (float)load(a, t));
      reinterpret_cast<uint4 *>(out)[v] = *reinterpret_cast<const uint4 *>(b);
    }
    return;
  }
  if (N % 8 == 0 && (8 * sizeof(S)) % 16 == 0) {
    for (i64 v = first; v < N / 8; v += stride) {
      alignas(16) S a[8];
      alignas(16) T b[8];
      loadVec<8>(in, v, a);
#pragma unroll
      for (int t = 0; t < 8; ++t)
        store(b, t, (float)load(a, t));
      storeVec<8>(out, v, b);
    }
    return;
  }
  for (i64 i = first; i < N; i += stride)
    out[i] = (T)(float)load(in, i);
}

} // namespace kiln
