//===- Pipelines.cpp - the named pass pipelines of kiln --------------------===//
//
// The whole compiler in one readable place: each pipeline is a commented
// chain of addPass calls (docs/architecture.md §1). Phases arrive with
// their issues; the order here is the order of the training-step path.
//
//===----------------------------------------------------------------------===//

#include "passes/Passes.h"

#include "ir/KilnVersion.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"

#include <mutex>

namespace kiln {

namespace {

/// The pipeline around its three configurable passes (`attachOptimizer` may
/// be null).
void addTrainingPasses(mlir::OpPassManager &pm, bool fuseAttention,
                       const std::optional<FusePassOptions> &fuse,
                       std::unique_ptr<mlir::Pass> assignPrecision,
                       std::unique_ptr<mlir::Pass> autodiff,
                       std::unique_ptr<mlir::Pass> attachOptimizer,
                       const std::optional<PropagateShardingPassOptions> &sharding,
                       std::unique_ptr<mlir::Pass> recompute,
                       const std::optional<PipelinePassOptions> &pipeline,
                       const std::optional<BucketCollectivesPassOptions> &buckets) {
  // Clean up what the frontend emitted (broadcasts of splats, x*1, ...).
  pm.addPass(mlir::createCanonicalizerPass());
  // Linear layers' biases into their matmuls, before precision assignment
  // so a bias is cast with its product.
  pm.addPass(createFuseMatmulBiasPass());
  // Attention written with primitives into kiln.attention (flash kernels,
  // a recomputing backward), before precision assignment and autodiff.
  if (fuseAttention)
    pm.addPass(createFuseAttentionPass());
  // Plugins' rewrites into their kiln.custom_kernel ops, before precision
  // (their precision rule) and autodiff (their VJP).
  addPluginPasses(pm);
  // Low-precision compute where it is safe (a no-op for f32); autodiff
  // inherits the types.
  pm.addPass(std::move(assignPrecision));
  // @forward -> @train_step: loss and one gradient per parameter; the seed
  // is the loss scale with dynamic loss scaling (f16).
  pm.addPass(std::move(autodiff));
  // Clipping, AdamW and gradient accumulation, with in-place updates.
  if (attachOptimizer)
    pm.addPass(std::move(attachOptimizer));
  // The VJP rules build small redundancies (x*c twice, zero splats): fold
  // and share them.
  pm.addPass(mlir::createCanonicalizerPass());
  pm.addPass(mlir::createCSEPass());
  // Biases the VJP rules produced in matmul + add form, if any.
  pm.addPass(createFuseMatmulBiasPass());
  // On a mesh: the model's annotations spread to every value, then the
  // per-rank program with its collectives. After the step is complete (the
  // optimizer's layout matters too), before fusion (regions carry no rule).
  if (sharding) {
    PartitionPassOptions partition;
    partition.function = sharding->function;
    pm.addPass(createPropagateShardingPass(*sharding));
    pm.addPass(createPartitionPass(partition));
  }
  // Keep or recompute what the backward reads (per rank, so a re-gathered
  // activation is a recomputed all_gather). Before fusion, so recomputed
  // elementwise ops fuse into the backward's kernels; it plans candidates
  // with the fusion that follows.
  if (recompute)
    pm.addPass(std::move(recompute));
  // Pipeline stages: the step cut at transformer blocks into one forward,
  // backward and apply function per stage, with send/recv between them.
  // After recompute (a recomputed op is one of the backward's), before
  // fusion (it places single ops).
  if (pipeline)
    pm.addPass(createPipelinePass(*pipeline));
  // GEMM epilogues, then chains of elementwise ops and casts into
  // kiln.fusion regions: one kernel (or cuBLASLt call) each. Last, so it
  // sees the whole step, backward and optimizer.
  if (fuse)
    pm.addPass(createFusePass(*fuse));
  // On a mesh: the gradient sums over dp in buckets of a size, each run as
  // one NCCL group. After fusion (it moves collectives past whole kernels),
  // before the cast runs are marked.
  if (sharding && buckets && buckets->bytes > 0)
    pm.addPass(createBucketCollectivesPass(*buckets));
  // Runs of argument casts (the parameters to the low type) marked to run
  // as one multi-tensor launch each. Last: a pass that moved ops after it
  // would break the runs (codegen refuses a group that is not one).
  pm.addPass(createGroupCastsPass());
}

/// kiln-training-pipeline's textual options: each configurable pass takes
/// its own options, parsed by the pass itself, so Passes.td stays their
/// only declaration:
/// `kiln-training-pipeline{assign-precision={policy=bf16-mixed} attach-optimizer={accumulate-steps=4}}`.
struct TrainingPipelineText : public mlir::PassPipelineOptions<TrainingPipelineText> {
  Option<std::string> assignPrecision{*this, "assign-precision",
                                      llvm::cl::desc("Options of kiln-assign-precision")};
  Option<std::string> autodiff{*this, "autodiff", llvm::cl::desc("Options of kiln-autodiff")};
  Option<std::string> attachOptimizer{*this, "attach-optimizer",
                                      llvm::cl::desc("Options of kiln-attach-optimizer")};
  Option<bool> fuseAttention{*this, "fuse-attention",
                             llvm::cl::desc("Run kiln-fuse-attention"), llvm::cl::init(true)};
  Option<bool> fuse{*this, "fuse", llvm::cl::desc("Run kiln-fuse"), llvm::cl::init(true)};
  Option<bool> epilogues{*this, "gemm-epilogues",
                         llvm::cl::desc("kiln-fuse's epilogues option: fold gelu, gelu_grad, "
                                        "bias-gradient sums and casts into GEMMs"),
                         llvm::cl::init(true)};
  Option<bool> foldCasts{*this, "fold-casts",
                         llvm::cl::desc("kiln-fuse's fold-casts option: bf16/f16 products write f32 "
                                        "instead of a separate widening cast"),
                         llvm::cl::init(true)};
  Option<bool> adamwCopies{*this, "adamw-copies",
                           llvm::cl::desc("kiln-fuse's adamw-copies option: AdamW writes the "
                                          "parameters' bf16/f16 working copies (states)"),
                           llvm::cl::init(true)};
  Option<bool> norms{*this, "fuse-norms",
                     llvm::cl::desc("kiln-fuse's norms option: a norm takes the elementwise "
                                    "ops around it (the residual add)"),
                     llvm::cl::init(true)};
  Option<bool> crossEntropy{*this, "fuse-cross-entropy",
                            llvm::cl::desc("kiln-fuse's cross-entropy option: a cross-entropy "
                                           "and its gradient as one kernel"),
                            llvm::cl::init(true)};
  Option<bool> attentionBias{*this, "fuse-attention-bias",
                             llvm::cl::desc("kiln-fuse's attention-bias option: the qkv bias "
                                            "gradient summed in the attention gradient's kernels"),
                             llvm::cl::init(true)};
  Option<bool> broadcasts{*this, "fuse-broadcasts",
                          llvm::cl::desc("kiln-fuse's broadcasts option: loop fusions read a "
                                         "broadcast's operand through its index map"),
                          llvm::cl::init(true)};
  Option<bool> biasGradEpilogues{
      *this, "bias-grad-epilogues",
      llvm::cl::desc("kiln-fuse's bias-grad-epilogues option: a weight gradient's GEMM sums "
                     "the bias gradient (BGRADA; off, as compile.bias_grad_epilogues)"),
      llvm::cl::init(false)};
  Option<bool> siblings{*this, "fuse-siblings",
                        llvm::cl::desc("kiln-fuse's siblings option: groups reading the same "
                                       "value fuse"),
                        llvm::cl::init(true)};
  Option<bool> reductions{*this, "fuse-reductions",
                          llvm::cl::desc("kiln-fuse's reductions option: a reduction ends a "
                                         "loop fusion"),
                          llvm::cl::init(true)};
  Option<std::string> recompute{*this, "recompute",
                                llvm::cl::desc("Options of kiln-recompute (runs only when given: "
                                               "recompute={policy=selective})")};
  Option<std::string> mesh{*this, "mesh",
                           llvm::cl::desc("Partition over this mesh (dp=2,tp=1) with "
                                          "kiln-propagate-sharding and kiln-partition; empty: "
                                          "one device")};
  Option<int64_t> zero{*this, "zero", llvm::cl::desc("With mesh: the ZeRO stage (0-3)"),
                       llvm::cl::init(0)};
  Option<int64_t> bucketBytes{*this, "bucket-bytes",
                              llvm::cl::desc("With mesh: kiln-bucket-collectives' bytes (0, the "
                                             "default here: each sum alone)"),
                              llvm::cl::init(0)};
  Option<bool> sequenceParallel{*this, "sequence-parallel",
                                llvm::cl::desc("With mesh: split the sequence over tp where "
                                               "tensor parallelism leaves activations whole"),
                                llvm::cl::init(false)};
  Option<bool> optimizer{*this, "optimizer",
                         llvm::cl::desc("Attach the optimizer (false: the step returns gradients)"),
                         llvm::cl::init(true)};
};

/// kiln-recompute's options that say how kiln-fuse runs after it.
std::string fuseOptionsText(const std::optional<FusePassOptions> &fuse) {
  if (!fuse)
    return "fuse=false";
  return std::string("fuse=true epilogues=") + (fuse->epilogues ? "true" : "false") +
         " fold-casts=" + (fuse->foldCasts ? "true" : "false") +
         " adamw-copies=" + (fuse->adamwCopies ? "true" : "false") +
         " norms=" + (fuse->norms ? "true" : "false") +
         " cross-entropy=" + (fuse->crossEntropy ? "true" : "false") +
         " attention-bias=" + (fuse->attentionBias ? "true" : "false") +
         " broadcasts=" + (fuse->broadcasts ? "true" : "false") +
         " siblings=" + (fuse->siblings ? "true" : "false") +
         " reductions=" + (fuse->reductions ? "true" : "false") +
         " bias-grad-epilogues=" + (fuse->biasGradEpilogues ? "true" : "false");
}

/// kiln-recompute from its options, told how kiln-fuse and
/// kiln-bucket-collectives run after it (`pipelined`: after kiln-pipeline,
/// where kiln-fuse forms no working copies).
std::unique_ptr<mlir::Pass>
recomputePass(std::optional<RecomputePassOptions> options,
              const std::optional<FusePassOptions> &fuse,
              const std::optional<BucketCollectivesPassOptions> &buckets, bool pipelined) {
  if (!options)
    return nullptr;
  options->bucketBytes = buckets ? static_cast<int64_t>(buckets->bytes) : 0;
  options->fuse = fuse.has_value();
  if (fuse) {
    options->epilogues = fuse->epilogues;
    options->foldCasts = fuse->foldCasts;
    options->adamwCopies = fuse->adamwCopies && !pipelined;
    options->embeddingInit = fuse->embeddingInit;
    options->norms = fuse->norms;
    options->crossEntropy = fuse->crossEntropy;
    options->attentionBias = fuse->attentionBias;
    options->broadcasts = fuse->broadcasts;
    options->siblings = fuse->siblings;
    options->reductions = fuse->reductions;
    options->biasGradEpilogues = fuse->biasGradEpilogues;
  }
  return createRecomputePass(*options);
}

mlir::LogicalResult buildFromText(mlir::OpPassManager &pm, llvm::StringRef text,
                                  llvm::function_ref<mlir::LogicalResult(const llvm::Twine &)> fail) {
  TrainingPipelineText options;
  if (mlir::failed(options.parseFromString(text)))
    return fail("kiln-training-pipeline: cannot parse its options '" + text + "'");
  std::unique_ptr<mlir::Pass> precision = createAssignPrecisionPass(),
                              autodiff = createAutodiffPass(),
                              optimizer = options.optimizer ? createAttachOptimizerPass() : nullptr;
  for (auto [pass, text] : {std::pair{precision.get(), &options.assignPrecision},
                            std::pair{autodiff.get(), &options.autodiff},
                            std::pair{optimizer.get(), &options.attachOptimizer}})
    if (pass && mlir::failed(pass->initializeOptions(text->getValue(), fail)))
      return mlir::failure();
  std::optional<PropagateShardingPassOptions> sharding;
  if (!options.mesh.empty()) {
    sharding.emplace();
    sharding->mesh = options.mesh;
    sharding->zero = options.zero;
    sharding->sequenceParallel = options.sequenceParallel;
  }
  std::optional<FusePassOptions> fuse;
  if (options.fuse) {
    fuse.emplace();
    fuse->epilogues = options.epilogues;
    fuse->foldCasts = options.foldCasts;
    fuse->adamwCopies = options.adamwCopies;
    fuse->norms = options.norms;
    fuse->crossEntropy = options.crossEntropy;
    fuse->attentionBias = options.attentionBias;
    fuse->broadcasts = options.broadcasts;
    fuse->siblings = options.siblings;
    fuse->reductions = options.reductions;
    fuse->biasGradEpilogues = options.biasGradEpilogues;
  }
  if (options.bucketBytes < 0)
    return fail("kiln-training-pipeline: bucket-bytes = " +
                llvm::Twine(static_cast<int64_t>(options.bucketBytes)) + " is negative");
  const int64_t bucketBytes = options.mesh.empty() ? 0 : static_cast<int64_t>(options.bucketBytes);
  std::unique_ptr<mlir::Pass> recompute;
  if (options.recompute.hasValue()) {
    // It plans candidates with the fusion and buckets that follow it; the
    // user's own options come last and win.
    recompute = createRecomputePass();
    std::string text = fuseOptionsText(fuse) + " bucket-bytes=" + std::to_string(bucketBytes) +
                       " " + options.recompute.getValue();
    if (mlir::failed(recompute->initializeOptions(text, fail)))
      return mlir::failure();
  }
  std::optional<BucketCollectivesPassOptions> buckets;
  if (bucketBytes > 0) {
    buckets.emplace();
    buckets->bytes = bucketBytes;
  }
  addTrainingPasses(pm, options.fuseAttention, fuse, std::move(precision), std::move(autodiff),
                    std::move(optimizer), sharding, std::move(recompute), std::nullopt, buckets);
  return mlir::success();
}

} // namespace

void buildTrainingPipeline(mlir::OpPassManager &pm, const TrainingPipelineOptions &options) {
  addTrainingPasses(
      pm, options.fuseAttention, options.fuse, createAssignPrecisionPass(options.precision),
      createAutodiffPass(options.autodiff),
      options.optimizer ? createAttachOptimizerPass(*options.optimizer) : nullptr, options.sharding,
      recomputePass(options.recompute, options.fuse,
                    options.sharding ? options.buckets : std::nullopt,
                    options.pipeline.has_value()),
      options.pipeline, options.buckets);
}

llvm::Error runPasses(mlir::PassManager &pm, mlir::ModuleOp module, llvm::StringRef what) {
  std::string diagnostics;
  mlir::ScopedDiagnosticHandler handler(module.getContext(), [&](mlir::Diagnostic &diag) {
    llvm::raw_string_ostream os(diagnostics);
    // A module-level error (an option, a budget) has no place to point at.
    if (!mlir::isa<mlir::UnknownLoc>(diag.getLocation()))
      os << diag.getLocation() << ": ";
    os << diag.str() << "\n";
    return mlir::success();
  });
  if (mlir::succeeded(pm.run(module)))
    return llvm::Error::success();
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 what + " failed:\n" + llvm::StringRef(diagnostics).rtrim());
}

