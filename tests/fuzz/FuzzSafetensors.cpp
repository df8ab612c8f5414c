//===- FuzzSafetensors.cpp - fuzz target: the safetensors reader -----------===//
//
// Any bytes: an error or tensors that tile the data, never a crash or an
// allocation the file does not back.
//
//===----------------------------------------------------------------------===//

#include "runtime/Safetensors.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef bytes(reinterpret_cast<const char *>(data), size);
  std::map<std::string, std::string> metadata;
  auto tensors = kiln::parseSafetensors(bytes, "fuzz.safetensors", &metadata);
  if (!tensors) {
    llvm::consumeError(tensors.takeError());
    return 0;
  }
  // What parsed is backed by the file: never more tensor bytes than it has.
  size_t total = 0;
  for (const auto &[name, t] : *tensors)
    total += static_cast<size_t>(t.numel()) * kiln::cpu::dtypeSize(t.dtype());
  if (total > size)
    __builtin_trap();
  return 0;
}
