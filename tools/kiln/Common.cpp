//===- Common.cpp - options and helpers shared by kiln subcommands ---------===//

#include "tools/kiln/Common.h"

#include "tools/kiln/Commands.h"

namespace kiln::cli {

using namespace llvm;

static cl::list<std::string> sets("set", cl::desc("Override a config key: --set model.n_layer=4"),
                                  cl::value_desc("key=value"), cl::ZeroOrMore,
                                  cl::sub(trainCommand()), cl::sub(compileCommand()),
                                  cl::sub(estimateCommand()), cl::sub(gradcheckCommand()),
                                  cl::sub(sampleCommand()), cl::sub(benchCommand()),
                                  cl::sub(exportCommand()), cl::sub(inspectCommand()),
                                  cl::sub(bisectCommand()),
                                  cl::cat(kilnCategory()));

static cl::list<std::string> plugins(
    "plugin", cl::desc("Load a kiln plugin (its custom kernels and rewrite passes); repeatable"),
    cl::value_desc("LIB.so"), cl::ZeroOrMore, cl::sub(trainCommand()), cl::sub(compileCommand()),
    cl::sub(estimateCommand()), cl::sub(gradcheckCommand()), cl::sub(sampleCommand()),
    cl::sub(benchCommand()), cl::sub(inspectCommand()), cl::sub(bisectCommand()),
    cl::cat(kilnCategory()));

ArrayRef<std::string> setOverrides() { return sets; }
ArrayRef<std::string> pluginPaths() { return plugins; }

static std::vector<std::string> &arguments() {
  static std::vector<std::string> args;
  return args;
}
ArrayRef<std::string> commandLine() { return arguments(); }
void setCommandLine(int argc, char **argv) { arguments().assign(argv, argv + argc); }

Expected<RunConfig> loadConfig(StringRef path, ArrayRef<std::string> overrides) {
  if (path.empty())
    return createStringError(inconvertibleErrorCode(), "no config file given");
  auto config = RunConfig::loadFile(path);
  if (!config)
    return config.takeError();
  if (Error err = config->applyOverrides(overrides))
    return std::move(err);
  std::string source = path.str();
  if (!overrides.empty())
    source += " with --set overrides";
  if (Error err = config->validate(source))
    return std::move(err);
  return config;
}

std::string withCommas(int64_t n) {
  std::string digits = std::to_string(n < 0 ? -n : n), out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i && (digits.size() - i) % 3 == 0)
      out += ',';
    out += digits[i];
  }
  return n < 0 ? "-" + out : out;
}

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

} // namespace kiln::cli
