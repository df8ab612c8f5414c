//===- PipelineTest.cpp - a pipelined step equals the unpipelined one ------===//
//
// The tiny GPT-2 (tied embeddings) and Llama (untied head) training steps in
// f64, compiled once with gradient accumulation over m micro-batches on one
// device and once cut by kiln-pipeline into pp stages (each alone, or a
// dp x tp mesh of ranks with ZeRO), run on the CPU:
// the one device runs @accumulate_step m times and @apply_step; the
// pipeline runs its stages on a ThreadMesh in the schedule's order, the
// activations and gradients crossing by kiln.send/kiln.recv. Over three
// optimizer steps (so the second and third read parameters a stage
// received from another), loss, gradient norm, every parameter and every
// optimizer state must agree within 1e-10 relative: only the order of the
// gradient norm's sums differs.
//
//===----------------------------------------------------------------------===//

#include "ir/KilnOps.h"
#include "passes/Passes.h"
#include "runtime/cpu/CpuBackend.h"
#include "runtime/cpu/Kernels.h"
#include "runtime/cpu/PipelineCpuBackend.h"
#include "runtime/dist/PipelineRankBackend.h"
#include "runtime/dist/SocketGroup.h"
#include "tests/unit/TestSupport.h"
#include "tools/support/PipelineReport.h"
#include "train/Compile.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"
#include "gtest/gtest.h"

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <thread>


using namespace mlir;
using namespace kiln;

namespace {

constexpr const char *kTiny = R"(
[model]
kind = "gpt2"
n_layer = 4
n_head = 2
n_embd = 16
vocab_size = 61
vocab_multiple = 8
block_size = 16
[train]
batch_size = 2
seq_len = 8
[optim]
grad_clip = 0.5
[compile]
fuse = false
)";

constexpr const char *kTinyLlama = R"(
[model]
kind = "llama"
n_layer = 4
n_head = 4
n_kv_head = 2
n_embd = 16
intermediate_size = 24
vocab_size = 61
vocab_multiple = 8
block_size = 16
[train]
batch_size = 2
seq_len = 8
[optim]
grad_clip = 0.5
[compile]
fuse = false
)";

/// kTiny with a mixture of experts in every block: 4 experts,
/// top-2, a capacity that drops tokens, the balance loss in the objective.
/// Each micro-batch's rows are two routing groups (one per dp rank when
/// the experts are split over dp).
const std::string kTinyMoeText = std::string(kTiny) + R"(
[moe]
experts = 4
top_k = 2
capacity_factor = 1.0
aux_loss_weight = 0.1
groups = 2
)";
const char *const kTinyMoe = kTinyMoeText.c_str();

/// kTiny with 6 blocks: 3 ranks x 2 interleaved stages.
const std::string kTinySixText = [] {
  std::string t = kTiny;
  t.replace(t.find("n_layer = 4"), 11, "n_layer = 6");
  return t;
}();
const char *const kTinySix = kTinySixText.c_str();

struct PipelineCase {
  const char *toml = kTiny;
  int64_t stages = 2, microbatches = 4;
  const char *schedule = "1f1b";
  const char *recompute = "none";
  const char *cuts = "";
  /// The partitioned step's mesh inside each stage.
  int64_t dp = 1, tp = 1, zero = 0;
  /// Experts split over dp (parallel.ep = dp) or over ep within edp x ep
  /// (ep < dp), tokens sent by all_to_all.
  int64_t ep = 1;
  /// Run each stage's whole step (kiln-pipeline-unroll), as a GPU rank
  /// does, instead of the actions one by one.
  bool unrolled = false;
  /// Interleaved 1F1B: stages a rank (the blocks cut into stages x this).
  int64_t virtualStages = 1;
  /// Rows of a micro-batch (the toml's train.batch_size).
  int64_t batch = 2;
  /// When set, each stage's blocks as kiln.pipeline lists them, stages
  /// joined by '|' ("h.0|h.1,h.2").
  const char *blocks = nullptr;
};

