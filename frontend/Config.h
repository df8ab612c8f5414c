//===- Config.h - the run configuration: one struct, TOML and --set --------===//
//
// Every option of a run lives in RunConfig. One schema (Config.cpp) binds each
// field to its dotted TOML key, type, range and help, and drives loading a
// TOML file, `--set key=value` overrides, validation and printing the
// resolved config. Unknown keys, wrong types and out-of-range values are
// errors that name the key and the file.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_FRONTEND_CONFIG_H
#define KILN_FRONTEND_CONFIG_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace kiln {

/// A mixture of experts in place of each block's MLP (GPT-2: GELU MLPs;
/// Llama: SwiGLU, as Mixtral): a router picks each token's top_k of `experts` MLPs, each with room for
/// capacity_factor · tokens · top_k / experts tokens per batch (GShard,
/// Lepikhin et al. 2020; Switch Transformer, Fedus et al. 2021).
struct MoeConfig {
  /// Experts per block; 0: a dense MLP.
  int64_t experts = 0;
  /// Experts each token goes to.
  int64_t top_k = 2;
  /// Slots per expert, as a multiple of an even share of the choices.
  double capacity_factor = 1.25;
  /// Weight of the load-balancing loss added to the objective (Switch's α).
  double aux_loss_weight = 0.01;
  /// The router's scores: "softmax" over the experts, or "sigmoid" of each.
  std::string gating = "softmax";
  /// Groups of consecutive tokens routed on their own, each with its own
  /// capacity (GShard's groups): a data-parallel rank routes its groups.
  int64_t groups = 1;
  /// The mesh axis the experts are split over ("" for none): not a key,
  /// RunConfig::meshModel sets it from parallel.ep.
  std::string expert_axis;

  bool enabled() const { return experts > 0; }
  /// Slots per expert for `tokens` tokens: ⌈factor · tokens · top_k /
  /// experts⌉, at least 1 and at most every token.
  int64_t capacity(int64_t tokens) const;
};

struct ModelConfig {
  std::string kind = "gpt2";
  int64_t n_layer = 12;
  int64_t n_head = 12;
  int64_t n_embd = 768;
  int64_t vocab_size = 50257;
  /// The embedding table is padded to a multiple of this for aligned
  /// kernels (50257 -> 50304 with 64); the padding never changes the loss.
  int64_t vocab_multiple = 64;
  int64_t block_size = 1024;
  double layer_norm_eps = 1e-5;
  double init_std = 0.02;
  /// Llama: key/value heads of grouped-query attention (0: n_head, plain
  /// multi-head attention); the MLP's hidden width (SwiGLU); the rotary
  /// base; RMSNorm's epsilon.
  /// How the loss averages the per-position cross-entropy: over all
  /// positions ("positions", pre-training), or over the positions that have
  /// a target ("targets": a negative target — a prompt token of SFT data,
  /// masked by the data loader — counts for nothing).
  std::string loss_normalization = "positions";
  /// What the step minimizes: "lm", the next-token cross-entropy (pre-
  /// training; SFT with loss_normalization = "targets"), or "dpo", Direct
  /// Preference Optimization (Rafailov et al. 2023, eq. 7) over pairs of
  /// rows — row 2i the chosen response, row 2i+1 the rejected one:
  /// −log σ(β·((log πc − log refc) − (log πr − log refr))), the sequence
  /// log-probabilities summed over the response tokens and the reference's
  /// an input (`ref_logps`) computed once from the starting weights.
  std::string objective = "lm";
  /// DPO's β: how far the policy may move from the reference.
  double dpo_beta = 0.1;
  /// Packed documents: attention only within each document of a row (the
  /// documents start with end-of-text) and positions restarting at each;
  /// the step takes `segments` and (GPT-2) `positions` [B, T] inputs.
  bool document_masking = false;
  int64_t n_kv_head = 0;
  int64_t intermediate_size = 0;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  /// Initial weights from a safetensors file (kiln or Hugging Face names),
  /// or from a checkpoint directory or a run directory (its latest
  /// checkpoint), instead of random initialization; empty: random.
  std::string init_from;
  /// With init_from: parameters the file lacks keep their random
  /// initialization (fine-tuning a larger model) instead of failing; the
  /// run lists them.
  bool init_partial = false;
  /// [moe]: experts in place of the MLPs (GPT-2 family).
  MoeConfig moe;
  /// The mesh axes a step's batch is split over, major first: not a key,
  /// RunConfig::meshModel sets it from the mesh (`edp`, `ep` when a
  /// mixture of experts splits its experts over part of the dp ranks).
  std::vector<std::string> batch_axes{"dp"};

