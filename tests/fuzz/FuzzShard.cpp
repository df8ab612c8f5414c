//===- FuzzShard.cpp - fuzz target: the token shard reader -----------------===//
//
// Any bytes: an error, or a shard whose every token is in range.
//
//===----------------------------------------------------------------------===//

#include "runtime/data/TokenShard.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  constexpr int64_t kVocab = 50257;
  auto buffer = llvm::MemoryBuffer::getMemBufferCopy(
      llvm::StringRef(reinterpret_cast<const char *>(data), size), "fuzz.bin");
  auto shard = kiln::TokenShard::parse(std::move(buffer), kVocab);
  if (!shard) {
    llvm::consumeError(shard.takeError());
    return 0;
  }
  for (int64_t i = 0; i < shard->size(); ++i)
    if ((*shard)[i] < 0 || (*shard)[i] >= kVocab)
      __builtin_trap();
  return 0;
}
