//===- HuggingFace.cpp - weights in Hugging Face names and layout ----------===//

#include "train/HuggingFace.h"

#include "models/GPT2.h"
#include "models/Llama.h"

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

/// A matrix transposed (any element type).
cpu::HostTensor transposed(const cpu::HostTensor &t) {
  int64_t rows = t.dim(0), cols = t.dim(1);
  cpu::HostTensor out(t.dtype(), {cols, rows});
  size_t e = cpu::storageSize(t.dtype());
  const char *src = static_cast<const char *>(t.raw());
  char *dst = static_cast<char *>(out.raw());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c)
      std::memcpy(dst + (c * rows + r) * e, src + (r * cols + c) * e, e);
  return out;
}

/// The last dimension of `t`, [3, H, D] <-> [H, 3, D].
llvm::Expected<cpu::HostTensor> permuteQkv(const cpu::HostTensor &t, const ModelConfig &config,
                                           bool toHeadMajor) {
  int64_t c = config.n_embd, heads = config.n_head, d = c / heads;
  if (t.rank() < 1 || t.dim(-1) != 3 * c)
    return error(llvm::formatv("GPT-2's packed attention projection must end in 3 x n_embd = {0} "
                               "columns, not {1}",
                               3 * c, t.rank() ? t.dim(-1) : 0));
  cpu::HostTensor out(t.dtype(), t.shape());
  size_t e = cpu::storageSize(t.dtype()), run = static_cast<size_t>(d) * e;
  int64_t rows = t.numel() / (3 * c);
  const char *src = static_cast<const char *>(t.raw());
  char *dst = static_cast<char *>(out.raw());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t h = 0; h < heads; ++h) {
        int64_t hf = r * 3 * c + j * c + h * d, kiln = r * 3 * c + h * 3 * d + j * d;
        if (toHeadMajor)
          std::memcpy(dst + kiln * e, src + hf * e, run);
        else
          std::memcpy(dst + hf * e, src + kiln * e, run);
      }
  return out;
}

llvm::Expected<NamedTensors> toHuggingFaceLlama(const NamedTensors &params,
                                                const ModelConfig &config) {
  NamedTensors out;
  for (const auto &[name, t] : params) {
    bool transpose = false;
    std::string hf = models::llamaHuggingFaceName(name, &transpose);
    if (hf.empty())
      return error("parameter '" + name + "' has no Hugging Face Llama name");
    cpu::HostTensor value = transpose ? transposed(t) : t;
    if (name == "embed" || name == "lm_head.w")
      value = withRows(value, config.vocab_size);
    out.push_back({hf, std::move(value)});
  }
  return out;
}

llvm::Expected<NamedTensors> fromHuggingFaceLlama(const NamedTensors &tensors,
                                                  const ModelConfig &config) {
  NamedTensors out;
  bool hasHead = llvm::any_of(tensors, [](const auto &e) { return e.first == "lm_head.weight"; });
  for (const auto &[hf, t] : tensors) {
    bool transpose = false;
    std::string name = models::llamaKilnName(hf, &transpose);
    if (name.empty()) {
      if (llvm::StringRef(hf).ends_with("rotary_emb.inv_freq"))
        continue; // a buffer kiln recomputes
      // Anything else (attention biases of Qwen-style models, …) would be
      // dropped and the model would compute something else.
      return error("'" + hf + "' is not a tensor of kiln's Llama (model.kind = \"llama\": no "
                   "biases, no other parameters)");
    }
    bool norm = llvm::StringRef(name).ends_with("norm.w");
    if (t.rank() != (norm ? 1 : 2))
      return error("'" + hf + "' has rank " + llvm::Twine(t.rank()) + ", not a Llama " +
                   (norm ? "norm weight" : "matrix"));
    cpu::HostTensor value = t;
    if (name == "embed" || name == "lm_head.w") {
      if (t.dim(0) != config.vocab_size)
        return error(llvm::formatv("{0} has {1} rows but model.vocab_size is {2}", hf, t.dim(0),
                                   config.vocab_size));
      value = withRows(value, config.paddedVocab());
    }
    out.push_back({name, transpose ? transposed(value) : value});
    // Tied embeddings (tie_word_embeddings): the head is the embedding.
    if (name == "embed" && !hasHead)
      out.push_back({"lm_head.w", transposed(value)});
  }
  return out;
}

} // namespace

llvm::Expected<cpu::HostTensor> gpt2QkvToHeadMajor(const cpu::HostTensor &t,
                                                    const ModelConfig &config) {
  return permuteQkv(t, config, /*toHeadMajor=*/true);
}

llvm::Expected<cpu::HostTensor> gpt2QkvFromHeadMajor(const cpu::HostTensor &t,
                                                      const ModelConfig &config) {
  return permuteQkv(t, config, /*toHeadMajor=*/false);
}

bool isGPT2Qkv(llvm::StringRef name) {
  if (!name.consume_front("h."))
    return false;
  name = name.split('.').second;
  return name == "attn.qkv.w" || name == "attn.qkv.b" || name.starts_with("attn.qkv.w.") ||
         name.starts_with("attn.qkv.b.");
}

llvm::Error upgradeCheckpoint(Checkpoint &checkpoint, const ModelConfig &config) {
  if (checkpoint.state.format >= 3 || config.kind == "llama")
    return llvm::Error::success();
  for (NamedTensors *tensors : {&checkpoint.params, &checkpoint.optimizer})
    for (auto &[name, t] : *tensors) {
      if (!isGPT2Qkv(name) || t.rank() == 0)
        continue;
      auto headMajor = gpt2QkvToHeadMajor(t, config);
      if (!headMajor)
        return error("checkpoint '" + checkpoint.path + "', '" + name +
                     "': " + llvm::toString(headMajor.takeError()));
      t = std::move(*headMajor);
    }
  checkpoint.state.format = 3;
  return llvm::Error::success();
}

llvm::Expected<NamedTensors> toHuggingFace(const NamedTensors &params, const ModelConfig &config) {
  if (config.moe.enabled())
    return error("a mixture of experts (moe.experts = " + std::to_string(config.moe.experts) +
                 ") has no Hugging Face layout in kiln yet (Mixtral's per-expert tensors are "
                 "planned); its checkpoint's model.safetensors holds the weights in kiln's names");
  return config.kind == "llama" ? toHuggingFaceLlama(params, config)
                                : toHuggingFaceGPT2(params, config);
}

llvm::Expected<NamedTensors> fromHuggingFace(const NamedTensors &tensors,
                                             const ModelConfig &config) {
  return config.kind == "llama" ? fromHuggingFaceLlama(tensors, config)
                                : fromHuggingFaceGPT2(tensors, config);
}

llvm::Expected<NamedTensors> toHuggingFaceGPT2(const NamedTensors &params,
                                               const ModelConfig &config) {
  NamedTensors out;
  for (const auto &[name, t] : params) {
    std::string hf = models::gpt2HuggingFaceName(name);
    if (hf.empty())
      return error("parameter '" + name + "' has no Hugging Face GPT-2 name");
    if (isGPT2Qkv(name)) {
      auto hfOrder = gpt2QkvFromHeadMajor(t, config);
      if (!hfOrder)
        return error("'" + name + "': " + llvm::toString(hfOrder.takeError()));
      out.push_back({hf, std::move(*hfOrder)});
      continue;
    }
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
    if (isGPT2Qkv(name)) {
      auto headMajor = gpt2QkvToHeadMajor(t, config);
      if (!headMajor)
        return error("'" + hf + "': " + llvm::toString(headMajor.takeError()));
      out.push_back({name, std::move(*headMajor)});
      continue;
    }
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