  /// vocab_size rounded up to vocab_multiple.
  int64_t paddedVocab() const {
    return (vocab_size + vocab_multiple - 1) / vocab_multiple * vocab_multiple;
  }
  int64_t headDim() const { return n_embd / n_head; }
  int64_t kvHeads() const { return n_kv_head > 0 ? n_kv_head : n_head; }
};

struct TrainConfig {
  /// Optimizer steps to take.
  int64_t steps = 1000;
  /// Sequences per micro-batch.
  int64_t batch_size = 4;
  /// Tokens per sequence; 0 means model.block_size.
  int64_t seq_len = 0;
  /// Micro-batches per optimizer step (gradient accumulation).
  int64_t accumulate_steps = 1;
  int64_t seed = 1337;
  /// "f32", "bf16-mixed" or "f16-mixed" (kiln-assign-precision): matmuls
  /// and attention in the low type, f32 master weights, statistics and
  /// optimizer; f16-mixed adds dynamic loss scaling.
  std::string precision = "f32";
  /// Dynamic loss scaling (f16-mixed): the initial scale, the clean steps
  /// before it doubles (grows), and its growth and backoff factors.
  double loss_scale = 65536.0;
  int64_t loss_scale_growth_interval = 2000;
  double loss_scale_growth = 2.0;
  double loss_scale_backoff = 0.5;
  /// Steps between progress lines when the output is not a terminal.
  int64_t log_every = 10;
  /// Where to run: "cuda", "cpu" (the interpreter), or "auto" (the GPU when
  /// there is one).
  std::string device = "auto";
  /// kiln-recompute: what the backward recomputes instead of keeping —
  /// "none", "selective" (elementwise ops and norms, never matmuls) or
  /// "full" (every transformer block from its input).
  std::string recompute = "none";
  /// With a size ("20GiB", "512MiB", "8GB"): kiln-recompute recomputes the
  /// least, from `recompute` up, that plans the step's arena within it, and
  /// compilation fails naming the smallest arena it can plan when nothing
  /// does. Empty: no budget.
  std::string memory_budget;
  /// Stop at the first op of a step that writes NaN or +inf (-inf is what
  /// attention masks write), naming the op, its model layer and, on the
  /// GPU, its kernel. Every op's results are scanned after it runs: a
  /// debugging mode, slower. Not with f16-mixed, whose loss scaling
  /// expects gradient overflows.
  bool check_numerics = false;
  /// The GPU's sums in a fixed order, so two runs of one config on one GPU
  /// model give the same bits: the flash backward adds dq's key blocks in
  /// order, the embedding's gradient its rows by owner blocks, GEMMs take
  /// cuBLASLt's first heuristic algorithm (not the fastest timed). Slower;
  /// the CPU is deterministic either way.
  bool deterministic = false;
};

struct OptimConfig {
  double lr = 6e-4;
  /// The final learning rate as a fraction of lr.
  double min_lr_ratio = 0.1;
  int64_t warmup_steps = 0;
  /// "cosine", "linear", "constant" or "wsd".
  std::string schedule = "cosine";
  /// wsd: the fraction of the steps at the end over which lr decays.
  double decay_fraction = 0.2;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  /// Decoupled weight decay of matrix weights (never biases or norms).
  double weight_decay = 0.1;
  /// Also decay the embeddings (off by default).
  bool decay_embeddings = false;
  /// Clip the global gradient norm to this (0: no clipping).
  double grad_clip = 1.0;
};

struct DataConfig {
  /// byte, gpt2, cl100k_base, o200k_base or sentencepiece: the one the
  /// shards were made with (`kiln sample` decodes with it).
  std::string tokenizer = "gpt2";
  /// The tokenizer's files: gpt2's directory of encoder.json and vocab.bpe,
  /// tiktoken's directory of rank files (empty: the npm packages
  /// scripts/setup.sh installs), sentencepiece's .model file (required).
  std::string tokenizer_path;
  /// Globs of the training and validation token shards.
  std::string train = "data/train_*.bin";
  std::string val = "data/val_*.bin";
  /// "sequential" (llm.c order) or "random" (random windows).
  std::string mode = "sequential";
  /// How `kiln tokenize --config` writes fine-tuning examples (SFT, DPO):
  /// a prompt ({prompt}), a response ({response}), a chat message ({role},
  /// {content}); \n is a newline. The chat roles whose messages are trained
  /// on, comma-separated.
  std::string prompt_template = "{prompt}\\n";
  std::string response_template = "{response}";
  std::string message_template = "<|{role}|>\\n{content}\\n";
  std::string train_roles = "assistant";
};

