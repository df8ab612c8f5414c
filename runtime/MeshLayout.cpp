//===- MeshLayout.cpp - how a partitioned module's tensors split over ranks ===//

#include "runtime/MeshLayout.h"
#include "runtime/ParamInit.h"
#include "runtime/cpu/Kernels.h"

#include "ir/KilnAttrs.h"
#include "ir/KilnDialect.h"

namespace kiln {

namespace {
DimAxes axesOf(ShardingAttr s) {
  DimAxes axes;
  if (s)
    for (const ShardingAttr::Axes &list : s.getAllAxes()) {
      axes.emplace_back();
      for (mlir::StringAttr a : list)
        axes.back().push_back(a.getValue().str());
    }
  return axes;
}
} // namespace

bool isSplit(const DimAxes &axes) {
  return llvm::any_of(axes, [](const std::vector<std::string> &a) { return !a.empty(); });
}

namespace {
int64_t oneCoordinate(const MeshAxes &mesh, int64_t rank, llvm::StringRef axis) {
  int64_t stride = 1;
  for (auto &[name, size] : mesh)
    stride *= size;
  for (auto &[name, size] : mesh) {
    stride /= size;
    if (name == axis)
      return rank / stride % size;
  }
  return 0;
}

int64_t oneSize(const MeshAxes &mesh, llvm::StringRef axis) {
  for (auto &[name, size] : mesh)
    if (name == axis)
      return size;
  return 1;
}
} // namespace

int64_t meshCoordinate(const MeshAxes &mesh, int64_t rank, llvm::StringRef axis) {
  int64_t c = 0;
  for (llvm::StringRef a : groupAxes(axis))
    c = c * oneSize(mesh, a) + oneCoordinate(mesh, rank, a);
  return c;
}

int64_t meshAxisSize(const MeshAxes &mesh, llvm::StringRef axis) {
  int64_t n = 1;
  for (llvm::StringRef a : groupAxes(axis))
    n *= oneSize(mesh, a);
  return n;
}

std::vector<int64_t> meshGroup(const MeshAxes &mesh, int64_t rank, llvm::StringRef axis) {
  auto inGroup = groupAxes(axis);
  int64_t ranks = 1;
  for (auto &[name, n] : mesh)
    ranks *= n;
  // Every rank whose coordinates off the group's axes are rank's, placed
  // at its coordinate in the group.
  std::vector<int64_t> members(static_cast<size_t>(meshAxisSize(mesh, axis)), -1);
  for (int64_t r = 0; r < ranks; ++r) {
    bool same = true;
    for (auto &[name, n] : mesh)
      if (!llvm::is_contained(inGroup, name))
        same = same && oneCoordinate(mesh, r, name) == oneCoordinate(mesh, rank, name);
    if (same)
      members[static_cast<size_t>(meshCoordinate(mesh, r, axis))] = r;
  }
  if (llvm::is_contained(members, -1))
    return {rank}; // (an axis named twice, which the verifier refuses)
  return members;
}

std::string describeMesh(const MeshAxes &mesh) {
  std::string text;
  for (auto &[name, size] : mesh)
    text += (text.empty() ? "" : ", ") + name + " = " + std::to_string(size);
  return text;
}

llvm::Expected<MeshLayout> MeshLayout::of(mlir::ModuleOp module) {
  auto mesh = module->getAttrOfType<MeshAttr>(KilnDialect::kMeshAttrName);
  if (!mesh)
    return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                   "a mesh backend needs a module partitioned over a mesh "
                                   "(kiln.mesh)");
  MeshLayout layout;
  for (auto [name, size] : llvm::zip_equal(mesh.getNames(), mesh.getSizes())) {
    layout.axes_.push_back({name.getValue().str(), size});
    layout.numRanks_ *= size;
  }
  for (auto func : module.getOps<mlir::func::FuncOp>()) {
    Function f;
    f.partitioned = func->hasAttr(KilnDialect::kPartitionedAttrName);
    for (unsigned i = 0; i < func.getNumResults(); ++i)
      f.updatesState |= func.getResultAttr(i, KilnDialect::kAliasesAttrName) != nullptr;
    for (unsigned i = 0; i < func.getNumArguments(); ++i)
      if (auto name = func.getArgAttrOfType<mlir::StringAttr>(i, KilnDialect::kInputAttrName)) {
        f.inputs[name.getValue().str()] =
            axesOf(func.getArgAttrOfType<ShardingAttr>(i, KilnDialect::kShardingAttrName));
        if (auto type = mlir::dyn_cast<mlir::RankedTensorType>(func.getArgument(i).getType()))
          f.inputShapes[name.getValue().str()] = type.getShape().vec();
      }
    for (unsigned i = 0; i < func.getNumResults(); ++i)
      if (auto name = func.getResultAttrOfType<mlir::StringAttr>(i, KilnDialect::kOutputAttrName))
        f.outputs[name.getValue().str()] =
            axesOf(func.getResultAttrOfType<ShardingAttr>(i, KilnDialect::kShardingAttrName));
    // Split parameters and states (ZeRO, tensor parallelism): their global
    // layout.
    for (unsigned i = 0; i < func.getNumArguments(); ++i) {
      auto name = func.getArgAttrOfType<mlir::StringAttr>(i, KilnDialect::kParamAttrName);
      if (!name)
        name = func.getArgAttrOfType<mlir::StringAttr>(i, KilnDialect::kStateAttrName);
      DimAxes axes = axesOf(func.getArgAttrOfType<ShardingAttr>(i, KilnDialect::kShardingAttrName));
      if (name && isSplit(axes))
        layout.stateAxes_[name.getValue().str()] = axes;
    }
    layout.functions_[func.getSymName().str()] = std::move(f);
  }
  return layout;
}

