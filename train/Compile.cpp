//===- Compile.cpp - from a config to IR: the driver behind `kiln compile` -===//

#include "train/Compile.h"

#include "ir/KilnDialect.h"
#include "models/Model.h"
#include "passes/Passes.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassInstrumentation.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>

using namespace mlir;

namespace kiln::tooling {

namespace {

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

/// Writes the module after each selected top-level pass.
class DumpInstrumentation final : public PassInstrumentation {
public:
  DumpInstrumentation(const DumpOptions &options, std::vector<std::string> &written,
                      llvm::Error &error)
      : options_(options), written_(written), error_(error) {}

  void runAfterPass(Pass *pass, Operation *op) override {
    if (!isa<ModuleOp>(op) || error_)
      return;
    ++index_;
    StringRef flag = pass->getArgument();
    bool all = llvm::is_contained(options_.after, "all");
    if (!all && !llvm::is_contained(options_.after, flag.str()))
      return;
    std::string path = llvm::formatv("{0}/{1:02}-{2}.mlir", options_.dir, index_, flag).str();
    if (llvm::Error err = writeIR(op, path)) {
      error_ = std::move(err);
      return;
    }
    written_.push_back(path);
  }

private:
  const DumpOptions &options_;
  std::vector<std::string> &written_;
  llvm::Error &error_;
  int index_ = 0;
};

} // namespace

void loadDialects(MLIRContext &ctx) { ctx.loadDialect<KilnDialect, func::FuncDialect>(); }

llvm::Error writeIR(Operation *op, llvm::StringRef path) {
  if (std::error_code ec = llvm::sys::fs::create_directories(llvm::sys::path::parent_path(path)))
    return error("cannot create directory for '" + path + "': " + ec.message());
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec);
  if (ec)
    return error("cannot write '" + path + "': " + ec.message());
  // Locations name the model scope of every op (loc("h.3.attn")), which is
  // what makes a dump of a 1000-op step readable; kiln-opt parses them back.
  op->print(os, mlir::OpPrintingFlags().enableDebugInfo(/*enable=*/true, /*prettyForm=*/false));
  os << "\n";
  return llvm::Error::success();
}

llvm::Expected<OwningOpRef<ModuleOp>> buildForwardModule(MLIRContext &ctx,
                                                         const RunConfig &config,
                                                         Type floatType) {
  loadDialects(ctx);
  OwningOpRef<ModuleOp> module = ModuleOp::create(UnknownLoc::get(&ctx));
  std::vector<std::string> errors;
  auto forward = models::buildModel(*module, config.meshModel(), config.train.batch_size,
                                   config.seqLen(), floatType, models::GPT2Output::Loss,
                                   "forward", errors);
  if (failed(forward))
    return error("building the " + config.model.kind + " model failed:\n  " +
                 llvm::join(errors, "\n  "));
  return std::move(module);
}

