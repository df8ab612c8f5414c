//===- CompositeEmitter.cpp - kernels of the neural-network composites -----===//
//
// Each composite instantiates a template of codegen/kernels/*.cuh with its
// shapes as template arguments: layer/RMS norm (a warp per row; the backward
// sums dweight/dbias through per-warp partials), softmax, cross-entropy (a
// block per row of logits), embedding (gather; scatter-add backward), rope,
// attention. The optimizer's ops are multi-tensor: one launch covers every
// parameter.
//
//===----------------------------------------------------------------------===//

#include "codegen/Emitter.h"
#include "codegen/PlanBuilder.h"

#include "ir/KilnOps.h"

#include "llvm/ADT/TypeSwitch.h"
#include "llvm/Support/FormatVariadic.h"

#include <cmath>
#include <cstdio>

using namespace mlir;

namespace kiln::codegen {

namespace {



std::string elt(Value v) { return cType(tensorOf(v).getElementType()); }
/// A double as a C hexadecimal literal: exact, whatever the digits.
std::string hexDouble(double v) {
  char text[64];
  std::snprintf(text, sizeof text, "%a", v);
  return text;
}
size_t elementBytes(Value v) { return cpu::dtypeSize(*cpu::dtypeOf(tensorOf(v).getElementType())); }

/// Pointer parameters and their arguments, built together.
struct Params {
  std::string text;
  std::vector<PlanArg> args;
  llvm::Error add(Emitter &e, Value v, const std::string &name, bool isConst) {
    auto offset = e.offsetOf(v);
    if (!offset)
      return offset.takeError();
    text += (text.empty() ? "" : ", ") + std::string(isConst ? "const " : "") + elt(v) + " *" + name;
    args.push_back(Emitter::ptr(*offset));
    return llvm::Error::success();
  }
  /// `unsigned *error`: the word kernels set on out-of-range ids.
  void addErrorFlag(Emitter &e) {
    text += (text.empty() ? "" : ", ") + std::string("unsigned *error");
    args.push_back(Emitter::ptr(e.errorFlag()));
  }
};

/// The rows and row length of a tensor's last dimension.
std::pair<int64_t, int64_t> rowsOf(Value v) {
  auto t = tensorOf(v);
  int64_t n = t.getRank() ? t.getShape().back() : 1;
  return {n ? t.getNumElements() / n : 0, n};
}

/// train.deterministic (the module's kiln.deterministic): sums in a fixed
/// order.
bool deterministic(Operation *op) {
  auto module = op->getParentOfType<ModuleOp>();
  return module && module->hasAttr(KilnDialect::kDeterministicAttrName);
}

/// `globals`: definitions placed before the kernel (constant tables).
/// `minBlocks` > 0 asks ptxas to fit that many blocks on an SM (registers).
std::string kernel(Operation *op, const char *file, const std::string &params,
                   const std::string &body, int threads = 256, const std::string &globals = "",
                   int minBlocks = 0) {
  std::string bounds =
      std::to_string(threads) + (minBlocks > 0 ? ", " + std::to_string(minBlocks) : "");
  return include(file) + Emitter::header(op) + globals +
         "extern \"C\" __global__ void __launch_bounds__(" + bounds + ") @NAME@(" + params +
         ") {\n" + body + "}\n";
}

#define ADD(value, name, isConst)                                                                  \
  if (llvm::Error err = p.add(e, value, name, isConst))                                            \
    return std::move(err);

llvm::Expected<bool> layerNorm(Emitter &e, LayerNormOp op) {
  Params p;
  ADD(op.getX(), "x", true) ADD(op.getWeight(), "w", true) ADD(op.getBias(), "b", true)
  ADD(op.getY(), "y", false) ADD(op.getMean(), "mean", false) ADD(op.getRstd(), "rstd", false)
  auto [rows, c] = rowsOf(op.getX());
  std::string body = llvm::formatv("  kiln::layerNormForward<{0}, {1}, {2}, {3}, {5}>(x, w, b, y, mean, rstd, {4:e9}f);\n",
                                   elt(op.getX()), elt(op.getMean()), rows, c,
                                   op.getEpsilon().convertToFloat(), elt(op.getY()))
                         .str();
  e.launch(op, "layer_norm", kernel(op, "norm.cuh", p.text, body), {e.gridFor(rows * 32, 256), 1, 1},
           {256, 1, 1}, p.args);
  return true;
}

/// The second kernel of a norm's backward: the partial sums at `partial`
/// (`rows` rows — one a warp, or a block in a fusion — of one C vector per
/// entry of `outs`, in F) summed per column into each out's buffer,
/// rounded first to its `roundTo` type (a bf16 column sum widened to f32)
/// when given.
struct PartialOut {
  Value buffer;
  Type roundTo;
};
llvm::Error sumNormPartials(Emitter &e, Operation *op, int64_t partial, const std::string &F,
                            int64_t c, int64_t rows, ArrayRef<PartialOut> outs,
                            const char *name = "norm_partials") {
  Params p;
  p.text = "const " + F + " *partial";
  p.args.push_back(Emitter::ptr(partial));
  std::string members, init, stores;
  for (auto [j, o] : llvm::enumerate(outs)) {
    std::string name = "o" + str(j);
    if (llvm::Error err = p.add(e, o.buffer, name, false))
      return err;
    members += "  " + elt(o.buffer) + " *" + name + ";\n";
    init += (j ? ", " : "") + name;
    stores += llvm::formatv("    {0}if (part == {1}) kiln::store({2}, j, {3});\n", j ? "else " : "",
                            j, name, o.roundTo ? roundedTo(o.roundTo, "t") : std::string("t"))
                  .str();
  }
  std::string body = "struct Store {\n" + members +
                     "  __device__ void operator()(int part, kiln::i64 j, " + F + " t) const {\n" +
                     stores + "  }\n};\n";
  std::string call =
      llvm::formatv("  kiln::sumPartialsTo<{0}, {1}, {2}, {3}>(partial, Store{{{4}});\n", F, c,
                    rows, outs.size(), init)
          .str();
  e.launch(op, name, kernel(op, "norm.cuh", p.text, call, 1024, body), {(c + 31) / 32, 1, 1},
           {32, 32, 1}, p.args);
  return llvm::Error::success();
}

/// The backward of a norm: dx and per-warp partials, then their column sums.
llvm::Expected<bool> normBackward(Emitter &e, Operation *op, bool layer) {
  Value x = op->getOperand(0);
  auto [rows, c] = rowsOf(x);
  // Two blocks of 8 warps per SM keep enough loads in flight to stream x
  // and dy at memory speed; the partials cost 2·C floats per warp.
  int64_t grid = std::min<int64_t>((rows + 7) / 8, 2 * e.options().smCount), warps = grid * 8;
  int parts = layer ? 2 : 1;
  std::string F = computeType(tensorOf(x).getElementType());
  const int64_t partial = e.scratch(warps * parts * c * (F == "double" ? 8 : 4));
  Params p;
  ADD(x, "x", true) ADD(op->getOperand(1), "w", true)
  std::string call;
  if (layer) {
    auto ln = cast<LayerNormGradOp>(op);
    ADD(ln.getMean(), "mean", true) ADD(ln.getRstd(), "rstd", true) ADD(ln.getDy(), "dy", true)
    ADD(ln.getDx(), "dx", false)
    call = llvm::formatv("  kiln::layerNormBackward<{0}, {1}, {2}, {3}>(x, w, mean, rstd, dy, dx, partial);\n",
                         elt(x), elt(ln.getMean()), rows, c)
               .str();
  } else {
    auto rms = cast<RmsNormGradOp>(op);
    ADD(rms.getRstd(), "rstd", true) ADD(rms.getDy(), "dy", true) ADD(rms.getDx(), "dx", false)
    call = llvm::formatv("  kiln::rmsNormBackward<{0}, {1}, {2}, {3}>(x, w, rstd, dy, dx, partial);\n",
                         elt(x), elt(rms.getRstd()), rows, c)
               .str();
  }
  p.text += ", " + F + " *partial";
  p.args.push_back(Emitter::ptr(partial));
  e.launch(op, layer ? "layer_norm_backward" : "rms_norm_backward", kernel(op, "norm.cuh", p.text, call),
           {grid, 1, 1}, {256, 1, 1}, p.args);
  SmallVector<PartialOut> outs{{op->getResult(1), {}}};
  if (layer)
    outs.push_back({op->getResult(2), {}});
  if (llvm::Error err = sumNormPartials(e, op, partial, F, c, warps, outs))
    return std::move(err);
  return true;
}

llvm::Expected<bool> rmsNorm(Emitter &e, RmsNormOp op) {
  Params p;
  ADD(op.getX(), "x", true) ADD(op.getWeight(), "w", true) ADD(op.getY(), "y", false)
  ADD(op.getRstd(), "rstd", false)
  auto [rows, c] = rowsOf(op.getX());
  std::string body = llvm::formatv("  kiln::rmsNormForward<{0}, {1}, {2}, {3}, {5}>(x, w, y, rstd, {4:e9}f);\n",
                                   elt(op.getX()), elt(op.getRstd()), rows, c,
                                   op.getEpsilon().convertToFloat(), elt(op.getY()))
                         .str();
  e.launch(op, "rms_norm", kernel(op, "norm.cuh", p.text, body), {e.gridFor(rows * 32, 256), 1, 1},
           {256, 1, 1}, p.args);
  return true;
}

/// Elements of `v` per 16-byte word when rows of `n` are whole words; else 0.
int vectorWidth(Value v, int64_t n) {
  return static_cast<int>(wordElements(tensorOf(v).getElementType(), n));
}

/// The same when a row of `n` takes softmax's register path (whole words
/// for every lane, at most 64 values a lane).
int softmaxVectorWidth(Value v, int64_t n) {
  int width = vectorWidth(v, n);
  return width && n % (32 * width) == 0 && n / 32 <= 64 ? width : 0;
}

llvm::Expected<bool> softmax(Emitter &e, Operation *op, bool log) {
  Params p;
  ADD(op->getOperand(0), "x", true) ADD(op->getResult(0), "y", false)
  auto [rows, n] = rowsOf(op->getOperand(0));
  int width = softmaxVectorWidth(op->getOperand(0), n);
  std::string body =
      width ? llvm::formatv("  kiln::softmaxForwardVec<{0}, {1}, {2}, {3}, {4}>(x, y);\n",
                            elt(op->getOperand(0)), rows, n, log ? "true" : "false", width)
                  .str()
            : llvm::formatv("  kiln::softmaxForward<{0}, {1}, {2}, {3}>(x, y);\n",
                            elt(op->getOperand(0)), rows, n, log ? "true" : "false")
                  .str();
  e.launch(op, log ? "log_softmax" : "softmax", kernel(op, "softmax.cuh", p.text, body),
           {e.gridFor(rows * 32, 256), 1, 1}, {256, 1, 1}, p.args);
  return true;
}

llvm::Expected<bool> softmaxGrad(Emitter &e, SoftmaxGradOp op) {
  Params p;
  ADD(op.getY(), "y", true) ADD(op.getDy(), "dy", true) ADD(op.getDx(), "dx", false)
  auto [rows, n] = rowsOf(op.getY());
  int width = softmaxVectorWidth(op.getY(), n);
  std::string body =
      width ? llvm::formatv("  kiln::softmaxBackwardVec<{0}, {1}, {2}, {3}>(y, dy, dx);\n", elt(op.getY()),
                            rows, n, width)
                  .str()
            : llvm::formatv("  kiln::softmaxBackward<{0}, {1}, {2}>(y, dy, dx);\n", elt(op.getY()), rows, n)
                  .str();
  e.launch(op, "softmax_backward", kernel(op, "softmax.cuh", p.text, body),
           {e.gridFor(rows * 32, 256), 1, 1}, {256, 1, 1}, p.args);
  return true;
}

llvm::Expected<bool> crossEntropy(Emitter &e, CrossEntropyOp op) {
  Params p;
  ADD(op.getLogits(), "logits", true) ADD(op.getTargets(), "targets", true)
  ADD(op.getLoss(), "loss", false) ADD(op.getLse(), "lse", false)
  p.addErrorFlag(e);
  auto [rows, v] = rowsOf(op.getLogits());
  int width = vectorWidth(op.getLogits(), v);
  std::string body = llvm::formatv("  kiln::crossEntropyForward{6}<{0}, {1}, {2}, {3}, {4}, {5}{7}>(logits, targets, loss, lse, error);\n",
                                   elt(op.getLogits()), elt(op.getLoss()), elt(op.getTargets()), rows, v,
                                   op.getNumValidClasses(), width ? "Vec" : "",
                                   width ? ", " + std::to_string(width) : std::string())
                         .str();
  e.launch(op, "cross_entropy", kernel(op, "cross_entropy.cuh", p.text, body),
           {std::min<int64_t>(rows, e.options().smCount * 16), 1, 1}, {256, 1, 1}, p.args);
  return true;
}

llvm::Expected<bool> crossEntropyGrad(Emitter &e, CrossEntropyGradOp op) {
  Params p;
  ADD(op.getLogits(), "logits", true) ADD(op.getTargets(), "targets", true) ADD(op.getLse(), "lse", true)
  ADD(op.getDloss(), "dloss", true) ADD(op.getDlogits(), "dlogits", false)
  p.addErrorFlag(e);
  auto [rows, v] = rowsOf(op.getLogits());
  int64_t valid = op.getValidClasses() ? static_cast<int64_t>(*op.getValidClasses()) : v;
  int width = vectorWidth(op.getLogits(), v);
  std::string body = llvm::formatv("  kiln::crossEntropyBackward{6}<{0}, {1}, {2}, {3}, {4}, {5}{7}>(logits, targets, lse, dloss, dlogits, error);\n",
                                   elt(op.getLogits()), elt(op.getLse()), elt(op.getTargets()), rows, v, valid,
                                   width ? "Vec" : "", width ? ", " + std::to_string(width) : std::string())
                         .str();
  e.launch(op, "cross_entropy_backward", kernel(op, "cross_entropy.cuh", p.text, body),
           {std::min<int64_t>(rows, e.options().smCount * 16), 1, 1}, {256, 1, 1}, p.args);
  return true;
}

/// The function-level buffer of a fusion body's value: a block argument's
/// input, a yielded value's result; null for a value that is neither.
Value bufferOfBodyValue(FusionOp fusion, Value v) {
  if (auto arg = dyn_cast<BlockArgument>(v); arg && arg.getOwner() == &fusion.getBody().front())
    return fusion.getInputs()[arg.getArgNumber()];
  for (auto [y, r] : llvm::zip_equal(fusion.getYield().getValues(), fusion.getResults()))
    if (y == v)
      return r;
  return {};
}

/// A cross-entropy fusion (matchCrossEntropyFusion): one block of 1024
/// threads a row, which reads the row for its log-sum-exp and then writes
/// its gradient (kiln::crossEntropyFusedVec); the hardware runs as many
/// rows at a time as fit, so the rows read twice stay in L2 (two blocks an
/// SM of GPT-2's 100 KB rows: 26 MB).
llvm::Expected<bool> crossEntropyFusion(Emitter &e, FusionOp fusion) {
  std::string why;
  auto body = matchCrossEntropyFusion(fusion, &why);
  if (failed(body))
    return error("codegen: " + Emitter::describe(fusion) + " is not a cross-entropy fusion: " + why);
  auto bufferOf = [&](Value v) { return bufferOfBodyValue(fusion, v); };
  CrossEntropyOp forward = body->forward;
  Value logits = forward.getLogits();
  auto [rows, v] = rowsOf(logits);
  int width = vectorWidth(logits, v);
  if (!width)
    return error("codegen: " + Emitter::describe(fusion) + ": rows of " + str(v) +
                 " classes are not whole 16-byte vectors (kiln-fuse fuses a cross-entropy whose "
                 "classes are a multiple of 8)");
  Params p;
  ADD(bufferOf(logits), "logits", true) ADD(bufferOf(forward.getTargets()), "targets", true)
  ADD(bufferOf(body->grad.getDloss()), "dloss", true) ADD(bufferOf(forward.getLoss()), "loss", false)
  std::string lse = "(" + elt(forward.getLse()) + " *)nullptr";
  if (Value out = bufferOf(forward.getLse())) {
    ADD(out, "lse", false)
    lse = "lse";
  }
  ADD(bufferOf(body->grad.getDlogits()), "dlogits", false)
  p.addErrorFlag(e);
  std::string call =
      llvm::formatv("  kiln::crossEntropyFusedVec<{0}, {1}, {2}, {3}, {4}, {5}, {6}>(logits, targets, "
                    "dloss, loss, {7}, dlogits, error);\n",
                    elt(logits), elt(forward.getLoss()), elt(forward.getTargets()), rows, v,
                    forward.getNumValidClasses(), width, lse)
          .str();
  e.launch(fusion, "fused_cross_entropy", kernel(fusion, "cross_entropy.cuh", p.text, call, 1024),
           {std::min<int64_t>(rows, int64_t(1) << 30), 1, 1}, {1024, 1, 1}, p.args);
  return true;
}

/// Ids per table of a (batched) embedding: all of them for one table.
int64_t idsPerTable(int64_t ids, RankedTensorType table) {
  int64_t tables = cpu::product(table.getShape().drop_back(2));
  return tables > 0 ? std::max<int64_t>(1, ids / tables) : 1;
}

llvm::Expected<bool> embedding(Emitter &e, EmbeddingOp op) {
  Params p;
  ADD(op.getTable(), "table", true) ADD(op.getIds(), "ids", true) ADD(op.getResult(), "out", false)
  p.addErrorFlag(e);
  auto table = tensorOf(op.getTable());
  int64_t ids = tensorOf(op.getIds()).getNumElements(), c = table.getShape().back();
  std::string body =
      llvm::formatv("  kiln::embeddingForward<{0}, {1}, {2}, {3}, {4}, {5}>(table, ids, out, error);\n",
                    elt(op.getTable()), elt(op.getIds()), ids, c, table.getShape().drop_back().back(),
                    idsPerTable(ids, table))
          .str();
  e.launch(op, "embedding", kernel(op, "embedding.cuh", p.text, body), {e.gridFor(ids * c, 256), 1, 1},
           {256, 1, 1}, p.args);
  return true;
}

llvm::Expected<bool> embeddingGrad(Emitter &e, EmbeddingGradOp op) {
  auto table = e.offsetOf(op.getResult());
  if (!table)
    return table.takeError();
  // The rows add into a zeroed table, or into init (in place when the
  // buffer plan gave the result init's buffer, else into a copy of it).
  if (Value init = op.getInit(); init && init.getType() != op.getType()) {
    // A bf16/f16 init (the head's product, not widened in memory): widened
    // into the table as it is copied.
    Params p;
    ADD(init, "in", true) ADD(op.getResult(), "out", false)
    int64_t n = tensorOf(init).getNumElements();
    std::string body = llvm::formatv("  kiln::widenInto<{0}, {1}, {2}>(in, out);\n",
                                     elt(op.getResult()), elt(init), n)
                           .str();
    // (4 elements a thread from 16-bit to f32: widenInto.)
    e.launch(op, "embedding_backward_init", kernel(op, "embedding.cuh", p.text, body),
             {e.gridFor(n / 4 + 1, 256), 1, 1}, {256, 1, 1}, p.args);
  } else if (init) {
    auto from = e.offsetOf(init);
    if (!from)
      return from.takeError();
    if (*from != *table)
      e.copy(op, *table, *from, numBytes(op.getResult().getType()));
  } else {
    e.memset(op, *table, numBytes(op.getResult().getType()));
  }
  Params p;
  ADD(op.getIds(), "ids", true) ADD(op.getDy(), "dy", true) ADD(op.getResult(), "dtable", false)
  p.addErrorFlag(e);
  auto tableType = tensorOf(op.getResult());
  int64_t ids = tensorOf(op.getIds()).getNumElements(), c = tableType.getShape().back();
  if (deterministic(op)) {
    // Ordered (kernels/embedding.cuh): a block per rb rows of a table, the
    // rows in shared memory, at most 96 KiB of them (two blocks an SM on
    // sm_90), beside the kernel's 16 KiB list of positions.
    int64_t rowsPerTable = tableType.getShape().drop_back().back(),
            per = idsPerTable(ids, tableType), tables = ids / per,
            rowBytes = c * (numBytes(op.getResult().getType()) / tableType.getNumElements());
    int64_t budget = std::min<int64_t>(96 << 10, maxSharedBytes(e.options().arch) - (20 << 10));
    int64_t rb = std::clamp<int64_t>(budget / std::max<int64_t>(1, rowBytes), 1, 64);
    if (rowBytes > budget)
      return error("codegen: " + Emitter::describe(op) +
                   ": train.deterministic: a row of the embedding's gradient (" +
                   llvm::Twine(rowBytes) + " bytes) does not fit in a block's shared memory");
    std::string body =
        llvm::formatv("  kiln::embeddingBackwardOrdered<{0}, {1}, {2}, {3}, {4}, "
                      "{5}, {6}>(ids, dy, dtable, error);\n",
                      elt(op.getDy()), elt(op.getIds()), ids, c, rowsPerTable, per, rb)
            .str();
    e.launch(op, "embedding_backward_ordered", kernel(op, "embedding.cuh", p.text, body, 256),
             {tables * ((rowsPerTable + rb - 1) / rb), 1, 1}, {256, 1, 1}, p.args, rb * rowBytes);
    return true;
  }
  std::string body =
      llvm::formatv("  kiln::embeddingBackward<{0}, {1}, {2}, {3}, {4}, {5}>(ids, dy, dtable, error);\n",
                    elt(op.getDy()), elt(op.getIds()), ids, c, tableType.getShape().drop_back().back(),
                    idsPerTable(ids, tableType))
          .str();
  e.launch(op, "embedding_backward", kernel(op, "embedding.cuh", p.text, body),
           {e.gridFor(ids * c, 256), 1, 1}, {256, 1, 1}, p.args);
  return true;
}

/// kiln.moe_route in two launches: each token's choices (every group's
/// rows at once), then a block per expert and group for the slots.
llvm::Expected<bool> moeRoute(Emitter &e, MoeRouteOp op) {
  const int64_t n = op.numTokens(), experts = op.numExperts(), groups = op.numGroups(),
                k = static_cast<int64_t>(op.getTopK()),
                capacity = static_cast<int64_t>(op.getCapacity());
  if (groups > 65535) // the slot scan's grid.y
    return error("codegen: " + Emitter::describe(op) + ": " + str(groups) +
                 " groups; the CUDA backend routes at most 65535 (moe.groups)");
  {
    Params p;
    ADD(op.getProbs(), "probs", true) ADD(op.getExpert(), "expert", false)
    std::string body = llvm::formatv("  kiln::moeTopK<{0}, {1}, {2}, {3}, {4}>(probs, expert);\n",
                                     elt(op.getProbs()), elt(op.getExpert()), groups * n, experts, k)
                           .str();
    e.launch(op, "moe_topk", kernel(op, "moe.cuh", p.text, body), {e.gridFor(groups * n, 256), 1, 1},
             {256, 1, 1}, p.args);
  }
  Params p;
  ADD(op.getExpert(), "expert", true) ADD(op.getSlot(), "slot", false) ADD(op.getToken(), "token", false)
  std::string body =
      llvm::formatv("  kiln::moeSlots<{0}, {1}, {2}, {3}, {4}, 1024>(expert, slot, token);\n",
                    elt(op.getExpert()), n, experts, k, capacity)
          .str();
  e.launch(op, "moe_slots", kernel(op, "moe.cuh", p.text, body, 1024), {experts, groups, 1},
           {1024, 1, 1}, p.args);
  return true;
}

llvm::Expected<bool> rope(Emitter &e, RopeOp op) {
  Params p;
  ADD(op.getOperand(), "x", true) ADD(op.getResult(), "y", false)
  auto t = tensorOf(op.getOperand());
  int64_t pd = op.positionDim(), inner = 1;
  for (int64_t i = pd + 1; i < t.getRank() - 1; ++i)
    inner *= t.getDimSize(i);
  int64_t d = t.getShape().back(), tlen = t.getDimSize(pd), rows = t.getNumElements() / d;
  // The frequencies as the CPU reference computes them (bit for bit: the
  // same expression on the same doubles), printed exactly.
  const double theta = op.getTheta().convertToDouble();
  std::string freq = "__device__ const double kRopeFreq[] = {";
  for (int64_t i = 0; i < d / 2; ++i)
    freq += llvm::formatv("{0}{1}", i ? ", " : "",
                          hexDouble(std::pow(theta, -2.0 * static_cast<double>(i) / static_cast<double>(d))))
                .str();
  freq += "};\n";
  std::string body = llvm::formatv("  kiln::rope<{0}, {1}, {2}, {3}, {4}, {5}>(x, y, kRopeFreq);\n",
                                   elt(op.getOperand()), rows, tlen, d,
                                   op.getInverse() ? "true" : "false", inner)
                         .str();
  e.launch(op, "rope", kernel(op, "rope.cuh", p.text, body, 256, freq),
           {e.gridFor(rows * d / 2, 256), 1, 1}, {256, 1, 1}, p.args);
  return true;
}

/// Template arguments <T, S, B, H, HKV, TQ, TK, D, DV, CAUSAL, BTHD> of
/// the reference attention kernels.
std::string attentionShape(const AttentionDims &a, Value q, Value lse, bool causal) {
  return llvm::formatv("{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}, {8}, {9}, {10}", elt(q), elt(lse),
                       a.b, a.h, a.hkv, a.tq, a.tk, a.d, a.dv, causal ? "true" : "false",
                       a.sequenceMajor ? "true" : "false")
      .str();
}

int64_t computeBytes(Value v) { return computeType(tensorOf(v).getElementType()) == "double" ? 8 : 4; }

/// The naive attention kernels keep a row of scores (two in the backward)
/// in shared memory, at most maxSharedBytes(arch) a block.
llvm::Error checkAttentionShared(Emitter &e, Operation *op, int64_t bytes) {
  // Less the kernels' static reductions.
  const int64_t kMaxShared = maxSharedBytes(e.options().arch) - 1024;
  if (bytes > kMaxShared)
    return error(llvm::formatv("codegen: {0} needs {1} bytes of shared memory per block for its "
                               "key length; at most {2} fit (the fused flash-attention kernel "
                               "lifts this limit)",
                               Emitter::describe(op), bytes, kMaxShared));
  return llvm::Error::success();
}

/// The tiles of the flash kernels (codegen/kernels/flash_attention.cuh).
struct FlashTiles {
  int warps, mTiles, keyBlock; ///< forward: BM = 16·warps·mTiles query rows
  int backwardWarps;           ///< backward: 16 keys a warp, query blocks of 64
  bool qInRegisters;           ///< forward: Q's fragments held, not re-read
  bool wgmma = false;          ///< on warpgroup MMA (sm_90a): forward warps / 4 warpgroups
                               ///< of 64 rows, backward D / 16 warps
  int backwardBlocks = 0;      ///< backward blocks an SM must fit (launch bounds), 0: any
  int options = 0;             ///< the wgmma kernels' options, a sum of the k* below
  /// The wgmma backward issues dq's product before dV's and dK's (and adds
  /// its sums while those run).
  static constexpr int kDqFirst = 1;
  /// The wgmma forward issues block j's S = Q·Kᵀ with block j−1's O += P·V
  /// and runs block j's softmax while the latter runs (FlashAttention-3's
  /// intra-warpgroup overlap). Off by default: on an H200 it lost 3 % at
  /// GPT-2's shape and 5 % at D = 128 not causal, and gained 1.8 % only at
  /// D = 128 causal (bench/RESULTS.md, seventeenth session).
  static constexpr int kPipelinedForward = 2;
  /// The backward's last key block of each batch · kv head to finish
  /// converts the head's dq from its f32 sums (finishDq) instead of a
  /// launch of its own after the backward. Off by default: on an H100 the
  /// two timed alike (forward+backward 0.5 % slower at GPT-2's shape, 0.9 %
  /// at (4, 16, 8192, 64) causal, 1 % faster at D = 128 causal; GPT-2's
  /// step the same; bench/RESULTS.md, twenty-fourth session).
  static constexpr int kDqInBackward = 4;
  /// The forward as forwardSpecialized: a producer warpgroup loads K and V
  /// and the two consumer warpgroups (W = 8) take turns at the tensor
  /// cores, one's softmax beside the other's products (FlashAttention-3's
  /// inter-warpgroup overlap); it always overlaps P·V as kPipelinedForward
  /// does. Off by default: on an H200 its forward was slower at every shape
  /// (363 against 386 TFLOP/s at (8, 16, 4096, 128) causal, 196 against 281
  /// at GPT-2's; bench/RESULTS.md, twenty-sixth session).
  static constexpr int kSpecializedForward = 8;
  bool has(int option) const { return wgmma && (options & option); }
  int queryBlock() const { return 16 * warps * mTiles; }
  /// Threads of a forward block: the warps, and the producer warpgroup.
  int forwardThreads() const { return 32 * warps + (has(kSpecializedForward) ? 128 : 0); }
};

/// Whether `arch` has Hopper's arch-specific instructions (wgmma): sm_90a.
bool hasWgmma(llvm::StringRef arch) { return arch == "sm_90a"; }

/// The wgmma backward's launch bounds (bench/results/2026-12-04-wgmma): at
/// D = 64 one warpgroup fits three blocks an SM at 168 registers (32 bytes
/// spilled) instead of two at 179 (-7 % at T = 8192); two warpgroups time
/// 1 % faster bounded to one block.
int defaultBackwardBlocks(bool wgmma, int64_t d, int backwardWarps) {
  if (!wgmma || d != 64)
    return 0;
  return backwardWarps == 4 ? 3 : 1;
}

/// The wgmma kernels' options by default (FlashTiles::options) for
/// `backwardWarps`: with two backward warpgroups dq's product first (on
/// an H200 forward+backward 6.11 -> 5.52 ms at (8, 16, 4096, 128) causal,
/// 10.66 -> 9.77 not causal, 7.05 -> 6.60 at (4, 16, 8192, 64) causal);
/// with one it was slower (0.508 -> 0.530 ms at GPT-2's (16, 12, 1024,
/// 64)) (bench/RESULTS.md, 2026-12-05).
int defaultOptions(int backwardWarps) { return backwardWarps == 8 ? FlashTiles::kDqFirst : 0; }

/// CodegenOptions::attentionTiles ("W,MT,BN,BW[,Q[,G[,R[,X]]]]"), if set; G = 1
/// asks for the wgmma kernels (sm_90a: W of 4 or 8, MT = 1, BN of 64 or
/// 128; BW of 4 or 8, a warpgroup per 64 keys, splitting dq's D columns
/// into parts of at least 32), 0 for mma.sync, absent for the
/// architecture's default; R > 0 makes ptxas fit R backward blocks on an SM
/// (fewer registers a thread); X the wgmma kernels' options
/// (FlashTiles::options, a sum of 1, 2, 4 and 8). The kernels static_assert what they need
/// beyond these ranges.
llvm::Expected<std::optional<FlashTiles>> customTiles(const CodegenOptions &options, int64_t d) {
  llvm::StringRef text = options.attentionTiles;
  if (text.empty())
    return std::nullopt;
  llvm::SmallVector<llvm::StringRef> parts;
  text.split(parts, ',');
  int v[8] = {0, 0, 0, 0, -1, -1, -1, -1};
  bool ok = parts.size() >= 4 && parts.size() <= 8;
  for (size_t i = 0; ok && i < parts.size(); ++i)
    ok = !parts[i].getAsInteger(10, v[i]) && v[i] >= (i >= 4 ? 0 : 1) && v[i] <= 256;
  if (!ok || v[2] % 16 != 0 || v[4] > 1 || v[5] > 1 || v[6] > 8 || v[7] > 15)
    return error("codegen: attention tiles '" + text +
                 "' are not W,MT,BN,BW[,Q[,G[,R[,X]]]] (warps, row tiles, a key block of 16s, "
                 "backward warps, Q held in registers 0/1, wgmma kernels 0/1, backward blocks an "
                 "SM fits 0-8, wgmma options 0-15)");
  if (v[5] == 1 && !hasWgmma(options.arch))
    return error("codegen: attention tiles '" + text +
                 "' ask for the wgmma kernels, which need "
                 "--arch sm_90a (this plan is for " +
                 options.arch + ")");
  // By default Q stays in registers unless that passes 32 of them a thread.
  bool q = v[4] >= 0 ? v[4] == 1 : v[1] * (d / 16) * 4 <= 32;
  bool wgmma = v[5] >= 0 ? v[5] == 1 : hasWgmma(options.arch);
  if (wgmma && ((v[0] != 4 && v[0] != 8) || v[1] != 1 || (v[2] != 64 && v[2] != 128) ||
                (v[3] != 4 && v[3] != 8) || d / (v[3] / 4) < 32))
    return error("codegen: attention tiles '" + text +
                 "': the wgmma kernels take W = 4 or 8 warps (a warpgroup per 64 rows), MT = 1, "
                 "key blocks BN of 64 or 128 and BW = 4 or 8 backward warps (add ,0 for the "
                 "mma.sync kernels)");
  if (v[7] > 0 && !wgmma)
    return error("codegen: attention tiles '" + text + "': X (options) is for the wgmma kernels");
  if (v[7] > 0 && (v[7] & FlashTiles::kSpecializedForward) && v[0] != 8)
    return error("codegen: attention tiles '" + text +
                 "': the warp-specialized forward (option 8) takes W = 8 (two consumer "
                 "warpgroups)");
  return FlashTiles{v[0],
                    v[1],
                    v[2],
                    v[3],
                    q,
                    wgmma,
                    v[6] >= 0 ? v[6] : defaultBackwardBlocks(wgmma, d, v[3]),
                    v[7] >= 0 ? v[7] : defaultOptions(v[3])};
}

/// Bytes of dynamic shared memory the flash forward launches with at head
/// dim `d`: Q [BM, D], K and V [2 stages][BN, D] (16-bit), and the wgmma
/// kernel's 1024 bytes of alignment slack.
int64_t flashForwardShared(const FlashTiles &t, int64_t d) {
  return (t.queryBlock() + 4 * t.keyBlock) * d * 2 + (t.wgmma ? 1024 : 0);
}

/// Bytes of dynamic shared memory the flash backward launches with: K, V
/// [BN, D]; Q, dO [2 stages][64, D]; dSᵀ [BN, 64]; lse and delta [2][64]
/// f32; on wgmma 1024 bytes of slack and, when a warpgroup's dq columns
/// are 32, Kᵀ [D, BN].
int64_t flashBackwardShared(const FlashTiles &t, int64_t d) {
  int64_t bn = 16 * t.backwardWarps, bm = 64;
  return (2 * bn + 4 * bm) * d * 2 + bn * bm * 2 + 4 * bm * 4 +
         (t.wgmma ? 1024 + (d / (t.backwardWarps / 4) == 32 ? bn * d * 2 : 0) : 0);
}

llvm::Expected<std::optional<FlashTiles>> chooseFlashTiles(Emitter &e, Value q,
                                                           const AttentionDims &a, double scale,
                                                           std::string &why, bool &custom);

/// The flash kernels' tiles for the forward (or, with `backward`, the
/// backward) of an attention of shape `a` whose q (or packed qkv) is `q`,
/// or nullopt with `why` the reference kernels run instead: the flash
/// kernels take bf16/f16 operands with D = Dv ∈ {64, 128}, and tiles that
/// fit the arch's shared memory (at D = 128 the backward's do not on 99
/// KiB archs — sm_86, sm_89, sm_120 — where the forward's do). Tiles asked
/// for with --attention-tiles that do not fit are an error. Either part's
/// kernels compute the op's results (the log-sum-exp included), so a flash
/// forward and a reference backward go together.
llvm::Expected<std::optional<FlashTiles>> flashTiles(Emitter &e, Value q, const AttentionDims &a,
                                                     double scale, std::string &why,
                                                     bool backward = false) {
  bool custom = false;
  auto tiles = chooseFlashTiles(e, q, a, scale, why, custom);
  if (!tiles || !*tiles)
    return tiles;
  const FlashTiles &t = **tiles;
  // Less 1 KiB for the kernels' static shared memory (a few words).
  int64_t limit = maxSharedBytes(e.options().arch);
  int64_t bytes = backward ? flashBackwardShared(t, a.d) : flashForwardShared(t, a.d);
  if (bytes <= limit - 1024)
    return tiles;
  std::string need = llvm::formatv("the flash {0}'s tiles need {1} KiB of shared memory a block; "
                                   "{2} gives at most {3} KiB",
                                   backward ? "backward" : "forward", (bytes + 1023) / 1024,
                                   e.options().arch, limit / 1024)
                         .str();
  if (custom)
    return error("codegen: attention tiles '" + e.options().attentionTiles + "': " + need);
  why = need;
  return std::nullopt;
}

llvm::Expected<std::optional<FlashTiles>> chooseFlashTiles(Emitter &e, Value q,
                                                           const AttentionDims &a, double scale,
                                                           std::string &why, bool &isCustom) {
  Type element = tensorOf(q).getElementType();
  int64_t d = a.d;
  if (!element.isBF16() && !element.isF16()) {
    why = "the flash kernels take bf16 or f16 (tensor cores)";
    return std::nullopt;
  }
  if (d != a.dv || (d != 64 && d != 128)) {
    why = llvm::formatv("the flash kernels take head dims D = Dv of 64 or 128, this attention "
                        "has D = {0}, Dv = {1}",
                        d, a.dv);
    return std::nullopt;
  }
  if (!(scale > 0)) {
    why = "the flash kernels take a positive scale";
    return std::nullopt;
  }
  auto custom = customTiles(e.options(), d);
  if (!custom)
    return custom.takeError();
  if (*custom) {
    isCustom = true;
    return *custom;
  }
  // The fastest of the variants bench/gpu.sh's attention stage timed on an
  // H200 (bench/results/2026-11-30-flash-v2): D = 64 forward 4 warps × 2
  // row tiles with key blocks of 128 (+7 to 10 % over blocks of 64),
  // backward 4 warps; D = 128 forward 4 × 2 with Q re-read from shared
  // memory (+21 to 25 % over 8 warps × 1 with Q in registers), backward 8.
  // On sm_90a both run on wgmma (bench/results/2026-12-04-wgmma): the
  // forward one warpgroup of 64 query rows at D = 64 (+6 to 15 % over two)
  // and two at D = 128, key blocks of 128; the backward a warpgroup per 64
  // keys.
  // At D = 64 the backward's two warpgroups (128 keys a block) halve the
  // dq atomics per key, which pays when a key block streams many query
  // blocks (T = 8192: 5.6 -> 5.1 ms) and costs 3 % when it streams few
  // (GPT-2's T = 1024); the threshold sits between the two measured.
  if (hasWgmma(e.options().arch)) {
    int64_t queryBlocks = (a.tq + 63) / 64 * (a.h / a.hkv);
    int backwardWarps = d == 64 && queryBlocks < 64 ? 4 : 8;
    return FlashTiles{d == 64 ? 4 : 8,
                      1,
                      128,
                      backwardWarps,
                      false,
                      true,
                      defaultBackwardBlocks(true, d, backwardWarps),
                      defaultOptions(backwardWarps)};
  }
  return d == 64 ? FlashTiles{4, 2, 128, 4, true} : FlashTiles{4, 2, 64, 8, false};
}

std::string tilesText(const FlashTiles &t) {
  if (t.wgmma)
    return llvm::formatv(
               "on wgmma: forward {0} warpgroup(s) of 64 query rows (BM = {1}), key "
               "blocks of {2}; backward {3} warpgroup(s) of 64 keys, query blocks of "
               "64{4}{5}{6}{7}{8}",
               t.warps / 4, t.queryBlock(), t.keyBlock, t.backwardWarps / 4,
               t.backwardBlocks > 0 ? llvm::formatv(", {0} blocks an SM", t.backwardBlocks).str()
                                    : std::string(),
               t.has(FlashTiles::kDqFirst) ? ", dq's product first" : "",
               t.has(FlashTiles::kPipelinedForward) ? ", forward softmax overlapped" : "",
               t.has(FlashTiles::kDqInBackward) ? ", dq converted by its last blocks" : "",
               t.has(FlashTiles::kSpecializedForward)
                   ? ", forward warp-specialized (a producer warpgroup)"
                   : "")
        .str();
  return llvm::formatv("forward {0} warps x {1} row tiles (BM = {2}), key blocks of {3}, Q {4}; "
                       "backward {5} warps on {7} (key blocks of {6}, query blocks of 64)",
                       t.warps, t.mTiles, t.queryBlock(), t.keyBlock,
                       t.qInRegisters ? "in registers" : "re-read", t.backwardWarps,
                       16 * t.backwardWarps, t.wgmma ? "wgmma" : "mma.sync")
      .str();
}

/// "bf16, B=16 H=12/12 T=1024/1024 D=64, causal, q|k|v packed …": what an
/// attention is.
std::string attentionText(Value q, const AttentionDims &a, bool causal, bool segments) {
  std::string element;
  llvm::raw_string_ostream(element) << tensorOf(q).getElementType();
  return llvm::formatv("{0}, B={1} H={2}/{3} T={4}/{5} D={6}{7}", element, a.b, a.h, a.hkv,
                       a.tq, a.tk, a.d, causal ? ", causal" : "")
             .str() +
         (segments ? ", within segments" : "") +
         (a.packed          ? ", q|k|v packed [B, T, H, 3, D]"
          : a.sequenceMajor ? ", sequence-major [B, T, H, D]"
                            : "");
}

/// Template arguments <T, B, H, HKV, TQ, TK, D, CAUSAL> of the flash kernels.
std::string flashShape(Value q, const AttentionDims &a, bool causal) {
  return llvm::formatv("{0}, {1}, {2}, {3}, {4}, {5}, {6}, {7}", elt(q), a.b, a.h, a.hkv, a.tq,
                       a.tk, a.d, causal ? "true" : "false")
      .str();
}

const char *boolText(bool b) { return b ? "true" : "false"; }

/// The kernels' last argument: the segment ids (added to `p`), or a null
/// pointer. The kernels read them as int.
llvm::Expected<std::string> segmentsArg(Emitter &e, Operation *op, Value segments, Params &p) {
  if (!segments)
    return std::string("nullptr");
  if (!tensorOf(segments).getElementType().isInteger(32))
    return error("codegen: " + Emitter::describe(op) + ": the GPU kernels take i32 segment ids");
  ADD(segments, "segments", true)
  return std::string("segments");
}

/// kiln.attention(_grad) and kiln.attention_qkv(_grad) alike: the values
/// the kernels read and write (q, k and v, or the packed qkv; dq, dk and
/// dv, or dqkv) and the shape.
struct AttentionView {
  Operation *op;
  AttentionDims a;
  Value q, k, v, qkv, out, lse, dout, segments, dq, dk, dv, dqkv;
  float scale;
  bool causal;

