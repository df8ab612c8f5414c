//===- PipelineCpuBackend.cpp - pipeline stages on CPU threads -------------===//

#include "runtime/cpu/PipelineCpuBackend.h"

#include "ir/KilnAttrs.h"
#include "ir/KilnDialect.h"
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
} // namespace

llvm::Expected<std::map<std::string, int64_t>> pipelineOwners(mlir::ModuleOp module,
                                                              const PipelineSchedule &schedule) {
  std::map<std::string, int64_t> owner;
  const int64_t stages = schedule.numStages();
  for (bool writes : {true, false})
    for (int64_t s = 0; s < stages; ++s)
      for (llvm::StringRef what : {"forward", "backward", "apply"}) {
        if ((writes && what == "forward") || (what == "apply" && s >= schedule.stages))
          continue;
        auto fn = module.lookupSymbol<mlir::func::FuncOp>(pipelineFunction(s, what));
        if (!fn)
          return error("the pipelined module has no @" + pipelineFunction(s, what));
        auto binding = FunctionBinding::of(fn);
        if (!binding)
          return binding.takeError();
        if (writes) {
          for (const auto &r : binding->results)
            if (r.aliases >= 0)
              owner.emplace(binding->args[static_cast<size_t>(r.aliases)].name,
                            s % schedule.stages);
        } else {
          for (const auto &a : binding->args)
            if (a.kind != FunctionBinding::Arg::Input)
              owner.emplace(a.name, s % schedule.stages);
        }
      }
  return owner;
}

TensorMap unrolledInputs(const MeshLayout &layout, int64_t stage, int64_t stride, int64_t stages,
                         int64_t rank, const TensorMap &inputs, int64_t m) {
  TensorMap mine;
  for (const auto &[name, t] : inputs) {
    // Split as the first of the rank's stages' forwards that reads it
    // splits it (interleaved: stage, stage + stride, ...).
    const DimAxes *axes = nullptr;
    for (int64_t c = stage; c < stages && !axes; c += stride)
      if (const MeshLayout::Function *l = layout.function(pipelineFunction(c, "forward")))
        if (auto it = l->inputs.find(name); it != l->inputs.end() && isSplit(it->second))
          axes = &it->second;
    if (t.rank() == 0 || (!axes && m == 1)) {
      mine[name] = t;
      continue;
    }
    std::vector<HostTensor> parts;
    for (int64_t k = 0; k < m; ++k) {
      HostTensor part = m == 1 ? t : partOf(t, 0, k, m);
      parts.push_back(axes ? layout.partOf(part, *axes, rank) : part);
    }
    mine[name] = parts.size() == 1 ? parts[0] : kernels::concat(parts, 0);
  }
  return mine;
}

