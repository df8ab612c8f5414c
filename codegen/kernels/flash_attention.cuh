// kiln/flash_attention.cuh — tiled attention on the tensor cores
// (FlashAttention-2's algorithm, Dao 2023), bf16/f16 with f32 accumulation,
// head dims 64 and 128, any sequence length (tails masked), grouped-query
// heads. The [T, T] scores never leave the chip:
//
//   forward   one block per (query block of BM rows, batch·head); the block
//             streams key/value blocks of BN rows through shared memory
//             (cp.async, the next block loading while the current one
//             computes), S = Q·Kᵀ and O += P·V on mma.sync m16n8k16, an
//             online softmax in registers, and writes O and the row
//             log-sum-exp. Causal: key blocks past the diagonal are skipped.
//             Segments (packed documents): with `seg` ([B, T] ids, else
//             null) a key of another segment is masked like one past the
//             diagonal — every block is masked then. When the ids never
//             decrease along the sequence (as documentIds writes them),
//             key blocks before the first query's document are skipped
//             (and, in the backward, query blocks after the last key's
//             document); ids out of order skip nothing.
//   backward  three launches: rowsum(dO ∘ O) per row (and dq's f32
//             accumulator zeroed); one block per (key block, batch·kv head)
//             keeping dK and dV in registers while it streams the query
//             blocks of every query head of its group — recomputing
//             P = exp(S − lse) per tile, dV += Pᵀ·dO, dK += dSᵀ·Q — and
//             adding dS·K into the f32 dq accumulator (the one sum several
//             blocks share); then dq = scale · accumulator in the low type
//             (or, an option, the last block of a batch·kv head to finish
//             writes the head's dq).
//
// Layouts: q, k, v, out and their gradients are [B, H, T, D] (head-major),
// or with BTHD [B, T, H, D] (sequence-major, kiln.attention's layout
// "bthd": a row of a head is then H·D elements after the previous one),
// and with PACK = 3 as well the parts of one [B, T, H, 3, D] tensor
// (kiln.attention_qkv: q, k and v point at parts 0, 1 and 2, rows 3·H·D
// apart; dq, dk and dv likewise into one dqkv).
// lse, delta and the dq accumulator are [B, H, T] / [B, H, T, D] always.
//
// Fragment layouts (PTX ISA, mma.m16n8k16 and ldmatrix): a thread of a warp
// is lane = 4·g + t. A (16×16) holds rows g, g+8 and columns 2t, 2t+1,
// 2t+8, 2t+9; B (16×8) columns g, rows 2t, 2t+1, 2t+8, 2t+9; C (16×8) rows
// g, g+8 and columns 2t, 2t+1. A product's C tiles over 16 columns are the
// A operand of the next product, which is how P never leaves registers.
// Shared tiles are rows of D 16-bit elements in 16-byte chunks, chunk c of
// row r stored at chunk c ^ (r % 8): the eight rows an ldmatrix reads land
// in distinct banks.
#pragma once
#include "kiln/common.cuh"

namespace kiln {
namespace flash {

typedef unsigned u32;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

__device__ __forceinline__ u32 smemAddress(const void *p) {
  return static_cast<u32>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, asynchronously; zeros when !valid.
__device__ __forceinline__ void copy16(u32 dst, const void *src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}
// 4 bytes global -> shared, asynchronously; zeros when !valid.
__device__ __forceinline__ void copy4(u32 dst, const void *src, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 4 : 0));
}
__device__ __forceinline__ void commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void waitGroups() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix(u32 (&r)[4], u32 address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}
__device__ __forceinline__ void ldmatrixTrans(u32 (&r)[4], u32 address) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(address));
}

template <typename T> struct IsBf16 { static constexpr bool value = false; };
template <> struct IsBf16<__nv_bfloat16> { static constexpr bool value = true; };

// d += a·b on the tensor cores, f32 accumulation.
template <typename T>
__device__ __forceinline__ void mma(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
  if constexpr (IsBf16<T>::value) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// Two floats as two 16-bit values in one register, the first in the low half.
template <typename T> __device__ __forceinline__ u32 pack(float lo, float hi) {
  if constexpr (IsBf16<T>::value) {
    __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<u32 *>(&v);
  } else {
    __half2 v = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<u32 *>(&v);
  }
}

// x rounded to T and back (common.cuh): a gradient's value as it is stored.
template <typename T> __device__ __forceinline__ float roundedTo(float x) {
  if constexpr (IsBf16<T>::value)
    return roundBf16(x);
  else
    return roundF16(x);
}

// Byte offset of element (row, col) of a swizzled tile with D-element rows.
template <int D> __device__ __forceinline__ u32 swizzled(int row, int col) {
  return row * (D * 2) + ((((col >> 3) ^ (row & 7))) << 4) + ((col & 7) << 1);
}

// v clamped to [0, N] as an int: a 64-bit bound turned into one a 32-bit
// compare with a tile-local index can take.
template <int N> __device__ __forceinline__ int clampTo(i64 v) {
  return v < 0 ? 0 : v > N ? N : (int)v;
}

// The backwards' mask for a thread's keys key0 and key0 + 8 against the
// query tile at i0 (BM rows): element (n, e) of its scores is query i0 + 2t
// + c, c = 8n + (e & 1), and key key0 + 8·(e >> 1), outside the tails and
// the causal triangle when lo ≤ c < hi for its key half — two 32-bit
// compares with constants (64-bit index compares took about 250 more
// instructions a warp on the diagonal step).
template <int BM, i64 TQ, i64 TK, bool CAUSAL>
__device__ __forceinline__ void keyHalfBounds(i64 key0, i64 i0, int t, int (&lo)[2],
                                              int (&hi)[2]) {
#pragma unroll
  for (int kh = 0; kh < 2; ++kh) {
    const i64 key = key0 + kh * 8;
    hi[kh] = clampTo<BM>(key >= TK ? 0 : TQ - i0 - 2 * t);
    if constexpr (CAUSAL)
      lo[kh] = clampTo<BM>(key - i0 - 2 * t);
  }
}

// Element offset of row t of head h of batch b in a [B, HEADS, T, D] tensor
// or, with BTHD, a [B, T, HEADS, PACK·D] one.
template <i64 HEADS, i64 T, int D, bool BTHD, int PACK = 1>
__device__ __forceinline__ i64 rowOffset(i64 b, i64 h, i64 t) {
  return BTHD ? ((b * T + t) * HEADS + h) * (PACK * D) : ((b * HEADS + h) * T + t) * D;
}

// Rows [row0, row0 + R) of a matrix of D-element rows STRIDE elements apart
// (from `base`) into a swizzled shared tile (rows past `limit` read as
// zeros), by all THREADS threads.
template <int R, int D, int THREADS, i64 STRIDE, typename T>
__device__ __forceinline__ void loadTile(u32 tile, const T *base, i64 row0, i64 limit) {
  constexpr int C = D / 8; // 16-byte chunks per row
#pragma unroll
  for (int i = threadIdx.x; i < R * C; i += THREADS) {
    int r = i / C, c = i % C;
    bool valid = row0 + r < limit;
    const T *src = base + (valid ? row0 + r : 0) * STRIDE + c * 8;
    copy16(tile + swizzled<D>(r, c * 8), src, valid);
  }
}

// ---------------------------------------------------------------------------
// Packed documents: the blocks that can matter
// ---------------------------------------------------------------------------

// The first key block a query block [q0, rowsEnd) can see: the block of the
// first position of q0's segment when the ids in [0, rowsEnd) never
// decrease (every earlier key then has a smaller id than every row), else 0.
// All THREADS threads call it.
template <int THREADS, int BN>
__device__ int firstKeyBlock(const int *segb, i64 q0, i64 rowsEnd) {
  __shared__ int first, unsorted;
  if (threadIdx.x == 0) {
    first = (int)q0;
    unsorted = 0;
  }
  __syncthreads();
  const int target = segb[q0];
  for (i64 i = threadIdx.x; i < rowsEnd; i += THREADS) {
    const int id = segb[i];
    if (i > 0 && id < segb[i - 1])
      unsorted = 1;
    if (i <= q0 && id == target)
      atomicMin(&first, (int)i);
  }
  __syncthreads();
  return unsorted ? 0 : first / BN;
}

// One past the last query block that can see keys [k0, kLast]: the block
// after the last position of kLast's segment when the ids in [k0, TQ) never
// decrease (every later query then has a larger id than every key), else
// QBLOCKS.
template <int THREADS, int BM, i64 TQ>
__device__ int queryBlockEnd(const int *segb, i64 k0, i64 kLast, int qblocks) {
  __shared__ int last, unsorted;
  if (threadIdx.x == 0) {
    last = (int)kLast;
    unsorted = 0;
  }
  __syncthreads();
  const int target = segb[kLast];
  for (i64 i = k0 + threadIdx.x; i < TQ; i += THREADS) {
    const int id = segb[i];
    if (i > k0 && id < segb[i - 1])
      unsorted = 1;
    if (id == target)
      atomicMax(&last, (int)i);
  }
  __syncthreads();
  return unsorted ? qblocks : last / BM + 1;
}

// ---------------------------------------------------------------------------
// What both forwards share (mma.sync and wgmma: the accumulators of a
// warp's 16 rows are in the m16n8k16 C layout either way)
// ---------------------------------------------------------------------------

// O / l in the low type and lse = ln(l) + max (back in natural log), for
// this thread's rows row0 and row0 + 8 of head bh = b·H + h.
template <typename T, i64 H, i64 TQ, int D, bool BTHD, int NO>
__device__ __forceinline__ void storeRows(const float (&o)[NO][4], const float (&m)[2],
                                          const float (&l)[2], T *out, float *lse, i64 b, i64 h,
                                          i64 bh, i64 row0, int t) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    float sum = l[half];
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    sum += __shfl_xor_sync(0xffffffffu, sum, 2);
    const i64 row = row0 + half * 8;
    if (row >= TQ)
      continue;
    const float inv = 1.f / sum;
    T *dst = out + rowOffset<H, TQ, D, BTHD>(b, h, row) + 2 * t;
#pragma unroll
    for (int n = 0; n < NO; ++n)
      *reinterpret_cast<u32 *>(dst + n * 8) = pack<T>(o[n][2 * half] * inv, o[n][2 * half + 1] * inv);
    if (t == 0)
      lse[bh * TQ + row] = (m[half] + log2f(sum)) * kLn2;
  }
}

// ---------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------

// WARPS warps of MT·16 query rows each (BM = WARPS·MT·16), key blocks of BN
// in two stages: block j+1 loads while block j computes, one barrier a
// block. Q's fragments stay in registers when QREGS (else they are re-read
// from shared memory, which leaves room for MT = 2 at D = 128). Dynamic
// shared memory: (BM + 4·BN)·D·2 bytes. Grid (⌈TQ/BM⌉, B·H). scale > 0.
template <typename T, i64 B, i64 H, i64 HKV, i64 TQ, i64 TK, int D, bool CAUSAL, int WARPS,
          int MT, int BN, bool QREGS, bool BTHD = false, int PACK = 1>
