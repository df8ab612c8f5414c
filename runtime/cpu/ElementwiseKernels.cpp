//===- ElementwiseKernels.cpp - elementwise ops on the CPU -----------------===//

#include "runtime/cpu/KernelSupport.h"
#include "runtime/cpu/Kernels.h"

#include <cmath>

namespace kiln::cpu::kernels {

namespace {

constexpr double kSqrt2OverPi = 0.7978845608028654; // √(2/π)
constexpr double kGeluCubic = 0.044715;
constexpr double kInvSqrt2 = 0.7071067811865476;
constexpr double kInvSqrt2Pi = 0.3989422804014327; // 1/√(2π)

/// tanh through one exp: 1 − 2/(e^{2x} + 1). For float it is several times
/// faster than tanhf and within a few ulps in absolute terms (all GELU
/// needs); double keeps std::tanh for the f64 gradient checks.
inline float fastTanh(float x) {
  if (x > 15.0f)
    return 1.0f;
  if (x < -15.0f)
    return -1.0f;
  return 1.0f - 2.0f / (std::exp(2.0f * x) + 1.0f);
}
inline double fastTanh(double x) { return std::tanh(x); }

template <typename T> T applyUnary(Unary kind, T x) {
  switch (kind) {
  case Unary::Neg: return -x;
  case Unary::Exp: return std::exp(x);
  case Unary::Log: return std::log(x);
  case Unary::Sqrt: return std::sqrt(x);
  case Unary::Rsqrt: return T(1) / std::sqrt(x);
  case Unary::Tanh: return std::tanh(x);
  case Unary::Sigmoid: return T(1) / (T(1) + std::exp(-x));
  case Unary::Silu: return x / (T(1) + std::exp(-x));
  case Unary::Relu: return x > T(0) ? x : T(0);
  case Unary::GeluTanh:
    return T(0.5) * x * (T(1) + fastTanh(T(kSqrt2OverPi) * (x + T(kGeluCubic) * x * x * x)));
  case Unary::GeluErf: return T(0.5) * x * (T(1) + std::erf(x * T(kInvSqrt2)));
  }
  return x;
}

template <typename T> T applyBinary(Binary kind, T a, T b) {
  switch (kind) {
  case Binary::Add: return a + b;
  case Binary::Sub: return a - b;
  case Binary::Mul: return a * b;
  case Binary::Div: return a / b;
  case Binary::Max: return (a != a || b != b) ? a + b : (a > b ? a : b); // nan propagates
  }
  return a;
}

template <typename T> T geluDerivative(bool tanhApprox, T x) {
  if (tanhApprox) {
    T u = T(kSqrt2OverPi) * (x + T(kGeluCubic) * x * x * x);
    T t = fastTanh(u);
    T du = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluCubic) * x * x);
    return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du;
  }
  T cdf = T(0.5) * (T(1) + std::erf(x * T(kInvSqrt2)));
  T pdf = T(kInvSqrt2Pi) * std::exp(T(-0.5) * x * x);
  return cdf + x * pdf;
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
      return kind == Unary::Neg ? wrapInteger(t, 0 - static_cast<uint64_t>(a[i])) : a[i];
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
      case Binary::Add: return wrapInteger(t, u + v);
      case Binary::Sub: return wrapInteger(t, u - v);
      case Binary::Mul: return wrapInteger(t, u * v);
      case Binary::Div: // float-only in the IR; defined here all the same
        if (y[i] == 0)
          return int64_t{0};
        return y[i] == -1 ? wrapInteger(t, 0 - u) : x[i] / y[i];
      case Binary::Max: return std::max(x[i], y[i]);
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
    case Binary::Add: fill<T>(out, [&](int64_t i) { return x[i] + y[i]; }); break;
    case Binary::Sub: fill<T>(out, [&](int64_t i) { return x[i] - y[i]; }); break;
    case Binary::Mul: fill<T>(out, [&](int64_t i) { return x[i] * y[i]; }); break;
    case Binary::Div: fill<T>(out, [&](int64_t i) { return x[i] / y[i]; }); break;
    case Binary::Max: fill<T>(out, [&](int64_t i) { return applyBinary<T>(kind, x[i], y[i]); }); break;
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
    fill<T>(out, [&](int64_t i) { return g[i] * geluDerivative<T>(tanhApprox, a[i]); });
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
