//===- Estimate.cpp - `kiln estimate`: params, FLOPs, memory, tokens -------===//
//
// Formulas (the sources are named in the output and in docs/training.md):
//   parameters          N, counted from the config (models/GPT2.cpp)
//   training FLOPs/token 6N + 12·L·d·T   (PaLM, Chowdhery et al. 2022, App. B:
//                        6N for the matmuls of forward and backward, 12·L·d·T
//                        for attention scores and values, no causal halving)
//   model states/GPU    f32: 4N weights + 4N grads + 8N Adam moments;
//                       bf16/f16-mixed: 2N + 2N + 12N (f32 master, m, v)
//                       (ZeRO, Rajbhandari et al. 2020, §3.1); ZeRO stage 1
//                       divides the optimizer states by the data-parallel
//                       degree, stage 2 also the gradients, stage 3 also
//                       the weights
//   activations         s·b·h·(34 + 5·a·s/h) bytes per layer with 16-bit
//                       activations (Korthikanti et al. 2022, eq. 1; for
//                       Llama 16·s·b·h + 6·s·b·I + 4·a·s²·b, derived the
//                       same way: no dropout, SwiGLU, see below), ×2 in
//                       f32; the 5·a·s/h term (the attention scores and
//                       probabilities) drops when attention is fused
//                       (kiln-fuse-attention: they are never stored); with
//                       full recompute 2·s·b·h per layer (the layer inputs)
//                       plus one layer's activations; plus the f32 logits and
//                       their gradient, 8·s·b·V
//   buffer plan         the exact arena of one GPU at dp 1: the training
//                       step compiled and planned (kiln-plan-buffers), and
//                       the same under each train.recompute policy
//                       (kiln-recompute: the recomputed ops' FLOPs)
//   Chinchilla tokens   ≈ 20·N (Hoffmann et al. 2022)
//
//===----------------------------------------------------------------------===//

#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"

#include "codegen/PlanBuilder.h"
#include "ir/KilnOps.h"
#include "ir/PipelineSchedule.h"
#include "models/Model.h"
#include "passes/Passes.h"
#include "train/Compile.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>

using namespace llvm;