const MeshLayout::Function *MeshLayout::function(llvm::StringRef fn) const {
  auto it = functions_.find(fn.str());
  return it == functions_.end() ? nullptr : &it->second;
}

const DimAxes *MeshLayout::stateAxes(llvm::StringRef name) const {
  auto it = stateAxes_.find(name.str());
  return it == stateAxes_.end() ? nullptr : &it->second;
}

int64_t MeshLayout::partsOf(const std::vector<std::string> &axes) const {
  int64_t n = 1;
  for (const std::string &a : axes)
    n *= axisSize(a);
  return n;
}

int64_t MeshLayout::chunkOf(const std::vector<std::string> &axes, int64_t rank) const {
  int64_t chunk = 0;
  for (const std::string &a : axes)
    chunk = chunk * axisSize(a) + coordinate(rank, a);
  return chunk;
}

std::vector<int64_t> MeshLayout::globalShape(std::vector<int64_t> shape,
                                             const DimAxes &axes) const {
  for (size_t d = 0; d < shape.size() && d < axes.size(); ++d)
    shape[d] *= partsOf(axes[d]);
  return shape;
}

std::vector<StateSpec> MeshLayout::globalSpecs(llvm::ArrayRef<StateSpec> local) const {
  std::vector<StateSpec> specs(local);
  for (StateSpec &spec : specs)
    if (const DimAxes *axes = stateAxes(spec.name))
      spec.shape = globalShape(spec.shape, *axes);
  return specs;
}

cpu::HostTensor MeshLayout::partOf(const cpu::HostTensor &t, const DimAxes &axes,
                                   int64_t rank) const {
  std::vector<int64_t> start(t.shape().size(), 0), limit = t.shape(),
                       strides(t.shape().size(), 1);
  for (size_t d = 0; d < axes.size() && d < limit.size(); ++d) {
    if (axes[d].empty())
      continue;
    int64_t part = t.shape()[d] / partsOf(axes[d]);
    start[d] = chunkOf(axes[d], rank) * part;
    limit[d] = start[d] + part;
  }
  return cpu::kernels::slice(t, start, limit, strides);
}

llvm::Expected<NamedTensors> MeshLayout::initialState(llvm::ArrayRef<StateSpec> specs,
                                                       uint64_t seed) {
  auto values = initParams(specs, seed);
  if (!values)
    return values.takeError();
  NamedTensors whole;
  for (auto [spec, value] : llvm::zip_equal(specs, *values))
    whole.push_back({spec.name, std::move(value)});
  return whole;
}

llvm::Expected<NamedTensors> MeshLayout::partsFor(const NamedTensors &tensors,
                                                  llvm::ArrayRef<StateSpec> specs,
                                                  int64_t rank) const {
  NamedTensors mine;
  for (const auto &[name, t] : tensors) {
    const DimAxes *axes = stateAxes(name);
    if (!axes) {
      mine.push_back({name, t});
      continue;
    }
    for (const StateSpec &spec : specs)
      if (spec.name == name && spec.shape != t.shape())
        return llvm::createStringError(llvm::inconvertibleErrorCode(),
                                       "'" + name + "' is " + t.typeString() +
                                           " in the checkpoint but has another shape in this "
                                           "model");
    mine.push_back({name, partOf(t, *axes, rank)});
  }
  return mine;
}

void MeshLayout::place(cpu::HostTensor &whole, const cpu::HostTensor &part, const DimAxes &axes,
                       int64_t rank) const {
  const std::vector<int64_t> &shape = whole.shape();
  std::vector<int64_t> offset(shape.size(), 0);
  for (size_t d = 0; d < shape.size() && d < axes.size(); ++d)
    offset[d] = chunkOf(axes[d], rank) * part.shape()[d];
  std::vector<int64_t> index(shape.size(), 0);
  for (int64_t e = 0, n = part.numel(); e < n; ++e) {
    int64_t flat = 0;
    for (size_t d = 0; d < shape.size(); ++d)
      flat = flat * shape[d] + offset[d] + index[d];
    whole.set(flat, part.get(e));
    for (int64_t d = static_cast<int64_t>(shape.size()) - 1; d >= 0; --d) {
      if (++index[d] < part.shape()[d])
        break;
      index[d] = 0;
    }
  }
}

} // namespace kiln
