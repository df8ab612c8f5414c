//===- Run.cpp - a training run, in one process or over a mesh's ranks -----===//

#include "train/Run.h"

#include "runtime/cuda/CudaApi.h"
#include "runtime/dist/SocketGroup.h"

#include "llvm/Support/FormatVariadic.h"

namespace kiln::tooling {

namespace {
llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}
} // namespace

llvm::Expected<std::unique_ptr<dist::SocketGroup>> connectRanks(const RankEnvironment &where,
                                                                double timeoutSeconds) {
  dist::GroupOptions options;
  options.rank = where.rank;
  options.size = where.size;
  options.host = where.host;
  options.port = where.port;
  options.timeoutSeconds = timeoutSeconds;
  options.job = where.job;
  return dist::SocketGroup::connect(options);
}

llvm::Expected<int> runTraining(RunConfig config, const RunRequest &request,
                                llvm::raw_ostream &out) {
  // A mesh run as processes: this one starts them (--ranks N), or it is one
  // of them (its launcher's variables say which).
  RankEnvironment where;
  if (request.where) {
    where = *request.where;
  } else {
    auto found = rankEnvironment();
    if (!found)
      return found.takeError();
    where = *found;
  }
  const int64_t meshRanks = config.parallel.allRanks();
  auto checkRanks = [&](int64_t n, const std::string &who) -> std::optional<std::string> {
    if (n != meshRanks)
      return who + " " + std::to_string(n) + " processes but the mesh has " +
             std::to_string(meshRanks) + " rank" + (meshRanks == 1 ? "" : "s") +
             (config.parallel.pp > 1
                  ? " (parallel.pp x parallel.dp x parallel.tp = " +
                        std::to_string(config.parallel.pp) + " x "
                  : std::string(" (parallel.dp x parallel.tp = ")) +
             std::to_string(config.parallel.dp) + " x " + std::to_string(config.parallel.tp) +
             "); set them with --set parallel.dp=N";
    return std::nullopt;
  };
  // --gpus N is --ranks N on the GPU; the ranks see the same flag.
  if (request.gpus && request.ranks)
    return error("give --gpus or --ranks, not both");
  const bool onGpus = request.gpus.has_value();
  const bool startRanks = onGpus || request.ranks.has_value();
  const std::string flag = onGpus ? "--gpus" : "--ranks";
  const int64_t asked = onGpus ? *request.gpus : request.ranks.value_or(0);
  if (onGpus)
    config.train.device = "cuda";
  if (config.parallel.pp > 1 && (startRanks || where.size > 1)) {
    // Rank processes of a pipeline run on GPUs (NCCL send/recv between the
    // stages); on the CPU the stages are threads of one process.
    std::string why;
    if (config.train.device == "cpu")
      why = "train.device = \"cpu\"";
    else if (auto dev = cuda::device(); !dev)
      why = llvm::toString(dev.takeError());
    if (!why.empty())
      return error("parallel.pp = " + std::to_string(config.parallel.pp) + " as rank processes (" +
                   (startRanks ? flag : where.launcher) +
                   ") runs on GPUs, the stages' activations through NCCL, but " + why +
                   "; on the CPU leave out " + (startRanks ? flag : std::string("the launcher")) +
                   ": the stages run as threads of one process");
  }
  if (startRanks && where.size > 1 && !where.byKiln)
    return error(flag + " " + std::to_string(asked) + ", but " + where.launcher +
                 " started this process as rank " + std::to_string(where.rank) + " of " +
                 std::to_string(where.size) + ": drop " + flag + " (that launcher starts the ranks)");
  if (startRanks && where.size == 1) {
    if (asked < 1)
      return error(flag + " " + std::to_string(asked) + ": give at least 1");
    if (auto problem = checkRanks(asked, flag + " asks for"))
      return error(*problem);
    // The GPUs and NCCL are checked here, before any rank starts.
    if (onGpus) {
      auto dev = cuda::device();
      if (!dev)
        return error("--gpus " + std::to_string(asked) + ": " + llvm::toString(dev.takeError()));
      if (dev->count < asked)
        return error(llvm::formatv("--gpus {0} asks for {0} GPUs but this host has {1} (more "
                                   "ranks than GPUs: --ranks {0} --set train.device=cuda "
                                   "--set parallel.collectives=host shares them)",
                                   asked, dev->count));
      if (config.parallel.collectives != "host" && asked > 1)
        if (auto api = cuda::nccl(cuda::ToolkitPaths()); !api)
          return error("--gpus " + std::to_string(asked) + ": NCCL cannot be loaded (" +
                       llvm::toString(api.takeError()) +
                       "); --set parallel.collectives=host stages the collectives through host "
                       "memory instead");
    }
    if (asked > 1) {
      if (request.relaunch.empty())
        return error(flag + " " + std::to_string(asked) +
                     ": no command line to start the ranks with (RunRequest::relaunch)");
      return launchLocalRanks(asked, request.relaunch, llvm::errs());
    }
  }
  std::unique_ptr<dist::SocketGroup> group;
  if (where.size > 1) {
    std::string rank = "rank " + std::to_string(where.rank) + ": ";
    if (auto problem = checkRanks(where.size, where.launcher + " started"))
      return error(rank + *problem);
    // Ranks on one host take its GPUs in turn (sharing them when there are
    // more ranks than GPUs).
    cuda::useDeviceOrdinal(where.localRank);
    auto connected = connectRanks(where, config.parallel.timeout);
    if (!connected)
      return error(rank + llvm::toString(connected.takeError()));
    group = std::move(*connected);
  }

  TrainOptions options = request.options;
  options.group = group.get();
  options.localRanks = where.localSize;
  // Rank 0 speaks for the run; the other ranks only report their errors.
  llvm::raw_ostream &speaker = !group || group->rank() == 0 ? out : llvm::nulls();
  auto code = train(config, options, speaker);
  if (!code && group) {
    std::string message = llvm::toString(code.takeError());
    group->abort(message);
    return error("rank " + llvm::Twine(group->rank()) + ": " + message);
  }
  return code;
}

} // namespace kiln::tooling