/// Compiles `toml` in f64 with `set` applied, or fails the test.
OwningOpRef<ModuleOp> compile(MLIRContext &ctx, const char *toml,
                              const std::function<void(RunConfig &)> &set) {
  auto config = RunConfig::parse(toml, "tiny");
  EXPECT_TRUE(static_cast<bool>(config)) << llvm::toString(config.takeError());
  if (!config)
    return nullptr;
  set(*config);
  if (auto err = config->validate("tiny")) {
    ADD_FAILURE() << llvm::toString(std::move(err));
    return nullptr;
  }
  auto module = tooling::buildForwardModule(ctx, *config, Float64Type::get(&ctx));
  EXPECT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  if (!module)
    return nullptr;
  auto dumps = tooling::runTrainingPipeline(**module, *config, {});
  EXPECT_TRUE(static_cast<bool>(dumps)) << llvm::toString(dumps.takeError());
  if (!dumps)
    return nullptr;
  return std::move(*module);
}

void expectPipelineMatches(const PipelineCase &c) {
  auto ctx = test::makeContext();
  const int64_t m = c.microbatches;
  auto one = compile(*ctx, c.toml, [&](RunConfig &r) {
    r.train.accumulate_steps = m;
    r.train.recompute = c.recompute;
  });
  auto piped = compile(*ctx, c.toml, [&](RunConfig &r) {
    r.parallel.pp = c.stages;
    r.parallel.microbatches = m;
    r.parallel.schedule = c.schedule;
    r.parallel.pipeline_cuts = c.cuts;
    r.parallel.dp = c.dp;
    r.parallel.tp = c.tp;
    r.parallel.zero = c.zero;
    r.parallel.ep = c.ep;
    r.parallel.virtual_stages = c.virtualStages;
    r.train.recompute = c.recompute;
  });
  ASSERT_TRUE(one && piped);
  if (c.blocks) {
    auto pipeline = piped->getOperation()->getAttrOfType<DictionaryAttr>("kiln.pipeline");
    ASSERT_TRUE(pipeline);
    std::string stages;
    for (Attribute b : pipeline.getAs<ArrayAttr>("blocks"))
      stages += (stages.empty() ? "" : "|") + cast<StringAttr>(b).getValue().str();
    EXPECT_EQ(stages, c.blocks);
  }
  // Interleaved: stage c's functions for every stage, one apply per rank.
  for (int64_t s = 0; s < c.stages * c.virtualStages; ++s)
    EXPECT_TRUE(piped->lookupSymbol<func::FuncOp>("stage" + std::to_string(s) + "_backward"));
  EXPECT_FALSE(piped->lookupSymbol<func::FuncOp>("stage" + std::to_string(c.stages) + "_apply"));
  ASSERT_TRUE(piped->lookupSymbol<func::FuncOp>("stage0_forward"));
  ASSERT_FALSE(piped->lookupSymbol<func::FuncOp>("accumulate_step"));
  // Activations and gradients cross the cuts by send/recv only.
  int64_t sends = 0, recvs = 0;
  piped->walk([&](Operation *op) {
    sends += isa<SendOp>(op);
    recvs += isa<RecvOp>(op);
  });
  EXPECT_GT(sends, 0);
  EXPECT_EQ(sends, recvs);

  if (c.unrolled) {
    PassManager pm(ctx.get());
    pm.addPass(createPipelineUnrollPass());
    llvm::Error err = runPasses(pm, *piped, "kiln-pipeline-unroll");
    ASSERT_FALSE(static_cast<bool>(err)) << llvm::toString(std::move(err));
    // One function per stage and step: forwards, backwards and apply in
    // the schedule's order; no saved value leaves it.
    for (int64_t s = 0; s < c.stages; ++s) {
      auto step = piped->lookupSymbol<func::FuncOp>("stage" + std::to_string(s) + "_step");
      EXPECT_FALSE(piped->lookupSymbol<func::FuncOp>("stage" + std::to_string(c.stages) + "_step"));
      ASSERT_TRUE(step);
      for (unsigned i = 0; i < step.getNumResults(); ++i)
        if (auto name = step.getResultAttrOfType<StringAttr>(i, KilnDialect::kOutputAttrName)) {
          EXPECT_FALSE(name.getValue().starts_with("saved.")) << name.getValue().str();
        }
    }
  }

  cpu::CpuBackend single;
  cpu::PipelineCpuBackend pipeline;
  pipeline.setUnrolled(c.unrolled);
  ASSERT_FALSE(static_cast<bool>(single.load(*one, 5)));
  llvm::Error loaded = pipeline.load(*piped, 5);
  ASSERT_FALSE(static_cast<bool>(loaded)) << llvm::toString(std::move(loaded));

  auto rng = std::mt19937_64(11);
  const int64_t b = c.batch, t = 8;
  for (int step = 1; step <= 3; ++step) {
    std::vector<cpu::HostTensor> tokens, targets;
    for (int64_t k = 0; k < m; ++k) {
      cpu::HostTensor x(cpu::DType::I32, {b, t}), y(cpu::DType::I32, {b, t});
      for (int64_t i = 0; i < b * t; ++i) {
        x.set(i, static_cast<double>(rng() % 61));
        y.set(i, static_cast<double>(rng() % 61));
      }
      tokens.push_back(x);
      targets.push_back(y);
    }
    double loss = 0;
    // The metrics beside the loss (a mixture's language-model loss,
    // balance loss and dropped share): the mean over the micro-batches.
    std::map<std::string, double> metrics;
    for (int64_t k = 0; k < m; ++k) {
      auto out = single.run("accumulate_step", {{"tokens", tokens[static_cast<size_t>(k)]},
                                                {"targets", targets[static_cast<size_t>(k)]}});
      ASSERT_TRUE(static_cast<bool>(out)) << llvm::toString(out.takeError());
      loss += out->at("loss").get(0) / static_cast<double>(m);
      for (auto &[name, value] : *out)
        if (name != "loss" && value.numel() == 1)
          metrics[name] += value.get(0) / static_cast<double>(m);
    }
    auto applied = single.run("apply_step", {{"lr", test::scalarTensor(1e-2)}, {"step", test::scalarTensor(step)}});
    ASSERT_TRUE(static_cast<bool>(applied)) << llvm::toString(applied.takeError());
    auto out = pipeline.run("train_step", {{"tokens", cpu::kernels::concat(tokens, 0)},
                                           {"targets", cpu::kernels::concat(targets, 0)},
                                           {"lr", test::scalarTensor(1e-2)},
                                           {"step", test::scalarTensor(step)}});
    ASSERT_TRUE(static_cast<bool>(out)) << llvm::toString(out.takeError());
    EXPECT_NEAR(out->at("loss").get(0), loss, 1e-10 * std::fabs(loss)) << "step " << step;
    double norm = applied->at("grad_norm").get(0);
    EXPECT_NEAR(out->at("grad_norm").get(0), norm, 1e-10 * norm) << "step " << step;
    if (c.toml == kTinyMoe) {
      EXPECT_TRUE(metrics.count("moe_balance") && metrics.count("moe_dropped"));
    }
    for (auto &[name, value] : metrics) {
      ASSERT_TRUE(out->count(name)) << name;
      EXPECT_NEAR(out->at(name).get(0), value, 1e-10 * std::fabs(value) + 1e-14)
          << name << ", step " << step;
    }
  }
  for (bool params : {true, false}) {
    auto want = params ? single.params() : single.optimizerStates();
    auto got = params ? pipeline.params() : pipeline.optimizerStates();
    ASSERT_TRUE(want && got);
    ASSERT_EQ(want->size(), got->size());
    for (size_t i = 0; i < want->size(); ++i) {
      ASSERT_EQ((*want)[i].first, (*got)[i].first);
      EXPECT_LE(test::worstRelative((*want)[i].second, (*got)[i].second), 1e-10) << (*want)[i].first;
    }
  }
  // Evaluation (@forward on stage 0) reads every stage's new parameters.
  cpu::HostTensor x(cpu::DType::I32, {b, t});
  for (int64_t i = 0; i < b * t; ++i)
    x.set(i, static_cast<double>(i % 61));
  auto evalWant = single.run("forward", {{"tokens", x}, {"targets", x}});
  auto evalGot = pipeline.run("forward", {{"tokens", x}, {"targets", x}});
  ASSERT_TRUE(evalWant && evalGot);
  EXPECT_LE(test::worstRelative(evalWant->begin()->second, evalGot->begin()->second), 1e-10);
}

