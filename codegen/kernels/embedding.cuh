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

} // namespace kiln
