//===- ShardingUtils.cpp - what propagation and partitioning share ---------===//

#include "passes/ShardingUtils.h"

#include "passes/PassUtils.h"

#include "llvm/ADT/StringExtras.h"

using namespace mlir;

namespace kiln {

MeshAttr getMesh(ModuleOp module) {
  return module->getAttrOfType<MeshAttr>(KilnDialect::kMeshAttrName);
}

SmallVector<StringAttr> dataAxes(MeshAttr mesh) {
  SmallVector<StringAttr> axes;
  for (auto [name, size] : llvm::zip_equal(mesh.getNames(), mesh.getSizes()))
    if (size > 1 && llvm::is_contained({"dp", "edp", "ep"}, name.getValue()))
      axes.push_back(name);
  return axes;
}

bool passesPartialSums(Operation *op) { return isa<ReshapeOp, TransposeOp, SliceOp>(op); }

FailureOr<MeshAttr> parseMesh(MLIRContext *context, StringRef text, std::string &error) {
  SmallVector<StringAttr> names;
  SmallVector<int64_t> sizes;
  SmallVector<StringRef> parts;
  text.split(parts, ',', -1, /*KeepEmpty=*/false);
  for (StringRef part : parts) {
    auto [untrimmed, size] = part.split('=');
    StringRef name = untrimmed.trim(); // (a lambda below captures it)
    int64_t n;
    if (name.empty() || size.trim().getAsInteger(10, n) || n < 1) {
      error = "mesh '" + text.str() + "': each axis is name=size with size >= 1, got '" +
              part.trim().str() + "'";
      return failure();
    }
    if (llvm::any_of(names, [&](StringAttr a) { return a.getValue() == name; })) {
      error = "mesh '" + text.str() + "': axis '" + name.str() + "' appears twice";
      return failure();
    }
    names.push_back(StringAttr::get(context, name));
    sizes.push_back(n);
  }
  if (names.empty()) {
    error = "mesh '" + text.str() + "' has no axes (expected e.g. dp=2,tp=1)";
    return failure();
  }
  return MeshAttr::get(context, names, sizes);
}

ShardingAttr getSharding(Value v) {
  auto rank = cast<RankedTensorType>(v.getType()).getRank();
  if (auto arg = dyn_cast<BlockArgument>(v)) {
    if (auto func = dyn_cast<func::FuncOp>(arg.getOwner()->getParentOp()))
      if (auto s = func.getArgAttrOfType<ShardingAttr>(arg.getArgNumber(),
                                                       KilnDialect::kShardingAttrName))
        return s;
    return ShardingAttr::getReplicated(v.getContext(), rank);
  }
  auto result = cast<OpResult>(v);
  if (auto all = result.getOwner()->getAttrOfType<ArrayAttr>(KilnDialect::kShardingsAttrName))
    if (result.getResultNumber() < all.size())
      if (auto s = dyn_cast<ShardingAttr>(all[result.getResultNumber()]))
        return s;
  return ShardingAttr::getReplicated(v.getContext(), rank);
}

FailureOr<SmallVector<func::FuncOp>> functionsToShard(ModuleOp module, StringRef name,
                                                      StringRef pass) {
  SmallVector<func::FuncOp> funcs;
  if (name.empty()) {
    for (auto func : module.getOps<func::FuncOp>())
      funcs.push_back(func);
  } else if (auto func = module.lookupSymbol<func::FuncOp>(name)) {
    funcs.push_back(func);
  } else {
    module.emitError() << pass << ": no function @" << name;
    return failure();
  }
  llvm::erase_if(funcs, [](func::FuncOp f) { return f.isExternal(); });
  for (func::FuncOp func : funcs)
    if (!func.getBody().hasOneBlock()) {
      func.emitError() << pass << ": @" << func.getSymName() << " must have exactly one block";
      return failure();
    }
  return funcs;
}

std::string describeOp(Operation *op) {
  std::string s = op->getName().getStringRef().str();
  if (std::string scope = scopeOf(op); !scope.empty())
    return s + " at \"" + scope + "\"";
  Location loc = op->getLoc();
  if (auto fused = dyn_cast<FusedLoc>(loc); fused && !fused.getLocations().empty())
    loc = fused.getLocations().front();
  if (auto file = dyn_cast<FileLineColLoc>(loc))
    s += " at " + file.getFilename().str() + ":" + std::to_string(file.getLine());
  return s;
}

} // namespace kiln
