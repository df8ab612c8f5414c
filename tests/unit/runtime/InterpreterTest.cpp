//===- InterpreterTest.cpp - the CPU interpreter against references --------===//
//
// Three kinds of reference: values worked out by hand (shape ops, rounding),
// formulas written out in the test in double precision (composites), and the
// interpreter's own primitive path (attention vs matmul/softmax/matmul).
// Tolerances are stated at each check.
//
//===----------------------------------------------------------------------===//

#include "runtime/Random.h"
#include "runtime/cpu/Interpreter.h"
#include "tests/unit/TestSupport.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "gtest/gtest.h"

#include <cmath>

using namespace mlir;
using namespace kiln;
using cpu::DType;
using cpu::HostTensor;

namespace {

HostTensor tensor(DType dtype, std::vector<int64_t> shape, std::vector<double> values) {
  HostTensor t(dtype, std::move(shape));
  for (size_t i = 0; i < values.size(); ++i)
    t.set(static_cast<int64_t>(i), values[i]);
  return t;
}

HostTensor randomTensor(DType dtype, std::vector<int64_t> shape, Rng &rng) {
  HostTensor t(dtype, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i)
    t.set(i, rng.normal());
  return t;
}

std::vector<double> values(const HostTensor &t) {
  std::vector<double> v;
  for (int64_t i = 0; i < t.numel(); ++i)
    v.push_back(t.get(i));
  return v;
}

/// Parses `source`, interprets @f on `args` and returns its results.
std::vector<HostTensor> run(const std::string &source, std::vector<HostTensor> args) {
  static auto ctx = test::makeContext();
  auto module = test::parse(*ctx, source);
  if (!module)
    return {};
  auto interp = cpu::Interpreter::create(module->lookupSymbol<func::FuncOp>("f"));
  if (!interp) {
    ADD_FAILURE() << llvm::toString(interp.takeError());
    return {};
  }
  auto out = (*interp)->run(args);
  if (!out) {
    ADD_FAILURE() << llvm::toString(out.takeError());
    return {};
  }
  return *out;
}

/// Max |a − b| / max(1, |b|) over all elements, printed on failure.
void expectClose(const HostTensor &a, const std::vector<double> &ref, double tol,
                 const char *what) {
  ASSERT_EQ(a.numel(), static_cast<int64_t>(ref.size())) << what;
  double worst = 0;
  int64_t at = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    double err = std::abs(a.get(i) - ref[i]) / std::max(1.0, std::abs(ref[i]));
    if (!(err <= worst)) {
      worst = err;
      at = i;
    }
  }
  EXPECT_LE(worst, tol) << what << ": worst error " << worst << " at " << at << " (got "
                        << a.get(at) << ", want " << ref[at] << ")";
}

TEST(Interpreter, ShapeOpsMoveTheRightElements) {
  HostTensor x = tensor(DType::F32, {2, 3}, {0, 1, 2, 3, 4, 5});
  auto out = run(R"(func.func @f(%x: tensor<2x3xf32>) -> (tensor<3x2xf32>, tensor<2x2x3xf32>, tensor<2x2xf32>,
                                          tensor<4x6xf32>, tensor<2x6xf32>, tensor<6xf32>) {
    %t = kiln.transpose %x, [1, 0] : tensor<2x3xf32> -> tensor<3x2xf32>
    %b = kiln.broadcast_in_dim %x, dims = [1, 2] : tensor<2x3xf32> -> tensor<2x2x3xf32>
    %s = kiln.slice %x [0:2, 0:3:2] : tensor<2x3xf32> -> tensor<2x2xf32>
    %p = kiln.pad %x low = [1, 0] high = [1, 1] interior = [0, 1] : tensor<2x3xf32> -> tensor<4x6xf32>
    %c = kiln.concat %x, %x dim = 1 : tensor<2x3xf32>, tensor<2x3xf32> -> tensor<2x6xf32>
    %r = kiln.reshape %x : tensor<2x3xf32> -> tensor<6xf32>
    return %t, %b, %s, %p, %c, %r : tensor<3x2xf32>, tensor<2x2x3xf32>, tensor<2x2xf32>, tensor<4x6xf32>, tensor<2x6xf32>, tensor<6xf32>
  })",
                 {x});
  ASSERT_EQ(out.size(), 6u);
  EXPECT_EQ(values(out[0]), (std::vector<double>{0, 3, 1, 4, 2, 5}));
  EXPECT_EQ(values(out[1]), (std::vector<double>{0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(values(out[2]), (std::vector<double>{0, 2, 3, 5}));
  EXPECT_EQ(values(out[3]), (std::vector<double>{0, 0, 0, 0, 0, 0, //
                                                 0, 0, 1, 0, 2, 0, //
                                                 3, 0, 4, 0, 5, 0, //
                                                 0, 0, 0, 0, 0, 0}));
  EXPECT_EQ(values(out[4]), (std::vector<double>{0, 1, 2, 0, 1, 2, 3, 4, 5, 3, 4, 5}));
  EXPECT_EQ(values(out[5]), (std::vector<double>{0, 1, 2, 3, 4, 5}));
}

TEST(Interpreter, BroadcastOfSizeOneDimension) {
  HostTensor x = tensor(DType::F64, {3, 1}, {1, 2, 3});
  auto out = run(R"(func.func @f(%x: tensor<3x1xf64>) -> tensor<3x2xf64> {
    %b = kiln.broadcast_in_dim %x, dims = [0, 1] : tensor<3x1xf64> -> tensor<3x2xf64>
    return %b : tensor<3x2xf64>
  })",
                 {x});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(values(out[0]), (std::vector<double>{1, 1, 2, 2, 3, 3}));
}

