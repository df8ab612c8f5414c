//===- Interpreter.cpp - the reference CPU interpreter of kiln IR ----------===//
//
// prepare() numbers every SSA value with a slot, records for each op the
// slots it reads and writes and the slots whose last use it is (freed right
// after), and materializes constants once. run() walks the steps and
// dispatches each op to its kernel (Kernels.h).
//
//===----------------------------------------------------------------------===//

#include "runtime/cpu/Interpreter.h"
#include "runtime/cpu/Collectives.h"

#include "ir/CustomKernel.h"
#include "ir/KilnOps.h"
#include "runtime/cpu/Kernels.h"

#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/ADT/DenseMap.h"
#include "llvm/ADT/SmallPtrSet.h"
#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MathExtras.h"
#include "llvm/Support/raw_ostream.h"

#include <array>
#include <cmath>
#include <deque>
#include <limits>

using namespace mlir;

namespace kiln::cpu {

struct Interpreter::Step {
  Operation *op;
  llvm::SmallVector<unsigned, 4> operands, results, freeAfter;
  HostTensor constant; // for kiln.constant
};

namespace {

std::string describe(Operation *op) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << "'" << op->getName() << "' at " << op->getLoc();
  return s;
}

llvm::Error opError(Operation *op, const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                 "CPU interpreter: " + describe(op) + ": " + message);
}

HostTensor fromElements(ElementsAttr attr) {
  auto type = cast<RankedTensorType>(attr.getType());
  DType dtype = *dtypeOf(type.getElementType());
  if (auto splat = dyn_cast<SplatElementsAttr>(attr)) {
    // One value, filled (a GPT-2 attention mask constant has 2e8 elements).
    auto t = HostTensor::uninitialized(dtype, std::vector<int64_t>(type.getShape()));
    if (t.numel() == 0)
      return t;
    double v = isa<FloatType>(type.getElementType())
                   ? splat.getSplatValue<APFloat>().convertToDouble()
                   : (type.getElementType().isInteger(1)
                          ? static_cast<double>(splat.getSplatValue<APInt>().getBoolValue())
                          : static_cast<double>(splat.getSplatValue<APInt>().getSExtValue()));
    t.set(0, v);
    if (storageSize(dtype) == 4)
      std::fill(t.data<float>() + 1, t.data<float>() + t.numel(), t.data<float>()[0]);
    else if (dtype == DType::F64)
      std::fill(t.data<double>() + 1, t.data<double>() + t.numel(), t.data<double>()[0]);
    else
      std::fill(t.data<int64_t>() + 1, t.data<int64_t>() + t.numel(), t.data<int64_t>()[0]);
    return t;
  }
  HostTensor t(dtype, std::vector<int64_t>(type.getShape()));
  if (isa<FloatType>(type.getElementType())) {
    int64_t i = 0;
    for (APFloat v : attr.getValues<APFloat>())
      t.set(i++, v.convertToDouble());
  } else {
    int64_t i = 0;
    bool isBool = type.getElementType().isInteger(1);
    for (APInt v : attr.getValues<APInt>())
      t.set(i++, isBool ? static_cast<double>(v.getBoolValue())
                        : static_cast<double>(v.getSExtValue()));
  }
  return t;
}

DType dtypeOfValue(Value v) { return *dtypeOf(cast<RankedTensorType>(v.getType()).getElementType()); }

std::vector<int64_t> shapeOfValue(Value v) {
  return std::vector<int64_t>(cast<RankedTensorType>(v.getType()).getShape());
}

/// [B, H, T, D] <-> [B, T, H, D]: how the interpreter defines attention's
/// sequence-major layouts by the head-major op.
HostTensor swapHeadsAndPositions(const HostTensor &x) {
  const int64_t perm[] = {0, 2, 1, 3};
  return kernels::transpose(x, perm);
}

/// q, k and v of a packed qkv [B, T, H, 3, D], each [B, H, T, D].
std::array<HostTensor, 3> unpackQkv(const HostTensor &qkv) {
  const auto &s = qkv.shape();
  std::array<HostTensor, 3> parts;
  for (int64_t c = 0; c < 3; ++c)
    parts[c] = swapHeadsAndPositions(
        kernels::slice(qkv, {0, 0, 0, c, 0}, {s[0], s[1], s[2], c + 1, s[4]}, {1, 1, 1, 1, 1})
            .reshaped({s[0], s[1], s[2], s[4]}));
  return parts;
}