__device__ void forward(const T *q, const T *k, const T *v, T *out, float *lse, float scale,
                        const int *seg = nullptr) {
  constexpr int BM = WARPS * MT * 16, THREADS = WARPS * 32;
  constexpr int KS = D / 16, NS = BN / 8, NO = D / 8, PK = BN / 16;
  constexpr u32 TILE = BN * D * 2; // bytes of one K or V stage
  static_assert(D % 64 == 0 && BN % 16 == 0, "head dims of 64 or 128, key blocks of 16s");
  extern __shared__ __align__(128) unsigned char smem[];
  const u32 sQ = smemAddress(smem), sK = sQ + BM * D * 2, sV = sK + 2 * TILE;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;

  const i64 bh = blockIdx.y, b = bh / H, h = bh % H, kh = h / (H / HKV);
  constexpr i64 QS = BTHD ? H * D * PACK : D, KVS = BTHD ? HKV * D * PACK : D; // row strides
  // Causal blocks near the end of the sequence have the most keys: first.
  const i64 mBlock = CAUSAL ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
  const i64 q0 = mBlock * BM;
  const T *qb = q + rowOffset<H, TQ, D, BTHD, PACK>(b, h, 0),
          *kb = k + rowOffset<HKV, TK, D, BTHD, PACK>(b, kh, 0),
          *vb = v + rowOffset<HKV, TK, D, BTHD, PACK>(b, kh, 0);
  const i64 kEnd = CAUSAL ? (q0 + BM < TK ? q0 + BM : TK) : TK;
  const int blocks = (int)CEIL_DIV(kEnd, (i64)BN);
  const float scaleLog2 = scale * kLog2e;
  const int jStart = seg ? firstKeyBlock<THREADS, BN>(seg + b * TK, q0, q0 + BM < TQ ? q0 + BM : TQ)
                         : 0;

  loadTile<BM, D, THREADS, QS>(sQ, qb, q0, TQ);
  loadTile<BN, D, THREADS, KVS>(sK, kb, (i64)jStart * BN, TK);
  loadTile<BN, D, THREADS, KVS>(sV, vb, (i64)jStart * BN, TK);
  commit();

  u32 qf[QREGS ? MT : 1][QREGS ? KS : 1][4];
  float o[MT][NO][4], m[MT][2], l[MT][2];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
    for (int n = 0; n < NO; ++n)
      o[mt][n][0] = o[mt][n][1] = o[mt][n][2] = o[mt][n][3] = 0.f;
    m[mt][0] = m[mt][1] = negInf<float>(); // the row max of the scaled scores
    l[mt][0] = l[mt][1] = 0.f;
  }
  auto qAddress = [&](int mt, int ks) {
    return sQ + swizzled<D>((warp * MT + mt) * 16 + (lane & 15), ks * 16 + (lane >> 4) * 8);
  };

  for (int j = jStart; j < blocks; ++j) {
    const int stage = (j - jStart) & 1;
    const u32 kj = sK + stage * TILE, vj = sV + stage * TILE;
    waitGroups<0>(); // block j (and Q)
    __syncthreads(); // visible to all; every warp is done with block j - 1
    if (j + 1 < blocks) {
      loadTile<BN, D, THREADS, KVS>(sK + (stage ^ 1) * TILE, kb, (i64)(j + 1) * BN, TK);
      loadTile<BN, D, THREADS, KVS>(sV + (stage ^ 1) * TILE, vb, (i64)(j + 1) * BN, TK);
    }
    commit();
    if constexpr (QREGS) {
      if (j == jStart)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int ks = 0; ks < KS; ++ks)
            ldmatrix(qf[mt][ks], qAddress(mt, ks));
    }
    // S = Q·Kᵀ: K_j's rows are B's columns.
    float s[MT][NS][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
      for (int n = 0; n < NS; ++n)
        s[mt][n][0] = s[mt][n][1] = s[mt][n][2] = s[mt][n][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      u32 qs[MT][4];
      if constexpr (!QREGS)
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
          ldmatrix(qs[mt], qAddress(mt, ks));
#pragma unroll
      for (int np = 0; np < NS / 2; ++np) {
        u32 kf[4];
        ldmatrix(kf, kj + swizzled<D>(np * 16 + (lane & 7) + (lane >> 4) * 8,
                                      ks * 16 + ((lane >> 3) & 1) * 8));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          const u32(&a)[4] = QREGS ? qf[QREGS ? mt : 0][QREGS ? ks : 0] : qs[mt];
          mma<T>(s[mt][2 * np], a, kf[0], kf[1]);
          mma<T>(s[mt][2 * np + 1], a, kf[2], kf[3]);
        }
      }
    }

    // Mask (causal diagonal, key tail), then the online softmax in base 2:
    // p = 2^(s·scale·log2 e − m).
    const i64 k0 = (i64)j * BN;
    const bool masked =
        seg || (CAUSAL && k0 + BN - 1 > q0) || (TK % BN != 0 && k0 + BN > TK);
    const int *segb = seg ? seg + b * TK : nullptr;
    u32 pf[MT][PK][4];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
      const i64 row0 = q0 + (warp * MT + mt) * 16 + g;
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const i64 row = row0 + half * 8;
        const int rowSeg = segb && row < TQ ? segb[row] : 0;
        float mx = negInf<float>();
#pragma unroll
        for (int n = 0; n < NS; ++n)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float &x = s[mt][n][2 * half + e];
            if (masked) {
              const i64 key = k0 + n * 8 + 2 * t + e;
              if (key >= TK || (CAUSAL && key > row) || (segb && segb[key] != rowSeg))
                x = negInf<float>();
            }
            mx = fmaxf(mx, x);
          }
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float mNew = fmaxf(m[mt][half], mx * scaleLog2);
        const float base = mNew == negInf<float>() ? 0.f : mNew;
        const float alpha = exp2Approx(m[mt][half] - base);
        m[mt][half] = mNew;
        float sum = 0.f;
#pragma unroll
        for (int n = 0; n < NS; ++n)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float &x = s[mt][n][2 * half + e];
            x = exp2Approx(fmaf(x, scaleLog2, -base));
            sum += x;
          }
        l[mt][half] = l[mt][half] * alpha + sum; // this thread's part of the row
#pragma unroll
        for (int n = 0; n < NO; ++n) {
          o[mt][n][2 * half] *= alpha;
          o[mt][n][2 * half + 1] *= alpha;
        }
      }
#pragma unroll
      for (int kk = 0; kk < PK; ++kk) {
        pf[mt][kk][0] = pack<T>(s[mt][2 * kk][0], s[mt][2 * kk][1]);
        pf[mt][kk][1] = pack<T>(s[mt][2 * kk][2], s[mt][2 * kk][3]);
        pf[mt][kk][2] = pack<T>(s[mt][2 * kk + 1][0], s[mt][2 * kk + 1][1]);
        pf[mt][kk][3] = pack<T>(s[mt][2 * kk + 1][2], s[mt][2 * kk + 1][3]);
      }
    }

    // O += P·V: V_j's rows are B's rows (ldmatrix transposes).
#pragma unroll
    for (int kk = 0; kk < PK; ++kk)
#pragma unroll
      for (int np = 0; np < NO / 2; ++np) {
        u32 vf[4];
        ldmatrixTrans(vf, vj + swizzled<D>(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8,
                                           np * 16 + (lane >> 4) * 8));
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          mma<T>(o[mt][2 * np], pf[mt][kk], vf[0], vf[1]);
          mma<T>(o[mt][2 * np + 1], pf[mt][kk], vf[2], vf[3]);
        }
      }
  }

  // O / l in the low type; lse = ln(l) + max, back in natural log.
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
    storeRows<T, H, TQ, D, BTHD>(o[mt], m[mt], l[mt], out, lse, b, h, bh,
                                 q0 + (warp * MT + mt) * 16 + g, t);
}

// ---------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------

// delta[row] = Σ_d dO[row, d]·O[row, d], and the row of the f32 dq
// accumulator zeroed (rows in [B, H, TQ] order). Each thread moves one
// 16-byte vector of a row (L = D / V threads a row, a power of two that
// divides 32, reduced by shuffles); other head dims, a warp per row. With
// ORDER > 0 also the ORDER words of `order` zeroed: the backward's counters
// (the ordered backward's ticket and turns, and doneCounter's; below).
template <typename T, i64 ROWS, int D, i64 H = 1, i64 TQ = ROWS, bool BTHD = false, i64 ORDER = 0>
__device__ void backwardPrepare(const T *o, const T *dout, float *delta, float *dqAccum,
                                int *order = nullptr) {
  if constexpr (ORDER > 0)
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < ORDER;
         i += (i64)gridDim.x * blockDim.x)
      order[i] = 0;
  constexpr int V = 16 / sizeof(T), L = D / V;
  if constexpr (D % V == 0 && L <= 32 && 32 % L == 0) {
    // Whole warps run every iteration (the bound is a multiple of 32), so
    // the shuffles see all their lanes; lanes past the last row add zeros.
    constexpr i64 N = ROWS * L, NW = (N + 31) / 32 * 32;
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < NW;
         i += (i64)gridDim.x * blockDim.x) {
      const i64 r = i / L;
      const int c = (int)(i % L) * V;
      float sum = 0.f;
      if (i < N) {
        const i64 bh = r / TQ, at = rowOffset<H, TQ, D, BTHD>(bh / H, bh % H, r % TQ) + c;
        alignas(16) T x[V], y[V];
        *reinterpret_cast<uint4 *>(x) = *reinterpret_cast<const uint4 *>(o + at);
        *reinterpret_cast<uint4 *>(y) = *reinterpret_cast<const uint4 *>(dout + at);
#pragma unroll
        for (int k = 0; k < V; ++k)
          sum += load(x, k) * load(y, k);
        float4 *z = reinterpret_cast<float4 *>(dqAccum + r * D + c);
#pragma unroll
        for (int k = 0; k < V / 4; ++k)
          z[k] = make_float4(0.f, 0.f, 0.f, 0.f);
      }
#pragma unroll
      for (int m = L / 2; m > 0; m /= 2)
        sum += __shfl_xor_sync(0xffffffffu, sum, m);
      if (i < N && c == 0)
        delta[r] = sum;
    }
  } else {
    const i64 warps = (i64)gridDim.x * (blockDim.x / 32);
    const int lane = threadIdx.x % 32;
    for (i64 r = blockIdx.x * (i64)(blockDim.x / 32) + threadIdx.x / 32; r < ROWS; r += warps) {
      const i64 bh = r / TQ, at = rowOffset<H, TQ, D, BTHD>(bh / H, bh % H, r % TQ);
      float sum = 0.f;
#pragma unroll
      for (int c = lane; c < D; c += 32)
        sum += load(o, at + c) * load(dout, at + c);
      sum = warpSum(sum);
      if (lane == 0)
        delta[r] = sum;
#pragma unroll
      for (int c = lane; c < D; c += 32)
        dqAccum[r * D + c] = 0.f;
    }
  }
}

// Eight f32 sums a, c (8 consecutive columns of a dq row) times `scale`,
// rounded to T: stored as one 16-byte vector at `out`, and added to `sum`
// as stored (the bias gradient's column sums).
template <typename T>
__device__ __forceinline__ void storeScaled8(const float4 &a, const float4 &c, float scale, T *out,
                                             float (&sum)[8]) {
  const float in[8] = {a.x, a.y, a.z, a.w, c.x, c.y, c.z, c.w};
  u32 packed[4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float lo = roundedTo<T>(in[2 * i] * scale), hi = roundedTo<T>(in[2 * i + 1] * scale);
    sum[2 * i] += lo;
    sum[2 * i + 1] += hi;
    packed[i] = pack<T>(lo, hi);
  }
  *reinterpret_cast<uint4 *>(out) = make_uint4(packed[0], packed[1], packed[2], packed[3]);
}

// out[c] for c < D: the block's column sums, each of its threads holding
// `sum` of columns [8x, 8x + 8), x = its index mod D/8 — the warp's rows
// added by shuffles, then the WARPS warps through `red` (WARPS·D floats) in
// a fixed order. The caller puts a barrier before `red` is rewritten.
template <int D, int WARPS>
__device__ __forceinline__ void blockColumnSums(float (&sum)[8], float *red, float *out) {
  constexpr int X = D / 8;
  const int x = threadIdx.x % X, warp = threadIdx.x / 32, lane = threadIdx.x % 32;
#pragma unroll
  for (int i = 0; i < 8; ++i)
#pragma unroll
    for (int m = X; m < 32; m *= 2) // the warp's rows of these columns
      sum[i] += __shfl_xor_sync(0xffffffffu, sum[i], m);
  if (lane < X)
#pragma unroll
    for (int i = 0; i < 8; ++i)
      red[warp * D + 8 * x + i] = sum[i];
  __syncthreads();
  for (int c = threadIdx.x; c < D; c += 32 * WARPS) {
    float s = 0.f;
#pragma unroll
    for (int w = 0; w < WARPS; ++w)
      s += red[w * D + c];
    out[c] = s;
  }
}

// dq = scale · accumulator, in the low type (the accumulator's rows in
// [B, H, TQ] order), as a launch after the backward (the default; with the
// wgmma kernels' option kDqInBackward finishDq, below, does it instead).
// Head dims of whole 8-element groups take 8 a thread (two 16-byte loads,
// one 16-byte store), others 2.
template <typename T, i64 N, int D = 2, i64 H = 1, i64 TQ = N / D, bool BTHD = false, int PACK = 1>
__device__ void backwardFinish(const float *dqAccum, T *dq, float scale) {
  if constexpr (D % 8 == 0) {
    for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < N / 8;
         i += (i64)gridDim.x * blockDim.x) {
      const float4 a = reinterpret_cast<const float4 *>(dqAccum)[2 * i],
                   b = reinterpret_cast<const float4 *>(dqAccum)[2 * i + 1];
      const i64 r = 8 * i / D, bh = r / TQ;
      const i64 at =
          BTHD ? rowOffset<H, TQ, D, true, PACK>(bh / H, bh % H, r % TQ) + 8 * i % D : 8 * i;
      uint4 out;
      out.x = pack<T>(a.x * scale, a.y * scale);
      out.y = pack<T>(a.z * scale, a.w * scale);
      out.z = pack<T>(b.x * scale, b.y * scale);
      out.w = pack<T>(b.z * scale, b.w * scale);
      *reinterpret_cast<uint4 *>(dq + at) = out;
    }
    return;
  }
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < N / 2;
       i += (i64)gridDim.x * blockDim.x) {
    float2 a = reinterpret_cast<const float2 *>(dqAccum)[i];
    const i64 r = 2 * i / D, bh = r / TQ;
    const i64 at = BTHD ? rowOffset<H, TQ, D, true, PACK>(bh / H, bh % H, r % TQ) + 2 * i % D : 2 * i;
    *reinterpret_cast<u32 *>(dq + at) = pack<T>(a.x * scale, a.y * scale);
  }
}

