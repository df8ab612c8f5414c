//===- GradCheckTest.cpp - every VJP rule vs f64 central differences -------===//
//
// For each differentiable op, a function loss = Σ op(params…) ⊙ r with a
// random cotangent r is differentiated by kiln-autodiff and run on the CPU
// interpreter in f64; every parameter entry's gradient is compared with a
// central difference (h = 1e-5). Tolerance: max error ≤ 1e-6, error being
// |analytic − numeric| / ‖analytic‖∞ over the tensor (GradCheck.h). The
// worst entry is printed on failure.
//
//===----------------------------------------------------------------------===//

#include "runtime/Random.h"
#include "runtime/cpu/Interpreter.h"
#include "tests/unit/TestSupport.h"
#include "tools/support/GradCheck.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "gtest/gtest.h"

#include <regex>

using namespace mlir;
using namespace kiln;

namespace {

struct OpCase {
  const char *name;
  /// Arguments: params as `%pN: T {kiln.param = "pN"}`, others as inputs.
  const char *args;
  /// Body defining %y of type `yType` from the arguments.
  const char *body;
  const char *yType;
  /// Float params are drawn from [lo, hi) uniformly when positive, else N(0,1).
  bool positive = false;
  /// Integer inputs are drawn from [intLo, intHi).
  int64_t intLo = 0, intHi = 2;
  double tolerance = 1e-6;
  double step = 1e-5;
};

void PrintTo(const OpCase &c, std::ostream *os) { *os << c.name; }

std::string wrap(const OpCase &c) {
  int64_t rank = 0;
  std::string shape = c.yType;
  for (char ch : shape)
    rank += ch == 'x';
  std::string dims;
  for (int64_t d = 0; d < rank; ++d)
    dims += (d ? ", " : "") + std::to_string(d);
  return std::string("func.func @forward(") + c.args + ", %r: " + c.yType +
         " {kiln.input = \"r\"}) -> tensor<f64> {\n" + c.body + "\n  %m = kiln.mul %y, %r : " +
         c.yType + "\n  %l = kiln.reduce_sum %m, dims = [" + dims + "] : " + c.yType +
         " -> tensor<f64>\n  return %l : tensor<f64>\n}\n";
}

class VJPGradCheck : public ::testing::TestWithParam<OpCase> {};

TEST_P(VJPGradCheck, MatchesCentralDifferences) {
  const OpCase &c = GetParam();
  auto ctx = test::makeContext();
  std::string source = wrap(c);
  auto module = test::parse(*ctx, source);
  ASSERT_TRUE(module);
  auto forward = module->lookupSymbol<func::FuncOp>("forward");
  Rng rng(7, c.name);
  std::vector<cpu::HostTensor> args;
  for (Type t : forward.getArgumentTypes()) {
    auto host = cpu::hostTypeOf(t);
    ASSERT_TRUE(static_cast<bool>(host));
    cpu::HostTensor x(host->first, host->second);
    for (int64_t i = 0; i < x.numel(); ++i) {
      if (cpu::isFloat(x.dtype()))
        x.set(i, c.positive ? 0.5 + 1.5 * rng.uniform() : rng.normal());
      else
        x.set(i, static_cast<double>(c.intLo + static_cast<int64_t>(rng.below(c.intHi - c.intLo))));
    }
    args.push_back(x);
  }
  tooling::GradCheckOptions options;
  options.samplesPerTensor = 1 << 30; // every entry
  options.step = c.step;
  auto report = tooling::gradCheck(*module, args, options);
  ASSERT_TRUE(static_cast<bool>(report)) << llvm::toString(report.takeError()) << "\n" << source;
  ASSERT_FALSE(report->empty());
  for (const tooling::TensorGradCheck &t : *report) {
    EXPECT_GT(t.checked, 0);
    EXPECT_LE(t.worstError, c.tolerance)
        << c.name << ": parameter " << t.name << " worst relative error " << t.worstError
        << " at index " << t.worstIndex << " (analytic " << t.analytic << ", numeric "
        << t.numeric << ")\n"
        << source;
  }
}

// clang-format off
const OpCase kCases[] = {
  {"add", R"(%p0: tensor<3x4xf64> {kiln.param = "p0"}, %p1: tensor<3x4xf64> {kiln.param = "p1"})",
   "%y = kiln.add %p0, %p1 : tensor<3x4xf64>", "tensor<3x4xf64>"},
  {"sub", R"(%p0: tensor<3x4xf64> {kiln.param = "p0"}, %p1: tensor<3x4xf64> {kiln.param = "p1"})",
   "%y = kiln.sub %p0, %p1 : tensor<3x4xf64>", "tensor<3x4xf64>"},
  {"mul_shared_operand", R"(%p0: tensor<3x4xf64> {kiln.param = "p0"}, %p1: tensor<3x4xf64> {kiln.param = "p1"})",
   "%a = kiln.mul %p0, %p1 : tensor<3x4xf64>\n%y = kiln.mul %a, %p0 : tensor<3x4xf64>", "tensor<3x4xf64>"},
  {"div", R"(%p0: tensor<3x4xf64> {kiln.param = "p0"}, %p1: tensor<3x4xf64> {kiln.param = "p1"})",
   "%y = kiln.div %p0, %p1 : tensor<3x4xf64>", "tensor<3x4xf64>", true},
  {"max", R"(%p0: tensor<3x4xf64> {kiln.param = "p0"}, %p1: tensor<3x4xf64> {kiln.param = "p1"})",
   "%y = kiln.max %p0, %p1 : tensor<3x4xf64>", "tensor<3x4xf64>"},
  {"neg", R"(%p0: tensor<5xf64> {kiln.param = "p0"})", "%y = kiln.neg %p0 : tensor<5xf64>", "tensor<5xf64>"},
  {"exp", R"(%p0: tensor<5xf64> {kiln.param = "p0"})", "%y = kiln.exp %p0 : tensor<5xf64>", "tensor<5xf64>"},
  {"log", R"(%p0: tensor<5xf64> {kiln.param = "p0"})", "%y = kiln.log %p0 : tensor<5xf64>", "tensor<5xf64>", true},
  {"sqrt", R"(%p0: tensor<5xf64> {kiln.param = "p0"})", "%y = kiln.sqrt %p0 : tensor<5xf64>", "tensor<5xf64>", true},
  {"rsqrt", R"(%p0: tensor<5xf64> {kiln.param = "p0"})", "%y = kiln.rsqrt %p0 : tensor<5xf64>", "tensor<5xf64>", true},
  {"tanh", R"(%p0: tensor<5xf64> {kiln.param = "p0"})", "%y = kiln.tanh %p0 : tensor<5xf64>", "tensor<5xf64>"},
  {"sigmoid", R"(%p0: tensor<5xf64> {kiln.param = "p0"})", "%y = kiln.sigmoid %p0 : tensor<5xf64>", "tensor<5xf64>"},
  {"gelu_tanh", R"(%p0: tensor<2x5xf64> {kiln.param = "p0"})", "%y = kiln.gelu tanh %p0 : tensor<2x5xf64>", "tensor<2x5xf64>"},
  {"gelu_erf", R"(%p0: tensor<2x5xf64> {kiln.param = "p0"})", "%y = kiln.gelu none %p0 : tensor<2x5xf64>", "tensor<2x5xf64>"},
  {"silu", R"(%p0: tensor<5xf64> {kiln.param = "p0"})", "%y = kiln.silu %p0 : tensor<5xf64>", "tensor<5xf64>"},
  {"relu", R"(%p0: tensor<8xf64> {kiln.param = "p0"})", "%y = kiln.relu %p0 : tensor<8xf64>", "tensor<8xf64>"},
  // f64 -> f32 -> f64 rounds at 2^-24 relative, so central differences need a
  // larger step (1e-3) and the error is bounded by ~1e-7/1e-3: tolerance 1e-3.
  {"cast", R"(%p0: tensor<6xf64> {kiln.param = "p0"})",
   "%h = kiln.cast %p0 : tensor<6xf64> to tensor<6xf32>\n%s = kiln.mul %h, %h : tensor<6xf32>\n%y = kiln.cast %s : tensor<6xf32> to tensor<6xf64>",
   "tensor<6xf64>", false, 0, 2, 1e-3, 1e-3},
  {"select", R"(%p0: tensor<3x4xf64> {kiln.param = "p0"}, %p1: tensor<3x4xf64> {kiln.param = "p1"}, %c: tensor<3x4xi1> {kiln.input = "c"})",
   "%y = kiln.select %c, %p0, %p1 : tensor<3x4xi1>, tensor<3x4xf64>", "tensor<3x4xf64>"},
  {"reshape", R"(%p0: tensor<2x6xf64> {kiln.param = "p0"})",
   "%y = kiln.reshape %p0 : tensor<2x6xf64> -> tensor<3x4xf64>", "tensor<3x4xf64>"},
  {"transpose", R"(%p0: tensor<2x3x4xf64> {kiln.param = "p0"})",
   "%y = kiln.transpose %p0, [2, 0, 1] : tensor<2x3x4xf64> -> tensor<4x2x3xf64>", "tensor<4x2x3xf64>"},
  {"slice_strided", R"(%p0: tensor<5x7xf64> {kiln.param = "p0"})",
   "%y = kiln.slice %p0 [1:5, 0:7:3] : tensor<5x7xf64> -> tensor<4x3xf64>", "tensor<4x3xf64>"},
  {"pad", R"(%p0: tensor<2x3xf64> {kiln.param = "p0"})",
   "%y = kiln.pad %p0 low = [1, 0] high = [0, 2] interior = [0, 1] : tensor<2x3xf64> -> tensor<3x7xf64>", "tensor<3x7xf64>"},
  {"concat", R"(%p0: tensor<2x3xf64> {kiln.param = "p0"}, %p1: tensor<2x2xf64> {kiln.param = "p1"})",
   "%y = kiln.concat %p0, %p1, %p0 dim = 1 : tensor<2x3xf64>, tensor<2x2xf64>, tensor<2x3xf64> -> tensor<2x8xf64>", "tensor<2x8xf64>"},
  {"broadcast_in_dim", R"(%p0: tensor<3x1xf64> {kiln.param = "p0"})",
   "%y = kiln.broadcast_in_dim %p0, dims = [1, 2] : tensor<3x1xf64> -> tensor<2x3x4xf64>", "tensor<2x3x4xf64>"},
  {"reduce_sum", R"(%p0: tensor<2x3x4xf64> {kiln.param = "p0"})",
   "%y = kiln.reduce_sum %p0, dims = [0, 2] : tensor<2x3x4xf64> -> tensor<3xf64>", "tensor<3xf64>"},
  {"reduce_mean", R"(%p0: tensor<2x3x4xf64> {kiln.param = "p0"})",
   "%y = kiln.reduce_mean %p0, dims = [1] : tensor<2x3x4xf64> -> tensor<2x4xf64>", "tensor<2x4xf64>"},
  {"reduce_max", R"(%p0: tensor<2x3x4xf64> {kiln.param = "p0"})",
   "%y = kiln.reduce_max %p0, dims = [2] : tensor<2x3x4xf64> -> tensor<2x3xf64>", "tensor<2x3xf64>"},
  {"matmul", R"(%p0: tensor<3x4xf64> {kiln.param = "p0"}, %p1: tensor<4x5xf64> {kiln.param = "p1"})",
   "%y = kiln.matmul %p0, %p1 : tensor<3x4xf64>, tensor<4x5xf64> -> tensor<3x5xf64>", "tensor<3x5xf64>"},
  {"matmul_transpose_a", R"(%p0: tensor<4x3xf64> {kiln.param = "p0"}, %p1: tensor<4x5xf64> {kiln.param = "p1"})",
   "%y = kiln.matmul %p0, %p1 transpose_a : tensor<4x3xf64>, tensor<4x5xf64> -> tensor<3x5xf64>", "tensor<3x5xf64>"},
  {"matmul_transpose_b", R"(%p0: tensor<3x4xf64> {kiln.param = "p0"}, %p1: tensor<5x4xf64> {kiln.param = "p1"})",
   "%y = kiln.matmul %p0, %p1 transpose_b : tensor<3x4xf64>, tensor<5x4xf64> -> tensor<3x5xf64>", "tensor<3x5xf64>"},
  {"matmul_transpose_both", R"(%p0: tensor<4x3xf64> {kiln.param = "p0"}, %p1: tensor<5x4xf64> {kiln.param = "p1"})",
   "%y = kiln.matmul %p0, %p1 transpose_a transpose_b : tensor<4x3xf64>, tensor<5x4xf64> -> tensor<3x5xf64>", "tensor<3x5xf64>"},
  {"matmul_batched", R"(%p0: tensor<2x3x4xf64> {kiln.param = "p0"}, %p1: tensor<2x4x5xf64> {kiln.param = "p1"})",
   "%y = kiln.matmul %p0, %p1 : tensor<2x3x4xf64>, tensor<2x4x5xf64> -> tensor<2x3x5xf64>", "tensor<2x3x5xf64>"},
  {"matmul_shared_rhs", R"(%p0: tensor<2x3x4xf64> {kiln.param = "p0"}, %p1: tensor<4x5xf64> {kiln.param = "p1"})",
   "%y = kiln.matmul %p0, %p1 : tensor<2x3x4xf64>, tensor<4x5xf64> -> tensor<2x3x5xf64>", "tensor<2x3x5xf64>"},
  {"matmul_shared_rhs_transposed", R"(%p0: tensor<2x4x3xf64> {kiln.param = "p0"}, %p1: tensor<5x4xf64> {kiln.param = "p1"})",
   "%y = kiln.matmul %p0, %p1 transpose_a transpose_b : tensor<2x4x3xf64>, tensor<5x4xf64> -> tensor<2x3x5xf64>", "tensor<2x3x5xf64>"},
  {"matmul_bias", R"(%p0: tensor<2x3x4xf64> {kiln.param = "p0"}, %p1: tensor<4x5xf64> {kiln.param = "p1"}, %p2: tensor<5xf64> {kiln.param = "p2"})",
   "%y = kiln.matmul %p0, %p1 bias %p2 : tensor<2x3x4xf64>, tensor<4x5xf64>, tensor<5xf64> -> tensor<2x3x5xf64>", "tensor<2x3x5xf64>"},
  {"matmul_shared_lhs", R"(%p0: tensor<3x4xf64> {kiln.param = "p0"}, %p1: tensor<2x4x5xf64> {kiln.param = "p1"})",
   "%y = kiln.matmul %p0, %p1 : tensor<3x4xf64>, tensor<2x4x5xf64> -> tensor<2x3x5xf64>", "tensor<2x3x5xf64>"},
  {"embedding", R"(%p0: tensor<7x4xf64> {kiln.param = "p0"}, %ids: tensor<2x5xi32> {kiln.input = "ids"})",
   "%y = kiln.embedding %p0, %ids : tensor<7x4xf64>, tensor<2x5xi32> -> tensor<2x5x4xf64>", "tensor<2x5x4xf64>",
   false, 0, 7},
  {"softmax", R"(%p0: tensor<3x6xf64> {kiln.param = "p0"})", "%y = kiln.softmax %p0 : tensor<3x6xf64>", "tensor<3x6xf64>"},
  {"log_softmax", R"(%p0: tensor<3x6xf64> {kiln.param = "p0"})", "%y = kiln.log_softmax %p0 : tensor<3x6xf64>", "tensor<3x6xf64>"},
  {"layer_norm", R"(%p0: tensor<2x3x8xf64> {kiln.param = "x"}, %p1: tensor<8xf64> {kiln.param = "w"}, %p2: tensor<8xf64> {kiln.param = "b"})",
   "%y, %mu, %s = kiln.layer_norm %p0, %p1, %p2 {epsilon = 1.0e-05 : f32} : tensor<2x3x8xf64>, tensor<8xf64>, tensor<8xf64> -> tensor<2x3x8xf64>, tensor<2x3xf64>, tensor<2x3xf64>",
   "tensor<2x3x8xf64>"},
  {"rms_norm", R"(%p0: tensor<2x3x8xf64> {kiln.param = "x"}, %p1: tensor<8xf64> {kiln.param = "w"})",
   "%y, %s = kiln.rms_norm %p0, %p1 {epsilon = 1.0e-06 : f32} : tensor<2x3x8xf64>, tensor<8xf64> -> tensor<2x3x8xf64>, tensor<2x3xf64>",
   "tensor<2x3x8xf64>"},
  {"rope", R"(%p0: tensor<2x5x8xf64> {kiln.param = "p0"})",
   "%y = kiln.rope %p0 {theta = 100.0 : f32} : tensor<2x5x8xf64>", "tensor<2x5x8xf64>"},
  {"rope_position_dim", R"(%p0: tensor<2x5x3x8xf64> {kiln.param = "p0"})",
   "%y = kiln.rope %p0 {position_dim = 1 : i64, theta = 100.0 : f32} : tensor<2x5x3x8xf64>", "tensor<2x5x3x8xf64>"},
  {"rope_inverse", R"(%p0: tensor<2x5x8xf64> {kiln.param = "p0"})",
   "%y = kiln.rope %p0 {theta = 100.0 : f32, inverse} : tensor<2x5x8xf64>", "tensor<2x5x8xf64>"},
  // Targets in [-1, 6): -1 marks ignored positions; classes 6 and 7 are padding.
  {"cross_entropy", R"(%p0: tensor<2x5x8xf64> {kiln.param = "p0"}, %t: tensor<2x5xi32> {kiln.input = "t"})",
   "%y, %lse = kiln.cross_entropy %p0, %t {valid_classes = 6 : i64} : tensor<2x5x8xf64>, tensor<2x5xi32> -> tensor<2x5xf64>, tensor<2x5xf64>",
   "tensor<2x5xf64>", false, -1, 6},
  {"attention_causal", R"(%q: tensor<1x2x5x4xf64> {kiln.param = "q"}, %k: tensor<1x2x5x4xf64> {kiln.param = "k"}, %v: tensor<1x2x5x4xf64> {kiln.param = "v"})",
   "%y, %lse = kiln.attention %q, %k, %v {causal, scale = 0.5 : f32} : tensor<1x2x5x4xf64>, tensor<1x2x5x4xf64>, tensor<1x2x5x4xf64> -> tensor<1x2x5x4xf64>, tensor<1x2x5xf64>",
   "tensor<1x2x5x4xf64>"},
  {"attention_cross_gqa", R"(%q: tensor<2x4x3x4xf64> {kiln.param = "q"}, %k: tensor<2x2x6x4xf64> {kiln.param = "k"}, %v: tensor<2x2x6x5xf64> {kiln.param = "v"})",
   "%y, %lse = kiln.attention %q, %k, %v {scale = 0.5 : f32} : tensor<2x4x3x4xf64>, tensor<2x2x6x4xf64>, tensor<2x2x6x5xf64> -> tensor<2x4x3x5xf64>, tensor<2x4x3xf64>",
   "tensor<2x4x3x5xf64>"},
  // Sequence-major (layout bthd): q [B, T, H, D] = [2, 5, 4, 4], k and v
  // of 2 heads (grouped), causal.
  {"attention_bthd_causal_gqa", R"(%q: tensor<2x5x4x4xf64> {kiln.param = "q"}, %k: tensor<2x5x2x4xf64> {kiln.param = "k"}, %v: tensor<2x5x2x3xf64> {kiln.param = "v"})",
   "%y, %lse = kiln.attention %q, %k, %v {causal, layout = \"bthd\", scale = 0.5 : f32} : tensor<2x5x4x4xf64>, tensor<2x5x2x4xf64>, tensor<2x5x2x3xf64> -> tensor<2x5x4x3xf64>, tensor<2x4x5xf64>",
   "tensor<2x5x4x3xf64>"},
  // q, k and v packed in one [B, T, H, 3, D] = [2, 5, 3, 3, 4], causal.
  {"attention_qkv_causal", R"(%qkv: tensor<2x5x3x3x4xf64> {kiln.param = "qkv"})",
   "%y, %lse = kiln.attention_qkv %qkv {causal, scale = 0.5 : f32} : tensor<2x5x3x3x4xf64> -> tensor<2x5x3x4xf64>, tensor<2x3x5xf64>",
   "tensor<2x5x3x4xf64>"},
  // Packed documents: ids in [0, 3), unsorted — a query sees the keys of its
  // own segment (causal or not).
  {"attention_segments_causal", R"(%q: tensor<2x2x6x4xf64> {kiln.param = "q"}, %k: tensor<2x1x6x4xf64> {kiln.param = "k"}, %v: tensor<2x1x6x4xf64> {kiln.param = "v"}, %s: tensor<2x6xi32> {kiln.input = "s"})",
   "%y, %lse = kiln.attention %q, %k, %v segments %s {causal, scale = 0.5 : f32} : tensor<2x2x6x4xf64>, tensor<2x1x6x4xf64>, tensor<2x1x6x4xf64>, tensor<2x6xi32> -> tensor<2x2x6x4xf64>, tensor<2x2x6xf64>",
   "tensor<2x2x6x4xf64>", false, 0, 3},
  {"attention_segments", R"(%q: tensor<1x2x5x4xf64> {kiln.param = "q"}, %k: tensor<1x2x5x4xf64> {kiln.param = "k"}, %v: tensor<1x2x5x4xf64> {kiln.param = "v"}, %s: tensor<1x5xi32> {kiln.input = "s"})",
   "%y, %lse = kiln.attention %q, %k, %v segments %s {scale = 0.5 : f32} : tensor<1x2x5x4xf64>, tensor<1x2x5x4xf64>, tensor<1x2x5x4xf64>, tensor<1x5xi32> -> tensor<1x2x5x4xf64>, tensor<1x2x5xf64>",
   "tensor<1x2x5x4xf64>", false, 0, 2},
  {"attention_qkv_segments", R"(%qkv: tensor<1x6x2x3x4xf64> {kiln.param = "qkv"}, %s: tensor<1x6xi32> {kiln.input = "s"})",
   "%y, %lse = kiln.attention_qkv %qkv segments %s {scale = 0.5 : f32} : tensor<1x6x2x3x4xf64>, tensor<1x6xi32> -> tensor<1x6x2x4xf64>, tensor<1x2x6xf64>",
   "tensor<1x6x2x4xf64>", false, 0, 3},
};
// clang-format on

INSTANTIATE_TEST_SUITE_P(AllOps, VJPGradCheck, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<OpCase> &info) {
                           return std::string(info.param.name);
                         });

} // namespace
