//===- FuseMatmulBias.cpp - a linear layer's bias into its matmul ----------===//
//
//   %y = kiln.matmul %x, %w : ... -> tensor<BxTxNxf32>
//   %b = kiln.broadcast_in_dim %bias, dims = [2] : tensor<Nxf32> -> tensor<BxTxNxf32>
//   %z = kiln.add %y, %b : tensor<BxTxNxf32>
// becomes
//   %z = kiln.matmul %x, %w bias %bias : ...
//
// which codegen runs as one cuBLASLt GEMM with the bias epilogue: the
// broadcast is never materialized and the product is written once. Only
// when the matmul has no other user (its unbiased value would otherwise
// still be needed) and the vector lies along the last dimension. The add
// may have its operands either way round. The broadcast goes when nothing
// else uses it.
//
//===----------------------------------------------------------------------===//

#include "ir/KilnOps.h"
#include "passes/PassUtils.h"
#include "passes/Passes.h"

#include "mlir/IR/PatternMatch.h"
#include "llvm/ADT/Statistic.h"

namespace kiln {
#define GEN_PASS_DEF_FUSEMATMULBIASPASS
#include "passes/Passes.h.inc"
} // namespace kiln

#define DEBUG_TYPE "kiln-fuse-matmul-bias"

using namespace mlir;

namespace kiln {
namespace {

/// The bias vector of `v` if it is the broadcast of a vector along the last
/// dimension of `resultType`, else null.
Value biasVector(Value v, RankedTensorType resultType) {
  auto broadcast = v.getDefiningOp<BroadcastInDimOp>();
  if (!broadcast)
    return {};
  auto vector = cast<RankedTensorType>(broadcast.getOperand().getType());
  if (vector.getRank() != 1 || broadcast.getDims().size() != 1 ||
      broadcast.getDims()[0] != resultType.getRank() - 1 ||
      vector.getElementType() != resultType.getElementType())
    return {};
  return broadcast.getOperand();
}

/// add(matmul(x, w), broadcast(b)) -> matmul(x, w) bias b, either operand
/// order. The greedy driver erases the broadcast once nothing uses it.
struct FuseBiasAdd final : OpRewritePattern<AddOp> {
  FuseBiasAdd(MLIRContext *ctx, llvm::Statistic &numFused)
      : OpRewritePattern(ctx), numFused(numFused) {}

  LogicalResult matchAndRewrite(AddOp add, PatternRewriter &rewriter) const override {
    auto type = cast<RankedTensorType>(add.getType());
    if (!isa<FloatType>(type.getElementType()))
      return rewriter.notifyMatchFailure(add, "not a float add");
    for (unsigned side : {0u, 1u}) {
      auto matmul = add->getOperand(side).getDefiningOp<MatmulOp>();
      if (!matmul || matmul.getBias() || !matmul->hasOneUse() || matmul.getType() != type)
        continue;
      Value bias = biasVector(add->getOperand(1 - side), type);
      if (!bias)
        continue;
      // The matmul's location: it names the linear layer.
      auto fused = MatmulOp::create(rewriter, matmul.getLoc(), type, matmul.getLhs(),
                                    matmul.getRhs(), bias, matmul.getTransposeAAttr(),
                                    matmul.getTransposeBAttr());
      rewriter.replaceOp(add, fused.getResult());
      ++numFused;
      return success();
    }
    return rewriter.notifyMatchFailure(add, "no unbiased single-use matmul plus a broadcast "
                                            "vector along the last dimension");
  }

  llvm::Statistic &numFused;
};

struct FuseMatmulBiasPass final : impl::FuseMatmulBiasPassBase<FuseMatmulBiasPass> {
  void runOnOperation() override {
    RewritePatternSet patterns(&getContext());
    patterns.add<FuseBiasAdd>(&getContext(), numFused);
    if (failed(applyOnly(getOperation(), std::move(patterns))))
      return signalPassFailure();
  }
};

} // namespace
} // namespace kiln
