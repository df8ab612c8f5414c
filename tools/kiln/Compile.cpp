//===- Compile.cpp - `kiln compile`: build a model, run the passes, dump ---===//

#include "tools/kiln/BenchAttention.h"
#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"

#include "codegen/PlanBuilder.h"
#include "ir/PipelineSchedule.h"
#include "models/Model.h"
#include "passes/Passes.h"
#include "runtime/cuda/CudaApi.h"
#include "runtime/cuda/Nvrtc.h"
#include "tools/support/PipelineReport.h"
#include "tools/support/ShardingReport.h"
#include "train/Compile.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

using namespace llvm;

namespace kiln::cli {

static cl::opt<std::string> configPath(cl::Positional, cl::desc("<config.toml>"), cl::Required,
                                       cl::sub(compileCommand()), cl::cat(kilnCategory()));
static cl::list<std::string> dumpAfter(
    "dump-ir-after",
    cl::desc("Dump the IR after these passes: 'all' or pass flags (kiln-autodiff,canonicalize)"),
    cl::CommaSeparated, cl::sub(compileCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> dumpDir("dump-dir", cl::desc("Directory for the numbered .mlir dumps"),
                                    cl::value_desc("dir"), cl::sub(compileCommand()),
                                    cl::cat(kilnCategory()));

enum class Emit { IR, Cuda, Plan };
static cl::opt<Emit> emit(
    "emit", cl::desc("What to write into --dump-dir besides the IR dumps"), cl::init(Emit::IR),
    cl::values(clEnumValN(Emit::IR, "ir", "the IR after the passes (default)"),
               clEnumValN(Emit::Cuda, "cuda", "one .cu file per generated kernel (kernels/)"),
               clEnumValN(Emit::Plan, "plan", "the runnable Plan: plan.json and kernels/")),
    cl::sub(compileCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> arch("arch",
                                 cl::desc("GPU architecture to generate for (default: the "
                                          "device's, else sm_90)"),
                                 cl::value_desc("sm_XX"), cl::sub(compileCommand()),
                                 cl::cat(kilnCategory()));
static cl::opt<bool> nvrtc("nvrtc",
                           cl::desc("Also compile every kernel with NVRTC (no GPU needed) and "
                                    "report the time"),
                           cl::sub(compileCommand()), cl::cat(kilnCategory()));
static cl::opt<bool> noCache("no-cache", cl::desc("With --nvrtc: ignore the cubin cache"),
                             cl::sub(compileCommand()), cl::cat(kilnCategory()));
static cl::opt<bool> kernelResources(
    "kernel-resources",
    cl::desc("With --nvrtc: each kernel's registers, spills and SASS instruction count, as ptxas "
             "reports them (every kernel is compiled again)"),
    cl::sub(compileCommand()), cl::cat(kilnCategory()));

static cl::opt<bool> explainSharding(
    "explain-sharding",
    cl::desc("With parallel.dp > 1: list every collective of the step with its bytes and cause"),
    cl::sub(compileCommand()), cl::cat(kilnCategory()));

static cl::opt<bool> explainPipeline(
    "explain-pipeline",
    cl::desc("With parallel.pp > 1: each stage's blocks, FLOPs, memory and transfers, and the "
             "predicted bubble"),
    cl::sub(compileCommand()), cl::cat(kilnCategory()));

/// Number of ops in a function's body (its size in the summary).
static int64_t countOps(mlir::func::FuncOp func) {
  int64_t n = 0;
  func.walk([&](mlir::Operation *) { ++n; });
  return n - 1; // the function itself
}

int runCompile() {
  auto start = std::chrono::steady_clock::now();
  if (!dumpAfter.empty() && dumpDir.empty())
    return fail("compile", "--dump-ir-after needs --dump-dir DIR");
  if (emit != Emit::IR && dumpDir.empty())
    return fail("compile", "--emit=cuda and --emit=plan need --dump-dir DIR");
  if (kernelResources && !nvrtc)
    return fail("compile", "--kernel-resources needs --nvrtc");
  if (!arch.empty())
    if (Error err = codegen::checkArch(arch))
      return fail("compile", "--arch: " + toString(std::move(err)));
  auto config = loadConfig(configPath, setOverrides());
  if (!config)
    return fail("compile", toString(config.takeError()));

  mlir::MLIRContext ctx;
  auto module = tooling::buildForwardModule(ctx, *config, mlir::Float32Type::get(&ctx));
  if (!module)
    return fail("compile", toString(module.takeError()));
  tooling::DumpOptions dumps;
  dumps.dir = dumpDir;
  dumps.after.assign(dumpAfter.begin(), dumpAfter.end());
  if (!dumpDir.empty() && dumps.after.empty() && emit == Emit::IR)
    dumps.after = {"all"};
  // Buffer planning is the pipeline's last stage here, so its result (the
  // offsets codegen uses) is in the dumps.
  dumps.planBuffers = true;
  auto written = tooling::runTrainingPipeline(**module, *config, dumps);
  if (!written)
    return fail("compile", toString(written.takeError()));

  const ModelConfig &m = config->model;
  int64_t params = models::paramCount(m, false), padded = models::paramCount(m, true);
  outs() << formatv("{0}: {1} layers, {2} heads, width {3}; {4} parameters", m.kind, m.n_layer,
                    m.n_head, m.n_embd, withCommas(params));
  if (padded != params)
    outs() << " (+" << withCommas(padded - params) << " vocabulary padding)";
  outs() << formatv("\nstep: batch {0} x {1} tokens\n", config->train.batch_size, config->seqLen());
  for (auto func : (*module)->getOps<mlir::func::FuncOp>())
    outs() << formatv("  @{0}: {1} ops\n", func.getSymName(), countOps(func));
  for (const std::string &path : *written)
    outs() << "  wrote " << path << "\n";

  if (config->parallel.numRanks() > 1) {
    outs() << tooling::describeSharding(**module, explainSharding);
    if (!explainSharding)
      outs() << "  (--explain-sharding lists each collective and its cause)\n";
    // Codegen below gives one rank's plan: every rank runs the same one,
    // its collectives as Collective steps through the rank's group.
  } else if (explainSharding)
    outs() << "--explain-sharding: one device (parallel.dp = 1): nothing is sharded\n";

  // The modules codegen compiles: the step, or each pipeline stage's whole
  // step (kiln-pipeline-unroll), as that stage's rank processes run it.
  std::vector<std::pair<std::string, mlir::ModuleOp>> units;
  std::vector<mlir::OwningOpRef<mlir::ModuleOp>> stageModules;
  if (config->parallel.pp > 1) {
    outs() << tooling::describePipeline(**module, explainPipeline);
    mlir::PassManager pm(&ctx);
    pm.addPass(createPipelineUnrollPass());
    if (Error err = runPasses(pm, **module, "kiln-pipeline-unroll"))
      return fail("compile", toString(std::move(err)));
    for (int64_t s = 0; s < config->parallel.pp; ++s) {
      mlir::OwningOpRef<mlir::ModuleOp> stage((*module)->clone());
      keepOnlyStage(*stage, s);
      units.push_back({formatv("stage {0}", s).str(), *stage});
      stageModules.push_back(std::move(stage));
    }
    outs() << formatv("codegen: one plan per stage (@stageN_step: the stage's schedule and its "
                      "optimizer step as one function; @stageN_eval), its transfers as NCCL "
                      "send/recv\n");
  } else {
    if (explainPipeline)
      outs() << "--explain-pipeline: one stage (parallel.pp = 1): nothing is pipelined\n";
    units.push_back({"", **module});
  }

  // Codegen: the buffer plan and the CUDA kernels (no GPU needed).
  codegen::CodegenOptions options;
  options.arch = arch;
  options.attentionTiles = attentionTilesOption();
  if (options.arch.empty()) {
    options.arch = "sm_90";
    if (auto dev = cuda::device()) {
      options.arch = dev->arch();
      options.smCount = dev->smCount;
    } else {
      consumeError(dev.takeError());
    }
  }
  for (size_t u = 0; u < units.size(); ++u) {
    const std::string &label = units[u].first;
    auto plan = codegen::compileToPlan(units[u].second, options);
    if (!plan)
      return fail("compile", (label.empty() ? "" : label + ": ") + toString(plan.takeError()));
    size_t steps = 0, gemms = 0, collectives = 0, transfers = 0;
    for (const PlanFunction &f : plan->functions)
      for (const PlanStep &st : f.steps) {
        ++steps;
        gemms += st.kind == PlanStep::Kind::Gemm;
        bool collective = st.kind == PlanStep::Kind::Collective;
        transfers += collective && st.collective.isTransfer();
        collectives += collective && !st.collective.isTransfer();
      }
    outs() << formatv("codegen{0} ({1}): {2} kernels, {3} steps of which {4} GEMMs",
                      label.empty() ? "" : " of " + label, plan->arch, plan->kernels.size(), steps,
                      gemms);
    if (collectives)
      outs() << formatv(", {0} collectives", collectives);
    if (transfers)
      outs() << formatv(", {0} sends and receives", transfers);
    if (collectives && !transfers)
      outs() << " (one rank's plan; the collectives go through the rank's group: NCCL, or "
                "staged through host memory)";
    outs() << "\n";
    for (const std::string &note : plan->notes)
      outs() << "  " << note << "\n";
    outs() << plan->memory.describe();
    if (emit == Emit::Plan || emit == Emit::Cuda) {
      std::string dir = dumpDir;
      if (!label.empty())
        dir += formatv("/stage{0}", u).str();
      if (emit == Emit::Cuda) {
        // Only the sources: kernels/*.cu and the headers they include.
        Plan sources;
        sources.kernels = plan->kernels;
        sources.headers = plan->headers;
        if (Error err = sources.save(dir))
          return fail("compile", toString(std::move(err)));
        sys::fs::remove(dir + "/plan.json");
        outs() << formatv("  wrote {0} kernels to {1}/kernels/\n", plan->kernels.size(), dir);
      } else {
        if (Error err = plan->save(dir))
          return fail("compile", toString(std::move(err)));
        outs() << formatv("  wrote {0}/plan.json and {1} kernels\n", dir, plan->kernels.size());
      }
    }
    if (nvrtc) {
      std::vector<cuda::KernelSource> sources;
      for (const PlanKernel &k : plan->kernels)
        sources.push_back({k.name, k.source});
      cuda::CompileOptions nvrtcOptions;
      nvrtcOptions.arch = plan->arch;
      nvrtcOptions.headers = plan->headers;
      if (!noCache)
        nvrtcOptions.cacheDir = cuda::defaultCacheDir();
      nvrtcOptions.resources = kernelResources;
      cuda::CompileStats stats;
      auto cubins = cuda::compileKernels(sources, nvrtcOptions, &stats);
      if (!cubins)
        return fail("compile", toString(cubins.takeError()));
      outs() << formatv("nvrtc: {0} kernels for {1} ({2} compiled, {3} from the cache) in {4:f2} "
                        "s\n",
                        cubins->size(), plan->arch, stats.compiled, stats.cached, stats.seconds);
      for (const std::string &note : stats.notes)
        outs() << "  nvrtc note: " << note << "\n";
      if (kernelResources) {
        // Spills are local-memory traffic in every step a kernel runs;
        // the instruction count is static (a loop's body counts once).
        outs() << formatv("  {0,-40} {1,9} {2,11} {3,14} {4,12}\n", "kernel", "registers",
                          "stack bytes", "spill st/ld", "instructions");
        for (const cuda::KernelResources &k : stats.kernels)
          outs() << formatv("  {0,-40} {1,9} {2,11} {3,14} {4,12}\n", k.name,
                            k.registers < 0 ? std::string("?") : std::to_string(k.registers),
                            k.stackFrame,
                            std::to_string(k.spillStores) + "/" + std::to_string(k.spillLoads),
                            k.instructions < 0 ? std::string("?") : std::to_string(k.instructions));
      }
    }
  }
  outs() << formatv("compiled in {0:f2} s\n", secondsSince(start));
  return 0;
}

} // namespace kiln::cli
