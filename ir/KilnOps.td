//===- KilnOps.td - the ops of the kiln dialect ---------------------------===//
//
// Groups: elementwise, shape, reductions, linear algebra, composites.
// Every op: a summary, a description with an IR example, a verifier for every
// shape/dtype disagreement (messages name both types), an assembly format a
// person can read, and the cost interface.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_OPS_TD
#define KILN_OPS_TD

include "ir/KilnBase.td"
include "ir/KilnAttrs.td"
include "ir/KilnInterfaces.td"
include "mlir/Interfaces/SideEffectInterfaces.td"

//===----------------------------------------------------------------------===//
// Traits and base classes
//===----------------------------------------------------------------------===//

/// Marks elementwise ops (kiln::OpTrait::Elementwise). Unlike MLIR's
/// Elementwise trait it verifies nothing, so each op's own verifier reports
/// shape mismatches with both types named.
def Kiln_Elementwise : NativeOpTrait<"Elementwise"> {
  let cppNamespace = "::kiln::OpTrait";
}

/// All operands and results have one type; the verifier names both types
/// when they differ (kiln::OpTrait::SameTypes).
def Kiln_SameTypes : NativeOpTrait<"SameTypes"> {
  let cppNamespace = "::kiln::OpTrait";
}

/// Every tensor an op reads or writes has a static shape and at most
/// kMaxTensorBytes (2^48) bytes, so sizes, offsets and costs cannot overflow
/// (kiln::OpTrait::BoundedTensors).
def Kiln_BoundedTensors : NativeOpTrait<"BoundedTensors"> {
  let cppNamespace = "::kiln::OpTrait";
}

class Kiln_Op<string mnemonic, list<Trait> traits = []>
    : Op<Kiln_Dialect, mnemonic,
         !listconcat(traits, [Pure, Kiln_BoundedTensors,
                              DeclareOpInterfaceMethods<Kiln_CostOpInterface>,
                              DeclareOpInterfaceMethods<Kiln_ShardingRuleOpInterface>])>;

/// Ops with a reverse-mode rule (implemented in KilnVJP.cpp).
defvar Kiln_Differentiable = DeclareOpInterfaceMethods<Kiln_DifferentiableOpInterface>;

/// An op whose FLOP count is `flopsPerElement` times the elements of its
/// first result.
class Kiln_PerElementCost<int flopsPerElement> {
  code costDefinition = [{
    int64_t $cppClass::getFlops() {
      return ::kiln::saturatingMul(}] # flopsPerElement # [{, ::kiln::numElements(getOperation()->getResult(0).getType()));
    }
  }];
}

/// A one-operand op whose result has the operand's type. `elementwise` = 0
/// for ops that read a whole row per element (softmax).
class Kiln_UnaryOp<string mnemonic, int flops, Type type = Kiln_FloatTensor,
                   list<Trait> traits = [], bit elementwise = 1>
    : Kiln_Op<mnemonic, !listconcat(traits, !if(elementwise, [Kiln_Elementwise], []),
                                    [Kiln_SameTypes, Kiln_Differentiable])>,
      Kiln_PerElementCost<flops> {
  let arguments = (ins type:$operand);
  let results = (outs type:$result);
  let assemblyFormat =
      "$operand attr-dict `:` custom<SameTypes>(type($operand), type($result))";
  let extraClassDefinition = costDefinition;
}

class Kiln_BinaryOp<string mnemonic, int flops, Type type = Kiln_NumericTensor,
                    list<Trait> traits = []>
    : Kiln_Op<mnemonic, !listconcat(traits, [Kiln_Elementwise, Kiln_SameTypes,
                                              Kiln_Differentiable])>,
      Kiln_PerElementCost<flops> {
  let arguments = (ins type:$lhs, type:$rhs);
  let results = (outs type:$result);
  let assemblyFormat = "$lhs `,` $rhs attr-dict `:` "
                       "custom<SameTypes>(type($lhs), type($rhs), type($result))";
  let extraClassDefinition = costDefinition;
}

//===----------------------------------------------------------------------===//
// Elementwise ops
//===----------------------------------------------------------------------===//

def Kiln_AddOp : Kiln_BinaryOp<"add", 1, Kiln_NumericTensor, [Commutative]> {
  let summary = "elementwise addition";
  let description = [{
    `lhs + rhs` element by element; operands and result have one type
    (broadcasting is explicit, through `kiln.broadcast_in_dim`).

    ```mlir
    %c = kiln.add %a, %b : tensor<4x8xf32>
    ```

    Canonicalization turns a sum of zero-padded tensors whose pieces sit
    side by side along one dimension (the VJP of slicing a tensor apart)
    into one `kiln.concat`.
  }];
  let hasFolder = 1;
  let hasCanonicalizer = 1;
}

def Kiln_SubOp : Kiln_BinaryOp<"sub", 1> {
  let summary = "elementwise subtraction";
  let description = [{
    `lhs - rhs` element by element.

    ```mlir
    %c = kiln.sub %a, %b : tensor<4x8xf32>
    ```
  }];
  let hasFolder = 1;
}

def Kiln_MulOp : Kiln_BinaryOp<"mul", 1, Kiln_NumericTensor, [Commutative]> {
  let summary = "elementwise multiplication";
  let description = [{
    `lhs * rhs` element by element.

    ```mlir
    %c = kiln.mul %a, %b : tensor<4x8xbf16>
    ```
  }];
  let hasFolder = 1;
}

def Kiln_DivOp : Kiln_BinaryOp<"div", 1, Kiln_FloatTensor> {
  let summary = "elementwise division";
  let description = [{
    `lhs / rhs` element by element, IEEE semantics (x/0 is ±inf or nan).

    ```mlir
    %c = kiln.div %a, %b : tensor<4x8xf32>
    ```
  }];
  let hasFolder = 1;
}

def Kiln_MaxOp : Kiln_BinaryOp<"max", 1, Kiln_NumericTensor, [Commutative]> {
  let summary = "elementwise maximum";
  let description = [{
    `max(lhs, rhs)` element by element; nan if either is nan.

    ```mlir
    %c = kiln.max %a, %b : tensor<4x8xf32>
    ```
  }];
}

def Kiln_NegOp : Kiln_UnaryOp<"neg", 1, Kiln_NumericTensor> {
  let summary = "elementwise negation";
  let description = [{
    ```mlir
    %y = kiln.neg %x : tensor<4x8xf32>
    ```
  }];
}

def Kiln_ExpOp : Kiln_UnaryOp<"exp", 1> {
  let summary = "elementwise e^x";
  let description = [{
    ```mlir
    %y = kiln.exp %x : tensor<4x8xf32>
    ```
  }];
}

def Kiln_LogOp : Kiln_UnaryOp<"log", 1> {
  let summary = "elementwise natural logarithm";
  let description = [{
    ```mlir
    %y = kiln.log %x : tensor<4x8xf32>
    ```
  }];
}

def Kiln_SqrtOp : Kiln_UnaryOp<"sqrt", 1> {
  let summary = "elementwise square root";
  let description = [{
    ```mlir
    %y = kiln.sqrt %x : tensor<4x8xf32>
    ```
  }];
}

def Kiln_RsqrtOp : Kiln_UnaryOp<"rsqrt", 1> {
  let summary = "elementwise reciprocal square root";
  let description = [{
    `1 / sqrt(x)` element by element.

    ```mlir
    %y = kiln.rsqrt %x : tensor<4x8xf32>
    ```
  }];
}

def Kiln_TanhOp : Kiln_UnaryOp<"tanh", 1> {
  let summary = "elementwise hyperbolic tangent";
  let description = [{
    ```mlir
    %y = kiln.tanh %x : tensor<4x8xf32>
    ```
  }];
}

def Kiln_SigmoidOp : Kiln_UnaryOp<"sigmoid", 4> {
  let summary = "elementwise logistic sigmoid";
  let description = [{
    `1 / (1 + exp(-x))` element by element.

    ```mlir
    %y = kiln.sigmoid %x : tensor<4x8xf32>
    ```
  }];
}

def Kiln_GeluOp : Kiln_Op<"gelu", [Kiln_Differentiable, Kiln_Elementwise, Kiln_SameTypes]>,
                  Kiln_PerElementCost<9> {
  let summary = "elementwise GELU, exact (erf) or tanh-approximated";
  let description = [{
    `none`: `x/2 · (1 + erf(x/√2))`;
    `tanh`: `x/2 · (1 + tanh(√(2/π) · (x + 0.044715·x³)))`, as in GPT-2.

    ```mlir
    %y = kiln.gelu tanh %x : tensor<4x8xf32>
    ```
  }];
  let arguments = (ins Kiln_GeluApproximation:$approximate, Kiln_FloatTensor:$operand);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$approximate $operand attr-dict `:` "
                       "custom<SameTypes>(type($operand), type($result))";
  let extraClassDefinition = costDefinition;
}

