//===- Bisect.cpp - `kiln bisect`: the first pass that changed the numbers --===//
//
// Compiles a config with a dump after every pass of the training pipeline
// (or reads a directory of such dumps, --dumps), then runs each function of
// each dump on the CPU interpreter with the same seeded inputs and compares
// it with the same function of the dump before: the first pass after which
// a function's results differ by more than the tolerance is reported, with
// the result, how far off it is, and the op (and model scope) that makes it
// in the new IR. A pass that creates a function (autodiff's @train_step)
// starts a new baseline for it: gradients are checked against finite
// differences by `kiln gradcheck`, not here.
//
// With --device cuda it checks the generated code instead: @train_step runs
// once on the GPU, step by step, and after each op's kernels (or cuBLASLt
// GEMMs) the op's results are compared with the interpreter's evaluation
// of that op on the very inputs the kernels read (copied from the GPU just
// before). The first op beyond the tolerance is named with its kernel.
//
//===----------------------------------------------------------------------===//

#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"

#include "codegen/PlanBuilder.h"
#include "ir/KilnOps.h"
#include "passes/PassUtils.h"
#include "runtime/Random.h"
#include "runtime/cpu/Interpreter.h"
#include "runtime/cuda/CudaBackend.h"
#include "runtime/cuda/CudaExecutor.h"
#include "train/Compile.h"
#include "train/Loop.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <optional>

using namespace llvm;