// backwardFinish with the qkv projection's bias gradient (an
// attention-gradient fusion): a block per GROUPS query blocks of BN rows of
// one batch·head, D/8 threads a row converting 8 elements each, which also
// sum their columns of the values they store (rounded to T). Per query
// block the lanes of a warp holding the same columns add theirs by
// shuffles, then the 8 warps in shared memory, in a fixed order, into row
// b·⌈TQ/BN⌉ + block, part [h][0], of the [B·⌈TQ/BN⌉, H, 3, D] partial
// sums keyGradColumnSums fills parts 1 and 2 of. Grid
// (⌈⌈TQ/BN⌉/GROUPS⌉, B·H), 256 threads.
template <typename T, i64 H, i64 TQ, int D, bool BTHD, int PACK, int BN, int GROUPS>
__device__ void backwardFinishBias(const float *dqAccum, T *dq, float scale, float *partial) {
  static_assert(D % 8 == 0 && 32 % (D / 8) == 0, "rows of whole 8-element groups, whole rows a warp");
  constexpr int X = D / 8, R = 256 / X; // threads a row, rows a pass of the block
  constexpr i64 BLOCKS = CEIL_DIV(TQ, (i64)BN);
  __shared__ float red[8][D];
  const int x = threadIdx.x % X, r = threadIdx.x / X;
  const i64 bh = blockIdx.y, b = bh / H, h = bh % H;
  for (int group = 0; group < GROUPS; ++group) {
    const i64 block = (i64)blockIdx.x * GROUPS + group;
    if (block >= BLOCKS)
      break;
    float sum[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    for (int row = r; row < BN; row += R) {
      const i64 t = block * BN + row;
      if (t >= TQ)
        break;
      const float4 *src = reinterpret_cast<const float4 *>(dqAccum + (bh * TQ + t) * D + 8 * x);
      const i64 at =
          BTHD ? rowOffset<H, TQ, D, true, PACK>(b, h, t) + 8 * x : (bh * TQ + t) * D + 8 * x;
      storeScaled8<T>(src[0], src[1], scale, dq + at, sum);
    }
    blockColumnSums<D, 8>(sum, &red[0][0], partial + ((b * BLOCKS + block) * H + h) * 3 * D);
    __syncthreads(); // `red` is rewritten by the next query block
  }
}

__device__ __forceinline__ void addTo(float *p, float a, float b) {
#if __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v2.f32 [%0], {%1, %2};\n" ::"l"(p), "f"(a), "f"(b) : "memory");
#else
  atomicAdd(p, a);
  atomicAdd(p + 1, b);
#endif
}

// p[0..3] += a, b, c, d (16-byte aligned; sm_90's vector `red`).
__device__ __forceinline__ void addTo4(float *p, float a, float b, float c, float d) {
#if __CUDA_ARCH__ >= 900
  asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"l"(p), "f"(a), "f"(b), "f"(c),
               "f"(d)
               : "memory");
#else
  addTo(p, a, b);
  addTo(p + 2, c, d);
#endif
}

// ---------------------------------------------------------------------------
// train.deterministic: dq's sums in key-block order (ORDERED)
// ---------------------------------------------------------------------------
//
// Otherwise the key blocks add their dq tiles with atomics in whatever order
// they reach them, and the f32 sums differ in their last bits from run to
// run. Ordered, `order` holds a ticket word and a turn counter per (batch ·
// head, query block of 64), all zero at the launch (backwardPrepare). A
// block takes a ticket as it starts, and the ticket names its key block and
// kv head, key blocks of a head in dq's order: every block before it in
// the order has started (no block waits for one that is not running,
// whatever order the hardware starts blocks in). At each query block it
// waits until the turn counter equals its place among the key blocks that
// visit that query block, adds its dq tile, and counts itself. Each dq
// element then takes its adds in one order.
//
// The order: causal, the last key block that sees a query block adds first
// and key block 0 last (DESCENDING). Blocks stream their query blocks
// upwards from the diagonal, so the block after j reached each query block
// one step before j does and no block waits when all start together (in
// key-block order j would wait for j − 1 to come up from below, and the
// blocks of a head would run one behind another: measured 1.8× the
// backward's time at GPT-2's shape). The key blocks that visit query block
// i are those from the first whose document reaches it to
// lastKeyBlock(i), so the place of j is lastKeyBlock(i) − j. Not causal,
// every block streams every query block from 0 in the same order, so
// either order runs them one behind another; it is key-block order, and key
// blocks that never visit a query block (packed documents in order) count
// themselves there at the start, so the counter reaches j exactly when
// every key block before j is done with it.

// (key block, batch · kv head) of this block.
template <bool ORDERED, bool DESCENDING>
__device__ __forceinline__ void blockPlace(int *order, i64 &keyBlock, i64 &bkv) {
  if constexpr (ORDERED) {
    __shared__ int ticket;
    if (threadIdx.x == 0)
      ticket = atomicAdd(order, 1);
    __syncthreads();
    const int j = ticket % (int)gridDim.x;
    keyBlock = DESCENDING ? (int)gridDim.x - 1 - j : j;
    bkv = ticket / (int)gridDim.x;
  } else {
    keyBlock = blockIdx.x;
    bkv = blockIdx.y;
  }
}

// The turn counter of query block i (of 64 rows) of head bh.
template <int QBLOCKS> __device__ __forceinline__ int *turnOf(int *order, i64 bh, i64 i) {
  return order + 1 + bh * QBLOCKS + i;
}

// Causal: the last key block of BN keys that sees query block i (of BM
// rows), of KBLOCKS.
template <int BM, int BN, int KBLOCKS> __device__ __forceinline__ int lastKeyBlock(i64 i) {
  const int j = (int)(((i + 1) * BM - 1) / BN);
  return j < KBLOCKS - 1 ? j : KBLOCKS - 1;
}

// Counts this key block in at query blocks [from, QBLOCKS) of the heads
// bh0 … bh0 + heads − 1, which it does not visit.
template <int THREADS, int QBLOCKS>
__device__ void passTurns(int *order, i64 bh0, int heads, int from) {
  const int n = QBLOCKS - from;
  for (int x = threadIdx.x; x < heads * n; x += THREADS)
    atomicAdd(turnOf<QBLOCKS>(order, bh0 + x / n, from + x % n), 1);
}

// Waits until the `place` key blocks before this one are done with `turn`'s
// query block (one thread polls; the barrier carries its acquire to the
// block).
__device__ __forceinline__ void waitTurn(const int *turn, int place) {
  if (threadIdx.x == 0) {
    int now;
    for (;;) {
      asm volatile("ld.acquire.gpu.global.b32 %0, [%1];\n" : "=r"(now) : "l"(turn) : "memory");
      if (now == place)
        break;
      __nanosleep(32);
    }
  }
  __syncthreads();
}

// Key block keyBlock's turn at query block i (of BM rows) of head bh, of
// KBLOCKS key blocks of BN keys: waits for it (causal, its place is
// lastKeyBlock(i) − keyBlock; not causal, keyBlock) and returns the turn
// counter for endTurn.
template <bool CAUSAL, int BM, int BN, int KBLOCKS, int QBLOCKS>
__device__ __forceinline__ int *awaitDqTurn(int *order, i64 bh, i64 i, i64 keyBlock) {
  int *turn = turnOf<QBLOCKS>(order, bh, i);
  waitTurn(turn, CAUSAL ? lastKeyBlock<BM, BN, KBLOCKS>(i) - (int)keyBlock : (int)keyBlock);
  return turn;
}

// After every thread's adds: the next key block's turn (released, so its
// adds come after these).
__device__ __forceinline__ void endTurn(int *turn) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    asm volatile("red.release.gpu.global.add.s32 [%0], 1;\n" ::"l"(turn) : "memory");
  }
}

// ---------------------------------------------------------------------------
// What both backwards share (mma.sync and wgmma)
// ---------------------------------------------------------------------------

// lse and delta of query rows [i0, i0 + BM) of head bh into stage `stage`
// of sStats (lse [2][BM] then delta [2][BM]), a float each (a row's stats
// are 4-byte aligned only), by all THREADS threads.
template <int BM, int THREADS, i64 TQ>
__device__ __forceinline__ void loadRowStats(float *sStats, int stage, const float *lse,
                                             const float *delta, i64 bh, i64 i0) {
  for (int i = threadIdx.x; i < 2 * BM; i += THREADS) {
    const bool isDelta = i >= BM;
    const int r = isDelta ? i - BM : i;
    const bool valid = i0 + r < TQ;
    const float *src = (isDelta ? delta : lse) + bh * TQ + (valid ? i0 + r : 0);
    copy4(smemAddress(sStats + (isDelta ? 2 * BM : 0) + stage * BM + r), src, valid);
  }
}

// dK (times the scale) and dV of this thread's keys key0, key0 + 8 in the
// low type.
template <typename T, i64 HKV, i64 TK, int D, bool BTHD, int PACK, int NO>
__device__ __forceinline__ void storeKeyGrads(const float (&dK)[NO][4], const float (&dV)[NO][4],
                                              T *dk, T *dv, i64 b, i64 kvh, i64 key0, int t,
                                              float scale) {
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const i64 key = key0 + half * 8;
    if (key >= TK)
      continue;
    const i64 at = rowOffset<HKV, TK, D, BTHD, PACK>(b, kvh, key) + 2 * t;
    T *dkRow = dk + at, *dvRow = dv + at;
#pragma unroll
    for (int n = 0; n < NO; ++n) {
      *reinterpret_cast<u32 *>(dkRow + n * 8) =
          pack<T>(dK[n][2 * half] * scale, dK[n][2 * half + 1] * scale);
      *reinterpret_cast<u32 *>(dvRow + n * 8) = pack<T>(dV[n][2 * half], dV[n][2 * half + 1]);
    }
  }
}

// The qkv projection's bias gradient, a key block's part (an
// attention-gradient fusion): the column sums of this block's dK (times
// the scale) and dV over its keys before TK, of the values storeKeyGrads
// stored (rounded to T), in a fixed order: each thread's two keys, the
// warp's eight by shuffles, then the WARPS warps through shared memory
// `red` (2·WARPS·D floats; the block's tiles are dead by now). Row
// `partial` of the [B·⌈TK/BN⌉, HKV, 3, D] partial sums gets dk's at
// [kvh][1] and dv's at [kvh][2] (dq's [kvh][0] is finishDq's).
// Overwrites dK and dV.
template <typename T, i64 TK, int D, int WARPS, int NO>
__device__ __forceinline__ void keyGradColumnSums(float (&dK)[NO][4], float (&dV)[NO][4],
                                                  i64 key0, float scale, float *red,
                                                  float *partial) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, t = lane & 3;
  const bool lo = key0 < TK, hi = key0 + 8 < TK;
#pragma unroll
  for (int n = 0; n < NO; ++n)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      float k = (lo ? roundedTo<T>(dK[n][e] * scale) : 0.f) +
                (hi ? roundedTo<T>(dK[n][2 + e] * scale) : 0.f);
      float v = (lo ? roundedTo<T>(dV[n][e]) : 0.f) + (hi ? roundedTo<T>(dV[n][2 + e]) : 0.f);
#pragma unroll
      for (int m = 4; m < 32; m *= 2) { // lanes 4·g + t of one t: the warp's 16 keys
        k += __shfl_xor_sync(0xffffffffu, k, m);
        v += __shfl_xor_sync(0xffffffffu, v, m);
      }
      dK[n][e] = k;
      dV[n][e] = v;
    }
  __syncthreads(); // every warp is done with the tiles `red` overlays
  if (lane < 4)
#pragma unroll
    for (int n = 0; n < NO; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        red[(warp * 2) * D + n * 8 + 2 * t + e] = dK[n][e];
        red[(warp * 2 + 1) * D + n * 8 + 2 * t + e] = dV[n][e];
      }
  __syncthreads();
  for (int i = threadIdx.x; i < 2 * D; i += 32 * WARPS) {
    const int part = i / D, c = i % D;
    float sum = 0.f;
    for (int w = 0; w < WARPS; ++w)
      sum += red[(w * 2 + part) * D + c];
    partial[(1 + part) * D + c] = sum;
  }
}

// The word counting the key blocks of batch · kv head bkv that are done
// (zeroed by backwardPrepare): after the ordered backward's ticket and turn
// counters (AttentionDims::orderWords).
template <i64 B, i64 H, i64 TQ> __device__ __forceinline__ int *doneCounter(int *order, i64 bkv) {
  return order + 1 + B * H * CEIL_DIV(TQ, (i64)64) + bkv;
}

// The backward's last step, by every block after its last dq add: the block
// counts itself in at its batch · kv head, and the last of the head's
// KBLOCKS key blocks to get there — when every add into the head's rows of
// the accumulator is done — writes dq = scale · accumulator in T for the
// G = H / HKV query heads of the group (no launch of its own, and the
// accumulator's rows read while the adds have left them in L2). With BIAS
// it also sums dq's columns per query block of BN rows (the values it
// stores, rounded to T) into part [h][0] of row b·⌈TQ/BN⌉ + block of the
// [B·⌈TQ/BN⌉, H, 3, D] partial sums, whose parts 1 and 2
// keyGradColumnSums fills: per thread, the warp's rows by shuffles, then
// the warps in `red` in a fixed order (deterministic). With STAGES = 0 (the
// default) the backwards skip it, and backwardFinish(Bias) runs after them.
// The rows stream through `stages` (the block's tiles, dead by now):
// STAGES chunks of BN rows of f32 by cp.async, the next STAGES − 1 loading
// while one is converted, D/8 threads a row converting 8 elements each;
// `red` (WARPS·D floats) follows the chunks.
template <typename T, i64 B, i64 H, i64 HKV, i64 TQ, int D, bool BTHD, int PACK, int THREADS,
          int BN, int KBLOCKS, int STAGES, bool BIAS>
