//===- DocumentMaskingTest.cpp - packed documents equal separate ones ------===//
//
// model.document_masking, in f64 on the CPU interpreter, for GPT-2 (learned
// positions, which must restart) and Llama (rotary, relative): a row that
// packs two documents gives each document exactly the log-probabilities it
// gets alone in a row of its own (tolerance 1e-10 relative) — attention
// never crosses the boundary and positions restart — while the same row
// without the mask does not (so the comparison can fail).
//
//===----------------------------------------------------------------------===//

#include "models/Model.h"
#include "runtime/ParamInit.h"
#include "runtime/cpu/Interpreter.h"
#include "runtime/data/DataLoader.h"
#include "train/Compile.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "gtest/gtest.h"

#include <cmath>

using namespace kiln;

namespace {

class DocumentMasking : public ::testing::TestWithParam<const char *> {};

TEST_P(DocumentMasking, PackedDocumentsEqualSeparateOnes) {
  auto loaded = RunConfig::loadFile(std::string(KILN_SOURCE_DIR "/configs/") + GetParam());
  ASSERT_TRUE(static_cast<bool>(loaded)) << llvm::toString(loaded.takeError());
  RunConfig config = *loaded;
  const int64_t V = config.model.vocab_size, eot = V - 1, T = 8, half = 4;
  mlir::MLIRContext ctx;
  tooling::loadDialects(ctx);
  mlir::Type f64 = mlir::Float64Type::get(&ctx);
  mlir::OwningOpRef<mlir::ModuleOp> module = mlir::ModuleOp::create(mlir::UnknownLoc::get(&ctx));
  std::vector<std::string> errors;
  ModelConfig masked = config.model, plain = config.model;
  masked.document_masking = true;
  ASSERT_TRUE(succeeded(models::buildModel(*module, masked, 1, T, f64,
                                           models::GPT2Output::LogProbs, "packed", errors)));
  ASSERT_TRUE(succeeded(models::buildModel(*module, masked, 1, half, f64,
                                           models::GPT2Output::LogProbs, "alone", errors)));
  ASSERT_TRUE(succeeded(models::buildModel(*module, plain, 1, T, f64,
                                           models::GPT2Output::LogProbs, "unmasked", errors)));
  auto fn = [&](llvm::StringRef name) { return module->lookupSymbol<mlir::func::FuncOp>(name); };
  auto params = initParams(*paramsOf(fn("packed")), 5);
  ASSERT_TRUE(static_cast<bool>(params));

  // Two documents, each starting with end-of-text.
  const int32_t row[T] = {static_cast<int32_t>(eot), 3, 9, 4, static_cast<int32_t>(eot), 7, 2, 8};
  const int32_t next[T] = {3, 9, 4, 11, 7, 2, 8, 5};
  // log p of the targets of positions [from, to) of `tokens`, all other
  // targets -1.
  auto logp = [&](llvm::StringRef name, int64_t length, const int32_t *tokens,
                  const int32_t *targetsOf, int64_t from, int64_t to) {
    cpu::HostTensor tok(cpu::DType::I32, {1, length}), tgt(cpu::DType::I32, {1, length});
    for (int64_t t = 0; t < length; ++t) {
      tok.set(t, tokens[t]);
      tgt.set(t, t >= from && t < to ? targetsOf[t] : -1);
    }
    std::vector<cpu::HostTensor> args = *params;
    args.push_back(tok);
    args.push_back(tgt);
    mlir::func::FuncOp f = fn(name);
    if (f.getNumArguments() > args.size()) { // segments (and positions)
      cpu::HostTensor seg, pos;
      documentIds(tok, static_cast<int32_t>(eot), seg, pos);
      args.push_back(seg);
      if (f.getNumArguments() > args.size())
        args.push_back(pos);
    }
    auto interp = cpu::Interpreter::create(f);
    EXPECT_TRUE(static_cast<bool>(interp));
    auto out = (*interp)->run(args);
    EXPECT_TRUE(static_cast<bool>(out)) << llvm::toString(out.takeError());
    return out ? (*out)[0].get(0) : NAN;
  };
  // The first document alone, and the second alone (its own row).
  double a = logp("alone", half, row, next, 0, half);
  double b = logp("alone", half, row + half, next + half, 0, half);
  double packedA = logp("packed", T, row, next, 0, half);
  double packedB = logp("packed", T, row, next, half, T);
  EXPECT_NEAR(packedA, a, 1e-10 * std::abs(a));
  EXPECT_NEAR(packedB, b, 1e-10 * std::abs(b));
  // Without the mask the second document sees the first: another value.
  double unmaskedB = logp("unmasked", T, row, next, half, T);
  EXPECT_GT(std::abs(unmaskedB - b), 1e-6 * std::abs(b));
}

INSTANTIATE_TEST_SUITE_P(Models, DocumentMasking,
                         ::testing::Values("tiny.toml", "llama-tiny.toml"),
                         [](const ::testing::TestParamInfo<const char *> &info) {
                           return std::string(info.param).substr(0, std::string(info.param).find('.')) ==
                                          "tiny"
                                      ? std::string("GPT2")
                                      : std::string("Llama");
                         });

// documentIds: a new segment at each end-of-text after the first position,
// positions counted from it.
TEST(DocumentIds, SegmentsAndPositionsRestartAtEndOfText) {
  cpu::HostTensor tokens(cpu::DType::I32, {2, 6});
  const int32_t values[12] = {5, 6, 0, 7, 0, 8, 0, 1, 2, 3, 4, 0};
  for (int64_t i = 0; i < 12; ++i)
    tokens.set(i, values[i]);
  cpu::HostTensor seg, pos;
  documentIds(tokens, 0, seg, pos);
  const int64_t wantSeg[12] = {0, 0, 1, 1, 2, 2, 0, 0, 0, 0, 0, 1};
  const int64_t wantPos[12] = {0, 1, 0, 1, 0, 1, 0, 1, 2, 3, 4, 0};
  for (int64_t i = 0; i < 12; ++i) {
    EXPECT_EQ(seg.get(i), wantSeg[i]) << i;
    EXPECT_EQ(pos.get(i), wantPos[i]) << i;
  }
}

} // namespace
