//===- ElementwiseEmitter.cpp - elementwise and data-movement kernels ------===//
//
// Elementwise ops become one grid-stride kernel over the output's elements,
// with 128-bit loads and stores of the float operands and the result when
// the result is a float tensor. Splat constants arrive as literals.
// Data movement (transpose, broadcast_in_dim, slice, pad, concat, iota,
// materialized constants) is one gather kernel: each output element
// computes its source index from its multi-index, with every shape and
// stride a compile-time constant.
//
//===----------------------------------------------------------------------===//

#include "codegen/Emitter.h"

#include "ir/KilnOps.h"

#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/FormatVariadic.h"

using namespace mlir;

namespace kiln::codegen {

namespace {


constexpr int64_t kThreads = 256;

/// The scalar expression of an elementwise op over operand expressions: a
/// call of its function in ir/ScalarMath.h (the interpreter's too), or C++
/// operators for compare, select and cast.
std::optional<std::string> expression(Operation *op, llvm::ArrayRef<std::string> a,
                                      const std::string &ct) {
  // A function of ir/ScalarMath.h over the first `n` operands, instantiated
  // at the compute type (a literal operand may be of another type).
  auto call = [&](const char *fn, size_t n) {
    std::string args;
    for (size_t i = 0; i < n; ++i)
      args += (i ? ", " : "") + a[i];
    return "kiln::scalar::" + std::string(fn) + "<" + ct + ">(" + args + ")";
  };
  auto bin = [&](const char *o) { return "(" + a[0] + " " + o + " " + a[1] + ")"; };
  return llvm::TypeSwitch<Operation *, std::optional<std::string>>(op)
#define KILN_UNARY(Op, fn) .Case([&](Op) { return call(#fn, 1); })
#define KILN_BINARY(Op, fn) .Case([&](Op) { return call(#fn, 2); })
#include "ir/ElementwiseOps.def"
      .Case([&](GeluOp g) {
        return call(g.getApproximate() == GeluApproximation::tanh ? "geluTanh" : "geluErf", 1);
      })
      .Case([&](GeluGradOp g) {
        return "(" + a[1] + " * " +
               call(g.getApproximate() == GeluApproximation::tanh ? "geluTanhGrad" : "geluErfGrad", 1) +
               ")";
      })
      .Case([&](CompareOp c) {
        const char *o = "==";
        switch (c.getDirection()) {
        case CompareDirection::eq: o = "=="; break;
        case CompareDirection::ne: o = "!="; break;
        case CompareDirection::lt: o = "<"; break;
        case CompareDirection::le: o = "<="; break;
        case CompareDirection::gt: o = ">"; break;
        case CompareDirection::ge: o = ">="; break;
        }
        return "(unsigned char)" + bin(o);
      })
      .Case([&](SelectOp) { return "(" + a[0] + " ? " + a[1] + " : " + a[2] + ")"; })
      .Case([&](CastOp c) -> std::string {
        Type to = tensorOf(c.getResult()).getElementType();
        if (to.isInteger(1))
          return "(unsigned char)(" + a[0] + " != 0)";
        if (isa<IntegerType>(to)) // toward zero; nan -> 0 as in the reference
          return "(" + a[0] + " != " + a[0] + " ? 0ll : (long long)(" + a[0] + "))";
        return "(" + ct + ")(" + a[0] + ")";
      })
      .Default([](Operation *) { return std::nullopt; });
}

/// The compute type an op's operands are read in (a cast reads its source's).
std::string operandComputeType(Operation *op) {
  return computeType(tensorOf(op->getOperand(op->getNumOperands() - 1)).getElementType());
}

/// The type an elementwise op computes in.
std::string opComputeType(Operation *op) {
  if (auto select = dyn_cast<SelectOp>(op))
    return computeType(tensorOf(select.getOnTrue()).getElementType());
  if (isa<CastOp, CompareOp>(op))
    return operandComputeType(op);
  return computeType(tensorOf(op->getResult(0)).getElementType());
}

/// `x` rounded to `t`, as storing it in a `t` tensor and loading it back
/// would (a fused intermediate means what the unfused tensor meant): bf16
/// and f16 round, i32 wraps (its compute type is 64-bit).
std::string roundTo(Type t, const std::string &x) {
  if (t.isBF16())
    return "kiln::roundBf16(" + x + ")";
  if (t.isF16())
    return "kiln::roundF16(" + x + ")";
  if (t.isInteger(32))
    return "(long long)(int)(" + x + ")";
  return x;
}

} // namespace

llvm::Expected<std::string> elementwiseStatements(Emitter &e, ArrayRef<Value> inputs,
                                                  ArrayRef<Operation *> body,
                                                  llvm::function_ref<std::string(size_t)> in,
                                                  const std::string &indent,
                                                  const llvm::DenseSet<Value> &readInside,
                                                  llvm::DenseMap<Value, std::string> &name) {
  std::string code;
  for (auto [j, v] : llvm::enumerate(inputs)) {
    std::string ct = computeType(tensorOf(v).getElementType());
    name[v] = "x" + str(j);
    code += indent + "const " + ct + " x" + str(j) + " = " + in(j) + ";\n";
  }
  int k = 0;
  for (Operation *op : body) {
    if (auto c = dyn_cast<ConstantOp>(op)) {
      name[c.getResult()] = e.literal(c.getResult());
      continue;
    }
    // A broadcast of a body argument: the argument's read (`in`) already
    // went through the broadcast's index map.
    if (auto b = dyn_cast<BroadcastInDimOp>(op)) {
      auto it = name.find(b.getOperand());
      if (it == name.end())
        return error("codegen: " + Emitter::describe(op) + " broadcasts a value the kernel lacks");
      name[b.getResult()] = it->second;
      continue;
    }
    std::vector<std::string> operands;
    for (Value v : op->getOperands()) {
      if (!name.count(v)) {
        if (!e.isInlined(v))
          return error("codegen: " + Emitter::describe(op) + " reads a value the kernel lacks");
        name[v] = e.literal(v);
      }
      operands.push_back(name[v]);
    }
    auto expr = expression(op, operands, opComputeType(op));
    if (!expr)
      return error("codegen: the elementwise op " + Emitter::describe(op) +
                   " has no scalar expression");
    Value r = op->getResult(0);
    Type elt = tensorOf(r).getElementType();
    std::string v = "v" + str(k++);
    code += indent + "const " + computeType(elt) + " " + v + " = " +
            (readInside.contains(r) ? roundTo(elt, *expr) : *expr) + ";\n";
    name[r] = v;
  }
  return code;
}

std::string roundedTo(Type elementType, const std::string &x) { return roundTo(elementType, x); }

std::string inputElement(size_t j, Type elementType, BroadcastInDimOp through,
                         const std::string &floatArgs, const std::string &index) {
  std::string ct = computeType(elementType);
  bool isFloat = isa<FloatType>(elementType);
  if (through) {
    std::string at = broadcastIndex(through, index);
    return isFloat ? "(" + ct + ")kiln::load(in" + str(j) + ", " + at + ")"
                   : "(" + ct + ")in" + str(j) + "[" + at + "]";
  }
  return isFloat ? "(" + ct + ")kiln::load(" + floatArgs + ")"
                 : "(" + ct + ")in" + str(j) + "[" + index + "]";
}

/// The element of `b`'s operand that element `e` (an expression) of its
/// result reads: the sum over the operand's dimensions of each one's
/// coordinate times its stride, with every shape a literal. Dimensions of
/// size 1 contribute nothing; neighbours contiguous in both tensors merge
/// into one term (a [T, C] table in [B, T, C] reads e % (T·C)).
std::string broadcastIndex(BroadcastInDimOp b, const std::string &e) {
  ArrayRef<int64_t> in = tensorOf(b.getOperand()).getShape();
  ArrayRef<int64_t> out = tensorOf(b.getResult()).getShape();
  ArrayRef<int64_t> dims = b.getDims();
  int64_t total = tensorOf(b.getResult()).getNumElements();
  struct Term {
    int64_t size, outStride, inStride;
  };
  SmallVector<Term> terms;
  for (size_t k = 0; k < in.size(); ++k) {
    if (in[k] == 1)
      continue;
    int64_t outStride = 1, inStride = 1;
    for (size_t d = dims[k] + 1; d < out.size(); ++d)
      outStride *= out[d];
    for (size_t d = k + 1; d < in.size(); ++d)
      inStride *= in[d];
    Term t{in[k], outStride, inStride};
    if (!terms.empty() && terms.back().outStride == t.size * t.outStride &&
        terms.back().inStride == t.size * t.inStride) {
      terms.back() = {terms.back().size * t.size, t.outStride, t.inStride};
      continue;
    }
    terms.push_back(t);
  }
  if (terms.empty())
    return "0";
  std::string sum;
  for (const Term &t : terms) {
    std::string x = e;
    if (t.outStride != 1)
      x = "(" + x + ") / " + str(t.outStride);
    if (t.outStride * t.size != total)
      x = "(" + x + ") % " + str(t.size);
    if (t.inStride != 1)
      x = "(" + x + ") * " + str(t.inStride);
    sum += (sum.empty() ? "" : " + ") + ("(" + x + ")");
  }
  return sum;
}

BroadcastInDimOp broadcastReader(Value arg) {
  for (Operation *user : arg.getUsers())
    if (auto b = dyn_cast<BroadcastInDimOp>(user))
      return b;
  return {};
}

namespace {

/// One grid-stride loop kernel: each thread reads element i of every input,
/// evaluates `body` (elementwise ops in program order, splat constants as
/// literals) and writes element i of every output. A lone elementwise op is
/// the one-op case; a kiln.fusion's body the general one. `inputs` and
/// `outputs` are values of the body's scope; `inputBuffers` and
/// `outputBuffers` the function-level values whose buffers hold them.
/// With float outputs and whole 16-byte words, each thread handles V
/// consecutive elements (V = 16 bytes over the narrowest float element)
/// through 128-bit loads and stores; integer inputs (an i1 mask) are read
/// element by element within the vector. `readThrough[j]`, when set, is the
/// broadcast of the body through whose index map input j is read (element
/// by element: neighbouring outputs often read one element).
llvm::Expected<bool> emitLoop(Emitter &e, Operation *anchor, llvm::StringRef baseName,
                              ArrayRef<Value> inputs, ArrayRef<Value> inputBuffers,
                              ArrayRef<Operation *> body, ArrayRef<Value> outputs,
                              ArrayRef<Value> outputBuffers,
                              ArrayRef<BroadcastInDimOp> readThrough = {}) {
  auto mapped = [&](size_t j) { return j < readThrough.size() && readThrough[j]; };
  auto shapeType = tensorOf(outputs.front());
  int64_t n = shapeType.getNumElements();
  std::vector<PlanArg> args;
  std::string params;
  bool floatOut = llvm::all_of(
      outputs, [](Value v) { return isa<FloatType>(tensorOf(v).getElementType()); });
  int64_t narrowest = 16;
  // Parameters: the inputs, then the outputs.
  auto bind = [&](ArrayRef<Value> buffers, const char *qualifier, const char *prefix) -> llvm::Error {
    for (auto [i, buffer] : llvm::enumerate(buffers)) {
      auto offset = e.offsetOf(buffer);
      if (!offset)
        return offset.takeError();
      Type elt = tensorOf(buffer).getElementType();
      args.push_back(Emitter::ptr(*offset));
      params += llvm::formatv("{0}{1}{2} *__restrict__ {3}{4}", params.empty() ? "" : ", ",
                              qualifier, cType(elt), prefix, i)
                    .str();
      if (isa<FloatType>(elt))
        narrowest = std::min<int64_t>(narrowest, cpu::dtypeSize(*cpu::dtypeOf(elt)));
    }
    return llvm::Error::success();
  };
  if (llvm::Error err = bind(inputBuffers, "const ", "in"))
    return std::move(err);
  if (llvm::Error err = bind(outputBuffers, "", "out"))
    return std::move(err);
  int64_t lanes = floatOut ? 16 / narrowest : 0;
  bool vectorized = lanes > 1 && n % lanes == 0 && !inputBuffers.empty();
  // A broadcast input whose rows stay whole is read a vector at a time on
  // the vector path (the lanes of a vector share a row).
  auto rowVector = [&](size_t j) {
    if (!mapped(j) || !isa<FloatType>(tensorOf(inputBuffers[j]).getElementType()))
      return false;
    BroadcastInDimOp b = readThrough[j];
    return keepsRows(b) && tensorOf(b.getResult()).getShape().back() % lanes == 0;
  };

  // Values read inside the body (an output-only value needs no rounding:
  // its store rounds it).
  llvm::DenseSet<Value> readInside;
  for (Operation *op : body)
    for (Value v : op->getOperands())
      readInside.insert(v);

  // The statements computing every body value from the inputs; `in(j)` is
  // the expression reading input j's element; `outNames` gets the outputs'.
  std::vector<std::string> outNames;
  auto compute = [&](llvm::function_ref<std::string(size_t)> in,
                     const std::string &indent) -> llvm::Expected<std::string> {
    llvm::DenseMap<Value, std::string> name;
    auto code = elementwiseStatements(e, inputs, body, in, indent, readInside, name);
    if (!code)
      return code.takeError();
    outNames.clear();
    for (Value v : outputs)
      outNames.push_back(name[v]);
    return *code;
  };

  // Input j's element (a broadcast's row vectors read as vectors).
  auto readInput = [&](size_t j, const std::string &floatArgs, const std::string &index) {
    bool throughMap = mapped(j) && !(vectorized && rowVector(j));
    return inputElement(j, tensorOf(inputBuffers[j]).getElementType(),
                        throughMap ? readThrough[j] : BroadcastInDimOp(), floatArgs, index);
  };

  std::string kernelBody;
  int64_t work = n;
  if (vectorized) {
    work = n / lanes;
    std::string loads;
    for (auto [j, buffer] : llvm::enumerate(inputBuffers)) {
      Type elt = tensorOf(buffer).getElementType();
      if (isa<FloatType>(elt) && !mapped(j))
        loads += llvm::formatv("    alignas(16) {0} a{1}[{2}];\n    kiln::loadVec<{2}>(in{1}, v, a{1});\n",
                               cType(elt), j, lanes)
                     .str();
      else if (isa<FloatType>(elt) && rowVector(j))
        loads += llvm::formatv("    alignas(16) {0} a{1}[{2}];\n    kiln::loadVec<{2}>(in{1}, ({3}) / {2}, a{1});\n",
                               cType(elt), j, lanes, broadcastIndex(BroadcastInDimOp(readThrough[j]), "v * " + str(lanes)))
                     .str();
    }
    auto code = compute(
        [&](size_t j) { return readInput(j, "a" + str(j) + ", k", "v * " + str(lanes) + " + k"); },
        "      ");
    if (!code)
      return code.takeError();
    std::string results;
    std::string flush;
    for (auto [j, v] : llvm::enumerate(outputs)) {
      results += llvm::formatv("    alignas(16) {0} r{1}[{2}];\n", cType(tensorOf(v).getElementType()), j, lanes).str();
      flush += llvm::formatv("    kiln::storeVec<{0}>(out{1}, v, r{1});\n", lanes, j).str();
    }
    std::string loop = *code;
    for (size_t j = 0; j < outputs.size(); ++j)
      loop += "      kiln::store(r" + str(j) + ", k, " + outNames[j] + ");\n";
    kernelBody = llvm::formatv("  constexpr kiln::i64 NV = {0};\n"
                               "  for (kiln::i64 v = blockIdx.x * (kiln::i64)blockDim.x + threadIdx.x; v < NV;\n"
                               "       v += (kiln::i64)gridDim.x * blockDim.x) {{\n"
                               "{1}{2}"
                               "#pragma unroll\n"
                               "    for (int k = 0; k < {3}; ++k) {{\n{4}    }\n{5}  }\n",
                               work, loads, results, lanes, loop, flush)
                     .str();
  } else {
    auto code = compute([&](size_t j) { return readInput(j, "in" + str(j) + ", i", "i"); }, "    ");
    if (!code)
      return code.takeError();
    std::string loop = *code;
    for (size_t j = 0; j < outputs.size(); ++j) {
      Type elt = tensorOf(outputs[j]).getElementType();
      loop += isa<FloatType>(elt)
                  ? "    kiln::store(out" + str(j) + ", i, " + outNames[j] + ");\n"
                  : "    out" + str(j) + "[i] = (" + cType(elt) + ")" + outNames[j] + ";\n";
    }
    kernelBody = llvm::formatv("  constexpr kiln::i64 N = {0};\n"
                               "  for (kiln::i64 i = blockIdx.x * (kiln::i64)blockDim.x + threadIdx.x; i < N;\n"
                               "       i += (kiln::i64)gridDim.x * blockDim.x) {{\n{1}  }\n",
                               n, loop)
                     .str();
  }
  std::string ops;
  if (body.size() > 1) {
    ops = "// body:";
    for (Operation *op : body)
      ops += " " + op->getName().stripDialect().str();
    ops += "\n";
  }
  std::string source = "#include \"kiln/common.cuh\"\n" + Emitter::header(anchor) + ops +
                       "extern \"C\" __global__ void __launch_bounds__(" + str(kThreads) +
                       ") @NAME@(" + params + ") {\n" + kernelBody + "}\n";
  e.launch(anchor, baseName, source, {e.gridFor(work, kThreads), 1, 1}, {kThreads, 1, 1}, args);
  return true;
}

} // namespace

llvm::Expected<bool> emitElementwise(Emitter &e, Operation *op) {
  if (auto fusion = dyn_cast<FusionOp>(op)) {
    if (!fusion.isLoopFusion())
      return false; // emitMatmul's (GEMM epilogues), emitComposite's
    SmallVector<Operation *> body;
    for (Operation &inner : fusion.getBodyOps())
      body.push_back(&inner);
    // The kernel's name says what it fuses: fused_cast_add_gelu...
    std::string name = "fused";
    int shown = 0;
    for (Operation *inner : body)
      if (!isa<ConstantOp>(inner) && shown++ < 4)
        name += "_" + inner->getName().stripDialect().str();
    SmallVector<Value> args(fusion.getBody().getArguments());
    SmallVector<Value> inputs(fusion.getInputs()), results(fusion.getResults());
    SmallVector<Value> yielded(fusion.getYield().getValues());
    // Arguments read through a broadcast's index map (the verifier: every
    // reader of such an argument is the same broadcast).
    SmallVector<BroadcastInDimOp> readThrough;
    for (Value arg : args)
      readThrough.push_back(broadcastReader(arg));
    return emitLoop(e, op, name, args, inputs, body, yielded, results, readThrough);
  }
  if (!op->hasTrait<OpTrait::Elementwise>())
    return false;
  SmallVector<Value> inputs;
  for (Value v : op->getOperands())
    if (!e.isInlined(v) && !llvm::is_contained(inputs, v))
      inputs.push_back(v);
  return emitLoop(e, op, op->getName().stripDialect(), inputs, inputs, {op}, {op->getResult(0)},
                  {op->getResult(0)});
}

namespace {

/// Row-major strides.
SmallVector<int64_t> stridesOf(ArrayRef<int64_t> shape) {
  SmallVector<int64_t> s(shape.size(), 1);
  for (int64_t d = static_cast<int64_t>(shape.size()) - 2; d >= 0; --d)
    s[d] = s[d + 1] * shape[d + 1];
  return s;
}

/// Code that splits the linear output index `i` into idx0, idx1, ….
std::string splitIndex(ArrayRef<int64_t> shape) {
  std::string code = "    kiln::i64 rem = i;\n";
  for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d)
    code += llvm::formatv("    const kiln::i64 idx{0} = rem % {1}; rem /= {1};\n", d, shape[d]).str();
  return code;
}

/// One gather kernel: `compute` writes the element (it may use idxN). With
/// `vec` > 1 each thread moves `vec` consecutive elements (one 16-byte
/// word): i steps by vec, and the caller has checked that every source index
/// it computes is then a multiple of vec (kiln::copyElems<vec>).
llvm::Expected<bool> gather(Emitter &e, Operation *op, ArrayRef<Value> sources,
                            const std::string &compute, int64_t vec = 1) {
  Value result = op->getResult(0);
  auto outType = tensorOf(result);
  std::vector<PlanArg> args;
  std::string params;
  for (auto [i, v] : llvm::enumerate(sources)) {
    auto offset = e.offsetOf(v);
    if (!offset)
      return offset.takeError();
    args.push_back(Emitter::ptr(*offset));
    params += llvm::formatv("const {0} *__restrict__ in{1}, ", cType(tensorOf(v).getElementType()), i).str();
  }
  auto offset = e.offsetOf(result);
  if (!offset)
    return offset.takeError();
  args.push_back(Emitter::ptr(*offset));
  params += cType(outType.getElementType()) + " *__restrict__ out";
  int64_t n = outType.getNumElements();
  std::string source =
      "#include \"kiln/common.cuh\"\n" + Emitter::header(op) +
      "extern \"C\" __global__ void __launch_bounds__(256) @NAME@(" + params + ") {\n" +
      llvm::formatv("  constexpr kiln::i64 NV = {0};\n"
                    "  for (kiln::i64 v = blockIdx.x * (kiln::i64)blockDim.x + threadIdx.x; v < NV;\n"
                    "       v += (kiln::i64)gridDim.x * blockDim.x) {{\n"
                    "    const kiln::i64 i = v * {1};\n",
                    n / vec, vec)
          .str() +
      (outType.getRank() > 0 ? splitIndex(outType.getShape()) : std::string()) + compute + "  }\n}\n";
  e.launch(op, op->getName().stripDialect(), source, {e.gridFor(n / vec, 256), 1, 1}, {256, 1, 1}, args);
  return true;
}

/// Elements of `t` a gather thread moves: a 16-byte word when the last
/// dimension is whole words (and so every row starts on one); else 1.
int64_t gatherWidth(RankedTensorType t) {
  if (t.getRank() == 0)
    return 1;
  return std::max<int64_t>(1, wordElements(t.getElementType(), t.getShape().back()));
}

/// The statement that moves element(s) i of out from in<k>[index].
std::string copy(int64_t vec, int64_t k, const std::string &index) {
  return "    kiln::copyElems<" + str(vec) + ">(out, i, in" + str(k) + ", " + index + ");\n";
}

std::string sumOf(const std::vector<std::string> &terms) {
  if (terms.empty())
    return "0";
  std::string s;
  for (const std::string &t : terms)
    s += (s.empty() ? "" : " + ") + t;
  return s;
}

/// A constant that is not inlined: its values baked into the kernel.
llvm::Expected<bool> emitConstant(Emitter &e, ConstantOp c) {
  auto type = tensorOf(c.getResult());
  std::string ct = cType(type.getElementType());
  auto value = c.getValue();
  if (auto splat = dyn_cast<SplatElementsAttr>(value)) {
    std::string lit;
    if (isa<FloatType>(type.getElementType())) {
      // The same literal an inlined constant gets (infinities, NaN).
      return gather(e, c, {}, "    kiln::store(out, i, " + e.literal(c.getResult()) + ");\n");
    }
    APInt bits = splat.getSplatValue<APInt>();
    lit = std::to_string(type.getElementType().isInteger(1) ? static_cast<int64_t>(bits.getZExtValue())
                                                            : bits.getSExtValue());
    return gather(e, c, {}, "    out[i] = (" + ct + ")" + lit + ";\n");
  }
  std::string table = "  static __device__ const double kValues[] = {";
  int64_t k = 0;
  if (isa<FloatType>(type.getElementType())) {
    for (APFloat v : value.getValues<APFloat>())
      table += (k++ ? ", " : "") + llvm::formatv("{0:e17}", v.convertToDouble()).str();
  } else {
    for (APInt v : value.getValues<APInt>())
      // (Both arms int64_t: a mixed ternary would make −1 an unsigned 2^64 − 1.)
      table += (k++ ? ", " : "") + std::to_string(type.getElementType().isInteger(1)
                                                      ? static_cast<int64_t>(v.getZExtValue())
                                                      : v.getSExtValue());
  }
  table += "};\n";
  std::string store = isa<FloatType>(type.getElementType())
                          ? "    kiln::store(out, i, (" + computeType(type.getElementType()) + ")kValues[i]);\n"
                          : "    out[i] = (" + ct + ")kValues[i];\n";
  return gather(e, c, {}, table + store);
}

} // namespace

