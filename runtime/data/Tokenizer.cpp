//===- Tokenizer.cpp - byte-level and GPT-2 BPE tokenizers ------------------===//

#include "runtime/data/Tokenizer.h"

#include "support/Files.h"

#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/StringMap.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/FileSystem.h"

#include <algorithm>
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
/// Unicode White_Space.
bool isSpace(uint32_t cp) {
  return (cp >= 0x9 && cp <= 0xD) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
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

class GPT2Tokenizer final : public Tokenizer {
public:
  static llvm::Expected<std::unique_ptr<Tokenizer>> load(llvm::StringRef dir);

  llvm::StringRef name() const override { return "gpt2"; }
  int64_t vocabSize() const override { return static_cast<int64_t>(tokenBytes_.size()); }
  int32_t eot() const override { return eot_; }

  std::vector<int32_t> encode(llvm::StringRef text) const override {
    std::vector<int32_t> out;
    for (llvm::StringRef piece : gpt2PreTokenize(text))
      encodePiece(piece, out);
    return out;
  }

  std::string decode(llvm::ArrayRef<int32_t> tokens) const override {
    std::string s;
    for (int32_t t : tokens)
      if (t >= 0 && t < static_cast<int32_t>(tokenBytes_.size()) && t != eot_)
        s += tokenBytes_[t];
    return s;
  }

private:
  /// Merges the bytes of one piece by rank, lowest first (the BPE of
  /// Sennrich et al. 2016 as GPT-2 applies it).
  void encodePiece(llvm::StringRef piece, std::vector<int32_t> &out) const {
    {
      std::lock_guard<std::mutex> lock(cacheMutex_);
      auto it = cache_.find(piece);
      if (it != cache_.end()) {
        out.insert(out.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    std::vector<int32_t> symbols;
    for (char c : piece)
      symbols.push_back(byteToken_[static_cast<uint8_t>(c)]);
    while (symbols.size() > 1) {
      int64_t bestRank = INT64_MAX;
      size_t best = 0;
      int32_t merged = -1;
      for (size_t i = 0; i + 1 < symbols.size(); ++i) {
        auto it = merges_.find(pairKey(symbols[i], symbols[i + 1]));
        if (it != merges_.end() && it->second.first < bestRank) {
          bestRank = it->second.first;
          best = i;
          merged = it->second.second;
        }
      }
      if (merged < 0)
        break;
      // Merge every occurrence of the best pair, left to right.
      int32_t a = symbols[best], b = symbols[best + 1];
      std::vector<int32_t> next;
      for (size_t i = 0; i < symbols.size(); ++i) {
        if (i + 1 < symbols.size() && symbols[i] == a && symbols[i + 1] == b) {
          next.push_back(merged);
          ++i;
        } else {
          next.push_back(symbols[i]);
        }
      }
      symbols.swap(next);
    }
    out.insert(out.end(), symbols.begin(), symbols.end());
    std::lock_guard<std::mutex> lock(cacheMutex_);
    if (cache_.size() < (1u << 20))
      cache_[piece] = symbols;
  }

  static uint64_t pairKey(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }

  std::vector<std::string> tokenBytes_; ///< id -> the bytes it stands for
  int32_t byteToken_[256];               ///< byte -> its single-byte token
  std::unordered_map<uint64_t, std::pair<int64_t, int32_t>> merges_; ///< pair -> (rank, id)
  int32_t eot_ = -1;
  mutable std::mutex cacheMutex_;
  mutable llvm::StringMap<std::vector<int32_t>> cache_;
};

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

llvm::Expected<std::unique_ptr<Tokenizer>> GPT2Tokenizer::load(llvm::StringRef dir) {
  llvm::SmallString<256> encoderPath(dir), vocabPath(dir);
  llvm::sys::path::append(encoderPath, "encoder.json");
  llvm::sys::path::append(vocabPath, "vocab.bpe");
  auto encoderFile = readRegularFile(encoderPath, "GPT-2 BPE file");
  if (!encoderFile)
    return error(llvm::toString(encoderFile.takeError()) +
                 " (scripts/setup.sh installs it; or pass --bpe-dir)");
  auto vocabFile = readRegularFile(vocabPath, "GPT-2 BPE file");
  if (!vocabFile)
    return vocabFile.takeError();
  auto json = llvm::json::parse((*encoderFile)->getBuffer());
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
    if (static_cast<size_t>(*id) >= tok->tokenBytes_.size())
      tok->tokenBytes_.resize(*id + 1);
    ids[key] = static_cast<int32_t>(*id);
    if (key == "<|endoftext|>") {
      tok->eot_ = static_cast<int32_t>(*id);
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
    tok->tokenBytes_[*id] = bytes;
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
  (*vocabFile)->getBuffer().split(lines, '\n', -1, false);
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

} // namespace

std::vector<llvm::StringRef> gpt2PreTokenize(llvm::StringRef text) {
  // Code points with their byte offsets (one extra entry marks the end).
  std::vector<uint32_t> cps;
  std::vector<size_t> at;
  for (size_t i = 0; i < text.size();) {
    auto [cp, len] = decodeUtf8(text, i);
    cps.push_back(cp);
    at.push_back(i);
    i += len;
  }
  at.push_back(text.size());
  size_t n = cps.size();
  auto letter = [&](size_t k) { return k < n && cps[k] != kInvalid && isLetter(cps[k]); };
  auto number = [&](size_t k) { return k < n && cps[k] != kInvalid && isNumber(cps[k]); };
  auto space = [&](size_t k) { return k < n && cps[k] != kInvalid && isSpace(cps[k]); };
  auto other = [&](size_t k) { return k < n && !letter(k) && !number(k) && !space(k); };

  std::vector<llvm::StringRef> pieces;
  size_t i = 0;
  auto emit = [&](size_t end) {
    pieces.push_back(text.slice(at[i], at[end]));
    i = end;
  };
  while (i < n) {
    // 's 't 're 've 'm 'll 'd
    if (cps[i] == '\'' && i + 1 < n) {
      uint32_t c1 = cps[i + 1], c2 = i + 2 < n ? cps[i + 2] : 0;
      if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') {
        emit(i + 2);
        continue;
      }
      if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) {
        emit(i + 3);
        continue;
      }
    }
    size_t j = cps[i] == ' ' ? i + 1 : i; // the optional leading space
    if (letter(j)) {
      size_t k = j;
      while (letter(k))
        ++k;
      emit(k);
      continue;
    }
    if (number(j)) {
      size_t k = j;
      while (number(k))
        ++k;
      emit(k);
      continue;
    }
    if (other(j)) {
      size_t k = j;
      while (other(k))
        ++k;
      emit(k);
      continue;
    }
    // Whitespace: \s+(?!\S) keeps the last space for the next piece when a
    // non-space follows; a single space before a non-space falls to \s+.
    size_t k = i;
    while (space(k))
      ++k;
    if (k < n && k - i >= 2)
      emit(k - 1);
    else
      emit(k);
  }
  return pieces;
}

llvm::Expected<std::unique_ptr<Tokenizer>> Tokenizer::create(llvm::StringRef kind,
                                                             llvm::StringRef bpeDir) {
  if (kind == "byte")
    return std::unique_ptr<Tokenizer>(std::make_unique<ByteTokenizer>());
  if (kind == "gpt2")
    return GPT2Tokenizer::load(bpeDir);
  return error("unknown tokenizer '" + kind + "' (expected byte or gpt2)");
}

} // namespace kiln