def Kiln_SiluOp : Kiln_UnaryOp<"silu", 5> {
  let summary = "elementwise SiLU (swish)";
  let description = [{
    `x · sigmoid(x)` element by element.

    ```mlir
    %y = kiln.silu %x : tensor<4x8xf32>
    ```
  }];
}

def Kiln_ReluOp : Kiln_UnaryOp<"relu", 1> {
  let summary = "elementwise rectified linear unit";
  let description = [{
    `max(x, 0)` element by element.

    ```mlir
    %y = kiln.relu %x : tensor<4x8xf32>
    ```
  }];
}

def Kiln_CastOp : Kiln_Op<"cast", [Kiln_Differentiable, Kiln_Elementwise]>, Kiln_PerElementCost<0> {
  let summary = "elementwise conversion of the element type";
  let description = [{
    Converts each element to the result's element type; the shape is kept.
    Float to float rounds to nearest even; float to integer truncates toward
    zero; integer or i1 to float is exact where representable.

    ```mlir
    %y = kiln.cast %x : tensor<4x8xf32> to tensor<4x8xbf16>
    ```
  }];
  let arguments = (ins Kiln_AnyTensor:$operand);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat = "$operand attr-dict `:` type($operand) `to` type($result)";
  let hasVerifier = 1;
  let hasFolder = 1;
  let extraClassDefinition = costDefinition;
}

def Kiln_CompareOp : Kiln_Op<"compare", [Kiln_Elementwise]>, Kiln_PerElementCost<1> {
  let summary = "elementwise comparison producing i1";
  let description = [{
    Compares `lhs` and `rhs` element by element with the given direction
    (`eq ne lt le gt ge`); the result has the operands' shape and element
    type i1. Comparisons with nan are false except `ne`.

    ```mlir
    %mask = kiln.compare ge, %row, %col : tensor<8x8xi32>
    ```
  }];
  let arguments = (ins Kiln_CompareDirection:$direction,
                       Kiln_NumericTensor:$lhs, Kiln_NumericTensor:$rhs);
  let results = (outs Kiln_BoolTensor:$result);
  let assemblyFormat = "$direction `,` $lhs `,` $rhs attr-dict `:` "
                       "custom<CompareTypes>(type($lhs), type($rhs), type($result))";
  let hasVerifier = 1;
  let extraClassDefinition = costDefinition;
}

def Kiln_SelectOp : Kiln_Op<"select", [Kiln_Differentiable, Kiln_Elementwise]>, Kiln_PerElementCost<1> {
  let summary = "elementwise choice between two tensors";
  let description = [{
    `cond ? on_true : on_false` element by element; `cond` has the shape of
    the result and element type i1.

    ```mlir
    %y = kiln.select %mask, %scores, %neg_inf : tensor<8x8xi1>, tensor<8x8xf32>
    ```

    Canonicalization drops the VJP of a masked softmax's select,
    `select(m, softmax_grad(y, dy), 0)` where `y = softmax(select(m, x, -inf))`:
    y is exactly 0 wherever m is false, and so is softmax_grad there.
  }];
  let arguments = (ins Kiln_BoolTensor:$cond, Kiln_AnyTensor:$on_true,
                       Kiln_AnyTensor:$on_false);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat = "$cond `,` $on_true `,` $on_false attr-dict `:` type($cond) `,` "
                       "custom<SameTypes>(type($on_true), type($on_false), type($result))";
  let hasVerifier = 1;
  let hasCanonicalizer = 1;
  let extraClassDefinition = costDefinition;
}

//===----------------------------------------------------------------------===//
// Shape ops
//===----------------------------------------------------------------------===//

def Kiln_ReshapeOp : Kiln_Op<"reshape", [Kiln_Differentiable]> {
  let summary = "reinterprets a tensor with a new shape of the same size";
  let description = [{
    Row-major reinterpretation: the element count and element type are kept.
    It moves no data (its cost is zero bytes).

    ```mlir
    %y = kiln.reshape %x : tensor<2x3x4xf32> -> tensor<6x4xf32>
    ```
  }];
  let arguments = (ins Kiln_AnyTensor:$operand);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat = "$operand attr-dict `:` type($operand) `->` type($result)";
  let hasVerifier = 1;
  let hasFolder = 1;
  let hasCanonicalizer = 1;
  let extraClassDeclaration = [{
    int64_t getBytesAccessed();
  }];
}

def Kiln_TransposeOp : Kiln_Op<"transpose", [Kiln_Differentiable]> {
  let summary = "permutes the dimensions of a tensor";
  let description = [{
    Result dimension `i` is operand dimension `permutation[i]`.

    ```mlir
    %y = kiln.transpose %x, [0, 2, 1, 3] : tensor<2x8x4x16xf32> -> tensor<2x4x8x16xf32>
    ```
  }];
  let arguments = (ins Kiln_AnyTensor:$operand, DenseI64ArrayAttr:$permutation);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat =
      "$operand `,` $permutation attr-dict `:` type($operand) `->` type($result)";
  let hasVerifier = 1;
  let hasFolder = 1;
  let hasCanonicalizer = 1;
}

