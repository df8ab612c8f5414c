//===- ScalarMath.h - the math of kiln's elementwise ops, written once ----===//
//
// Each elementwise op's scalar function, for one element, in the type it
// computes in (float for f32/bf16/f16, double for f64; 64-bit integers for
// the integer ops). The CPU interpreter calls these (compiled as C++), and
// the CUDA kernels codegen emits call them too: codegen/CMakeLists.txt
// embeds this file beside the kernel templates as "kiln/ScalarMath.h", and
// NVRTC compiles it as device code. ir/ElementwiseOps.def maps each op to
// its function here, so the interpreter and codegen cannot disagree on what
// an op means; only the libraries under them differ (glibc's expf and
// CUDA's are each within a few ulps).
//
// This header must stay valid for both compilers: no standard headers in
// device code (NVRTC has none), and the math library's overloads named
// through KILN_MATH (std:: on the host, the global overloads CUDA declares
// on the device).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_IR_SCALARMATH_H
#define KILN_IR_SCALARMATH_H

#ifdef __CUDACC__
#define KILN_SCALAR __device__ __forceinline__
#define KILN_MATH(f) ::f
#else
#include <cmath>
#define KILN_SCALAR inline
#define KILN_MATH(f) std::f
#endif

namespace kiln::scalar {

// Arithmetic. max propagates NaN from either side, as every kiln backend
// must: a NaN `a` is returned by the first test, a NaN `b` by the fall-through.
template <typename T> KILN_SCALAR T add(T a, T b) { return a + b; }
template <typename T> KILN_SCALAR T sub(T a, T b) { return a - b; }
template <typename T> KILN_SCALAR T mul(T a, T b) { return a * b; }
template <typename T> KILN_SCALAR T div(T a, T b) { return a / b; }
template <typename T> KILN_SCALAR T max(T a, T b) { return (a > b || a != a) ? a : b; }
template <typename T> KILN_SCALAR T neg(T x) { return -x; }

// Transcendentals, straight from the math library.
template <typename T> KILN_SCALAR T exp(T x) { return KILN_MATH(exp)(x); }
template <typename T> KILN_SCALAR T log(T x) { return KILN_MATH(log)(x); }
template <typename T> KILN_SCALAR T sqrt(T x) { return KILN_MATH(sqrt)(x); }
template <typename T> KILN_SCALAR T rsqrt(T x) { return T(1) / KILN_MATH(sqrt)(x); }
template <typename T> KILN_SCALAR T tanh(T x) { return KILN_MATH(tanh)(x); }

// Activations.
template <typename T> KILN_SCALAR T sigmoid(T x) { return T(1) / (T(1) + KILN_MATH(exp)(-x)); }
template <typename T> KILN_SCALAR T silu(T x) { return x / (T(1) + KILN_MATH(exp)(-x)); }
template <typename T> KILN_SCALAR T relu(T x) { return x > T(0) ? x : T(0); }

/// tanh for the GELU approximation. In float, through one exp:
/// 1 − 2/(e^{2x} + 1), exact at ±∞ and within a few 1e-7 absolute of tanh
/// (GELU adds it to 1, so only absolute error matters); it is several times
/// faster than tanhf on the CPU. Double keeps tanh for the f64 gradient checks.
template <typename T> KILN_SCALAR T geluTanhOf(T u) {
  if constexpr (sizeof(T) == sizeof(double)) {
    return KILN_MATH(tanh)(u);
  } else {
    if (u > T(15))
      return T(1);
    if (u < T(-15))
      return T(-1);
    return T(1) - T(2) / (KILN_MATH(exp)(T(2) * u) + T(1));
  }
}

constexpr double kSqrt2OverPi = 0.7978845608028654; // √(2/π)
constexpr double kGeluCubic = 0.044715;
constexpr double kInvSqrt2 = 0.7071067811865476;
constexpr double kInvSqrt2Pi = 0.3989422804014327; // 1/√(2π)

/// GELU, tanh approximation: ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
template <typename T> KILN_SCALAR T geluTanh(T x) {
  return T(0.5) * x * (T(1) + geluTanhOf(T(kSqrt2OverPi) * (x + T(kGeluCubic) * x * x * x)));
}
/// Its derivative: ½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²).
template <typename T> KILN_SCALAR T geluTanhGrad(T x) {
  T t = geluTanhOf(T(kSqrt2OverPi) * (x + T(kGeluCubic) * x * x * x));
  T du = T(kSqrt2OverPi) * (T(1) + T(3 * kGeluCubic) * x * x);
  return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * du;
}
/// GELU, exact: xΦ(x) = ½x(1 + erf(x/√2)).
template <typename T> KILN_SCALAR T geluErf(T x) {
  return T(0.5) * x * (T(1) + KILN_MATH(erf)(x * T(kInvSqrt2)));
}
/// Its derivative: Φ(x) + xφ(x).
template <typename T> KILN_SCALAR T geluErfGrad(T x) {
  return T(0.5) * (T(1) + KILN_MATH(erf)(x * T(kInvSqrt2))) +
         x * T(kInvSqrt2Pi) * KILN_MATH(exp)(T(-0.5) * x * x);
}

} // namespace kiln::scalar

#undef KILN_MATH
#undef KILN_SCALAR

#endif // KILN_IR_SCALARMATH_H