llvm::Error PipelineCpuBackend::load(mlir::ModuleOp module, uint64_t seed) {
  auto schedule = PipelineSchedule::of(module);
  if (!schedule)
    return schedule.takeError();
  if (schedule->stages == 0)
    return error("the module has no pipeline (kiln.pipeline): run kiln-pipeline");
  schedule_ = std::move(*schedule);
  for (int64_t s = 0; s < schedule_.numStages(); ++s)
    for (llvm::StringRef what : {"forward", "backward", "apply", "step", "eval"})
      if ((unrolled_ || (what != "step" && what != "eval")) &&
          (s < schedule_.stages || what == "forward" || what == "backward") &&
          !module.lookupSymbol<mlir::func::FuncOp>(pipelineFunction(s, what)))
        return error("the pipelined module has no @" + pipelineFunction(s, what) +
                     (unrolled_ ? " (kiln-pipeline-unroll writes the steps)" : ""));
  // The mesh: pp, then the axes the step was partitioned over (dp, tp).
  auto layout = MeshLayout::of(module);
  if (!layout)
    return layout.takeError();
  layout_ = std::move(*layout);
  if (layout_->axisSize("pp") != schedule_.stages)
    return error("the module's mesh (" + describeMesh(layout_->axes()) +
                 ") does not have its pipeline's " + llvm::Twine(schedule_.stages) +
                 " stages along pp");
  // Every rank's copy of the state and the activations the schedule
  // keeps, checked before anything is allocated.
  auto needed = memoryNeeded(module);
  if (!needed)
    return needed.takeError();
  if (auto available = availableHostMemory(); available && *needed > *available)
    return llvm::make_error<OutOfMemoryError>("host memory", *needed, *available);
  mesh_ = std::make_unique<ThreadMesh>(layout_->axes());
  ranks_.clear();
  // Every rank initializes the whole state from the same seed (the same
  // values as one device) and keeps using its own part.
  for (int64_t r = 0; r < mesh_->numRanks(); ++r) {
    ranks_.push_back(std::make_unique<CpuBackend>());
    if (llvm::Error err = ranks_.back()->load(module, seed))
      return err;
  }
  specs_ = layout_->globalSpecs(ranks_[0]->stateSpecs());
  if (layout_->hasSplitState()) {
    auto whole = MeshLayout::initialState(specs_, seed);
    if (!whole)
      return whole.takeError();
    if (llvm::Error err = setState(*whole))
      return err;
  }
  auto owners = pipelineOwners(module, schedule_);
  if (!owners)
    return owners.takeError();
  owner_ = std::move(*owners);
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
  auto mesh = module->getAttrOfType<MeshAttr>(KilnDialect::kMeshAttrName);
  int64_t ranks = mesh ? mesh.getNumRanks() : std::max<int64_t>(schedule->stages, 1);
  // Plus what each rank keeps for the backwards of the micro-batches in
  // flight (the forward's saved.N results, as many times as the schedule
  // keeps them).
  int64_t perStageRanks = ranks / std::max<int64_t>(schedule->stages, 1), kept = 0;
  std::vector<int64_t> inFlight = schedule->inFlight();
  for (int64_t s = 0; s < schedule->numStages(); ++s) {
    auto fwd = module.lookupSymbol<mlir::func::FuncOp>(pipelineFunction(s, "forward"));
    if (!fwd)
      continue;
    auto binding = FunctionBinding::of(fwd);
    if (!binding)
      return binding.takeError();
    for (auto [i, r] : llvm::enumerate(binding->results))
      if (llvm::StringRef(r.output).starts_with("saved."))
        if (auto t = mlir::dyn_cast<mlir::RankedTensorType>(fwd.getResultTypes()[i]))
          kept += t.getNumElements() * std::max<int64_t>(t.getElementTypeBitWidth() / 8, 1) *
                  inFlight[static_cast<size_t>(s)] * perStageRanks;
  }
  return *bytes * ranks + kept;
}

llvm::Expected<TensorMap> PipelineCpuBackend::run(llvm::StringRef fn, const TensorMap &inputs) {
  if (unrolled_ && (fn == "train_step" || fn == "forward"))
    return runUnrolled(fn == "train_step" ? "step" : "eval", inputs);
  if (fn == "train_step")
    return step(inputs);
  const MeshLayout::Function *l = layout_->function(fn);
  if (!l)
    return error("the compiled module has no function @" + fn);
  if (stale_) {
    // The first stage's ranks evaluate with every stage's current
    // parameters (their parts of them).
    auto current = gather(true);
    if (!current)
      return current.takeError();
    for (int64_t r = 0; r < static_cast<int64_t>(ranks_.size()); ++r) {
      if (stageOf(r) != 0)
        continue;
      auto mine = layout_->partsFor(*current, specs_, r);
      if (!mine)
        return mine.takeError();
      if (llvm::Error err = ranks_[static_cast<size_t>(r)]->setState(*mine))
        return std::move(err);
    }
    stale_ = false;
  }
  if (!l->partitioned)
    return ranks_[0]->run(fn, inputs);
  // Partitioned over dp/tp: the first stage's ranks run it together.
  std::vector<TensorMap> outputs(ranks_.size());
  llvm::Error err = mesh_->run([&](int64_t r, Collectives &collectives) -> llvm::Error {
    if (stageOf(r) != 0)
      return llvm::Error::success();
    CpuBackend &rank = *ranks_[static_cast<size_t>(r)];
    rank.setCollectives(&collectives);
    auto out = rank.run(fn, localInputs(inputs, fn, r));
    rank.setCollectives(nullptr);
    if (!out)
      return out.takeError();
    outputs[static_cast<size_t>(r)] = std::move(*out);
    return llvm::Error::success();
  });
  if (err)
    return std::move(err);
  return std::move(outputs[0]);
}

int64_t PipelineCpuBackend::stageOf(int64_t rank) const { return layout_->coordinate(rank, "pp"); }

bool PipelineCpuBackend::leads(int64_t rank) const {
  for (const auto &[axis, size] : layout_->axes())
    if (axis != "pp" && layout_->coordinate(rank, axis) != 0)
      return false;
  return true;
}

