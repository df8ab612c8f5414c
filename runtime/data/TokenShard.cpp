//===- TokenShard.cpp - llm.c's token shard files ---------------------------===//

#include "runtime/data/TokenShard.h"

#include "support/Files.h"

#include "llvm/Support/Endian.h"
#include "llvm/Support/FormatVariadic.h"

#include <glob.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

namespace kiln {

namespace {

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

int32_t readInt32(const char *p) {
  uint32_t v = static_cast<uint8_t>(p[0]) | (static_cast<uint8_t>(p[1]) << 8) |
               (static_cast<uint8_t>(p[2]) << 16) | (static_cast<uint32_t>(static_cast<uint8_t>(p[3])) << 24);
  return static_cast<int32_t>(v);
}

} // namespace

int32_t TokenShard::operator[](int64_t i) const {
  const char *base = buffer_->getBufferStart() + kShardHeaderInts * 4;
  if (version_ == 1) {
    const auto *p = reinterpret_cast<const uint8_t *>(base + 2 * i);
    return static_cast<int32_t>(p[0] | (p[1] << 8));
  }
  return readInt32(base + 4 * i);
}

llvm::Expected<TokenShard> TokenShard::open(llvm::StringRef path, int64_t vocabSize) {
  auto buffer = readRegularFile(path, "token shard");
  if (!buffer)
    return buffer.takeError();
  return parse(std::move(*buffer), vocabSize);
}

llvm::Expected<TokenShard> TokenShard::parse(std::unique_ptr<llvm::MemoryBuffer> buffer,
                                             int64_t vocabSize) {
  std::string path = buffer->getBufferIdentifier().str();
  TokenShard shard;
  shard.path_ = path;
  shard.buffer_ = std::move(buffer);
  size_t bytes = shard.buffer_->getBufferSize();
  const char *data = shard.buffer_->getBufferStart();
  if (bytes < kShardHeaderInts * 4)
    return error(llvm::formatv("token shard '{0}' is truncated: {1} bytes, shorter than the "
                               "1024-byte header",
                               path, bytes));
  int32_t magic = readInt32(data), version = readInt32(data + 4), count = readInt32(data + 8),
          rowTokens = readInt32(data + 12);
  if (magic != kShardMagic)
    return error(llvm::formatv("'{0}' is not a token shard: magic {1}, expected {2}", path,
                               magic, kShardMagic));
  if (version != 1 && version != 2)
    return error(llvm::formatv("token shard '{0}' has version {1}; only 1 (uint16) and 2 "
                               "(uint32) are known",
                               path, version));
  size_t tokenBytes = version == 1 ? 2 : 4;
  if (count < 0 || bytes != kShardHeaderInts * 4 + static_cast<size_t>(count) * tokenBytes)
    return error(llvm::formatv("token shard '{0}' is truncated or padded: header says {1} "
                               "tokens ({2} bytes), the file has {3} bytes",
                               path, count, kShardHeaderInts * 4 + count * tokenBytes, bytes));
  if (rowTokens < 0 || (rowTokens > 0 && count % rowTokens != 0))
    return error(llvm::formatv("token shard '{0}': its {1} tokens are not whole rows of {2}", path,
                               count, rowTokens));
  shard.count_ = count;
  shard.rowTokens_ = rowTokens;
  shard.version_ = version;
  // Version 2 stores uint32: ids of 2^31 and above read back negative, and
  // are as wrong as ids past the vocabulary.
  for (int64_t i = 0; i < shard.count_; ++i)
    if (shard[i] < 0 || (vocabSize > 0 && shard[i] >= vocabSize))
      return error(llvm::formatv("token shard '{0}': token {1} at position {2} is not in [0, {3})",
                                 path, static_cast<uint32_t>(shard[i]), i,
                                 vocabSize > 0 ? vocabSize : (int64_t(1) << 31)));
  return shard;
}

llvm::Error writeShard(llvm::StringRef path, llvm::ArrayRef<int32_t> tokens, int64_t rowTokens) {
  // The header's count is an int32.
  if (tokens.size() > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    return error(llvm::formatv("token shard '{0}': {1} tokens do not fit one shard (at most "
                               "2^31 - 1)",
                               path, tokens.size()));
  bool small = std::all_of(tokens.begin(), tokens.end(),
                           [](int32_t t) { return t >= 0 && t < 65536; });
  std::string bytes(kShardHeaderInts * 4, '\0');
  auto put32 = [&](size_t at, uint32_t v) {
    for (int k = 0; k < 4; ++k)
      bytes[at + k] = static_cast<char>((v >> (8 * k)) & 0xFF);
  };
  put32(0, kShardMagic);
  put32(4, small ? 1 : 2);
  put32(8, static_cast<uint32_t>(tokens.size()));
  put32(12, static_cast<uint32_t>(rowTokens));
  bytes.reserve(bytes.size() + tokens.size() * (small ? 2 : 4));
  for (int32_t t : tokens)
    for (int k = 0; k < (small ? 2 : 4); ++k)
      bytes += static_cast<char>((static_cast<uint32_t>(t) >> (8 * k)) & 0xFF);
  return writeFileAtomically(path, bytes);
}

llvm::Expected<std::unique_ptr<ShardWriter>> ShardWriter::create(llvm::StringRef path,
                                                                 int64_t vocabSize,
                                                                 int64_t rowTokens) {
  std::unique_ptr<ShardWriter> w(new ShardWriter);
  w->path_ = path.str();
  w->rowTokens_ = rowTokens;
  w->width_ = vocabSize <= 65536 ? 2 : 4;
  w->file_ = std::fopen(w->path_.c_str(), "wb");
  if (!w->file_)
    return error("cannot write token shard '" + path + "': " + std::strerror(errno));
  // The header, its count written by finish().
  int32_t header[kShardHeaderInts] = {};
  header[0] = kShardMagic;
  header[1] = w->width_ == 2 ? 1 : 2;
  header[3] = static_cast<int32_t>(rowTokens);
  static_assert(llvm::endianness::native == llvm::endianness::little,
                "shards are little-endian; kiln runs on little-endian hosts");
  if (std::fwrite(header, sizeof header, 1, w->file_) != 1)
    return error("cannot write token shard '" + path + "': " + std::strerror(errno));
  return std::move(w);
}

ShardWriter::~ShardWriter() {
  if (file_)
    std::fclose(file_);
}

llvm::Error ShardWriter::flushBuffer() {
  if (!buffer_.empty() && std::fwrite(buffer_.data(), buffer_.size(), 1, file_) != 1)
    return error("cannot write token shard '" + path_ + "': " + std::strerror(errno));
  buffer_.clear();
  return llvm::Error::success();
}

llvm::Error ShardWriter::append(llvm::ArrayRef<int32_t> tokens) {
  if (count_ + static_cast<int64_t>(tokens.size()) > std::numeric_limits<int32_t>::max())
    return error(llvm::formatv("token shard '{0}': more than 2^31 - 1 tokens", path_));
  for (int32_t t : tokens)
    for (int k = 0; k < width_; ++k)
      buffer_ += static_cast<char>((static_cast<uint32_t>(t) >> (8 * k)) & 0xFF);
  count_ += static_cast<int64_t>(tokens.size());
  return buffer_.size() >= (1u << 20) ? flushBuffer() : llvm::Error::success();
}

llvm::Error ShardWriter::finish() {
  if (rowTokens_ > 0 && count_ % rowTokens_ != 0)
    return error(llvm::formatv("token shard '{0}': {1} tokens are not whole rows of {2}", path_,
                               count_, rowTokens_));
  if (llvm::Error err = flushBuffer())
    return err;
  int32_t count = static_cast<int32_t>(count_);
  bool ok = std::fseek(file_, 8, SEEK_SET) == 0 && std::fwrite(&count, 4, 1, file_) == 1 &&
            std::fflush(file_) == 0;
  ok &= std::fclose(file_) == 0;
  file_ = nullptr;
  if (!ok)
    return error("cannot write token shard '" + path_ + "': " + std::strerror(errno));
  return llvm::Error::success();
}

llvm::Expected<std::vector<std::string>> expandGlob(llvm::StringRef pattern) {
  if (pattern.find_first_of("*?[") == llvm::StringRef::npos)
    return std::vector<std::string>{pattern.str()};
  glob_t g;
  std::string p = pattern.str();
  int rc = ::glob(p.c_str(), 0, nullptr, &g);
  std::vector<std::string> paths;
  if (rc == 0)
    for (size_t i = 0; i < g.gl_pathc; ++i)
      paths.push_back(g.gl_pathv[i]);
  globfree(&g);
  if (paths.empty())
    return error("no file matches '" + pattern + "'");
  std::sort(paths.begin(), paths.end());
  return paths;
}

} // namespace kiln