/// The inverse of unpackQkv.
HostTensor packQkv(const std::array<HostTensor, 3> &parts) {
  std::vector<HostTensor> rows;
  for (const HostTensor &p : parts) {
    HostTensor t = swapHeadsAndPositions(p); // [B, T, H, D]
    auto s = t.shape();
    rows.push_back(t.reshaped({s[0], s[1], s[2], 1, s[3]}));
  }
  return kernels::concat(rows, 3);
}

bool isSupported(Operation *op) {
  return isPlainElementwise(op) ||
         isa<GeluOp, CastOp, CompareOp, SelectOp, ReshapeOp,
             TransposeOp, SliceOp, PadOp, ConcatOp, BroadcastInDimOp, IotaOp, ConstantOp,
             ReduceSumOp, ReduceMaxOp, ReduceMeanOp, MatmulOp, EmbeddingOp, SoftmaxOp,
             LogSoftmaxOp, LayerNormOp, RmsNormOp, RopeOp, MoeRouteOp, CrossEntropyOp, AttentionOp,
             AttentionQkvOp, AttentionQkvGradOp, GeluGradOp, SoftmaxGradOp, LayerNormGradOp, RmsNormGradOp, CrossEntropyGradOp,
             EmbeddingGradOp, AttentionGradOp, GlobalNormOp, AdamWUpdateOp, FusionOp,
             CustomKernelOp, SendOp, RecvOp>(op) ||
         isCollective(op);
}

llvm::Error execute(Operation *op, llvm::ArrayRef<const HostTensor *> in,
                    llvm::SmallVectorImpl<HostTensor> &out);

/// A kiln.fusion means its body: the body's ops run one by one on the
/// inputs, each result stored in its element type as the unfused ops'
/// would be, and the yielded values are the results. Each intermediate is
/// freed after its last reader, as the function's own values are.
llvm::Error executeFusion(FusionOp fusion, llvm::ArrayRef<const HostTensor *> in,
                          llvm::SmallVectorImpl<HostTensor> &out) {
  Block &body = fusion.getBody().front();
  llvm::DenseMap<Value, const HostTensor *> args;
  for (auto [arg, t] : llvm::zip_equal(body.getArguments(), in))
    args[arg] = t;
  llvm::DenseMap<Value, Operation *> lastUse; // a yielded value's is the yield
  for (Operation &op : body)
    for (Value v : op.getOperands())
      lastUse[v] = &op;
  llvm::DenseMap<Value, HostTensor> owned;
  auto lookup = [&](Value v) -> const HostTensor * {
    if (auto it = args.find(v); it != args.end())
      return it->second;
    auto it = owned.find(v);
    return it == owned.end() ? nullptr : &it->second;
  };
  for (Operation &op : fusion.getBodyOps()) {
    if (auto c = dyn_cast<ConstantOp>(op)) {
      owned.try_emplace(c.getResult(), fromElements(c.getValue()));
      continue;
    }
    if (!isSupported(&op) || isa<FusionOp>(op))
      return opError(&op, "this op is not supported by the CPU interpreter");
    llvm::SmallVector<const HostTensor *, 4> operands;
    for (Value v : op.getOperands())
      operands.push_back(lookup(v));
    llvm::SmallVector<HostTensor, 1> results;
    if (llvm::Error err = execute(&op, operands, results))
      return err;
    for (auto [v, t] : llvm::zip_equal(op.getResults(), results))
      owned.try_emplace(v, std::move(t));
    for (Value v : op.getOperands())
      if (lastUse.lookup(v) == &op)
        owned.erase(v);
  }
  auto yielded = fusion.getYield().getValues();
  for (auto [i, v] : llvm::enumerate(yielded)) {
    auto it = owned.find(v);
    bool again = llvm::is_contained(yielded.drop_front(i + 1), v);
    if (it != owned.end() && !again) {
      out.push_back(std::move(it->second));
      owned.erase(it);
    } else {
      out.push_back(lookup(v)->clone());
    }
  }
  return llvm::Error::success();
}