  static AttentionView of(AttentionOp o) {
    return {o, attentionDims(o), o.getQ(), o.getK(), o.getV(), {}, o.getOut(), o.getLse(), {},
            o.getSegments(), {}, {}, {}, {}, o.getScale().convertToFloat(), o.getCausal()};
  }
  static AttentionView of(AttentionGradOp o) {
    return {o, attentionDims(o), o.getQ(), o.getK(), o.getV(), {}, o.getOut(), o.getLse(),
            o.getDout(), o.getSegments(), o.getDq(), o.getDk(), o.getDv(), {},
            o.getScale().convertToFloat(), o.getCausal()};
  }
  static AttentionView of(AttentionQkvOp o) {
    return {o, attentionDims(o.getQkv()), {}, {}, {}, o.getQkv(), o.getOut(), o.getLse(), {},
            o.getSegments(), {}, {}, {}, {}, o.getScale().convertToFloat(), o.getCausal()};
  }
  static AttentionView of(AttentionQkvGradOp o) {
    return {o, attentionDims(o.getQkv()), {}, {}, {}, o.getQkv(), o.getOut(), o.getLse(),
            o.getDout(), o.getSegments(), {}, {}, {}, o.getDqkv(), o.getScale().convertToFloat(),
            o.getCausal()};
  }
  bool packed() const { return static_cast<bool>(qkv); }
  /// Any of q, k, v (for its element type).
  Value input() const { return packed() ? qkv : q; }
  /// The kernels' layout template arguments: BTHD, PACK.
  std::string layoutArgs() const {
    return std::string(a.sequenceMajor ? "true" : "false") + ", " + (packed() ? "3" : "1");
  }
};

/// q, k and v as kernel parameters: three pointers, or one packed qkv and
/// the three part pointers defined in the body (`prologue`).
llvm::Error addInputs(Emitter &e, const AttentionView &w, Params &p, std::string &prologue) {
  // (Not the ADD macro: its `return std::move` is for Expected results.)
  if (!w.packed()) {
    for (auto [v, name] : {std::pair<Value, const char *>{w.q, "q"}, {w.k, "k"}, {w.v, "v"}})
      if (llvm::Error err = p.add(e, v, name, true))
        return err;
    return llvm::Error::success();
  }
  if (llvm::Error err = p.add(e, w.qkv, "qkv", true))
    return err;
  prologue += llvm::formatv("  const {0} *q = qkv, *k = qkv + {1}, *v = qkv + 2 * {1};\n",
                            elt(w.qkv), w.a.d)
                  .str();
  return llvm::Error::success();
}

llvm::Expected<bool> flashForward(Emitter &e, const AttentionView &w, const FlashTiles &tiles) {
  Params p;
  std::string prologue;
  if (llvm::Error err = addInputs(e, w, p, prologue))
    return std::move(err);
  ADD(w.out, "out", false) ADD(w.lse, "lse", false)
  auto seg = segmentsArg(e, w.op, w.segments, p);
  if (!seg)
    return seg.takeError();
  const AttentionDims &a = w.a;
  int64_t d = a.d, bm = tiles.queryBlock(), threads = tiles.forwardThreads();
  const bool specialized = tiles.has(FlashTiles::kSpecializedForward);
  std::string body =
      prologue +
      (specialized ? llvm::formatv("  kiln::flash::forwardSpecialized<{0}, {1}, {2}>(q, k, v, "
                                   "out, lse, {3:e9}f, {4});\n",
                                   flashShape(w.input(), a, w.causal), tiles.keyBlock,
                                   w.layoutArgs(), w.scale, *seg)
                         .str()
       : tiles.wgmma
           ? llvm::formatv("  kiln::flash::forwardWgmma<{0}, {1}, {2}, {3}, {6}>(q, k, v, out, "
                           "lse, {4:e9}f, {5});\n",
                           flashShape(w.input(), a, w.causal), tiles.warps / 4, tiles.keyBlock,
                           w.layoutArgs(), w.scale, *seg,
                           boolText(tiles.has(FlashTiles::kPipelinedForward)))
                 .str()
           : llvm::formatv("  kiln::flash::forward<{0}, {1}, {2}, {3}, {4}, {5}>(q, k, v, "
                           "out, lse, {6:e9}f, {7});\n",
                           flashShape(w.input(), a, w.causal), tiles.warps, tiles.mTiles,
                           tiles.keyBlock, boolText(tiles.qInRegisters), w.layoutArgs(), w.scale,
                           *seg)
                 .str());
  // The wgmma kernel aligns its tiles to 1024 bytes itself.
  // The specialized kernel moves registers between its warpgroups
  // (setmaxnreg), from the pool ptxas sizes for one block an SM.
  e.launch(w.op, "flash_attention",
           kernel(w.op, "flash_attention.cuh", p.text, body, threads, "", specialized ? 1 : 0),
           {(a.tq + bm - 1) / bm, a.b * a.h, 1}, {threads, 1, 1}, p.args,
           flashForwardShared(tiles, d));
  return true;
}

/// An attention-gradient fusion's column sum of dqkv (the qkv projection's
/// bias gradient): the buffer it goes to, and the type it is rounded to
/// first (the sum's, when the fusion yields it widened to f32).
struct BiasSum {
  Value out;
  Type roundTo;
};

/// The column sums of the packed dqkv ([rows, 3·H·D] in the low type) into
/// `bias`, after a backward that does not sum them itself (the reference
/// kernels): partial sums over chunks of rows, then their sum (no atomics).
llvm::Error sumDqkvColumns(Emitter &e, const AttentionView &w, const BiasSum &bias) {
  auto type = tensorOf(w.dqkv);
  int64_t cols = type.getDimSize(2) * type.getDimSize(3) * type.getDimSize(4);
  int64_t rows = type.getNumElements() / cols;
  int64_t chunk = std::max<int64_t>(32, (rows + 1023) / 1024), chunks = (rows + chunk - 1) / chunk;
  std::string C = computeType(type.getElementType());
  const int64_t partial = e.scratch(chunks * cols * (C == "double" ? 8 : 4));
  Params p;
  if (llvm::Error err = p.add(e, w.dqkv, "in", true))
    return err;
  p.text += ", " + C + " *partial";
  p.args.push_back(Emitter::ptr(partial));
  std::string call =
      llvm::formatv("  auto element = [&](kiln::i64 i) {{ return ({0})kiln::load(in, i); };\n"
                    "  kiln::reduceColumnsPartial<0, {0}, {1}, {2}, {3}>(element, partial);\n",
                    C, rows, cols, chunk)
          .str();
  e.launch(w.op, "attention_bias_partial", kernel(w.op, "reduce.cuh", p.text, call),
           {(cols + 255) / 256, chunks, 1}, {256, 1, 1}, p.args);
  return sumNormPartials(e, w.op, partial, C, cols, chunks, {{bias.out, bias.roundTo}},
                         "attention_bias_sum");
}

/// dq = scale · accumulator as a launch after the backward (unless the
/// option kDqInBackward), and with a bias sum (`biasPartial` ≥ 0) dq's part
/// of it.
llvm::Error convertDq(Emitter &e, const AttentionView &w, const FlashTiles &tiles,
                      int64_t accumulator, int64_t biasPartial) {
  Operation *op = w.op;
  const AttentionDims &a = w.a;
  const int64_t rows = a.b * a.h * a.tq, d = a.d, bn = 16 * tiles.backwardWarps;
  Params p;
  p.text = "const float *accumulator";
  p.args.push_back(Emitter::ptr(accumulator));
  if (llvm::Error err = p.add(e, w.packed() ? w.dqkv : w.dq, "dq", false))
    return err;
  if (biasPartial >= 0) {
    p.text += ", float *biasPartial";
    p.args.push_back(Emitter::ptr(biasPartial));
    // Four query blocks a block of 256 threads (fewer, longer blocks: at
    // GPT-2's shape one query block a block took 0.47 ms a step against
    // 0.38 for the conversion alone).
    const int64_t queryBlocks = (a.tq + bn - 1) / bn, groups = std::min<int64_t>(4, queryBlocks);
    std::string body =
        llvm::formatv("  kiln::flash::backwardFinishBias<{0}, {1}, {2}, {3}, {4}, {5}, {6}>("
                      "accumulator, dq, {7:e9}f, biasPartial);\n",
                      elt(w.input()), a.h, a.tq, d, w.layoutArgs(), bn, groups, w.scale)
            .str();
    e.launch(op, "flash_attention_dq", kernel(op, "flash_attention.cuh", p.text, body),
             {(queryBlocks + groups - 1) / groups, a.b * a.h, 1}, {256, 1, 1}, p.args);
    return llvm::Error::success();
  }
  std::string body = llvm::formatv("  kiln::flash::backwardFinish<{0}, {1}, {2}, {3}, {4}, {5}>("
                                   "accumulator, dq, {6:e9}f);\n",
                                   elt(w.input()), rows * d, d, a.h, a.tq, w.layoutArgs(), w.scale)
                         .str();
  e.launch(op, "flash_attention_dq", kernel(op, "flash_attention.cuh", p.text, body),
           {e.gridFor(rows * d / (d % 8 == 0 ? 8 : 2), 256), 1, 1}, {256, 1, 1}, p.args);
  return llvm::Error::success();
}

llvm::Expected<bool> flashBackward(Emitter &e, const AttentionView &w, const FlashTiles &tiles,
                                   const BiasSum *bias = nullptr) {
  Operation *op = w.op;
  auto scratch = op->getAttrOfType<IntegerAttr>(KilnDialect::kScratchOffsetAttrName);
  if (!scratch)
    return error("codegen: " + Emitter::describe(op) + " has no scratch (run kiln-plan-buffers)");
  const AttentionDims &a = w.a;
  int64_t rows = a.b * a.h * a.tq, d = a.d;
  // The scratch (AttentionGradOp::getScratchBytes): the dq accumulator,
  // delta, and the counters: the ordered backward's ticket and turns
  // (train.deterministic) and the key blocks done per batch · kv head.
  int64_t accumulator = scratch.getInt(), delta = accumulator + rows * d * 4,
          order = delta + rows * 4;
  const bool ordered = deterministic(op),
             inBackward = tiles.has(FlashTiles::kDqInBackward);
  // The counters are zeroed only where a kernel reads them.
  const int64_t counters = ordered || inBackward ? a.orderWords() : 0;
  // With a bias sum: the kernels' partial column sums, a row of [H, 3, D]
  // per key block (of bn keys) of each batch (dq's part per query block of
  // bn rows), then summed over the rows.
  const int64_t bn = 16 * tiles.backwardWarps, keyBlocks = (a.tk + bn - 1) / bn;
  const int64_t biasCols = 3 * a.h * d, biasRows = a.b * keyBlocks;
  const int64_t biasPartial = bias ? e.scratch(biasRows * biasCols * 4) : 0;
  // 1. rowsum(dout ⊙ out), and the f32 dq accumulator (and the counters)
  // zeroed.
  {
    Params p;
    ADD(w.out, "out", true)
    ADD(w.dout, "dout", true) p.text += ", float *delta, float *accumulator, int *order";
    p.args.push_back(Emitter::ptr(delta));
    p.args.push_back(Emitter::ptr(accumulator));
    p.args.push_back(Emitter::ptr(order));
    std::string body =
        llvm::formatv("  kiln::flash::backwardPrepare<{0}, {1}, {2}, {3}, {4}, {5}, {6}>("
                      "out, dout, delta, accumulator, order);\n",
                      elt(w.input()), rows, d, a.h, a.tq, boolText(a.sequenceMajor), counters)
            .str();
    e.launch(op, "flash_attention_prepare", kernel(op, "flash_attention.cuh", p.text, body),
             {e.gridFor(rows * 32, 256), 1, 1}, {256, 1, 1}, p.args);
  }
  // 2. dk, dv and the dq sums, a block per key block and kv head (with
  // kDqInBackward the last block of a head to finish writes the head's dq
  // from the sums); 3. otherwise dq = scale · accumulator, a launch.
  {
    Params p;
    std::string prologue;
    if (llvm::Error err = addInputs(e, w, p, prologue))
      return std::move(err);
    ADD(w.lse, "lse", true)
    ADD(w.dout, "dout", true) p.text += ", const float *delta, float *accumulator, int *order";
    p.args.push_back(Emitter::ptr(delta));
    p.args.push_back(Emitter::ptr(accumulator));
    p.args.push_back(Emitter::ptr(order));
    if (w.packed()) {
      ADD(w.dqkv, "dqkv", false)
      prologue += llvm::formatv("  {0} *dq = dqkv, *dk = dqkv + {1}, *dv = dqkv + 2 * {1};\n",
                                elt(w.dqkv), d)
                      .str();
    } else {
      ADD(w.dq, "dq", false) ADD(w.dk, "dk", false) ADD(w.dv, "dv", false)
    }
    auto seg = segmentsArg(e, op, w.segments, p);
    if (!seg)
      return seg.takeError();
    if (bias) {
      p.text += ", float *biasPartial";
      p.args.push_back(Emitter::ptr(biasPartial));
    }
    int64_t bm = 64, threads = 32 * tiles.backwardWarps;
    // With kDqInBackward, the stages dq's rows stream through at the end
    // (finishDq): chunks of bn rows of f32 in the tiles' shared memory,
    // after its alignment slack and before the warps' column sums (bn ≤ 128
    // leaves two at least); else 0, and a launch converts dq.
    const int64_t shared = flashBackwardShared(tiles, d),
                  usable = shared - (tiles.wgmma ? 1024 : 0) - (threads / 32) * d * 4;
    const int64_t stages = inBackward ? std::min<int64_t>(4, usable / (bn * d * 4)) : 0;
    if (inBackward && stages < 2)
      return error(llvm::formatv("codegen: the flash backward's {0} bytes of shared memory hold "
                                 "fewer than two chunks of {1} rows of dq",
                                 shared, bn)
                       .str());
    // Template arguments after the layout's: (DQ_FIRST,) ORDERED, BIAS,
    // STAGES; then the bias sums' pointer after the segments.
    std::string tail = llvm::formatv("{0}, {1}, {2}", boolText(ordered), boolText(bias), stages),
                biasPointer = bias ? ", biasPartial" : "";
    // The wgmma kernel takes its warpgroups (64 keys each) and aligns its
    // tiles to 1024 bytes itself.
    std::string body =
        prologue +
        (tiles.wgmma
             ? llvm::formatv("  kiln::flash::backwardWgmma<{0}, {1}, {2}, {5}, {6}>(q, k, v, lse, "
                             "dout, delta, accumulator, dq, dk, dv, {3:e9}f, order, {4}{7});\n",
                             flashShape(w.input(), a, w.causal), tiles.backwardWarps / 4,
                             w.layoutArgs(), w.scale, *seg,
                             boolText(tiles.has(FlashTiles::kDqFirst)), tail, biasPointer)
                   .str()
             : llvm::formatv("  kiln::flash::backward<{0}, {1}, {2}, {3}, {6}>(q, k, v, lse, dout, "
                             "delta, accumulator, dq, dk, dv, {4:e9}f, order, {5}{7});\n",
                             flashShape(w.input(), a, w.causal), tiles.backwardWarps, bm,
                             w.layoutArgs(), w.scale, *seg, tail, biasPointer)
                   .str());
    e.launch(op, "flash_attention_backward",
             kernel(op, "flash_attention.cuh", p.text, body, threads, "", tiles.backwardBlocks),
             {(a.tk + bn - 1) / bn, a.b * a.hkv, 1}, {threads, 1, 1}, p.args, shared);
  }
  if (!tiles.has(FlashTiles::kDqInBackward))
    if (llvm::Error err = convertDq(e, w, tiles, accumulator, bias ? biasPartial : -1))
      return std::move(err);
  if (bias)
    if (llvm::Error err = sumNormPartials(e, op, biasPartial, "float", biasCols, biasRows,
                                          {{bias->out, bias->roundTo}}, "attention_bias_sum"))
      return std::move(err);
  return true;
}

llvm::Expected<bool> attention(Emitter &e, const AttentionView &w) {
  const AttentionDims &a = w.a;
  std::string why, what = attentionText(w.input(), a, w.causal, bool(w.segments));
  auto tiles = flashTiles(e, w.input(), a, w.scale, why);
  if (!tiles)
    return tiles.takeError();
  if (*tiles) {
    std::string backwardWhy;
    auto backward = flashTiles(e, w.input(), a, w.scale, backwardWhy, /*backward=*/true);
    bool backwardFits = backward && *backward;
    if (!backward)
      llvm::consumeError(backward.takeError()); // the backward's own emission reports it
    e.note("attention (" + what + "): flash kernels, " + tilesText(**tiles) +
           (backwardFits ? "" : "; but the backward runs the reference kernels (below)"));
    return flashForward(e, w, **tiles);
  }
  e.note("attention (" + what + "): reference kernels (a block per query row, CUDA cores): " +
         why);
  Params p;
  std::string prologue;
  if (llvm::Error err = addInputs(e, w, p, prologue))
    return std::move(err);
  ADD(w.out, "out", false) ADD(w.lse, "lse", false)
  auto seg = segmentsArg(e, w.op, w.segments, p);
  if (!seg)
    return seg.takeError();
  int64_t rows = a.b * a.h * a.tq, tk = a.tk;
  if (llvm::Error err = checkAttentionShared(e, w.op, tk * computeBytes(w.input())))
    return std::move(err);
  std::string body = prologue + "  kiln::attentionForward<" +
                     attentionShape(a, w.input(), w.lse, w.causal) + ", " +
                     (w.packed() ? "3" : "1") +
                     llvm::formatv(">(q, k, v, out, lse, {0:e9}f, {1});\n", w.scale, *seg).str();
  e.launch(w.op, "attention", kernel(w.op, "attention.cuh", p.text, body, 128),
           {std::min<int64_t>(rows, e.options().smCount * 16), 1, 1}, {128, 1, 1}, p.args,
           tk * computeBytes(w.input()));
  return true;
}

/// `bias`: an attention-gradient fusion's column sum of dqkv, else null.
llvm::Expected<bool> attentionGrad(Emitter &e, const AttentionView &w,
                                   const BiasSum *bias = nullptr) {
  std::string why; // noted with the forward, unless only the backward's tiles do not fit
  const AttentionDims &a = w.a;
  auto tiles = flashTiles(e, w.input(), a, w.scale, why, /*backward=*/true);
  if (!tiles)
    return tiles.takeError();
  // The flash kernels sum the bias gradient's columns themselves (its
  // fusion holds attention_qkv_grad: one packed qkv, so one head count and
  // length, and head dims of whole 8-element groups); the reference
  // kernels leave them to a reduction after them (below).
  if (*tiles)
    return flashBackward(e, w, **tiles, bias);
  std::string forwardWhy;
  auto forward = flashTiles(e, w.input(), a, w.scale, forwardWhy);
  if (!forward)
    return forward.takeError();
  if (*forward)
    e.note("attention backward (" + attentionText(w.input(), a, w.causal, bool(w.segments)) +
           "): reference kernels (a block per query row, CUDA cores): " + why);
  if (deterministic(w.op))
    return error("codegen: " + Emitter::describe(w.op) +
                 ": train.deterministic: this attention's backward runs the reference kernels (" +
                 (why.empty() ? forwardWhy : why) +
                 "), which add dk and dv with atomics in no fixed order; the ordered sums are the "
                 "flash kernels' (bf16 or f16, head dims 64 and 128); or leave attention "
                 "unfused (compile.fuse_attention = \"never\")");
  // dk and dv are sums (atomics): zeroed first (with dq, when packed).
  for (Value zeroed : w.packed() ? SmallVector<Value>{w.dqkv} : SmallVector<Value>{w.dk, w.dv}) {
    auto offset = e.offsetOf(zeroed);
    if (!offset)
      return offset.takeError();
    e.memset(w.op, *offset, numBytes(zeroed.getType()));
  }
  Params p;
  std::string prologue;
  if (llvm::Error err = addInputs(e, w, p, prologue))
    return std::move(err);
  ADD(w.out, "out", true) ADD(w.lse, "lse", true) ADD(w.dout, "dout", true)
  if (w.packed()) {
    ADD(w.dqkv, "dqkv", false)
    prologue += llvm::formatv("  {0} *dq = dqkv, *dk = dqkv + {1}, *dv = dqkv + 2 * {1};\n",
                              elt(w.dqkv), a.d)
                    .str();
  } else {
    ADD(w.dq, "dq", false) ADD(w.dk, "dk", false) ADD(w.dv, "dv", false)
  }
  auto seg = segmentsArg(e, w.op, w.segments, p);
  if (!seg)
    return seg.takeError();
  int64_t rows = a.b * a.h * a.tq, tk = a.tk;
  if (llvm::Error err = checkAttentionShared(e, w.op, 2 * tk * computeBytes(w.input())))
    return std::move(err);
  std::string body = prologue + "  kiln::attentionBackward<" +
                     attentionShape(a, w.input(), w.lse, w.causal) + ", " +
                     (w.packed() ? "3" : "1") +
                     llvm::formatv(">(q, k, v, out, lse, dout, dq, dk, dv, {0:e9}f, {1});\n",
                                   w.scale, *seg)
                         .str();
  e.launch(w.op, "attention_backward", kernel(w.op, "attention.cuh", p.text, body, 128),
           {std::min<int64_t>(rows, e.options().smCount * 16), 1, 1}, {128, 1, 1}, p.args,
           2 * tk * computeBytes(w.input()));
  if (bias)
    if (llvm::Error err = sumDqkvColumns(e, w, *bias))
      return std::move(err);
  return true;
}

/// An attention-gradient fusion (matchAttentionGradFusion): the gradient's
/// kernels on the fusion's buffers, which also sum dqkv's columns (the qkv
/// projection's bias gradient) into its second result.
llvm::Expected<bool> attentionGradFusion(Emitter &e, FusionOp fusion) {
  std::string why;
  auto body = matchAttentionGradFusion(fusion, &why);
  if (failed(body))
    return error("codegen: " + Emitter::describe(fusion) +
                 " is not an attention-gradient fusion: " + why);
  AttentionView w = AttentionView::of(body->grad);
  w.op = fusion; // the launches', the scratch's and the notes' op
  for (Value *v : {&w.qkv, &w.out, &w.lse, &w.dout, &w.segments, &w.dqkv})
    if (*v)
      *v = bufferOfBodyValue(fusion, *v);
  BiasSum bias{bufferOfBodyValue(fusion, body->sumOut),
               tensorOf(body->sum.getResult()).getElementType()};
  return attentionGrad(e, w, &bias);
}

/// Chunks of `size`-element tensors for multi-tensor kernels: the source of
/// a prefix table and the block count.
constexpr int64_t kChunk = 32768;

std::string chunkTable(llvm::ArrayRef<int64_t> sizes, int64_t &blocks) {
  std::string table = "__device__ const kiln::i64 kChunkStart[] = {";
  blocks = 0;
  for (auto [i, n] : llvm::enumerate(sizes)) {
    table += (i ? ", " : "") + std::to_string(blocks);
    blocks += std::max<int64_t>(1, (n + kChunk - 1) / kChunk);
  }
  table += ", " + std::to_string(blocks) + "};\n";
  return table;
}

/// Device code finding the tensor `t` and element range of block blockIdx.x.
std::string findChunk(size_t tensors) {
  return llvm::formatv("  int lo = 0, hi = {0};\n"
                       "  while (hi - lo > 1) {{ int mid = (lo + hi) / 2; if (kChunkStart[mid] <= blockIdx.x) lo = mid; else hi = mid; }\n"
                       "  const int t = lo;\n"
                       "  const kiln::i64 begin = (blockIdx.x - kChunkStart[t]) * {1};\n",
                       tensors, kChunk)
      .str();
}

/// A norm fusion (matchNormFusion) as one warp-per-row kernel:
/// kiln::normForwardRows / normBackwardRows with a generated functor that
/// runs the body's elementwise ops on one 16-byte vector of a row — before
/// the norm, computing its x and storing the side outputs; after its
/// gradient, reading dx and storing the outputs. Float tensors move as
/// whole vectors; integer ones (a mask) element by element.
llvm::Expected<bool> normFusion(Emitter &e, FusionOp fusion) {
  std::string why;
  auto n = matchNormFusion(fusion, &why);
  if (failed(n))
    return error("codegen: " + Emitter::describe(fusion) + " is not a norm fusion: " + why);
  Operation *norm = n->norm;
  auto bufferOf = [&](Value v) { return bufferOfBodyValue(fusion, v); };
  Value rowValue = n->backward ? norm->getResult(0) : norm->getOperand(0);
  auto [rows, c] = rowsOf(rowValue);

  // The functor's inputs (body arguments the elementwise ops read, plus
  // the norm's x when it is one; backward: dx last) and outputs (yielded
  // elementwise values; backward: dx when yielded).
  SmallVector<Value> inputs, outputs;
  for (Operation *op : n->elementwise)
    for (Value v : op->getOperands())
      if (isa<BlockArgument>(v) && !llvm::is_contained(inputs, v))
        inputs.push_back(v);
  if (!n->backward && isa<BlockArgument>(rowValue) && !llvm::is_contained(inputs, rowValue))
    inputs.push_back(rowValue);
  size_t argInputs = inputs.size();
  if (n->backward)
    inputs.push_back(rowValue);
  for (Operation *op : n->elementwise)
    for (Value v : op->getResults())
      if (bufferOf(v))
        outputs.push_back(v);
  if (n->backward && bufferOf(rowValue))
    outputs.push_back(rowValue);

  // V elements a vector: 16 bytes of the narrowest float type moved.
  int64_t narrowest = 16;
  auto consider = [&](Value v) {
    Type t = tensorOf(v).getElementType();
    if (isa<FloatType>(t))
      narrowest = std::min<int64_t>(narrowest, cpu::dtypeSize(*cpu::dtypeOf(t)));
  };
  for (Value v : inputs)
    consider(v);
  for (Value v : outputs)
    consider(v);
  for (Value v : norm->getOperands())
    consider(v);
  consider(norm->getResult(0));
  int64_t vec = 16 / narrowest;
  if (c > 2048)
    return error("codegen: " + Emitter::describe(fusion) + ": rows of " + str(c) +
                 " elements do not fit a warp's registers (a norm fusion's rows are at most 2048 "
                 "long; kiln-fuse forms no longer ones)");
  if (c % vec != 0)
    return error("codegen: " + Emitter::describe(fusion) + ": rows of " + str(c) +
                 " elements are not whole 16-byte vectors (kiln-fuse forms norm fusions for "
                 "rows of a multiple of 8)");
  std::string F = computeType(tensorOf(rowValue).getElementType());

  // The functor.
  Params p;
  std::string members, init, loads, prefetches, results, flush, perElement;
  auto isFloat = [](Value v) { return isa<FloatType>(tensorOf(v).getElementType()); };
  for (auto [j, v] : llvm::enumerate(ArrayRef(inputs).take_front(argInputs))) {
    std::string t = elt(v), name = "in" + str(j);
    members += "  const " + t + " *__restrict__ " + name + ";\n";
    init += (init.empty() ? "" : ", ") + name;
    ADD(bufferOf(v), name, true)
    // A broadcast argument keeps rows whole (matchNormFusion): its vector
    // is the one its index map gives the vector's first element.
    BroadcastInDimOp b = broadcastReader(v);
    std::string at = b ? "(" + broadcastIndex(b, "v * " + str(vec)) + ") / " + str(vec) : "v";
    if (isFloat(v))
      loads += llvm::formatv("    alignas(16) {0} a{1}[{2}];\n    kiln::loadVec<{2}>(in{1}, {3}, a{1});\n",
                             t, j, vec, at)
                   .str();
    if (isFloat(v) && !b)
      for (int64_t half = 0; half < vec * static_cast<int64_t>(elementBytes(v)); half += 32)
        prefetches += llvm::formatv("    kiln::prefetchL2(in{0} + v * {1} + {2});\n", j, vec,
                                    half / static_cast<int64_t>(elementBytes(v)))
                          .str();
  }
  for (auto [j, v] : llvm::enumerate(outputs)) {
    std::string t = elt(v), name = "out" + str(j);
    members += "  " + t + " *__restrict__ " + name + ";\n";
    init += (init.empty() ? "" : ", ") + name;
    ADD(bufferOf(v), name, false)
    if (isFloat(v)) {
      results += llvm::formatv("    alignas(16) {0} r{1}[{2}];\n", t, j, vec).str();
      flush += llvm::formatv("    kiln::storeVec<{0}>(out{1}, v, r{1});\n", vec, j).str();
    }
  }
  llvm::DenseSet<Value> readInside;
  for (Operation *op : n->elementwise)
    for (Value v : op->getOperands())
      readInside.insert(v);
  // The column sum adds the value as its tensor would hold it.
  Value summed = n->columnSum ? n->columnSum.getOperand() : Value();
  if (summed)
    readInside.insert(summed);
  if (!n->backward)
    readInside.insert(rowValue);
  llvm::DenseMap<Value, std::string> name;
  auto statements = elementwiseStatements(
      e, inputs, n->elementwise,
      [&](size_t j) -> std::string {
        Value v = inputs[j];
        std::string ct = computeType(tensorOf(v).getElementType());
        if (j >= argInputs) // dx, as the unfused gradient's tensor holds it
          return roundedTo(tensorOf(v).getElementType(), "dx[k]");
        std::string index = "v * " + str(vec) + " + k";
        if (BroadcastInDimOp b = broadcastReader(v))
          index = broadcastIndex(b, index);
        return isFloat(v) ? "(" + ct + ")kiln::load(a" + str(j) + ", k)"
                          : "(" + ct + ")in" + str(j) + "[" + index + "]";
      },
      "      ", readInside, name);
  if (!statements)
    return statements.takeError();
  perElement = *statements;
  for (auto [j, v] : llvm::enumerate(outputs))
    perElement += isFloat(v) ? "      kiln::store(r" + str(j) + ", k, " + name[v] + ");\n"
                             : "      out" + str(j) + "[v * " + str(vec) + " + k] = (" + elt(v) + ")" +
                                   name[v] + ";\n";
  if (!n->backward)
    perElement += "      x[k] = " + name[rowValue] + ";\n";
  if (summed) {
    // From the vector stored as an output when the summed value is one
    // (the same rounded values; no second array of registers).
    std::string from = "column";
    if (auto it = llvm::find(outputs, summed); it != outputs.end() && isFloat(summed)) {
      from = "r" + str(it - outputs.begin());
    } else {
      results += "    alignas(16) " + F + " column[" + str(vec) + "];\n";
      perElement += "      column[k] = " + name[summed] + ";\n";
    }
    flush +=
        "    kiln::addColumns<" + str(vec) + ">(sums, v % " + str(c / vec) + ", " + from + ");\n";
  }
  std::string signature = n->backward ? "const " + F + " (&dx)[" + str(vec) + "], " + F + " *sums"
                                      : F + " (&x)[" + str(vec) + "]";
  // prefetch(v): the backward's kernel asks for the vector's inputs before
  // it takes the row's sums, to read them from L2 after.
  std::string functor = "struct Fused {\n" + members +
                        "  __device__ __forceinline__ void prefetch(kiln::i64 v) const {\n" +
                        prefetches + "  }\n" +
                        "  __device__ __forceinline__ void operator()(kiln::i64 v, " + signature +
                        ") const {\n" + loads + results + "#pragma unroll\n    for (int k = 0; k < " +
                        str(vec) + "; ++k) {\n" + perElement + "    }\n" + flush + "  }\n};\n";
  std::string ops = "// body:";
  for (Operation &op : fusion.getBodyOps())
    ops += " " + op.getName().stripDialect().str();
  ops += "\n";
  auto source = [&](const std::string &params, const std::string &call, int minBlocks) {
    return include("norm.cuh") + Emitter::header(fusion) + ops + functor +
           "extern \"C\" __global__ void __launch_bounds__(256, " + str(minBlocks) + ") @NAME@(" + params +
           ") {\n" + call + "}\n";
  };
  std::string kind = n->center ? "layer_norm" : "rms_norm";

  if (!n->backward) {
    Value w = norm->getOperand(1), y = norm->getResult(0);
    Value mean = n->center ? norm->getResult(1) : Value(), rstd = norm->getResult(n->center ? 2 : 1);
    ADD(bufferOf(w), "w", true)
    if (n->center) {
      ADD(bufferOf(norm->getOperand(2)), "b", true)
    }
    ADD(bufferOf(y), "y", false)
    std::string s = elt(rstd);
    auto optional = [&](Value v, const char *param) -> llvm::Expected<std::string> {
      if (!v || !bufferOf(v))
        return "(" + s + " *)nullptr";
      if (llvm::Error err = p.add(e, bufferOf(v), param, false))
        return std::move(err);
      return std::string(param);
    };
    auto meanArg = optional(mean, "mean");
    if (!meanArg)
      return meanArg.takeError();
    auto rstdArg = optional(rstd, "rstd");
    if (!rstdArg)
      return rstdArg.takeError();
    float eps = (n->center ? cast<LayerNormOp>(norm).getEpsilon() : cast<RmsNormOp>(norm).getEpsilon())
                    .convertToFloat();
    std::string call =
        llvm::formatv("  kiln::normForwardRows<{0}, {1}, {2}, {3}, {4}>(Fused{{{5}}, w, {6}, y, {7}, {8}, {9:e9}f);\n",
                      F, vec, rows, c, n->center ? "true" : "false", init,
                      n->center ? "b" : "(const " + elt(w) + " *)nullptr", *meanArg, *rstdArg, eps)
            .str();
    e.launch(fusion, "fused_" + kind, source(p.text, call, 1), {e.gridFor(rows * 32, 256), 1, 1},
             {256, 1, 1}, p.args);
    return true;
  }

  // Backward: as normBackward, with the functor storing dx's readers. One
  // wave of blocks, each SM holding all it runs: two blocks of 8 warps an
  // SM for rows up to 1024 (the kernel is then held to 128 registers a
  // thread; ptxas spills a word or two at C = 768), else one (the
  // accumulators of longer rows do not fit 128 registers anyway).
  int minBlocks = c <= 1024 ? 2 : 1;
  int64_t grid = std::min<int64_t>((rows + 7) / 8, minBlocks * e.options().smCount);
  int sums = n->columnSum ? 1 : 0, parts = (n->center ? 2 : 1) + sums;
  int64_t fBytes = F == "double" ? 8 : 4;
  int64_t shared = (sums ? parts * c : 32 * vec) * 8 * fBytes;
  if (shared > maxSharedBytes(e.options().arch))
    return error("codegen: " + Emitter::describe(fusion) + ": the column sum of rows of " + str(c) +
                 " elements needs " + str(shared / 1024) +
                 " KiB of shared memory for its partial sums, more than a block has (" +
                 str(maxSharedBytes(e.options().arch) / 1024) + " KiB on " + e.options().arch +
                 "; kiln-fuse forms such fusions for rows needing at most 96 KiB)");
  // Partials per block (its 8 warps add theirs in shared memory first).
  const int64_t partial = e.scratch(grid * parts * c * fBytes);
  Value x = norm->getOperand(0), w = norm->getOperand(1);
  Value mean = n->center ? norm->getOperand(2) : Value(), rstd = norm->getOperand(n->center ? 3 : 2),
        dy = norm->getOperand(n->center ? 4 : 3);
  ADD(bufferOf(x), "x", true) ADD(bufferOf(w), "w", true)
  if (mean) {
    ADD(bufferOf(mean), "mean", true)
  }
  ADD(bufferOf(rstd), "rstd", true) ADD(bufferOf(dy), "dy", true)
  p.text += ", " + F + " *partial";
  p.args.push_back(Emitter::ptr(partial));
  std::string call = llvm::formatv("  kiln::normBackwardRows<{0}, {1}, {2}, {3}, {4}, {7}>(x, w, "
                                   "{5}, rstd, dy, Fused{{{6}}, partial);\n",
                                   F, vec, rows, c, n->center ? "true" : "false",
                                   mean ? "mean" : "(const " + elt(rstd) + " *)nullptr", init, sums)
                         .str();
  e.launch(fusion, "fused_" + kind + "_backward", source(p.text, call, minBlocks), {grid, 1, 1},
           {256, 1, 1}, p.args, shared);
  SmallVector<PartialOut> outs{{bufferOf(norm->getResult(1)), {}}};
  if (n->center)
    outs.push_back({bufferOf(norm->getResult(2)), {}});
  if (n->columnSum)
    outs.push_back(
        {bufferOf(n->columnSumOut), tensorOf(n->columnSum.getResult()).getElementType()});
  if (llvm::Error err = sumNormPartials(e, fusion, partial, F, c, grid, outs))
    return std::move(err);
  return true;
}

#undef ADD

} // namespace

llvm::Expected<bool> emitComposite(Emitter &e, Operation *op) {
  return llvm::TypeSwitch<Operation *, llvm::Expected<bool>>(op)
      .Case([&](FusionOp f) -> llvm::Expected<bool> {
        if (f.isNormFusion())
          return normFusion(e, f);
        if (f.isCrossEntropyFusion())
          return crossEntropyFusion(e, f);
        if (f.isAttentionGradFusion())
          return attentionGradFusion(e, f);
        return false;
      })
      .Case([&](LayerNormOp o) { return layerNorm(e, o); })
      .Case([&](LayerNormGradOp o) { return normBackward(e, o, true); })
      .Case([&](RmsNormOp o) { return rmsNorm(e, o); })
      .Case([&](RmsNormGradOp o) { return normBackward(e, o, false); })
      .Case([&](SoftmaxOp o) { return softmax(e, o, false); })
      .Case([&](LogSoftmaxOp o) { return softmax(e, o, true); })
      .Case([&](SoftmaxGradOp o) { return softmaxGrad(e, o); })
      .Case([&](CrossEntropyOp o) { return crossEntropy(e, o); })
      .Case([&](CrossEntropyGradOp o) { return crossEntropyGrad(e, o); })
      .Case([&](EmbeddingOp o) { return embedding(e, o); })
      .Case([&](EmbeddingGradOp o) { return embeddingGrad(e, o); })
      .Case([&](RopeOp o) { return rope(e, o); })
      .Case([&](MoeRouteOp o) { return moeRoute(e, o); })
      .Case([&](AttentionOp o) { return attention(e, AttentionView::of(o)); })
      .Case([&](AttentionGradOp o) { return attentionGrad(e, AttentionView::of(o)); })
      .Case([&](AttentionQkvOp o) { return attention(e, AttentionView::of(o)); })
      .Case([&](AttentionQkvGradOp o) { return attentionGrad(e, AttentionView::of(o)); })
      .Default([](Operation *) -> llvm::Expected<bool> { return false; });
}

llvm::Error emitGlobalNorm(Emitter &e, Operation *op) {
  auto norm = cast<GlobalNormOp>(op);
  std::vector<int64_t> sizes;
  std::string offsets = "__device__ const kiln::i64 kOffset[] = {";
  std::string type;
  for (auto [i, v] : llvm::enumerate(norm.getInputs())) {
    auto offset = e.offsetOf(v);
    if (!offset)
      return offset.takeError();
    if (!type.empty() && elt(v) != type)
      return error("codegen: kiln.global_norm over tensors of several element types is not supported yet");
    type = elt(v);
    sizes.push_back(tensorOf(v).getNumElements());
    offsets += (i ? ", " : "") + std::to_string(*offset);
  }
  offsets += "};\n";
  std::string sizeTable = "__device__ const kiln::i64 kSize[] = {";
  for (auto [i, n] : llvm::enumerate(sizes))
    sizeTable += (i ? ", " : "") + std::to_string(n);
  sizeTable += "};\n";
  int64_t blocks;
  std::string chunks = chunkTable(sizes, blocks);
  // The CPU sums squares in double; so do the kernels for f64 tensors.
  std::string acc = type == "double" ? "double" : "float";
  const int64_t partial = e.scratch(blocks * (acc == "double" ? 8 : 4));
  std::string src1 = include("optim.cuh") + Emitter::header(op) + offsets + sizeTable + chunks +
                     "extern \"C\" __global__ void __launch_bounds__(256) @NAME@(const char *arena, " + acc + " *partial) {\n" +
                     findChunk(sizes.size()) +
                     llvm::formatv("  const kiln::i64 end = begin + {0} < kSize[t] ? begin + {0} : kSize[t];\n"
                                   "  kiln::sumSquaresChunk<{1}, {2}>(arena, kOffset[t], begin, end, partial);\n}\n",
                                   kChunk, type, acc)
                         .str();
  e.launch(op, "global_norm_partial", src1, {blocks, 1, 1}, {256, 1, 1},
           {Emitter::ptr(0), Emitter::ptr(partial)});
  auto out = e.offsetOf(norm.getNorm());
  if (!out)
    return out.takeError();
  std::string src2 = include("optim.cuh") + Emitter::header(op) +
                     llvm::formatv("extern \"C\" __global__ void __launch_bounds__(1024) @NAME@(const {2} *partial, {0} *out) {{\n"
                                   "  kiln::sqrtOfSum<{0}, {2}, {1}>(partial, out);\n}\n",
                                   elt(norm.getNorm()), blocks, acc)
                         .str();
  e.launch(op, "global_norm", src2, {1, 1, 1}, {1024, 1, 1},
           {Emitter::ptr(partial), Emitter::ptr(*out)});
  return llvm::Error::success();
}

llvm::Error emitCastGroup(Emitter &e, llvm::ArrayRef<Operation *> ops) {
  std::string table = "__device__ const kiln::CastTensor kTensors[] = {\n";
  std::vector<int64_t> sizes;
  auto first = cast<CastOp>(ops.front());
  for (Operation *op : ops) {
    auto c = cast<CastOp>(op);
    auto src = e.offsetOf(c.getOperand()), dst = e.offsetOf(c.getResult());
    for (auto *o : {&src, &dst})
      if (!*o)
        return o->takeError();
    int64_t n = tensorOf(c.getOperand()).getNumElements();
    sizes.push_back(n);
    table += llvm::formatv("  {{{0}, {1}, {2}},\n", *src, *dst, n).str();
  }
  table += "};\n";
  int64_t blocks;
  std::string chunks = chunkTable(sizes, blocks);
  std::string source =
      include("optim.cuh") + "// " + std::to_string(ops.size()) +
      " kiln.cast ops, one launch (multi-tensor cast, a kiln.cast_group)\n" + table + chunks +
      "extern \"C\" __global__ void __launch_bounds__(256) @NAME@(char *arena) {\n" +
      findChunk(sizes.size()) +
      llvm::formatv("  const kiln::CastTensor &c = kTensors[t];\n"
                    "  const kiln::i64 end = begin + {0} < c.size ? begin + {0} : c.size;\n"
                    "  kiln::castChunk<{1}, {2}>(arena, c, begin, end);\n}\n",
                    kChunk, elt(first.getOperand()), elt(first.getResult()))
          .str();
  e.launch(ops.back(), "cast_group", source, {blocks, 1, 1}, {256, 1, 1}, {Emitter::ptr(0)});
  return llvm::Error::success();
}

llvm::Error emitAdamW(Emitter &e, llvm::ArrayRef<Operation *> ops) {
  // The launch runs where the last update is: no op before it may read an
  // update's results.
  Operation *last = ops.back();
  for (Operation *op : ops)
    for (Operation *user : op->getUsers())
      if (!isa<func::ReturnOp>(user) && user->isBeforeInBlock(last))
        return error("codegen: " + Emitter::describe(user) + " reads the result of " +
                     Emitter::describe(op) + " before the last AdamW update");
  Operation *first = ops.front();
  auto adam0 = cast<AdamWUpdateOp>(first);
  std::string table = "__device__ const kiln::AdamTensor kTensors[] = {\n";
  std::vector<int64_t> sizes;
  std::string types;
  // The working copies' element type (kiln-fuse's adamw-copies): one for
  // the launch; the parameter's where there are none.
  std::string copyType;
  for (Operation *op : ops)
    if (Value copy = cast<AdamWUpdateOp>(op).getNewCopy()) {
      if (!copyType.empty() && copyType != elt(copy))
        return error("codegen: AdamW writing working copies of several element types is not "
                     "supported yet");
      copyType = elt(copy);
    }
  if (copyType.empty())
    copyType = elt(adam0.getParam());
  for (auto [i, op] : llvm::enumerate(ops)) {
    auto a = cast<AdamWUpdateOp>(op);
    if (a.getLr() != adam0.getLr() || a.getStep() != adam0.getStep() ||
        a.getGradScale() != adam0.getGradScale() || a.getSkip() != adam0.getSkip())
      return error("codegen: AdamW updates with different lr/step/scale/skip inputs are not supported");
    std::string t = elt(a.getParam()) + ", " + elt(a.getGrad()) + ", " + elt(a.getM());
    if (!types.empty() && t != types)
      return error("codegen: AdamW over parameters of several element types is not supported yet");
    types = t;
    auto param = e.offsetOf(a.getParam()), grad = e.offsetOf(a.getGrad()), m = e.offsetOf(a.getM()),
         v = e.offsetOf(a.getV()), newParam = e.offsetOf(a.getNewParam()), newM = e.offsetOf(a.getNewM()),
         newV = e.offsetOf(a.getNewV());
    for (auto *o : {&param, &grad, &m, &v, &newParam, &newM, &newV})
      if (!*o)
        return o->takeError();
    // Results kiln-plan-buffers could not put over their operands: copy the
    // operands there first, then update the copies in place.
    int64_t n = tensorOf(a.getParam()).getNumElements();
    int64_t bytes = n * static_cast<int64_t>(elementBytes(a.getParam()));
    int64_t stateBytes = n * static_cast<int64_t>(elementBytes(a.getM()));
    if (*newParam != *param)
      e.copy(op, *newParam, *param, bytes);
    if (*newM != *m)
      e.copy(op, *newM, *m, stateBytes);
    if (*newV != *v)
      e.copy(op, *newV, *v, stateBytes);
    *param = *newParam;
    *m = *newM;
    *v = *newV;
    int64_t copy = -1;
    if (Value c = a.getNewCopy()) {
      auto offset = e.offsetOf(c);
      if (!offset)
        return offset.takeError();
      copy = *offset;
      // Not over the state it replaces (kiln-plan-buffers found a reader of
      // the state after the launch): the old copy goes there first, so a
      // skipped step (loss scaling) leaves it as it was.
      auto func = op->getParentOfType<func::FuncOp>();
      for (OpOperand &use : c.getUses()) {
        auto alias = isa<func::ReturnOp>(use.getOwner())
                         ? func.getResultAttrOfType<IntegerAttr>(use.getOperandNumber(),
                                                                 KilnDialect::kAliasesAttrName)
                         : IntegerAttr();
        if (!alias)
          continue;
        auto state = e.offsetOf(func.getArgument(alias.getInt()));
        if (!state)
          return state.takeError();
        if (*state != copy)
          e.copy(op, copy, *state, numBytes(c.getType()));
      }
    }
    sizes.push_back(n);
    table +=
        llvm::formatv("  {{{0}, {1}, {2}, {3}, {4}, {5}, {6:e9}f, {7:e9}f, {8:e9}f, {9:e9}f},\n",
                      *param, *grad, *m, *v, copy, n, a.getBeta1().convertToFloat(),
                      a.getBeta2().convertToFloat(), a.getEpsilon().convertToFloat(),
                      a.getWeightDecay().convertToFloat())
            .str();
  }
  table += "};\n";
  int64_t blocks;
  std::string chunks = chunkTable(sizes, blocks);
  for (Value scalar : {adam0.getLr(), adam0.getStep(), adam0.getGradScale()})
    if (!tensorOf(scalar).getElementType().isF32())
      return error("codegen: " + Emitter::describe(first) + " takes lr, step and grad_scale as "
                   "f32 scalars; got " + llvm::Twine(elt(scalar)));
  auto lr = e.offsetOf(adam0.getLr()), step = e.offsetOf(adam0.getStep()), scale = e.offsetOf(adam0.getGradScale());
  for (auto *o : {&lr, &step, &scale})
    if (!*o)
      return o->takeError();
  std::vector<PlanArg> args{Emitter::ptr(0), Emitter::ptr(*lr), Emitter::ptr(*step), Emitter::ptr(*scale)};
  std::string skipParam, skipTest;
  if (Value skip = adam0.getSkip()) {
    // A loss-scaled step that overflowed: nothing is written.
    auto offset = e.offsetOf(skip);
    if (!offset)
      return offset.takeError();
    args.push_back(Emitter::ptr(*offset));
    skipParam = ", const unsigned char *skip";
    skipTest = "  if (*skip)\n    return;\n";
  }
  std::string source =
      include("optim.cuh") + "// " + std::to_string(ops.size()) +
      " kiln.adamw_update ops, one launch (multi-tensor AdamW)\n" + table + chunks +
      "extern \"C\" __global__ void __launch_bounds__(256) @NAME@(char *arena, const float *lr, "
      "const float *step, const float *scale" +
      skipParam + ") {\n" + skipTest + findChunk(sizes.size()) +
      llvm::formatv("  const kiln::AdamTensor &p = kTensors[t];\n"
                    "  const kiln::i64 end = begin + {0} < p.size ? begin + {0} : p.size;\n"
                    "  kiln::adamwChunk<{1}>(arena, p, begin, end, *lr, *step, *scale);\n}\n",
                    kChunk, types + ", " + copyType)
          .str();
  e.launch(last, "adamw", source, {blocks, 1, 1}, {256, 1, 1}, args);
  return llvm::Error::success();
}

llvm::Error checkAttentionTiles(const CodegenOptions &options) {
  // (The head dim only picks where Q lives by default and bounds dq's
  // column split, which neither flash head dim meets.)
  auto tiles = customTiles(options, 64);
  return tiles ? llvm::Error::success() : tiles.takeError();
}

} // namespace kiln::codegen
