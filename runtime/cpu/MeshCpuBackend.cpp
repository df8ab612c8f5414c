//===- MeshCpuBackend.cpp - a partitioned step on CPU threads --------------===//

#include "runtime/cpu/MeshCpuBackend.h"
#include "runtime/cpu/Kernels.h"
#include "runtime/ParamInit.h"

#include "ir/KilnAttrs.h"
#include "ir/KilnDialect.h"

#include "llvm/Support/FormatVariadic.h"

namespace kiln::cpu {

namespace {
llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

std::vector<std::string> axesOf(ShardingAttr s) {
  std::vector<std::string> axes;
  if (s)
    for (mlir::StringAttr a : s.getDims())
      axes.push_back(a.getValue().str());
  return axes;
}

bool isSplit(const std::vector<std::string> &axes) {
  return llvm::any_of(axes, [](const std::string &a) { return !a.empty(); });
}
} // namespace

llvm::Error MeshCpuBackend::load(mlir::ModuleOp module, uint64_t seed) {
  auto mesh = module->getAttrOfType<MeshAttr>(KilnDialect::kMeshAttrName);
  if (!mesh)
    return error("the CPU mesh backend needs a module partitioned over a mesh (kiln.mesh)");
  axes_.clear();
  for (auto [name, size] : llvm::zip_equal(mesh.getNames(), mesh.getSizes()))
    axes_.push_back({name.getValue().str(), size});
  mesh_ = std::make_unique<ThreadMesh>(axes_);
  for (auto func : module.getOps<mlir::func::FuncOp>()) {
    Layouts l;
    l.partitioned = func->hasAttr(KilnDialect::kPartitionedAttrName);
    for (unsigned i = 0; i < func.getNumResults(); ++i)
      l.updatesState |= func.getResultAttr(i, KilnDialect::kAliasesAttrName) != nullptr;
    for (unsigned i = 0; i < func.getNumArguments(); ++i)
      if (auto name = func.getArgAttrOfType<mlir::StringAttr>(i, KilnDialect::kInputAttrName))
        l.inputs[name.getValue().str()] =
            axesOf(func.getArgAttrOfType<ShardingAttr>(i, KilnDialect::kShardingAttrName));
    for (unsigned i = 0; i < func.getNumResults(); ++i)
      if (auto name = func.getResultAttrOfType<mlir::StringAttr>(i, KilnDialect::kOutputAttrName))
        l.outputs[name.getValue().str()] =
            axesOf(func.getResultAttrOfType<ShardingAttr>(i, KilnDialect::kShardingAttrName));
    // Split parameters and states (ZeRO): their global layout.
    for (unsigned i = 0; i < func.getNumArguments(); ++i) {
      auto name = func.getArgAttrOfType<mlir::StringAttr>(i, KilnDialect::kParamAttrName);
      if (!name)
        name = func.getArgAttrOfType<mlir::StringAttr>(i, KilnDialect::kStateAttrName);
      auto axes = axesOf(func.getArgAttrOfType<ShardingAttr>(i, KilnDialect::kShardingAttrName));
      if (name && isSplit(axes))
        stateAxes_[name.getValue().str()] = axes;
    }
    layouts_[func.getSymName().str()] = std::move(l);
  }
  ranks_.clear();
  for (int64_t r = 0; r < mesh_->numRanks(); ++r) {
    ranks_.push_back(std::make_unique<CpuBackend>());
    if (llvm::Error err = ranks_.back()->load(module, seed))
      return err;
  }
  // The state is initialized whole, as on one device, and each rank keeps
  // its part: a run's numbers do not depend on the mesh.
  specs_ = std::vector<StateSpec>(ranks_[0]->stateSpecs());
  for (StateSpec &spec : specs_)
    if (auto it = stateAxes_.find(spec.name); it != stateAxes_.end())
      for (size_t d = 0; d < spec.shape.size(); ++d)
        if (!it->second[d].empty())
          spec.shape[d] *= mesh_->axisSize(it->second[d]);
  if (stateAxes_.empty())
    return llvm::Error::success();
  auto values = initParams(specs_, seed);
  if (!values)
    return values.takeError();
  NamedTensors whole;
  for (auto [spec, value] : llvm::zip_equal(specs_, *values))
    whole.push_back({spec.name, std::move(value)});
  return setState(whole);
  return llvm::Error::success();
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
  if (stateAxes_.empty())
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
    auto it = stateAxes_.find(named.first);
    if (it == stateAxes_.end())
      continue;
    const std::vector<std::string> &axes = it->second;
    const HostTensor &part = named.second;
    std::vector<int64_t> shape = part.shape();
    for (size_t d = 0; d < shape.size(); ++d)
      if (!axes[d].empty())
        shape[d] *= mesh_->axisSize(axes[d]);
    HostTensor whole(part.dtype(), shape);
    // Each rank's part goes where its coordinates say (ranks holding the
    // same part write the same values).
    for (size_t r = 0; r < ranks_.size(); ++r) {
      const HostTensor &mine = locals[r][i].second;
      std::vector<int64_t> offset(shape.size(), 0);
      for (size_t d = 0; d < shape.size(); ++d)
        if (!axes[d].empty())
          offset[d] = mesh_->coordinate(static_cast<int64_t>(r), axes[d]) * mine.shape()[d];
      std::vector<int64_t> index(shape.size(), 0);
      for (int64_t e = 0, n = mine.numel(); e < n; ++e) {
        int64_t flat = 0;
        for (size_t d = 0; d < shape.size(); ++d)
          flat = flat * shape[d] + offset[d] + index[d];
        whole.set(flat, mine.get(e));
        for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
          if (++index[d] < mine.shape()[d])
            break;
          index[d] = 0;
        }
      }
    }
    named.second = std::move(whole);
  }
  return local0;
}

