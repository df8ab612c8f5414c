//===- GPT2.h - the GPT-2 model family -------------------------------------===//
//
// GPT-2 (Radford et al. 2019) as nanoGPT and llm.c write it: learned token
// and position embeddings, n_layer pre-LN blocks of causal self-attention and
// a GELU-tanh MLP (4× wide), a final LayerNorm, and an output head tied to
// the token embedding. The vocabulary is padded (50257 -> 50304) for aligned
// kernels; the loss ignores the padding classes.
//
// Parameter names (kiln's; Hugging Face names in docs/frontend.md):
//   wte, wpe, h.N.ln_1.{w,b}, h.N.attn.qkv.{w,b}, h.N.attn.proj.{w,b},
//   h.N.ln_2.{w,b}, h.N.mlp.fc.{w,b}, h.N.mlp.proj.{w,b}, ln_f.{w,b}
//
//===----------------------------------------------------------------------===//

#ifndef KILN_MODELS_GPT2_H
#define KILN_MODELS_GPT2_H

#include "frontend/Config.h"
#include "frontend/Graph.h"
#include "frontend/NN.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"

#include <string>
#include <vector>

namespace kiln::models {

enum class GPT2Output {
  /// @name(params…, tokens, targets) -> the objective's loss (scalar): the
  /// mean cross-entropy; for model.objective = "dpo"
  /// @name(params…, tokens, targets, ref_logps) -> (loss, metrics…).
  Loss,
  Logits,   ///< @name(params…, tokens) -> logits [B, T, padded vocab]
  /// @name(params…, tokens, targets) -> log p(row) [B]: each row's sum of
  /// log-probabilities of its targets (negative targets skipped) — DPO's
  /// sequence log-probability, and its reference's.
  LogProbs,
};

/// Builds a GPT-2 function into `module`. `floatType` is the parameters' and
/// activations' type (f32; f64 for gradient checks). On failure `errors`
/// holds one message per problem.
mlir::FailureOr<mlir::func::FuncOp>
buildGPT2(mlir::ModuleOp module, const ModelConfig &config, int64_t batch, int64_t seqLen,
          mlir::Type floatType, GPT2Output output, llvm::StringRef name,
          std::vector<std::string> &errors);

/// What every model family's step shares: the token (and target) inputs,
/// split over the mesh's dp axis when the batch is larger than one …
struct StepInputs {
  frontend::Tensor tokens, targets; ///< targets: not for GPT2Output::Logits
  frontend::Tensor refLogps;        ///< DPO's loss: the reference's log p(row), [B]
  /// model.document_masking (not for Logits): each position's document in
  /// its row and its index in that document, i32 [B, T].
  frontend::Tensor segments, positions;
};
StepInputs stepInputs(frontend::Graph &g, int64_t batch, int64_t seqLen, GPT2Output output,
                      const ModelConfig &config);

/// Terms a model adds to its objective (a mixture of experts' load-balancing
/// loss, a scalar) and the metrics that come with them.
struct Auxiliary {
  frontend::Tensor loss;
  std::vector<std::pair<frontend::Tensor, std::string>> metrics;
};

/// Slots per expert for `tokens` tokens: moe.capacity for the training and
/// validation steps; every token for Logits (sampling), which so never
/// drops a choice. Dropping is not causal: in GShard's order a later
/// token's first choice takes a slot before an earlier token's second one,
/// and sampling pads the window after the prompt.
int64_t moeCapacity(const MoeConfig &moe, int64_t tokens, GPT2Output output);
/// The groups a step's tokens are routed in: moe.groups, or one when
/// sampling (`output` Logits: a single sequence).
int64_t moeGroups(const MoeConfig &moe, GPT2Output output);
/// The MoE layer of a block for `tokens` tokens a step.
frontend::nn::MoE makeMoE(frontend::Graph &g, const MoeConfig &moe, int64_t dim, int64_t hidden,
                          int64_t tokens, GPT2Output output, ParamInit init, ParamInit projInit,
                          frontend::nn::MoE::Expert kind);

/// A mixture of experts' terms: the balance losses and dropped shares
/// summed over `layers` blocks (null when the model has no experts),
/// averaged; the loss weighted by moe.aux_loss_weight.
Auxiliary moeAuxiliary(frontend::Graph &g, frontend::Tensor balance, frontend::Tensor dropped,
                       int64_t layers, const MoeConfig &moe);

/// … and its end: for Loss the scalar loss of `logits` — the mean
/// cross-entropy over all positions, or (model.loss_normalization =
/// "targets") the sum over the positions whose target is not negative
/// divided by how many there are (at least 1), or DPO's loss (see
/// ModelConfig::objective) followed by its metrics reward_margin,
/// reward_accuracy, chosen_reward, rejected_reward and logp_accuracy (means
/// over the pairs) — else the logits or the rows' log-probabilities; every result
/// named with kiln.output. With `aux.loss` (Loss only) the loss is the
/// objective plus aux.loss, followed by "lm_loss" (the objective alone) and
/// aux's metrics.
mlir::FailureOr<mlir::func::FuncOp> finishStep(frontend::Graph &g, mlir::ModuleOp module,
                                               frontend::Tensor logits, const StepInputs &in,
                                               const ModelConfig &config, GPT2Output output,
                                               std::vector<std::string> &errors,
                                               const Auxiliary &aux = {});

/// Parameters of the model: with the real vocabulary (the published figure,
/// 124,439,808 for GPT-2 124M) or with the padded table kiln allocates;
/// with `activeOnly`, a mixture of experts counts the top_k experts a token
/// runs through, not all of them.
int64_t gpt2ParamCount(const ModelConfig &config, bool includePadding, bool activeOnly = false);

/// The Hugging Face name of a kiln GPT-2 parameter ("h.0.attn.qkv.w" ->
/// "transformer.h.0.attn.c_attn.weight"); empty for unknown names. Both
/// store linear weights [in, out] (GPT-2's Conv1D), so no transpose is needed.
std::string gpt2HuggingFaceName(llvm::StringRef kilnName);
/// The inverse; accepts names with or without the "transformer." prefix and
/// returns empty for names kiln does not use (attention-mask buffers).
std::string gpt2KilnName(llvm::StringRef huggingFaceName);

} // namespace kiln::models

#endif // KILN_MODELS_GPT2_H
