//===- Corpus.cpp - documents streamed from text and JSONL files ----------===//

#include "runtime/data/Corpus.h"

#include "runtime/data/TokenShard.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/Path.h"

#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <initializer_list>
#include <cerrno>
#include <cstdio>
#include <cstring>

namespace kiln {

namespace {

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

constexpr size_t kChunk = 1 << 20;

} // namespace

/// A file's bytes after decompression.
class DocumentStream::Source {
public:
  virtual ~Source() { std::fclose(file_); }
  /// Up to `cap` bytes into `out`; 0 at the end.
  virtual llvm::Expected<size_t> read(char *out, size_t cap) = 0;
  uint64_t consumed() const { return consumed_; }

  /// Opens `path` and picks the decoder from its first bytes.
  static llvm::Expected<std::unique_ptr<Source>> open(const std::string &path);

protected:
  /// Refills the raw input buffer when it is used up; false at the end of
  /// the file.
  llvm::Expected<bool> fill() {
    if (inAt_ < in_.size())
      return true;
    in_.resize(kChunk);
    size_t n = std::fread(in_.data(), 1, kChunk, file_);
    if (n == 0 && std::ferror(file_))
      return error("cannot read '" + path_ + "': " + std::strerror(errno));
    in_.resize(n);
    inAt_ = 0;
    consumed_ += n;
    return n > 0;
  }
  llvm::StringRef available() const { return llvm::StringRef(in_).drop_front(inAt_); }

  std::string path_;
  std::FILE *file_ = nullptr;
  std::string in_;
  size_t inAt_ = 0;
  uint64_t consumed_ = 0;
};

namespace {

class PlainSource final : public DocumentStream::Source {
public:
  llvm::Expected<size_t> read(char *out, size_t cap) override {
    auto more = fill();
    if (!more)
      return more.takeError();
    if (!*more)
      return 0;
    size_t n = std::min(cap, in_.size() - inAt_);
    std::memcpy(out, in_.data() + inAt_, n);
    inAt_ += n;
    return n;
  }
};

/// gzip (RFC 1952), one member or several concatenated.
class GzipSource final : public DocumentStream::Source {
public:
  GzipSource() {
    std::memset(&zs_, 0, sizeof zs_);
    ok_ = inflateInit2(&zs_, 15 + 16) == Z_OK;
  }
  ~GzipSource() override { inflateEnd(&zs_); }

  llvm::Expected<size_t> read(char *out, size_t cap) override {
    if (!ok_)
      return error("cannot start zlib for '" + path_ + "'");
    zs_.next_out = reinterpret_cast<Bytef *>(out);
    zs_.avail_out = static_cast<uInt>(std::min<size_t>(cap, UINT32_MAX));
    while (zs_.avail_out == static_cast<uInt>(std::min<size_t>(cap, UINT32_MAX))) {
      auto more = fill();
      if (!more)
        return more.takeError();
      if (!*more) {
        if (!memberEnded_)
          return error("'" + path_ + "' is a truncated gzip file");
        break;
      }
      if (memberEnded_) {
        // After a member: another member, or zero padding (tape blocks),
        // which gzip ignores too; anything else is an error.
        if (static_cast<unsigned char>(in_[inAt_]) == 0) {
          llvm::StringRef rest = available();
          if (rest.find_first_not_of('\0') != llvm::StringRef::npos)
            return error("'" + path_ + "' has data after its gzip stream that is not gzip");
          inAt_ = in_.size();
          continue;
        }
        inflateReset(&zs_); // another member follows
        memberEnded_ = false;
      }
      zs_.next_in = reinterpret_cast<Bytef *>(in_.data() + inAt_);
      zs_.avail_in = static_cast<uInt>(in_.size() - inAt_);
      int rc = inflate(&zs_, Z_NO_FLUSH);
      inAt_ = in_.size() - zs_.avail_in;
      if (rc == Z_STREAM_END)
        memberEnded_ = true;
      else if (rc != Z_OK && rc != Z_BUF_ERROR)
        return error("'" + path_ + "' is not a valid gzip file: " +
                     (zs_.msg ? zs_.msg : "zlib error " + std::to_string(rc)));
    }
    return cap - zs_.avail_out;
  }

private:
  z_stream zs_;
  bool ok_ = false;
  bool memberEnded_ = false;
};

/// Zstandard (RFC 8878), one frame or several.
class ZstdSource final : public DocumentStream::Source {
public:
  ZstdSource() : dctx_(ZSTD_createDCtx()) {}
  ~ZstdSource() override { ZSTD_freeDCtx(dctx_); }

