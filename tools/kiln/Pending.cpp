//===- Pending.cpp - subcommands that later milestones fill in -------------===//
//
// Each says plainly that it is not there yet and exits non-zero.
//
//===----------------------------------------------------------------------===//

#include "tools/kiln/Commands.h"

using namespace llvm;

namespace kiln::cli {

static cl::list<std::string> pendingArgs(cl::Positional, cl::ZeroOrMore,
                                         cl::desc("<arguments>"),
                                         cl::sub(trainCommand()),
                                         cl::sub(sampleCommand()), cl::sub(estimateCommand()),
                                         cl::sub(tokenizeCommand()),
                                         cl::cat(kilnCategory()));

int runTrain() { return notYetImplemented("train", "CPU training (issue #4)"); }
int runSample() { return notYetImplemented("sample", "CPU training (issue #4)"); }
int runEstimate() { return notYetImplemented("estimate", "CPU training (issue #4)"); }
int runTokenize() { return notYetImplemented("tokenize", "CPU training (issue #4)"); }

} // namespace kiln::cli
