//===- PlanBuilder.cpp - from planned kiln IR to an executable Plan --------===//
//
//   1. Bind every function's arguments and results to their arena buffers
//      (kiln.offset / kiln.offsets from kiln-plan-buffers).
//   2. Walk the ops in order; each family's emitter adds its steps: kernels
//      for elementwise and data-movement ops, reductions and composites, a
//      GEMM for matmul, one multi-tensor launch for all AdamW updates.
//      Reshapes and inlined constants add nothing.
//   3. Results that could not be updated in place are copied back into
//      their arguments at the end.
//
//===----------------------------------------------------------------------===//

#include "codegen/Emitter.h"
#include "ir/CustomKernel.h"

#include "ir/KilnOps.h"
#include "passes/PlanBuffersUtils.h"

#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/DenseSet.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <map>
#include <optional>

using namespace mlir;

namespace kiln::codegen {

int64_t wordElements(Type elementType, int64_t n) {
  int64_t bits = elementType.getIntOrFloatBitWidth();
  int64_t bytes = bits <= 8 ? 1 : bits / 8;
  if (16 % bytes != 0 || n % (16 / bytes) != 0)
    return 0;
  return 16 / bytes;
}

std::string cType(Type t) {
  if (t.isF64()) return "double";
  if (t.isF32()) return "float";
  if (t.isBF16()) return "__nv_bfloat16";
  if (t.isF16()) return "__half";
  if (t.isInteger(64)) return "long long";
  if (t.isInteger(32)) return "int";
  if (t.isInteger(1)) return "unsigned char";
  return "?";
}

std::string computeType(Type t) {
  if (t.isF64()) return "double";
  if (isa<FloatType>(t)) return "float";
  if (t.isInteger(1)) return "unsigned char";
  return "long long";
}

RankedTensorType tensorOf(Value v) { return cast<RankedTensorType>(v.getType()); }

std::string Emitter::describe(Operation *op) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << op->getName() << " at " << op->getLoc();
  return s;
}

std::string Emitter::header(Operation *op) {
  std::string types;
  llvm::raw_string_ostream os(types);
  os << "(";
  llvm::interleaveComma(op->getOperandTypes(), os);
  os << ") -> (";
  llvm::interleaveComma(op->getResultTypes(), os);
  os << ")";
  return "// " + describe(op) + "\n// " + types + "\n";
}

int64_t Emitter::gridFor(int64_t work, int64_t threads, int64_t perSm) const {
  int64_t blocks = (work + threads - 1) / threads;
  return std::max<int64_t>(1, std::min<int64_t>(blocks, options_.smCount * perSm));
}

bool Emitter::isInlined(Value v) {
  Operation *def = v.getDefiningOp();
  return def && isInlinedConstant(def);
}

std::string Emitter::literal(Value v) {
  auto c = cast<ConstantOp>(v.getDefiningOp());
  auto splat = cast<SplatElementsAttr>(c.getValue());
  Type elt = splat.getElementType();
  std::string ct = computeType(elt);
  if (isa<FloatType>(elt)) {
    double d = splat.getSplatValue<APFloat>().convertToDouble();
    if (std::isinf(d))
      return d < 0 ? "kiln::negInf<" + ct + ">()" : "(-kiln::negInf<" + ct + ">())";
    if (std::isnan(d))
      return "(" + ct + ")(0.0/0.0)";
    return llvm::formatv("(({0}){1:e17})", ct, d).str();
  }
  APInt bits = splat.getSplatValue<APInt>();
  int64_t n = elt.isInteger(1) ? static_cast<int64_t>(bits.getZExtValue()) : bits.getSExtValue();
  return "((" + ct + ")" + std::to_string(n) + ")";
}

llvm::Expected<int64_t> Emitter::offsetOf(Value v) {
  if (auto arg = dyn_cast<BlockArgument>(v)) {
    auto func = cast<func::FuncOp>(arg.getOwner()->getParentOp());
    if (auto o = func.getArgAttrOfType<IntegerAttr>(arg.getArgNumber(), KilnDialect::kOffsetAttrName))
      return o.getInt();
    return error("argument #" + llvm::Twine(arg.getArgNumber()) + " of @" + func.getSymName() +
                 " has no buffer (run kiln-plan-buffers first)");
  }
  Operation *def = v.getDefiningOp();
  auto offsets = def->getAttrOfType<DenseI64ArrayAttr>(KilnDialect::kOffsetsAttrName);
  unsigned index = cast<OpResult>(v).getResultNumber();
  if (!offsets || static_cast<int64_t>(index) >= offsets.size() || offsets[index] < 0)
    return error("codegen: the value of " + describe(def) +
                 " has no buffer (run kiln-plan-buffers first)");
  return offsets[index];
}

