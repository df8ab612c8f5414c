//===- MoETest.cpp - the mixture-of-experts router, layer and gradient ----===//
//
//   - kiln.moe_route's CPU kernel against choices, slots and drops worked
//     out by hand (ties, a NaN score, full experts);
//   - nn::MoE's outputs (y, the balance loss, the dropped share) in f64 on
//     the interpreter against a direct C++ computation of the same formulas
//     (softmax and sigmoid gating, top-1 and top-2, GELU and SwiGLU
//     experts; tolerance 1e-12);
//   - GPT-2 (GELU experts) and Llama (SwiGLU experts) with moe.experts:
//     kiln-autodiff's gradient of the loss (language model + balance loss)
//     against f64 central differences (GradCheck.h's measure, 1e-6),
//     router included;
//   - the step's outputs: loss = lm_loss + weight · moe_balance.
//
//===----------------------------------------------------------------------===//

#include "frontend/NN.h"
#include "models/Model.h"
#include "runtime/ParamInit.h"
#include "runtime/cpu/Collectives.h"
#include "runtime/cpu/Interpreter.h"
#include "runtime/cpu/Kernels.h"
#include "tests/unit/TestSupport.h"
#include "train/Compile.h"
#include "tools/support/GradCheck.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/FormatVariadic.h"
#include "gtest/gtest.h"

#include <algorithm>
#include <cmath>
#include <numeric>

using namespace kiln;