/// A plugin's kernel: its f64 reference on f64 copies of the operands, the
/// outputs rounded to the results' element types.
llvm::Error executeCustom(CustomKernelOp op, llvm::ArrayRef<const HostTensor *> in,
                          llvm::SmallVectorImpl<HostTensor> &out) {
  const CustomKernel *def = op.getDefinition();
  std::string origin = def && !def->origin.empty() ? " (from " + def->origin + ")" : "";
  if (!def || !def->cpu)
    return opError(op, "custom kernel '" + op.getKernel().str() + "'" + origin +
                           " has no CPU reference, so the interpreter cannot run it");
  std::vector<std::vector<double>> inputs(in.size()), outputs(op.getNumResults());
  std::vector<std::vector<int64_t>> outShapes(op.getNumResults());
  std::vector<CpuTensorRef> inRefs, outRefs;
  for (auto [i, t] : llvm::enumerate(in)) {
    inputs[i].resize(t->numel());
    for (int64_t j = 0; j < t->numel(); ++j)
      inputs[i][j] = t->get(j);
    inRefs.push_back({t->shape(), inputs[i].data()});
  }
  for (unsigned r = 0; r < op.getNumResults(); ++r) {
    outShapes[r] = shapeOfValue(op.getResult(r));
    outputs[r].assign(product(outShapes[r]), 0.0);
    outRefs.push_back({outShapes[r], outputs[r].data()});
  }
  if (llvm::Error err = def->cpu(op, inRefs, outRefs))
    return opError(op, "custom kernel '" + op.getKernel().str() + "'" + origin + ": " +
                           llvm::toString(std::move(err)));
  for (unsigned r = 0; r < op.getNumResults(); ++r) {
    HostTensor t = HostTensor::uninitialized(dtypeOfValue(op.getResult(r)), outShapes[r]);
    for (int64_t j = 0; j < t.numel(); ++j)
      t.set(j, outputs[r][j]);
    out.push_back(std::move(t));
  }
  return llvm::Error::success();
}

/// train.check_numerics: the first NaN or +inf in `op`'s float results, as
/// an error naming the op, its model scope and where in the result.
llvm::Error checkFinite(Operation *op, llvm::ArrayRef<HostTensor> results) {
  for (auto [r, t] : llvm::enumerate(results)) {
    if (!isFloat(t.dtype()))
      continue;
    for (int64_t i = 0; i < t.numel(); ++i) {
      double v = t.get(i);
      if (!std::isnan(v) && v != std::numeric_limits<double>::infinity())
        continue;
      std::string where;
      int64_t rest = i;
      for (int64_t d = t.rank() - 1; d >= 0; --d) {
        where = std::to_string(rest % t.dim(d)) + (where.empty() ? "" : ", ") + where;
        rest /= t.dim(d);
      }
      std::string type;
      llvm::raw_string_ostream os(type);
      os << op->getResult(r).getType();
      if (auto fusion = dyn_cast<FusionOp>(op)) {
        os << "; the fusion of";
        for (Operation &inner : fusion.getBodyOps())
          os << " " << inner.getName();
      }
      return opError(op, llvm::formatv("train.check_numerics: the first non-finite value of the "
                                       "step, {0} at [{1}] of result {2} ({3})",
                                       std::isnan(v) ? "NaN" : "+inf", where, r, type)
                             .str());
    }
  }
  return llvm::Error::success();
}

/// A norm gradient's dy in x's dtype: itself, or a narrow dy (a folded
/// widening) widened exactly into `storage`.
const HostTensor &widenedDy(const HostTensor &dy, const HostTensor &x, HostTensor &storage) {
  if (dy.dtype() == x.dtype())
    return dy;
  storage = kernels::cast(dy, x.dtype());
  return storage;
}

