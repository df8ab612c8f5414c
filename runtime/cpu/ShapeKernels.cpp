//===- ShapeKernels.cpp - shape ops and reductions on the CPU --------------===//
//
// Every data-movement op is one strided copy: for each index of a box,
// dst[dstOffset + Σ i·dstStride] = src[srcOffset + Σ i·srcStride]. A stride
// of 0 repeats (broadcast); a permuted stride transposes; a scaled stride
// slices or pads. The copy is written once over the element's storage size.
//
//===----------------------------------------------------------------------===//

#include "runtime/cpu/KernelSupport.h"
#include "runtime/cpu/Kernels.h"

#include "llvm/ADT/SmallVector.h"

#include <cmath>
#include <limits>

namespace kiln::cpu::kernels {

using llvm::ArrayRef;
using llvm::SmallVector;

namespace {

template <typename E>
void stridedCopyImpl(E *dst, ArrayRef<int64_t> dstStrides, const E *src,
                     ArrayRef<int64_t> srcStrides, ArrayRef<int64_t> shape) {
  int64_t rank = shape.size();
  if (rank == 0) {
    *dst = *src;
    return;
  }
  int64_t inner = shape[rank - 1], ds = dstStrides[rank - 1], ss = srcStrides[rank - 1];
  int64_t outer = product(shape.drop_back());
  if (inner == 0 || outer == 0)
    return;
  parallelFor(outer, rowGrain(inner), [&](int64_t begin, int64_t end) {
    SmallVector<int64_t, 8> idx(rank - 1, 0);
    int64_t rem = begin, dOff = 0, sOff = 0;
    for (int64_t d = rank - 2; d >= 0; --d) {
      idx[d] = rem % shape[d];
      rem /= shape[d];
      dOff += idx[d] * dstStrides[d];
      sOff += idx[d] * srcStrides[d];
    }
    for (int64_t o = begin; o < end; ++o) {
      E *dp = dst + dOff;
      const E *sp = src + sOff;
      if (ds == 1 && ss == 1)
        std::memcpy(dp, sp, static_cast<size_t>(inner) * sizeof(E));
      else if (ss == 0)
        for (int64_t j = 0; j < inner; ++j)
          dp[j * ds] = *sp;
      else
        for (int64_t j = 0; j < inner; ++j)
          dp[j * ds] = sp[j * ss];
      for (int64_t d = rank - 2; d >= 0; --d) {
        ++idx[d];
        dOff += dstStrides[d];
        sOff += srcStrides[d];
        if (idx[d] < shape[d])
          break;
        dOff -= dstStrides[d] * shape[d];
        sOff -= srcStrides[d] * shape[d];
        idx[d] = 0;
      }
    }
  });
}

/// Copies the box `shape` from src (at srcOffset, srcStrides) to dst (at
/// dstOffset, dstStrides); offsets and strides count elements.
void stridedCopy(HostTensor &dst, int64_t dstOffset, ArrayRef<int64_t> dstStrides,
                 const HostTensor &src, int64_t srcOffset, ArrayRef<int64_t> srcStrides,
                 ArrayRef<int64_t> shape) {
  if (storageSize(dst.dtype()) == 4)
    stridedCopyImpl(dst.data<uint32_t>() + dstOffset, dstStrides,
                    src.data<uint32_t>() + srcOffset, srcStrides, shape);
  else
    stridedCopyImpl(dst.data<uint64_t>() + dstOffset, dstStrides,
                    src.data<uint64_t>() + srcOffset, srcStrides, shape);
}

} // namespace

HostTensor transpose(const HostTensor &x, ArrayRef<int64_t> perm) {
  std::vector<int64_t> shape;
  std::vector<int64_t> inStrides = stridesOf(x.shape()), srcStrides;
  for (int64_t p : perm) {
    shape.push_back(x.dim(p));
    srcStrides.push_back(inStrides[p]);
  }
  HostTensor out = HostTensor::uninitialized(x.dtype(), shape);
  stridedCopy(out, 0, stridesOf(shape), x, 0, srcStrides, shape);
  return out;
}

HostTensor broadcastInDim(const HostTensor &x, ArrayRef<int64_t> shape, ArrayRef<int64_t> dims) {
  HostTensor out = HostTensor::uninitialized(x.dtype(), std::vector<int64_t>(shape.begin(), shape.end()));
  std::vector<int64_t> inStrides = stridesOf(x.shape());
  std::vector<int64_t> srcStrides(shape.size(), 0);
  for (auto [i, d] : llvm::enumerate(dims))
    if (x.dim(i) != 1)
      srcStrides[d] = inStrides[i];
  stridedCopy(out, 0, stridesOf(shape), x, 0, srcStrides, shape);
  return out;
}

HostTensor slice(const HostTensor &x, ArrayRef<int64_t> start, ArrayRef<int64_t> limit,
                 ArrayRef<int64_t> strides) {
  std::vector<int64_t> shape, srcStrides, inStrides = stridesOf(x.shape());
  int64_t offset = 0;
  for (size_t d = 0; d < start.size(); ++d) {
    shape.push_back((limit[d] - start[d] + strides[d] - 1) / strides[d]);
    offset += start[d] * inStrides[d];
    srcStrides.push_back(strides[d] * inStrides[d]);
  }
  HostTensor out = HostTensor::uninitialized(x.dtype(), shape);
  stridedCopy(out, 0, stridesOf(shape), x, offset, srcStrides, shape);
  return out;
}

HostTensor pad(const HostTensor &x, ArrayRef<int64_t> low, ArrayRef<int64_t> high,
               ArrayRef<int64_t> interior) {
  std::vector<int64_t> shape;
  for (int64_t d = 0; d < x.rank(); ++d) {
    int64_t n = x.dim(d);
    shape.push_back(low[d] + high[d] + n + (n > 0 ? (n - 1) * interior[d] : 0));
  }
  HostTensor out(x.dtype(), shape); // zero-filled
  std::vector<int64_t> outStrides = stridesOf(shape), dstStrides;
  int64_t offset = 0;
  for (int64_t d = 0; d < x.rank(); ++d) {
    offset += low[d] * outStrides[d];
    dstStrides.push_back((interior[d] + 1) * outStrides[d]);
  }
  stridedCopy(out, offset, dstStrides, x, 0, stridesOf(x.shape()), x.shape());
  return out;
}

HostTensor concat(ArrayRef<HostTensor> xs, int64_t dim) {
  std::vector<int64_t> shape = xs.front().shape();
  shape[dim] = 0;
  for (const HostTensor &x : xs)
    shape[dim] += x.dim(dim);
  HostTensor out = HostTensor::uninitialized(xs.front().dtype(), shape);
  std::vector<int64_t> outStrides = stridesOf(shape);
  int64_t offset = 0;
  for (const HostTensor &x : xs) {
    stridedCopy(out, offset * outStrides[dim], outStrides, x, 0, stridesOf(x.shape()), x.shape());
    offset += x.dim(dim);
  }
  return out;
}

HostTensor iota(DType dtype, ArrayRef<int64_t> shape, int64_t dim) {
  HostTensor out(dtype, std::vector<int64_t>(shape.begin(), shape.end()));
  std::vector<int64_t> strides = stridesOf(shape);
  for (int64_t i = 0; i < out.numel(); ++i)
    out.set(i, static_cast<double>((i / strides[dim]) % shape[dim]));
  return out;
}

HostTensor reduce(Reduce kind, const HostTensor &x, ArrayRef<int64_t> dims) {
  std::vector<int64_t> outShape;
  for (int64_t d = 0; d < x.rank(); ++d)
    if (!llvm::is_contained(dims, d))
      outShape.push_back(x.dim(d));
  HostTensor out(x.dtype(), outShape);
  int64_t outN = out.numel(), inN = x.numel();
  double init = kind == Reduce::Max ? -std::numeric_limits<double>::infinity() : 0.0;
  std::vector<double> acc(static_cast<size_t>(outN), init);
  auto combine = [kind](double &a, double v) {
    if (kind == Reduce::Max)
      a = (v > a || v != v) ? v : a;
    else
      a += v;
  };

  // Fast paths: reducing the trailing dimensions (rows) or the leading ones
  // (columns, e.g. a bias gradient summed over batch and time).
  int64_t rank = x.rank(), k = static_cast<int64_t>(dims.size());
  bool trailing = k > 0, leading = k > 0;
  for (int64_t i = 0; i < k; ++i) {
    trailing &= dims[i] == rank - k + i;
    leading &= dims[i] == i;
  }
  auto readAll = [&](auto tag) {
    using T = decltype(tag);
    const T *in = x.data<T>();
    if (trailing) {
      int64_t row = outN ? inN / outN : 0;
      parallelFor(outN, rowGrain(row), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r)
          for (int64_t j = 0; j < row; ++j)
            combine(acc[r], static_cast<double>(in[r * row + j]));
      });
    } else if (leading) {
      int64_t rows = outN ? inN / outN : 0;
      parallelFor(outN, 256, [&](int64_t begin, int64_t end) {
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t c = begin; c < end; ++c)
            combine(acc[c], static_cast<double>(in[r * outN + c]));
      });
    } else {
      // General case: walk the input in order, tracking the output offset.
      std::vector<int64_t> outStrides = stridesOf(outShape), step(rank, 0);
      for (int64_t d = 0, o = 0; d < rank; ++d)
        if (!llvm::is_contained(dims, d))
          step[d] = outStrides[o++];
      std::vector<int64_t> idx(rank, 0);
      int64_t off = 0;
      for (int64_t i = 0; i < inN; ++i) {
        combine(acc[off], static_cast<double>(in[i]));
        for (int64_t d = rank - 1; d >= 0; --d) {
          ++idx[d];
          off += step[d];
          if (idx[d] < x.dim(d))
            break;
          off -= step[d] * x.dim(d);
          idx[d] = 0;
        }
      }
    }
  };
  if (x.dtype() == DType::F64)
    readAll(double{});
  else if (isFloat(x.dtype()))
    readAll(float{});
  else
    readAll(int64_t{});

  double count = outN ? static_cast<double>(inN) / static_cast<double>(outN) : 1.0;
  for (int64_t i = 0; i < outN; ++i)
    out.set(i, kind == Reduce::Mean ? acc[i] / count : acc[i]);
  return out;
}

} // namespace kiln::cpu::kernels