HostTensor MeshCpuBackend::partOf(const HostTensor &t, const std::vector<std::string> &axes,
                                  int64_t rank) const {
  std::vector<int64_t> start(t.shape().size(), 0), limit = t.shape(),
                       strides(t.shape().size(), 1);
  for (size_t d = 0; d < axes.size() && d < limit.size(); ++d) {
    if (axes[d].empty())
      continue;
    int64_t part = t.shape()[d] / mesh_->axisSize(axes[d]);
    start[d] = mesh_->coordinate(rank, axes[d]) * part;
    limit[d] = start[d] + part;
  }
  return kernels::slice(t, start, limit, strides);
}

llvm::Expected<TensorMap> MeshCpuBackend::run(llvm::StringRef fn, const TensorMap &inputs) {
  auto it = layouts_.find(fn.str());
  if (it == layouts_.end())
    return error("the compiled module has no function @" + fn);
  const Layouts &l = it->second;
  if (!l.partitioned) {
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
      if (!l.updatesState)
        break;
    }
    return out;
  }
  std::vector<TensorMap> outputs(ranks_.size());
  llvm::Error err = mesh_->run([&](int64_t rank, Collectives &collectives) -> llvm::Error {
    TensorMap mine;
    for (const auto &[name, t] : inputs) {
      auto layout = l.inputs.find(name);
      mine[name] = layout != l.inputs.end() && isSplit(layout->second)
                       ? partOf(t, layout->second, rank)
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
  for (const auto &[name, axes] : l.outputs)
    if (isSplit(axes))
      return error("@" + fn + ": output '" + name + "' is split over the mesh; gathering split "
                   "outputs is planned");
  return std::move(outputs[0]);
}

llvm::Error MeshCpuBackend::setState(const NamedTensors &tensors) {
  for (int64_t r = 0; r < static_cast<int64_t>(ranks_.size()); ++r) {
    NamedTensors mine;
    for (const auto &[name, t] : tensors) {
      auto it = stateAxes_.find(name);
      if (it == stateAxes_.end()) {
        mine.push_back({name, t});
        continue;
      }
      for (const StateSpec &spec : specs_)
        if (spec.name == name && spec.shape != t.shape())
          return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                         "'" + name + "' is " + t.typeString() +
                                             " in the checkpoint but has another shape in this "
                                             "model");
      mine.push_back({name, partOf(t, it->second, r)});
    }
    if (llvm::Error err = ranks_[r]->setState(mine))
      return err;
  }
  return llvm::Error::success();
}

std::string MeshCpuBackend::describe() const {
  std::string mesh;
  for (auto &[name, size] : axes_)
    mesh += (mesh.empty() ? "" : ", ") + name + " = " + std::to_string(size);
  return llvm::formatv("cpu: {0} ranks as threads of this process (mesh {1}), collectives "
                       "through shared memory",
                       ranks_.size(), mesh)
      .str();
}

} // namespace kiln::cpu