namespace {

cpu::HostTensor fromRows(cpu::DType dtype, std::vector<int64_t> shape, std::vector<double> values) {
  cpu::HostTensor t(dtype, std::move(shape));
  for (size_t i = 0; i < values.size(); ++i)
    t.set(static_cast<int64_t>(i), values[i]);
  return t;
}

std::vector<double> valuesOf(const cpu::HostTensor &t) {
  std::vector<double> v(static_cast<size_t>(t.numel()));
  for (int64_t i = 0; i < t.numel(); ++i)
    v[static_cast<size_t>(i)] = t.get(i);
  return v;
}

TEST(MoE, RouteFillsSlotsInGShardOrder) {
  const double nan = std::nan("");
  // Six tokens, three experts, two choices each, two slots per expert.
  cpu::HostTensor probs = fromRows(cpu::DType::F32, {6, 3},
                                   {0.5, 0.3, 0.2,   // 0 then 1
                                    0.1, 0.6, 0.3,   // 1 then 2
                                    0.4, 0.4, 0.2,   // a tie: 0 (lower index) then 1
                                    0.7, 0.2, 0.1,   // 0 then 1
                                    nan, 0.2, 0.3,   // a NaN ranks last: 2 then 1
                                    0.2, 0.2, 0.6}); // 2 then the tie's lower index, 0
  auto [expert, slot, token] = cpu::kernels::moeRoute(probs, 2, 2, cpu::DType::I32);
  EXPECT_EQ(valuesOf(expert), (std::vector<double>{0, 1, 1, 2, 0, 1, 0, 1, 2, 1, 2, 0}));
  // First choices in token order: expert 0 takes tokens 0 and 2 (token 3's
  // first choice finds it full), expert 1 token 1, expert 2 tokens 4 and 5.
  // Second choices: only token 0's finds room (expert 1's second slot).
  // Slot 6 = E·capacity: dropped.
  EXPECT_EQ(valuesOf(slot), (std::vector<double>{0, 3, 2, 6, 1, 6, 6, 6, 4, 6, 5, 6}));
  EXPECT_EQ(valuesOf(token), (std::vector<double>{0, 2, 1, 0, 4, 5}));

  // Room for everything: no choice dropped, empty slots hold N = 6.
  auto [expert2, slot2, token2] = cpu::kernels::moeRoute(probs, 1, 4, cpu::DType::I64);
  EXPECT_EQ(valuesOf(expert2), (std::vector<double>{0, 1, 0, 0, 2, 2}));
  EXPECT_EQ(valuesOf(slot2), (std::vector<double>{0, 4, 1, 2, 8, 9}));
  EXPECT_EQ(valuesOf(token2), (std::vector<double>{0, 2, 3, 6, 1, 6, 6, 6, 4, 5, 6, 6}));
}

// Scores [g, N, E]: each group routed on its own, as if alone, with slots
// and tokens counted within the group.
TEST(MoE, GroupsAreRoutedOnTheirOwn) {
  Rng rng(11);
  const int64_t G = 3, N = 7, E = 4, K = 2, cap = 3;
  cpu::HostTensor probs(cpu::DType::F32, {G, N, E});
  for (int64_t i = 0; i < probs.numel(); ++i)
    probs.set(i, rng.uniform());
  auto [expert, slot, token] = cpu::kernels::moeRoute(probs, K, cap, cpu::DType::I32);
  EXPECT_EQ(expert.shape(), (std::vector<int64_t>{G, N, K}));
  EXPECT_EQ(token.shape(), (std::vector<int64_t>{G, E * cap}));
  for (int64_t g = 0; g < G; ++g) {
    cpu::HostTensor one = cpu::partOf(probs, 0, g, G).reshaped({N, E});
    auto [e1, s1, t1] = cpu::kernels::moeRoute(one, K, cap, cpu::DType::I32);
    EXPECT_EQ(valuesOf(cpu::partOf(expert, 0, g, G)), valuesOf(e1)) << "group " << g;
    EXPECT_EQ(valuesOf(cpu::partOf(slot, 0, g, G)), valuesOf(s1)) << "group " << g;
    EXPECT_EQ(valuesOf(cpu::partOf(token, 0, g, G)), valuesOf(t1)) << "group " << g;
  }
}

// kiln.embedding with batch dimensions: each batch gathers from its own
// table, and embedding_grad adds into its own.
TEST(MoE, BatchedGatherReadsEachBatchsTable) {
  cpu::HostTensor table(cpu::DType::F64, {2, 3, 2}), ids(cpu::DType::I32, {2, 4});
  for (int64_t i = 0; i < table.numel(); ++i)
    table.set(i, static_cast<double>(i));
  const std::vector<double> id{2, 0, 2, 1, 1, 1, 0, 2};
  for (size_t i = 0; i < id.size(); ++i)
    ids.set(static_cast<int64_t>(i), id[i]);
  auto out = cpu::kernels::embedding(table, ids);
  ASSERT_TRUE(static_cast<bool>(out)) << llvm::toString(out.takeError());
  EXPECT_EQ(out->shape(), (std::vector<int64_t>{2, 4, 2}));
  // Batch 0 reads rows 2, 0, 2, 1 of table 0; batch 1 rows 1, 1, 0, 2 of
  // table 1 (elements 6 … 11).
  EXPECT_EQ(valuesOf(*out), (std::vector<double>{4, 5, 0, 1, 4, 5, 2, 3, 8, 9, 8, 9, 6, 7, 10, 11}));
  cpu::HostTensor dy(cpu::DType::F64, {2, 4, 2});
  for (int64_t i = 0; i < dy.numel(); ++i)
    dy.set(i, 1.0 + static_cast<double>(i));
  auto grad = cpu::kernels::embeddingGrad(ids, dy, {2, 3, 2});
  ASSERT_TRUE(static_cast<bool>(grad)) << llvm::toString(grad.takeError());
  // Table 0: row 0 from id #1 (3, 4), row 1 from #3 (7, 8), row 2 from #0
  // and #2 (1+5, 2+6); table 1: row 0 from #6, row 1 from #4 and #5, row 2
  // from #7.
  EXPECT_EQ(valuesOf(*grad), (std::vector<double>{3, 4, 7, 8, 6, 8, 13, 14, 9 + 11, 10 + 12, 15, 16}));
  cpu::HostTensor bad = ids;
  bad.set(5, 3);
  EXPECT_FALSE(static_cast<bool>(cpu::kernels::embedding(table, bad)));
}

/// nn::MoE as a function x [B, T, C] -> (y, balance, dropped).
struct LayerFixture {
  std::unique_ptr<mlir::MLIRContext> ctx = test::makeContext();
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::vector<cpu::HostTensor> params;
  int64_t B = 2, T = 5, C = 4, H = 6, E = 3;

