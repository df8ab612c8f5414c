//===- Train.cpp - `kiln train`: train a model on the GPU or the CPU --------===//

#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"
#include "tools/kiln/DefaultConfig.h"

#include "runtime/Checkpoint.h"
#include "runtime/cuda/CudaApi.h"
#include "tools/support/HuggingFace.h"
#include "tools/support/Launch.h"
#include "tools/support/Training.h"

#include "llvm/Support/Process.h"
#include "llvm/Support/raw_ostream.h"

#include <atomic>
#include <csignal>
#include <optional>

#include <signal.h>
#include <unistd.h>

using namespace llvm;

namespace kiln::cli {

static cl::opt<std::string> configPath(cl::Positional, cl::desc("[config.toml]"), cl::init(""),
                                       cl::sub(trainCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> resume("resume",
                                   cl::desc("Continue from a checkpoint or run directory"),
                                   cl::value_desc("dir"), cl::sub(trainCommand()),
                                   cl::cat(kilnCategory()));

static cl::opt<bool> newRunDir("new-run-dir",
                               cl::desc("When run.dir is not empty, write to the first free "
                                        "<run.dir>-N instead of refusing"),
                               cl::sub(trainCommand()), cl::cat(kilnCategory()));

static cl::opt<int> ranks("ranks",
                          cl::desc("Run the mesh (parallel.dp x parallel.tp ranks) as N processes "
                                   "on this host, one rank each, instead of threads of one"),
                          cl::value_desc("N"), cl::init(0), cl::sub(trainCommand()),
                          cl::cat(kilnCategory()));

static cl::opt<int> gpus("gpus",
                         cl::desc("Run the mesh on N GPUs of this host, one rank process each "
                                  "(--ranks N on the GPU, collectives through NCCL)"),
                         cl::value_desc("N"), cl::init(0), cl::sub(trainCommand()),
                         cl::cat(kilnCategory()));

static std::atomic<int> interrupted{0};

/// The first SIGINT/SIGTERM/SIGHUP asks the loop to stop after the current
/// step with a checkpoint; a second one ends the process at once (the
/// checkpoint files are written atomically, so nothing saved is lost).
static void onSignal(int signal) {
  int expected = 0;
  if (interrupted.compare_exchange_strong(expected, signal))
    return;
  static const char message[] = "\nkiln train: second signal: exiting now, without a checkpoint\n";
  (void)!::write(2, message, sizeof(message) - 1);
  ::_exit(128 + signal);
}

int runTrain() {
  // The config: a file, the checkpoint's (on resume), or the embedded default.
  Expected<RunConfig> config = RunConfig();
  std::optional<Checkpoint> checkpoint;
  if (!resume.empty()) {
    if (!configPath.empty())
      return fail("train", "give either a config file or --resume, not both (the run's config "
                           "is in its checkpoint; change keys with --set)");
    auto loaded = loadCheckpoint(resume);
    if (!loaded)
      return fail("train", toString(loaded.takeError()));
    checkpoint = std::move(*loaded);
    config = RunConfig::parse(checkpoint->state.config, checkpoint->path + "/state.json");
  } else if (configPath.empty()) {
    config = RunConfig::parse(kDefaultConfig, "<default config (configs/default.toml)>");
  } else {
    config = RunConfig::loadFile(configPath);
  }
  if (!config)
    return fail("train", toString(config.takeError()));
  if (checkpoint)
    if (Error err = tooling::upgradeCheckpoint(*checkpoint, config->model))
      return fail("train", toString(std::move(err)));
  if (Error err = config->applyOverrides(setOverrides()))
    return fail("train", toString(std::move(err)));
  if (Error err = config->validate(configPath.empty() ? "the config" : configPath.getValue()))
    return fail("train", toString(std::move(err)));

  // A mesh run as processes: this one starts them (--ranks N), or it is one
  // of them (its launcher's variables say which).
  auto where = tooling::rankEnvironment();
  if (!where)
    return fail("train", toString(where.takeError()));
  const int64_t meshRanks = config->parallel.numRanks();
  auto checkRanks = [&](int64_t n, const std::string &who) -> std::optional<std::string> {
    if (n != meshRanks)
      return who + " " + std::to_string(n) + " processes but the mesh has " +
             std::to_string(meshRanks) + " rank" + (meshRanks == 1 ? "" : "s") +
             " (parallel.dp x parallel.tp = " + std::to_string(config->parallel.dp) + " x " +
             std::to_string(config->parallel.tp) + "); set them with --set parallel.dp=N";
    return std::nullopt;
  };
  // --gpus N is --ranks N on the GPU; the ranks see the same flag.
  if (gpus.getNumOccurrences() && ranks.getNumOccurrences())
    return fail("train", "give --gpus or --ranks, not both");
  const bool onGpus = gpus.getNumOccurrences() > 0;
  const std::string flag = onGpus ? "--gpus" : "--ranks";
  const int64_t asked = onGpus ? gpus : ranks;
  if (onGpus)
    config->train.device = "cuda";
  if ((onGpus || ranks.getNumOccurrences()) && where->size > 1 && !where->byKiln)
    return fail("train", flag + " " + std::to_string(asked) + ", but " + where->launcher +
                             " started this process as rank " + std::to_string(where->rank) +
                             " of " + std::to_string(where->size) + ": drop " + flag +
                             " (that launcher starts the ranks)");
  if ((onGpus || ranks.getNumOccurrences()) && where->size == 1) {
    if (asked < 1)
      return fail("train", flag + " " + std::to_string(asked) + ": give at least 1");
    if (auto problem = checkRanks(asked, flag + " asks for"))
      return fail("train", *problem);
    // The GPUs and NCCL are checked here, before any rank starts.
    if (onGpus) {
      auto dev = cuda::device();
      if (!dev)
        return fail("train", "--gpus " + std::to_string(asked) + ": " + toString(dev.takeError()));
      if (dev->count < asked)
        return fail("train", formatv("--gpus {0} asks for {0} GPUs but this host has {1} (more "
                                     "ranks than GPUs: --ranks {0} --set train.device=cuda "
                                     "--set parallel.collectives=host shares them)",
                                     asked, dev->count)
                                 .str());
      if (config->parallel.collectives != "host" && asked > 1)
        if (auto api = cuda::nccl(cuda::ToolkitPaths()); !api)
          return fail("train", "--gpus " + std::to_string(asked) + ": NCCL cannot be loaded (" +
                                   toString(api.takeError()) +
                                   "); --set parallel.collectives=host stages the collectives "
                                   "through host memory instead");
    }
    if (asked > 1) {
      auto code = tooling::launchLocalRanks(asked, commandLine(), errs());
      if (!code)
        return fail("train", toString(code.takeError()));
      return *code;
    }
  }
  std::unique_ptr<dist::SocketGroup> group;
  if (where->size > 1) {
    std::string rank = "rank " + std::to_string(where->rank) + ": ";
    if (auto problem = checkRanks(where->size, where->launcher + " started"))
      return fail("train", rank + *problem);
    dist::GroupOptions groupOptions;
    groupOptions.rank = where->rank;
    groupOptions.size = where->size;
    groupOptions.host = where->host;
    groupOptions.port = where->port;
    groupOptions.timeoutSeconds = config->parallel.timeout;
    // Ranks on one host take its GPUs in turn (sharing them when there are
    // more ranks than GPUs).
    cuda::useDeviceOrdinal(where->localRank);
    auto connected = dist::SocketGroup::connect(groupOptions);
    if (!connected)
      return fail("train", rank + toString(connected.takeError()));
    group = std::move(*connected);
  }

  struct sigaction action = {};
  action.sa_handler = onSignal;
  sigemptyset(&action.sa_mask);
  for (int signal : {SIGINT, SIGTERM, SIGHUP})
    sigaction(signal, &action, nullptr);
  // A file-size limit (ulimit -f) then fails the write with EFBIG, which is
  // reported like a full disk, instead of killing the process.
  std::signal(SIGXFSZ, SIG_IGN);
  tooling::TrainOptions options;
  options.resume = checkpoint ? &*checkpoint : nullptr;
  options.newRunDir = newRunDir;
  options.interrupted = &interrupted;
  options.interactive = sys::Process::StandardOutIsDisplayed();
  options.group = group.get();
  options.localRanks = where->localSize;
  // Rank 0 speaks for the run; the other ranks only report their errors.
  raw_ostream &out = !group || group->rank() == 0 ? outs() : nulls();
  auto code = tooling::train(*config, options, out);
  if (!code) {
    std::string message = toString(code.takeError());
    if (group) {
      group->abort(message);
      message = "rank " + std::to_string(group->rank()) + ": " + message;
    }
    if (StringRef(message).contains("no file matches"))
      message += "\n  (tokenize a corpus first, e.g. `bash scripts/quickstart.sh` for the default "
                 "run, or `kiln tokenize --out DIR FILES...`)";
    return fail("train", message);
  }
  return *code;
}

} // namespace kiln::cli
