//===- PipelineCpuBackend.cpp - pipeline stages on CPU threads -------------===//

#include "runtime/cpu/PipelineCpuBackend.h"

#include "runtime/cpu/Kernels.h"
#include "runtime/cpu/Parallel.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/Support/FormatVariadic.h"

#include <algorithm>
#include <chrono>

#include <mutex>

namespace kiln::cpu {

namespace {
llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}
std::string stageFunction(int64_t s, llvm::StringRef what) {
  return "stage" + std::to_string(s) + "_" + what.str();
}
} // namespace

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
  if (!stages || !micro || !name || !actions || stages.getInt() < 2 || micro.getInt() < 1 ||
      static_cast<int64_t>(actions.size()) != stages.getInt())
    return bad("needs stages >= 2, microbatches >= 1, schedule and one action list per stage");
  p.stages = stages.getInt();
  p.microbatches = micro.getInt();
  p.name = name.getValue().str();
  for (mlir::Attribute list : actions) {
    auto array = mlir::dyn_cast<mlir::ArrayAttr>(list);
    if (!array)
      return bad("each stage's actions are a list");
    auto &mine = p.actions.emplace_back();
    std::vector<int> forward(static_cast<size_t>(p.microbatches)), backward(forward);
    for (mlir::Attribute a : array) {
      auto text = mlir::dyn_cast<mlir::StringAttr>(a);
      int64_t k = -1;
      if (!text || text.getValue().size() < 2 ||
          (text.getValue()[0] != 'F' && text.getValue()[0] != 'B') ||
          text.getValue().drop_front().getAsInteger(10, k) || k < 0 || k >= p.microbatches)
        return bad("an action is F<k> or B<k> with 0 <= k < microbatches, not " +
                   (text ? text.getValue() : llvm::StringRef("a non-string")));
      bool isForward = text.getValue()[0] == 'F';
      auto &count = isForward ? forward : backward;
      if (++count[static_cast<size_t>(k)] != 1 || (!isForward && !forward[static_cast<size_t>(k)]))
        return bad("stage " + llvm::Twine(p.actions.size() - 1) + " runs " + text.getValue() +
                   " twice or before its forward");
      mine.push_back({text.getValue()[0], k});
    }
    if (static_cast<int64_t>(mine.size()) != 2 * p.microbatches)
      return bad("stage " + llvm::Twine(p.actions.size() - 1) +
                 " must run every micro-batch's forward and backward once");
  }
  if (auto blocks = dict.getAs<mlir::ArrayAttr>("blocks"))
    for (mlir::Attribute b : blocks)
      if (auto s = mlir::dyn_cast<mlir::StringAttr>(b))
        p.blocks.push_back(s.getValue().str());
  return p;
}

std::vector<int64_t> PipelineSchedule::inFlight() const {
  std::vector<int64_t> peak;
  for (const auto &stage : actions) {
    int64_t now = 0, most = 0;
    for (auto [kind, k] : stage) {
      now += kind == 'F' ? 1 : -1;
      most = std::max(most, now);
    }
    peak.push_back(most);
  }
  return peak;
}

llvm::Error PipelineCpuBackend::load(mlir::ModuleOp module, uint64_t seed) {
  auto schedule = PipelineSchedule::of(module);
  if (!schedule)
    return schedule.takeError();
  if (schedule->stages == 0)
    return error("the module has no pipeline (kiln.pipeline): run kiln-pipeline");
  schedule_ = std::move(*schedule);
  for (int64_t s = 0; s < schedule_.stages; ++s)
    for (llvm::StringRef what : {"forward", "backward", "apply"})
      if (!module.lookupSymbol<mlir::func::FuncOp>(stageFunction(s, what)))
        return error("the pipelined module has no @" + stageFunction(s, what));
  mesh_ = std::make_unique<ThreadMesh>(MeshAxes{{"pp", schedule_.stages}});
  ranks_.clear();
  // Every stage initializes the whole state from the same seed (the same
  // values as one device) and keeps using its own part.
  for (int64_t s = 0; s < schedule_.stages; ++s) {
    ranks_.push_back(std::make_unique<CpuBackend>());
    if (llvm::Error err = ranks_.back()->load(module, seed))
      return err;
  }
  specs_ = ranks_[0]->stateSpecs();
  // Who updates what: the stage whose functions write a state in place.
  owner_.clear();
  for (int64_t s = 0; s < schedule_.stages; ++s)
    for (llvm::StringRef what : {"backward", "apply"}) {
      auto binding =
          FunctionBinding::of(module.lookupSymbol<mlir::func::FuncOp>(stageFunction(s, what)));
      if (!binding)
        return binding.takeError();
      for (const auto &r : binding->results)
        if (r.aliases >= 0)
          owner_.emplace(binding->args[static_cast<size_t>(r.aliases)].name, s);
    }
  stale_ = false;
  return llvm::Error::success();
}