  mlir::func::FuncOp build(int64_t topK, int64_t capacity, llvm::StringRef gating,
                           frontend::nn::MoE::Expert kind, int64_t groups = 1) {
    module = mlir::ModuleOp::create(mlir::UnknownLoc::get(ctx.get()));
    frontend::Graph g(*module, "moe");
    g.setFloatType(mlir::Float64Type::get(ctx.get()));
    frontend::nn::MoE moe(g, "moe", C, H, E, topK, capacity, gating, ParamInit::normal(0.7),
                          ParamInit::normal(0.5), kind, groups);
    frontend::Tensor x = g.input("x", {B, T, C}, g.floatType());
    frontend::nn::MoE::Output out = moe(x);
    auto func = g.finish({out.y, out.balance, out.dropped});
    EXPECT_TRUE(succeeded(func)) << (g.errors().empty() ? "" : g.errors().front());
    if (failed(func))
      return {};
    auto infos = paramsOf(*func);
    EXPECT_TRUE(static_cast<bool>(infos));
    auto values = initParams(*infos, 5);
    EXPECT_TRUE(static_cast<bool>(values));
    params = *values;
    return *func;
  }
};

/// The layer by hand: the formulas of nn::MoE's comment, in doubles.
struct Reference {
  std::vector<double> y;
  double balance = 0, dropped = 0;
};

Reference moeByHand(const std::vector<double> &x, const std::vector<cpu::HostTensor> &p, int64_t N,
                    int64_t C, int64_t H, int64_t E, int64_t K, int64_t cap, bool sigmoidGating,
                    bool swiglu, int64_t groups) {
  // GELU MLP: router, fc.w, fc.b, proj.w, proj.b; SwiGLU: router, gate.w,
  // up.w, down.w (the constructor's order).
  const cpu::HostTensor &router = p[0], &fcW = p[1], &fcB = p[2], &projW = p[3];
  const cpu::HostTensor *projB = swiglu ? nullptr : &p[4];
  std::vector<double> scores(N * E);
  for (int64_t n = 0; n < N; ++n) {
    double mx = -INFINITY;
    for (int64_t e = 0; e < E; ++e) {
      double l = 0;
      for (int64_t c = 0; c < C; ++c)
        l += x[n * C + c] * router.get(c * E + e);
      scores[n * E + e] = l;
      mx = std::max(mx, l);
    }
    double z = 0;
    for (int64_t e = 0; e < E; ++e)
      z += std::exp(scores[n * E + e] - mx);
    for (int64_t e = 0; e < E; ++e) {
      double l = scores[n * E + e];
      scores[n * E + e] = sigmoidGating ? 1.0 / (1.0 + std::exp(-l)) : std::exp(l - mx) / z;
    }
  }
  // Choices by score (no ties in random data), slots in GShard's order.
  std::vector<int64_t> expert(N * K), slot(N * K);
  for (int64_t n = 0; n < N; ++n) {
    std::vector<int64_t> order(E);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return scores[n * E + a] > scores[n * E + b]; });
    for (int64_t j = 0; j < K; ++j)
      expert[n * K + j] = order[j];
  }
  // Each group of N / groups consecutive tokens fills its own slots.
  Reference r;
  const int64_t perGroup = N / groups;
  for (int64_t g = 0; g < groups; ++g) {
    std::vector<int64_t> filled(E, 0);
    for (int64_t j = 0; j < K; ++j)
      for (int64_t n = g * perGroup; n < (g + 1) * perGroup; ++n) {
        int64_t e = expert[n * K + j];
        slot[n * K + j] = filled[e] < cap ? filled[e]++ : -1;
        r.dropped += slot[n * K + j] < 0;
      }
  }
  r.dropped /= static_cast<double>(N * K);
  auto expertMlp = [&](int64_t e, const double *in, double *out) {
    std::vector<double> h(H);
    for (int64_t k = 0; k < H; ++k) {
      if (swiglu) { // down(silu(x·gate) ∘ (x·up)): p[1] gate, p[2] up
        double a = 0, u = 0;
        for (int64_t c = 0; c < C; ++c) {
          a += in[c] * fcW.get((e * C + c) * H + k);
          u += in[c] * fcB.get((e * C + c) * H + k);
        }
        h[k] = a / (1 + std::exp(-a)) * u;
        continue;
      }
      double a = fcB.get(e * H + k);
      for (int64_t c = 0; c < C; ++c)
        a += in[c] * fcW.get((e * C + c) * H + k);
      // GELU, tanh form.
      h[k] = 0.5 * a * (1 + std::tanh(std::sqrt(2 / M_PI) * (a + 0.044715 * a * a * a)));
    }
    for (int64_t c = 0; c < C; ++c) {
      double o = projB ? projB->get(e * C + c) : 0.0;
      for (int64_t k = 0; k < H; ++k)
        o += h[k] * projW.get((e * H + k) * C + c);
      out[c] = o;
    }
  };
  r.y.assign(N * C, 0.0);
  for (int64_t n = 0; n < N; ++n) {
    double gateSum = 0;
    for (int64_t j = 0; j < K; ++j)
      gateSum += scores[n * E + expert[n * K + j]];
    for (int64_t j = 0; j < K; ++j) {
      if (slot[n * K + j] < 0)
        continue;
      double gate = scores[n * E + expert[n * K + j]] / (K > 1 ? gateSum : 1.0);
      std::vector<double> out(C);
      expertMlp(expert[n * K + j], &x[n * C], out.data());
      for (int64_t c = 0; c < C; ++c)
        r.y[n * C + c] += gate * out[c];
    }
  }
  // E · Σ_e (share of first choices) · (mean score, normalized per token
  // for sigmoid gating).
  for (int64_t e = 0; e < E; ++e) {
    double share = 0, meanScore = 0;
    for (int64_t n = 0; n < N; ++n) {
      share += expert[n * K] == e;
      double rowSum = 0;
      for (int64_t f = 0; f < E; ++f)
        rowSum += scores[n * E + f];
      meanScore += scores[n * E + e] / (sigmoidGating ? rowSum : 1.0);
    }
    r.balance += (share / N) * (meanScore / N);
  }
  r.balance *= static_cast<double>(E);
  return r;
}