llvm::Expected<bool> emitDataMovement(Emitter &e, Operation *op) {
  auto idx = [](int64_t d) { return "idx" + std::to_string(d); };
  return llvm::TypeSwitch<Operation *, llvm::Expected<bool>>(op)
      .Case([&](ConstantOp c) { return emitConstant(e, c); })
      .Case([&](TransposeOp t) -> llvm::Expected<bool> {
        auto in = tensorOf(t.getOperand());
        SmallVector<int64_t> inStrides = stridesOf(in.getShape());
        std::vector<std::string> terms;
        for (auto [d, p] : llvm::enumerate(t.getPermutation()))
          terms.push_back(idx(d) + " * " + str(inStrides[p]));
        // Whole words when the last dimension stays last (heads ↔ sequence).
        int64_t vec = t.getPermutation().back() == in.getRank() - 1 ? gatherWidth(in) : 1;
        return gather(e, op, {t.getOperand()}, copy(vec, 0, sumOf(terms)), vec);
      })
      .Case([&](BroadcastInDimOp b) -> llvm::Expected<bool> {
        auto in = tensorOf(b.getOperand());
        SmallVector<int64_t> inStrides = stridesOf(in.getShape());
        std::vector<std::string> terms;
        for (auto [k, d] : llvm::enumerate(b.getDims()))
          if (in.getDimSize(k) != 1)
            terms.push_back(idx(d) + " * " + str(inStrides[k]));
        auto out = tensorOf(b.getResult());
        bool lastKept = in.getRank() > 0 && b.getDims().back() == out.getRank() - 1 &&
                        in.getShape().back() == out.getShape().back();
        int64_t vec = lastKept ? gatherWidth(in) : 1;
        return gather(e, op, {b.getOperand()}, copy(vec, 0, sumOf(terms)), vec);
      })
      .Case([&](SliceOp s) -> llvm::Expected<bool> {
        auto in = tensorOf(s.getOperand());
        SmallVector<int64_t> inStrides = stridesOf(in.getShape());
        std::vector<std::string> terms;
        for (int64_t d = 0; d < in.getRank(); ++d)
          terms.push_back("(" + str(s.getStartIndices()[d]) + " + " + idx(d) + " * " +
                          str(s.getStrides()[d]) + ") * " + str(inStrides[d]));
        // Whole words when the last dimension is cut at word boundaries.
        int64_t vec = 1;
        if (in.getRank() > 0 && s.getStrides().back() == 1) {
          int64_t w = std::min(gatherWidth(in), gatherWidth(tensorOf(s.getResult())));
          if (s.getStartIndices().back() % w == 0)
            vec = w;
        }
        return gather(e, op, {s.getOperand()}, copy(vec, 0, sumOf(terms)), vec);
      })
      .Case([&](PadOp p) -> llvm::Expected<bool> {
        auto in = tensorOf(p.getOperand());
        SmallVector<int64_t> inStrides = stridesOf(in.getShape());
        std::string code = "    kiln::i64 src = 0; bool inside = true;\n";
        for (int64_t d = 0; d < in.getRank(); ++d) {
          int64_t step = p.getInterior()[d] + 1;
          code += llvm::formatv("    {{ const kiln::i64 q = {0} - {1};\n"
                                "      if (q < 0 || q % {2} != 0 || q / {2} >= {3}) inside = false;\n"
                                "      else src += (q / {2}) * {4}; }\n",
                                idx(d), p.getLow()[d], step, in.getDimSize(d), inStrides[d])
                      .str();
        }
        std::string zero = "(" + cType(in.getElementType()) + ")0";
        if (in.getElementType().isBF16())
          zero = "__float2bfloat16(0.0f)";
        else if (in.getElementType().isF16())
          zero = "__float2half(0.0f)";
        return gather(e, op, {p.getOperand()}, code + "    out[i] = inside ? in0[src] : " + zero + ";\n");
      })
      .Case([&](ConcatOp c) -> llvm::Expected<bool> {
        int64_t dim = c.getDim(), start = 0;
        std::string code;
        SmallVector<Value> inputs(c.getInputs());
        // Whole words when every input's rows are (then no word straddles
        // two inputs, whichever the dimension).
        int64_t vec = gatherWidth(tensorOf(c.getResult()));
        for (Value v : inputs)
          vec = std::min(vec, gatherWidth(tensorOf(v)));
        for (auto [k, v] : llvm::enumerate(inputs)) {
          auto in = tensorOf(v);
          SmallVector<int64_t> inStrides = stridesOf(in.getShape());
          std::vector<std::string> terms;
          for (int64_t d = 0; d < in.getRank(); ++d)
            terms.push_back((d == dim ? "(" + idx(d) + " - " + str(start) + ")" : idx(d)) + " * " +
                            str(inStrides[d]));
          int64_t end = start + in.getDimSize(dim);
          code += llvm::formatv("    {0}if ({1} < {2})\n  ", k ? "else " : "", idx(dim), end).str();
          code += copy(vec, k, sumOf(terms));
          start = end;
        }
        return gather(e, op, inputs, code, vec);
      })
      .Case([&](IotaOp io) -> llvm::Expected<bool> {
        auto t = tensorOf(io.getResult());
        std::string store = isa<FloatType>(t.getElementType())
                                ? "    kiln::store(out, i, (" + computeType(t.getElementType()) + ")" + idx(io.getDim()) + ");\n"
                                : "    out[i] = (" + cType(t.getElementType()) + ")" + idx(io.getDim()) + ";\n";
        return gather(e, op, {}, store);
      })
      .Default([](Operation *) -> llvm::Expected<bool> { return false; });
}

} // namespace kiln::codegen
