//===- Model.h - the model families, chosen by model.kind ------------------===//

#ifndef KILN_MODELS_MODEL_H
#define KILN_MODELS_MODEL_H

#include "models/GPT2.h"
#include "models/Llama.h"

namespace kiln::models {

/// Builds the model `config.kind` names (gpt2 or llama) into `module`; the
/// arguments are buildGPT2's.
mlir::FailureOr<mlir::func::FuncOp>
buildModel(mlir::ModuleOp module, const ModelConfig &config, int64_t batch, int64_t seqLen,
           mlir::Type floatType, GPT2Output output, llvm::StringRef name,
           std::vector<std::string> &errors);

/// The model's parameters, with the real vocabulary or the padded table.
int64_t paramCount(const ModelConfig &config, bool includePadding);

/// Training FLOPs per token at sequence length `seqLen`: 6·N + 12·L·d·T
/// (PaLM, Chowdhery et al. 2022, App. B; N without vocabulary padding, and
/// with a mixture of experts only the top_k experts a token runs through) —
/// what kiln's MFU and estimates count.
double trainingFlopsPerToken(const ModelConfig &config, int64_t seqLen);

} // namespace kiln::models

#endif // KILN_MODELS_MODEL_H
