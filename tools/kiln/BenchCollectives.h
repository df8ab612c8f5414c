//===- BenchCollectives.h - `kiln bench --all-reduce` ----------------------===//

#ifndef KILN_TOOLS_KILN_BENCHCOLLECTIVES_H
#define KILN_TOOLS_KILN_BENCHCOLLECTIVES_H

#include "llvm/ADT/StringRef.h"

namespace kiln::cli {

/// Whether `kiln bench` was given --all-reduce.
bool allReduceRequested();

/// Times kiln.all_reduce over rank processes (BenchCollectives.cpp); rank 0
/// writes the JSON to `jsonPath` when it is not empty. Returns the exit
/// code.
int runAllReduceBench(llvm::StringRef jsonPath);

} // namespace kiln::cli

#endif // KILN_TOOLS_KILN_BENCHCOLLECTIVES_H