TEST(Interpreter, ReductionsOverLeadingMiddleAndTrailingDims) {
  HostTensor x = tensor(DType::F32, {2, 3, 2}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11});
  auto out = run(R"(func.func @f(%x: tensor<2x3x2xf32>) -> (tensor<3x2xf32>, tensor<2x2xf32>, tensor<2x3xf32>, tensor<f32>) {
    %a = kiln.reduce_sum %x, dims = [0] : tensor<2x3x2xf32> -> tensor<3x2xf32>
    %b = kiln.reduce_max %x, dims = [1] : tensor<2x3x2xf32> -> tensor<2x2xf32>
    %c = kiln.reduce_mean %x, dims = [2] : tensor<2x3x2xf32> -> tensor<2x3xf32>
    %d = kiln.reduce_mean %x, dims = [0, 1, 2] : tensor<2x3x2xf32> -> tensor<f32>
    return %a, %b, %c, %d : tensor<3x2xf32>, tensor<2x2xf32>, tensor<2x3xf32>, tensor<f32>
  })",
                 {x});
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(values(out[0]), (std::vector<double>{6, 8, 10, 12, 14, 16}));
  EXPECT_EQ(values(out[1]), (std::vector<double>{4, 5, 10, 11}));
  EXPECT_EQ(values(out[2]), (std::vector<double>{0.5, 2.5, 4.5, 6.5, 8.5, 10.5}));
  EXPECT_EQ(values(out[3]), (std::vector<double>{5.5}));
}

TEST(Interpreter, ElementwiseMaskAndCast) {
  HostTensor a = tensor(DType::F32, {4}, {-1.75, 0.5, 2.0, -0.25});
  auto out = run(R"(func.func @f(%a: tensor<4xf32>) -> (tensor<4xi32>, tensor<4xf32>, tensor<3x3xi32>, tensor<4xf32>) {
    %i = kiln.cast %a : tensor<4xf32> to tensor<4xi32>
    %z = kiln.constant dense<0.0> : tensor<4xf32>
    %pos = kiln.compare gt, %a, %z : tensor<4xf32>
    %r = kiln.select %pos, %a, %z : tensor<4xi1>, tensor<4xf32>
    %row = kiln.iota dim = 0 : tensor<3x3xi32>
    %m = kiln.max %a, %z : tensor<4xf32>
    return %i, %r, %row, %m : tensor<4xi32>, tensor<4xf32>, tensor<3x3xi32>, tensor<4xf32>
  })",
                 {a});
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(values(out[0]), (std::vector<double>{-1, 0, 2, 0})); // toward zero
  EXPECT_EQ(values(out[1]), (std::vector<double>{0, 0.5, 2, 0}));
  EXPECT_EQ(values(out[2]), (std::vector<double>{0, 0, 0, 1, 1, 1, 2, 2, 2}));
  EXPECT_EQ(values(out[3]), values(out[1]));
}

