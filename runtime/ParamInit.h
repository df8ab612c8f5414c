//===- ParamInit.h - initial parameter values from kiln.init ---------------===//

#ifndef KILN_RUNTIME_PARAMINIT_H
#define KILN_RUNTIME_PARAMINIT_H

#include "runtime/Backend.h"
#include "runtime/cpu/HostTensor.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace kiln {

/// One parameter argument of a function: its index, name and type.
struct ParamInfo {
  unsigned argIndex;
  std::string name;
  cpu::DType dtype;
  std::vector<int64_t> shape;
  std::string init; ///< the kiln.init text ("zeros" when absent)
};

/// The kiln.param arguments of `func`, in argument order.
llvm::Expected<std::vector<ParamInfo>> paramsOf(mlir::func::FuncOp func);

/// Initial values per the parameters' kiln.init, drawn from a stream per
/// parameter name (see Rng), so the values depend only on the seed and name.
llvm::Expected<std::vector<cpu::HostTensor>> initParams(llvm::ArrayRef<ParamInfo> params,
                                                        uint64_t seed);
/// The same for a backend's state (Backend.h).
llvm::Expected<std::vector<cpu::HostTensor>> initParams(llvm::ArrayRef<StateSpec> specs,
                                                        uint64_t seed);

} // namespace kiln

#endif // KILN_RUNTIME_PARAMINIT_H
