//===- PipelineRankBackend.cpp - one rank process of a pipeline ------------===//

#include "runtime/dist/PipelineRankBackend.h"
#include "runtime/dist/RankBackend.h"

#include "runtime/cpu/Collectives.h"
#include "runtime/cpu/Kernels.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/Support/FormatVariadic.h"

namespace kiln::dist {

namespace {
llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}
} // namespace

llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>>
PipelineRankBackend::stageModule(mlir::ModuleOp module) {
  mlir::OwningOpRef<mlir::ModuleOp> clone(module.clone());
  if (llvm::Error err = prepare_(*clone))
    return std::move(err);
  // Only this stage's step and evaluation: its plan holds just its part.
  keepOnlyStage(*clone, stage_);
  const std::string step = pipelineFunction(stage_, "step");
  if (!clone->lookupSymbol<mlir::func::FuncOp>(step))
    return error("the pipeline's preparation wrote no @" + step);
  return std::move(clone);
}

llvm::Expected<int64_t> PipelineRankBackend::memoryNeeded(mlir::ModuleOp module) {
  auto layout = MeshLayout::of(module);
  if (!layout)
    return layout.takeError();
  stage_ = layout->coordinate(group_.rank(), "pp");
  auto mine = stageModule(module);
  if (!mine)
    return mine.takeError();
  return local_->memoryNeeded(**mine);
}

llvm::Error PipelineRankBackend::load(mlir::ModuleOp module, uint64_t seed) {
  auto schedule = PipelineSchedule::of(module);
  if (!schedule)
    return schedule.takeError();
  if (schedule->stages == 0)
    return error("the module has no pipeline (kiln.pipeline): run kiln-pipeline");
  schedule_ = std::move(*schedule);
  auto layout = MeshLayout::of(module);
  if (!layout)
    return layout.takeError();
  if (layout->numRanks() != group_.size())
    return error(llvm::formatv("the mesh ({0}) has {1} ranks but {2} processes run it",
                               describeMesh(layout->axes()), layout->numRanks(), group_.size()));
  if (layout->axisSize("pp") != schedule_.stages)
    return error("the module's mesh (" + describeMesh(layout->axes()) +
                 ") does not have its pipeline's " + llvm::Twine(schedule_.stages) +
                 " stages along pp");
  layout_ = std::move(*layout);
  group_.setMesh(layout_->axes());
  stage_ = layout_->coordinate(group_.rank(), "pp");

  // The whole model's state (every stage's functions), and who updates each.
  auto all = stateSpecsOf(module);
  if (!all)
    return all.takeError();
  specs_ = layout_->globalSpecs(*all);
  auto owners = cpu::pipelineOwners(module, schedule_);
  if (!owners)
    return owners.takeError();
  owner_ = std::move(*owners);

  // The clone lives only while the local backend compiles it: it belongs
  // to the caller's context, which may end before this backend does.
  {
    auto mine = stageModule(module);
    if (!mine)
      return mine.takeError();
    if (llvm::Error err = local_->load(**mine, seed))
      return err;
  }
  mine_.clear();
  for (const StateSpec &s : local_->stateSpecs())
    mine_.insert(s.name);
  // Split over the stage's ranks (ZeRO, tensor parallelism): initialized
  // whole, as on one device, each rank keeping its part.
  if (!layout_->hasSplitState())
    return llvm::Error::success();
  std::vector<StateSpec> mineWhole = layout_->globalSpecs(local_->stateSpecs());
  auto whole = MeshLayout::initialState(mineWhole, seed);
  if (!whole)
    return whole.takeError();
  auto parts = layout_->partsFor(*whole, mineWhole, group_.rank());
  return parts ? local_->setState(*parts) : parts.takeError();
}

llvm::Expected<TensorMap> PipelineRankBackend::run(llvm::StringRef fn, const TensorMap &inputs) {
  if (fn == "train_step") {
    for (const auto &[name, t] : inputs)
      if (t.rank() >= 1 && t.dim(0) % schedule_.microbatches != 0)
        return error(llvm::formatv("train_step: input '{0}' has {1} rows, not a multiple of the "
                                   "{2} micro-batches",
                                   name, t.dim(0), schedule_.microbatches));
    return local_->run(pipelineFunction(stage_, "step"),
                       cpu::unrolledInputs(*layout_, stage_, schedule_.stages,
                                           schedule_.numStages(), group_.rank(), inputs,
                                           schedule_.microbatches));
  }
  if (fn == "forward")
    return local_->run(pipelineFunction(stage_, "eval"),
                       cpu::unrolledInputs(*layout_, stage_, schedule_.stages,
                                           schedule_.numStages(), group_.rank(), inputs, 1));
  return error("@" + fn +
               " does not run under pipeline stages on GPUs (only train_step and "
               "forward do; sampling there is planned)");
}

