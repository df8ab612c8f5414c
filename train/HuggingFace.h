//===- HuggingFace.h - weights in Hugging Face names and layout ------------===//

#ifndef KILN_TRAIN_HUGGINGFACE_H
#define KILN_TRAIN_HUGGINGFACE_H

#include "frontend/Config.h"
#include "runtime/Checkpoint.h"
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

/// GPT-2's packed attention projection (c_attn's weight [C, 3C] or bias
/// [3C]) with its last dimension reordered between Hugging Face's
/// (q|k|v, head, D) and kiln's head-major (head, q|k|v, D), which tensor
/// parallelism splits over heads. An error when the last dimension is not
/// 3 × n_embd.
llvm::Expected<cpu::HostTensor> gpt2QkvToHeadMajor(const cpu::HostTensor &t,
                                                    const ModelConfig &config);
llvm::Expected<cpu::HostTensor> gpt2QkvFromHeadMajor(const cpu::HostTensor &t,
                                                      const ModelConfig &config);

/// Whether `name` is a GPT-2 packed attention projection (h.N.attn.qkv.w
/// or .b) or an optimizer state of one (h.N.attn.qkv.w.adam_m, …).
bool isGPT2Qkv(llvm::StringRef name);

/// Converts a checkpoint read in an older state format to this kiln's
/// layout: format 2 stored GPT-2's attn.qkv (and its optimizer states)
/// q|k|v-major. A no-op for current checkpoints and Llama.
llvm::Error upgradeCheckpoint(Checkpoint &checkpoint, const ModelConfig &config);

/// The same for the model `config.kind` names: GPT-2 above; Llama with
/// Hugging Face LlamaForCausalLM names (model.layers.N.self_attn.q_proj.weight,
/// …), linear weights transposed to nn.Linear's [out, in], and the padded
/// rows of embed_tokens and lm_head dropped (added back on import).
llvm::Expected<NamedTensors> toHuggingFace(const NamedTensors &params, const ModelConfig &config);
llvm::Expected<NamedTensors> fromHuggingFace(const NamedTensors &tensors,
                                             const ModelConfig &config);

} // namespace kiln::tooling

#endif // KILN_TRAIN_HUGGINGFACE_H