TensorMap PipelineCpuBackend::localInputs(const TensorMap &inputs, llvm::StringRef fn,
                                          int64_t rank) const {
  const MeshLayout::Function *l = layout_->function(fn);
  TensorMap mine;
  for (const auto &[name, t] : inputs) {
    const DimAxes *axes = nullptr;
    if (l)
      if (auto it = l->inputs.find(name); it != l->inputs.end())
        axes = &it->second;
    mine[name] = axes && isSplit(*axes) ? layout_->partOf(t, *axes, rank) : t;
  }
  return mine;
}

llvm::Expected<TensorMap> PipelineCpuBackend::runUnrolled(llvm::StringRef what,
                                                           const TensorMap &inputs) {
  const int64_t m = what == "step" ? schedule_.microbatches : 1;
  stale_ = stale_ || what == "step"; // stage 0's other copies (sampling)
  for (const auto &[name, t] : inputs)
    if (t.rank() >= 1 && t.dim(0) % m != 0)
      return error(llvm::formatv("train_step: input '{0}' has {1} rows, not a multiple of the "
                                 "{2} micro-batches",
                                 name, t.dim(0), m));
  std::vector<TensorMap> outputs(ranks_.size());
  llvm::Error err = mesh_->run([&](int64_t r, Collectives &collectives) -> llvm::Error {
    const int64_t s = stageOf(r);
    TensorMap in =
        unrolledInputs(*layout_, s, schedule_.stages, schedule_.numStages(), r, inputs, m);
    CpuBackend &rank = *ranks_[static_cast<size_t>(r)];
    rank.setCollectives(&collectives);
    auto out = rank.run(pipelineFunction(s, what), in);
    rank.setCollectives(nullptr);
    if (!out)
      return error(llvm::formatv("rank {0} of pp, @{1}: {2}", s, pipelineFunction(s, what),
                                 llvm::toString(out.takeError())));
    outputs[static_cast<size_t>(r)] = std::move(*out);
    return llvm::Error::success();
  });
  if (err)
    return std::move(err);
  return std::move(outputs[0]);
}

llvm::Expected<TensorMap> PipelineCpuBackend::step(const TensorMap &inputs) {
  const int64_t p = schedule_.numStages(), m = schedule_.microbatches;
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
  TensorMap applied;
  stale_ = true;
  // Each rank's busy seconds and when its last backward ended.
  std::vector<double> busy(ranks_.size(), 0.0), end(busy), waited(busy);
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  auto since = [&](Clock::time_point t) {
    return std::chrono::duration<double>(t - start).count();
  };
  llvm::Error err = mesh_->run([&](int64_t r, Collectives &collectives) -> llvm::Error {
    const int64_t s = stageOf(r);
    const bool leader = leads(r);
    CpuBackend &rank = *ranks_[static_cast<size_t>(r)];
    rank.setCollectives(&collectives);
    InlineScope oneCore; // each rank computes on its own thread only
    // (stage, micro-batch) -> what its backward reads.
    std::map<std::pair<int64_t, int64_t>, TensorMap> saved;
    auto fail = [&](llvm::Error e, char kind, int64_t k, int64_t c) {
      rank.setCollectives(nullptr);
      return error(llvm::formatv("stage {0}, {1} of micro-batch {2}: {3}", c,
                                 kind == 'F' ? "forward" : "backward", k,
                                 llvm::toString(std::move(e))));
    };
    const std::string apply = pipelineFunction(s, "apply");
    for (auto [kind, k, c] : schedule_.actions[static_cast<size_t>(s)]) {
      const std::string forward = pipelineFunction(c, "forward"),
                        backward = pipelineFunction(c, "backward");
      TensorMap in =
          localInputs(micro[static_cast<size_t>(k)], kind == 'F' ? forward : backward, r);
      const auto began = Clock::now();
      llvm::scope_exit timed([&] {
        busy[static_cast<size_t>(r)] += since(Clock::now()) - since(began);
        end[static_cast<size_t>(r)] = since(Clock::now());
      });
      if (kind == 'F') {
        auto out = rank.run(forward, in);
        if (!out)
          return fail(out.takeError(), kind, k, c);
        for (auto &[name, t] : *out) {
          if (llvm::StringRef(name).starts_with("saved."))
            saved[{c, k}][name] = std::move(t);
          else if (leader) // the loss and metrics are alike on a stage's ranks
            outputs[static_cast<size_t>(c)][static_cast<size_t>(k)][name] = std::move(t);
        }
        continue;
      }
      for (auto &[name, t] : saved[{c, k}])
        in[name] = std::move(t);
      saved.erase({c, k});
      auto out = rank.run(backward, in);
      if (!out)
        return fail(out.takeError(), kind, k, c);
    }
    // The waits of the forwards and backwards (not the apply's).
    waited[static_cast<size_t>(r)] = mesh_->recvWaitSeconds(r);
    auto out = rank.run(apply, localInputs(micro[0], apply, r));
    rank.setCollectives(nullptr);
    if (!out)
      return error(llvm::formatv("rank {0} of pp, the optimizer step: {1}", s,
                                 llvm::toString(out.takeError())));
    if (r == 0)
      applied = std::move(*out);
    return llvm::Error::success();
  });
  if (err)
    return std::move(err);
  if (++steps_ > 1) {
    ++timedSteps_;
    // Waiting for another stage's message is idle time, not work (the
    // apply's all_reduce is outside the actions timed). Per stage: its
    // first rank's (a stage's ranks work alike).
    for (int64_t r = 0; r < static_cast<int64_t>(ranks_.size()); ++r)
      if (leads(r))
        busySeconds_ += busy[static_cast<size_t>(r)] - waited[static_cast<size_t>(r)];
    spanSeconds_ += *std::max_element(end.begin(), end.end());
  }
  // The loss and metrics: the micro-batches' mean, from the stage that
  // computed each; the optimizer's outputs are every stage's alike.
  TensorMap result = applied;
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
    int64_t stage = it == owner_.end() ? 0 : it->second;
    const DimAxes *axes = layout_->stateAxes(named.first);
    if (!axes) {
      // Whole on every rank of its stage: its first rank's.
      for (int64_t r = 0; r < static_cast<int64_t>(ranks_.size()); ++r)
        if (stageOf(r) == stage) {
          named.second = each[static_cast<size_t>(r)][i].second;
          break;
        }
      continue;
    }
    // Split over the stage's ranks (ZeRO, tensor parallelism).
    HostTensor whole(named.second.dtype(), layout_->globalShape(named.second.shape(), *axes));
    for (int64_t r = 0; r < static_cast<int64_t>(ranks_.size()); ++r)
      if (stageOf(r) == stage)
        layout_->place(whole, each[static_cast<size_t>(r)][i].second, *axes, r);
    named.second = std::move(whole);
  }
  return out;
}

