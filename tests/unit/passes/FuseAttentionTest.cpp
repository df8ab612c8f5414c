//===- FuseAttentionTest.cpp - kiln-fuse-attention preserves the step ------===//
//
// The fused training step against the unfused one on the CPU interpreter,
// same inputs: the loss, every gradient and @forward. In f64 the two differ
// only by the order of additions (1e-12); in f32 by rounding (scale folded
// into the kernel, a different summation order).
//
//===----------------------------------------------------------------------===//

#include "frontend/Config.h"
#include "ir/KilnBuilders.h"
#include "ir/KilnOps.h"
#include "tests/unit/PassPreservation.h"
#include "train/Compile.h"

#include "mlir/IR/MLIRContext.h"
#include "gtest/gtest.h"

using namespace kiln;

namespace {

const char *kUnfused = "builtin.module(canonicalize,kiln-autodiff)";
const char *kFused = "builtin.module(canonicalize,kiln-fuse-attention,kiln-autodiff)";

/// The forward module of a config file with `--set` overrides, in `floatType`.
mlir::OwningOpRef<mlir::ModuleOp> forwardOf(mlir::MLIRContext &ctx, const char *file,
                                            llvm::ArrayRef<std::string> sets, bool f64,
                                            RunConfig *out = nullptr) {
  auto config = RunConfig::loadFile(std::string(KILN_SOURCE_DIR "/configs/") + file);
  EXPECT_TRUE(static_cast<bool>(config)) << llvm::toString(config.takeError());
  if (!config)
    return nullptr;
  EXPECT_FALSE(static_cast<bool>(config->applyOverrides(sets)));
  if (out)
    *out = *config;
  mlir::Type type = f64 ? mlir::Type(mlir::Float64Type::get(&ctx))
                        : mlir::Type(mlir::Float32Type::get(&ctx));
  auto module = tooling::buildForwardModule(ctx, *config, type);
  EXPECT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  return module ? std::move(*module) : nullptr;
}

/// Fused attentions: kiln.attention, or kiln.attention_qkv (q, k and v
/// packed, GPT-2's form) when `packedOnly`.
int countAttention(mlir::ModuleOp module, bool packedOnly = false) {
  int n = 0;
  if (!packedOnly)
    module.walk([&](AttentionOp) { ++n; });
  module.walk([&](AttentionQkvOp) { ++n; });
  return n;
}

/// Weights at the scale of GPT-2's initialization (N(0, 0.05²)); ids below
/// the vocabulary. N(0, 1) weights saturate every softmax, where rounding
/// decides the largest score and the comparison measures nothing.
test::InputFiller modelInputs(uint64_t seed, int64_t vocab) {
  auto base = test::randomInputs(seed, vocab);
  return [base](unsigned index, cpu::HostTensor &arg) {
    base(index, arg);
    if (cpu::isFloat(arg.dtype()))
      for (int64_t i = 0; i < arg.numel(); ++i)
        arg.set(i, 0.05 * arg.get(i));
  };
}

TEST(FuseAttention, TinyGptInF64AgreesToRounding) {
  mlir::MLIRContext ctx;
  RunConfig config;
  auto module = forwardOf(ctx, "tiny.toml", {}, /*f64=*/true, &config);
  ASSERT_TRUE(module);
  auto inputs = modelInputs(3, config.model.vocab_size);
  // Every layer's attention fuses (checked on a copy).
  mlir::OwningOpRef<mlir::ModuleOp> copy(module->clone());
  test::expectPassPreserves(*copy, kFused, 1e-12, inputs);
  EXPECT_EQ(countAttention(*copy), 2 * config.model.n_layer); // @forward and @train_step
  // GPT-2's heads are parts of its packed qkv projection: read in place.
  EXPECT_EQ(countAttention(*copy, /*packedOnly=*/true), 2 * config.model.n_layer);
  test::expectPipelinesAgree(*module, kUnfused, kFused, 1e-12, inputs);
}

// Packed documents (model.document_masking): the document mask fuses into
// kiln.attention with segments, and the step agrees with the unfused one.
// Integer inputs in [0, 4): tokens, targets, segment ids (unsorted: the op
// compares ids) and positions all in range.
TEST(FuseAttention, DocumentMaskedModelsInF64AgreeToRounding) {
  for (const char *file : {"tiny.toml", "llama-tiny.toml"}) {
    mlir::MLIRContext ctx;
    RunConfig config;
    auto module = forwardOf(ctx, file, {"model.document_masking=true"}, /*f64=*/true, &config);
    ASSERT_TRUE(module);
    auto base = modelInputs(5, 4);
    auto inputs = [base](unsigned index, cpu::HostTensor &arg) { base(index, arg); };
    mlir::OwningOpRef<mlir::ModuleOp> copy(module->clone());
    test::expectPassPreserves(*copy, kFused, 1e-12, inputs);
    int withSegments = 0, headBroadcasts = 0;
    copy->walk([&](AttentionOp a) { withSegments += a.getSegments() != nullptr; });
    copy->walk([&](AttentionQkvOp a) { withSegments += a.getSegments() != nullptr; });
    // Llama's grouped heads: the op takes k and v before their broadcast
    // over the group ([B, Hkv, G, T, D]), which is then never stored.
    copy->walk([&](BroadcastInDimOp b) {
      headBroadcasts += build::typeOf(b.getResult()).getRank() == 5;
    });
    EXPECT_EQ(withSegments, 2 * config.model.n_layer) << file;
    EXPECT_EQ(headBroadcasts, 0) << file;
    test::expectPipelinesAgree(*module, kUnfused, kFused, 1e-12, inputs);
  }
}

TEST(FuseAttention, Gpt2InF32AgreesWithinRounding) {
  mlir::MLIRContext ctx;
  // GPT-2 124M's shapes but a short sequence, so the interpreter runs it in
  // seconds: 12 layers, 12 heads of 64, width 768.
  auto module = forwardOf(ctx, "gpt2-124m.toml",
                          {"train.batch_size=1", "train.seq_len=16"}, /*f64=*/false);
  ASSERT_TRUE(module);
  // f32: the scale moves from q into the kernel and the sums run in
  // another order; 2e-4 relative (to max(1, |x|)) bounds the gradients
  // measured here with margin.
  test::expectPipelinesAgree(*module, kUnfused, kFused, 2e-4, modelInputs(4, 50257));
}

} // namespace
