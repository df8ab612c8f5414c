//===- Inspect.cpp - `kiln inspect`: where the FLOPs, bytes and memory go ---===//
//
// Compiles a config as `kiln train` would (the training pipeline, fusion
// included, then kiln-plan-buffers with record-live) and reads the result:
//   - per op or fusion region of one function: FLOPs and bytes from
//     CostOpInterface (a kiln.fusion counts its body, reading its inputs and
//     writing its results once), arithmetic intensity, and the roofline
//     bound max(FLOPs / peak, bytes / bandwidth) on a stated device;
//   - the same summed by kind, and the roofline sum (a lower bound of the
//     step's time on that device);
//   - the buffer plan over the function: temporary bytes live at every op
//     (an SVG plot with --memory-svg), and at the peak every value alive
//     with the op that made it and the last op that keeps it alive;
//   - one transformer block's ops as a Graphviz graph (--dot), with each
//     fusion region drawn as a cluster of its body.
// With --profile FILE (kiln bench --profile's JSON from a GPU run of the same
// config), the measured GPU time of each op beside its bound.
//
//===----------------------------------------------------------------------===//

#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"

#include "codegen/Emitter.h"
#include "ir/KilnOps.h"
#include "passes/PassUtils.h"
#include "passes/Passes.h"
#include "support/Files.h"
#include "train/Compile.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <map>

using namespace llvm;

