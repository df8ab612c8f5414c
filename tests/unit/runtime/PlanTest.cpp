//===- PlanTest.cpp - buffer planning, the Plan as data, NVRTC errors -----===//

#include "tests/unit/TestSupport.h"

#include "codegen/Emitter.h"
#include "codegen/PlanBuilder.h"
#include "ir/KilnOps.h"
#include "passes/Passes.h"
#include "passes/PlanBuffersUtils.h"
#include "runtime/Plan.h"
#include "runtime/cuda/Nvrtc.h"
#include "train/Compile.h"
#include "train/Loop.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "gtest/gtest.h"

#include <map>
#include <set>

using namespace kiln;

namespace {

std::string tempDir(const char *prefix) {
  llvm::SmallString<128> dir;
  EXPECT_FALSE(llvm::sys::fs::createUniqueDirectory(prefix, dir));
  return std::string(dir);
}

mlir::OwningOpRef<mlir::ModuleOp> trainingModule(mlir::MLIRContext &ctx, const char *config,
                                                 const std::string &precision = "f32") {
  auto c = RunConfig::loadFile(std::string(KILN_SOURCE_DIR "/configs/") + config);
  EXPECT_TRUE(static_cast<bool>(c)) << llvm::toString(c.takeError());
  c->train.precision = precision;
  auto module = tooling::buildTrainingModule(ctx, *c);
  EXPECT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  return std::move(*module);
}

/// No two values alive at the same time share a byte of the arena: for
/// every function, each value with its own buffer (not a reshape's view, not
/// an update in place, not an inlined constant) is live from its op to its
/// last reader (the return: the end; AdamW's operands: the last update,
/// where the one multi-tensor launch runs), and any two whose lives meet
/// have disjoint [offset, offset + bytes).
void expectNoOverlap(mlir::ModuleOp module) {
  for (auto func : module.getOps<mlir::func::FuncOp>()) {
    mlir::Block &body = func.getBody().front();
    llvm::DenseMap<mlir::Operation *, int> index;
    int n = 0, lastAdam = -1;
    for (mlir::Operation &op : body) {
      index[&op] = n++;
      if (mlir::isa<AdamWUpdateOp>(op))
        lastAdam = index[&op];
    }
    llvm::DenseSet<int64_t> argOffsets;
    for (unsigned i = 0; i < func.getNumArguments(); ++i)
      argOffsets.insert(func.getArgAttrOfType<mlir::IntegerAttr>(i, "kiln.offset").getInt());
    struct Life {
      int64_t offset, bytes;
      int start, end;
      std::string what;
      mlir::Value value, takesOver; ///< takesOver: the dying operand (inPlaceOperand)
    };
    std::vector<Life> lives;
    // Reshape views extend the life of the buffer they view.
    llvm::DenseMap<mlir::Value, mlir::Value> root;
    for (mlir::Operation &op : body)
      if (auto r = mlir::dyn_cast<ReshapeOp>(op))
        root[r.getResult()] = root.count(r.getOperand()) ? root[r.getOperand()] : r.getOperand();
    llvm::DenseMap<mlir::Value, int> end;
    for (mlir::Operation &op : body)
      for (mlir::Value v : op.getOperands()) {
        mlir::Value r = root.count(v) ? root[v] : v;
        int at = mlir::isa<mlir::func::ReturnOp>(op) ? n : index[&op];
        if (mlir::isa<AdamWUpdateOp>(op))
          at = lastAdam;
        end[r] = std::max(end.lookup(r), at);
      }
    for (mlir::Operation &op : body) {
      auto offsets = op.getAttrOfType<mlir::DenseI64ArrayAttr>("kiln.offsets");
      if (!offsets || mlir::isa<ReshapeOp>(op) || isInlinedConstant(&op))
        continue;
      for (auto [i, r] : llvm::enumerate(op.getResults())) {
        int64_t offset = offsets[i];
        if (offset < 0 || argOffsets.contains(offset))
          continue; // no buffer, or written over its argument in place
        auto t = mlir::cast<mlir::RankedTensorType>(r.getType());
        int64_t bytes = t.getNumElements() * static_cast<int64_t>(
                                                 cpu::dtypeSize(*cpu::dtypeOf(t.getElementType())));
        std::string what;
        llvm::raw_string_ostream os(what);
        os << op.getName() << " #" << index[&op] << " result " << i;
        // A result written over an operand that dies at its op (the
        // loss's gradient over the logits) shares that op with it.
        mlir::Value takesOver;
        if (auto in = inPlaceOperand(&op); in && i == in->second) {
          mlir::Value operand = op.getOperand(in->first);
          takesOver = root.count(operand) ? root[operand] : operand;
        }
        // AdamW's one launch at the last update writes every update's
        // results, read later or not.
        int last = std::max(index[&op], end.lookup(r));
        if (mlir::isa<AdamWUpdateOp>(op))
          last = std::max(last, lastAdam);
        lives.push_back({offset, bytes, index[&op], last, what, r, takesOver});
      }
    }
    int checked = 0;
    for (size_t a = 0; a < lives.size(); ++a)
      for (size_t b = a + 1; b < lives.size(); ++b) {
        const Life &x = lives[a], &y = lives[b];
        if (x.start > y.end || y.start > x.end)
          continue;
        if ((y.takesOver == x.value && y.start == x.end) ||
            (x.takesOver == y.value && x.start == y.end))
          continue; // the hand-over at the op itself
        ++checked;
        bool disjoint = x.offset + x.bytes <= y.offset || y.offset + y.bytes <= x.offset;
        ASSERT_TRUE(disjoint) << "@" << func.getSymName().str() << ": " << x.what << " ["
                              << x.offset << ", +" << x.bytes << ") and " << y.what << " ["
                              << y.offset << ", +" << y.bytes << ") are alive together";
      }
    EXPECT_GT(checked, 0) << "@" << func.getSymName().str();
  }
}

TEST(PlanBuffers, LiveBuffersNeverOverlap) {
  for (const char *config : {"tiny.toml", "default.toml", "gpt2-124m.toml"})
    for (const char *precision : {"f32", "bf16-mixed", "f16-mixed"}) {
      SCOPED_TRACE(std::string(config) + " " + precision);
      mlir::MLIRContext ctx;
      auto module = trainingModule(ctx, config, precision);
      ASSERT_TRUE(module);
      auto plan = codegen::compileToPlan(*module, {});
      ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
      expectNoOverlap(*module);
      // The arena holds every category; the temporaries' high-water mark
      // is at least what was live at once.
      EXPECT_GE(plan->memory.scratch, plan->memory.peakLive);
      EXPECT_EQ(plan->memory.total, plan->memory.workspaceOffset + plan->memory.workspace +
                                        plan->memory.scratch);
    }
}

// The kernels' partial sums are known only once codegen has chosen every
// kernel: a workspace too small for them (here cuBLASLt's part alone) is
// planned again with what they asked for, which is then just enough.
TEST(PlanBuffers, WorkspaceGrowsToThePartialSums) {
  mlir::MLIRContext ctx;
  auto module = trainingModule(ctx, "gpt2-124m.toml", "bf16-mixed");
  ASSERT_TRUE(module);
  codegen::CodegenOptions small;
  small.workspaceBytes = PlanMemory{}.gemmWorkspace;
  auto grown = codegen::compileToPlan(*module, small);
  ASSERT_TRUE(static_cast<bool>(grown)) << llvm::toString(grown.takeError());
  expectNoOverlap(*module);
  EXPECT_GT(grown->memory.workspace, small.workspaceBytes);
  EXPECT_TRUE(llvm::any_of(grown->notes, [](const std::string &n) {
    return llvm::StringRef(n).starts_with("the workspace grew from 32 to");
  }));
  EXPECT_EQ(grown->memory.total,
            grown->memory.workspaceOffset + grown->memory.workspace + grown->memory.scratch);

  // The same kernels and steps as with the default workspace (the
  // temporaries' offsets, which some kernels embed, move by the growth).
  mlir::MLIRContext ctx2;
  auto other = trainingModule(ctx2, "gpt2-124m.toml", "bf16-mixed");
  ASSERT_TRUE(other);
  auto roomy = codegen::compileToPlan(*other, {});
  ASSERT_TRUE(static_cast<bool>(roomy)) << llvm::toString(roomy.takeError());
  EXPECT_FALSE(llvm::any_of(roomy->notes, [](const std::string &n) {
    return llvm::StringRef(n).contains("workspace grew");
  }));
  ASSERT_EQ(grown->kernels.size(), roomy->kernels.size());
  for (size_t i = 0; i < grown->kernels.size(); ++i)
    EXPECT_EQ(grown->kernels[i].name, roomy->kernels[i].name);
  ASSERT_EQ(grown->functions.size(), roomy->functions.size());
  for (size_t i = 0; i < grown->functions.size(); ++i)
    EXPECT_EQ(grown->functions[i].steps.size(), roomy->functions[i].steps.size());

  // A MiB less than the grown workspace does not hold them: buildPlan says
  // so with the size that does.
  mlir::PassManager pm(&ctx2);
  PlanBuffersPassOptions tight;
  tight.workspaceBytes = grown->memory.workspace - (1 << 20);
  pm.addPass(createPlanBuffersPass(tight));
  ASSERT_TRUE(mlir::succeeded(pm.run(*other)));
  auto refused = codegen::buildPlan(*other, {});
  ASSERT_FALSE(static_cast<bool>(refused));
  int64_t wanted = -1;
  llvm::consumeError(
      llvm::handleErrors(refused.takeError(), [&](const codegen::WorkspaceTooSmall &w) {
        EXPECT_LE(w.room, w.wanted);
        wanted = w.workspaceBytes;
      }));
  EXPECT_EQ(wanted, grown->memory.workspace);
}

// train.memory_budget is met by kiln-recompute with the default workspace;
// when codegen grows the workspace (a wide model's norm gradients: 12288
// columns over 2048 rows), a budget between the two arenas is refused,
// naming the arena that would do.
TEST(PlanBuffers, AGrownWorkspaceStillMeetsTheMemoryBudget) {
  auto wide = [](mlir::MLIRContext &ctx, const std::string &budget) {
    auto c = RunConfig::loadFile(KILN_SOURCE_DIR "/configs/gpt2-124m.toml");
    EXPECT_TRUE(static_cast<bool>(c)) << llvm::toString(c.takeError());
    c->train.precision = "bf16-mixed";
    c->model.n_layer = 1;
    c->model.n_embd = 12288;
    c->model.n_head = 96;
    c->model.block_size = 2048;
    c->train.seq_len = 2048;
    c->train.batch_size = 1;
    c->train.memory_budget = budget;
    auto module = tooling::buildTrainingModule(ctx, *c);
    EXPECT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
    return std::move(*module);
  };
  mlir::MLIRContext ctx;
  auto free = wide(ctx, "");
  ASSERT_TRUE(free);
  auto plan = codegen::compileToPlan(*free, {});
  ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
  ASSERT_GT(plan->memory.workspace, int64_t(64) << 20) << "the workspace did not grow";
  const int64_t arena = plan->memory.total;

  // The arena itself as the budget: recompute keeps everything, codegen's
  // growth fits.
  auto exact = wide(ctx, std::to_string(arena) + "B");
  ASSERT_TRUE(exact);
  auto fits = codegen::compileToPlan(*exact, {});
  ASSERT_TRUE(static_cast<bool>(fits)) << llvm::toString(fits.takeError());
  EXPECT_EQ(fits->memory.total, arena);

  // A byte less: kiln-recompute's 64 MiB-workspace arena still fits it,
  // the grown one does not.
  auto tight = wide(ctx, std::to_string(arena - 1) + "B");
  ASSERT_TRUE(tight);
  auto refused = codegen::compileToPlan(*tight, {});
  ASSERT_FALSE(static_cast<bool>(refused));
  std::string message = llvm::toString(refused.takeError());
  EXPECT_NE(message.find("set the budget to at least " + std::to_string(arena) + " bytes"),
            std::string::npos)
      << message;
}

// A column sum splits its rows over blocks (partial sums, then a final
// pass) only when the rows split: a few rows of many columns (the position
// embedding's gradient, a sum over the batch) are one launch of the general
// kernel, a thread per column, with no partial sums in the workspace.
TEST(Plan, ColumnSumsSplitOnlyWhenTheRowsDo) {
  auto ctx = test::makeContext();
  auto kernelsOf = [&](const char *text) {
    std::vector<std::string> names;
    auto module = test::parse(*ctx, text);
    EXPECT_TRUE(module);
    if (!module)
      return names;
    auto plan = codegen::compileToPlan(*module, {});
    EXPECT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
    if (!plan)
      return names;
    for (const PlanStep &step : plan->function("f")->steps)
      if (step.kernel >= 0)
        names.push_back(llvm::StringRef(plan->kernels[step.kernel].name).rsplit('_').first.str());
    return names;
  };
  EXPECT_EQ(kernelsOf(R"(
    func.func @f(%a: tensor<8x4096x2048xf32> {kiln.input = "a"}) -> tensor<4096x2048xf32> {
      %0 = kiln.reduce_sum %a, dims = [0] : tensor<8x4096x2048xf32> -> tensor<4096x2048xf32>
      return %0 : tensor<4096x2048xf32>
    })"),
            std::vector<std::string>{"reduce"});
  EXPECT_EQ(kernelsOf(R"(
    func.func @f(%a: tensor<4096x2048xf32> {kiln.input = "a"}) -> tensor<2048xf32> {
      %0 = kiln.reduce_sum %a, dims = [0] : tensor<4096x2048xf32> -> tensor<2048xf32>
      return %0 : tensor<2048xf32>
    })"),
            (std::vector<std::string>{"reduce_columns_partial", "reduce_columns_final"}));
  // Narrow rows in many batches (512 sums of 4096 rows of 2 words): the
  // columns alone make enough blocks for one chunk each, and the rows
  // still split off the general kernel (which would be 4096 threads of
  // 4096 loads each).
  EXPECT_EQ(kernelsOf(R"(
    func.func @f(%a: tensor<512x4096x8xf32> {kiln.input = "a"}) -> tensor<512x8xf32> {
      %0 = kiln.reduce_sum %a, dims = [1] : tensor<512x4096x8xf32> -> tensor<512x8xf32>
      return %0 : tensor<512x8xf32>
    })"),
            (std::vector<std::string>{"reduce_columns_partial", "reduce_columns_final"}));
}

TEST(Plan, SavesAndLoadsItself) {
  mlir::MLIRContext ctx;
  auto module = trainingModule(ctx, "tiny.toml");
  ASSERT_TRUE(module);
  auto plan = codegen::compileToPlan(*module, {});
  ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
  std::string dir = tempDir("kiln-plan");
  ASSERT_FALSE(static_cast<bool>(plan->save(dir)));
  auto loaded = Plan::load(dir);
  ASSERT_TRUE(static_cast<bool>(loaded)) << llvm::toString(loaded.takeError());
  EXPECT_EQ(llvm::formatv("{0}", loaded->toJSON()).str(), llvm::formatv("{0}", plan->toJSON()).str());
  ASSERT_EQ(loaded->kernels.size(), plan->kernels.size());
  for (size_t i = 0; i < plan->kernels.size(); ++i)
    EXPECT_EQ(loaded->kernels[i].source, plan->kernels[i].source) << plan->kernels[i].name;
  EXPECT_EQ(loaded->headers, plan->headers);
  // Three functions, each step naming its IR op.
  ASSERT_NE(loaded->function("train_step"), nullptr);
  for (const PlanStep &s : loaded->function("train_step")->steps)
    EXPECT_FALSE(s.op.empty());
  llvm::sys::fs::remove_directories(dir);

  // A saved plan that reaches outside its arena, or names a kernel file
  // outside its folder, is refused before anything runs.
  Plan bad = *plan;
  bad.functions[0].args[0].offset = bad.memory.total;
  auto out = bad.validate();
  ASSERT_TRUE(static_cast<bool>(out));
  EXPECT_NE(llvm::toString(std::move(out)).find("outside the"), std::string::npos);
  bad = *plan;
  for (PlanStep &s : bad.functions[0].steps)
    if (s.kind == PlanStep::Kind::Launch && !s.args.empty()) {
      s.args[0] = {PlanArg::Kind::Pointer, -64};
      break;
    }
  auto pointer = bad.validate();
  ASSERT_TRUE(static_cast<bool>(pointer));
  EXPECT_NE(llvm::toString(std::move(pointer)).find("reaches outside the"), std::string::npos);
  // An epilogue without the buffer cuBLASLt would write (the tiny step's
  // MLP has gelu's input as aux).
  bad = *plan;
  bool found = false;
  for (PlanFunction &f : bad.functions)
    for (PlanStep &s : f.steps)
      if (!found && s.kind == PlanStep::Kind::Gemm && s.gemm.epilogue == GemmEpilogue::GeluAux) {
        s.gemm.aux = -1;
        found = true;
      }
  ASSERT_TRUE(found) << "the tiny step has no GELU_AUX GEMM";
  auto epilogue = bad.validate();
  ASSERT_TRUE(static_cast<bool>(epilogue));
  EXPECT_NE(llvm::toString(std::move(epilogue)).find("the gelu_aux epilogue needs an aux matrix"),
            std::string::npos);
  bad = *plan;
  bad.kernels[0].name = "../../evil";
  auto name = bad.validate();
  ASSERT_TRUE(static_cast<bool>(name));
  EXPECT_NE(llvm::toString(std::move(name)).find("is not an identifier"), std::string::npos);
}

TEST(Plan, LoadErrorsNameTheProblem) {
  std::string dir = tempDir("kiln-plan-bad");
  auto missing = Plan::load(dir);
  ASSERT_FALSE(static_cast<bool>(missing));
  EXPECT_NE(llvm::toString(missing.takeError()).find("cannot read plan"), std::string::npos);
  auto write = [&](const std::string &text) {
    std::error_code ec;
    llvm::raw_fd_ostream os(dir + "/plan.json", ec);
    os << text;
  };
  write("{not json");
  auto malformed = Plan::load(dir);
  ASSERT_FALSE(static_cast<bool>(malformed));
  EXPECT_NE(llvm::toString(malformed.takeError()).find("is not valid JSON"), std::string::npos);
  write(R"({"format": "something-else"})");
  auto other = Plan::load(dir);
  ASSERT_FALSE(static_cast<bool>(other));
  EXPECT_NE(llvm::toString(other.takeError()).find("not a kiln plan"), std::string::npos);
  write(R"({"format": "kiln-plan-2", "arch": "sm_90", "sm_count": 132, "memory": {}, "functions": []})");
  auto incomplete = Plan::load(dir);
  ASSERT_FALSE(static_cast<bool>(incomplete));
  EXPECT_NE(llvm::toString(incomplete.takeError()).find("missing or malformed field"), std::string::npos);
  llvm::sys::fs::remove_directories(dir);
}

// Under bf16-mixed without kiln-fuse's working copies the step casts every
// matmul weight and bias to bf16 at its top: one multi-tensor launch does
// all of them, listing each cast. Near its end it widens the bias
// gradients the reductions summed in bf16 for the optimizer: one more.
TEST(Plan, ParameterCastsAreOneLaunch) {
  mlir::MLIRContext ctx;
  auto config = RunConfig::loadFile(KILN_SOURCE_DIR "/configs/tiny.toml");
  ASSERT_TRUE(static_cast<bool>(config)) << llvm::toString(config.takeError());
  config->train.precision = "bf16-mixed";
  config->compile.adamw_copies = false;
  auto built = tooling::buildTrainingModule(ctx, *config);
  ASSERT_TRUE(static_cast<bool>(built)) << llvm::toString(built.takeError());
  mlir::OwningOpRef<mlir::ModuleOp> module = std::move(*built);
  ASSERT_TRUE(module);
  auto plan = codegen::compileToPlan(*module, {});
  ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
  auto func = module->lookupSymbol<mlir::func::FuncOp>("train_step");
  ASSERT_TRUE(func);
  // Casts at the step's top level (not in a fusion's body) of its arguments.
  int argumentCasts = 0, otherCasts = 0;
  for (mlir::Operation &op : func.getBody().front())
    if (auto c = mlir::dyn_cast<CastOp>(op)) {
      bool ofArgument = mlir::isa<mlir::BlockArgument>(c.getOperand());
      argumentCasts += ofArgument;
      otherCasts += !ofArgument;
    }
  // kiln-group-casts marked them, the last stage of the pipeline: the
  // arguments' casts, then the bias gradients' (the fc layers', whose sums
  // are reduction kernels; the projections' the norm gradients sum in f32,
  // the qkv layers' the attention gradients' kernels, widened there).
  auto groups = codegen::castGroupsOf(func);
  ASSERT_TRUE(static_cast<bool>(groups)) << llvm::toString(groups.takeError());
  ASSERT_EQ(groups->size(), 2u);
  EXPECT_EQ(static_cast<int>((*groups)[0].size()), argumentCasts);
  EXPECT_GE(argumentCasts, 8); // 2 layers x (qkv, proj, fc, proj) weights and biases
  EXPECT_EQ((*groups)[1].size(), 2u); // 2 layers x fc
  for (mlir::Operation *op : (*groups)[1])
    EXPECT_TRUE(mlir::isa_and_nonnull<ReduceSumOp>(op->getOperand(0).getDefiningOp()))
        << codegen::Emitter::describe(op);
  const PlanFunction *step = plan->function("train_step");
  ASSERT_TRUE(step);
  int launches = 0, castSteps = 0;
  std::set<std::string> counts;
  for (const PlanStep &s : step->steps) {
    if (s.kind != PlanStep::Kind::Launch)
      continue;
    const std::string &kernel = plan->kernels[s.kernel].source;
    if (kernel.find("multi-tensor cast") != std::string::npos) {
      ++launches;
      size_t at = kernel.find("// ");
      ASSERT_NE(at, std::string::npos);
      counts.insert(kernel.substr(at, kernel.find(" kiln.cast ops", at) - at));
    }
    castSteps += s.op.rfind("kiln.cast", 0) == 0;
  }
  EXPECT_EQ(launches, 2);
  EXPECT_EQ(counts, (std::set<std::string>{"// " + std::to_string(argumentCasts), "// 2"}));
  // The groups' two steps, and the casts of values outside them.
  EXPECT_LE(castSteps, 2 + otherCasts - 2);

  // train.check_numerics names an op by the step that wrote it, so the
  // casts are not grouped then: each is its own step, scanned after it.
  (*module)->setAttr(KilnDialect::kCheckNumericsAttrName, mlir::UnitAttr::get(&ctx));
  auto checked = codegen::compileToPlan(*module, {});
  ASSERT_TRUE(static_cast<bool>(checked)) << llvm::toString(checked.takeError());
  const PlanFunction *checkedStep = checked->function("train_step");
  ASSERT_TRUE(checkedStep);
  std::set<std::string> scanned;
  for (size_t i = 0; i < checkedStep->steps.size(); ++i) {
    const PlanStep &s = checkedStep->steps[i];
    if (s.kind != PlanStep::Kind::Launch)
      continue;
    EXPECT_EQ(checked->kernels[s.kernel].source.find("multi-tensor cast"), std::string::npos);
    if (checked->kernels[s.kernel].name.rfind("check_finite_", 0) != 0)
      continue;
    const PlanStep &producer = checkedStep->steps[static_cast<size_t>(s.args[1].value)];
    if (producer.op == s.op && s.op.rfind("kiln.cast", 0) == 0)
      scanned.insert(s.op);
  }
  for (const std::vector<mlir::Operation *> &group : *groups)
    for (mlir::Operation *op : group)
      EXPECT_TRUE(scanned.count(codegen::Emitter::describe(op)))
          << codegen::Emitter::describe(op) << " is not its own step, scanned after it";
}

// With the working copies (the default), the parameters' casts are gone:
// the one AdamW launch writes each copy (its arena offset in the kernel's
// table, not -1), the Plan says so, and no cast of an argument is left (the
// one multi-tensor cast launch widens the bias gradients).
TEST(Plan, AdamWWritesTheWorkingCopies) {
  mlir::MLIRContext ctx;
  auto module = trainingModule(ctx, "tiny.toml", "bf16-mixed");
  ASSERT_TRUE(module);
  auto plan = codegen::compileToPlan(*module, {});
  ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
  auto func = module->lookupSymbol<mlir::func::FuncOp>("train_step");
  ASSERT_TRUE(func);
  std::set<int64_t> copyOffsets;
  for (unsigned i = 0; i < func.getNumArguments(); ++i)
    if (func.getArgAttr(i, KilnDialect::kCopyOfAttrName))
      copyOffsets.insert(
          func.getArgAttrOfType<mlir::IntegerAttr>(i, KilnDialect::kOffsetAttrName).getInt());
  EXPECT_GE(copyOffsets.size(), 8u);
  for (mlir::Operation &op : func.getBody().front()) {
    if (auto c = mlir::dyn_cast<CastOp>(op)) {
      EXPECT_FALSE(mlir::isa<mlir::BlockArgument>(c.getOperand()))
          << codegen::Emitter::describe(&op);
    }
  }
  const PlanFunction *step = plan->function("train_step");
  ASSERT_TRUE(step);
  int adamw = 0, castGroups = 0;
  for (const PlanStep &s : step->steps) {
    if (s.kind != PlanStep::Kind::Launch)
      continue;
    const std::string &kernel = plan->kernels[s.kernel].source;
    castGroups += kernel.find("multi-tensor cast") != std::string::npos;
    if (kernel.find("multi-tensor AdamW") == std::string::npos)
      continue;
    ++adamw;
    // Each copy is written in place over its state argument.
    for (int64_t offset : copyOffsets)
      EXPECT_NE(kernel.find(", " + std::to_string(offset) + ", "), std::string::npos)
          << "the AdamW table does not write the copy at " << offset;
  }
  EXPECT_EQ(adamw, 1);
  EXPECT_EQ(castGroups, 1);
  bool noted = llvm::any_of(plan->notes, [&](const std::string &n) {
    return n.find("AdamW writes " + std::to_string(copyOffsets.size()) +
                  " parameters' working copies") != std::string::npos;
  });
  EXPECT_TRUE(noted);
  expectNoOverlap(*module);
}

// AdamW's updates run as one launch at the last of them, which writes every
// update's results then: a result nobody reads (the moments of the GPU
// test's updates, outputs that are not returned) keeps its buffer until
// that launch rather than lending it to a later update's.
TEST(Plan, AdamWResultsLiveUntilTheLaunch) {
  auto ctx = test::makeContext();
  auto module = test::parse(*ctx, R"(
    func.func @f(%w: tensor<64xf32> {kiln.input = "w"}, %u: tensor<64xf32> {kiln.input = "u"},
                 %s: tensor<f32> {kiln.input = "s"}) -> (tensor<64xf32>, tensor<64xf32>) {
      %w2, %wm, %wv = kiln.adamw_update %w, %w, %w, %w, %s, %s, %s {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
      %u2, %um, %uv = kiln.adamw_update %u, %u, %u, %u, %s, %s, %s {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)
      return %w2, %u2 : tensor<64xf32>, tensor<64xf32>
    })");
  ASSERT_TRUE(module);
  auto plan = codegen::compileToPlan(*module, {});
  ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
  expectNoOverlap(*module);
  // Six results, six buffers.
  std::set<int64_t> offsets;
  module->walk([&](AdamWUpdateOp op) {
    for (int64_t o : op->getAttrOfType<mlir::DenseI64ArrayAttr>("kiln.offsets").asArrayRef())
      offsets.insert(o);
  });
  EXPECT_EQ(offsets.size(), 6u);
}

// A kiln.cast_group whose casts no longer follow each other (a pass moved
// ops after kiln-group-casts) is refused by codegen, naming the cast,
// rather than launched where a later op already read a cast's result.
TEST(Plan, StaleCastGroupsAreRefused) {
  auto ctx = test::makeContext();
  auto module = test::parse(*ctx, R"(
    func.func @f(%a: tensor<4xf32> {kiln.param = "a"}, %b: tensor<4xf32> {kiln.param = "b"}) -> tensor<4xbf16> {
      %0 = kiln.cast %a {kiln.cast_group = 0 : i64} : tensor<4xf32> to tensor<4xbf16>
      %1 = kiln.neg %0 : tensor<4xbf16>
      %2 = kiln.cast %b {kiln.cast_group = 0 : i64} : tensor<4xf32> to tensor<4xbf16>
      %3 = kiln.add %1, %2 : tensor<4xbf16>
      return %3 : tensor<4xbf16>
    })");
  ASSERT_TRUE(module);
  auto plan = codegen::compileToPlan(*module, {});
  ASSERT_FALSE(static_cast<bool>(plan));
  std::string e = llvm::toString(plan.takeError());
  EXPECT_NE(e.find("has kiln.cast_group 0 but the group's casts do not follow each other"),
            std::string::npos)
      << e;

  // The same casts side by side are one launch.
  auto ok = test::parse(*ctx, R"(
    func.func @f(%a: tensor<4xf32> {kiln.param = "a"}, %b: tensor<4xf32> {kiln.param = "b"}) -> tensor<4xbf16> {
      %0 = kiln.cast %a {kiln.cast_group = 0 : i64} : tensor<4xf32> to tensor<4xbf16>
      %2 = kiln.cast %b {kiln.cast_group = 0 : i64} : tensor<4xf32> to tensor<4xbf16>
      %1 = kiln.neg %0 : tensor<4xbf16>
      %3 = kiln.add %1, %2 : tensor<4xbf16>
      return %3 : tensor<4xbf16>
    })");
  ASSERT_TRUE(ok);
  auto good = codegen::compileToPlan(*ok, {});
  ASSERT_TRUE(static_cast<bool>(good)) << llvm::toString(good.takeError());
  int castSteps = 0;
  for (const PlanStep &step : good->function("f")->steps)
    castSteps += step.op.rfind("kiln.cast", 0) == 0;
  EXPECT_EQ(castSteps, 1);

  // Marks kiln-group-casts would not have made, each refused with its
  // reason: a member reading an earlier member's result (one launch writes
  // both at once, so it would read it unwritten), and a cast nobody reads
  // (planned a buffer only for its own op, which the next member could
  // share while the launch writes both).
  for (auto [text, why] :
       {std::pair<const char *, const char *>{R"(
    func.func @f(%a: tensor<4xbf16> {kiln.input = "a"}) -> tensor<4xbf16> {
      %0 = kiln.exp %a : tensor<4xbf16>
      %1 = kiln.cast %0 {kiln.cast_group = 0 : i64} : tensor<4xbf16> to tensor<4xbf16>
      %2 = kiln.cast %1 {kiln.cast_group = 0 : i64} : tensor<4xbf16> to tensor<4xbf16>
      %3 = kiln.add %1, %2 : tensor<4xbf16>
      return %3 : tensor<4xbf16>
    })",
                                              "reads an earlier member's result"},
        {R"(
    func.func @f(%a: tensor<4xf32> {kiln.param = "a"}, %b: tensor<4xf32> {kiln.param = "b"}) -> tensor<4xbf16> {
      %0 = kiln.cast %a {kiln.cast_group = 0 : i64} : tensor<4xf32> to tensor<4xbf16>
      %1 = kiln.cast %b {kiln.cast_group = 0 : i64} : tensor<4xf32> to tensor<4xbf16>
      %2 = kiln.neg %0 : tensor<4xbf16>
      return %2 : tensor<4xbf16>
    })",
         "is not read"}}) {
    auto bad = test::parse(*ctx, text);
    ASSERT_TRUE(bad);
    auto refused = codegen::compileToPlan(*bad, {});
    ASSERT_FALSE(static_cast<bool>(refused)) << text;
    std::string message = llvm::toString(refused.takeError());
    EXPECT_NE(message.find(why), std::string::npos) << message;
  }
}

