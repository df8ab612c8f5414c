//===- Tokenize.cpp - `kiln tokenize`: text files to token shards ----------===//

#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"

#include "support/Files.h"

#include "runtime/data/TokenShard.h"
#include "tools/support/Training.h"

#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <map>

using namespace llvm;

namespace kiln::cli {

static cl::list<std::string> inputs(cl::Positional, cl::desc("<text files>"), cl::OneOrMore,
                                    cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> tokenizerKind("tokenizer", cl::desc("byte or gpt2"), cl::init("gpt2"),
                                          cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> bpeDir("bpe-dir", cl::desc("Directory of encoder.json and vocab.bpe"),
                                   cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> outDir("out", cl::desc("Output directory of the shards"),
                                   cl::value_desc("dir"), cl::Required,
                                   cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<double> valFraction("val-fraction",
                                   cl::desc("Fraction of documents for validation"),
                                   cl::init(0.05), cl::sub(tokenizeCommand()),
                                   cl::cat(kilnCategory()));
static cl::opt<std::string> splitOn(
    "split-on", cl::desc("A line that separates documents within a file (e.g. % for fortunes); "
                         "default: each file is one document"),
    cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<int64_t> shardSize("shard-size", cl::desc("Tokens per shard"),
                                  cl::init(100'000'000), cl::sub(tokenizeCommand()),
                                  cl::cat(kilnCategory()));

/// Documents of one file: the whole file, or the pieces between separator
/// lines.
static std::vector<StringRef> documents(StringRef text) {
  if (splitOn.empty())
    return {text};
  std::vector<StringRef> docs;
  auto emit = [&](size_t begin, size_t end) {
    if (!text.slice(begin, end).trim().empty())
      docs.push_back(text.slice(begin, end));
  };
  size_t docStart = 0;
  for (size_t line = 0; line < text.size();) {
    size_t eol = text.find('\n', line);
    size_t next = eol == StringRef::npos ? text.size() : eol + 1;
    if (text.slice(line, eol == StringRef::npos ? text.size() : eol).rtrim('\r') == splitOn) {
      emit(docStart, line);
      docStart = next;
    }
    line = next;
  }
  emit(docStart, text.size());
  return docs;
}

int runTokenize() {
  if (!(valFraction >= 0.0 && valFraction < 1.0))
    return fail("tokenize", "--val-fraction must be in [0, 1)");
  if (shardSize < 1024)
    return fail("tokenize", "--shard-size must be at least 1024 tokens");
  auto tokenizer = tooling::makeTokenizer(tokenizerKind, bpeDir);
  if (!tokenizer)
    return fail("tokenize", toString(tokenizer.takeError()));

  std::vector<int32_t> train, val;
  std::map<int32_t, int64_t> counts;
  int64_t docCount = 0, valDocs = 0, shardIndex[2] = {0, 0};
  std::vector<std::string> written;
  auto flush = [&](std::vector<int32_t> &tokens, int split, bool force) -> Error {
    while (static_cast<int64_t>(tokens.size()) >= shardSize || (force && !tokens.empty())) {
      size_t n = std::min<size_t>(tokens.size(), shardSize);
      std::string path = formatv("{0}/{1}_{2:06}.bin", outDir, split ? "val" : "train",
                                 shardIndex[split]++);
      if (Error err = writeShard(path, ArrayRef<int32_t>(tokens).take_front(n)))
        return err;
      written.push_back(path);
      tokens.erase(tokens.begin(), tokens.begin() + n);
    }
    return Error::success();
  };
  for (const std::string &input : inputs) {
    auto file = readRegularFile(input, "input", /*isText=*/true);
    if (!file)
      return fail("tokenize", toString(file.takeError()));
    for (StringRef doc : documents((*file)->getBuffer())) {
      // Every ⌈1/f⌉-th document goes to validation: spread over the corpus.
      bool isVal = valFraction > 0 &&
                   std::floor((docCount + 1) * valFraction) > std::floor(docCount * valFraction);
      std::vector<int32_t> &dst = isVal ? val : train;
      dst.push_back((*tokenizer)->eot()); // documents start with end-of-text, as in llm.c
      for (int32_t t : (*tokenizer)->encode(doc)) {
        dst.push_back(t);
        ++counts[t];
      }
      ++docCount;
      valDocs += isVal;
      if (Error err = flush(dst, isVal, false))
        return fail("tokenize", toString(std::move(err)));
    }
  }
  int64_t trainTokens = shardIndex[0] * shardSize + static_cast<int64_t>(train.size());
  int64_t valTokens = shardIndex[1] * shardSize + static_cast<int64_t>(val.size());
  if (Error err = flush(train, 0, true))
    return fail("tokenize", toString(std::move(err)));
  if (Error err = flush(val, 1, true))
    return fail("tokenize", toString(std::move(err)));
  if (trainTokens == 0)
    return fail("tokenize", "no text in the input files");

  // The unigram entropy: what a model that ignores context would score.
  double total = 0, entropy = 0;
  for (auto &[t, c] : counts)
    total += static_cast<double>(c);
  for (auto &[t, c] : counts) {
    double p = static_cast<double>(c) / total;
    entropy -= p * std::log(p);
  }
  outs() << formatv("kiln tokenize: {0} documents from {1} file(s), {2} tokenizer (vocab {3})\n",
                    docCount, inputs.size(), (*tokenizer)->name(), (*tokenizer)->vocabSize());
  outs() << formatv("  train: {0} tokens; val: {1} tokens ({2} documents)\n", trainTokens,
                    valTokens, valDocs);
  outs() << formatv("  unigram entropy: {0:f3} nats ({1:f3} bits) per token\n", entropy,
                    entropy / std::log(2.0));
  for (const std::string &path : written)
    outs() << "  wrote " << path << "\n";
  return 0;
}

} // namespace kiln::cli
