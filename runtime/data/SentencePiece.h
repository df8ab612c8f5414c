//===- SentencePiece.h - SentencePiece models through a loadable module ----===//
//
// kiln runs SentencePiece models (`.model` files, Kudo and Richardson 2018)
// with Debian's libsentencepiece. That library is C++ and shared-only, and
// the kiln binary links everything but glibc statically (it must run on GPU
// hosts that have nothing else), so the tokenizer lives in a small module,
// libkiln-sentencepiece.so (runtime/data/sentencepiece/), with a C interface
// (SentencePieceModule.h), which kiln loads only when a run asks for the
// sentencepiece tokenizer. The module is looked for in $KILN_SENTENCEPIECE_MODULE,
// then next to the executable (../lib/ and the executable's own directory).
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_DATA_SENTENCEPIECE_H
#define KILN_RUNTIME_DATA_SENTENCEPIECE_H

#include "runtime/data/Tokenizer.h"

namespace kiln {

/// The SentencePiece tokenizer of the model file `path`. Its eot() (what
/// kiln writes before each document) is the model's end-of-sentence piece,
/// or its beginning-of-sentence piece when it has none.
llvm::Expected<std::unique_ptr<Tokenizer>> loadSentencePiece(llvm::StringRef path);

} // namespace kiln

#endif // KILN_RUNTIME_DATA_SENTENCEPIECE_H
