//===- NNKernels.cpp - neural-network composites on the CPU ----------------===//

#include "runtime/cpu/KernelSupport.h"
#include "runtime/cpu/Kernels.h"

#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <limits>
#include <tuple>

namespace kiln::cpu::kernels {

namespace {

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

} // namespace

llvm::Expected<HostTensor> embedding(const HostTensor &table, const HostTensor &ids) {
  // Batch dimensions: the table's leading ones, shared with the ids'.
  const int64_t rows = table.dim(-2), c = table.dim(-1), n = ids.numel(),
                tables = product(llvm::ArrayRef(table.shape()).drop_back(2));
  const int64_t perTable = tables > 0 ? n / tables : 0;
  std::vector<int64_t> shape = ids.shape();
  shape.push_back(c);
  HostTensor out = HostTensor::uninitialized(table.dtype(), shape);
  const int64_t *id = ids.data<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    if (id[i] < 0 || id[i] >= rows)
      return error(llvm::formatv("id {0} at position {1} is outside the table's {2} rows",
                                 id[i], i, rows));
  size_t rowBytes = static_cast<size_t>(c) * storageSize(table.dtype());
  const char *src = static_cast<const char *>(table.raw());
  char *dst = static_cast<char *>(out.raw());
  parallelFor(n, rowGrain(c), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      std::memcpy(dst + i * rowBytes, src + ((i / perTable) * rows + id[i]) * rowBytes, rowBytes);
  });
  return out;
}

llvm::Expected<HostTensor> embeddingGrad(const HostTensor &ids, const HostTensor &dy,
                                         llvm::ArrayRef<int64_t> tableShape) {
  const int64_t rows = tableShape[tableShape.size() - 2], c = dy.dim(-1), n = ids.numel(),
                tables = product(tableShape.drop_back(2));
  const int64_t perTable = tables > 0 ? n / tables : 0;
  HostTensor out(dy.dtype(), std::vector<int64_t>(tableShape.begin(), tableShape.end()));
  const int64_t *id = ids.data<int64_t>();
  for (int64_t i = 0; i < n; ++i)
    if (id[i] < 0 || id[i] >= rows)
      return error(llvm::formatv("id {0} at position {1} is outside the table's {2} rows",
                                 id[i], i, rows));
  withFloatType(dy.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *g = dy.data<T>();
    std::vector<double> acc(static_cast<size_t>(tables * rows * c), 0.0);
    // Split over channels so each thread owns its columns of every row.
    parallelFor(c, 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = 0; i < n; ++i) {
        int64_t row = (i / perTable) * rows + id[i];
        for (int64_t j = begin; j < end; ++j)
          acc[row * c + j] += g[i * c + j];
      }
    });
    T *o = out.data<T>();
    for (int64_t i = 0; i < tables * rows * c; ++i)
      o[i] = static_cast<T>(acc[i]);
  });
  out.roundToDType();
  return out;
}

HostTensor softmax(const HostTensor &x, bool log) {
  HostTensor out = HostTensor::uninitialized(x.dtype(), x.shape());
  int64_t rows, n;
  std::tie(rows, n) = rowsOf(x);
  withFloatType(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *in = x.data<T>();
    T *o = out.data<T>();
    parallelFor(rows, rowGrain(n), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T *xr = in + r * n;
        T *orow = o + r * n;
        T mx = -std::numeric_limits<T>::infinity();
        for (int64_t j = 0; j < n; ++j)
          mx = std::max(mx, xr[j]);
        // exp in the storage type (expf for float), summed in double.
        double sum = 0;
        for (int64_t j = 0; j < n; ++j) {
          T e = std::exp(xr[j] - mx);
          orow[j] = e;
          sum += e;
        }
        if (log) {
          T logSum = static_cast<T>(std::log(sum));
          for (int64_t j = 0; j < n; ++j)
            orow[j] = xr[j] - mx - logSum;
        } else {
          T inv = static_cast<T>(1.0 / sum);
          for (int64_t j = 0; j < n; ++j)
            orow[j] *= inv;
        }
      }
    });
  });
  out.roundToDType();
  return out;
}