// train.check_numerics: after every op's last step, one scan per float
// result, pointing back at that step; the flag words sit in the workspace,
// survive a save and load, and a plan whose words leave the arena is
// refused. Without the attribute, no scan at all.
TEST(Plan, CheckNumericsScansEveryOpsResultsAfterIt) {
  mlir::MLIRContext ctx;
  auto module = trainingModule(ctx, "tiny.toml");
  ASSERT_TRUE(module);
  auto plain = codegen::compileToPlan(*module, {});
  ASSERT_TRUE(static_cast<bool>(plain)) << llvm::toString(plain.takeError());
  EXPECT_EQ(plain->memory.numericsFlag, -1);
  (*module)->setAttr(KilnDialect::kCheckNumericsAttrName, mlir::UnitAttr::get(&ctx));
  auto plan = codegen::compileToPlan(*module, {});
  ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
  ASSERT_GE(plan->memory.numericsFlag, 0);
  EXPECT_EQ(plan->memory.numericsFlag, plan->memory.errorFlag + 8);
  const PlanFunction *step = plan->function("train_step");
  ASSERT_TRUE(step);
  int checks = 0;
  for (size_t i = 0; i < step->steps.size(); ++i) {
    const PlanStep &s = step->steps[i];
    if (s.kind != PlanStep::Kind::Launch ||
        plan->kernels[s.kernel].name.rfind("check_finite_", 0) != 0)
      continue;
    ++checks;
    ASSERT_EQ(s.args.size(), 4u);
    size_t producer = static_cast<size_t>(s.args[1].value);
    ASSERT_LT(producer, i);
    // The producer is the same op's last step, and only scans follow it.
    EXPECT_EQ(step->steps[producer].op, s.op);
    for (size_t j = producer + 1; j < i; ++j)
      EXPECT_EQ(plan->kernels[step->steps[j].kernel].name.rfind("check_finite_", 0), 0u);
    EXPECT_EQ(s.args[3].value, plan->memory.numericsFlag);
  }
  EXPECT_GT(checks, static_cast<int>(plain->function("train_step")->steps.size()) / 2);

  std::string dir = tempDir("kiln-plan-check");
  ASSERT_FALSE(static_cast<bool>(plan->save(dir)));
  auto loaded = Plan::load(dir);
  ASSERT_TRUE(static_cast<bool>(loaded)) << llvm::toString(loaded.takeError());
  EXPECT_EQ(loaded->memory.numericsFlag, plan->memory.numericsFlag);
  llvm::sys::fs::remove_directories(dir);
  Plan bad = *plan;
  bad.memory.numericsFlag = bad.memory.total - 4;
  auto outside = bad.validate();
  ASSERT_TRUE(static_cast<bool>(outside));
  EXPECT_NE(llvm::toString(std::move(outside)).find("a flag word at"), std::string::npos);
}

