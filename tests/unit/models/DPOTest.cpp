//===- DPOTest.cpp - DPO's loss, metrics and gradient ----------------------===//
//
// model.objective = "dpo" on the tiny Llama, in f64 on the CPU interpreter:
//   - @logps (each row's summed log-probability of its targets) equals the
//     sum computed by hand from @logits;
//   - @forward's loss and metrics equal Rafailov et al.'s formula computed by
//     hand from those log-probabilities and the reference's (tolerance 1e-12
//     relative);
//   - kiln-autodiff's gradient of the DPO loss matches f64 central
//     differences (max error 1e-6, GradCheck.h's measure).
//
//===----------------------------------------------------------------------===//

#include "models/Model.h"
#include "runtime/ParamInit.h"
#include "runtime/cpu/Interpreter.h"
#include "train/Compile.h"
#include "tools/support/GradCheck.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "gtest/gtest.h"

#include <cmath>

using namespace kiln;

namespace {

struct DPOFixture {
  RunConfig config;
  mlir::MLIRContext ctx;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::vector<cpu::HostTensor> params;
  cpu::HostTensor tokens, targets, ref;
  int64_t B = 0, T = 0, V = 0;

  /// B = 4 rows (2 pairs) of the tiny Llama; every other position a
  /// prompt token (no target); the reference's log-probabilities chosen so
  /// that one pair's margin is positive and the other's negative.
  bool build() {
    auto loaded = RunConfig::loadFile(KILN_SOURCE_DIR "/configs/llama-tiny.toml");
    if (!loaded) {
      ADD_FAILURE() << llvm::toString(loaded.takeError());
      return false;
    }
    config = *loaded;
    config.model.objective = "dpo";
    config.model.dpo_beta = 0.5;
    config.train.batch_size = 4;
    B = config.train.batch_size;
    T = config.seqLen();
    V = config.model.vocab_size;
    mlir::Type f64 = mlir::Float64Type::get(&ctx);
    auto m = tooling::buildForwardModule(ctx, config, f64);
    if (!m) {
      ADD_FAILURE() << llvm::toString(m.takeError());
      return false;
    }
    module = std::move(*m);
    std::vector<std::string> errors;
    for (auto [output, name] : {std::pair{models::GPT2Output::Logits, "logits"},
                                std::pair{models::GPT2Output::LogProbs, "logps"}})
      if (failed(models::buildModel(*module, config.model, B, T, f64, output, name, errors))) {
        ADD_FAILURE() << errors.front();
        return false;
      }
    auto values = initParams(*paramsOf(forward()), 11);
    if (!values)
      return false;
    params = *values;
    tokens = cpu::HostTensor(cpu::DType::I32, {B, T});
    targets = cpu::HostTensor(cpu::DType::I32, {B, T});
    for (int64_t i = 0; i < B * T; ++i) {
      tokens.set(i, static_cast<double>((i * 7 + 3) % V));
      targets.set(i, i % 2 == 0 ? -1.0 : static_cast<double>((i * 13 + 5) % V));
    }
    ref = cpu::HostTensor(cpu::DType::F64, {B});
    return true;
  }
  mlir::func::FuncOp forward() { return module->lookupSymbol<mlir::func::FuncOp>("forward"); }
  std::vector<cpu::HostTensor> run(llvm::StringRef fn, std::vector<cpu::HostTensor> inputs) {
    std::vector<cpu::HostTensor> args = params;
    args.insert(args.end(), inputs.begin(), inputs.end());
    auto interp = cpu::Interpreter::create(module->lookupSymbol<mlir::func::FuncOp>(fn));
    EXPECT_TRUE(static_cast<bool>(interp));
    auto out = (*interp)->run(args);
    EXPECT_TRUE(static_cast<bool>(out)) << llvm::toString(out.takeError());
    return out ? *out : std::vector<cpu::HostTensor>{};
  }
};

TEST(DPO, LossAndMetricsAreTheFormulaByHand) {
  DPOFixture f;
  ASSERT_TRUE(f.build());
  // Each row's log-probability by hand from the logits.
  cpu::HostTensor logits = f.run("logits", {f.tokens})[0];
  const int64_t Vp = logits.dim(2);
  std::vector<double> byHand(f.B, 0.0);
  for (int64_t i = 0; i < f.B * f.T; ++i) {
    int64_t target = static_cast<int64_t>(f.targets.get(i));
    if (target < 0)
      continue;
    double mx = -INFINITY, z = 0;
    for (int64_t c = 0; c < f.V; ++c)
      mx = std::max(mx, logits.get(i * Vp + c));
    for (int64_t c = 0; c < f.V; ++c)
      z += std::exp(logits.get(i * Vp + c) - mx);
    byHand[i / f.T] += logits.get(i * Vp + target) - mx - std::log(z);
  }
  cpu::HostTensor logps = f.run("logps", {f.tokens, f.targets})[0];
  for (int64_t b = 0; b < f.B; ++b)
    EXPECT_NEAR(logps.get(b), byHand[b], 1e-12 * std::abs(byHand[b])) << "row " << b;

  // References: pair 0's policy gains on its chosen row (positive margin),
  // pair 1's on its rejected row (negative margin).
  const double shifts[4] = {-0.8, 0.3, 0.6, -0.9};
  for (int64_t b = 0; b < f.B; ++b)
    f.ref.set(b, byHand[b] + shifts[b]);
  auto out = f.run("forward", {f.tokens, f.targets, f.ref});
  ASSERT_EQ(out.size(), 6u);
  const double beta = f.config.model.dpo_beta;
  double loss = 0, margin = 0, accuracy = 0, chosen = 0, rejected = 0, prefers = 0;
  for (int64_t p = 0; p < f.B / 2; ++p) {
    prefers += byHand[2 * p] > byHand[2 * p + 1];
    double rc = beta * (byHand[2 * p] - f.ref.get(2 * p));
    double rr = beta * (byHand[2 * p + 1] - f.ref.get(2 * p + 1));
    double m = rc - rr;
    loss += -std::log(1.0 / (1.0 + std::exp(-m)));
    margin += m;
    accuracy += m > 0;
    chosen += rc;
    rejected += rr;
  }
  const double pairs = static_cast<double>(f.B / 2);
  const char *names[] = {"loss",          "reward_margin",   "reward_accuracy",
                         "chosen_reward", "rejected_reward", "logp_accuracy"};
  const double expected[] = {loss / pairs,   margin / pairs,   accuracy / pairs,
                             chosen / pairs, rejected / pairs, prefers / pairs};
  for (int k = 0; k < 6; ++k) {
    EXPECT_EQ(f.forward().getResultAttrOfType<mlir::StringAttr>(k, "kiln.output").getValue(),
              names[k]);
    EXPECT_NEAR(out[k].get(0), expected[k], 1e-12 * std::max(1.0, std::abs(expected[k])))
        << names[k];
  }
  EXPECT_EQ(out[2].get(0), 0.5); // one pair of two ranks chosen higher

  // Policy equal to the reference: every margin 0, the loss ln 2.
  auto same = f.run("forward", {f.tokens, f.targets, logps});
  EXPECT_NEAR(same[0].get(0), std::log(2.0), 1e-12);
  EXPECT_EQ(same[2].get(0), 0.0);
}

// A margin far past where σ underflows: softplus stays finite and exact.
TEST(DPO, LossIsFiniteForLargeMargins) {
  DPOFixture f;
  ASSERT_TRUE(f.build());
  cpu::HostTensor logps = f.run("logps", {f.tokens, f.targets})[0];
  for (double shift : {-4000.0, 4000.0}) {
    for (int64_t b = 0; b < f.B; ++b)
      f.ref.set(b, logps.get(b) + (b % 2 == 0 ? shift : 0.0));
    double loss = f.run("forward", {f.tokens, f.targets, f.ref})[0].get(0);
    // β·(−shift) is the margin of both pairs: −log σ(m) = log(1 + e^−m).
    double m = -f.config.model.dpo_beta * shift;
    double expected = m > 0 ? std::log1p(std::exp(-m)) : -m + std::log1p(std::exp(m));
    EXPECT_TRUE(std::isfinite(loss));
    EXPECT_NEAR(loss, expected, 1e-9 * std::max(1.0, expected)) << "shift " << shift;
  }
}

TEST(DPO, GradientMatchesCentralDifferences) {
  DPOFixture f;
  ASSERT_TRUE(f.build());
  cpu::HostTensor logps = f.run("logps", {f.tokens, f.targets})[0];
  const double shifts[4] = {-0.8, 0.3, 0.6, -0.9};
  for (int64_t b = 0; b < f.B; ++b)
    f.ref.set(b, logps.get(b) + shifts[b]);
  std::vector<cpu::HostTensor> args = f.params;
  args.push_back(f.tokens);
  args.push_back(f.targets);
  args.push_back(f.ref);
  tooling::GradCheckOptions options;
  options.samplesPerTensor = 8;
  auto report = tooling::gradCheck(*f.module, args, options);
  ASSERT_TRUE(static_cast<bool>(report)) << llvm::toString(report.takeError());
  ASSERT_FALSE(report->empty());
  for (const tooling::TensorGradCheck &t : *report)
    EXPECT_LE(t.worstError, 1e-6) << t.name << " at " << t.worstIndex << ": analytic "
                                  << t.analytic << ", numeric " << t.numeric;
}

} // namespace
