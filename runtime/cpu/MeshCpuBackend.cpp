//===- MeshCpuBackend.cpp - a partitioned step on CPU threads --------------===//

#include "runtime/cpu/MeshCpuBackend.h"
#include "runtime/cpu/Kernels.h"

#include "ir/KilnAttrs.h"
#include "ir/KilnDialect.h"

#include "llvm/Support/FormatVariadic.h"

namespace kiln::cpu {

llvm::Error MeshCpuBackend::load(mlir::ModuleOp module, uint64_t seed) {
  auto layout = MeshLayout::of(module);
  if (!layout)
    return layout.takeError();
  layout_ = std::move(*layout);
  mesh_ = std::make_unique<ThreadMesh>(layout_->axes());
  ranks_.clear();
  for (int64_t r = 0; r < mesh_->numRanks(); ++r) {
    ranks_.push_back(std::make_unique<CpuBackend>());
    if (llvm::Error err = ranks_.back()->load(module, seed))
      return err;
  }
  // The state is initialized whole, as on one device, and each rank keeps
  // its part: a run's numbers do not depend on the mesh.
  specs_ = layout_->globalSpecs(ranks_[0]->stateSpecs());
  if (!layout_->hasSplitState())
    return llvm::Error::success();
  auto whole = MeshLayout::initialState(specs_, seed);
  return whole ? setState(*whole) : whole.takeError();
}

llvm::Expected<int64_t> MeshCpuBackend::memoryNeeded(mlir::ModuleOp module) {
  auto mesh = module->getAttrOfType<MeshAttr>(KilnDialect::kMeshAttrName);
  CpuBackend one;
  auto bytes = one.memoryNeeded(module);
  if (!bytes)
    return bytes.takeError();
  return *bytes * (mesh ? mesh.getNumRanks() : 1);
}

llvm::Expected<NamedTensors> MeshCpuBackend::gather(NamedTensors local0) {
  if (!layout_->hasSplitState())
    return local0;
  bool params = !local0.empty() && llvm::any_of(specs_, [&](const StateSpec &spec) {
    return spec.name == local0.front().first && spec.isParam;
  });
  // Every rank's tensors, fetched once.
  std::vector<NamedTensors> locals(ranks_.size());
  for (size_t r = 0; r < ranks_.size(); ++r) {
    auto state = r == 0 ? llvm::Expected<NamedTensors>(local0)
                        : (params ? ranks_[r]->params() : ranks_[r]->optimizerStates());
    if (!state)
      return state.takeError();
    locals[r] = std::move(*state);
  }
  for (auto [i, named] : llvm::enumerate(local0)) {
    const DimAxes *axes = layout_->stateAxes(named.first);
    if (!axes)
      continue;
    HostTensor whole(named.second.dtype(), layout_->globalShape(named.second.shape(), *axes));
    // Each rank's part goes where its coordinates say (ranks holding the
    // same part write the same values).
    for (size_t r = 0; r < ranks_.size(); ++r)
      layout_->place(whole, locals[r][i].second, *axes, static_cast<int64_t>(r));
    named.second = std::move(whole);
  }
  return local0;
}

llvm::Expected<TensorMap> MeshCpuBackend::run(llvm::StringRef fn, const TensorMap &inputs) {
  const MeshLayout::Function *l = layout_->function(fn);
  if (!l)
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "the compiled module has no function @" + fn);
  if (!l->partitioned) {
    // Not partitioned (evaluation, sampling): every rank holds the same
    // replicated state, so rank 0 alone computes it — unless the function
    // updates state, which every rank must then do.
    TensorMap out;
    for (auto &rank : ranks_) {
      auto r = rank->run(fn, inputs);
      if (!r)
        return r.takeError();
      if (rank == ranks_[0])
        out = std::move(*r);
      if (!l->updatesState)
        break;
    }
    return out;
  }
  std::vector<TensorMap> outputs(ranks_.size());
  llvm::Error err = mesh_->run([&](int64_t rank, Collectives &collectives) -> llvm::Error {
    TensorMap mine;
    for (const auto &[name, t] : inputs) {
      auto layout = l->inputs.find(name);
      mine[name] = layout != l->inputs.end() && isSplit(layout->second)
                       ? layout_->partOf(t, layout->second, rank)
                       : t;
    }
    ranks_[rank]->setCollectives(&collectives);
    auto r = ranks_[rank]->run(fn, mine);
    ranks_[rank]->setCollectives(nullptr);
    if (!r)
      return r.takeError();
    outputs[rank] = std::move(*r);
    return llvm::Error::success();
  });
  if (err)
    return std::move(err);
  for (const auto &[name, axes] : l->outputs)
    if (isSplit(axes))
      return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                     "@" + fn + ": output '" + name +
                                         "' is split over the mesh; gathering split outputs is "
                                         "planned");
  return std::move(outputs[0]);
}

llvm::Error MeshCpuBackend::setState(const NamedTensors &tensors) {
  for (int64_t r = 0; r < static_cast<int64_t>(ranks_.size()); ++r) {
    auto mine = layout_->partsFor(tensors, specs_, r);
    if (!mine)
      return mine.takeError();
    if (llvm::Error err = ranks_[r]->setState(*mine))
      return err;
  }
  return llvm::Error::success();
}

std::string MeshCpuBackend::describe() const {
  return llvm::formatv("cpu: {0} ranks as threads of this process (mesh {1}), collectives "
                       "through shared memory",
                       ranks_.size(), describeMesh(layout_->axes()))
      .str();
}

} // namespace kiln::cpu
