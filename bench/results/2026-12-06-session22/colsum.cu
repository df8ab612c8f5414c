// Column-sum micro-benchmark: variants of a [ROWS, COLS] bf16 column sum
// into f32 (the bias gradients of GPT-2's qkv and fc layers), timed with
// events, and a plain read of the same bytes as the ceiling.
// nvcc -O3 -arch=sm_90a -o colsum colsum.cu && ./colsum
#include <cuda_bf16.h>
#include <cstdio>
#include <vector>
#include <cmath>
#include "kiln/reduce.cuh"
using kiln::i64;

__device__ __forceinline__ void add8(float *acc, uint4 u) {
  const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    float2 f = __bfloat1622float2(h[k]);
    acc[2 * k] += f.x;
    acc[2 * k + 1] += f.y;
  }
}

// As kiln's reduceColumnsPartialVec: a thread per 8 columns, CHUNK rows, runtime end.
template <i64 ROWS, i64 COLS, i64 CHUNK>
__global__ void __launch_bounds__(256) cur(const __nv_bfloat16 *in, float *partial) {
  i64 word = blockIdx.x * (i64)blockDim.x + threadIdx.x;
  if (word >= COLS / 8) return;
  i64 begin = blockIdx.y * CHUNK, end = begin + CHUNK < ROWS ? begin + CHUNK : ROWS;
  float acc[8] = {};
#pragma unroll 8
  for (i64 r = begin; r < end; ++r)
    add8(acc, reinterpret_cast<const uint4 *>(in + r * COLS)[word]);
  for (int k = 0; k < 8; ++k) partial[blockIdx.y * COLS + word * 8 + k] = acc[k];
}

// Block (WX words, RY row lanes): thread (x, y) sums rows y, y+RY, ... of the
// block's CHUNK rows, loads batched U at a time; the RY sums combined in
// shared memory; one partial row per block row.
template <i64 ROWS, i64 COLS, i64 CHUNK, int WX, int RY, int U>
__global__ void __launch_bounds__(WX *RY) blk(const __nv_bfloat16 *in, float *partial) {
  __shared__ float part[RY][WX * 8 + 4];
  const int tx = threadIdx.x % WX, ty = threadIdx.x / WX;
  const i64 word = blockIdx.x * (i64)WX + tx;
  float acc[8] = {};
  const i64 begin = blockIdx.y * CHUNK;
  if (word < COLS / 8) {
    const uint4 *p = reinterpret_cast<const uint4 *>(in + (begin + ty) * COLS) + word;
    constexpr int N = CHUNK / RY;
#pragma unroll
    for (int i = 0; i < N; i += U) {
      uint4 v[U];
#pragma unroll
      for (int u = 0; u < U; ++u)
        v[u] = (begin + ty + (i64)(i + u) * RY < ROWS) ? p[(i64)(i + u) * RY * (COLS / 8)] : make_uint4(0, 0, 0, 0);
#pragma unroll
      for (int u = 0; u < U; ++u) add8(acc, v[u]);
    }
  }
#pragma unroll
  for (int k = 0; k < 8; ++k) part[ty][tx * 8 + k] = acc[k];
  __syncthreads();
  for (int c = threadIdx.x; c < WX * 8; c += WX * RY) {
    float s = 0.f;
    for (int y = 0; y < RY; ++y) s += part[y][c];
    i64 col = blockIdx.x * (i64)WX * 8 + c;
    if (col < COLS) partial[blockIdx.y * COLS + col] = s;
  }
}

template <i64 ROWS, i64 COLS, i64 CHUNK>
__global__ void __launch_bounds__(256) kilnPartial(const __nv_bfloat16 *in, float *partial) {
  kiln::reduceColumnsPartialVec<0, __nv_bfloat16, ROWS, COLS, CHUNK, 8, 32, 8>(in, partial);
}

template <i64 COLS, i64 CHUNKS, int YS>
__global__ void __launch_bounds__(1024) fin(const float *partial, float *out) {
  __shared__ float part[YS][33];
  i64 col = blockIdx.x * 32 + threadIdx.x;
  float acc = 0.f;
  if (col < COLS)
    for (i64 c = threadIdx.y; c < CHUNKS; c += YS) acc += partial[c * COLS + col];
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && col < COLS) {
    float t = 0.f;
    for (int y = 0; y < YS; ++y) t += part[y][threadIdx.x];
    out[col] = t;
  }
}

// Ceiling: every thread reads 16-byte words grid-stride, 4 in flight.
__global__ void __launch_bounds__(256) readAll(const uint4 *in, i64 n, float *out) {
  float acc[8] = {};
  i64 stride = (i64)gridDim.x * blockDim.x;
  for (i64 i = blockIdx.x * (i64)blockDim.x + threadIdx.x; i < n; i += 4 * stride) {
    uint4 v[4];
#pragma unroll
    for (int u = 0; u < 4; ++u) v[u] = i + u * stride < n ? in[i + u * stride] : make_uint4(0, 0, 0, 0);
#pragma unroll
    for (int u = 0; u < 4; ++u) add8(acc, v[u]);
  }
  float s = 0; for (int k = 0; k < 8; ++k) s += acc[k];
  if (s == 12345.f) out[0] = s;
}

template <typename F> float timeIt(F f, int reps = 50) {
  cudaEvent_t a, b;
  cudaEventCreate(&a); cudaEventCreate(&b);
  for (int i = 0; i < 5; ++i) f();
  cudaEventRecord(a);
  for (int i = 0; i < reps; ++i) f();
  cudaEventRecord(b);
  cudaEventSynchronize(b);
  float ms; cudaEventElapsedTime(&ms, a, b);
  return ms * 1000.f / reps;  // µs
}

