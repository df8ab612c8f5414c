//===- Tokenizer.h - byte-level and GPT-2 BPE tokenizers --------------------===//
//
// `byte`: every byte is a token (0–255) and end-of-text is 256 (vocab 257).
// `gpt2`: GPT-2's byte-level BPE (Radford et al. 2019) from the original
// `encoder.json` and `vocab.bpe`, whose output is identical to tiktoken's
// `gpt2` encoding of the same text (checked against js-tiktoken in
// tests/lit/data/tokenizer-parity.test). Text that is not valid UTF-8 is kept
// byte for byte: each invalid byte is a piece of its own.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_DATA_TOKENIZER_H
#define KILN_RUNTIME_DATA_TOKENIZER_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kiln {

class Tokenizer {
public:
  virtual ~Tokenizer() = default;
  /// "byte" or "gpt2".
  virtual llvm::StringRef name() const = 0;
  virtual int64_t vocabSize() const = 0;
  /// The end-of-text token that separates documents.
  virtual int32_t eot() const = 0;
  /// Tokens of `text` (special tokens are not recognized: "<|endoftext|>" in
  /// the text is ordinary text, as with tiktoken's encode_ordinary).
  virtual std::vector<int32_t> encode(llvm::StringRef text) const = 0;
  /// The bytes the tokens stand for (end-of-text decodes to nothing).
  virtual std::string decode(llvm::ArrayRef<int32_t> tokens) const = 0;

  /// `kind` is "byte" or "gpt2"; `bpeDir` holds encoder.json and vocab.bpe
  /// (for gpt2).
  static llvm::Expected<std::unique_ptr<Tokenizer>> create(llvm::StringRef kind,
                                                           llvm::StringRef bpeDir);
};

/// GPT-2's pre-tokenization: splits text into the pieces the regex
///   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
/// matches, with \p{L}/\p{N} the Unicode letter/number categories and \s
/// Unicode White_Space (as tiktoken's regex engine defines them).
std::vector<llvm::StringRef> gpt2PreTokenize(llvm::StringRef text);

} // namespace kiln

#endif // KILN_RUNTIME_DATA_TOKENIZER_H
