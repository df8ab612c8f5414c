//===- PipelineReport.cpp - what each pipeline stage holds and runs --------===//

#include "tools/support/PipelineReport.h"

#include "ir/KilnDialect.h"
#include "ir/KilnInterfaces.h"
#include "ir/KilnOps.h"
#include "runtime/cpu/PipelineCpuBackend.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <set>

namespace kiln::tooling {

namespace {

int64_t bytesOf(mlir::Type type) {
  auto t = mlir::dyn_cast<mlir::RankedTensorType>(type);
  if (!t || !t.hasStaticShape())
    return 0;
  int64_t bits = t.getElementType().getIntOrFloatBitWidth();
  return t.getNumElements() * std::max<int64_t>(bits / 8, 1);
}

double flopsOf(mlir::func::FuncOp fn) {
  double flops = 0;
  fn.walk([&](CostOpInterface op) { flops += static_cast<double>(op.getFlops()); });
  return flops;
}

int64_t opsOf(mlir::func::FuncOp fn) {
  int64_t n = 0;
  fn.walk(
      [&](mlir::Operation *op) { n += !mlir::isa<mlir::func::FuncOp, mlir::func::ReturnOp>(op); });
  return n;
}

std::string gib(int64_t bytes) {
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024 * 1024)
    return llvm::formatv("{0:f3} GiB", b / (1024.0 * 1024 * 1024)).str();
  return llvm::formatv("{0:f3} MiB", b / (1024.0 * 1024)).str();
}

} // namespace

PipelineReport reportPipeline(mlir::ModuleOp module) {
  PipelineReport r;
  auto schedule = PipelineSchedule::of(module);
  if (!schedule) {
    llvm::consumeError(schedule.takeError());
    return r;
  }
  if (schedule->stages == 0)
    return r;
  r.stages = schedule->stages;
  r.virtualStages = schedule->virtualStages;
  r.microbatches = schedule->microbatches;
  r.schedule = schedule->name;
  const int64_t n = schedule->numStages();
  std::vector<int64_t> inFlight = schedule->inFlight();
  for (int64_t s = 0; s < n; ++s) {
    StageReport st;
    if (static_cast<size_t>(s) < schedule->blocks.size())
      st.blocks = schedule->blocks[static_cast<size_t>(s)];
    auto fwd = module.lookupSymbol<mlir::func::FuncOp>(pipelineFunction(s, "forward"));
    auto bwd = module.lookupSymbol<mlir::func::FuncOp>(pipelineFunction(s, "backward"));
    // The apply is its rank's (one per rank): counted with its first stage.
    auto apply = module.lookupSymbol<mlir::func::FuncOp>(pipelineFunction(s % r.stages, "apply"));
    if (!fwd || !bwd || !apply)
      return PipelineReport();
    st.forwardOps = opsOf(fwd);
    st.backwardOps = opsOf(bwd);
    st.forwardFlops = flopsOf(fwd);
    st.backwardFlops = flopsOf(bwd);
    // The state a rank holds: its stages' and its apply's arguments, once
    // each; with interleaving, all of the rank's on its first stage's line.
    std::set<std::string> state;
    std::vector<mlir::func::FuncOp> holders;
    if (s < r.stages) {
      holders.push_back(apply);
      for (int64_t c = s; c < n; c += r.stages)
        for (llvm::StringRef what : {"forward", "backward"})
          if (auto f = module.lookupSymbol<mlir::func::FuncOp>(pipelineFunction(c, what)))
            holders.push_back(f);
    }
    for (mlir::func::FuncOp fn : holders) {
      for (unsigned i = 0; i < fn.getNumArguments(); ++i) {
        auto param = fn.getArgAttrOfType<mlir::StringAttr>(i, KilnDialect::kParamAttrName);
        auto st8 = fn.getArgAttrOfType<mlir::StringAttr>(i, KilnDialect::kStateAttrName);
        auto name = param ? param : st8;
        if (name && state.insert(name.getValue().str()).second)
          st.stateBytes += bytesOf(fn.getArgumentTypes()[i]);
      }
    }
    for (unsigned i = 0; i < fwd.getNumResults(); ++i)
      if (auto out = fwd.getResultAttrOfType<mlir::StringAttr>(i, KilnDialect::kOutputAttrName);
          out && out.getValue().starts_with("saved."))
        st.savedBytes += bytesOf(fwd.getResultTypes()[i]);
    for (mlir::func::FuncOp fn : {fwd, bwd})
      fn.walk([&](SendOp send) { st.sentBytes += bytesOf(send.getOperand().getType()); });
    if (s < r.stages)
      apply.walk([&](SendOp send) { st.sentPerStep += bytesOf(send.getOperand().getType()); });
    st.inFlight = inFlight[static_cast<size_t>(s)];
    r.perStage.push_back(std::move(st));
  }
  // The schedule, simulated: an action starts when its rank is free and
  // what it reads is made (the previous stage's forward, the next stage's
  // backward of the same micro-batch).
  const int64_t p = r.stages, m = r.microbatches;
  std::vector<std::vector<double>> endF(n, std::vector<double>(m, -1)), endB = endF;
  std::vector<double> free(p, 0), busy(p, 0);
  std::vector<size_t> next(p, 0);
  bool progress = true;
  while (progress) {
    progress = false;
    for (int64_t rank = 0; rank < p; ++rank) {
      const auto &actions = schedule->actions[static_cast<size_t>(rank)];
      while (next[rank] < actions.size()) {
        auto [kind, k, s] = actions[next[rank]];
        double ready;
        if (kind == 'F') {
          if (s > 0 && endF[s - 1][k] < 0)
            break;
          ready = s > 0 ? endF[s - 1][k] : 0;
        } else {
          if (s + 1 < n && endB[s + 1][k] < 0)
            break;
          ready = std::max(s + 1 < n ? endB[s + 1][k] : 0.0, endF[s][k]);
        }
        double cost = kind == 'F' ? r.perStage[s].forwardFlops : r.perStage[s].backwardFlops;
        double start = std::max(free[rank], ready);
        free[rank] = start + cost;
        busy[rank] += cost;
        (kind == 'F' ? endF : endB)[s][k] = free[rank];
        ++next[rank];
        progress = true;
      }
    }
  }
  double makespan = *std::max_element(free.begin(), free.end()), total = 0;
  for (double b : busy)
    total += b;
  r.bubble = makespan > 0 ? 1.0 - total / (static_cast<double>(p) * makespan) : 0;
  r.formula = static_cast<double>(p - 1) / static_cast<double>(r.virtualStages * m + p - 1);
  return r;
}

