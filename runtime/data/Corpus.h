//===- Corpus.h - documents streamed from text and JSONL files ------------===//
//
// What `kiln tokenize` reads: plain text (a file is one document, or the
// pieces between separator lines) and JSONL (one JSON object per line, the
// document in a chosen string field), either of them gzip- or
// zstd-compressed — the compression is recognized by the file's first bytes,
// not its name (so dictzip's .dz, which is gzip, reads too). Files are read
// in chunks and documents handed out one at a time: a corpus larger than
// memory streams through in the space of its largest document.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_DATA_CORPUS_H
#define KILN_RUNTIME_DATA_CORPUS_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace kiln {

struct CorpusOptions {
  /// auto: JSONL when the name, less a compression suffix (.gz, .zst, .dz),
  /// ends in .jsonl, .ndjson or .json; text otherwise.
  /// Sft, Dpo: JSONL of fine-tuning examples or preference pairs, read
  /// with nextLine().
  enum class Format { Auto, Text, Jsonl, Sft, Dpo };
  Format format = Format::Auto;
  /// The field of a JSONL object that holds the document's text.
  std::string jsonlField = "text";
  /// Text files: a line equal to one of these separates documents (e.g. "%"
  /// for the fortunes; "" stands for blank lines, empty or only spaces);
  /// none: each file is one document.
  std::vector<std::string> splitOn;
  /// A JSONL line that is not an object with a string field: skipped and
  /// counted (true), or an error naming the file and line (false).
  bool skipBadLines = false;
};

/// The files the inputs name, in order: a file as is, a directory's regular
/// files (recursively, sorted by path, hidden ones left out), a glob's
/// matches (sorted). A name that matches nothing is an error.
llvm::Expected<std::vector<std::string>> expandInputs(llvm::ArrayRef<std::string> inputs);

/// Documents of a list of files, in order. Documents that are empty or only
/// whitespace are left out.
class DocumentStream {
public:
  static llvm::Expected<std::unique_ptr<DocumentStream>> open(std::vector<std::string> files,
                                                              CorpusOptions options);
  ~DocumentStream();

  /// The next document into `doc`: true, or false at the end of the last
  /// file; an error (unreadable or corrupt file, a bad JSONL line when not
  /// skipping) names the file and line.
  llvm::Expected<bool> next(std::string &doc);

  /// The next non-empty line of the files, trimmed, with "file:line" in
  /// `where`: for readers of JSONL records other than documents (SFT
  /// examples). Do not mix with next().
  llvm::Expected<bool> nextLine(std::string &line, std::string &where);

  /// Bytes of the files consumed so far (compressed bytes for compressed
  /// files) and in total: the progress of the stream.
  uint64_t bytesConsumed() const;
  uint64_t totalBytes() const { return totalBytes_; }
  /// Bytes of text after decompression, so far.
  uint64_t textBytes() const { return textBytes_; }
  /// JSONL lines skipped as bad (skipBadLines), and the first such one.
  int64_t skippedLines() const { return skipped_; }
  const std::string &firstSkipped() const { return firstSkipped_; }

  class Source;

private:
  DocumentStream() = default;
  llvm::Expected<bool> openNextFile();
  /// The current file's source, opening the next file when there is none;
  /// false after the last file.
  llvm::Expected<bool> ensureSource();
  llvm::Expected<bool> readLine(std::string &line);

  std::vector<std::string> files_;
  CorpusOptions options_;
  size_t nextFile_ = 0;
  std::unique_ptr<Source> source_;
  bool jsonl_ = false;
  int64_t line_ = 0;
  uint64_t totalBytes_ = 0, doneBytes_ = 0, textBytes_ = 0;
  int64_t skipped_ = 0;
  std::string firstSkipped_;
  std::string pending_; ///< decompressed bytes not yet split into lines
  size_t pendingAt_ = 0;
  bool sourceDone_ = false;
};

} // namespace kiln

#endif // KILN_RUNTIME_DATA_CORPUS_H