TEST(Interpreter, IntegerArithmeticWrapsAtItsWidth) {
  // i32 results wrap as the GPU's 32-bit stores do: 50000^2 = 2500000000
  // is -1794967296 in i32, and -(-2^31) is -2^31.
  HostTensor a = tensor(DType::I32, {3}, {50000, -2147483648.0, 7});
  HostTensor b = tensor(DType::I32, {3}, {50000, -1, -2});
  auto out = run(R"(func.func @f(%a: tensor<3xi32>, %b: tensor<3xi32>) -> (tensor<3xi32>, tensor<3xi32>, tensor<3xi32>, tensor<3xi32>) {
    %m = kiln.mul %a, %b : tensor<3xi32>
    %d = kiln.sub %b, %a : tensor<3xi32>
    %n = kiln.neg %a : tensor<3xi32>
    %s = kiln.add %m, %m : tensor<3xi32>
    return %m, %d, %n, %s : tensor<3xi32>, tensor<3xi32>, tensor<3xi32>, tensor<3xi32>
  })",
                 {a, b});
  ASSERT_EQ(out.size(), 4u);
  EXPECT_EQ(values(out[0]), (std::vector<double>{-1794967296.0, -2147483648.0, -14}));
  EXPECT_EQ(values(out[1]), (std::vector<double>{0, 2147483647.0, -9}));
  EXPECT_EQ(values(out[2]), (std::vector<double>{-50000, -2147483648.0, -7}));
  EXPECT_EQ(values(out[3]), (std::vector<double>{705032704.0, 0, -28}));
}

TEST(Interpreter, MatmulTransposesAndSharedWeight) {
  HostTensor a = tensor(DType::F32, {2, 3}, {1, 2, 3, 4, 5, 6});
  HostTensor b = tensor(DType::F32, {3, 2}, {1, 0, 0, 1, 1, 1});
  auto out = run(R"(func.func @f(%a: tensor<2x3xf32>, %b: tensor<3x2xf32>) -> (tensor<2x2xf32>, tensor<3x3xf32>, tensor<2x2x2xf32>) {
    %c = kiln.matmul %a, %b : tensor<2x3xf32>, tensor<3x2xf32> -> tensor<2x2xf32>
    %d = kiln.matmul %a, %a transpose_a : tensor<2x3xf32>, tensor<2x3xf32> -> tensor<3x3xf32>
    %s = kiln.broadcast_in_dim %a, dims = [1, 2] : tensor<2x3xf32> -> tensor<2x2x3xf32>
    %e = kiln.matmul %s, %b : tensor<2x2x3xf32>, tensor<3x2xf32> -> tensor<2x2x2xf32>
    return %c, %d, %e : tensor<2x2xf32>, tensor<3x3xf32>, tensor<2x2x2xf32>
  })",
                 {a, b});
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(values(out[0]), (std::vector<double>{4, 5, 10, 11}));
  // aᵀ·a: column dot products.
  EXPECT_EQ(values(out[1]), (std::vector<double>{17, 22, 27, 22, 29, 36, 27, 36, 45}));
  EXPECT_EQ(values(out[2]), (std::vector<double>{4, 5, 10, 11, 4, 5, 10, 11}));
}

TEST(Interpreter, Bf16AndF16RoundToNearestEven) {
  // 1 + 2^-8 lies halfway between the bf16 neighbours 1 and 1 + 2^-7: ties go
  // to the even mantissa (1). 1 + 3·2^-9 is above halfway: up to 1 + 2^-7.
  EXPECT_EQ(cpu::roundToBF16(1.0f + 0x1p-8f), 1.0f);
  EXPECT_EQ(cpu::roundToBF16(1.0f + 3 * 0x1p-9f), 1.0f + 0x1p-7f);
  EXPECT_EQ(cpu::roundToBF16(1.0f + 3 * 0x1p-8f), 1.0f + 0x1p-6f); // tie, odd below: up
  // f16: 10 mantissa bits; 65520 and above overflow to inf; 2^-24 is the
  // smallest subnormal and 2^-26 rounds to 0.
  EXPECT_EQ(cpu::roundToF16(1.0f + 0x1p-11f), 1.0f);
  EXPECT_EQ(cpu::roundToF16(1.0f + 3 * 0x1p-12f), 1.0f + 0x1p-10f);
  EXPECT_TRUE(std::isinf(cpu::roundToF16(65520.0f)));
  EXPECT_EQ(cpu::roundToF16(65504.0f), 65504.0f);
  EXPECT_EQ(cpu::roundToF16(0x1p-24f), 0x1p-24f);
  EXPECT_EQ(cpu::roundToF16(0x1p-26f), 0.0f);
  EXPECT_EQ(cpu::roundToF16(3 * 0x1p-25f), 0x1p-23f); // 1.5 ulp: tie to even (2 ulp)

  // An op with a bf16 result rounds it: 1 + 2^-8 is not a bf16.
  HostTensor one = tensor(DType::BF16, {1}, {1.0});
  HostTensor tiny = tensor(DType::BF16, {1}, {0x1p-8});
  auto out = run(R"(func.func @f(%a: tensor<1xbf16>, %b: tensor<1xbf16>) -> tensor<1xbf16> {
    %c = kiln.add %a, %b : tensor<1xbf16>
    return %c : tensor<1xbf16>
  })",
                 {one, tiny});
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].get(0), 1.0);
}

