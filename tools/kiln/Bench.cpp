//===- Bench.cpp - `kiln bench`: time a training step on the GPU -----------===//
//
// What bench/ compares with PyTorch, measured the way `kiln train` runs:
//
//   compile   IR build and passes, codegen, NVRTC (cold: nothing cached;
//             warm: every cubin from the cache), loading the cubins, the
//             arena, GEMM algorithms (autotuned cold, cached warm) — not
//             the initial parameters, reported apart as `init`;
//   step      wall time of @train_step through the Backend (inputs copied
//             in, the CUDA graph replayed, loss and grad norm copied out,
//             synchronized) — the median of --steps runs after --warmup;
//   gpu       the same step's graph replays alone, timed with CUDA events;
//   memory    the arena (exact, from the buffer plan) and the device memory
//             in use after loading (arena + CUDA context + cuBLASLt);
//   MFU       model FLOPs per step (6·N·tokens + 12·L·d·T·tokens, N the
//             parameters without vocabulary padding, as nanoGPT and the
//             PaLM paper count them) over step time and the device's peak
//             (--peak-tflops, else the device's own dense rate for the
//             precision: runtime/cuda/DevicePeak.cpp).
//
// --profile FILE runs the step eagerly with an event after every kernel and
// writes each step's time, then prints where the time goes: by IR op and by
// kernel (identical kernels of different layers are one kernel).
//
// --all-reduce --gpus N times kiln.all_reduce alone over N rank processes
// (BenchCollectives.cpp).
//
// --gemms FILE writes every distinct GEMM of the step with its time through
// kiln's cuBLASLt path, for `bench/torch_gpt2.py gemms` to run the same
// shapes through torch.matmul.
//
//===----------------------------------------------------------------------===//

#include "tools/kiln/BenchAttention.h"
#include "tools/kiln/BenchCollectives.h"
#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"

#include "models/Model.h"
#include "runtime/Random.h"
#include "runtime/cuda/CudaApi.h"
#include "runtime/cuda/DevicePeak.h"
#include "train/Compile.h"
#include "train/Loop.h"

#include "mlir/IR/MLIRContext.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <chrono>
#include <map>

using namespace llvm;

