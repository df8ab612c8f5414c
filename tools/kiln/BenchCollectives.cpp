//===- BenchCollectives.cpp - `kiln bench --all-reduce`: a sum over ranks --===//
//
// Times kiln.all_reduce over the ranks of a one-axis mesh, through the path
// a training step's gradient sums take: the op compiled into a plan, run by
// the backend each rank process holds (on GPUs: ncclAllReduce on the
// collectives' stream inside the CUDA graph; on the CPU: the host group over
// TCP). One function per size chains --chain sums (y1 = sum(x), y2 =
// sum(y1), ...) so that a graph replay's launch is spread over them, as
// nccl-tests and torch.distributed's loops issue calls back to back.
//
// Each rank's x[i] = (rank + 1) * (i mod 7), so the result is known: the
// first run is checked before anything is timed, exactly while every sum is
// an integer below 2^24 (f32 holds it whatever the order NCCL adds in),
// else (many ranks, a long chain) within 1e-5 relative. Bandwidth by nccl-tests' convention:
// algorithm = bytes / time, bus = algorithm * 2 (n - 1) / n.
//
//===----------------------------------------------------------------------===//

#include "tools/kiln/BenchCollectives.h"
#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"

#include "runtime/cpu/CpuBackend.h"
#include "runtime/cuda/CudaApi.h"
#include "runtime/cuda/CudaBackend.h"
#include "runtime/dist/RankBackend.h"
#include "runtime/dist/SocketGroup.h"
#include "train/Compile.h"
#include "train/Launch.h"
#include "train/Loop.h"
#include "train/Run.h"

#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <chrono>
#include <cmath>

using namespace llvm;