llvm::Expected<int64_t> PipelineCpuBackend::memoryNeeded(mlir::ModuleOp module) {
  auto schedule = PipelineSchedule::of(module);
  if (!schedule)
    return schedule.takeError();
  CpuBackend one;
  auto bytes = one.memoryNeeded(module);
  if (!bytes)
    return bytes.takeError();
  return *bytes * std::max<int64_t>(schedule->stages, 1);
}

llvm::Expected<TensorMap> PipelineCpuBackend::run(llvm::StringRef fn, const TensorMap &inputs) {
  if (fn == "train_step")
    return step(inputs);
  if (stale_) {
    // Stage 0 evaluates with every stage's current parameters.
    auto current = gather(true);
    if (!current)
      return current.takeError();
    if (llvm::Error err = ranks_[0]->setState(*current))
      return std::move(err);
    stale_ = false;
  }
  return ranks_[0]->run(fn, inputs);
}

llvm::Expected<TensorMap> PipelineCpuBackend::step(const TensorMap &inputs) {
  const int64_t p = schedule_.stages, m = schedule_.microbatches;
  // The micro-batches: every input with rows (tokens, targets, ...) is
  // cut into m parts; scalars (lr, step) go to each whole.
  std::vector<TensorMap> micro(static_cast<size_t>(m));
  for (const auto &[name, t] : inputs) {
    if (t.rank() >= 1 && t.dim(0) % m != 0)
      return error(llvm::formatv("train_step: input '{0}' has {1} rows, not a multiple of the "
                                 "{2} micro-batches",
                                 name, t.dim(0), m));
    bool split = t.rank() >= 1;
    for (int64_t k = 0; k < m; ++k)
      micro[static_cast<size_t>(k)][name] = split ? partOf(t, 0, k, m) : t;
  }
  // Per stage and micro-batch: the forward's outputs (loss, metrics).
  std::vector<std::vector<TensorMap>> outputs(static_cast<size_t>(p),
                                              std::vector<TensorMap>(static_cast<size_t>(m)));
  std::vector<TensorMap> applied(static_cast<size_t>(p));
  stale_ = true;
  // Each stage's busy seconds and when its last backward ended.
  std::vector<double> busy(static_cast<size_t>(p), 0.0), end(busy);
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto since = [&](Clock::time_point t) { return std::chrono::duration<double>(t - start).count(); };
  llvm::Error err = mesh_->run([&](int64_t s, Collectives &collectives) -> llvm::Error {
    CpuBackend &rank = *ranks_[static_cast<size_t>(s)];
    rank.setCollectives(&collectives);
    InlineScope oneCore; // each stage computes on its own thread only
    std::map<int64_t, TensorMap> saved; // micro-batch -> what its backward reads
    auto fail = [&](llvm::Error e, char kind, int64_t k) {
      rank.setCollectives(nullptr);
      return error(llvm::formatv("stage {0}, {1} of micro-batch {2}: {3}", s,
                                 kind == 'F' ? "forward" : "backward", k,
                                 llvm::toString(std::move(e))));
    };
    for (auto [kind, k] : schedule_.actions[static_cast<size_t>(s)]) {
      TensorMap in = micro[static_cast<size_t>(k)];
      const auto began = Clock::now();
      auto timed = llvm::make_scope_exit([&] {
        busy[static_cast<size_t>(s)] += since(Clock::now()) - since(began);
        end[static_cast<size_t>(s)] = since(Clock::now());
      });
      if (kind == 'F') {
        auto out = rank.run(stageFunction(s, "forward"), in);
        if (!out)
          return fail(out.takeError(), kind, k);
        for (auto &[name, t] : *out)
          (llvm::StringRef(name).starts_with("saved.")
               ? saved[k][name]
               : outputs[static_cast<size_t>(s)][static_cast<size_t>(k)][name]) = std::move(t);
        continue;
      }
      for (auto &[name, t] : saved[k])
        in[name] = std::move(t);
      saved.erase(k);
      auto out = rank.run(stageFunction(s, "backward"), in);
      if (!out)
        return fail(out.takeError(), kind, k);
    }
    auto out = rank.run(stageFunction(s, "apply"), micro[0]);
    rank.setCollectives(nullptr);
    if (!out)
      return error(
          llvm::formatv("stage {0}, the optimizer step: {1}", s, llvm::toString(out.takeError())));
    applied[static_cast<size_t>(s)] = std::move(*out);
    return llvm::Error::success();
  });
  if (err)
    return std::move(err);
  if (++steps_ > 1) {
    ++timedSteps_;
    // Waiting for another stage's message is idle time, not work (the
    // apply's all_reduce is outside the actions timed).
    for (int64_t s = 0; s < p; ++s)
      busySeconds_ += busy[static_cast<size_t>(s)] - mesh_->recvWaitSeconds(s);
    spanSeconds_ += *std::max_element(end.begin(), end.end());
  }
  // The loss and metrics: the micro-batches' mean, from the stage that
  // computed each; the optimizer's outputs are every stage's alike.
  TensorMap result = applied[0];
  std::map<std::string, std::pair<double, DType>> sums;
  for (const auto &stage : outputs)
    for (const TensorMap &out : stage)
      for (const auto &[name, t] : out) {
        sums[name].first += t.get(0);
        sums[name].second = t.dtype();
      }
  for (const auto &[name, sum] : sums) {
    HostTensor mean(sum.second, {});
    mean.set(0, sum.first / static_cast<double>(m));
    result[name] = std::move(mean);
  }
  return result;
}