TEST(Interpreter, NormsSoftmaxAndActivationsMatchTheirFormulas) {
  Rng rng(3);
  HostTensor x = randomTensor(DType::F64, {3, 8}, rng), w = randomTensor(DType::F64, {8}, rng),
             b = randomTensor(DType::F64, {8}, rng);
  auto out = run(R"(func.func @f(%x: tensor<3x8xf64>, %w: tensor<8xf64>, %b: tensor<8xf64>)
      -> (tensor<3x8xf64>, tensor<3x8xf64>, tensor<3x8xf64>, tensor<3x8xf64>, tensor<3x8xf64>, tensor<3x8xf64>, tensor<3x8xf64>) {
    %y, %m, %r = kiln.layer_norm %x, %w, %b {epsilon = 1.0e-05 : f32} : tensor<3x8xf64>, tensor<8xf64>, tensor<8xf64> -> tensor<3x8xf64>, tensor<3xf64>, tensor<3xf64>
    %z, %q = kiln.rms_norm %x, %w {epsilon = 1.0e-06 : f32} : tensor<3x8xf64>, tensor<8xf64> -> tensor<3x8xf64>, tensor<3xf64>
    %s = kiln.softmax %x : tensor<3x8xf64>
    %ls = kiln.log_softmax %x : tensor<3x8xf64>
    %g = kiln.gelu tanh %x : tensor<3x8xf64>
    %ge = kiln.gelu none %x : tensor<3x8xf64>
    %si = kiln.silu %x : tensor<3x8xf64>
    return %y, %z, %s, %ls, %g, %ge, %si : tensor<3x8xf64>, tensor<3x8xf64>, tensor<3x8xf64>, tensor<3x8xf64>, tensor<3x8xf64>, tensor<3x8xf64>, tensor<3x8xf64>
  })",
                 {x, w, b});
  ASSERT_EQ(out.size(), 7u);
  std::vector<double> ln, rms, sm, lsm, gelu, geluErf, silu;
  for (int r = 0; r < 3; ++r) {
    double mean = 0, var = 0, ms = 0, mx = -INFINITY, sum = 0;
    for (int j = 0; j < 8; ++j) {
      mean += x.get(r * 8 + j) / 8;
      ms += x.get(r * 8 + j) * x.get(r * 8 + j) / 8;
      mx = std::max(mx, x.get(r * 8 + j));
    }
    for (int j = 0; j < 8; ++j) {
      var += (x.get(r * 8 + j) - mean) * (x.get(r * 8 + j) - mean) / 8;
      sum += std::exp(x.get(r * 8 + j) - mx);
    }
    for (int j = 0; j < 8; ++j) {
      double v = x.get(r * 8 + j);
      ln.push_back((v - mean) / std::sqrt(var + 1e-5) * w.get(j) + b.get(j));
      rms.push_back(v / std::sqrt(ms + 1e-6) * w.get(j));
      sm.push_back(std::exp(v - mx) / sum);
      lsm.push_back(v - mx - std::log(sum));
      gelu.push_back(0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))));
      geluErf.push_back(0.5 * v * (1 + std::erf(v / std::sqrt(2.0))));
      silu.push_back(v / (1 + std::exp(-v)));
    }
  }
  // f64 throughout; the epsilon attribute is an f32 (1e-5 is not exact in
  // f32), hence 1e-9 rather than 1e-12 for the norms.
  expectClose(out[0], ln, 1e-9, "layer_norm");
  expectClose(out[1], rms, 1e-9, "rms_norm");
  expectClose(out[2], sm, 1e-12, "softmax");
  expectClose(out[3], lsm, 1e-12, "log_softmax");
  expectClose(out[4], gelu, 1e-12, "gelu tanh");
  expectClose(out[5], geluErf, 1e-12, "gelu erf");
  expectClose(out[6], silu, 1e-12, "silu");
}

