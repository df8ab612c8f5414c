//===- BenchAttention.h - `kiln bench --attention` -------------------------===//

#ifndef KILN_TOOLS_KILN_BENCHATTENTION_H
#define KILN_TOOLS_KILN_BENCHATTENTION_H

#include "llvm/ADT/StringRef.h"

#include <string>

namespace kiln::cli {

/// Whether `kiln bench` was given --attention.
bool attentionRequested();

/// Times one attention op (BenchAttention.cpp); appends a JSON line to
/// `jsonPath` when it is not empty. Returns the exit code.
int runAttentionBench(llvm::StringRef jsonPath);

/// --attention-tiles, or empty: also for a model's step (`kiln bench CONFIG`).
const std::string &attentionTilesOption();

} // namespace kiln::cli

#endif // KILN_TOOLS_KILN_BENCHATTENTION_H
