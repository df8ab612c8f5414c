//===- CustomKernel.cpp - the registry of plugins' kernels, and the op -----===//

#include "ir/CustomKernel.h"
#include "ir/KilnOps.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/Support/FormatVariadic.h"

#include <memory>
#include <mutex>

using namespace mlir;

namespace kiln {
namespace {

struct Registry {
  std::mutex mutex;
  // Entries are never removed (a loaded plugin stays loaded), so pointers
  // handed out stay valid.
  llvm::StringMap<std::unique_ptr<CustomKernel>> kernels;
};

Registry &registry() {
  static Registry r;
  return r;
}

} // namespace

llvm::Error registerCustomKernel(CustomKernel kernel) {
  Registry &r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  if (kernel.name.empty())
    return llvm::createStringError("a custom kernel needs a name");
  auto where = [](const std::string &origin) {
    return origin.empty() ? std::string("kiln itself") : origin;
  };
  if (auto it = r.kernels.find(kernel.name); it != r.kernels.end())
    return llvm::createStringError(llvm::formatv(
        "custom kernel '{0}' from {1} is already registered (by {2})", kernel.name,
        where(kernel.origin), where(it->second->origin)));
  std::string name = kernel.name;
  r.kernels[name] = std::make_unique<CustomKernel>(std::move(kernel));
  return llvm::Error::success();
}

const CustomKernel *lookupCustomKernel(llvm::StringRef name) {
  Registry &r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  auto it = r.kernels.find(name);
  return it == r.kernels.end() ? nullptr : it->second.get();
}

std::vector<std::string> customKernelNames() {
  Registry &r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> names;
  for (auto &entry : r.kernels)
    names.push_back(entry.getKey().str());
  llvm::sort(names);
  return names;
}

//===----------------------------------------------------------------------===//
// kiln.custom_kernel
//===----------------------------------------------------------------------===//

const CustomKernel *CustomKernelOp::getDefinition() { return lookupCustomKernel(getKernel()); }

double CustomKernelOp::getParam(llvm::StringRef name, double fallback) {
  DictionaryAttr params = getParamsAttr();
  if (!params)
    return fallback;
  Attribute a = params.get(name);
  if (auto f = dyn_cast_or_null<FloatAttr>(a))
    return f.getValueAsDouble();
  if (auto i = dyn_cast_or_null<IntegerAttr>(a))
    return static_cast<double>(i.getInt());
  return fallback;
}

LogicalResult CustomKernelOp::verify() {
  const CustomKernel *def = getDefinition();
  if (!def) {
    std::string known;
    for (const std::string &n : customKernelNames())
      known += (known.empty() ? "" : ", ") + n;
    return emitOpError() << "'" << getKernel()
                         << "' is not registered: load the plugin that defines it (kiln "
                            "--plugin=LIB.so, kiln-opt --load-pass-plugin=LIB.so); registered: "
                         << (known.empty() ? std::string("none") : known);
  }
  if (def->verify)
    return def->verify(*this);
  return success();
}

int64_t CustomKernelOp::getFlops() {
  const CustomKernel *def = getDefinition();
  return def && def->flops ? def->flops(*this) : 0;
}

FailureOr<ShardingRule> CustomKernelOp::getShardingRule() {
  const CustomKernel *def = getDefinition();
  if (!def || !def->sharding)
    return failure();
  FailureOr<ShardingRule> rule = def->sharding(*this);
  if (failed(rule))
    return failure();
  // The partitioner indexes by these: a plugin's rule must fit the op.
  auto fits = [&](const llvm::SmallVector<llvm::SmallVector<int64_t>> &lists, TypeRange types) {
    if (lists.size() != types.size())
      return false;
    for (auto [factors, type] : llvm::zip_equal(lists, types)) {
      auto t = dyn_cast<RankedTensorType>(type);
      if (!t || static_cast<int64_t>(factors.size()) != t.getRank())
        return false;
      for (auto [d, f] : llvm::enumerate(factors))
        if (f < -1 || f >= static_cast<int64_t>(rule->factorSizes.size()) ||
            (f >= 0 && rule->factorSizes[f] != t.getDimSize(d)))
          return false;
    }
    return true;
  };
  if (!fits(rule->operandFactors, getOperandTypes()) || !fits(rule->resultFactors, getResultTypes())) {
    emitOpError() << "'" << getKernel() << "' (from "
                  << (def->origin.empty() ? std::string("kiln") : def->origin)
                  << "): its sharding rule does not fit the op's operands and results (one factor "
                     "list per tensor, one factor or -1 per dimension, sizes equal to the "
                     "dimensions')";
    return failure();
  }
  return rule;
}

LogicalResult CustomKernelOp::buildVJP(OpBuilder &builder, ValueRange resultCotangents,
                                       llvm::SmallVectorImpl<Value> &operandCotangents) {
  const CustomKernel *def = getDefinition();
  if (!def || !def->vjp)
    return emitOpError() << "'" << getKernel() << "' (from "
                         << (def && !def->origin.empty() ? def->origin : std::string("kiln"))
                         << ") has no VJP, so it cannot be differentiated";
  size_t before = operandCotangents.size();
  if (failed(def->vjp(*this, builder, resultCotangents, operandCotangents)))
    return failure();
  if (operandCotangents.size() - before != getNumOperands())
    return emitOpError() << "'" << getKernel() << "': its VJP returned "
                         << operandCotangents.size() - before << " cotangents for "
                         << getNumOperands() << " operands";
  for (auto [i, ct] : llvm::enumerate(llvm::drop_begin(operandCotangents, before)))
    if (ct && ct.getType() != getOperand(i).getType())
      return emitOpError() << "'" << getKernel() << "': its VJP's cotangent of operand " << i
                           << " has type " << ct.getType() << ", not the operand's "
                           << getOperand(i).getType();
  return success();
}

} // namespace kiln