/// Executes one op on its operand tensors, appending its results.
llvm::Error execute(Operation *op, llvm::ArrayRef<const HostTensor *> in,
                    llvm::SmallVectorImpl<HostTensor> &out) {
  using namespace kernels;
  auto wrap = [&](llvm::Error err) { return opError(op, llvm::toString(std::move(err))); };
  auto resultDType = [&](unsigned i = 0) { return dtypeOfValue(op->getResult(i)); };
  // Ops without operands (iota, constant) never read `x`.
  auto x = [&]() -> const HostTensor & { return *in[0]; };
  auto applyBinary = [&](Binary kind) {
    return [&, kind](Operation *) {
      out.push_back(binary(kind, *in[0], *in[1]));
      return llvm::Error::success();
    };
  };
  auto applyUnary = [&](Unary kind) {
    return [&, kind](Operation *) {
      out.push_back(unary(kind, x()));
      return llvm::Error::success();
    };
  };
  return llvm::TypeSwitch<Operation *, llvm::Error>(op)
#define KILN_BINARY(Op, fn) .Case<Op>(applyBinary(Binary::fn))
#define KILN_UNARY(Op, fn) .Case<Op>(applyUnary(Unary::fn))
#include "ir/ElementwiseOps.def"
      .Case([&](GeluOp g) {
        out.push_back(unary(g.getApproximate() == GeluApproximation::tanh ? Unary::geluTanh
                                                                          : Unary::geluErf,
                            x()));
        return llvm::Error::success();
      })
      .Case([&](GeluGradOp g) {
        out.push_back(geluGrad(g.getApproximate() == GeluApproximation::tanh, *in[0], *in[1]));
        return llvm::Error::success();
      })
      .Case([&](CastOp) {
        out.push_back(kernels::cast(x(), resultDType()));
        return llvm::Error::success();
      })
      .Case([&](CompareOp c) {
        out.push_back(compare(static_cast<Compare>(static_cast<int>(c.getDirection())), *in[0],
                              *in[1]));
        return llvm::Error::success();
      })
      .Case([&](SelectOp) {
        out.push_back(select(*in[0], *in[1], *in[2]));
        return llvm::Error::success();
      })
      .Case([&](ReshapeOp r) {
        out.push_back(x().reshaped(shapeOfValue(r.getResult())));
        return llvm::Error::success();
      })
      .Case([&](TransposeOp t) {
        out.push_back(transpose(x(), t.getPermutation()));
        return llvm::Error::success();
      })
      .Case([&](SliceOp s) {
        out.push_back(slice(x(), s.getStartIndices(), s.getLimitIndices(), s.getStrides()));
        return llvm::Error::success();
      })
      .Case([&](PadOp p) {
        out.push_back(pad(x(), p.getLow(), p.getHigh(), p.getInterior()));
        return llvm::Error::success();
      })
      .Case([&](ConcatOp c) {
        std::vector<HostTensor> xs;
        for (const HostTensor *t : in)
          xs.push_back(*t);
        out.push_back(concat(xs, c.getDim()));
        return llvm::Error::success();
      })
      .Case([&](BroadcastInDimOp b) {
        out.push_back(broadcastInDim(x(), shapeOfValue(b.getResult()), b.getDims()));
        return llvm::Error::success();
      })
      .Case([&](IotaOp i) {
        out.push_back(iota(resultDType(), shapeOfValue(i.getResult()), i.getDim()));
        return llvm::Error::success();
      })
      .Case([&](ReduceSumOp r) {
        out.push_back(reduce(Reduce::Sum, x(), r.getDims()));
        return llvm::Error::success();
      })
      .Case([&](ReduceMaxOp r) {
        out.push_back(reduce(Reduce::Max, x(), r.getDims()));
        return llvm::Error::success();
      })
      .Case([&](ReduceMeanOp r) {
        out.push_back(reduce(Reduce::Mean, x(), r.getDims()));
        return llvm::Error::success();
      })
      .Case([&](MatmulOp m) {
        HostTensor c = matmul(*in[0], *in[1], m.getTransposeA(), m.getTransposeB(), resultDType(),
                              shapeOfValue(m.getResult()));
        if (m.getBias()) {
          // Added in the result's precision, as cuBLASLt's epilogue does.
          const HostTensor &bias = *in[2];
          int64_t n = bias.numel();
          for (int64_t i = 0; i < c.numel(); ++i)
            c.set(i, c.get(i) + bias.get(i % n));
        }
        out.push_back(std::move(c));
        return llvm::Error::success();
      })
      .Case([&](EmbeddingOp) -> llvm::Error {
        auto r = embedding(*in[0], *in[1]);
        if (!r)
          return wrap(r.takeError());
        out.push_back(std::move(*r));
        return llvm::Error::success();
      })
      .Case([&](EmbeddingGradOp e) -> llvm::Error {
        auto r = embeddingGrad(*in[0], *in[1], shapeOfValue(e.getResult()));
        if (!r)
          return wrap(r.takeError());
        // The rows' sums first, then init added: as the add kiln-fuse took.
        // (A bf16/f16 init widened first, as the cast kiln-fuse took.)
        if (!e.getInit())
          out.push_back(std::move(*r));
        else if (in[2]->dtype() == r->dtype())
          out.push_back(binary(Binary::add, *in[2], *r));
        else
          out.push_back(binary(Binary::add, cast(*in[2], r->dtype()), *r));
        return llvm::Error::success();
      })
      .Case([&](SoftmaxOp) {
        out.push_back(softmax(x(), /*log=*/false));
        return llvm::Error::success();
      })
      .Case([&](LogSoftmaxOp) {
        out.push_back(softmax(x(), /*log=*/true));
        return llvm::Error::success();
      })
      .Case([&](SoftmaxGradOp) {
        out.push_back(softmaxGrad(*in[0], *in[1]));
        return llvm::Error::success();
      })
      .Case([&](LayerNormOp l) {
        auto [y, mean, rstd] = layerNorm(*in[0], *in[1], *in[2],
                                         l.getEpsilon().convertToDouble(), resultDType(1));
        // A narrowed y: the x-typed result, rounded (a folded cast).
        if (y.dtype() != resultDType(0))
          y = kernels::cast(y, resultDType(0));
        out.append({y, mean, rstd});
        return llvm::Error::success();
      })
      .Case([&](LayerNormGradOp) {
        HostTensor wide;
        auto [dx, dw, db] =
            layerNormGrad(*in[0], *in[1], *in[2], *in[3], widenedDy(*in[4], *in[0], wide));
        out.append({dx, dw, db});
        return llvm::Error::success();
      })
      .Case([&](RmsNormOp r) {
        auto [y, rstd] = rmsNorm(*in[0], *in[1], r.getEpsilon().convertToDouble(), resultDType(1));
        if (y.dtype() != resultDType(0))
          y = kernels::cast(y, resultDType(0));
        out.append({y, rstd});
        return llvm::Error::success();
      })
      .Case([&](RmsNormGradOp) {
        HostTensor wide;
        auto [dx, dw] = rmsNormGrad(*in[0], *in[1], *in[2], widenedDy(*in[3], *in[0], wide));
        out.append({dx, dw});
        return llvm::Error::success();
      })
      .Case([&](RopeOp r) {
        out.push_back(rope(x(), r.getTheta().convertToDouble(), r.getInverse(), r.positionDim()));
        return llvm::Error::success();
      })
      .Case([&](MoeRouteOp r) {
        auto [expert, slot, token] = moeRoute(*in[0], static_cast<int64_t>(r.getTopK()),
                                              static_cast<int64_t>(r.getCapacity()), resultDType(0));
        out.append({expert, slot, token});
        return llvm::Error::success();
      })
      .Case([&](CrossEntropyOp c) -> llvm::Error {
        auto r = crossEntropy(*in[0], *in[1], c.getNumValidClasses(), resultDType(0));
        if (!r)
          return wrap(r.takeError());
        auto [loss, lse] = std::move(*r);
        out.append({loss, lse});
        return llvm::Error::success();
      })
      .Case([&](CrossEntropyGradOp c) -> llvm::Error {
        int64_t valid = c.getValidClasses() ? *c.getValidClasses() : in[0]->dim(-1);
        auto r = crossEntropyGrad(*in[0], *in[1], *in[2], *in[3], valid);
        if (!r)
          return wrap(r.takeError());
        out.push_back(std::move(*r));
        return llvm::Error::success();
      })
      // layout = "bthd" is defined as the head-major op between transposes
      // of dimensions 1 and 2.
      .Case([&](AttentionOp a) {
        bool seq = a.isSequenceMajor();
        auto headMajor = [&](const HostTensor *t) { return seq ? swapHeadsAndPositions(*t) : *t; };
        auto [o, lse] = attention(headMajor(in[0]), headMajor(in[1]), headMajor(in[2]),
                                  a.getSegments() ? in[3] : nullptr,
                                  a.getScale().convertToDouble(), a.getCausal(), resultDType(1));
        out.append({seq ? swapHeadsAndPositions(o) : o, lse});
        return llvm::Error::success();
      })
      // attention_qkv is defined by its slices: kiln.attention (head-major,
      // between transposes) on qkv[:, :, :, 0], [..., 1] and [..., 2].
      .Case([&](AttentionQkvOp a) {
        auto parts = unpackQkv(*in[0]);
        auto [o, lse] = attention(parts[0], parts[1], parts[2], a.getSegments() ? in[1] : nullptr,
                                  a.getScale().convertToDouble(), a.getCausal(), resultDType(1));
        out.append({swapHeadsAndPositions(o), lse});
        return llvm::Error::success();
      })
      .Case([&](AttentionQkvGradOp a) {
        auto parts = unpackQkv(*in[0]);
        auto [dq, dk, dv] = attentionGrad(parts[0], parts[1], parts[2], swapHeadsAndPositions(*in[1]),
                                          *in[2], swapHeadsAndPositions(*in[3]),
                                          a.getSegments() ? in[4] : nullptr,
                                          a.getScale().convertToDouble(), a.getCausal());
        out.push_back(packQkv({dq, dk, dv}));
        return llvm::Error::success();
      })
      .Case([&](AttentionGradOp a) {
        bool seq = a.isSequenceMajor();
        auto headMajor = [&](const HostTensor *t) { return seq ? swapHeadsAndPositions(*t) : *t; };
        auto [dq, dk, dv] = attentionGrad(headMajor(in[0]), headMajor(in[1]), headMajor(in[2]),
                                          headMajor(in[3]), *in[4], headMajor(in[5]),
                                          a.getSegments() ? in[6] : nullptr,
                                          a.getScale().convertToDouble(), a.getCausal());
        if (seq)
          out.append({swapHeadsAndPositions(dq), swapHeadsAndPositions(dk),
                      swapHeadsAndPositions(dv)});
        else
          out.append({dq, dk, dv});
        return llvm::Error::success();
      })
      .Case([&](GlobalNormOp) {
        out.push_back(globalNorm(in, resultDType()));
        return llvm::Error::success();
      })
      .Case([&](AdamWUpdateOp a) {
        // The working copy (an optional fourth result): the new parameter
        // converted, as kiln.cast would.
        auto appendCopy = [&] {
          if (Value copy = a.getNewCopy())
            out.push_back(cast(out[0], dtypeOfValue(copy)));
        };
        if (a.getSkip() && in[7]->get(0) != 0) {
          // An overflowed loss-scaled step: everything stays as it was.
          out.append({in[0]->clone(), in[2]->clone(), in[3]->clone()});
          appendCopy();
          return llvm::Error::success();
        }
        auto [p, m, v] = adamw(*in[0], *in[1], *in[2], *in[3], in[4]->get(0), in[5]->get(0),
                               in[6]->get(0), a.getBeta1().convertToDouble(),
                               a.getBeta2().convertToDouble(), a.getEpsilon().convertToDouble(),
                               a.getWeightDecay().convertToDouble());
        out.append({p, m, v});
        appendCopy();
        return llvm::Error::success();
      })
      .Case([&](FusionOp f) { return executeFusion(f, in, out); })
      .Case([&](CustomKernelOp c) { return executeCustom(c, in, out); })
      .Default([&](Operation *) { return opError(op, "not supported"); });
}

} // namespace

