//===- Train.cpp - `kiln train`: train a model (CPU interpreter today) -----===//

#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"
#include "tools/kiln/DefaultConfig.h"

#include "runtime/Checkpoint.h"
#include "tools/support/Training.h"

#include "llvm/Support/Process.h"
#include "llvm/Support/raw_ostream.h"

#include <atomic>
#include <csignal>

using namespace llvm;

namespace kiln::cli {

static cl::opt<std::string> configPath(cl::Positional, cl::desc("[config.toml]"), cl::init(""),
                                       cl::sub(trainCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> resume("resume",
                                   cl::desc("Continue from a checkpoint or run directory"),
                                   cl::value_desc("dir"), cl::sub(trainCommand()),
                                   cl::cat(kilnCategory()));

static std::atomic<int> interrupted{0};

static void onSignal(int signal) { interrupted.store(signal); }

int runTrain() {
  // The config: a file, the checkpoint's (on resume), or the embedded default.
  Expected<RunConfig> config = RunConfig();
  if (!resume.empty()) {
    if (!configPath.empty())
      return fail("train", "give either a config file or --resume, not both (the run's config "
                           "is in its checkpoint; change keys with --set)");
    auto checkpoint = loadCheckpoint(resume);
    if (!checkpoint)
      return fail("train", toString(checkpoint.takeError()));
    config = RunConfig::parse(checkpoint->state.config, resume + "/state.json");
  } else if (configPath.empty()) {
    config = RunConfig::parse(kDefaultConfig, "<default config (configs/default.toml)>");
  } else {
    config = RunConfig::loadFile(configPath);
  }
  if (!config)
    return fail("train", toString(config.takeError()));
  if (Error err = config->applyOverrides(setOverrides()))
    return fail("train", toString(std::move(err)));
  if (Error err = config->validate(configPath.empty() ? "the config" : configPath.getValue()))
    return fail("train", toString(std::move(err)));

  std::signal(SIGINT, onSignal);
  std::signal(SIGTERM, onSignal);
  tooling::TrainOptions options;
  options.resume = resume;
  options.interrupted = &interrupted;
  options.interactive = sys::Process::StandardOutIsDisplayed();
  auto code = tooling::train(*config, options, outs());
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