struct EvalConfig {
  /// Steps between validation-loss evaluations (and samples); 0: only at the end.
  int64_t every = 250;
  /// Validation batches per evaluation.
  int64_t batches = 20;
  /// Tokens sampled at each evaluation (0: no sample).
  int64_t sample_tokens = 128;
  std::string prompt;
  double temperature = 1.0;
  int64_t top_k = 40;
};

struct CompileConfig {
  /// kiln-fuse-attention: attention written with primitives runs as
  /// kiln.attention (the scores are never stored). "auto" fuses under the
  /// bf16/f16-mixed policies, where the tensor-core flash kernels run; f32
  /// keeps the unfused cuBLAS path, faster than kiln's f32 (reference)
  /// attention kernels. "always" and "never" decide regardless.
  std::string fuse_attention = "auto";
  /// kiln-fuse: chains of elementwise ops and casts run as one kernel each
  /// (kiln.fusion). Off only to compare against or to debug.
  bool fuse = true;
  /// kiln-fuse's GEMM epilogues: gelu, gelu_grad with its bias gradient, a
  /// weight gradient's bias gradient and widening casts run inside the
  /// cuBLASLt call. Only with `fuse`; off to compare against.
  bool gemm_epilogues = true;
  /// kiln-fuse's cast folding: a bf16/f16 product whose widening cast would
  /// be a kernel of its own is written in f32 by the GEMM. Only with `fuse`.
  bool fold_casts = true;
  /// kiln-fuse's working copies: AdamW writes each parameter's bf16/f16 copy
  /// (a state) beside the f32 master, instead of the step casting the
  /// parameters at its top. Only with `fuse`, on one device; off to compare.
  bool adamw_copies = true;
  /// kiln-fuse's norm fusions: a layer/RMS norm takes the residual add
  /// before it, a norm's gradient the add and cast after it (one kernel
  /// each). Only with `fuse`; off to compare against.
  bool fuse_norms = true;
  /// kiln-fuse's cross-entropy fusion: the loss and its gradient in one
  /// kernel that reads each row of logits once from memory. Only with
  /// `fuse`; off to compare against.
  bool fuse_cross_entropy = true;
  /// kiln-fuse's attention-bias fusion: the qkv projection's bias gradient
  /// summed by the flash attention backward's kernels from the gradients
  /// they hold, instead of a reduction reading dqkv again. Only with
  /// `fuse`; off to compare against.
  bool fuse_attention_bias = true;
  /// kiln-fuse's broadcast reads: a loop fusion reads a broadcast's operand
  /// through its index map instead of the broadcast tensor. Only with
  /// `fuse`; off to compare against.
  bool fuse_broadcasts = true;
  /// kiln-fuse's sibling fusion: groups of elementwise ops reading the same
  /// value run as one kernel. Only with `fuse`; off to compare against.
  bool fuse_siblings = true;
  /// kiln-fuse's reduction fusions: a reduce_sum/max/mean of an
  /// elementwise chain runs as one kernel that computes each element it
  /// reduces. Only with `fuse`; off to compare against.
  bool fuse_reductions = true;
  /// kiln-fuse's bias-gradient epilogues: a weight gradient's GEMM sums the
  /// bias gradient too (cuBLASLt's BGRADA). Off by default: a reduction
  /// kernel took GPT-2's bf16 step 0.3-0.8 % less on an H100, as BGRADA
  /// runs those GEMMs at 0.67x a plain one (bench/RESULTS.md, 2026-12-05).
  /// Only with `gemm_epilogues`.
  bool bias_grad_epilogues = false;

  /// Whether kiln-fuse-attention runs for `precision`.
  bool fusesAttention(llvm::StringRef precision) const {
    return fuse_attention == "always" || (fuse_attention == "auto" && precision != "f32");
  }
};