HostTensor softmaxGrad(const HostTensor &y, const HostTensor &dy) {
  HostTensor out = HostTensor::uninitialized(y.dtype(), y.shape());
  int64_t rows, n;
  std::tie(rows, n) = rowsOf(y);
  withFloatType(y.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *p = y.data<T>(), *g = dy.data<T>();
    T *o = out.data<T>();
    parallelFor(rows, rowGrain(n), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        double dot = 0;
        for (int64_t j = 0; j < n; ++j)
          dot += static_cast<double>(g[r * n + j]) * p[r * n + j];
        for (int64_t j = 0; j < n; ++j)
          o[r * n + j] = static_cast<T>(p[r * n + j] * (g[r * n + j] - dot));
      }
    });
  });
  out.roundToDType();
  return out;
}

std::tuple<HostTensor, HostTensor, HostTensor> layerNorm(const HostTensor &x, const HostTensor &w,
                                                         const HostTensor &b, double eps,
                                                         DType statsType) {
  HostTensor y = HostTensor::uninitialized(x.dtype(), x.shape());
  HostTensor mean(statsType, dropLast(x.shape())), rstd(statsType, dropLast(x.shape()));
  int64_t rows, n;
  std::tie(rows, n) = rowsOf(x);
  withFloatType(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *in = x.data<T>(), *wp = w.data<T>(), *bp = b.data<T>();
    T *out = y.data<T>();
    parallelFor(rows, rowGrain(n), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T *xr = in + r * n;
        double m = 0;
        for (int64_t j = 0; j < n; ++j)
          m += xr[j];
        m /= n;
        double var = 0;
        for (int64_t j = 0; j < n; ++j)
          var += (xr[j] - m) * (xr[j] - m);
        var /= n;
        double rs = 1.0 / std::sqrt(var + eps);
        for (int64_t j = 0; j < n; ++j)
          out[r * n + j] = static_cast<T>((xr[j] - m) * rs * wp[j] + bp[j]);
        mean.set(r, m);
        rstd.set(r, rs);
      }
    });
  });
  y.roundToDType();
  return {y, mean, rstd};
}

std::tuple<HostTensor, HostTensor, HostTensor>
layerNormGrad(const HostTensor &x, const HostTensor &w, const HostTensor &mean,
              const HostTensor &rstd, const HostTensor &dy) {
  HostTensor dx = HostTensor::uninitialized(x.dtype(), x.shape());
  HostTensor dw(w.dtype(), w.shape()), db(w.dtype(), w.shape());
  int64_t rows, n;
  std::tie(rows, n) = rowsOf(x);
  withFloatType(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *in = x.data<T>(), *wp = w.data<T>(), *g = dy.data<T>();
    T *out = dx.data<T>();
    parallelFor(rows, rowGrain(n), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        double m = mean.get(r), rs = rstd.get(r), meanG = 0, meanGX = 0;
        for (int64_t j = 0; j < n; ++j) {
          double xhat = (in[r * n + j] - m) * rs, gj = static_cast<double>(g[r * n + j]) * wp[j];
          meanG += gj;
          meanGX += gj * xhat;
        }
        meanG /= n;
        meanGX /= n;
        for (int64_t j = 0; j < n; ++j) {
          double xhat = (in[r * n + j] - m) * rs, gj = static_cast<double>(g[r * n + j]) * wp[j];
          out[r * n + j] = static_cast<T>(rs * (gj - meanG - xhat * meanGX));
        }
      }
    });
    std::vector<double> accW(static_cast<size_t>(n), 0.0), accB(static_cast<size_t>(n), 0.0);
    parallelFor(n, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = 0; r < rows; ++r) {
        double m = mean.get(r), rs = rstd.get(r);
        for (int64_t j = begin; j < end; ++j) {
          accW[j] += static_cast<double>(g[r * n + j]) * (in[r * n + j] - m) * rs;
          accB[j] += g[r * n + j];
        }
      }
    });
    for (int64_t j = 0; j < n; ++j) {
      dw.set(j, accW[j]);
      db.set(j, accB[j]);
    }
  });
  dx.roundToDType();
  return {dx, dw, db};
}

