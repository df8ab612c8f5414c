//===- Model.cpp - the model families, chosen by model.kind ----------------===//

#include "models/Model.h"

namespace kiln::models {

mlir::FailureOr<mlir::func::FuncOp>
buildModel(mlir::ModuleOp module, const ModelConfig &config, int64_t batch, int64_t seqLen,
           mlir::Type floatType, GPT2Output output, llvm::StringRef name,
           std::vector<std::string> &errors) {
  if (config.kind == "llama")
    return buildLlama(module, config, batch, seqLen, floatType, output, name, errors);
  return buildGPT2(module, config, batch, seqLen, floatType, output, name, errors);
}

int64_t paramCount(const ModelConfig &config, bool includePadding) {
  return config.kind == "llama" ? llamaParamCount(config, includePadding)
                                : gpt2ParamCount(config, includePadding);
}

double trainingFlopsPerToken(const ModelConfig &config, int64_t seqLen) {
  // A mixture of experts: only the experts a token goes to do its work.
  int64_t active = config.kind == "llama" ? llamaParamCount(config, false, /*activeOnly=*/true)
                                          : gpt2ParamCount(config, false, /*activeOnly=*/true);
  return 6.0 * static_cast<double>(active) +
         12.0 * static_cast<double>(config.n_layer) * static_cast<double>(config.n_embd) *
             static_cast<double>(seqLen);
}

} // namespace kiln::models