void Emitter::launch(Operation *op, llvm::StringRef baseName, const std::string &source,
                     std::array<int64_t, 3> grid, std::array<int64_t, 3> block,
                     const std::vector<PlanArg> &args, int64_t sharedBytes) {
  // Identical kernels of different ops (every layer's) are emitted once:
  // the key is the source without the header naming the op.
  std::string key = source;
  std::string opHeader = header(op);
  if (size_t at = key.find(opHeader); at != std::string::npos)
    key.erase(at, opHeader.size());
  auto it = kernelIndex_.find(key);
  int index;
  if (it != kernelIndex_.end()) {
    index = it->second;
  } else {
    index = static_cast<int>(plan_.kernels.size());
    std::string name = baseName.str() + "_" + std::to_string(index);
    std::string text = source;
    for (size_t at; (at = text.find("@NAME@")) != std::string::npos;)
      text.replace(at, 6, name);
    plan_.kernels.push_back({name, text});
    kernelIndex_[key] = index;
  }
  PlanStep step;
  step.kind = PlanStep::Kind::Launch;
  step.op = describe(op);
  step.opIndex = opIndex(op);
  step.kernel = index;
  step.grid = grid;
  step.block = block;
  step.args = args;
  step.sharedBytes = sharedBytes;
  function_.steps.push_back(std::move(step));
}

void Emitter::gemm(Operation *op, const GemmDesc &desc) {
  PlanStep step;
  step.kind = PlanStep::Kind::Gemm;
  step.op = describe(op);
  step.opIndex = opIndex(op);
  step.gemm = desc;
  function_.steps.push_back(std::move(step));
}

void Emitter::memset(Operation *op, int64_t dst, int64_t bytes) {
  PlanStep step;
  step.kind = PlanStep::Kind::Memset;
  step.op = op ? describe(op) : "zero";
  step.opIndex = op ? opIndex(op) : -1;
  step.dst = dst;
  step.bytes = bytes;
  function_.steps.push_back(std::move(step));
}

void Emitter::collective(Operation *op, int64_t dst, int64_t src, CollectiveDesc desc) {
  PlanStep step;
  step.kind = PlanStep::Kind::Collective;
  step.op = describe(op);
  step.opIndex = opIndex(op);
  step.dst = dst;
  step.src = src;
  step.collective = std::move(desc);
  function_.steps.push_back(std::move(step));
}

/// Appends the arena bytes [begin, end) of `op`'s operands and results
/// that have a buffer (a reshape's value is its operand's).
void arenaRanges(Emitter &e, Operation *op, std::vector<std::pair<int64_t, int64_t>> &out) {
  auto add = [&](Value v) {
    while (auto reshape = v.getDefiningOp<ReshapeOp>())
      v = reshape.getOperand();
    auto type = dyn_cast<RankedTensorType>(v.getType());
    auto dtype = type ? cpu::dtypeOf(type.getElementType()) : std::nullopt;
    if (!dtype)
      return;
    auto offset = e.offsetOf(v);
    if (!offset) { // an inlined constant: no buffer
      llvm::consumeError(offset.takeError());
      return;
    }
    out.push_back({*offset, *offset + type.getNumElements() *
                                          static_cast<int64_t>(cpu::dtypeSize(*dtype))});
  };
  for (Value v : op->getOperands())
    add(v);
  for (Value v : op->getResults())
    add(v);
}

llvm::Error emitCollective(Emitter &e, Operation *op) {
  CollectiveDesc d;
  d.kind = op->getName().stripDialect().str();
  d.axis = op->getAttrOfType<mlir::StringAttr>("axis").getValue().str();
  if (auto dim = op->getAttrOfType<mlir::IntegerAttr>("dim"))
    d.dim = dim.getInt();
  if (auto bucket = op->getAttrOfType<mlir::IntegerAttr>(KilnDialect::kBucketAttrName))
    d.bucket = bucket.getInt();
  if (auto exchange = dyn_cast<AllToAllOp>(op)) {
    d.dim = static_cast<int64_t>(exchange.getSplitDim());
    d.concatDim = static_cast<int64_t>(exchange.getConcatDim());
  }
  auto in = tensorOf(op->getOperand(0)), out = tensorOf(op->getResult(0));
  d.dtype = *cpu::dtypeOf(in.getElementType());
  d.shape.assign(in.getShape().begin(), in.getShape().end());
  d.resultShape.assign(out.getShape().begin(), out.getShape().end());
  auto src = e.offsetOf(op->getOperand(0));
  if (!src)
    return src.takeError();
  auto dst = e.offsetOf(op->getResult(0));
  if (!dst)
    return dst.takeError();
  e.collective(op, *dst, *src, std::move(d));
  return llvm::Error::success();
}