TEST(Pipeline, TwoStagesOneFOneBEqualsAccumulation) { expectPipelineMatches({}); }
TEST(Pipeline, FourStagesOneFOneBEqualsAccumulation) {
  expectPipelineMatches({.stages = 4, .microbatches = 4});
}
TEST(Pipeline, GPipeScheduleEqualsAccumulation) {
  expectPipelineMatches({.stages = 2, .microbatches = 3, .schedule = "gpipe"});
}
TEST(Pipeline, UserCutsEqualAccumulation) {
  expectPipelineMatches({.stages = 2, .microbatches = 2, .cuts = "3", .blocks = "h.0,h.1,h.2|h.3"});
}
TEST(Pipeline, LlamaUntiedHeadEqualsAccumulation) {
  expectPipelineMatches({.toml = kTinyLlama, .stages = 4, .microbatches = 4});
}
TEST(Pipeline, StagesOfDataParallelRanksEqualAccumulation) {
  expectPipelineMatches({.stages = 2, .microbatches = 2, .dp = 2});
}
TEST(Pipeline, StagesOfZeroThreeTensorParallelRanksEqualAccumulation) {
  expectPipelineMatches({.stages = 2, .microbatches = 2, .dp = 2, .tp = 2, .zero = 3});
}
TEST(Pipeline, RecomputedBlocksEqualAccumulation) {
  expectPipelineMatches({.stages = 2, .microbatches = 4, .recompute = "full"});
}
// The whole step per stage as one function (what a GPU rank runs), with
// evaluation through every stage's @stageN_eval.
TEST(Pipeline, UnrolledStepsEqualAccumulation) {
  expectPipelineMatches({.stages = 2, .microbatches = 4, .unrolled = true});
}
TEST(Pipeline, UnrolledFourStagesEqualAccumulation) {
  expectPipelineMatches({.toml = kTinyLlama, .stages = 4, .microbatches = 5, .unrolled = true});
}
TEST(Pipeline, UnrolledGPipeEqualsAccumulation) {
  expectPipelineMatches({.stages = 4, .microbatches = 4, .schedule = "gpipe", .unrolled = true});
}
TEST(Pipeline, UnrolledStagesOfZeroThreeTensorParallelRanksEqualAccumulation) {
  expectPipelineMatches(
      {.stages = 2, .microbatches = 2, .dp = 2, .tp = 2, .zero = 3, .unrolled = true});
}

