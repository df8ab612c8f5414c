//===- ShardingReport.h - what a partitioned step communicates -------------===//

#ifndef KILN_TOOLS_SUPPORT_SHARDINGREPORT_H
#define KILN_TOOLS_SUPPORT_SHARDINGREPORT_H

#include "mlir/IR/BuiltinOps.h"

#include <string>

namespace kiln::tooling {

/// A summary of the partitioned `module`'s collectives per step and mesh
/// axis (count and bytes each rank contributes); with `everyCollective`,
/// one line per collective with its bytes and cause, in program order
/// (`kiln compile --explain-sharding`). Empty when the module has no mesh.
std::string describeSharding(mlir::ModuleOp module, bool everyCollective);

} // namespace kiln::tooling

#endif // KILN_TOOLS_SUPPORT_SHARDINGREPORT_H
