//===- Files.h - input files read safely, output files written atomically -===//

#ifndef KILN_SUPPORT_FILES_H
#define KILN_SUPPORT_FILES_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/MemoryBuffer.h"

#include <memory>
#include <string>

namespace kiln {

/// Reads `path` whole when it is a regular file. Devices (/dev/zero),
/// FIFOs, sockets and directories are refused with a message that names
/// `what` the file was meant to be ("token shard", "config file"): reading
/// them would block or never end.
llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> readRegularFile(llvm::StringRef path,
                                                                   llvm::StringRef what,
                                                                   bool isText = false);

/// Checks that `path` names a regular file (see readRegularFile) without
/// reading it.
llvm::Error checkRegularFile(llvm::StringRef path, llvm::StringRef what);

/// Writes `contents` to a temporary file next to `path`, flushes it to disk
/// and renames it over `path`: readers see the old file or the new one,
/// never a partial write.
llvm::Error writeFileAtomically(llvm::StringRef path, llvm::StringRef contents);
/// The same for contents in several pieces, written one after another.
llvm::Error writeFileAtomically(llvm::StringRef path, llvm::ArrayRef<llvm::StringRef> pieces);

/// A checksum of `bytes` for detecting corruption (XXH3, 64 bits, as 16
/// hex digits); not a cryptographic hash.
std::string contentChecksum(llvm::StringRef bytes);

} // namespace kiln

#endif // KILN_SUPPORT_FILES_H