// A mixture of experts cut into stages: each stage's balance losses and
// dropped counts reach the loss on the last stage, their gradients come
// back; alone, with the experts split over each stage's dp ranks, and as
// the whole step per stage.
// Interleaved 1F1B: the 4 blocks as 4 stages on 2 ranks (stage c on rank
// c mod 2), the micro-batches in groups of 2 through each rank's stages;
// also with 8 micro-batches, Llama's untied head, and each rank a dp = 2
// mesh with ZeRO 3 or recomputation.
TEST(Pipeline, InterleavedStagesEqualAccumulation) {
  expectPipelineMatches({.virtualStages = 2});
  expectPipelineMatches({.microbatches = 8, .virtualStages = 2});
  expectPipelineMatches({.toml = kTinyLlama, .virtualStages = 2});
  expectPipelineMatches({.dp = 2, .zero = 3, .virtualStages = 2});
  expectPipelineMatches({.recompute = "full", .virtualStages = 2});
  // Stages the user cut, uneven: h.0 | h.1 | h.2, h.3 | h.4, h.5.
  expectPipelineMatches(
      {.toml = kTinySix, .cuts = "1,2,4", .virtualStages = 2, .blocks = "h.0|h.1|h.2,h.3|h.4,h.5"});
}
// As a GPU rank runs it: each rank's stages and apply unrolled into one
// @stage<r>_step, their transfers checked under NCCL's rules.
TEST(Pipeline, UnrolledInterleavedStagesEqualAccumulation) {
  expectPipelineMatches({.unrolled = true, .virtualStages = 2});
  expectPipelineMatches(
      {.microbatches = 8, .dp = 2, .zero = 3, .unrolled = true, .virtualStages = 2});
  // 3 ranks, as many micro-batches: rank 0 runs all its forwards ahead
  // (no steady state), so nothing of it is paired; pairing its last
  // forward with its first backward would deadlock.
  expectPipelineMatches(
      {.toml = kTinySix, .stages = 3, .microbatches = 3, .unrolled = true, .virtualStages = 2});
  expectPipelineMatches(
      {.toml = kTinySix, .stages = 3, .microbatches = 6, .unrolled = true, .virtualStages = 2});
}

