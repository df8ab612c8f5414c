//===- GraphTest.cpp - the builder API: broadcasting, names, errors --------===//

#include "frontend/Graph.h"
#include "frontend/NN.h"

#include "mlir/IR/MLIRContext.h"
#include "gtest/gtest.h"

using namespace mlir;
using namespace kiln;
using namespace kiln::frontend;

namespace {

TEST(Graph, BroadcastingInsertsExplicitBroadcasts) {
  MLIRContext ctx;
  OwningOpRef<ModuleOp> module = ModuleOp::create(UnknownLoc::get(&ctx));
  Graph g(*module, "f");
  Tensor x = g.input("x", {4, 1, 3}, g.f32());
  Tensor b = g.param("b", {5, 3}, ParamInit::zeros());
  Tensor y = x + b; // [4,1,3] + [5,3] -> [4,5,3]
  EXPECT_EQ(y.shape(), (llvm::ArrayRef<int64_t>{4, 5, 3}));
  auto func = g.finish({y});
  ASSERT_TRUE(succeeded(func));
  int broadcasts = 0;
  func->walk([&](BroadcastInDimOp op) {
    ++broadcasts;
    EXPECT_EQ(op.getType().getShape(), (llvm::ArrayRef<int64_t>{4, 5, 3}));
  });
  EXPECT_EQ(broadcasts, 2);
  EXPECT_EQ(func->getArgAttrOfType<StringAttr>(1, "kiln.param").getValue(), "b");
  EXPECT_EQ(func->getArgAttrOfType<StringAttr>(1, "kiln.init").getValue(), "zeros");
}

TEST(Graph, IncompatibleShapesAreRecordedNotCrashed) {
  MLIRContext ctx;
  OwningOpRef<ModuleOp> module = ModuleOp::create(UnknownLoc::get(&ctx));
  Graph g(*module, "f");
  Tensor x = g.input("x", {4, 3}, g.f32());
  Tensor y = g.input("y", {4, 2}, g.f32());
  Tensor z;
  {
    auto s = g.scope("block");
    z = x * y;
  }
  auto func = g.finish({z});
  EXPECT_TRUE(failed(func));
  ASSERT_EQ(g.errors().size(), 1u);
  EXPECT_NE(g.errors()[0].find("mul: cannot broadcast tensor<4x3xf32> with tensor<4x2xf32>"),
            std::string::npos)
      << g.errors()[0];
  EXPECT_NE(g.errors()[0].find("(in block)"), std::string::npos) << g.errors()[0];
}

TEST(Graph, ScopesNameParametersAndDuplicatesAreErrors) {
  MLIRContext ctx;
  OwningOpRef<ModuleOp> module = ModuleOp::create(UnknownLoc::get(&ctx));
  Graph g(*module, "f");
  Tensor x = g.input("x", {2, 8}, g.f32());
  Tensor y;
  {
    auto s = g.scope("h.0");
    nn::Linear lin(g, "fc", 8, 4);
    y = lin(x);
  }
  { // the same name again
    auto s = g.scope("h.0");
    nn::Linear again(g, "fc", 8, 4);
  }
  EXPECT_FALSE(g.errors().empty());
  EXPECT_NE(g.errors()[0].find("\"h.0.fc.w\" is used by two arguments"), std::string::npos)
      << g.errors()[0];
}

TEST(Graph, CausalAttentionIsWrittenWithPrimitives) {
  MLIRContext ctx;
  OwningOpRef<ModuleOp> module = ModuleOp::create(UnknownLoc::get(&ctx));
  Graph g(*module, "f");
  Tensor x = g.input("x", {2, 8, 16}, g.f32());
  nn::CausalSelfAttention attn(g, "attn", 16, 4, ParamInit::normal(0.02), ParamInit::normal(0.01));
  auto func = g.finish({attn(x)});
  ASSERT_TRUE(succeeded(func));
  // The pattern kiln-fuse-attention looks for: iota/compare/select mask,
  // softmax, two batched matmuls (q·kᵀ with transpose_b).
  int iotas = 0, selects = 0, softmaxes = 0, scoreMatmuls = 0;
  func->walk([&](Operation *op) {
    iotas += isa<IotaOp>(op);
    selects += isa<SelectOp>(op);
    softmaxes += isa<SoftmaxOp>(op);
    if (auto mm = dyn_cast<MatmulOp>(op))
      scoreMatmuls += mm.getTransposeB();
  });
  EXPECT_EQ(iotas, 2);
  EXPECT_EQ(selects, 1);
  EXPECT_EQ(softmaxes, 1);
  EXPECT_EQ(scoreMatmuls, 1);
  EXPECT_FALSE(func->walk([](AttentionOp) { return WalkResult::interrupt(); }).wasInterrupted());
}

} // namespace