llvm::Expected<std::pair<DType, std::vector<int64_t>>> hostTypeOf(Type type) {
  auto tensor = dyn_cast<RankedTensorType>(type);
  if (!tensor || !tensor.hasStaticShape())
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "CPU interpreter: expected a statically shaped tensor");
  auto dtype = dtypeOf(tensor.getElementType());
  if (!dtype) {
    std::string s;
    llvm::raw_string_ostream(s) << tensor.getElementType();
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "CPU interpreter: element type " + s + " is not supported");
  }
  return std::make_pair(*dtype, std::vector<int64_t>(tensor.getShape()));
}

namespace {

int64_t saturatingAdd(int64_t a, int64_t b) {
  int64_t sum;
  return llvm::AddOverflow(a, b, sum) ? std::numeric_limits<int64_t>::max() : sum;
}

/// Host bytes of a value (storage type), saturating.
int64_t hostBytes(Value v) {
  auto type = hostTypeOf(v.getType());
  if (!type) {
    llvm::consumeError(type.takeError());
    return 0;
  }
  auto bytes = checkedBytes(type->second, static_cast<int64_t>(storageSize(type->first)));
  return bytes ? *bytes : std::numeric_limits<int64_t>::max();
}

/// The most bytes the interpreter holds at once for `block`'s values, each
/// from its op to its last reader. A reshape shares its operand's storage;
/// a kiln.fusion holds its body's values while it runs (its yielded values
/// become the results counted next). A function's constants live for the
/// whole run (prepare() materializes them); a fusion body's are made each
/// time it runs and freed like its other values.
int64_t blockPeak(Block &block, bool constantsLive) {
  llvm::DenseMap<Value, Operation *> lastUser;
  for (Operation &op : block)
    for (Value v : op.getOperands())
      lastUser[v] = &op;
  auto owned = [&](Operation *def) {
    return def && !isa<ReshapeOp>(def) && !(constantsLive && isa<ConstantOp>(def));
  };
  int64_t live = 0, peak = 0;
  for (Operation &op : block) {
    if (auto fusion = dyn_cast<FusionOp>(op))
      peak = std::max(peak, saturatingAdd(live, blockPeak(fusion.getBody().front(), false)));
    if (!isa<ReshapeOp>(op))
      for (Value r : op.getResults())
        live = saturatingAdd(live, hostBytes(r));
    peak = std::max(peak, live);
    llvm::SmallPtrSet<void *, 4> freed; // an operand may appear twice
    for (Value v : op.getOperands())
      if (lastUser.lookup(v) == &op && owned(v.getDefiningOp()) &&
          freed.insert(v.getAsOpaquePointer()).second &&
          live != std::numeric_limits<int64_t>::max())
        live -= hostBytes(v);
  }
  return peak;
}

} // namespace

