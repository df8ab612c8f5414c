//===- SentencePiece.cpp - SentencePiece models through a loadable module --===//

#include "runtime/data/SentencePiece.h"

#include "runtime/data/sentencepiece/SentencePieceModule.h"
#include "support/Files.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/ErrorHandling.h"
#include "llvm/Support/DynamicLibrary.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"

#include <mutex>
#include <optional>

namespace kiln {

namespace {

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

/// The module's entry points, resolved once per process.
struct Module {
  decltype(&kiln_spm_abi_version) abiVersion = nullptr;
  decltype(&kiln_spm_open) open = nullptr;
  decltype(&kiln_spm_close) close = nullptr;
  decltype(&kiln_spm_vocab_size) vocabSize = nullptr;
  decltype(&kiln_spm_eos) eos = nullptr;
  decltype(&kiln_spm_bos) bos = nullptr;
  decltype(&kiln_spm_encode) encode = nullptr;
  decltype(&kiln_spm_decode) decode = nullptr;
};

/// Where the module may be: $KILN_SENTENCEPIECE_MODULE, else beside the
/// running executable.
std::vector<std::string> candidatePaths() {
  if (auto env = llvm::sys::Process::GetEnv("KILN_SENTENCEPIECE_MODULE"))
    return {*env};
  static int anchor;
  std::string exe = llvm::sys::fs::getMainExecutable(nullptr, &anchor);
  llvm::SmallString<256> dir(llvm::sys::path::parent_path(exe));
  llvm::SmallString<256> lib(dir), here(dir);
  llvm::sys::path::append(lib, "..", "lib", "libkiln-sentencepiece.so");
  llvm::sys::path::append(here, "libkiln-sentencepiece.so");
  return {std::string(lib), std::string(here)};
}

llvm::Expected<const Module *> loadModule() {
  static std::mutex mutex;
  static std::optional<Module> module;
  static std::string failure;
  std::lock_guard<std::mutex> lock(mutex);
  if (module)
    return &*module;
  if (!failure.empty())
    return error(failure);
  std::vector<std::string> paths = candidatePaths();
  std::string found;
  for (const std::string &p : paths)
    if (llvm::sys::fs::exists(p)) {
      found = p;
      break;
    }
  if (found.empty()) {
    failure = "the sentencepiece tokenizer needs kiln's module libkiln-sentencepiece.so, "
              "which is not at " + llvm::join(paths, " or ") +
              " (it is built when Debian's libsentencepiece-dev is installed, as "
              "scripts/setup.sh does; or set KILN_SENTENCEPIECE_MODULE)";
    return error(failure);
  }
  std::string why;
  auto lib = llvm::sys::DynamicLibrary::getPermanentLibrary(found.c_str(), &why);
  if (!lib.isValid()) {
    failure = "cannot load '" + found + "': " + why +
              " (it needs Debian's libsentencepiece0)";
    return error(failure);
  }
  Module m;
  bool complete = true;
  auto resolve = [&](auto &fn, const char *name) {
    fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(lib.getAddressOfSymbol(name));
    complete &= fn != nullptr;
  };
  resolve(m.abiVersion, "kiln_spm_abi_version");
  resolve(m.open, "kiln_spm_open");
  resolve(m.close, "kiln_spm_close");
  resolve(m.vocabSize, "kiln_spm_vocab_size");
  resolve(m.eos, "kiln_spm_eos");
  resolve(m.bos, "kiln_spm_bos");
  resolve(m.encode, "kiln_spm_encode");
  resolve(m.decode, "kiln_spm_decode");
  if (!complete || m.abiVersion() != KILN_SPM_ABI_VERSION) {
    failure = "'" + found + "' is not a libkiln-sentencepiece module of this kiln " +
              "(interface version " + std::to_string(KILN_SPM_ABI_VERSION) + "); rebuild kiln";
    return error(failure);
  }
  module = m;
  return &*module;
}

class SentencePieceTokenizer final : public Tokenizer {
public:
  SentencePieceTokenizer(const Module &module, KilnSpm *model)
      : module_(module), model_(model) {
    int32_t eos = module_.eos(model_);
    eot_ = eos >= 0 ? eos : module_.bos(model_);
  }
  ~SentencePieceTokenizer() override { module_.close(model_); }

  llvm::StringRef name() const override { return "sentencepiece"; }
  int64_t vocabSize() const override { return module_.vocabSize(model_); }
  int32_t eot() const override { return eot_; }
  bool cutsAtLineStarts() const override { return false; }

  std::vector<int32_t> encode(llvm::StringRef text) const override {
    std::vector<int32_t> out;
    char why[512];
    auto sink = [](void *context, const int32_t *ids, size_t count) {
      auto *v = static_cast<std::vector<int32_t> *>(context);
      v->insert(v->end(), ids, ids + count);
    };
    // libsentencepiece fails an encode only for a model that did not load,
    // which loadSentencePiece rules out: a failure here is a broken module.
    if (module_.encode(model_, text.data(), text.size(), sink, &out, why, sizeof why) != 0)
      llvm::report_fatal_error(llvm::Twine("SentencePiece encoding failed: ") + why, false);
    return out;
  }

  std::string decode(llvm::ArrayRef<int32_t> tokens) const override {
    std::vector<int32_t> ids;
    for (int32_t t : tokens)
      if (t >= 0 && t < vocabSize() && t != eot_)
        ids.push_back(t);
    std::string text;
    char why[512];
    auto sink = [](void *context, const char *data, size_t size) {
      static_cast<std::string *>(context)->append(data, size);
    };
    if (module_.decode(model_, ids.data(), ids.size(), sink, &text, why, sizeof why) != 0)
      llvm::report_fatal_error(llvm::Twine("SentencePiece decoding failed: ") + why, false);
    return text;
  }

private:
  const Module &module_;
  KilnSpm *model_;
  int32_t eot_;
};

} // namespace

llvm::Expected<std::unique_ptr<Tokenizer>> loadSentencePiece(llvm::StringRef path) {
  if (path.empty())
    return error("the sentencepiece tokenizer needs its .model file "
                 "(--tokenizer-path, or data.tokenizer_path in the config)");
  if (llvm::Error err = checkRegularFile(path, "SentencePiece model"))
    return std::move(err);
  auto module = loadModule();
  if (!module)
    return module.takeError();
  char why[512] = "";
  KilnSpm *model = (*module)->open(path.str().c_str(), why, sizeof why);
  if (!model)
    return error("cannot load the SentencePiece model '" + path + "': " + why);
  auto tok = std::make_unique<SentencePieceTokenizer>(**module, model);
  if (tok->eot() < 0)
    return error("the SentencePiece model '" + path +
                 "' has neither an end- nor a beginning-of-sentence piece to separate "
                 "documents with");
  return std::unique_ptr<Tokenizer>(std::move(tok));
}

} // namespace kiln