namespace kiln::cli {

static cl::opt<std::string> configPath(cl::Positional, cl::desc("<config.toml>"), cl::Required,
                                       cl::sub(inspectCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> functionName("function",
                                         cl::desc("The function to inspect (default: train_step, "
                                                  "or apply_step with gradient accumulation)"),
                                         cl::sub(inspectCommand()), cl::cat(kilnCategory()));
static cl::opt<int> top("top", cl::desc("Rows of the per-op table, by roofline time (default 15)"),
                        cl::init(15), cl::sub(inspectCommand()), cl::cat(kilnCategory()));
static cl::opt<double> peakTflops("peak-tflops",
                                  cl::desc("The device's peak for the roofline, TFLOP/s (default: "
                                           "the H200's dense 989 for bf16/f16, 67 for f32)"),
                                  cl::init(0), cl::sub(inspectCommand()), cl::cat(kilnCategory()));
static cl::opt<double> bandwidth("bandwidth",
                                 cl::desc("The device's memory bandwidth for the roofline, TB/s "
                                          "(default: the H200's 4.8)"),
                                 cl::init(4.8), cl::sub(inspectCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> memorySvg("memory-svg",
                                      cl::desc("Write the temporaries live at each op as an SVG plot"),
                                      cl::value_desc("file.svg"), cl::sub(inspectCommand()),
                                      cl::cat(kilnCategory()));
static cl::opt<std::string> dotPath("dot",
                                    cl::desc("Write one transformer block's ops as Graphviz dot, "
                                             "fusion regions as clusters"),
                                    cl::value_desc("file.dot"), cl::sub(inspectCommand()),
                                    cl::cat(kilnCategory()));
static cl::opt<int> block("block", cl::desc("The block --dot draws (default 0)"), cl::init(0),
                          cl::sub(inspectCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> profilePath(
    "profile",
    cl::desc("Measured times to set beside the bounds: the JSON `kiln bench --profile` wrote "
             "for the same config on a GPU"),
    cl::value_desc("profile.json"), cl::sub(inspectCommand()), cl::cat(kilnCategory()));

namespace {

/// Bytes in the largest binary unit that keeps the number ≥ 1.
std::string gib(double bytes) {
  const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  return u ? formatv("{0:f2} {1}", bytes, units[u]).str() : formatv("{0:f0} B", bytes).str();
}

std::string human(double v) {
  const char *units[] = {"", "K", "M", "G", "T", "P"};
  int u = 0;
  while (std::fabs(v) >= 1000 && u < 5) {
    v /= 1000;
    ++u;
  }
  return u ? formatv("{0:f2} {1}", v, units[u]).str() : formatv("{0:f0}", v).str();
}

/// What an op or region is called in the tables: the op's name without the
/// dialect, a GEMM epilogue by its kind, a loop fusion by its body.
std::string kindOf(mlir::Operation *op) {
  auto fusion = dyn_cast<FusionOp>(op);
  if (!fusion)
    return op->getName().getStringRef().drop_front(op->getName().getDialectNamespace().size() + 1).str();
  if (fusion.isGemmEpilogue())
    return "matmul+epilogue";
  std::map<std::string, int> counts;
  for (mlir::Operation &inner : fusion.getBodyOps())
    ++counts[inner.getName().getStringRef().drop_front(5).str()];
  std::string s = "fusion(";
  int shown = 0;
  for (auto &[name, n] : counts) {
    if (shown++ == 3) {
      s += ",…";
      break;
    }
    s += (shown > 1 ? "," : "") + name + (n > 1 ? "×" + std::to_string(n) : "");
  }
  return s + ")";
}

struct Row {
  mlir::Operation *op;
  std::string kind, scope;
  double flops, bytes, seconds;
  bool computeBound;
  double measured = -1; ///< seconds, from --profile; -1: none
};

/// kiln bench --profile's JSON: the GPU seconds of each plan step, summed
/// by the IR op the step came from, as the plan names it (op name and
/// location: Emitter::describe). Ops that share a name and location share
/// the sum.
Expected<StringMap<double>> readProfile(StringRef path) {
  auto buffer = readRegularFile(path, "profile");
  if (!buffer)
    return buffer.takeError();
  auto json = json::parse((*buffer)->getBuffer());
  if (!json)
    return createStringError(inconvertibleErrorCode(), "'" + path + "' is not JSON: " +
                                                           toString(json.takeError()));
  const json::Array *steps = json->getAsObject() ? json->getAsObject()->getArray("steps") : nullptr;
  if (!steps)
    return createStringError(inconvertibleErrorCode(),
                             "'" + path + "' is not a kiln bench --profile file (no \"steps\")");
  StringMap<double> byOp;
  for (const json::Value &v : *steps) {
    const json::Object *o = v.getAsObject();
    auto op = o ? o->getString("op") : std::nullopt;
    auto ms = o ? o->getNumber("ms") : std::nullopt;
    if (op && ms)
      byOp[*op] += *ms * 1e-3;
  }
  return byOp;
}

Error writeDot(StringRef path, mlir::func::FuncOp func, int blockIndex) {
  std::string prefix = "h." + std::to_string(blockIndex) + ".";
  std::string llamaPrefix = "layers." + std::to_string(blockIndex) + ".";
  auto inBlock = [&](mlir::Operation *op) {
    std::string s = scopeOf(op);
    return StringRef(s).starts_with(prefix) || StringRef(s).starts_with(llamaPrefix);
  };
  std::string out = "digraph block {\n  rankdir=TB;\n  node [shape=box, fontname=\"monospace\", "
                    "fontsize=10];\n";
  llvm::DenseMap<mlir::Operation *, int> ids;
  int next = 0, clusters = 0;
  auto label = [](mlir::Operation *op) {
    std::string type;
    if (op->getNumResults())
      if (auto t = dyn_cast<mlir::RankedTensorType>(op->getResult(0).getType())) {
        llvm::raw_string_ostream os(type);
        t.print(os);
      }
    return op->getName().getStringRef().str() + "\\n" + type;
  };
  for (mlir::Operation &op : func.getBody().front().without_terminator()) {
    if (!inBlock(&op))
      continue;
    if (auto fusion = dyn_cast<FusionOp>(op)) {
      // The region as a cluster; edges into and out of it attach to the
      // fusion's node, drawn inside.
      out += formatv("  subgraph cluster_{0} {{\n    label=\"{1} at {2}\"; style=rounded; "
                     "color=\"#1f77b4\";\n",
                     clusters++, kindOf(&op), scopeOf(&op))
                 .str();
      ids[&op] = next;
      out += formatv("    n{0} [label=\"kiln.fusion\\n{1} in, {2} out\", shape=ellipse];\n", next++,
                     op.getNumOperands(), op.getNumResults())
                 .str();
      for (mlir::Operation &inner : fusion.getBodyOps()) {
        ids[&inner] = next;
        out += formatv("    n{0} [label=\"{1}\", color=\"#1f77b4\"];\n", next++, label(&inner)).str();
      }
      for (mlir::Operation &inner : fusion.getBodyOps())
        for (mlir::Value v : inner.getOperands())
          if (mlir::Operation *def = v.getDefiningOp(); def && ids.count(def))
            out += formatv("    n{0} -> n{1};\n", ids[def], ids[&inner]).str();
      out += "  }\n";
      continue;
    }
    ids[&op] = next;
    out += formatv("  n{0} [label=\"{1}\"];\n", next++, label(&op)).str();
  }
  for (mlir::Operation &op : func.getBody().front().without_terminator()) {
    if (!ids.count(&op))
      continue;
    for (mlir::Value v : op.getOperands())
      if (mlir::Operation *def = v.getDefiningOp(); def && ids.count(def) &&
                                                    def->getParentOp() == op.getParentOp())
        out += formatv("  n{0} -> n{1};\n", ids[def], ids[&op]).str();
  }
  out += "}\n";
  if (next == 0)
    return createStringError(inconvertibleErrorCode(),
                             "--dot: no op of @" + func.getSymName() + " is in block " +
                                 std::to_string(blockIndex) + " (scopes h." +
                                 std::to_string(blockIndex) + ".* or layers." +
                                 std::to_string(blockIndex) + ".*)");
  return writeFileAtomically(path, out);
}

Error writeMemorySvg(StringRef path, ArrayRef<double> live, StringRef title, int peakIndex) {
  const double w = 900, h = 360, left = 70, right = 20, topPad = 40, bottom = 50;
  double maxLive = 1;
  for (double v : live)
    maxLive = std::max(maxLive, v);
  double gibMax = maxLive / (1024.0 * 1024 * 1024);
  auto x = [&](double i) {
    return left + (w - left - right) * i / std::max<double>(1, static_cast<double>(live.size()) - 1);
  };
  auto y = [&](double bytes) { return h - bottom - (h - topPad - bottom) * bytes / maxLive; };
  std::string svg = formatv("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" "
                            "font-family=\"sans-serif\" font-size=\"12\">\n"
                            "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
                            "<text x=\"{2}\" y=\"22\" font-size=\"14\">{3}</text>\n",
                            w, h, left, title)
                        .str();
  // Axes and ticks: GiB on y (5 steps), op index on x.
  svg += formatv("<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"black\"/>\n"
                 "<line x1=\"{0}\" y1=\"{1}\" x2=\"{0}\" y2=\"{3}\" stroke=\"black\"/>\n",
                 left, h - bottom, w - right, topPad)
             .str();
  for (int t = 0; t <= 5; ++t) {
    double bytes = maxLive * t / 5;
    svg += formatv("<text x=\"{0}\" y=\"{1}\" text-anchor=\"end\">{2:f2}</text>\n", left - 6,
                   y(bytes) + 4, gibMax * t / 5)
               .str();
    double i = (static_cast<double>(live.size()) - 1) * t / 5;
    svg += formatv("<text x=\"{0}\" y=\"{1}\" text-anchor=\"middle\">{2:f0}</text>\n", x(i),
                   h - bottom + 18, i)
               .str();
  }
  svg += formatv("<text x=\"{0}\" y=\"{1}\" text-anchor=\"middle\">op (program order)</text>\n"
                 "<text x=\"16\" y=\"{2}\" transform=\"rotate(-90 16 {2})\" "
                 "text-anchor=\"middle\">temporaries live (GiB)</text>\n",
                 (left + w - right) / 2, h - 12, (topPad + h - bottom) / 2)
             .str();
  std::string points;
  for (size_t i = 0; i < live.size(); ++i)
    points += formatv("{0:f1},{1:f1} ", x(static_cast<double>(i)), y(live[i])).str();
  svg += "<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\" points=\"" + points +
         "\"/>\n";
  if (peakIndex >= 0 && peakIndex < static_cast<int>(live.size()))
    svg += formatv("<circle cx=\"{0:f1}\" cy=\"{1:f1}\" r=\"4\" fill=\"#d62728\"/>\n"
                   "<text x=\"{2:f1}\" y=\"{3:f1}\" fill=\"#d62728\">peak {4} at op {5}</text>\n",
                   x(peakIndex), y(live[peakIndex]), x(peakIndex) + 8, y(live[peakIndex]) - 6,
                   gib(live[peakIndex]), peakIndex)
               .str();
  svg += "</svg>\n";
  return writeFileAtomically(path, svg);
}

} // namespace

int runInspect() {
  auto config = loadConfig(configPath, setOverrides());
  if (!config)
    return fail("inspect", toString(config.takeError()));
  if (top < 0 || block < 0)
    return fail("inspect", "--top and --block must not be negative");
  if (!(bandwidth > 0) || !std::isfinite(bandwidth) || peakTflops < 0 || !std::isfinite(peakTflops))
    return fail("inspect", "--bandwidth must be a positive number of TB/s and --peak-tflops not "
                           "negative");
  if (!dotPath.empty() && block >= config->model.n_layer)
    return fail("inspect", formatv("--block {0}: the model has blocks 0 to {1}", block.getValue(),
                                   config->model.n_layer - 1));
  if (config->parallel.numRanks() > 1)
    return fail("inspect", "inspect reads the one-device plan; drop the [parallel] mesh (kiln "
                           "compile --explain-sharding shows a mesh's collectives)");
  const bool mixed = config->train.precision != "f32";
  const double peak = (peakTflops > 0 ? peakTflops.getValue() : mixed ? 989.0 : 67.0) * 1e12;
  const double bw = bandwidth * 1e12;

  mlir::MLIRContext ctx;
  auto module = tooling::buildForwardModule(ctx, *config, mlir::Float32Type::get(&ctx));
  if (!module)
    return fail("inspect", toString(module.takeError()));
  auto written = tooling::runTrainingPipeline(**module, *config, {});
  if (!written)
    return fail("inspect", toString(written.takeError()));
  mlir::PassManager pm(&ctx);
  PlanBuffersPassOptions planOptions;
  planOptions.recordLive = true;
  pm.addPass(createPlanBuffersPass(planOptions));
  if (Error err = runPasses(pm, **module, "kiln-plan-buffers"))
    return fail("inspect", toString(std::move(err)));

  std::string name = functionName;
  if (name.empty())
    name = (**module).lookupSymbol<mlir::func::FuncOp>("train_step") ? "train_step" : "apply_step";
  auto func = (**module).lookupSymbol<mlir::func::FuncOp>(name);
  if (!func || func.isExternal()) {
    std::string names;
    for (auto f : (**module).getOps<mlir::func::FuncOp>())
      names += (names.empty() ? "@" : ", @") + f.getSymName().str();
    return fail("inspect", "no function @" + name + " (this config compiles " + names + ")");
  }

  // 1. Cost per op or region, and the roofline.
  std::vector<Row> rows;
  for (mlir::Operation &op : func.getBody().front().without_terminator()) {
    auto cost = dyn_cast<CostOpInterface>(op);
    if (!cost)
      continue;
    double flops = static_cast<double>(cost.getFlops());
    double bytes = static_cast<double>(cost.getBytesAccessed());
    if (flops == 0 && bytes == 0)
      continue; // views (reshape) and inlined constants
    double tc = flops / peak, tm = bytes / bw;
    rows.push_back({&op, kindOf(&op), scopeOf(&op), flops, bytes, std::max(tc, tm), tc >= tm});
  }
  // Measured times: each plan step's seconds go to the ops of its
  // description, split by their bounds where several share one.
  double measuredTotal = -1, unmatched = 0;
  if (!profilePath.empty()) {
    auto profile = readProfile(profilePath);
    if (!profile)
      return fail("inspect", toString(profile.takeError()));
    StringMap<double> boundOf;
    for (const Row &r : rows)
      boundOf[codegen::Emitter::describe(r.op)] += r.seconds;
    measuredTotal = 0;
    for (auto &entry : *profile) {
      measuredTotal += entry.getValue();
      if (!boundOf.count(entry.getKey()))
        unmatched += entry.getValue();
    }
    for (Row &r : rows) {
      auto it = profile->find(codegen::Emitter::describe(r.op));
      double share = boundOf[codegen::Emitter::describe(r.op)];
      if (it != profile->end())
        r.measured = share > 0 ? it->getValue() * r.seconds / share : 0;
    }
  }
  double flopsTotal = 0, bytesTotal = 0, secondsTotal = 0, computeSeconds = 0;
  for (const Row &r : rows) {
    flopsTotal += r.flops;
    bytesTotal += r.bytes;
    secondsTotal += r.seconds;
    computeSeconds += r.computeBound ? r.seconds : 0;
  }
  outs() << formatv("kiln inspect: {0}, @{1} ({2}, batch {3} x {4}); roofline on {5:f0} TFLOP/s "
                    "and {6:f2} TB/s{7}\n\n",
                    configPath, name, config->train.precision, config->train.batch_size,
                    config->seqLen(), peak / 1e12, bw / 1e12,
                    peakTflops > 0 ? "" : mixed ? " (H200, dense bf16)" : " (H200, f32)");
  outs() << formatv("{0} ops and regions: {1}FLOP, {2}B moved, intensity {3:f1} FLOP/B; roofline "
                    "sum {4:f2} ms ({5:f0}% of it compute-bound)\n\n",
                    rows.size(), human(flopsTotal), human(bytesTotal),
                    bytesTotal > 0 ? flopsTotal / bytesTotal : 0.0, secondsTotal * 1e3,
                    secondsTotal > 0 ? 100 * computeSeconds / secondsTotal : 0.0);
  if (measuredTotal >= 0)
    outs() << formatv("measured ({0}): {1:f2} ms of GPU time in the plan's steps, eager with an "
                      "event after each; the bounds are {2:f0}% of it{3}\n\n",
                      profilePath, measuredTotal * 1e3,
                      measuredTotal > 0 ? 100 * secondsTotal / measuredTotal : 0.0,
                      unmatched > 0
                          ? formatv(" ({0:f2} ms in steps of no op here: was the profile taken "
                                    "of this config?)",
                                    unmatched * 1e3)
                                .str()
                          : std::string());

  // By kind.
  struct Kind {
    int count = 0;
    double flops = 0, bytes = 0, seconds = 0, measured = 0;
  };
  std::map<std::string, Kind> kinds;
  for (const Row &r : rows) {
    Kind &k = kinds[r.kind];
    ++k.count;
    k.flops += r.flops;
    k.bytes += r.bytes;
    k.seconds += r.seconds;
    k.measured += std::max(0.0, r.measured);
  }
  const bool measured = measuredTotal >= 0;
  auto measuredCells = [&](double bound, double time) {
    if (!measured)
      return std::string();
    return formatv(" {0,11:f1} {1,7}", time * 1e6,
                   time > 0 ? formatv("{0:f0}%", 100 * bound / time).str() : std::string("-"))
        .str();
  };
  std::vector<std::pair<std::string, Kind>> byKind(kinds.begin(), kinds.end());
  std::sort(byKind.begin(), byKind.end(), [&](const auto &a, const auto &b) {
    return measured ? a.second.measured > b.second.measured : a.second.seconds > b.second.seconds;
  });
  outs() << formatv("{0,-34} {1,6} {2,11} {3,11} {4,9} {5,10} {6,7}{7}\n", "by kind", "count", "FLOP",
                    "bytes", "FLOP/B", "bound µs", "share",
                    measured ? formatv(" {0,11} {1,7}", "measured µs", "of it").str() : "");
  for (auto &[kind, k] : byKind)
    outs() << formatv("{0,-34} {1,6} {2,11} {3,11} {4,9:f1} {5,10:f1} {6,6:f1}%{7}\n", kind, k.count,
                      human(k.flops), human(k.bytes), k.bytes > 0 ? k.flops / k.bytes : 0.0,
                      k.seconds * 1e6, secondsTotal > 0 ? 100 * k.seconds / secondsTotal : 0.0,
                      measuredCells(k.seconds, k.measured));

  // The largest ops.
  std::vector<const Row *> sorted;
  for (const Row &r : rows)
    sorted.push_back(&r);
  std::stable_sort(sorted.begin(), sorted.end(), [&](const Row *a, const Row *b) {
    return measured ? a->measured > b->measured : a->seconds > b->seconds;
  });
  outs() << formatv("\n{0,-34} {1,-18} {2,11} {3,11} {4,9} {5,10} {6,-8}{7}\n", "largest ops",
                    "scope", "FLOP", "bytes", "FLOP/B", "bound µs", "bound by",
                    measured ? formatv(" {0,11} {1,7}", "measured µs", "of it").str() : "");
  for (int i = 0; i < top && i < static_cast<int>(sorted.size()); ++i) {
    const Row &r = *sorted[i];
    outs() << formatv("{0,-34} {1,-18} {2,11} {3,11} {4,9:f1} {5,10:f1} {6,-8}{7}\n", r.kind,
                      r.scope, human(r.flops), human(r.bytes), r.bytes > 0 ? r.flops / r.bytes : 0.0,
                      r.seconds * 1e6, r.computeBound ? "compute" : "memory",
                      measuredCells(r.seconds, std::max(0.0, r.measured)));
  }

  // 2. The buffer plan over the function.
  std::vector<mlir::Operation *> order;
  std::vector<double> live;
  for (mlir::Operation &op : func.getBody().front()) {
    order.push_back(&op);
    if (auto l = op.getAttrOfType<mlir::IntegerAttr>("kiln.live"))
      live.push_back(static_cast<double>(l.getInt()));
    else if (&op != func.getBody().front().getTerminator())
      live.push_back(live.empty() ? 0.0 : live.back());
  }
  auto memory = func->getAttrOfType<mlir::DictionaryAttr>(KilnDialect::kMemoryAttrName);
  auto peakAttr = func->getAttrOfType<mlir::DictionaryAttr>("kiln.peak");
  auto intOf = [](mlir::DictionaryAttr d, StringRef key) -> int64_t {
    auto a = d ? d.getAs<mlir::IntegerAttr>(key) : nullptr;
    return a ? a.getInt() : 0;
  };
  outs() << formatv("\nbuffer plan: arena {0} (parameters {1}, optimizer states {2}, inputs {3}, "
                    "workspace {4}, temporaries {5}); @{6}'s temporaries peak at {7}\n",
                    gib(intOf(memory, "total")), gib(intOf(memory, "params")),
                    gib(intOf(memory, "states")), gib(intOf(memory, "inputs")),
                    gib(intOf(memory, "workspace")), gib(intOf(memory, "scratch")), name,
                    gib(intOf(memory, "peak_live")));
  int peakIndex = peakAttr ? static_cast<int>(intOf(peakAttr, "op")) : -1;
  if (peakAttr && peakIndex >= 0 && peakIndex < static_cast<int>(order.size())) {
    mlir::Operation *at = order[peakIndex];
    outs() << formatv("  the peak is at op {0} of {1}: {2}{3}\n", peakIndex, order.size() - 1,
                      kindOf(at), scopeOf(at).empty() ? "" : " at \"" + scopeOf(at) + "\"");
    struct Resident {
      int64_t def, result, bytes, last;
    };
    std::vector<Resident> residents;
    for (mlir::Attribute a : peakAttr.getAs<mlir::ArrayAttr>("residents")) {
      auto v = cast<mlir::DenseI64ArrayAttr>(a).asArrayRef();
      if (v.size() == 4 && v[0] >= 0 && v[0] < static_cast<int64_t>(order.size()) && v[3] >= 0)
        residents.push_back({v[0], v[1], v[2], v[3]});
    }
    std::sort(residents.begin(), residents.end(),
              [](const Resident &a, const Resident &b) { return a.bytes > b.bytes; });
    // Grouped by the scope of what keeps them alive: forward activations
    // held for the backward show up as made in h.N, kept by h.N's backward.
    std::map<std::string, std::pair<int, double>> byScope;
    for (const Resident &r : residents)
      if (r.def >= 0 && r.def < static_cast<int64_t>(order.size())) {
        auto &e = byScope[scopeOf(order[r.def])];
        ++e.first;
        e.second += static_cast<double>(r.bytes);
      }
    outs() << formatv("  {0} values live there; by the scope that made them:", residents.size());
    std::vector<std::pair<std::string, std::pair<int, double>>> scopes(byScope.begin(), byScope.end());
    std::sort(scopes.begin(), scopes.end(),
              [](const auto &a, const auto &b) { return a.second.second > b.second.second; });
    int shown = 0;
    for (auto &[scope, e] : scopes) {
      if (shown++ == 6) {
        outs() << " …";
        break;
      }
      outs() << formatv("{0} {1} ({2})", shown > 1 ? "," : "", scope.empty() ? "?" : scope,
                        gib(e.second));
    }
    outs() << "\n";
    outs() << formatv("  {0,-12} {1,-44} {2}\n", "bytes", "made by", "kept alive by (its last use)");
    for (int i = 0; i < top && i < static_cast<int>(residents.size()); ++i) {
      const Resident &r = residents[i];
      mlir::Operation *def = order[r.def];
      std::string made = formatv("#{0} {1} at \"{2}\"", r.def, kindOf(def), scopeOf(def)).str();
      std::string kept;
      if (r.last >= static_cast<int64_t>(order.size()) - 1)
        kept = "the function's results";
      else
        kept = formatv("#{0} {1} at \"{2}\"", r.last, kindOf(order[r.last]), scopeOf(order[r.last]))
                   .str();
      outs() << formatv("  {0,-12} {1,-44} {2}\n", gib(static_cast<double>(r.bytes)), made, kept);
    }
  }
  if (!memorySvg.empty()) {
    if (Error err = writeMemorySvg(memorySvg, live,
                                   formatv("{0}: @{1}, temporaries live at each op", configPath, name)
                                       .str(),
                                   peakIndex))
      return fail("inspect", toString(std::move(err)));
    outs() << "  memory timeline: " << memorySvg << "\n";
  }
  if (!dotPath.empty()) {
    if (Error err = writeDot(dotPath, func, block))
      return fail("inspect", toString(std::move(err)));
    outs() << formatv("  block {0} as Graphviz: {1} (dot -Tsvg {1} -o block.svg)\n", block.getValue(),
                      dotPath.getValue());
  }
  return 0;
}

} // namespace kiln::cli