namespace {
struct PluginPasses {
  std::mutex mutex;
  std::vector<std::function<std::unique_ptr<mlir::Pass>()>> factories;
};
PluginPasses &pluginPasses() {
  static PluginPasses p;
  return p;
}
} // namespace

void registerPluginPass(std::function<std::unique_ptr<mlir::Pass>()> factory) {
  PluginPasses &p = pluginPasses();
  std::lock_guard<std::mutex> lock(p.mutex);
  p.factories.push_back(std::move(factory));
}

void addPluginPasses(mlir::OpPassManager &pm) {
  PluginPasses &p = pluginPasses();
  std::lock_guard<std::mutex> lock(p.mutex);
  for (auto &make : p.factories) {
    std::unique_ptr<mlir::Pass> pass = make();
    // A pass on functions runs nested in the module; one on another op
    // would fail the pass manager, so it is left to kiln-opt.
    std::optional<llvm::StringRef> anchor = pass->getOpName();
    if (anchor && *anchor == mlir::func::FuncOp::getOperationName())
      pm.nest<mlir::func::FuncOp>().addPass(std::move(pass));
    else if (!anchor || *anchor == mlir::ModuleOp::getOperationName())
      pm.addPass(std::move(pass));
  }
}

const char *toolKilnVersion() { return KILN_VERSION_STRING; }
unsigned toolPluginApiVersion() { return KILN_PLUGIN_API_VERSION; }

std::vector<std::string> pluginPassNames() {
  PluginPasses &p = pluginPasses();
  std::lock_guard<std::mutex> lock(p.mutex);
  std::vector<std::string> names;
  for (auto &make : p.factories)
    names.push_back(make()->getArgument().str());
  return names;
}

void registerKilnPipelines() {
  mlir::registerPassPipeline(
      "kiln-training-pipeline",
      "Build the training step from @forward: canonicalize, fuse-matmul-bias, fuse-attention, "
      "assign-precision, autodiff, attach-optimizer, canonicalize, cse, fuse-matmul-bias, "
      "[propagate-sharding, partition,] [recompute,] fuse, [bucket-collectives,] group-casts "
      "(options: assign-precision={...} autodiff={...} "
      "attach-optimizer={...} recompute={...}, each the pass's own; fuse-attention=false; "
      "fuse=false; "
      "gemm-epilogues=false; fold-casts=false; adamw-copies=false; "
      "optimizer=false; mesh=dp=2 zero=N sequence-parallel=true bucket-bytes=N)",
      buildFromText, [](llvm::function_ref<void(const mlir::detail::PassOptions &)> print) {
        print(TrainingPipelineText());
      });
}

} // namespace kiln
