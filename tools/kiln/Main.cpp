//===- Main.cpp - entry point of the kiln CLI ------------------------------===//

#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"
#include "tools/support/Plugins.h"

#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/WithColor.h"
#include "llvm/Support/raw_ostream.h"

using namespace llvm;

namespace kiln::cli {

cl::OptionCategory &kilnCategory() {
  static cl::OptionCategory category("kiln options");
  return category;
}

cl::SubCommand &trainCommand() {
  static cl::SubCommand sub("train", "Train a model (default: the embedded byte-level GPT)");
  return sub;
}

cl::SubCommand &compileCommand() {
  static cl::SubCommand sub("compile", "Compile a model config and dump the IR after each pass");
  return sub;
}

cl::SubCommand &sampleCommand() {
  static cl::SubCommand sub("sample", "Sample text from a checkpoint");
  return sub;
}

cl::SubCommand &estimateCommand() {
  static cl::SubCommand sub("estimate", "Estimate params, FLOPs and memory of a config");
  return sub;
}

cl::SubCommand &tokenizeCommand() {
  static cl::SubCommand sub("tokenize", "Tokenize text files into token shards");
  return sub;
}

cl::SubCommand &gradcheckCommand() {
  static cl::SubCommand sub("gradcheck", "Check a model's gradients against f64 finite differences");
  return sub;
}

cl::SubCommand &exportCommand() {
  static cl::SubCommand sub("export", "Write a checkpoint's weights with Hugging Face GPT-2 names");
  return sub;
}

cl::SubCommand &benchCommand() {
  static cl::SubCommand sub("bench", "Time a config's training step on the GPU (bench/ runs it)");
  return sub;
}

cl::SubCommand &inspectCommand() {
  static cl::SubCommand sub("inspect", "Where a config's FLOPs, bytes and memory go, op by op");
  return sub;
}

cl::SubCommand &bisectCommand() {
  static cl::SubCommand sub("bisect", "Find the first pass that changes a config's numbers");
  return sub;
}

cl::SubCommand &versionCommand() {
  static cl::SubCommand sub("version", "Print the versions of kiln, LLVM/MLIR and CUDA");
  return sub;
}

ArrayRef<Command> commands() {
  static const Command all[] = {
      {trainCommand(), runTrain},         {compileCommand(), runCompile},
      {sampleCommand(), runSample},       {estimateCommand(), runEstimate},
      {tokenizeCommand(), runTokenize},   {gradcheckCommand(), runGradcheck},
      {exportCommand(), runExport},       {benchCommand(), runBench},
      {inspectCommand(), runInspect},     {bisectCommand(), runBisect},
      {versionCommand(), runVersion},
  };
  return all;
}

int fail(StringRef command, const Twine &message) {
  WithColor::error(errs(), "kiln " + command.str()) << message << "\n";
  return 1;
}

int notYetImplemented(StringRef command, StringRef milestone) {
  WithColor::error(errs(), "kiln " + command.str())
      << "not implemented yet: this subcommand arrives with " << milestone
      << ".\n";
  return 2;
}

} // namespace kiln::cli

int main(int argc, char **argv) {
  InitLLVM init(argc, argv);
  using namespace kiln::cli;
  setCommandLine(argc, argv);
  // Hide the options that LLVM's and MLIR's libraries register globally, so
  // `kiln --help` shows kiln's own.
  cl::HideUnrelatedOptions(kilnCategory());
  for (const Command &command : commands())
    cl::HideUnrelatedOptions(kilnCategory(), command.sub);
  // One usage line per command: the overview lists them all; `kiln
  // <command> --help` shows only its own.
  static const std::pair<const char *, const char *> usage[] = {
      {"train", "kiln train [CONFIG] [--set key=value]...   train a model"},
      {"compile", "kiln compile CONFIG [--dump-ir-after=all]  compile and dump IR"},
      {"sample", "kiln sample CKPT_DIR [--prompt TEXT]       sample from a checkpoint"},
      {"estimate", "kiln estimate CONFIG                       params, FLOPs, memory"},
      {"tokenize", "kiln tokenize --out DIR FILES...           write token shards"},
      {"gradcheck", "kiln gradcheck CONFIG                      check gradients in f64"},
      {"export", "kiln export CKPT_DIR|CONFIG --hf FILE      weights in Hugging Face layout"},
      {"bench", "kiln bench CONFIG [--gemms FILE]           time a training step on the GPU"},
      {"inspect", "kiln inspect CONFIG [--memory-svg F]        FLOPs, bytes, memory per op"},
      {"bisect", "kiln bisect CONFIG | --dumps DIR           the first pass that changes results"},
      {"version", "kiln version                               print versions"},
  };
  std::string overview;
  for (auto [name, line] : usage)
    if (argc > 1 && StringRef(argv[1]) == name)
      overview = std::string(line) + "\n";
  if (overview.empty()) {
    overview = "kiln — compile and train transformers\n\n";
    for (auto [name, line] : usage)
      overview += "  " + std::string(line) + "\n";
    overview += "\nRun `kiln <command> --help` for a command's options.\n";
  }
  if (!cl::ParseCommandLineOptions(argc, argv, overview, &errs()))
    return 1;
  for (const Command &command : commands()) {
    if (!command.sub)
      continue;
    for (const std::string &path : pluginPaths()) {
      auto name = kiln::tooling::loadPlugin(path);
      if (!name)
        return fail(command.sub.getName(), toString(name.takeError()));
    }
    return command.run();
  }
  errs() << "kiln: no command given; run `kiln --help` for the list\n";
  return 1;
}