// train.deterministic: the embedding's gradient and the flash backward sum
// in a fixed order, the plan says so (and keeps saying so when saved), and
// the reference attention backward, which adds with atomics, is refused
// with the reason rather than run out of order.
TEST(Plan, DeterministicOrdersTheSumsAndRefusesTheAtomicAttention) {
  mlir::MLIRContext ctx;
  auto module = trainingModule(ctx, "tiny.toml");
  ASSERT_TRUE(module);
  auto sources = [](const Plan &plan) {
    std::string all;
    for (const PlanKernel &k : plan.kernels)
      all += k.source;
    return all;
  };
  auto plain = codegen::compileToPlan(*module, {});
  ASSERT_TRUE(static_cast<bool>(plain)) << llvm::toString(plain.takeError());
  EXPECT_FALSE(plain->deterministic);
  EXPECT_NE(sources(*plain).find("kiln::embeddingBackward<"), std::string::npos);
  (*module)->setAttr(KilnDialect::kDeterministicAttrName, mlir::UnitAttr::get(&ctx));
  auto plan = codegen::compileToPlan(*module, {});
  ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
  EXPECT_TRUE(plan->deterministic);
  EXPECT_EQ(sources(*plan).find("kiln::embeddingBackward<"), std::string::npos);
  EXPECT_NE(sources(*plan).find("kiln::embeddingBackwardOrdered<"), std::string::npos);
  EXPECT_TRUE(llvm::any_of(plan->notes, [](const std::string &n) {
    return n.find("train.deterministic") != std::string::npos;
  }));
  std::string dir = tempDir("kiln-plan-deterministic");
  ASSERT_FALSE(static_cast<bool>(plan->save(dir)));
  auto loaded = Plan::load(dir);
  ASSERT_TRUE(static_cast<bool>(loaded)) << llvm::toString(loaded.takeError());
  EXPECT_TRUE(loaded->deterministic);
  llvm::sys::fs::remove_directories(dir);

  // The flash backward takes the ordered template and its counters; the
  // scratch holds them (one word a query block of 64, and the ticket, then
  // one a batch · kv head counting its key blocks done).
  const char *flash = R"(
    module attributes {kiln.deterministic} {
    func.func @f(%q: tensor<2x3x200x64xbf16> {kiln.input = "q"}, %k: tensor<2x3x200x64xbf16> {kiln.input = "k"},
                 %v: tensor<2x3x200x64xbf16> {kiln.input = "v"}, %d: tensor<2x3x200x64xbf16> {kiln.input = "d"})
        -> (tensor<2x3x200x64xbf16>, tensor<2x3x200x64xbf16>, tensor<2x3x200x64xbf16>) {
      %o, %lse = kiln.attention %q, %k, %v {causal, scale = 0.125 : f32} : tensor<2x3x200x64xbf16>, tensor<2x3x200x64xbf16>, tensor<2x3x200x64xbf16> -> tensor<2x3x200x64xbf16>, tensor<2x3x200xf32>
      %dq, %dk, %dv = kiln.attention_grad %q, %k, %v, %o, %lse, %d {causal, scale = 0.125 : f32} : tensor<2x3x200x64xbf16>, tensor<2x3x200x64xbf16>, tensor<2x3x200x64xbf16>, tensor<2x3x200x64xbf16>, tensor<2x3x200xf32>, tensor<2x3x200x64xbf16> -> tensor<2x3x200x64xbf16>, tensor<2x3x200x64xbf16>, tensor<2x3x200x64xbf16>
      return %dq, %dk, %dv : tensor<2x3x200x64xbf16>, tensor<2x3x200x64xbf16>, tensor<2x3x200x64xbf16>
    }
    })";
  auto flashModule = test::parse(ctx, flash);
  ASSERT_TRUE(flashModule);
  bool sawGrad = false;
  (*flashModule)->walk([&](AttentionGradOp op) {
    sawGrad = true;
    EXPECT_EQ(op.getScratchBytes(), 4 * (6 * 200 * 65 + 1 + 6 * 4 + 6));
  });
  EXPECT_TRUE(sawGrad);
  for (const char *arch : {"sm_90a", "sm_80"}) {
    SCOPED_TRACE(arch);
    auto fresh = test::parse(ctx, flash);
    codegen::CodegenOptions options;
    options.arch = arch;
    auto flashPlan = codegen::compileToPlan(*fresh, options);
    ASSERT_TRUE(static_cast<bool>(flashPlan)) << llvm::toString(flashPlan.takeError());
    std::string all = sources(*flashPlan);
    // ORDERED, BIAS, STAGES (0: a launch converts dq); the prepare zeroes
    // all 31 counters.
    EXPECT_NE(all.find(", true, false, 0>(q, k, v, lse"), std::string::npos) << all;
    EXPECT_NE(all.find(", false, 31>(out, dout, delta, accumulator, order)"), std::string::npos);
  }

  // f32 attention runs the reference kernels: refused, naming the key.
  const char *reference = R"(
    module attributes {kiln.deterministic} {
    func.func @f(%q: tensor<1x2x16x16xf32> {kiln.input = "q"}, %d: tensor<1x2x16x16xf32> {kiln.input = "d"})
        -> (tensor<1x2x16x16xf32>, tensor<1x2x16x16xf32>, tensor<1x2x16x16xf32>) {
      %o, %lse = kiln.attention %q, %q, %q {causal, scale = 0.25 : f32} : tensor<1x2x16x16xf32>, tensor<1x2x16x16xf32>, tensor<1x2x16x16xf32> -> tensor<1x2x16x16xf32>, tensor<1x2x16xf32>
      %dq, %dk, %dv = kiln.attention_grad %q, %q, %q, %o, %lse, %d {causal, scale = 0.25 : f32} : tensor<1x2x16x16xf32>, tensor<1x2x16x16xf32>, tensor<1x2x16x16xf32>, tensor<1x2x16x16xf32>, tensor<1x2x16xf32>, tensor<1x2x16x16xf32> -> tensor<1x2x16x16xf32>, tensor<1x2x16x16xf32>, tensor<1x2x16x16xf32>
      return %dq, %dk, %dv : tensor<1x2x16x16xf32>, tensor<1x2x16x16xf32>, tensor<1x2x16x16xf32>
    }
    })";
  auto refused = codegen::compileToPlan(*test::parse(ctx, reference), {});
  ASSERT_FALSE(static_cast<bool>(refused));
  std::string message = llvm::toString(refused.takeError());
  EXPECT_NE(message.find("train.deterministic"), std::string::npos) << message;
  EXPECT_NE(message.find("reference kernels"), std::string::npos) << message;
  EXPECT_NE(message.find("compile.fuse_attention"), std::string::npos) << message;
}