std::string describePipeline(mlir::ModuleOp module, bool explain) {
  PipelineReport r = reportPipeline(module);
  if (r.stages == 0)
    return "";
  std::string out =
      r.virtualStages > 1
          ? llvm::formatv("pipeline: {0} ranks x {5} interleaved stages, {1} micro-batches per "
                          "step, schedule interleaved {2}; predicted bubble {3:f1}% of rank-time "
                          "(formula (p-1)/(v·m+p-1) = {4:f1}%)\n",
                          r.stages, r.microbatches, r.schedule, 100 * r.bubble, 100 * r.formula,
                          r.virtualStages)
                .str()
          : llvm::formatv("pipeline: {0} stages, {1} micro-batches per step, schedule "
                          "{2}; predicted bubble {3:f1}% of stage-time (formula "
                          "(p-1)/(m+p-1) = {4:f1}%)\n",
                          r.stages, r.microbatches, r.schedule, 100 * r.bubble, 100 * r.formula)
                .str();
  if (!explain)
    return out + "  (--explain-pipeline lists each stage's blocks, FLOPs, memory and transfers)\n";
  double most = 0;
  for (const StageReport &s : r.perStage)
    most = std::max(most, s.forwardFlops + s.backwardFlops);
  for (auto [i, s] : llvm::enumerate(r.perStage)) {
    out +=
        llvm::formatv("  stage {0}{2}: blocks {1}\n", i, s.blocks.empty() ? "-" : s.blocks,
                      r.virtualStages > 1
                          ? llvm::formatv(" (rank {0})", static_cast<int64_t>(i) % r.stages).str()
                          : std::string())
            .str();
    out += llvm::formatv("    per micro-batch: forward {0} ops, {1:f3} GFLOP; backward {2} ops, "
                         "{3:f3} GFLOP ({4:f0}% of the busiest stage)\n",
                         s.forwardOps, s.forwardFlops / 1e9, s.backwardOps, s.backwardFlops / 1e9,
                         most > 0 ? 100 * (s.forwardFlops + s.backwardFlops) / most : 0.0)
               .str();
    const int64_t rank = static_cast<int64_t>(i) % r.stages;
    std::string state =
        r.virtualStages == 1 ? "state " + gib(s.stateBytes)
        : static_cast<int64_t>(i) < r.stages
            ? "state of rank " + std::to_string(rank) + " (all its stages) " + gib(s.stateBytes)
            : "state with stage " + std::to_string(rank) + "'s";
    out += llvm::formatv("    memory: {0}; kept for the backward {1} per micro-batch x {2} "
                         "in flight = {3}; sends {4} per micro-batch and {5} once a step "
                         "(its apply's: updated shared parameters, partial gradient sums)\n",
                         state, gib(s.savedBytes), s.inFlight, gib(s.savedBytes * s.inFlight),
                         gib(s.sentBytes), gib(s.sentPerStep))
               .str();
  }
  out += "  predicted times: each stage's forward and backward in proportion to its FLOPs, "
         "transfers not counted\n";
  return out;
}

} // namespace kiln::tooling