int64_t Interpreter::peakTemporaryBytes(func::FuncOp func) {
  if (func.getBody().getBlocks().size() != 1)
    return 0;
  return blockPeak(func.getBody().front(), /*constantsLive=*/true);
}

Interpreter::Interpreter(func::FuncOp func) : func_(func) {}
Interpreter::~Interpreter() = default;

llvm::Expected<std::unique_ptr<Interpreter>> Interpreter::create(func::FuncOp func) {
  std::unique_ptr<Interpreter> interp(new Interpreter(func));
  if (llvm::Error err = interp->prepare())
    return std::move(err);
  if (auto module = func->getParentOfType<ModuleOp>())
    interp->checkNumerics_ = module->hasAttr(KilnDialect::kCheckNumericsAttrName);
  return std::move(interp);
}

llvm::Error Interpreter::prepare() {
  if (func_.getBody().getBlocks().size() != 1)
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "CPU interpreter: @" + func_.getSymName().str() +
                                       " must have exactly one block");
  llvm::DenseMap<Value, unsigned> slot;
  auto slotOf = [&](Value v) {
    auto [it, inserted] = slot.try_emplace(v, numSlots_);
    if (inserted)
      ++numSlots_;
    return it->second;
  };
  for (BlockArgument arg : func_.getArguments()) {
    if (auto t = hostTypeOf(arg.getType()); !t)
      return t.takeError();
    slotOf(arg);
  }
  Block &body = func_.getBody().front();
  for (Operation &op : body) {
    if (auto ret = dyn_cast<func::ReturnOp>(op)) {
      for (Value v : ret.getOperands())
        resultSlots_.push_back(slotOf(v));
      continue;
    }
    if (!isSupported(&op))
      return opError(&op, "this op is not supported by the CPU interpreter");
    Step step{&op, {}, {}, {}, {}};
    for (Value v : op.getOperands())
      step.operands.push_back(slotOf(v));
    for (Value v : op.getResults()) {
      if (auto t = hostTypeOf(v.getType()); !t)
        return opError(&op, llvm::toString(t.takeError()));
      step.results.push_back(slotOf(v));
    }
    if (auto c = dyn_cast<ConstantOp>(op))
      step.constant = fromElements(c.getValue());
    steps_.push_back(std::move(step));
  }
  // Free each slot after its last reader (results and arguments are kept
  // alive by the caller's references anyway).
  std::vector<int> lastUse(numSlots_, -1);
  for (auto [i, step] : llvm::enumerate(steps_))
    for (unsigned s : step.operands)
      lastUse[s] = static_cast<int>(i);
  for (unsigned s : resultSlots_)
    lastUse[s] = static_cast<int>(steps_.size());
  for (unsigned s = 0; s < numSlots_; ++s)
    if (lastUse[s] >= 0 && lastUse[s] < static_cast<int>(steps_.size()))
      steps_[lastUse[s]].freeAfter.push_back(s);
  return llvm::Error::success();
}

