//===- BenchAttention.h - `kiln bench --attention` -------------------------===//

#ifndef KILN_TOOLS_KILN_BENCHATTENTION_H
#define KILN_TOOLS_KILN_BENCHATTENTION_H

#include "llvm/ADT/StringRef.h"

namespace kiln::cli {

/// Whether `kiln bench` was given --attention.
bool attentionRequested();

/// Times one attention op (BenchAttention.cpp); appends a JSON line to
/// `jsonPath` when it is not empty. Returns the exit code.
int runAttentionBench(llvm::StringRef jsonPath);

} // namespace kiln::cli

#endif // KILN_TOOLS_KILN_BENCHATTENTION_H
