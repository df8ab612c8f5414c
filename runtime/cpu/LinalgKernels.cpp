//===- LinalgKernels.cpp - matmul (OpenBLAS) and attention on the CPU ------===//

#include "runtime/cpu/KernelSupport.h"
#include "runtime/cpu/Kernels.h"

#include <cblas.h>

#include <cmath>
#include <limits>

namespace kiln::cpu::kernels {

using llvm::ArrayRef;

namespace {

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const float *a, const float *b,
          float *c) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              m, n, k, 1.0f, a, ta ? m : k, b, tb ? k : n, 0.0f, c, n);
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const double *a, const double *b,
          double *c) {
  cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
              m, n, k, 1.0, a, ta ? m : k, b, tb ? k : n, 0.0, c, n);
}

void gemm(bool ta, bool tb, int64_t m, int64_t n, int64_t k, const int64_t *a,
          const int64_t *b, int64_t *c) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      int64_t s = 0;
      for (int64_t p = 0; p < k; ++p)
        s += a[ta ? p * m + i : i * k + p] * b[tb ? j * k + p : p * n + j];
      c[i * n + j] = s;
    }
}

/// OpenBLAS runs single-threaded: kiln splits products over its own pool,
/// which keeps OpenBLAS's spinning workers from competing with it.
void singleThreadedBlas() {
  static const bool once = [] {
    openblas_set_num_threads(1);
    return true;
  }();
  (void)once;
}

} // namespace

HostTensor matmul(const HostTensor &a, const HostTensor &b, bool ta, bool tb, DType resultType,
                  ArrayRef<int64_t> resultShape) {
  HostTensor out = HostTensor::uninitialized(resultType, std::vector<int64_t>(resultShape.begin(), resultShape.end()));
  int64_t m = resultShape[resultShape.size() - 2], n = resultShape.back();
  int64_t k = ta ? a.dim(-2) : a.dim(-1);
  int64_t batch = product(resultShape.drop_back(2));
  int64_t strideA = a.rank() > 2 ? m * k : 0, strideB = b.rank() > 2 ? k * n : 0;
  singleThreadedBlas();
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T *pa = a.data<T>(), *pb = b.data<T>();
    T *pc = out.data<T>();
    if (!ta && (batch == 1 || strideB == 0)) {
      // One product over all rows (a weight shared by the batch stacks
      // them), split into row blocks across the pool.
      int64_t rows = batch * m;
      parallelFor(rows, std::max<int64_t>(16, (1 << 18) / std::max<int64_t>(1, n * k)),
                  [&](int64_t begin, int64_t end) {
                    gemm(false, tb, end - begin, n, k, pa + begin * k, pb, pc + begin * n);
                  });
      return;
    }
    parallelFor(batch, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        gemm(ta, tb, m, n, k, pa + i * strideA, pb + i * strideB, pc + i * m * n);
    });
  };
  if (a.dtype() == DType::F64)
    run(double{});
  else if (isFloat(a.dtype()))
    run(float{}); // bf16/f16 operands hold exact values in float storage
  else
    run(int64_t{});
  out.roundToDType();
  return out;
}

namespace {

/// Geometry of an attention call: q [B, H, Tq, D], k [B, Hkv, Tk, D],
/// v [B, Hkv, Tk, Dv]; query head h reads key/value head h / (H / Hkv).
struct AttnShape {
  int64_t b, h, hkv, tq, tk, d, dv;
  explicit AttnShape(const HostTensor &q, const HostTensor &k, const HostTensor &v)
      : b(q.dim(0)), h(q.dim(1)), hkv(k.dim(1)), tq(q.dim(2)), tk(k.dim(2)), d(q.dim(3)),
        dv(v.dim(3)) {}
  int64_t group() const { return h / hkv; }
  /// Keys a query row may see: the first visible(i) ones, those of its own
  /// segment among them when there are segments.
  int64_t visible(int64_t i, bool causal) const { return causal ? std::min(i + 1, tk) : tk; }
  static bool sameSegment(const HostTensor *segments, int64_t b, int64_t t, int64_t i, int64_t j) {
    return !segments || segments->get(b * t + i) == segments->get(b * t + j);
  }
};

} // namespace

