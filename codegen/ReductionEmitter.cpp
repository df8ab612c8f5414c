//===- ReductionEmitter.cpp - reductions and matmul (cuBLASLt) -------------===//
//
// Reductions over trailing dimensions are row reductions (a warp per row);
// over leading dimensions, column reductions in two passes through partial
// sums in the workspace (no atomics); both read 16-byte words when a row is
// whole words; any other set of dimensions, one
// thread per output looping over the reduced elements.
//
// kiln.matmul is row-major C[M,N] = op(A)·op(B). cuBLASLt is column-major,
// so kiln computes Cᵀ = op(B)ᵀ·op(A)ᵀ: a row-major [R, C] matrix is a
// column-major [C, R] one, so B takes the first operand's place and A the
// second's, with no data movement. A weight shared by a batch is one GEMM
// over the stacked rows.
//
//===----------------------------------------------------------------------===//

#include "codegen/Emitter.h"

#include "ir/KilnOps.h"

#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MathExtras.h"

using namespace mlir;

namespace kiln::codegen {

llvm::Expected<bool> emitReduction(Emitter &e, Operation *op) {
  int kind;
  ArrayRef<int64_t> dims;
  if (auto r = dyn_cast<ReduceSumOp>(op)) {
    kind = 0;
    dims = r.getDims();
  } else if (auto r = dyn_cast<ReduceMaxOp>(op)) {
    kind = 1;
    dims = r.getDims();
  } else if (auto r = dyn_cast<ReduceMeanOp>(op)) {
    kind = 2;
    dims = r.getDims();
  } else {
    return false;
  }
  Value in = op->getOperand(0), out = op->getResult(0);
  auto inType = tensorOf(in);
  auto inOffset = e.offsetOf(in), outOffset = e.offsetOf(out);
  if (!inOffset)
    return inOffset.takeError();
  if (!outOffset)
    return outOffset.takeError();
  int64_t rank = inType.getRank(), k = dims.size();
  // suffix: the last k dimensions (rows); block: k consecutive ones, with
  // the dimensions before them batches of a column reduction.
  bool suffix = true, block = k > 0;
  for (int64_t i = 0; i < k; ++i) {
    suffix &= dims[i] == rank - k + i;
    block &= dims[i] == dims[0] + i;
  }
  std::string T = cType(inType.getElementType());
  int64_t total = inType.getNumElements(), outN = tensorOf(out).getNumElements();
  if (!isa<FloatType>(inType.getElementType()))
    return error("codegen: integer reductions are not supported on the GPU (" + Emitter::describe(op) + ")");

  auto wordsOf = [&](int64_t n) { return wordElements(inType.getElementType(), n); };
  if (suffix || k == 0) {
    int64_t row = outN ? total / outN : 0;
    int64_t w = wordsOf(row);
    std::string call = w ? llvm::formatv("  kiln::reduceRowsVec<{1}, {0}, {0}, {2}, {3}, {4}>(in, out);\n", T,
                                         kind, outN, row, w)
                               .str()
                         : llvm::formatv("  kiln::reduceRows<{1}, {0}, {0}, {2}, {3}>(in, out);\n", T, kind,
                                         outN, row)
                               .str();
    std::string source = include("reduce.cuh") + Emitter::header(op) +
                         llvm::formatv("extern \"C\" __global__ void __launch_bounds__(256) @NAME@(const {0} *in, {0} *out) {{\n",
                                       T)
                             .str() +
                         call + "}\n";
    e.launch(op, "reduce_rows", source, {e.gridFor(outN * 32, 256), 1, 1}, {256, 1, 1},
             {Emitter::ptr(*inOffset), Emitter::ptr(*outOffset)});
    return true;
  }
  // [outer, rows, cols]: `outer` independent column reductions (grid z, at
  // most 65535; 1 when the reduced dimensions lead).
  int64_t outer = 1;
  for (int64_t d = 0; block && d < dims[0]; ++d)
    outer *= inType.getDimSize(d);
  const int64_t cols = block && outN > 0 ? outN / outer : 0, rows = outN > 0 ? total / outN : 0;
  const int64_t w = cols > 0 ? wordsOf(cols) : 0;
  const int64_t threads = w ? cols / w : cols; // a thread per column, or per word of columns
  const int64_t sm = e.options().smCount;
  // The rows split (partial sums, then a final pass) when there are at
  // least 64 of them and a thread per column (per word) would leave the GPU
  // short of about 2048 threads an SM. Unsplit (few rows, or columns enough
  // to fill the GPU), the general kernel below has the parallelism already,
  // in one launch and without partial sums (which would take outN floats of
  // scratch: 32 MiB for the position embedding's gradient at B = 8, T =
  // 4096, C = 2048).
  const bool split = block && rows > 0 && threads > 0 && outer <= 65535 &&
                     std::min<int64_t>(rows / 32, sm * 2048 / (threads * outer)) > 1;
  // Whole words: a block of WX × RY threads per WX words and chunk of rows
  // (reduceColumnsPartialVec), the chunks sized for about three blocks an
  // SM (one chunk when the columns alone make that many blocks), each
  // thread at least 4 rows. Otherwise a thread per column and chunks of at
  // least 32 rows for about 2048 threads an SM (at most 65535, grid y).
  const int64_t wx = w ? std::min<int64_t>(32, llvm::PowerOf2Ceil(threads)) : 0,
                ry = w ? 256 / wx : 0;
  const int64_t xBlocks = w ? (threads + wx - 1) / wx : 0;
  int64_t chunks = 1;
  if (split && w)
    chunks = std::min<int64_t>(std::max<int64_t>(1, rows / (4 * ry)),
                               (3 * sm + xBlocks * outer - 1) / (xBlocks * outer));
  else if (split)
    chunks = std::min<int64_t>({rows / 32, sm * 2048 / (threads * outer), 65535});
  if (split) {
    int64_t chunk = (rows + chunks - 1) / chunks;
    if (w)
      chunk = (chunk + ry - 1) / ry * ry;
    chunks = (rows + chunk - 1) / chunk;
    std::string C = computeType(inType.getElementType());
    const int64_t partial = e.scratch(outer * chunks * cols * (C == "double" ? 8 : 4));
    // Batch z's input, partial sums and output.
    std::string batch = outer == 1 ? std::string()
                                   : llvm::formatv("  in += (kiln::i64)blockIdx.z * {0};\n"
                                                   "  partial += (kiln::i64)blockIdx.z * {1};\n",
                                                   rows * cols, chunks * cols)
                                         .str();
    std::string batchOut = outer == 1 ? std::string()
                                      : llvm::formatv("  partial += (kiln::i64)blockIdx.z * {0};\n"
                                                      "  out += (kiln::i64)blockIdx.z * {1};\n",
                                                      chunks * cols, cols)
                                            .str();
    std::string call =
        w ? llvm::formatv("  kiln::reduceColumnsPartialVec<{1}, {0}, {2}, {3}, {4}, {5}, {6}, "
                          "{7}>(in, partial);\n",
                          T, kind, rows, cols, chunk, w, wx, ry)
                .str()
          : llvm::formatv("  kiln::reduceColumnsPartial<{1}, {0}, {2}, {3}, {4}>(in, partial);\n",
                          T, kind, rows, cols, chunk)
                .str();
    std::string src1 = include("reduce.cuh") + Emitter::header(op) +
                       llvm::formatv("extern \"C\" __global__ void __launch_bounds__(256) @NAME@(const {0} *in, {1} *partial) {{\n",
                                     T, C)
                           .str() +
                       batch + call + "}\n";
    int64_t threadsPerBlock = w ? wx * ry : std::min<int64_t>(256, (threads + 31) / 32 * 32);
    e.launch(op, "reduce_columns_partial", src1,
             {w ? xBlocks : (threads + threadsPerBlock - 1) / threadsPerBlock, chunks, outer},
             {threadsPerBlock, 1, 1}, {Emitter::ptr(*inOffset), Emitter::ptr(partial)});
    int64_t ys = std::min<int64_t>(32, chunks);
    std::string src2 = include("reduce.cuh") + Emitter::header(op) +
                       llvm::formatv("extern \"C\" __global__ void __launch_bounds__(1024) @NAME@(const {1} *partial, {0} *out) {{\n"
                                     "{7}  kiln::reduceColumnsFinal<{2}, {0}, {3}, {4}, {5}, {6}>(partial, out);\n}\n",
                                     T, C, kind, rows, cols, chunks, ys, batchOut)
                           .str();
    e.launch(op, "reduce_columns_final", src2, {(cols + 31) / 32, 1, outer}, {32, ys, 1},
             {Emitter::ptr(partial), Emitter::ptr(*outOffset)});
    return true;
  }
  // General: one thread per output, looping over the reduced index space.
  SmallVector<int64_t> strides(rank, 1), kept, reduced;
  for (int64_t d = rank - 2; d >= 0; --d)
    strides[d] = strides[d + 1] * inType.getDimSize(d + 1);
  for (int64_t d = 0; d < rank; ++d)
    (llvm::is_contained(dims, d) ? reduced : kept).push_back(d);
  std::string base = "    kiln::i64 rem = o, base = 0;\n";
  for (auto it = kept.rbegin(); it != kept.rend(); ++it)
    base += llvm::formatv("    base += (rem % {0}) * {1}; rem /= {0};\n", inType.getDimSize(*it), strides[*it]).str();
  int64_t count = 1;
  for (int64_t d : reduced)
    count *= inType.getDimSize(d);
  std::string inner = "      kiln::i64 r = j, off = base;\n";
  for (auto it = reduced.rbegin(); it != reduced.rend(); ++it)
    inner += llvm::formatv("      off += (r % {0}) * {1}; r /= {0};\n", inType.getDimSize(*it), strides[*it]).str();
  std::string C = computeType(inType.getElementType());
  std::string source =
      include("reduce.cuh") + Emitter::header(op) +
      llvm::formatv("extern \"C\" __global__ void __launch_bounds__(256) @NAME@(const {0} *in, {0} *out) {{\n"
                    "  for (kiln::i64 o = blockIdx.x * (kiln::i64)blockDim.x + threadIdx.x; o < {1};\n"
                    "       o += (kiln::i64)gridDim.x * blockDim.x) {{\n{2}"
                    "    {3} acc = kiln::identity<{4}, {3}>();\n"
                    "    for (kiln::i64 j = 0; j < {5}; ++j) {{\n{6}"
                    "      acc = kiln::combine<{4}>(acc, ({3})kiln::load(in, off));\n    }\n"
                    "    kiln::store(out, o, {7});\n  }\n}\n",
                    T, outN, base, C, kind, count, inner, kind == 2 ? "acc / (" + C + ")" + str(count) : std::string("acc"))
          .str();
  e.launch(op, "reduce", source, {e.gridFor(outN, 256), 1, 1}, {256, 1, 1},
           {Emitter::ptr(*inOffset), Emitter::ptr(*outOffset)});
  return true;
}

GemmEpilogue epilogueOf(const GemmEpilogueBody &body) {
  switch (body.activation) {
  case GemmEpilogueBody::Activation::Gelu:
    return body.preActivation ? GemmEpilogue::GeluAux : GemmEpilogue::Gelu;
  case GemmEpilogueBody::Activation::GeluGrad:
    return body.biasGrad ? GemmEpilogue::GeluGradBgrad : GemmEpilogue::GeluGrad;
  case GemmEpilogueBody::Activation::None:
    break;
  }
  return GemmEpilogue::BgradA;
}

/// The GEMM of `mm` writing `out`, with `bias` (added or written) if any;
/// `offset` gives the arena offset holding a value's bytes.
static llvm::Expected<GemmDesc> gemmOf(MatmulOp mm, Value out, Value bias,
                                       llvm::function_ref<llvm::Expected<int64_t>(Value)> offset) {
  auto aOff = offset(mm.getLhs()), bOff = offset(mm.getRhs()), cOff = offset(out);
  if (!aOff)
    return aOff.takeError();
  if (!bOff)
    return bOff.takeError();
  if (!cOff)
    return cOff.takeError();
  int64_t biasOff = -1;
  if (bias) {
    auto off = offset(bias);
    if (!off)
      return off.takeError();
    biasOff = *off;
  }
  auto a = tensorOf(mm.getLhs()), b = tensorOf(mm.getRhs()), c = tensorOf(mm.getResult());
  bool ta = mm.getTransposeA(), tb = mm.getTransposeB();
  int64_t ra = a.getRank(), rb = b.getRank();
  int64_t M = c.getDimSize(c.getRank() - 2), N = c.getShape().back();
  int64_t K = ta ? a.getDimSize(ra - 2) : a.getDimSize(ra - 1);
  int64_t batch = c.getNumElements() / (M * N);
  bool aBatched = ra > 2, bBatched = rb > 2;

  GemmDesc g;
  g.inType = *cpu::dtypeOf(a.getElementType());
  // A widened epilogue output (f32 from bf16): cuBLASLt writes it directly.
  g.outType = *cpu::dtypeOf(tensorOf(out).getElementType());
  // Column-major Cᵀ[N, M] = op(B)ᵀ[N, K] · op(A)ᵀ[K, M].
  g.transA = tb;        // B stored [K,N] row-major is Bᵀ column-major: no transpose
  g.lda = tb ? K : N;   // ... [N,K] row-major (transpose_b) needs one
  g.transB = ta;
  g.ldb = ta ? M : K;
  g.m = N;
  g.n = M;
  g.k = K;
  g.ldc = N;
  g.a = *bOff;
  g.b = *aOff;
  g.c = *cOff;
  // cuBLASLt's bias epilogue adds a vector of m (= kiln's N) entries to
  // every column of the column-major result, i.e. to every row of ours.
  g.bias = biasOff;
  if (batch > 1 && aBatched && !bBatched && !ta) {
    // A shared weight: one GEMM over all batch·M rows.
    g.n = batch * M;
    g.batch = 1;
  } else {
    g.batch = batch;
    g.strideA = bBatched ? K * N : 0;
    g.strideB = aBatched ? M * K : 0;
    g.strideC = M * N;
  }
  return g;
}

/// A kiln.fusion that is a GEMM epilogue (matchGemmEpilogue): one cuBLASLt
/// call. In column-major terms kiln's columns are cuBLASLt's rows, so the
/// bias-gradient sums over kiln's rows are sums of C's rows (DGELU_BGRAD),
/// and a weight gradient's sum of its rhs over k is BGRADA (the rhs is
/// cuBLASLt's A).
static llvm::Expected<bool> emitGemmEpilogue(Emitter &e, FusionOp fusion, GemmEpilogueBody body) {
  Block &block = fusion.getBody().front();
  SmallVector<Value> yielded(fusion.getYield().getValues());
  // The value outside the fusion that holds body value `v`'s bytes.
  auto outside = [&](Value v) -> Value {
    if (auto r = v.getDefiningOp<ReshapeOp>())
      v = r.getOperand();
    if (auto arg = dyn_cast<BlockArgument>(v); arg && arg.getOwner() == &block)
      return fusion.getInputs()[arg.getArgNumber()];
    auto it = llvm::find(yielded, v);
    assert(it != yielded.end() && "an epilogue value is neither an input nor yielded");
    return fusion.getResult(it - yielded.begin());
  };
  auto offset = [&](Value v) { return e.offsetOf(outside(v)); };
  MatmulOp mm = body.matmul;
  auto g = gemmOf(mm, body.out, mm.getBias() ? mm.getBias() : body.biasGradOut, offset);
  if (!g)
    return g.takeError();
  g->epilogue = epilogueOf(body);
  // gelu's input: written by the forward, read by the backward.
  if (Value v = body.preActivation ? body.preActivation : body.aux) {
    auto aux = offset(v);
    if (!aux)
      return aux.takeError();
    g->aux = *aux;
  }
  if (llvm::Error err = validateEpilogue(*g))
    return error("codegen: " + Emitter::describe(fusion) + ": " + llvm::toString(std::move(err)));
  e.gemm(fusion, *g);
  return true;
}

llvm::Expected<bool> emitMatmul(Emitter &e, Operation *op) {
  if (auto fusion = dyn_cast<FusionOp>(op)) {
    auto body = matchGemmEpilogue(fusion);
    if (failed(body))
      return false; // a loop fusion
    return emitGemmEpilogue(e, fusion, *body);
  }
  auto mm = dyn_cast<MatmulOp>(op);
  if (!mm)
    return false;
  auto g = gemmOf(mm, mm.getResult(), mm.getBias(), [&](Value v) { return e.offsetOf(v); });
  if (!g)
    return g.takeError();
  e.gemm(op, *g);
  return true;
}

} // namespace kiln::codegen