llvm::Error Interpreter::runCollective(Operation *op, const HostTensor &x,
                                       llvm::SmallVectorImpl<HostTensor> &out) {
  if (!collectives_)
    return opError(op, "a partitioned step needs its ranks: run it on a mesh "
                       "(kiln::cpu::ThreadMesh), not alone");
  llvm::Expected<HostTensor> r = llvm::TypeSwitch<Operation *, llvm::Expected<HostTensor>>(op)
      .Case([&](AllReduceOp c) { return collectives_->allReduce(x, c.getAxis()); })
      .Case([&](AllGatherOp c) {
        return collectives_->allGather(x, c.getAxis(), static_cast<int64_t>(c.getDim()));
      })
      .Case([&](ReduceScatterOp c) {
        return collectives_->reduceScatter(x, c.getAxis(), static_cast<int64_t>(c.getDim()));
      })
      .Case([&](AllToAllOp c) {
        return collectives_->allToAll(x, c.getAxis(), static_cast<int64_t>(c.getSplitDim()),
                                      static_cast<int64_t>(c.getConcatDim()));
      })
      .Case([&](TakeShardOp c) -> llvm::Expected<HostTensor> {
        return partOf(x, static_cast<int64_t>(c.getDim()), collectives_->coordinate(c.getAxis()),
                      collectives_->groupSize(c.getAxis()));
      })
      .Default([](Operation *) -> llvm::Expected<HostTensor> {
        return llvm::createStringError(llvm::inconvertibleErrorCode(), "not a collective");
      });
  if (!r)
    return opError(op, llvm::toString(r.takeError()));
  out.push_back(std::move(*r));
  return llvm::Error::success();
}