/// A pipeline stage's kiln.send or kiln.recv: a Collective step of kind
/// send (src: the operand) or recv (dst: the result).
llvm::Error emitTransfer(Emitter &e, Operation *op) {
  CollectiveDesc d;
  d.kind = op->getName().stripDialect().str();
  d.axis = op->getAttrOfType<mlir::StringAttr>("axis").getValue().str();
  d.peer = op->getAttrOfType<mlir::IntegerAttr>("peer").getInt();
  d.channel = op->getAttrOfType<mlir::IntegerAttr>("channel").getInt();
  Value v = isa<SendOp>(op) ? op->getOperand(0) : op->getResult(0);
  auto type = tensorOf(v);
  auto dtype = cpu::dtypeOf(type.getElementType());
  if (!dtype)
    return error("codegen: " + Emitter::describe(op) + " carries an element type the GPU does not");
  d.dtype = *dtype;
  d.shape.assign(type.getShape().begin(), type.getShape().end());
  d.resultShape = d.shape;
  auto at = e.offsetOf(v);
  if (!at)
    return at.takeError();
  e.collective(op, *at, *at, std::move(d));
  return llvm::Error::success();
}

void Emitter::copy(Operation *op, int64_t dst, int64_t src, int64_t bytes) {
  PlanStep step;
  step.kind = PlanStep::Kind::Copy;
  step.op = op ? describe(op) : "copy";
  step.opIndex = op ? opIndex(op) : -1;
  step.dst = dst;
  step.src = src;
  step.bytes = bytes;
  function_.steps.push_back(std::move(step));
}

int64_t Emitter::errorFlag() {
  plan_.memory.errorFlag =
      plan_.memory.workspaceOffset + plan_.memory.workspace - kErrorWordBytes;
  return plan_.memory.errorFlag;
}

int64_t Emitter::numericsFlag() {
  plan_.memory.numericsFlag = errorFlag() + 8;
  return plan_.memory.numericsFlag;
}

int64_t Emitter::scratch(int64_t bytes) {
  scratchWanted_ = std::max(scratchWanted_, bytes);
  return plan_.memory.workspaceOffset + plan_.memory.gemmWorkspace;
}

