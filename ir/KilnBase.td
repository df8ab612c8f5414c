//===- KilnBase.td - the kiln dialect, its enums and type constraints -----===//

#ifndef KILN_BASE_TD
#define KILN_BASE_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/EnumAttr.td"
include "mlir/IR/CommonTypeConstraints.td"
include "mlir/IR/CommonAttrConstraints.td"

def Kiln_Dialect : Dialect {
  let name = "kiln";
  let cppNamespace = "::kiln";
  let summary = "Tensor ops for compiling transformer training steps";
  let description = [{
    The kiln dialect describes one training step of a transformer as a
    function over statically shaped tensors with value semantics.
    Broadcasting is always explicit (`kiln.broadcast_in_dim`), so every
    op's vector-Jacobian product is local. Neural-network composites
    (`kiln.layer_norm`, `kiln.attention`, ...) are first-class because they
    have better kernels and VJPs than their expansions.

    Function arguments carry their role and model name:

    ```mlir
    func.func @forward(%w: tensor<8x8xf32> {kiln.param = "h.0.mlp.w"},
                       %x: tensor<4x8xf32> {kiln.input = "x"}) -> tensor<4x8xf32>
    ```
  }];
  let hasConstantMaterializer = 1;
  let useDefaultAttributePrinterParser = 1;
  let hasRegionArgAttrVerify = 1;
  let hasRegionResultAttrVerify = 1;
  let dependentDialects = ["::mlir::func::FuncDialect"];
  let extraClassDeclaration = [{
    /// Argument attribute naming a trainable parameter.
    static constexpr ::llvm::StringLiteral kParamAttrName = "kiln.param";
    /// Argument attribute naming a step input (tokens, targets, lr, ...).
    static constexpr ::llvm::StringLiteral kInputAttrName = "kiln.input";
    /// Argument attribute: how the runtime initializes a parameter, one of
    /// "zeros", "ones", "normal(STD)".
    static constexpr ::llvm::StringLiteral kInitAttrName = "kiln.init";
    /// Argument attribute naming an optimizer state ("wte.adam_m").
    static constexpr ::llvm::StringLiteral kStateAttrName = "kiln.state";
    /// Argument attribute on a kiln.state: the state is the named parameter
    /// converted to the state's element type (the low-precision working copy
    /// AdamW writes beside the f32 master). The runtime derives it from the
    /// parameter whenever that is set; checkpoints leave it out.
    static constexpr ::llvm::StringLiteral kCopyOfAttrName = "kiln.copy_of";
    /// Argument attribute (unit) on a kiln.state: the state holds its
    /// kiln.init value at every step boundary (a gradient accumulator, which
    /// @apply_step zeroes). Checkpoints leave it out, and a load neither
    /// asks for it nor takes a given one.
    static constexpr ::llvm::StringLiteral kTransientAttrName = "kiln.transient";
    /// Argument attribute: what a parameter is, for per-role optimizer
    /// settings (weight decay): "weight", "bias", "norm" or "embedding".
    static constexpr ::llvm::StringLiteral kRoleAttrName = "kiln.role";
    /// Result attribute: this result is the new value of argument N, which
    /// it replaces in place (parameters and optimizer states).
    static constexpr ::llvm::StringLiteral kAliasesAttrName = "kiln.aliases";
    /// Result attribute naming a function output ("loss", ...).
    static constexpr ::llvm::StringLiteral kOutputAttrName = "kiln.output";
    /// Result attribute: this result is the gradient of the named parameter.
    static constexpr ::llvm::StringLiteral kGradAttrName = "kiln.grad";
    /// Module attribute (unit): `train.check_numerics`. The interpreter and
    /// the generated code stop at the first op that writes NaN or +inf.
    static constexpr ::llvm::StringLiteral kCheckNumericsAttrName = "kiln.check_numerics";
    /// Module attribute (unit): `train.deterministic`. The generated code
    /// sums in a fixed order (the flash backward's dq, the embedding's
    /// gradient) and takes cuBLASLt's first heuristic algorithm, so two runs
    /// on one GPU model give the same bits.
    static constexpr ::llvm::StringLiteral kDeterministicAttrName = "kiln.deterministic";
    /// Written by kiln-plan-buffers: the arena byte offset of an argument
    /// (`kiln.offset`), of each result of an op (`kiln.offsets`, -1 for
    /// none) and a function's memory summary (`kiln.memory`).
    static constexpr ::llvm::StringLiteral kOffsetAttrName = "kiln.offset";
    static constexpr ::llvm::StringLiteral kOffsetsAttrName = "kiln.offsets";
    static constexpr ::llvm::StringLiteral kMemoryAttrName = "kiln.memory";
    /// Written by kiln-recompute on each function it ran on: what it chose
    /// to recompute and what that costs (a dictionary).
    static constexpr ::llvm::StringLiteral kRecomputeAttrName = "kiln.recompute";
    /// Written by kiln-group-casts on kiln.cast ops of function arguments:
    /// the index of the multi-tensor launch that converts them.
    static constexpr ::llvm::StringLiteral kCastGroupAttrName = "kiln.cast_group";
    /// Written by kiln-bucket-collectives on kiln.all_reduce and
    /// kiln.reduce_scatter ops: the index of the bucket (one NCCL group)
    /// the collective runs in.
    static constexpr ::llvm::StringLiteral kBucketAttrName = "kiln.bucket";
    /// Written by kiln-plan-buffers on ScratchOpInterface ops: the arena
    /// byte offset of the op's scratch.
    static constexpr ::llvm::StringLiteral kScratchOffsetAttrName = "kiln.scratch_offset";
    /// Module attribute: the device mesh (#kiln.mesh) the step is sharded
    /// over; absent for one device.
    static constexpr ::llvm::StringLiteral kMeshAttrName = "kiln.mesh";
    /// Argument and result attribute: the value's #kiln.sharding (global
    /// layout; absent means replicated). kiln-propagate-sharding also writes
    /// `kiln.shardings` on ops, one per result.
    static constexpr ::llvm::StringLiteral kShardingAttrName = "kiln.sharding";
    static constexpr ::llvm::StringLiteral kShardingsAttrName = "kiln.shardings";
    /// Function attribute (unit) written by kiln-partition: the function is
    /// the per-rank program of the module's kiln.mesh.
    static constexpr ::llvm::StringLiteral kPartitionedAttrName = "kiln.partitioned";

  private:
    void registerAttributes();
  public:
  }];
}