TEST(Pipeline, MixtureOfExpertsEqualsAccumulation) {
  expectPipelineMatches({.toml = kTinyMoe, .stages = 2, .microbatches = 4});
}
TEST(Pipeline, MixtureOfExpertsOnExpertParallelStagesEqualsAccumulation) {
  expectPipelineMatches({.toml = kTinyMoe, .stages = 2, .microbatches = 2, .dp = 2, .ep = 2});
}
// Each stage an edp x ep mesh: the experts over part of the dp ranks.
TEST(Pipeline, MixtureOfExpertsOnExpertGroupsEqualsAccumulation) {
  std::string toml = kTinyMoeText;
  toml.replace(toml.find("batch_size = 2"), 14, "batch_size = 4");
  toml.replace(toml.find("groups = 2"), 10, "groups = 4");
  expectPipelineMatches(
      {.toml = toml.c_str(), .stages = 2, .microbatches = 2, .dp = 4, .ep = 2, .batch = 4});
}
TEST(Pipeline, UnrolledMixtureOfExpertsEqualsAccumulation) {
  expectPipelineMatches(
      {.toml = kTinyMoe, .stages = 4, .microbatches = 4, .dp = 2, .ep = 2, .unrolled = true});
}

/// The schedules as data: 1F1B runs p-s-1 forwards ahead and keeps at most
/// p-s micro-batches in flight on stage s; GPipe keeps all m.
TEST(Pipeline, SchedulesBoundMicroBatchesInFlight) {
  const int64_t p = 4, m = 8;
  auto oneF = pipelineSchedule("1f1b", p, m);
  auto gpipe = pipelineSchedule("gpipe", p, m);
  ASSERT_EQ(static_cast<int64_t>(oneF.size()), p);
  EXPECT_EQ(oneF[0][0], "F0");
  EXPECT_EQ(oneF[0][3], "F3");
  EXPECT_EQ(oneF[0][4], "B0");
  EXPECT_EQ(oneF[3][0], "F0");
  EXPECT_EQ(oneF[3][1], "B0");
  for (int64_t s = 0; s < p; ++s) {
    int64_t now = 0, most = 0, mostG = 0, nowG = 0;
    for (const std::string &a : oneF[static_cast<size_t>(s)])
      most = std::max(most, now += a[0] == 'F' ? 1 : -1);
    for (const std::string &a : gpipe[static_cast<size_t>(s)])
      mostG = std::max(mostG, nowG += a[0] == 'F' ? 1 : -1);
    EXPECT_EQ(most, p - s) << "stage " << s;
    EXPECT_EQ(mostG, m) << "stage " << s;
    EXPECT_EQ(static_cast<int64_t>(oneF[static_cast<size_t>(s)].size()), 2 * m);
  }
}

