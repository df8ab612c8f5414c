//===- SentencePieceModule.cpp - libkiln-sentencepiece over libsentencepiece ===//

#include "runtime/data/sentencepiece/SentencePieceModule.h"

#include <sentencepiece_processor.h>

#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

struct KilnSpm {
  sentencepiece::SentencePieceProcessor processor;
};

namespace {

void report(const std::string &message, char *error, size_t errorSize) {
  if (!error || errorSize == 0)
    return;
  size_t n = std::min(message.size(), errorSize - 1);
  std::memcpy(error, message.data(), n);
  error[n] = '\0';
}

} // namespace

extern "C" {

uint32_t kiln_spm_abi_version(void) { return KILN_SPM_ABI_VERSION; }

// No C++ exception may cross the C interface (kiln has its own, static
// libstdc++): each entry point catches and reports instead.

KilnSpm *kiln_spm_open(const char *path, char *error, size_t errorSize) {
  try {
    auto model = std::make_unique<KilnSpm>();
    auto status = model->processor.Load(path);
    if (!status.ok()) {
      report(status.ToString(), error, errorSize);
      return nullptr;
    }
    return model.release();
  } catch (const std::exception &e) {
    report(e.what(), error, errorSize);
    return nullptr;
  }
}

void kiln_spm_close(KilnSpm *model) { delete model; }

int32_t kiln_spm_vocab_size(const KilnSpm *model) { return model->processor.GetPieceSize(); }
int32_t kiln_spm_eos(const KilnSpm *model) { return model->processor.eos_id(); }
int32_t kiln_spm_bos(const KilnSpm *model) { return model->processor.bos_id(); }

int kiln_spm_encode(const KilnSpm *model, const char *text, size_t size, KilnSpmIdSink sink,
                    void *context, char *error, size_t errorSize) try {
  std::vector<int> ids;
  auto status = model->processor.Encode(std::string_view(text, size), &ids);
  if (!status.ok()) {
    report(status.ToString(), error, errorSize);
    return -1;
  }
  std::vector<int32_t> out(ids.begin(), ids.end());
  sink(context, out.data(), out.size());
  return 0;
} catch (const std::exception &e) {
  report(e.what(), error, errorSize);
  return -1;
}

int kiln_spm_decode(const KilnSpm *model, const int32_t *ids, size_t count, KilnSpmTextSink sink,
                    void *context, char *error, size_t errorSize) try {
  std::vector<int> in(ids, ids + count);
  std::string text;
  auto status = model->processor.Decode(in, &text);
  if (!status.ok()) {
    report(status.ToString(), error, errorSize);
    return -1;
  }
  sink(context, text.data(), text.size());
  return 0;
} catch (const std::exception &e) {
  report(e.what(), error, errorSize);
  return -1;
}

} // extern "C"
