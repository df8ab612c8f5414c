//===- FuzzConfig.cpp - fuzz target: the TOML config loader ----------------===//
//
// Any text: an error naming the key, or a config that validates and prints
// back as TOML that parses to the same config.
//
//===----------------------------------------------------------------------===//

#include "frontend/Config.h"

#include <cstddef>
#include <cstdint>

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  auto config = kiln::RunConfig::parse(text, "fuzz.toml");
  if (!config) {
    llvm::consumeError(config.takeError());
    return 0;
  }
  if (llvm::Error err = config->validate("fuzz.toml")) {
    llvm::consumeError(std::move(err));
    return 0;
  }
  // A valid config round-trips through its TOML form.
  std::string printed = config->toToml();
  auto again = kiln::RunConfig::parse(printed, "printed.toml");
  if (!again || again->toToml() != printed)
    __builtin_trap();
  return 0;
}