namespace {

PlanBinding bindingOf(func::FuncOp func, unsigned i, llvm::Expected<int64_t> &offset) {
  auto t = cast<RankedTensorType>(func.getArgumentTypes()[i]);
  PlanBinding b{PlanBinding::Kind::Input, "", 0, *cpu::dtypeOf(t.getElementType()),
                std::vector<int64_t>(t.getShape()), ""};
  if (auto n = func.getArgAttrOfType<StringAttr>(i, KilnDialect::kParamAttrName)) {
    b.kind = PlanBinding::Kind::Param;
    b.name = n.getValue().str();
  } else if (auto n = func.getArgAttrOfType<StringAttr>(i, KilnDialect::kStateAttrName)) {
    b.kind = PlanBinding::Kind::State;
    b.name = n.getValue().str();
  } else if (auto n = func.getArgAttrOfType<StringAttr>(i, KilnDialect::kInputAttrName)) {
    b.name = n.getValue().str();
  }
  if (offset)
    b.offset = *offset;
  return b;
}

/// train.check_numerics: after `op`'s steps (the last one is `producer`),
/// one scan of each float result it wrote (kernels/check.cuh).
llvm::Error emitChecks(Emitter &e, Operation *op, size_t producer) {
  for (OpResult r : op->getResults()) {
    auto t = tensorOf(r);
    if (!isa<FloatType>(t.getElementType()) || t.getNumElements() == 0 || e.isInlined(r))
      continue;
    auto offset = e.offsetOf(r);
    if (!offset)
      return offset.takeError();
    std::string source =
        include("check.cuh") + Emitter::header(op) + "// train.check_numerics: result " +
        str(r.getResultNumber()) + "\nextern \"C\" __global__ void __launch_bounds__(256) @NAME@(const " +
        cType(t.getElementType()) + " *x, unsigned step, unsigned result, unsigned *flag) {\n" +
        "  kiln::checkFinite<" + cType(t.getElementType()) + ", " + str(t.getNumElements()) +
        ">(x, step, result, flag);\n}\n";
    e.launch(op, "check_finite", source, {e.gridFor(t.getNumElements(), 256, 4), 1, 1}, {256, 1, 1},
             {Emitter::ptr(*offset), {PlanArg::Kind::Int, static_cast<int64_t>(producer)},
              {PlanArg::Kind::Int, r.getResultNumber()}, Emitter::ptr(e.numericsFlag())});
  }
  return llvm::Error::success();
}

/// A plugin's kernel: its registration's source and launch rule, with one
/// pointer per operand and then per result.
llvm::Error emitCustomKernel(Emitter &e, CustomKernelOp op) {
  const CustomKernel *def = op.getDefinition();
  std::string origin = def && !def->origin.empty() ? def->origin : "kiln";
  auto fail = [&](const llvm::Twine &why) {
    return error("codegen: " + Emitter::describe(op) + ": custom kernel '" + op.getKernel() +
                 "' (from " + origin + ") " + why);
  };
  if (!def || !def->cuda)
    return fail("has no CUDA kernel");
  auto launch = def->cuda(op);
  if (!launch)
    return fail(llvm::toString(launch.takeError()));
  if (launch->source.find("@NAME@") == std::string::npos)
    return fail("returned a source without @NAME@ (the entry point codegen names)");
  for (int64_t d : {launch->grid[0], launch->grid[1], launch->grid[2], launch->block[0],
                    launch->block[1], launch->block[2]})
    if (d < 1)
      return fail("asked for an empty grid or block");
  if (launch->block[0] * launch->block[1] * launch->block[2] > 1024)
    return fail("asked for more than 1024 threads a block");
  std::vector<PlanArg> args;
  for (Value v : llvm::concat<Value>(op.getInputs(), op.getResults())) {
    auto offset = e.offsetOf(v);
    if (!offset)
      return offset.takeError();
    args.push_back(Emitter::ptr(*offset));
  }
  std::string base = "custom_";
  for (char c : op.getKernel())
    base += llvm::isAlnum(c) ? c : '_';
  std::string source = Emitter::header(op) + "// custom kernel " + op.getKernel().str() +
                       " from " + origin + "\n" + launch->source;
  e.launch(op, base, source, launch->grid, launch->block, args, launch->sharedBytes);
  e.note("custom kernel " + op.getKernel().str() + " from " + origin);
  return llvm::Error::success();
}

llvm::Error emitFunction(Plan &plan, func::FuncOp func, const CodegenOptions &options,
                         llvm::StringMap<int> &kernelIndex, int64_t &scratchWanted) {
  PlanFunction fn;
  fn.name = func.getSymName().str();
  Emitter e(plan, fn, options, kernelIndex, scratchWanted);
  e.indexOps(func);
  for (unsigned i = 0; i < func.getNumArguments(); ++i) {
    auto offset = e.offsetOf(func.getArgument(i));
    if (!offset)
      return offset.takeError();
    fn.args.push_back(bindingOf(func, i, offset));
  }

  SmallVector<Operation *> adamw;
  func.walk([&](AdamWUpdateOp op) { adamw.push_back(op); });
  bool check = func->getParentOfType<ModuleOp>()->hasAttr(KilnDialect::kCheckNumericsAttrName);
  // Casts of the arguments: one launch per group, where its last cast is.
  // Not under train.check_numerics, whose scans name an op by the step that
  // wrote it: a group's one step would name its last cast for all of them.
  llvm::DenseMap<Operation *, size_t> castGroupOf;
  std::vector<std::vector<Operation *>> castGroups;
  if (!check) {
    auto groups = castGroupsOf(func);
    if (!groups)
      return groups.takeError();
    castGroups = std::move(*groups);
  }
  for (auto [g, group] : llvm::enumerate(castGroups))
    for (Operation *op : group)
      castGroupOf[op] = g;
  // After an op's steps: its results scanned (the optimizer's update
  // excepted: a non-finite gradient is caught where it is made).
  auto checked = [&](Operation *op, size_t before) -> llvm::Error {
    if (!check || e.stepCount() == before || isa<AdamWUpdateOp, ConstantOp>(op))
      return llvm::Error::success();
    return emitChecks(e, op, e.stepCount() - 1);
  };
  // One op's steps (none for ops that run inside another's launch).
  auto emitOp = [&](Operation &op, size_t before) -> llvm::Error {
    if (isa<func::ReturnOp>(op) || isa<ReshapeOp>(op))
      return llvm::Error::success();
    if (isInlinedConstant(&op))
      return llvm::Error::success();
    if (isa<AdamWUpdateOp>(op)) {
      // One multi-tensor launch where the last update is (kiln-plan-buffers
      // keeps every update's operands alive until then).
      if (&op != adamw.back())
        return llvm::Error::success();
      if (llvm::Error err = emitAdamW(e, adamw))
        return err;
      return llvm::Error::success();
    }
    if (auto g = castGroupOf.find(&op); g != castGroupOf.end()) {
      const std::vector<Operation *> &group = castGroups[g->second];
      if (&op != group.back())
        return llvm::Error::success();
      if (llvm::Error err = emitCastGroup(e, group))
        return err;
      return llvm::Error::success();
    }
    if (isa<GlobalNormOp>(op)) {
      if (llvm::Error err = emitGlobalNorm(e, &op))
        return err;
      if (llvm::Error err = checked(&op, before))
        return err;
      return llvm::Error::success();
    }
    if (auto custom = dyn_cast<CustomKernelOp>(op)) {
      if (llvm::Error err = emitCustomKernel(e, custom))
        return err;
      if (llvm::Error err = checked(&op, before))
        return err;
      return llvm::Error::success();
    }
    if (isCollective(&op)) {
      if (llvm::Error err = emitCollective(e, &op))
        return err;
      return llvm::Error::success();
    }
    if (isa<SendOp, RecvOp>(op))
      return emitTransfer(e, &op);
    bool handled = false;
    for (auto emit : {emitMatmul, emitElementwise, emitDataMovement, emitReduction, emitComposite}) {
      auto done = emit(e, &op);
      if (!done)
        return done.takeError();
      if (*done) {
        handled = true;
        break;
      }
    }
    if (!handled)
      return error("codegen: no CUDA code for " + Emitter::describe(&op));
    if (llvm::Error err = checked(&op, before))
      return err;
    return llvm::Error::success();
  };
  // Collectives on a stream of their own (the CUDA executor with NCCL):
  // the first step of each later op that touches bytes an unfinished
  // collective reads or writes waits for it (PlanStep::joins).
  struct InFlight {
    size_t step;
    std::vector<std::pair<int64_t, int64_t>> ranges;
  };
  std::vector<InFlight> inFlight;
  for (Operation &op : func.getBody().front()) {
    size_t before = e.stepCount();
    // The ops whose launch this op's steps are: AdamW's one multi-tensor
    // launch at its last update, a cast group's at its last cast.
    SmallVector<Operation *> runs{&op};
    if (isa<AdamWUpdateOp>(op) && &op == adamw.back())
      runs.assign(adamw.begin(), adamw.end());
    if (auto g = castGroupOf.find(&op); g != castGroupOf.end() && &op == castGroups[g->second].back())
      runs.assign(castGroups[g->second].begin(), castGroups[g->second].end());
    if (llvm::Error err = emitOp(op, before))
      return err;
    if (e.stepCount() == before)
      continue;
    // A launch asking for more shared memory than the arch gives a block
    // would fail on the device; say so here, naming the op.
    for (size_t i = before; i < e.stepCount(); ++i) {
      const PlanStep &step = e.step(i);
      if (step.kind == PlanStep::Kind::Launch && step.sharedBytes > maxSharedBytes(options.arch))
        return error(llvm::formatv("codegen: {0}: kernel {1} needs {2} bytes of shared memory a "
                                   "block; {3} gives a block at most {4}",
                                   Emitter::describe(&op), plan.kernels[step.kernel].name,
                                   step.sharedBytes, options.arch, maxSharedBytes(options.arch))
                         .str());
    }
    std::vector<std::pair<int64_t, int64_t>> touched;
    for (Operation *r : runs)
      arenaRanges(e, r, touched);
    auto overlaps = [&](const InFlight &c) {
      for (auto [b0, e0] : c.ranges)
        for (auto [b1, e1] : touched)
          if (b0 < e1 && b1 < e0)
            return true;
      return false;
    };
    std::vector<int64_t> &joins = e.step(before).joins;
    llvm::erase_if(inFlight, [&](const InFlight &c) {
      if (!overlaps(c))
        return false;
      joins.push_back(static_cast<int64_t>(c.step));
      return true;
    });
    if (isCollective(&op) || isa<SendOp, RecvOp>(op))
      inFlight.push_back({before, std::move(touched)});
  }

  // What kiln-fuse did, for `kiln compile` and the Plan.
  int64_t fusions = 0, fusedOps = 0, normFusions = 0, normFusedOps = 0, crossEntropyFusions = 0,
          attentionBiasSums = 0, reductionFusions = 0, reductionFusedOps = 0;
  std::map<std::string, int64_t> epilogues; // by cuBLASLt epilogue, sorted
  int64_t broadcastReads = 0;
  int64_t epilogueOps = 0, wideGemms = 0, narrowDy = 0, columnSums = 0, embeddingInits = 0;
  int64_t copies = 0; // AdamW updates writing a working copy
  // Norm gradients reading a bf16/f16 dy for f32 x (a folded widening).
  func.walk([&](Operation *op) {
    if (isa<LayerNormGradOp, RmsNormGradOp>(op))
      narrowDy += tensorOf(op->getOperand(0)).getElementType() !=
                  tensorOf(op->getOperand(op->getNumOperands() - 1)).getElementType();
  });
  for (Operation &op : func.getBody().front()) {
    if (auto g = dyn_cast<EmbeddingGradOp>(op)) {
      embeddingInits += static_cast<bool>(g.getInit());
      continue;
    }
    if (auto a = dyn_cast<AdamWUpdateOp>(op)) {
      copies += static_cast<bool>(a.getNewCopy());
      continue;
    }
    if (auto mm = dyn_cast<MatmulOp>(op)) {
      wideGemms += tensorOf(mm.getLhs()).getElementType() != mm.getType().getElementType();
      continue;
    }
    auto fusion = dyn_cast<FusionOp>(op);
    if (!fusion)
      continue;
    if (fusion.isGemmEpilogue()) {
      if (auto body = matchGemmEpilogue(fusion); succeeded(body))
        ++epilogues[gemmEpilogueName(epilogueOf(*body)).str()];
      for (Operation &inner : fusion.getBodyOps())
        epilogueOps += !isa<MatmulOp, ReshapeOp>(inner);
      continue;
    }
    if (fusion.isCrossEntropyFusion()) {
      ++crossEntropyFusions;
      continue;
    }
    if (fusion.isAttentionGradFusion()) {
      ++attentionBiasSums;
      continue;
    }
    if (fusion.isReductionFusion()) {
      ++reductionFusions;
      for (Operation &inner : fusion.getBodyOps()) {
        broadcastReads += isa<BroadcastInDimOp>(inner);
        reductionFusedOps += !isa<ConstantOp, BroadcastInDimOp>(inner);
      }
      continue;
    }
    bool norm = fusion.isNormFusion();
    ++(norm ? normFusions : fusions);
    // (A norm gradient's column sum and its widening are counted apart.)
    Operation *sum = nullptr, *widen = nullptr;
    if (auto body = norm ? matchNormFusion(fusion) : FailureOr<NormFusionBody>(failure());
        succeeded(body) && body->columnSum) {
      ++columnSums;
      sum = body->columnSum;
      widen = body->widen;
    }
    for (Operation &inner : fusion.getBodyOps()) {
      broadcastReads += isa<BroadcastInDimOp>(inner);
      (norm ? normFusedOps : fusedOps) +=
          !isa<ConstantOp, BroadcastInDimOp>(inner) && &inner != sum && &inner != widen;
    }
  }
  if (broadcastReads)
    e.note(llvm::formatv("kiln-fuse: @{0} reads {1} broadcast operand(s) through index maps in its "
                         "fusions",
                         fn.name, broadcastReads)
               .str());
  if (fusions)
    e.note(llvm::formatv("kiln-fuse: @{0} runs {1} elementwise ops as {2} fused kernels ({3} "
                         "launches fewer)",
                         fn.name, fusedOps, fusions, fusedOps - fusions)
               .str());
  if (normFusions)
    e.note(llvm::formatv("kiln-fuse: @{0} fuses {2} elementwise ops into {1} norm kernels ({2} "
                         "launches fewer)",
                         fn.name, normFusions, normFusedOps - normFusions)
               .str());
  if (reductionFusions)
    e.note(llvm::formatv("kiln-fuse: @{0} ends {1} fused loop(s) in their reduction ({2} ops in "
                         "{1} reduction kernels: {3} launches fewer; the reduced operands not "
                         "stored unless used after)",
                         fn.name, reductionFusions, reductionFusedOps,
                         reductionFusedOps - reductionFusions)
               .str());
  if (attentionBiasSums)
    e.note(llvm::formatv("kiln-fuse: @{0} sums {1} bias gradient(s) in its attention gradients' "
                         "kernels (the qkv projections': the column sums of dqkv, not read again)",
                         fn.name, attentionBiasSums)
               .str());
  if (columnSums)
    e.note(llvm::formatv("kiln-fuse: @{0} sums {1} bias gradients in its norm gradients' kernels "
                         "(the residual gradient's column sums; no BGRADA epilogue for them)",
                         fn.name, columnSums)
               .str());
  if (embeddingInits)
    e.note(llvm::formatv("kiln-fuse: @{0} adds {1} embedding gradient(s) into the table's other "
                         "gradient (a tied head's: no zeroed table, no add kernel)",
                         fn.name, embeddingInits)
               .str());
  if (copies)
    e.note(llvm::formatv("kiln-fuse: @{0}'s AdamW writes {1} parameters' working copies (state "
                         "kiln.copy_of: no casts of the parameters at the step's top)",
                         fn.name, copies)
               .str());
  if (crossEntropyFusions)
    e.note(llvm::formatv("kiln-fuse: @{0} computes its cross-entropy and its gradient in one kernel",
                         fn.name)
               .str());
  if (!epilogues.empty()) {
    std::string kinds;
    for (auto &[name, count] : epilogues)
      kinds += (kinds.empty() ? "" : ", ") + std::to_string(count) + " " + name;
    e.note(llvm::formatv("kiln-fuse: @{0} folds {1} ops into GEMM epilogues ({2})", fn.name,
                         epilogueOps, kinds)
               .str());
  }
  if (wideGemms)
    e.note(llvm::formatv("kiln-fuse: @{0} has {1} bf16/f16 GEMMs writing f32 directly (no cast "
                         "kernel)",
                         fn.name, wideGemms)
               .str());

  if (narrowDy)
    e.note(llvm::formatv("kiln-fuse: @{0} has {1} norm gradients reading their bf16/f16 dy "
                         "(widened as they load; no cast, no f32 copy)",
                         fn.name, narrowDy)
               .str());

  if (check)
    e.note(llvm::formatv("train.check_numerics: @{0} scans every op's float results after the op "
                         "(NaN and +inf stop the step)",
                         fn.name)
               .str());

  // What kiln-recompute chose.
  if (std::string recompute = describeRecompute(func); !recompute.empty())
    e.note(recompute);

  // Results: in place, or copied back into the argument they replace.
  auto ret = cast<func::ReturnOp>(func.getBody().front().getTerminator());
  for (unsigned r = 0; r < ret.getNumOperands(); ++r) {
    Value v = ret.getOperand(r);
    auto offset = e.offsetOf(v);
    if (!offset)
      return offset.takeError();
    auto t = tensorOf(v);
    PlanBinding b{PlanBinding::Kind::Output, "result" + std::to_string(r), *offset,
                  *cpu::dtypeOf(t.getElementType()), std::vector<int64_t>(t.getShape()), ""};
    if (auto out = func.getResultAttrOfType<StringAttr>(r, KilnDialect::kOutputAttrName))
      b.name = out.getValue().str();
    else if (auto grad = func.getResultAttrOfType<StringAttr>(r, KilnDialect::kGradAttrName))
      b.name = "grad." + grad.getValue().str();
    if (auto alias = func.getResultAttrOfType<IntegerAttr>(r, KilnDialect::kAliasesAttrName)) {
      const PlanBinding &arg = fn.args[alias.getInt()];
      b.aliases = arg.name;
      b.name = arg.name;
      if (arg.offset != *offset)
        e.copy(nullptr, arg.offset, *offset, b.bytes());
      b.offset = arg.offset;
    }
    fn.results.push_back(std::move(b));
  }
  plan.functions.push_back(std::move(fn));
  return llvm::Error::success();
}

} // namespace

