//===- HuggingFace.cpp - GPT-2 weights in Hugging Face names and layout ----===//

#include "tools/support/HuggingFace.h"

#include "models/GPT2.h"

#include "llvm/Support/FormatVariadic.h"

#include <cstring>
#include <set>

namespace kiln::tooling {

namespace {

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

/// The first `rows` rows of a matrix (or zero-padded to `rows`).
cpu::HostTensor withRows(const cpu::HostTensor &t, int64_t rows) {
  cpu::HostTensor out(t.dtype(), {rows, t.dim(1)});
  size_t rowBytes = static_cast<size_t>(t.dim(1)) * cpu::storageSize(t.dtype());
  std::memcpy(out.raw(), t.raw(), static_cast<size_t>(std::min(rows, t.dim(0))) * rowBytes);
  return out;
}

} // namespace

llvm::Expected<NamedTensors> toHuggingFaceGPT2(const NamedTensors &params,
                                               const ModelConfig &config) {
  NamedTensors out;
  for (const auto &[name, t] : params) {
    std::string hf = models::gpt2HuggingFaceName(name);
    if (hf.empty())
      return error("parameter '" + name + "' has no Hugging Face GPT-2 name");
    out.push_back({hf, name == "wte" ? withRows(t, config.vocab_size) : t});
  }
  return out;
}

llvm::Expected<NamedTensors> fromHuggingFaceGPT2(const NamedTensors &tensors,
                                                 const ModelConfig &config) {
  NamedTensors out;
  for (const auto &[hf, t] : tensors) {
    std::string name = models::gpt2KilnName(hf);
    if (name.empty())
      continue; // attention masks, lm_head (tied)
    out.push_back({name, name == "wte" ? withRows(t, config.paddedVocab()) : t});
    if (name == "wte" && t.dim(0) != config.vocab_size)
      return error(llvm::formatv("wte has {0} rows but model.vocab_size is {1}", t.dim(0),
                                 config.vocab_size));
  }
  // Completeness against the model is checked where the weights are loaded
  // (Backend::loadState), which knows every parameter and allows a partial
  // load when asked.
  return out;
}

} // namespace kiln::tooling