/// Interleaved 1F1B on 2 ranks x 2 stages, 4 micro-batches: Megatron-LM's
/// order, worked by hand from Narayanan et al. 2021 (sec. 2.2): rank r
/// runs (p-r-1)·2 + (v-1)·p forwards ahead, the micro-batches in groups
/// of p through its stages in turn (backwards through them in reverse).
TEST(Pipeline, InterleavedScheduleIsMegatrons) {
  auto s = pipelineSchedule("1f1b", 2, 4, 2);
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0], (std::vector<std::string>{"F0.0", "F1.0", "F0.2", "F1.2", "F2.0", "B0.2", "F3.0",
                                            "B1.2", "F2.2", "B0.0", "F3.2", "B1.0", "B2.2", "B3.2",
                                            "B2.0", "B3.0"}));
  EXPECT_EQ(s[1], (std::vector<std::string>{"F0.1", "F1.1", "F0.3", "B0.3", "F1.3", "B1.3", "F2.1",
                                            "B0.1", "F3.1", "B1.1", "F2.3", "B2.3", "F3.3", "B3.3",
                                            "B2.1", "B3.1"}));
  // The runtime's reading of it can run, and bounds what is in flight:
  // the first stage keeps 4 micro-batches (interleaving's price), the
  // last 1.
  auto ctx = test::makeContext();
  auto piped = compile(*ctx, kTinyLlama, [&](RunConfig &r) {
    r.parallel.pp = 2;
    r.parallel.microbatches = 4;
    r.parallel.virtual_stages = 2;
  });
  ASSERT_TRUE(piped);
  auto schedule = PipelineSchedule::of(*piped);
  ASSERT_TRUE(static_cast<bool>(schedule)) << llvm::toString(schedule.takeError());
  EXPECT_EQ(schedule->numStages(), 4);
  EXPECT_EQ(schedule->inFlight(), (std::vector<int64_t>{4, 3, 2, 1}));
  // The predicted bubble: below 1F1B's on the same ranks, and at least the
  // interleaved formula (p-1)/(v·m+p-1).
  tooling::PipelineReport r = tooling::reportPipeline(*piped);
  EXPECT_NEAR(r.formula, 1.0 / 9.0, 1e-12);
  EXPECT_GE(r.bubble, r.formula - 1e-9);
  auto plain = compile(*ctx, kTinyLlama, [&](RunConfig &c) {
    c.parallel.pp = 2;
    c.parallel.microbatches = 4;
  });
  ASSERT_TRUE(plain);
  EXPECT_LT(r.bubble, tooling::reportPipeline(*plain).bubble);
}

/// The explain report's bubble: the simulated 1F1B schedule idles at
/// least (p-1)/(m+p-1) of the stage-time (exactly that with stages of
/// equal cost; unequal ones add idle time).
TEST(Pipeline, PredictedBubbleFollowsTheFormulaForEqualStages) {
  auto ctx = test::makeContext();
  auto piped = compile(*ctx, kTinyLlama, [&](RunConfig &r) {
    r.parallel.pp = 2;
    r.parallel.microbatches = 8;
  });
  ASSERT_TRUE(piped);
  tooling::PipelineReport r = tooling::reportPipeline(*piped);
  ASSERT_EQ(r.stages, 2);
  EXPECT_NEAR(r.formula, 1.0 / 9.0, 1e-12);
  // Unequal stages only add idle time.
  EXPECT_GE(r.bubble, r.formula - 1e-9);
  EXPECT_LE(r.bubble, 0.5);
  EXPECT_EQ(r.perStage[0].inFlight, 2);
  EXPECT_EQ(r.perStage[1].inFlight, 1);
  EXPECT_GT(r.perStage[0].savedBytes, 0);
}

} // namespace

