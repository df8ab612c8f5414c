//===- GPT2Test.cpp - GPT-2 parameter counts and structure -----------------===//

#include "models/GPT2.h"
#include "runtime/ParamInit.h"
#include "runtime/cpu/Interpreter.h"

#include <cmath>
#include "train/Compile.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "gtest/gtest.h"

using namespace kiln;

namespace {

/// Sum of the parameter arguments' sizes in the built IR.
int64_t irParamCount(const RunConfig &config) {
  mlir::MLIRContext ctx;
  auto module = tooling::buildForwardModule(ctx, config, mlir::Float32Type::get(&ctx));
  if (!module) {
    ADD_FAILURE() << llvm::toString(module.takeError());
    return -1;
  }
  auto params = paramsOf((*module)->lookupSymbol<mlir::func::FuncOp>("forward"));
  int64_t n = 0;
  for (const ParamInfo &p : *params) {
    int64_t size = 1;
    for (int64_t d : p.shape)
      size *= d;
    n += size;
  }
  return n;
}

RunConfig gpt2(int64_t layers, int64_t heads, int64_t width) {
  RunConfig c;
  c.model.n_layer = layers;
  c.model.n_head = heads;
  c.model.n_embd = width;
  c.train.batch_size = 1;
  c.train.seq_len = 8; // the count does not depend on the step's shape
  return c;
}

// Published sizes with the real vocabulary (50257), tied embeddings and
// biases: GPT-2 small 124,439,808 and medium 354,823,168 (e.g. the Hugging
// Face checkpoints' num_parameters()).
TEST(GPT2, PublishedParameterCounts) {
  RunConfig small = gpt2(12, 12, 768), medium = gpt2(24, 16, 1024);
  EXPECT_EQ(models::gpt2ParamCount(small.model, false), 124439808);
  EXPECT_EQ(models::gpt2ParamCount(medium.model, false), 354823168);
  // The IR allocates the padded table: 50304 rows, 47 × width more.
  EXPECT_EQ(small.model.paddedVocab(), 50304);
  EXPECT_EQ(models::gpt2ParamCount(small.model, true), 124439808 + 47 * 768);
  EXPECT_EQ(irParamCount(small), models::gpt2ParamCount(small.model, true));
  // Without padding the IR itself has the published count.
  small.model.vocab_multiple = 1;
  EXPECT_EQ(irParamCount(small), 124439808);
  medium.model.vocab_multiple = 1;
  EXPECT_EQ(irParamCount(medium), 354823168);
}

TEST(GPT2, ConfigFilesDescribeTheModels) {
  auto small = RunConfig::loadFile(KILN_SOURCE_DIR "/configs/gpt2-124m.toml");
  ASSERT_TRUE(static_cast<bool>(small)) << llvm::toString(small.takeError());
  EXPECT_EQ(models::gpt2ParamCount(small->model, false), 124439808);
  auto medium = RunConfig::loadFile(KILN_SOURCE_DIR "/configs/gpt2-350m.toml");
  ASSERT_TRUE(static_cast<bool>(medium)) << llvm::toString(medium.takeError());
  EXPECT_EQ(models::gpt2ParamCount(medium->model, false), 354823168);
}

// Loss at initialization is close to ln(vocab): the logits start near zero.
TEST(GPT2, InitialLossIsNearLogVocab) {
  auto config = RunConfig::loadFile(KILN_SOURCE_DIR "/configs/tiny.toml");
  ASSERT_TRUE(static_cast<bool>(config));
  mlir::MLIRContext ctx;
  auto module = tooling::buildForwardModule(ctx, *config, mlir::Float32Type::get(&ctx));
  ASSERT_TRUE(static_cast<bool>(module));
  auto forward = (*module)->lookupSymbol<mlir::func::FuncOp>("forward");
  // Arguments: parameters (initialized per kiln.init), then tokens, targets.
  auto params = paramsOf(forward);
  auto values = initParams(*params, 42);
  ASSERT_TRUE(static_cast<bool>(values));
  std::vector<cpu::HostTensor> args(*values);
  for (int k = 0; k < 2; ++k) {
    cpu::HostTensor ids(cpu::DType::I32, {config->train.batch_size, config->seqLen()});
    for (int64_t i = 0; i < ids.numel(); ++i)
      ids.set(i, static_cast<double>((i * 7 + k) % config->model.vocab_size));
    args.push_back(ids);
  }
  auto interp = cpu::Interpreter::create(forward);
  ASSERT_TRUE(static_cast<bool>(interp));
  auto out = (*interp)->run(args);
  ASSERT_TRUE(static_cast<bool>(out)) << llvm::toString(out.takeError());
  double loss = (*out)[0].get(0), logV = std::log(static_cast<double>(config->model.vocab_size));
  EXPECT_NEAR(loss, logV, 0.1) << "ln(" << config->model.vocab_size << ") = " << logV;
}

// SFT's loss: with model.loss_normalization = "targets", positions whose
// target is negative (prompt tokens) count for nothing and the mean is over
// the others — checked against the same sum computed by hand from the
// model's logits, in f64.
TEST(GPT2, MaskedLossIsTheMeanOverTargetsByHand) {
  auto config = RunConfig::loadFile(KILN_SOURCE_DIR "/configs/tiny.toml");
  ASSERT_TRUE(static_cast<bool>(config));
  config->model.loss_normalization = "targets";
  const int64_t B = config->train.batch_size, T = config->seqLen(), V = config->model.vocab_size;
  mlir::MLIRContext ctx;
  mlir::Type f64 = mlir::Float64Type::get(&ctx);
  auto module = tooling::buildForwardModule(ctx, *config, f64);
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  std::vector<std::string> errors;
  ASSERT_TRUE(succeeded(models::buildGPT2(**module, config->model, B, T, f64,
                                          models::GPT2Output::Logits, "logits", errors)));
  auto forward = (*module)->lookupSymbol<mlir::func::FuncOp>("forward");
  auto logitsFn = (*module)->lookupSymbol<mlir::func::FuncOp>("logits");
  auto values = initParams(*paramsOf(forward), 7);
  ASSERT_TRUE(static_cast<bool>(values));
  cpu::HostTensor tokens(cpu::DType::I32, {B, T}), targets(cpu::DType::I32, {B, T});
  for (int64_t i = 0; i < B * T; ++i) {
    tokens.set(i, static_cast<double>((i * 5 + 1) % V));
    // Every third position is a prompt token: no target.
    targets.set(i, i % 3 == 0 ? -1.0 : static_cast<double>((i * 11 + 2) % V));
  }
  auto run = [&](mlir::func::FuncOp f, std::vector<cpu::HostTensor> inputs) {
    std::vector<cpu::HostTensor> args(*values);
    args.insert(args.end(), inputs.begin(), inputs.end());
    auto interp = cpu::Interpreter::create(f);
    EXPECT_TRUE(static_cast<bool>(interp));
    auto out = (*interp)->run(args);
    EXPECT_TRUE(static_cast<bool>(out)) << llvm::toString(out.takeError());
    return (*out)[0];
  };
  double loss = run(forward, {tokens, targets}).get(0);
  cpu::HostTensor logits = run(logitsFn, {tokens});
  const int64_t Vp = logits.dim(2);
  double sum = 0;
  int64_t count = 0;
  for (int64_t i = 0; i < B * T; ++i) {
    int64_t target = static_cast<int64_t>(targets.get(i));
    if (target < 0)
      continue;
    double mx = -INFINITY, z = 0;
    for (int64_t c = 0; c < V; ++c)
      mx = std::max(mx, logits.get(i * Vp + c));
    for (int64_t c = 0; c < V; ++c)
      z += std::exp(logits.get(i * Vp + c) - mx);
    sum += mx + std::log(z) - logits.get(i * Vp + target);
    ++count;
  }
  ASSERT_EQ(count, B * T - (B * T + 2) / 3);
  EXPECT_NEAR(loss, sum / static_cast<double>(count), 1e-12 * std::abs(loss));

  // No target at all: a loss of 0, not 0/0.
  for (int64_t i = 0; i < B * T; ++i)
    targets.set(i, -1.0);
  EXPECT_EQ(run(forward, {tokens, targets}).get(0), 0.0);
}

} // namespace
