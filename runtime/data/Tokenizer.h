//===- Tokenizer.h - byte-level, BPE and SentencePiece tokenizers -----------===//
//
// `byte`: every byte is a token (0–255) and end-of-text is 256 (vocab 257).
// `gpt2`: GPT-2's byte-level BPE (Radford et al. 2019) from the original
// `encoder.json` and `vocab.bpe`.
// `cl100k_base`, `o200k_base`: OpenAI's tiktoken encodings, byte-level BPE
// over their rank files (the ones the npm package js-tiktoken ships).
// All three give ids identical to js-tiktoken's encoding of the same text
// (tests/lit/data/tokenizer-parity.test). Text that is not valid UTF-8 is
// kept byte for byte: each invalid byte is a code point of the class
// [^\s\p{L}\p{N}] (so it joins punctuation runs and can prefix a word), and
// the tokens decode back to the same bytes.
// `sentencepiece`: a SentencePiece `.model` (Kudo and Richardson 2018), run
// by Debian's libsentencepiece, which kiln loads at run time
// (SentencePiece.h).
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
  /// The kind create() was given.
  virtual llvm::StringRef name() const = 0;
  virtual int64_t vocabSize() const = 0;
  /// The end-of-text token that separates documents.
  virtual int32_t eot() const = 0;
  /// Tokens of `text` (special tokens are not recognized: "<|endoftext|>" in
  /// the text is ordinary text, as with tiktoken's encode_ordinary).
  virtual std::vector<int32_t> encode(llvm::StringRef text) const = 0;
  /// The bytes the tokens stand for (end-of-text decodes to nothing).
  virtual std::string decode(llvm::ArrayRef<int32_t> tokens) const = 0;
  /// Whether a text may be encoded in parts cut at a line break that follows
  /// a visible ASCII character and precedes an ASCII letter, giving the same
  /// tokens as the whole: true for the byte-level BPEs, whose patterns make
  /// that newline a piece of its own or end a piece with it whether or not a
  /// letter follows; false for SentencePiece, which treats its input as one
  /// sentence.
  virtual bool cutsAtLineStarts() const { return true; }

  /// `kind` is one of kinds(); `path` names its files: for gpt2 the
  /// directory of encoder.json and vocab.bpe, for cl100k_base and o200k_base
  /// the directory of js-tiktoken's rank files (<kind>.js), for
  /// sentencepiece the .model file.
  static llvm::Expected<std::unique_ptr<Tokenizer>> create(llvm::StringRef kind,
                                                           llvm::StringRef path);
  /// "byte, gpt2, cl100k_base, o200k_base, sentencepiece".
  static llvm::StringRef kinds();
};

/// The pre-tokenization patterns: a text is split into the pieces the
/// encoding's regular expression matches, leftmost first, and BPE runs on
/// each piece alone.
///   GPT2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
///   CL100K: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}
///           | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
///   O200K:  [^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|…)?
///           |[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|…)?
///           |\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
/// with the Unicode categories of UnicodeTables.inc and \s as JavaScript
/// defines it (js-tiktoken is the reference). Each is matched by hand-written
/// code that follows a backtracking engine's order of tries.
enum class PreTokenizer { GPT2, CL100K, O200K };
std::vector<llvm::StringRef> preTokenize(PreTokenizer pattern, llvm::StringRef text);

} // namespace kiln

#endif // KILN_RUNTIME_DATA_TOKENIZER_H