llvm::Expected<PlanMemory> planMemory(ModuleOp module) {
  PlanMemory total;
  bool first = true;
  for (auto func : module.getOps<func::FuncOp>()) {
    auto memory = func->getAttrOfType<DictionaryAttr>(KilnDialect::kMemoryAttrName);
    if (!memory)
      return error("codegen: @" + func.getSymName() + " has no buffer plan (run kiln-plan-buffers)");
    auto get = [&](llvm::StringRef key) {
      auto v = memory.getAs<IntegerAttr>(key);
      return v ? v.getInt() : 0;
    };
    if (first) {
      total.params = get("params");
      total.states = get("states");
      total.inputs = get("inputs");
      total.workspace = get("workspace");
      total.workspaceOffset = get("workspace_offset");
      first = false;
    }
    total.scratch = std::max(total.scratch, get("scratch"));
    if (get("peak_live") > total.peakLive) {
      total.peakLive = get("peak_live");
      total.gradsAtPeak = get("grads_at_peak");
    }
    total.total = std::max(total.total, get("total"));
  }
  return total;
}

llvm::Expected<Plan> buildPlan(ModuleOp module, const CodegenOptions &options) {
  Plan plan;
  plan.headers = kernelHeaders();
  plan.arch = options.arch;
  plan.smCount = options.smCount;
  plan.deterministic = module->hasAttr(KilnDialect::kDeterministicAttrName);
  if (plan.deterministic)
    plan.notes.push_back("train.deterministic: the flash backward adds dq's key blocks in order, "
                         "the embedding's gradient adds its rows in token order (a block per "
                         "rows of the table), each GEMM takes cuBLASLt's first heuristic "
                         "algorithm");
  auto memory = planMemory(module);
  if (!memory)
    return memory.takeError();
  plan.memory = *memory;
  llvm::StringMap<int> kernelIndex;
  int64_t scratchWanted = 0;
  for (auto func : module.getOps<func::FuncOp>())
    if (llvm::Error err = emitFunction(plan, func, options, kernelIndex, scratchWanted))
      return std::move(err);
  // The partial sums' room: the workspace less cuBLASLt's part and the
  // error word.
  const int64_t room = plan.memory.workspace - plan.memory.gemmWorkspace - kErrorWordBytes;
  if (scratchWanted > room)
    return llvm::make_error<WorkspaceTooSmall>(
        scratchWanted, room,
        static_cast<int64_t>(
            llvm::alignTo(plan.memory.gemmWorkspace + scratchWanted + kErrorWordBytes, 1 << 20)));
  return plan;
}