  llvm::Expected<size_t> read(char *out, size_t cap) override {
    ZSTD_outBuffer output{out, cap, 0};
    while (output.pos == 0) {
      auto more = fill();
      if (!more)
        return more.takeError();
      if (!*more) {
        if (pendingFrame_)
          return error("'" + path_ + "' is a truncated zstd file");
        break;
      }
      ZSTD_inBuffer input{in_.data(), in_.size(), inAt_};
      size_t rc = ZSTD_decompressStream(dctx_, &output, &input);
      inAt_ = input.pos;
      if (ZSTD_isError(rc))
        return error("'" + path_ + "' is not a valid zstd file: " + ZSTD_getErrorName(rc));
      pendingFrame_ = rc != 0;
    }
    return output.pos;
  }

private:
  ZSTD_DCtx *dctx_;
  bool pendingFrame_ = false;
};

} // namespace

llvm::Expected<std::unique_ptr<DocumentStream::Source>>
DocumentStream::Source::open(const std::string &path) {
  std::FILE *file = std::fopen(path.c_str(), "rb");
  if (!file)
    return error("cannot open '" + path + "': " + std::strerror(errno));
  std::unique_ptr<Source> source;
  unsigned char magic[6] = {0, 0, 0, 0, 0, 0};
  size_t n = std::fread(magic, 1, 6, file);
  std::rewind(file);
  auto starts = [&](std::initializer_list<unsigned char> bytes) {
    return n >= bytes.size() && std::equal(bytes.begin(), bytes.end(), magic);
  };
  // A zstd frame, or a skippable frame (pzstd writes one first).
  bool zstd = starts({0x28, 0xB5, 0x2F, 0xFD}) ||
              (n >= 4 && (magic[0] & 0xF0) == 0x50 && magic[1] == 0x2A && magic[2] == 0x4D &&
               magic[3] == 0x18);
  const char *unsupported = starts({0xFD, '7', 'z', 'X', 'Z', 0x00}) ? "xz"
                            : starts({'B', 'Z', 'h'})                  ? "bzip2"
                            : starts({0x04, 0x22, 0x4D, 0x18})         ? "lz4"
                            : starts({'P', 'K', 0x03, 0x04})           ? "zip"
                                                                      : nullptr;
  if (unsupported) {
    std::fclose(file);
    return error("'" + path + "' is " + unsupported +
                 "-compressed; kiln reads plain, gzip and zstd files (decompress it first)");
  }
  if (starts({0x1F, 0x8B}))
    source = std::make_unique<GzipSource>();
  else if (zstd)
    source = std::make_unique<ZstdSource>();
  else
    source = std::make_unique<PlainSource>();
  source->path_ = path;
  source->file_ = file;
  return std::move(source);
}

llvm::Expected<std::vector<std::string>> expandInputs(llvm::ArrayRef<std::string> inputs) {
  std::vector<std::string> files;
  for (const std::string &input : inputs) {
    if (llvm::sys::fs::is_directory(input)) {
      std::vector<std::string> found;
      std::error_code ec;
      for (llvm::sys::fs::recursive_directory_iterator it(input, ec), end; it != end && !ec;
           it.increment(ec)) {
        llvm::StringRef name = llvm::sys::path::filename(it->path());
        if (name.starts_with(".")) {
          if (it->type() == llvm::sys::fs::file_type::directory_file)
            it.no_push();
          continue;
        }
        if (llvm::sys::fs::is_regular_file(it->path()))
          found.push_back(it->path());
      }
      if (ec)
        return error("cannot list '" + input + "': " + ec.message());
      if (found.empty())
        return error("the directory '" + input + "' has no files");
      llvm::sort(found);
      files.insert(files.end(), found.begin(), found.end());
      continue;
    }
    if (llvm::StringRef(input).find_first_of("*?[") == llvm::StringRef::npos) {
      if (!llvm::sys::fs::exists(input))
        return error("input '" + input + "' does not exist");
      if (!llvm::sys::fs::is_regular_file(input))
        return error("input '" + input + "' is not a regular file (a device, FIFO or socket)");
      files.push_back(input);
      continue;
    }
    auto matches = expandGlob(input);
    if (!matches)
      return matches.takeError();
    for (std::string &m : *matches)
      if (llvm::sys::fs::is_regular_file(m))
        files.push_back(std::move(m));
  }
  return files;
}

llvm::Expected<std::unique_ptr<DocumentStream>> DocumentStream::open(std::vector<std::string> files,
                                                                     CorpusOptions options) {
  std::unique_ptr<DocumentStream> stream(new DocumentStream);
  for (const std::string &f : files) {
    uint64_t size = 0;
    if (std::error_code ec = llvm::sys::fs::file_size(f, size))
      return error("cannot read '" + f + "': " + ec.message());
    stream->totalBytes_ += size;
  }
  stream->files_ = std::move(files);
  stream->options_ = std::move(options);
  return std::move(stream);
}

DocumentStream::~DocumentStream() = default;

uint64_t DocumentStream::bytesConsumed() const {
  return doneBytes_ + (source_ ? source_->consumed() : 0);
}

/// Whether `path` is JSONL by its name (less a compression suffix).
static bool jsonlByName(llvm::StringRef path) {
  llvm::StringRef name = llvm::sys::path::filename(path);
  for (llvm::StringRef suffix : {".gz", ".zst", ".zstd", ".dz"})
    if (name.consume_back(suffix))
      break;
  return name.ends_with(".jsonl") || name.ends_with(".ndjson") || name.ends_with(".json");
}

llvm::Expected<bool> DocumentStream::openNextFile() {
  if (source_) {
    doneBytes_ += source_->consumed();
    source_.reset();
  }
  if (nextFile_ == files_.size())
    return false;
  const std::string &path = files_[nextFile_++];
  auto source = Source::open(path);
  if (!source)
    return source.takeError();
  source_ = std::move(*source);
  jsonl_ = options_.format == CorpusOptions::Format::Jsonl ||
           options_.format == CorpusOptions::Format::Sft ||
           options_.format == CorpusOptions::Format::Dpo ||
           (options_.format == CorpusOptions::Format::Auto && jsonlByName(path));
  line_ = 0;
  pending_.clear();
  pendingAt_ = 0;
  sourceDone_ = false;
  return true;
}

llvm::Expected<bool> DocumentStream::readLine(std::string &line) {
  line.clear();
  while (true) {
    size_t eol = pending_.find('\n', pendingAt_);
    if (eol != std::string::npos) {
      line.append(pending_, pendingAt_, eol + 1 - pendingAt_);
      pendingAt_ = eol + 1;
      ++line_;
      return true;
    }
    line.append(pending_, pendingAt_, std::string::npos);
    pending_.clear();
    pendingAt_ = 0;
    if (sourceDone_) {
      if (line.empty())
        return false;
      ++line_; // a last line without a newline
      return true;
    }
    pending_.resize(kChunk);
    auto n = source_->read(pending_.data(), kChunk);
    if (!n)
      return n.takeError();
    pending_.resize(*n);
    textBytes_ += *n;
    sourceDone_ = *n == 0;
  }
}

llvm::Expected<bool> DocumentStream::ensureSource() {
  return source_ ? llvm::Expected<bool>(true) : openNextFile();
}

llvm::Expected<bool> DocumentStream::nextLine(std::string &out, std::string &where) {
  std::string line;
  while (true) {
    auto open = ensureSource();
    if (!open || !*open)
      return open;
    auto more = readLine(line);
    if (!more)
      return more.takeError();
    if (!*more) {
      doneBytes_ += source_->consumed();
      source_.reset();
      continue;
    }
    llvm::StringRef text = llvm::StringRef(line).trim();
    if (line_ == 1)
      text.consume_front("\xEF\xBB\xBF");
    if (text.empty())
      continue;
    out = text.str();
    where = files_[nextFile_ - 1] + ":" + std::to_string(line_);
    return true;
  }
}

llvm::Expected<bool> DocumentStream::next(std::string &doc) {
  while (true) {
    auto open = ensureSource();
    if (!open || !*open)
      return open;
    const std::string &path = files_[nextFile_ - 1];
    doc.clear();
    bool found = false;
    if (jsonl_) {
      std::string line;
      while (!found) {
        auto more = readLine(line);
        if (!more)
          return more.takeError();
        if (!*more)
          break;
        llvm::StringRef text = llvm::StringRef(line).trim();
        if (line_ == 1)
          text.consume_front("\xEF\xBB\xBF"); // a UTF-8 byte-order mark
        if (text.empty())
          continue;
        std::string why;
        auto value = llvm::json::parse(text);
        if (!value) {
          why = "not valid JSON: " + llvm::toString(value.takeError());
        } else if (const llvm::json::Object *object = value->getAsObject()) {
          if (auto field = object->getString(options_.jsonlField)) {
            doc = field->str();
            found = !llvm::StringRef(doc).trim().empty();
            continue;
          }
          why = object->get(options_.jsonlField)
                    ? "the field \"" + options_.jsonlField + "\" is not a string"
                    : "no field \"" + options_.jsonlField + "\"";
        } else {
          why = "not a JSON object";
        }
        std::string where = path + ":" + std::to_string(line_);
        if (!options_.skipBadLines)
          return error(where + ": " + why + " (--skip-bad-lines skips such lines and counts them)");
        if (skipped_++ == 0)
          firstSkipped_ = where + ": " + why;
      }
    } else if (options_.splitOn.empty()) {
      // The whole file is one document.
      std::string chunk(kChunk, '\0');
      while (true) {
        auto n = source_->read(chunk.data(), kChunk);
        if (!n)
          return n.takeError();
        if (*n == 0)
          break;
        doc.append(chunk, 0, *n);
        textBytes_ += *n;
      }
      found = !llvm::StringRef(doc).trim().empty();
      doneBytes_ += source_->consumed();
      source_.reset();
      if (found)
        return true;
      continue;
    } else {
      std::string line;
      while (!found) {
        auto more = readLine(line);
        if (!more)
          return more.takeError();
        if (!*more)
          break;
        llvm::StringRef bare = llvm::StringRef(line).rtrim('\n').rtrim('\r');
        auto separates = [&](const std::string &s) {
          return s.empty() ? bare.trim().empty() : bare == s;
        };
        if (llvm::any_of(options_.splitOn, separates)) {
          found = !llvm::StringRef(doc).trim().empty();
          if (!found)
            doc.clear();
          continue;
        }
        doc += line;
      }
      if (!found)
        found = !llvm::StringRef(doc).trim().empty();
    }
    if (found)
      return true;
    // The file is used up.
    doneBytes_ += source_->consumed();
    source_.reset();
  }
}

} // namespace kiln