llvm::Expected<NamedTensors> PipelineRankBackend::gather(bool params) {
  auto local = params ? local_->params() : local_->optimizerStates();
  if (!local)
    return local.takeError();
  // Whole on this stage first: the parts split over its ranks gathered
  // (every rank of the stage holds the same names, in the same order).
  std::map<std::string, cpu::HostTensor> have;
  for (auto &[name, t] : *local) {
    auto whole = gatherState(group_, *layout_, name, std::move(t));
    if (!whole)
      return whole.takeError();
    have[name] = std::move(*whole);
  }
  // Then every stage's, from the stage that updates it: one all_gather
  // over pp each, in the model's order on every rank (exact: the owner's
  // bytes, not a sum).
  const int64_t p = schedule_.stages;
  NamedTensors out;
  for (const StateSpec &spec : specs_) {
    if (spec.isParam != params || !isCheckpointed(specs_, spec.name))
      continue;
    auto owner = owner_.find(spec.name);
    int64_t from = owner == owner_.end() ? 0 : owner->second;
    std::vector<int64_t> flat{std::max<int64_t>(1, cpu::product(spec.shape))};
    cpu::HostTensor mine(spec.dtype, flat);
    if (from == stage_) {
      auto it = have.find(spec.name);
      if (it == have.end())
        return error("stage " + llvm::Twine(stage_) + " updates '" + spec.name +
                     "' but does not hold it");
      mine = it->second.reshaped(flat);
    }
    auto all = group_.allGather(mine, "pp", 0);
    if (!all)
      return error("gathering '" + spec.name + "' from stage " + llvm::Twine(from) + ": " +
                   llvm::toString(all.takeError()));
    out.push_back({spec.name, cpu::partOf(*all, 0, from, p).reshaped(spec.shape)});
  }
  return out;
}

llvm::Error PipelineRankBackend::setState(const NamedTensors &tensors) {
  NamedTensors held;
  for (const auto &[name, t] : tensors)
    if (mine_.count(name))
      held.push_back({name, t});
  std::vector<StateSpec> mineWhole = layout_->globalSpecs(local_->stateSpecs());
  auto parts = layout_->partsFor(held, mineWhole, group_.rank());
  return parts ? local_->setState(*parts) : parts.takeError();
}

std::string PipelineRankBackend::describe() const {
  std::string local = local_->describe();
  // This rank's stages (interleaved: stage_, stage_ + pp, ...) and blocks.
  std::string stages, blocks;
  for (int64_t c = stage_; c < schedule_.numStages(); c += schedule_.stages) {
    stages += (stages.empty() ? "" : ", ") + std::to_string(c);
    if (static_cast<size_t>(c) < schedule_.blocks.size())
      blocks += (blocks.empty() ? "" : ",") + schedule_.blocks[static_cast<size_t>(c)];
  }
  std::string where =
      schedule_.virtualStages > 1
          ? llvm::formatv("pipeline rank {0} of {1}, its stages {2} of {3} ({4}), schedule "
                          "interleaved {5}",
                          stage_, schedule_.stages, stages, schedule_.numStages(), blocks,
                          schedule_.name)
                .str()
          : llvm::formatv("pipeline stage {0} of {1}{2}, schedule {3}", stage_, schedule_.stages,
                          blocks.empty() ? "" : " (" + blocks + ")", schedule_.name)
                .str();
  return llvm::formatv("{0}: rank {1} of {2} processes (mesh {3}), {4}, {5} micro-batches per "
                       "step, its whole step as one function; {6}{7}{8}",
                       local_->name(), group_.rank(), group_.size(), describeMesh(layout_->axes()),
                       where, schedule_.microbatches, collectives_, local.empty() ? "" : "\n",
                       local)
      .str();
}

} // namespace kiln::dist