// NVRTC runs without a GPU: a kernel that does not compile comes back with
// NVRTC's log and the path of its source, written where the message says.
TEST(Nvrtc, CompileErrorsShowTheLogAndTheSource) {
  std::string cache = tempDir("kiln-nvrtc");
  cuda::CompileOptions options;
  options.arch = "sm_90";
  options.cacheDir = cache;
  auto cubins = cuda::compileKernels(
      {{"broken", "extern \"C\" __global__ void broken(float *x) { x[0] = undefined_name; }\n"}},
      options);
  ASSERT_FALSE(static_cast<bool>(cubins));
  std::string message = llvm::toString(cubins.takeError());
  EXPECT_NE(message.find("NVRTC could not compile kernel broken for sm_90"), std::string::npos) << message;
  EXPECT_NE(message.find("undefined_name"), std::string::npos) << message; // NVRTC's log
  std::string source = cache + "/failed/broken.cu";
  EXPECT_NE(message.find(source), std::string::npos) << message;
  auto written = llvm::MemoryBuffer::getFile(source);
  ASSERT_TRUE(static_cast<bool>(written));
  EXPECT_NE((*written)->getBuffer().find("undefined_name"), llvm::StringRef::npos);

  // A good kernel compiles, and a second compile comes from the cache.
  cuda::CompileStats first, second;
  std::vector<cuda::KernelSource> good{{"fine", "extern \"C\" __global__ void fine(float *x) { x[0] = 1; }\n"}};
  ASSERT_TRUE(static_cast<bool>(cuda::compileKernels(good, options, &first)));
  ASSERT_TRUE(static_cast<bool>(cuda::compileKernels(good, options, &second)));
  EXPECT_EQ(first.compiled, 1);
  EXPECT_EQ(second.cached, 1);

  // With `resources` each kernel is compiled again (the cache holds no
  // log) and ptxas's figures come back: a dynamically indexed local array
  // lives in a stack frame, a plain kernel has none; both have registers
  // and instructions.
  options.resources = true;
  cuda::CompileStats third;
  std::vector<cuda::KernelSource> two{
      good[0],
      {"local", "extern \"C\" __global__ void local(float *x, int i, int j) {\n"
                "  float a[64];\n  for (int k = 0; k < 64; ++k) a[k] = x[k];\n"
                "  a[i & 63] += 1.f;\n  x[0] = a[j & 63];\n}\n"}};
  ASSERT_TRUE(static_cast<bool>(cuda::compileKernels(two, options, &third)));
  EXPECT_EQ(third.compiled, 2);
  ASSERT_EQ(third.kernels.size(), 2u);
  EXPECT_EQ(third.kernels[0].name, "fine");
  EXPECT_GT(third.kernels[0].registers, 0);
  EXPECT_EQ(third.kernels[0].stackFrame, 0);
  EXPECT_GT(third.kernels[0].instructions, 0);
  EXPECT_GE(third.kernels[1].stackFrame, 256);
  EXPECT_GT(third.kernels[1].instructions, third.kernels[0].instructions);
  EXPECT_TRUE(third.notes.empty()) << llvm::join(third.notes, "\n"); // -v's lines are not notes
  llvm::sys::fs::remove_directories(cache);
}

