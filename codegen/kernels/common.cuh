// kiln/common.cuh — types and helpers shared by kiln's generated kernels.
// Generated kernels compute in float (double for f64) and convert at loads
// and stores, so one template serves f32, bf16 and f16 tensors.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>

// Each elementwise op's math, shared with the CPU interpreter (ir/ScalarMath.h).
#include "kiln/ScalarMath.h"

#define CEIL_DIV(a, b) (((a) + (b) - 1) / (b))

namespace kiln {

typedef long long i64;

// Bits of the error word (runtime/Plan.h, PlanError): set by kernels whose
// inputs are out of range, reported by the executor after the run.
constexpr unsigned kErrorBadId = 1;
constexpr unsigned kErrorBadTarget = 2;

// NVRTC has no <cmath>: infinities from their bit patterns.
template <typename T> __device__ __forceinline__ T negInf();
template <> __device__ __forceinline__ float negInf<float>() { return __int_as_float(0xff800000); }
template <> __device__ __forceinline__ double negInf<double>() {
  return __longlong_as_double(0xfff0000000000000ULL);
}

// Storage -> compute and back.
__device__ __forceinline__ float load(const float *p, i64 i) { return p[i]; }
__device__ __forceinline__ double load(const double *p, i64 i) { return p[i]; }
__device__ __forceinline__ float load(const __nv_bfloat16 *p, i64 i) { return __bfloat162float(p[i]); }
__device__ __forceinline__ float load(const __half *p, i64 i) { return __half2float(p[i]); }
__device__ __forceinline__ void store(float *p, i64 i, float v) { p[i] = v; }
/// Asks for the 32-byte sector holding `p` in L2 without waiting for it or
/// holding a register (a later load of it then waits on L2, not DRAM).
__device__ __forceinline__ void prefetchL2(const void *p) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(p));
}
__device__ __forceinline__ void store(double *p, i64 i, double v) { p[i] = v; }
__device__ __forceinline__ void store(__nv_bfloat16 *p, i64 i, float v) { p[i] = __float2bfloat16_rn(v); }
__device__ __forceinline__ void store(__half *p, i64 i, float v) { p[i] = __float2half_rn(v); }

// A value rounded as a store to a bf16/f16 tensor and a load back would: a
// fused kernel's intermediates mean what the unfused ops' tensors meant.
__device__ __forceinline__ float roundBf16(float v) { return __bfloat162float(__float2bfloat16_rn(v)); }
__device__ __forceinline__ float roundF16(float v) { return __half2float(__float2half_rn(v)); }

// 2^x on the special-function unit, one MUFU instruction (what exp2f
// becomes with fast math; without, exp2f wraps it in a rescaling for
// subnormals): 2 ulp, subnormal results flushed to zero, 2^-inf = 0.
// Doubles take exp2.
__device__ __forceinline__ float exp2Approx(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ double exp2Approx(double x) { return exp2(x); }

// A vector of W compute values stored as T, two at a time for bf16/f16
// (one conversion instruction a pair).
template <int W> __device__ __forceinline__ void storeRounded(float (&d)[W], __nv_bfloat16 (&a)[W]) {
#pragma unroll
  for (int k = 0; k < W; k += 2)
    *reinterpret_cast<__nv_bfloat162 *>(&a[k]) = __floats2bfloat162_rn(d[k], d[k + 1]);
}
template <int W> __device__ __forceinline__ void storeRounded(float (&d)[W], __half (&a)[W]) {
#pragma unroll
  for (int k = 0; k < W; k += 2)
    *reinterpret_cast<__half2 *>(&a[k]) = __floats2half2_rn(d[k], d[k + 1]);
}
template <int W, typename F, typename T>
__device__ __forceinline__ void storeRounded(F (&d)[W], T (&a)[W]) {
#pragma unroll
  for (int k = 0; k < W; ++k)
    a[k] = d[k];
}

// 128-bit vector access: element v·V … v·V+V−1 of p, through uint4 loads
// and stores (V·sizeof(T) is a multiple of 16; the arena keeps every
// buffer 256-byte aligned).
template <int V, typename T> __device__ __forceinline__ void loadVec(const T *p, i64 v, T (&a)[V]) {
  static_assert((V * sizeof(T)) % 16 == 0, "a vector is whole 16-byte words");
  const uint4 *src = reinterpret_cast<const uint4 *>(p + v * V);
  uint4 *dst = reinterpret_cast<uint4 *>(a);
#pragma unroll
  for (int j = 0; j < (int)(V * sizeof(T) / 16); ++j)
    dst[j] = src[j];
}
template <int V, typename T> __device__ __forceinline__ void storeVec(T *p, i64 v, const T (&a)[V]) {
  static_assert((V * sizeof(T)) % 16 == 0, "a vector is whole 16-byte words");
  uint4 *dst = reinterpret_cast<uint4 *>(p + v * V);
  const uint4 *src = reinterpret_cast<const uint4 *>(a);
#pragma unroll
  for (int j = 0; j < (int)(V * sizeof(T) / 16); ++j)
    dst[j] = src[j];
}

// W elements from in[j] on to out[i] on: one 16-byte move when W·sizeof(T)
// is 16 (then i and j are multiples of W), else W = 1 and one element.
template <int W, typename T>
__device__ __forceinline__ void copyElems(T *out, i64 i, const T *in, i64 j) {
  if constexpr (W == 1) {
    out[i] = in[j];
  } else {
    static_assert(W * sizeof(T) == 16, "a vector is one 16-byte word");
    *reinterpret_cast<uint4 *>(out + i) = *reinterpret_cast<const uint4 *>(in + j);
  }
}

template <typename T> struct Compute { typedef float type; };
template <> struct Compute<double> { typedef double type; };

// Sum and max across a warp (all lanes get the result).
template <typename T> __device__ __forceinline__ T warpSum(T v) {
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
template <typename T> __device__ __forceinline__ T warpMax(T v) {
  for (int o = 16; o > 0; o >>= 1)
    v = fmax(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum across a block of up to 1024 threads; every thread gets the result.
// `shared` holds 32 values.
template <typename T> __device__ T blockSum(T v, T *shared) {
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = CEIL_DIV(blockDim.x, 32);
  v = warpSum(v);
  __syncthreads(); // shared may still be read by a previous call
  if (lane == 0)
    shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : T(0);
  return warpSum(v);
}
template <typename T> __device__ T blockMax(T v, T *shared) {
  int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = CEIL_DIV(blockDim.x, 32);
  v = warpMax(v);
  __syncthreads();
  if (lane == 0)
    shared[warp] = v;
  __syncthreads();
  v = lane < warps ? shared[lane] : negInf<T>();
  return warpMax(v);
}

} // namespace kiln
