//===- Pending.cpp - subcommands that later milestones fill in -------------===//
//
// Each says plainly that it is not there yet and exits non-zero.
//
//===----------------------------------------------------------------------===//

#include "tools/kiln/Commands.h"

using namespace llvm;

namespace kiln::cli {

cl::SubCommand trainCommand("train", "Train a model (default: the embedded byte-level GPT)");
cl::SubCommand compileCommand("compile", "Compile a model config and dump IR, CUDA or a Plan");
cl::SubCommand sampleCommand("sample", "Sample text from a checkpoint");
cl::SubCommand estimateCommand("estimate", "Estimate params, FLOPs and memory of a config");
cl::SubCommand tokenizeCommand("tokenize", "Tokenize text files into token shards");
cl::SubCommand gradcheckCommand("gradcheck", "Check a model's gradients against f64 finite differences");

static cl::list<std::string> pendingArgs(cl::Positional, cl::ZeroOrMore,
                                         cl::desc("<arguments>"),
                                         cl::sub(trainCommand), cl::sub(compileCommand),
                                         cl::sub(sampleCommand), cl::sub(estimateCommand),
                                         cl::sub(tokenizeCommand),
                                         cl::sub(gradcheckCommand),
                                         cl::cat(kilnCategory()));

int runTrain() { return notYetImplemented("train", "CPU training (issue #4)"); }
int runCompile() { return notYetImplemented("compile", "the frontend and autodiff (issue #3)"); }
int runSample() { return notYetImplemented("sample", "CPU training (issue #4)"); }
int runEstimate() { return notYetImplemented("estimate", "CPU training (issue #4)"); }
int runTokenize() { return notYetImplemented("tokenize", "CPU training (issue #4)"); }
int runGradcheck() { return notYetImplemented("gradcheck", "the frontend and autodiff (issue #3)"); }

} // namespace kiln::cli