char WorkspaceTooSmall::ID = 0;

void WorkspaceTooSmall::log(llvm::raw_ostream &os) const {
  os << llvm::formatv("codegen needs {0} bytes of partial sums; the workspace has {1} (a "
                      "workspace of {2} bytes would do)",
                      wanted, room, workspaceBytes);
}

llvm::Expected<std::vector<std::vector<Operation *>>> castGroupsOf(Operation *funcOp) {
  auto func = cast<func::FuncOp>(funcOp);
  std::vector<std::vector<Operation *>> groups;
  llvm::DenseSet<int64_t> seen;
  int64_t current = -1; // the group of the op before, or -1
  for (Operation &op : func.getBody().front()) {
    auto mark = op.getAttrOfType<IntegerAttr>(KilnDialect::kCastGroupAttrName);
    if (!mark) {
      current = -1;
      continue;
    }
    auto stale = [&](const llvm::Twine &why) {
      return error("codegen: " + Emitter::describe(&op) + " has kiln.cast_group " +
                   llvm::Twine(mark.getInt()) + " but " + why +
                   " (run kiln-group-casts after the last pass that moves ops)");
    };
    if (std::string why = castGroupRefusal(&op); !why.empty())
      return stale(why);
    auto c = cast<CastOp>(op);
    Type from = cast<RankedTensorType>(c.getOperand().getType()).getElementType();
    Type to = cast<RankedTensorType>(c.getType()).getElementType();
    if (mark.getInt() == current) {
      auto first = cast<CastOp>(groups.back().front());
      if (cast<RankedTensorType>(first.getOperand().getType()).getElementType() != from ||
          cast<RankedTensorType>(first.getType()).getElementType() != to)
        return stale("converts other types than the group's first cast");
      // One launch converts the whole run at once: a member reading an
      // earlier member's result would read it unwritten.
      if (llvm::is_contained(groups.back(), c.getOperand().getDefiningOp()))
        return stale("reads an earlier member's result");
      groups.back().push_back(&op);
      continue;
    }
    if (!seen.insert(mark.getInt()).second)
      return stale("the group's casts do not follow each other");
    current = mark.getInt();
    groups.push_back({&op});
  }
  return groups;
}

