//===- kiln-opt.cpp - the MLIR opt driver for kiln IR ----------------------===//
//
// MlirOptMain with the kiln and func dialects, MLIR's generic transforms
// (canonicalize, cse, ...) and every kiln pass and pipeline. All of MLIR's
// standard flags work: --pass-pipeline, --mlir-print-ir-after-all,
// --mlir-print-ir-tree-dir, --mlir-timing, --load-pass-plugin,
// -verify-diagnostics, --split-input-file.
//
// Unlike mlir-opt, an empty input is an error (it is never what the user
// meant, and an empty module printed back would hide the mistake), and so is
// a pass plugin that does not load (mlir-opt warns and carries on).
//
//===----------------------------------------------------------------------===//

#include "ir/KilnDialect.h"
#include "passes/Passes.h"
#include "support/Files.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/DialectRegistry.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Tools/Plugins/PassPlugin.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/ToolOutputFile.h"
#include "llvm/Support/WithColor.h"

using namespace mlir;

/// Loads every plugin named by --load-pass-plugin up front, so that a missing
/// or broken one fails the run instead of being skipped.
static bool checkPassPlugins(int argc, char **argv) {
  for (int i = 1; i < argc; ++i) {
    llvm::StringRef arg = argv[i];
    if (!arg.consume_front("--load-pass-plugin") && !arg.consume_front("-load-pass-plugin"))
      continue;
    std::string path;
    if (arg.consume_front("="))
      path = arg.str();
    else if (arg.empty() && i + 1 < argc)
      path = argv[i + 1];
    else
      continue;
    auto plugin = PassPlugin::load(path);
    if (!plugin) {
      llvm::WithColor::error(llvm::errs(), "kiln-opt")
          << "cannot load pass plugin '" << path
          << "': " << llvm::toString(plugin.takeError()) << "\n";
      return false;
    }
  }
  return true;
}

int main(int argc, char **argv) {
  llvm::InitLLVM init(argc, argv);
  DialectRegistry registry;
  registry.insert<kiln::KilnDialect, func::FuncDialect>();
  registerTransformsPasses();
  kiln::registerKilnPasses();
  kiln::registerKilnPipelines();

  if (!checkPassPlugins(argc, argv))
    return 1;
  auto [inputFilename, outputFilename] =
      registerAndParseCLIOptions(argc, argv, "kiln optimizer driver\n", registry);
  MlirOptMainConfig config = MlirOptMainConfig::createFromCLOptions();
  if (config.shouldShowDialects() || config.shouldListPasses())
    return asMainReturnCode(
        MlirOptMain(argc, argv, inputFilename, outputFilename, registry));

  // A device or FIFO would be read until memory runs out.
  if (inputFilename != "-")
    if (llvm::Error err = kiln::checkRegularFile(inputFilename, "input")) {
      llvm::WithColor::error(llvm::errs(), "kiln-opt") << llvm::toString(std::move(err)) << "\n";
      return 1;
    }
  std::string error;
  std::unique_ptr<llvm::MemoryBuffer> input = openInputFile(inputFilename, &error);
  if (!input) {
    llvm::WithColor::error(llvm::errs(), "kiln-opt") << error << "\n";
    return 1;
  }
  if (input->getBuffer().trim().empty()) {
    llvm::WithColor::error(llvm::errs(), "kiln-opt")
        << (inputFilename == "-" ? std::string("standard input") : inputFilename)
        << " is empty; expected kiln IR (a module or func.func ops)\n";
    return 1;
  }
  std::unique_ptr<llvm::ToolOutputFile> output = openOutputFile(outputFilename, &error);
  if (!output) {
    llvm::WithColor::error(llvm::errs(), "kiln-opt") << error << "\n";
    return 1;
  }
  if (failed(MlirOptMain(output->os(), std::move(input), registry, config)))
    return 1;
  output->keep();
  return 0;
}