namespace kiln::cli {

static cl::opt<std::string> configPath(cl::Positional, cl::desc("<config.toml>"),
                                       cl::sub(bisectCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> dumpsDir("dumps",
                                     cl::desc("Bisect these dumps (kiln compile --dump-dir) instead "
                                              "of compiling a config"),
                                     cl::value_desc("dir"), cl::sub(bisectCommand()),
                                     cl::cat(kilnCategory()));
static cl::opt<std::string> keepDir("keep",
                                    cl::desc("Write the dumps here and keep them (default: a "
                                             "temporary directory, removed after)"),
                                    cl::value_desc("dir"), cl::sub(bisectCommand()),
                                    cl::cat(kilnCategory()));
static cl::opt<double> tolerance("tolerance",
                                 cl::desc("Largest relative difference a pass may make: "
                                          "max |new - old| / max |old| per result (default 1e-5)"),
                                 cl::init(1e-5), cl::sub(bisectCommand()), cl::cat(kilnCategory()));
static cl::opt<uint64_t> seed("seed", cl::desc("Seed of the inputs"), cl::init(0),
                              cl::sub(bisectCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> device(
    "device",
    cl::desc("cpu: each pass's IR on the interpreter (default); cuda: each generated kernel "
             "of @train_step on the GPU against the interpreter, on the kernel's own inputs"),
    cl::init("cpu"), cl::sub(bisectCommand()), cl::cat(kilnCategory()));

namespace {

/// Seeded arguments for `func` by what each is: token ids below the
/// vocabulary (read from the embedding or the arguments' bound, `vocab`),
/// lr 1e-3, step 1, loss scale 1, parameters N(0, 0.1) (larger than an
/// initialization, so that a wrong op moves the loss), optimizer states
/// |N(0, 1e-3)| (second moments must not be negative), other inputs N(0, 1).
std::vector<cpu::HostTensor> argumentsFor(mlir::func::FuncOp func, int64_t vocab, uint64_t seed) {
  std::vector<cpu::HostTensor> args;
  for (mlir::BlockArgument arg : func.getArguments()) {
    unsigned i = arg.getArgNumber();
    auto type = cpu::hostTypeOf(arg.getType());
    if (!type) {
      consumeError(type.takeError());
      args.emplace_back();
      continue;
    }
    cpu::HostTensor t(type->first, type->second);
    auto name = [&](StringRef attr) {
      auto s = func.getArgAttrOfType<mlir::StringAttr>(i, attr);
      return s ? s.getValue().str() : std::string();
    };
    std::string input = name(KilnDialect::kInputAttrName), param = name(KilnDialect::kParamAttrName);
    bool state = func.getArgAttr(i, KilnDialect::kStateAttrName) != nullptr;
    Rng rng(seed, input + "|" + param + "|" + std::to_string(state ? i : 0));
    bool integer = t.dtype() == cpu::DType::I32 || t.dtype() == cpu::DType::I64;
    for (int64_t e = 0; e < t.numel(); ++e) {
      double v;
      if (integer)
        v = input == "segments" ? 0.0 : input == "positions" ? static_cast<double>(e % std::max<int64_t>(1, t.dim(-1))) : static_cast<double>(rng.next() % static_cast<uint64_t>(std::max<int64_t>(1, vocab)));
      else if (input == "lr")
        v = 1e-3;
      else if (input == "step" || input == "loss_scale")
        v = 1;
      else if (!param.empty())
        v = 0.1 * rng.normal();
      else if (state)
        v = 1e-3 * std::fabs(rng.normal());
      else
        v = rng.normal();
      t.set(e, v);
    }
    args.push_back(std::move(t));
  }
  // Working copies (kiln.copy_of): their parameter converted.
  deriveCopyArguments(func, args);
  return args;
}

/// For each argument of `before`, the argument of `after` it binds to —
/// when `after` takes all of them (by name and type, and maybe more: the
/// working copies kiln-fuse adds) and returns `before`'s results first;
/// nothing when the two cannot be compared.
std::optional<std::vector<unsigned>> argumentMap(mlir::func::FuncOp before,
                                                 mlir::func::FuncOp after) {
  std::vector<unsigned> map;
  if (before.getFunctionType() == after.getFunctionType()) {
    for (unsigned i = 0; i < before.getNumArguments(); ++i)
      map.push_back(i);
    return map;
  }
  auto results = before.getResultTypes(), afterResults = after.getResultTypes();
  if (afterResults.size() < results.size() ||
      !std::equal(results.begin(), results.end(), afterResults.begin()))
    return std::nullopt;
  for (unsigned i = 0; i < before.getNumArguments(); ++i) {
    std::string name = argumentBinding(before, i);
    std::optional<unsigned> found;
    for (unsigned j = 0; j < after.getNumArguments() && !name.empty() && !found; ++j)
      if (argumentBinding(after, j) == name &&
          after.getArgumentTypes()[j] == before.getArgumentTypes()[i])
        found = j;
    if (!found)
      return std::nullopt;
    map.push_back(*found);
  }
  return map;
}

/// The largest token id every embedding of an input's ids and every
/// cross-entropy of `module` accepts, plus one (256 when it has neither).
/// (A mixture of experts' gathers read computed ids.)
int64_t vocabOf(mlir::ModuleOp module) {
  int64_t vocab = INT64_MAX;
  module.walk([&](EmbeddingOp op) {
    if (!isa<mlir::BlockArgument>(op.getIds()))
      return;
    auto table = cast<mlir::RankedTensorType>(op.getTable().getType());
    vocab = std::min(vocab, table.getDimSize(table.getRank() - 2));
  });
  module.walk([&](CrossEntropyOp op) {
    if (auto valid = op.getValidClasses())
      vocab = std::min<int64_t>(vocab, static_cast<int64_t>(*valid));
  });
  return vocab == INT64_MAX ? 256 : vocab;
}

/// An op as text without its operands' names: name, attributes, result
/// types and scope.
std::string signatureOf(mlir::Operation *op) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << op->getName() << " " << op->getAttrDictionary() << " " << op->getResultTypes() << " @"
     << scopeOf(op);
  return s;
}

/// The first op of `after` (program order) with no like op left in
/// `before` — the first place the pass changed, a candidate for where the
/// numbers went wrong.
mlir::Operation *firstChangedOp(mlir::func::FuncOp before, mlir::func::FuncOp after) {
  llvm::StringMap<int> unused;
  before.walk([&](mlir::Operation *op) { ++unused[signatureOf(op)]; });
  mlir::Operation *first = nullptr;
  after.getBody().walk<mlir::WalkOrder::PreOrder>([&](mlir::Operation *op) {
    if (isa<mlir::func::ReturnOp>(op))
      return mlir::WalkResult::advance();
    int &n = unused[signatureOf(op)];
    if (n > 0) {
      --n;
      return mlir::WalkResult::advance();
    }
    first = op;
    return mlir::WalkResult::interrupt();
  });
  return first;
}

struct Stage {
  std::string name, path; ///< "07-cse", its file
  mlir::OwningOpRef<mlir::ModuleOp> module;
};


/// "kiln.add at loc(\"h.0.attn\")", as the plan names ops.
std::string describeOp(mlir::Operation *op) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << op->getName() << " at " << op->getLoc();
  return s;
}

/// The arena offset of `v` after kiln-plan-buffers, or -1 (an inlined
/// constant).
int64_t offsetOf(mlir::Value v) {
  if (auto arg = dyn_cast<mlir::BlockArgument>(v)) {
    auto func = cast<mlir::func::FuncOp>(arg.getOwner()->getParentOp());
    auto o = func.getArgAttrOfType<mlir::IntegerAttr>(arg.getArgNumber(), KilnDialect::kOffsetAttrName);
    return o ? o.getInt() : -1;
  }
  auto offsets = v.getDefiningOp()->getAttrOfType<mlir::DenseI64ArrayAttr>(KilnDialect::kOffsetsAttrName);
  unsigned index = cast<mlir::OpResult>(v).getResultNumber();
  return offsets && static_cast<int64_t>(index) < offsets.size() ? offsets[index] : -1;
}

/// The tolerance for an op's results (--tolerance when given): what the
/// kernels' own rounding and summation order may move in the op's least
/// precise float type, operands included (a bf16 GEMM writing f32 rounds
/// its inputs' way, and its epilogue skips a rounding the IR has). An AdamW
/// update's working copy (its fourth result) is held to its own type; its
/// other results to the f32 update's.
double kernelTolerance(mlir::Operation *op, unsigned result) {
  if (tolerance.getNumOccurrences())
    return tolerance;
  if (auto a = dyn_cast<AdamWUpdateOp>(op); a && a.getNewCopy() && result == 3)
    return 3e-2;
  cpu::DType t = cpu::DType::F64;
  auto rank = [](cpu::DType d) {
    return d == cpu::DType::F64 ? 0 : d == cpu::DType::F32 ? 1 : 2;
  };
  bool anyFloat = false;
  // A fusion's body counts too: its intermediates round like its ops'.
  op->walk([&](mlir::Operation *inner) {
    llvm::SmallVector<mlir::Type> types(inner->getOperandTypes());
    llvm::append_range(types, inner->getResultTypes());
    if (auto a = dyn_cast<AdamWUpdateOp>(inner); a && a.getNewCopy())
      types.pop_back();
    for (mlir::Type type : types) {
      auto tensor = dyn_cast<mlir::RankedTensorType>(type);
      auto d = tensor ? cpu::dtypeOf(tensor.getElementType()) : std::nullopt;
      if (!d || !cpu::isFloat(*d))
        continue;
      anyFloat = true;
      if (rank(*d) > rank(t))
        t = *d;
    }
  });
  if (!anyFloat)
    return 0;
  switch (t) {
  case cpu::DType::F64:
    return 1e-9;
  case cpu::DType::F32:
    return 1e-4;
  case cpu::DType::BF16:
  case cpu::DType::F16:
    return 3e-2;
  default:
    return 0;
  }
}

/// How far `got` is from `want`: the largest |got - want|, where, and
/// want's largest finite magnitude. Equal non-finite values (NaN in both,
/// the same infinity) agree; any other non-finite mismatch is `nonFinite`.
/// Both bisects compare through it.
struct Difference {
  double worst = 0, scale = 0;
  int64_t at = -1;
  bool nonFinite = false;
};
Difference difference(const cpu::HostTensor &want, const cpu::HostTensor &got) {
  Difference d;
  for (int64_t e = 0; e < want.numel(); ++e)
    if (std::isfinite(want.get(e)))
      d.scale = std::max(d.scale, std::fabs(want.get(e)));
  for (int64_t e = 0; e < want.numel(); ++e) {
    double x = want.get(e), y = got.get(e);
    if (!std::isfinite(x) || !std::isfinite(y)) {
      if ((std::isnan(x) && std::isnan(y)) || x == y)
        continue;
      d.nonFinite = true;
      d.at = e;
      return d;
    }
    if (double diff = std::fabs(x - y); diff > d.worst) {
      d.worst = diff;
      d.at = e;
    }
  }
  return d;
}

/// max |gpu - cpu| / max |cpu| (the absolute difference when cpu is all
/// zero; +inf for a non-finite mismatch).
double relativeError(const cpu::HostTensor &gpu, const cpu::HostTensor &cpu) {
  Difference d = difference(cpu, gpu);
  if (d.nonFinite)
    return std::numeric_limits<double>::infinity();
  return d.scale > 0 ? d.worst / d.scale : d.worst;
}

/// --device cuda: every op of @train_step that runs kernels, against the
/// interpreter on the same inputs.
int bisectKernels(RunConfig config) {
  // The numerics scans would be the ops' last steps; they check nothing
  // bisect does not.
  config.train.check_numerics = false;
  auto backendOr = tooling::makeCudaBackend(&outs());
  if (!backendOr)
    return fail("bisect", "--device cuda: " + toString(backendOr.takeError()));
  cuda::CudaBackend &backend = **backendOr;
  mlir::MLIRContext ctx;
  auto module = tooling::buildForwardModule(ctx, config, mlir::Float32Type::get(&ctx));
  if (!module)
    return fail("bisect", toString(module.takeError()));
  auto written = tooling::runTrainingPipeline(**module, config, {});
  if (!written)
    return fail("bisect", toString(written.takeError()));
  if (Error err = backend.load(**module, static_cast<uint64_t>(config.train.seed)))
    return fail("bisect", toString(std::move(err)));
  cuda::CudaExecutor &executor = backend.executor();
  const Plan &plan = executor.plan();
  auto func = (**module).lookupSymbol<mlir::func::FuncOp>("train_step");
  const PlanFunction *pf = plan.function("train_step");
  if (!func || !pf)
    return fail("bisect", "the compiled module has no @train_step");
  std::vector<mlir::Operation *> ops;
  for (mlir::Operation &op : func.getBody().front())
    ops.push_back(&op);

  // The arguments bisect always uses (seeded), written into the arena; the
  // step's inputs go through inspect().
  std::vector<cpu::HostTensor> args = argumentsFor(func, config.model.vocab_size, seed);
  std::map<std::string, cpu::HostTensor> inputs;
  for (auto [i, b] : llvm::enumerate(pf->args)) {
    if (b.kind == PlanBinding::Kind::Input) {
      inputs[b.name] = args[i];
      continue;
    }
    std::vector<char> packed(static_cast<size_t>(b.bytes()));
    cuda::packForDevice(args[i], packed.data());
    if (Error err = executor.write(b.offset, packed.data(), b.bytes()))
      return fail("bisect", toString(std::move(err)));
  }

  // Each op's first and last step. AdamW's one multi-tensor launch covers
  // every update, and the copies before it (results kiln-plan-buffers
  // could not put in place) belong to the group: all of them count as the
  // last update's.
  // Likewise a multi-tensor launch of the arguments' casts (a
  // kiln.cast_group of kiln-group-casts) covers its group.
  std::vector<mlir::Operation *> adamw;
  int64_t lastAdamW = -1;
  for (auto [i, op] : llvm::enumerate(ops))
    if (isa<AdamWUpdateOp>(op)) {
      adamw.push_back(op);
      lastAdamW = static_cast<int64_t>(i);
    }
  std::map<mlir::Operation *, int64_t> indexOf;
  for (auto [i, op] : llvm::enumerate(ops))
    indexOf[op] = static_cast<int64_t>(i);
  std::map<int64_t, std::vector<mlir::Operation *>> castGroupAt; // by its last cast's index
  std::map<int64_t, int64_t> castGroupEnd;                       // a member's index -> that
  auto castGroups = codegen::castGroupsOf(func);
  if (!castGroups)
    return fail("bisect", toString(castGroups.takeError()));
  for (const std::vector<mlir::Operation *> &group : *castGroups) {
    int64_t last = indexOf[group.back()];
    castGroupAt[last] = group;
    for (mlir::Operation *op : group)
      castGroupEnd[indexOf[op]] = last;
  }
  auto groupOf = [&](int64_t index) {
    if (index >= 0 && index < static_cast<int64_t>(ops.size()) && isa<AdamWUpdateOp>(ops[index]))
      return lastAdamW;
    if (auto it = castGroupEnd.find(index); it != castGroupEnd.end())
      return it->second;
    return index;
  };
  std::map<int64_t, std::pair<size_t, size_t>> span;
  for (auto [i, s] : llvm::enumerate(pf->steps))
    if (s.opIndex >= 0) {
      auto [it, fresh] = span.try_emplace(groupOf(s.opIndex), i, i);
      it->second.second = i;
    }
  auto comparedAt = [&](int64_t index) {
    std::vector<mlir::Operation *> group{ops[index]};
    if (isa<AdamWUpdateOp>(ops[index]))
      group = adamw;
    else if (auto it = castGroupAt.find(index); it != castGroupAt.end())
      group = it->second;
    return group;
  };
  auto kernelOf = [&](size_t i) {
    const PlanStep &s = pf->steps[i];
    return s.kind == PlanStep::Kind::Launch ? "kernel " + plan.kernels[s.kernel].name
           : s.kind == PlanStep::Kind::Gemm ? std::string("a cuBLASLt GEMM")
                                            : std::string("a memset or copy");
  };

  struct Row {
    std::string op, kernel;
    unsigned result;
    double error, tolerance;
  };
  std::vector<Row> rows;
  std::optional<Row> first;
  int compared = 0, skipped = 0;
  std::map<mlir::Operation *, std::vector<cpu::HostTensor>> operands;
  auto read = [&](mlir::Value v, int64_t offset) -> Expected<cpu::HostTensor> {
    auto t = cpu::hostTypeOf(v.getType());
    if (!t)
      return t.takeError();
    std::vector<char> raw(static_cast<size_t>(cpu::product(t->second) *
                                              static_cast<int64_t>(cpu::dtypeSize(t->first))));
    if (Error err = executor.read(offset, raw.data(), static_cast<int64_t>(raw.size())))
      return std::move(err);
    return cuda::unpackFromDevice(raw.data(), t->first, t->second);
  };
  auto hook = [&](size_t i, bool before) -> Error {
    int64_t index = groupOf(pf->steps[i].opIndex);
    if (index < 0 || index >= static_cast<int64_t>(ops.size()))
      return Error::success();
    auto [firstStep, lastStep] = span[index];
    if (before && i == firstStep) {
      for (mlir::Operation *op : comparedAt(index)) {
        std::vector<cpu::HostTensor> &in = operands[op];
        in.clear();
        for (mlir::Value v : op->getOperands()) {
          if (int64_t offset = offsetOf(v); offset >= 0) {
            auto t = read(v, offset);
            if (!t)
              return t.takeError();
            in.push_back(std::move(*t));
            continue;
          }
          mlir::Operation *def = v.getDefiningOp();
          if (!def || !isa<ConstantOp>(def))
            return createStringError(inconvertibleErrorCode(),
                                     "an operand of " + describeOp(op) + " has no buffer");
          llvm::SmallVector<cpu::HostTensor, 1> c;
          if (Error err = cpu::evaluateOp(def, {}, c))
            return err;
          in.push_back(std::move(c[0]));
        }
      }
    }
    if (!before && i == lastStep) {
      for (mlir::Operation *op : comparedAt(index)) {
        std::vector<const cpu::HostTensor *> in;
        for (const cpu::HostTensor &t : operands[op])
          in.push_back(&t);
        llvm::SmallVector<cpu::HostTensor, 4> want;
        if (Error err = cpu::evaluateOp(op, in, want)) {
          consumeError(std::move(err));
          ++skipped;
          continue;
        }
        ++compared;
        for (auto [r, result] : llvm::enumerate(op->getResults())) {
          int64_t offset = offsetOf(result);
          if (offset < 0)
            continue;
          auto got = read(result, offset);
          if (!got)
            return got.takeError();
          double tol =
              cpu::isFloat(got->dtype()) ? kernelTolerance(op, static_cast<unsigned>(r)) : 0;
          Row row{describeOp(op), kernelOf(i), static_cast<unsigned>(r),
                  relativeError(*got, want[r]), tol};
          if (!first && !(row.error <= tol))
            first = row;
          rows.push_back(std::move(row));
        }
        operands.erase(op);
      }
    }
    return Error::success();
  };
  outs() << formatv("kiln bisect --device cuda: @train_step, {0} steps for {1} ops; each op's "
                    "results against the interpreter on the kernels' own inputs\n",
                    pf->steps.size(), ops.size());
  if (Error err = executor.inspect("train_step", inputs, hook))
    return fail("bisect", toString(std::move(err)));

  std::vector<const Row *> worst;
  for (const Row &r : rows)
    worst.push_back(&r);
  std::sort(worst.begin(), worst.end(), [](const Row *a, const Row *b) {
    return a->error / std::max(a->tolerance, 1e-300) > b->error / std::max(b->tolerance, 1e-300);
  });
  outs() << formatv("  compared {0} ops ({1} results){2}; the largest errors against their "
                    "tolerance:\n",
                    compared, rows.size(),
                    skipped ? formatv(", {0} not evaluable on the interpreter", skipped).str() : "");
  for (size_t k = 0; k < worst.size() && k < 8; ++k)
    outs() << formatv("    {0,9:e2} (tolerance {1:e0})  result {2} of {3}, {4}\n", worst[k]->error,
                      worst[k]->tolerance, worst[k]->result, worst[k]->op, worst[k]->kernel);
  if (first) {
    outs() << formatv("FIRST MISMATCH: result {0} of {1}, written by {2}: relative error {3:e2} > "
                      "{4:e0}\n",
                      first->result, first->op, first->kernel, first->error, first->tolerance);
    return 1;
  }
  if (compared == 0)
    return fail("bisect", "no op of @train_step could be compared");
  outs() << formatv("PASS: every kernel agrees with the interpreter{0}\n",
                    skipped ? formatv(" ({0} ops not compared)", skipped).str() : "");
  return 0;
}
} // namespace

int runBisect() {
  if (configPath.empty() == dumpsDir.empty())
    return fail("bisect", "give a config to compile, or --dumps DIR (kiln compile --dump-dir), "
                          "not both");
  if (device != "cpu" && device != "cuda")
    return fail("bisect", "--device must be cpu or cuda, not '" + device + "'");
  if (device == "cuda" && !dumpsDir.empty())
    return fail("bisect", "--device cuda compiles a config; it does not read --dumps");
  if (!(tolerance >= 0) || !std::isfinite(tolerance))
    return fail("bisect", "--tolerance must be a finite number, not negative");
  int64_t vocab = 256;
  std::string dir = dumpsDir;
  SmallString<128> temporary; // removed on every return
  llvm::scope_exit cleanup([&] {
    if (!temporary.empty())
      sys::fs::remove_directories(temporary);
  });
  if (!configPath.empty()) {
    auto config = loadConfig(configPath, setOverrides());
    if (!config)
      return fail("bisect", toString(config.takeError()));
    vocab = config->model.vocab_size;
    if (config->parallel.numRanks() > 1)
      return fail("bisect", "bisect runs the one-device program; drop the [parallel] mesh");
    if (device == "cuda")
      return bisectKernels(*config);
    if (keepDir.empty()) {
      if (std::error_code ec = sys::fs::createUniqueDirectory("kiln-bisect", temporary))
        return fail("bisect", "cannot create a temporary directory: " + ec.message());
      dir = std::string(temporary);
    } else {
      dir = keepDir;
    }
    mlir::MLIRContext ctx;
    auto module = tooling::buildForwardModule(ctx, *config, mlir::Float32Type::get(&ctx));
    if (!module)
      return fail("bisect", toString(module.takeError()));
    auto written = tooling::runTrainingPipeline(**module, *config, {dir, {"all"}});
    if (!written)
      return fail("bisect", toString(written.takeError()));
  }

  // The dumps in pass order (their names start with the pass's number).
  std::vector<std::string> files;
  std::error_code ec;
  for (sys::fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec))
    if (StringRef(it->path()).ends_with(".mlir"))
      files.push_back(it->path());
  if (ec)
    return fail("bisect", "cannot read '" + dir + "': " + ec.message());
  std::sort(files.begin(), files.end());
  if (files.size() < 2)
    return fail("bisect", "'" + dir + "' holds " + std::to_string(files.size()) +
                              " dumps; bisecting needs the IR before and after at least one pass");

  mlir::MLIRContext ctx;
  tooling::loadDialects(ctx);
  ctx.allowUnregisteredDialects(false);
  outs() << formatv("kiln bisect: {0} dumps in {1}; each function on the CPU interpreter, "
                    "tolerance {2:e1} relative\n",
                    files.size(), dir, tolerance.getValue());
  std::optional<Stage> previous;
  for (const std::string &file : files) {
    Stage stage{sys::path::stem(file).str(), file, mlir::parseSourceFile<mlir::ModuleOp>(file, &ctx)};
    if (!stage.module)
      return fail("bisect", "'" + file + "' is not valid kiln IR (the parser's message is above)");
    if (!previous) {
      if (dumpsDir.getNumOccurrences())
        vocab = vocabOf(*stage.module);
      previous = std::move(stage);
      continue;
    }
    int compared = 0;
    for (auto func : stage.module->getOps<mlir::func::FuncOp>()) {
      auto before = previous->module->lookupSymbol<mlir::func::FuncOp>(func.getSymName());
      if (func.isExternal() || !before || before.isExternal())
        continue;
      auto map = argumentMap(before, func);
      if (!map)
        continue;
      std::vector<cpu::HostTensor> args = argumentsFor(func, vocab, seed), beforeArgs;
      for (unsigned j : *map)
        beforeArgs.push_back(args[j]);
      auto run =
          [&](mlir::func::FuncOp f,
              const std::vector<cpu::HostTensor> &in) -> Expected<std::vector<cpu::HostTensor>> {
        auto interp = cpu::Interpreter::create(f);
        if (!interp)
          return interp.takeError();
        return (*interp)->run(in);
      };
      auto want = run(before, beforeArgs);
      if (!want)
        return fail("bisect", formatv("@{0} of {1} does not run: {2}", func.getSymName(),
                                      previous->name, toString(want.takeError())));
      auto got = run(func, args);
      if (!got) {
        outs() << formatv("first failure: {0}: @{1} no longer runs: {2}\n", stage.name,
                          func.getSymName(), toString(got.takeError()));
        return 1;
      }
      ++compared;
      auto results = func.getBody().front().getTerminator()->getOperands();
      for (size_t r = 0; r < want->size() && r < got->size(); ++r) {
        const cpu::HostTensor &a = (*want)[r], &b = (*got)[r];
        if (!a.defined() || a.numel() != b.numel())
          continue;
        auto [worst, scale, at, nonFinite] = difference(a, b);
        double rel = nonFinite ? INFINITY : worst / std::max(scale, 1e-30);
        if (!nonFinite && rel <= tolerance)
          continue;
        auto name = func.getResultAttrOfType<mlir::StringAttr>(r, KilnDialect::kOutputAttrName);
        mlir::Operation *producer = r < results.size() ? results[r].getDefiningOp() : nullptr;
        outs() << formatv("first pass that changed the numbers: {0}\n", stage.name);
        outs() << formatv("  @{0} result #{1}{2}: element {3} is {4:e4} after it, {5:e4} before "
                          "({6:e2} relative to the result's largest, tolerance {7:e1})\n",
                          func.getSymName(), r, name ? " (" + name.getValue().str() + ")" : "", at,
                          b.get(at), a.get(at), rel, tolerance.getValue());
        if (producer)
          outs() << formatv("  made by {0}{1} in {2}\n", producer->getName().getStringRef(),
                            scopeOf(producer).empty() ? "" : " at \"" + scopeOf(producer) + "\"",
                            stage.path);
        if (mlir::Operation *changed = firstChangedOp(before, func)) {
          std::string text;
          llvm::raw_string_ostream os(text);
          changed->print(os, mlir::OpPrintingFlags().skipRegions().elideLargeElementsAttrs(8));
          outs() << formatv("  the first op of @{0} the pass changed{1}:\n    {2}\n",
                            func.getSymName(),
                            scopeOf(changed).empty() ? "" : " (at \"" + scopeOf(changed) + "\")",
                            StringRef(text).trim());
        }
        outs() << formatv("  the IR before: {0}\n", previous->path);
        return 1;
      }
    }
    outs() << formatv("  {0}: {1} function(s) agree\n", stage.name, compared);
    previous = std::move(stage);
  }
  outs() << "no pass changed the numbers beyond the tolerance\n";
  return 0;
}

} // namespace kiln::cli
