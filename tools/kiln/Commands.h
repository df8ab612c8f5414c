//===- Commands.h - the subcommands of the kiln CLI ------------------------===//
//
// Each subcommand lives in its own file with its own llvm::cl options bound
// to its SubCommand; Main.cpp dispatches. Only tools/ prints and exits.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_TOOLS_KILN_COMMANDS_H
#define KILN_TOOLS_KILN_COMMANDS_H

#include "llvm/Support/CommandLine.h"

namespace kiln::cli {

/// One subcommand: its llvm::cl SubCommand and the function that runs it
/// (returns the process exit code).
struct Command {
  llvm::cl::SubCommand &sub;
  int (*run)();
};

/// Every subcommand, in the order `kiln --help` lists them.
llvm::ArrayRef<Command> commands();

/// The subcommands, constructed on first use so that options in any file can
/// attach to them regardless of static initialization order.
llvm::cl::SubCommand &trainCommand();
llvm::cl::SubCommand &compileCommand();
llvm::cl::SubCommand &sampleCommand();
llvm::cl::SubCommand &estimateCommand();
llvm::cl::SubCommand &tokenizeCommand();
llvm::cl::SubCommand &gradcheckCommand();
llvm::cl::SubCommand &exportCommand();
llvm::cl::SubCommand &benchCommand();
llvm::cl::SubCommand &inspectCommand();
llvm::cl::SubCommand &bisectCommand();
llvm::cl::SubCommand &versionCommand();

int runTrain();
int runCompile();
int runSample();
int runEstimate();
int runTokenize();
int runGradcheck();
int runExport();
int runBench();
int runInspect();
int runBisect();
int runVersion();

/// The option category of every kiln option (others are hidden from --help).
llvm::cl::OptionCategory &kilnCategory();

/// Prints `kiln <command>: <message>` to stderr and returns exit code 1.
int fail(llvm::StringRef command, const llvm::Twine &message);

/// For a subcommand that a later milestone fills in: says so plainly on
/// stderr and returns a non-zero exit code (never a silent success).
int notYetImplemented(llvm::StringRef command, llvm::StringRef milestone);

} // namespace kiln::cli

#endif // KILN_TOOLS_KILN_COMMANDS_H