namespace kiln::cli {

static cl::opt<std::string> configPath(cl::Positional, cl::desc("<config.toml>"), cl::Optional,
                                       cl::sub(benchCommand()), cl::cat(kilnCategory()));
static cl::opt<int> steps("steps", cl::desc("Timed steps (default 20)"), cl::init(20),
                          cl::sub(benchCommand()), cl::cat(kilnCategory()));
static cl::opt<int> warmup("warmup", cl::desc("Untimed steps first (default 3)"), cl::init(3),
                           cl::sub(benchCommand()), cl::cat(kilnCategory()));
static cl::opt<double> peakTflops("peak-tflops",
                                  cl::desc("Device peak for MFU in TFLOP/s (default: the device's "
                                           "own dense rate for the precision, from its datasheet "
                                           "or SMs x clock)"),
                                  cl::init(0.0), cl::sub(benchCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> gemmsPath("gemms",
                                      cl::desc("Write each distinct GEMM of the step, timed, "
                                               "as JSON"),
                                      cl::value_desc("file"), cl::sub(benchCommand()),
                                      cl::cat(kilnCategory()));
static cl::opt<int>
    gemmCandidates("gemm-candidates",
                   cl::desc("Time this many of cuBLASLt's algorithms for each GEMM "
                            "shape and keep the fastest (default 32, as kiln train)"),
                   cl::init(cuda::ExecutorOptions{}.gemmCandidates), cl::sub(benchCommand()),
                   cl::cat(kilnCategory()));
static cl::opt<std::string> profilePath("profile",
                                        cl::desc("Time every step of the training step alone and "
                                                 "write the profile as JSON; print the largest"),
                                        cl::value_desc("file"), cl::sub(benchCommand()),
                                        cl::cat(kilnCategory()));
static cl::opt<std::string> jsonPath("json", cl::desc("Write the results as JSON"),
                                     cl::value_desc("file"), cl::sub(benchCommand()),
                                     cl::cat(kilnCategory()));

static double seconds(std::chrono::steady_clock::time_point from) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - from).count();
}

static Error writeJSON(StringRef path, json::Value value) {
  std::error_code ec;
  raw_fd_ostream os(path, ec);
  if (ec)
    return createStringError(inconvertibleErrorCode(), "cannot write '" + path + "': " + ec.message());
  os << formatv("{0:2}", value) << "\n";
  return Error::success();
}

/// --profile: each step timed alone, summed by IR op and by kernel.
static Error writeProfile(cuda::CudaExecutor &executor, double graphMs) {
  auto timings = executor.profile("train_step", 5);
  if (!timings)
    return timings.takeError();
  struct Group {
    std::string name, firstOp;
    int count = 0;
    double ms = 0;
  };
  auto groupBy = [&](auto keyOf) {
    std::map<std::string, Group> groups;
    for (const auto &t : *timings) {
      Group &g = groups[keyOf(t)];
      if (g.count++ == 0) {
        g.name = keyOf(t);
        g.firstOp = t.op;
      }
      g.ms += t.ms;
    }
    std::vector<Group> sorted;
    for (auto &entry : groups)
      sorted.push_back(entry.second);
    std::sort(sorted.begin(), sorted.end(), [](const Group &a, const Group &b) { return a.ms > b.ms; });
    return sorted;
  };
  double total = 0;
  for (const auto &t : *timings)
    total += t.ms;
  auto opName = [](const cuda::CudaExecutor::StepTiming &t) { return t.op.substr(0, t.op.find(' ')); };
  auto byOp = groupBy(opName);
  auto byKernel = groupBy([](const cuda::CudaExecutor::StepTiming &t) { return t.kernel; });

  outs() << formatv("  profile: {0} steps, {1:f2} ms eager with an event after each ({2:f2} ms as "
                    "one graph)\n",
                    timings->size(), total, graphMs);
  outs() << "    by IR op                          steps        ms      %\n";
  for (const Group &g : byOp)
    outs() << formatv("    {0,-32} {1,6} {2,9:f2} {3,6:f1}\n", g.name, g.count, g.ms, 100 * g.ms / total);
  outs() << "    the 25 largest kernels            steps        ms      %   first op\n";
  for (size_t i = 0; i < byKernel.size() && i < 25; ++i) {
    const Group &g = byKernel[i];
    outs() << formatv("    {0,-32} {1,6} {2,9:f2} {3,6:f1}   {4}\n", g.name, g.count, g.ms,
                      100 * g.ms / total, g.firstOp);
  }

  auto rows = [](const std::vector<Group> &groups) {
    json::Array out;
    for (const Group &g : groups)
      out.push_back(json::Object{{"name", g.name}, {"steps", g.count}, {"ms", g.ms}, {"first_op", g.firstOp}});
    return out;
  };
  json::Array steps;
  for (const auto &t : *timings)
    steps.push_back(json::Object{{"index", static_cast<int64_t>(t.index)}, {"op", t.op},
                                 {"kernel", t.kernel}, {"ms", t.ms}});
  return writeJSON(profilePath, json::Object{{"eager_ms", total},
                                             {"graph_ms", graphMs},
                                             {"by_op", rows(byOp)},
                                             {"by_kernel", rows(byKernel)},
                                             {"steps", std::move(steps)}});
}

int runBench() {
  if (attentionRequested())
    return runAttentionBench(jsonPath);
  if (allReduceRequested())
    return runAllReduceBench(jsonPath);
  if (configPath.empty())
    return fail("bench", "give a config file (or --attention B,H,T,D to time one attention op, or "
                         "--all-reduce --gpus N to time kiln's sums over ranks)");
  auto config = loadConfig(configPath, setOverrides());
  if (!config)
    return fail("bench", toString(config.takeError()));
  if (config->parallel.numRanks() > 1)
    return fail("bench", formatv("parallel.dp x parallel.tp = {0} ranks: kiln bench times one GPU; "
                                 "time a mesh with kiln train --gpus {0} (its throughput line), "
                                 "or its sums with kiln bench --all-reduce --gpus {0}",
                                 config->parallel.numRanks())
                             .str());
  if (gemmCandidates < 1 || gemmCandidates > 64)
    return fail("bench",
                formatv("--gemm-candidates={0}: give 1 to 64", gemmCandidates.getValue()).str());
  auto backendOr = tooling::makeCudaBackend(&outs(), attentionTilesOption(), nullptr, false, 600,
                                            gemmCandidates);
  if (!backendOr)
    return fail("bench", toString(backendOr.takeError()));
  cuda::CudaBackend &backend = **backendOr;
  auto dev = cuda::device();
  const int64_t B = config->train.batch_size, T = config->seqLen();
  if (config->train.accumulate_steps != 1)
    return fail("bench", "bench times @train_step: set train.accumulate_steps = 1");

  // Compile and load.
  auto start = std::chrono::steady_clock::now();
  mlir::MLIRContext ctx;
  auto module = tooling::buildForwardModule(ctx, *config, mlir::Float32Type::get(&ctx));
  if (!module)
    return fail("bench", toString(module.takeError()));
  auto written = tooling::runTrainingPipeline(**module, *config, {});
  if (!written)
    return fail("bench", toString(written.takeError()));
  double irSeconds = seconds(start);
  if (Error err = backend.load(**module, static_cast<uint64_t>(config->train.seed)))
    return fail("bench", toString(std::move(err)));
  const auto &times = backend.loadTimes();
  double compileSeconds = irSeconds + times.plan + times.executor;
  const auto &stats = backend.executor().stats();
  const Plan &plan = backend.executor().plan();
  size_t freeBytes = 0, totalBytes = 0;
  if (auto api = cuda::driver())
    api->cuMemGetInfo(&freeBytes, &totalBytes);
  else
    consumeError(api.takeError());

  // Steps on random tokens (the time does not depend on the values).
  Rng rng(1);
  auto tokens = [&] {
    cpu::HostTensor t(cpu::DType::I32, {B, T});
    for (int64_t i = 0; i < t.numel(); ++i)
      t.set(i, static_cast<double>(rng.below(static_cast<uint64_t>(config->model.vocab_size))));
    return t;
  };
  cpu::HostTensor lr(cpu::DType::F32, {}), step(cpu::DType::F32, {});
  lr.set(0, 1e-4);
  std::vector<double> ms;
  double firstLoss = 0, lastLoss = 0;
  for (int i = 0; i < warmup + steps; ++i) {
    step.set(0, i + 1);
    TensorMap inputs{{"tokens", tokens()}, {"targets", tokens()}, {"lr", lr}, {"step", step}};
    if (config->model.document_masking) {
      // Packed documents of 256 tokens (or the whole row).
      cpu::HostTensor seg(cpu::DType::I32, {B, T}), pos(cpu::DType::I32, {B, T});
      for (int64_t i = 0; i < B * T; ++i) {
        seg.set(i, static_cast<double>((i % T) / 256));
        pos.set(i, static_cast<double>((i % T) % 256));
      }
      inputs["segments"] = seg;
      inputs["positions"] = pos;
    }
    if (config->model.objective == "dpo")
      inputs["ref_logps"] = cpu::HostTensor(cpu::DType::F32, {B});
    auto t0 = std::chrono::steady_clock::now();
    auto out = backend.run("train_step", inputs);
    double elapsed = seconds(t0) * 1e3;
    if (!out)
      return fail("bench", toString(out.takeError()));
    lastLoss = out->at("loss").get(0);
    if (i == 0)
      firstLoss = lastLoss;
    if (i >= warmup)
      ms.push_back(elapsed);
  }
  std::sort(ms.begin(), ms.end());
  double median = ms.empty() ? 0 : ms[ms.size() / 2];
  auto gpuMs = backend.executor().time("train_step", steps);
  if (!gpuMs)
    return fail("bench", toString(gpuMs.takeError()));

  const ModelConfig &m = config->model;
  double tokensPerStep = static_cast<double>(B * T);
  double flopsPerStep = models::trainingFlopsPerToken(m, T) * tokensPerStep;
  std::optional<cuda::PeakRate> rate;
  if (peakTflops > 0)
    rate = cuda::PeakRate{peakTflops, "--peak-tflops"};
  else
    rate = cuda::devicePeak(dev->name, dev->major, dev->minor, dev->smCount,
                            dev->clockKHz, config->train.precision != "f32");
  double peak = rate ? rate->tflops : 0;
  double mfu = rate ? flopsPerStep / (median * 1e-3) / (peak * 1e12) : 0;
  double deviceUsed = static_cast<double>(totalBytes - freeBytes);

  outs() << formatv("kiln bench: {0}, {1} layers, width {2}; batch {3} x {4}; {5}\n", m.kind,
                    m.n_layer, m.n_embd, B, T, config->train.precision);
  outs() << formatv("  device: {0}\n", cuda::describeDevice());
  outs() << formatv("  compile: {0:f2} s (IR {1:f2} s; codegen {2:f2} s; arena {3:f2} s; {4} "
                    "kernels: {5} compiled by NVRTC, {6} cached, {7:f2} s; modules {8:f2} s; {9} "
                    "GEMM shapes, {10} from the cache, {11:f2} s); initial state {12:f2} s\n",
                    compileSeconds, irSeconds, times.plan, stats.allocSeconds, plan.kernels.size(),
                    stats.nvrtc.compiled, stats.nvrtc.cached, stats.nvrtc.seconds,
                    stats.moduleSeconds, stats.gemmShapes, stats.gemmShapesCached,
                    stats.autotuneSeconds, times.init);
  for (const PlanFunction &f : plan.functions)
    if (f.name == "train_step") {
      size_t launches = 0, gemms = 0;
      for (const PlanStep &st : f.steps) {
        launches += st.kind == PlanStep::Kind::Launch;
        gemms += st.kind == PlanStep::Kind::Gemm;
      }
      outs() << formatv("  plan: {0} kernel launches and {1} GEMMs per step\n", launches, gemms);
    }
  outs() << formatv("  step: {0:f2} ms median of {1} (wall, through the backend); {2:f2} ms GPU "
                    "(graph replay); {3:f0} tok/s; {4}\n",
                    median, ms.size(), *gpuMs, tokensPerStep / (median * 1e-3),
                    rate ? formatv("MFU {0:f1}% of {1:f0} TFLOP/s ({2})", 100 * mfu, peak,
                                   rate->source)
                               .str()
                         : std::string("MFU unknown: no peak rate for this device (pass "
                                       "--peak-tflops)"));
  outs() << formatv("  memory: arena {0:f2} GiB; device in use after load {1:f2} GiB\n",
                    plan.memory.total / 1073741824.0, deviceUsed / 1073741824.0);
  outs() << formatv("  loss: {0:f4} at the first step, {1:f4} at the last\n", firstLoss, lastLoss);

  json::Object result{{"config", configPath.getValue()},
                      {"precision", config->train.precision},
                      {"batch", B},
                      {"seq_len", T},
                      {"compile_s", compileSeconds},
                      {"ir_s", irSeconds},
                      {"kernels", static_cast<int64_t>(plan.kernels.size())},
                      {"nvrtc_compiled", stats.nvrtc.compiled},
                      {"nvrtc_cached", stats.nvrtc.cached},
                      {"nvrtc_s", stats.nvrtc.seconds},
                      {"autotune_s", stats.autotuneSeconds},
                      {"gemm_shapes_cached", stats.gemmShapesCached},
                      {"codegen_s", times.plan},
                      {"alloc_s", stats.allocSeconds},
                      {"module_s", stats.moduleSeconds},
                      {"init_s", times.init},
                      {"step_ms", median},
                      {"gpu_ms", *gpuMs},
                      {"tok_per_s", tokensPerStep / (median * 1e-3)},
                      {"mfu", mfu},
                      {"flops_per_step", flopsPerStep},
                      {"arena_bytes", plan.memory.total},
                      {"device_used_bytes", deviceUsed},
                      {"first_loss", firstLoss},
                      {"last_loss", lastLoss},
                      {"device", dev ? dev->name : std::string("?")}};
  if (!dev)
    consumeError(dev.takeError());
  if (!jsonPath.empty())
    if (Error err = writeJSON(jsonPath, std::move(result)))
      return fail("bench", toString(std::move(err)));

  if (!profilePath.empty())
    if (Error err = writeProfile(backend.executor(), *gpuMs))
      return fail("bench", toString(std::move(err)));

  if (!gemmsPath.empty()) {
    auto timings = backend.executor().timeGemms("train_step", 20);
    if (!timings)
      return fail("bench", toString(timings.takeError()));
    json::Array rows;
    for (const auto &t : *timings) {
      const GemmDesc &g = t.desc;
      double flops = 2.0 * g.m * g.n * g.k * g.batch;
      rows.push_back(json::Object{{"op", t.op},
                                  {"count", t.count},
                                  {"m", g.m},
                                  {"n", g.n},
                                  {"k", g.k},
                                  {"batch", g.batch},
                                  {"trans_a", g.transA},
                                  {"trans_b", g.transB},
                                  {"shared_a", g.batch > 1 && g.strideA == 0},
                                  {"shared_b", g.batch > 1 && g.strideB == 0},
                                  {"epilogue", gemmEpilogueName(g.epilogue)},
                                  {"in_type", cpu::dtypeName(g.inType)},
                                  {"out_type", cpu::dtypeName(g.outType)},
                                  {"ms", t.ms},
                                  {"tflops", flops / (t.ms * 1e-3) / 1e12}});
      outs() << formatv("  gemm m={0} n={1} k={2} batch={3} {4}{5} {9}->{10} {11} x{6}: {7:f3} ms, "
                        "{8:f1} TFLOP/s\n",
                        g.m, g.n, g.k, g.batch, g.transA ? "T" : "N", g.transB ? "T" : "N",
                        t.count, t.ms, flops / (t.ms * 1e-3) / 1e12, cpu::dtypeName(g.inType),
                        cpu::dtypeName(g.outType), gemmEpilogueName(g.epilogue));
    }
    if (Error err = writeJSON(gemmsPath, std::move(rows)))
      return fail("bench", toString(std::move(err)));
  }
  return 0;
}

} // namespace kiln::cli