llvm::Expected<NamedTensors> PipelineCpuBackend::gather(bool params) {
  std::vector<NamedTensors> each;
  for (auto &rank : ranks_) {
    auto state = params ? rank->params() : rank->optimizerStates();
    if (!state)
      return state.takeError();
    each.push_back(std::move(*state));
  }
  NamedTensors out = each[0];
  for (auto [i, named] : llvm::enumerate(out)) {
    auto it = owner_.find(named.first);
    if (it != owner_.end() && it->second != 0)
      named.second = each[static_cast<size_t>(it->second)][i].second;
  }
  return out;
}

llvm::Error PipelineCpuBackend::setState(const NamedTensors &tensors) {
  for (auto &rank : ranks_)
    if (llvm::Error err = rank->setState(tensors))
      return err;
  return llvm::Error::success();
}

double PipelineCpuBackend::measuredBubble() const {
  if (spanSeconds_ <= 0)
    return 0;
  return 1.0 - busySeconds_ / (static_cast<double>(schedule_.stages) * spanSeconds_);
}

std::string PipelineCpuBackend::summary() const {
  if (timedSteps_ == 0)
    return {};
  const double p = static_cast<double>(schedule_.stages),
               m = static_cast<double>(schedule_.microbatches);
  return llvm::formatv("pipeline: the stages waited {0:f1}% of their time in forwards and "
                       "backwards (steps 2-{1}; (p-1)/(m+p-1) = {2:f1}%)",
                       100 * measuredBubble(), steps_, 100 * (p - 1) / (m + p - 1))
      .str();
}

std::string PipelineCpuBackend::describe() const {
  std::string stages;
  for (size_t s = 0; s < schedule_.blocks.size(); ++s)
    stages += llvm::formatv("\n  stage {0}: {1}", s, schedule_.blocks[s]).str();
  return llvm::formatv("cpu: {0} pipeline stages as threads of this process, {1} micro-batches "
                       "per step, schedule {2}{3}",
                       schedule_.stages, schedule_.microbatches, schedule_.name, stages)
      .str();
}

} // namespace kiln::cpu
