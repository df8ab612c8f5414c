//===- AtomicFile.h - write files so a crash never leaves a partial one ----===//

#ifndef KILN_RUNTIME_ATOMICFILE_H
#define KILN_RUNTIME_ATOMICFILE_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

namespace kiln {

/// Writes `contents` to a temporary file next to `path`, flushes it to disk
/// and renames it over `path`: readers see the old file or the new one,
/// never a partial write.
llvm::Error writeFileAtomically(llvm::StringRef path, llvm::StringRef contents);

} // namespace kiln

#endif // KILN_RUNTIME_ATOMICFILE_H
