//===- Llama.h - a Llama-style decoder -------------------------------------===//
//
// Llama 2/3's architecture (Touvron et al. 2023): token embeddings without
// positions, n_layer pre-norm blocks of RMSNorm, causal self-attention with
// rotary position embeddings (rotate-half, base rope_theta) and grouped-query
// attention (n_kv_head key/value heads, each shared by n_head / n_kv_head
// query heads), RMSNorm, a SwiGLU MLP down(silu(gate(x)) · up(x)); a final
// RMSNorm and an output head of its own (not tied). No biases.
//
// Parameter names (kiln's → Hugging Face's, model.layers.N.…):
//   embed → model.embed_tokens.weight, layers.N.attn_norm.w → input_layernorm,
//   layers.N.attn.{q,k,v,o}.w → self_attn.{q,k,v,o}_proj,
//   layers.N.mlp_norm.w → post_attention_layernorm,
//   layers.N.mlp.{gate,up,down}.w → mlp.{gate,up,down}_proj, norm.w →
//   model.norm.weight, lm_head.w → lm_head.weight.
// kiln stores linear weights [in, out]; Hugging Face's nn.Linear stores
// [out, in], so those are transposed on export and import.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_MODELS_LLAMA_H
#define KILN_MODELS_LLAMA_H

#include "models/GPT2.h"

namespace kiln::models {

mlir::FailureOr<mlir::func::FuncOp>
buildLlama(mlir::ModuleOp module, const ModelConfig &config, int64_t batch, int64_t seqLen,
           mlir::Type floatType, GPT2Output output, llvm::StringRef name,
           std::vector<std::string> &errors);

int64_t llamaParamCount(const ModelConfig &config, bool includePadding, bool activeOnly = false);

/// Hugging Face names both ways (empty when unknown; rotary buffers have no
/// kiln name); `transposed` says whether the tensor is a linear weight.
std::string llamaHuggingFaceName(llvm::StringRef kilnName, bool *transposed = nullptr);
std::string llamaKilnName(llvm::StringRef huggingFaceName, bool *transposed = nullptr);

} // namespace kiln::models

#endif // KILN_MODELS_LLAMA_H