TEST(Interpreter, RopeRotatesHalvesByPositionAngles) {
  Rng rng(5);
  HostTensor x = randomTensor(DType::F64, {3, 4}, rng); // T = 3, D = 4
  auto out = run(R"(func.func @f(%x: tensor<3x4xf64>) -> (tensor<3x4xf64>, tensor<3x4xf64>) {
    %y = kiln.rope %x {theta = 100.0 : f32} : tensor<3x4xf64>
    %z = kiln.rope %y {theta = 100.0 : f32, inverse} : tensor<3x4xf64>
    return %y, %z : tensor<3x4xf64>, tensor<3x4xf64>
  })",
                 {x});
  ASSERT_EQ(out.size(), 2u);
  std::vector<double> ref(12);
  for (int t = 0; t < 3; ++t)
    for (int i = 0; i < 2; ++i) {
      double angle = t * std::pow(100.0, -2.0 * i / 4.0);
      double a = x.get(t * 4 + i), c = x.get(t * 4 + i + 2);
      ref[t * 4 + i] = a * std::cos(angle) - c * std::sin(angle);
      ref[t * 4 + i + 2] = c * std::cos(angle) + a * std::sin(angle);
    }
  expectClose(out[0], ref, 1e-12, "rope");
  expectClose(out[1], values(x), 1e-12, "rope then inverse rope"); // orthogonal
}

// position_dim = 1 on [B, T, H, D] is the default rope on [B, H, T, D]
// between transposes (what kiln-fuse-attention relies on for Llama).
TEST(Interpreter, RopeAlongAnEarlierDimensionEqualsTheTransposedRope) {
  Rng rng(6);
  HostTensor x = randomTensor(DType::F64, {2, 5, 3, 6}, rng); // [B, T, H, D]
  auto out = run(R"(func.func @f(%x: tensor<2x5x3x6xf64>) -> (tensor<2x5x3x6xf64>, tensor<2x5x3x6xf64>) {
    %y = kiln.rope %x {position_dim = 1 : i64, theta = 50.0 : f32} : tensor<2x5x3x6xf64>
    %h = kiln.transpose %x, [0, 2, 1, 3] : tensor<2x5x3x6xf64> -> tensor<2x3x5x6xf64>
    %r = kiln.rope %h {theta = 50.0 : f32} : tensor<2x3x5x6xf64>
    %z = kiln.transpose %r, [0, 2, 1, 3] : tensor<2x3x5x6xf64> -> tensor<2x5x3x6xf64>
    return %y, %z : tensor<2x5x3x6xf64>, tensor<2x5x3x6xf64>
  })",
                 {x});
  ASSERT_EQ(out.size(), 2u);
  expectClose(out[0], values(out[1]), 0, "rope along dimension 1");
  // And it rotates: the result differs from x away from position 0.
  EXPECT_GT(std::abs(out[0].get(2 * 3 * 6 + 1) - x.get(2 * 3 * 6 + 1)), 1e-6);
}

TEST(Interpreter, CrossEntropyIgnoresPaddingClassesAndNegativeTargets) {
  Rng rng(9);
  HostTensor logits = randomTensor(DType::F32, {3, 6}, rng);
  HostTensor targets = tensor(DType::I32, {3}, {2, -1, 3});
  auto out = run(R"(func.func @f(%l: tensor<3x6xf32>, %t: tensor<3xi32>) -> (tensor<3xf32>, tensor<3xf32>) {
    %loss, %lse = kiln.cross_entropy %l, %t {valid_classes = 4 : i64} : tensor<3x6xf32>, tensor<3xi32> -> tensor<3xf32>, tensor<3xf32>
    return %loss, %lse : tensor<3xf32>, tensor<3xf32>
  })",
                 {logits, targets});
  ASSERT_EQ(out.size(), 2u);
  std::vector<double> loss, lse;
  for (int r = 0; r < 3; ++r) {
    double s = 0;
    for (int c = 0; c < 4; ++c) // classes 4 and 5 are padding
      s += std::exp(logits.get(r * 6 + c));
    lse.push_back(std::log(s));
    int t = static_cast<int>(targets.get(r));
    loss.push_back(t < 0 ? 0.0 : std::log(s) - logits.get(r * 6 + t));
  }
  expectClose(out[0], loss, 1e-6, "cross_entropy loss"); // f32 storage
  expectClose(out[1], lse, 1e-6, "cross_entropy lse");
}