std::tuple<HostTensor, HostTensor> rmsNorm(const HostTensor &x, const HostTensor &w, double eps,
                                           DType statsType) {
  HostTensor y(x.dtype(), x.shape()), rstd(statsType, dropLast(x.shape()));
  int64_t rows, n;
  std::tie(rows, n) = rowsOf(x);
  withFloatType(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *in = x.data<T>(), *wp = w.data<T>();
    T *out = y.data<T>();
    parallelFor(rows, rowGrain(n), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        double ms = 0;
        for (int64_t j = 0; j < n; ++j)
          ms += static_cast<double>(in[r * n + j]) * in[r * n + j];
        double rs = 1.0 / std::sqrt(ms / n + eps);
        for (int64_t j = 0; j < n; ++j)
          out[r * n + j] = static_cast<T>(in[r * n + j] * rs * wp[j]);
        rstd.set(r, rs);
      }
    });
  });
  y.roundToDType();
  return {y, rstd};
}

std::tuple<HostTensor, HostTensor> rmsNormGrad(const HostTensor &x, const HostTensor &w,
                                               const HostTensor &rstd, const HostTensor &dy) {
  HostTensor dx(x.dtype(), x.shape()), dw(w.dtype(), w.shape());
  int64_t rows, n;
  std::tie(rows, n) = rowsOf(x);
  withFloatType(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *in = x.data<T>(), *wp = w.data<T>(), *g = dy.data<T>();
    T *out = dx.data<T>();
    parallelFor(rows, rowGrain(n), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        double rs = rstd.get(r), meanGX = 0;
        for (int64_t j = 0; j < n; ++j)
          meanGX += static_cast<double>(g[r * n + j]) * wp[j] * in[r * n + j] * rs;
        meanGX /= n;
        for (int64_t j = 0; j < n; ++j) {
          double xhat = in[r * n + j] * rs, gj = static_cast<double>(g[r * n + j]) * wp[j];
          out[r * n + j] = static_cast<T>(rs * (gj - xhat * meanGX));
        }
      }
    });
    std::vector<double> acc(static_cast<size_t>(n), 0.0);
    for (int64_t r = 0; r < rows; ++r) {
      double rs = rstd.get(r);
      for (int64_t j = 0; j < n; ++j)
        acc[j] += static_cast<double>(g[r * n + j]) * in[r * n + j] * rs;
    }
    for (int64_t j = 0; j < n; ++j)
      dw.set(j, acc[j]);
  });
  dx.roundToDType();
  return {dx, dw};
}

std::tuple<HostTensor, HostTensor, HostTensor> moeRoute(const HostTensor &probs, int64_t topK,
                                                        int64_t capacity, DType indexType) {
  const int64_t n = probs.dim(-2), e = probs.dim(-1);
  std::vector<int64_t> groupShape(probs.shape().begin(), probs.shape().end() - 2);
  const int64_t groups = product(groupShape);
  auto shaped = [&](std::initializer_list<int64_t> tail) {
    std::vector<int64_t> shape = groupShape;
    shape.insert(shape.end(), tail);
    return shape;
  };
  HostTensor expert(indexType, shaped({n, topK})), slot(indexType, shaped({n, topK})),
      token(indexType, shaped({e * capacity}));
  std::vector<char> taken(static_cast<size_t>(e));
  std::vector<int64_t> filled(static_cast<size_t>(e));
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t scores = g * n * e, choices = g * n * topK, slots = g * e * capacity;
    // Choice j of a row: the highest score not yet chosen; a tie goes to the
    // lower index, and a NaN loses to every number (`>` is false for it).
    for (int64_t i = 0; i < n; ++i) {
      std::fill(taken.begin(), taken.end(), 0);
      for (int64_t j = 0; j < topK; ++j) {
        int64_t best = -1;
        double bestScore = 0;
        for (int64_t x = 0; x < e; ++x) {
          if (taken[x])
            continue;
          double score = probs.get(scores + i * e + x);
          if (best < 0 || score > bestScore || (std::isnan(bestScore) && !std::isnan(score))) {
            best = x;
            bestScore = score;
          }
        }
        taken[best] = 1;
        expert.set(choices + i * topK + j, static_cast<double>(best));
      }
    }
    for (int64_t s = 0; s < e * capacity; ++s)
      token.set(slots + s, static_cast<double>(n));
    // GShard's order: all first choices in token order, then all second ones.
    std::fill(filled.begin(), filled.end(), 0);
    for (int64_t j = 0; j < topK; ++j)
      for (int64_t i = 0; i < n; ++i) {
        auto x = static_cast<int64_t>(expert.get(choices + i * topK + j));
        if (filled[x] >= capacity) {
          slot.set(choices + i * topK + j, static_cast<double>(e * capacity));
          continue;
        }
        int64_t s = x * capacity + filled[x]++;
        slot.set(choices + i * topK + j, static_cast<double>(s));
        token.set(slots + s, static_cast<double>(i));
      }
  }
  return {std::move(expert), std::move(slot), std::move(token)};
}