TEST(MoE, LayerIsTheFormulaByHand) {
  using Expert = frontend::nn::MoE::Expert;
  struct Variant {
    int64_t topK, capacity;
    const char *gating;
    Expert kind;
    int64_t groups = 1;
  };
  // 10 tokens over 3 experts: 4 slots each drop some second choices, 10
  // drop none; in 2 groups of 5, 2 slots a group drop some.
  for (Variant v : {Variant{2, 4, "softmax", Expert::GeluMlp}, Variant{1, 4, "softmax", Expert::GeluMlp},
                    Variant{2, 10, "sigmoid", Expert::GeluMlp}, Variant{1, 3, "sigmoid", Expert::GeluMlp},
                    Variant{2, 4, "softmax", Expert::SwiGLU}, Variant{1, 10, "sigmoid", Expert::SwiGLU},
                    Variant{2, 2, "softmax", Expert::GeluMlp, 2},
                    Variant{2, 2, "sigmoid", Expert::SwiGLU, 2}}) {
    const bool swiglu = v.kind == Expert::SwiGLU;
    SCOPED_TRACE(llvm::formatv("top_k {0}, capacity {1}, {2}, {3}, {4} groups", v.topK, v.capacity,
                               v.gating, swiglu ? "SwiGLU" : "GELU MLP", v.groups)
                     .str());
    LayerFixture f;
    mlir::func::FuncOp func = f.build(v.topK, v.capacity, v.gating, v.kind, v.groups);
    ASSERT_TRUE(func);
    const int64_t N = f.B * f.T;
    cpu::HostTensor x(cpu::DType::F64, {f.B, f.T, f.C});
    Rng rng(3);
    for (int64_t i = 0; i < x.numel(); ++i)
      x.set(i, rng.normal());
    std::vector<cpu::HostTensor> args = f.params;
    args.push_back(x);
    auto interp = cpu::Interpreter::create(func);
    ASSERT_TRUE(static_cast<bool>(interp));
    auto out = (*interp)->run(args);
    ASSERT_TRUE(static_cast<bool>(out)) << llvm::toString(out.takeError());
    ASSERT_EQ(f.params.size(), swiglu ? 4u : 5u);
    Reference r = moeByHand(valuesOf(x), f.params, N, f.C, f.H, f.E, v.topK, v.capacity,
                            llvm::StringRef(v.gating) == "sigmoid", swiglu, v.groups);
    for (int64_t i = 0; i < N * f.C; ++i)
      EXPECT_NEAR((*out)[0].get(i), r.y[i], 1e-12 * std::max(1.0, std::abs(r.y[i]))) << "y " << i;
    EXPECT_NEAR((*out)[1].get(0), r.balance, 1e-12) << "balance";
    EXPECT_NEAR((*out)[2].get(0), r.dropped, 1e-15) << "dropped";
    if ((v.capacity == 4 || v.groups > 1) && v.topK == 2) {
      EXPECT_GT(r.dropped, 0.0) << "this variant is meant to drop choices";
    }
  }
}