__device__ void finishDq(int *order, const float *dqAccum, T *dq, float scale, float *partial,
                         i64 bkv, unsigned char *stages) {
  static_assert(D % 8 == 0 && 32 % (D / 8) == 0 && STAGES >= 2, "whole rows a warp");
  constexpr int X = D / 8, R = THREADS / X, WARPS = THREADS / 32; // threads a row, rows a pass
  constexpr i64 G = H / HKV, BLOCKS = CEIL_DIV(TQ, (i64)BN);
  constexpr int CHUNKS = (int)(G * BLOCKS), CHUNK_BYTES = BN * D * 4;
  __shared__ int last;
  __threadfence(); // this thread's adds are done before the count
  __syncthreads();
  if (threadIdx.x == 0) {
    last = atomicAdd(doneCounter<B, H, TQ>(order, bkv), 1) == KBLOCKS - 1;
    if (last)
      __threadfence(); // the other blocks' adds before this block's reads
  }
  __syncthreads();
  if (!last)
    return;
  const i64 b = bkv / HKV, kvh = bkv % HKV;
  const u32 sChunks = smemAddress(stages);
  float *red = reinterpret_cast<float *>(stages + STAGES * CHUNK_BYTES);
  const int x = threadIdx.x % X, r = threadIdx.x / X;
  // Chunk c: rows [block·BN, block·BN + BN) of head kvh·G + c / BLOCKS.
  auto issue = [&](int c) {
    if (c < CHUNKS) {
      const i64 h = kvh * G + c / BLOCKS, t0 = (i64)(c % BLOCKS) * BN;
      const float *src = dqAccum + ((b * H + h) * TQ + t0) * D;
      const u32 dst = sChunks + (c % STAGES) * CHUNK_BYTES;
      for (int i = threadIdx.x; i < BN * D / 4; i += THREADS) {
        const bool valid = t0 + i / (D / 4) < TQ;
        copy16(dst + 16 * i, valid ? src + 4 * i : src, valid);
      }
    }
    commit(); // a group for every chunk number, so the waits count alike
  };
#pragma unroll
  for (int c = 0; c < STAGES - 1; ++c)
    issue(c);
  for (int c = 0; c < CHUNKS; ++c) {
    issue(c + STAGES - 1);
    waitGroups<STAGES - 1>(); // chunk c is in
    __syncthreads();
    const i64 h = kvh * G + c / BLOCKS, block = c % BLOCKS;
    const float *chunk = reinterpret_cast<const float *>(stages + (c % STAGES) * CHUNK_BYTES);
    float sum[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int pass = 0; pass < BN / R; ++pass) {
      const int row = pass * R + r;
      const i64 t = block * BN + row;
      if (t >= TQ)
        break;
      const float4 *src = reinterpret_cast<const float4 *>(chunk + row * D + 8 * x);
      storeScaled8<T>(src[0], src[1], scale, dq + rowOffset<H, TQ, D, BTHD, PACK>(b, h, t) + 8 * x,
                      sum);
    }
    if constexpr (BIAS)
      blockColumnSums<D, WARPS>(sum, red, partial + ((b * BLOCKS + block) * H + h) * 3 * D);
    __syncthreads(); // the stage (and `red`) is rewritten next
  }
}

// One block per (key block of BN = 16·WARPS keys, batch·kv head); each warp
// owns 16 keys. Streams query blocks of BM rows for every query head of
// the group. Dynamic shared memory: K, V [BN, D]; Q, dO [2 stages][BM, D];
// lse, delta [2][BM] f32; dSᵀ [BN, BM]. Grid (⌈TK/BN⌉, B·HKV).
template <typename T, i64 B, i64 H, i64 HKV, i64 TQ, i64 TK, int D, bool CAUSAL, int WARPS,
          int BM, bool BTHD = false, int PACK = 1, bool ORDERED = false, bool BIAS = false,
          int STAGES = 2>
__device__ void backward(const T *q, const T *k, const T *v, const float *lse, const T *dout,
                         const float *delta, float *dqAccum, T *dq, T *dk, T *dv, float scale,
                         int *order, const int *seg = nullptr, float *biasPartial = nullptr) {
  constexpr int BN = WARPS * 16, THREADS = WARPS * 32;
  constexpr int KS = D / 16, NQ = BM / 8, NO = D / 8, QK = BM / 16, KK = BN / 16;
  constexpr i64 G = H / HKV;
  static_assert(D % 64 == 0 && BM == 64, "head dims of 64 or 128, query blocks of 64");
  extern __shared__ __align__(128) unsigned char smem[];
  const u32 sK = smemAddress(smem), sV = sK + BN * D * 2, sQ = sV + BN * D * 2,
            sO = sQ + 2 * BM * D * 2, sDS = sO + 2 * BM * D * 2;
  float *sStats = reinterpret_cast<float *>(smem + (2 * BN + 4 * BM) * D * 2 + BN * BM * 2);
  // sStats: lse [2][BM] then delta [2][BM]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;

  i64 keyBlock, bkv;
  blockPlace<ORDERED, CAUSAL>(order, keyBlock, bkv);
  const i64 b = bkv / HKV, kvh = bkv % HKV;
  const i64 k0 = keyBlock * BN;
  constexpr int KBLOCKS = (int)CEIL_DIV(TK, (i64)BN);
  // Row strides: q, k and v (packed or not); dout (never packed).
  constexpr i64 QS = BTHD ? H * D * PACK : D, KVS = BTHD ? HKV * D * PACK : D, OS = BTHD ? H * D : D;
  const T *kb = k + rowOffset<HKV, TK, D, BTHD, PACK>(b, kvh, 0),
          *vb = v + rowOffset<HKV, TK, D, BTHD, PACK>(b, kvh, 0);
  const float scaleLog2 = scale * kLog2e;
  // Causal: query blocks before the first one holding a query >= k0 see
  // none of these keys.
  const int iStart = CAUSAL ? (int)(k0 / BM) : 0;
  constexpr int QBLOCKS = (int)CEIL_DIV(TQ, (i64)BM);
  // Packed documents in order: query blocks after the last key's document
  // see none of these keys.
  const int iEnd = seg ? queryBlockEnd<THREADS, BM, TQ>(seg + b * TK, k0,
                                                         (k0 + BN < TK ? k0 + BN : TK) - 1, QBLOCKS)
                       : QBLOCKS;
  const int nq = iEnd - iStart; // query blocks per head
  const int steps = (int)G * nq;
  if constexpr (ORDERED && !CAUSAL)
    passTurns<THREADS, QBLOCKS>(order, b * H + kvh * G, (int)G, iEnd);

  auto issue = [&](int step) {
    const int stage = step & 1;
    const i64 h = kvh * G + step / nq;
    const i64 i0 = (i64)(iStart + step % nq) * BM;
    const i64 bh = b * H + h;
    loadTile<BM, D, THREADS, QS>(sQ + stage * BM * D * 2, q + rowOffset<H, TQ, D, BTHD, PACK>(b, h, 0),
                                 i0, TQ);
    loadTile<BM, D, THREADS, OS>(sO + stage * BM * D * 2, dout + rowOffset<H, TQ, D, BTHD>(b, h, 0), i0,
                                 TQ);
    loadRowStats<BM, THREADS, TQ>(sStats, stage, lse, delta, bh, i0);
  };

  loadTile<BN, D, THREADS, KVS>(sK, kb, k0, TK);
  loadTile<BN, D, THREADS, KVS>(sV, vb, k0, TK);
  if (steps > 0)
    issue(0);
  commit();

  float dK[NO][4], dV[NO][4];
#pragma unroll
  for (int n = 0; n < NO; ++n)
    dK[n][0] = dK[n][1] = dK[n][2] = dK[n][3] = dV[n][0] = dV[n][1] = dV[n][2] = dV[n][3] = 0.f;
  const i64 key0 = k0 + warp * 16 + g; // this thread's keys: key0, key0 + 8
  // The warp's K and V fragments (the A operands of Sᵀ and dPᵀ) are the
  // same for every query block: at D = 64 they stay in registers (32 more
  // per thread, within the two blocks an SM holds), at D = 128 they would
  // not fit and are re-read from shared memory each step.
  constexpr bool HOLD_KV = D == 64;
  u32 kHeld[HOLD_KV ? KS : 1][4], vHeld[HOLD_KV ? KS : 1][4];
  if constexpr (HOLD_KV) {
    waitGroups<0>();
    __syncthreads(); // K and V in shared memory (and step 0's tiles)
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      ldmatrix(kHeld[ks], sK + swizzled<D>(warp * 16 + (lane & 15), ks * 16 + (lane >> 4) * 8));
      ldmatrix(vHeld[ks], sV + swizzled<D>(warp * 16 + (lane & 15), ks * 16 + (lane >> 4) * 8));
    }
  }

  for (int step = 0; step < steps; ++step) {
    const int stage = step & 1;
    const i64 h = kvh * G + step / nq;
    const i64 i0 = (i64)(iStart + step % nq) * BM;
    const i64 bh = b * H + h;
    if (step + 1 < steps)
      issue(step + 1);
    commit();
    waitGroups<1>();
    __syncthreads(); // this step's tiles visible; every warp is done with step - 1
    const u32 q_ = sQ + stage * BM * D * 2, o_ = sO + stage * BM * D * 2;
    const float *lse_ = sStats + stage * BM, *delta_ = sStats + 2 * BM + stage * BM;

    // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ: 16 keys of this warp × BM queries.
    float st[NQ][4], dpt[NQ][4];
#pragma unroll
    for (int n = 0; n < NQ; ++n)
      st[n][0] = st[n][1] = st[n][2] = st[n][3] = dpt[n][0] = dpt[n][1] = dpt[n][2] = dpt[n][3] = 0.f;
#pragma unroll
    for (int ks = 0; ks < KS; ++ks) {
      u32 kf[4], vf[4];
      if constexpr (HOLD_KV) {
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          kf[r] = kHeld[ks][r];
          vf[r] = vHeld[ks][r];
        }
      } else {
        ldmatrix(kf, sK + swizzled<D>(warp * 16 + (lane & 15), ks * 16 + (lane >> 4) * 8));
        ldmatrix(vf, sV + swizzled<D>(warp * 16 + (lane & 15), ks * 16 + (lane >> 4) * 8));
      }
#pragma unroll
      for (int np = 0; np < NQ / 2; ++np) {
        u32 qf[4], of[4];
        const int row = np * 16 + (lane & 7) + (lane >> 4) * 8, col = ks * 16 + ((lane >> 3) & 1) * 8;
        ldmatrix(qf, q_ + swizzled<D>(row, col));
        ldmatrix(of, o_ + swizzled<D>(row, col));
        mma<T>(st[2 * np], kf, qf[0], qf[1]);
        mma<T>(st[2 * np + 1], kf, qf[2], qf[3]);
        mma<T>(dpt[2 * np], vf, of[0], of[1]);
        mma<T>(dpt[2 * np + 1], vf, of[2], of[3]);
      }
    }

    // Pᵀ = exp(S·scale − lse) and dSᵀ = Pᵀ ∘ (dPᵀ − delta), masked where
    // a query precedes a key (causal) or either is past the end.
    const bool masked = seg || (CAUSAL && i0 < k0 + BN - 1) || (TQ % BM != 0 && i0 + BM > TQ) ||
                        (TK % BN != 0 && k0 + BN > TK);
    const int *segb = seg ? seg + b * TK : nullptr;
    int lo[2] = {0, 0}, hi[2] = {BM, BM};
    if (masked)
      keyHalfBounds<BM, TQ, TK, CAUSAL>(key0, i0, t, lo, hi);
    u32 pf[QK][4], dsf[QK][4];
#pragma unroll
    for (int n = 0; n < NQ; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = n * 8 + (e & 1), col = c + 2 * t;
        float p = exp2Approx(fmaf(st[n][e], scaleLog2, -lse_[col] * kLog2e));
        if (masked && (c < lo[e >> 1] || c >= hi[e >> 1] ||
                       (segb && segb[i0 + col] != segb[key0 + (e >> 1) * 8])))
          p = 0.f;
        st[n][e] = p;
        dpt[n][e] = p * (dpt[n][e] - delta_[col]);
      }
#pragma unroll
    for (int kk = 0; kk < QK; ++kk) {
      pf[kk][0] = pack<T>(st[2 * kk][0], st[2 * kk][1]);
      pf[kk][1] = pack<T>(st[2 * kk][2], st[2 * kk][3]);
      pf[kk][2] = pack<T>(st[2 * kk + 1][0], st[2 * kk + 1][1]);
      pf[kk][3] = pack<T>(st[2 * kk + 1][2], st[2 * kk + 1][3]);
      dsf[kk][0] = pack<T>(dpt[2 * kk][0], dpt[2 * kk][1]);
      dsf[kk][1] = pack<T>(dpt[2 * kk][2], dpt[2 * kk][3]);
      dsf[kk][2] = pack<T>(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]);
      dsf[kk][3] = pack<T>(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3]);
    }
    // dSᵀ to shared memory for dq (rows: keys, BM queries each).
#pragma unroll
    for (int kk = 0; kk < QK; ++kk)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = warp * 16 + g + (e & 1) * 8, col = kk * 16 + (e >> 1) * 8 + 2 * t;
        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sDS + swizzled<BM>(row, col)),
                     "r"(dsf[kk][e]));
      }

    // dV += Pᵀ·dO and dK += dSᵀ·Q: the query blocks' rows are B's rows.
#pragma unroll
    for (int kk = 0; kk < QK; ++kk)