//===----------------------------------------------------------------------===//
// Enums
//===----------------------------------------------------------------------===//

def Kiln_CompareDirection : I32EnumAttr<"CompareDirection",
    "comparison direction of kiln.compare", [
      I32EnumAttrCase<"eq", 0>, I32EnumAttrCase<"ne", 1>,
      I32EnumAttrCase<"lt", 2>, I32EnumAttrCase<"le", 3>,
      I32EnumAttrCase<"gt", 4>, I32EnumAttrCase<"ge", 5>]> {
  let cppNamespace = "::kiln";
}

def Kiln_GeluApproximation : I32EnumAttr<"GeluApproximation",
    "approximation used by kiln.gelu", [
      I32EnumAttrCase<"none", 0>,  // x/2 (1 + erf(x/√2))
      I32EnumAttrCase<"tanh", 1>]> { // x/2 (1 + tanh(√(2/π)(x + 0.044715x³)))
  let cppNamespace = "::kiln";
}

//===----------------------------------------------------------------------===//
// Type constraints: statically shaped tensors only (batch and sequence length
// are compile-time constants, as in XLA).
//===----------------------------------------------------------------------===//

def Kiln_FloatElement : AnyTypeOf<[F64, F32, BF16, F16]>;
def Kiln_IndexElement : AnyTypeOf<[I32, I64]>;

def Kiln_FloatTensor : StaticShapeTensorOf<[F64, F32, BF16, F16]>;
def Kiln_IndexTensor : StaticShapeTensorOf<[I32, I64]>;
def Kiln_BoolTensor : StaticShapeTensorOf<[I1]>;
def Kiln_NumericTensor : StaticShapeTensorOf<[F64, F32, BF16, F16, I32, I64]>;
def Kiln_AnyTensor : StaticShapeTensorOf<[F64, F32, BF16, F16, I32, I64, I1]>;

#endif // KILN_BASE_TD
