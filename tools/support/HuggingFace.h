//===- HuggingFace.h - weights in Hugging Face names and layout ------------===//

#ifndef KILN_TOOLS_SUPPORT_HUGGINGFACE_H
#define KILN_TOOLS_SUPPORT_HUGGINGFACE_H

#include "frontend/Config.h"
#include "runtime/Safetensors.h"

namespace kiln::tooling {

/// kiln GPT-2 parameters -> Hugging Face GPT2LMHeadModel tensors
/// (transformer.h.N.attn.c_attn.weight, …; the padded rows of wte dropped;
/// lm_head is tied to wte and not written, as save_pretrained does).
llvm::Expected<NamedTensors> toHuggingFaceGPT2(const NamedTensors &params,
                                               const ModelConfig &config);

/// Hugging Face GPT-2 tensors (with or without "transformer.") -> kiln
/// parameters, wte padded with zero rows to the padded vocabulary. Buffers
/// kiln does not use (attn.bias masks, lm_head) are skipped; a missing
/// parameter or a shape that does not fit the config is an error.
llvm::Expected<NamedTensors> fromHuggingFaceGPT2(const NamedTensors &tensors,
                                                 const ModelConfig &config);

/// The same for the model `config.kind` names: GPT-2 above; Llama with
/// Hugging Face LlamaForCausalLM names (model.layers.N.self_attn.q_proj.weight,
/// …), linear weights transposed to nn.Linear's [out, in], and the padded
/// rows of embed_tokens and lm_head dropped (added back on import).
llvm::Expected<NamedTensors> toHuggingFace(const NamedTensors &params, const ModelConfig &config);
llvm::Expected<NamedTensors> fromHuggingFace(const NamedTensors &tensors,
                                             const ModelConfig &config);

} // namespace kiln::tooling

#endif // KILN_TOOLS_SUPPORT_HUGGINGFACE_H
