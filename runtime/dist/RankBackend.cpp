//===- RankBackend.cpp - this process as one rank of a mesh ----------------===//

#include "runtime/dist/RankBackend.h"

#include "llvm/Support/FormatVariadic.h"

namespace kiln::dist {

namespace {
llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}
} // namespace

llvm::Expected<cpu::HostTensor> gatherState(SocketGroup &group, const MeshLayout &layout,
                                            llvm::StringRef name, cpu::HostTensor t) {
  const DimAxes *axes = layout.stateAxes(name);
  if (!axes)
    return t;
  // One all_gather per split dimension and axis (a dimension's minor axis
  // first), in the same order on every rank.
  for (size_t d = 0; d < axes->size(); ++d)
    for (const std::string &axis : llvm::reverse((*axes)[d])) {
      auto whole = group.allGather(t, axis, static_cast<int64_t>(d));
      if (!whole)
        return error("gathering '" + name + "': " + llvm::toString(whole.takeError()));
      t = std::move(*whole);
    }
  return t;
}

llvm::Error RankBackend::load(mlir::ModuleOp module, uint64_t seed) {
  auto layout = MeshLayout::of(module);
  if (!layout)
    return layout.takeError();
  if (layout->numRanks() != group_.size())
    return error(llvm::formatv("the mesh ({0}) has {1} ranks but {2} processes run it",
                               describeMesh(layout->axes()), layout->numRanks(), group_.size()));
  layout_ = std::move(*layout);
  group_.setMesh(layout_->axes());
  if (llvm::Error err = local_->load(module, seed))
    return err;
  // The state is initialized whole, as on one device, and each rank keeps
  // its part: a run's numbers do not depend on the mesh or on whether its
  // ranks are threads or processes.
  specs_ = layout_->globalSpecs(local_->stateSpecs());
  if (!layout_->hasSplitState())
    return llvm::Error::success();
  auto whole = MeshLayout::initialState(specs_, seed);
  return whole ? setState(*whole) : whole.takeError();
}

llvm::Expected<TensorMap> RankBackend::run(llvm::StringRef fn, const TensorMap &inputs) {
  const MeshLayout::Function *l = layout_->function(fn);
  if (!l)
    return error("the compiled module has no function @" + fn);
  // Not partitioned (evaluation, sampling): every rank computes the same
  // values from the same replicated state.
  if (!l->partitioned)
    return local_->run(fn, inputs);
  TensorMap mine;
  for (const auto &[name, t] : inputs) {
    auto layout = l->inputs.find(name);
    auto shape = l->inputShapes.find(name);
    // A split input given whole keeps this rank's part; given with the
    // part's shape, it is that part already (batchRows).
    bool given = shape != l->inputShapes.end() && t.shape() == shape->second;
    mine[name] = layout != l->inputs.end() && isSplit(layout->second) && !given
                     ? layout_->partOf(t, layout->second, group_.rank())
                     : t;
  }
  for (const auto &[name, axes] : l->outputs)
    if (isSplit(axes))
      return error("@" + fn + ": output '" + name +
                   "' is split over the mesh; gathering split outputs is planned");
  return local_->run(fn, mine);
}

std::pair<int64_t, int64_t> RankBackend::batchRows(llvm::StringRef fn, int64_t batch) const {
  const MeshLayout::Function *l = layout_ ? layout_->function(fn) : nullptr;
  if (!l || !l->partitioned)
    return {0, batch};
  auto tokens = l->inputs.find("tokens");
  if (tokens == l->inputs.end() || tokens->second.empty() || tokens->second[0].empty())
    return {0, batch};
  const std::vector<std::string> &axes = tokens->second[0];
  const int64_t part = batch / layout_->partsOf(axes);
  return {layout_->chunkOf(axes, group_.rank()) * part, part};
}

llvm::Expected<NamedTensors> RankBackend::gather(llvm::Expected<NamedTensors> local) {
  if (!local || !layout_->hasSplitState())
    return local;
  for (auto &[name, t] : *local) {
    auto whole = gatherState(group_, *layout_, name, std::move(t));
    if (!whole)
      return whole.takeError();
    t = std::move(*whole);
  }
  return local;
}

llvm::Expected<NamedTensors> RankBackend::params() { return gather(local_->params()); }

llvm::Expected<NamedTensors> RankBackend::optimizerStates() {
  return gather(local_->optimizerStates());
}

llvm::Error RankBackend::setState(const NamedTensors &tensors) {
  auto mine = layout_->partsFor(tensors, specs_, group_.rank());
  return mine ? local_->setState(*mine) : mine.takeError();
}

std::string RankBackend::describe() const {
  std::string local = local_->describe();
  return llvm::formatv("{0}: rank {1} of {2} processes (mesh {3}), {4}{5}{6}", local_->name(),
                       group_.rank(), group_.size(), describeMesh(layout_->axes()), collectives_,
                       local.empty() ? "" : "\n", local)
      .str();
}

} // namespace kiln::dist