llvm::Error PipelineCpuBackend::setState(const NamedTensors &tensors) {
  for (int64_t r = 0; r < static_cast<int64_t>(ranks_.size()); ++r) {
    auto mine = layout_->partsFor(tensors, specs_, r);
    if (!mine)
      return mine.takeError();
    if (llvm::Error err = ranks_[static_cast<size_t>(r)]->setState(*mine))
      return err;
  }
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
               m = static_cast<double>(schedule_.microbatches),
               v = static_cast<double>(schedule_.virtualStages);
  if (schedule_.virtualStages > 1)
    return llvm::formatv("pipeline: the ranks waited {0:f1}% of their time in forwards and "
                         "backwards (steps 2-{1}; interleaved, (p-1)/(v·m+p-1) = {2:f1}%)",
                         100 * measuredBubble(), steps_, 100 * (p - 1) / (v * m + p - 1))
        .str();
  return llvm::formatv("pipeline: the stages waited {0:f1}% of their time in forwards and "
                       "backwards (steps 2-{1}; (p-1)/(m+p-1) = {2:f1}%)",
                       100 * measuredBubble(), steps_, 100 * (p - 1) / (m + p - 1))
      .str();
}

std::string PipelineCpuBackend::describe() const {
  std::string stages;
  for (size_t s = 0; s < schedule_.blocks.size(); ++s)
    stages += schedule_.virtualStages > 1
                  ? llvm::formatv("\n  stage {0} (rank {1}): {2}", s,
                                  static_cast<int64_t>(s) % schedule_.stages, schedule_.blocks[s])
                        .str()
                  : llvm::formatv("\n  stage {0}: {1}", s, schedule_.blocks[s]).str();
  std::string mesh = ranks_.size() > static_cast<size_t>(schedule_.stages)
                         ? " (mesh " + describeMesh(layout_->axes()) + ")"
                         : "";
  std::string name = schedule_.virtualStages > 1
                         ? llvm::formatv("interleaved {0}, {1} stages a rank", schedule_.name,
                                         schedule_.virtualStages)
                               .str()
                         : schedule_.name;
  return llvm::formatv("cpu: {0} pipeline {5} as threads of this process{4}, {1} "
                       "micro-batches per step, schedule {2}{3}",
                       schedule_.stages, schedule_.microbatches, name, stages, mesh,
                       schedule_.virtualStages > 1 ? "ranks" : "stages")
      .str();
}

} // namespace kiln::cpu
