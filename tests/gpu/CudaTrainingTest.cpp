//===- CudaTrainingTest.cpp - a small GPT trained on the GPU and the CPU ---===//
//
// The same module, seed and batches on both backends: the per-step losses
// of 20 AdamW steps (f32) agree within 1e-4 relative, and so do the
// gradient norms, the validation loss of @forward and the parameters at the
// end.
//
//===----------------------------------------------------------------------===//

#include "tests/gpu/GpuTestSupport.h"
#include "tests/unit/TestSupport.h"

#include "runtime/Random.h"
#include "runtime/cpu/CpuBackend.h"
#include "train/Compile.h"
#include "train/Loop.h"

#include "mlir/IR/MLIRContext.h"

#include <cmath>
#include <map>
#include <optional>
#include <utility>

namespace kiln::test {
namespace {

const char *kSmallGPT = R"toml(
[model]
kind = "gpt2"
n_layer = 2
n_head = 4
n_embd = 64
vocab_size = 100
vocab_multiple = 8   # 104 rows: the padded-vocabulary path runs too
block_size = 32

[train]
batch_size = 4
seq_len = 32
seed = 7

[optim]
lr = 1e-3
grad_clip = 1.0
)toml";

/// Trains the small GPT 20 steps on both backends from the same seed and
/// batches, under `precision`; losses and gradient norms agree within
/// `tolerance` (relative), parameters within `paramTolerance`.
void compareCpuAndGpu(const std::string &precision, double tolerance, double paramTolerance,
                      int64_t experts = 0, bool llama = false, int accumulate = 1) {
  auto config = RunConfig::parse(kSmallGPT, "small-gpt");
  ASSERT_TRUE(static_cast<bool>(config)) << llvm::toString(config.takeError());
  config->train.precision = precision;
  if (llama) { // the same size as a Llama: RMSNorm, rope, GQA, SwiGLU
    config->model.kind = "llama";
    config->model.n_kv_head = 2;
    config->model.intermediate_size = 160;
  }
  // With experts: top-2 of them and room for an even share, so some
  // choices are dropped.
  config->model.moe.experts = experts;
  config->model.moe.capacity_factor = 1.0;
  // With accumulation: @accumulate_step K times (the losses averaged), then
  // @apply_step (the gradient norm).
  config->train.accumulate_steps = accumulate;
  ASSERT_FALSE(static_cast<bool>(config->validate("small-gpt")));

  mlir::MLIRContext cpuCtx, gpuCtx;
  auto cpuModule = tooling::buildTrainingModule(cpuCtx, *config);
  ASSERT_TRUE(static_cast<bool>(cpuModule)) << llvm::toString(cpuModule.takeError());
  auto gpuModule = tooling::buildTrainingModule(gpuCtx, *config);
  ASSERT_TRUE(static_cast<bool>(gpuModule)) << llvm::toString(gpuModule.takeError());

  cpu::CpuBackend cpuBackend;
  ASSERT_FALSE(static_cast<bool>(cpuBackend.load(**cpuModule, 7)));
  auto gpu = tooling::makeBackend("cuda", nullptr);
  ASSERT_TRUE(static_cast<bool>(gpu)) << llvm::toString(gpu.takeError());
  Backend &gpuBackend = **gpu;
  llvm::Error loaded = gpuBackend.load(**gpuModule, 7);
  ASSERT_FALSE(static_cast<bool>(loaded)) << llvm::toString(std::move(loaded));
  std::printf("%s\n", gpuBackend.describe().c_str());

  const int64_t B = config->train.batch_size, T = config->seqLen(), V = config->model.vocab_size;
  Rng rng(99);
  // `fn` on both backends: (the CPU's results, the GPU's), or nothing after
  // a failure (reported).
  auto both = [&](const char *fn,
                  const TensorMap &inputs) -> std::optional<std::pair<TensorMap, TensorMap>> {
    auto want = cpuBackend.run(fn, inputs);
    auto got = gpuBackend.run(fn, inputs);
    if (!want || !got) {
      ADD_FAILURE() << fn << ": " << (want ? "" : llvm::toString(want.takeError()))
                    << (got ? "" : llvm::toString(got.takeError()));
      return std::nullopt;
    }
    return std::make_pair(std::move(*want), std::move(*got));
  };
  double worstLoss = 0, worstNorm = 0;
  for (int step = 1; step <= 20; ++step) {
    double cl = 0, gl = 0, cn = 0, gn = 0;
    if (accumulate > 1) {
      for (int k = 0; k < accumulate; ++k) {
        cpu::HostTensor tokens = randomTokens(rng, B, T, V), targets = randomTokens(rng, B, T, V);
        auto r = both("accumulate_step", {{"tokens", tokens}, {"targets", targets}});
        ASSERT_TRUE(r);
        cl += r->first.at("loss").get(0) / accumulate;
        gl += r->second.at("loss").get(0) / accumulate;
      }
      auto r = both("apply_step", {{"lr", scalarTensor(1e-3)}, {"step", scalarTensor(step)}});
      ASSERT_TRUE(r);
      cn = r->first.at("grad_norm").get(0);
      gn = r->second.at("grad_norm").get(0);
    } else {
      cpu::HostTensor tokens = randomTokens(rng, B, T, V), targets = randomTokens(rng, B, T, V);
      auto r = both("train_step", {{"tokens", tokens},
                                   {"targets", targets},
                                   {"lr", scalarTensor(1e-3)},
                                   {"step", scalarTensor(step)}});
      ASSERT_TRUE(r);
      cl = r->first.at("loss").get(0);
      gl = r->second.at("loss").get(0);
      cn = r->first.at("grad_norm").get(0);
      gn = r->second.at("grad_norm").get(0);
    }
    double relLoss = std::fabs(gl - cl) / std::fabs(cl), relNorm = std::fabs(gn - cn) / std::fabs(cn);
    worstLoss = std::max(worstLoss, relLoss);
    worstNorm = std::max(worstNorm, relNorm);
    std::printf("  step %2d  loss cpu %.7f gpu %.7f (rel %.1e)  grad norm cpu %.6f gpu %.6f (rel %.1e)\n",
                step, cl, gl, relLoss, cn, gn, relNorm);
    EXPECT_LE(relLoss, tolerance) << "step " << step;
    EXPECT_LE(relNorm, tolerance) << "step " << step;
  }
  std::printf("  %s: worst relative difference: loss %.2e, grad norm %.2e (limit %.0e)\n",
              precision.c_str(), worstLoss, worstNorm, tolerance);

  // The validation function and the parameters after training.
  cpu::HostTensor tokens = randomTokens(rng, B, T, V), targets = randomTokens(rng, B, T, V);
  auto want = cpuBackend.run("forward", {{"tokens", tokens}, {"targets", targets}});
  auto got = gpuBackend.run("forward", {{"tokens", tokens}, {"targets", targets}});
  ASSERT_TRUE(want && got);
  EXPECT_NEAR(got->at("loss").get(0), want->at("loss").get(0), tolerance * want->at("loss").get(0));
  auto cpuParams = cpuBackend.params();
  auto gpuParams = gpuBackend.params();
  ASSERT_TRUE(cpuParams && gpuParams);
  ASSERT_EQ(cpuParams->size(), gpuParams->size());
  std::map<std::string, cpu::HostTensor> onGpu(gpuParams->begin(), gpuParams->end());
  for (const auto &[name, w] : *cpuParams) {
    ASSERT_TRUE(onGpu.count(name)) << name;
    Difference d = compare(onGpu[name], w, paramTolerance, paramTolerance);
    EXPECT_EQ(d.worst, -1) << name << ": element " << d.worst << " is " << d.worstGot
                           << " on the GPU, " << d.worstWant << " on the CPU";
  }
}

TEST(CudaTraining, SmallGptMatchesCpuFor20Steps) {
  KILN_REQUIRE_GPU();
  compareCpuAndGpu("f32", 1e-4, 1e-3);
}

// The mixture of experts: routing, the gathers and their scatter-add
// backward, batched expert GEMMs. A score that differs in its last bit
// moves a choice only when two experts' scores are that close; with this
// seed's 5,120 choices (2 layers × 128 tokens × 2 × 20 steps) none is.
TEST(CudaTraining, SmallMoEMatchesCpuFor20Steps) {
  KILN_REQUIRE_GPU();
  compareCpuAndGpu("f32", 1e-4, 1e-3, /*experts=*/4);
}

// Llama's blocks with SwiGLU experts (Mixtral's shape).
TEST(CudaTraining, SmallLlamaMoEMatchesCpuFor20Steps) {
  KILN_REQUIRE_GPU();
  compareCpuAndGpu("f32", 1e-4, 1e-3, /*experts=*/4, /*llama=*/true);
}

// bf16 rounds to 8 significant bits: a GEMM that accumulates in another
// order can round an element one bf16 ulp (0.4 %) differently, and the
// runs drift apart slowly. 20 steps stay within 2e-2 of the CPU's
// emulation.
TEST(CudaTraining, SmallGptBf16MatchesCpuEmulation) {
  KILN_REQUIRE_GPU();
  compareCpuAndGpu("bf16-mixed", 2e-2, 5e-2);
}

// Gradient accumulation (K = 2) in bf16: @accumulate_step reads the
// parameters' working copies that @apply_step's AdamW writes.
TEST(CudaTraining, SmallGptBf16WithAccumulationMatchesCpuEmulation) {
  KILN_REQUIRE_GPU();
  compareCpuAndGpu("bf16-mixed", 2e-2, 5e-2, /*experts=*/0, /*llama=*/false, /*accumulate=*/2);
}

TEST(CudaTraining, StateRoundTripsThroughTheDevice) {
  KILN_REQUIRE_GPU();
  auto config = RunConfig::parse(kSmallGPT, "small-gpt");
  ASSERT_TRUE(static_cast<bool>(config));
  mlir::MLIRContext ctx;
  auto module = tooling::buildTrainingModule(ctx, *config);
  ASSERT_TRUE(static_cast<bool>(module));
  auto gpu = tooling::makeBackend("cuda", nullptr);
  ASSERT_TRUE(static_cast<bool>(gpu));
  ASSERT_FALSE(static_cast<bool>((*gpu)->load(**module, 3)));
  auto params = (*gpu)->params();
  ASSERT_TRUE(static_cast<bool>(params));
  // Write changed values, read them back unchanged.
  NamedTensors changed;
  for (auto &[name, t] : *params) {
    cpu::HostTensor c = t.clone();
    for (int64_t i = 0; i < c.numel(); ++i)
      c.set(i, 0.5 * c.get(i) + 0.25);
    changed.push_back({name, c});
  }
  ASSERT_FALSE(static_cast<bool>((*gpu)->setState(changed)));
  auto back = (*gpu)->params();
  ASSERT_TRUE(static_cast<bool>(back));
  std::map<std::string, cpu::HostTensor> read(back->begin(), back->end());
  for (const auto &[name, t] : changed)
    EXPECT_EQ(compare(read[name], t, 0, 0).worst, -1) << name;
  // A tensor of the wrong shape is refused by name.
  NamedTensors wrong{{changed[0].first, cpu::HostTensor(cpu::DType::F32, {3})}};
  llvm::Error err = (*gpu)->setState(wrong);
  ASSERT_TRUE(static_cast<bool>(err));
  EXPECT_NE(llvm::toString(std::move(err)).find(changed[0].first), std::string::npos);
}

} // namespace
} // namespace kiln::test