llvm::Expected<std::vector<std::string>> runTrainingPipeline(ModuleOp module,
                                                             const RunConfig &config,
                                                             const DumpOptions &dumps) {
  std::vector<std::string> written;
  llvm::Error dumpError = llvm::Error::success();
  // train.check_numerics: the interpreter and codegen read it from here.
  if (config.train.check_numerics)
    module->setAttr(KilnDialect::kCheckNumericsAttrName, UnitAttr::get(module.getContext()));
  if (config.train.deterministic)
    module->setAttr(KilnDialect::kDeterministicAttrName, UnitAttr::get(module.getContext()));
  if (!dumps.dir.empty()) {
    if (llvm::Error err = writeIR(module, dumps.dir + "/00-frontend.mlir"))
      return std::move(err);
    written.push_back(dumps.dir + "/00-frontend.mlir");
  }
  PassManager pm(module.getContext());
  // The run's options (RunConfig) become the passes' options here, once.
  TrainingPipelineOptions options;
  options.fuseAttention = config.compile.fusesAttention(config.train.precision);
  if (config.compile.fuse) {
    options.fuse->epilogues = config.compile.gemm_epilogues;
    options.fuse->foldCasts = config.compile.fold_casts;
    options.fuse->adamwCopies = config.compile.adamw_copies;
    options.fuse->norms = config.compile.fuse_norms;
    options.fuse->crossEntropy = config.compile.fuse_cross_entropy;
    options.fuse->attentionBias = config.compile.fuse_attention_bias;
    options.fuse->broadcasts = config.compile.fuse_broadcasts;
    options.fuse->siblings = config.compile.fuse_siblings;
    options.fuse->reductions = config.compile.fuse_reductions;
    options.fuse->biasGradEpilogues = config.compile.bias_grad_epilogues;
  } else {
    options.fuse.reset();
  }
  options.precision.policy = config.train.precision;
  options.autodiff.lossScale =
      config.train.precision == "f16-mixed" ? config.train.loss_scale : 0.0;
  AttachOptimizerPassOptions &opt = *options.optimizer;
  opt.beta1 = config.optim.beta1;
  opt.beta2 = config.optim.beta2;
  opt.epsilon = config.optim.eps;
  opt.weightDecay = config.optim.weight_decay;
  opt.decayRoles = {"weight"};
  if (config.optim.decay_embeddings)
    opt.decayRoles.push_back("embedding");
  opt.maxGradNorm = config.optim.grad_clip;
  opt.accumulateSteps = config.microbatches();
  opt.lossScaleGrowthInterval = config.train.loss_scale_growth_interval;
  opt.lossScaleGrowth = config.train.loss_scale_growth;
  opt.lossScaleBackoff = config.train.loss_scale_backoff;
  if (config.parallel.numRanks() > 1) {
    options.sharding.emplace();
    options.sharding->mesh = config.parallel.meshText();
    options.sharding->zero = config.parallel.zero;
    options.sharding->sequenceParallel = config.parallel.sequence_parallel;
    // Accumulation sums over the data-parallel ranks once a step, in the
    // last micro-batch (the pipeline's micro-batches are its own).
    options.sharding->localAccumulation =
        config.train.accumulate_steps > 1 && config.parallel.pp == 1;
    if (config.parallel.bucket_mb > 0) {
      options.buckets.emplace();
      options.buckets->bytes = std::llround(config.parallel.bucket_mb * double(1 << 20));
      // The batch's major axis: dp, or edp with experts over part of the
      // dp ranks (whose dense gradients are summed over "edp,ep").
      options.buckets->axis = config.parallel.batchAxes().front();
    }
  }
  if (config.parallel.pp > 1) {
    options.pipeline.emplace();
    options.pipeline->stages = config.parallel.pp;
    options.pipeline->microbatches = config.parallel.microbatches;
    options.pipeline->schedule = config.parallel.schedule;
    options.pipeline->virtualStages = config.parallel.virtual_stages;
    if (auto cuts = config.parallel.pipelineCuts(); cuts && !config.parallel.pipeline_cuts.empty())
      options.pipeline->cuts.assign(cuts->begin(), cuts->end());
  }
  if (config.train.recompute != "none" || !config.train.memory_budget.empty()) {
    options.recompute.emplace();
    options.recompute->policy = config.train.recompute;
    options.recompute->memoryBudget = config.train.memory_budget;
  }
  buildTrainingPipeline(pm, options);
  if (dumps.planBuffers)
    pm.addPass(createPlanBuffersPass());
  // Every name given to --dump-ir-after must be a pass of the pipeline.
  std::vector<std::string> known{"all"};
  for (mlir::Pass &pass : pm.getPasses())
    if (!llvm::is_contained(known, pass.getArgument().str()))
      known.push_back(pass.getArgument().str());
  for (const std::string &name : dumps.after)
    if (!llvm::is_contained(known, name))
      return error("--dump-ir-after: '" + name + "' is not a pass of the training pipeline (" +
                   llvm::join(known, ", ") + ")");
  if (!dumps.dir.empty())
    pm.addInstrumentation(std::make_unique<DumpInstrumentation>(dumps, written, dumpError));
  llvm::Error result = runPasses(pm, module, "the training pipeline");
  if (dumpError) {
    consumeError(std::move(result));
    return std::move(dumpError);
  }
  consumeError(std::move(dumpError));
  if (result)
    return std::move(result);
  return written;
}

} // namespace kiln::tooling