struct ParallelConfig {
  /// Data-parallel ranks: the batch (train.batch_size, the global batch)
  /// is split over them and the gradients summed.
  int64_t dp = 1;
  /// Tensor-parallel ranks: the MLPs' hidden layers are split over them
  /// (Megatron column/row parallel); attention's heads: planned.
  int64_t tp = 1;
  /// ZeRO stage over dp: 1 and 2 split the optimizer states over the dp
  /// ranks, 3 the parameters too (0: every rank holds everything).
  int64_t zero = 0;
  /// Sequence parallelism with tp (planned).
  bool sequence_parallel = false;
  /// Expert parallelism: a mixture of experts' experts split over the
  /// data-parallel ranks, the tokens sent to them by all_to_all (1: every
  /// rank holds every expert; otherwise it must equal dp).
  int64_t ep = 1;
  /// Seconds a rank process waits for the others — to connect, or inside
  /// one collective — before the run fails naming the ranks it waited for.
  double timeout = 600;
  /// How rank processes on GPUs run their collectives: "nccl" (on the
  /// device buffers; each rank needs a GPU of its own), "host" (staged
  /// through host memory and the ranks' TCP group: slow, but any number of
  /// ranks can share a GPU), or "auto": NCCL when every rank on the host
  /// has its own GPU and libnccl loads, else host.
  std::string collectives = "auto";
  /// MiB of gradient sums over dp that run as one NCCL group (a bucket,
  /// kiln-bucket-collectives); 0: each sum alone.
  double bucket_mb = 25;
  /// Pipeline stages: the model's transformer blocks cut into pp runs of
  /// consecutive blocks, one per rank (kiln-pipeline). With pp > 1 a step
  /// is `microbatches` micro-batches of train.batch_size rows each, run
  /// through the stages by `schedule` ("1f1b" or "gpipe"); `pipeline_cuts`
  /// ("4,8") names the first block of each stage after the first (empty:
  /// balanced by the ops' FLOPs).
  int64_t pp = 1;
  int64_t microbatches = 1;
  std::string schedule = "1f1b";
  std::string pipeline_cuts;
  /// Interleaved 1F1B: each rank holds `virtual_stages` runs of blocks
  /// (model chunks), the blocks cut into pp x virtual_stages stages, stage
  /// c on rank c mod pp (Narayanan et al. 2021). 1: one run per rank.
  int64_t virtual_stages = 1;

  /// pipeline_cuts as numbers; none when it is not a comma-separated list
  /// of whole numbers.
  std::optional<std::vector<int64_t>> pipelineCuts() const;

  /// The ranks of the SPMD mesh (kiln-partition's); pipeline stages are
  /// counted apart (pp).
  int64_t numRanks() const { return dp * tp; }
  /// Every rank: the pipeline's stages times each stage's mesh (as many
  /// processes on GPUs).
  int64_t allRanks() const { return pp * dp * tp; }
  /// Experts split over part of the data-parallel ranks (1 < ep < dp):
  /// the dp ranks then form an edp × ep grid (edp = dp / ep, Megatron's
  /// expert-data-parallel groups), the batch split over both axes.
  bool expertGroups() const { return ep > 1 && ep < dp; }
  /// The mesh as kiln-propagate-sharding's option (`dp=2,tp=1`, or
  /// `edp=2,ep=2,tp=1` with expertGroups()).
  std::string meshText() const {
    std::string data = expertGroups()
                           ? "edp=" + std::to_string(dp / ep) + ",ep=" + std::to_string(ep)
                           : "dp=" + std::to_string(dp);
    return data + ",tp=" + std::to_string(tp);
  }
  /// The mesh axes the batch is split over, major first.
  std::vector<std::string> batchAxes() const {
    return expertGroups() ? std::vector<std::string>{"edp", "ep"} : std::vector<std::string>{"dp"};
  }
};

struct CheckpointConfig {
  /// Steps between checkpoints (0: only at the end).
  int64_t every = 1000;
  /// Checkpoints kept (0: all).
  int64_t keep = 2;
};

struct RunConfig {
  ModelConfig model;
  TrainConfig train;
  OptimConfig optim;
  DataConfig data;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  CompileConfig compile;
  ParallelConfig parallel;
  /// Where the run writes its log, plot and checkpoints.
  std::string run_dir = "runs/latest";

  /// Micro-batches per optimizer step: the pipeline's, or gradient
  /// accumulation's.
  int64_t microbatches() const {
    return parallel.pp > 1 ? parallel.microbatches : train.accumulate_steps;
  }

  /// Sequence length after defaults (train.seq_len or model.block_size).
  int64_t seqLen() const { return train.seq_len ? train.seq_len : model.block_size; }

  /// Loads `path` over the defaults. `displayName` is used in messages.
  static llvm::Expected<RunConfig> loadFile(llvm::StringRef path);
  /// Parses TOML text over the defaults (`source` names it in messages).
  static llvm::Expected<RunConfig> parse(llvm::StringRef toml, llvm::StringRef source);
  /// Applies `key=value` overrides; the value is TOML (`4`, `1e-3`, `"x"`),
  /// or a bare string.
  llvm::Error applyOverrides(llvm::ArrayRef<std::string> assignments);
  /// Cross-field checks (n_embd divisible by n_head, ...).
  llvm::Error validate(llvm::StringRef source) const;
  /// The model as the mesh builds it: with parallel.ep > 1 the experts
  /// are split over dp (ep = dp) or over ep (ep < dp; the batch then over
  /// edp and ep: moe.expert_axis, batch_axes).
  ModelConfig meshModel() const;
  /// The resolved config as TOML, every key listed.
  std::string toToml() const;
};

} // namespace kiln

#endif // KILN_FRONTEND_CONFIG_H
