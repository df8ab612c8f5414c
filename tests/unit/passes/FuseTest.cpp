//===- FuseTest.cpp - kiln-fuse preserves the training step exactly ---------===//
//
// A kiln.fusion means its body op by op, each intermediate in its element
// type, so fusing changes no bit of any result: the tolerance is 0. Checked
// on the whole training step (forward, backward, AdamW) of the tiny GPT-2
// and of GPT-2 124M's shapes, in each precision policy; and the pass does
// build fusions there.
//
//===----------------------------------------------------------------------===//

#include "frontend/Config.h"
#include "ir/KilnOps.h"
#include "runtime/cpu/Interpreter.h"
#include "tests/unit/PassPreservation.h"
#include "tests/unit/TestSupport.h"
#include "tools/support/Compile.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "gtest/gtest.h"

using namespace kiln;

namespace {

struct Counts {
  int fusions = 0, fusedOps = 0;
};

Counts countFusions(mlir::ModuleOp module) {
  Counts c;
  module.walk([&](FusionOp f) {
    ++c.fusions;
    for (mlir::Operation &op : f.getBodyOps())
      c.fusedOps += !llvm::isa<ConstantOp>(op);
  });
  return c;
}

/// Builds the training step of `file` with `policy`, unfused, then checks
/// that kiln-fuse changes no result and builds at least `minFusions`.
void checkConfig(const char *file, llvm::ArrayRef<std::string> sets, const std::string &policy,
                 int minFusions) {
  SCOPED_TRACE(std::string(file) + " " + policy);
  mlir::MLIRContext ctx;
  auto config = RunConfig::loadFile(std::string(KILN_SOURCE_DIR "/configs/") + file);
  ASSERT_TRUE(static_cast<bool>(config)) << llvm::toString(config.takeError());
  ASSERT_FALSE(static_cast<bool>(config->applyOverrides(sets)));
  auto module = tooling::buildForwardModule(ctx, *config, mlir::Float32Type::get(&ctx));
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  config->train.precision = policy;
  config->compile.fuse = false;
  auto built = tooling::runTrainingPipeline(**module, *config, tooling::DumpOptions());
  ASSERT_TRUE(static_cast<bool>(built)) << llvm::toString(built.takeError());
  ASSERT_EQ(countFusions(**module).fusions, 0);
  auto inputs = test::randomInputs(5, config->model.vocab_size);
  test::expectPassPreserves(**module, "builtin.module(kiln-fuse)", 0.0, inputs);
  Counts c = countFusions(**module);
  EXPECT_GE(c.fusions, minFusions);
  EXPECT_GE(c.fusedOps, 2 * c.fusions); // a fusion holds two ops or more
}

TEST(Fuse, TinyGptStepIsBitIdentical) {
  checkConfig("tiny.toml", {}, "f32", 1);
  checkConfig("tiny.toml", {}, "bf16-mixed", 2);
  checkConfig("tiny.toml", {"train.loss_scale=1024"}, "f16-mixed", 2);
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