TEST(Interpreter, AttentionMatchesItsPrimitiveExpansion) {
  Rng rng(11);
  HostTensor q = randomTensor(DType::F32, {2, 2, 5, 4}, rng), k = randomTensor(DType::F32, {2, 2, 5, 4}, rng),
             v = randomTensor(DType::F32, {2, 2, 5, 4}, rng);
  // The composite, and softmax(q·kᵀ·0.5 masked)·v written with primitives
  // (BLAS matmuls and the softmax kernel: a different code path).
  auto out = run(R"(func.func @f(%q: tensor<2x2x5x4xf32>, %k: tensor<2x2x5x4xf32>, %v: tensor<2x2x5x4xf32>)
      -> (tensor<2x2x5x4xf32>, tensor<2x2x5x4xf32>) {
    %o, %lse = kiln.attention %q, %k, %v {causal, scale = 0.5 : f32} : tensor<2x2x5x4xf32>, tensor<2x2x5x4xf32>, tensor<2x2x5x4xf32> -> tensor<2x2x5x4xf32>, tensor<2x2x5xf32>
    %s = kiln.matmul %q, %k transpose_b : tensor<2x2x5x4xf32>, tensor<2x2x5x4xf32> -> tensor<2x2x5x5xf32>
    %h = kiln.constant dense<0.5> : tensor<2x2x5x5xf32>
    %ss = kiln.mul %s, %h : tensor<2x2x5x5xf32>
    %row = kiln.iota dim = 0 : tensor<5x5xi32>
    %col = kiln.iota dim = 1 : tensor<5x5xi32>
    %m = kiln.compare ge, %row, %col : tensor<5x5xi32>
    %mb = kiln.broadcast_in_dim %m, dims = [2, 3] : tensor<5x5xi1> -> tensor<2x2x5x5xi1>
    %ninf = kiln.constant dense<0xFF800000> : tensor<2x2x5x5xf32>
    %masked = kiln.select %mb, %ss, %ninf : tensor<2x2x5x5xi1>, tensor<2x2x5x5xf32>
    %p = kiln.softmax %masked : tensor<2x2x5x5xf32>
    %ref = kiln.matmul %p, %v : tensor<2x2x5x5xf32>, tensor<2x2x5x4xf32> -> tensor<2x2x5x4xf32>
    return %o, %ref : tensor<2x2x5x4xf32>, tensor<2x2x5x4xf32>
  })",
                 {q, k, v});
  ASSERT_EQ(out.size(), 2u);
  expectClose(out[0], values(out[1]), 1e-5, "attention vs primitives (f32)");
}

TEST(Interpreter, EmbeddingGatherAndScatterAdd) {
  HostTensor table = tensor(DType::F32, {3, 2}, {0, 1, 10, 11, 20, 21});
  HostTensor ids = tensor(DType::I32, {4}, {2, 0, 2, 1});
  HostTensor dy = tensor(DType::F32, {4, 2}, {1, 2, 3, 4, 5, 6, 7, 8});
  auto out = run(R"(func.func @f(%t: tensor<3x2xf32>, %ids: tensor<4xi32>, %dy: tensor<4x2xf32>) -> (tensor<4x2xf32>, tensor<3x2xf32>) {
    %e = kiln.embedding %t, %ids : tensor<3x2xf32>, tensor<4xi32> -> tensor<4x2xf32>
    %g = kiln.embedding_grad %ids, %dy : tensor<4xi32>, tensor<4x2xf32> -> tensor<3x2xf32>
    return %e, %g : tensor<4x2xf32>, tensor<3x2xf32>
  })",
                 {table, ids, dy});
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(values(out[0]), (std::vector<double>{20, 21, 0, 1, 20, 21, 10, 11}));
  EXPECT_EQ(values(out[1]), (std::vector<double>{3, 4, 7, 8, 1 + 5, 2 + 6})); // id 2 twice
}

