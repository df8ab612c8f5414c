//===- CanonicalizeTest.cpp - canonicalize, cse, fuse-matmul-bias preserve -===//

#include "tests/unit/PassPreservation.h"
#include "tests/unit/TestSupport.h"
#include "train/Compile.h"

#include "ir/KilnOps.h"

#include "mlir/IR/MLIRContext.h"
#include "gtest/gtest.h"

using namespace kiln;

namespace {

// Canonicalization only folds identities and composes shape ops: the results
// are bit-identical, so the tolerance is 0.
TEST(PassPreservation, CanonicalizeOnHandWrittenIR) {
  auto ctx = test::makeContext();
  auto module = test::parse(*ctx, R"(
    func.func @f(%x: tensor<2x3x4xf32>, %w: tensor<4x5xf32>) -> (tensor<3x2x5xf32>, tensor<24xf32>) {
      %z = kiln.constant dense<0.0> : tensor<f32>
      %zb = kiln.broadcast_in_dim %z, dims = [] : tensor<f32> -> tensor<2x3x4xf32>
      %one = kiln.constant dense<1.0> : tensor<2x3x4xf32>
      %a = kiln.add %x, %zb : tensor<2x3x4xf32>
      %b = kiln.mul %one, %a : tensor<2x3x4xf32>
      %t1 = kiln.transpose %b, [1, 0, 2] : tensor<2x3x4xf32> -> tensor<3x2x4xf32>
      %t2 = kiln.transpose %t1, [0, 1, 2] : tensor<3x2x4xf32> -> tensor<3x2x4xf32>
      %y = kiln.matmul %t2, %w : tensor<3x2x4xf32>, tensor<4x5xf32> -> tensor<3x2x5xf32>
      %r1 = kiln.reshape %b : tensor<2x3x4xf32> -> tensor<6x4xf32>
      %r2 = kiln.reshape %r1 : tensor<6x4xf32> -> tensor<24xf32>
      return %y, %r2 : tensor<3x2x5xf32>, tensor<24xf32>
    })");
  ASSERT_TRUE(module);
  test::expectPassPreserves(*module, "builtin.module(canonicalize)", 0.0);
}

// The tiny GPT-2's forward function and training step, canonicalized and
// CSE'd: equal to the last bit too (no op is reassociated).
TEST(PassPreservation, CanonicalizeAndCseOnTinyGPT) {
  mlir::MLIRContext ctx;
  auto config = RunConfig::loadFile(KILN_SOURCE_DIR "/configs/tiny.toml");
  ASSERT_TRUE(static_cast<bool>(config)) << llvm::toString(config.takeError());
  auto module = tooling::buildForwardModule(ctx, *config, mlir::Float32Type::get(&ctx));
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  auto tokens = test::randomInputs(1, config->model.vocab_size);
  test::expectPassPreserves(**module, "builtin.module(kiln-autodiff)", 0.0, tokens);
  ASSERT_TRUE((*module)->lookupSymbol("train_step")) << "the pipeline did not run";
  test::expectPassPreserves(**module, "builtin.module(canonicalize,cse)", 0.0, tokens);
  // The patterns that shape the backward did apply: the qkv slices' VJP is
  // one concat per layer (no sum of pads left; the one pad is the position
  // table's, sliced to T), and only the forward's masking selects remain
  // (one per layer in @forward and in @train_step).
  int summedPads = 0, concats = 0, selects = 0;
  (*module)->walk([&](mlir::Operation *op) {
    if (llvm::isa<AddOp>(op))
      summedPads += op->getOperand(0).getDefiningOp<PadOp>() && op->getOperand(1).getDefiningOp<PadOp>();
    concats += llvm::isa<ConcatOp>(op);
    selects += llvm::isa<SelectOp>(op);
  });
  EXPECT_EQ(summedPads, 0);
  EXPECT_EQ(concats, config->model.n_layer);
  EXPECT_EQ(selects, 2 * config->model.n_layer);
}

// Biases folded into their matmuls: the same f32 additions in the same
// order, so equal to the last bit as well.
TEST(PassPreservation, FuseMatmulBiasOnTinyGPT) {
  mlir::MLIRContext ctx;
  auto config = RunConfig::loadFile(KILN_SOURCE_DIR "/configs/tiny.toml");
  ASSERT_TRUE(static_cast<bool>(config)) << llvm::toString(config.takeError());
  auto module = tooling::buildForwardModule(ctx, *config, mlir::Float32Type::get(&ctx));
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  auto tokens = test::randomInputs(2, config->model.vocab_size);
  test::expectPassPreserves(**module, "builtin.module(kiln-autodiff,canonicalize,cse)", 0.0, tokens);
  ASSERT_TRUE((*module)->lookupSymbol("train_step")) << "the pipeline did not run";
  int before = 0, after = 0;
  (*module)->walk([&](MatmulOp op) { before += op.getBias() ? 1 : 0; });
  test::expectPassPreserves(**module, "builtin.module(kiln-fuse-matmul-bias)", 0.0, tokens);
  (*module)->walk([&](MatmulOp op) { after += op.getBias() ? 1 : 0; });
  EXPECT_EQ(before, 0);
  // Four linear layers per block, in @forward and @train_step.
  EXPECT_EQ(after, 2 * 4 * config->model.n_layer);
}

} // namespace