/// The tiny GPT-2 with four experts of top-2 per block, in f64.
struct ModelFixture {
  RunConfig config;
  mlir::MLIRContext ctx;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::vector<cpu::HostTensor> args;

  bool build(double capacityFactor, const char *configPath = KILN_SOURCE_DIR "/configs/tiny.toml",
             int64_t groups = 1) {
    auto loaded = RunConfig::loadFile(configPath);
    if (!loaded) {
      ADD_FAILURE() << llvm::toString(loaded.takeError());
      return false;
    }
    config = *loaded;
    config.model.moe.experts = 4;
    config.model.moe.top_k = 2;
    config.model.moe.capacity_factor = capacityFactor;
    config.model.moe.aux_loss_weight = 0.1;
    config.model.moe.groups = groups;
    config.train.batch_size = 2;
    auto m = tooling::buildForwardModule(ctx, config, mlir::Float64Type::get(&ctx));
    if (!m) {
      ADD_FAILURE() << llvm::toString(m.takeError());
      return false;
    }
    module = std::move(*m);
    auto values = initParams(*paramsOf(forward()), 7);
    if (!values)
      return false;
    args = *values;
    Rng rng(9);
    const int64_t B = config.train.batch_size, T = config.seqLen(), V = config.model.vocab_size;
    args.push_back(test::randomTokens(rng, B, T, V));
    args.push_back(test::randomTokens(rng, B, T, V));
    return true;
  }
  mlir::func::FuncOp forward() { return module->lookupSymbol<mlir::func::FuncOp>("forward"); }
};

