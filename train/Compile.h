//===- Compile.h - from a config to IR: the driver behind `kiln compile` ---===//

#ifndef KILN_TRAIN_COMPILE_H
#define KILN_TRAIN_COMPILE_H

#include "frontend/Config.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"
#include "llvm/Support/Error.h"

#include <string>
#include <vector>

namespace kiln::tooling {

/// Registers the dialects every tool uses on `ctx`.
void loadDialects(mlir::MLIRContext &ctx);

/// A module with the model's @forward(params…, tokens, targets) -> loss for
/// the config's batch and sequence length, in `floatType`.
llvm::Expected<mlir::OwningOpRef<mlir::ModuleOp>>
buildForwardModule(mlir::MLIRContext &ctx, const RunConfig &config, mlir::Type floatType);

struct DumpOptions {
  /// Directory for the numbered dumps; empty means no dumps.
  std::string dir;
  /// Pass flags to dump after ("kiln-autodiff"), or "all".
  std::vector<std::string> after;
  /// End the pipeline with kiln-plan-buffers as codegen runs it (default
  /// options), a named stage whose dump shows every value's arena offset
  /// and each function's memory summary. Codegen plans again (the same
  /// plan: the pass is deterministic), so this changes nothing downstream.
  bool planBuffers = false;
};

/// Runs kiln-training-pipeline, with the optimizer settings of `config`, on
/// `module`. With dumps, writes
/// `00-frontend.mlir` and then `NN-<pass>.mlir` after each selected pass, and
/// returns the paths written. Pass failures come back as one error holding
/// the diagnostics.
llvm::Expected<std::vector<std::string>> runTrainingPipeline(mlir::ModuleOp module,
                                                             const RunConfig &config,
                                                             const DumpOptions &dumps);

/// Prints `op` to `path` (parent directories created), in the form kiln-opt
/// parses back.
llvm::Error writeIR(mlir::Operation *op, llvm::StringRef path);

} // namespace kiln::tooling

#endif // KILN_TRAIN_COMPILE_H
