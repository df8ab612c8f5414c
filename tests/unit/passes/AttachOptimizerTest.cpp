//===- AttachOptimizerTest.cpp - the optimizer IR against a hand AdamW -----===//
//
// The reference: the gradients of the autodiff-only step, put through AdamW
// and clipping written out here in double precision. Tolerance: 1e-6
// relative (float storage, double math on both sides).
//
//===----------------------------------------------------------------------===//

#include "frontend/Config.h"
#include "passes/Passes.h"
#include "runtime/Random.h"
#include "runtime/cpu/CpuBackend.h"
#include "runtime/cpu/Interpreter.h"
#include "tests/unit/TestSupport.h"
#include "train/Compile.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"
#include "gtest/gtest.h"

#include <cmath>

using namespace mlir;
using namespace kiln;

namespace {

constexpr const char *kStep = R"(
  func.func @forward(%w: tensor<4x3xf32> {kiln.param = "w", kiln.role = "weight"},
                     %b: tensor<3xf32> {kiln.param = "b", kiln.role = "bias"},
                     %x: tensor<5x4xf32> {kiln.input = "x"}) -> tensor<f32> {
    %y = kiln.matmul %x, %w : tensor<5x4xf32>, tensor<4x3xf32> -> tensor<5x3xf32>
    %bb = kiln.broadcast_in_dim %b, dims = [1] : tensor<3xf32> -> tensor<5x3xf32>
    %z = kiln.add %y, %bb : tensor<5x3xf32>
    %t = kiln.tanh %z : tensor<5x3xf32>
    %s = kiln.mul %t, %t : tensor<5x3xf32>
    %l = kiln.reduce_sum %s, dims = [0, 1] : tensor<5x3xf32> -> tensor<f32>
    return %l : tensor<f32>
  })";

cpu::HostTensor random(std::vector<int64_t> shape, Rng &rng, double scale = 1.0) {
  cpu::HostTensor t(cpu::DType::F32, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i)
    t.set(i, scale * rng.normal());
  return t;
}

cpu::HostTensor scalar(double v) {
  cpu::HostTensor t(cpu::DType::F32, {});
  t.set(0, v);
  return t;
}