TEST(MoE, StepLossIsLanguageModelPlusBalance) {
  ModelFixture f;
  ASSERT_TRUE(f.build(0.5)); // half an even share: choices are dropped
  auto interp = cpu::Interpreter::create(f.forward());
  ASSERT_TRUE(static_cast<bool>(interp));
  auto out = (*interp)->run(f.args);
  ASSERT_TRUE(static_cast<bool>(out)) << llvm::toString(out.takeError());
  ASSERT_EQ(out->size(), 4u);
  const char *names[] = {"loss", "lm_loss", "moe_balance", "moe_dropped"};
  for (int k = 0; k < 4; ++k)
    EXPECT_EQ(f.forward().getResultAttrOfType<mlir::StringAttr>(k, "kiln.output").getValue(),
              names[k]);
  double loss = (*out)[0].get(0), lm = (*out)[1].get(0), balance = (*out)[2].get(0),
         dropped = (*out)[3].get(0);
  EXPECT_NEAR(loss, lm + 0.1 * balance, 1e-12);
  // Balanced routing gives 1; E·Σ f_e·P_e lies in (0, E].
  EXPECT_GT(balance, 0.0);
  EXPECT_LE(balance, 4.0);
  // Capacity 0.5 of an even share: at least half the choices find no slot.
  EXPECT_GE(dropped, 0.5);
  EXPECT_LT(dropped, 1.0);
}

// Sampling's @logits runs dropless (every expert holds every token), so a
// prompt's logits never depend on the padding after it; the training step
// keeps the configured capacity.
TEST(MoE, SamplingIsDroplessTrainingIsNot) {
  ModelFixture f;
  ASSERT_TRUE(f.build(0.5));
  const int64_t N = f.config.train.batch_size * f.config.seqLen();
  std::vector<std::string> errors;
  ASSERT_TRUE(succeeded(models::buildModel(*f.module, f.config.model, 1, f.config.seqLen(),
                                           mlir::Float64Type::get(&f.ctx),
                                           models::GPT2Output::Logits, "logits", errors)));
  int routes = 0;
  f.module->walk([&](MoeRouteOp op) {
    ++routes;
    auto fn = op->getParentOfType<mlir::func::FuncOp>();
    if (fn.getSymName() == "logits")
      EXPECT_EQ(static_cast<int64_t>(op.getCapacity()), f.config.seqLen());
    else
      EXPECT_EQ(static_cast<int64_t>(op.getCapacity()), f.config.model.moe.capacity(N));
  });
  EXPECT_EQ(routes, 2 * static_cast<int>(f.config.model.n_layer));
  EXPECT_LT(f.config.model.moe.capacity(N), N);
}

void checkGradient(const char *configPath, llvm::StringRef expertParam, int64_t groups = 1) {
  ModelFixture f;
  ASSERT_TRUE(f.build(1.0, configPath, groups));
  tooling::GradCheckOptions options;
  options.samplesPerTensor = 6;
  auto report = tooling::gradCheck(*f.module, f.args, options);
  ASSERT_TRUE(static_cast<bool>(report)) << llvm::toString(report.takeError());
  bool sawRouter = false, sawExperts = false;
  for (const tooling::TensorGradCheck &t : *report) {
    sawRouter |= llvm::StringRef(t.name).ends_with("moe.router.w");
    sawExperts |= llvm::StringRef(t.name).ends_with(expertParam);
    EXPECT_LE(t.worstError, 1e-6) << t.name << " at " << t.worstIndex << ": analytic "
                                  << t.analytic << ", numeric " << t.numeric;
  }
  EXPECT_TRUE(sawRouter && sawExperts);
}

TEST(MoE, GradientMatchesCentralDifferences) {
  checkGradient(KILN_SOURCE_DIR "/configs/tiny.toml", "moe.experts.fc.w");
}

// Routed in groups: the batched gather and its scatter-add gradient.
TEST(MoE, GroupedGradientMatchesCentralDifferences) {
  checkGradient(KILN_SOURCE_DIR "/configs/tiny.toml", "moe.experts.fc.w", 4);
}

// Llama's blocks with SwiGLU experts (Mixtral's shape).
TEST(MoE, LlamaGradientMatchesCentralDifferences) {
  checkGradient(KILN_SOURCE_DIR "/configs/llama-tiny.toml", "moe.experts.gate.w");
}

} // namespace
