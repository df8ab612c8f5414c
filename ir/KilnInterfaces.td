//===- KilnInterfaces.td - op interfaces the passes are generic over -------===//

#ifndef KILN_INTERFACES_TD
#define KILN_INTERFACES_TD

include "mlir/IR/OpBase.td"

def Kiln_CostOpInterface : OpInterface<"CostOpInterface"> {
  let cppNamespace = "::kiln";
  let description = [{
    The cost of one execution of an op: floating-point operations and the
    fewest bytes it must move through device memory (every operand read once,
    every result written once). Implemented by every kiln op; used today by
    kiln-report-cost (passes/ReportCost.cpp). A fusion cost model and a
    recompute solver that would use it are planned. (`kiln bench`'s MFU
    counts FLOPs with the 6N + 12·L·d·T formula, not with this interface.)
    The counting conventions are in docs/architecture.md ("Cost model").
  }];
  let methods = [
    InterfaceMethod<"Floating-point operations of one execution.",
      "int64_t", "getFlops">,
    InterfaceMethod<"Bytes read plus bytes written, each tensor once.",
      "int64_t", "getBytesAccessed", (ins), [{}], [{
        return ::kiln::detail::defaultBytesAccessed($_op);
      }]>,
  ];
}

def Kiln_ScratchOpInterface : OpInterface<"ScratchOpInterface"> {
  let cppNamespace = "::kiln";
  let description = [{
    An op whose kernels need device memory beyond their results while they
    run: kiln.attention_grad's tiled kernels accumulate dq in f32 (several
    key blocks add into each row) and keep rowsum(dout ⊙ out) per row.
    kiln-plan-buffers places the scratch like a temporary that lives only
    during the op and records its arena offset as `kiln.scratch_offset`;
    codegen reads it there.
  }];
  let methods = [
    InterfaceMethod<"Bytes of scratch the op's kernels use while it runs.",
      "int64_t", "getScratchBytes">,
  ];
}

def Kiln_DifferentiableOpInterface : OpInterface<"DifferentiableOpInterface"> {
  let cppNamespace = "::kiln";
  let description = [{
    The op's reverse-mode rule. `buildVJP` is called with the builder's
    insertion point where the backward ops go (after every forward op), and
    with one cotangent per result (a null
    Value when nothing downstream needs that result's gradient). It appends
    one cotangent per operand to `operandCotangents`, a null Value where the
    operand has no gradient (integer operands) or the gradient is zero.
    Used by kiln-autodiff (passes/Autodiff.cpp), which is generic over this
    interface; the rules are in ir/KilnVJP.cpp.
  }];
  let methods = [
    InterfaceMethod<"Builds the vector-Jacobian product of this op.",
      "::llvm::LogicalResult", "buildVJP",
      (ins "::mlir::OpBuilder &":$builder,
           "::mlir::ValueRange":$resultCotangents,
           "::llvm::SmallVectorImpl<::mlir::Value> &":$operandCotangents)>,
  ];
}

def Kiln_ShardingRuleOpInterface : OpInterface<"ShardingRuleOpInterface"> {
  let cppNamespace = "::kiln";
  let description = [{
    An einsum-like factor mapping of the op's tensor dimensions, as in Shardy:
    matmul is `mk,kn->mn` with factor k reduced (a sum). See
    `kiln::ShardingRule`. Every kiln op declares one (ir/KilnSharding.cpp);
    kiln-propagate-sharding and kiln-partition are generic over them.
    Failure means the op cannot be partitioned (kiln.fusion: fusion runs
    after partitioning).
  }];
  let methods = [
    InterfaceMethod<"Returns the factor mapping of this op.",
      "::mlir::FailureOr<::kiln::ShardingRule>", "getShardingRule">,
  ];
}

#endif // KILN_INTERFACES_TD