TEST(AttachOptimizer, OneStepEqualsHandWrittenAdamWWithClipping) {
  auto ctx = test::makeContext();
  auto module = test::parse(*ctx, kStep);
  ASSERT_TRUE(module);
  PassManager gradsOnly(ctx.get());
  gradsOnly.addPass(createAutodiffPass());
  ASSERT_TRUE(succeeded(gradsOnly.run(*module)));
  OwningOpRef<ModuleOp> withOptimizer = module->clone();
  PassManager opt(ctx.get());
  AttachOptimizerPassOptions o;
  o.maxGradNorm = 0.5; // small enough that clipping acts
  o.weightDecay = 0.1;
  opt.addPass(createAttachOptimizerPass(o));
  ASSERT_TRUE(succeeded(opt.run(*withOptimizer)));

  Rng rng(5);
  cpu::HostTensor w = random({4, 3}, rng), b = random({3}, rng), x = random({5, 4}, rng);
  // The reference gradients.
  auto plain = cpu::Interpreter::create(module->lookupSymbol<func::FuncOp>("train_step"));
  ASSERT_TRUE(static_cast<bool>(plain));
  auto grads = (*plain)->run({w, b, x});
  ASSERT_TRUE(static_cast<bool>(grads));
  const cpu::HostTensor &gw = (*grads)[1], &gb = (*grads)[2];
  double norm = 0;
  for (const cpu::HostTensor *g : {&gw, &gb})
    for (int64_t i = 0; i < g->numel(); ++i)
      norm += g->get(i) * g->get(i);
  norm = std::sqrt(norm);
  ASSERT_GT(norm, 0.5) << "the test needs clipping to act";
  double clip = 0.5 / norm;

  // Step 3 (bias corrections 1 − β^3) from non-zero moments.
  cpu::HostTensor mw = random({4, 3}, rng, 0.1), vw = random({4, 3}, rng, 0.0),
                  mb = random({3}, rng, 0.1), vb = random({3}, rng, 0.0);
  for (cpu::HostTensor *v : {&vw, &vb})
    for (int64_t i = 0; i < v->numel(); ++i)
      v->set(i, 0.01 * (1 + i));
  double lr = 0.01, t = 3, b1 = 0.9, b2 = 0.95, eps = 1e-8;
  auto step = cpu::Interpreter::create(withOptimizer->lookupSymbol<func::FuncOp>("train_step"));
  ASSERT_TRUE(static_cast<bool>(step)) << llvm::toString(step.takeError());
  // Arguments: w, b, w.adam_m, b.adam_m, w.adam_v, b.adam_v, x, lr, step.
  auto out = (*step)->run({w, b, mw, mb, vw, vb, x, scalar(lr), scalar(t)});
  ASSERT_TRUE(static_cast<bool>(out)) << llvm::toString(out.takeError());
  EXPECT_NEAR((*out)[1].get(0), norm, 1e-6 * norm); // grad_norm

  auto check = [&](const cpu::HostTensor &p, const cpu::HostTensor &g, const cpu::HostTensor &m,
                   const cpu::HostTensor &v, double decay, const cpu::HostTensor &newP,
                   const char *what) {
    for (int64_t i = 0; i < p.numel(); ++i) {
      double gi = g.get(i) * clip;
      double mi = b1 * m.get(i) + (1 - b1) * gi, vi = b2 * v.get(i) + (1 - b2) * gi * gi;
      double want = p.get(i) * (1 - lr * decay) -
                    lr * (mi / (1 - std::pow(b1, t))) / (std::sqrt(vi / (1 - std::pow(b2, t))) + eps);
      EXPECT_NEAR(newP.get(i), want, 1e-6 * std::max(1.0, std::abs(want))) << what << "[" << i << "]";
    }
  };
  check(w, gw, mw, vw, 0.1, (*out)[2], "w"); // a weight: decayed
  check(b, gb, mb, vb, 0.0, (*out)[3], "b"); // a bias: not decayed
}

