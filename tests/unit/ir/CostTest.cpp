//===- CostTest.cpp - CostOpInterface numbers ------------------------------===//
//
// Each expected figure is derived in the comment beside it from the op's
// shapes, not read off the implementation.
//
//===----------------------------------------------------------------------===//

#include "ir/KilnOps.h"
#include "tests/unit/TestSupport.h"

#include "gtest/gtest.h"

using namespace mlir;
using namespace kiln;

namespace {

/// Parses a function holding one kiln op and returns that op's cost.
std::pair<int64_t, int64_t> costOf(const std::string &body, const std::string &args) {
  auto ctx = test::makeContext();
  auto module = test::parse(*ctx, "func.func @f(" + args + ") {\n" + body + "\n return }");
  if (!module)
    return {-1, -1};
  int64_t flops = -1, bytes = -1;
  module->walk([&](CostOpInterface op) {
    flops = op.getFlops();
    bytes = op.getBytesAccessed();
  });
  return {flops, bytes};
}

TEST(Cost, MatmulIsTwoMNKPerBatch) {
  // [4, 8, 64] x [64, 256]: 4·8 rows, N = 256, K = 64 -> 2·32·256·64 FLOPs.
  auto [flops, bytes] = costOf(
      "%y = kiln.matmul %x, %w : tensor<4x8x64xf32>, tensor<64x256xf32> -> tensor<4x8x256xf32>",
      "%x: tensor<4x8x64xf32>, %w: tensor<64x256xf32>");
  EXPECT_EQ(flops, 2LL * 32 * 256 * 64);
  // Read x (2048 floats) and w (16384 floats), write y (8192 floats).
  EXPECT_EQ(bytes, 4LL * (2048 + 16384 + 8192));
}

TEST(Cost, MatmulTransposeAUsesTheRightK) {
  // lhs [16, 3] transposed is M=3, K=16; rhs [16, 5]: 2·3·5·16.
  auto [flops, bytes] = costOf(
      "%y = kiln.matmul %a, %b transpose_a : tensor<16x3xf64>, tensor<16x5xf64> -> tensor<3x5xf64>",
      "%a: tensor<16x3xf64>, %b: tensor<16x5xf64>");
  EXPECT_EQ(flops, 2LL * 3 * 5 * 16);
  EXPECT_EQ(bytes, 8LL * (48 + 80 + 15));
}

TEST(Cost, AttentionCausalHalvesTheSquare) {
  // B=2, H=4, T=128, D=64: q·kᵀ and p·v are 2·T·T·D each per head -> 4·B·H·T²·D,
  // halved by the causal mask.
  std::string args = "%q: tensor<2x4x128x64xbf16>, %k: tensor<2x4x128x64xbf16>, "
                     "%v: tensor<2x4x128x64xbf16>";
  std::string op = "%o, %l = kiln.attention %q, %k, %v {causal, scale = 0.125 : f32} : "
                   "tensor<2x4x128x64xbf16>, tensor<2x4x128x64xbf16>, tensor<2x4x128x64xbf16> "
                   "-> tensor<2x4x128x64xbf16>, tensor<2x4x128xf32>";
  auto [flops, bytes] = costOf(op, args);
  EXPECT_EQ(flops, 4LL * 2 * 4 * 128 * 128 * 64 / 2);
  // q, k, v, out in bf16 (2 bytes) and lse in f32: the T×T matrix is never counted.
  EXPECT_EQ(bytes, 4 * (2LL * 2 * 4 * 128 * 64) + 4LL * 2 * 4 * 128);

  auto [fullFlops, fullBytes] = costOf(
      "%o, %l = kiln.attention %q, %k, %v {scale = 0.125 : f32} : "
      "tensor<2x4x128x64xbf16>, tensor<2x4x128x64xbf16>, tensor<2x4x128x64xbf16> "
      "-> tensor<2x4x128x64xbf16>, tensor<2x4x128xf32>",
      args);
  EXPECT_EQ(fullFlops, 2 * flops);
  EXPECT_EQ(fullBytes, bytes);
}

TEST(Cost, ElementwiseAndReshape) {
  auto [addFlops, addBytes] =
      costOf("%c = kiln.add %a, %b : tensor<3x5xbf16>", "%a: tensor<3x5xbf16>, %b: tensor<3x5xbf16>");
  EXPECT_EQ(addFlops, 15);
  EXPECT_EQ(addBytes, 3 * 15 * 2);
  // A reshape is a view: no FLOPs, no bytes.
  auto [rFlops, rBytes] =
      costOf("%c = kiln.reshape %a : tensor<3x5xf32> -> tensor<15xf32>", "%a: tensor<3x5xf32>");
  EXPECT_EQ(rFlops, 0);
  EXPECT_EQ(rBytes, 0);
}

TEST(Cost, EmbeddingReadsOnlyTheGatheredRows) {
  // 4·8 ids (i32) gather rows of 16 floats from a 1000-row table.
  auto [flops, bytes] = costOf(
      "%x = kiln.embedding %t, %ids : tensor<1000x16xf32>, tensor<4x8xi32> -> tensor<4x8x16xf32>",
      "%t: tensor<1000x16xf32>, %ids: tensor<4x8xi32>");
  EXPECT_EQ(flops, 0);
  EXPECT_EQ(bytes, 32 * 4 + 2 * 32 * 16 * 4);
}

TEST(Cost, ReductionCountsOneAddPerInput) {
  auto [flops, bytes] = costOf(
      "%m = kiln.reduce_mean %x, dims = [1] : tensor<6x10xf32> -> tensor<6xf32>",
      "%x: tensor<6x10xf32>");
  EXPECT_EQ(flops, 60 + 6); // 60 adds, then one divide per output
  EXPECT_EQ(bytes, 4 * (60 + 6));
}

} // namespace
