//===- Tokenize.cpp - `kiln tokenize`: text and JSONL to token shards ------===//
//
// Documents stream from the inputs (runtime/data/Corpus.h) in batches; the
// batches are tokenized on a thread pool and written in input order, so the
// shards are the same whatever the thread count. Shards go to a staging
// directory inside --out and are moved into place only when the whole corpus
// is done: a failed run leaves the shards of an earlier one untouched.
//
//===----------------------------------------------------------------------===//

#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"

#include "runtime/data/Corpus.h"
#include "runtime/data/TokenShard.h"
#include "train/Loop.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/ThreadPool.h"
#include "llvm/Support/Threading.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>
#include <deque>
#include <future>
#include <limits>
#include <optional>
#include <thread>

using namespace llvm;

namespace kiln::cli {

static cl::list<std::string> inputs(cl::Positional,
                                    cl::desc("<text or JSONL files, directories, globs>"),
                                    cl::OneOrMore, cl::sub(tokenizeCommand()),
                                    cl::cat(kilnCategory()));
static cl::opt<std::string> tokenizerKind(
    "tokenizer", cl::desc("byte, gpt2, cl100k_base, o200k_base or sentencepiece"),
    cl::init("gpt2"), cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> tokenizerPath(
    "tokenizer-path",
    cl::desc("The tokenizer's files: gpt2's directory of encoder.json and vocab.bpe, the "
             "directory of tiktoken rank files (default: the npm packages), or a "
             "SentencePiece .model file"),
    cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::alias bpeDirAlias("bpe-dir", cl::desc("Alias for --tokenizer-path"),
                             cl::aliasopt(tokenizerPath), cl::NotHidden);
static cl::opt<std::string> outDir("out", cl::desc("Output directory of the shards"),
                                   cl::value_desc("dir"), cl::Required,
                                   cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<double> valFraction("val-fraction",
                                   cl::desc("Fraction of documents for validation"),
                                   cl::init(0.05), cl::sub(tokenizeCommand()),
                                   cl::cat(kilnCategory()));
static cl::list<std::string> splitOn(
    "split-on", cl::desc("Text files: a line that separates documents (e.g. % for fortunes; "
                         "'' for blank lines; may be repeated); default: each file is one "
                         "document"),
    cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<CorpusOptions::Format> format(
    "format", cl::desc("Input format"), cl::init(CorpusOptions::Format::Auto),
    cl::values(clEnumValN(CorpusOptions::Format::Auto, "auto",
                          "JSONL for names ending .jsonl/.ndjson/.json (before .gz/.zst), "
                          "else text"),
               clEnumValN(CorpusOptions::Format::Text, "text", "plain text"),
               clEnumValN(CorpusOptions::Format::Jsonl, "jsonl", "one JSON object per line"),
               clEnumValN(CorpusOptions::Format::Sft, "sft",
                          "JSONL fine-tuning examples: {\"prompt\", \"response\"} or "
                          "{\"messages\": [{\"role\", \"content\"}, ...]}; writes loss masks"),
               clEnumValN(CorpusOptions::Format::Dpo, "dpo",
                          "JSONL preference pairs {\"prompt\", \"chosen\", \"rejected\"}: "
                          "rows of --seq-len + 1 tokens, chosen then rejected, with loss masks")),
    cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> jsonlField(
    "jsonl-field", cl::desc("The JSONL field of the document's text (giving it implies "
                            "--format=jsonl)"),
    cl::init("text"), cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<bool> skipBadLines(
    "skip-bad-lines",
    cl::desc("Skip JSONL lines that are not an object with the text field, and count them "
             "(default: stop at the first, naming file and line)"),
    cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<int64_t> shardSize("shard-size", cl::desc("Tokens per shard"),
                                  cl::init(100'000'000), cl::sub(tokenizeCommand()),
                                  cl::cat(kilnCategory()));
static cl::opt<unsigned> threads("threads",
                                 cl::desc("Threads that tokenize (0: one per core)"),
                                 cl::init(0), cl::sub(tokenizeCommand()),
                                 cl::cat(kilnCategory()));
static cl::opt<std::string> promptTemplate(
    "prompt-template", cl::desc("SFT: how a prompt is written ({prompt}; \\n is a newline)"),
    cl::init("{prompt}\\n"), cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> responseTemplate(
    "response-template", cl::desc("SFT: how a response is written ({response})"),
    cl::init("{response}"), cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> messageTemplate(
    "message-template", cl::desc("SFT: how a chat message is written ({role}, {content})"),
    cl::init("<|{role}|>\\n{content}\\n"), cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::list<std::string> trainRoles(
    "train-role", cl::desc("SFT: a chat role whose messages are trained on (default: assistant)"),
    cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<int64_t> maxExampleTokens(
    "max-example-tokens",
    cl::desc("SFT: an example longer than this (end-of-text included) is skipped or truncated "
             "(0: no limit; use train.seq_len + 1)"),
    cl::init(0), cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<int64_t> seqLen(
    "seq-len",
    cl::desc("DPO: the training sequence length (train.seq_len); each response is a row of "
             "this + 1 tokens, padded"),
    cl::init(0), cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<bool> truncateLong(
    "truncate-long",
    cl::desc("SFT, DPO: truncate too long examples (default: skip and count them); DPO "
             "truncates the responses, never the prompt"),
    cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> configFile(
    "config",
    cl::desc("A run config (TOML): its data.tokenizer, data.tokenizer_path, "
             "data.prompt_template, data.response_template, data.message_template, "
             "data.train_roles and train.seq_len (DPO's --seq-len; SFT's --max-example-tokens "
             "is seq_len + 1) stand for the options not given"),
    cl::value_desc("run.toml"), cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<unsigned> batchKb(
    "batch-kb", cl::desc("Text per tokenizing task, in KiB (tests make it small to get many)"),
    cl::init(1024), cl::Hidden, cl::sub(tokenizeCommand()), cl::cat(kilnCategory()));
static cl::opt<bool> quiet("quiet", cl::desc("No progress line"), cl::sub(tokenizeCommand()),
                           cl::cat(kilnCategory()));

namespace {

/// Texts tokenized by one task: documents, or parts of a long document cut
/// where the tokenizer allows (Tokenizer::cutsAtLineStarts).
struct Batch {
  std::vector<std::string> docs;
  std::vector<char> isVal, startsDoc;
  size_t bytes = 0;
};

/// Where to cut `doc` into parts of about `size` bytes: at line breaks
/// between a visible ASCII character and an ASCII letter (see
/// Tokenizer::cutsAtLineStarts).
std::vector<size_t> cutPoints(llvm::StringRef doc, size_t size) {
  std::vector<size_t> cuts;
  auto allowed = [&](size_t nl) {
    return nl > 0 && nl + 1 < doc.size() && llvm::isAlpha(doc[nl + 1]) &&
           doc[nl - 1] > ' ' && doc[nl - 1] < 0x7F;
  };
  for (size_t at = size; at < doc.size();) {
    size_t nl = doc.find('\n', at - 1);
    while (nl != llvm::StringRef::npos && nl + 1 < doc.size() && !allowed(nl))
      nl = doc.find('\n', nl + 1);
    if (nl == llvm::StringRef::npos || nl + 1 >= doc.size())
      break;
    cuts.push_back(nl + 1);
    at = nl + 1 + size;
  }
  return cuts;
}
using Tokens = std::vector<std::vector<int32_t>>;

/// The progress line: MB read of the inputs, MB/s, ETA; redrawn in place on a
/// terminal, a line every 10 s otherwise.
class Progress {
public:
  explicit Progress(uint64_t total) : total_(total), tty_(sys::Process::StandardErrIsDisplayed()) {}
  void update(uint64_t done, int64_t docs, int64_t tokens, bool last = false) {
    double t = secondsSince(start_);
    if (quiet || (!last && t - shown_ < (tty_ ? 0.25 : 10.0)))
      return;
    if (last && !tty_ && shown_ == 0)
      return; // a short run needs no progress line
    shown_ = t;
    double mb = static_cast<double>(done) / 1e6, rate = t > 0 ? mb / t : 0;
    std::string eta = "";
    if (rate > 0 && done < total_) {
      int64_t s = static_cast<int64_t>((static_cast<double>(total_ - done) / 1e6) / rate);
      eta = formatv(", ETA {0}:{1:02}", s / 60, s % 60).str();
    }
    errs() << formatv("{0}tokenize: {1:f1}/{2:f1} MB ({3:f0}%), {4:f1} MB/s{5}, {6} documents, "
                      "{7} tokens{8}",
                      tty_ ? "\r" : "", mb, static_cast<double>(total_) / 1e6,
                      total_ ? 100.0 * static_cast<double>(done) / static_cast<double>(total_)
                             : 100.0,
                      rate, eta, withCommas(docs), withCommas(tokens),
                      tty_ && !last ? "   " : "\n");
  }

private:
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
  uint64_t total_;
  bool tty_;
  double shown_ = 0;
};

} // namespace

int runTokenize() {
  if (!(valFraction >= 0.0 && valFraction < 1.0))
    return fail("tokenize", "--val-fraction must be in [0, 1)");
  if (shardSize < 1024 || shardSize > std::numeric_limits<int32_t>::max())
    return fail("tokenize", "--shard-size must be in [1024, 2^31 - 1] tokens (a shard's count "
                            "is an int32)");
  if (batchKb < 1)
    return fail("tokenize", "--batch-kb must be at least 1");
  // Options from a run's config, where the command line does not give them:
  // the shards then fit the run.
  std::vector<std::string> roles(trainRoles.begin(), trainRoles.end());
  if (!configFile.empty()) {
    auto config = RunConfig::loadFile(configFile);
    if (!config)
      return fail("tokenize", toString(config.takeError()));
    const DataConfig &d = config->data;
    if (!tokenizerKind.getNumOccurrences())
      tokenizerKind = d.tokenizer;
    if (!tokenizerPath.getNumOccurrences())
      tokenizerPath = d.tokenizer_path;
    if (!promptTemplate.getNumOccurrences())
      promptTemplate = d.prompt_template;
    if (!responseTemplate.getNumOccurrences())
      responseTemplate = d.response_template;
    if (!messageTemplate.getNumOccurrences())
      messageTemplate = d.message_template;
    if (roles.empty())
      for (StringRef role : split(d.train_roles, ','))
        if (!role.trim().empty())
          roles.push_back(role.trim().str());
    if (format == CorpusOptions::Format::Dpo && !seqLen.getNumOccurrences())
      seqLen = config->seqLen();
    if (format == CorpusOptions::Format::Sft && !maxExampleTokens.getNumOccurrences())
      maxExampleTokens = config->seqLen() + 1;
  }
  if (roles.empty())
    roles.push_back("assistant");
  if (format == CorpusOptions::Format::Dpo && (seqLen < 1 || seqLen >= (1 << 20)))
    return fail("tokenize", "--format dpo needs --seq-len N, the run's train.seq_len (each "
                            "response becomes a row of N + 1 tokens)");
  if (format != CorpusOptions::Format::Dpo && seqLen.getNumOccurrences())
    return fail("tokenize", "--seq-len is for --format dpo (its rows' length); SFT limits "
                            "examples with --max-example-tokens");
  auto tokenizer = tooling::makeTokenizer(tokenizerKind, tokenizerPath);
  if (!tokenizer)
    return fail("tokenize", toString(tokenizer.takeError()));
  const Tokenizer &tok = **tokenizer;
  auto files = expandInputs(inputs);
  if (!files)
    return fail("tokenize", toString(files.takeError()));
  CorpusOptions options;
  options.format = format;
  if (jsonlField.getNumOccurrences() && format == CorpusOptions::Format::Auto)
    options.format = CorpusOptions::Format::Jsonl;
  options.jsonlField = jsonlField;
  options.splitOn.assign(splitOn.begin(), splitOn.end());
  options.skipBadLines = skipBadLines;
  auto stream = DocumentStream::open(*files, options);
  if (!stream)
    return fail("tokenize", toString(stream.takeError()));

  // Shards are staged and moved into --out at the end.
  if (std::error_code ec = sys::fs::create_directories(outDir))
    return fail("tokenize", "cannot create '" + outDir + "': " + ec.message());
  // An absolute prefix: createUniqueDirectory puts a relative one in the
  // system's temporary directory, from where the final renames could cross
  // file systems.
  SmallString<256> prefix(outDir + "/.tokenize"), staging;
  if (std::error_code ec = sys::fs::make_absolute(prefix))
    return fail("tokenize", "cannot resolve '" + outDir + "': " + ec.message());
  if (std::error_code ec = sys::fs::createUniqueDirectory(prefix, staging))
    return fail("tokenize", "cannot write in '" + outDir + "': " + ec.message());
  scope_exit cleanup([&] { sys::fs::remove_directories(staging); });

  unsigned threadCount = threads ? threads.getValue()
                                 : std::max(1u, std::thread::hardware_concurrency());
  std::optional<DefaultThreadPool> pool;
  if (threadCount > 1)
    pool.emplace(hardware_concurrency(threadCount));

  // Each split's open shard; tokens stream into it, so memory does not
  // grow with the shard size.
  std::unique_ptr<ShardWriter> shard[2], maskShard[2];
  const bool dpo = format == CorpusOptions::Format::Dpo;
  const bool sft = format == CorpusOptions::Format::Sft || dpo;
  // DPO: fixed rows of seqLen + 1 tokens, in pairs that a shard never splits.
  const int64_t rowTokens = dpo ? seqLen + 1 : 0;
  const int64_t shardTokens = dpo ? std::max<int64_t>(1, shardSize / (2 * rowTokens)) * 2 * rowTokens
                                  : shardSize.getValue();
  std::vector<int64_t> counts(tok.vocabSize(), 0);
  int64_t docCount = 0, valDocs = 0, shardIndex[2] = {0, 0}, tokenCount[2] = {0, 0};
  std::vector<std::string> written; // names relative to --out
  auto closeShard = [&](int split) -> Error {
    if (!shard[split])
      return Error::success();
    Error err = shard[split]->finish();
    shard[split].reset();
    if (maskShard[split]) {
      if (!err)
        err = maskShard[split]->finish();
      maskShard[split].reset();
    }
    return err;
  };
  // `mask` (SFT): one 0/1 flag per token, written to the shard's .mask.
  auto append = [&](int split, ArrayRef<int32_t> tokens, ArrayRef<int32_t> mask = {}) -> Error {
    while (!tokens.empty()) {
      if (!shard[split]) {
        std::string stem = formatv("{0}_{1:06}", split ? "val" : "train", shardIndex[split]++);
        auto w = ShardWriter::create((staging + "/" + stem + ".bin").str(), tok.vocabSize(),
                                     rowTokens);
        if (!w)
          return w.takeError();
        shard[split] = std::move(*w);
        written.push_back(stem + ".bin");
        if (sft) {
          auto m = ShardWriter::create((staging + "/" + stem + ".mask").str(), 2);
          if (!m)
            return m.takeError();
          maskShard[split] = std::move(*m);
          written.push_back(stem + ".mask");
        }
      }
      size_t n = std::min<size_t>(tokens.size(), shardTokens - shard[split]->size());
      if (Error err = shard[split]->append(tokens.take_front(n)))
        return err;
      if (maskShard[split]) {
        if (Error err = maskShard[split]->append(mask.take_front(n)))
          return err;
        mask = mask.drop_front(n);
      }
      tokens = tokens.drop_front(n);
      if (shard[split]->size() == shardTokens)
        if (Error err = closeShard(split))
          return err;
    }
    return Error::success();
  };
  auto tokenize = [&tok](const Batch &batch) {
    Tokens out(batch.docs.size());
    for (size_t i = 0; i < batch.docs.size(); ++i)
      out[i] = tok.encode(batch.docs[i]);
    return out;
  };
  // Batches in flight, oldest first: their documents and their tokens.
  std::deque<std::pair<std::shared_ptr<Batch>, std::shared_future<Tokens>>> inFlight;
  auto consume = [&]() -> Error {
    auto [batch, tokens] = std::move(inFlight.front());
    inFlight.pop_front();
    const Tokens &result = tokens.get();
    for (size_t i = 0; i < result.size(); ++i) {
      int split = batch->isVal[i];
      if (batch->startsDoc[i]) {
        int32_t eot = tok.eot(); // documents start with end-of-text, as in llm.c
        if (Error err = append(split, eot))
          return err;
        ++tokenCount[split];
      }
      if (Error err = append(split, result[i]))
        return err;
      for (int32_t t : result[i])
        ++counts[t];
      tokenCount[split] += static_cast<int64_t>(result[i].size());
    }
    return Error::success();
  };
  // Bounded memory: at most two tasks per thread wait for the writer, also
  // while one long document is being cut into many.
  std::string failure;
  auto check = [&](Error err) {
    if (err && failure.empty())
      failure = toString(std::move(err));
    else
      consumeError(std::move(err));
    return failure.empty();
  };
  auto submit = [&](std::shared_ptr<Batch> batch) {
    if (pool) {
      inFlight.emplace_back(batch, pool->async([batch, &tokenize] { return tokenize(*batch); }));
    } else {
      std::promise<Tokens> done;
      done.set_value(tokenize(*batch));
      inFlight.emplace_back(batch, done.get_future().share());
    }
    while (failure.empty() && inFlight.size() >= 2 * threadCount)
      check(consume());
  };

  // The split of the next document (or example, or pair): a fraction f of
  // them for validation, spread evenly over the corpus.
  auto nextIsVal = [&] {
    bool isVal = valFraction > 0 &&
                 std::floor((docCount + 1) * valFraction) > std::floor(docCount * valFraction);
    ++docCount;
    valDocs += isVal;
    return isVal;
  };
  const size_t taskBytes = size_t{batchKb} * 1024;
  int64_t skippedSft = 0;
  std::string firstSkippedSft;
  Progress progress((*stream)->totalBytes());
  auto batch = std::make_shared<Batch>();
  std::string doc;
  int64_t tooLong = 0, promptTooLong = 0;
  std::string firstTooLong, firstPromptTooLong;
  bool previousTrained = false;
  auto fill = [](std::string text, std::initializer_list<std::pair<StringRef, StringRef>> vars) {
    for (size_t at; (at = text.find("\\n")) != std::string::npos;)
      text.replace(at, 2, "\n");
    for (auto [key, value] : vars)
      for (size_t at = 0; (at = text.find(key.str(), at)) != std::string::npos; at += value.size())
        text.replace(at, key.size(), value.str());
    return text;
  };
  while (sft && failure.empty()) {
    std::string line, where;
    auto more = (*stream)->nextLine(line, where);
    if (!more) {
      check(more.takeError());
      break;
    }
    if (!*more)
      break;
    // The example's pieces of text, each with whether it is trained on.
    std::vector<std::pair<std::string, bool>> segments;
    std::string why;
    auto value = json::parse(line);
    const json::Object *o = value ? value->getAsObject() : nullptr;
    if (!value) {
      why = "not valid JSON: " + toString(value.takeError());
    } else if (!o) {
      why = "not a JSON object";
    } else if (dpo) {
      auto prompt = o->getString("prompt"), chosen = o->getString("chosen"),
           rejected = o->getString("rejected");
      if (!prompt || !chosen || !rejected)
        why = formatv("no string field \"{0}\"", !prompt ? "prompt" : !chosen ? "chosen" : "rejected")
                  .str();
      else
        segments = {{fill(promptTemplate, {{"{prompt}", *prompt}}), false},
                    {fill(responseTemplate, {{"{response}", *chosen}}), true},
                    {fill(responseTemplate, {{"{response}", *rejected}}), true}};
    } else if (const json::Array *messages = o->getArray("messages")) {
      for (const json::Value &m : *messages) {
        const json::Object *mo = m.getAsObject();
        auto role = mo ? mo->getString("role") : std::nullopt;
        auto content = mo ? mo->getString("content") : std::nullopt;
        if (!role || !content) {
          why = "a message is not an object with string \"role\" and \"content\"";
          break;
        }
        segments.push_back({fill(messageTemplate, {{"{role}", *role}, {"{content}", *content}}),
                            is_contained(roles, *role)});
      }
      if (why.empty() && segments.empty())
        why = "\"messages\" is empty";
    } else if (auto prompt = o->getString("prompt")) {
      auto response = o->getString("response");
      if (!response)
        why = "no string field \"response\"";
      else
        segments = {{fill(promptTemplate, {{"{prompt}", *prompt}}), false},
                    {fill(responseTemplate, {{"{response}", *response}}), true}};
    } else {
      why = "neither \"prompt\" and \"response\" nor \"messages\"";
    }
    if (!why.empty()) {
      if (!skipBadLines) {
        failure = where + ": " + why + " (--skip-bad-lines skips such lines and counts them)";
        break;
      }
      if (skippedSft++ == 0)
        firstSkippedSft = where + ": " + why;
      continue;
    }
    if (dpo) {
      // Two rows: end-of-text, the prompt (no targets), the response and an
      // end-of-text (targets: the model learns where the response stops),
      // then end-of-text padding without targets.
      std::vector<int32_t> promptTokens{tok.eot()};
      for (int32_t t : tok.encode(segments[0].first))
        promptTokens.push_back(t);
      std::vector<int32_t> rows, masks;
      bool skip = false, tooLongPair = false;
      for (int k = 1; k <= 2; ++k) {
        std::vector<int32_t> row = promptTokens, mask(promptTokens.size(), 0);
        for (int32_t t : tok.encode(segments[k].first)) {
          row.push_back(t);
          mask.push_back(1);
        }
        row.push_back(tok.eot());
        mask.push_back(1);
        if (static_cast<int64_t>(row.size()) > rowTokens) {
          // Truncation keeps at least one response token to compare.
          if (truncateLong && static_cast<int64_t>(promptTokens.size()) >= rowTokens) {
            if (promptTooLong++ == 0)
              firstPromptTooLong = formatv("{0}: {1} tokens", where, promptTokens.size()).str();
            skip = true;
            break;
          }
          if (!tooLongPair && tooLong++ == 0)
            firstTooLong = formatv("{0}: {1} tokens", where, row.size()).str();
          tooLongPair = true;
          skip |= !truncateLong;
          row.resize(rowTokens);
          mask.resize(rowTokens);
        }
        row.resize(rowTokens, tok.eot());
        mask.resize(rowTokens, 0);
        rows.insert(rows.end(), row.begin(), row.end());
        masks.insert(masks.end(), mask.begin(), mask.end());
      }
      if (skip)
        continue;
      bool isVal = nextIsVal();
      if (!check(append(isVal, rows, masks)))
        break;
      for (size_t k = 0; k < rows.size(); ++k)
        counts[rows[k]] += masks[k];
      tokenCount[isVal] += static_cast<int64_t>(rows.size());
      continue;
    }
    // End-of-text first; it is a target (learning to stop) when the
    // example before ended with trained text.
    std::vector<int32_t> tokens{tok.eot()}, mask{previousTrained ? 1 : 0};
    for (const auto &[text, trained] : segments)
      for (int32_t t : tok.encode(text)) {
        tokens.push_back(t);
        mask.push_back(trained ? 1 : 0);
      }
    if (maxExampleTokens > 0 && static_cast<int64_t>(tokens.size()) > maxExampleTokens) {
      if (tooLong++ == 0)
        firstTooLong = formatv("{0}: {1} tokens", where, tokens.size()).str();
      if (!truncateLong)
        continue;
      tokens.resize(maxExampleTokens);
      mask.resize(maxExampleTokens);
    }
    previousTrained = segments.back().second;
    bool isVal = nextIsVal();
    if (!check(append(isVal, tokens, mask)))
      break;
    for (size_t k = 1; k < tokens.size(); ++k)
      ++counts[tokens[k]];
    tokenCount[isVal] += static_cast<int64_t>(tokens.size());
  }
  while (!sft && failure.empty()) {
    auto more = (*stream)->next(doc);
    if (!more) {
      check(more.takeError());
      break;
    }
    if (*more) {
      bool isVal = nextIsVal();
      // A long document is cut into parts so that it, too, is tokenized in
      // parallel and in bounded memory.
      std::vector<size_t> cuts;
      if (tok.cutsAtLineStarts())
        cuts = cutPoints(doc, taskBytes);
      cuts.push_back(doc.size());
      for (size_t k = 0, begin = 0; k < cuts.size(); begin = cuts[k++]) {
        batch->bytes += cuts[k] - begin;
        batch->docs.push_back(cuts.size() == 1 ? std::move(doc) : doc.substr(begin, cuts[k] - begin));
        batch->isVal.push_back(isVal);
        batch->startsDoc.push_back(k == 0);
        if (batch->bytes >= taskBytes) {
          submit(std::move(batch));
          batch = std::make_shared<Batch>();
        }
      }
      doc.clear();
    }
    if (!batch->docs.empty() && !*more) {
      submit(std::move(batch));
      batch = std::make_shared<Batch>();
    }
    // At the end, everything still in flight.
    while (failure.empty() && !inFlight.empty() && !*more)
      check(consume());
    if (!*more)
      break;
    progress.update((*stream)->bytesConsumed(), docCount, tokenCount[0] + tokenCount[1]);
  }
  if (pool)
    pool->wait(); // no task may outlive the data it reads
  if (failure.empty() && check(closeShard(0)))
    check(closeShard(1));
  if (!failure.empty())
    return fail("tokenize", failure + " (nothing written to '" + outDir + "')");
  progress.update((*stream)->bytesConsumed(), docCount, tokenCount[0] + tokenCount[1], true);
  if (tokenCount[0] == 0 && dpo)
    return fail("tokenize", formatv("no training pair: {0} pair(s) kept, {1} skipped as too long for "
                                    "--seq-len {2} (nothing written to '{3}')",
                                    docCount, truncateLong ? promptTooLong : tooLong,
                                    seqLen.getValue(), outDir.getValue())
                                .str());
  if (tokenCount[0] == 0)
    return fail("tokenize", "no text in the input files (nothing written to '" + outDir + "')");

  // Move the new shards into place (renames within one directory); then
  // shards of an earlier run that this one did not replace go, since they
  // would be read as part of the corpus.
  for (const std::string &name : written)
    if (std::error_code mv = sys::fs::rename(staging + "/" + name, outDir + "/" + name))
      return fail("tokenize", "cannot move '" + name + "' into '" + outDir + "': " + mv.message());
  int64_t stale = 0;
  std::error_code ec;
  std::vector<std::string> old;
  for (sys::fs::directory_iterator it(outDir, ec), end; it != end && !ec; it.increment(ec)) {
    StringRef name = sys::path::filename(it->path());
    if ((name.starts_with("train_") || name.starts_with("val_")) &&
        (name.ends_with(".bin") || name.ends_with(".mask")) && !is_contained(written, name))
      old.push_back(it->path());
  }
  for (const std::string &path : old)
    stale += !sys::fs::remove(path);

  // The unigram entropy: what a model that ignores context would score.
  double total = 0, entropy = 0;
  for (int64_t c : counts)
    total += static_cast<double>(c);
  for (int64_t c : counts)
    if (c) {
      double p = static_cast<double>(c) / total;
      entropy -= p * std::log(p);
    }
  // Where the tokenizer's files came from (a build's own, an installed
  // kiln's share/kiln, a checkout's node_modules, or the user's).
  std::string source;
  if (tok.name() != "byte") {
    std::string dir = tokenizerPath.empty() ? tooling::defaultTokenizerPath(tokenizerKind)
                                            : tokenizerPath.getValue();
    source = dir.empty() ? "; files built into kiln" : "; from " + dir;
  }
  outs() << formatv("kiln tokenize: {0} documents from {1} file(s), {2} tokenizer (vocab {3}{4}), "
                    "{5} thread(s)\n",
                    docCount, files->size(), tok.name(), tok.vocabSize(), source, threadCount);
  if (dpo)
    outs() << formatv("  pairs: {0} train, {1} val; rows of {2} tokens (sequences of {3})\n",
                      docCount - valDocs, valDocs, rowTokens, rowTokens - 1);
  else
    outs() << formatv("  text: {0:f1} MB; train: {1} tokens; val: {2} tokens ({3} documents)\n",
                      static_cast<double>((*stream)->textBytes()) / 1e6, tokenCount[0],
                      tokenCount[1], valDocs);
  if (skippedSft)
    outs() << formatv("  skipped {0} bad line(s); the first: {1}\n", skippedSft, firstSkippedSft);
  if (tooLong)
    outs() << formatv("  {0} {1} {2} longer than {3} tokens; the first: {4}\n",
                      truncateLong ? "truncated" : "skipped", tooLong,
                      dpo ? "pair(s) with a row" : "example(s)",
                      dpo ? rowTokens : maxExampleTokens.getValue(), firstTooLong);
  if (promptTooLong)
    outs() << formatv("  skipped {0} pair(s) whose prompt fills the {1}-token row; the first: "
                      "{2}\n",
                      promptTooLong, rowTokens, firstPromptTooLong);
  if ((*stream)->skippedLines())
    outs() << formatv("  skipped {0} bad line(s); the first: {1}\n", (*stream)->skippedLines(),
                      (*stream)->firstSkipped());
  outs() << formatv("  unigram entropy: {0:f3} nats ({1:f3} bits) per token\n", entropy,
                    entropy / std::log(2.0));
  if (stale)
    outs() << formatv("  removed {0} shard(s) of an earlier run from {1}\n", stale, outDir);
  for (const std::string &name : written)
    outs() << "  wrote " << outDir << "/" << name << "\n";
  return 0;
}

} // namespace kiln::cli
