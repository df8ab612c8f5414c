//===- ElementwiseKernels.cpp - elementwise ops on the CPU -----------------===//

#include "runtime/cpu/KernelSupport.h"
#include "runtime/cpu/Kernels.h"

#include "ir/ScalarMath.h"

#include <cmath>

namespace kiln::cpu::kernels {

namespace {

template <typename T> T applyUnary(Unary kind, T x) {
  switch (kind) {
#define KILN_UNARY(Op, fn)                                                                         \
  case Unary::fn:                                                                                  \
    return scalar::fn(x);
#include "ir/ElementwiseOps.def"
  case Unary::geluTanh: return scalar::geluTanh(x);
  case Unary::geluErf: return scalar::geluErf(x);
  }
  return x;
}

/// out[i] = f(i) over the tensor, in parallel chunks.
template <typename T, typename F> void fill(HostTensor &out, F f) {
  T *o = out.data<T>();
  parallelFor(out.numel(), kElementGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i)
      o[i] = f(i);
  });
}

/// `u` read as a two's-complement integer of `t`'s width (i1 keeps its 0/1).
int64_t wrapInteger(DType t, uint64_t u) {
  if (t == DType::I32)
    return static_cast<int32_t>(static_cast<uint32_t>(u));
  if (t == DType::I1)
    return static_cast<int64_t>(u & 1);
  return static_cast<int64_t>(u);
}

} // namespace

HostTensor unary(Unary kind, const HostTensor &x) {
  HostTensor out = HostTensor::uninitialized(x.dtype(), x.shape());
  if (!isFloat(x.dtype())) { // neg on integers, two's complement at the tensor's width
    const int64_t *a = x.data<int64_t>();
    DType t = x.dtype();
    fill<int64_t>(out, [&](int64_t i) {
      return kind == Unary::neg ? wrapInteger(t, 0 - static_cast<uint64_t>(a[i])) : a[i];
    });
    return out;
  }
  withFloatType(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *a = x.data<T>();
    fill<T>(out, [&](int64_t i) { return applyUnary<T>(kind, a[i]); });
  });
  out.roundToDType();
  return out;
}

HostTensor binary(Binary kind, const HostTensor &a, const HostTensor &b) {
  HostTensor out = HostTensor::uninitialized(a.dtype(), a.shape());
  if (!isFloat(a.dtype())) {
    // Two's complement at the tensor's width, as the GPU's int stores do
    // (arithmetic in uint64: signed overflow would be undefined).
    const int64_t *x = a.data<int64_t>(), *y = b.data<int64_t>();
    DType t = a.dtype();
    fill<int64_t>(out, [&](int64_t i) {
      uint64_t u = static_cast<uint64_t>(x[i]), v = static_cast<uint64_t>(y[i]);
      switch (kind) {
      case Binary::add: return wrapInteger(t, u + v);
      case Binary::sub: return wrapInteger(t, u - v);
      case Binary::mul: return wrapInteger(t, u * v);
      case Binary::div: // float-only in the IR; defined here all the same
        if (y[i] == 0)
          return int64_t{0};
        return y[i] == -1 ? wrapInteger(t, 0 - u) : x[i] / y[i];
      case Binary::max: return std::max(x[i], y[i]);
      }
      return x[i];
    });
    return out;
  }
  withFloatType(a.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *x = a.data<T>(), *y = b.data<T>();
    // One loop per kind, so the compiler vectorizes each.
    switch (kind) {
#define KILN_BINARY(Op, fn)                                                                        \
  case Binary::fn:                                                                                 \
    fill<T>(out, [&](int64_t i) { return scalar::fn(x[i], y[i]); });                               \
    break;
#include "ir/ElementwiseOps.def"
    }
  });
  out.roundToDType();
  return out;
}

HostTensor geluGrad(bool tanhApprox, const HostTensor &x, const HostTensor &dy) {
  HostTensor out = HostTensor::uninitialized(x.dtype(), x.shape());
  withFloatType(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const T *a = x.data<T>(), *g = dy.data<T>();
    fill<T>(out, [&](int64_t i) { return g[i] * (tanhApprox ? scalar::geluTanhGrad(a[i]) : scalar::geluErfGrad(a[i])); });
  });
  out.roundToDType();
  return out;
}

HostTensor cast(const HostTensor &x, DType to) {
  HostTensor out = HostTensor::uninitialized(to, x.shape());
  int64_t n = x.numel();
  if (isFloat(to)) {
    withFloatType(to, [&](auto tag) {
      using T = decltype(tag);
      T *o = out.data<T>();
      for (int64_t i = 0; i < n; ++i)
        o[i] = static_cast<T>(x.get(i));
    });
    out.roundToDType();
    return out;
  }
  int64_t *o = out.data<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    double v = x.get(i);
    if (to == DType::I1)
      o[i] = v != 0.0;
    else if (std::isnan(v))
      o[i] = 0;
    else
      o[i] = static_cast<int64_t>(std::trunc(v)); // toward zero
    if (to == DType::I32)
      o[i] = static_cast<int32_t>(o[i]);
  }
  return out;
}

HostTensor compare(Compare kind, const HostTensor &a, const HostTensor &b) {
  HostTensor out = HostTensor::uninitialized(DType::I1, a.shape());
  int64_t *o = out.data<int64_t>();
  auto run = [&](const auto *x, const auto *y) {
    parallelFor(a.numel(), kElementGrain, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        bool r = false;
        switch (kind) {
        case Compare::Eq: r = x[i] == y[i]; break;
        case Compare::Ne: r = x[i] != y[i]; break;
        case Compare::Lt: r = x[i] < y[i]; break;
        case Compare::Le: r = x[i] <= y[i]; break;
        case Compare::Gt: r = x[i] > y[i]; break;
        case Compare::Ge: r = x[i] >= y[i]; break;
        }
        o[i] = r;
      }
    });
  };
  if (a.dtype() == DType::F64)
    run(a.data<double>(), b.data<double>());
  else if (isFloat(a.dtype()))
    run(a.data<float>(), b.data<float>());
  else
    run(a.data<int64_t>(), b.data<int64_t>());
  return out;
}

HostTensor select(const HostTensor &cond, const HostTensor &a, const HostTensor &b) {
  HostTensor out = HostTensor::uninitialized(a.dtype(), a.shape());
  const int64_t *c = cond.data<int64_t>();
  auto run = [&](auto tag) {
    using T = decltype(tag);
    const T *x = a.data<T>(), *y = b.data<T>();
    fill<T>(out, [&](int64_t i) { return c[i] ? x[i] : y[i]; });
  };
  if (a.dtype() == DType::F64)
    run(double{});
  else if (isFloat(a.dtype()))
    run(float{});
  else
    run(int64_t{});
  return out;
}

} // namespace kiln::cpu::kernels
