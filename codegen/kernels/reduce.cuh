// kiln/reduce.cuh — reductions over the trailing dimensions (rows), the
// leading ones (columns, two passes through a partial-sum buffer) and any
// other set (one thread per output). Rows and columns read 16-byte words
// when a row is whole words (W elements each): a lane takes a word of the
// row, a column thread W neighbouring columns.
#pragma once
#include "kiln/common.cuh"

namespace kiln {

enum ReduceKind { SUM = 0, MAX = 1, MEAN = 2 };

template <int KIND, typename C> __device__ __forceinline__ C combine(C a, C b) {
  return KIND == MAX ? (a > b || a != a ? a : b) : a + b;
}
template <int KIND, typename C> __device__ __forceinline__ C identity() {
  return KIND == MAX ? negInf<C>() : C(0);
}

// One warp per row of ROW elements: out[r] = reduce(in[r, :]).
template <int KIND, typename T, typename U, i64 ROWS, i64 ROW>
__device__ void reduceRows(const T *in, U *out) {
  typedef typename Compute<T>::type C;
  i64 warps = (i64)gridDim.x * (blockDim.x / 32);
  for (i64 r = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32; r < ROWS; r += warps) {
    C acc = identity<KIND, C>();
    for (i64 j = threadIdx.x % 32; j < ROW; j += 32)
      acc = combine<KIND>(acc, (C)load(in, r * ROW + j));
    for (int o = 16; o > 0; o >>= 1)
      acc = combine<KIND>(acc, __shfl_xor_sync(0xffffffffu, acc, o));
    if (threadIdx.x % 32 == 0)
      store(out, r, KIND == MEAN ? acc / C(ROW) : acc);
  }
}

// reduceRows over words: lane l combines words l, l+32, ... of the row.
template <int KIND, typename T, typename U, i64 ROWS, i64 ROW, int W>
__device__ void reduceRowsVec(const T *in, U *out) {
  typedef typename Compute<T>::type C;
  static_assert(ROW % W == 0, "a row is whole words");
  i64 warps = (i64)gridDim.x * (blockDim.x / 32);
  for (i64 r = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32; r < ROWS; r += warps) {
    C acc = identity<KIND, C>();
    for (i64 v = threadIdx.x % 32; v < ROW / W; v += 32) {
      T a[W];
      loadVec<W>(in + r * ROW, v, a);
#pragma unroll
      for (int k = 0; k < W; ++k)
        acc = combine<KIND>(acc, (C)load(a, k));
    }
    for (int o = 16; o > 0; o >>= 1)
      acc = combine<KIND>(acc, __shfl_xor_sync(0xffffffffu, acc, o));
    if (threadIdx.x % 32 == 0)
      store(out, r, KIND == MEAN ? acc / C(ROW) : acc);
  }
}

// Columns, pass 1: block (x, y) sums rows [y*CHUNK, (y+1)*CHUNK) of the
// columns its threads own into partial[y, col].
template <int KIND, typename T, i64 ROWS, i64 COLS, i64 CHUNK>
__device__ void reduceColumnsPartial(const T *in, typename Compute<T>::type *partial) {
  typedef typename Compute<T>::type C;
  i64 col = blockIdx.x * (i64)blockDim.x + threadIdx.x;
  if (col >= COLS)
    return;
  i64 begin = blockIdx.y * CHUNK, end = begin + CHUNK < ROWS ? begin + CHUNK : ROWS;
  C acc = identity<KIND, C>();
  for (i64 r = begin; r < end; ++r)
    acc = combine<KIND>(acc, (C)load(in, r * COLS + col));
  partial[blockIdx.y * COLS + col] = acc;
}

// reduceColumnsPartial over words: thread t owns columns t·W … t·W+W−1.
template <int KIND, typename T, i64 ROWS, i64 COLS, i64 CHUNK, int W>
__device__ void reduceColumnsPartialVec(const T *in, typename Compute<T>::type *partial) {
  typedef typename Compute<T>::type C;
  static_assert(COLS % W == 0, "a row is whole words");
  i64 word = blockIdx.x * (i64)blockDim.x + threadIdx.x;
  if (word >= COLS / W)
    return;
  i64 begin = blockIdx.y * CHUNK, end = begin + CHUNK < ROWS ? begin + CHUNK : ROWS;
  C acc[W];
#pragma unroll
  for (int k = 0; k < W; ++k)
    acc[k] = identity<KIND, C>();
  // Unrolled so that each thread has several 16-byte loads in flight (a
  // chunk is at least 32 rows).
#pragma unroll 8
  for (i64 r = begin; r < end; ++r) {
    T a[W];
    loadVec<W>(in + r * COLS, word, a);
#pragma unroll
    for (int k = 0; k < W; ++k)
      acc[k] = combine<KIND>(acc[k], (C)load(a, k));
  }
#pragma unroll
  for (int k = 0; k < W; ++k)
    partial[blockIdx.y * COLS + word * W + k] = acc[k];
}

// Columns, pass 2: out[col] = reduce over the CHUNKS partials. A block of
// 32×YS threads per 32 columns (YS = min(32, CHUNKS)): thread (x, y)
// combines partial rows y, y+YS, ..., then the YS results per column in
// shared memory, in a fixed order (deterministic).
template <int KIND, typename U, i64 ROWS, i64 COLS, i64 CHUNKS, int YS>
__device__ void reduceColumnsFinal(const typename Compute<U>::type *partial, U *out) {
  typedef typename Compute<U>::type C;
  __shared__ C part[YS][33];
  i64 col = blockIdx.x * 32 + threadIdx.x;
  C acc = identity<KIND, C>();
  if (col < COLS)
    for (i64 c = threadIdx.y; c < CHUNKS; c += YS)
      acc = combine<KIND>(acc, partial[c * COLS + col]);
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < COLS) {
    C total = identity<KIND, C>();
    for (int y = 0; y < YS; ++y)
      total = combine<KIND>(total, part[y][threadIdx.x]);
    store(out, col, KIND == MEAN ? total / C(ROWS) : total);
  }
}

} // namespace kiln
