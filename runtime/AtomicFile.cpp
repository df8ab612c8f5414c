//===- AtomicFile.cpp - write files so a crash never leaves a partial one --===//

#include "runtime/AtomicFile.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <fcntl.h>
#include <unistd.h>

namespace kiln {

llvm::Error writeFileAtomically(llvm::StringRef path, llvm::StringRef contents) {
  auto fail = [&](const llvm::Twine &what, std::error_code ec) {
    return llvm::createStringError(ec, "cannot write '" + path + "': " + what + ": " + ec.message());
  };
  llvm::StringRef dir = llvm::sys::path::parent_path(path);
  if (!dir.empty())
    if (std::error_code ec = llvm::sys::fs::create_directories(dir))
      return fail("creating its directory", ec);
  llvm::SmallString<256> tmp;
  int fd;
  if (std::error_code ec = llvm::sys::fs::createUniqueFile(path + ".tmp-%%%%%%", fd, tmp))
    return fail("creating a temporary file", ec);
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/false);
    os << contents;
    os.flush();
    if (os.has_error()) {
      std::error_code ec = os.error();
      os.clear_error();
      ::close(fd);
      llvm::sys::fs::remove(tmp);
      return fail("writing", ec);
    }
  }
  ::fsync(fd);
  ::close(fd);
  if (std::error_code ec = llvm::sys::fs::rename(tmp, path)) {
    llvm::sys::fs::remove(tmp);
    return fail("renaming the temporary file", ec);
  }
  return llvm::Error::success();
}

} // namespace kiln
