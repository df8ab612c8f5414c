//===- FuseTest.cpp - kiln-fuse preserves the training step exactly ---------===//
//
// A kiln.fusion means its body op by op, each intermediate in its element
// type, so fusing changes no bit of any result: the tolerance is 0. That
// holds for loop fusions and GEMM epilogues alike (on the interpreter; the
// GPU's cuBLASLt skips the product's rounding, checked in the GPU tests).
// Checked on the whole training step (forward, backward, AdamW) of the
// tiny GPT-2 and of GPT-2 124M's shapes, in each precision policy; and the
// pass does build fusions there: every layer's gelu and gelu_grad and its
// four bias-gradient sums go into GEMMs. Folding widening casts into GEMMs
// is the one part that changes results (the product is no longer rounded
// to bf16 first), checked separately against a stated bound.
//
//===----------------------------------------------------------------------===//

#include "frontend/Config.h"
#include "ir/KilnOps.h"
#include "runtime/cpu/Interpreter.h"
#include "tests/unit/PassPreservation.h"
#include "tests/unit/TestSupport.h"
#include "train/Compile.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "gtest/gtest.h"

using namespace kiln;

namespace {

struct Counts {
  int fusions = 0, fusedOps = 0; ///< loop fusions
  int gelu = 0, geluGrad = 0, biasGrads = 0, epilogues = 0;
  int wideGemms = 0;     ///< bf16/f16 products written as f32
  int narrowedNorms = 0; ///< f32 norms writing bf16/f16
  int normFusions = 0, backwardNormFusions = 0; ///< of the loop fusions
  int columnSums = 0;                           ///< bias gradients in norm gradients' kernels
  int crossEntropyFusions = 0;
  int attentionBiasSums = 0;   ///< bias gradients in attention gradients' kernels
  int broadcastsRead = 0;      ///< broadcasts in fusion bodies (index maps)
  int broadcastsLeft = 0;      ///< broadcasts materialized outside them
  int reductionFusions = 0;    ///< of the loop fusions: ending in a reduction
  int ops = 0;                 ///< top-level ops of the function(s): about one kernel each
};

Counts countFusions(mlir::ModuleOp module, llvm::StringRef function = "") {
  Counts c;
  module.walk([&](mlir::func::FuncOp func) {
    if (!function.empty() && func.getSymName() != function)
      return;
    c.ops += static_cast<int>(func.getBody().front().getOperations().size());
    func.walk([&](MatmulOp mm) {
      c.wideGemms += mm.getLhs().getType().getElementType() != mm.getType().getElementType();
    });
    func.walk([&](LayerNormOp ln) { c.narrowedNorms += ln.getY().getType() != ln.getX().getType(); });
    func.walk([&](BroadcastInDimOp b) {
      (llvm::isa<FusionOp>(b->getParentOp()) ? c.broadcastsRead : c.broadcastsLeft) += 1;
    });
    // (func.walk visits fusion bodies too: a fused norm still counts.)
    func.walk([&](FusionOp f) {
      if (auto body = matchGemmEpilogue(f); mlir::succeeded(body)) {
        ++c.epilogues;
        c.gelu += body->activation == GemmEpilogueBody::Activation::Gelu;
        c.geluGrad += body->activation == GemmEpilogueBody::Activation::GeluGrad;
        c.biasGrads += static_cast<bool>(body->biasGrad);
        return;
      }
      if (mlir::succeeded(matchAttentionGradFusion(f))) {
        ++c.attentionBiasSums;
        return;
      }
      ++c.fusions;
      c.crossEntropyFusions += mlir::succeeded(matchCrossEntropyFusion(f));
      c.reductionFusions += mlir::succeeded(matchReductionFusion(f));
      if (auto body = matchNormFusion(f); mlir::succeeded(body)) {
        ++c.normFusions;
        c.backwardNormFusions += body->backward;
        c.columnSums += static_cast<bool>(body->columnSum);
      }
      for (mlir::Operation &op : f.getBodyOps())
        c.fusedOps += !llvm::isa<ConstantOp>(op);
    });
  });
  return c;
}

/// The training step of `file` with `policy`, built unfused.
mlir::OwningOpRef<mlir::ModuleOp> unfusedStep(mlir::MLIRContext &ctx, const char *file,
                                              llvm::ArrayRef<std::string> sets,
                                              const std::string &policy, int64_t &layers,
                                              int64_t &vocab) {
  auto config = RunConfig::loadFile(std::string(KILN_SOURCE_DIR "/configs/") + file);
  EXPECT_TRUE(static_cast<bool>(config)) << llvm::toString(config.takeError());
  if (!config)
    return {};
  EXPECT_FALSE(static_cast<bool>(config->applyOverrides(sets)));
  auto module = tooling::buildForwardModule(ctx, *config, mlir::Float32Type::get(&ctx));
  EXPECT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  if (!module)
    return {};
  config->train.precision = policy;
  config->compile.fuse = false;
  auto built = tooling::runTrainingPipeline(**module, *config, tooling::DumpOptions());
  EXPECT_TRUE(static_cast<bool>(built)) << llvm::toString(built.takeError());
  layers = config->model.n_layer;
  vocab = config->model.vocab_size;
  return std::move(*module);
}

/// Checks that kiln-fuse without cast folding and with bias-grad-epilogues
/// (off by default) changes no result, builds at least `minFusions` loop
/// fusions, folds every layer's gelu, gelu_grad and two bias-gradient sums
/// into GEMM epilogues (one where attention is fused: the qkv projection's
/// is summed by the attention gradient's kernels), and sums the other two
/// in the norm gradients' kernels.
void checkConfig(const char *file, llvm::ArrayRef<std::string> sets, const std::string &policy,
                 int minFusions) {
  SCOPED_TRACE(std::string(file) + " " + policy);
  mlir::MLIRContext ctx;
  int64_t layers = 0, vocab = 0;
  auto module = unfusedStep(ctx, file, sets, policy, layers, vocab);
  ASSERT_TRUE(module);
  ASSERT_EQ(countFusions(*module).fusions, 0);
  auto inputs = test::randomInputs(5, vocab);
  test::expectPassPreserves(
      *module, "builtin.module(kiln-fuse{fold-casts=false bias-grad-epilogues=true})", 0.0, inputs);
  Counts c = countFusions(*module);
  EXPECT_GE(c.fusions, minFusions);
  EXPECT_GE(c.fusedOps, 2 * c.fusions); // a fusion holds two ops or more
  Counts step = countFusions(*module, "train_step");
  EXPECT_EQ(step.gelu, layers);
  EXPECT_EQ(step.geluGrad, layers);
  // (Attention is fused under the mixed policies only: compile.fuse_attention
  // = "auto".)
  const bool attention = policy != "f32";
  EXPECT_EQ(step.biasGrads, attention ? layers : 2 * layers); // fc [, qkv]
  EXPECT_EQ(step.attentionBiasSums, attention ? layers : 0);  // qkv
  // The attention and MLP projections' bias gradients sum the residual
  // gradient the norm gradients after them write (ln_2's, and the next
  // block's ln_1 or the final norm's).
  EXPECT_EQ(step.columnSums, 2 * layers);
  // Both layer norms of each block and the final one write the low type
  // (under f32 there is no cast to fold).
  EXPECT_EQ(step.narrowedNorms, policy == "f32" ? 0 : 2 * layers + 1);
  EXPECT_EQ(step.wideGemms, 0);
  // Every norm takes the add before it (the embeddings' sum, then the
  // residual stream's), and every block's norm gradient the residual
  // gradient's add (and cast) after it. The final norm's dx is that add's
  // other operand: the add goes with the later gradient, so the final one
  // fuses with its own cast to bf16/f16 and, under f32 where there is no
  // cast, with the column sum of its dx alone (the last MLP projection's
  // bias gradient).
  EXPECT_EQ(step.normFusions - step.backwardNormFusions, 2 * layers + 1);
  EXPECT_EQ(step.backwardNormFusions, 2 * layers + 1);
  // The loss and its gradient, one kernel (the padded vocabulary is whole
  // 16-byte vectors).
  EXPECT_EQ(step.crossEntropyFusions, 1);
  // The position table is read through its broadcast by the first norm
  // fusion, and, where attention is written out (f32), each layer's causal
  // mask by the select of its scores: no broadcast is materialized.
  // (Under f16-mixed the loss scale's seed, broadcast to the loss's
  // shape, stays: the cross-entropy fusion reads dloss as a tensor.)
  EXPECT_EQ(step.broadcastsLeft, policy == "f16-mixed" ? 1 : 0);
  EXPECT_EQ(step.broadcastsRead, policy == "f32" ? 1 + layers : 1);
}

TEST(Fuse, TinyGptStepIsBitIdentical) {
  checkConfig("tiny.toml", {}, "f32", 1);
  checkConfig("tiny.toml", {}, "bf16-mixed", 2);
  checkConfig("tiny.toml", {"train.loss_scale=1024"}, "f16-mixed", 2);
}

// Sibling fusion on the tiny Llama: SwiGLU's backward computes du and dg
// from the same dh in two groups; merged, each layer's MLP backward is one
// kernel yielding both. The step stays bit-identical on the CPU; the lone
// mul of each layer (no fusion without siblings) joins the dg fusion.
// (This test caught models/Llama.cpp building SwiGLU's two operands in an
// order the compiler chose: the sanitizer build's IR differed and its
// reshape of du blocked the merge. The operands are sequenced now.)
TEST(Fuse, LlamaSiblingsAreBitIdentical) {
  for (const char *policy : {"f32", "bf16-mixed"}) {
    SCOPED_TRACE(policy);
    mlir::MLIRContext ctx;
    int64_t layers = 0, vocab = 0;
    auto module = unfusedStep(ctx, "llama-tiny.toml", {}, policy, layers, vocab);
    ASSERT_TRUE(module);
    mlir::OwningOpRef<mlir::ModuleOp> apart(module->clone());
    auto inputs = test::randomInputs(5, vocab);
    test::expectPassPreserves(*module, "builtin.module(kiln-fuse{fold-casts=false})", 0.0, inputs);
    test::expectPassPreserves(*apart, "builtin.module(kiln-fuse{fold-casts=false siblings=false})", 0.0,
                              inputs);
    Counts with = countFusions(*module, "train_step"), without = countFusions(*apart, "train_step");
    EXPECT_EQ(with.fusions, without.fusions);
    EXPECT_EQ(with.fusedOps - without.fusedOps, layers); // a launch fewer per layer
  }
}

// Reduction fusions on a small mixture of experts: each expert MLP's bias
// gradients sum gelu_grad's output and the second layer's gradient (a
// batched matmul's, not a GEMM epilogue's), and the router's statistics
// reduce elementwise values. With the option the step stays bit-identical
// on the CPU, each such reduction is a fusion, and the step has fewer ops
// (kernels) than without it.
TEST(Fuse, MoeReductionsAreBitIdentical) {
  for (const char *policy : {"f32", "bf16-mixed"}) {
    SCOPED_TRACE(policy);
    mlir::MLIRContext ctx;
    int64_t layers = 0, vocab = 0;
    auto module = unfusedStep(ctx, "moe-fortunes.toml",
                              {"model.n_layer=2", "model.n_embd=32", "model.n_head=2",
                               "model.block_size=16", "train.seq_len=16", "train.batch_size=2"},
                              policy, layers, vocab);
    ASSERT_TRUE(module);
    mlir::OwningOpRef<mlir::ModuleOp> apart(module->clone());
    auto inputs = test::randomInputs(5, vocab);
    test::expectPassPreserves(*module, "builtin.module(kiln-fuse{fold-casts=false})", 0.0, inputs);
    test::expectPassPreserves(*apart, "builtin.module(kiln-fuse{fold-casts=false reductions=false})",
                              0.0, inputs);
    Counts with = countFusions(*module, "train_step"), without = countFusions(*apart, "train_step");
    EXPECT_EQ(without.reductionFusions, 0);
    EXPECT_GE(with.reductionFusions, layers); // at least each layer's expert bias gradient
    EXPECT_LT(with.ops, without.ops);
  }
}

// A bf16 product widened to f32 by a cast that would be a kernel of its own
// (it feeds a layer-norm gradient, not an elementwise op) becomes a product
// written in f32: the fused value is the product rounded once to f32 where
// it was rounded to bf16 and then widened, a change of at most half a bf16
// ulp (2^-9 relative) per element. Through the rest of one training step
// (backward, AdamW at lr 1e-3 on the tiny model) the results move by less
// than 1e-2, relative to max(1, |value|); the cast-free step differs from
// it in the same places only.
TEST(Fuse, CastFoldingIsWithinItsBound) {
  mlir::MLIRContext ctx;
  int64_t layers = 0, vocab = 0;
  auto module = unfusedStep(ctx, "tiny.toml", {}, "bf16-mixed", layers, vocab);
  ASSERT_TRUE(module);
  auto inputs = test::randomInputs(5, vocab);
  test::expectPassPreserves(*module, "builtin.module(kiln-fuse)", 1e-2, inputs);
  Counts step = countFusions(*module, "train_step");
  // The products feeding each layer's two layer-norm gradients and the
  // final one's stay bf16 (the gradients read them as their dy); the GEMMs
  // writing f32 are the four weight gradients of each layer (with
  // bias-grad-epilogues, off by default, the qkv and fc ones widen in their
  // BGRADA epilogue instead and only the two projections' count).
  EXPECT_EQ(step.wideGemms, 4 * layers);
  int64_t narrowDy = 0;
  module->walk([&](LayerNormGradOp g) {
    narrowDy += g.getDy().getType().getElementType().isBF16() &&
                g.getX().getType().getElementType().isF32();
  });
  EXPECT_EQ(narrowDy, 2 * layers + 1);
}

TEST(Fuse, Gpt2ShapesStepIsBitIdentical) {
  // GPT-2 124M's widths (one layer, a 1000-token vocabulary, a short
  // sequence, so that the interpreter runs it in seconds).
  checkConfig("gpt2-124m.toml", {"model.n_layer=1", "model.vocab_size=1000", "train.batch_size=1",
               "train.seq_len=8"},
              "bf16-mixed", 2);
}

// The interpreter holds a fusion's intermediates while it runs the body,
// and the memory check before a CPU run counts them: fusing a chain does
// not hide its peak (exp and neg live together, as unfused).
TEST(Fuse, InterpreterPeakCountsTheBody) {
  auto ctx = test::makeContext();
  auto module = test::parse(*ctx, R"(
    func.func @f(%x: tensor<64x64xf32>) -> tensor<64x64xf32> {
      %a = kiln.exp %x : tensor<64x64xf32>
      %b = kiln.neg %a : tensor<64x64xf32>
      %c = kiln.tanh %b : tensor<64x64xf32>
      return %c : tensor<64x64xf32>
    })");
  ASSERT_TRUE(module);
  auto func = [&] { return *module->getOps<mlir::func::FuncOp>().begin(); };
  int64_t unfused = cpu::Interpreter::peakTemporaryBytes(func());
  test::expectPassPreserves(*module, "builtin.module(kiln-fuse)", 0.0);
  ASSERT_EQ(countFusions(*module).fusions, 1);
  EXPECT_EQ(cpu::Interpreter::peakTemporaryBytes(func()), unfused);
  EXPECT_EQ(unfused, 2 * 64 * 64 * 4);
}

} // namespace
