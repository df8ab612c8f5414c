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

/// The metadata key of the checksum kiln writes of a file's tensor data
/// (contentChecksum); verified on read when present.
inline constexpr llvm::StringLiteral kChecksumKey = "kiln.xxh3";

/// Writes `tensors` (in this order) with `metadata` and the data's
/// checksum, atomically.
llvm::Error writeSafetensors(llvm::StringRef path, const NamedTensors &tensors,
                             const std::map<std::string, std::string> &metadata = {});

/// Reads every tensor of a safetensors file. Malformed files are an error
/// naming the file and the problem, found before anything is allocated:
/// entries whose offsets do not hold their shape, tensors that do not tile
/// the data exactly, a checksum that does not match.
llvm::Expected<NamedTensors> readSafetensors(llvm::StringRef path,
                                             std::map<std::string, std::string> *metadata = nullptr);

/// The same for a file's bytes already in memory (`path` names it in
/// messages).
llvm::Expected<NamedTensors> parseSafetensors(llvm::StringRef bytes, llvm::StringRef path,
                                              std::map<std::string, std::string> *metadata = nullptr);

} // namespace kiln

#endif // KILN_RUNTIME_SAFETENSORS_H