llvm::Error Interpreter::runTransfer(Operation *op, const std::vector<HostTensor> &slots,
                                     const Step &step, llvm::SmallVectorImpl<HostTensor> &out) {
  if (!collectives_)
    return opError(op, "a pipeline stage needs the other stages: run it on the pipeline's "
                       "ranks, not alone");
  if (auto send = dyn_cast<SendOp>(op)) {
    if (llvm::Error err = collectives_->send(slots[step.operands[0]], send.getAxis(),
                                             static_cast<int64_t>(send.getPeer()),
                                             static_cast<int64_t>(send.getChannel())))
      return opError(op, llvm::toString(std::move(err)));
    return llvm::Error::success();
  }
  auto recv = cast<RecvOp>(op);
  auto x = collectives_->recv(recv.getAxis(), static_cast<int64_t>(recv.getPeer()),
                              static_cast<int64_t>(recv.getChannel()));
  if (!x)
    return opError(op, llvm::toString(x.takeError()));
  auto want = hostTypeOf(recv.getType());
  if (!want)
    return want.takeError();
  if (x->dtype() != want->first || x->shape() != want->second)
    return opError(op, "received " + x->typeString() + " but expects " +
                           typeString(want->first, want->second) +
                           " (the stages run different programs)");
  out.push_back(std::move(*x));
  return llvm::Error::success();
}

llvm::Expected<std::vector<HostTensor>> Interpreter::run(llvm::ArrayRef<HostTensor> args) {
  if (args.size() != func_.getNumArguments())
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   llvm::formatv("CPU interpreter: @{0} takes {1} arguments, got {2}",
                                                 func_.getSymName(), func_.getNumArguments(),
                                                 args.size()));
  std::vector<HostTensor> slots(numSlots_);
  for (auto [i, arg] : llvm::enumerate(func_.getArguments())) {
    auto [dtype, shape] = *hostTypeOf(arg.getType());
    if (args[i].dtype() != dtype || args[i].shape() != shape) {
      std::string want = typeString(dtype, shape);
      auto name = func_.getArgAttrOfType<StringAttr>(i, KilnDialect::kParamAttrName);
      if (!name)
        name = func_.getArgAttrOfType<StringAttr>(i, KilnDialect::kInputAttrName);
      return llvm::createStringError(
          llvm::inconvertibleErrorCode(),
          llvm::formatv("CPU interpreter: argument #{0}{1} of @{2} must be {3}, got {4}", i,
                        name ? " (" + name.getValue().str() + ")" : std::string(),
                        func_.getSymName(), want, args[i].typeString()));
    }
    slots[i] = args[i];
  }
  llvm::SmallVector<const HostTensor *, 8> operands;
  llvm::SmallVector<HostTensor, 4> results;
  for (Step &step : steps_) {
    results.clear();
    if (isa<ConstantOp>(step.op)) {
      results.push_back(step.constant);
    } else if (isa<SendOp, RecvOp>(step.op)) {
      if (llvm::Error err = runTransfer(step.op, slots, step, results))
        return std::move(err);
    } else if (isCollective(step.op)) {
      if (llvm::Error err = runCollective(step.op, slots[step.operands[0]], results))
        return std::move(err);
    } else {
      operands.clear();
      for (unsigned s : step.operands)
        operands.push_back(&slots[s]);
      if (llvm::Error err = execute(step.op, operands, results))
        return std::move(err);
    }
    // As the generated code: the optimizer's update is not checked (a
    // non-finite gradient is caught where it is made), nor constants.
    if (checkNumerics_ && !isa<ConstantOp, AdamWUpdateOp>(step.op))
      if (llvm::Error err = checkFinite(step.op, results))
        return std::move(err);
    for (auto [s, t] : llvm::zip(step.results, results))
      slots[s] = std::move(t);
    for (unsigned s : step.freeAfter)
      slots[s] = HostTensor();
  }
  std::vector<HostTensor> out;
  for (unsigned s : resultSlots_)
    out.push_back(slots[s]);
  return out;
}

llvm::Error evaluateOp(Operation *op, llvm::ArrayRef<const HostTensor *> operands,
                       llvm::SmallVectorImpl<HostTensor> &results) {
  if (auto c = dyn_cast<ConstantOp>(op)) {
    results.push_back(fromElements(c.getValue()));
    return llvm::Error::success();
  }
  if (isCollective(op) || isa<SendOp, RecvOp>(op) || !isSupported(op))
    return opError(op, "this op is not supported by the CPU interpreter here");
  return execute(op, operands, results);
}

} // namespace kiln::cpu
