//===- Passes.td - kiln passes ---------------------------------------------===//
//
// Grouped under banners, alphabetical inside a group. Each pass has one name
// everywhere: `FooPass`, flag `kiln-foo`, `passes/Foo.cpp`,
// `tests/lit/passes/foo.mlir`.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_PASSES_TD
#define KILN_PASSES_TD

include "mlir/Pass/PassBase.td"

//===----------------------------------------------------------------------===//
// Training-step construction
//===----------------------------------------------------------------------===//

def AutodiffPass : Pass<"kiln-autodiff", "mlir::ModuleOp"> {
  let summary = "Builds @train_step (loss and gradients) from @forward by reverse-mode AD";
  let description = [{
    Clones the forward function (one scalar float result, the loss) into a
    training step that returns the loss followed by the gradient of every
    `kiln.param` argument, in argument order. The backward is built from each
    op's `DifferentiableOpInterface::buildVJP`; cotangents of values used more
    than once are summed; integer and parameter-independent values get no
    cotangent. The forward function is kept.

    ```mlir
    func.func @train_step(%w: tensor<8x8xf32> {kiln.param = "w"}, %x: tensor<4x8xf32> {kiln.input = "x"})
        -> (tensor<f32> {kiln.output = "loss"}, tensor<8x8xf32> {kiln.grad = "w"})
    ```
  }];
  let options = [
    Option<"function", "function", "std::string", /*default=*/"\"forward\"",
           "The function to differentiate">,
    Option<"output", "output", "std::string", /*default=*/"\"train_step\"",
           "Name of the training-step function to create">,
    Option<"lossScale", "loss-scale", "double", /*default=*/"0",
           "Dynamic loss scaling: seed the backward with a kiln.state \"loss_scale\" "
           "(f32, initially this value) instead of 1; 0 disables">,
  ];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def AssignPrecisionPass : Pass<"kiln-assign-precision", "mlir::ModuleOp"> {
  let summary = "Low-precision compute where it is safe, f32 where it is not, every cast explicit";
  let description = [{
    Before autodiff, under a policy: `f32` changes nothing; `bf16-mixed` and
    `f16-mixed` run matmuls (operands, bias, result) and attention in the low
    type with f32 accumulation, keep layer/RMS norms, reductions and the
    optimizer in f32 (operands cast up), let elementwise, data-movement and
    softmax ops store in their operands' type (computing in f32; mixed
    types promote to f32), and leave cross-entropy's logits as they come
    (its loss and log-sum-exp are f32). Parameters stay f32 master weights; each value is
    cast at most once per type, right after its definition. The backward
    built by kiln-autodiff inherits the types, so activations saved for it
    are in the low type and every parameter gradient comes back in f32.

    ```mlir
    %wl = kiln.cast %w : tensor<768x2304xf32> to tensor<768x2304xbf16>
    %y = kiln.matmul %xl, %wl bias %bl : tensor<16x1024x768xbf16>, tensor<768x2304xbf16>, tensor<2304xbf16> -> tensor<16x1024x2304xbf16>
    ```
  }];
  let options = [
    Option<"policy", "policy", "std::string", /*default=*/"\"f32\"",
           "f32, bf16-mixed or f16-mixed">,
  ];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def AttachOptimizerPass : Pass<"kiln-attach-optimizer", "mlir::ModuleOp"> {
  let summary = "Adds AdamW, gradient clipping and accumulation to @train_step";
  let description = [{
    After kiln-autodiff: the step gains AdamW moment arguments
    (`kiln.state = "<param>.adam_m"/".adam_v"`) and the per-step inputs `lr`
    and `step`, computes the global gradient norm and clipping scale, updates
    every parameter with `kiln.adamw_update`, and returns
    `(loss, grad_norm, new params…, new moments…)`, each new value marked
    `kiln.aliases` of the argument it replaces (an in-place update). When
    the step has a `kiln.state = "loss_scale"` argument (kiln-autodiff's
    `loss-scale`), the gradients are loss-scaled: they are unscaled through
    AdamW's grad_scale, a non-finite gradient norm skips the update
    (`skip`) and multiplies the scale by the backoff factor, and
    `loss-scale-growth-interval` clean steps in a row (counted in the state
    `loss_scale.good_steps`) multiply it by the growth factor; the step also
    returns `skipped` (1 or 0). With
    `accumulate-steps = K > 1` the step is split into `@accumulate_step`
    (gradients summed into `<param>.grad_acc` states) and `@apply_step`
    (AdamW on the accumulated gradients ÷ K, accumulators reset).

    ```mlir
    %p2, %m2, %v2 = kiln.adamw_update %p, %g, %m, %v, %lr, %step, %scale {...} : ...
    ```
  }];
  let options = [
    Option<"beta1", "beta1", "double", /*default=*/"0.9", "AdamW β1">,
    Option<"beta2", "beta2", "double", /*default=*/"0.95", "AdamW β2">,
    Option<"epsilon", "epsilon", "double", /*default=*/"1e-8", "AdamW ε">,
    Option<"weightDecay", "weight-decay", "double", /*default=*/"0.1",
           "Decoupled weight decay for parameters whose role is in decay-roles">,
    ListOption<"decayRoles", "decay-roles", "std::string",
               "Parameter roles (kiln.role) that get weight decay; default: weight">,
    Option<"maxGradNorm", "max-grad-norm", "double", /*default=*/"1.0",
           "Clip the global gradient norm to this (0 disables clipping)">,
    Option<"accumulateSteps", "accumulate-steps", "int64_t", /*default=*/"1",
           "Micro-batches whose gradients are summed before one update">,
    Option<"lossScaleGrowthInterval", "loss-scale-growth-interval", "int64_t",
           /*default=*/"2000", "Dynamic loss scaling: clean steps before the scale grows">,
    Option<"lossScaleGrowth", "loss-scale-growth", "double", /*default=*/"2.0",
           "Dynamic loss scaling: factor after growth-interval clean steps">,
    Option<"lossScaleBackoff", "loss-scale-backoff", "double", /*default=*/"0.5",
           "Dynamic loss scaling: factor after a step whose gradients overflowed">,
  ];
  let dependentDialects = ["::kiln::KilnDialect"];
}

//===----------------------------------------------------------------------===//
// Code generation preparation
//===----------------------------------------------------------------------===//

def FuseAttentionPass : Pass<"kiln-fuse-attention"> {
  let summary = "Rewrites softmax(q·kᵀ·scale + causal mask)·v into kiln.attention";
  let description = [{
    Attention written with primitives — as the frontend and users write it,
    with the scale on the scores or on q, a causal mask from iota/compare/
    select or an additive constant, casts from kiln-assign-precision, and
    k/v broadcast over head groups (grouped-query attention) — becomes one
    `kiln.attention`, whose kernels never store the scores and whose VJP
    recomputes them from the saved log-sum-exp. Runs before autodiff. Leaves
    alone what it cannot express exactly: other masks, a softmax over
    another axis, scores or probabilities used elsewhere.

    ```mlir
    %o, %lse = kiln.attention %q, %k, %v {causal, scale = 0.125 : f32}
        : tensor<4x12x64x64xf32>, tensor<4x12x64x64xf32>, tensor<4x12x64x64xf32>
        -> tensor<4x12x64x64xf32>, tensor<4x12x64xf32>
    ```
  }];
  let statistics = [
    Statistic<"numFused", "fused", "Attention blocks rewritten into kiln.attention">,
  ];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def FuseMatmulBiasPass : Pass<"kiln-fuse-matmul-bias"> {
  let summary = "Folds `add(matmul, broadcast(bias))` into the matmul's bias operand";
  let description = [{
    A linear layer's bias becomes cuBLASLt's bias epilogue: the broadcast is
    never materialized and the product is written once. Applies when the
    matmul has no other user and the bias is a vector broadcast along the
    last dimension; the add's operands may be either way round.

    ```mlir
    %z = kiln.matmul %x, %w bias %b : tensor<4x8x64xf32>, tensor<64x256xf32>, tensor<256xf32> -> tensor<4x8x256xf32>
    ```
  }];
  let statistics = [
    Statistic<"numFused", "fused", "Bias adds folded into their matmuls">,
  ];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def FusePass : Pass<"kiln-fuse", "mlir::ModuleOp"> {
  let summary = "Groups chains of elementwise ops into kiln.fusion regions (one kernel each)";
  let description = [{
    Loop fusion over the finished training step: an elementwise op (casts
    included) joins the group of one of its users when the group has its
    shape and the op's other users all come after the group; each group of
    two or more ops becomes a `kiln.fusion` whose body is those ops, with
    splat constants cloned in, yielding every value used outside. Codegen
    emits one kernel per fusion: the inputs are read once, the results
    written once, the intermediates never leave registers. Nothing is
    recomputed.

    Before that (option `epilogues`, on by default) it folds into GEMMs what
    cuBLASLt's epilogues compute, each as a `kiln.fusion` holding the
    matmul: `gelu tanh` of a product (yielding the product too when the
    backward needs it), `gelu_grad tanh` of a product with the `reduce_sum`
    over its rows (the bias gradient), and the bias-gradient `reduce_sum` of
    a weight gradient's rhs; and a cast of a layer or RMS norm's f32
    output to bf16/f16, its only user, into the norm (which then writes the
    narrow type: the same rounding, so no result changes). A GEMM epilogue
    needs a single GEMM with its columns a multiple of 8 (cuBLASLt's
    alignment for the epilogue's vectors). With `fold-casts` (on by
    default), a bf16/f16 product whose only user is a cast to f32 feeding no
    elementwise op (so the cast would be a kernel of its own) produces f32
    instead. With `norms` (on by default) a layer or RMS norm ends a group
    as an elementwise user would, taking the chain that computes its input
    (the residual add), and a norm's gradient joins the group of the
    elementwise ops reading its dx (the residual gradient's add and cast):
    a norm fusion, one warp-per-row kernel (rows a multiple of 8, at most
    2048 long). With `siblings` (on by default) a group joins a later group
    of its shape reading one of the same values, when the earlier group's
    other readers all come after the later one. With `reductions` (on by
    default) a reduce_sum, reduce_max or reduce_mean ends a group the way a
    norm does: a reduction fusion, whose kernel computes each element it
    reduces from the fusion's inputs. With `broadcasts` (on by
    default) a loop fusion reads a broadcast's operand through the
    broadcast's index map. With `adamw-copies` (on by default) a
    parameter's cast to bf16/f16 becomes a state argument, the working copy
    (`kiln.copy_of` the parameter), which its `kiln.adamw_update` writes as
    a fourth result beside the f32 master: one pass over the parameter
    instead of the update's and a cast's at the next step's top.
    Its statistics count the fusions, the ops in them and the bytes of
    device-memory traffic they avoid, where LLVM is built with statistics
    (Debian's is not: `--mlir-pass-statistics` then reports nothing, and
    the Plan's notes are where `kiln compile` shows the fusions).

    ```mlir
    %y = kiln.fusion (%x, %r) : (tensor<8x768xbf16>, tensor<8x768xf32>) -> tensor<8x768xf32> {
    ^bb0(%a: tensor<8x768xbf16>, %b: tensor<8x768xf32>):
      %0 = kiln.cast %a : tensor<8x768xbf16> to tensor<8x768xf32>
      %1 = kiln.add %0, %b : tensor<8x768xf32>
      kiln.yield %1 : tensor<8x768xf32>
    }
    ```
  }];
  let options = [
    Option<"epilogues", "epilogues", "bool", /*default=*/"true",
           "First fold into GEMMs what cuBLASLt's epilogues compute: gelu (keeping "
           "its input for the backward), gelu_grad with its bias-gradient sum, a "
           "weight gradient's bias-gradient sum; and a narrowing cast of a layer or "
           "RMS norm's f32 output into the norm">,
    Option<"foldCasts", "fold-casts", "bool", /*default=*/"true",
           "A bf16/f16 product whose only user is a widening cast to f32 read by no "
           "elementwise op produces f32 itself (more accurate: the product is not "
           "rounded to the low type first, so this one changes results)">,
    Option<"norms", "norms", "bool", /*default=*/"true",
           "Norm fusions: a layer/RMS norm takes the elementwise chain computing its "
           "input (the residual add), a norm's gradient the elementwise ops reading "
           "its dx (the residual gradient's add and cast) and a column sum of one "
           "of them (the next projection's bias gradient, instead of its weight "
           "gradient's BGRADA epilogue); rows of at most 2048 elements, a multiple of "
           "8, float tensors">,
    Option<"embeddingInit", "embedding-init", "bool", /*default=*/"true",
           "An add of an embedding gradient's table (its only reader) and another "
           "value of its type (a tied embedding's head gradient): the embedding "
           "gradient, moved to the add, adds its rows into that value (its init), so the "
           "table is not zeroed, written and read again">,
    Option<"adamwCopies", "adamw-copies", "bool", /*default=*/"true",
           "A parameter cast to bf16/f16 whose AdamW update the step returns in place "
           "(one function, no mesh): the cast becomes a state argument (kiln.copy_of the "
           "parameter) that the update writes as its fourth result, so the step reads "
           "the working copy AdamW wrote and no cast runs">,
    Option<"crossEntropy", "cross-entropy", "bool", /*default=*/"true",
           "A cross_entropy and its gradient over the same logits run as one kernel "
           "where the forward was, when the gradient's dloss is known there (rows a "
           "multiple of 8 classes)">,
    Option<"attentionBias", "attention-bias", "bool", /*default=*/"true",
           "The column sum of an attention_qkv_grad's dqkv (the qkv projection's bias "
           "gradient) joins it: the flash backward sums dk's and dv's columns from "
           "registers and dq's as it converts them, so dqkv is not read again">,
    Option<"broadcasts", "broadcasts", "bool", /*default=*/"true",
           "A broadcast_in_dim read by loop fusions is cloned into each, which reads "
           "the broadcast's operand through its index map: the broadcast tensor is "
           "never written (it stays for its other readers)">,
    Option<"biasGradEpilogues", "bias-grad-epilogues", "bool", /*default=*/"false",
           "With epilogues: a weight gradient's GEMM also sums its rhs's rows (a "
           "bias gradient, cuBLASLt's BGRADA); off (the default, as "
           "compile.bias_grad_epilogues), the sum is a reduction kernel">,
    Option<"siblings", "siblings", "bool", /*default=*/"true",
           "Sibling fusion: a group of elementwise ops joins a later group of its "
           "shape reading one of the same values, when the earlier group's other "
           "readers all come after the later one (the shared value is read once)">,
    Option<"reductions", "reductions", "bool", /*default=*/"true",
           "Reduction fusions: a reduce_sum, reduce_max or reduce_mean of a float "
           "tensor ends a group, the elementwise ops computing its operand joining it "
           "as they would a user of their shape; its kernel reads each element through "
           "them (not one of a norm gradient's dx or a value computed from it: those "
           "ops are the norm fusion's)">,
  ];
  let statistics = [
    Statistic<"numFusions", "fusions", "kiln.fusion regions built">,
    Statistic<"numOpsFused", "ops-fused", "Ops moved into them">,
    Statistic<"bytesKept", "bytes-kept", "Bytes of intermediate writes and reads kept on chip">,
    Statistic<"numEpilogues", "epilogues", "GEMM epilogue fusions built">,
    Statistic<"numGelu", "gelu-epilogues", "gelu folded into a GEMM">,
    Statistic<"numGeluGrad", "gelu-grad-epilogues", "gelu_grad folded into a GEMM">,
    Statistic<"numBiasGrads", "bias-grad-epilogues", "Bias-gradient sums folded into a GEMM">,
    Statistic<"numCastsFolded", "casts-folded", "Widening casts folded into a GEMM's output">,
    Statistic<"numNormCasts", "norm-casts", "Narrowing casts folded into a norm's output">,
    Statistic<"numNormGradCasts", "norm-grad-casts", "Widening casts folded into a norm gradient's dy">,
    Statistic<"numNormFusions", "norm-fusions", "Norms fused with elementwise ops">,
    Statistic<"numColumnSums", "column-sums", "Bias-gradient sums taken into a norm gradient's kernel">,
    Statistic<"numEmbeddingInits", "embedding-inits", "Adds taken into an embedding gradient as its init">,
    Statistic<"numAdamWCopies", "adamw-copies", "Parameter casts replaced by a working copy AdamW writes">,
    Statistic<"numCrossEntropyFusions", "cross-entropy-fusions", "Cross-entropies fused with their gradients">,
    Statistic<"numAttentionBiasSums", "attention-bias-sums", "Bias-gradient sums taken into an attention gradient's kernels">,
    Statistic<"numBroadcastsRead", "broadcasts-read", "Broadcasts read through an index map in a loop fusion">,
    Statistic<"numSiblings", "siblings", "Groups merged into a sibling reading the same value">,
    Statistic<"numReductionFusions", "reduction-fusions", "Loop fusions ending in a reduction">,
  ];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def RecomputePass : Pass<"kiln-recompute", "mlir::ModuleOp"> {
  let summary = "Keeps or recomputes each forward value the backward reads";
  let description = [{
    Runs on every function with a result named `kiln.output = "loss"` and
    ops after its forward. Its forward is the ops the loss and the metrics
    beside it (the other `kiln.output` results but the optimizer's
    `grad_norm` and `skipped`) depend on; its backward starts at the first
    other op (constants aside). A forward value some backward op reads is *saved*: it
    stays live from its forward op to its last backward reader, which is
    what fills the arena at the end of the forward. For each saved value
    the pass keeps it, or clones the ops that make it into the backward,
    right before the first backward op that reads it, and points the
    backward's readers at the copy (clones are shared: an op is cloned once
    per function). The forward value then dies at its last forward reader.
    Nothing else changes: on the interpreter the step's results are bit for
    bit those without it. (On the GPU a forward gelu computed in a GEMM's
    epilogue from the f32 accumulator is recomputed from the bf16 product,
    a difference of bf16 rounding.)

    `policy` chooses what is recomputed:
    - `none`: nothing.
    - `selective`: cheap ops — elementwise ops and casts, broadcasts,
      reshapes, transposes, slices, iota, layer and RMS norms, rotary
      embeddings — whose operands are themselves kept or recomputed, so a
      recomputation never keeps alive a value the backward would not have
      kept anyway. Matmuls, attention, reductions and collectives never, nor
      what is made from parameters alone (a weight's bf16 copy: its size
      does not grow with the batch).
    - `full`: every op of the first `full-blocks` transformer blocks (all
      when -1) except those whose results other blocks read: only each
      block's inputs are kept. A block is the model scope up to its first
      numeric component (`h.3` of `h.3.attn`); the other blocks and the
      ops outside blocks are treated as `selective`.

    With `memory-budget` (bytes, or with a unit: `20GiB`, `512MiB`, `8GB`)
    the pass picks the first candidate whose planned arena fits, in order
    of recomputation: `none`, `selective`, then `full` on 1, 2, ... blocks
    (starting from `policy`). It plans each candidate on a copy of the
    module with the passes that follow it (`kiln-fuse` as configured by
    `fuse`, `epilogues` and `fold-casts`, then `kiln-plan-buffers`), so the
    figure is the arena codegen will allocate. When none fits it fails with
    the smallest arena it could plan.

    The choice is written on each function as `kiln.recompute`: the policy,
    the number of blocks recomputed in full and in all, the ops cloned, the
    FLOPs they add to a step, and with a budget the budget and the planned
    arena of each candidate tried (`kiln compile` prints it). Run nothing
    that would merge the clones back (`cse`) after it.

    ```mlir
    %y = kiln.gelu tanh %h : tensor<8x3072xbf16>                // forward
    ...
    %y_1 = kiln.gelu tanh %h : tensor<8x3072xbf16>              // recomputed
    %dw = kiln.matmul %y_1, %dz transpose_a : ...
    ```
  }];
  let options = [
    Option<"policy", "policy", "std::string", /*default=*/"\"none\"",
           "none, selective or full">,
    Option<"fullBlocks", "full-blocks", "int64_t", /*default=*/"-1",
           "With policy=full: how many blocks, from the first, are recomputed in full "
           "(-1: all); the others selective">,
    Option<"memoryBudget", "memory-budget", "std::string", /*default=*/"\"\"",
           "Recompute the least that makes the planned arena fit in this many bytes "
           "(20GiB, 512MiB, 8GB; empty: no budget)">,
    Option<"fuse", "fuse", "bool", /*default=*/"true",
           "With a budget: kiln-fuse runs after this pass (to plan candidates as codegen will)">,
    Option<"epilogues", "epilogues", "bool", /*default=*/"true",
           "With a budget and fuse: kiln-fuse's epilogues option">,
    Option<"foldCasts", "fold-casts", "bool", /*default=*/"true",
           "With a budget and fuse: kiln-fuse's fold-casts option">,
    Option<"norms", "norms", "bool", /*default=*/"true",
           "With a budget and fuse: kiln-fuse's norms option">,
    Option<"embeddingInit", "embedding-init", "bool", /*default=*/"true",
           "With a budget and fuse: kiln-fuse's embedding-init option">,
    Option<"adamwCopies", "adamw-copies", "bool", /*default=*/"true",
           "With a budget and fuse: kiln-fuse's adamw-copies option (the working "
           "copies are state: they count against the budget)">,
    Option<"crossEntropy", "cross-entropy", "bool", /*default=*/"true",
           "With a budget and fuse: kiln-fuse's cross-entropy option">,
    Option<"attentionBias", "attention-bias", "bool", /*default=*/"true",
           "With a budget and fuse: kiln-fuse's attention-bias option">,
    Option<"broadcasts", "broadcasts", "bool", /*default=*/"true",
           "With a budget and fuse: kiln-fuse's broadcasts option">,
    Option<"biasGradEpilogues", "bias-grad-epilogues", "bool", /*default=*/"false",
           "With a budget and fuse: kiln-fuse's bias-grad-epilogues option">,
    Option<"siblings", "siblings", "bool", /*default=*/"true",
           "With a budget and fuse: kiln-fuse's siblings option">,
    Option<"reductions", "reductions", "bool", /*default=*/"true",
           "With a budget and fuse: kiln-fuse's reductions option">,
    Option<"bucketBytes", "bucket-bytes", "int64_t", /*default=*/"0",
           "With a budget: kiln-bucket-collectives runs after this pass with these bytes "
           "(its buckets keep the sums' operands alive longer; 0: it does not run)">,
  ];
  let statistics = [
    Statistic<"numCloned", "ops-cloned", "Forward ops cloned into the backward">,
    Statistic<"numCandidates", "candidates-planned", "Candidates planned for the memory budget">,
  ];
  let dependentDialects = ["::kiln::KilnDialect"];
}

//===----------------------------------------------------------------------===//
// Sharding
//===----------------------------------------------------------------------===//

def PartitionPass : Pass<"kiln-partition", "mlir::ModuleOp"> {
  let summary = "Rewrites a sharded step into the per-rank program, with its collectives";
  let description = [{
    Reads what kiln-propagate-sharding wrote and rewrites `function` into
    the program every rank runs (SPMD): each value gets its per-rank shape,
    and where an op needs an operand laid out differently from how it was
    made, the collective that converts it is inserted — a partial sum an op
    needs whole becomes `kiln.all_reduce`, a split value an op needs whole
    `kiln.all_gather`. One conversion per value and layout, shared by its
    users. Each collective's `cause` names the op that made the layout and
    the op that needed another (`kiln compile --explain-sharding`). A mean
    over a split dimension is scaled so the partial sums add up to the
    global mean. Arguments and results keep their `kiln.sharding`: their
    global layout, for the runtime and checkpoints.

    ```mlir
    %dw = kiln.matmul %x, %dy transpose_a : tensor<8x16xf32>, tensor<8x64xf32> -> tensor<16x64xf32>
    %g = kiln.all_reduce %dw over "dp" {cause = "..."} : tensor<16x64xf32>
    ```
  }];
  let options = [
    Option<"function", "function", "std::string", /*default=*/"\"\"",
           "The function to partition (empty: every function with a split value)">,
  ];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def PipelinePass : Pass<"kiln-pipeline", "mlir::ModuleOp"> {
  let summary = "Splits the step into pipeline stages with send/recv and a micro-batch schedule";
  let description = [{
    Pipeline parallelism over `stages` ranks (mesh axis `pp`). Works on
    what kiln-attach-optimizer makes with accumulate-steps = `microbatches`:
    `@accumulate_step` (one micro-batch's forward and backward, adding into
    the gradient accumulators) and `@apply_step` (AdamW on the sums).

    1. Forward and backward. An op of `@accumulate_step` is of the forward
       when the loss or a metric depends on it, else of the backward.
    2. Blocks. Parameters belong to the transformer block their name says
       (`h.3` of `h.3.attn.qkv.w`: up to the first numeric component); the
       others to a virtual block before the first (embeddings: some forward
       op reads them with nothing made from a block's parameters) or after
       the last (final norm, head). A forward op
       takes the latest block among its parameters and the forward ops it
       reads. A backward op takes the block of the model scope it was built
       in (autodiff gives a VJP its forward op's scope), but never a later
       one than a gradient it reads (gradients flow toward the first
       stage); outside blocks, the latest block among the activations and
       parameters it reads, or, reading only gradients, the earliest among
       them. Forward ops kiln-recompute copied into the backward stay with
       their originals. Ops that read only constants and step inputs belong
       to no block: each stage that needs them computes its own copy.
    3. Stages. The blocks are cut into `stages` runs of consecutive blocks,
       at the blocks listed in `cuts` (the first block of each stage after
       the first) or else so that the largest run's FLOPs
       (CostOpInterface, forward and backward) are as small as they can be.
    4. Functions. Each stage s gets `@stage<s>_forward` (tokens in; the
       loss and metrics out at the stage computing them), `@stage<s>_backward`
       (its accumulators updated in place) and `@stage<s>_apply` (AdamW on
       the parameters whose gradient it accumulates; the gradient norm's
       squares summed over `pp` by `kiln.all_reduce`). A value one stage
       makes and another reads becomes a `kiln.send` after its producer
       and a `kiln.recv` before its first reader; a forward value the same
       stage's backward reads is a result of the forward named `saved.N`
       and an input of the backward. A parameter read on several stages
       (tied embeddings) is updated by the stage that accumulates its
       gradient and sent to the others by their apply functions. An
       accumulator whose summands are made on several stages (the tied
       head's gradient on the last) is split where that moves fewer bytes
       (M x the summands against one part): each other stage sums its
       summands into a transient state `<param>.grad_acc.stage<t>`, which
       its apply sends to the owner once a step, and the owner's apply adds
       it (through the sum's all_reduce or reduce_scatter, if any) before
       anything reads the accumulator.
    5. The schedule, as data on the module (`kiln.pipeline`): for each
       stage the order of its micro-batches' forwards (`F3`) and backwards
       (`B3`): `gpipe` (every forward, then every backward) or `1f1b`
       (stage s runs p-s-1 forwards ahead, then alternates one forward and
       one backward, so at most p-s micro-batches are in flight).
    6. Interleaving (`virtual-stages` v > 1, schedule 1f1b, micro-batches
       a multiple of the stages): the blocks are cut into stages x v
       stages (at `cuts`, then stages x v - 1 of them, or by FLOPs),
       stage c on rank c mod stages; `@stage<c>_forward` and
       `_backward` per stage, `@stage<r>_apply` per rank (all its stages'
       parameters); sends and receives name ranks; the schedule is one list
       per rank whose actions name their stage (`F3.5`), Megatron-LM's
       interleaved order (Narayanan et al. 2021).

    `@accumulate_step` and `@apply_step` are replaced; `@forward`
    (evaluation) stays whole. The module's mesh becomes `#kiln.mesh<pp =
    N, ...>`: pp, then the axes kiln-partition split the step over (each
    stage is a dp x tp mesh of ranks).
  }];
  let options = [
    Option<"stages", "stages", "int64_t", /*default=*/"1", "Pipeline stages (1: do nothing)">,
    Option<"microbatches", "microbatches", "int64_t", /*default=*/"1",
           "Micro-batches per step (kiln-attach-optimizer's accumulate-steps)">,
    Option<"schedule", "schedule", "std::string", /*default=*/"\"1f1b\"", "1f1b or gpipe">,
    Option<"virtualStages", "virtual-stages", "int64_t", /*default=*/"1",
           "Interleaved 1F1B: stage runs per rank (the blocks cut into stages x virtual-stages; "
           "1: one)">,
    ListOption<"cuts", "cuts", "int64_t",
               "The first block of each stage after the first (empty: balance by cost; with "
               "virtual stages, stages x virtual-stages - 1 of them)">,
  ];
  let dependentDialects = ["::kiln::KilnDialect", "::mlir::func::FuncDialect"];
}

def PipelineUnrollPass : Pass<"kiln-pipeline-unroll", "mlir::ModuleOp"> {
  let summary = "Writes each pipeline stage's whole step as one function, for a device";
  let description = [{
    Works on what kiln-pipeline made (`kiln.pipeline` and the stage
    functions). For each stage s it writes

    - `@stage<s>_step`: the stage's forwards and backwards in its
      schedule's order, then its apply, inlined into one function. A batch
      input (one with rows) holds the micro-batches one after another and
      each action takes its rows with `kiln.slice`; a forward's `saved.N`
      values flow to the same micro-batch's backward as SSA values (so the
      buffer plan holds exactly the micro-batches the schedule keeps in
      flight); accumulators and states are threaded through in order and
      returned in place. The loss and metrics are the micro-batches' mean,
      summed over `pp` by `kiln.all_reduce` (zero on the stages that do
      not compute them), so every rank returns them.
    - `@stage<s>_eval`: one forward (evaluation), its outputs summed over
      `pp` the same way.

    With interleaved stages (`virtual_stages` > 1) s is a rank: its step
    holds the forwards and backwards of all its stages (s, s + pp, ...) in
    its actions' order and its one apply; its eval, its stages' forwards in
    order.

    In each action the receives come first and the sends last, each sorted
    by peer and channel, so the step's transfers fall into runs with no
    other op between them: the CUDA executor posts a run as one NCCL group.
    With interleaved stages each forward and backward of the steady state
    (after the (p-r-1)·2 + (v-1)·p forwards run ahead) are one unit: both
    receives, both bodies, both sends (Megatron-LM's batching; action by
    action a rank's lone send and its neighbour's would wait for each
    other).
    NCCL's sends wait for their receives and carry no tag, so the pass
    checks by simulating every stage's runs and `pp` collectives that the
    step cannot deadlock and that each pair of stages sends and receives
    its messages in one order; if not, it fails naming where the stages
    wait. This is the form a device runs (one program, one CUDA graph per
    rank and step); the CPU's pipeline runs the stage functions action by
    action instead and times each.
  }];
  let dependentDialects = ["::kiln::KilnDialect", "::mlir::func::FuncDialect"];
}

def PropagateShardingPass : Pass<"kiln-propagate-sharding", "mlir::ModuleOp"> {
  let summary = "Spreads the argument shardings to every value through the ops' factor rules";
  let description = [{
    Starts from the `kiln.sharding` of `function`'s arguments (the model's
    annotations: a batch split over `dp`, a column-parallel weight over
    `tp`) on the module's `kiln.mesh` (set from `mesh` when absent, e.g.
    `mesh=dp=2,tp=1`), and visits the ops forward and backward until
    nothing changes. At each op the factor rule (ShardingRuleOpInterface)
    says which dimensions must be split alike; a factor takes the axes
    found on it (results first, then the axes the model annotated on
    argument operands, then operands in order; arguments are never
    changed: the caller's layout is a contract) — a dimension's axes, or
    the longest major part of them no other factor of the op holds, and
    more where a later dimension extends them — and every dimension of
    that factor takes them where they divide it and it is whole or split
    over a major part of them. A
    split reduction factor makes the results partial sums. Writes
    `kiln.shardings` (one per result) on every op with a split or partial
    result, and `kiln.sharding` on results. An op without a rule touching a
    split value is an error naming it. Axes of size 1 split nothing.
    With `zero` = 1 or 2, every optimizer state (`kiln.state` of rank >= 1)
    without an annotation is first split over the data axes (`dp`, or
    `edp` and `ep`; those it is not split over already) along its first
    dimension they divide; 3 does the same for the parameters, whose ZeRO
    split passes only through elementwise ops and the update. (In a
    compiled step stages 1 and 2 coincide: a gradient is reduce-scattered
    into the split optimizer as soon as it is complete, never kept whole.)

    ```mlir
    %y = kiln.matmul %x, %w {kiln.shardings = [#kiln.sharding<[dp, _, _]>]} : ...
    ```
  }];
  let options = [
    Option<"function", "function", "std::string", /*default=*/"\"\"",
           "The function to propagate through (empty: every function)">,
    Option<"mesh", "mesh", "std::string", /*default=*/"\"\"",
           "The mesh when the module has no kiln.mesh: axis=size,... (dp=2,tp=2)">,
    Option<"zero", "zero", "int64_t", /*default=*/"0",
           "ZeRO stage over dp: 1 and 2 split the optimizer states (kiln.state), 3 the "
           "parameters too, each along its first dimension dp divides">,
    Option<"sequenceParallel", "sequence-parallel", "bool", /*default=*/"false",
           "Sequence parallelism: the sequence dimension (1) of every [batch, sequence] "
           "input (kiln.input of rank 2) split over tp, so that what tensor parallelism "
           "leaves whole on every tp rank (norms, residual adds, the loss) is split by "
           "positions">,
    Option<"localAccumulation", "local-accumulation", "bool", /*default=*/"false",
           "Gradient accumulation on data-parallel ranks without ZeRO: @accumulate_step's "
           "accumulators (transient states) hold each rank's partial sums over the data "
           "axes, so a micro-batch sums no gradient over them, and a copy @accumulate_last_step, "
           "run for the last micro-batch, returns them summed (the sums overlap its "
           "backward, as DDP's no_sync)">,
  ];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def BucketCollectivesPass : Pass<"kiln-bucket-collectives", "mlir::ModuleOp"> {
  let summary = "Gathers the gradient sums over dp into buckets that run as one NCCL group";
  let description = [{
    kiln-partition places each reduction right after its operand is made,
    so a step sums its gradients one tensor at a time: GPT-2 124M at dp = 2
    makes 149 `kiln.all_reduce` over dp (148 gradients' and the loss's),
    most of a few KiB, each an NCCL launch of its own. This pass groups the
    sums over `axis`, in program order, into buckets that close once their
    operands reach `bytes`, as PyTorch's DDP does with its 25 MiB buckets
    (Li et al. 2020, "PyTorch Distributed", §3.2.3). A bucket's members are
    moved to follow each other where the bucket closes: after the member
    that fills it, or earlier, with fewer bytes, before the first op that
    reads a member's result, a `kiln.send` or `kiln.recv`, or the return. Each member of a bucket of two or more gets
    `kiln.bucket = N` (the bucket's index in its function).

    Members are the `kiln.all_reduce` over `axis` (alone or in a group of
    axes with it, `"dp,tp"`), and the `kiln.reduce_scatter` over it whose
    dimensions before the split
    one are all 1 (the others regroup their parts through the executor's
    one scratch buffer, which two members of a group would share). The executor posts a bucket's collectives
    between one ncclGroupStart and ncclGroupEnd, which NCCL launches as
    one operation ("Group Calls: Aggregated operations" in NCCL's user
    guide), without copying the gradients into one buffer. Moving a
    reduction later changes no value: every rank of the mesh runs the same
    program, so the collectives still meet in the same order. `bytes = 0`
    leaves the step as it is.

    ```mlir
    %a = kiln.all_reduce %da over "dp" {cause = "...", kiln.bucket = 0 : i64} : tensor<768xf32>
    %b = kiln.all_reduce %db over "dp" {cause = "...", kiln.bucket = 0 : i64} : tensor<768xf32>
    ```
  }];
  let options = [
    Option<"bytes", "bytes", "int64_t", /*default=*/"26214400",
           "A bucket closes once its operands reach this many bytes (0: no buckets)">,
    Option<"axis", "axis", "std::string", /*default=*/"\"dp\"",
           "The mesh axis whose sums are bucketed">,
  ];
  let dependentDialects = ["::kiln::KilnDialect"];
}

def GroupCastsPass : Pass<"kiln-group-casts", "mlir::ModuleOp"> {
  let summary = "Marks runs of casts that run as one multi-tensor launch";
  let description = [{
    A run of at least two `kiln.cast` ops that follow each other, each
    converting a function argument or a value of its body between f32,
    bf16 and f16 with the same pair of types, read by some op and not
    returned (the step's parameters cast to the low type at its top; the
    bias gradients summed in bf16 and widened for the optimizer at its
    end), becomes one group: each member gets `kiln.cast_group = N`, the
    group's index in its function. Codegen converts a group's tensors in
    one launch where its last cast is (kiln-plan-buffers keeps every
    member's operand alive until then), and refuses a group whose members
    are not such a run. Nothing is
    grouped under `kiln.check_numerics`, whose scans name each op by its own
    launch. The last pass of the training pipeline: a pass that moves ops
    after it would break the runs.

    ```mlir
    %0 = kiln.cast %w1 {kiln.cast_group = 0 : i64} : tensor<768x2304xf32> to tensor<768x2304xbf16>
    %1 = kiln.cast %w2 {kiln.cast_group = 0 : i64} : tensor<768x768xf32> to tensor<768x768xbf16>
    ```
  }];
}

def PlanBuffersPass : Pass<"kiln-plan-buffers", "mlir::ModuleOp"> {
  let summary = "Assigns every tensor an offset in one arena per device";
  let description = [{
    Liveness-based placement: parameters, optimizer states and inputs in a
    persistent region shared by all functions, then a fixed workspace, then
    each function's temporaries (functions run one at a time and share that
    region), best-fit into gaps freed by dead values. Results marked
    `kiln.aliases` reuse their argument's buffer (in-place updates) when it
    is safe. An operand of a run the CUDA executor posts as one NCCL group
    (consecutive `kiln.send`/`kiln.recv`, consecutive sums of one
    `kiln.bucket`) lives until the run ends, so nothing the run writes lands
    in it. Writes `kiln.offset` on arguments, `kiln.offsets` on ops and
    `kiln.memory` (bytes by category, the peak, the total) on functions.

    ```mlir
    %0 = kiln.add %a, %b {kiln.offsets = array<i64: 67108864>} : tensor<4xf32>
    ```
  }];
  let options = [
    Option<"alignment", "alignment", "int64_t", /*default=*/"256", "Buffer alignment in bytes">,
    Option<"workspaceBytes", "workspace", "int64_t", /*default=*/"67108864",
           "Bytes reserved for cuBLASLt and kernel partial sums">,
    Option<"recordLive", "record-live", "bool", /*default=*/"false",
           "Also write kiln.live on every op (temporary bytes live while it runs) and "
           "kiln.peak on each function: the op at the peak and every value live there "
           "([defining op index, result number, bytes, index of the last op that keeps it "
           "alive]; index -1: an argument), for kiln inspect">,
  ];
}

//===----------------------------------------------------------------------===//
// Analysis and reporting
//===----------------------------------------------------------------------===//

def ReportCostPass : Pass<"kiln-report-cost", "mlir::ModuleOp"> {
  let summary = "Annotates functions (and optionally ops) with FLOPs and bytes";
  let description = [{
    Sums `CostOpInterface` over every op of each function and attaches
    `kiln.flops` and `kiln.bytes` (i64) to the function; with
    `annotate-ops` each kiln op gets its own pair too. With `print`, a table
    of the totals per function goes to stdout. The IR is otherwise unchanged.

    ```mlir
    func.func @f(...) attributes {kiln.bytes = 1024 : i64, kiln.flops = 4096 : i64}
    ```
  }];
  let options = [
    Option<"annotateOps", "annotate-ops", "bool", /*default=*/"false",
           "Also attach kiln.flops/kiln.bytes to every op">,
    Option<"print", "print", "bool", /*default=*/"false",
           "Print a per-function table of FLOPs and bytes to stdout">,
  ];
}

#endif // KILN_PASSES_TD