std::tuple<HostTensor, HostTensor> attention(const HostTensor &q, const HostTensor &k,
                                             const HostTensor &v, const HostTensor *segments,
                                             double scale, bool causal, DType statsType) {
  AttnShape s(q, k, v);
  HostTensor out(q.dtype(), {s.b, s.h, s.tq, s.dv});
  HostTensor lse(statsType, {s.b, s.h, s.tq});
  withFloatType(q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *Q = q.data<T>(), *K = k.data<T>(), *V = v.data<T>();
    T *O = out.data<T>();
    parallelFor(s.b * s.h, 1, [&](int64_t begin, int64_t end) {
      std::vector<double> p(static_cast<size_t>(s.tk));
      for (int64_t bh = begin; bh < end; ++bh) {
        int64_t bi = bh / s.h, hi = bh % s.h, kvh = bi * s.hkv + hi / s.group();
        const T *q0 = Q + bh * s.tq * s.d, *k0 = K + kvh * s.tk * s.d, *v0 = V + kvh * s.tk * s.dv;
        for (int64_t i = 0; i < s.tq; ++i) {
          int64_t n = s.visible(i, causal);
          double mx = -std::numeric_limits<double>::infinity();
          for (int64_t j = 0; j < n; ++j) {
            double dot = 0;
            for (int64_t c = 0; c < s.d; ++c)
              dot += static_cast<double>(q0[i * s.d + c]) * k0[j * s.d + c];
            p[j] = AttnShape::sameSegment(segments, bi, s.tk, i, j)
                       ? dot * scale
                       : -std::numeric_limits<double>::infinity();
            mx = std::max(mx, p[j]);
          }
          double sum = 0;
          for (int64_t j = 0; j < n; ++j)
            sum += (p[j] = std::exp(p[j] - mx));
          T *o = O + (bh * s.tq + i) * s.dv;
          for (int64_t c = 0; c < s.dv; ++c) {
            double acc = 0;
            for (int64_t j = 0; j < n; ++j)
              acc += p[j] * v0[j * s.dv + c];
            o[c] = static_cast<T>(acc / sum);
          }
          lse.set(bh * s.tq + i, mx + std::log(sum));
        }
      }
    });
  });
  out.roundToDType();
  return {out, lse};
}

std::tuple<HostTensor, HostTensor, HostTensor>
attentionGrad(const HostTensor &q, const HostTensor &k, const HostTensor &v,
              const HostTensor &out, const HostTensor &lse, const HostTensor &dout,
              const HostTensor *segments, double scale, bool causal) {
  AttnShape s(q, k, v);
  HostTensor dq(q.dtype(), q.shape()), dk(k.dtype(), k.shape()), dv(v.dtype(), v.shape());
  withFloatType(q.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *Q = q.data<T>(), *K = k.data<T>(), *V = v.data<T>(), *O = out.data<T>(),
            *dO = dout.data<T>();
    T *dQ = dq.data<T>(), *dK = dk.data<T>(), *dV = dv.data<T>();
    // One task per key/value head, so the query heads sharing it accumulate
    // into dk/dv without races.
    parallelFor(s.b * s.hkv, 1, [&](int64_t begin, int64_t end) {
      std::vector<double> p(static_cast<size_t>(s.tk)), dp(static_cast<size_t>(s.tk));
      std::vector<double> accK, accV;
      for (int64_t bkv = begin; bkv < end; ++bkv) {
        int64_t bi = bkv / s.hkv, kvi = bkv % s.hkv;
        const T *k0 = K + bkv * s.tk * s.d, *v0 = V + bkv * s.tk * s.dv;
        accK.assign(static_cast<size_t>(s.tk * s.d), 0.0);
        accV.assign(static_cast<size_t>(s.tk * s.dv), 0.0);
        for (int64_t g = 0; g < s.group(); ++g) {
          int64_t bh = bi * s.h + kvi * s.group() + g;
          const T *q0 = Q + bh * s.tq * s.d, *o0 = O + bh * s.tq * s.dv,
                  *do0 = dO + bh * s.tq * s.dv;
          T *dq0 = dQ + bh * s.tq * s.d;
          for (int64_t i = 0; i < s.tq; ++i) {
            int64_t n = s.visible(i, causal);
            double rowLse = lse.get(bh * s.tq + i);
            // P recomputed from the saved log-sum-exp.
            for (int64_t j = 0; j < n; ++j) {
              double dot = 0;
              for (int64_t c = 0; c < s.d; ++c)
                dot += static_cast<double>(q0[i * s.d + c]) * k0[j * s.d + c];
              p[j] = AttnShape::sameSegment(segments, bi, s.tk, i, j)
                         ? std::exp(dot * scale - rowLse)
                         : 0.0;
            }
            double delta = 0; // rowsum(dout ⊙ out)
            for (int64_t c = 0; c < s.dv; ++c)
              delta += static_cast<double>(do0[i * s.dv + c]) * o0[i * s.dv + c];
            for (int64_t j = 0; j < n; ++j) {
              double dot = 0;
              for (int64_t c = 0; c < s.dv; ++c) {
                dot += static_cast<double>(do0[i * s.dv + c]) * v0[j * s.dv + c];
                accV[j * s.dv + c] += p[j] * do0[i * s.dv + c];
              }
              dp[j] = p[j] * (dot - delta) * scale; // dS, with the scale folded in
            }
            for (int64_t c = 0; c < s.d; ++c) {
              double acc = 0;
              for (int64_t j = 0; j < n; ++j) {
                acc += dp[j] * k0[j * s.d + c];
                accK[j * s.d + c] += dp[j] * q0[i * s.d + c];
              }
              dq0[i * s.d + c] = static_cast<T>(acc);
            }
          }
        }
        T *dk0 = dK + bkv * s.tk * s.d, *dv0 = dV + bkv * s.tk * s.dv;
        for (int64_t i = 0; i < s.tk * s.d; ++i)
          dk0[i] = static_cast<T>(accK[i]);
        for (int64_t i = 0; i < s.tk * s.dv; ++i)
          dv0[i] = static_cast<T>(accV[i]);
      }
    });
  });
  dq.roundToDType();
  dk.roundToDType();
  dv.roundToDType();
  return {dq, dk, dv};
}

} // namespace kiln::cpu::kernels
