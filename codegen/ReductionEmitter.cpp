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

namespace {

/// What a reduction kernel reads (reduce.cuh's functor `in`): its
/// parameters before the result's, their arguments, and the code that
/// defines `in`, element by element and (when `width` > 0) a word of
/// `width` elements at a time. A reduction alone loads its operand; a
/// reduction fusion computes each element from its body and writes its side
/// outputs as it goes.
struct ReduceSource {
  std::string params;
  std::vector<PlanArg> args;
  std::string scalar; // `auto in = [&](kiln::i64 i) -> C {...};`
  /// `struct Word {...}; auto load = [&](kiln::i64 v, Word &w) {...};
  /// auto in = [&](kiln::i64 v, const Word &w, C (&x)[W]) {...};`, or empty
  std::string vector;
  int64_t width = 0;
  std::string comment; // "// body: ...\n" for a fusion
};

/// Reduction `kind` (0 sum, 1 max, 2 mean) over `dims` of a tensor of
/// `inType` that `source` reads, into `out`: kernels named `baseName`_rows,
/// _columns_partial and _columns_final, or `baseName` alone (the general
/// form).
llvm::Expected<bool> emitReduce(Emitter &e, Operation *op, llvm::StringRef baseName, int kind,
                                ArrayRef<int64_t> dims, RankedTensorType inType, Value out,
                                const ReduceSource &source) {
  auto outOffset = e.offsetOf(out);
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
  std::string U = cType(tensorOf(out).getElementType()),
              C = computeType(inType.getElementType());
  int64_t total = inType.getNumElements(), outN = tensorOf(out).getNumElements();
  // A row (or a row of columns) of n elements read a word at a time.
  auto wordsOf = [&](int64_t n) {
    return source.width > 0 && n % source.width == 0 ? source.width : 0;
  };
  auto kernel = [&](const std::string &params, const std::string &fn, const std::string &call) {
    return include("reduce.cuh") + Emitter::header(op) + source.comment +
           "extern \"C\" __global__ void __launch_bounds__(256) @NAME@(" + params + ") {\n" + fn +
           call + "}\n";
  };
  auto withOut = [&](const std::string &more) {
    return source.params + (source.params.empty() ? "" : ", ") + more;
  };
  std::vector<PlanArg> args = source.args;

  if (suffix || k == 0) {
    int64_t row = outN ? total / outN : 0;
    int64_t w = wordsOf(row);
    std::string call =
        w ? llvm::formatv("  kiln::reduceRowsVec<{0}, {1}, {2}, {3}, {4}, {5}, Word>(load, in, "
                          "out);\n",
                          kind, C, U, outN, row, w)
                .str()
          : llvm::formatv("  kiln::reduceRows<{0}, {1}, {2}, {3}, {4}>(in, out);\n", kind, C, U,
                          outN, row)
                .str();
    args.push_back(Emitter::ptr(*outOffset));
    e.launch(op, (baseName + "_rows").str(),
             kernel(withOut(U + " *out"), w ? source.vector : source.scalar, call),
             {e.gridFor(outN * 32, 256), 1, 1}, {256, 1, 1}, args);
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
    const int64_t partial = e.scratch(outer * chunks * cols * (C == "double" ? 8 : 4));
    std::string call =
        w ? llvm::formatv("  kiln::reduceColumnsPartialVec<{0}, {1}, {2}, {3}, {4}, {5}, {6}, "
                          "{7}, Word>(load, in, partial);\n",
                          kind, C, rows, cols, chunk, w, wx, ry)
                .str()
          : llvm::formatv("  kiln::reduceColumnsPartial<{0}, {1}, {2}, {3}, {4}>(in, partial);\n",
                          kind, C, rows, cols, chunk)
                .str();
    int64_t threadsPerBlock = w ? wx * ry : std::min<int64_t>(256, (threads + 31) / 32 * 32);
    args.push_back(Emitter::ptr(partial));
    e.launch(op, (baseName + "_columns_partial").str(),
             kernel(withOut(C + " *partial"), w ? source.vector : source.scalar, call),
             {w ? xBlocks : (threads + threadsPerBlock - 1) / threadsPerBlock, chunks, outer},
             {threadsPerBlock, 1, 1}, args);
    int64_t ys = std::min<int64_t>(32, chunks);
    std::string final =
        include("reduce.cuh") + Emitter::header(op) +
        llvm::formatv("extern \"C\" __global__ void __launch_bounds__(1024) @NAME@(const {1} "
                      "*partial, {0} *out) {{\n"
                      "  kiln::reduceColumnsFinal<{2}, {0}, {3}, {4}, {5}, {6}>(partial, out);\n}\n",
                      U, C, kind, rows, cols, chunks, ys)
            .str();
    e.launch(op, (baseName + "_columns_final").str(), final, {(cols + 31) / 32, 1, outer},
             {32, ys, 1}, {Emitter::ptr(partial), Emitter::ptr(*outOffset)});
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
    base += llvm::formatv("    base += (rem % {0}) * {1}; rem /= {0};\n", inType.getDimSize(*it),
                          strides[*it])
                .str();
  int64_t count = 1;
  for (int64_t d : reduced)
    count *= inType.getDimSize(d);
  std::string inner = "      kiln::i64 r = j, off = base;\n";
  for (auto it = reduced.rbegin(); it != reduced.rend(); ++it)
    inner += llvm::formatv("      off += (r % {0}) * {1}; r /= {0};\n", inType.getDimSize(*it),
                           strides[*it])
                 .str();
  std::string call =
      llvm::formatv("  for (kiln::i64 o = blockIdx.x * (kiln::i64)blockDim.x + threadIdx.x; o < "
                    "{0};\n"
                    "       o += (kiln::i64)gridDim.x * blockDim.x) {{\n{1}"
                    "    {2} acc = kiln::identity<{3}, {2}>();\n"
                    "    for (kiln::i64 j = 0; j < {4}; ++j) {{\n{5}"
                    "      acc = kiln::combine<{3}>(acc, in(off));\n    }\n"
                    "    kiln::store(out, o, {6});\n  }\n",
                    outN, base, C, kind, count, inner,
                    kind == 2 ? "acc / (" + C + ")" + str(count) : std::string("acc"))
          .str();
  args.push_back(Emitter::ptr(*outOffset));
  e.launch(op, baseName, kernel(withOut(U + " *out"), source.scalar, call),
           {e.gridFor(outN, 256), 1, 1}, {256, 1, 1}, args);
  return true;
}

/// The reduction kind of `op` (0 sum, 1 max, 2 mean) and its dims, or -1.
int reductionKind(Operation *op, ArrayRef<int64_t> &dims) {
  if (auto r = dyn_cast<ReduceSumOp>(op)) {
    dims = r.getDims();
    return 0;
  }
  if (auto r = dyn_cast<ReduceMaxOp>(op)) {
    dims = r.getDims();
    return 1;
  }
  if (auto r = dyn_cast<ReduceMeanOp>(op)) {
    dims = r.getDims();
    return 2;
  }
  return -1;
}

/// A reduction fusion's source: `in` evaluates the body at element i (or at
/// the W elements of word v), writing each side output (a yielded value
/// other than the reduction's) there, and returns the reduction's operand
/// rounded to its type, as the unfused reduction would read it.
llvm::Expected<ReduceSource> fusionSource(Emitter &e, FusionOp fusion,
                                          const ReductionFusionBody &body) {
  ReduceSource s;
  Block &block = fusion.getBody().front();
  SmallVector<Value> args(block.getArguments());
  SmallVector<BroadcastInDimOp> readThrough;
  for (Value arg : args)
    readThrough.push_back(broadcastReader(arg));
  Value operand = body.reduce->getOperand(0), result = body.reduce->getResult(0);
  SmallVector<Value> sides;
  SmallVector<Value> sideBuffers;
  for (auto [v, r] : llvm::zip_equal(fusion.getYield().getValues(), fusion.getResults()))
    if (v != result) {
      sides.push_back(v);
      sideBuffers.push_back(r);
    }
  std::string C = computeType(tensorOf(operand).getElementType());
  // Parameters: the inputs, then the side outputs; the word: 16 bytes of
  // the narrowest float that moves through memory a word at a time.
  int64_t narrowest = 0;
  auto narrow = [&](Type t) {
    if (auto f = dyn_cast<FloatType>(t)) {
      int64_t bytes = f.getWidth() / 8;
      narrowest = narrowest ? std::min(narrowest, bytes) : bytes;
    }
  };
  for (auto [j, input] : llvm::enumerate(fusion.getInputs())) {
    auto offset = e.offsetOf(input);
    if (!offset)
      return offset.takeError();
    s.args.push_back(Emitter::ptr(*offset));
    Type elt = tensorOf(input).getElementType();
    s.params += llvm::formatv("{0}const {1} *__restrict__ in{2}", j ? ", " : "", cType(elt), j).str();
    if (!readThrough[j])
      narrow(elt);
  }
  bool floatSides = true;
  for (auto [k, buffer] : llvm::enumerate(sideBuffers)) {
    auto offset = e.offsetOf(buffer);
    if (!offset)
      return offset.takeError();
    s.args.push_back(Emitter::ptr(*offset));
    Type elt = tensorOf(buffer).getElementType();
    s.params += llvm::formatv("{0}{1} *__restrict__ side{2}", s.params.empty() ? "" : ", ",
                              cType(elt), k)
                    .str();
    narrow(elt);
    floatSides &= isa<FloatType>(elt);
  }
  if (!narrowest)
    narrow(tensorOf(operand).getElementType());
  llvm::DenseSet<Value> readInside;
  for (Operation &op : fusion.getBodyOps())
    for (Value v : op.getOperands())
      readInside.insert(v);

  // Element `index` of input j (a broadcast's operand element by element).
  auto readInput = [&](size_t j, const std::string &floatArgs, const std::string &index) {
    return inputElement(j, tensorOf(args[j]).getElementType(), readThrough[j], floatArgs, index);
  };
  // The body's statements and the names of the operand and side outputs.
  auto statements = [&](llvm::function_ref<std::string(size_t)> in, const std::string &indent,
                        std::string &operandName,
                        SmallVector<std::string> &sideNames) -> llvm::Expected<std::string> {
    llvm::DenseMap<Value, std::string> name;
    auto code = elementwiseStatements(e, args, body.elementwise, in, indent, readInside, name);
    if (!code)
      return code.takeError();
    operandName = name.lookup(operand);
    sideNames.clear();
    for (Value v : sides)
      sideNames.push_back(name.lookup(v));
    if (operandName.empty() || llvm::is_contained(sideNames, std::string()))
      return error("codegen: " + Emitter::describe(fusion) + " yields a value its body lacks");
    return *code;
  };

  std::string operandName;
  SmallVector<std::string> sideNames;
  auto scalar = statements([&](size_t j) { return readInput(j, "in" + str(j) + ", i", "i"); },
                           "    ", operandName, sideNames);
  if (!scalar)
    return scalar.takeError();
  std::string stores;
  for (auto [k, v] : llvm::enumerate(sides)) {
    Type elt = tensorOf(v).getElementType();
    stores += isa<FloatType>(elt)
                  ? "    kiln::store(side" + str(k) + ", i, " + sideNames[k] + ");\n"
                  : "    side" + str(k) + "[i] = (" + cType(elt) + ")" + sideNames[k] + ";\n";
  }
  s.scalar = "  auto in = [&](kiln::i64 i) -> " + C + " {\n" + *scalar + stores + "    return (" +
             C + ")" + operandName + ";\n  };\n";

  // A word at a time (float side outputs only): the float inputs read
  // whole, the others element by element.
  const int64_t w = 16 / narrowest;
  if (floatSides && w > 1) {
    std::string members, loads, results, flush;
    for (auto [j, arg] : llvm::enumerate(args)) {
      Type elt = tensorOf(arg).getElementType();
      if (isa<FloatType>(elt) && !readThrough[j]) {
        members += llvm::formatv(" alignas(16) {0} a{1}[{2}];", cType(elt), j, w).str();
        loads += llvm::formatv("    kiln::loadVec<{0}>(in{1}, v, w.a{1});\n", w, j).str();
      }
    }
    for (auto [k, v] : llvm::enumerate(sides)) {
      results +=
          llvm::formatv("    alignas(16) {0} r{1}[{2}];\n", cType(tensorOf(v).getElementType()), k, w)
              .str();
      flush += llvm::formatv("    kiln::storeVec<{0}>(side{1}, v, r{1});\n", w, k).str();
    }
    auto vec = statements(
        [&](size_t j) { return readInput(j, "w.a" + str(j) + ", k", "v * " + str(w) + " + k"); },
        "      ", operandName, sideNames);
    if (!vec)
      return vec.takeError();
    std::string loop = *vec;
    for (size_t k = 0; k < sides.size(); ++k)
      loop += "      kiln::store(r" + str(k) + ", k, " + sideNames[k] + ");\n";
    loop += "      x[k] = (" + C + ")" + operandName + ";\n";
    s.vector = llvm::formatv("  struct Word {{{6} };\n"
                             "  auto load = [&](kiln::i64 v, Word &w) {{\n{2}  };\n"
                             "  auto in = [&](kiln::i64 v, const Word &w, {0} (&x)[{1}]) {{\n{3}"
                             "#pragma unroll\n"
                             "    for (int k = 0; k < {1}; ++k) {{\n{4}    }\n{5}  };\n",
                             C, w, loads, results, loop, flush, members)
                   .str();
    s.width = w;
  }
  s.comment = "// body:";
  for (Operation &op : fusion.getBodyOps())
    s.comment += " " + op.getName().stripDialect().str();
  s.comment += "\n";
  return s;
}

} // namespace

llvm::Expected<bool> emitReduction(Emitter &e, Operation *op) {
  if (auto fusion = dyn_cast<FusionOp>(op)) {
    if (!fusion.isReductionFusion())
      return false;
    std::string why;
    auto body = matchReductionFusion(fusion, &why);
    if (failed(body))
      return error("codegen: " + Emitter::describe(op) + " is not a reduction fusion: " + why);
    ArrayRef<int64_t> dims;
    int kind = reductionKind(body->reduce, dims);
    auto source = fusionSource(e, fusion, *body);
    if (!source)
      return source.takeError();
    // The kernel's name says what it fuses: fused_mul_gelu_grad_reduce_sum.
    std::string name = "fused";
    int shown = 0;
    for (Operation *inner : body->elementwise)
      if (!isa<ConstantOp, BroadcastInDimOp>(inner) && shown++ < 3)
        name += "_" + inner->getName().stripDialect().str();
    name += "_" + body->reduce->getName().stripDialect().str();
    Value result = body->reduce->getResult(0);
    auto yielded = fusion.getYield().getValues();
    Value out = fusion.getResult(llvm::find(yielded, result) - yielded.begin());
    return emitReduce(e, op, name, kind, dims, tensorOf(body->reduce->getOperand(0)), out,
                      *source);
  }
  ArrayRef<int64_t> dims;
  int kind = reductionKind(op, dims);
  if (kind < 0)
    return false;
  Value in = op->getOperand(0);
  auto inType = tensorOf(in);
  if (!isa<FloatType>(inType.getElementType()))
    return error("codegen: integer reductions are not supported on the GPU (" +
                 Emitter::describe(op) + ")");
  auto inOffset = e.offsetOf(in);
  if (!inOffset)
    return inOffset.takeError();
  std::string T = cType(inType.getElementType()), C = computeType(inType.getElementType());
  ReduceSource source;
  source.params = "const " + T + " *__restrict__ in0";
  source.args.push_back(Emitter::ptr(*inOffset));
  source.scalar = "  auto in = [&](kiln::i64 i) { return (" + C + ")kiln::load(in0, i); };\n";
  source.width = 16 / (inType.getElementTypeBitWidth() / 8);
  source.vector = llvm::formatv("  struct Word {{ alignas(16) {2} a[{1}]; };\n"
                                "  auto load = [&](kiln::i64 v, Word &w) {{ "
                                "kiln::loadVec<{1}>(in0, v, w.a); };\n"
                                "  auto in = [&](kiln::i64, const Word &w, {0} (&x)[{1}]) {{\n"
                                "#pragma unroll\n"
                                "    for (int k = 0; k < {1}; ++k)\n"
                                "      x[k] = ({0})kiln::load(w.a, k);\n  };\n",
                                C, source.width, T)
                      .str();
  return emitReduce(e, op, "reduce", kind, dims, inType, op->getResult(0), source);
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