namespace {

/// A schedule from a module's attribute is checked before any stage runs:
/// one that would hang or pair a micro-batch's saved values with another's
/// gradient is refused, naming why.
TEST(Pipeline, SchedulesThatCannotRunAreRefused) {
  auto ctx = test::makeContext();
  auto of = [&](const std::string &actions) {
    auto module = test::parse(*ctx, "module attributes {kiln.pipeline = {stages = 2 : i64, "
                                    "microbatches = 2 : i64, schedule = \"1f1b\", actions = " +
                                        actions + "}} {}");
    EXPECT_TRUE(module);
    auto s = PipelineSchedule::of(*module);
    return s ? std::string("ok") : llvm::toString(s.takeError());
  };
  EXPECT_EQ(of(R"([["F0", "F1", "B0", "B1"], ["F0", "B0", "F1", "B1"]])"), "ok");
  // Stage 0 waits for B0 before its F1; stage 1 for F1 before its B0.
  EXPECT_NE(of(R"([["F0", "B0", "F1", "B1"], ["F0", "F1", "B0", "B1"]])")
                .find("the schedule cannot run: rank 0 waits forever at B0 of stage 0"),
            std::string::npos);
  // Backwards in another order: the gradients' channel would pair them
  // with the wrong micro-batch.
  EXPECT_NE(of(R"([["F0", "F1", "B1", "B0"], ["F0", "F1", "B0", "B1"]])")
                .find("stage 1 runs the backwards in another order than stage 0"),
            std::string::npos);
  EXPECT_NE(of(R"([["F0", "F1", "B0"], ["F0", "F1", "B0", "B1"]])")
                .find("must run every micro-batch's forward and backward once"),
            std::string::npos);
  EXPECT_NE(of(R"([["", "F1", "B0", "B1"], ["F0", "F1", "B0", "B1"]])").find("F<k> or B<k>"),
            std::string::npos);
  EXPECT_NE(of(R"([["F0", "F7", "B0", "B1"], ["F0", "F1", "B0", "B1"]])").find("F<k> or B<k>"),
            std::string::npos);
}

} // namespace

namespace {

/// The memory a pipelined run asks for before loading counts every rank's
/// state and the activations the schedule keeps: GPipe keeps all m
/// micro-batches per stage, 1F1B at most p, so GPipe needs more by exactly
/// the difference in kept forward results.
TEST(Pipeline, MemoryCountsTheMicroBatchesInFlight) {
  auto ctx = test::makeContext();
  auto needed = [&](const char *schedule) -> int64_t {
    auto module = compile(*ctx, kTiny, [&](RunConfig &r) {
      r.parallel.pp = 2;
      r.parallel.microbatches = 8;
      r.parallel.schedule = schedule;
    });
    EXPECT_TRUE(module);
    if (!module)
      return 0;
    cpu::PipelineCpuBackend backend;
    auto bytes = backend.memoryNeeded(*module);
    EXPECT_TRUE(static_cast<bool>(bytes));
    return bytes ? *bytes : 0;
  };
  auto report = [&]() {
    auto module = compile(*ctx, kTiny, [&](RunConfig &r) {
      r.parallel.pp = 2;
      r.parallel.microbatches = 8;
    });
    return tooling::reportPipeline(*module);
  }();
  int64_t gpipe = needed("gpipe"), oneF = needed("1f1b");
  // Stage 0 keeps 8 instead of 2, stage 1 keeps 8 instead of 1.
  EXPECT_EQ(gpipe - oneF,
            report.perStage[0].savedBytes * (8 - 2) + report.perStage[1].savedBytes * (8 - 1));
  EXPECT_GT(report.perStage[0].savedBytes, 0);
}

} // namespace