// Accumulating the gradients of 2 micro-batches of B sequences gives, divided
// by 2, the gradient of one batch of those 2B sequences (up to float
// rounding: 1e-5 of the tensor's largest entry). (Comparing parameters after
// one AdamW step would not work: the first step moves every weight by about
// ±lr whatever the gradient's size, so rounding flips near-zero entries.)
TEST(AttachOptimizer, AccumulatedGradientsMatchTheLargerBatch) {
  auto base = RunConfig::loadFile(KILN_SOURCE_DIR "/configs/tiny.toml");
  ASSERT_TRUE(static_cast<bool>(base));
  Rng rng(3);
  cpu::HostTensor tokens(cpu::DType::I32, {4, 8}), targets(cpu::DType::I32, {4, 8});
  for (int64_t i = 0; i < tokens.numel(); ++i) {
    tokens.set(i, static_cast<double>(rng.below(61)));
    targets.set(i, static_cast<double>(rng.below(61)));
  }
  auto half = [&](const cpu::HostTensor &t, int64_t part) {
    cpu::HostTensor h(cpu::DType::I32, {2, 8});
    for (int64_t i = 0; i < 16; ++i)
      h.set(i, t.get(part * 16 + i));
    return h;
  };

  // The big batch's gradients, from autodiff alone.
  RunConfig big = *base;
  big.train.batch_size = 4;
  MLIRContext ctx;
  auto bigModule = tooling::buildForwardModule(ctx, big, Float32Type::get(&ctx));
  ASSERT_TRUE(static_cast<bool>(bigModule));
  PassManager pm(&ctx);
  pm.addPass(createAutodiffPass());
  ASSERT_TRUE(succeeded(pm.run(**bigModule)));
  cpu::CpuBackend bigBackend;
  ASSERT_FALSE(static_cast<bool>(bigBackend.load(**bigModule, 11)));
  auto grads = bigBackend.run("train_step", {{"tokens", tokens}, {"targets", targets}});
  ASSERT_TRUE(static_cast<bool>(grads));

  // The accumulating step on the two halves, from the same initial weights.
  RunConfig acc = *base;
  acc.train.batch_size = 2;
  acc.train.accumulate_steps = 2;
  auto accModule = tooling::buildForwardModule(ctx, acc, Float32Type::get(&ctx));
  ASSERT_TRUE(static_cast<bool>(accModule));
  ASSERT_TRUE(static_cast<bool>(tooling::runTrainingPipeline(**accModule, acc, {})));
  cpu::CpuBackend accBackend;
  ASSERT_FALSE(static_cast<bool>(accBackend.load(**accModule, 11)));
  for (int64_t k = 0; k < 2; ++k)
    ASSERT_TRUE(static_cast<bool>(accBackend.run(
        "accumulate_step", {{"tokens", half(tokens, k)}, {"targets", half(targets, k)}})));
  // The accumulators are transient states (zero between steps, never
  // checkpointed): read them by name.
  auto states = accBackend.optimizerStates();
  ASSERT_TRUE(static_cast<bool>(states));
  for (const auto &[name, t] : *states)
    EXPECT_FALSE(llvm::StringRef(name).ends_with(".grad_acc")) << name << " would be checkpointed";
  int compared = 0;
  for (const StateSpec &spec : accBackend.stateSpecs()) {
    llvm::StringRef param(spec.name);
    if (!param.consume_back(".grad_acc"))
      continue;
    EXPECT_TRUE(spec.transient) << spec.name;
    ASSERT_TRUE(accBackend.stateTensor(spec.name));
    const cpu::HostTensor &sum = *accBackend.stateTensor(spec.name);
    const cpu::HostTensor &g = grads->at("grad." + param.str());
    double scale = 1e-12, worst = 0;
    for (int64_t i = 0; i < g.numel(); ++i)
      scale = std::max(scale, std::abs(g.get(i)));
    for (int64_t i = 0; i < g.numel(); ++i)
      worst = std::max(worst, std::abs(sum.get(i) / 2 - g.get(i)) / scale);
    EXPECT_LE(worst, 1e-5) << param.str();
    ++compared;
  }
  EXPECT_EQ(compared, 28); // every parameter of the tiny GPT-2 (2 × 12 + 4)
}

} // namespace

namespace {

// The passes' options (Passes.td) are the single declaration of the
// optimizer's settings; the run config binds its TOML keys to them
// (train/Compile.cpp) and must start from the same defaults, so a
// config that sets nothing trains exactly as the pass would by default.
TEST(AttachOptimizer, ConfigDefaultsAreThePassDefaults) {
  RunConfig config;
  AttachOptimizerPassOptions pass;
  EXPECT_EQ(config.optim.beta1, pass.beta1);
  EXPECT_EQ(config.optim.beta2, pass.beta2);
  EXPECT_EQ(config.optim.eps, pass.epsilon);
  EXPECT_EQ(config.optim.weight_decay, pass.weightDecay);
  EXPECT_EQ(config.optim.grad_clip, pass.maxGradNorm);
  EXPECT_EQ(config.train.accumulate_steps, pass.accumulateSteps);
  EXPECT_EQ(config.train.loss_scale_growth_interval, pass.lossScaleGrowthInterval);
  EXPECT_EQ(config.train.loss_scale_growth, pass.lossScaleGrowth);
  EXPECT_EQ(config.train.loss_scale_backoff, pass.lossScaleBackoff);
  EXPECT_EQ(config.train.precision, AssignPrecisionPassOptions().policy);
}

} // namespace