HostTensor rope(const HostTensor &x, double theta, bool inverse, int64_t positionDim) {
  HostTensor out(x.dtype(), x.shape());
  int64_t rank = static_cast<int64_t>(x.shape().size());
  if (positionDim < 0)
    positionDim = rank - 2;
  int64_t d = x.dim(-1), t = x.shape()[positionDim], half = d / 2;
  // Rows of D between a position and the next (the heads of [B, T, H, D]).
  int64_t inner = 1;
  for (int64_t i = positionDim + 1; i < rank - 1; ++i)
    inner *= x.shape()[i];
  int64_t rows = x.numel() / d; // each row is one position of one head
  std::vector<double> freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i)
    freq[i] = std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(d));
  double sign = inverse ? -1.0 : 1.0;
  withFloatType(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *in = x.data<T>();
    T *o = out.data<T>();
    parallelFor(rows, rowGrain(d), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        double pos = static_cast<double>((r / inner) % t);
        for (int64_t i = 0; i < half; ++i) {
          double angle = pos * freq[i], c = std::cos(angle), s = sign * std::sin(angle);
          double a = in[r * d + i], b = in[r * d + i + half];
          o[r * d + i] = static_cast<T>(a * c - b * s);
          o[r * d + i + half] = static_cast<T>(b * c + a * s);
        }
      }
    });
  });
  out.roundToDType();
  return out;
}

llvm::Expected<std::tuple<HostTensor, HostTensor>>
crossEntropy(const HostTensor &logits, const HostTensor &targets, int64_t validClasses,
             DType statsType) {
  int64_t rows, v;
  std::tie(rows, v) = rowsOf(logits);
  HostTensor loss(statsType, targets.shape()), lse(statsType, targets.shape());
  const int64_t *t = targets.data<int64_t>();
  for (int64_t r = 0; r < rows; ++r)
    if (t[r] >= validClasses)
      return error(llvm::formatv("target {0} at position {1} is not below the {2} classes",
                                 t[r], r, validClasses));
  withFloatType(logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *l = logits.data<T>();
    parallelFor(rows, rowGrain(v), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T *lr = l + r * v;
        double mx = -std::numeric_limits<double>::infinity();
        for (int64_t c = 0; c < validClasses; ++c)
          mx = std::max<double>(mx, lr[c]);
        double sum = 0;
        for (int64_t c = 0; c < validClasses; ++c)
          sum += std::exp(static_cast<double>(lr[c]) - mx);
        double rowLse = mx + std::log(sum);
        lse.set(r, rowLse);
        loss.set(r, t[r] < 0 ? 0.0 : rowLse - lr[t[r]]);
      }
    });
  });
  return std::make_tuple(loss, lse);
}

llvm::Expected<HostTensor> crossEntropyGrad(const HostTensor &logits, const HostTensor &targets,
                                            const HostTensor &lse, const HostTensor &dloss,
                                            int64_t validClasses) {
  int64_t rows, v;
  std::tie(rows, v) = rowsOf(logits);
  HostTensor out(logits.dtype(), logits.shape());
  const int64_t *t = targets.data<int64_t>();
  for (int64_t r = 0; r < rows; ++r)
    if (t[r] >= validClasses)
      return error(llvm::formatv("target {0} at position {1} is not below the {2} classes",
                                 t[r], r, validClasses));
  withFloatType(logits.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *l = logits.data<T>();
    T *o = out.data<T>();
    parallelFor(rows, rowGrain(v), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        if (t[r] < 0)
          continue; // ignored position: zero gradient
        double g = dloss.get(r), rowLse = lse.get(r);
        for (int64_t c = 0; c < validClasses; ++c)
          o[r * v + c] = static_cast<T>(g * (std::exp(l[r * v + c] - rowLse) - (c == t[r])));
      }
    });
  });
  out.roundToDType();
  return out;
}

} // namespace kiln::cpu::kernels