#pragma unroll
      for (int np = 0; np < NO / 2; ++np) {
        u32 of[4], qf[4];
        const int row = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8, col = np * 16 + (lane >> 4) * 8;
        ldmatrixTrans(of, o_ + swizzled<D>(row, col));
        ldmatrixTrans(qf, q_ + swizzled<D>(row, col));
        mma<T>(dV[2 * np], pf[kk], of[0], of[1]);
        mma<T>(dV[2 * np + 1], pf[kk], of[2], of[3]);
        mma<T>(dK[2 * np], dsf[kk], qf[0], qf[1]);
        mma<T>(dK[2 * np + 1], dsf[kk], qf[2], qf[3]);
      }
    __syncthreads(); // dSᵀ complete

    // dQ += dS·K: warp w takes query rows (w % QK)·16 and the d-tiles
    // (w / QK)·NO_W … of its share; dS from dSᵀ by a transposing load.
    constexpr int SPLIT = WARPS / QK, NOW = NO / SPLIT; // d-tiles per warp
    static_assert(WARPS % QK == 0 && NO % SPLIT == 0 && NOW % 2 == 0, "dq tiling");
    {
      const int mq = warp % QK, d0 = (warp / QK) * NOW;
      float dq[NOW][4];
#pragma unroll
      for (int n = 0; n < NOW; ++n)
        dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.f;
#pragma unroll
      for (int kk = 0; kk < KK; ++kk) {
        u32 af[4];
        // Matrix i = lane / 8: keys kk·16 + (i >> 1)·8 + lane % 8, queries
        // mq·16 + (i & 1)·8: a0..a3 of dS (rows queries, columns keys).
        ldmatrixTrans(af, sDS + swizzled<BM>(kk * 16 + (lane & 7) + (lane >> 4) * 8,
                                             mq * 16 + ((lane >> 3) & 1) * 8));
#pragma unroll
        for (int np = 0; np < NOW / 2; ++np) {
          u32 kf[4];
          ldmatrixTrans(kf, sK + swizzled<D>(kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8,
                                             (d0 + 2 * np) * 8 + (lane >> 4) * 8));
          mma<T>(dq[2 * np], af, kf[0], kf[1]);
          mma<T>(dq[2 * np + 1], af, kf[2], kf[3]);
        }
      }
      int *turn = nullptr;
      if constexpr (ORDERED)
        turn = awaitDqTurn<CAUSAL, BM, BN, KBLOCKS, QBLOCKS>(order, bh, i0 / BM, keyBlock);
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const i64 query = i0 + mq * 16 + g + half * 8;
        if (query >= TQ)
          continue;
        float *dst = dqAccum + (bh * TQ + query) * D + d0 * 8 + 2 * t;
#pragma unroll
        for (int n = 0; n < NOW; ++n)
          addTo(dst + n * 8, dq[n][2 * half], dq[n][2 * half + 1]);
      }
      if constexpr (ORDERED)
        endTurn(turn);
    }
    // No barrier here: the dq phase reads only dSᵀ and K, and the next
    // step's first barrier comes before anything rewrites dSᵀ; this step's
    // stage is next rewritten by step + 2's loads, issued after every warp
    // passed this step's second barrier, its last read of the stage.
  }
  waitGroups<0>();

  // dK (times the scale) and dV in the low type.
  storeKeyGrads<T, HKV, TK, D, BTHD, PACK>(dK, dV, dk, dv, b, kvh, key0, t, scale);
  if constexpr (BIAS) {
    static_assert(PACK == 3 && H == HKV, "the bias gradient of a packed qkv projection");
    keyGradColumnSums<T, TK, D, WARPS>(dK, dV, key0, scale, reinterpret_cast<float *>(smem),
                                       biasPartial + ((b * KBLOCKS + keyBlock) * HKV + kvh) * 3 * D);
  }
  if constexpr (STAGES > 0)
    finishDq<T, B, H, HKV, TQ, D, BTHD, PACK, THREADS, BN, KBLOCKS, STAGES, BIAS>(
        order, dqAccum, dq, scale, biasPartial, bkv, smem);
}

// ---------------------------------------------------------------------------
// Backward on Hopper's warpgroup MMA (sm_90a)
// ---------------------------------------------------------------------------
//
// The same algorithm as `backward`, with the products on `wgmma`: a
// warpgroup (4 warps) multiplies 64 rows at a time and reads its
// shared-memory operands itself, so the ldmatrix traffic that bounds the
// mma.sync backward (every warp re-reading the whole Q and dO tiles) is
// gone. Products, per warpgroup of 64 keys:
//   Sᵀ, dPᵀ = K·Qᵀ, V·dOᵀ   both operands K-major in shared memory
//   dV, dK += Pᵀ·dO, dSᵀ·Q   Pᵀ and dSᵀ from registers (the accumulators'
//                            C layout is the A fragment, as with mma.sync),
//                            dO and Q MN-major (transposed) in shared memory
//   dQ = dS·K                dSᵀ through shared memory, both MN-major; the
//                            warpgroups split dq's columns
// Shared tiles use the 128-byte swizzle of the wgmma descriptors: a tile of
// R rows is stored as column halves of 64 elements, [D / 64][R][64], each
// 128-byte row's 16-byte chunk c at c ^ (row % 8), every tile 1024-byte
// aligned (the swizzle is on address bits 4-6 by bits 7-9). PTX ISA,
// "Asynchronous Warpgroup Level Matrix Multiply-Accumulate": matrix
// descriptors, canonical layouts and the register fragments.

#define KILN_ACC(d, j, CON) CON(d[j][0]), CON(d[j][1]), CON(d[j][2]), CON(d[j][3])

#define KILN_WGMMA_SS64(TYPE, CON)                                                        \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"                                    \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE " "                      \
               "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "\
               "%32, %33, p, 1, 1, %35, %36;\n}\n"                                           \
               : KILN_ACC(d, 0, CON), KILN_ACC(d, 1, CON), KILN_ACC(d, 2, CON), KILN_ACC(d, 3, CON), KILN_ACC(d, 4, CON), KILN_ACC(d, 5, CON), KILN_ACC(d, 6, CON), KILN_ACC(d, 7, CON)                                                                 \
               : "l"(a), "l"(b), "r"((int)ACC), "n"(TRANS_A), "n"(TRANS_B))

#define KILN_WGMMA_RS64(TYPE, CON)                                                        \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                    \
               "wgmma.mma_async.sync.aligned.m64n64k16.f32." TYPE "." TYPE " "                      \
               "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, "\
               "{%32, %33, %34, %35}, %36, p, 1, 1, %38;\n}\n"                          \
               : KILN_ACC(d, 0, CON), KILN_ACC(d, 1, CON), KILN_ACC(d, 2, CON), KILN_ACC(d, 3, CON), KILN_ACC(d, 4, CON), KILN_ACC(d, 5, CON), KILN_ACC(d, 6, CON), KILN_ACC(d, 7, CON)                                                                 \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"((int)ACC), "n"(TRANS_B))

#define KILN_WGMMA_SS128(TYPE, CON)                                                        \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"                                    \
               "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " "                      \
               "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "\
               "%64, %65, p, 1, 1, %67, %68;\n}\n"                                           \
               : KILN_ACC(d, 0, CON), KILN_ACC(d, 1, CON), KILN_ACC(d, 2, CON), KILN_ACC(d, 3, CON), KILN_ACC(d, 4, CON), KILN_ACC(d, 5, CON), KILN_ACC(d, 6, CON), KILN_ACC(d, 7, CON), KILN_ACC(d, 8, CON), KILN_ACC(d, 9, CON), KILN_ACC(d, 10, CON), KILN_ACC(d, 11, CON), KILN_ACC(d, 12, CON), KILN_ACC(d, 13, CON), KILN_ACC(d, 14, CON), KILN_ACC(d, 15, CON)                                                                 \
               : "l"(a), "l"(b), "r"((int)ACC), "n"(TRANS_A), "n"(TRANS_B))

#define KILN_WGMMA_RS128(TYPE, CON)                                                        \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                    \
               "wgmma.mma_async.sync.aligned.m64n128k16.f32." TYPE "." TYPE " "                      \
               "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "\
               "{%64, %65, %66, %67}, %68, p, 1, 1, %70;\n}\n"                          \
               : KILN_ACC(d, 0, CON), KILN_ACC(d, 1, CON), KILN_ACC(d, 2, CON), KILN_ACC(d, 3, CON), KILN_ACC(d, 4, CON), KILN_ACC(d, 5, CON), KILN_ACC(d, 6, CON), KILN_ACC(d, 7, CON), KILN_ACC(d, 8, CON), KILN_ACC(d, 9, CON), KILN_ACC(d, 10, CON), KILN_ACC(d, 11, CON), KILN_ACC(d, 12, CON), KILN_ACC(d, 13, CON), KILN_ACC(d, 14, CON), KILN_ACC(d, 15, CON)                                                                 \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"((int)ACC), "n"(TRANS_B))

#define KILN_WGMMA_SS32(TYPE, CON)                                                        \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %18, 0;\n"                                    \
               "wgmma.mma_async.sync.aligned.m64n32k16.f32." TYPE "." TYPE " "                      \
               "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, "\
               "%16, %17, p, 1, 1, %19, %20;\n}\n"                                           \
               : KILN_ACC(d, 0, CON), KILN_ACC(d, 1, CON), KILN_ACC(d, 2, CON), KILN_ACC(d, 3, CON)                                                                 \
               : "l"(a), "l"(b), "r"((int)ACC), "n"(TRANS_A), "n"(TRANS_B))


#define KILN_ADD(x) "+f"(x)
#define KILN_SET(x) "=f"(x)

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
// d (m64 × N) = a·b, or += with ACC, a and b in shared memory; TRANS_A/B 1
// when the operand is MN-major. N = 8 · (the first extent of d).
template <typename T, int TRANS_A, int TRANS_B, bool ACC = true, int NT>
__device__ __forceinline__ void wgmmaSS(float (&d)[NT][4], unsigned long long a,
                                        unsigned long long b) {
  static_assert(NT == 4 || NT == 8 || NT == 16, "n32, n64 or n128");
  if constexpr (NT == 4 && ACC) {
    if constexpr (IsBf16<T>::value) KILN_WGMMA_SS32("bf16", KILN_ADD); else KILN_WGMMA_SS32("f16", KILN_ADD);
  } else if constexpr (NT == 4) {
    if constexpr (IsBf16<T>::value) KILN_WGMMA_SS32("bf16", KILN_SET); else KILN_WGMMA_SS32("f16", KILN_SET);
  } else if constexpr (NT == 8 && ACC) {
    if constexpr (IsBf16<T>::value) KILN_WGMMA_SS64("bf16", KILN_ADD); else KILN_WGMMA_SS64("f16", KILN_ADD);
  } else if constexpr (NT == 8) {
    if constexpr (IsBf16<T>::value) KILN_WGMMA_SS64("bf16", KILN_SET); else KILN_WGMMA_SS64("f16", KILN_SET);
  } else if constexpr (ACC) {
    if constexpr (IsBf16<T>::value) KILN_WGMMA_SS128("bf16", KILN_ADD); else KILN_WGMMA_SS128("f16", KILN_ADD);
  } else {
    if constexpr (IsBf16<T>::value) KILN_WGMMA_SS128("bf16", KILN_SET); else KILN_WGMMA_SS128("f16", KILN_SET);
  }
}
// d (m64 × N) += a·b, a in registers (each warp's 16 rows as the
// m16n8k16 A fragment), b in shared memory.
template <typename T, int TRANS_B, int NT>
__device__ __forceinline__ void wgmmaRS(float (&d)[NT][4], const u32 (&a)[4],
                                        unsigned long long b) {
  static_assert(NT == 8 || NT == 16, "n64 or n128");
  constexpr bool ACC = true;
  if constexpr (NT == 8) {
    if constexpr (IsBf16<T>::value) KILN_WGMMA_RS64("bf16", KILN_ADD); else KILN_WGMMA_RS64("f16", KILN_ADD);
  } else {
    if constexpr (IsBf16<T>::value) KILN_WGMMA_RS128("bf16", KILN_ADD); else KILN_WGMMA_RS128("f16", KILN_ADD);
  }
}

// Orders this thread's register and shared-memory writes before the
// warpgroup's next wgmma reads them.
__device__ __forceinline__ void wgmmaFence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmmaCommit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N> __device__ __forceinline__ void wgmmaWait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Shared-memory writes of the generic proxy (st.shared, cp.async) visible
// to the async proxy wgmma reads through.
__device__ __forceinline__ void fenceProxyAsync() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
// Keeps registers an in-flight wgmma reads or writes where they are: the
// compiler sees the asm above as done when issued, so without this it
// could read an accumulator before the wait, or reuse an A operand's
// registers while the tensor cores still read them.
template <int N> __device__ __forceinline__ void keep(float (&d)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
    asm volatile("" : "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])::"memory");
}
template <int N> __device__ __forceinline__ void keep(u32 (&a)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i)
    asm volatile("" : "+r"(a[i][0]), "+r"(a[i][1]), "+r"(a[i][2]), "+r"(a[i][3])::"memory");
}
#endif

// A shared-memory matrix descriptor: start address, leading and stride
// byte offsets, 128-byte swizzle. The start address field is the
// address's bits 4-17 in the low word's low 14 bits, so the descriptor of
// a place `offset` bytes into a tile is the tile's field plus offset / 16
// in the low word (shared memory ends below 256 KiB: no carry into the
// leading offset), and the high word is a constant. Written so, each
// descriptor in a loop is one add to a field computed once a tile;
// masking and shifting each operand's address cost the wgmma kernels
// about 10 uniform-datapath instructions a wgmma (Nsight Compute's
// per-instruction counts, bench/RESULTS.md, nineteenth session).
__device__ __forceinline__ u32 descField(u32 address) { return (address & 0x3FFFF) >> 4; }
template <u32 LEADING, u32 STRIDE>
__device__ __forceinline__ unsigned long long wgmmaDesc(u32 field, u32 offset) {
  const u32 lo = field + (offset >> 4) + ((LEADING >> 4) << 16);
  constexpr unsigned long long hi = (unsigned long long)((STRIDE >> 4) | (1u << 30)) << 32;
  return hi | lo;
}

// Byte offset of element (row, col) in a wgmma tile of R rows.
template <int R> __device__ __forceinline__ u32 wgmmaOffset(int row, int col) {
  return (col >> 6) * (R * 128) + row * 128 + ((((col >> 3) & 7) ^ (row & 7)) << 4) +
         ((col & 7) << 1);
}