/// "sm_86", "sm_90a", "sm_100f" -> 86, 90, 100; nullopt when not of that form.
static std::optional<unsigned> computeCapability(llvm::StringRef arch) {
  unsigned cc = 0;
  if (!arch.consume_front("sm_") || arch.empty())
    return std::nullopt;
  if (arch.back() == 'a' || arch.back() == 'f')
    arch = arch.drop_back();
  if (arch.getAsInteger(10, cc))
    return std::nullopt;
  return cc;
}

llvm::Error checkArch(llvm::StringRef arch) {
  static const int kKnown[] = {80, 86, 87, 88, 89, 90, 100, 101, 103, 110, 120, 121};
  std::optional<unsigned> cc = computeCapability(arch);
  if (cc && llvm::is_contained(kKnown, static_cast<int>(*cc)))
    return llvm::Error::success();
  std::string known;
  for (int k : kKnown)
    known += (known.empty() ? "sm_" : ", sm_") + std::to_string(k);
  return error("unknown GPU architecture '" + arch + "': kiln generates code for " + known +
               " (an 'a' suffix, e.g. sm_90a, for the arch-specific instructions)");
}

int64_t maxSharedBytes(llvm::StringRef arch) {
  unsigned cc = computeCapability(arch).value_or(0);
  if (cc == 80 || cc == 87)
    return 163 * 1024;
  if ((cc >= 90 && cc < 100) || cc == 100 || cc == 101 || cc == 103 || cc == 110)
    return 227 * 1024;
  return 99 * 1024;
}

