//===- RecomputeTest.cpp - kiln-recompute: same results, less memory -------===//
//
// Recomputing clones deterministic ops, so every result of the training
// step is bit for bit what it was (tolerance 0, on the interpreter), under
// each policy, for GPT-2 and the Llama-style model. What it buys is checked
// on the buffer plan codegen allocates (GPT-2 124M's widths): each policy
// plans a smaller arena than the one before, and a memory budget picks the
// least recomputation that fits or fails naming the smallest arena.
//
//===----------------------------------------------------------------------===//

#include "frontend/Config.h"
#include "ir/KilnOps.h"
#include "passes/Passes.h"
#include "support/Units.h"
#include "tests/unit/PassPreservation.h"
#include "tests/unit/TestSupport.h"
#include "train/Compile.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "gtest/gtest.h"

using namespace kiln;

namespace {

/// `file`'s config with `sets` applied.
RunConfig loadConfig(const char *file, llvm::ArrayRef<std::string> sets) {
  auto config = RunConfig::loadFile(std::string(KILN_SOURCE_DIR "/configs/") + file);
  EXPECT_TRUE(static_cast<bool>(config)) << llvm::toString(config.takeError());
  if (!config)
    return RunConfig();
  llvm::Error err = config->applyOverrides(sets);
  EXPECT_FALSE(static_cast<bool>(err)) << llvm::toString(std::move(err));
  return *config;
}

/// The training step of `config`, through the whole pipeline (kiln-recompute
/// as the config says), or the pipeline's error.
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>> buildStep(mlir::MLIRContext &ctx,
                                                           const RunConfig &config) {
  auto module = tooling::buildForwardModule(ctx, config, mlir::Float32Type::get(&ctx));
  if (!module)
    return module.takeError();
  auto built = tooling::runTrainingPipeline(**module, config, tooling::DumpOptions());
  if (!built)
    return built.takeError();
  return std::move(*module);
}

mlir::DictionaryAttr recomputeOf(mlir::ModuleOp module) {
  auto step = module.lookupSymbol<mlir::func::FuncOp>("train_step");
  return step ? step->getAttrOfType<mlir::DictionaryAttr>(KilnDialect::kRecomputeAttrName)
              : nullptr;
}

int64_t integer(mlir::DictionaryAttr d, llvm::StringRef key) {
  auto a = d ? d.getAs<mlir::IntegerAttr>(key) : nullptr;
  return a ? a.getInt() : -1;
}

/// The arena codegen would allocate: kiln-plan-buffers's total.
int64_t arenaOf(mlir::ModuleOp module) {
  mlir::PassManager pm(module.getContext());
  pm.addPass(createPlanBuffersPass());
  EXPECT_TRUE(mlir::succeeded(pm.run(module)));
  auto step = module.lookupSymbol<mlir::func::FuncOp>("train_step");
  auto memory = step->getAttrOfType<mlir::DictionaryAttr>(KilnDialect::kMemoryAttrName);
  return memory.getAs<mlir::IntegerAttr>("total").getInt();
}

/// Builds `file`'s step unfused and without recompute, then checks that
/// kiln-recompute under `options` changes no result and clones at least
/// `minOps` ops.
void checkPreserves(const char *file, llvm::ArrayRef<std::string> sets,
                    const std::string &precision, const std::string &options, int64_t minOps) {
  SCOPED_TRACE(std::string(file) + " " + precision + " " + options);
  RunConfig config = loadConfig(file, sets);
  config.train.precision = precision;
  config.compile.fuse = false;
  auto ctx = test::makeContext();
  auto module = buildStep(*ctx, config);
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  auto inputs = test::randomInputs(5, config.model.vocab_size);
  test::expectPassPreserves(**module, "builtin.module(kiln-recompute{" + options + "})", 0.0,
                            inputs);
  mlir::DictionaryAttr rc = recomputeOf(**module);
  ASSERT_TRUE(rc);
  EXPECT_GE(integer(rc, "ops"), minOps);
  EXPECT_EQ(integer(rc, "blocks"), config.model.n_layer);
}

TEST(Recompute, GptStepIsBitIdentical) {
  for (const char *precision : {"f32", "bf16-mixed"}) {
    // Every block's gelu and both layer norms at least.
    checkPreserves("tiny.toml", {}, precision, "policy=selective", 3 * 2);
    checkPreserves("tiny.toml", {}, precision, "policy=full", 2 * 10);
    checkPreserves("tiny.toml", {}, precision, "policy=full full-blocks=1", 10);
  }
  // Attention written with primitives (its mask and softmax), under full.
  checkPreserves("tiny.toml", {"compile.fuse_attention=never"}, "bf16-mixed", "policy=full", 20);
}

TEST(Recompute, LlamaStepIsBitIdentical) {
  checkPreserves("llama-tiny.toml", {}, "bf16-mixed", "policy=selective", 2);
  checkPreserves("llama-tiny.toml", {}, "bf16-mixed", "policy=full", 20);
}

// GPT-2 124M's widths with four blocks and a small vocabulary, bf16-mixed,
// at 8 × 512 tokens: enough that the blocks' activations, not the f32
// gradients the optimizer reads at the end, make the peak.
const std::vector<std::string> kGpt2Small = {"model.n_layer=4", "model.vocab_size=1000",
                                             "train.batch_size=8", "train.seq_len=512",
                                             "train.precision=bf16-mixed"};

int64_t arenaWith(const std::string &recompute, const std::string &budget = "") {
  RunConfig config = loadConfig("gpt2-124m.toml", kGpt2Small);
  config.train.recompute = recompute;
  config.train.memory_budget = budget;
  auto ctx = test::makeContext();
  auto module = buildStep(*ctx, config);
  EXPECT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  return module ? arenaOf(**module) : -1;
}

TEST(Recompute, EachPolicyPlansASmallerArena) {
  int64_t none = arenaWith("none"), selective = arenaWith("selective"),
          full = arenaWith("full");
  EXPECT_LT(selective, none);
  EXPECT_LT(full, selective);
  RecordProperty("arena_none", std::to_string(none));
  RecordProperty("arena_selective", std::to_string(selective));
  RecordProperty("arena_full", std::to_string(full));
}

TEST(Recompute, BudgetPicksTheLeastThatFits) {
  int64_t none = arenaWith("none"), selective = arenaWith("selective"),
          full = arenaWith("full");
  ASSERT_LT(full, selective);
  auto ctx = test::makeContext();
  auto build = [&](int64_t budget) {
    RunConfig config = loadConfig("gpt2-124m.toml", kGpt2Small);
    config.train.memory_budget = std::to_string(budget);
    return buildStep(*ctx, config);
  };
  {
    // Room for everything: nothing recomputed.
    auto module = build(none);
    ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
    EXPECT_EQ(integer(recomputeOf(**module), "ops"), 0);
    EXPECT_EQ(arenaOf(**module), none);
  }
  {
    // Between selective and full: some blocks in full, not all, and the
    // plan fits.
    auto module = build((selective + full) / 2);
    ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
    mlir::DictionaryAttr rc = recomputeOf(**module);
    const int64_t blocks = integer(rc, "blocks"), chosen = integer(rc, "full_blocks");
    EXPECT_GE(chosen, 1);
    EXPECT_LT(chosen, blocks) << "the budget was chosen to need some blocks in full, not all";
    EXPECT_LE(arenaOf(**module), (selective + full) / 2);
    EXPECT_GT(integer(rc, "flops"), 0);
    // The least that fits: full on one block fewer was planned over budget.
    auto tried = rc.getAs<mlir::ArrayAttr>("tried");
    ASSERT_TRUE(tried);
    bool fewerTried = false;
    for (mlir::Attribute t : tried) {
      auto entry = mlir::cast<mlir::DictionaryAttr>(t);
      if (integer(entry, "full_blocks") != chosen - 1 || chosen == 1)
        continue;
      fewerTried = true;
      EXPECT_GT(integer(entry, "arena"), (selective + full) / 2);
    }
    EXPECT_TRUE(fewerTried || chosen == 1);
  }
  {
    // Below the smallest plan: refused, naming it.
    auto module = build(full - 1);
    ASSERT_FALSE(static_cast<bool>(module));
    std::string message = llvm::toString(module.takeError());
    EXPECT_NE(message.find("no recomputation fits the memory budget"), std::string::npos) << message;
    EXPECT_NE(message.find("the smallest arena it can plan is"), std::string::npos) << message;
  }
}

TEST(Recompute, ByteSizes) {
  EXPECT_EQ(*parseByteSize("20GiB"), 20ll << 30);
  EXPECT_EQ(*parseByteSize("8.5 GiB"), 17ll << 29);
  EXPECT_EQ(*parseByteSize("512MiB"), 512ll << 20);
  EXPECT_EQ(*parseByteSize("8GB"), 8000000000ll);
  EXPECT_EQ(*parseByteSize("1e9"), 1000000000ll);
  EXPECT_EQ(*parseByteSize("4096"), 4096);
  for (const char *bad : {"", "GiB", "20 gigs", "-1GiB", "0", "nan"}) {
    auto parsed = parseByteSize(bad);
    EXPECT_FALSE(static_cast<bool>(parsed)) << bad;
    if (!parsed)
      llvm::consumeError(parsed.takeError());
  }
}

} // namespace