// loadTile into a wgmma tile of R rows. Thread x copies the 16-byte chunk
// x % C of rows x / C + k·RS (RS = THREADS / C, a multiple of 8): rows 8·j
// apart have one swizzle, so every copy's shared and global addresses are
// the first one's plus constants. (Computing each chunk's place from a
// loop index took about 550 instructions a thread per backward step at
// GPT-2's shape, half of all the kernel executed: Nsight Compute's
// per-instruction counts, bench/RESULTS.md, eighteenth session.)
template <int R, int D, int THREADS, i64 STRIDE, typename T>
__device__ __forceinline__ void loadTileWgmma(u32 tile, const T *base, i64 row0, i64 limit) {
  constexpr int C = D / 8, RS = THREADS / C;
  static_assert(THREADS % C == 0 && RS % 8 == 0 && R % RS == 0,
                "each thread copies one column chunk of rows a multiple of 8 apart");
  const int c = threadIdx.x % C, r = threadIdx.x / C;
  const u32 dst = tile + wgmmaOffset<R>(r, c * 8);
  const T *src = base + (row0 + r) * STRIDE + c * 8;
#pragma unroll
  for (int k = 0; k < R / RS; ++k) {
    const bool valid = row0 + r + k * RS < limit;
    copy16(dst + k * RS * 128, valid ? src + k * RS * STRIDE : base, valid);
  }
}

// K-major operand rows [row0, row0 + 64) × k-step ks (16 columns) of a
// tile of R rows: 8-row groups 1024 bytes apart, the k-step 32 bytes into
// its 128-byte rows.
template <int R> __device__ __forceinline__ unsigned long long kMajor(u32 tile, int row0, int ks) {
  return wgmmaDesc<16, 1024>(descField(tile), (ks >> 2) * (R * 128) + row0 * 128 + (ks & 3) * 32);
}
// MN-major operand: rows [16·kk, 16·kk + 16) of a tile of R rows are the
// k-step, its columns from `half`·64 the M or N extent (64-column halves
// R·128 bytes apart).
template <int R> __device__ __forceinline__ unsigned long long mnMajor(u32 tile, int kk, int half) {
  return wgmmaDesc<R * 128, 1024>(descField(tile), half * (R * 128) + kk * 2048);
}

// One block per (key block of BN = 64·WGS keys, batch·kv head), WGS
// warpgroups of 64 keys; query blocks of 64. The warpgroups split dq's D
// columns: DQ = D / WGS each (32, 64 or 128). With DQ = 32 (D = 64, two
// warpgroups) K is also kept transposed, Kᵀ [D, BN], so that a
// warpgroup's 32 columns of d are whole 8-row groups of a K-major operand.
// DQ_FIRST: dq's product is issued before dV's and dK's, and its sums
// leave while the tensor cores compute those two.
// Dynamic shared memory: 1024 bytes of alignment slack, K, V [BN, D]; Q,
// dO [2 stages][64, D]; dSᵀ [BN, 64]; with DQ = 32 Kᵀ [D, BN]; lse, delta
// [2][64] f32. Grid (⌈TK/BN⌉, B·HKV). Needs sm_90a.
template <typename T, i64 B, i64 H, i64 HKV, i64 TQ, i64 TK, int D, bool CAUSAL, int WGS,
          bool BTHD = false, int PACK = 1, bool DQ_FIRST = false, bool ORDERED = false,
          bool BIAS = false, int STAGES = 2>
__device__ void backwardWgmma(const T *q, const T *k, const T *v, const float *lse, const T *dout,
                              const float *delta, float *dqAccum, T *dq, T *dk, T *dv, float scale,
                              int *order, const int *seg = nullptr,
                              float *biasPartial = nullptr) {
#if !defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(sizeof(T) == 0, "the wgmma backward needs sm_90a");
#else
  constexpr int BM = 64, BN = 64 * WGS, THREADS = 128 * WGS;
  constexpr int KS = D / 16, NQ = BM / 8, NO = D / 8, QK = BM / 16, KK = BN / 16;
  constexpr i64 G = H / HKV;
  constexpr int DQ = D / WGS; // dq columns of a warpgroup
  static_assert(D % 64 == 0 && (DQ == 32 || DQ == 64 || DQ == 128), "dq columns of 32, 64 or 128");
  constexpr u32 KV_BYTES = BN * D * 2, QO_BYTES = BM * D * 2;
  extern __shared__ __align__(128) unsigned char smem[];
  const u32 raw = smemAddress(smem), base = (raw + 1023) & ~1023u;
  const u32 sK = base, sV = sK + KV_BYTES, sQ = sV + KV_BYTES, sO = sQ + 2 * QO_BYTES,
            sDS = sO + 2 * QO_BYTES, sKT = sDS + BN * BM * 2;
  float *sStats = reinterpret_cast<float *>(smem + (sKT + (DQ == 32 ? KV_BYTES : 0) - raw));
  // sStats: lse [2][BM] then delta [2][BM]
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int wg = warp / 4;

  i64 keyBlock, bkv;
  blockPlace<ORDERED, CAUSAL>(order, keyBlock, bkv);
  const i64 b = bkv / HKV, kvh = bkv % HKV;
  const i64 k0 = keyBlock * BN;
  constexpr int KBLOCKS = (int)CEIL_DIV(TK, (i64)BN);
  constexpr i64 QS = BTHD ? H * D * PACK : D, KVS = BTHD ? HKV * D * PACK : D, OS = BTHD ? H * D : D;
  const T *kb = k + rowOffset<HKV, TK, D, BTHD, PACK>(b, kvh, 0),
          *vb = v + rowOffset<HKV, TK, D, BTHD, PACK>(b, kvh, 0);
  const float scaleLog2 = scale * kLog2e;
  const int iStart = CAUSAL ? (int)(k0 / BM) : 0;
  constexpr int QBLOCKS = (int)CEIL_DIV(TQ, (i64)BM);
  const int iEnd = seg ? queryBlockEnd<THREADS, BM, TQ>(seg + b * TK, k0,
                                                         (k0 + BN < TK ? k0 + BN : TK) - 1, QBLOCKS)
                       : QBLOCKS;
  const int nq = iEnd - iStart;
  const int steps = (int)G * nq;
  if constexpr (ORDERED && !CAUSAL)
    passTurns<THREADS, QBLOCKS>(order, b * H + kvh * G, (int)G, iEnd);

  // Step s is query block iStart + s % nq of head kvh·G + s / nq: the
  // loop keeps both as counters (h, qBlock) rather than dividing.
  auto issue = [&](int stage, i64 h, int qBlock) {
    const i64 i0 = (i64)qBlock * BM;
    const i64 bh = b * H + h;
    loadTileWgmma<BM, D, THREADS, QS>(sQ + stage * QO_BYTES,
                                      q + rowOffset<H, TQ, D, BTHD, PACK>(b, h, 0), i0, TQ);
    loadTileWgmma<BM, D, THREADS, OS>(sO + stage * QO_BYTES,
                                      dout + rowOffset<H, TQ, D, BTHD>(b, h, 0), i0, TQ);
    loadRowStats<BM, THREADS, TQ>(sStats, stage, lse, delta, bh, i0);
  };

  loadTileWgmma<BN, D, THREADS, KVS>(sK, kb, k0, TK);
  loadTileWgmma<BN, D, THREADS, KVS>(sV, vb, k0, TK);
  if (steps > 0)
    issue(0, kvh * G, iStart);
  commit();

  float dK[NO][4], dV[NO][4];
#pragma unroll
  for (int n = 0; n < NO; ++n)
    dK[n][0] = dK[n][1] = dK[n][2] = dK[n][3] = dV[n][0] = dV[n][1] = dV[n][2] = dV[n][3] = 0.f;
  const i64 key0 = k0 + warp * 16 + g; // this thread's keys: key0, key0 + 8
  if constexpr (DQ == 32) {
    // Kᵀ from K, once (visible to the tensor cores after step 0's fence
    // and barrier).
    waitGroups<0>();
    __syncthreads();
    for (int i = threadIdx.x; i < BN * D; i += THREADS) {
      const int key = i / D, col = i % D;
      const unsigned short x =
          *reinterpret_cast<const unsigned short *>(smem + (sK - raw) + wgmmaOffset<BN>(key, col));
      *reinterpret_cast<unsigned short *>(smem + (sKT - raw) + wgmmaOffset<D>(col, key)) = x;
    }
  }

  i64 h = kvh * G;
  int qBlock = iStart;
  for (int step = 0; step < steps; ++step) {
    const int stage = step & 1;
    const i64 i0 = (i64)qBlock * BM;
    const i64 bh = b * H + h;
    // The next step's query block and head.
    const bool headEnds = qBlock + 1 == iEnd;
    const int nextBlock = headEnds ? iStart : qBlock + 1;
    const i64 nextHead = headEnds ? h + 1 : h;
    waitGroups<0>(); // this step's tiles (and K, V)
    fenceProxyAsync();
    // Visible to every warpgroup; every wgmma of step - 1 is complete (each
    // warp waited for its own), so step + 1 may load into its stage.
    __syncthreads();
    if (step + 1 < steps)
      issue(stage ^ 1, nextHead, nextBlock);
    commit();
    const u32 q_ = sQ + stage * QO_BYTES, o_ = sO + stage * QO_BYTES;
    const float *lse_ = sStats + stage * BM, *delta_ = sStats + 2 * BM + stage * BM;

    // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ: this warpgroup's 64 keys × 64 queries.
    float st[NQ][4], dpt[NQ][4]; // set by the first k-step
    wgmmaFence();
    wgmmaSS<T, 0, 0, false>(st, kMajor<BN>(sK, 64 * wg, 0), kMajor<BM>(q_, 0, 0));
#pragma unroll
    for (int ks = 1; ks < KS; ++ks)
      wgmmaSS<T, 0, 0>(st, kMajor<BN>(sK, 64 * wg, ks), kMajor<BM>(q_, 0, ks));
    wgmmaSS<T, 0, 0, false>(dpt, kMajor<BN>(sV, 64 * wg, 0), kMajor<BM>(o_, 0, 0));
#pragma unroll
    for (int ks = 1; ks < KS; ++ks)
      wgmmaSS<T, 0, 0>(dpt, kMajor<BN>(sV, 64 * wg, ks), kMajor<BM>(o_, 0, ks));
    wgmmaCommit();
    wgmmaWait<0>();
    keep(st);
    keep(dpt);

    const bool masked = seg || (CAUSAL && i0 < k0 + BN - 1) || (TQ % BM != 0 && i0 + BM > TQ) ||
                        (TK % BN != 0 && k0 + BN > TK);
    const int *segb = seg ? seg + b * TK : nullptr;
    int lo[2] = {0, 0}, hi[2] = {BM, BM};
    if (masked)
      keyHalfBounds<BM, TQ, TK, CAUSAL>(key0, i0, t, lo, hi);
    u32 pf[QK][4], dsf[QK][4];
#pragma unroll
    for (int n = 0; n < NQ; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int c = n * 8 + (e & 1), col = c + 2 * t;
        float p = exp2Approx(fmaf(st[n][e], scaleLog2, -lse_[col] * kLog2e));
        if (masked && (c < lo[e >> 1] || c >= hi[e >> 1] ||
                       (segb && segb[i0 + col] != segb[key0 + (e >> 1) * 8])))
          p = 0.f;
        st[n][e] = p;
        dpt[n][e] = p * (dpt[n][e] - delta_[col]);
      }
#pragma unroll
    for (int kk = 0; kk < QK; ++kk) {
      pf[kk][0] = pack<T>(st[2 * kk][0], st[2 * kk][1]);
      pf[kk][1] = pack<T>(st[2 * kk][2], st[2 * kk][3]);
      pf[kk][2] = pack<T>(st[2 * kk + 1][0], st[2 * kk + 1][1]);
      pf[kk][3] = pack<T>(st[2 * kk + 1][2], st[2 * kk + 1][3]);
      dsf[kk][0] = pack<T>(dpt[2 * kk][0], dpt[2 * kk][1]);
      dsf[kk][1] = pack<T>(dpt[2 * kk][2], dpt[2 * kk][3]);
      dsf[kk][2] = pack<T>(dpt[2 * kk + 1][0], dpt[2 * kk + 1][1]);
      dsf[kk][3] = pack<T>(dpt[2 * kk + 1][2], dpt[2 * kk + 1][3]);
    }
    // dSᵀ to shared memory for dq (rows: keys, 64 queries each).
#pragma unroll
    for (int kk = 0; kk < QK; ++kk)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int row = warp * 16 + g + (e & 1) * 8, col = kk * 16 + (e >> 1) * 8 + 2 * t;
        asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(sDS + wgmmaOffset<BN>(row, col)),
                     "r"(dsf[kk][e]));
      }
    fenceProxyAsync();

    // dV += Pᵀ·dO and dK += dSᵀ·Q (the query block's rows are the k-steps);
    // dQ = dS·K: 64 queries × this warpgroup's DQ columns of d, the keys
    // the k-steps; K MN-major (its 64-column half wg), or with DQ = 32 Kᵀ
    // K-major (its rows 32·wg …). dQ reads dSᵀ from shared memory, so it
    // waits for every warp's part.
    auto keyGrads = [&] {
#pragma unroll
      for (int kk = 0; kk < QK; ++kk)
        wgmmaRS<T, 1>(dV, pf[kk], mnMajor<BM>(o_, kk, 0));
#pragma unroll
      for (int kk = 0; kk < QK; ++kk)
        wgmmaRS<T, 1>(dK, dsf[kk], mnMajor<BM>(q_, kk, 0));
      wgmmaCommit();
    };
    float dq[DQ / 8][4]; // set by the first k-step
    auto queryGrads = [&] {
      auto kOperand = [&](int kk) {
        if constexpr (DQ == 32)
          return kMajor<D>(sKT, 32 * wg, kk);
        else
          return mnMajor<BN>(sK, kk, wg * (DQ / 64));
      };
      constexpr int TRANS_K = DQ == 32 ? 0 : 1;
      wgmmaSS<T, 1, TRANS_K, false>(dq, mnMajor<BN>(sDS, 0, 0), kOperand(0));
#pragma unroll
      for (int kk = 1; kk < KK; ++kk)
        wgmmaSS<T, 1, TRANS_K>(dq, mnMajor<BN>(sDS, kk, 0), kOperand(kk));
      wgmmaCommit();
    };
    if constexpr (DQ_FIRST) {
      __syncthreads(); // dSᵀ complete
      wgmmaFence();
      queryGrads();
      keyGrads();
      wgmmaWait<1>(); // dq's product; dV's and dK's still run
      keep(dq);
    } else {
      wgmmaFence();
      keyGrads();
      __syncthreads(); // dSᵀ complete
      wgmmaFence();
      queryGrads();
      wgmmaWait<0>();
      keep(pf);
      keep(dsf);
      keep(dV);
      keep(dK);
      keep(dq);
    }
    int *turn = nullptr;
    if constexpr (ORDERED)
      turn = awaitDqTurn<CAUSAL, BM, BN, KBLOCKS, QBLOCKS>(order, bh, i0 / BM, keyBlock);
    if constexpr (WGS == 1) {
      // Four adjacent columns a thread: lanes t and t ^ 1 trade halves of
      // their pairs (an even t keeps row g, an odd t row g + 8), so each
      // `red` adds 16 bytes, half the L2 atomic operations (L2 is this
      // kernel's busiest unit at GPT-2's shape, 70 %: Nsight, 2026-12-04).
      // Measured (bench/RESULTS.md, 2026-12-04): one warpgroup at
      // (16, 12, 1024, 64) causal 0.519 -> 0.508 ms forward+backward; with
      // two warpgroups mixed (D = 128 causal -1.6 %, not causal +0.8 %,
      // D = 64 at T = 8192 +0.5 %), so those keep pairs.
      const bool odd = t & 1;
      const i64 query = i0 + (warp % 4) * 16 + g + (odd ? 8 : 0);
      float *dst = dqAccum + (bh * TQ + query) * D + 2 * (t & ~1);
#pragma unroll
      for (int n = 0; n < DQ / 8; ++n) {
        const float a = __shfl_xor_sync(0xffffffffu, odd ? dq[n][0] : dq[n][2], 1);
        const float c = __shfl_xor_sync(0xffffffffu, odd ? dq[n][1] : dq[n][3], 1);
        if (query < TQ)
          addTo4(dst + n * 8, odd ? a : dq[n][0], odd ? c : dq[n][1], odd ? dq[n][2] : a,
                 odd ? dq[n][3] : c);
      }
    } else {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const i64 query = i0 + (warp % 4) * 16 + g + half * 8;
        if (query >= TQ)
          continue;
        float *dst = dqAccum + (bh * TQ + query) * D + wg * DQ + 2 * t;
#pragma unroll
        for (int n = 0; n < DQ / 8; ++n)
          addTo(dst + n * 8, dq[n][2 * half], dq[n][2 * half + 1]);
      }
    }
    if constexpr (ORDERED)
      endTurn(turn);
    if constexpr (DQ_FIRST) {
      wgmmaWait<0>(); // dV's and dK's products
      keep(pf);
      keep(dsf);
      keep(dV);
      keep(dK);
    }
    h = nextHead;
    qBlock = nextBlock;
  }
  waitGroups<0>();

  // dK (times the scale) and dV in the low type.
  storeKeyGrads<T, HKV, TK, D, BTHD, PACK>(dK, dV, dk, dv, b, kvh, key0, t, scale);
  if constexpr (BIAS) {
    static_assert(PACK == 3 && H == HKV, "the bias gradient of a packed qkv projection");
    keyGradColumnSums<T, TK, D, 4 * WGS>(dK, dV, key0, scale, reinterpret_cast<float *>(smem),
                                         biasPartial +
                                             ((b * KBLOCKS + keyBlock) * HKV + kvh) * 3 * D);
  }
  if constexpr (STAGES > 0)
    finishDq<T, B, H, HKV, TQ, D, BTHD, PACK, THREADS, BN, KBLOCKS, STAGES, BIAS>(
        order, dqAccum, dq, scale, biasPartial, bkv, smem + (base - raw));