llvm::Expected<Plan> compileToPlan(ModuleOp module, const CodegenOptions &options) {
  if (llvm::Error err = checkArch(options.arch))
    return std::move(err);
  if (llvm::Error err = checkAttentionTiles(options))
    return std::move(err);
  // The kernels' partial sums grow with the model's width (a norm
  // gradient's per-block column sums) and are known only once every kernel
  // is chosen: when they outgrow options.workspaceBytes, plan the buffers
  // again with the workspace they asked for (codegen's choices do not
  // depend on it, so the second plan fits).
  auto planWith = [&](int64_t workspace) -> llvm::Expected<Plan> {
    PassManager pm(module.getContext());
    PlanBuffersPassOptions planOptions;
    planOptions.workspaceBytes = workspace;
    pm.addPass(createPlanBuffersPass(planOptions));
    if (llvm::Error err = runPasses(pm, module, "buffer planning"))
      return std::move(err);
    return buildPlan(module, options);
  };
  auto plan = planWith(options.workspaceBytes);
  if (plan)
    return plan;
  int64_t workspace = 0;
  if (llvm::Error err = llvm::handleErrors(
          plan.takeError(), [&](const WorkspaceTooSmall &w) { workspace = w.workspaceBytes; }))
    return std::move(err);
  plan = planWith(workspace);
  if (!plan)
    return plan;
  // kiln-recompute chose for train.memory_budget with kiln-plan-buffers'
  // default workspace; the grown one must still fit.
  const int64_t defaultMiB = PlanBuffersPassOptions().workspaceBytes >> 20,
                grownMiB = llvm::divideCeil(workspace, 1 << 20);
  for (auto func : module.getOps<func::FuncOp>()) {
    auto rc = func->getAttrOfType<DictionaryAttr>(KilnDialect::kRecomputeAttrName);
    auto budget = rc ? rc.getAs<IntegerAttr>("budget") : nullptr;
    if (budget && plan->memory.total > budget.getInt())
      return error(llvm::formatv(
          "the arena is {0} bytes with the {1} MiB workspace the kernels' partial sums need, "
          "more than train.memory_budget ({2} bytes; kiln-recompute planned for a {3} MiB "
          "workspace): set the budget to at least {0} bytes",
          plan->memory.total, grownMiB, budget.getInt(), defaultMiB));
  }
  plan->notes.push_back(llvm::formatv("the workspace grew from {0} to {1} MiB for the kernels' "
                                      "partial sums",
                                      options.workspaceBytes >> 20, grownMiB)
                            .str());
  return plan;
}

} // namespace kiln::codegen
