//===- PipelineSchedule.cpp - the schedule kiln-pipeline writes ------------===//

#include "ir/PipelineSchedule.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/Twine.h"

#include <algorithm>

namespace kiln {

namespace {
llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}
} // namespace

std::string pipelineFunction(int64_t stage, llvm::StringRef what) {
  return "stage" + std::to_string(stage) + "_" + what.str();
}

void keepOnlyStage(mlir::ModuleOp module, int64_t stage) {
  const std::string step = pipelineFunction(stage, "step"), eval = pipelineFunction(stage, "eval");
  for (auto fn : llvm::make_early_inc_range(module.getOps<mlir::func::FuncOp>()))
    if (fn.getSymName() != step && fn.getSymName() != eval)
      fn.erase();
}

llvm::Expected<PipelineSchedule> PipelineSchedule::of(mlir::ModuleOp module) {
  PipelineSchedule p;
  p.stages = 0;
  auto dict = module->getAttrOfType<mlir::DictionaryAttr>("kiln.pipeline");
  if (!dict)
    return p;
  auto bad = [](const llvm::Twine &why) { return error("kiln.pipeline: " + why); };
  auto stages = dict.getAs<mlir::IntegerAttr>("stages");
  auto micro = dict.getAs<mlir::IntegerAttr>("microbatches");
  auto name = dict.getAs<mlir::StringAttr>("schedule");
  auto actions = dict.getAs<mlir::ArrayAttr>("actions");
  auto virtualStages = dict.getAs<mlir::IntegerAttr>("virtual_stages");
  if (!stages || !micro || !name || !actions || stages.getInt() < 2 || micro.getInt() < 1 ||
      micro.getInt() > (1 << 20) || static_cast<int64_t>(actions.size()) != stages.getInt() ||
      (virtualStages && (virtualStages.getInt() < 1 || virtualStages.getInt() > 64)))
    return bad("needs stages >= 2, microbatches >= 1, virtual_stages in [1, 64] (if given), "
               "schedule and one action list per stage");
  p.stages = stages.getInt();
  p.virtualStages = virtualStages ? virtualStages.getInt() : 1;
  p.microbatches = micro.getInt();
  p.name = name.getValue().str();
  const int64_t n = p.numStages(), m = p.microbatches;
  for (mlir::Attribute list : actions) {
    auto array = mlir::dyn_cast<mlir::ArrayAttr>(list);
    if (!array)
      return bad("each rank's actions are a list");
    const int64_t rank = static_cast<int64_t>(p.actions.size());
    auto &mine = p.actions.emplace_back();
    std::vector<std::vector<int>> forward(static_cast<size_t>(n), std::vector<int>(m)),
        backward = forward;
    for (mlir::Attribute a : array) {
      auto text = mlir::dyn_cast<mlir::StringAttr>(a);
      llvm::StringRef rest = text ? text.getValue() : "";
      char kind = rest.empty() ? 0 : rest.front();
      auto [kText, stageText] = rest.drop_front(rest.empty() ? 0 : 1).split('.');
      int64_t k = -1, stage = rank;
      if (!text || (kind != 'F' && kind != 'B') || kText.getAsInteger(10, k) || k < 0 || k >= m ||
          (!stageText.empty() && (stageText.getAsInteger(10, stage) || stage < 0 || stage >= n ||
                                  stage % p.stages != rank)) ||
          (stageText.empty() && p.virtualStages > 1))
        return bad("an action is F<k> or B<k> (with virtual stages F<k>.<stage>, a stage of "
                   "its rank) with 0 <= k < microbatches, not " +
                   (text ? text.getValue() : llvm::StringRef("a non-string")) + " on rank " +
                   llvm::Twine(rank));
      bool isForward = kind == 'F';
      auto &count = isForward ? forward : backward;
      if (++count[static_cast<size_t>(stage)][static_cast<size_t>(k)] != 1 ||
          (!isForward && !forward[static_cast<size_t>(stage)][static_cast<size_t>(k)]))
        return bad("rank " + llvm::Twine(rank) + " runs " + text.getValue() +
                   " twice or before its forward");
      mine.push_back({kind, k, stage});
    }
    if (static_cast<int64_t>(mine.size()) != 2 * m * p.virtualStages)
      return bad("rank " + llvm::Twine(rank) +
                 " must run every micro-batch's forward and backward once on each of its stages");
  }
  // Every stage runs the micro-batches' forwards in one order and their
  // backwards in one order (a channel carries them in the order sent), and
  // the schedule can run: a forward waits for the previous stage's, a
  // backward for the next stage's and its own forward.
  auto order = [&](int64_t stage, char kind) {
    std::vector<int64_t> o;
    for (const PipelineAction &a : p.actions[static_cast<size_t>(stage % p.stages)])
      if (a.kind == kind && a.stage == stage)
        o.push_back(a.k);
    return o;
  };
  for (int64_t s = 1; s < n; ++s)
    for (char kind : {'F', 'B'})
      if (order(s, kind) != order(0, kind))
        return bad(llvm::Twine("stage ") + llvm::Twine(s) + " runs the " +
                   (kind == 'F' ? "forwards" : "backwards") + " in another order than stage 0");
  {
    std::vector<std::vector<char>> doneF(n, std::vector<char>(m, 0)), doneB = doneF;
    std::vector<size_t> next(static_cast<size_t>(p.stages), 0);
    for (bool progress = true; progress;) {
      progress = false;
      for (int64_t r = 0; r < p.stages; ++r) {
        const auto &mine = p.actions[static_cast<size_t>(r)];
        while (next[r] < mine.size()) {
          auto [kind, k, s] = mine[next[r]];
          bool ready = kind == 'F' ? s == 0 || doneF[s - 1][k]
                                   : doneF[s][k] && (s + 1 == n || doneB[s + 1][k]);
          if (!ready)
            break;
          (kind == 'F' ? doneF : doneB)[s][k] = 1;
          ++next[r];
          progress = true;
        }
      }
    }
    for (int64_t r = 0; r < p.stages; ++r)
      if (next[r] < p.actions[r].size())
        return bad("the schedule cannot run: rank " + llvm::Twine(r) + " waits forever at " +
                   llvm::Twine(p.actions[r][next[r]].kind) + llvm::Twine(p.actions[r][next[r]].k) +
                   " of stage " + llvm::Twine(p.actions[r][next[r]].stage));
  }
  if (auto blocks = dict.getAs<mlir::ArrayAttr>("blocks"))
    for (mlir::Attribute b : blocks)
      if (auto s = mlir::dyn_cast<mlir::StringAttr>(b))
        p.blocks.push_back(s.getValue().str());
  return p;
}

std::vector<int64_t> PipelineSchedule::inFlight() const {
  std::vector<int64_t> now(static_cast<size_t>(numStages()), 0), most = now;
  for (const auto &rank : actions)
    for (const PipelineAction &a : rank) {
      auto s = static_cast<size_t>(a.stage);
      now[s] += a.kind == 'F' ? 1 : -1;
      most[s] = std::max(most[s], now[s]);
    }
  return most;
}

} // namespace kiln
