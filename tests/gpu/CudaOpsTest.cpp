//===- CudaOpsTest.cpp - every op on the GPU against the CPU interpreter ---===//
//
// One function per case, all in one module (so NVRTC compiles every kernel
// in parallel and the executor runs a many-function plan). Inputs are fresh
// random tensors; each case states its tolerance (|gpu - cpu| <= atol +
// rtol·|cpu| for every element) and the test prints the largest absolute
// and relative errors it saw.
//
// Shapes are chosen to hit the emitters' paths: multiples of 4 (float4
// loads) and odd sizes (scalar tails), rows longer and shorter than a block,
// reductions over the last, middle and leading dimensions.
//
//===----------------------------------------------------------------------===//

#include "tests/gpu/GpuTestSupport.h"
#include "tests/unit/TestSupport.h"

#include "codegen/PlanBuilder.h"
#include "ir/KilnOps.h"
#include "passes/Passes.h"
#include "runtime/Random.h"
#include "runtime/cpu/Interpreter.h"
#include "runtime/cuda/CudaApi.h"
#include "runtime/cuda/CudaExecutor.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <ostream>

namespace kiln::test {
namespace {

enum class Gen { Normal, Positive, Ids, Mask, Documents, Count };

struct Arg {
  std::string name, type;
  Gen gen = Gen::Normal;
  int64_t range = 0; ///< Ids: values in [0, range)
};

struct OpCase {
  std::string name;
  std::vector<Arg> args;
  std::vector<std::string> results; ///< types of %r0, %r1, ...
  std::string body;                 ///< defines %r0, %r1, ...
  double atol = 1e-6, rtol = 1e-5;
};

/// Test names in ctest and gtest output: the case's name.
void PrintTo(const OpCase &c, std::ostream *os) { *os << c.name; }

Arg f(const std::string &name, const std::string &type) { return {name, type}; }
Arg pos(const std::string &name, const std::string &type) { return {name, type, Gen::Positive}; }
Arg ids(const std::string &name, const std::string &type, int64_t range) {
  return {name, type, Gen::Ids, range};
}
Arg mask(const std::string &name, const std::string &type) { return {name, type, Gen::Mask}; }
/// An optimizer step count: an integer in [1, range]. (A fractional step
/// below 1 makes AdamW's bias correction 1 − β^step a difference of nearly
/// equal numbers, whose f32 rounding no tolerance of a real step covers.)
Arg count(const std::string &name, const std::string &type, int64_t range) {
  return {name, type, Gen::Count, range};
}
/// Packed documents: segment ids along the last dimension that never
/// decrease, a new document with probability 1/range at each position.
Arg documents(const std::string &name, const std::string &type, int64_t range) {
  return {name, type, Gen::Documents, range};
}

std::vector<OpCase> cases() {
  std::vector<OpCase> c;
  // Elementwise: every op of ir/ElementwiseOps.def, aligned (float4) and
  // odd (scalar) shapes. Inputs in every op's domain: b (a divisor) and the
  // unary ops' operand positive (log, sqrt), and the unary ops once more on
  // normal inputs where their domain is everything.
  std::vector<std::string> binaryOps, unaryOps;
#define KILN_BINARY(Op, fn) binaryOps.push_back(Op::getOperationName().str());
#define KILN_UNARY(Op, fn) unaryOps.push_back(Op::getOperationName().str());
#include "ir/ElementwiseOps.def"
  for (const std::string &op : binaryOps) {
    std::string name = llvm::StringRef(op).drop_front(5).str(); // "kiln."
    c.push_back({name + "_aligned", {f("a", "tensor<64x256xf32>"), pos("b", "tensor<64x256xf32>")},
                 {"tensor<64x256xf32>"},
                 llvm::formatv("%r0 = {0} %a, %b : tensor<64x256xf32>", op).str()});
    c.push_back({name + "_odd", {f("a", "tensor<37x129xf32>"), pos("b", "tensor<37x129xf32>")},
                 {"tensor<37x129xf32>"},
                 llvm::formatv("%r0 = {0} %a, %b : tensor<37x129xf32>", op).str()});
  }
  c.push_back({"add_i32", {ids("a", "tensor<7x9xi32>", 1000), ids("b", "tensor<7x9xi32>", 1000)},
               {"tensor<7x9xi32>"}, "%r0 = kiln.add %a, %b : tensor<7x9xi32>", 0, 0});
  for (const std::string &op : unaryOps) {
    std::string name = llvm::StringRef(op).drop_front(5).str();
    c.push_back({name, {pos("a", "tensor<45x77xf32>")}, {"tensor<45x77xf32>"},
                 llvm::formatv("%r0 = {0} %a : tensor<45x77xf32>", op).str()});
    if (!llvm::is_contained({"log", "sqrt", "rsqrt"}, name))
      c.push_back({name + "_signed", {f("a", "tensor<45x77xf32>")}, {"tensor<45x77xf32>"},
                   llvm::formatv("%r0 = {0} %a : tensor<45x77xf32>", op).str()});
  }
  c.push_back({"gelu_tanh", {f("a", "tensor<16x128xf32>")}, {"tensor<16x128xf32>"},
               "%r0 = kiln.gelu tanh %a : tensor<16x128xf32>"});
  c.push_back({"gelu_erf", {f("a", "tensor<16x127xf32>")}, {"tensor<16x127xf32>"},
               "%r0 = kiln.gelu none %a : tensor<16x127xf32>"});
  c.push_back({"gelu_grad", {f("a", "tensor<16x128xf32>"), f("d", "tensor<16x128xf32>")}, {"tensor<16x128xf32>"},
               "%r0 = kiln.gelu_grad tanh %a, %d : tensor<16x128xf32>"});
  c.push_back({"splat_literal", {f("a", "tensor<8x100xf32>")}, {"tensor<8x100xf32>"},
               "%c = kiln.constant dense<0.125> : tensor<8x100xf32>\n"
               "  %r0 = kiln.mul %a, %c : tensor<8x100xf32>"});
  c.push_back({"cast_f16", {f("a", "tensor<9x31xf32>")}, {"tensor<9x31xf16>"},
               "%r0 = kiln.cast %a : tensor<9x31xf32> to tensor<9x31xf16>", 1e-3, 1e-3});
  c.push_back({"cast_i32", {ids("a", "tensor<9x31xi32>", 500)}, {"tensor<9x31xf32>"},
               "%r0 = kiln.cast %a : tensor<9x31xi32> to tensor<9x31xf32>"});
  c.push_back({"compare_select", {f("a", "tensor<24x40xf32>"), f("b", "tensor<24x40xf32>")},
               {"tensor<24x40xf32>"},
               "%m = kiln.compare gt, %a, %b : tensor<24x40xf32>\n"
               "  %r0 = kiln.select %m, %a, %b : tensor<24x40xi1>, tensor<24x40xf32>"});
  c.push_back({"i1_constant", {f("a", "tensor<4x5xf32>")}, {"tensor<4x5xf32>"},
               "%t = kiln.constant dense<true> : tensor<4x5xi1>\n"
               "  %c = kiln.cast %t : tensor<4x5xi1> to tensor<4x5xf32>\n"
               "  %r0 = kiln.add %a, %c : tensor<4x5xf32>"});
  c.push_back({"select_mask", {mask("m", "tensor<5x13xi1>"), f("a", "tensor<5x13xf32>"), f("b", "tensor<5x13xf32>")},
               {"tensor<5x13xf32>"}, "%r0 = kiln.select %m, %a, %b : tensor<5x13xi1>, tensor<5x13xf32>"});
  // The vector path with an integer operand read element by element.
  c.push_back({"select_mask_bf16", {mask("m", "tensor<4x64xi1>"), f("a", "tensor<4x64xbf16>"), f("b", "tensor<4x64xbf16>")},
               {"tensor<4x64xbf16>"}, "%r0 = kiln.select %m, %a, %b : tensor<4x64xi1>, tensor<4x64xbf16>", 0, 0});
  c.push_back({"cast_i32_aligned", {ids("a", "tensor<8x32xi32>", 500)}, {"tensor<8x32xf32>"},
               "%r0 = kiln.cast %a : tensor<8x32xi32> to tensor<8x32xf32>"});
  // Shape.
  c.push_back({"transpose", {f("x", "tensor<6x10x14xf32>")}, {"tensor<14x6x10xf32>"},
               "%r0 = kiln.transpose %x, [2, 0, 1] : tensor<6x10x14xf32> -> tensor<14x6x10xf32>", 0, 0});
  c.push_back({"transpose_heads", {f("x", "tensor<2x16x4x8xf32>")}, {"tensor<2x4x16x8xf32>"},
               "%r0 = kiln.transpose %x, [0, 2, 1, 3] : tensor<2x16x4x8xf32> -> tensor<2x4x16x8xf32>", 0, 0});
  c.push_back({"slice_strided", {f("x", "tensor<5x9x12xf32>")}, {"tensor<3x4x3xf32>"},
               "%r0 = kiln.slice %x [1:4, 1:9:2, 3:12:3] : tensor<5x9x12xf32> -> tensor<3x4x3xf32>", 0, 0});
  c.push_back({"concat", {f("x", "tensor<3x5x7xf32>"), f("y", "tensor<3x2x7xf32>")}, {"tensor<3x7x7xf32>"},
               "%r0 = kiln.concat %x, %y dim = 1 : tensor<3x5x7xf32>, tensor<3x2x7xf32> -> tensor<3x7x7xf32>", 0, 0});
  c.push_back({"broadcast_last", {f("v", "tensor<24xf32>")}, {"tensor<4x6x24xf32>"},
               "%r0 = kiln.broadcast_in_dim %v, dims = [2] : tensor<24xf32> -> tensor<4x6x24xf32>", 0, 0});
  c.push_back({"broadcast_middle", {f("v", "tensor<3x5xf32>")}, {"tensor<3x4x5xf32>"},
               "%r0 = kiln.broadcast_in_dim %v, dims = [0, 2] : tensor<3x5xf32> -> tensor<3x4x5xf32>", 0, 0});
  // Gathers that move whole 16-byte words.
  c.push_back({"transpose_heads_bf16", {f("x", "tensor<2x16x4x8xbf16>")}, {"tensor<2x4x16x8xbf16>"},
               "%r0 = kiln.transpose %x, [0, 2, 1, 3] : tensor<2x16x4x8xbf16> -> tensor<2x4x16x8xbf16>", 0, 0});
  c.push_back({"slice_words", {f("x", "tensor<4x3x12xf32>")}, {"tensor<2x3x8xf32>"},
               "%r0 = kiln.slice %x [1:3, 0:3, 4:12] : tensor<4x3x12xf32> -> tensor<2x3x8xf32>", 0, 0});
  c.push_back({"concat_words_bf16", {f("x", "tensor<2x3x8xbf16>"), f("y", "tensor<2x3x16xbf16>")}, {"tensor<2x3x24xbf16>"},
               "%r0 = kiln.concat %x, %y dim = 2 : tensor<2x3x8xbf16>, tensor<2x3x16xbf16> -> tensor<2x3x24xbf16>", 0, 0});
  c.push_back({"broadcast_words_i1", {mask("m", "tensor<4x32xi1>")}, {"tensor<3x4x32xi1>"},
               "%r0 = kiln.broadcast_in_dim %m, dims = [1, 2] : tensor<4x32xi1> -> tensor<3x4x32xi1>", 0, 0});
  c.push_back({"pad", {f("x", "tensor<2x8x16xf32>")}, {"tensor<3x9x33xf32>"},
               "%r0 = kiln.pad %x low = [0, 1, 2] high = [1, 0, 0] interior = [0, 0, 1] : tensor<2x8x16xf32> -> tensor<3x9x33xf32>", 0, 0});
  c.push_back({"iota_compare", {f("a", "tensor<16x16xf32>")}, {"tensor<16x16xf32>"},
               "%i = kiln.iota dim = 0 : tensor<16x16xi32>\n"
               "  %j = kiln.iota dim = 1 : tensor<16x16xi32>\n"
               "  %m = kiln.compare ge, %i, %j : tensor<16x16xi32>\n"
               "  %z = kiln.constant dense<0xFF800000> : tensor<16x16xf32>\n"
               "  %r0 = kiln.select %m, %a, %z : tensor<16x16xi1>, tensor<16x16xf32>", 0, 0});
  c.push_back({"constant_dense", {f("a", "tensor<2x3xf32>")}, {"tensor<2x3xf32>"},
               "%k = kiln.constant dense<[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]> : tensor<2x3xf32>\n"
               "  %r0 = kiln.add %a, %k : tensor<2x3xf32>"});
  c.push_back({"reshape_exp", {f("x", "tensor<6x20xf32>")}, {"tensor<3x40xf32>"},
               "%s = kiln.reshape %x : tensor<6x20xf32> -> tensor<3x40xf32>\n"
               "  %r0 = kiln.exp %s : tensor<3x40xf32>"});
  // Reductions.
  c.push_back({"reduce_sum_last", {f("x", "tensor<7x9x1000xf32>")}, {"tensor<7x9xf32>"},
               "%r0 = kiln.reduce_sum %x, dims = [2] : tensor<7x9x1000xf32> -> tensor<7x9xf32>", 1e-4, 1e-5});
  c.push_back({"reduce_sum_middle", {f("x", "tensor<7x33x10xf32>")}, {"tensor<7x10xf32>"},
               "%r0 = kiln.reduce_sum %x, dims = [1] : tensor<7x33x10xf32> -> tensor<7x10xf32>", 1e-5, 1e-5});
  // Reduced dimensions between kept ones: a column reduction per batch
  // (a mixture of experts' bias gradients, [E, slots, F] -> [E, F]).
  c.push_back({"reduce_sum_middle_bf16", {f("x", "tensor<8x640x96xbf16>")}, {"tensor<8x96xbf16>"},
               "%r0 = kiln.reduce_sum %x, dims = [1] : tensor<8x640x96xbf16> -> tensor<8x96xbf16>", 1e-1, 8e-3});
  c.push_back({"reduce_max_middle_words", {f("x", "tensor<3x5x100x256xf32>")}, {"tensor<3x256xf32>"},
               "%r0 = kiln.reduce_max %x, dims = [1, 2] : tensor<3x5x100x256xf32> -> tensor<3x256xf32>", 0, 0});
  // Two rows per batch (a top-2 mixture's sum over its choices): the rows
  // do not split, so the general kernel runs, without partial sums.
  c.push_back({"reduce_sum_middle_short", {f("x", "tensor<512x2x768xf32>")}, {"tensor<512x768xf32>"},
               "%r0 = kiln.reduce_sum %x, dims = [1] : tensor<512x2x768xf32> -> tensor<512x768xf32>", 1e-6, 1e-6});
  c.push_back({"reduce_mean_middle", {f("x", "tensor<6x77x2x5xf32>")}, {"tensor<6x5xf32>"},
               "%r0 = kiln.reduce_mean %x, dims = [1, 2] : tensor<6x77x2x5xf32> -> tensor<6x5xf32>", 1e-6, 1e-5});
  c.push_back({"reduce_sum_columns", {f("x", "tensor<64x300x77xf32>")}, {"tensor<77xf32>"},
               "%r0 = kiln.reduce_sum %x, dims = [0, 1] : tensor<64x300x77xf32> -> tensor<77xf32>", 1e-3, 1e-5});
  // The column sums' blocks of 32 words × 8 rows: a last chunk of one row,
  // a block's words past the row's end, narrow rows (4 × 64 threads, three
  // batches) and the bias gradient's shape of GPT-2's fc layer at B = 4.
  c.push_back({"reduce_sum_columns_ragged",
               {f("x", "tensor<1001x136xf32>")},
               {"tensor<136xf32>"},
               "%r0 = kiln.reduce_sum %x, dims = [0] : tensor<1001x136xf32> -> tensor<136xf32>",
               1e-4,
               1e-5});
  c.push_back({"reduce_max_columns_narrow_bf16",
               {f("x", "tensor<3x1001x24xbf16>")},
               {"tensor<3x24xbf16>"},
               "%r0 = kiln.reduce_max %x, dims = [1] : tensor<3x1001x24xbf16> -> tensor<3x24xbf16>",
               0,
               0});
  c.push_back({"reduce_sum_columns_wide_bf16",
               {f("x", "tensor<4096x3072xbf16>")},
               {"tensor<3072xbf16>"},
               "%r0 = kiln.reduce_sum %x, dims = [0] : tensor<4096x3072xbf16> -> tensor<3072xbf16>",
               1e-1,
               8e-3});
  // One chunk a block when the columns' batches alone make the blocks (400
  // batches of 2 words); a word-wide f64 mean (1 word × 256 row lanes).
  c.push_back({"reduce_sum_columns_one_chunk",
               {f("x", "tensor<400x256x8xf32>")},
               {"tensor<400x8xf32>"},
               "%r0 = kiln.reduce_sum %x, dims = [1] : tensor<400x256x8xf32> -> tensor<400x8xf32>",
               1e-4,
               1e-5});
  c.push_back({"reduce_mean_columns_f64",
               {f("x", "tensor<2x600x2xf64>")},
               {"tensor<2x2xf64>"},
               "%r0 = kiln.reduce_mean %x, dims = [1] : tensor<2x600x2xf64> -> tensor<2x2xf64>",
               1e-12,
               1e-12});
  c.push_back({"reduce_max_last", {f("x", "tensor<13x257xf32>")}, {"tensor<13xf32>"},
               "%r0 = kiln.reduce_max %x, dims = [1] : tensor<13x257xf32> -> tensor<13xf32>", 0, 0});
  c.push_back({"reduce_mean_all", {f("x", "tensor<4x8x16xf32>")}, {"tensor<f32>"},
               "%r0 = kiln.reduce_mean %x, dims = [0, 1, 2] : tensor<4x8x16xf32> -> tensor<f32>", 1e-6, 1e-5});
  // Matmul (cuBLASLt).
  c.push_back({"matmul_shared_weight", {f("x", "tensor<4x8x64xf32>"), f("w", "tensor<64x96xf32>")},
               {"tensor<4x8x96xf32>"},
               "%r0 = kiln.matmul %x, %w : tensor<4x8x64xf32>, tensor<64x96xf32> -> tensor<4x8x96xf32>", 1e-4, 1e-5});
  c.push_back({"matmul_bias", {f("x", "tensor<4x8x64xf32>"), f("w", "tensor<64x96xf32>"), f("b", "tensor<96xf32>")},
               {"tensor<4x8x96xf32>"},
               "%r0 = kiln.matmul %x, %w bias %b : tensor<4x8x64xf32>, tensor<64x96xf32>, tensor<96xf32> -> tensor<4x8x96xf32>", 1e-4, 1e-5});
  c.push_back({"matmul_bias_batched", {f("p", "tensor<2x3x8x8xf32>"), f("v", "tensor<2x3x8x16xf32>"), f("b", "tensor<16xf32>")},
               {"tensor<2x3x8x16xf32>"},
               "%r0 = kiln.matmul %p, %v bias %b : tensor<2x3x8x8xf32>, tensor<2x3x8x16xf32>, tensor<16xf32> -> tensor<2x3x8x16xf32>", 1e-4, 1e-5});
  c.push_back({"matmul_odd", {f("x", "tensor<37x29xf32>"), f("w", "tensor<29x61xf32>")}, {"tensor<37x61xf32>"},
               "%r0 = kiln.matmul %x, %w : tensor<37x29xf32>, tensor<29x61xf32> -> tensor<37x61xf32>", 1e-4, 1e-5});
  c.push_back({"matmul_transpose_b", {f("q", "tensor<2x3x8x16xf32>"), f("k", "tensor<2x3x8x16xf32>")},
               {"tensor<2x3x8x8xf32>"},
               "%r0 = kiln.matmul %q, %k transpose_b : tensor<2x3x8x16xf32>, tensor<2x3x8x16xf32> -> tensor<2x3x8x8xf32>", 1e-4, 1e-5});
  c.push_back({"matmul_transpose_a", {f("x", "tensor<48x24xf32>"), f("d", "tensor<48x40xf32>")}, {"tensor<24x40xf32>"},
               "%r0 = kiln.matmul %x, %d transpose_a : tensor<48x24xf32>, tensor<48x40xf32> -> tensor<24x40xf32>", 1e-4, 1e-5});
  c.push_back({"matmul_batched", {f("p", "tensor<2x3x8x8xf32>"), f("v", "tensor<2x3x8x16xf32>")},
               {"tensor<2x3x8x16xf32>"},
               "%r0 = kiln.matmul %p, %v : tensor<2x3x8x8xf32>, tensor<2x3x8x16xf32> -> tensor<2x3x8x16xf32>", 1e-4, 1e-5});
  // Composites and their backward ops.
  c.push_back({"embedding", {f("table", "tensor<100x48xf32>"), ids("ids", "tensor<3x17xi32>", 100)},
               {"tensor<3x17x48xf32>"},
               "%r0 = kiln.embedding %table, %ids : tensor<100x48xf32>, tensor<3x17xi32> -> tensor<3x17x48xf32>", 0, 0});
  c.push_back({"embedding_grad", {ids("ids", "tensor<4x64xi32>", 50), f("d", "tensor<4x64x24xf32>")},
               {"tensor<50x24xf32>"},
               "%r0 = kiln.embedding_grad %ids, %d : tensor<4x64xi32>, tensor<4x64x24xf32> -> tensor<50x24xf32>", 1e-5, 1e-5});
  // A tied table's two gradients: the rows add into init, a copy of it
  // (f32, alive after), or it widened (bf16, GPT-2's head gradient);
  // 38 ids over 50 rows leave rows that are init alone.
  c.push_back({"embedding_grad_init_f32", {ids("ids", "tensor<2x19xi32>", 50), f("d", "tensor<2x19x24xf32>"), f("h", "tensor<50x24xf32>")},
               {"tensor<50x24xf32>", "tensor<50x24xf32>"},
               "%r0 = kiln.embedding_grad %ids, %d init %h : tensor<2x19xi32>, tensor<2x19x24xf32>, tensor<50x24xf32> -> tensor<50x24xf32>\n"
               "  %r1 = kiln.neg %h : tensor<50x24xf32>", 1e-5, 1e-5});
  c.push_back({"embedding_grad_init_bf16", {ids("ids", "tensor<4x64xi32>", 50), f("d", "tensor<4x64x24xf32>"), f("h", "tensor<50x24xbf16>")},
               {"tensor<50x24xf32>"},
               "%r0 = kiln.embedding_grad %ids, %d init %h : tensor<4x64xi32>, tensor<4x64x24xf32>, tensor<50x24xbf16> -> tensor<50x24xf32>", 1e-5, 1e-5});
  // Batched: each of 3 tables gathered by its own ids (a mixture of
  // experts' groups), and the scatter-add into each.
  c.push_back({"embedding_batched", {f("table", "tensor<3x20x16xf32>"), ids("ids", "tensor<3x7x2xi32>", 20)},
               {"tensor<3x7x2x16xf32>"},
               "%r0 = kiln.embedding %table, %ids : tensor<3x20x16xf32>, tensor<3x7x2xi32> -> tensor<3x7x2x16xf32>", 0, 0});
  c.push_back({"embedding_grad_batched", {ids("ids", "tensor<2x40xi32>", 9), f("d", "tensor<2x40x8xf32>")},
               {"tensor<2x9x8xf32>"},
               "%r0 = kiln.embedding_grad %ids, %d : tensor<2x40xi32>, tensor<2x40x8xf32> -> tensor<2x9x8xf32>", 1e-5, 1e-5});
  c.push_back({"softmax_long_rows", {f("x", "tensor<6x1000xf32>")}, {"tensor<6x1000xf32>"},
               "%r0 = kiln.softmax %x : tensor<6x1000xf32>", 1e-7, 1e-5});
  c.push_back({"softmax_short_rows", {f("x", "tensor<2x4x16x16xf32>")}, {"tensor<2x4x16x16xf32>"},
               "%r0 = kiln.softmax %x : tensor<2x4x16x16xf32>", 1e-7, 1e-5});
  c.push_back({"log_softmax", {f("x", "tensor<5x333xf32>")}, {"tensor<5x333xf32>"},
               "%r0 = kiln.log_softmax %x : tensor<5x333xf32>", 1e-5, 1e-5});
  c.push_back({"softmax_grad", {f("x", "tensor<8x200xf32>"), f("d", "tensor<8x200xf32>")}, {"tensor<8x200xf32>"},
               "%y = kiln.softmax %x : tensor<8x200xf32>\n"
               "  %r0 = kiln.softmax_grad %y, %d : tensor<8x200xf32>", 1e-6, 1e-4});
  c.push_back({"layer_norm", {f("x", "tensor<3x5x768xf32>"), f("g", "tensor<768xf32>"), f("b", "tensor<768xf32>")},
               {"tensor<3x5x768xf32>", "tensor<3x5xf32>", "tensor<3x5xf32>"},
               "%r0, %r1, %r2 = kiln.layer_norm %x, %g, %b {epsilon = 1.0e-05 : f32} : tensor<3x5x768xf32>, tensor<768xf32>, tensor<768xf32> -> tensor<3x5x768xf32>, tensor<3x5xf32>, tensor<3x5xf32>",
               1e-5, 1e-4});
  // A norm writing bf16/f16 from f32 (kiln-fuse's folded cast): the f32
  // result rounded once; the f32 results above differ by ~1e-5, which can
  // move a rounding by one ulp (2^-8 relative in bf16, 2^-11 in f16).
  c.push_back({"layer_norm_f32_to_bf16", {f("x", "tensor<3x5x768xf32>"), f("g", "tensor<768xf32>"), f("b", "tensor<768xf32>")},
               {"tensor<3x5x768xbf16>", "tensor<3x5xf32>", "tensor<3x5xf32>"},
               "%r0, %r1, %r2 = kiln.layer_norm %x, %g, %b {epsilon = 1.0e-05 : f32} : tensor<3x5x768xf32>, tensor<768xf32>, tensor<768xf32> -> tensor<3x5x768xbf16>, tensor<3x5xf32>, tensor<3x5xf32>",
               1e-5, 8e-3});
  c.push_back({"rms_norm_f32_to_f16", {f("x", "tensor<6x256xf32>"), f("g", "tensor<256xf32>")},
               {"tensor<6x256xf16>", "tensor<6xf32>"},
               "%r0, %r1 = kiln.rms_norm %x, %g {epsilon = 1.0e-06 : f32} : tensor<6x256xf32>, tensor<256xf32> -> tensor<6x256xf16>, tensor<6xf32>",
               1e-5, 1e-3});
  c.push_back({"layer_norm_grad", {f("x", "tensor<64x130xf32>"), f("g", "tensor<130xf32>"), f("b", "tensor<130xf32>"), f("d", "tensor<64x130xf32>")},
               {"tensor<64x130xf32>", "tensor<130xf32>", "tensor<130xf32>"},
               "%y, %mean, %rstd = kiln.layer_norm %x, %g, %b {epsilon = 1.0e-05 : f32} : tensor<64x130xf32>, tensor<130xf32>, tensor<130xf32> -> tensor<64x130xf32>, tensor<64xf32>, tensor<64xf32>\n"
               "  %r0, %r1, %r2 = kiln.layer_norm_grad %x, %g, %mean, %rstd, %d : tensor<64x130xf32>, tensor<130xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64x130xf32> -> tensor<64x130xf32>, tensor<130xf32>, tensor<130xf32>",
               1e-4, 1e-4});
  // A narrow dy for f32 x (kiln-fuse's folded widening): widened as loaded.
  c.push_back({"layer_norm_grad_bf16_dy", {f("x", "tensor<64x130xf32>"), f("g", "tensor<130xf32>"), f("b", "tensor<130xf32>"), f("d", "tensor<64x130xbf16>")},
               {"tensor<64x130xf32>", "tensor<130xf32>", "tensor<130xf32>"},
               "%y, %mean, %rstd = kiln.layer_norm %x, %g, %b {epsilon = 1.0e-05 : f32} : tensor<64x130xf32>, tensor<130xf32>, tensor<130xf32> -> tensor<64x130xf32>, tensor<64xf32>, tensor<64xf32>\n"
               "  %r0, %r1, %r2 = kiln.layer_norm_grad %x, %g, %mean, %rstd, %d : tensor<64x130xf32>, tensor<130xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64x130xbf16> -> tensor<64x130xf32>, tensor<130xf32>, tensor<130xf32>",
               1e-4, 1e-4});
  c.push_back({"rms_norm_grad_f16_dy", {f("x", "tensor<40x96xf32>"), f("g", "tensor<96xf32>"), f("d", "tensor<40x96xf16>")},
               {"tensor<40x96xf32>", "tensor<96xf32>"},
               "%y, %rstd = kiln.rms_norm %x, %g {epsilon = 1.0e-06 : f32} : tensor<40x96xf32>, tensor<96xf32> -> tensor<40x96xf32>, tensor<40xf32>\n"
               "  %r0, %r1 = kiln.rms_norm_grad %x, %g, %rstd, %d : tensor<40x96xf32>, tensor<96xf32>, tensor<40xf32>, tensor<40x96xf16> -> tensor<40x96xf32>, tensor<96xf32>",
               1e-4, 1e-4});
  c.push_back({"rms_norm", {f("x", "tensor<6x256xf32>"), f("g", "tensor<256xf32>")},
               {"tensor<6x256xf32>", "tensor<6xf32>"},
               "%r0, %r1 = kiln.rms_norm %x, %g {epsilon = 1.0e-06 : f32} : tensor<6x256xf32>, tensor<256xf32> -> tensor<6x256xf32>, tensor<6xf32>",
               1e-5, 1e-4});
  c.push_back({"rms_norm_grad", {f("x", "tensor<40x96xf32>"), f("g", "tensor<96xf32>"), f("d", "tensor<40x96xf32>")},
               {"tensor<40x96xf32>", "tensor<96xf32>"},
               "%y, %rstd = kiln.rms_norm %x, %g {epsilon = 1.0e-06 : f32} : tensor<40x96xf32>, tensor<96xf32> -> tensor<40x96xf32>, tensor<40xf32>\n"
               "  %r0, %r1 = kiln.rms_norm_grad %x, %g, %rstd, %d : tensor<40x96xf32>, tensor<96xf32>, tensor<40xf32>, tensor<40x96xf32> -> tensor<40x96xf32>, tensor<96xf32>",
               1e-4, 1e-4});
  // Norm fusions (kiln-fuse's): a warp per row holding the row in
  // registers, the body's elementwise ops run on 16-byte vectors. Rows not
  // a multiple of the 8 warps a block has; bf16 (8 a vector) and f32 (4).
  c.push_back({"norm_fusion_residual_layer_norm_bf16",
               {f("a", "tensor<4x33x768xbf16>"), f("r", "tensor<4x33x768xf32>"), f("g", "tensor<768xf32>"), f("b", "tensor<768xf32>")},
               {"tensor<4x33x768xf32>", "tensor<4x33x768xbf16>", "tensor<4x33xf32>", "tensor<4x33xf32>"},
               "%r0, %r1, %r2, %r3 = kiln.fusion (%a, %r, %g, %b) : (tensor<4x33x768xbf16>, tensor<4x33x768xf32>, tensor<768xf32>, tensor<768xf32>) -> (tensor<4x33x768xf32>, tensor<4x33x768xbf16>, tensor<4x33xf32>, tensor<4x33xf32>) {\n"
               "  ^bb0(%x: tensor<4x33x768xbf16>, %s: tensor<4x33x768xf32>, %w: tensor<768xf32>, %c: tensor<768xf32>):\n"
               "    %0 = kiln.cast %x : tensor<4x33x768xbf16> to tensor<4x33x768xf32>\n"
               "    %1 = kiln.add %s, %0 : tensor<4x33x768xf32>\n"
               "    %y, %m, %q = kiln.layer_norm %1, %w, %c {epsilon = 1.0e-05 : f32} : tensor<4x33x768xf32>, tensor<768xf32>, tensor<768xf32> -> tensor<4x33x768xbf16>, tensor<4x33xf32>, tensor<4x33xf32>\n"
               "    kiln.yield %1, %y, %m, %q : tensor<4x33x768xf32>, tensor<4x33x768xbf16>, tensor<4x33xf32>, tensor<4x33xf32>\n"
               "  }", 1e-5, 8e-3});
  // A norm fusion reading a [T, C] table through its index map, a vector
  // at a time.
  c.push_back({"norm_fusion_broadcast_positions_bf16",
               {f("e", "tensor<3x40x256xf32>"), f("p", "tensor<40x256xf32>"), f("g", "tensor<256xf32>"), f("b", "tensor<256xf32>")},
               {"tensor<3x40x256xf32>", "tensor<3x40x256xbf16>"},
               "%r0, %r1 = kiln.fusion (%e, %p, %g, %b) : (tensor<3x40x256xf32>, tensor<40x256xf32>, tensor<256xf32>, tensor<256xf32>) -> (tensor<3x40x256xf32>, tensor<3x40x256xbf16>) {\n"
               "  ^bb0(%x: tensor<3x40x256xf32>, %q: tensor<40x256xf32>, %w: tensor<256xf32>, %c: tensor<256xf32>):\n"
               "    %0 = kiln.broadcast_in_dim %q, dims = [1, 2] : tensor<40x256xf32> -> tensor<3x40x256xf32>\n"
               "    %1 = kiln.add %x, %0 : tensor<3x40x256xf32>\n"
               "    %y, %m, %s = kiln.layer_norm %1, %w, %c {epsilon = 1.0e-05 : f32} : tensor<3x40x256xf32>, tensor<256xf32>, tensor<256xf32> -> tensor<3x40x256xbf16>, tensor<3x40xf32>, tensor<3x40xf32>\n"
               "    kiln.yield %1, %y : tensor<3x40x256xf32>, tensor<3x40x256xbf16>\n"
               "  }", 1e-2, 8e-3});
  // An i1 operand (read element by element), a bf16 intermediate the norm
  // reads rounded, no mean; RMS over f32 rows of 256.
  c.push_back({"norm_fusion_mask_rms_norm",
               {f("a", "tensor<37x256xf32>"), f("r", "tensor<37x256xf32>"), mask("m", "tensor<37x256xi1>"), f("g", "tensor<256xf32>")},
               {"tensor<37x256xf32>", "tensor<37xf32>"},
               "%r0, %r1 = kiln.fusion (%a, %r, %m, %g) : (tensor<37x256xf32>, tensor<37x256xf32>, tensor<37x256xi1>, tensor<256xf32>) -> (tensor<37x256xf32>, tensor<37xf32>) {\n"
               "  ^bb0(%x: tensor<37x256xf32>, %s: tensor<37x256xf32>, %k: tensor<37x256xi1>, %w: tensor<256xf32>):\n"
               "    %0 = kiln.select %k, %x, %s : tensor<37x256xi1>, tensor<37x256xf32>\n"
               "    %1 = kiln.add %0, %s : tensor<37x256xf32>\n"
               "    %2 = kiln.cast %1 : tensor<37x256xf32> to tensor<37x256xbf16>\n"
               "    %3 = kiln.cast %2 : tensor<37x256xbf16> to tensor<37x256xf32>\n"
               "    %y, %q = kiln.rms_norm %3, %w {epsilon = 1.0e-06 : f32} : tensor<37x256xf32>, tensor<256xf32> -> tensor<37x256xf32>, tensor<37xf32>\n"
               "    kiln.yield %y, %q : tensor<37x256xf32>, tensor<37xf32>\n"
               "  }", 1e-5, 1e-4});
  c.push_back({"norm_fusion_layer_norm_grad_add_cast",
               {f("x", "tensor<2x45x768xf32>"), f("g", "tensor<768xf32>"), f("b", "tensor<768xf32>"), f("d", "tensor<2x45x768xf32>"), f("r", "tensor<2x45x768xf32>")},
               {"tensor<768xf32>", "tensor<768xf32>", "tensor<2x45x768xf32>", "tensor<2x45x768xbf16>"},
               "%y, %mean, %rstd = kiln.layer_norm %x, %g, %b {epsilon = 1.0e-05 : f32} : tensor<2x45x768xf32>, tensor<768xf32>, tensor<768xf32> -> tensor<2x45x768xf32>, tensor<2x45xf32>, tensor<2x45xf32>\n"
               "  %r0, %r1, %r2, %r3 = kiln.fusion (%x, %g, %mean, %rstd, %d, %r) : (tensor<2x45x768xf32>, tensor<768xf32>, tensor<2x45xf32>, tensor<2x45xf32>, tensor<2x45x768xf32>, tensor<2x45x768xf32>) -> (tensor<768xf32>, tensor<768xf32>, tensor<2x45x768xf32>, tensor<2x45x768xbf16>) {\n"
               "  ^bb0(%a0: tensor<2x45x768xf32>, %a1: tensor<768xf32>, %a2: tensor<2x45xf32>, %a3: tensor<2x45xf32>, %a4: tensor<2x45x768xf32>, %a5: tensor<2x45x768xf32>):\n"
               "    %dx, %dw, %db = kiln.layer_norm_grad %a0, %a1, %a2, %a3, %a4 : tensor<2x45x768xf32>, tensor<768xf32>, tensor<2x45xf32>, tensor<2x45xf32>, tensor<2x45x768xf32> -> tensor<2x45x768xf32>, tensor<768xf32>, tensor<768xf32>\n"
               "    %0 = kiln.add %a5, %dx : tensor<2x45x768xf32>\n"
               "    %1 = kiln.cast %0 : tensor<2x45x768xf32> to tensor<2x45x768xbf16>\n"
               "    kiln.yield %dw, %db, %0, %1 : tensor<768xf32>, tensor<768xf32>, tensor<2x45x768xf32>, tensor<2x45x768xbf16>\n"
               "  }", 1e-4, 8e-3});
  // GPT-2's bf16 step: dy is the bf16 product the norm gradient widens.
  c.push_back({"norm_fusion_layer_norm_grad_bf16_dy",
               {f("x", "tensor<2x45x768xf32>"), f("g", "tensor<768xf32>"), f("b", "tensor<768xf32>"), f("d", "tensor<2x45x768xbf16>"), f("r", "tensor<2x45x768xf32>")},
               {"tensor<768xf32>", "tensor<768xf32>", "tensor<2x45x768xf32>", "tensor<2x45x768xbf16>"},
               "%y, %mean, %rstd = kiln.layer_norm %x, %g, %b {epsilon = 1.0e-05 : f32} : tensor<2x45x768xf32>, tensor<768xf32>, tensor<768xf32> -> tensor<2x45x768xf32>, tensor<2x45xf32>, tensor<2x45xf32>\n"
               "  %r0, %r1, %r2, %r3 = kiln.fusion (%x, %g, %mean, %rstd, %d, %r) : (tensor<2x45x768xf32>, tensor<768xf32>, tensor<2x45xf32>, tensor<2x45xf32>, tensor<2x45x768xbf16>, tensor<2x45x768xf32>) -> (tensor<768xf32>, tensor<768xf32>, tensor<2x45x768xf32>, tensor<2x45x768xbf16>) {\n"
               "  ^bb0(%a0: tensor<2x45x768xf32>, %a1: tensor<768xf32>, %a2: tensor<2x45xf32>, %a3: tensor<2x45xf32>, %a4: tensor<2x45x768xbf16>, %a5: tensor<2x45x768xf32>):\n"
               "    %dx, %dw, %db = kiln.layer_norm_grad %a0, %a1, %a2, %a3, %a4 : tensor<2x45x768xf32>, tensor<768xf32>, tensor<2x45xf32>, tensor<2x45xf32>, tensor<2x45x768xbf16> -> tensor<2x45x768xf32>, tensor<768xf32>, tensor<768xf32>\n"
               "    %0 = kiln.add %a5, %dx : tensor<2x45x768xf32>\n"
               "    %1 = kiln.cast %0 : tensor<2x45x768xf32> to tensor<2x45x768xbf16>\n"
               "    kiln.yield %dw, %db, %0, %1 : tensor<768xf32>, tensor<768xf32>, tensor<2x45x768xf32>, tensor<2x45x768xbf16>\n"
               "  }", 1e-4, 8e-3});
  // The next projection's bias gradient summed in the norm gradient's
  // kernel (accumulated in shared memory from the bf16 values it stores):
  // 1200 rows over 150 blocks, their partials added by the second kernel.
  c.push_back({"norm_fusion_layer_norm_grad_column_sum",
               {f("x", "tensor<4x300x768xf32>"), f("g", "tensor<768xf32>"), f("b", "tensor<768xf32>"), f("d", "tensor<4x300x768xbf16>"), f("r", "tensor<4x300x768xf32>")},
               {"tensor<768xf32>", "tensor<768xf32>", "tensor<4x300x768xf32>", "tensor<4x300x768xbf16>", "tensor<768xf32>"},
               "%y, %mean, %rstd = kiln.layer_norm %x, %g, %b {epsilon = 1.0e-05 : f32} : tensor<4x300x768xf32>, tensor<768xf32>, tensor<768xf32> -> tensor<4x300x768xf32>, tensor<4x300xf32>, tensor<4x300xf32>\n"
               "  %r0, %r1, %r2, %r3, %r4 = kiln.fusion (%x, %g, %mean, %rstd, %d, %r) : (tensor<4x300x768xf32>, tensor<768xf32>, tensor<4x300xf32>, tensor<4x300xf32>, tensor<4x300x768xbf16>, tensor<4x300x768xf32>) -> (tensor<768xf32>, tensor<768xf32>, tensor<4x300x768xf32>, tensor<4x300x768xbf16>, tensor<768xf32>) {\n"
               "  ^bb0(%a0: tensor<4x300x768xf32>, %a1: tensor<768xf32>, %a2: tensor<4x300xf32>, %a3: tensor<4x300xf32>, %a4: tensor<4x300x768xbf16>, %a5: tensor<4x300x768xf32>):\n"
               "    %dx, %dw, %db = kiln.layer_norm_grad %a0, %a1, %a2, %a3, %a4 : tensor<4x300x768xf32>, tensor<768xf32>, tensor<4x300xf32>, tensor<4x300xf32>, tensor<4x300x768xbf16> -> tensor<4x300x768xf32>, tensor<768xf32>, tensor<768xf32>\n"
               "    %0 = kiln.add %a5, %dx : tensor<4x300x768xf32>\n"
               "    %1 = kiln.cast %0 : tensor<4x300x768xf32> to tensor<4x300x768xbf16>\n"
               "    %2 = kiln.reduce_sum %1, dims = [0, 1] : tensor<4x300x768xbf16> -> tensor<768xbf16>\n"
               "    %3 = kiln.cast %2 : tensor<768xbf16> to tensor<768xf32>\n"
               "    kiln.yield %dw, %db, %0, %1, %3 : tensor<768xf32>, tensor<768xf32>, tensor<4x300x768xf32>, tensor<4x300x768xbf16>, tensor<768xf32>\n"
               "  }", 1e-3, 8e-3});
  // An RMS norm's f32 dx summed directly (a value the body does not store
  // otherwise: its own register vector), rows of 128.
  c.push_back({"norm_fusion_rms_norm_grad_column_sum_f32",
               {f("x", "tensor<333x128xf32>"), f("g", "tensor<128xf32>"), f("d", "tensor<333x128xf32>"), f("h", "tensor<333x128xf32>")},
               {"tensor<128xf32>", "tensor<333x128xf32>", "tensor<128xf32>"},
               "%y, %rstd = kiln.rms_norm %x, %g {epsilon = 1.0e-06 : f32} : tensor<333x128xf32>, tensor<128xf32> -> tensor<333x128xf32>, tensor<333xf32>\n"
               "  %r0, %r1, %r2 = kiln.fusion (%x, %g, %rstd, %d, %h) : (tensor<333x128xf32>, tensor<128xf32>, tensor<333xf32>, tensor<333x128xf32>, tensor<333x128xf32>) -> (tensor<128xf32>, tensor<333x128xf32>, tensor<128xf32>) {\n"
               "  ^bb0(%a0: tensor<333x128xf32>, %a1: tensor<128xf32>, %a2: tensor<333xf32>, %a3: tensor<333x128xf32>, %a4: tensor<333x128xf32>):\n"
               "    %dx, %dw = kiln.rms_norm_grad %a0, %a1, %a2, %a3 : tensor<333x128xf32>, tensor<128xf32>, tensor<333xf32>, tensor<333x128xf32> -> tensor<333x128xf32>, tensor<128xf32>\n"
               "    %0 = kiln.mul %dx, %a4 : tensor<333x128xf32>\n"
               "    %1 = kiln.reduce_sum %dx, dims = [0] : tensor<333x128xf32> -> tensor<128xf32>\n"
               "    kiln.yield %dw, %0, %1 : tensor<128xf32>, tensor<333x128xf32>, tensor<128xf32>\n"
               "  }", 1e-4, 1e-4});
  // dx yielded beside the body's f16 product of it.
  c.push_back({"norm_fusion_rms_norm_grad_f16",
               {f("x", "tensor<40x128xf32>"), f("g", "tensor<128xf32>"), f("d", "tensor<40x128xf32>"), f("h", "tensor<40x128xf16>")},
               {"tensor<40x128xf32>", "tensor<128xf32>", "tensor<40x128xf16>"},
               "%y, %rstd = kiln.rms_norm %x, %g {epsilon = 1.0e-06 : f32} : tensor<40x128xf32>, tensor<128xf32> -> tensor<40x128xf32>, tensor<40xf32>\n"
               "  %r0, %r1, %r2 = kiln.fusion (%x, %g, %rstd, %d, %h) : (tensor<40x128xf32>, tensor<128xf32>, tensor<40xf32>, tensor<40x128xf32>, tensor<40x128xf16>) -> (tensor<40x128xf32>, tensor<128xf32>, tensor<40x128xf16>) {\n"
               "  ^bb0(%a0: tensor<40x128xf32>, %a1: tensor<128xf32>, %a2: tensor<40xf32>, %a3: tensor<40x128xf32>, %a4: tensor<40x128xf16>):\n"
               "    %dx, %dw = kiln.rms_norm_grad %a0, %a1, %a2, %a3 : tensor<40x128xf32>, tensor<128xf32>, tensor<40xf32>, tensor<40x128xf32> -> tensor<40x128xf32>, tensor<128xf32>\n"
               "    %0 = kiln.cast %dx : tensor<40x128xf32> to tensor<40x128xf16>\n"
               "    %1 = kiln.mul %0, %a4 : tensor<40x128xf16>\n"
               "    kiln.yield %dx, %dw, %1 : tensor<40x128xf32>, tensor<128xf32>, tensor<40x128xf16>\n"
               "  }", 1e-4, 2e-3});
  c.push_back({"rope", {f("x", "tensor<2x3x8x16xf32>")}, {"tensor<2x3x8x16xf32>"},
               "%r0 = kiln.rope %x : tensor<2x3x8x16xf32>", 1e-5, 1e-5});
  c.push_back({"rope_position_dim_bf16", {f("x", "tensor<2x9x3x64xbf16>")}, {"tensor<2x9x3x64xbf16>"},
               "%r0 = kiln.rope %x {position_dim = 1 : i64} : tensor<2x9x3x64xbf16>", 1e-2, 8e-3});
  // A router's choices and slots are integers: equal, not close. 300 tokens
  // over 8 experts with 60 slots each (choices are dropped); 1000 bf16
  // scores over 4 experts (ties) with i64 results, three blocks of the
  // slot scan.
  c.push_back({"moe_route", {f("p", "tensor<300x8xf32>")},
               {"tensor<300x2xi32>", "tensor<300x2xi32>", "tensor<480xi32>"},
               "%r0, %r1, %r2 = kiln.moe_route %p {top_k = 2 : i64, capacity = 60 : i64} : "
               "tensor<300x8xf32> -> tensor<300x2xi32>, tensor<300x2xi32>, tensor<480xi32>",
               0, 0});
  c.push_back({"moe_route_ties_bf16_i64", {f("p", "tensor<1000x4xbf16>")},
               {"tensor<1000x3xi64>", "tensor<1000x3xi64>", "tensor<2800xi64>"},
               "%r0, %r1, %r2 = kiln.moe_route %p {top_k = 3 : i64, capacity = 700 : i64} : "
               "tensor<1000x4xbf16> -> tensor<1000x3xi64>, tensor<1000x3xi64>, tensor<2800xi64>",
               0, 0});
  // Three groups of 100 tokens, each filling its own 20 slots per expert.
  c.push_back({"moe_route_groups", {f("p", "tensor<3x100x8xf32>")},
               {"tensor<3x100x2xi32>", "tensor<3x100x2xi32>", "tensor<3x160xi32>"},
               "%r0, %r1, %r2 = kiln.moe_route %p {top_k = 2 : i64, capacity = 20 : i64} : "
               "tensor<3x100x8xf32> -> tensor<3x100x2xi32>, tensor<3x100x2xi32>, tensor<3x160xi32>",
               0, 0});
  c.push_back({"rope_inverse", {f("x", "tensor<2x8x16xf32>")}, {"tensor<2x8x16xf32>"},
               "%r0 = kiln.rope %x {theta = 5.0e+05 : f32, inverse} : tensor<2x8x16xf32>", 1e-5, 1e-5});
  c.push_back({"cross_entropy", {f("logits", "tensor<4x6x1000xf32>"), ids("t", "tensor<4x6xi32>", 990)},
               {"tensor<4x6xf32>", "tensor<4x6xf32>"},
               "%r0, %r1 = kiln.cross_entropy %logits, %t {valid_classes = 990 : i64} : tensor<4x6x1000xf32>, tensor<4x6xi32> -> tensor<4x6xf32>, tensor<4x6xf32>",
               1e-5, 1e-5});
  c.push_back({"cross_entropy_grad", {f("logits", "tensor<3x2x515xf32>"), ids("t", "tensor<3x2xi32>", 500), f("dl", "tensor<3x2xf32>")},
               {"tensor<3x2x515xf32>"},
               "%l, %lse = kiln.cross_entropy %logits, %t {valid_classes = 500 : i64} : tensor<3x2x515xf32>, tensor<3x2xi32> -> tensor<3x2xf32>, tensor<3x2xf32>\n"
               "  %r0 = kiln.cross_entropy_grad %logits, %t, %lse, %dl {valid_classes = 500 : i64} : tensor<3x2x515xf32>, tensor<3x2xi32>, tensor<3x2xf32>, tensor<3x2xf32> -> tensor<3x2x515xf32>",
               1e-6, 1e-4});
  // Rows of whole 16-byte vectors take the vector kernels (a valid-class
  // boundary inside a vector).
  c.push_back({"cross_entropy_grad_vec", {f("logits", "tensor<3x2x516xf32>"), ids("t", "tensor<3x2xi32>", 501), f("dl", "tensor<3x2xf32>")},
               {"tensor<3x2xf32>", "tensor<3x2x516xf32>"},
               "%r0, %lse = kiln.cross_entropy %logits, %t {valid_classes = 501 : i64} : tensor<3x2x516xf32>, tensor<3x2xi32> -> tensor<3x2xf32>, tensor<3x2xf32>\n"
               "  %r1 = kiln.cross_entropy_grad %logits, %t, %lse, %dl {valid_classes = 501 : i64} : tensor<3x2x516xf32>, tensor<3x2xi32>, tensor<3x2xf32>, tensor<3x2xf32> -> tensor<3x2x516xf32>",
               1e-6, 1e-4});
  c.push_back({"cross_entropy_grad_vec_bf16", {f("logits", "tensor<2x4x1024xbf16>"), ids("t", "tensor<2x4xi32>", 1000), f("dl", "tensor<2x4xf32>")},
               {"tensor<2x4xf32>", "tensor<2x4x1024xbf16>"},
               "%r0, %lse = kiln.cross_entropy %logits, %t {valid_classes = 1000 : i64} : tensor<2x4x1024xbf16>, tensor<2x4xi32> -> tensor<2x4xf32>, tensor<2x4xf32>\n"
               "  %r1 = kiln.cross_entropy_grad %logits, %t, %lse, %dl {valid_classes = 1000 : i64} : tensor<2x4x1024xbf16>, tensor<2x4xi32>, tensor<2x4xf32>, tensor<2x4xf32> -> tensor<2x4x1024xbf16>",
               1e-5, 1e-2});
  // A cross-entropy fusion (kiln-fuse's): a block a row, the gradient
  // written after the row's log-sum-exp; with lse yielded (bf16 rows of
  // 4104, the valid classes ending inside a vector) and without (f32).
  c.push_back({"cross_entropy_fusion_bf16", {f("logits", "tensor<3x5x4104xbf16>"), ids("t", "tensor<3x5xi32>", 4100), f("dl", "tensor<3x5xf32>")},
               {"tensor<3x5xf32>", "tensor<3x5xf32>", "tensor<3x5x4104xbf16>"},
               "%r0, %r1, %r2 = kiln.fusion (%logits, %t, %dl) : (tensor<3x5x4104xbf16>, tensor<3x5xi32>, tensor<3x5xf32>) -> (tensor<3x5xf32>, tensor<3x5xf32>, tensor<3x5x4104xbf16>) {\n"
               "  ^bb0(%a: tensor<3x5x4104xbf16>, %b: tensor<3x5xi32>, %c: tensor<3x5xf32>):\n"
               "    %l, %lse = kiln.cross_entropy %a, %b {valid_classes = 4100 : i64} : tensor<3x5x4104xbf16>, tensor<3x5xi32> -> tensor<3x5xf32>, tensor<3x5xf32>\n"
               "    %g = kiln.cross_entropy_grad %a, %b, %lse, %c {valid_classes = 4100 : i64} : tensor<3x5x4104xbf16>, tensor<3x5xi32>, tensor<3x5xf32>, tensor<3x5xf32> -> tensor<3x5x4104xbf16>\n"
               "    kiln.yield %l, %lse, %g : tensor<3x5xf32>, tensor<3x5xf32>, tensor<3x5x4104xbf16>\n"
               "  }", 1e-5, 1e-2});
  c.push_back({"cross_entropy_fusion_f32", {f("logits", "tensor<2x3x1000xf32>"), ids("t", "tensor<2x3xi32>", 1000), f("dl", "tensor<2x3xf32>")},
               {"tensor<2x3xf32>", "tensor<2x3x1000xf32>"},
               "%r0, %r1 = kiln.fusion (%logits, %t, %dl) : (tensor<2x3x1000xf32>, tensor<2x3xi32>, tensor<2x3xf32>) -> (tensor<2x3xf32>, tensor<2x3x1000xf32>) {\n"
               "  ^bb0(%a: tensor<2x3x1000xf32>, %b: tensor<2x3xi32>, %c: tensor<2x3xf32>):\n"
               "    %l, %lse = kiln.cross_entropy %a, %b : tensor<2x3x1000xf32>, tensor<2x3xi32> -> tensor<2x3xf32>, tensor<2x3xf32>\n"
               "    %g = kiln.cross_entropy_grad %a, %b, %lse, %c : tensor<2x3x1000xf32>, tensor<2x3xi32>, tensor<2x3xf32>, tensor<2x3xf32> -> tensor<2x3x1000xf32>\n"
               "    kiln.yield %l, %g : tensor<2x3xf32>, tensor<2x3x1000xf32>\n"
               "  }", 1e-6, 1e-4});
  // More rows (640) than the blocks resident at once, and long f32 rows
  // (30000 classes, 30 vectors a thread).
  c.push_back({"cross_entropy_fusion_bf16_rows", {f("logits", "tensor<4x160x1032xbf16>"), ids("t", "tensor<4x160xi32>", 1030), f("dl", "tensor<4x160xf32>")},
               {"tensor<4x160xf32>", "tensor<4x160x1032xbf16>"},
               "%r0, %r1 = kiln.fusion (%logits, %t, %dl) : (tensor<4x160x1032xbf16>, tensor<4x160xi32>, tensor<4x160xf32>) -> (tensor<4x160xf32>, tensor<4x160x1032xbf16>) {\n"
               "  ^bb0(%a: tensor<4x160x1032xbf16>, %b: tensor<4x160xi32>, %c: tensor<4x160xf32>):\n"
               "    %l, %lse = kiln.cross_entropy %a, %b {valid_classes = 1030 : i64} : tensor<4x160x1032xbf16>, tensor<4x160xi32> -> tensor<4x160xf32>, tensor<4x160xf32>\n"
               "    %g = kiln.cross_entropy_grad %a, %b, %lse, %c {valid_classes = 1030 : i64} : tensor<4x160x1032xbf16>, tensor<4x160xi32>, tensor<4x160xf32>, tensor<4x160xf32> -> tensor<4x160x1032xbf16>\n"
               "    kiln.yield %l, %g : tensor<4x160xf32>, tensor<4x160x1032xbf16>\n"
               "  }", 1e-5, 1e-2});
  c.push_back({"cross_entropy_fusion_f32_wide", {f("logits", "tensor<2x2x30000xf32>"), ids("t", "tensor<2x2xi32>", 29990), f("dl", "tensor<2x2xf32>")},
               {"tensor<2x2xf32>", "tensor<2x2x30000xf32>"},
               "%r0, %r1 = kiln.fusion (%logits, %t, %dl) : (tensor<2x2x30000xf32>, tensor<2x2xi32>, tensor<2x2xf32>) -> (tensor<2x2xf32>, tensor<2x2x30000xf32>) {\n"
               "  ^bb0(%a: tensor<2x2x30000xf32>, %b: tensor<2x2xi32>, %c: tensor<2x2xf32>):\n"
               "    %l, %lse = kiln.cross_entropy %a, %b {valid_classes = 29990 : i64} : tensor<2x2x30000xf32>, tensor<2x2xi32> -> tensor<2x2xf32>, tensor<2x2xf32>\n"
               "    %g = kiln.cross_entropy_grad %a, %b, %lse, %c {valid_classes = 29990 : i64} : tensor<2x2x30000xf32>, tensor<2x2xi32>, tensor<2x2xf32>, tensor<2x2xf32> -> tensor<2x2x30000xf32>\n"
               "    kiln.yield %l, %g : tensor<2x2xf32>, tensor<2x2x30000xf32>\n"
               "  }", 1e-6, 1e-4});
  // Ignored rows (target −1): loss 0 and a zero gradient row.
  c.push_back({"cross_entropy_fusion_ignored", {f("logits", "tensor<2x3x1000xf32>"), f("dl", "tensor<2x3xf32>")},
               {"tensor<2x3xf32>", "tensor<2x3x1000xf32>"},
               "%t = kiln.constant dense<[[5, -1, 999], [0, -1, 42]]> : tensor<2x3xi32>\n"
               "  %r0, %r1 = kiln.fusion (%logits, %t, %dl) : (tensor<2x3x1000xf32>, tensor<2x3xi32>, tensor<2x3xf32>) -> (tensor<2x3xf32>, tensor<2x3x1000xf32>) {\n"
               "  ^bb0(%a: tensor<2x3x1000xf32>, %b: tensor<2x3xi32>, %c: tensor<2x3xf32>):\n"
               "    %l, %lse = kiln.cross_entropy %a, %b : tensor<2x3x1000xf32>, tensor<2x3xi32> -> tensor<2x3xf32>, tensor<2x3xf32>\n"
               "    %g = kiln.cross_entropy_grad %a, %b, %lse, %c : tensor<2x3x1000xf32>, tensor<2x3xi32>, tensor<2x3xf32>, tensor<2x3xf32> -> tensor<2x3x1000xf32>\n"
               "    kiln.yield %l, %g : tensor<2x3xf32>, tensor<2x3x1000xf32>\n"
               "  }", 1e-6, 1e-4});
  c.push_back({"attention_causal", {f("q", "tensor<2x4x24x16xf32>"), f("k", "tensor<2x4x24x16xf32>"), f("v", "tensor<2x4x24x16xf32>")},
               {"tensor<2x4x24x16xf32>", "tensor<2x4x24xf32>"},
               "%r0, %r1 = kiln.attention %q, %k, %v {causal, scale = 0.25 : f32} : tensor<2x4x24x16xf32>, tensor<2x4x24x16xf32>, tensor<2x4x24x16xf32> -> tensor<2x4x24x16xf32>, tensor<2x4x24xf32>",
               1e-5, 1e-4});
  c.push_back({"attention_gqa", {f("q", "tensor<1x4x8x16xf32>"), f("k", "tensor<1x2x12x16xf32>"), f("v", "tensor<1x2x12x32xf32>")},
               {"tensor<1x4x8x32xf32>", "tensor<1x4x8xf32>"},
               "%r0, %r1 = kiln.attention %q, %k, %v {scale = 0.25 : f32} : tensor<1x4x8x16xf32>, tensor<1x2x12x16xf32>, tensor<1x2x12x32xf32> -> tensor<1x4x8x32xf32>, tensor<1x4x8xf32>",
               1e-5, 1e-4});
  c.push_back({"attention_grad", {f("q", "tensor<2x2x20x8xf32>"), f("k", "tensor<2x2x20x8xf32>"), f("v", "tensor<2x2x20x8xf32>"), f("d", "tensor<2x2x20x8xf32>")},
               {"tensor<2x2x20x8xf32>", "tensor<2x2x20x8xf32>", "tensor<2x2x20x8xf32>"},
               "%o, %lse = kiln.attention %q, %k, %v {causal, scale = 0.35 : f32} : tensor<2x2x20x8xf32>, tensor<2x2x20x8xf32>, tensor<2x2x20x8xf32> -> tensor<2x2x20x8xf32>, tensor<2x2x20xf32>\n"
               "  %r0, %r1, %r2 = kiln.attention_grad %q, %k, %v, %o, %lse, %d {causal, scale = 0.35 : f32} : tensor<2x2x20x8xf32>, tensor<2x2x20x8xf32>, tensor<2x2x20x8xf32>, tensor<2x2x20x8xf32>, tensor<2x2x20xf32>, tensor<2x2x20x8xf32> -> tensor<2x2x20x8xf32>, tensor<2x2x20x8xf32>, tensor<2x2x20x8xf32>",
               1e-4, 1e-4});
  // The reference kernels in layout bthd ([B, T, H, D]): grouped heads,
  // Dv != D, cross attention; then causal with its backward.
  c.push_back({"attention_gqa_bthd", {f("q", "tensor<2x8x4x16xf32>"), f("k", "tensor<2x12x2x16xf32>"), f("v", "tensor<2x12x2x32xf32>")},
               {"tensor<2x8x4x32xf32>", "tensor<2x4x8xf32>"},
               "%r0, %r1 = kiln.attention %q, %k, %v {layout = \"bthd\", scale = 0.25 : f32} : tensor<2x8x4x16xf32>, tensor<2x12x2x16xf32>, tensor<2x12x2x32xf32> -> tensor<2x8x4x32xf32>, tensor<2x4x8xf32>",
               1e-5, 1e-4});
  c.push_back({"attention_grad_gqa_bthd", {f("q", "tensor<2x20x4x8xf32>"), f("k", "tensor<2x20x2x8xf32>"), f("v", "tensor<2x20x2x8xf32>"), f("d", "tensor<2x20x4x8xf32>")},
               {"tensor<2x20x4x8xf32>", "tensor<2x20x2x8xf32>", "tensor<2x20x2x8xf32>"},
               "%o, %lse = kiln.attention %q, %k, %v {causal, layout = \"bthd\", scale = 0.35 : f32} : tensor<2x20x4x8xf32>, tensor<2x20x2x8xf32>, tensor<2x20x2x8xf32> -> tensor<2x20x4x8xf32>, tensor<2x4x20xf32>\n"
               "  %r0, %r1, %r2 = kiln.attention_grad %q, %k, %v, %o, %lse, %d {causal, layout = \"bthd\", scale = 0.35 : f32} : tensor<2x20x4x8xf32>, tensor<2x20x2x8xf32>, tensor<2x20x2x8xf32>, tensor<2x20x4x8xf32>, tensor<2x4x20xf32>, tensor<2x20x4x8xf32> -> tensor<2x20x4x8xf32>, tensor<2x20x2x8xf32>, tensor<2x20x2x8xf32>",
               1e-4, 1e-4});
  // The reference kernels with packed documents (segment ids in [0, 3)).
  c.push_back({"attention_grad_segments", {f("q", "tensor<2x2x20x8xf32>"), f("k", "tensor<2x2x20x8xf32>"), f("v", "tensor<2x2x20x8xf32>"), f("d", "tensor<2x2x20x8xf32>"), ids("s", "tensor<2x20xi32>", 3)},
               {"tensor<2x2x20x8xf32>", "tensor<2x2x20x8xf32>", "tensor<2x2x20x8xf32>"},
               "%o, %lse = kiln.attention %q, %k, %v segments %s {causal, scale = 0.35 : f32} : tensor<2x2x20x8xf32>, tensor<2x2x20x8xf32>, tensor<2x2x20x8xf32>, tensor<2x20xi32> -> tensor<2x2x20x8xf32>, tensor<2x2x20xf32>\n"
               "  %r0, %r1, %r2 = kiln.attention_grad %q, %k, %v, %o, %lse, %d segments %s {causal, scale = 0.35 : f32} : tensor<2x2x20x8xf32>, tensor<2x2x20x8xf32>, tensor<2x2x20x8xf32>, tensor<2x2x20x8xf32>, tensor<2x2x20xf32>, tensor<2x2x20x8xf32>, tensor<2x20xi32> -> tensor<2x2x20x8xf32>, tensor<2x2x20x8xf32>, tensor<2x2x20x8xf32>",
               1e-4, 1e-4});
  // The flash kernels (bf16/f16, D = 64 or 128): sequence tails against the
  // 128-row and 64-key blocks, grouped heads, cross attention, causal or
  // not. P is rounded to the low type before P·V (the interpreter keeps it
  // in f32): errors of a few 2^-8 relative.
  struct Flash {
    const char *name, *type;
    int64_t b, h, hkv, tq, tk, d;
    bool causal;
    int segments = 0; ///< 1: ids in [0, 3), unsorted; 2: documents of ~40 in order
    bool bthd = false; ///< layout "bthd": [B, T, H, D] (rows H·D apart)
  };
  for (const Flash &a : {Flash{"d64_causal_bf16", "bf16", 2, 3, 3, 200, 200, 64, true},
                         Flash{"d128_f16", "f16", 1, 2, 2, 130, 130, 128, false},
                         Flash{"d64_gqa_causal_bf16", "bf16", 1, 4, 2, 96, 96, 64, true},
                         Flash{"d64_cross_f16", "f16", 1, 2, 2, 70, 150, 64, false},
                         Flash{"d128_gqa_causal_bf16", "bf16", 1, 4, 1, 257, 257, 128, true},
                         Flash{"d64_causal_segments_bf16", "bf16", 2, 3, 3, 200, 200, 64, true, 1},
                         Flash{"d128_segments_f16", "f16", 1, 2, 1, 130, 130, 128, false, 1},
                         Flash{"d64_causal_documents_bf16", "bf16", 2, 2, 1, 300, 300, 64, true, 2},
                         Flash{"d128_documents_f16", "f16", 1, 2, 2, 257, 257, 128, false, 2},
                         Flash{"d64_causal_bthd_bf16", "bf16", 2, 3, 3, 200, 200, 64, true, 0, true},
                         Flash{"d128_gqa_bthd_f16", "f16", 1, 4, 2, 130, 130, 128, false, 0, true},
                         Flash{"d64_cross_gqa_bthd_bf16", "bf16", 2, 4, 1, 70, 150, 64, false, 0, true},
                         Flash{"d64_causal_documents_bthd_bf16", "bf16", 2, 2, 1, 300, 300, 64, true, 2, true}}) {
    auto type = [&](int64_t h, int64_t t, int64_t d) {
      if (a.bthd)
        return llvm::formatv("tensor<{0}x{1}x{2}x{3}x{4}>", a.b, t, h, d, a.type).str();
      return llvm::formatv("tensor<{0}x{1}x{2}x{3}x{4}>", a.b, h, t, d, a.type).str();
    };
    std::string q = type(a.h, a.tq, a.d), kv = type(a.hkv, a.tk, a.d),
                lse = llvm::formatv("tensor<{0}x{1}x{2}xf32>", a.b, a.h, a.tq).str();
    std::string attrs = llvm::formatv("{{{0}{1}scale = 0.125 : f32}", a.causal ? "causal, " : "",
                                      a.bthd ? "layout = \"bthd\", " : "")
                            .str();
    std::string segType = llvm::formatv("tensor<{0}x{1}xi32>", a.b, a.tq).str();
    std::string seg = a.segments ? " segments %s" : "", segT = a.segments ? ", " + segType : "";
    std::string forward = llvm::formatv("%r0, %r1 = kiln.attention %q, %k, %v{4} {0} : {1}, {2}, {2}{5} -> {1}, {3}",
                                        attrs, q, kv, lse, seg, segT)
                              .str();
    auto inputs = [&](bool withDout) {
      std::vector<Arg> in{f("q", q), f("k", kv), f("v", kv)};
      if (withDout)
        in.push_back(f("d", q));
      if (a.segments == 1)
        in.push_back(ids("s", segType, 3));
      else if (a.segments == 2)
        in.push_back(documents("s", segType, 40));
      return in;
    };
    c.push_back({std::string("flash_") + a.name, inputs(false), {q, lse}, forward, 2e-2, 2e-2});
    std::string grad = llvm::formatv(
        "%o, %lse = kiln.attention %q, %k, %v{4} {0} : {1}, {2}, {2}{5} -> {1}, {3}\n"
        "  %r0, %r1, %r2 = kiln.attention_grad %q, %k, %v, %o, %lse, %d{4} {0} : {1}, {2}, {2}, {1}, {3}, {1}{5} -> {1}, {2}, {2}",
        attrs, q, kv, lse, seg, segT).str();
    c.push_back({std::string("flash_grad_") + a.name, inputs(true), {q, kv, kv}, grad, 5e-2, 3e-2});
  }
  // kiln.attention_qkv: q, k and v read in place from one [B, T, H, 3, D]
  // tensor, dqkv written as one. The flash kernels (bf16 D = 64 causal with
  // a tail, f16 D = 128 with packed documents) and the reference kernels
  // (f32, with and without packed documents).
  struct Packed {
    const char *name, *type;
    int64_t b, t, h, d;
    bool causal, documents;
    double atol, rtol, gradAtol, gradRtol;
  };
  for (const Packed &a : {Packed{"qkv_d64_causal_bf16", "bf16", 2, 200, 3, 64, true, false, 2e-2, 2e-2, 5e-2, 3e-2},
                          Packed{"qkv_d128_documents_f16", "f16", 1, 130, 2, 128, false, true, 2e-2, 2e-2, 5e-2, 3e-2},
                          Packed{"qkv_d16_causal_f32", "f32", 2, 20, 2, 16, true, false, 1e-5, 1e-4, 1e-4, 1e-4},
                          Packed{"qkv_d16_causal_documents_f32", "f32", 2, 120, 2, 16, true, true, 1e-5, 1e-4, 1e-4, 1e-4}}) {
    std::string qkv = llvm::formatv("tensor<{0}x{1}x{2}x3x{3}x{4}>", a.b, a.t, a.h, a.d, a.type),
                o = llvm::formatv("tensor<{0}x{1}x{2}x{3}x{4}>", a.b, a.t, a.h, a.d, a.type),
                lse = llvm::formatv("tensor<{0}x{1}x{2}xf32>", a.b, a.h, a.t),
                segType = llvm::formatv("tensor<{0}x{1}xi32>", a.b, a.t);
    std::string attrs = llvm::formatv("{{{0}scale = 0.125 : f32}", a.causal ? "causal, " : "").str();
    std::string seg = a.documents ? " segments %s" : "", segT = a.documents ? ", " + segType : "";
    auto inputs = [&](bool withDout) {
      std::vector<Arg> in{f("qkv", qkv)};
      if (withDout)
        in.push_back(f("d", o));
      if (a.documents)
        in.push_back(documents("s", segType, 40));
      return in;
    };
    std::string forward = llvm::formatv("%r0, %r1 = kiln.attention_qkv %qkv{0} {1} : {2}{3} -> {4}, {5}",
                                        seg, attrs, qkv, segT, o, lse);
    c.push_back({std::string("attention_") + a.name, inputs(false), {o, lse}, forward, a.atol, a.rtol});
    std::string grad = llvm::formatv(
        "%o, %lse = kiln.attention_qkv %qkv{0} {1} : {2}{3} -> {4}, {5}\n"
        "  %r0 = kiln.attention_qkv_grad %qkv, %o, %lse, %d{0} {1} : {2}, {4}, {5}, {4}{3} -> {2}",
        seg, attrs, qkv, segT, o, lse);
    c.push_back({std::string("attention_grad_") + a.name, inputs(true), {qkv}, grad, a.gradAtol, a.gradRtol});
    // kiln-fuse's attention-gradient fusion: the column sums of dqkv (the
    // qkv projection's bias gradient), widened to f32 from bf16/f16: the
    // flash kernels sum them from the values they store, the reference
    // kernels' (f32) are summed by a reduction after them. A sum of B·T
    // rows: the kernels' dqkv differ from the interpreter's within the
    // gradient's tolerance above, so the sums within 0.25 (a key block
    // left out would move a column by several units).
    const int64_t width = 3 * a.h * a.d;
    const bool widen = std::string(a.type) != "f32";
    std::string bias = llvm::formatv("tensor<{0}x{1}>", width, a.type),
                wide = llvm::formatv("tensor<{0}xf32>", width),
                rows = llvm::formatv("tensor<{0}x{1}x{2}x{3}>", a.b, a.t, width, a.type);
    std::string argSeg = a.documents ? " segments %sa" : "",
                argT = a.documents ? ", %sa: " + segType : "";
    std::string fused = llvm::formatv(
        "%o, %lse = kiln.attention_qkv %qkv{0} {1} : {2}{3} -> {4}, {5}\n"
        "  %r0, %r1 = kiln.fusion (%qkv, %o, %lse, %d{10}) : ({2}, {4}, {5}, {4}{3}) -> ({2}, {8}) "
        "{{\n"
        "  ^bb0(%qa: {2}, %oa: {4}, %la: {5}, %da: {4}{7}):\n"
        "    %g = kiln.attention_qkv_grad %qa, %oa, %la, %da{6} {1} : {2}, {4}, {5}, {4}{3} -> "
        "{2}\n"
        "    %h = kiln.reshape %g : {2} -> {11}\n"
        "    %sum = kiln.reduce_sum %h, dims = [0, 1] : {11} -> {9}\n"
        "{12}"
        "    kiln.yield %g, {13} : {2}, {8}\n"
        "  }",
        seg, attrs, qkv, segT, o, lse, argSeg, argT, widen ? wide : bias, bias,
        a.documents ? ", %s" : "", rows,
        widen ? llvm::formatv("    %w = kiln.cast %sum : {0} to {1}\n", bias, wide).str() : "",
        widen ? "%w" : "%sum");
    c.push_back({std::string("attention_bias_grad_") + a.name,
                 inputs(true),
                 {qkv, widen ? wide : bias},
                 fused,
                 0.25,
                 5e-2});
  }
  // Training ops.
  c.push_back({"global_norm", {f("a", "tensor<1000xf32>"), f("b", "tensor<37x3xf32>"), f("c", "tensor<5000xf32>")},
               {"tensor<f32>"},
               "%r0 = kiln.global_norm %a, %b, %c : tensor<1000xf32>, tensor<37x3xf32>, tensor<5000xf32> -> tensor<f32>", 1e-5, 1e-5});
  c.push_back({"adamw_update",
               {f("w", "tensor<300xf32>"), f("g", "tensor<300xf32>"), f("m", "tensor<300xf32>"), pos("v", "tensor<300xf32>"),
                pos("lr", "tensor<f32>"), count("step", "tensor<f32>", 1000), pos("scale", "tensor<f32>")},
               {"tensor<300xf32>", "tensor<300xf32>", "tensor<300xf32>"},
               "%r0, %r1, %r2 = kiln.adamw_update %w, %g, %m, %v, %lr, %step, %scale {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.1 : f32} : (tensor<300xf32>, tensor<300xf32>, tensor<300xf32>, tensor<300xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<300xf32>, tensor<300xf32>, tensor<300xf32>)",
               1e-6, 1e-5});
  // kiln-fuse's working copies: the multi-tensor launch writes the new
  // parameter converted to bf16 beside it, for tensors with a copy (one of
  // an odd size: the element-wise tail), and nothing for one without. The
  // copy rounds the kernel's f32 parameter, which may sit an f32 ulp from
  // the interpreter's: one bf16 ulp apart at a tie (up to 2^-7 relative;
  // measured 6.0e-3 on the H200).
  c.push_back({"adamw_update_copies",
               {f("w", "tensor<300xf32>"), f("g", "tensor<300xf32>"), f("m", "tensor<300xf32>"), pos("v", "tensor<300xf32>"),
                f("u", "tensor<1037xf32>"), f("gu", "tensor<1037xf32>"), f("mu", "tensor<1037xf32>"), pos("vu", "tensor<1037xf32>"),
                f("b", "tensor<64xf32>"), f("gb", "tensor<64xf32>"), f("mb", "tensor<64xf32>"), pos("vb", "tensor<64xf32>"),
                pos("lr", "tensor<f32>"), count("step", "tensor<f32>", 1000), pos("scale", "tensor<f32>")},
               {"tensor<300xf32>", "tensor<300xbf16>", "tensor<1037xf32>", "tensor<1037xbf16>", "tensor<64xf32>"},
               "%r0, %wm, %wv, %r1 = kiln.adamw_update %w, %g, %m, %v, %lr, %step, %scale {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.1 : f32} : (tensor<300xf32>, tensor<300xf32>, tensor<300xf32>, tensor<300xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<300xf32>, tensor<300xf32>, tensor<300xf32>, tensor<300xbf16>)\n"
               "  %r2, %um, %uv, %r3 = kiln.adamw_update %u, %gu, %mu, %vu, %lr, %step, %scale {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.1 : f32} : (tensor<1037xf32>, tensor<1037xf32>, tensor<1037xf32>, tensor<1037xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<1037xf32>, tensor<1037xf32>, tensor<1037xf32>, tensor<1037xbf16>)\n"
               "  %r4, %bm, %bv = kiln.adamw_update %b, %gb, %mb, %vb, %lr, %step, %scale {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<64xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<64xf32>, tensor<64xf32>, tensor<64xf32>)",
               1e-6, 8e-3});
  // bf16 and f16: kernels load and store 16-bit values (8 per 128-bit
  // access) and compute in f32, like the interpreter, which rounds each
  // result once. A GEMM may sum in another order and round one ulp apart
  // (2^-8 relative in bf16).
  c.push_back({"add_bf16", {f("a", "tensor<64x256xbf16>"), f("b", "tensor<64x256xbf16>")}, {"tensor<64x256xbf16>"},
               "%r0 = kiln.add %a, %b : tensor<64x256xbf16>"});
  c.push_back({"gelu_f16_odd", {f("a", "tensor<33x17xf16>")}, {"tensor<33x17xf16>"},
               "%r0 = kiln.gelu tanh %a : tensor<33x17xf16>", 1e-3, 2e-3});
  // kiln.fusion kernels (kiln-fuse's output): one loop over the body, the
  // intermediates rounded to their types as the interpreter's tensors are.
  c.push_back({"fusion_bf16_chain", {f("a", "tensor<64x256xbf16>"), f("b", "tensor<64x256xf32>")},
               {"tensor<64x256xbf16>"},
               "%r0 = kiln.fusion (%a, %b) : (tensor<64x256xbf16>, tensor<64x256xf32>) -> tensor<64x256xbf16> {\n"
               "  ^bb0(%x: tensor<64x256xbf16>, %y: tensor<64x256xf32>):\n"
               "    %0 = kiln.cast %x : tensor<64x256xbf16> to tensor<64x256xf32>\n"
               "    %c = kiln.constant dense<2.0> : tensor<64x256xf32>\n"
               "    %1 = kiln.mul %0, %c : tensor<64x256xf32>\n"
               "    %2 = kiln.add %1, %y : tensor<64x256xf32>\n"
               "    %3 = kiln.cast %2 : tensor<64x256xf32> to tensor<64x256xbf16>\n"
               "    %4 = kiln.gelu tanh %3 : tensor<64x256xbf16>\n"
               "    kiln.yield %4 : tensor<64x256xbf16>\n"
               "  }", 1e-2, 8e-3});
  c.push_back({"fusion_mask_odd", {f("a", "tensor<5x13xf32>"), f("b", "tensor<5x13xf32>")}, {"tensor<5x13xf32>"},
               "%r0 = kiln.fusion (%a, %b) : (tensor<5x13xf32>, tensor<5x13xf32>) -> tensor<5x13xf32> {\n"
               "  ^bb0(%x: tensor<5x13xf32>, %y: tensor<5x13xf32>):\n"
               "    %m = kiln.compare gt, %x, %y : tensor<5x13xf32>\n"
               "    %0 = kiln.select %m, %x, %y : tensor<5x13xi1>, tensor<5x13xf32>\n"
               "    %1 = kiln.exp %0 : tensor<5x13xf32>\n"
               "    %2 = kiln.mul %1, %x : tensor<5x13xf32>\n"
               "    kiln.yield %2 : tensor<5x13xf32>\n"
               "  }", 1e-5, 1e-5});
  c.push_back({"fusion_f16_two_outputs", {f("a", "tensor<32x24xf16>")}, {"tensor<32x24xf16>", "tensor<32x24xf32>"},
               "%r0, %r1 = kiln.fusion (%a) : (tensor<32x24xf16>) -> (tensor<32x24xf16>, tensor<32x24xf32>) {\n"
               "  ^bb0(%x: tensor<32x24xf16>):\n"
               "    %0 = kiln.tanh %x : tensor<32x24xf16>\n"
               "    %1 = kiln.mul %0, %x : tensor<32x24xf16>\n"
               "    %2 = kiln.cast %1 : tensor<32x24xf16> to tensor<32x24xf32>\n"
               "    kiln.yield %1, %2 : tensor<32x24xf16>, tensor<32x24xf32>\n"
               "  }", 2e-3, 2e-3});
  // Broadcasts read through their index maps (kiln-fuse's `broadcasts`):
  // a [T, C] table into [B, T, C] on the vector path, a scalar, a column
  // with a size-1 dimension and a row on the scalar path, a [T, T] mask
  // into [B, H, T, T].
  c.push_back({"fusion_broadcast_positions_bf16", {f("a", "tensor<4x33x64xbf16>"), f("p", "tensor<33x64xf32>")},
               {"tensor<4x33x64xbf16>"},
               "%r0 = kiln.fusion (%a, %p) : (tensor<4x33x64xbf16>, tensor<33x64xf32>) -> tensor<4x33x64xbf16> {\n"
               "  ^bb0(%x: tensor<4x33x64xbf16>, %q: tensor<33x64xf32>):\n"
               "    %0 = kiln.cast %x : tensor<4x33x64xbf16> to tensor<4x33x64xf32>\n"
               "    %b = kiln.broadcast_in_dim %q, dims = [1, 2] : tensor<33x64xf32> -> tensor<4x33x64xf32>\n"
               "    %1 = kiln.add %0, %b : tensor<4x33x64xf32>\n"
               "    %2 = kiln.cast %1 : tensor<4x33x64xf32> to tensor<4x33x64xbf16>\n"
               "    kiln.yield %2 : tensor<4x33x64xbf16>\n"
               "  }", 1e-2, 8e-3});
  c.push_back({"fusion_broadcast_scalar_column_row_odd",
               {f("a", "tensor<5x13xf32>"), f("s", "tensor<f32>"), f("col", "tensor<5x1xf32>"), f("row", "tensor<13xf32>")},
               {"tensor<5x13xf32>"},
               "%r0 = kiln.fusion (%a, %s, %col, %row) : (tensor<5x13xf32>, tensor<f32>, tensor<5x1xf32>, tensor<13xf32>) -> tensor<5x13xf32> {\n"
               "  ^bb0(%x: tensor<5x13xf32>, %y: tensor<f32>, %z: tensor<5x1xf32>, %w: tensor<13xf32>):\n"
               "    %b0 = kiln.broadcast_in_dim %y, dims = [] : tensor<f32> -> tensor<5x13xf32>\n"
               "    %b1 = kiln.broadcast_in_dim %z, dims = [0, 1] : tensor<5x1xf32> -> tensor<5x13xf32>\n"
               "    %b2 = kiln.broadcast_in_dim %w, dims = [1] : tensor<13xf32> -> tensor<5x13xf32>\n"
               "    %0 = kiln.mul %x, %b0 : tensor<5x13xf32>\n"
               "    %1 = kiln.add %0, %b1 : tensor<5x13xf32>\n"
               "    %2 = kiln.sub %1, %b2 : tensor<5x13xf32>\n"
               "    kiln.yield %2 : tensor<5x13xf32>\n"
               "  }", 1e-6, 1e-5});
  c.push_back({"fusion_broadcast_mask", {f("s", "tensor<2x3x16x16xf32>"), mask("m", "tensor<16x16xi1>")},
               {"tensor<2x3x16x16xf32>"},
               "%r0 = kiln.fusion (%s, %m) : (tensor<2x3x16x16xf32>, tensor<16x16xi1>) -> tensor<2x3x16x16xf32> {\n"
               "  ^bb0(%x: tensor<2x3x16x16xf32>, %y: tensor<16x16xi1>):\n"
               "    %b = kiln.broadcast_in_dim %y, dims = [2, 3] : tensor<16x16xi1> -> tensor<2x3x16x16xi1>\n"
               "    %c = kiln.constant dense<-1.0e+09> : tensor<2x3x16x16xf32>\n"
               "    %0 = kiln.select %b, %x, %c : tensor<2x3x16x16xi1>, tensor<2x3x16x16xf32>\n"
               "    kiln.yield %0 : tensor<2x3x16x16xf32>\n"
               "  }", 0, 0});
  c.push_back({"fusion_i32_wraps", {ids("a", "tensor<7x9xi32>", 1000)}, {"tensor<7x9xf32>"},
               // a^4 overflows i32 for a > 215: the fused intermediate must
               // wrap as the unfused i32 tensor (and the interpreter) do.
               "%r0 = kiln.fusion (%a) : (tensor<7x9xi32>) -> tensor<7x9xf32> {\n"
               "  ^bb0(%x: tensor<7x9xi32>):\n"
               "    %0 = kiln.mul %x, %x : tensor<7x9xi32>\n"
               "    %1 = kiln.mul %0, %0 : tensor<7x9xi32>\n"
               "    %2 = kiln.cast %1 : tensor<7x9xi32> to tensor<7x9xf32>\n"
               "    kiln.yield %2 : tensor<7x9xf32>\n"
               "  }", 0, 0});
  // Reduction fusions (kiln-fuse's `reductions`): each reduction kernel
  // form reading its elements through the body, the side outputs written
  // as they are read. Rows of bf16 words with a side output; columns
  // through partial sums (gelu_grad's bias gradient beside the gradient);
  // a batch of column maxima; the general form over a middle dimension
  // with a broadcast operand; f16 columns that are not whole words.
  c.push_back({"fusion_reduce_rows_bf16", {f("a", "tensor<64x256xbf16>"), f("b", "tensor<64x256xf32>")},
               {"tensor<64x256xbf16>", "tensor<64xbf16>"},
               "%r0, %r1 = kiln.fusion (%a, %b) : (tensor<64x256xbf16>, tensor<64x256xf32>) -> (tensor<64x256xbf16>, tensor<64xbf16>) {\n"
               "  ^bb0(%x: tensor<64x256xbf16>, %y: tensor<64x256xf32>):\n"
               "    %0 = kiln.cast %x : tensor<64x256xbf16> to tensor<64x256xf32>\n"
               "    %1 = kiln.mul %0, %y : tensor<64x256xf32>\n"
               "    %2 = kiln.cast %1 : tensor<64x256xf32> to tensor<64x256xbf16>\n"
               "    %3 = kiln.reduce_sum %2, dims = [1] : tensor<64x256xbf16> -> tensor<64xbf16>\n"
               "    kiln.yield %2, %3 : tensor<64x256xbf16>, tensor<64xbf16>\n"
               "  }", 1e-1, 8e-3});
  c.push_back({"fusion_reduce_columns_gelu_grad", {f("a", "tensor<1024x96xf32>"), f("d", "tensor<1024x96xf32>")},
               {"tensor<1024x96xf32>", "tensor<96xf32>"},
               "%r0, %r1 = kiln.fusion (%a, %d) : (tensor<1024x96xf32>, tensor<1024x96xf32>) -> (tensor<1024x96xf32>, tensor<96xf32>) {\n"
               "  ^bb0(%x: tensor<1024x96xf32>, %y: tensor<1024x96xf32>):\n"
               "    %0 = kiln.gelu_grad tanh %x, %y : tensor<1024x96xf32>\n"
               "    %1 = kiln.reduce_sum %0, dims = [0] : tensor<1024x96xf32> -> tensor<96xf32>\n"
               "    kiln.yield %0, %1 : tensor<1024x96xf32>, tensor<96xf32>\n"
               "  }", 1e-4, 1e-5});
  c.push_back({"fusion_reduce_max_batched_columns", {f("a", "tensor<3x5x100x256xf32>"), f("b", "tensor<3x5x100x256xf32>")},
               {"tensor<3x256xf32>"},
               "%r0 = kiln.fusion (%a, %b) : (tensor<3x5x100x256xf32>, tensor<3x5x100x256xf32>) -> tensor<3x256xf32> {\n"
               "  ^bb0(%x: tensor<3x5x100x256xf32>, %y: tensor<3x5x100x256xf32>):\n"
               "    %0 = kiln.sub %x, %y : tensor<3x5x100x256xf32>\n"
               "    %1 = kiln.reduce_max %0, dims = [1, 2] : tensor<3x5x100x256xf32> -> tensor<3x256xf32>\n"
               "    kiln.yield %1 : tensor<3x256xf32>\n"
               "  }", 0, 0});
  c.push_back({"fusion_reduce_mean_middle_broadcast", {f("a", "tensor<7x33x10xf32>"), f("v", "tensor<10xf32>")},
               {"tensor<7x10xf32>"},
               "%r0 = kiln.fusion (%a, %v) : (tensor<7x33x10xf32>, tensor<10xf32>) -> tensor<7x10xf32> {\n"
               "  ^bb0(%x: tensor<7x33x10xf32>, %w: tensor<10xf32>):\n"
               "    %b = kiln.broadcast_in_dim %w, dims = [2] : tensor<10xf32> -> tensor<7x33x10xf32>\n"
               "    %0 = kiln.exp %x : tensor<7x33x10xf32>\n"
               "    %1 = kiln.mul %0, %b : tensor<7x33x10xf32>\n"
               "    %2 = kiln.reduce_mean %1, dims = [1] : tensor<7x33x10xf32> -> tensor<7x10xf32>\n"
               "    kiln.yield %2 : tensor<7x10xf32>\n"
               "  }", 1e-5, 1e-5});
  c.push_back({"fusion_reduce_columns_f16_odd", {f("a", "tensor<300x13xf16>")}, {"tensor<13xf32>"},
               "%r0 = kiln.fusion (%a) : (tensor<300x13xf16>) -> tensor<13xf32> {\n"
               "  ^bb0(%x: tensor<300x13xf16>):\n"
               "    %0 = kiln.cast %x : tensor<300x13xf16> to tensor<300x13xf32>\n"
               "    %1 = kiln.mul %0, %0 : tensor<300x13xf32>\n"
               "    %2 = kiln.reduce_sum %1, dims = [0] : tensor<300x13xf32> -> tensor<13xf32>\n"
               "    kiln.yield %2 : tensor<13xf32>\n"
               "  }", 1e-4, 1e-5});
  c.push_back({"cast_f32_bf16", {f("a", "tensor<16x64xf32>")}, {"tensor<16x64xbf16>"},
               "%r0 = kiln.cast %a : tensor<16x64xf32> to tensor<16x64xbf16>"});
  // Casts of arguments run as one multi-tensor launch (tensors of several
  // chunks, a tail past the last 8 elements, a single element), rounding
  // exactly as kiln.cast; each is read by a negation (a cast the function
  // returns is not grouped).
  c.push_back({"cast_group_f32_bf16", {f("a", "tensor<300x257xf32>"), f("b", "tensor<1xf32>"), f("c", "tensor<64x64xf32>")},
               {"tensor<300x257xbf16>", "tensor<1xbf16>", "tensor<64x64xbf16>"},
               "%c0 = kiln.cast %a : tensor<300x257xf32> to tensor<300x257xbf16>\n"
               "  %c1 = kiln.cast %b : tensor<1xf32> to tensor<1xbf16>\n"
               "  %c2 = kiln.cast %c : tensor<64x64xf32> to tensor<64x64xbf16>\n"
               "  %r0 = kiln.neg %c0 : tensor<300x257xbf16>\n"
               "  %r1 = kiln.neg %c1 : tensor<1xbf16>\n"
               "  %r2 = kiln.neg %c2 : tensor<64x64xbf16>", 0, 0});
  c.push_back({"cast_bf16_f32", {f("a", "tensor<16x64xbf16>")}, {"tensor<16x64xf32>"},
               "%r0 = kiln.cast %a : tensor<16x64xbf16> to tensor<16x64xf32>"});
  c.push_back({"matmul_bias_bf16", {f("x", "tensor<4x32x64xbf16>"), f("w", "tensor<64x96xbf16>"), f("b", "tensor<96xbf16>")},
               {"tensor<4x32x96xbf16>"},
               "%r0 = kiln.matmul %x, %w bias %b : tensor<4x32x64xbf16>, tensor<64x96xbf16>, tensor<96xbf16> -> tensor<4x32x96xbf16>", 2e-2, 8e-3});
  c.push_back({"matmul_bf16_f32", {f("x", "tensor<32x64xbf16>"), f("w", "tensor<64x48xbf16>")}, {"tensor<32x48xf32>"},
               "%r0 = kiln.matmul %x, %w : tensor<32x64xbf16>, tensor<64x48xbf16> -> tensor<32x48xf32>", 1e-4, 1e-5});
  // GEMM epilogues (kiln-fuse's GEMM fusions): one cuBLASLt call with
  // GELU_AUX_BIAS, GELU, DGELU, DGELU_BGRAD or BGRADA. cuBLASLt evaluates
  // the epilogue on the f32 accumulator where the interpreter rounds the
  // product (and the biased product) to the element type first, so bf16
  // results may differ by about two bf16 ulps (2^-7 relative), and a bias
  // gradient, a sum of 64 such rows, by a few ulps of the sum.
  c.push_back({"gemm_gelu_aux_bias_bf16", {f("x", "tensor<4x16x64xbf16>"), f("w", "tensor<64x96xbf16>"), f("b", "tensor<96xbf16>")},
               {"tensor<4x16x96xbf16>", "tensor<4x16x96xbf16>"},
               "%r0, %r1 = kiln.fusion (%x, %w, %b) : (tensor<4x16x64xbf16>, tensor<64x96xbf16>, tensor<96xbf16>) -> (tensor<4x16x96xbf16>, tensor<4x16x96xbf16>) {\n"
               "  ^bb0(%a: tensor<4x16x64xbf16>, %v: tensor<64x96xbf16>, %c: tensor<96xbf16>):\n"
               "    %0 = kiln.matmul %a, %v bias %c : tensor<4x16x64xbf16>, tensor<64x96xbf16>, tensor<96xbf16> -> tensor<4x16x96xbf16>\n"
               "    %1 = kiln.gelu tanh %0 : tensor<4x16x96xbf16>\n"
               "    kiln.yield %1, %0 : tensor<4x16x96xbf16>, tensor<4x16x96xbf16>\n"
               "  }", 3e-2, 2e-2});
  c.push_back({"gemm_gelu_f32", {f("x", "tensor<32x48xf32>"), f("w", "tensor<48x64xf32>")}, {"tensor<32x64xf32>"},
               "%r0 = kiln.fusion (%x, %w) : (tensor<32x48xf32>, tensor<48x64xf32>) -> tensor<32x64xf32> {\n"
               "  ^bb0(%a: tensor<32x48xf32>, %v: tensor<48x64xf32>):\n"
               "    %0 = kiln.matmul %a, %v : tensor<32x48xf32>, tensor<48x64xf32> -> tensor<32x64xf32>\n"
               "    %1 = kiln.gelu tanh %0 : tensor<32x64xf32>\n"
               "    kiln.yield %1 : tensor<32x64xf32>\n"
               "  }", 1e-3, 1e-3});
  c.push_back({"gemm_dgelu_bgrad_bf16", {f("dy", "tensor<4x16x32xbf16>"), f("w", "tensor<96x32xbf16>"), f("z", "tensor<4x16x96xbf16>")},
               {"tensor<4x16x96xbf16>", "tensor<96xbf16>"},
               "%r0, %r1 = kiln.fusion (%dy, %w, %z) : (tensor<4x16x32xbf16>, tensor<96x32xbf16>, tensor<4x16x96xbf16>) -> (tensor<4x16x96xbf16>, tensor<96xbf16>) {\n"
               "  ^bb0(%a: tensor<4x16x32xbf16>, %v: tensor<96x32xbf16>, %x: tensor<4x16x96xbf16>):\n"
               "    %0 = kiln.matmul %a, %v transpose_b : tensor<4x16x32xbf16>, tensor<96x32xbf16> -> tensor<4x16x96xbf16>\n"
               "    %1 = kiln.gelu_grad tanh %x, %0 : tensor<4x16x96xbf16>\n"
               "    %2 = kiln.reduce_sum %1, dims = [0, 1] : tensor<4x16x96xbf16> -> tensor<96xbf16>\n"
               "    kiln.yield %1, %2 : tensor<4x16x96xbf16>, tensor<96xbf16>\n"
               "  }", 5e-1, 2e-2});
  // (r1 sums 64 terms of magnitude ~3 (dy·wᵀ over 32 N(0, 1) products):
  // the interpreter rounds each to bf16 first (2^-9 relative), the
  // epilogue does not, so a sum that cancels to near 0 can differ by
  // ~Σ|x|·2^-9·√64/8 ≈ 0.1–0.4 — the absolute tolerance, not the relative
  // one, must cover it. With atol 0.1 a cancelling element failed.)
  c.push_back({"gemm_dgelu_f32", {f("dy", "tensor<32x40xf32>"), f("w", "tensor<40x64xf32>"), f("z", "tensor<32x64xf32>")},
               {"tensor<32x64xf32>"},
               "%r0 = kiln.fusion (%dy, %w, %z) : (tensor<32x40xf32>, tensor<40x64xf32>, tensor<32x64xf32>) -> tensor<32x64xf32> {\n"
               "  ^bb0(%a: tensor<32x40xf32>, %v: tensor<40x64xf32>, %x: tensor<32x64xf32>):\n"
               "    %0 = kiln.matmul %a, %v : tensor<32x40xf32>, tensor<40x64xf32> -> tensor<32x64xf32>\n"
               "    %1 = kiln.gelu_grad tanh %x, %0 : tensor<32x64xf32>\n"
               "    kiln.yield %1 : tensor<32x64xf32>\n"
               "  }", 1e-3, 1e-3});
  c.push_back({"gemm_bgrada_bf16", {f("x", "tensor<64x48xbf16>"), f("dy", "tensor<4x16x32xbf16>")},
               {"tensor<48x32xbf16>", "tensor<32xbf16>"},
               "%r0, %r1 = kiln.fusion (%dy, %x) : (tensor<4x16x32xbf16>, tensor<64x48xbf16>) -> (tensor<48x32xbf16>, tensor<32xbf16>) {\n"
               "  ^bb0(%d: tensor<4x16x32xbf16>, %a: tensor<64x48xbf16>):\n"
               "    %0 = kiln.reshape %d : tensor<4x16x32xbf16> -> tensor<64x32xbf16>\n"
               "    %1 = kiln.matmul %a, %0 transpose_a : tensor<64x48xbf16>, tensor<64x32xbf16> -> tensor<48x32xbf16>\n"
               "    %2 = kiln.reduce_sum %d, dims = [0, 1] : tensor<4x16x32xbf16> -> tensor<32xbf16>\n"
               "    kiln.yield %1, %2 : tensor<48x32xbf16>, tensor<32xbf16>\n"
               "  }", 3e-2, 1e-2});
  // Both gradients widened for the optimizer: cuBLASLt writes the weight
  // gradient and the bias gradient in f32 (the interpreter rounds to bf16
  // first, so the GPU is the more accurate by up to half a bf16 ulp).
  c.push_back({"gemm_bgrada_bf16_to_f32", {f("x", "tensor<8192x768xbf16>"), f("dy", "tensor<8x1024x256xbf16>")},
               {"tensor<768x256xf32>", "tensor<256xf32>"},
               "%r0, %r1 = kiln.fusion (%dy, %x) : (tensor<8x1024x256xbf16>, tensor<8192x768xbf16>) -> (tensor<768x256xf32>, tensor<256xf32>) {\n"
               "  ^bb0(%d: tensor<8x1024x256xbf16>, %a: tensor<8192x768xbf16>):\n"
               "    %0 = kiln.reshape %d : tensor<8x1024x256xbf16> -> tensor<8192x256xbf16>\n"
               "    %1 = kiln.matmul %a, %0 transpose_a : tensor<8192x768xbf16>, tensor<8192x256xbf16> -> tensor<768x256xbf16>\n"
               "    %2 = kiln.reduce_sum %d, dims = [0, 1] : tensor<8x1024x256xbf16> -> tensor<256xbf16>\n"
               "    %3 = kiln.cast %1 : tensor<768x256xbf16> to tensor<768x256xf32>\n"
               "    %4 = kiln.cast %2 : tensor<256xbf16> to tensor<256xf32>\n"
               "    kiln.yield %3, %4 : tensor<768x256xf32>, tensor<256xf32>\n"
               "  }", 1.0, 8e-3});
  c.push_back({"gemm_bgrada_f32", {f("x", "tensor<40x24xf32>"), f("dy", "tensor<40x16xf32>")},
               {"tensor<24x16xf32>", "tensor<16xf32>"},
               "%r0, %r1 = kiln.fusion (%x, %dy) : (tensor<40x24xf32>, tensor<40x16xf32>) -> (tensor<24x16xf32>, tensor<16xf32>) {\n"
               "  ^bb0(%a: tensor<40x24xf32>, %d: tensor<40x16xf32>):\n"
               "    %0 = kiln.matmul %a, %d transpose_a : tensor<40x24xf32>, tensor<40x16xf32> -> tensor<24x16xf32>\n"
               "    %1 = kiln.reduce_sum %d, dims = [0] : tensor<40x16xf32> -> tensor<16xf32>\n"
               "    kiln.yield %0, %1 : tensor<24x16xf32>, tensor<16xf32>\n"
               "  }", 1e-4, 1e-5});
  // The same at GPT-2 124M's MLP shapes (8192 rows): the algorithms cuBLASLt
  // picks for large GEMMs (split-K, stream-K) must still give every row's
  // share of a bias gradient. A sum of 8192 N(0, 1) values is ~90, whose
  // bf16 ulp is 0.5: atol 2 allows 4 ulps, a lost share of the rows misses
  // by tens.
  c.push_back({"gemm_gelu_aux_bias_bf16_gpt2", {f("x", "tensor<8x1024x768xbf16>"), f("w", "tensor<768x3072xbf16>"), f("b", "tensor<3072xbf16>")},
               {"tensor<8x1024x3072xbf16>", "tensor<8x1024x3072xbf16>"},
               "%r0, %r1 = kiln.fusion (%x, %w, %b) : (tensor<8x1024x768xbf16>, tensor<768x3072xbf16>, tensor<3072xbf16>) -> (tensor<8x1024x3072xbf16>, tensor<8x1024x3072xbf16>) {\n"
               "  ^bb0(%a: tensor<8x1024x768xbf16>, %v: tensor<768x3072xbf16>, %c: tensor<3072xbf16>):\n"
               "    %0 = kiln.matmul %a, %v bias %c : tensor<8x1024x768xbf16>, tensor<768x3072xbf16>, tensor<3072xbf16> -> tensor<8x1024x3072xbf16>\n"
               "    %1 = kiln.gelu tanh %0 : tensor<8x1024x3072xbf16>\n"
               "    kiln.yield %0, %1 : tensor<8x1024x3072xbf16>, tensor<8x1024x3072xbf16>\n"
               "  }", 0.5, 2e-2});
  c.push_back({"gemm_dgelu_bf16_gpt2", {f("dy", "tensor<8x1024x768xbf16>"), f("w", "tensor<3072x768xbf16>"), f("z", "tensor<8x1024x3072xbf16>")},
               {"tensor<8x1024x3072xbf16>"},
               "%r0 = kiln.fusion (%dy, %w, %z) : (tensor<8x1024x768xbf16>, tensor<3072x768xbf16>, tensor<8x1024x3072xbf16>) -> tensor<8x1024x3072xbf16> {\n"
               "  ^bb0(%a: tensor<8x1024x768xbf16>, %v: tensor<3072x768xbf16>, %x: tensor<8x1024x3072xbf16>):\n"
               "    %0 = kiln.matmul %a, %v transpose_b : tensor<8x1024x768xbf16>, tensor<3072x768xbf16> -> tensor<8x1024x3072xbf16>\n"
               "    %1 = kiln.gelu_grad tanh %x, %0 : tensor<8x1024x3072xbf16>\n"
               "    kiln.yield %1 : tensor<8x1024x3072xbf16>\n"
               "  }", 0.5, 2e-2});
  c.push_back({"gemm_bgrada_bf16_gpt2", {f("x", "tensor<8192x768xbf16>"), f("dy", "tensor<8x1024x3072xbf16>")},
               {"tensor<768x3072xbf16>", "tensor<3072xbf16>"},
               "%r0, %r1 = kiln.fusion (%dy, %x) : (tensor<8x1024x3072xbf16>, tensor<8192x768xbf16>) -> (tensor<768x3072xbf16>, tensor<3072xbf16>) {\n"
               "  ^bb0(%d: tensor<8x1024x3072xbf16>, %a: tensor<8192x768xbf16>):\n"
               "    %0 = kiln.reshape %d : tensor<8x1024x3072xbf16> -> tensor<8192x3072xbf16>\n"
               "    %1 = kiln.matmul %a, %0 transpose_a : tensor<8192x768xbf16>, tensor<8192x3072xbf16> -> tensor<768x3072xbf16>\n"
               "    %2 = kiln.reduce_sum %d, dims = [0, 1] : tensor<8x1024x3072xbf16> -> tensor<3072xbf16>\n"
               "    kiln.yield %1, %2 : tensor<768x3072xbf16>, tensor<3072xbf16>\n"
               "  }", 2.0, 2e-2});
  c.push_back({"gemm_bgrada_bf16_gpt2_narrow", {f("x", "tensor<8192x3072xbf16>"), f("dy", "tensor<8x1024x768xbf16>")},
               {"tensor<3072x768xbf16>", "tensor<768xbf16>"},
               "%r0, %r1 = kiln.fusion (%dy, %x) : (tensor<8x1024x768xbf16>, tensor<8192x3072xbf16>) -> (tensor<3072x768xbf16>, tensor<768xbf16>) {\n"
               "  ^bb0(%d: tensor<8x1024x768xbf16>, %a: tensor<8192x3072xbf16>):\n"
               "    %0 = kiln.reshape %d : tensor<8x1024x768xbf16> -> tensor<8192x768xbf16>\n"
               "    %1 = kiln.matmul %a, %0 transpose_a : tensor<8192x3072xbf16>, tensor<8192x768xbf16> -> tensor<3072x768xbf16>\n"
               "    %2 = kiln.reduce_sum %d, dims = [0, 1] : tensor<8x1024x768xbf16> -> tensor<768xbf16>\n"
               "    kiln.yield %1, %2 : tensor<3072x768xbf16>, tensor<768xbf16>\n"
               "  }", 2.0, 2e-2});
  c.push_back({"matmul_f16_transposed", {f("q", "tensor<2x3x16x32xf16>"), f("k", "tensor<2x3x16x32xf16>")},
               {"tensor<2x3x16x16xf16>"},
               "%r0 = kiln.matmul %q, %k transpose_b : tensor<2x3x16x32xf16>, tensor<2x3x16x32xf16> -> tensor<2x3x16x16xf16>", 2e-2, 2e-3});
  c.push_back({"softmax_bf16", {f("x", "tensor<8x1024xbf16>")}, {"tensor<8x1024xbf16>"},
               "%r0 = kiln.softmax %x : tensor<8x1024xbf16>", 1e-5, 8e-3});
  // Softmax's register path (rows of whole 16-byte vectors per lane) in
  // each type, forward, log and backward.
  c.push_back({"softmax_vec_f32", {f("x", "tensor<12x512xf32>")}, {"tensor<12x512xf32>"},
               "%r0 = kiln.softmax %x : tensor<12x512xf32>", 1e-7, 1e-5});
  c.push_back({"log_softmax_vec_f32", {f("x", "tensor<3x5x128xf32>")}, {"tensor<3x5x128xf32>"},
               "%r0 = kiln.log_softmax %x : tensor<3x5x128xf32>", 1e-5, 1e-5});
  c.push_back({"softmax_grad_vec_f32", {f("x", "tensor<8x256xf32>"), f("d", "tensor<8x256xf32>")}, {"tensor<8x256xf32>"},
               "%y = kiln.softmax %x : tensor<8x256xf32>\n"
               "  %r0 = kiln.softmax_grad %y, %d : tensor<8x256xf32>", 1e-6, 1e-4});
  c.push_back({"softmax_grad_vec_bf16", {f("x", "tensor<6x2048xbf16>"), f("d", "tensor<6x2048xbf16>")}, {"tensor<6x2048xbf16>"},
               "%y = kiln.softmax %x : tensor<6x2048xbf16>\n"
               "  %r0 = kiln.softmax_grad %y, %d : tensor<6x2048xbf16>", 1e-4, 1e-2});
  c.push_back({"softmax_vec_f16", {f("x", "tensor<4x256xf16>")}, {"tensor<4x256xf16>"},
               "%r0 = kiln.softmax %x : tensor<4x256xf16>", 1e-5, 2e-3});
  c.push_back({"softmax_vec_f64", {f("x", "tensor<4x128xf64>")}, {"tensor<4x128xf64>"},
               "%r0 = kiln.softmax %x : tensor<4x128xf64>", 1e-14, 1e-14});
  // Row and column reductions over 16-byte words.
  c.push_back({"reduce_max_rows_bf16", {f("x", "tensor<6x512xbf16>")}, {"tensor<6xbf16>"},
               "%r0 = kiln.reduce_max %x, dims = [1] : tensor<6x512xbf16> -> tensor<6xbf16>", 0, 0});
  c.push_back({"reduce_sum_columns_words", {f("x", "tensor<100x3x64xf32>")}, {"tensor<64xf32>"},
               "%r0 = kiln.reduce_sum %x, dims = [0, 1] : tensor<100x3x64xf32> -> tensor<64xf32>", 1e-5, 1e-5});
  c.push_back({"reduce_sum_columns_short", {f("x", "tensor<16x8x40xf32>")}, {"tensor<8x40xf32>"},
               "%r0 = kiln.reduce_sum %x, dims = [0] : tensor<16x8x40xf32> -> tensor<8x40xf32>", 1e-5, 1e-5});
  c.push_back({"reduce_sum_columns_bf16", {f("x", "tensor<512x96xbf16>")}, {"tensor<96xbf16>"},
               "%r0 = kiln.reduce_sum %x, dims = [0] : tensor<512x96xbf16> -> tensor<96xbf16>", 1e-1, 8e-3});
  c.push_back({"cross_entropy_bf16", {f("logits", "tensor<4x6x1000xbf16>"), ids("t", "tensor<4x6xi32>", 990)},
               {"tensor<4x6xf32>", "tensor<4x6xf32>"},
               "%r0, %r1 = kiln.cross_entropy %logits, %t {valid_classes = 990 : i64} : tensor<4x6x1000xbf16>, tensor<4x6xi32> -> tensor<4x6xf32>, tensor<4x6xf32>",
               1e-5, 1e-5});
  c.push_back({"global_norm_f64", {f("a", "tensor<1000xf64>"), f("b", "tensor<70000xf64>")}, {"tensor<f64>"},
               "%r0 = kiln.global_norm %a, %b : tensor<1000xf64>, tensor<70000xf64> -> tensor<f64>", 1e-13, 1e-13});
  c.push_back({"adamw_update_f64",
               {f("w", "tensor<50xf64>"), f("g", "tensor<50xf64>"), f("m", "tensor<50xf64>"), pos("v", "tensor<50xf64>"),
                pos("lr", "tensor<f32>"), count("step", "tensor<f32>", 1000), pos("scale", "tensor<f32>")},
               {"tensor<50xf64>", "tensor<50xf64>", "tensor<50xf64>"},
               "%r0, %r1, %r2 = kiln.adamw_update %w, %g, %m, %v, %lr, %step, %scale {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.1 : f32} : (tensor<50xf64>, tensor<50xf64>, tensor<50xf64>, tensor<50xf64>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<50xf64>, tensor<50xf64>, tensor<50xf64>)",
               1e-12, 1e-12});
  return c;
}

std::string functionText(const OpCase &c) {
  std::string s = "func.func @" + c.name + "(";
  for (const auto &[i, a] : llvm::enumerate(c.args))
    s += (i ? ", " : "") + ("%" + a.name + ": " + a.type + " {kiln.input = \"" + a.name + "\"}");
  s += ") -> (";
  for (const auto &[i, t] : llvm::enumerate(c.results))
    s += (i ? ", " : "") + t + " {kiln.output = \"r" + std::to_string(i) + "\"}";
  s += ") {\n  " + c.body + "\n  return ";
  for (size_t i = 0; i < c.results.size(); ++i)
    s += (i ? ", %r" : "%r") + std::to_string(i);
  s += " : ";
  s += llvm::join(c.results, ", ");
  return s + "\n}\n";
}

cpu::HostTensor randomInput(const Arg &a, const cpu::HostTensor &shapeOf, Rng &rng) {
  cpu::HostTensor t(shapeOf.dtype(), shapeOf.shape());
  for (int64_t i = 0; i < t.numel(); ++i) {
    switch (a.gen) {
    case Gen::Normal: t.set(i, rng.normal()); break;
    case Gen::Positive: t.set(i, 0.25 + 2.0 * rng.uniform()); break;
    case Gen::Ids: t.set(i, static_cast<double>(rng.below(static_cast<uint64_t>(a.range)))); break;
    case Gen::Mask: t.set(i, rng.below(2)); break;
    case Gen::Count: t.set(i, static_cast<double>(1 + rng.below(static_cast<uint64_t>(a.range)))); break;
    case Gen::Documents: {
      const int64_t n = t.dim(-1);
      t.set(i, i % n == 0 ? 0.0 : t.get(i - 1) + (rng.below(static_cast<uint64_t>(a.range)) == 0));
      break;
    }
    }
  }
  return t;
}

/// Everything the cases share: the module, the CPU results and the plan on
/// the GPU, built once for the suite.
struct Suite {
  std::unique_ptr<mlir::MLIRContext> ctx;
  mlir::OwningOpRef<mlir::ModuleOp> module;
  std::map<std::string, std::map<std::string, cpu::HostTensor>> inputs, expected;
  /// For the device's architecture, or sm_90 without a GPU.
  std::optional<Plan> plan;
  std::unique_ptr<cuda::CudaExecutor> executor;
  std::string error;
};

Suite &suite() {
  static Suite s = [] {
    Suite s;
    s.ctx = makeContext();
    std::string text;
    for (const OpCase &c : cases())
      text += functionText(c);
    s.module = parse(*s.ctx, text);
    if (!s.module) {
      s.error = "the cases do not parse (KILN_DUMP_CASES=1 prints their text)";
      if (getenv("KILN_DUMP_CASES"))
        llvm::errs() << text;
      return s;
    }
    for (const OpCase &c : cases()) {
      // Each case draws from its own stream, so adding a case does not
      // change the inputs (and the rounding luck) of the others.
      Rng rng(20261129, c.name);
      auto func = s.module->lookupSymbol<mlir::func::FuncOp>(c.name);
      auto interp = cpu::Interpreter::create(func);
      if (!interp) {
        s.error = c.name + ": " + llvm::toString(interp.takeError());
        return s;
      }
      std::vector<cpu::HostTensor> args;
      for (const auto &[i, a] : llvm::enumerate(c.args)) {
        auto type = cpu::hostTypeOf(func.getArgumentTypes()[i]);
        cpu::HostTensor like(type->first, type->second);
        args.push_back(randomInput(a, like, rng));
        s.inputs[c.name][a.name] = args.back();
      }
      auto out = (*interp)->run(args);
      if (!out) {
        s.error = c.name + " on the CPU: " + llvm::toString(out.takeError());
        return s;
      }
      for (size_t r = 0; r < out->size(); ++r)
        s.expected[c.name]["r" + std::to_string(r)] = (*out)[r];
    }
    codegen::CodegenOptions options;
    if (auto dev = cuda::device()) {
      options.arch = dev->arch();
      options.smCount = dev->smCount;
    } else {
      llvm::consumeError(dev.takeError());
    }
    // The training pipeline's last stage, as kiln train runs it: runs of
    // argument casts marked for one launch (the cast_group case).
    mlir::PassManager pm(s.ctx.get());
    pm.addPass(createGroupCastsPass());
    if (mlir::failed(pm.run(*s.module))) {
      s.error = "kiln-group-casts failed on the cases";
      return s;
    }
    auto plan = codegen::compileToPlan(*s.module, options);
    if (!plan) {
      s.error = llvm::toString(plan.takeError());
      return s;
    }
    s.plan = *plan;
    if (!noGpuReason().empty())
      return s;
    auto ex = cuda::CudaExecutor::create(std::move(*plan), cuda::ExecutorOptions());
    if (!ex) {
      s.error = llvm::toString(ex.takeError());
      return s;
    }
    s.executor = std::move(*ex);
    return s;
  }();
  return s;
}

/// The cases `keep` selects; their functions' text is added to `text`.
std::vector<OpCase> casesWhere(llvm::function_ref<bool(const OpCase &)> keep, std::string &text) {
  std::vector<OpCase> picked;
  for (const OpCase &c : cases())
    if (keep(c)) {
      picked.push_back(c);
      text += functionText(c);
    }
  return picked;
}

/// This machine's GPU's arch ("sm_90a"), or "" without one.
std::string deviceArchOrNone() {
  auto dev = cuda::device();
  if (dev)
    return dev->arch();
  llvm::consumeError(dev.takeError());
  return "";
}

/// Every kernel of `plan` compiled by NVRTC for the plan's architecture.
llvm::Expected<std::vector<std::string>> compileWithNvrtc(const Plan &plan) {
  std::vector<cuda::KernelSource> sources;
  for (const PlanKernel &k : plan.kernels)
    sources.push_back({k.name, k.source});
  cuda::CompileOptions options;
  options.arch = plan.arch;
  options.headers = plan.headers;
  options.cacheDir = cuda::defaultCacheDir();
  return cuda::compileKernels(sources, options);
}

// Without a GPU: the cases parse, run on the CPU, and every kernel of their
// plan compiles with NVRTC for sm_90.
TEST(CudaOpsCases, RunOnTheCpuAndCompileWithNvrtc) {
  Suite &s = suite();
  ASSERT_TRUE(s.error.empty()) << s.error;
  ASSERT_TRUE(s.plan.has_value());
  EXPECT_EQ(s.plan->functions.size(), cases().size());
  auto cubins = compileWithNvrtc(*s.plan);
  ASSERT_TRUE(static_cast<bool>(cubins)) << llvm::toString(cubins.takeError());
  for (const std::string &cubin : *cubins)
    EXPECT_GT(cubin.size(), 0u);
  // The cast-group case runs its three casts as one multi-tensor launch.
  const PlanFunction *group = s.plan->function("cast_group_f32_bf16");
  ASSERT_TRUE(group);
  int multiTensor = 0, castSteps = 0;
  for (const PlanStep &step : group->steps) {
    castSteps += step.op.rfind("kiln.cast", 0) == 0;
    multiTensor += step.kind == PlanStep::Kind::Launch &&
                   s.plan->kernels[step.kernel].source.find("3 kiln.cast ops") != std::string::npos;
  }
  EXPECT_EQ(multiTensor, 1);
  EXPECT_EQ(castSteps, 1);
}

// codegen's table of the shared memory a block may have (the tiles are
// sized by it, without a device) against what this device's driver says.
TEST(CudaDevice, SharedMemoryTableMatchesTheDriver) {
  KILN_REQUIRE_GPU();
  auto dev = cuda::device();
  ASSERT_TRUE(static_cast<bool>(dev)) << llvm::toString(dev.takeError());
  auto api = cuda::driver();
  ASSERT_TRUE(static_cast<bool>(api)) << llvm::toString(api.takeError());
  int optin = 0;
  ASSERT_EQ(api->cuDeviceGetAttribute(&optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                                      dev->device),
            CUDA_SUCCESS);
  EXPECT_EQ(codegen::maxSharedBytes(dev->arch()), optin) << dev->name << " (" << dev->arch() << ")";
}

// Both sets of flash kernels: on sm_90a kiln runs the wgmma ones (the suite
// above covers them on an H200), everywhere else the mma.sync ones (here
// forced by the tiles' last field on sm_90a). Without a GPU, each plan's kernels
// compile with NVRTC, so CI compiles the wgmma kernels too; with a GPU each
// variant it can run matches the interpreter like the cases above.
TEST(CudaFlashKernels, WgmmaAndMmaSyncMatchTheInterpreter) {
  Suite &s = suite();
  ASSERT_TRUE(s.error.empty()) << s.error;
  std::string text;
  std::vector<OpCase> grads = casesWhere(
      [](const OpCase &c) {
        const bool low = c.name.find("f32") == std::string::npos;
        return c.name.rfind("flash_", 0) == 0 ||
               (low && (c.name.rfind("attention_grad_qkv_", 0) == 0 ||
                        c.name.rfind("attention_bias_grad_", 0) == 0));
      },
      text);
  ASSERT_GE(grads.size(), 16u);
  const std::string deviceArch = deviceArchOrNone();
  struct Variant {
    const char *tiles, *forward, *kernel;
  };
  // The wgmma tiles beyond the defaults: two backward warpgroups at D = 64
  // (dq's columns split 32/32 through Kᵀ) and one forward warpgroup at
  // D = 128; one backward warpgroup at D = 128 (dq's 128 columns in one);
  // dq's product first (the X field's 1) at one and two backward
  // warpgroups; the forward's softmax overlapped with O += P·V (its 2) at
  // one and two forward warpgroups; dq converted by the backward's last
  // block of each head instead of a launch of its own (its 4) at one and
  // two backward warpgroups, with the qkv bias cases' column sums there;
  // the warp-specialized forward (its 8) with key blocks of 128 and 64.
  for (const Variant &v : {Variant{"", "forwardWgmma<", "backwardWgmma<"},
                           Variant{"4,1,128,4,0,1,0,4", "forwardWgmma<", "backwardWgmma<"},
                           Variant{"8,1,128,8,0,1,0,5", "forwardWgmma<", "backwardWgmma<"},
                           Variant{"4,1,128,4,0,1,0,2", "forwardWgmma<", "backwardWgmma<"},
                           Variant{"8,1,128,8,0,1,0,3", "forwardWgmma<", "backwardWgmma<"},
                           Variant{"4,2,64,8,0,0", "forward<", "backward<"},
                           Variant{"4,1,128,8,1,1", "forwardWgmma<", "backwardWgmma<"},
                           Variant{"8,1,64,4,0,1,1", "forwardWgmma<", "backwardWgmma<"},
                           Variant{"4,1,128,4,0,1,0,1", "forwardWgmma<", "backwardWgmma<"},
                           Variant{"8,1,64,8,0,1,0,1", "forwardWgmma<", "backwardWgmma<"},
                           Variant{"8,1,128,4,0,1,0,8", "forwardSpecialized<", "backwardWgmma<"},
                           Variant{"8,1,64,8,0,1,0,9", "forwardSpecialized<", "backwardWgmma<"}}) {
    SCOPED_TRACE(std::string("kernel ") + v.kernel);
    auto ctx = makeContext();
    auto module = parse(*ctx, text);
    ASSERT_TRUE(module);
    codegen::CodegenOptions options;
    options.arch = "sm_90a";
    options.attentionTiles = v.tiles;
    auto plan = codegen::compileToPlan(*module, options);
    ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
    int forwards = 0, backwards = 0;
    for (const PlanKernel &k : plan->kernels) {
      if (k.source.find("kiln::flash::forward") != std::string::npos) {
        ++forwards;
        EXPECT_NE(k.source.find(std::string("kiln::flash::") + v.forward), std::string::npos)
            << k.source;
      }
      if (k.name.rfind("flash_attention_backward", 0) == 0) {
        ++backwards;
        EXPECT_NE(k.source.find(std::string("kiln::flash::") + v.kernel), std::string::npos)
            << k.source;
      }
    }
    // The plan shares identical kernels between cases: at least one of each
    // head dim and direction.
    EXPECT_GE(forwards, 4);
    EXPECT_GE(backwards, 4);
    if (deviceArch != "sm_90a") {
      auto cubins = compileWithNvrtc(*plan);
      ASSERT_TRUE(static_cast<bool>(cubins)) << llvm::toString(cubins.takeError());
      continue;
    }
    auto ex = cuda::CudaExecutor::create(std::move(*plan), cuda::ExecutorOptions());
    ASSERT_TRUE(static_cast<bool>(ex)) << llvm::toString(ex.takeError());
    for (const OpCase &c : grads) {
      auto got = (*ex)->run(c.name, s.inputs[c.name]);
      ASSERT_TRUE(static_cast<bool>(got)) << c.name << ": " << llvm::toString(got.takeError());
      for (const auto &[name, want] : s.expected[c.name]) {
        ASSERT_TRUE(got->count(name)) << c.name << ": no output " << name;
        Difference d = compare(got->at(name), want, c.atol, c.rtol);
        std::printf("  %-36s %-15s %-3s max abs err %.3e  max rel err %.3e\n", c.name.c_str(),
                    v.tiles[0] ? v.tiles : "default", name.c_str(), d.maxAbs, d.maxRel);
        EXPECT_EQ(d.worst, -1) << c.name << " " << name << ": element " << d.worst << " is "
                               << d.worstGot << " on the GPU, " << d.worstWant << " on the CPU";
      }
    }
  }
}

// train.deterministic: the flash backward's dq in key-block order (every
// backward variant: mma.sync, wgmma with one and two warpgroups, dq's
// product first) and the embedding's gradient in token order. Without a
// GPU each plan compiles with NVRTC (sm_90a, and sm_80 for the mma.sync
// kernels' acquire and release); with one, each case matches the
// interpreter and a second run gives the same bits.
TEST(CudaDeterministic, OrderedSumsMatchTheInterpreterAndRepeat) {
  Suite &s = suite();
  ASSERT_TRUE(s.error.empty()) << s.error;
  std::string text;
  std::vector<OpCase> picked = casesWhere(
      [](const OpCase &c) {
        return c.name.rfind("flash_grad_", 0) == 0 || c.name.rfind("embedding_grad", 0) == 0 ||
               (c.name.rfind("attention_grad_qkv_", 0) == 0 &&
                c.name.find("f32") == std::string::npos);
      },
      text);
  ASSERT_GE(picked.size(), 17u);
  const std::string deviceArch = deviceArchOrNone();
  struct Variant {
    const char *arch, *tiles;
  };
  for (const Variant &v : {Variant{"sm_90a", ""}, Variant{"sm_90a", "4,2,64,8,0,0"},
                           Variant{"sm_90a", "8,1,64,8,0,1,0,1"},
                           Variant{"sm_90a", "4,1,128,4,0,1,0,4"},
                           Variant{"sm_90a", "4,1,128,4,0,1,0,1"}, Variant{"sm_80", ""}}) {
    SCOPED_TRACE(std::string(v.arch) + " tiles " + (v.tiles[0] ? v.tiles : "default"));
    auto ctx = makeContext();
    auto module = parse(*ctx, text);
    ASSERT_TRUE(module);
    (*module)->setAttr(KilnDialect::kDeterministicAttrName, mlir::UnitAttr::get(ctx.get()));
    codegen::CodegenOptions options;
    options.arch = v.arch;
    options.attentionTiles = v.tiles;
    auto plan = codegen::compileToPlan(*module, options);
    ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
    EXPECT_TRUE(plan->deterministic);
    int ordered = 0, embeddings = 0;
    for (const PlanKernel &k : plan->kernels) {
      if (k.name.rfind("flash_attention_backward", 0) == 0) {
        ++ordered;
        // The template ends ORDERED, BIAS, STAGES.
        size_t call = k.source.find(">(q, k, v, lse");
        ASSERT_NE(call, std::string::npos) << k.source;
        llvm::SmallVector<llvm::StringRef> args;
        llvm::StringRef(k.source).take_front(call).rsplit('<').second.split(args, ", ");
        ASSERT_GE(args.size(), 3u) << k.source;
        EXPECT_EQ(args[args.size() - 3], "true") << k.source;
      }
      embeddings += k.source.find("kiln::embeddingBackwardOrdered<") != std::string::npos;
      EXPECT_EQ(k.source.find("kiln::embeddingBackward<"), std::string::npos) << k.source;
    }
    EXPECT_GE(ordered, 4);
    EXPECT_GE(embeddings, 3);
    if (deviceArch != v.arch) {
      auto cubins = compileWithNvrtc(*plan);
      ASSERT_TRUE(static_cast<bool>(cubins)) << llvm::toString(cubins.takeError());
      continue;
    }
    auto ex = cuda::CudaExecutor::create(std::move(*plan), cuda::ExecutorOptions());
    ASSERT_TRUE(static_cast<bool>(ex)) << llvm::toString(ex.takeError());
    for (const OpCase &c : picked) {
      auto got = (*ex)->run(c.name, s.inputs[c.name]);
      ASSERT_TRUE(static_cast<bool>(got)) << c.name << ": " << llvm::toString(got.takeError());
      auto again = (*ex)->run(c.name, s.inputs[c.name]);
      ASSERT_TRUE(static_cast<bool>(again)) << c.name << ": " << llvm::toString(again.takeError());
      for (const auto &[name, want] : s.expected[c.name]) {
        ASSERT_TRUE(got->count(name)) << c.name << ": no output " << name;
        const cpu::HostTensor &g = got->at(name), &h = again->at(name);
        Difference d = compare(g, want, c.atol, c.rtol);
        EXPECT_EQ(d.worst, -1) << c.name << " " << name << ": element " << d.worst << " is "
                               << d.worstGot << " on the GPU, " << d.worstWant << " on the CPU";
        EXPECT_EQ(std::memcmp(g.raw(), h.raw(), g.numel() * cpu::dtypeSize(g.dtype())), 0)
            << c.name << " " << name << ": two runs differ";
      }
    }
  }
}

class CudaOps : public ::testing::TestWithParam<OpCase> {};

TEST_P(CudaOps, MatchesInterpreter) {
  KILN_REQUIRE_GPU();
  const OpCase &c = GetParam();
  Suite &s = suite();
  ASSERT_TRUE(s.error.empty()) << s.error;
  auto got = s.executor->run(c.name, s.inputs[c.name]);
  ASSERT_TRUE(static_cast<bool>(got)) << llvm::toString(got.takeError());
  for (const auto &[name, want] : s.expected[c.name]) {
    ASSERT_TRUE(got->count(name)) << "no output " << name;
    const cpu::HostTensor &g = got->at(name);
    ASSERT_EQ(g.shape(), want.shape()) << name;
    Difference d = compare(g, want, c.atol, c.rtol);
    std::printf("  %-24s %-3s max abs err %.3e  max rel err %.3e  (atol %.0e, rtol %.0e)\n",
                c.name.c_str(), name.c_str(), d.maxAbs, d.maxRel, c.atol, c.rtol);
    EXPECT_EQ(d.worst, -1) << c.name << " " << name << ": element " << d.worst << " is "
                           << d.worstGot << " on the GPU, " << d.worstWant << " on the CPU";
  }
}

// Out-of-range ids are reported, not read past the table.
TEST(CudaOpsErrors, OutOfRangeIdsAreReported) {
  KILN_REQUIRE_GPU();
  Suite &s = suite();
  ASSERT_TRUE(s.error.empty()) << s.error;
  auto inputs = s.inputs["embedding"];
  inputs["ids"] = inputs["ids"].clone();
  inputs["ids"].set(5, 100); // the table has 100 rows
  auto got = s.executor->run("embedding", inputs);
  ASSERT_FALSE(static_cast<bool>(got));
  EXPECT_NE(llvm::toString(got.takeError()).find("a token id is outside the embedding table"),
            std::string::npos);
  // The flag is cleared: the next run with good ids succeeds.
  auto again = s.executor->run("embedding", s.inputs["embedding"]);
  EXPECT_TRUE(static_cast<bool>(again)) << llvm::toString(again.takeError());
  auto targets = s.inputs["cross_entropy"];
  targets["t"] = targets["t"].clone();
  targets["t"].set(0, 995); // valid_classes = 990
  auto bad = s.executor->run("cross_entropy", targets);
  ASSERT_FALSE(static_cast<bool>(bad));
  EXPECT_NE(llvm::toString(bad.takeError()).find("a target is at or past the vocabulary size"),
            std::string::npos);
}

// A Plan saved by `kiln compile --emit=plan` and loaded back runs: the
// runtime needs nothing but the files.
TEST(CudaPlanFiles, ASavedPlanRuns) {
  KILN_REQUIRE_GPU();
  Suite &s = suite();
  ASSERT_TRUE(s.error.empty()) << s.error;
  llvm::SmallString<128> dir;
  ASSERT_FALSE(llvm::sys::fs::createUniqueDirectory("kiln-saved-plan", dir));
  ASSERT_FALSE(static_cast<bool>(s.plan->save(dir)));
  auto loaded = Plan::load(dir);
  ASSERT_TRUE(static_cast<bool>(loaded)) << llvm::toString(loaded.takeError());
  auto ex = cuda::CudaExecutor::create(std::move(*loaded), cuda::ExecutorOptions());
  ASSERT_TRUE(static_cast<bool>(ex)) << llvm::toString(ex.takeError());
  for (const char *name : {"layer_norm", "matmul_bias", "softmax_long_rows", "adamw_update"}) {
    auto got = (*ex)->run(name, s.inputs[name]);
    ASSERT_TRUE(static_cast<bool>(got)) << llvm::toString(got.takeError());
    for (const auto &[out, want] : s.expected[name])
      EXPECT_EQ(compare(got->at(out), want, 1e-4, 1e-4).worst, -1) << name << " " << out;
  }
  llvm::sys::fs::remove_directories(dir);
}

// The profile times each step of a function alone: one entry per plan step,
// in order, naming its op and kernel, and together about the function's time
// (eager launches add host gaps, so the sum is at least the graph's time
// less event noise).
TEST(CudaProfile, EveryStepIsTimedAndNamed) {
  KILN_REQUIRE_GPU();
  Suite &s = suite();
  ASSERT_TRUE(s.error.empty()) << s.error;
  const char *name = "softmax_long_rows";
  auto ran = s.executor->run(name, s.inputs[name]);
  ASSERT_TRUE(static_cast<bool>(ran)) << llvm::toString(ran.takeError());
  auto profile = s.executor->profile(name, 3);
  ASSERT_TRUE(static_cast<bool>(profile)) << llvm::toString(profile.takeError());
  const PlanFunction *pf = nullptr;
  for (const PlanFunction &f : s.executor->plan().functions)
    if (f.name == name)
      pf = &f;
  ASSERT_NE(pf, nullptr);
  ASSERT_EQ(profile->size(), pf->steps.size());
  double total = 0;
  for (size_t i = 0; i < profile->size(); ++i) {
    const auto &t = (*profile)[i];
    EXPECT_EQ(t.index, i);
    EXPECT_EQ(t.op, pf->steps[i].op);
    EXPECT_FALSE(t.kernel.empty());
    EXPECT_GT(t.ms, 0.0) << t.op;
    total += t.ms;
  }
  auto graph = s.executor->time(name, 10);
  ASSERT_TRUE(static_cast<bool>(graph)) << llvm::toString(graph.takeError());
  EXPECT_GT(total, 0.5 * *graph) << "the steps' times should add up to about the function's";
  auto missing = s.executor->profile("no_such_function", 1);
  ASSERT_FALSE(static_cast<bool>(missing));
  EXPECT_NE(llvm::toString(missing.takeError()).find("no_such_function"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Ops, CudaOps, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<OpCase> &info) { return info.param.name; });

} // namespace
} // namespace kiln::test