namespace kiln::cli {

static cl::opt<bool> allReduce("all-reduce",
                               cl::desc("Time kiln.all_reduce over --gpus N (or --ranks N on the "
                                        "CPU) rank processes at --min-mib .. --max-mib"),
                               cl::sub(benchCommand()), cl::cat(kilnCategory()));
static cl::opt<int> gpus("gpus",
                         cl::desc("With --all-reduce: N GPUs of this host, a rank process "
                                  "each, the sums through NCCL"),
                         cl::value_desc("N"), cl::init(0), cl::sub(benchCommand()),
                         cl::cat(kilnCategory()));
static cl::opt<int> ranks("ranks",
                          cl::desc("With --all-reduce: N rank processes on the CPU, the sums "
                                   "through the host group (TCP)"),
                          cl::value_desc("N"), cl::init(0), cl::sub(benchCommand()),
                          cl::cat(kilnCategory()));
static cl::opt<double> minMib("min-mib",
                              cl::desc("With --all-reduce: the smallest buffer (MiB, "
                                       "default 1)"),
                              cl::init(1), cl::sub(benchCommand()), cl::cat(kilnCategory()));
static cl::opt<double> maxMib("max-mib",
                              cl::desc("With --all-reduce: the largest buffer (MiB, default 1024); "
                                       "sizes go up by 4x"),
                              cl::init(1024), cl::sub(benchCommand()), cl::cat(kilnCategory()));
static cl::opt<int> chain("chain",
                          cl::desc("With --all-reduce: sums chained in one function (default 8)"),
                          cl::init(8), cl::sub(benchCommand()), cl::cat(kilnCategory()));
static cl::opt<int> repeats("repeats",
                            cl::desc("With --all-reduce: timed runs of each function (default 20)"),
                            cl::init(20), cl::sub(benchCommand()), cl::cat(kilnCategory()));

bool allReduceRequested() { return allReduce; }

namespace {

Error error(const Twine &message) { return createStringError(inconvertibleErrorCode(), message); }

/// @all_reduce over a mesh `dp` of `n` ranks: `links` sums of an f32
/// vector of `count` elements, each reading the previous one's result.
std::string moduleText(int64_t n, int64_t count, int links) {
  std::string type = formatv("tensor<{0}xf32>", count).str();
  std::string text = formatv("module attributes {{kiln.mesh = #kiln.mesh<dp = {0}>} {{\n"
                             "func.func @all_reduce(%x: {1} {{kiln.input = \"x\"}) -> ({1} "
                             "{{kiln.output = \"y\"}) attributes {{kiln.partitioned} {{\n",
                             n, type)
                         .str();
  std::string prev = "%x";
  for (int i = 0; i < links; ++i) {
    text +=
        formatv("  %{0} = kiln.all_reduce {1} over \"dp\" {{cause = \"kiln bench --all-reduce\"} "
                ": {2}\n",
                i, prev, type)
            .str();
    prev = "%" + std::to_string(i);
  }
  return text + "  return " + prev + " : " + type + "\n}\n}\n";
}

struct Row {
  int64_t bytes = 0;
  double seconds = 0; // one sum
};

/// This process's part: one rank of `group`, each size compiled, checked
/// and timed. Rank 0 prints; every rank returns its rows.
Expected<std::vector<Row>> runRank(dist::SocketGroup &group, bool onGpu, raw_ostream &out) {
  const int64_t n = group.size();
  std::unique_ptr<Backend> local;
  if (onGpu) {
    auto gpu = tooling::makeCudaBackend(nullptr, {}, &group, /*nccl=*/true, 600);
    if (!gpu)
      return gpu.takeError();
    local = std::move(*gpu);
  } else {
    auto cpuRank = std::make_unique<cpu::CpuBackend>();
    cpuRank->setCollectives(&group);
    local = std::move(cpuRank);
  }
  Backend *localBackend = local.get();
  dist::RankBackend backend(group, std::move(local), onGpu ? "NCCL" : "host group over TCP");
  std::vector<Row> rows;
  // Whole f32 elements, at least one; the sizes go up by 4x.
  const int64_t minCount = std::max<int64_t>(static_cast<int64_t>(minMib * (1 << 20)) / 4, 1);
  const auto maxBytes = static_cast<int64_t>(maxMib * (1 << 20));
  for (int64_t count = minCount; count * 4 <= maxBytes; count *= 4) {
    const int64_t bytes = count * 4;
    mlir::MLIRContext ctx;
    tooling::loadDialects(ctx);
    std::string text = moduleText(n, count, chain);
    mlir::OwningOpRef<mlir::ModuleOp> module = mlir::parseSourceString<mlir::ModuleOp>(text, &ctx);
    if (!module)
      return error("the all_reduce module did not parse (internal error)");
    if (Error err = backend.load(*module, 0))
      return std::move(err);
    cpu::HostTensor x(cpu::DType::F32, {count});
    float *xs = x.data<float>();
    for (int64_t i = 0; i < count; ++i)
      xs[i] = static_cast<float>((group.rank() + 1) * (i % 7));
    auto y = backend.run("all_reduce", {{"x", x}});
    if (!y)
      return y.takeError();
    // sum over ranks of (r + 1) = n (n + 1) / 2, then times n for each
    // further link.
    double factor = static_cast<double>(n * (n + 1) / 2);
    for (int i = 1; i < chain; ++i)
      factor *= static_cast<double>(n);
    const float *ys = y->at("y").data<float>();
    const bool exact = 6 * factor < static_cast<double>(1 << 24);
    for (int64_t i = 0; i < count; ++i) {
      const double want = factor * static_cast<double>(i % 7);
      if (exact ? ys[i] != static_cast<float>(want) : std::abs(ys[i] - want) > 1e-5 * want)
        return error(formatv("all_reduce of {0} bytes: element {1} is {2}, expected {3}", bytes, i,
                             ys[i], want));
    }
    // Every rank starts timing together (a rank still checking would
    // count in the others' first sums).
    cpu::HostTensor token(cpu::DType::F64, {1});
    if (auto ready = group.allGather(token, "dp", 0); !ready)
      return ready.takeError();
    double seconds = 0;
    if (onGpu) {
      auto ms =
          static_cast<cuda::CudaBackend *>(localBackend)->executor().time("all_reduce", repeats);
      if (!ms)
        return ms.takeError();
      seconds = *ms * 1e-3 / chain;
    } else {
      auto start = std::chrono::steady_clock::now();
      for (int i = 0; i < repeats; ++i)
        if (auto again = backend.run("all_reduce", {{"x", x}}); !again)
          return again.takeError();
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() /
                (repeats * chain);
    }
    // The slowest rank's time is the collective's.
    cpu::HostTensor t(cpu::DType::F64, {1});
    t.data<double>()[0] = seconds;
    auto all = group.allGather(t, "dp", 0);
    if (!all)
      return all.takeError();
    for (int64_t r = 0; r < n; ++r)
      seconds = std::max(seconds, all->data<double>()[r]);
    rows.push_back({bytes, seconds});
    const double alg = static_cast<double>(bytes) / seconds / 1e9;
    out << formatv(
        "  {0,10} {1,12:f1} {2,12:f2} {3,12:f2}\n",
        bytes >= (1 << 20) ? formatv("{0} MiB", bytes >> 20).str() : formatv("{0} B", bytes).str(),
        seconds * 1e6, alg, alg * 2 * static_cast<double>(n - 1) / static_cast<double>(n));
  }
  return rows;
}

} // namespace

int runAllReduceBench(StringRef jsonPath) {
  if (gpus.getNumOccurrences() && ranks.getNumOccurrences())
    return fail("bench", "--all-reduce: give --gpus N or --ranks N, not both");
  const bool onGpu = !ranks.getNumOccurrences();
  const int64_t asked = onGpu ? gpus.getValue() : ranks.getValue();
  const std::string flag = onGpu ? "--gpus" : "--ranks";
  if (!(minMib > 0) || !(maxMib >= minMib) || chain < 1 || repeats < 1)
    return fail("bench", "--all-reduce: --min-mib must be positive and at most --max-mib, "
                         "--chain and --repeats at least 1");
  auto where = tooling::rankEnvironment();
  if (!where)
    return fail("bench", toString(where.takeError()));
  if (where->size == 1) {
    if (asked < 2)
      return fail("bench", "--all-reduce sums over ranks: give --gpus N (or --ranks N on the "
                           "CPU) with N >= 2, or start the ranks with a launcher (torchrun, "
                           "mpirun, srun)");
    if (onGpu) {
      auto dev = cuda::device();
      if (!dev)
        return fail("bench", "--gpus " + std::to_string(asked) + ": " + toString(dev.takeError()));
      if (dev->count < asked)
        return fail(
            "bench",
            formatv("--gpus {0} asks for {0} GPUs but this host has {1}", asked, dev->count).str());
      if (auto api = cuda::nccl(cuda::ToolkitPaths()); !api)
        return fail("bench", "--gpus " + std::to_string(asked) + ": NCCL cannot be loaded (" +
                                 toString(api.takeError()) + ")");
    }
    auto code = tooling::launchLocalRanks(asked, commandLine(), errs(), 30, "kiln bench");
    if (!code)
      return fail("bench", toString(code.takeError()));
    return *code;
  }
  if (onGpu)
    cuda::useDeviceOrdinal(where->localRank);
  auto group = tooling::connectRanks(*where, 600);
  if (!group)
    return fail("bench",
                "rank " + std::to_string(where->rank) + ": " + toString(group.takeError()));
  raw_ostream &out = where->rank == 0 ? outs() : nulls();
  out << formatv("kiln.all_reduce over {0} {1}, f32, {2} chained sums a function, {3} timed "
                 "runs each ({4}):\n",
                 where->size, onGpu ? "GPUs" : "CPU ranks", chain.getValue(), repeats.getValue(),
                 onGpu ? "NCCL on the collectives' stream, CUDA graph replays timed by events"
                       : "the host group over TCP, wall time");
  out << "       size    time (us)  algbw GB/s   busbw GB/s\n";
  auto rows = runRank(**group, onGpu, out);
  if (!rows) {
    std::string message = toString(rows.takeError());
    (*group)->abort(message);
    return fail("bench", "rank " + std::to_string(where->rank) + ": " + message);
  }
  if (where->rank == 0 && !jsonPath.empty()) {
    json::Array sizes;
    for (const Row &r : *rows) {
      const double alg = static_cast<double>(r.bytes) / r.seconds / 1e9;
      sizes.push_back(json::Object{{"bytes", r.bytes},
                                   {"us", r.seconds * 1e6},
                                   {"algbw_GBps", alg},
                                   {"busbw_GBps", alg * 2 * static_cast<double>(where->size - 1) /
                                                      static_cast<double>(where->size)}});
    }
    std::error_code ec;
    raw_fd_ostream os(jsonPath, ec);
    if (ec)
      return fail("bench", "cannot write '" + jsonPath.str() + "': " + ec.message());
    os << formatv("{0}", json::Value(json::Object{
                             {"impl", onGpu ? "kiln.all_reduce (NCCL)" : "kiln.all_reduce (host)"},
                             {"ranks", where->size},
                             {"dtype", "f32"},
                             {"chain", chain.getValue()},
                             {"sizes", std::move(sizes)}}))
       << "\n";
  }
  return 0;
}

} // namespace kiln::cli