TEST(Interpreter, ErrorsNameTheOpOrArgument) {
  auto ctx = test::makeContext();
  auto module = test::parse(*ctx, R"(
    func.func @f(%t: tensor<3x2xf32>, %ids: tensor<2xi32> {kiln.input = "ids"}) -> tensor<2x2xf32> {
      %e = kiln.embedding %t, %ids : tensor<3x2xf32>, tensor<2xi32> -> tensor<2x2xf32>
      return %e : tensor<2x2xf32>
    }
    func.func @g(%x: tensor<2xf32>) -> tensor<2xf32> {
      %y = func.call @g(%x) : (tensor<2xf32>) -> tensor<2xf32>
      return %y : tensor<2xf32>
    })");
  ASSERT_TRUE(module);
  auto interp = cpu::Interpreter::create(module->lookupSymbol<func::FuncOp>("f"));
  ASSERT_TRUE(static_cast<bool>(interp));
  auto bad = (*interp)->run({tensor(DType::F32, {3, 2}, {}), tensor(DType::I32, {2}, {1, 7})});
  ASSERT_FALSE(static_cast<bool>(bad));
  std::string message = llvm::toString(bad.takeError());
  EXPECT_NE(message.find("'kiln.embedding'"), std::string::npos) << message;
  EXPECT_NE(message.find("id 7"), std::string::npos) << message;

  auto wrongShape = (*interp)->run({tensor(DType::F32, {3, 2}, {}), tensor(DType::I32, {3}, {})});
  ASSERT_FALSE(static_cast<bool>(wrongShape));
  message = llvm::toString(wrongShape.takeError());
  EXPECT_NE(message.find("argument #1 (ids)"), std::string::npos) << message;
  EXPECT_NE(message.find("i32[2]"), std::string::npos) << message;

  auto unsupported = cpu::Interpreter::create(module->lookupSymbol<func::FuncOp>("g"));
  ASSERT_FALSE(static_cast<bool>(unsupported));
  message = llvm::toString(unsupported.takeError());
  EXPECT_NE(message.find("'func.call'"), std::string::npos) << message;
  EXPECT_NE(message.find("not supported"), std::string::npos) << message;
}

} // namespace

namespace {

// train.check_numerics on the interpreter: -inf passes (attention masks
// write it), NaN stops the run at the op that made it, naming where.
TEST(Interpreter, CheckNumericsStopsAtTheFirstNaNAndLetsMinusInfPass) {
  auto ctx = test::makeContext();
  auto module = test::parse(*ctx, R"mlir(
module attributes {kiln.check_numerics} {
  func.func @f(%x: tensor<3xf32>) -> tensor<3xf32> {
    %l = kiln.log %x : tensor<3xf32>
    %e = kiln.exp %l : tensor<3xf32>
    return %e : tensor<3xf32>
  }
}
)mlir");
  ASSERT_TRUE(module);
  auto interp = cpu::Interpreter::create(module->lookupSymbol<func::FuncOp>("f"));
  ASSERT_TRUE(static_cast<bool>(interp)) << llvm::toString(interp.takeError());
  // log(0) = -inf, and exp(-inf) = 0: no stop.
  auto fine = (*interp)->run({tensor(DType::F32, {3}, {1.0, 0.0, 2.0})});
  ASSERT_TRUE(static_cast<bool>(fine)) << llvm::toString(fine.takeError());
  EXPECT_EQ((*fine)[0].get(1), 0.0);
  // log(-1) = NaN: named at the log, element 2.
  auto bad = (*interp)->run({tensor(DType::F32, {3}, {1.0, 0.0, -1.0})});
  ASSERT_FALSE(static_cast<bool>(bad));
  std::string message = llvm::toString(bad.takeError());
  EXPECT_NE(message.find("'kiln.log'"), std::string::npos) << message;
  EXPECT_NE(message.find("NaN at [2] of result 0 (tensor<3xf32>)"), std::string::npos) << message;
  // Without the attribute the NaN flows through.
  (*module)->removeAttr("kiln.check_numerics");
  auto unchecked = cpu::Interpreter::create(module->lookupSymbol<func::FuncOp>("f"));
  ASSERT_TRUE(static_cast<bool>(unchecked));
  auto flows = (*unchecked)->run({tensor(DType::F32, {3}, {1.0, 0.0, -1.0})});
  ASSERT_TRUE(static_cast<bool>(flows));
  EXPECT_TRUE(std::isnan((*flows)[0].get(2)));
}

} // namespace
