// kiln/reduce.cuh — reductions over the trailing dimensions (rows), the
// leading ones (columns, two passes through a partial-sum buffer) and any
// other set (one thread per output, written by codegen). Rows and columns
// read 16-byte words when a row is whole words (W elements each): a lane
// takes a word of the row, a column thread W neighbouring columns.
//
// The kernels read the reduced tensor through functors: `in(i)` is element
// i in the compute type C. The word forms read word v (elements v·W …
// v·W+W−1) in two steps, so that a thread has several words in flight
// before it converts any: `load(v, w)` copies the word's raw 16-byte
// vectors into a Word, `in(v, w, x)` turns them into the W values of x.
// For a reduction alone they load from memory; for a reduction fusion
// (kiln-fuse) `in` computes each element from the fusion's inputs and
// writes the fusion's other results there, so every kernel below visits
// each element once.
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

// One warp per row of ROW elements: out[r] = reduce(row r).
template <int KIND, typename C, typename U, i64 ROWS, i64 ROW, class In>
__device__ void reduceRows(const In &in, U *out) {
  i64 warps = (i64)gridDim.x * (blockDim.x / 32);
  for (i64 r = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32; r < ROWS; r += warps) {
    C acc = identity<KIND, C>();
    for (i64 j = threadIdx.x % 32; j < ROW; j += 32)
      acc = combine<KIND>(acc, in(r * ROW + j));
    for (int o = 16; o > 0; o >>= 1)
      acc = combine<KIND>(acc, __shfl_xor_sync(0xffffffffu, acc, o));
    if (threadIdx.x % 32 == 0)
      store(out, r, KIND == MEAN ? acc / C(ROW) : acc);
  }
}

// reduceRows over words: lane l combines words l, l+32, ... of the row.
template <int KIND, typename C, typename U, i64 ROWS, i64 ROW, int W, class Word, class Load,
          class In>
__device__ void reduceRowsVec(const Load &load, const In &in, U *out) {
  static_assert(ROW % W == 0, "a row is whole words");
  i64 warps = (i64)gridDim.x * (blockDim.x / 32);
  for (i64 r = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32; r < ROWS; r += warps) {
    C acc = identity<KIND, C>();
    for (i64 v = threadIdx.x % 32; v < ROW / W; v += 32) {
      Word word;
      load(r * (ROW / W) + v, word);
      C x[W];
      in(r * (ROW / W) + v, word, x);
#pragma unroll
      for (int k = 0; k < W; ++k)
        acc = combine<KIND>(acc, x[k]);
    }
    for (int o = 16; o > 0; o >>= 1)
      acc = combine<KIND>(acc, __shfl_xor_sync(0xffffffffu, acc, o));
    if (threadIdx.x % 32 == 0)
      store(out, r, KIND == MEAN ? acc / C(ROW) : acc);
  }
}

// Columns, pass 1: block (x, y, z) sums rows [y*CHUNK, (y+1)*CHUNK) of
// batch z (ROWS × COLS elements each) of the columns its threads own into
// partial[z, y, col] (gridDim.y chunks a batch).
template <int KIND, typename C, i64 ROWS, i64 COLS, i64 CHUNK, class In>
__device__ void reduceColumnsPartial(const In &in, C *partial) {
  i64 col = blockIdx.x * (i64)blockDim.x + threadIdx.x;
  if (col >= COLS)
    return;
  const i64 base = blockIdx.z * ROWS * COLS;
  i64 begin = blockIdx.y * CHUNK, end = begin + CHUNK < ROWS ? begin + CHUNK : ROWS;
  C acc = identity<KIND, C>();
  for (i64 r = begin; r < end; ++r)
    acc = combine<KIND>(acc, in(base + r * COLS + col));
  partial[(blockIdx.z * (i64)gridDim.y + blockIdx.y) * COLS + col] = acc;
}

// reduceColumnsPartial over words, a block of WX × RY threads: thread
// (x, y) owns columns word·W … word·W+W−1 (word = blockIdx.x·WX + x) and
// rows begin+y, begin+y+RY, … of the block's CHUNK (a multiple of RY),
// loading 8 words before it converts and adds them; the RY sums per column are then
// combined in shared memory in a fixed order. Fewer, longer chunks than a
// thread per column would give: on an H100 GPT-2's [16384, 3072] bf16 bias
// gradient took 41 µs, not 46 µs with 32-row chunks of a thread per column
// (bench/results/2026-12-06-session22).
template <int KIND, typename C, i64 ROWS, i64 COLS, i64 CHUNK, int W, int WX, int RY, class Word,
          class Load, class In>
__device__ void reduceColumnsPartialVec(const Load &load, const In &in, C *partial) {
  static_assert(COLS % W == 0, "a row is whole words");
  static_assert(CHUNK % RY == 0, "a chunk is whole passes of the block's rows");
  constexpr i64 WORDS = COLS / W, J = CHUNK / RY;
  constexpr int U = J < 8 ? (int)J : 8;
  __shared__ C part[RY][WX * W];
  const int x = threadIdx.x % WX, y = threadIdx.x / WX;
  const i64 word = blockIdx.x * (i64)WX + x, first = blockIdx.y * CHUNK + y;
  C acc[W];
#pragma unroll
  for (int k = 0; k < W; ++k)
    acc[k] = identity<KIND, C>();
  // This thread's rows: J, or fewer in the last chunk.
  const int n = first >= ROWS ? 0 : (int)min(J, (ROWS - first + RY - 1) / RY);
  if (word < WORDS) {
    i64 v = (blockIdx.z * ROWS + first) * WORDS + word; // the word of row `first`
#pragma unroll 1
    for (int j = 0; j < n; j += U, v += U * RY * WORDS) {
      Word a[U];
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (j + u < n)
          load(v + u * RY * WORDS, a[u]);
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (j + u < n) {
          C x[W];
          in(v + u * RY * WORDS, a[u], x);
#pragma unroll
          for (int k = 0; k < W; ++k)
            acc[k] = combine<KIND>(acc[k], x[k]);
        }
    }
  }
#pragma unroll
  for (int k = 0; k < W; ++k)
    part[y][x * W + k] = acc[k];
  __syncthreads();
  for (int c = threadIdx.x; c < WX * W; c += WX * RY) {
    const i64 col = blockIdx.x * (i64)WX * W + c;
    if (col >= COLS)
      continue;
    C total = identity<KIND, C>();
    for (int r = 0; r < RY; ++r)
      total = combine<KIND>(total, part[r][c]);
    partial[(blockIdx.z * (i64)gridDim.y + blockIdx.y) * COLS + col] = total;
  }
}

// Columns, pass 2: out[z, col] = reduce over batch z's CHUNKS partials. A
// block of 32×YS threads per 32 columns (YS = min(32, CHUNKS)): thread
// (x, y) combines partial rows y, y+YS, ..., then the YS results per column
// in shared memory, in a fixed order (deterministic).
template <int KIND, typename U, i64 ROWS, i64 COLS, i64 CHUNKS, int YS>
__device__ void reduceColumnsFinal(const typename Compute<U>::type *partial, U *out) {
  typedef typename Compute<U>::type C;
  __shared__ C part[YS][33];
  partial += blockIdx.z * CHUNKS * COLS;
  out += blockIdx.z * COLS;
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