def Kiln_SliceOp : Kiln_Op<"slice", [Kiln_Differentiable]> {
  let summary = "extracts a strided box of a tensor";
  let description = [{
    Per dimension, elements `start, start+stride, …` below `limit`
    (StableHLO's slice). The stride is printed only when it is not 1.

    ```mlir
    %q = kiln.slice %qkv [0:4, 0:8, 0:64] : tensor<4x8x192xf32> -> tensor<4x8x64xf32>
    %e = kiln.slice %x [0:8:2] : tensor<8xf32> -> tensor<4xf32>
    ```
  }];
  let arguments = (ins Kiln_AnyTensor:$operand, DenseI64ArrayAttr:$start_indices,
                       DenseI64ArrayAttr:$limit_indices, DenseI64ArrayAttr:$strides);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat = "$operand custom<SliceRanges>($start_indices, $limit_indices, $strides) "
                       "attr-dict `:` type($operand) `->` type($result)";
  let hasVerifier = 1;
  let hasFolder = 1;
}

def Kiln_PadOp : Kiln_Op<"pad", [Kiln_Differentiable]> {
  let summary = "surrounds and interleaves a tensor with zeros";
  let description = [{
    Per dimension: `low` zeros before, `high` zeros after and `interior`
    zeros between neighbouring elements (StableHLO's pad with a zero value
    and no negative padding). It is the VJP of `kiln.slice`.

    ```mlir
    %p = kiln.pad %x low = [0, 2] high = [0, 1] interior = [0, 0] : tensor<4x8xf32> -> tensor<4x11xf32>
    ```
  }];
  let arguments = (ins Kiln_AnyTensor:$operand, DenseI64ArrayAttr:$low,
                       DenseI64ArrayAttr:$high, DenseI64ArrayAttr:$interior);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat = "$operand `low` `=` $low `high` `=` $high `interior` `=` $interior "
                       "attr-dict `:` type($operand) `->` type($result)";
  let hasVerifier = 1;
  let hasFolder = 1;
}

def Kiln_ConcatOp : Kiln_Op<"concat", [Kiln_Differentiable]> {
  let summary = "joins tensors along one dimension";
  let description = [{
    All inputs agree on every dimension but `dim`; the result's `dim` is the
    sum of theirs.

    ```mlir
    %y = kiln.concat %a, %b dim = 1 : tensor<2x3xf32>, tensor<2x5xf32> -> tensor<2x8xf32>
    ```
  }];
  let arguments = (ins Variadic<Kiln_AnyTensor>:$inputs, I64Attr:$dim);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat =
      "$inputs `dim` `=` $dim attr-dict `:` type($inputs) `->` type($result)";
  let hasVerifier = 1;
  let hasFolder = 1;
}

def Kiln_BroadcastInDimOp : Kiln_Op<"broadcast_in_dim", [Kiln_Differentiable]> {
  let summary = "broadcasts a tensor into a larger shape (explicit broadcasting)";
  let description = [{
    Operand dimension `i` maps to result dimension `dims[i]` (strictly
    increasing); it must have size 1 (it is repeated) or the result's size.
    Result dimensions not named in `dims` are new and repeat the operand.

    ```mlir
    %b2 = kiln.broadcast_in_dim %bias, dims = [2] : tensor<64xf32> -> tensor<4x8x64xf32>
    ```
  }];
  let arguments = (ins Kiln_AnyTensor:$operand, DenseI64ArrayAttr:$dims);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat = "$operand `,` `dims` `=` $dims attr-dict `:` type($operand) `->` type($result)";
  let hasVerifier = 1;
  let hasFolder = 1;
}

def Kiln_IotaOp : Kiln_Op<"iota"> {
  let summary = "a tensor counting 0, 1, 2, … along one dimension";
  let description = [{
    Element `[i0, …, in]` is `i_dim`. Used, with `kiln.compare`, to build
    causal masks.

    ```mlir
    %row = kiln.iota dim = 0 : tensor<8x8xi32>
    ```
  }];
  let arguments = (ins I64Attr:$dim);
  let results = (outs Kiln_NumericTensor:$result);
  let assemblyFormat = "`dim` `=` $dim attr-dict `:` type($result)";
  let hasVerifier = 1;
}

def Kiln_ConstantOp : Kiln_Op<"constant", [ConstantLike, AllTypesMatch<["value", "result"]>]> {
  let summary = "a constant tensor";
  let description = [{
    ```mlir
    %zero = kiln.constant dense<0.0> : tensor<4x8xf32>
    ```
  }];
  let arguments = (ins ElementsAttr:$value);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat = "attr-dict $value";
  let hasFolder = 1;
}

//===----------------------------------------------------------------------===//
// Reductions
//===----------------------------------------------------------------------===//

class Kiln_ReduceOp<string mnemonic, int extraFlops> : Kiln_Op<mnemonic, [Kiln_Differentiable]> {
  let arguments = (ins Kiln_NumericTensor:$operand, DenseI64ArrayAttr:$dims);
  let results = (outs Kiln_NumericTensor:$result);
  let assemblyFormat = "$operand `,` `dims` `=` $dims attr-dict `:` type($operand) `->` type($result)";
  let hasVerifier = 1;
  let extraClassDefinition = [{
    int64_t $cppClass::getFlops() {
      return ::kiln::numElements(getOperand().getType()) + }] # extraFlops #
      [{ * ::kiln::numElements(getType());
    }
  }];
}

def Kiln_ReduceSumOp : Kiln_ReduceOp<"reduce_sum", 0> {
  let summary = "sum over the listed dimensions";
  let description = [{
    The reduced dimensions are removed from the result's shape; `dims` is
    strictly increasing. A reduction over every dimension gives a rank-0
    tensor.

    ```mlir
    %s = kiln.reduce_sum %x, dims = [0, 1] : tensor<4x8x64xf32> -> tensor<64xf32>
    ```
  }];
}

def Kiln_ReduceMaxOp : Kiln_ReduceOp<"reduce_max", 0> {
  let summary = "maximum over the listed dimensions";
  let description = [{
    ```mlir
    %m = kiln.reduce_max %x, dims = [1] : tensor<4x8xf32> -> tensor<4xf32>
    ```
  }];
}

def Kiln_ReduceMeanOp : Kiln_ReduceOp<"reduce_mean", 1> {
  let summary = "arithmetic mean over the listed dimensions";
  let description = [{
    ```mlir
    %loss = kiln.reduce_mean %l, dims = [0, 1] : tensor<4x8xf32> -> tensor<f32>
    ```
  }];
}

//===----------------------------------------------------------------------===//
// Linear algebra
//===----------------------------------------------------------------------===//

def Kiln_MatmulOp : Kiln_Op<"matmul", [Kiln_Differentiable]> {
  let summary = "batched matrix product (cuBLASLt on the GPU)";
  let description = [{
    `lhs` is `[batch…, M, K]` (`[batch…, K, M]` with `transpose_a`), `rhs` is
    `[batch…, K, N]` (`[batch…, N, K]` with `transpose_b`), the result
    `[batch…, M, N]`. Batch dimensions agree, or one operand is a plain
    matrix shared by every batch element (a linear layer's weight).
    Operands share an element type; a bf16/f16 product may produce f32
    (accumulation is always at least f32). An optional `bias` `[N]` (of the
    result's element type) is added to every row — cuBLASLt's bias
    epilogue; `kiln-fuse-matmul-bias` forms it from a matmul followed by the
    add of a broadcast vector.

    ```mlir
    %y = kiln.matmul %x, %w : tensor<4x8x64xf32>, tensor<64x256xf32> -> tensor<4x8x256xf32>
    %s = kiln.matmul %q, %k transpose_b : tensor<4x2x8x32xbf16>, tensor<4x2x8x32xbf16> -> tensor<4x2x8x8xf32>
    %z = kiln.matmul %x, %w bias %b : tensor<4x8x64xf32>, tensor<64x256xf32>, tensor<256xf32> -> tensor<4x8x256xf32>
    ```
  }];
  let arguments = (ins Kiln_NumericTensor:$lhs, Kiln_NumericTensor:$rhs,
                       Optional<Kiln_FloatTensor>:$bias,
                       UnitAttr:$transpose_a, UnitAttr:$transpose_b);
  let results = (outs Kiln_NumericTensor:$result);
  let assemblyFormat = "$lhs `,` $rhs (`bias` $bias^)? (`transpose_a` $transpose_a^)? "
                       "(`transpose_b` $transpose_b^)? attr-dict `:` type($lhs) `,` type($rhs) "
                       "(`,` type($bias)^)? `->` type($result)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Neural-network composites
//===----------------------------------------------------------------------===//

def Kiln_EmbeddingOp : Kiln_Op<"embedding", [Kiln_Differentiable]> {
  let summary = "gathers rows of a table by integer ids";
  let description = [{
    `result[i…, :] = table[ids[i…], :]`. Ids outside `[0, V)` are an error
    at run time. A table of rank 2 + b is b batch dimensions of tables
    `[g…, V, C]`, each gathered by the ids that share its leading indices:
    `result[g…, i…, :] = table[g…, ids[g…, i…], :]` (a mixture of experts
    gathers each group's tokens from that group's rows).

    ```mlir
    %x = kiln.embedding %wte, %tokens : tensor<50304x768xf32>, tensor<4x64xi32> -> tensor<4x64x768xf32>
    %xe = kiln.embedding %rows, %slots : tensor<2x33x8xf32>, tensor<2x40xi32> -> tensor<2x40x8xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$table, Kiln_IndexTensor:$ids);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$table `,` $ids attr-dict `:` type($table) `,` type($ids) `->` type($result)";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getBytesAccessed();
  }];
}

def Kiln_SoftmaxOp : Kiln_UnaryOp<"softmax", 5, Kiln_FloatTensor, [], /*elementwise=*/0> {
  let summary = "softmax over the last dimension";
  let description = [{
    `exp(x - max(x)) / sum(exp(x - max(x)))` along the last dimension,
    computed in a numerically stable way.

    ```mlir
    %p = kiln.softmax %scores : tensor<4x2x8x8xf32>
    ```
  }];
}

def Kiln_LogSoftmaxOp : Kiln_UnaryOp<"log_softmax", 5, Kiln_FloatTensor, [], /*elementwise=*/0> {
  let summary = "log-softmax over the last dimension";
  let description = [{
    `x - max(x) - log(sum(exp(x - max(x))))` along the last dimension.

    ```mlir
    %lp = kiln.log_softmax %logits : tensor<4x8x256xf32>
    ```
  }];
}

def Kiln_LayerNormOp : Kiln_Op<"layer_norm", [Kiln_Differentiable]>, Kiln_PerElementCost<8> {
  let summary = "layer normalization over the last dimension";
  let description = [{
    `y = (x - mean) · rstd · weight + bias` with `mean` and
    `rstd = 1/sqrt(var + epsilon)` taken over the last dimension (biased
    variance). `mean` and `rstd` are results too, in f32 (f64 for f64
    inputs), so the backward can use them without recomputing. `y` has
    x's type, or for an f32 x a bf16/f16 one: the f32 result rounded, as a
    cast after the norm would (kiln-fuse folds such casts in).

    ```mlir
    %y, %mean, %rstd = kiln.layer_norm %x, %w, %b {epsilon = 1.0e-05 : f32}
        : tensor<4x8x64xf32>, tensor<64xf32>, tensor<64xf32>
        -> tensor<4x8x64xf32>, tensor<4x8xf32>, tensor<4x8xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$x, Kiln_FloatTensor:$weight,
                       Kiln_FloatTensor:$bias, F32Attr:$epsilon);
  let results = (outs Kiln_FloatTensor:$y, Kiln_FloatTensor:$mean,
                      Kiln_FloatTensor:$rstd);
  let assemblyFormat = "$x `,` $weight `,` $bias attr-dict `:` type($x) `,` type($weight) `,` "
                       "type($bias) `->` type($y) `,` type($mean) `,` type($rstd)";
  let hasVerifier = 1;
  let extraClassDefinition = costDefinition;
}

def Kiln_RmsNormOp : Kiln_Op<"rms_norm", [Kiln_Differentiable]>, Kiln_PerElementCost<5> {
  let summary = "RMS normalization over the last dimension";
  let description = [{
    `y = x · rstd · weight` with `rstd = 1/sqrt(mean(x²) + epsilon)` over the
    last dimension; `rstd` is a result too (f32, or f64 for f64 inputs).
    `y` has x's type, or for an f32 x a bf16/f16 one (the f32 result
    rounded, as a cast after the norm would).

    ```mlir
    %y, %rstd = kiln.rms_norm %x, %w {epsilon = 1.0e-06 : f32}
        : tensor<4x8x64xf32>, tensor<64xf32> -> tensor<4x8x64xf32>, tensor<4x8xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$x, Kiln_FloatTensor:$weight, F32Attr:$epsilon);
  let results = (outs Kiln_FloatTensor:$y, Kiln_FloatTensor:$rstd);
  let assemblyFormat = "$x `,` $weight attr-dict `:` type($x) `,` type($weight) `->` "
                       "type($y) `,` type($rstd)";
  let hasVerifier = 1;
  let extraClassDefinition = costDefinition;
}

def Kiln_RopeOp : Kiln_Op<"rope", [Kiln_SameTypes, Kiln_Differentiable]>, Kiln_PerElementCost<3> {
  let summary = "rotary position embedding (rotate-half convention)";
  let description = [{
    For `x` of shape `[…, T, D]` (D even), position `t` (the index along
    dimension rank-2, or along `position_dim` when given: `[B, T, H, D]`
    with `position_dim = 1`, heads not yet split off the sequence) and
    `i < D/2` with angle `t · theta^(-2i/D)`:
    `y[i] = x[i]·cos − x[i+D/2]·sin`, `y[i+D/2] = x[i+D/2]·cos + x[i]·sin`.
    With `inverse` the rotation is by the negative angle: the op is
    orthogonal, so this is also its VJP.

    ```mlir
    %qr = kiln.rope %q {theta = 1.0e+04 : f32} : tensor<4x2x8x32xf32>
    %qs = kiln.rope %q2 {position_dim = 1 : i64, theta = 1.0e+04 : f32} : tensor<4x8x2x32xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$operand, DefaultValuedAttr<F32Attr, "10000.0f">:$theta,
                       UnitAttr:$inverse, OptionalAttr<I64Attr>:$position_dim);
  let extraClassDeclaration = [{
    /// The dimension the positions count along (rank − 2 by default).
    int64_t positionDim() {
      if (auto d = getPositionDim())
        return static_cast<int64_t>(*d);
      return mlir::cast<mlir::RankedTensorType>(getOperand().getType()).getRank() - 2;
    }
  }];
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$operand attr-dict `:` custom<SameTypes>(type($operand), type($result))";
  let hasVerifier = 1;
  let extraClassDefinition = costDefinition;
}

def Kiln_MoeRouteOp : Kiln_Op<"moe_route"> {
  let summary = "a mixture-of-experts router's top-k choice and capacity slots";
  let description = [{
    For router scores `probs` `[N, E]` (N tokens, E experts) each token
    chooses its `top_k` experts by score, highest first (equal scores: the
    lower expert index first; a NaN score ranks below every number).
    Expert `e` has `capacity` slots, `e·capacity … (e+1)·capacity − 1`,
    filled in GShard's order (Lepikhin et al. 2020, Algorithm 2): every
    token's first choice, in token order, before any token's second
    choice, and so on. A choice that finds its expert full is dropped.

    - `expert [N, top_k]`: the chosen experts.
    - `slot [N, top_k]`: the slot each choice got, or `E·capacity` when it
      was dropped (one past the last slot: a gather of a slot-indexed table
      padded with one zero row reads zeros for it).
    - `token [E·capacity]`: the token in each slot, or `N` for an empty
      slot (likewise one past the last token).

    The results are integers: no gradient flows through the choice (the
    gates that weight the experts' outputs are read from `probs` by the
    model, and carry it).

    Scores `[g…, N, E]` with leading group dimensions route each group on
    its own, with its own `capacity` slots per expert (GShard's groups:
    ranks holding different groups fill their slots alike); the results
    then start with `g…`, and slots and tokens count within the group.

    ```mlir
    %expert, %slot, %token = kiln.moe_route %probs {top_k = 2 : i64, capacity = 10 : i64}
        : tensor<32x4xf32> -> tensor<32x2xi32>, tensor<32x2xi32>, tensor<40xi32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$probs, I64Attr:$top_k, I64Attr:$capacity);
  let results = (outs Kiln_IndexTensor:$expert, Kiln_IndexTensor:$slot, Kiln_IndexTensor:$token);
  let assemblyFormat = "$probs attr-dict `:` type($probs) `->` type($expert) `,` type($slot) `,` type($token)";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    int64_t getBytesAccessed();
    /// Tokens and experts of one group; the number of groups.
    int64_t numTokens() { return probsShape().drop_back().back(); }
    int64_t numExperts() { return probsShape().back(); }
    int64_t numGroups() {
      int64_t g = 1;
      for (int64_t d : probsShape().drop_back(2))
        g *= d;
      return g;
    }
    ::llvm::ArrayRef<int64_t> probsShape() {
      return mlir::cast<mlir::RankedTensorType>(getProbs().getType()).getShape();
    }
  }];
}

def Kiln_CrossEntropyOp : Kiln_Op<"cross_entropy", [Kiln_Differentiable]> {
  let summary = "softmax cross-entropy per position, with its log-sum-exp";
  let description = [{
    For logits `[…, V]` and integer targets `[…]`:
    `loss = lse − logits[target]` with `lse = log Σ_c exp(logits[c])`.
    Only the first `valid_classes` classes (default: all V) take part, so a
    vocabulary padded for alignment does not change the loss. A negative
    target marks an ignored position: its loss is 0. `lse` is a result so the
    backward never materializes the probabilities twice. Both results are f32
    (f64 for f64 logits).

    ```mlir
    %loss, %lse = kiln.cross_entropy %logits, %targets {valid_classes = 50257 : i64}
        : tensor<4x64x50304xf32>, tensor<4x64xi32> -> tensor<4x64xf32>, tensor<4x64xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$logits, Kiln_IndexTensor:$targets,
                       OptionalAttr<I64Attr>:$valid_classes);
  let results = (outs Kiln_FloatTensor:$loss, Kiln_FloatTensor:$lse);
  let assemblyFormat = "$logits `,` $targets attr-dict `:` type($logits) `,` type($targets) "
                       "`->` type($loss) `,` type($lse)";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// Number of classes that take part in the softmax.
    int64_t getNumValidClasses();
  }];
}

def Kiln_AttentionOp : Kiln_Op<"attention", [Kiln_Differentiable]> {
  let summary = "scaled dot-product attention (flash-attention kernel on the GPU)";
  let description = [{
    For `q [B, H, Tq, D]`, `k [B, Hkv, Tk, D]`, `v [B, Hkv, Tk, Dv]`
    (`H` a multiple of `Hkv`: grouped-query attention):
    `out = softmax(q·kᵀ·scale + mask)·v` per head, where `mask` hides keys
    after the query's position when `causal` (then `Tq = Tk`). With
    `segments` — integer ids `[B, T]` (`Tq = Tk = T`), e.g. the document
    each position of a packed row belongs to — a query also sees only the
    keys of its own segment: with `causal`, block-diagonal causal attention.
    Ids are compared, not assumed sorted; every query sees at least itself.
    With `layout = "bthd"` q, k, v and out are sequence-major instead —
    `[B, Tq, H, D]`, `[B, Tk, Hkv, D]`, `[B, Tk, Hkv, Dv]`, `[B, Tq, H, Dv]`,
    as a projection's output reshaped to heads already is, so no transpose
    is stored (FlashAttention's own layout); `lse` stays `[B, H, Tq]`.
    `"bhtd"`, the default, is the head-major layout above.
    `lse [B, H, Tq]`
    (f32; f64 for f64 inputs) is the log-sum-exp of each row of scores, saved
    so the backward can recompute the probabilities block by block without
    storing the T×T matrix.

    ```mlir
    %o, %lse = kiln.attention %q, %k, %v {causal, scale = 0.125 : f32}
        : tensor<4x12x64x64xbf16>, tensor<4x12x64x64xbf16>, tensor<4x12x64x64xbf16>
        -> tensor<4x12x64x64xbf16>, tensor<4x12x64xf32>
    %o2, %lse2 = kiln.attention %q, %k, %v segments %docs {causal, scale = 0.125 : f32}
        : tensor<4x12x64x64xbf16>, tensor<4x12x64x64xbf16>, tensor<4x12x64x64xbf16>,
          tensor<4x64xi32> -> tensor<4x12x64x64xbf16>, tensor<4x12x64xf32>
    %o3, %lse3 = kiln.attention %q3, %k3, %v3 {causal, layout = "bthd", scale = 0.125 : f32}
        : tensor<4x64x12x64xbf16>, tensor<4x64x12x64xbf16>, tensor<4x64x12x64xbf16>
        -> tensor<4x64x12x64xbf16>, tensor<4x12x64xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$q, Kiln_FloatTensor:$k, Kiln_FloatTensor:$v,
                       Optional<Kiln_IndexTensor>:$segments, F32Attr:$scale, UnitAttr:$causal,
                       OptionalAttr<StrAttr>:$layout);
  let extraClassDeclaration = [{
    /// q, k, v and out are [B, T, H, D] (layout = "bthd").
    bool isSequenceMajor() { return getLayout() && *getLayout() == "bthd"; }
  }];
  let results = (outs Kiln_FloatTensor:$out, Kiln_FloatTensor:$lse);
  let assemblyFormat = "$q `,` $k `,` $v (`segments` $segments^)? attr-dict `:` type($q) `,` "
                       "type($k) `,` type($v) (`,` type($segments)^)? `->` type($out) `,` "
                       "type($lse)";
  let hasVerifier = 1;
}

def Kiln_AttentionQkvOp : Kiln_Op<"attention_qkv", [Kiln_Differentiable]> {
  let summary = "attention reading q, k and v from one packed projection";
  let description = [{
    `qkv [B, T, H, 3, D]` holds, for each position and head, that head's
    query, key and value rows one after another — what a fused q/k/v
    projection writes when its columns are ordered (head, q|k|v, D), as
    GPT-2's `attn.qkv` is. The op is `kiln.attention {layout = "bthd"}` on
    `qkv[:, :, :, 0]`, `qkv[:, :, :, 1]` and `qkv[:, :, :, 2]`: `out` is
    `[B, T, H, D]`, `lse` `[B, H, T]`. The kernels read the three rows in
    place, so the slices are never stored; the VJP
    (`kiln.attention_qkv_grad`) writes the gradient of `qkv` as one tensor.
    kiln-fuse-attention builds it from slices of one packed value.

    ```mlir
    %o, %lse = kiln.attention_qkv %qkv {causal, scale = 0.125 : f32}
        : tensor<4x64x12x3x64xbf16> -> tensor<4x64x12x64xbf16>, tensor<4x12x64xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$qkv, Optional<Kiln_IndexTensor>:$segments,
                       F32Attr:$scale, UnitAttr:$causal);
  let results = (outs Kiln_FloatTensor:$out, Kiln_FloatTensor:$lse);
  let assemblyFormat = "$qkv (`segments` $segments^)? attr-dict `:` type($qkv) "
                       "(`,` type($segments)^)? `->` type($out) `,` type($lse)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Backward ops of the composites (built by their VJPs; not differentiable)
//===----------------------------------------------------------------------===//

def Kiln_GeluGradOp : Kiln_Op<"gelu_grad", [Kiln_Elementwise, Kiln_SameTypes]>,
                      Kiln_PerElementCost<14> {
  let summary = "GELU backward: dx = dy · gelu'(x)";
  let description = [{
    The derivative of `kiln.gelu` with the same approximation, applied to
    the cotangent `dy`. The exact form needs erf, which the dialect has no
    op for, so the backward is one op.

    ```mlir
    %dx = kiln.gelu_grad tanh %x, %dy : tensor<4x8xf32>
    ```
  }];
  let arguments = (ins Kiln_GeluApproximation:$approximate, Kiln_FloatTensor:$x,
                       Kiln_FloatTensor:$dy);
  let results = (outs Kiln_FloatTensor:$dx);
  let assemblyFormat = "$approximate $x `,` $dy attr-dict `:` "
                       "custom<SameTypes>(type($x), type($dy), type($dx))";
  let extraClassDefinition = costDefinition;
}

def Kiln_SoftmaxGradOp : Kiln_Op<"softmax_grad", [Kiln_SameTypes]>, Kiln_PerElementCost<4> {
  let summary = "softmax backward from its output: dx = y · (dy − Σ dy·y)";
  let description = [{
    `y` is the softmax output; the sum runs over the last dimension.

    ```mlir
    %dx = kiln.softmax_grad %y, %dy : tensor<4x2x8x8xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$y, Kiln_FloatTensor:$dy);
  let results = (outs Kiln_FloatTensor:$dx);
  let assemblyFormat = "$y `,` $dy attr-dict `:` custom<SameTypes>(type($y), type($dy), type($dx))";
  let extraClassDefinition = costDefinition;
}

def Kiln_LayerNormGradOp : Kiln_Op<"layer_norm_grad">, Kiln_PerElementCost<12> {
  let summary = "layer_norm backward from the saved mean and rstd";
  let description = [{
    With `x̂ = (x − mean)·rstd` over the last dimension C:
    `db = Σ_rows dy`, `dw = Σ_rows dy·x̂`,
    `dx = rstd · (g − mean_C(g) − x̂ · mean_C(g·x̂))` where `g = dy·w`.
    `dy` has `x`'s type, or for an f32 `x` its shape in bf16/f16 (widened
    exactly as it is read: kiln-fuse's folded cast of a narrow cotangent).

    ```mlir
    %dx, %dw, %db = kiln.layer_norm_grad %x, %w, %mean, %rstd, %dy
        : tensor<4x8x64xf32>, tensor<64xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8x64xf32>
        -> tensor<4x8x64xf32>, tensor<64xf32>, tensor<64xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$x, Kiln_FloatTensor:$weight, Kiln_FloatTensor:$mean,
                       Kiln_FloatTensor:$rstd, Kiln_FloatTensor:$dy);
  let results = (outs Kiln_FloatTensor:$dx, Kiln_FloatTensor:$dweight, Kiln_FloatTensor:$dbias);
  let assemblyFormat = "$x `,` $weight `,` $mean `,` $rstd `,` $dy attr-dict `:` type($x) `,` "
                       "type($weight) `,` type($mean) `,` type($rstd) `,` type($dy) `->` "
                       "type($dx) `,` type($dweight) `,` type($dbias)";
  let hasVerifier = 1;
  let extraClassDefinition = costDefinition;
}

def Kiln_RmsNormGradOp : Kiln_Op<"rms_norm_grad">, Kiln_PerElementCost<9> {
  let summary = "rms_norm backward from the saved rstd";
  let description = [{
    With `x̂ = x·rstd` and `g = dy·w` over the last dimension C:
    `dw = Σ_rows dy·x̂`, `dx = rstd · (g − x̂ · mean_C(g·x̂))`. `dy` as
    for `kiln.layer_norm_grad`.

    ```mlir
    %dx, %dw = kiln.rms_norm_grad %x, %w, %rstd, %dy
        : tensor<4x8x64xf32>, tensor<64xf32>, tensor<4x8xf32>, tensor<4x8x64xf32>
        -> tensor<4x8x64xf32>, tensor<64xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$x, Kiln_FloatTensor:$weight,
                       Kiln_FloatTensor:$rstd, Kiln_FloatTensor:$dy);
  let results = (outs Kiln_FloatTensor:$dx, Kiln_FloatTensor:$dweight);
  let assemblyFormat = "$x `,` $weight `,` $rstd `,` $dy attr-dict `:` type($x) `,` "
                       "type($weight) `,` type($rstd) `,` type($dy) `->` type($dx) `,` type($dweight)";
  let hasVerifier = 1;
  let extraClassDefinition = costDefinition;
}

def Kiln_CrossEntropyGradOp : Kiln_Op<"cross_entropy_grad">, Kiln_PerElementCost<4> {
  let summary = "cross_entropy backward: dlogits = dloss · (softmax − onehot)";
  let description = [{
    The probabilities are recomputed from `logits` and the saved `lse`
    (`p = exp(logits − lse)`), never stored. Classes at or past
    `valid_classes` and ignored positions (negative targets) get 0.

    ```mlir
    %dlogits = kiln.cross_entropy_grad %logits, %targets, %lse, %dloss
        : tensor<4x64x256xf32>, tensor<4x64xi32>, tensor<4x64xf32>, tensor<4x64xf32> -> tensor<4x64x256xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$logits, Kiln_IndexTensor:$targets,
                       Kiln_FloatTensor:$lse, Kiln_FloatTensor:$dloss,
                       OptionalAttr<I64Attr>:$valid_classes);
  let results = (outs Kiln_FloatTensor:$dlogits);
  let assemblyFormat = "$logits `,` $targets `,` $lse `,` $dloss attr-dict `:` type($logits) `,` "
                       "type($targets) `,` type($lse) `,` type($dloss) `->` type($dlogits)";
  let hasVerifier = 1;
  let extraClassDefinition = costDefinition;
}

def Kiln_EmbeddingGradOp : Kiln_Op<"embedding_grad"> {
  let summary = "embedding backward: scatter-add of the cotangent rows into the table";
  let description = [{
    `dtable[v, :] = Σ_{i : ids[i] = v} dy[i, :]`; rows no id selects are 0.
    With batch dimensions (a result `[g…, V, C]`, as kiln.embedding's
    table), each batch's ids add into that batch's table. With `init` (of
    the result's type, or of its shape in bf16/f16 for an f32 result,
    widened) the result is `init + dtable`: the table of a tied embedding
    plus its other gradient, the output head's (kiln-fuse forms it from
    the add; on the GPU the rows add into a copy of init, or into init's
    own buffer when it has the result's type and dies there).

    ```mlir
    %dwte = kiln.embedding_grad %tokens, %dy : tensor<4x64xi32>, tensor<4x64x768xf32> -> tensor<50304x768xf32>
    %sum = kiln.embedding_grad %tokens, %dy init %dhead : tensor<4x64xi32>, tensor<4x64x768xf32>, tensor<50304x768xf32> -> tensor<50304x768xf32>
    ```
  }];
  let arguments = (ins Kiln_IndexTensor:$ids, Kiln_FloatTensor:$dy, Optional<Kiln_FloatTensor>:$init);
  let results = (outs Kiln_FloatTensor:$dtable);
  let assemblyFormat = "$ids `,` $dy (`init` $init^)? attr-dict `:` type($ids) `,` type($dy) (`,` type($init)^)? `->` type($dtable)";
  let hasVerifier = 1;
}

def Kiln_AttentionGradOp : Kiln_Op<"attention_grad",
                                   [DeclareOpInterfaceMethods<Kiln_ScratchOpInterface>]> {
  let summary = "attention backward, recomputing the probabilities from lse";
  let description = [{
    With `P = exp(q·kᵀ·scale − lse)` (masked when `causal`, and to each
    query's segment with `segments`, as in kiln.attention) recomputed block
    by block: `dv = Pᵀ·dout`, `dP = dout·vᵀ`,
    `dS = P ⊙ (dP − rowsum(dout ⊙ out))`, `dq = dS·k·scale`,
    `dk = dSᵀ·q·scale` (summed over the query heads sharing a key/value
    head). The T×T matrix is never stored. `layout` is the forward's: with
    `"bthd"` q, k, v, out, dout and the gradients are sequence-major.

    ```mlir
    %dq, %dk, %dv = kiln.attention_grad %q, %k, %v, %o, %lse, %do {causal, scale = 0.125 : f32}
        : tensor<4x12x64x64xf32>, tensor<4x12x64x64xf32>, tensor<4x12x64x64xf32>,
          tensor<4x12x64x64xf32>, tensor<4x12x64xf32>, tensor<4x12x64x64xf32>
        -> tensor<4x12x64x64xf32>, tensor<4x12x64x64xf32>, tensor<4x12x64x64xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$q, Kiln_FloatTensor:$k, Kiln_FloatTensor:$v,
                       Kiln_FloatTensor:$out, Kiln_FloatTensor:$lse, Kiln_FloatTensor:$dout,
                       Optional<Kiln_IndexTensor>:$segments, F32Attr:$scale, UnitAttr:$causal,
                       OptionalAttr<StrAttr>:$layout);
  let results = (outs Kiln_FloatTensor:$dq, Kiln_FloatTensor:$dk, Kiln_FloatTensor:$dv);
  let extraClassDeclaration = [{
    /// See kiln.attention's layout.
    bool isSequenceMajor() { return getLayout() && *getLayout() == "bthd"; }
  }];
  let assemblyFormat = "$q `,` $k `,` $v `,` $out `,` $lse `,` $dout (`segments` $segments^)? "
                       "attr-dict `:` type($q) `,` type($k) `,` type($v) `,` type($out) `,` "
                       "type($lse) `,` type($dout) (`,` type($segments)^)? `->` type($dq) `,` "
                       "type($dk) `,` type($dv)";
  let hasVerifier = 1;
}

def Kiln_AttentionQkvGradOp : Kiln_Op<"attention_qkv_grad",
                                      [DeclareOpInterfaceMethods<Kiln_ScratchOpInterface>]> {
  let summary = "attention_qkv backward: the gradient of the packed qkv";
  let description = [{
    kiln.attention_grad (layout "bthd") on the three parts of `qkv`, the
    gradients written into one `dqkv` of `qkv`'s type.

    ```mlir
    %dqkv = kiln.attention_qkv_grad %qkv, %o, %lse, %do {causal, scale = 0.125 : f32}
        : tensor<4x64x12x3x64xbf16>, tensor<4x64x12x64xbf16>, tensor<4x12x64xf32>,
          tensor<4x64x12x64xbf16> -> tensor<4x64x12x3x64xbf16>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$qkv, Kiln_FloatTensor:$out, Kiln_FloatTensor:$lse,
                       Kiln_FloatTensor:$dout, Optional<Kiln_IndexTensor>:$segments,
                       F32Attr:$scale, UnitAttr:$causal);
  let results = (outs Kiln_FloatTensor:$dqkv);
  let assemblyFormat = "$qkv `,` $out `,` $lse `,` $dout (`segments` $segments^)? attr-dict `:` "
                       "type($qkv) `,` type($out) `,` type($lse) `,` type($dout) "
                       "(`,` type($segments)^)? `->` type($dqkv)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Training ops (built by kiln-attach-optimizer)
//===----------------------------------------------------------------------===//

def Kiln_GlobalNormOp : Kiln_Op<"global_norm"> {
  let summary = "the L2 norm of a list of tensors, sqrt(Σ x²)";
  let description = [{
    The norm of all inputs taken together (as if concatenated), accumulated
    in f32 (f64 when every input is f64). Gradient clipping scales by
    `max_norm / max(norm, max_norm)`.

    ```mlir
    %n = kiln.global_norm %g0, %g1 : tensor<768x768xf32>, tensor<768xf32> -> tensor<f32>
    ```
  }];
  let arguments = (ins Variadic<Kiln_FloatTensor>:$inputs);
  let results = (outs Kiln_FloatTensor:$norm);
  let assemblyFormat = "$inputs attr-dict `:` type($inputs) `->` type($norm)";
  let hasVerifier = 1;
}

def Kiln_AdamWUpdateOp : Kiln_Op<"adamw_update"> {
  let summary = "one AdamW step of one parameter and its two moment states";
  let description = [{
    AdamW (Loshchilov & Hutter 2019) with PyTorch's conventions, for step
    `t` (1-based) and the gradient scaled by `grad_scale` (clipping,
    accumulation averaging, loss-scale unscaling):

    ```
    g  = grad · grad_scale
    m' = β1·m + (1 − β1)·g
    v' = β2·v + (1 − β2)·g²
    p' = p·(1 − lr·weight_decay) − lr · (m' / (1 − β1^t)) / (sqrt(v' / (1 − β2^t)) + ε)
    ```

    `lr`, `step` and `grad_scale` are rank-0 f32 tensors (per-step inputs);
    the moments have the parameter's shape. The results replace the
    parameter and the moments (the training step marks them `kiln.aliases`,
    so they are updated in place). With `skip %s` (a rank-0 i1) that is
    true, the results are the parameter and moments unchanged: a step whose
    loss-scaled gradients overflowed.

    An optional fourth result is the new parameter converted to another
    float type (rounding to nearest even, as `kiln.cast`): the low-precision
    working copy the next step's matmuls read, written in the same pass
    over the parameter (kiln-fuse's `adamw-copies`). Skipped, it is the old
    parameter converted.

    ```mlir
    %p2, %m2, %v2 = kiln.adamw_update %p, %g, %m, %v, %lr, %t, %s
        {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.1 : f32}
        : (tensor<768x768xf32>, tensor<768x768xf32>, tensor<768x768xf32>, tensor<768x768xf32>,
           tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<768x768xf32>, tensor<768x768xf32>, tensor<768x768xf32>)
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$param, Kiln_FloatTensor:$grad, Kiln_FloatTensor:$m,
                       Kiln_FloatTensor:$v, Kiln_FloatTensor:$lr, Kiln_FloatTensor:$step,
                       Kiln_FloatTensor:$grad_scale, Optional<Kiln_AnyTensor>:$skip,
                       F32Attr:$beta1, F32Attr:$beta2, F32Attr:$epsilon, F32Attr:$weight_decay);
  let results = (outs Kiln_FloatTensor:$new_param, Kiln_FloatTensor:$new_m,
                      Kiln_FloatTensor:$new_v, Optional<Kiln_FloatTensor>:$new_copy);
  let assemblyFormat = "$param `,` $grad `,` $m `,` $v `,` $lr `,` $step `,` $grad_scale "
                       "(`skip` $skip^)? attr-dict `:` functional-type(operands, results)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Collectives (inserted by kiln-partition)
//===----------------------------------------------------------------------===//

def Kiln_AllReduceOp : Kiln_Op<"all_reduce", [Kiln_SameTypes]> {
  let summary = "sum over the ranks of one mesh axis (or several)";
  let description = [{
    Every rank of each group along mesh axis `axis` receives the sum of the
    group's operands (the same bytes on every rank: each rank adds the
    summands in rank order). kiln-partition inserts it where a partial sum
    meets an op that needs the whole value; `cause` says which op made the
    partial sum and which op needed it (`kiln compile --explain-sharding`).

    The collectives' `axis` may name several mesh axes joined by `,`,
    major first (`"edp,ep"`): the group is then the ranks that differ only
    in those coordinates, and the rank at (i, j) is its member i·|ep| + j,
    as a dimension split over `{edp, ep}` numbers its chunks. One
    collective over all of them moves `(n − 1) / n` of the bytes where one
    per axis would move the sum of each axis's share.

    ```mlir
    %g = kiln.all_reduce %dw over "dp" {cause = "..."} : tensor<768x768xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$operand, StrAttr:$axis, StrAttr:$cause);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$operand `over` $axis attr-dict `:` custom<SameTypes>(type($operand), type($result))";
  let hasVerifier = 1;
}

def Kiln_AllGatherOp : Kiln_Op<"all_gather"> {
  let summary = "concatenation over the ranks of one mesh axis";
  let description = [{
    Every rank of each group along mesh axis `axis` (or axes, as for
    `kiln.all_reduce`) receives the group's operands concatenated along
    dimension `dim` in rank order: the whole of a value split over that
    axis.

    ```mlir
    %w = kiln.all_gather %shard over "dp" dim 0 {cause = "..."} : tensor<384x768xf32> -> tensor<768x768xf32>
    ```
  }];
  let arguments = (ins Kiln_AnyTensor:$operand, StrAttr:$axis, I64Attr:$dim, StrAttr:$cause);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat = "$operand `over` $axis `dim` $dim attr-dict `:` type($operand) `->` type($result)";
  let hasVerifier = 1;
}

def Kiln_ReduceScatterOp : Kiln_Op<"reduce_scatter"> {
  let summary = "sum over the ranks of one mesh axis, each rank keeping its part";
  let description = [{
    The sum of the group's operands along mesh axis `axis` (or axes, as for
    `kiln.all_reduce`), split along dimension `dim`: rank k of the group
    receives the k-th part. What a
    partial sum becomes when the op that reads it wants it split over the
    same axis (a ZeRO-sharded optimizer reading a data-parallel gradient):
    the all-reduce's traffic halved, nothing stored whole.

    ```mlir
    %g = kiln.reduce_scatter %dw over "dp" dim 0 {cause = "..."} : tensor<768x768xf32> -> tensor<384x768xf32>
    ```
  }];
  let arguments = (ins Kiln_FloatTensor:$operand, StrAttr:$axis, I64Attr:$dim, StrAttr:$cause);
  let results = (outs Kiln_FloatTensor:$result);
  let assemblyFormat = "$operand `over` $axis `dim` $dim attr-dict `:` type($operand) `->` type($result)";
  let hasVerifier = 1;
}

def Kiln_TakeShardOp : Kiln_Op<"take_shard"> {
  let summary = "this rank's part of a whole value (no communication)";
  let description = [{
    The part of `operand` along dimension `dim` that this rank holds when
    the value is split over mesh axis `axis` (or axes, as for
    `kiln.all_reduce`): rank k of the group takes the k-th part. What a whole value becomes when an op wants it split (a
    replicated gradient read by a ZeRO-sharded optimizer).

    ```mlir
    %p = kiln.take_shard %w over "dp" dim 0 {cause = "..."} : tensor<768x768xf32> -> tensor<384x768xf32>
    ```
  }];
  let arguments = (ins Kiln_AnyTensor:$operand, StrAttr:$axis, I64Attr:$dim, StrAttr:$cause);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat = "$operand `over` $axis `dim` $dim attr-dict `:` type($operand) `->` type($result)";
  let hasVerifier = 1;
}

def Kiln_AllToAllOp : Kiln_Op<"all_to_all"> {
  let summary = "exchange of parts over the ranks of one mesh axis";
  let description = [{
    Each rank of a group along mesh axis `axis` cuts its operand into n
    equal parts along dimension `split_dim` (n: the group's size) and sends
    part k to the group's rank k; it receives one part from every rank and
    concatenates them along `concat_dim` in rank order. A value split over
    the axis along `concat_dim` becomes split over it along `split_dim`,
    each rank sending and receiving (n-1)/n of its part: how tokens move
    to their experts' ranks and back under expert parallelism (GShard's
    resharding, Lepikhin et al. 2020).

    ```mlir
    %y = kiln.all_to_all %x over "ep" split 0 concat 1 {cause = "..."} : tensor<4x6x8xf32> -> tensor<2x12x8xf32>
    ```
  }];
  let arguments = (ins Kiln_AnyTensor:$operand, StrAttr:$axis, I64Attr:$split_dim,
                       I64Attr:$concat_dim, StrAttr:$cause);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat = "$operand `over` $axis `split` $split_dim `concat` $concat_dim attr-dict `:` type($operand) `->` type($result)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Point-to-point transfers between pipeline stages (inserted by kiln-pipeline)
//===----------------------------------------------------------------------===//

// Not Pure: a send has no result and must not be erased, and two receives
// of the same channel are two messages, never one.
class Kiln_TransferOp<string mnemonic, list<Trait> traits = []>
    : Op<Kiln_Dialect, mnemonic,
         !listconcat(traits, [MemoryEffects<[MemRead, MemWrite]>, Kiln_BoundedTensors,
                              DeclareOpInterfaceMethods<Kiln_CostOpInterface>,
                              DeclareOpInterfaceMethods<Kiln_ShardingRuleOpInterface>])>;

def Kiln_SendOp : Kiln_TransferOp<"send"> {
  let summary = "hands a value to another stage of the pipeline";
  let description = [{
    Sends `operand` to the rank at coordinate `peer` along mesh axis `axis`
    (the pipeline's `pp`), on `channel`: the receiving stage's `kiln.recv`
    of the same channel gets it. Messages of one channel between two ranks
    arrive in the order they were sent (one per micro-batch). A send does
    not wait for its receive. `cause` names the value and the ops on both
    sides (`kiln compile --explain-pipeline`).

    ```mlir
    kiln.send %x to 1 over "pp" channel 0 {cause = "..."} : tensor<4x64x768xf32>
    ```
  }];
  let arguments = (ins Kiln_AnyTensor:$operand, I64Attr:$peer, StrAttr:$axis, I64Attr:$channel,
                       StrAttr:$cause);
  let assemblyFormat = "$operand `to` $peer `over` $axis `channel` $channel attr-dict `:` type($operand)";
  let hasVerifier = 1;
}

def Kiln_RecvOp : Kiln_TransferOp<"recv"> {
  let summary = "takes the value another stage of the pipeline sent";
  let description = [{
    Waits for the next message on `channel` from the rank at coordinate
    `peer` along mesh axis `axis` and returns it; its type must be the
    sender's.

    ```mlir
    %x = kiln.recv from 0 over "pp" channel 0 {cause = "..."} : tensor<4x64x768xf32>
    ```
  }];
  let arguments = (ins I64Attr:$peer, StrAttr:$axis, I64Attr:$channel, StrAttr:$cause);
  let results = (outs Kiln_AnyTensor:$result);
  let assemblyFormat = "`from` $peer `over` $axis `channel` $channel attr-dict `:` type($result)";
  let hasVerifier = 1;
}

//===----------------------------------------------------------------------===//
// Custom kernels (plugins)
//===----------------------------------------------------------------------===//

def Kiln_CustomKernelOp : Kiln_Op<"custom_kernel", [Kiln_Differentiable]> {
  let summary = "a fused kernel a plugin registered";
  let description = [{
    An op whose meaning is a registered `kiln::CustomKernel`
    (ir/CustomKernel.h) named `kernel`: its CUDA kernel and launch rule,
    its f64 reference for the interpreter, its VJP, precision and sharding
    rules and its cost, all in the one registration a plugin makes
    (`kiln train --plugin lib.so`, `kiln-opt --load-pass-plugin=lib.so`).
    `params` carries what the kernel needs beyond its operands' types (an
    epsilon). A name nobody registered is an error that says to load the
    plugin. docs/plugins.md has a complete example.

    ```mlir
    %h, %y, %rstd = kiln.custom_kernel "example.add_rms_norm" (%x, %r, %w) {params = {epsilon = 1.0e-05 : f64}} : (tensor<8x64xf32>, tensor<8x64xf32>, tensor<64xf32>) -> (tensor<8x64xf32>, tensor<8x64xf32>, tensor<8xf32>)
    ```
  }];
  let arguments = (ins StrAttr:$kernel, Variadic<Kiln_AnyTensor>:$inputs,
                       OptionalAttr<DictionaryAttr>:$params);
  let results = (outs Variadic<Kiln_AnyTensor>:$results);
  let assemblyFormat = "$kernel `(` $inputs `)` attr-dict `:` functional-type($inputs, $results)";
  let hasVerifier = 1;
  let extraClassDeclaration = [{
    /// The registration of `kernel`; null when no plugin registered it.
    const ::kiln::CustomKernel *getDefinition();
    /// A param as a double (floats and integers), or `fallback`.
    double getParam(::llvm::StringRef name, double fallback);
  }];
}

//===----------------------------------------------------------------------===//
// Fusion (built by kiln-fuse)
//===----------------------------------------------------------------------===//

def Kiln_FusionOp : Kiln_Op<"fusion", [IsolatedFromAbove, SingleBlock,
                                      DeclareOpInterfaceMethods<Kiln_ScratchOpInterface>]> {
  let summary = "ops that run as one kernel";
  let description = [{
    A region of kiln ops that codegen emits as one kernel, so the values
    between them never go through device memory. kiln-fuse
    (passes/Fuse.cpp) builds it after the training step is complete; the
    body is ordinary kiln IR over the block arguments (one per input, same
    type) and ends in `kiln.yield` of the results. The interpreter runs the
    body op by op, so a fusion means exactly what its body means.

    A body is one of two kinds:

    - A loop fusion: elementwise ops (casts included), splat constants and
      `kiln.broadcast_in_dim` of body arguments, every value of the
      results' shape; the kernel reads each input once and rounds every
      intermediate to its element type, as the unfused ops' tensors would
      be. A broadcast argument (e.g. a [T, C] position table added to
      [B, T, C]) keeps its own shape: the kernel reads it through the
      broadcast's index map, so the broadcast tensor never exists. Every
      reader of such an argument is the same broadcast.
    - A GEMM epilogue: one `kiln.matmul` (a single GEMM, one element type)
      and what cuBLASLt's epilogue computes from its product: `gelu tanh`
      of it (optionally also yielding the product, gelu's input, for the
      backward); `gelu_grad tanh %aux, product` (optionally with its
      `reduce_sum` over all rows, the bias gradient); or, in a
      `transpose_a` product (a weight gradient), the `reduce_sum` of the
      rhs over its rows (the layer's bias gradient), both optionally
      widened to f32 by casts (the GEMM then writes f32). The rhs may be a
      `reshape` of an input. Codegen emits one cuBLASLt call with the
      GELU_AUX_BIAS, DGELU_BGRAD or BGRADA epilogue. On the interpreter the
      body means what its ops mean; cuBLASLt evaluates the epilogue on the
      f32 accumulator, so the GPU skips the product's rounding to the
      element type (as the plain bias epilogue already does).

    - A norm fusion: one `kiln.layer_norm` or `kiln.rms_norm` whose x is
      computed by elementwise ops before it (a residual add; those ops'
      values may be yielded too), or one `kiln.layer_norm_grad` or
      `kiln.rms_norm_grad` whose dx elementwise ops after it read (the
      residual gradient's add and cast) and, in a gradient's fusion, at
      most one `kiln.reduce_sum` of dx or of such a value over every
      dimension but the last (the next projection's bias gradient),
      yielded directly or widened to f32 by a `kiln.cast`. The norm is
      over the last dimension; its other operands are body arguments. The elementwise
      ops may read a body argument through a `kiln.broadcast_in_dim` that
      keeps rows whole (its operand's last dimension is the result's). Codegen emits one
      kernel with a warp per row that keeps the row in registers, so the
      elementwise ops run once per element and their operands are read
      once.

    - A cross-entropy fusion: `kiln.cross_entropy` and its
      `kiln.cross_entropy_grad` over the same logits and targets, the
      gradient reading the forward's lse and a dloss known before the
      forward (the loss's seed). Codegen emits one kernel that reads each
      row of logits for its log-sum-exp and writes its gradient right
      after (the row is still in L2), over the logits in place when they
      die there; the fusion sits where the forward was.

    - An attention-gradient fusion: `kiln.attention_qkv_grad` and the
      column sum of its dqkv (a reduce_sum over every dimension but the
      last of dqkv reshaped to [.., 3·H·D], or over [B, T] of dqkv
      itself: the qkv projection's bias gradient), optionally widened to
      f32 by a cast; dqkv and the sum are yielded. Codegen's flash
      backward sums each key block's dk and dv columns from registers and
      dq's as it converts them, so dqkv is not read again. Its scratch
      is the gradient's.

    - A reduction fusion: a loop fusion's ops ending in one
      `kiln.reduce_sum`, `kiln.reduce_max` or `kiln.reduce_mean` of a
      float value of the loop's shape (any reduced dimensions), which no
      op of the body reads; the reduction's result is yielded, and any
      value of the loop's shape used after it too. Codegen emits the
      reduction's kernel (a warp per row, columns through partial sums, or
      a thread per output, as for the op alone) reading each element
      through the body's ops and writing the other yielded values as it
      reads: the reduction's operand is never stored unless it is used
      outside.

    ```mlir
    %y = kiln.fusion (%x, %b) : (tensor<4x8xbf16>, tensor<4x8xf32>) -> tensor<4x8xf32> {
    ^bb0(%a: tensor<4x8xbf16>, %c: tensor<4x8xf32>):
      %0 = kiln.cast %a : tensor<4x8xbf16> to tensor<4x8xf32>
      %1 = kiln.add %0, %c : tensor<4x8xf32>
      kiln.yield %1 : tensor<4x8xf32>
    }
    %g, %z = kiln.fusion (%h, %w, %b) : (tensor<4x8x16xbf16>, tensor<16x64xbf16>, tensor<64xbf16>) -> (tensor<4x8x64xbf16>, tensor<4x8x64xbf16>) {
    ^bb0(%x: tensor<4x8x16xbf16>, %v: tensor<16x64xbf16>, %c: tensor<64xbf16>):
      %0 = kiln.matmul %x, %v bias %c : tensor<4x8x16xbf16>, tensor<16x64xbf16>, tensor<64xbf16> -> tensor<4x8x64xbf16>
      %1 = kiln.gelu tanh %0 : tensor<4x8x64xbf16>
      kiln.yield %1, %0 : tensor<4x8x64xbf16>, tensor<4x8x64xbf16>
    }
    ```
  }];
  let arguments = (ins Variadic<Kiln_AnyTensor>:$inputs);
  let results = (outs Variadic<Kiln_AnyTensor>:$results);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "`(` $inputs `)` attr-dict `:` functional-type($inputs, $results) $body";
  // After the body's ops are verified (their types are then known tensors).
  let hasRegionVerifier = 1;
  let extraClassDeclaration = [{
    /// The body's ops before its kiln.yield.
    auto getBodyOps() { return getBody().front().without_terminator(); }
    YieldOp getYield();
    /// A GEMM epilogue (its body holds a matmul; matchGemmEpilogue says
    /// what it computes), not a loop fusion.
    bool isGemmEpilogue();
    /// A norm fusion (its body holds a layer/RMS norm or its gradient;
    /// matchNormFusion says what it computes).
    bool isNormFusion();
    /// A cross-entropy fusion (its body holds kiln.cross_entropy_grad;
    /// matchCrossEntropyFusion says what it computes).
    bool isCrossEntropyFusion();
    /// An attention-gradient fusion (its body holds
    /// kiln.attention_qkv_grad; matchAttentionGradFusion says what it
    /// computes).
    bool isAttentionGradFusion();
    /// A reduction fusion: a loop ending in a reduce_sum, reduce_max or
    /// reduce_mean (none of the kinds above; matchReductionFusion says what
    /// it computes).
    bool isReductionFusion();
    /// A loop fusion: elementwise ops and broadcasts of its arguments
    /// (none of the kinds above).
    bool isLoopFusion() {
      return !isGemmEpilogue() && !isNormFusion() && !isCrossEntropyFusion() &&
             !isAttentionGradFusion() && !isReductionFusion();
    }
  }];
}

def Kiln_YieldOp : Kiln_Op<"yield", [Terminator, HasParent<"FusionOp">]> {
  let summary = "the results of a kiln.fusion";
  let arguments = (ins Variadic<Kiln_AnyTensor>:$values);
  let assemblyFormat = "$values attr-dict `:` type($values)";
  let extraClassDeclaration = [{
    int64_t getBytesAccessed();
  }];
  let extraClassDefinition = [{
    int64_t $cppClass::getFlops() { return 0; }
    int64_t $cppClass::getBytesAccessed() { return 0; }
  }];
}

#endif // KILN_OPS_TD
