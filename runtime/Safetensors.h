//===- Safetensors.h - read and write the safetensors format ---------------===//
//
// Format (Hugging Face): an 8-byte little-endian header length N, N bytes of
// JSON {"name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, …,
// "__metadata__": {string: string}}, then the tensor bytes. bf16/f16 are
// stored as their 2-byte encodings.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_SAFETENSORS_H
#define KILN_RUNTIME_SAFETENSORS_H

#include "runtime/cpu/HostTensor.h"

#include "llvm/Support/Error.h"

#include <map>
#include <string>
#include <utility>
#include <vector>

namespace kiln {

using NamedTensors = std::vector<std::pair<std::string, cpu::HostTensor>>;

/// Writes `tensors` (in this order) with `metadata`, atomically.
llvm::Error writeSafetensors(llvm::StringRef path, const NamedTensors &tensors,
                             const std::map<std::string, std::string> &metadata = {});

/// Reads every tensor of a safetensors file; malformed files are an error
/// naming the file and the problem.
llvm::Expected<NamedTensors> readSafetensors(llvm::StringRef path,
                                             std::map<std::string, std::string> *metadata = nullptr);

} // namespace kiln

#endif // KILN_RUNTIME_SAFETENSORS_H