namespace {

/// A pipeline's rank processes (threads here, each with its own TCP
/// connection and context, as processes): each holds its stage's state
/// only, initialized as one device would; params() and optimizerStates()
/// give every rank the whole model, each tensor from the stage that updates
/// it, exactly; setState() keeps what the rank's stage holds.
TEST(Pipeline, RankProcessesHoldTheirStageAndGatherTheWholeModel) {
  auto ctx = test::makeContext();
  auto one = compile(*ctx, kTiny, [&](RunConfig &r) { r.train.accumulate_steps = 2; });
  ASSERT_TRUE(one);
  cpu::CpuBackend single;
  ASSERT_FALSE(static_cast<bool>(single.load(*one, 5)));
  auto wantParams = single.params();
  auto wantStates = single.optimizerStates();
  ASSERT_TRUE(wantParams && wantStates);
  // The changed whole model every rank is given.
  NamedTensors changed = *wantParams;
  for (auto &[name, t] : changed) {
    t = t.clone();
    for (int64_t i = 0; i < t.numel(); ++i)
      t.set(i, t.get(i) * 0.5 + 0.25);
  }

  const int port = test::freePort();
  std::vector<std::string> errors(2);
  std::vector<int64_t> stages(2, -1), held(2, 0);
  std::vector<NamedTensors> params(2), states(2), after(2);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < 2; ++r)
    threads.emplace_back([&, r] {
      auto fail = [&](llvm::Error err) { errors[r] = llvm::toString(std::move(err)); };
      auto mine = test::makeContext();
      auto piped = compile(*mine, kTiny, [&](RunConfig &c) {
        c.parallel.pp = 2;
        c.parallel.microbatches = 2;
      });
      if (!piped)
        return;
      auto group = dist::SocketGroup::connect({r, 2, "127.0.0.1", port, 60, ""});
      if (!group)
        return fail(group.takeError());
      auto local = std::make_unique<cpu::CpuBackend>();
      cpu::CpuBackend *stageLocal = local.get();
      auto unroll = [](ModuleOp module) {
        PassManager pm(module.getContext());
        pm.addPass(createPipelineUnrollPass());
        return runPasses(pm, module, "kiln-pipeline-unroll");
      };
      dist::PipelineRankBackend rank(**group, std::move(local), unroll, "test");
      if (llvm::Error err = rank.load(*piped, 5))
        return fail(std::move(err));
      stages[r] = rank.stage();
      held[r] = static_cast<int64_t>(stageLocal->stateSpecs().size());
      auto p = rank.params();
      auto st = rank.optimizerStates();
      if (!p || !st)
        return fail(!p ? p.takeError() : st.takeError());
      params[r] = std::move(*p);
      states[r] = std::move(*st);
      if (llvm::Error err = rank.setState(changed))
        return fail(std::move(err));
      auto again = rank.params();
      if (!again)
        return fail(again.takeError());
      after[r] = std::move(*again);
    });
  for (std::thread &t : threads)
    t.join();
  ASSERT_EQ(errors, std::vector<std::string>(2, ""));
  EXPECT_EQ(stages, (std::vector<int64_t>{0, 1}));
  // Each rank holds a part: together more than one stage's, less than
  // twice the model (the tied embedding is on both).
  const int64_t whole = static_cast<int64_t>(single.stateSpecs().size());
  EXPECT_LT(held[0], whole);
  EXPECT_LT(held[1], whole);
  for (int64_t r = 0; r < 2; ++r) {
    for (auto [got, want] : {std::pair{&params[r], &*wantParams}, {&states[r], &*wantStates},
                             {&after[r], &changed}}) {
      // By name: the order is the module's, whose functions differ.
      ASSERT_EQ(got->size(), want->size()) << "rank " << r;
      std::map<std::string, const cpu::HostTensor *> byName;
      for (const auto &[name, t] : *got)
        byName[name] = &t;
      for (const auto &[name, t] : *want) {
        ASSERT_TRUE(byName.count(name)) << "rank " << r << " lacks " << name;
        EXPECT_EQ(test::worstRelative(t, *byName[name]), 0.0) << "rank " << r << ": " << name;
      }
    }
  }
}

} // namespace