// ptxas's -v lines are read for the kernel asked about, not its neighbour;
// what is not ELF64 has no instruction count.
TEST(Nvrtc, ResourcesAreReadPerKernel) {
  std::string log =
      "ptxas info    : 0 bytes gmem\n"
      "ptxas info    : Compiling entry function 'a' for 'sm_90a'\n"
      "ptxas info    : Function properties for a\n"
      "ptxas         .     0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads\n"
      "ptxas info    : Used 40 registers, used 1 barriers, 380 bytes cmem[0]\n"
      "ptxas info    : Compiling entry function 'b' for 'sm_90a'\n"
      "ptxas info    : Function properties for b\n"
      "ptxas         .     24 bytes stack frame, 32 bytes spill stores, 40 bytes spill loads\n"
      "ptxas info    : Used 168 registers, used 1 barriers, 24 bytes cumulative stack size\n";
  cuda::KernelResources a = cuda::parsePtxasInfo("a", log), b = cuda::parsePtxasInfo("b", log);
  EXPECT_EQ(a.registers, 40);
  EXPECT_EQ(a.stackFrame, 0);
  EXPECT_EQ(b.registers, 168);
  EXPECT_EQ(b.stackFrame, 24);
  EXPECT_EQ(b.spillStores, 32);
  EXPECT_EQ(b.spillLoads, 40);
  EXPECT_EQ(cuda::parsePtxasInfo("c", log).registers, -1);
  EXPECT_EQ(cuda::cubinInstructions("not a cubin", "a"), -1);
  EXPECT_EQ(cuda::cubinInstructions(llvm::StringRef("\x7f"
                                                    "ELF\x02\x01",
                                                    6),
                                    "a"),
            -1); // cut short
}

} // namespace

// A materialized integer constant keeps its negative values (an ignored
// target is −1): the kernel's table holds −1, not 2^64 − 1.
TEST(Plan, NegativeIntegerConstantsKeepTheirSign) {
  auto ctx = test::makeContext();
  auto module = test::parse(*ctx, R"(
    func.func @f(%x: tensor<2x3xi32> {kiln.input = "x"}) -> tensor<2x3xi32> {
      %t = kiln.constant dense<[[5, -1, 999], [0, -1, 42]]> : tensor<2x3xi32>
      %0 = kiln.add %x, %t : tensor<2x3xi32>
      return %0 : tensor<2x3xi32>
    })");
  ASSERT_TRUE(module);
  auto plan = codegen::compileToPlan(*module, {});
  ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
  bool found = false;
  for (const PlanKernel &k : plan->kernels) {
    if (k.source.find("kValues") == std::string::npos)
      continue;
    found = true;
    EXPECT_NE(k.source.find("{5, -1, 999, 0, -1, 42}"), std::string::npos) << k.source;
  }
  EXPECT_TRUE(found);
}

namespace {
// The Plan of the IR `text` for `arch` with the attention tiles `tiles`
// (CodegenOptions::attentionTiles; empty for kiln's choice).
llvm::Expected<Plan> compileWithTiles(mlir::MLIRContext &ctx, const std::string &text,
                                      const std::string &arch, const std::string &tiles) {
  auto module = test::parse(ctx, text);
  EXPECT_TRUE(module);
  codegen::CodegenOptions options;
  options.arch = arch;
  options.attentionTiles = tiles;
  return codegen::compileToPlan(*module, options);
}
} // namespace

// The flash kernels: wgmma on sm_90a by default, mma.sync on sm_90 or when
// the tiles' G field asks; the choice is in the plan's notes and kernels,
// and tiles the wgmma kernels cannot take are refused with the reason.
TEST(Plan, FlashKernelsRunOnWgmmaOnSm90a) {
  auto ctx = test::makeContext();
  const char *text = R"(
    func.func @f(%q: tensor<1x2x100x64xbf16> {kiln.input = "q"}, %k: tensor<1x2x100x64xbf16> {kiln.input = "k"},
                 %v: tensor<1x2x100x64xbf16> {kiln.input = "v"}, %d: tensor<1x2x100x64xbf16> {kiln.input = "d"})
        -> (tensor<1x2x100x64xbf16>, tensor<1x2x100x64xbf16>, tensor<1x2x100x64xbf16>) {
      %o, %lse = kiln.attention %q, %k, %v {causal, scale = 0.125 : f32} : tensor<1x2x100x64xbf16>, tensor<1x2x100x64xbf16>, tensor<1x2x100x64xbf16> -> tensor<1x2x100x64xbf16>, tensor<1x2x100xf32>
      %dq, %dk, %dv = kiln.attention_grad %q, %k, %v, %o, %lse, %d {causal, scale = 0.125 : f32} : tensor<1x2x100x64xbf16>, tensor<1x2x100x64xbf16>, tensor<1x2x100x64xbf16>, tensor<1x2x100x64xbf16>, tensor<1x2x100xf32>, tensor<1x2x100x64xbf16> -> tensor<1x2x100x64xbf16>, tensor<1x2x100x64xbf16>, tensor<1x2x100x64xbf16>
      return %dq, %dk, %dv : tensor<1x2x100x64xbf16>, tensor<1x2x100x64xbf16>, tensor<1x2x100x64xbf16>
    })";
  auto compile = [&](const std::string &arch, const std::string &tiles) {
    return compileWithTiles(*ctx, text, arch, tiles);
  };
  auto sources = [](const Plan &plan) {
    std::string all;
    for (const PlanKernel &k : plan.kernels)
      all += k.source;
    return all;
  };
  auto notes = [](const Plan &plan) { return llvm::join(plan.notes, "\n"); };
  auto hopper = compile("sm_90a", "");
  ASSERT_TRUE(static_cast<bool>(hopper)) << llvm::toString(hopper.takeError());
  EXPECT_NE(sources(*hopper).find("kiln::flash::forwardWgmma<"), std::string::npos);
  EXPECT_NE(sources(*hopper).find("kiln::flash::backwardWgmma<"), std::string::npos);
  // D = 64: three backward blocks an SM.
  EXPECT_NE(sources(*hopper).find("__launch_bounds__(128, 3)"), std::string::npos);
  EXPECT_NE(notes(*hopper).find("on wgmma: forward 1 warpgroup(s) of 64 query rows"),
            std::string::npos)
      << notes(*hopper);
  auto generic = compile("sm_90", "");
  ASSERT_TRUE(static_cast<bool>(generic)) << llvm::toString(generic.takeError());
  EXPECT_EQ(sources(*generic).find("Wgmma<"), std::string::npos);
  EXPECT_NE(notes(*generic).find("backward 4 warps on mma.sync"), std::string::npos)
      << notes(*generic);
  auto forced = compile("sm_90a", "4,2,64,8,0,0");
  ASSERT_TRUE(static_cast<bool>(forced)) << llvm::toString(forced.takeError());
  EXPECT_EQ(sources(*forced).find("Wgmma<"), std::string::npos);
  auto wide = compile("sm_90a", "8,1,64,4,1,1,0");
  ASSERT_TRUE(static_cast<bool>(wide)) << llvm::toString(wide.takeError());
  EXPECT_NE(sources(*wide).find("forwardWgmma<__nv_bfloat16, 1, 2, 2, 100, 100, 64, true, 2, 64"),
            std::string::npos)
      << sources(*wide);
  EXPECT_EQ(sources(*wide).find("__launch_bounds__(128, 3)"), std::string::npos);
  // A long sequence at D = 64: two backward warpgroups (dq summed over 128
  // keys before its atomics), bounded to one block an SM.
  std::string longText = text;
  for (size_t at; (at = longText.find("x100")) != std::string::npos;)
    longText.replace(at, 4, "x4096");
  auto fresh = test::parse(*ctx, longText);
  ASSERT_TRUE(fresh);
  codegen::CodegenOptions longOptions;
  longOptions.arch = "sm_90a";
  auto longPlan = codegen::compileToPlan(*fresh, longOptions);
  ASSERT_TRUE(static_cast<bool>(longPlan)) << llvm::toString(longPlan.takeError());
  EXPECT_NE(
      sources(*longPlan).find("backwardWgmma<__nv_bfloat16, 1, 2, 2, 4096, 4096, 64, true, 2,"),
      std::string::npos);
  EXPECT_NE(sources(*longPlan).find("__launch_bounds__(256, 1)"), std::string::npos);
  // Two backward warpgroups issue dq's product first; GPT-2's one does not.
  // The template ends DQ_FIRST, ORDERED, BIAS, STAGES (0 by default: a
  // launch after the backward converts dq).
  EXPECT_NE(sources(*longPlan).find(", false, 1, true, false, false, 0>(q, k, v, lse"),
            std::string::npos)
      << sources(*longPlan);
  EXPECT_NE(notes(*longPlan).find("dq's product first"), std::string::npos) << notes(*longPlan);
  EXPECT_NE(sources(*hopper).find(", false, 1, false, false, false, 0>(q, k, v, lse"),
            std::string::npos)
      << sources(*hopper);
  EXPECT_NE(sources(*hopper).find("kiln::flash::backwardFinish<"), std::string::npos);
  EXPECT_EQ(notes(*hopper).find("dq's product first"), std::string::npos) << notes(*hopper);
  auto refused = compile("sm_90", "4,1,128,4,1,1");
  ASSERT_FALSE(static_cast<bool>(refused));
  EXPECT_NE(llvm::toString(refused.takeError()).find("which need --arch sm_90a"),
            std::string::npos);
  auto badShape = compile("sm_90a", "4,2,128,4,1,1");
  ASSERT_FALSE(static_cast<bool>(badShape));
  EXPECT_NE(llvm::toString(badShape.takeError()).find("the wgmma kernels take W = 4 or 8 warps"),
            std::string::npos);
  // The X field: an option the wgmma kernels lack, or options on the
  // mma.sync kernels.
  auto badOption = compile("sm_90a", "4,1,128,8,0,1,0,16");
  ASSERT_FALSE(static_cast<bool>(badOption));
  EXPECT_NE(llvm::toString(badOption.takeError()).find("wgmma options 0-15"), std::string::npos);
  // Option 8: the warp-specialized forward, a producer warpgroup beside two
  // consumer ones (384 threads, one block an SM for setmaxnreg's pool);
  // one consumer warpgroup is refused.
  auto specialized = compile("sm_90a", "8,1,128,4,0,1,3,8");
  ASSERT_TRUE(static_cast<bool>(specialized)) << llvm::toString(specialized.takeError());
  EXPECT_NE(
      sources(*specialized)
          .find("forwardSpecialized<__nv_bfloat16, 1, 2, 2, 100, 100, 64, true, 128, false, 1>"),
      std::string::npos)
      << sources(*specialized);
  EXPECT_NE(sources(*specialized).find("__launch_bounds__(384, 1)"), std::string::npos);
  EXPECT_EQ(sources(*specialized).find("forwardWgmma<"), std::string::npos);
  EXPECT_NE(notes(*specialized).find("forward warp-specialized (a producer warpgroup)"),
            std::string::npos)
      << notes(*specialized);
  auto oneConsumer = compile("sm_90a", "4,1,128,4,0,1,3,8");
  ASSERT_FALSE(static_cast<bool>(oneConsumer));
  EXPECT_NE(llvm::toString(oneConsumer.takeError()).find("takes W = 8"), std::string::npos);
  // Option 4: the backward's last block of each head converts dq: its
  // rows stream through three chunks of 64 rows (16 KiB each) at the end
  // of the 58 KiB of tiles (two of 128 rows in the two-warpgroup
  // backward's 98 KiB), and no launch converts it after the backward.
  auto inBackward = compile("sm_90a", "4,1,128,4,0,1,0,4");
  ASSERT_TRUE(static_cast<bool>(inBackward)) << llvm::toString(inBackward.takeError());
  EXPECT_NE(sources(*inBackward).find(", false, 1, false, false, false, 3>(q, k, v, lse"),
            std::string::npos)
      << sources(*inBackward);
  EXPECT_EQ(sources(*inBackward).find("flash_attention_dq"), std::string::npos);
  EXPECT_NE(notes(*inBackward).find("dq converted by its last blocks"), std::string::npos);
  auto inBackwardTwo = compile("sm_90a", "4,1,128,8,0,1,1,5");
  ASSERT_TRUE(static_cast<bool>(inBackwardTwo)) << llvm::toString(inBackwardTwo.takeError());
  EXPECT_NE(sources(*inBackwardTwo).find(", false, 1, true, false, false, 2>(q, k, v, lse"),
            std::string::npos)
      << sources(*inBackwardTwo);
  // Option 2: the forward's softmax overlapped with O += P·V (not the
  // default: the forward's last template argument says which).
  auto pipelined = compile("sm_90a", "4,1,128,4,0,1,0,2");
  ASSERT_TRUE(static_cast<bool>(pipelined)) << llvm::toString(pipelined.takeError());
  EXPECT_NE(sources(*pipelined)
                .find("forwardWgmma<__nv_bfloat16, 1, 2, 2, 100, 100, 64, true, 1, "
                      "128, false, 1, true>"),
            std::string::npos)
      << sources(*pipelined);
  EXPECT_NE(notes(*pipelined).find("forward softmax overlapped"), std::string::npos);
  EXPECT_NE(sources(*hopper).find("128, false, 1, false>(q, k, v, out"), std::string::npos)
      << sources(*hopper);
  auto optionOnMmaSync = compile("sm_90a", "4,2,64,8,0,0,0,1");
  ASSERT_FALSE(static_cast<bool>(optionOnMmaSync));
  EXPECT_NE(llvm::toString(optionOnMmaSync.takeError()).find("X (options) is for the wgmma kernels"),
            std::string::npos);
  // X = 0 on the two-warpgroup backward turns dq's product first off.
  auto plainOrder = compile("sm_90a", "4,1,128,8,0,1,0,0");
  ASSERT_TRUE(static_cast<bool>(plainOrder)) << llvm::toString(plainOrder.takeError());
  EXPECT_EQ(notes(*plainOrder).find("dq's product first"), std::string::npos);
}

