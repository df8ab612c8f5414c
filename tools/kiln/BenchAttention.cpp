//===- BenchAttention.cpp - `kiln bench --attention`: one attention op -----===//
//
// Times kiln.attention alone on the GPU, forward and forward + backward,
// through the same codegen and executor as a training step (CUDA graph
// replays, events): @fwd(q, k, v) -> (out, lse) and @fwdbwd(q, k, v, dout)
// -> (dq, dk, dv). FLOPs as FlashAttention counts them: 4·B·H·Tq·Tk·D for
// the forward (halved when causal), 2.5 times that for the backward.
// --dump FILE writes the inputs and kiln's outputs (safetensors), for
// bench/attention.py to check against PyTorch at the benchmark's shapes.
//
//===----------------------------------------------------------------------===//

#include "tools/kiln/BenchAttention.h"
#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"

#include "ir/KilnBuilders.h"
#include "ir/KilnDialect.h"
#include "runtime/Random.h"
#include "runtime/Safetensors.h"
#include "runtime/cuda/CudaBackend.h"
#include "train/Compile.h"
#include "train/Loop.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"
#include "mlir/IR/MLIRContext.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"

#include <cstring>

using namespace llvm;

namespace kiln::cli {

static cl::opt<std::string> attentionShape(
    "attention", cl::desc("Time one attention op instead of a config: B,H,T,D[,HKV[,TK]]"),
    cl::value_desc("B,H,T,D"), cl::sub(benchCommand()), cl::cat(kilnCategory()));
static cl::opt<bool> causal("causal", cl::desc("With --attention: causal masking"),
                            cl::sub(benchCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> dtype("dtype", cl::desc("With --attention: bf16 (default), f16 or f32"),
                                  cl::init("bf16"), cl::sub(benchCommand()),
                                  cl::cat(kilnCategory()));
static cl::opt<std::string>
    tiles("attention-tiles",
          cl::desc("Flash tiles W,MT,BN,BW[,Q[,G[,R[,X]]]]: forward warps, row tiles, key "
                   "block, backward warps, Q in registers 0/1, wgmma kernels 0/1, backward "
                   "blocks an SM 0-8, wgmma options 0-15 (a sum: 1 the backward issues dq's "
                   "product first, 2 the forward overlaps its softmax with O += P·V, 4 the "
                   "backward's last blocks convert dq, 8 the forward warp-specialized: a "
                   "producer warpgroup, W = 8) (default: kiln's choice; also for a config's "
                   "step and for kiln compile)"),
          cl::sub(benchCommand()), cl::sub(compileCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> layout("attention-layout",
                                   cl::desc("With --attention: bhtd (default, [B, H, T, D]), "
                                            "bthd (sequence-major) or qkv (kiln.attention_qkv: "
                                            "q, k, v packed in one [B, T, H, 3, D], as GPT-2's)"),
                                   cl::init("bhtd"), cl::sub(benchCommand()),
                                   cl::cat(kilnCategory()));
static cl::opt<std::string> dumpPath("dump",
                                     cl::desc("With --attention: write inputs and outputs here "
                                              "(safetensors)"),
                                     cl::sub(benchCommand()), cl::cat(kilnCategory()));
static cl::opt<bool> deterministicSums(
    "deterministic",
    cl::desc("With --attention: the backward's dq sums in key-block order (train.deterministic)"),
    cl::sub(benchCommand()), cl::cat(kilnCategory()));
static cl::opt<int> iterations("iterations", cl::desc("With --attention: timed replays (default 20)"),
                               cl::init(20), cl::sub(benchCommand()), cl::cat(kilnCategory()));

bool attentionRequested() { return !attentionShape.empty(); }

namespace {

struct Shape {
  int64_t b, h, t, d, hkv, tk;
};

Expected<Shape> parseShape() {
  SmallVector<StringRef> parts;
  StringRef(attentionShape).split(parts, ',');
  SmallVector<int64_t> v;
  for (StringRef p : parts) {
    int64_t x;
    if (p.trim().getAsInteger(10, x) || x <= 0 || x > (1 << 20))
      return createStringError(inconvertibleErrorCode(),
                               "--attention '" + attentionShape + "': expected B,H,T,D[,HKV[,TK]]");
    v.push_back(x);
  }
  if (v.size() < 4 || v.size() > 6)
    return createStringError(inconvertibleErrorCode(),
                             "--attention '" + attentionShape + "': expected B,H,T,D[,HKV[,TK]]");
  Shape s{v[0], v[1], v[2], v[3], v.size() > 4 ? v[4] : v[1], v.size() > 5 ? v[5] : v[2]};
  if (s.h % s.hkv != 0 || (causal && s.tk != s.t))
    return createStringError(inconvertibleErrorCode(),
                             "--attention: H must be a multiple of HKV, and causal needs TK = T");
  if (layout != "bhtd" && layout != "bthd" && layout != "qkv")
    return createStringError(inconvertibleErrorCode(),
                             "--attention-layout '" + layout + "': expected bhtd, bthd or qkv");
  if (layout == "qkv" && (s.hkv != s.h || s.tk != s.t))
    return createStringError(inconvertibleErrorCode(),
                             "--attention-layout qkv packs q, k and v: HKV must be H and TK T");
  return s;
}

/// @fwd and @fwdbwd over inputs named q, k, v (and dout).
mlir::OwningOpRef<mlir::ModuleOp> buildModule(mlir::MLIRContext &ctx, const Shape &s, mlir::Type element) {
  tooling::loadDialects(ctx);
  mlir::OpBuilder b(&ctx);
  auto loc = b.getUnknownLoc();
  mlir::OwningOpRef<mlir::ModuleOp> module = mlir::ModuleOp::create(loc);
  auto tensor = [&](ArrayRef<int64_t> shape, mlir::Type t) { return mlir::RankedTensorType::get(shape, t); };
  bool seq = layout != "bhtd";
  auto q = seq ? tensor({s.b, s.t, s.h, s.d}, element) : tensor({s.b, s.h, s.t, s.d}, element);
  auto kv = seq ? tensor({s.b, s.tk, s.hkv, s.d}, element) : tensor({s.b, s.hkv, s.tk, s.d}, element);
  auto layoutAttr = seq ? b.getStringAttr("bthd") : mlir::StringAttr();
  auto lse = tensor({s.b, s.h, s.t}, element.isF64() ? b.getF64Type() : b.getF32Type());
  auto scale = b.getF32FloatAttr(static_cast<float>(1.0 / std::sqrt(static_cast<double>(s.d))));
  auto causalAttr = causal ? b.getUnitAttr() : mlir::UnitAttr();
  auto named = [&](StringRef key, StringRef name) {
    return b.getDictionaryAttr({b.getNamedAttr(key, b.getStringAttr(name))});
  };
  auto makeFunc = [&](StringRef name, ArrayRef<mlir::Type> args, ArrayRef<StringRef> inputs,
                      ArrayRef<mlir::Type> results, ArrayRef<StringRef> outputs) {
    b.setInsertionPointToEnd(module->getBody());
    auto func = mlir::func::FuncOp::create(b, loc, name, b.getFunctionType(args, results));
    for (auto [i, n] : enumerate(inputs))
      func.setArgAttrs(i, named(KilnDialect::kInputAttrName, n));
    for (auto [i, n] : enumerate(outputs))
      func.setResultAttrs(i, named(KilnDialect::kOutputAttrName, n));
    b.setInsertionPointToStart(func.addEntryBlock());
    return func;
  };
  if (layout == "qkv") {
    auto qkv = tensor({s.b, s.t, s.h, 3, s.d}, element);
    auto f = makeFunc("fwd", {qkv}, {"qkv"}, {q, lse}, {"out", "lse"});
    auto a = AttentionQkvOp::create(b, loc, q, lse, f.getArgument(0), mlir::Value(), scale, causalAttr);
    mlir::func::ReturnOp::create(b, loc, mlir::ValueRange{a.getOut(), a.getLse()});
    auto g = makeFunc("fwdbwd", {qkv, q}, {"qkv", "dout"}, {qkv}, {"dqkv"});
    auto a2 = AttentionQkvOp::create(b, loc, q, lse, g.getArgument(0), mlir::Value(), scale, causalAttr);
    auto d = AttentionQkvGradOp::create(b, loc, qkv, g.getArgument(0), a2.getOut(), a2.getLse(),
                                        g.getArgument(1), mlir::Value(), scale, causalAttr);
    mlir::func::ReturnOp::create(b, loc, mlir::ValueRange{d.getDqkv()});
    return module;
  }
  {
    auto f = makeFunc("fwd", {q, kv, kv}, {"q", "k", "v"}, {q, lse}, {"out", "lse"});
    auto a = AttentionOp::create(b, loc, q, lse, f.getArgument(0), f.getArgument(1), f.getArgument(2),
                                 mlir::Value(), scale, causalAttr, layoutAttr);
    mlir::func::ReturnOp::create(b, loc, mlir::ValueRange{a.getOut(), a.getLse()});
  }
  {
    auto f = makeFunc("fwdbwd", {q, kv, kv, q}, {"q", "k", "v", "dout"}, {q, kv, kv},
                      {"dq", "dk", "dv"});
    auto a = AttentionOp::create(b, loc, q, lse, f.getArgument(0), f.getArgument(1), f.getArgument(2),
                                 mlir::Value(), scale, causalAttr, layoutAttr);
    auto g = AttentionGradOp::create(b, loc, q, kv, kv, f.getArgument(0), f.getArgument(1),
                                     f.getArgument(2), a.getOut(), a.getLse(), f.getArgument(3),
                                     mlir::Value(), scale, causalAttr, layoutAttr);
    mlir::func::ReturnOp::create(b, loc, mlir::ValueRange{g.getDq(), g.getDk(), g.getDv()});
  }
  return module;
}

cpu::HostTensor randomTensor(cpu::DType dtype, std::vector<int64_t> shape, Rng &rng) {
  cpu::HostTensor t(dtype, std::move(shape));
  for (int64_t i = 0; i < t.numel(); ++i)
    t.set(i, rng.normal());
  return t;
}

} // namespace

const std::string &attentionTilesOption() { return tiles.getValue(); }

int runAttentionBench(StringRef jsonPath) {
  auto shape = parseShape();
  if (!shape)
    return fail("bench", toString(shape.takeError()));
  const Shape &s = *shape;
  mlir::MLIRContext ctx;
  mlir::Type element = dtype == "f16"   ? mlir::Type(mlir::Float16Type::get(&ctx))
                       : dtype == "f32" ? mlir::Type(mlir::Float32Type::get(&ctx))
                                        : mlir::Type(mlir::BFloat16Type::get(&ctx));
  if (dtype != "bf16" && dtype != "f16" && dtype != "f32")
    return fail("bench", "--dtype must be bf16, f16 or f32");
  auto backendOr = tooling::makeCudaBackend(&outs(), tiles);
  if (!backendOr)
    return fail("bench", toString(backendOr.takeError()));
  cuda::CudaBackend &backend = **backendOr;
  auto module = buildModule(ctx, s, element);
  if (deterministicSums)
    (*module)->setAttr(KilnDialect::kDeterministicAttrName, mlir::UnitAttr::get(&ctx));
  if (Error err = backend.load(*module, 0))
    return fail("bench", toString(std::move(err)));
  for (const std::string &note : backend.executor().plan().notes)
    outs() << "  " << note << "\n";

  // Inputs once (the timed replays reuse what the arena holds), a checked
  // run of each function.
  Rng rng(7, "attention");
  cpu::DType dt = *cpu::dtypeOf(element);
  bool seq = layout != "bhtd";
  std::vector<int64_t> qShape = seq ? std::vector<int64_t>{s.b, s.t, s.h, s.d}
                                    : std::vector<int64_t>{s.b, s.h, s.t, s.d};
  std::vector<int64_t> kvShape = seq ? std::vector<int64_t>{s.b, s.tk, s.hkv, s.d}
                                     : std::vector<int64_t>{s.b, s.hkv, s.tk, s.d};
  TensorMap inputs;
  if (layout == "qkv")
    inputs = {{"qkv", randomTensor(dt, {s.b, s.t, s.h, 3, s.d}, rng)},
              {"dout", randomTensor(dt, qShape, rng)}};
  else
    inputs = {{"q", randomTensor(dt, qShape, rng)},
              {"k", randomTensor(dt, kvShape, rng)},
              {"v", randomTensor(dt, kvShape, rng)},
              {"dout", randomTensor(dt, qShape, rng)}};
  TensorMap fwdInputs = inputs;
  fwdInputs.erase("dout");
  auto fwd = backend.run("fwd", fwdInputs);
  if (!fwd)
    return fail("bench", toString(fwd.takeError()));
  auto fwdbwd = backend.run("fwdbwd", inputs);
  if (!fwdbwd)
    return fail("bench", toString(fwdbwd.takeError()));
  // The forward+backward once more from the same inputs: bitwise the same
  // under --deterministic; without it dq's atomics may land in another
  // order.
  auto again = backend.run("fwdbwd", inputs);
  if (!again)
    return fail("bench", toString(again.takeError()));
  int64_t differing = 0;
  for (const auto &[name, t] : *fwdbwd) {
    const cpu::HostTensor &u = again->at(name);
    const size_t n = static_cast<size_t>(t.numel()) * cpu::dtypeSize(t.dtype());
    differing += std::memcmp(t.raw(), u.raw(), n) != 0;
  }
  if (deterministicSums && differing)
    return fail("bench", formatv("--deterministic: {0} of the backward's outputs differ between "
                                 "two runs from the same inputs",
                                 differing)
                             .str());
  if (!dumpPath.empty()) {
    NamedTensors dump;
    for (auto &m : {std::cref(inputs), std::cref(*fwd), std::cref(*fwdbwd)})
      for (const auto &[name, t] : m.get())
        dump.push_back({name, t});
    if (Error err = writeSafetensors(dumpPath, dump))
      return fail("bench", toString(std::move(err)));
  }
  auto fwdMs = backend.executor().time("fwd", iterations);
  if (!fwdMs)
    return fail("bench", toString(fwdMs.takeError()));
  auto bothMs = backend.executor().time("fwdbwd", iterations);
  if (!bothMs)
    return fail("bench", toString(bothMs.takeError()));

  double flops = 4.0 * s.b * s.h * s.t * s.tk * s.d * (causal ? 0.5 : 1.0);
  double fwdTflops = flops / (*fwdMs * 1e-3) / 1e12, bothTflops = 3.5 * flops / (*bothMs * 1e-3) / 1e12;
  std::string tileText = tiles.empty() ? std::string("default") : tiles.getValue();
  outs() << formatv("attention B={0} H={1}/{2} T={3}/{4} D={5} {6}{7} {13} tiles {8}{14}: forward "
                    "{9:f3} ms ({10:f1} TFLOP/s), forward+backward {11:f3} ms ({12:f1} TFLOP/s); "
                    "a second run {15}\n",
                    s.b, s.h, s.hkv, s.t, s.tk, s.d, dtype.getValue(), causal ? " causal" : "",
                    tileText, *fwdMs, fwdTflops, *bothMs, bothTflops, layout.getValue(),
                    deterministicSums ? ", deterministic" : "",
                    differing ? formatv("differs in {0} output(s)", differing).str()
                              : std::string("is bitwise the same"));
  if (!jsonPath.empty()) {
    json::Object result{{"b", s.b},
                        {"h", s.h},
                        {"hkv", s.hkv},
                        {"t", s.t},
                        {"tk", s.tk},
                        {"d", s.d},
                        {"causal", causal.getValue()},
                        {"dtype", dtype.getValue()},
                        {"tiles", tileText},
                        {"fwd_ms", *fwdMs},
                        {"fwdbwd_ms", *bothMs},
                        {"layout", layout.getValue()},
                        {"deterministic", deterministicSums.getValue()},
                        {"repeat_differs", differing},
                        {"fwd_tflops", fwdTflops},
                        {"fwdbwd_tflops", bothTflops}};
    std::error_code ec;
    raw_fd_ostream os(jsonPath, ec, sys::fs::OF_Append);
    if (ec)
      return fail("bench", "cannot write '" + jsonPath + "': " + ec.message());
    os << formatv("{0}", json::Value(std::move(result))) << "\n";
  }
  return 0;
}

} // namespace kiln::cli
