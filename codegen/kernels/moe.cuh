// kiln/moe.cuh — kiln.moe_route in two launches: each token's top-k experts
// (a thread a token), then each expert's slots (a block an expert) filled
// in GShard's order — every token's first choice in token order, then
// every second choice, … — by a running count over that order.
#pragma once
#include "kiln/common.cuh"

namespace kiln {

// Whether score a of expert ia ranks before score b of expert ib: higher
// first, equal scores by lower index, a NaN after every number (the CPU
// reference's order).
template <typename F> __device__ __forceinline__ bool ranksBefore(F a, i64 ia, F b, i64 ib) {
  const bool nanA = a != a, nanB = b != b;
  if (nanA != nanB)
    return nanB;
  if (nanA || a == b)
    return ia < ib;
  return a > b;
}

// expert[i, j] = the expert ranked j-th in row i of probs [N, E]: the best
// of those ranked after choice j − 1, so no set of taken experts is kept.
template <typename T, typename I, i64 N, i64 E, i64 K>
__device__ void moeTopK(const T *probs, I *expert) {
  typedef typename Compute<T>::type F;
  const i64 stride = (i64)gridDim.x * blockDim.x;
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < N; i += stride) {
    const T *row = probs + i * E;
    F prev = F(0);
    i64 prevIndex = -1;
    for (i64 j = 0; j < K; ++j) {
      F best = F(0);
      i64 bestIndex = -1;
      for (i64 x = 0; x < E; ++x) {
        const F s = load(row, x);
        if (prevIndex >= 0 && !ranksBefore(prev, prevIndex, s, x))
          continue; // chosen already
        if (bestIndex < 0 || ranksBefore(s, x, best, bestIndex)) {
          best = s;
          bestIndex = x;
        }
      }
      expert[i * K + j] = (I)bestIndex;
      prev = best;
      prevIndex = bestIndex;
    }
  }
}

// Block e walks the N·K choices in GShard's order (choice q is token q % N's
// choice q / N), THREADS at a time: a ballot and the warps' counts give
// each choice of expert e its position among e's choices so far. A
// position below CAP is slot e·CAP + position (and token[slot] the token);
// past it the choice is dropped (slot E·CAP). The block's slots start
// empty (token N). Groups (blockIdx.y) are routed on their own.
template <typename I, i64 N, i64 E, i64 K, i64 CAP, int THREADS>
__device__ void moeSlots(const I *expert, I *slot, I *token) {
  static_assert(THREADS % 32 == 0 && THREADS <= 1024, "whole warps");
  constexpr int WARPS = THREADS / 32;
  __shared__ int warpCounts[WARPS];
  const i64 e = blockIdx.x, group = blockIdx.y;
  expert += group * N * K;
  slot += group * N * K;
  token += group * E * CAP;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (i64 s = threadIdx.x; s < CAP; s += THREADS)
    token[e * CAP + s] = (I)N;
  __syncthreads(); // the slots are empty before any is filled
  i64 filled = 0;
  for (i64 c0 = 0; c0 < N * K; c0 += THREADS) {
    const i64 q = c0 + threadIdx.x;
    const i64 i = q % N, at = i * K + q / N;
    const bool mine = q < N * K && (i64)expert[at] == e;
    const unsigned ballot = __ballot_sync(0xffffffffu, mine);
    if (lane == 0)
      warpCounts[warp] = __popc(ballot);
    __syncthreads();
    i64 before = __popc(ballot & ((1u << lane) - 1u)), total = 0;
    for (int w = 0; w < WARPS; ++w) {
      const int c = warpCounts[w];
      before += w < warp ? c : 0;
      total += c;
    }
    if (mine) {
      const i64 position = filled + before;
      if (position < CAP) {
        slot[at] = (I)(e * CAP + position);
        token[e * CAP + position] = (I)i;
      } else {
        slot[at] = (I)(E * CAP);
      }
    }
    filled += total;
    __syncthreads(); // every warp has read the counts before they change
  }
}

} // namespace kiln