namespace kiln::cli {

// A list, so that a second positional argument is this command's error
// rather than llvm::cl's: `--ep 2` (ValueOptional) reads 2 as one.
static cl::list<std::string> positional(cl::Positional, cl::desc("<config.toml>"), cl::OneOrMore,
                                        cl::sub(estimateCommand()), cl::cat(kilnCategory()));
static cl::opt<int64_t> dp("dp",
                           cl::desc("Data-parallel degree (for the ZeRO columns; default: the "
                                    "config's parallel.dp when it is over 1, else 8)"),
                           cl::init(8), cl::sub(estimateCommand()), cl::cat(kilnCategory()));
static cl::opt<int64_t> tp("tp", cl::desc("Tensor-parallel degree (for the partitioned plan)"),
                           cl::init(1), cl::sub(estimateCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> expertParallel(
    "ep", cl::ValueOptional, cl::value_desc("N"),
    cl::desc("A mixture of experts' experts split in the per-rank plan: --ep over the --dp ranks "
             "(parallel.ep = dp), --ep=N over groups of N of them (N dividing --dp)"),
    cl::sub(estimateCommand()), cl::cat(kilnCategory()));
static cl::opt<int> zeroStage("zero",
                              cl::desc("Only this ZeRO stage (0-3) in the per-GPU table and the "
                                       "per-rank plan (default: every stage)"),
                              cl::value_desc("K"), cl::init(-1), cl::sub(estimateCommand()),
                              cl::cat(kilnCategory()));
static cl::opt<double> gpuMemory("gpu-memory", cl::desc("GPU memory in GiB to compare against"),
                                 cl::init(141.0), cl::sub(estimateCommand()),
                                 cl::cat(kilnCategory()));

static std::string gib(double bytes) { return formatv("{0:f2} GiB", bytes / (1024.0 * 1024 * 1024)); }

static std::string sci(double v) { return formatv("{0:e3}", v); }

/// The buffer plan of one rank, and what kiln-recompute added to @train_step
/// (0 when it did not run).
struct RankPlan {
  PlanMemory memory;
  double recomputedOps = 0, recomputedFlops = 0, stepFlops = 0;
  int64_t stage = -1; ///< with parallel.pp > 1: the pipeline stage planned (the largest)
};

/// `config` partitioned over its [parallel] mesh (if any) and planned as
/// kiln train plans it (codegen::compileToPlan: kiln-plan-buffers, and the
/// workspace grown to the kernels' partial sums where they need more). A
/// pipelined step (parallel.pp > 1) is unrolled (kiln-pipeline-unroll) and
/// each stage's functions compiled alone, as its rank processes run them;
/// the largest stage's plan is returned (RankPlan::stage).
static Expected<RankPlan> rankPlan(const RunConfig &config) {
  mlir::MLIRContext ctx;
  auto module = tooling::buildForwardModule(ctx, config, mlir::Float32Type::get(&ctx));
  if (!module)
    return module.takeError();
  auto written = tooling::runTrainingPipeline(**module, config, {});
  if (!written)
    return written.takeError();
  if (config.parallel.pp > 1) {
    mlir::PassManager pm(&ctx);
    pm.addPass(createPipelineUnrollPass());
    if (Error err = runPasses(pm, **module, "kiln-pipeline-unroll"))
      return std::move(err);
    RankPlan largest;
    for (int64_t s = 0; s < config.parallel.pp; ++s) {
      mlir::OwningOpRef<mlir::ModuleOp> stage((*module)->clone());
      keepOnlyStage(*stage, s);
      auto compiled = codegen::compileToPlan(*stage, codegen::CodegenOptions());
      if (!compiled)
        return compiled.takeError();
      if (largest.stage < 0 || compiled->memory.total > largest.memory.total) {
        largest.memory = compiled->memory;
        largest.stage = s;
      }
    }
    return largest;
  }
  auto compiled = codegen::compileToPlan(**module, codegen::CodegenOptions());
  if (!compiled)
    return compiled.takeError();
  RankPlan plan{compiled->memory};
  auto step = (*module)->lookupSymbol<mlir::func::FuncOp>("train_step");
  if (auto rc = step ? step->getAttrOfType<mlir::DictionaryAttr>(KilnDialect::kRecomputeAttrName)
                     : nullptr) {
    auto number = [&](llvm::StringRef key) -> double {
      auto a = rc.getAs<mlir::IntegerAttr>(key);
      return a ? static_cast<double>(a.getInt()) : 0.0;
    };
    plan.recomputedOps = number("ops");
    plan.recomputedFlops = number("flops");
    plan.stepFlops = number("step_flops");
  }
  return plan;
}

int runEstimate() {
  if (positional.size() > 1) {
    int64_t n = 0;
    if (expertParallel.getNumOccurrences() && expertParallel.empty() &&
        !StringRef(positional[1]).getAsInteger(10, n))
      return fail("estimate", formatv("write --ep={0}: with a space, {0} reads as a second config",
                                      positional[1]));
    return fail("estimate",
                formatv("takes one config, not {0} ({1}, {2}{3})", positional.size(), positional[0],
                        positional[1], positional.size() > 2 ? ", ..." : ""));
  }
  const std::string &configPath = positional[0];
  if (dp < 1 || tp < 1)
    return fail("estimate", "--dp and --tp must be at least 1");
  if (zeroStage.getNumOccurrences() && (zeroStage < 0 || zeroStage > 3))
    return fail("estimate",
                formatv("--zero={0}: ZeRO stages are 0, 1, 2 and 3", zeroStage.getValue()).str());
  auto wanted = [&](int stage) { return zeroStage < 0 || zeroStage == stage; };
  // --tp is parallel.tp: the config is validated with it (sequence
  // parallelism needs tp > 1); without --tp, the config's own tp.
  std::vector<std::string> overrides(setOverrides().begin(), setOverrides().end());
  if (tp.getNumOccurrences())
    overrides.push_back("parallel.tp=" + std::to_string(tp.getValue()));
  auto config = loadConfig(configPath, overrides);
  if (!config)
    return fail("estimate", toString(config.takeError()));
  const int64_t tpRanks = config->parallel.tp;
  // The data-parallel ranks: --dp, each running train.batch_size; without
  // it the config's own parallel.dp when it has one, as kiln train runs it
  // (train.batch_size is then the global batch, split over the ranks: each
  // rank's micro-batch is its share), else 8 for the ZeRO columns.
  const bool configRanks = !dp.getNumOccurrences() && config->parallel.dp > 1;
  const int64_t ranks = configRanks ? config->parallel.dp : dp.getValue();
  const int64_t globalBatch = config->train.batch_size;
  if (configRanks) // (validated: a multiple of parallel.dp)
    config->train.batch_size = globalBatch / ranks;
  if (!(gpuMemory > 0) || !std::isfinite(gpuMemory))
    return fail("estimate", "--gpu-memory must be a positive number of GiB");
  const ModelConfig &m = config->model;
  const double N = static_cast<double>(models::paramCount(m, false));
  const double L = m.n_layer, d = m.n_embd, a = m.n_head, V = m.paddedVocab();
  const double T = config->seqLen(), b = config->train.batch_size;
  const double flopsPerToken = models::trainingFlopsPerToken(m, config->seqLen());
  const double tokensPerStep = b * T * config->microbatches() * ranks;
  const bool mixed = config->train.precision != "f32";

  outs() << formatv("kiln estimate: {0} — {1} layers, {2} heads, width {3}, vocab {4} (padded "
                    "{5}), sequence {6}\n\n",
                    configPath, m.n_layer, m.n_head, m.n_embd, m.vocab_size, m.paddedVocab(),
                    config->seqLen());
  outs() << formatv("parameters            {0} (N; {1} with the padded vocabulary)\n",
                    withCommas(static_cast<int64_t>(N)),
                    withCommas(models::paramCount(m, true)));
  if (m.moe.enabled())
    outs() << formatv("active parameters     {0} (the router and the top {1} of {2} experts a "
                      "token runs through: the N of the FLOPs)\n",
                      withCommas(m.kind == "llama" ? models::llamaParamCount(m, false, true)
                                                   : models::gpt2ParamCount(m, false, true)),
                      m.moe.top_k, m.moe.experts);
  outs() << formatv("FLOPs per token       {0} = 6N + 12·L·d·T (training; PaLM App. B)\n",
                    sci(flopsPerToken));
  outs() << formatv("FLOPs per step        {0} ({1} tokens: batch {2} x {3} x {4} micro-batches "
                    "x dp {5})\n",
                    sci(flopsPerToken * tokensPerStep),
                    withCommas(static_cast<int64_t>(tokensPerStep)), config->train.batch_size,
                    config->seqLen(), config->train.accumulate_steps, ranks);
  outs() << formatv("Chinchilla tokens     {0} (≈ 20·N, Hoffmann et al. 2022) = {1} steps of "
                    "this config\n\n",
                    sci(20 * N), withCommas(static_cast<int64_t>(20 * N / tokensPerStep)));

  // Model states per GPU by ZeRO stage.
  double weights = (mixed ? 2 : 4) * N, grads = (mixed ? 2 : 4) * N, optim = (mixed ? 12 : 8) * N;
  double actBytes = mixed ? 1.0 : 2.0; // the 16-bit formula, ×2 in f32
  const bool flash = config->compile.fusesAttention(config->train.precision);
  // Llama (no dropout, no biases): per layer the two norm inputs and
  // outputs, q, the key/value heads broadcast to every query head (kiln
  // stores them so), the attention output — 16·s·b·h — and SwiGLU's gate,
  // up and their product, 6·s·b·I; the scores and probabilities 4·a·s²·b
  // when attention is not fused (no dropout mask). Derived the way
  // Korthikanti et al. derive eq. 1.
  const bool llama = m.kind == "llama";
  double perLayer =
      llama ? (T * b * (16 * d + 6 * static_cast<double>(m.intermediate_size)) +
               (flash ? 0 : 4 * a * T * T * b)) *
                  actBytes
            : T * b * d * (34 + (flash ? 0 : 5 * a * T / d)) * actBytes;
  double logits = 8 * T * b * V;
  double actFull = L * perLayer + logits;
  double actRecompute = L * 2 * T * b * d * actBytes + perLayer + logits;
  outs() << formatv("memory per GPU ({0}, micro-batch {1}, dp {2}; compare {3:f0} GiB):\n",
                    config->train.precision, config->train.batch_size, ranks, gpuMemory.getValue());
  // kiln train's train.batch_size is the global batch, split over dp; with
  // --dp it is one rank's here (the ZeRO paper's convention), which a user
  // comparing with a run should know.
  if (configRanks)
    outs() << formatv("  (parallel.dp = {0} from the config: train.batch_size = {1} is the global "
                      "batch, {2} a rank, as kiln train splits it)\n",
                      ranks, globalBatch, config->train.batch_size);
  else if (ranks > 1)
    outs() << formatv("  (train.batch_size = {0} is one rank's micro-batch here; kiln train "
                      "splits train.batch_size over parallel.dp, so this is a run with "
                      "train.batch_size = {1} and parallel.dp = {2})\n",
                      config->train.batch_size, config->train.batch_size * ranks, ranks);
  outs() << formatv("  {0,-8} {1,12} {2,12} {3,12} {4,14} {5,14} {6,14}\n", "ZeRO", "params",
                    "grads", "optimizer", "activations", "act.+recompute", "total (no rec.)");
  for (int stage = 0; stage <= 3; ++stage) {
    if (!wanted(stage))
      continue;
    double w = stage >= 3 ? weights / ranks : weights, g = stage >= 2 ? grads / ranks : grads,
           o = stage >= 1 ? optim / ranks : optim;
    double total = w + g + o + actFull;
    outs() << formatv("  {0,-8} {1,12} {2,12} {3,12} {4,14} {5,14} {6,14}{7}\n", stage, gib(w),
                      gib(g), gib(o), gib(actFull), gib(actRecompute), gib(total),
                      total > gpuMemory * 1024.0 * 1024 * 1024 ? "  (does not fit)" : "");
  }
  outs() << (llama ? "\nactivations: 16·s·b·h + 6·s·b·I per layer (eq. 1 of Korthikanti et al. "
                    "2022 redone for Llama's blocks)"
                  : "\nactivations: Korthikanti et al. 2022 eq. 1 per layer")
         << (flash ? " without the attention scores (fused attention stores none)" : "")
         << ", plus f32 logits and their gradient.\n";

  // The exact plan for one GPU (what `kiln train` allocates at dp 1).
  mlir::MLIRContext ctx;
  RunConfig single = *config;
  single.parallel = ParallelConfig();
  auto module = tooling::buildForwardModule(ctx, single, mlir::Float32Type::get(&ctx));
  if (!module)
    return fail("estimate", toString(module.takeError()));
  auto written = tooling::runTrainingPipeline(**module, single, {});
  if (!written)
    return fail("estimate", toString(written.takeError()));
  auto plan = codegen::compileToPlan(**module, codegen::CodegenOptions());
  if (!plan)
    return fail("estimate", toString(plan.takeError()));
  const PlanMemory &mem = plan->memory;
  outs() << formatv("buffer plan (one GPU, dp 1, kiln-plan-buffers): {0} in one arena: parameters "
                    "{1}, optimizer states {2}, workspace {3}, temporaries {4} (activations and "
                    "gradients at the peak)\n",
                    gib(mem.total), gib(mem.params), gib(mem.states), gib(mem.workspace),
                    gib(mem.scratch));

  if (std::string line = describeRecompute(
          (*module)->lookupSymbol<mlir::func::FuncOp>("train_step"));
      !line.empty())
    outs() << "  " << line << "\n";

  // What each recompute policy would plan (kiln-recompute, the same
  // pipeline otherwise).
  outs() << "recompute policies (train.recompute; the same plan, one GPU):\n";
  for (const char *policy : {"none", "selective", "full"}) {
    RunConfig c = single;
    c.train.recompute = policy;
    c.train.memory_budget.clear();
    auto p = rankPlan(c);
    if (!p)
      return fail("estimate", toString(p.takeError()));
    outs() << formatv("  {0,-10} {1,12}  temporaries {2,12}  recomputes {3,5:f0} ops, +{4:f1} GFLOP "
                      "a step (+{5:f1} %)\n",
                      policy, gib(p->memory.total), gib(p->memory.scratch), p->recomputedOps,
                      p->recomputedFlops / 1e9,
                      p->stepFlops > 0 ? 100 * p->recomputedFlops / p->stepFlops : 0.0);
  }

  // The same plan for one rank of the mesh: the step partitioned (each rank
  // still runs micro-batch b), then planned.
  const bool epGiven = expertParallel.getNumOccurrences() > 0;
  if (epGiven && !m.moe.enabled())
    return fail("estimate", "--ep splits a mixture of experts' experts: the config has no moe.experts");
  // (From the config, with its parallel.dp: its parallel.ep.)
  int64_t epRanks = configRanks && !epGiven ? std::max<int64_t>(1, config->parallel.ep) : 1;
  if (epGiven) {
    epRanks = ranks;
    if (!expertParallel.empty() && (StringRef(expertParallel).getAsInteger(10, epRanks) ||
                                    epRanks < 1 || ranks % epRanks != 0))
      return fail("estimate", formatv("--ep={0}: expected a number of ranks dividing --dp = {1}",
                                      expertParallel.getValue(), ranks)
                                  .str());
  }
  if (ranks * tpRanks > 1) {
    outs() << formatv(
        "buffer plan per rank on dp {0} x tp {1}{2}{3} (the step partitioned, then "
        "kiln-plan-buffers; kiln train runs it on CPU threads, or one process per rank "
        "with --ranks N or --gpus N):\n",
        ranks, tpRanks, config->parallel.sequence_parallel ? " with sequence parallelism" : "",
        epRanks == 1       ? ""
        : epRanks == ranks ? " with the experts split over dp"
                           : formatv(" with the experts split over ep {0} (edp {1} x ep {0})",
                                     epRanks, ranks / epRanks)
                                 .str());
    // ZeRO 2 plans as ZeRO 1: the gradients are reduce-scattered into the
    // split accumulators either way.
    for (int zero : {0, 1, 3}) {
      if (!wanted(zero) && !(zero == 1 && wanted(2)))
        continue;
      RunConfig c = *config;
      c.parallel.dp = ranks;
      c.parallel.tp = tpRanks;
      c.parallel.zero = zero;
      c.train.batch_size = config->train.batch_size * ranks;
      // A mixture of experts: each rank routes the groups one device would.
      c.model.moe.groups = config->model.moe.groups * ranks;
      c.parallel.ep = epRanks;
      if (Error err = c.validate("--dp/--tp"))
        return fail("estimate", toString(std::move(err)));
      auto rank = rankPlan(c);
      if (!rank)
        return fail("estimate", toString(rank.takeError()));
      outs() << formatv(
          "  ZeRO {0,-7} {1}: parameters {2}, optimizer states {3}, workspace {4}, "
          "temporaries {5}{6}\n",
          zero == 1 ? (zeroStage < 0 ? "1 and 2" : std::to_string(zeroStage.getValue()))
                    : std::to_string(zero),
          gib(rank->memory.total), gib(rank->memory.params), gib(rank->memory.states),
          gib(rank->memory.workspace), gib(rank->memory.scratch),
          rank->stage < 0
              ? std::string()
              : formatv(" (stage {0}, the largest of the {1})", rank->stage, config->parallel.pp)
                    .str());
    }
  }
  return 0;
}

} // namespace kiln::cli
