//===- Common.h - options and helpers shared by kiln subcommands -----------===//

#ifndef KILN_TOOLS_KILN_COMMON_H
#define KILN_TOOLS_KILN_COMMON_H

#include "frontend/Config.h"

#include "llvm/Support/Error.h"

#include <chrono>
#include <optional>
#include <string>

namespace kiln::cli {

/// Loads the config file `path` (or the embedded default when empty) and
/// applies the --set overrides given to the running subcommand, then
/// validates it. The source name is used in messages.
llvm::Expected<RunConfig> loadConfig(llvm::StringRef path, llvm::ArrayRef<std::string> sets);

/// The --set key=value overrides of the running subcommand.
llvm::ArrayRef<std::string> setOverrides();
/// The plugins given with --plugin, in order (Main.cpp loads them before
/// the command runs).
llvm::ArrayRef<std::string> pluginPaths();

/// The command line kiln was started with, program first (Main.cpp sets
/// it; `kiln train --ranks N` starts its ranks with it).
llvm::ArrayRef<std::string> commandLine();
void setCommandLine(int argc, char **argv);

/// Formats a count with thousands separators: 124,439,808.
std::string withCommas(int64_t n);

/// Seconds since `start` (a steady clock reading), for progress messages.
double secondsSince(std::chrono::steady_clock::time_point start);

} // namespace kiln::cli

#endif // KILN_TOOLS_KILN_COMMON_H
