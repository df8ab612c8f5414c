//===- Train.cpp - `kiln train`: train a model on the GPU or the CPU --------===//

#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"
#include "tools/kiln/DefaultConfig.h"

#include "runtime/Checkpoint.h"
#include "train/HuggingFace.h"
#include "train/Run.h"

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

  struct sigaction action = {};
  action.sa_handler = onSignal;
  sigemptyset(&action.sa_mask);
  for (int signal : {SIGINT, SIGTERM, SIGHUP})
    sigaction(signal, &action, nullptr);
  // A file-size limit (ulimit -f) then fails the write with EFBIG, which is
  // reported like a full disk, instead of killing the process.
  std::signal(SIGXFSZ, SIG_IGN);
  tooling::RunRequest request;
  request.options.resume = checkpoint ? &*checkpoint : nullptr;
  request.options.newRunDir = newRunDir;
  request.options.interrupted = &interrupted;
  request.options.interactive = sys::Process::StandardOutIsDisplayed();
  if (ranks.getNumOccurrences())
    request.ranks = ranks;
  if (gpus.getNumOccurrences())
    request.gpus = gpus;
  request.relaunch = commandLine().vec();
  auto code = tooling::runTraining(std::move(*config), request, outs());
  if (!code) {
    std::string message = toString(code.takeError());
    if (StringRef(message).contains("no file matches"))
      message += "\n  (tokenize a corpus first, e.g. `bash scripts/quickstart.sh` for the default "
                 "run, or `kiln tokenize --out DIR FILES...`)";
    return fail("train", message);
  }
  return *code;
}

} // namespace kiln::cli