// Tiles fit the arch's shared memory: at D = 128 the flash backward needs
// 145 KiB a block, which sm_80 (163 KiB) and sm_90a (227) give and sm_86,
// sm_89 and sm_120 (99 KiB) do not; there the backward runs the reference
// kernels (after the flash forward, whose 96 KiB fit), with the reason in
// the plan's notes. Tiles asked for that do not fit, and a reference
// kernel whose score rows do not, are refused with the arch's limit.
TEST(Plan, FlashTilesFitTheArchSharedMemory) {
  EXPECT_EQ(codegen::maxSharedBytes("sm_80"), 163 * 1024);
  EXPECT_EQ(codegen::maxSharedBytes("sm_86"), 99 * 1024);
  EXPECT_EQ(codegen::maxSharedBytes("sm_89"), 99 * 1024);
  EXPECT_EQ(codegen::maxSharedBytes("sm_90a"), 227 * 1024);
  EXPECT_EQ(codegen::maxSharedBytes("sm_100a"), 227 * 1024);
  EXPECT_EQ(codegen::maxSharedBytes("sm_120"), 99 * 1024);
  auto ctx = test::makeContext();
  auto textOf = [](const char *type, int64_t t, int64_t d) {
    std::string x = llvm::formatv("tensor<1x2x{0}x{1}x{2}>", t, d, type).str(),
                lse = llvm::formatv("tensor<1x2x{0}xf32>", t).str();
    return llvm::formatv(R"(
    func.func @f(%q: {0} {{kiln.input = "q"}, %k: {0} {{kiln.input = "k"}, %v: {0} {{kiln.input = "v"},
                 %d: {0} {{kiln.input = "d"}) -> ({0}, {0}, {0}) {{
      %o, %lse = kiln.attention %q, %k, %v {{causal, scale = 0.125 : f32} : {0}, {0}, {0} -> {0}, {1}
      %dq, %dk, %dv = kiln.attention_grad %q, %k, %v, %o, %lse, %d {{causal, scale = 0.125 : f32} : {0}, {0}, {0}, {0}, {1}, {0} -> {0}, {0}, {0}
      return %dq, %dk, %dv : {0}, {0}, {0}
    })",
                         x, lse)
        .str();
  };
  auto compile = [&](const std::string &text, const std::string &arch, const std::string &tiles) {
    return compileWithTiles(*ctx, text, arch, tiles);
  };
  auto has = [](const Plan &plan, llvm::StringRef prefix) {
    return llvm::any_of(plan.kernels, [&](const PlanKernel &k) {
      return llvm::StringRef(k.name).starts_with(prefix);
    });
  };
  auto flash = [&](const Plan &plan) { return has(plan, "flash_attention_backward"); };
  auto notes = [](const Plan &plan) { return llvm::join(plan.notes, "\n"); };
  std::string d128 = textOf("bf16", 100, 128), d64 = textOf("bf16", 100, 64);
  for (const char *arch : {"sm_80", "sm_90a"}) {
    auto plan = compile(d128, arch, "");
    ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
    EXPECT_TRUE(flash(*plan)) << arch << ": " << notes(*plan);
    for (const PlanFunction &f : plan->functions)
      for (const PlanStep &s : f.steps)
        EXPECT_LE(s.sharedBytes, codegen::maxSharedBytes(arch));
  }
  for (const char *arch : {"sm_86", "sm_89", "sm_120"}) {
    auto plan = compile(d128, arch, "");
    ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
    EXPECT_FALSE(flash(*plan)) << arch;
    EXPECT_TRUE(has(*plan, "flash_attention_")) << "the flash forward fits: " << notes(*plan);
    EXPECT_TRUE(has(*plan, "attention_backward")) << arch;
    EXPECT_NE(notes(*plan).find("): reference kernels (a block per query row, CUDA cores): the "
                                "flash backward's tiles need 145 KiB of shared memory a block; " +
                                std::string(arch) + " gives at most 99 KiB"),
              std::string::npos)
        << notes(*plan);
    // D = 64 fits (80 KiB forward, 57 KiB backward).
    auto small = compile(d64, arch, "");
    ASSERT_TRUE(static_cast<bool>(small)) << llvm::toString(small.takeError());
    EXPECT_TRUE(flash(*small)) << arch << ": " << notes(*small);
  }
  auto asked = compile(d128, "sm_86", "4,2,64,8");
  ASSERT_FALSE(static_cast<bool>(asked));
  EXPECT_NE(llvm::toString(asked.takeError())
                .find("attention tiles '4,2,64,8': the flash backward's tiles need 145 KiB"),
            std::string::npos);
  // The reference kernels keep a row of f32 scores (two in the backward):
  // 16384 keys fit 227 KiB, not 99.
  std::string longF32 = textOf("f32", 16384, 16);
  EXPECT_TRUE(static_cast<bool>(compile(longF32, "sm_90a", "")));
  auto tooLong = compile(longF32, "sm_86", "");
  ASSERT_FALSE(static_cast<bool>(tooLong));
  EXPECT_NE(llvm::toString(tooLong.takeError()).find("at most 100352 fit"), std::string::npos);
}

// The wgmma kernels' options (the tiles' X field: 1, the backward issues
// dq's product before dV's and dK's; 8, the warp-specialized forward)
// compile with NVRTC for sm_90a at each warpgroup split of dq's columns
// (D = 64 with one or two warpgroups, D = 128 with two) and key blocks of
// 128 and 64, and dq's product first is in the plan's notes; and ptxas has
// no note on
// any of these kernels (C7515, "wgmma.mma_async instructions are
// serialized", was on every causal forward until its accumulator's zeros
// were pinned before the loop).
TEST(Plan, FlashWgmmaOptionsCompileWithNvrtc) {
  auto ctx = test::makeContext();
  auto textOf = [](int64_t d) {
    std::string x = llvm::formatv("tensor<1x2x100x{0}xbf16>", d).str();
    return llvm::formatv(R"(
    func.func @f(%q: {0} {{kiln.input = "q"}, %k: {0} {{kiln.input = "k"}, %v: {0} {{kiln.input = "v"},
                 %d: {0} {{kiln.input = "d"}) -> ({0}, {0}, {0}) {{
      %o, %lse = kiln.attention %q, %k, %v {{causal, scale = 0.125 : f32} : {0}, {0}, {0} -> {0}, tensor<1x2x100xf32>
      %dq, %dk, %dv = kiln.attention_grad %q, %k, %v, %o, %lse, %d {{causal, scale = 0.125 : f32} : {0}, {0}, {0}, {0}, tensor<1x2x100xf32>, {0} -> {0}, {0}, {0}
      return %dq, %dk, %dv : {0}, {0}, {0}
    })",
                         x)
        .str();
  };
  struct Case {
    int64_t d;
    const char *tiles;
    std::vector<int> options;
  };
  for (const Case &c : {Case{64, "4,1,128,4,0,1,3", {0, 1}}, Case{64, "4,1,128,8,0,1,1", {0, 1}},
                        Case{128, "8,1,128,8,0,1,0", {0, 1, 8, 9}},
                        Case{64, "8,1,128,4,0,1,3", {8}}, Case{64, "8,1,64,8,0,1,1", {9}}}) {
    for (int x : c.options) {
      std::string tiles = std::string(c.tiles) + "," + std::to_string(x);
      auto module = test::parse(*ctx, textOf(c.d));
      ASSERT_TRUE(module);
      codegen::CodegenOptions options;
      options.arch = "sm_90a";
      options.attentionTiles = tiles;
      auto plan = codegen::compileToPlan(*module, options);
      ASSERT_TRUE(static_cast<bool>(plan)) << tiles << ": " << llvm::toString(plan.takeError());
      std::string notes = llvm::join(plan->notes, "\n");
      EXPECT_EQ(notes.find("dq's product first") != std::string::npos, (x & 1) == 1) << notes;
      std::vector<cuda::KernelSource> sources;
      for (const PlanKernel &k : plan->kernels)
        if (llvm::StringRef(k.name).starts_with("flash_attention_backward") ||
            k.source.find(x & 8 ? "forwardSpecialized<" : "forwardWgmma<") != std::string::npos)
          sources.push_back({k.name, k.source});
      ASSERT_EQ(sources.size(), 2u) << tiles;
      cuda::CompileOptions nvrtc;
      nvrtc.arch = "sm_90a";
      nvrtc.headers = codegen::kernelHeaders(); // no cache: the notes come from compiling
      cuda::CompileStats stats;
      auto cubins = cuda::compileKernels(sources, nvrtc, &stats);
      ASSERT_TRUE(static_cast<bool>(cubins)) << tiles << ": " << llvm::toString(cubins.takeError());
      EXPECT_EQ(stats.compiled, 2);
      EXPECT_TRUE(stats.notes.empty()) << tiles << ": " << llvm::join(stats.notes, "\n");
    }
  }
}

// Tiles asked for are checked even where no attention would use them: a
// malformed string or one the arch cannot run is an error, not ignored.
TEST(Plan, AttentionTilesAreCheckedWithoutAnAttention) {
  auto ctx = test::makeContext();
  const char *text = R"(
    func.func @f(%x: tensor<4xf32> {kiln.input = "x"}) -> tensor<4xf32> {
      %y = kiln.add %x, %x : tensor<4xf32>
      return %y : tensor<4xf32>
    })";
  auto compile = [&](const std::string &arch, const std::string &tiles) {
    return compileWithTiles(*ctx, text, arch, tiles);
  };
  auto plain = compile("sm_90a", "");
  EXPECT_TRUE(static_cast<bool>(plain)) << llvm::toString(plain.takeError());
  auto fine = compile("sm_90a", "8,1,128,8,0,1,0,9");
  EXPECT_TRUE(static_cast<bool>(fine)) << llvm::toString(fine.takeError());
  auto banana = compile("sm_90a", "banana");
  ASSERT_FALSE(static_cast<bool>(banana));
  EXPECT_NE(llvm::toString(banana.takeError()).find("are not W,MT,BN,BW"), std::string::npos);
  auto wrongArch = compile("sm_90", "4,1,128,4,0,1");
  ASSERT_FALSE(static_cast<bool>(wrongArch));
  EXPECT_NE(llvm::toString(wrongArch.takeError()).find("need --arch sm_90a"), std::string::npos);
}

// What `kiln bench --all-reduce` runs: a chain of sums, one Collective step
// each in order, their buffers reused (two live at once, whatever the
// chain's length), so the 1 GiB size fits beside two of them.
TEST(Plan, ChainedAllReducesReuseTwoBuffers) {
  mlir::MLIRContext ctx;
  tooling::loadDialects(ctx);
  std::string text = "module attributes {kiln.mesh = #kiln.mesh<dp = 2>} {\n"
                     "func.func @all_reduce(%x: tensor<1024xf32> {kiln.input = \"x\"}) -> "
                     "(tensor<1024xf32> {kiln.output = \"y\"}) attributes {kiln.partitioned} {\n";
  std::string prev = "%x";
  for (int i = 0; i < 8; ++i) {
    text += "  %" + std::to_string(i) + " = kiln.all_reduce " + prev +
            " over \"dp\" {cause = \"bench\"} : tensor<1024xf32>\n";
    prev = "%" + std::to_string(i);
  }
  text += "  return " + prev + " : tensor<1024xf32>\n}\n}\n";
  auto module = mlir::parseSourceString<mlir::ModuleOp>(text, &ctx);
  ASSERT_TRUE(module);
  auto plan = codegen::compileToPlan(*module, {});
  ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
  int collectives = 0;
  for (const PlanStep &s : plan->function("all_reduce")->steps)
    if (s.kind == PlanStep::Kind::Collective) {
      ++collectives;
      EXPECT_EQ(s.collective.kind, "all_reduce");
      EXPECT_EQ(s.collective.axis, "dp");
      EXPECT_EQ(s.collective.shape, std::vector<int64_t>{1024});
    }
  EXPECT_EQ(collectives, 8);
  EXPECT_LE(plan->memory.scratch, 2 * 4096) << plan->memory.describe();
}

// A step partitioned over a mesh compiles to one rank's plan: each
// collective of the IR is one Collective step with its kind, axis,
// dimension and both shapes, in the IR's order; the plan saves and loads
// them, and refuses a collective it cannot run or one outside the arena.
TEST(Plan, CollectivesOfAPartitionedStepAreSteps) {
  mlir::MLIRContext ctx;
  auto c = RunConfig::loadFile(KILN_SOURCE_DIR "/configs/tiny.toml");
  ASSERT_TRUE(static_cast<bool>(c)) << llvm::toString(c.takeError());
  c->parallel.dp = 2;
  c->parallel.tp = 2;
  c->parallel.zero = 3;
  auto module = tooling::buildTrainingModule(ctx, *c);
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  auto plan = codegen::compileToPlan(**module, {});
  ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
  auto step = (*module)->lookupSymbol<mlir::func::FuncOp>("train_step");
  ASSERT_TRUE(step);
  std::vector<mlir::Operation *> ops;
  step.walk([&](mlir::Operation *op) {
    if (isCollective(op))
      ops.push_back(op);
  });
  std::vector<const PlanStep *> steps;
  for (const PlanStep &s : plan->function("train_step")->steps)
    if (s.kind == PlanStep::Kind::Collective)
      steps.push_back(&s);
  ASSERT_EQ(steps.size(), ops.size());
  std::set<std::string> kinds;
  for (auto [op, s] : llvm::zip_equal(ops, steps)) {
    const CollectiveDesc &d = s->collective;
    kinds.insert(d.kind);
    EXPECT_EQ(d.kind, op->getName().stripDialect().str());
    EXPECT_EQ(d.axis, op->getAttrOfType<mlir::StringAttr>("axis").getValue().str());
    auto in = mlir::cast<mlir::RankedTensorType>(op->getOperand(0).getType());
    auto out = mlir::cast<mlir::RankedTensorType>(op->getResult(0).getType());
    EXPECT_EQ(d.shape, std::vector<int64_t>(in.getShape().begin(), in.getShape().end()));
    EXPECT_EQ(d.resultShape, std::vector<int64_t>(out.getShape().begin(), out.getShape().end()));
  }
  // ZeRO 3 over dp and tensor parallelism use all four.
  EXPECT_EQ(kinds, (std::set<std::string>{"all_gather", "all_reduce", "reduce_scatter", "take_shard"}));

  std::string dir = tempDir("kiln-plan-mesh");
  ASSERT_FALSE(static_cast<bool>(plan->save(dir)));
  auto loaded = Plan::load(dir);
  ASSERT_TRUE(static_cast<bool>(loaded)) << llvm::toString(loaded.takeError());
  EXPECT_EQ(llvm::formatv("{0}", loaded->toJSON()).str(), llvm::formatv("{0}", plan->toJSON()).str());
  llvm::sys::fs::remove_directories(dir);

  auto refuse = [&](llvm::function_ref<void(PlanStep &)> change, const char *expected) {
    Plan bad = *plan;
    for (PlanStep &s : bad.functions[0].steps)
      if (s.kind == PlanStep::Kind::Collective) {
        change(s);
        break;
      }
    llvm::Error err = bad.validate();
    ASSERT_TRUE(static_cast<bool>(err)) << expected;
    EXPECT_NE(llvm::toString(std::move(err)).find(expected), std::string::npos);
  };
  refuse([](PlanStep &s) { s.collective.kind = "all_to_all"; }, "is not a collective kiln runs");
  refuse([](PlanStep &s) { s.collective.resultShape = {1 << 30, 1 << 10}; }, "reaches outside the");
  // Only sums run in buckets: a gather marked with one is refused.
  Plan bad = *plan;
  PlanStep *gather = nullptr;
  for (PlanStep &s : bad.functions[0].steps)
    if (!gather && s.kind == PlanStep::Kind::Collective && s.collective.kind == "all_gather")
      gather = &s;
  ASSERT_NE(gather, nullptr);
  ASSERT_FALSE(static_cast<bool>(bad.validate()));
  gather->collective.bucket = 0;
  llvm::Error err = bad.validate();
  ASSERT_TRUE(static_cast<bool>(err));
  EXPECT_NE(llvm::toString(std::move(err)).find("is not a collective kiln runs"), std::string::npos);
}

// kiln-bucket-collectives: with parallel.bucket_mb the gradient sums run in
// buckets of that many bytes, each bucket's steps one after another (the
// executor posts such a run as one NCCL group) and none waiting for another
// member's bytes; here every bucket but the last holds at least the size;
// 0 leaves every sum alone. Under ZeRO 3 the sums are reduce_scatters with
// results of their own, which must not land in a member's operand (a GPU
// run caught that before kiln-plan-buffers kept the operands alive).
TEST(Plan, GradientSumsRunInBucketsOfTheConfiguredSize) {
  for (auto [mib, zero] : {std::pair{0.0, 0}, {1.0 / 256, 0}, {25.0, 0}, {1.0 / 256, 3}}) {
    mlir::MLIRContext ctx;
    auto c = RunConfig::loadFile(KILN_SOURCE_DIR "/configs/tiny.toml");
    ASSERT_TRUE(static_cast<bool>(c)) << llvm::toString(c.takeError());
    c->parallel.dp = 2;
    c->parallel.zero = zero;
    c->parallel.bucket_mb = mib;
    auto module = tooling::buildTrainingModule(ctx, *c);
    ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
    auto plan = codegen::compileToPlan(**module, {});
    ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
    const std::vector<PlanStep> &steps = plan->function("train_step")->steps;
    std::map<int64_t, std::vector<size_t>> buckets; // bucket -> its steps
    int64_t sums = 0;
    for (size_t i = 0; i < steps.size(); ++i)
      if (steps[i].kind == PlanStep::Kind::Collective) {
        sums += steps[i].collective.kind == (zero == 3 ? "reduce_scatter" : "all_reduce");
        if (steps[i].collective.bucket >= 0)
          buckets[steps[i].collective.bucket].push_back(i);
      }
    ASSERT_GT(sums, 10);
    if (mib == 0) {
      EXPECT_TRUE(buckets.empty());
      continue;
    }
    const int64_t cap = static_cast<int64_t>(mib * (1 << 20));
    EXPECT_GT(buckets.size(), mib < 1 ? 2u : 0u) << mib << " MiB";
    int64_t members = 0;
    for (auto [id, at] : buckets) {
      EXPECT_GE(at.size(), 2u);
      members += static_cast<int64_t>(at.size());
      int64_t bytes = 0;
      for (size_t k = 0; k < at.size(); ++k) {
        EXPECT_EQ(at[k], at[0] + k) << "bucket " << id << " is not one run of steps";
        bytes += steps[at[k]].collective.bytes();
        // No member waits for another of its bucket (they are posted at once).
        for (int64_t j : steps[at[k]].joins)
          EXPECT_FALSE(j >= static_cast<int64_t>(at[0]) && j < static_cast<int64_t>(at[k]))
              << steps[at[k]].op << " waits for " << steps[static_cast<size_t>(j)].op;
      }
      // In this step nothing reads a gradient's sum before the optimizer,
      // so no bucket but the last closes before it is full.
      if (id + 1 < static_cast<int64_t>(buckets.size())) {
        EXPECT_GE(bytes, cap) << "bucket " << id;
      }
    }
    // A bucket split in two runs (steps moved by hand) is refused.
    if (zero == 0 && buckets.size() >= 2) {
      Plan bad = *plan;
      for (PlanFunction &f : bad.functions)
        if (f.name == "train_step")
          f.steps[buckets.begin()->second.front()].collective.bucket =
              std::next(buckets.begin())->first;
      llvm::Error err = bad.validate();
      ASSERT_TRUE(static_cast<bool>(err));
      EXPECT_NE(llvm::toString(std::move(err)).find("whose steps are not one run"),
                std::string::npos);
    }
    // The tiny model's 30 KiB of gradients: one bucket at 25 MiB; at 4 KiB
    // several, and a sum of 4 KiB or more alone is left unmarked.
    if (mib >= 1) {
      EXPECT_EQ(buckets.size(), 1u);
    }
    EXPECT_GT(members, sums / 2);
  }
}

/// The tiny config's plan partitioned over dp = `dp` with ZeRO stage `zero`.
Plan tinyMeshPlan(mlir::MLIRContext &ctx, int64_t dp, int64_t zero) {
  auto c = RunConfig::loadFile(KILN_SOURCE_DIR "/configs/tiny.toml");
  if (!c) {
    ADD_FAILURE() << llvm::toString(c.takeError());
    return Plan();
  }
  c->parallel.dp = dp;
  c->parallel.zero = zero;
  auto module = tooling::buildTrainingModule(ctx, *c);
  if (!module) {
    ADD_FAILURE() << llvm::toString(module.takeError());
    return Plan();
  }
  auto plan = codegen::compileToPlan(**module, {});
  if (!plan) {
    ADD_FAILURE() << llvm::toString(plan.takeError());
    return Plan();
  }
  return std::move(*plan);
}

// Data parallel without ZeRO: each gradient's all_reduce runs in place, so
// its bytes stay the gradient's until the optimizer reads them and the
// compute stream does not wait for it before then (the reduction overlaps
// the rest of the backward), at no extra memory.
TEST(Plan, GradientAllReducesRunInPlaceAndOverlapTheBackward) {
  mlir::MLIRContext ctx;
  Plan plan = tinyMeshPlan(ctx, 2, 0);
  ASSERT_NE(plan.function("train_step"), nullptr);
  const std::vector<PlanStep> &steps = plan.function("train_step")->steps;
  // The optimizer's first step: the gradients' norm (for clipping).
  size_t firstUpdate = steps.size();
  for (size_t i = 0; i < steps.size() && firstUpdate == steps.size(); ++i)
    if (llvm::StringRef(steps[i].op).starts_with("kiln.global_norm"))
      firstUpdate = i;
  ASSERT_LT(firstUpdate, steps.size());
  std::map<size_t, size_t> joinedAt;
  for (size_t i = 0; i < steps.size(); ++i)
    for (int64_t j : steps[i].joins)
      joinedAt[static_cast<size_t>(j)] = i;
  int64_t reductions = 0, inPlace = 0, untilTheOptimizer = 0;
  for (size_t i = 0; i < firstUpdate; ++i) {
    const PlanStep &s = steps[i];
    if (s.kind != PlanStep::Kind::Collective || s.collective.kind != "all_reduce")
      continue;
    ++reductions;
    inPlace += s.src == s.dst;
    untilTheOptimizer += (joinedAt.count(i) ? joinedAt[i] : steps.size()) >= firstUpdate;
  }
  ASSERT_GT(reductions, 10);
  EXPECT_EQ(inPlace, reductions);
  // All but the position embedding's, whose sum the backward pads back to
  // its parameter's shape (and which is made last, with nothing left to
  // overlap). Before the in-place sums none reached the optimizer.
  EXPECT_GE(untilTheOptimizer, reductions - 1) << untilTheOptimizer << " of " << reductions;
}

/// The block of a step's op ("kiln.matmul at loc(\"h.1.attn\")" -> "h.1"),
/// "" when its location names none.
std::string blockOfStep(const PlanStep &s) {
  size_t at = s.op.find("loc(\"h.");
  if (at == std::string::npos)
    return "";
  llvm::StringRef rest = llvm::StringRef(s.op).substr(at + 5);
  return rest.take_while([](char c) { return c != '.'; }).str() + "." +
         rest.drop_front(2).take_while([](char c) { return c != '.' && c != '"'; }).str();
}

// ZeRO-3: block h.1's parameters are gathered a block ahead, before block
// h.0 starts computing, so the gathers overlap h.0's work instead of
// stalling h.1 (they used to sit right before their first user).
TEST(Plan, ZeroThreeGathersAreIssuedABlockAhead) {
  mlir::MLIRContext ctx;
  Plan plan = tinyMeshPlan(ctx, 2, 3);
  ASSERT_NE(plan.function("train_step"), nullptr);
  const std::vector<PlanStep> &steps = plan.function("train_step")->steps;
  auto firstComputeOf = [&](const std::string &block) {
    for (size_t i = 0; i < steps.size(); ++i)
      if (steps[i].kind != PlanStep::Kind::Collective && blockOfStep(steps[i]) == block)
        return i;
    return steps.size();
  };
  size_t h0 = firstComputeOf("h.0"), h1 = firstComputeOf("h.1");
  ASSERT_LT(h0, h1);
  int64_t gathers = 0;
  for (size_t i = 0; i < h1; ++i)
    if (steps[i].kind == PlanStep::Kind::Collective && steps[i].collective.kind == "all_gather" &&
        blockOfStep(steps[i]) == "h.1") {
      ++gathers;
      EXPECT_LT(i, h0) << steps[i].op << " is gathered after block h.0 started";
    }
  EXPECT_EQ(gathers, 12); // h.1's parameters: two norms (w, b) and four linears (w, b)
}

// Collectives run on a stream of their own on the GPU; the plan says where
// the compute stream must wait for each (PlanStep::joins). No step may read
// a collective's result before waiting for it, a wait names an earlier
// collective, and the gradients' reductions — scheduled by kiln-partition
// as soon as each gradient exists — leave work to overlap before the wait.
TEST(Plan, StepsWaitForTheCollectivesWhoseBytesTheyTouch) {
  mlir::MLIRContext ctx;
  Plan plan = tinyMeshPlan(ctx, 2, 2);
  ASSERT_NE(plan.function("train_step"), nullptr);
  const std::vector<PlanStep> &steps = plan.function("train_step")->steps;
  // Where each collective is waited for (steps.size(): at the end).
  std::map<size_t, size_t> joinedAt;
  for (size_t i = 0; i < steps.size(); ++i)
    for (int64_t j : steps[i].joins) {
      ASSERT_LT(static_cast<size_t>(j), i);
      ASSERT_EQ(steps[static_cast<size_t>(j)].kind, PlanStep::Kind::Collective);
      EXPECT_FALSE(joinedAt.count(static_cast<size_t>(j))) << "waited for twice";
      joinedAt[static_cast<size_t>(j)] = i;
    }
  auto reads = [](const PlanStep &s, int64_t offset) {
    switch (s.kind) {
    case PlanStep::Kind::Launch:
      return llvm::any_of(s.args, [&](const PlanArg &a) {
        return a.kind == PlanArg::Kind::Pointer && a.value == offset;
      });
    case PlanStep::Kind::Gemm:
      return s.gemm.a == offset || s.gemm.b == offset || s.gemm.c == offset ||
             s.gemm.bias == offset || s.gemm.aux == offset;
    case PlanStep::Kind::Copy:
    case PlanStep::Kind::Collective:
      return s.src == offset || s.dst == offset;
    case PlanStep::Kind::Memset:
      return s.dst == offset;
    }
    return false;
  };
  int64_t collectives = 0, overlapped = 0;
  for (size_t i = 0; i < steps.size(); ++i) {
    if (steps[i].kind != PlanStep::Kind::Collective)
      continue;
    ++collectives;
    size_t wait = joinedAt.count(i) ? joinedAt[i] : steps.size();
    for (size_t k = i + 1; k < steps.size(); ++k)
      if (reads(steps[k], steps[i].dst) || reads(steps[k], steps[i].src)) {
        EXPECT_LE(wait, k) << "step " << k << " (" << steps[k].op << ") touches the bytes of "
                           << steps[i].op << " before waiting for it";
        break;
      }
    overlapped += wait > i + 1;
  }
  ASSERT_GT(collectives, 0);
  EXPECT_GT(overlapped, collectives / 2) << overlapped << " of " << collectives;

  Plan bad = plan;
  for (PlanStep &s : bad.functions[0].steps)
    if (s.kind != PlanStep::Kind::Collective) {
      s.joins = {0};
      break;
    }
  llvm::Error err = bad.validate();
  ASSERT_TRUE(static_cast<bool>(err));
  EXPECT_NE(llvm::toString(std::move(err)).find("which is not an earlier collective"),
            std::string::npos);
}