#endif
}

// Mask block j's scores (keys from k0) and take its online-softmax step in
// base 2 (as in `forward`): s becomes P's unnormalized values, m and l move
// on, and alpha[half] is the factor the rows' O must be rescaled by (left
// to the caller: with PIPELINED, O is still being written by the previous
// block's wgmma).
template <i64 TQ, i64 TK, int BN, bool CAUSAL>
__device__ __forceinline__ void softmaxStep(float (&s)[BN / 8][4], float (&m)[2], float (&l)[2],
                                            float (&alpha)[2], i64 row0, i64 k0, i64 q0, int t,
                                            const int *segb, float scaleLog2) {
  constexpr int NS = BN / 8;
  const bool masked = segb || (CAUSAL && k0 + BN - 1 > q0) || (TK % BN != 0 && k0 + BN > TK);
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const i64 row = row0 + half * 8;
    const int rowSeg = segb && row < TQ ? segb[row] : 0;
    // Element (n, e) is key k0 + 2t + c, c = 8n + e: past the tail or the
    // causal diagonal when c ≥ limit (one 32-bit compare with a constant).
    const i64 keyEnd = CAUSAL && row + 1 < TK ? row + 1 : TK;
    const int limit = masked ? clampTo<BN>(keyEnd - k0 - 2 * t) : BN;
    float mx = negInf<float>();
#pragma unroll
    for (int n = 0; n < NS; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float &x = s[n][2 * half + e];
        if (masked) {
          const int c = n * 8 + e;
          if (c >= limit || (segb && segb[k0 + 2 * t + c] != rowSeg))
            x = negInf<float>();
        }
        mx = fmaxf(mx, x);
      }
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float mNew = fmaxf(m[half], mx * scaleLog2);
    const float base = mNew == negInf<float>() ? 0.f : mNew;
    alpha[half] = exp2Approx(m[half] - base);
    m[half] = mNew;
    float sum = 0.f;
#pragma unroll
    for (int n = 0; n < NS; ++n)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float &x = s[n][2 * half + e];
        x = exp2Approx(fmaf(x, scaleLog2, -base));
        sum += x;
      }
    l[half] = l[half] * alpha[half] + sum; // this thread's part of the row
  }
}

// O's rows rescaled by alpha, and P (block j's exponentials) packed into
// the A fragments of O += P·V.
template <typename T, int NO, int NS>
__device__ __forceinline__ void rescaleAndPack(float (&o)[NO][4], u32 (&pf)[NS / 2][4],
                                               const float (&s)[NS][4], const float (&alpha)[2]) {
#pragma unroll
  for (int n = 0; n < NO; ++n) {
    o[n][0] *= alpha[0];
    o[n][1] *= alpha[0];
    o[n][2] *= alpha[1];
    o[n][3] *= alpha[1];
  }
#pragma unroll
  for (int kk = 0; kk < NS / 2; ++kk) {
    pf[kk][0] = pack<T>(s[2 * kk][0], s[2 * kk][1]);
    pf[kk][1] = pack<T>(s[2 * kk][2], s[2 * kk][3]);
    pf[kk][2] = pack<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    pf[kk][3] = pack<T>(s[2 * kk + 1][2], s[2 * kk + 1][3]);
  }
}

// The forward on wgmma: WGS warpgroups of 64 query rows (BM = 64·WGS), key
// blocks of BN in two stages (block j+1 loads while block j computes).
// S = Q·Kᵀ with both operands K-major in shared memory; the online softmax
// on S's accumulators (each warp's 16 rows in the m16n8k16 C layout, as in
// `forward`); O += P·V with P from registers and V MN-major. Dynamic shared
// memory: 1024 bytes of alignment slack, Q [BM, D], K and V [2][BN, D].
// Grid (⌈TQ/BM⌉, B·H). Needs sm_90a.
//
// PIPELINED (FlashAttention-3's intra-warpgroup overlap, Shah et al. 2024,
// §3.2): block j's S = Q·Kⱼᵀ and block j−1's O += P·Vⱼ₋₁ are issued
// together, and block j's softmax runs while the tensor cores do the
// second; O is rescaled once that product is done. V then lags K by a
// block: the top of block j loads Kⱼ₊₁ and Vⱼ (into the stages Kⱼ₋₁ and
// Vⱼ₋₂ left, both read by products every warpgroup has waited for).
template <typename T, i64 B, i64 H, i64 HKV, i64 TQ, i64 TK, int D, bool CAUSAL, int WGS, int BN,
          bool BTHD = false, int PACK = 1, bool PIPELINED = false>
__device__ void forwardWgmma(const T *q, const T *k, const T *v, T *out, float *lse, float scale,
                             const int *seg = nullptr) {
#if !defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(sizeof(T) == 0, "the wgmma forward needs sm_90a");
#else
  constexpr int BM = 64 * WGS, THREADS = 128 * WGS;
  constexpr int KS = D / 16, NS = BN / 8, NO = D / 8, PK = BN / 16;
  static_assert(D % 64 == 0 && (BN == 64 || BN == 128), "head dims of 64 or 128, key blocks of 64 or 128");
  constexpr u32 TILE = BN * D * 2; // bytes of one K or V stage
  extern __shared__ __align__(128) unsigned char smem[];
  const u32 sQ = (smemAddress(smem) + 1023) & ~1023u, sK = sQ + BM * D * 2, sV = sK + 2 * TILE;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;
  const int wg = warp / 4;

  const i64 bh = blockIdx.y, b = bh / H, h = bh % H, kh = h / (H / HKV);
  constexpr i64 QS = BTHD ? H * D * PACK : D, KVS = BTHD ? HKV * D * PACK : D;
  const i64 mBlock = CAUSAL ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
  const i64 q0 = mBlock * BM;
  const T *qb = q + rowOffset<H, TQ, D, BTHD, PACK>(b, h, 0),
          *kb = k + rowOffset<HKV, TK, D, BTHD, PACK>(b, kh, 0),
          *vb = v + rowOffset<HKV, TK, D, BTHD, PACK>(b, kh, 0);
  const i64 kEnd = CAUSAL ? (q0 + BM < TK ? q0 + BM : TK) : TK;
  const int blocks = (int)CEIL_DIV(kEnd, (i64)BN);
  const float scaleLog2 = scale * kLog2e;
  const int jStart = seg ? firstKeyBlock<THREADS, BN>(seg + b * TK, q0, q0 + BM < TQ ? q0 + BM : TQ)
                         : 0;

  loadTileWgmma<BM, D, THREADS, QS>(sQ, qb, q0, TQ);
  loadTileWgmma<BN, D, THREADS, KVS>(sK, kb, (i64)jStart * BN, TK);
  if constexpr (!PIPELINED)
    loadTileWgmma<BN, D, THREADS, KVS>(sV, vb, (i64)jStart * BN, TK);
  commit();

  float o[NO][4], m[2], l[2], alpha[2];
#pragma unroll
  for (int n = 0; n < NO; ++n)
    o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  // The zeros defined here: left to the compiler, they were materialized
  // next to the first O += P·V, between the warpgroup's fence and its wgmma,
  // and ptxas then serialized every wgmma of the causal kernels (its note
  // C7515).
  keep(o);
  m[0] = m[1] = negInf<float>(); // the row max of the scaled scores
  l[0] = l[1] = 0.f;
  const i64 row0 = q0 + warp * 16 + g; // this thread's rows: row0, row0 + 8
  const int *segb = seg ? seg + b * TK : nullptr;
  u32 pf[PK][4]; // P of block j, read by O += P·V until that product is waited for

  for (int j = jStart; j < blocks; ++j) {
    const int stage = (j - jStart) & 1;
    const u32 kj = sK + stage * TILE, vj = sV + stage * TILE;
    waitGroups<0>(); // block j's K (and V: block j's, or j - 1's when PIPELINED; and Q)
    fenceProxyAsync();
    if constexpr (!PIPELINED) {
      wgmmaWait<0>(); // this warpgroup's O += P·V of block j - 1 (its stage is reloaded next)
      keep(o);
      keep(pf);
    }
    __syncthreads();
    if (j + 1 < blocks)
      loadTileWgmma<BN, D, THREADS, KVS>(sK + (stage ^ 1) * TILE, kb, (i64)(j + 1) * BN, TK);
    if constexpr (PIPELINED)
      loadTileWgmma<BN, D, THREADS, KVS>(vj, vb, (i64)j * BN, TK);
    else if (j + 1 < blocks)
      loadTileWgmma<BN, D, THREADS, KVS>(sV + (stage ^ 1) * TILE, vb, (i64)(j + 1) * BN, TK);
    commit();

    // S = Q·Kᵀ: this warpgroup's 64 rows × BN keys.
    float s[NS][4]; // set by the first k-step
    wgmmaFence();
    wgmmaSS<T, 0, 0, false>(s, kMajor<BM>(sQ, 64 * wg, 0), kMajor<BN>(kj, 0, 0));
#pragma unroll
    for (int ks = 1; ks < KS; ++ks)
      wgmmaSS<T, 0, 0>(s, kMajor<BM>(sQ, 64 * wg, ks), kMajor<BN>(kj, 0, ks));
    wgmmaCommit();
    if constexpr (PIPELINED) {
      // O += P·Vⱼ₋₁ behind it, then block j's softmax while that runs.
      // (The fence again: past the branch ptxas would otherwise add one,
      // its note C7519.)
      if (j > jStart) {
        wgmmaFence();
#pragma unroll
        for (int kk = 0; kk < PK; ++kk)
          wgmmaRS<T, 1>(o, pf[kk], mnMajor<BN>(sV + (stage ^ 1) * TILE, kk, 0));
        wgmmaCommit();
        wgmmaWait<1>();
      } else {
        wgmmaWait<0>();
      }
      keep(s);
      softmaxStep<TQ, TK, BN, CAUSAL>(s, m, l, alpha, row0, (i64)j * BN, q0, t, segb,
                                      scaleLog2);
      wgmmaWait<0>();
      keep(o);
      keep(pf);
      rescaleAndPack<T>(o, pf, s, alpha);
    } else {
      wgmmaWait<0>();
      keep(s);
      softmaxStep<TQ, TK, BN, CAUSAL>(s, m, l, alpha, row0, (i64)j * BN, q0, t, segb,
                                      scaleLog2);
      rescaleAndPack<T>(o, pf, s, alpha);
      // O += P·V: V_j's rows (keys) are the k-steps; waited for at the top of
      // the next block (or after the loop).
      wgmmaFence();
#pragma unroll
      for (int kk = 0; kk < PK; ++kk)
        wgmmaRS<T, 1>(o, pf[kk], mnMajor<BN>(vj, kk, 0));
      wgmmaCommit();
    }
  }
  if constexpr (PIPELINED) {
    // The last block's O += P·V (its V loaded at the top of that block).
    waitGroups<0>();
    fenceProxyAsync();
    __syncthreads();
    if (blocks > jStart) {
      const u32 vLast = sV + ((blocks - 1 - jStart) & 1) * TILE;
      wgmmaFence();
#pragma unroll
      for (int kk = 0; kk < PK; ++kk)
        wgmmaRS<T, 1>(o, pf[kk], mnMajor<BN>(vLast, kk, 0));
      wgmmaCommit();
    }
  }
  wgmmaWait<0>();
  keep(o);
  keep(pf);
  waitGroups<0>();
  storeRows<T, H, TQ, D, BTHD>(o, m, l, out, lse, b, h, bh, row0, t);
#endif
}


