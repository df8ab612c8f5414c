//===- Units.h - byte sizes as people write them ----------------------------===//

#ifndef KILN_SUPPORT_UNITS_H
#define KILN_SUPPORT_UNITS_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <string>

namespace kiln {

/// A positive byte count: a number with an optional unit, spaces allowed
/// between them — "20GiB", "8.5 GiB", "512MiB", "64KiB" (powers of 1024),
/// "20GB", "500MB", "64kB" (powers of 1000), "B" or none for bytes. Errors
/// say what was expected.
llvm::Expected<int64_t> parseByteSize(llvm::StringRef text);

/// `bytes` with two decimals in GiB from 1 GiB ("8.70 GiB"), else in MiB
/// or KiB ("0.50 MiB"), or bytes below 1 KiB ("12 B").
std::string formatBytes(int64_t bytes);

} // namespace kiln

#endif // KILN_SUPPORT_UNITS_H