template <i64 ROWS, i64 COLS, i64 CHUNK> void shape(const char *name) {
  const i64 n = ROWS * COLS;
  std::vector<__nv_bfloat16> h(n);
  std::vector<double> ref(COLS, 0.0);
  for (i64 i = 0; i < n; ++i) {
    float v = (float)((i * 2654435761ull) % 1000) / 1000.f - 0.5f;
    h[i] = __float2bfloat16(v);
    ref[i % COLS] += (double)__bfloat162float(h[i]);
  }
  __nv_bfloat16 *in; float *partial, *out;
  cudaMalloc(&in, n * 2); cudaMalloc(&partial, (i64)1024 * COLS * 4); cudaMalloc(&out, COLS * 4);
  cudaMemcpy(in, h.data(), n * 2, cudaMemcpyHostToDevice);
  std::vector<float> got(COLS);
  double mb = n * 2 / 1e6;
  auto check = [&]() {
    cudaMemcpy(got.data(), out, COLS * 4, cudaMemcpyDeviceToHost);
    double worst = 0;
    for (i64 c = 0; c < COLS; ++c) worst = fmax(worst, fabs(got[c] - ref[c]) / (1 + fabs(ref[c])));
    return worst;
  };
  auto line = [&](const char *v, float us, double err) {
    printf("%-6s %-28s %8.2f us %6.2f TB/s  err %.1e\n", name, v, us, mb / us, err);
  };
  {
    float us = timeIt([&] { readAll<<<132 * 8, 256>>>(reinterpret_cast<const uint4 *>(in), n / 8, out); });
    line("read-all (ceiling)", us, 0.0);
  }
#define CUR(CH)                                                                                   \
  {                                                                                               \
    constexpr i64 chunks = ROWS / CH, words = COLS / 8;                                           \
    constexpr int ys = chunks < 32 ? (int)chunks : 32;                                            \
    dim3 g1((words + 255) / 256, chunks);                                                         \
    auto f = [&] {                                                                                \
      cur<ROWS, COLS, CH><<<g1, 256>>>(in, partial);                                              \
      fin<COLS, chunks, ys><<<dim3((COLS + 31) / 32), dim3(32, ys)>>>(partial, out);              \
    };                                                                                            \
    cudaMemset(out, 0, COLS * 4); f(); cudaDeviceSynchronize(); double e = check();              \
    float us = timeIt(f);                                                                         \
    line("cur chunk=" #CH, us, e);                                                                \
  }
#define BLK(CH, WX, RY, U)                                                                        \
  {                                                                                               \
    constexpr i64 chunks = (ROWS + CH - 1) / CH, words = COLS / 8;                                \
    constexpr int ys = chunks < 32 ? (int)chunks : 32;                                            \
    dim3 g1((words + WX - 1) / WX, chunks);                                                       \
    auto f = [&] {                                                                                \
      blk<ROWS, COLS, CH, WX, RY, U><<<g1, WX * RY>>>(in, partial);                               \
      fin<COLS, chunks, ys><<<dim3((COLS + 31) / 32), dim3(32, ys)>>>(partial, out);              \
    };                                                                                            \
    cudaMemset(out, 0, COLS * 4); f(); cudaDeviceSynchronize(); double e = check();              \
    float us = timeIt(f);                                                                         \
    line("blk ch=" #CH " wx=" #WX " ry=" #RY " u=" #U, us, e);                                    \
  }
#define KILN(CH)                                                                                  \
  {                                                                                               \
    constexpr i64 chunks = (ROWS + CH - 1) / CH, words = COLS / 8;                                \
    constexpr int ys = chunks < 32 ? (int)chunks : 32;                                            \
    dim3 g1((words + 31) / 32, chunks);                                                           \
    auto f = [&] {                                                                                \
      kilnPartial<ROWS, COLS, CH><<<g1, 256>>>(in, partial);                                      \
      fin<COLS, chunks, ys><<<dim3((COLS + 31) / 32), dim3(32, ys)>>>(partial, out);              \
    };                                                                                            \
    cudaMemset(out, 0, COLS * 4); f(); cudaDeviceSynchronize(); double e = check();              \
    float us = timeIt(f);                                                                         \
    line("kiln chunk=" #CH, us, e);                                                               \
  }
  CUR(32) KILN(CHUNK) KILN(2 * CHUNK) KILN(CHUNK / 16 * 8) KILN(1000) CUR(64)
  BLK(64, 32, 8, 8) BLK(128, 32, 8, 8) BLK(128, 32, 8, 16) BLK(256, 32, 8, 8) BLK(256, 32, 16, 16)
  BLK(128, 64, 4, 8) BLK(256, 64, 4, 16) BLK(512, 32, 8, 16) BLK(256, 128, 2, 16) BLK(128, 16, 16, 8)
  cudaError_t err = cudaGetLastError();
  if (err) printf("error %s\n", cudaGetErrorString(err));
  cudaFree(in); cudaFree(partial); cudaFree(out);
}

int main() {
  cudaDeviceProp p; cudaGetDeviceProperties(&p, 0);
  printf("%s, %d SMs\n", p.name, p.multiProcessorCount);
  shape<16384, 3072, 504>("fc");
  shape<16384, 2304, 376>("qkv");
  shape<32768, 3072, 1000>("fc32");
  shape<1000, 136, 48>("tail");
  return 0;
}