// ---------------------------------------------------------------------------
// The forward with a producer warpgroup (sm_90a)
// ---------------------------------------------------------------------------
//
// FlashAttention-3's inter-warpgroup overlap (Shah et al. 2024, §3.1): in
// forwardWgmma every warpgroup loads its share of each K and V block and
// all meet at a barrier per block, so the two warpgroups compute in step —
// their products together, then their softmaxes together, the tensor
// cores idle during the latter. Here a third warpgroup only loads (two
// warps K, two V, through cp.async into two stages each, announcing each
// block on an mbarrier and waiting on another for its stage to be free),
// and the two consumer warpgroups take turns at the tensor cores through
// two named barriers: warpgroup c issues block j's S = Q·Kⱼᵀ with block
// j−1's O += P·Vⱼ₋₁ (as PIPELINED above), lets the other issue its pair,
// and runs block j's softmax while the tensor cores work through both.
// setmaxnreg moves registers from the producer (56 a thread) to the
// consumers (224). PTX ISA: "mbarrier", "bar.sync/bar.arrive",
// "setmaxnreg".

#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
__device__ __forceinline__ void mbarInit(u32 bar, u32 count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
// One arrival (release: this thread's earlier writes and reads come first).
__device__ __forceinline__ void mbarArrive(u32 bar) {
  asm volatile("{\n .reg .b64 state;\n mbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(
                   bar)
               : "memory");
}
// Waits (acquire) until the barrier's phase of this parity has completed.
__device__ __forceinline__ void mbarWait(u32 bar, u32 parity) {
  asm volatile("{\n .reg .pred done;\n"
               "WAIT:\n mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
               " @!done bra WAIT;\n}\n" ::"r"(bar),
               "r"(parity)
               : "memory");
}
// Named barrier `id` of `threads` threads: wait for all, or only count in.
__device__ __forceinline__ void namedSync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void namedArrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
#endif

// Rows [row0, row0 + R) (STRIDE elements apart from `base`; past `limit`
// zeros) into a wgmma tile of R rows by THREADS threads, of which this is
// thread x (loadTileWgmma's copy for thread counts whose rows are not 8
// apart: the producer's few registers recompute each chunk's place).
template <int R, int D, int THREADS, i64 STRIDE, typename T>
__device__ __forceinline__ void loadTileBy(int x, u32 tile, const T *base, i64 row0, i64 limit) {
  constexpr int C = D / 8;
  static_assert(THREADS % C == 0 && (R * C) % THREADS == 0, "whole rounds of chunks");
  const int c = x % C;
#pragma unroll 4
  for (int r = x / C; r < R; r += THREADS / C) {
    const bool valid = row0 + r < limit;
    copy16(tile + wgmmaOffset<R>(r, c * 8), valid ? base + (row0 + r) * STRIDE + c * 8 : base,
           valid);
  }
}

// Grid (⌈TQ/128⌉, B·H), 384 threads: warpgroup 0 loads, 1 and 2 compute 64
// query rows each (BM = 128). Dynamic shared memory as forwardWgmma's
// with two warpgroups: 1024 bytes of slack, Q [128, D], K and V [2][BN, D].
template <typename T, i64 B, i64 H, i64 HKV, i64 TQ, i64 TK, int D, bool CAUSAL, int BN,
          bool BTHD = false, int PACK = 1>
__device__ void forwardSpecialized(const T *q, const T *k, const T *v, T *out, float *lse,
                                   float scale, const int *seg = nullptr) {
#if !defined(__CUDA_ARCH_FEAT_SM90_ALL)
  static_assert(sizeof(T) == 0, "the warp-specialized forward needs sm_90a");
#else
  constexpr int BM = 128, THREADS = 384;
  constexpr int KS = D / 16, NS = BN / 8, NO = D / 8, PK = BN / 16;
  static_assert(D % 64 == 0 && (BN == 64 || BN == 128), "head dims of 64 or 128, key blocks of 64 or 128");
  constexpr u32 TILE = BN * D * 2; // bytes of one K or V stage
  extern __shared__ __align__(128) unsigned char smem[];
  // Barriers: Q loaded; K and V of each stage loaded (full) and read (empty).
  __shared__ __align__(8) unsigned long long barriers[9];
  const u32 sQ = (smemAddress(smem) + 1023) & ~1023u, sK = sQ + BM * D * 2, sV = sK + 2 * TILE;
  const u32 fullQ = smemAddress(&barriers[0]), fullK = fullQ + 8, fullV = fullQ + 24,
            emptyK = fullQ + 40, emptyV = fullQ + 56;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane >> 2, t = lane & 3;

  const i64 bh = blockIdx.y, b = bh / H, h = bh % H, kh = h / (H / HKV);
  constexpr i64 QS = BTHD ? H * D * PACK : D, KVS = BTHD ? HKV * D * PACK : D;
  const i64 mBlock = CAUSAL ? gridDim.x - 1 - blockIdx.x : blockIdx.x;
  const i64 q0 = mBlock * BM;
  const T *qb = q + rowOffset<H, TQ, D, BTHD, PACK>(b, h, 0),
          *kb = k + rowOffset<HKV, TK, D, BTHD, PACK>(b, kh, 0),
          *vb = v + rowOffset<HKV, TK, D, BTHD, PACK>(b, kh, 0);
  const i64 kEnd = CAUSAL ? (q0 + BM < TK ? q0 + BM : TK) : TK;
  const int blocks = (int)CEIL_DIV(kEnd, (i64)BN);
  const int jStart = seg ? firstKeyBlock<THREADS, BN>(seg + b * TK, q0, q0 + BM < TQ ? q0 + BM : TQ)
                         : 0;
  const int n = blocks > jStart ? blocks - jStart : 0; // key blocks this block streams
  if (threadIdx.x == 0) {
    mbarInit(fullQ, 128);
    for (int s = 0; s < 2; ++s) {
      mbarInit(fullK + 8 * s, 64);
      mbarInit(fullV + 8 * s, 64);
      mbarInit(emptyK + 8 * s, 8); // lane 0 of each consumer warp
      mbarInit(emptyV + 8 * s, 8);
    }
  }
  __syncthreads();

  if (warp < 4) {
    // The producer: Q by all four warps, then K by warps 0-1 and V by 2-3,
    // each block into stage i % 2 once the consumers are done with the
    // block two before it.
    asm volatile("setmaxnreg.dec.sync.aligned.u32 56;\n" ::: "memory");
    const int x = threadIdx.x;
    loadTileBy<BM, D, 128, QS>(x, sQ, qb, q0, TQ);
    commit();
    waitGroups<0>();
    fenceProxyAsync();
    mbarArrive(fullQ);
    const bool keys = x < 64;
    const T *src = keys ? kb : vb;
    const u32 tiles = keys ? sK : sV, full = keys ? fullK : fullV, empty = keys ? emptyK : emptyV;
    for (int i = 0; i < n; ++i) {
      const int s = i & 1;
      if (i >= 2)
        mbarWait(empty + 8 * s, ((i >> 1) - 1) & 1);
      loadTileBy<BN, D, 64, KVS>(x % 64, tiles + s * TILE, src, (i64)(jStart + i) * BN, TK);
      commit();
      waitGroups<0>();
      fenceProxyAsync(); // the copies visible to the consumers' wgmma
      mbarArrive(full + 8 * s);
    }
    return;
  }

  asm volatile("setmaxnreg.inc.sync.aligned.u32 224;\n" ::: "memory");
  const int c = warp / 4 - 1; // this consumer warpgroup: rows q0 + 64·c …
  const float scaleLog2 = scale * kLog2e;
  float o[NO][4], m[2], l[2], alpha[2];
#pragma unroll
  for (int i = 0; i < NO; ++i)
    o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.f;
  keep(o); // the zeros before the loop (forwardWgmma: ptxas's note C7515)
  m[0] = m[1] = negInf<float>();
  l[0] = l[1] = 0.f;
  const i64 row0 = q0 + (warp - 4) * 16 + g; // this thread's rows: row0, row0 + 8
  const int *segb = seg ? seg + b * TK : nullptr;
  u32 pf[PK][4]; // P of the previous block, read by its O += P·V
  // Turns: barrier 1 + c is warpgroup c's; the other arrives at it once it
  // has issued its products. Warpgroup 0 goes first.
  mbarWait(fullQ, 0);
  if (c == 1 && n > 0)
    namedArrive(1, 256);
  for (int i = 0; i < n; ++i) {
    const int j = jStart + i, s = i & 1;
    mbarWait(fullK + 8 * s, (i >> 1) & 1);
    if (i > 0)
      mbarWait(fullV + 8 * (s ^ 1), ((i - 1) >> 1) & 1);
    namedSync(1 + c, 256);
    float sc[NS][4]; // S of block j, set by the first k-step
    wgmmaFence();
    wgmmaSS<T, 0, 0, false>(sc, kMajor<BM>(sQ, 64 * c, 0), kMajor<BN>(sK + s * TILE, 0, 0));
#pragma unroll
    for (int ks = 1; ks < KS; ++ks)
      wgmmaSS<T, 0, 0>(sc, kMajor<BM>(sQ, 64 * c, ks), kMajor<BN>(sK + s * TILE, 0, ks));
    wgmmaCommit();
    // Then the other warpgroup's turn (its last one needs no answer). (One
    // branch issues and waits: split in two, ptxas serialized the wgmmas,
    // its note C7514.)
    const bool pass = c == 0 || i + 1 < n;
    if (i > 0) {
      wgmmaFence();
#pragma unroll
      for (int kk = 0; kk < PK; ++kk)
        wgmmaRS<T, 1>(o, pf[kk], mnMajor<BN>(sV + (s ^ 1) * TILE, kk, 0));
      wgmmaCommit();
      if (pass)
        namedArrive(2 - c, 256);
      wgmmaWait<1>();
    } else {
      if (pass)
        namedArrive(2 - c, 256);
      wgmmaWait<0>();
    }
    keep(sc);
    if (lane == 0)
      mbarArrive(emptyK + 8 * s); // Kⱼ read
    softmaxStep<TQ, TK, BN, CAUSAL>(sc, m, l, alpha, row0, (i64)j * BN, q0, t, segb, scaleLog2);
    wgmmaWait<0>();
    keep(o);
    keep(pf);
    if (i > 0 && lane == 0)
      mbarArrive(emptyV + 8 * (s ^ 1)); // Vⱼ₋₁ read
    rescaleAndPack<T>(o, pf, sc, alpha);
  }
  if (n > 0) {
    // The last block's O += P·V.
    const int s = (n - 1) & 1;
    mbarWait(fullV + 8 * s, ((n - 1) >> 1) & 1);
    wgmmaFence();
#pragma unroll
    for (int kk = 0; kk < PK; ++kk)
      wgmmaRS<T, 1>(o, pf[kk], mnMajor<BN>(sV + s * TILE, kk, 0));
    wgmmaCommit();
    wgmmaWait<0>();
    keep(o);
    keep(pf);
  }
  storeRows<T, H, TQ, D, BTHD>(o, m, l, out, lse, b, h, bh, row0, t);
#endif
}

} // namespace flash
} // namespace kiln
