//===- Files.cpp - input files read safely, output files written atomically ===//

#include "support/Files.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Support/xxhash.h"

#include <cerrno>

#include <fcntl.h>
#include <unistd.h>

namespace kiln {

llvm::Error checkRegularFile(llvm::StringRef path, llvm::StringRef what) {
  llvm::sys::fs::file_status status;
  if (std::error_code ec = llvm::sys::fs::status(path, status))
    return llvm::createStringError(ec, "cannot read " + what + " '" + path + "': " + ec.message());
  switch (status.type()) {
  case llvm::sys::fs::file_type::regular_file:
    return llvm::Error::success();
  case llvm::sys::fs::file_type::directory_file:
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   what + " '" + path + "' is a directory, not a file");
  default:
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   what + " '" + path +
                                       "' is not a regular file (a device, FIFO or socket); "
                                       "kiln reads only regular files");
  }
}

llvm::Expected<std::unique_ptr<llvm::MemoryBuffer>> readRegularFile(llvm::StringRef path,
                                                                   llvm::StringRef what,
                                                                   bool isText) {
  if (llvm::Error err = checkRegularFile(path, what))
    return std::move(err);
  auto buffer = llvm::MemoryBuffer::getFile(path, isText, /*RequiresNullTerminator=*/false);
  if (!buffer)
    return llvm::createStringError(buffer.getError(), "cannot read " + what + " '" + path +
                                                          "': " + buffer.getError().message());
  return std::move(*buffer);
}

llvm::Error writeFileAtomically(llvm::StringRef path, llvm::StringRef contents) {
  return writeFileAtomically(path, llvm::ArrayRef<llvm::StringRef>(contents));
}

llvm::Error writeFileAtomically(llvm::StringRef path, llvm::ArrayRef<llvm::StringRef> pieces) {
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
  auto discard = [&](const llvm::Twine &what, std::error_code ec) {
    ::close(fd);
    llvm::sys::fs::remove(tmp);
    return fail(what, ec);
  };
  {
    llvm::raw_fd_ostream os(fd, /*shouldClose=*/false);
    for (llvm::StringRef piece : pieces)
      os << piece;
    os.flush();
    if (os.has_error()) {
      std::error_code ec = os.error();
      os.clear_error();
      return discard("writing", ec);
    }
  }
  // A full disk can show only here (delayed allocation).
  if (::fsync(fd) != 0)
    return discard("flushing to disk", std::error_code(errno, std::generic_category()));
  if (::close(fd) != 0) {
    std::error_code ec(errno, std::generic_category());
    llvm::sys::fs::remove(tmp);
    return fail("closing", ec);
  }
  if (std::error_code ec = llvm::sys::fs::rename(tmp, path)) {
    llvm::sys::fs::remove(tmp);
    return fail("renaming the temporary file", ec);
  }
  return llvm::Error::success();
}

std::string contentChecksum(llvm::StringRef bytes) {
  return llvm::formatv("{0:x-16}", llvm::xxh3_64bits(bytes)).str();
}

} // namespace kiln
