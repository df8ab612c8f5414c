//===- FuzzIR.cpp - fuzz target: the IR parser and every kiln pass ---------===//
//
// Parses the input as kiln IR; when it parses and verifies, runs every pass
// kiln registers on its own copy (and the whole training pipeline, buffer
// planning and codegen in a chain). Any diagnostic is fine; a crash, an
// assertion or a sanitizer report is a bug.
//
//===----------------------------------------------------------------------===//

#include "codegen/PlanBuilder.h"
#include "ir/KilnDialect.h"
#include "passes/Passes.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

using namespace mlir;

namespace {

MLIRContext &context() {
  static MLIRContext ctx(MLIRContext::Threading::DISABLED);
  static bool ready = [] {
    ctx.loadDialect<kiln::KilnDialect, func::FuncDialect>();
    // Diagnostics are the expected outcome of bad input: swallow them.
    ctx.getDiagEngine().registerHandler([](Diagnostic &) { return success(); });
    return true;
  }();
  (void)ready;
  return ctx;
}

/// Each pass alone, on a fresh copy of the module.
std::vector<std::function<void(OpPassManager &)>> singlePasses() {
  return {
      [](OpPassManager &pm) { pm.addPass(createCanonicalizerPass()); },
      [](OpPassManager &pm) { pm.addPass(createCSEPass()); },
      [](OpPassManager &pm) { pm.addPass(kiln::createFuseMatmulBiasPass()); },
      [](OpPassManager &pm) { pm.addPass(kiln::createFusePass()); },
      [](OpPassManager &pm) {
        kiln::AssignPrecisionPassOptions o;
        o.policy = "bf16-mixed";
        pm.addPass(kiln::createAssignPrecisionPass(o));
      },
      [](OpPassManager &pm) {
        kiln::AutodiffPassOptions o;
        o.lossScale = 1024;
        pm.addPass(kiln::createAutodiffPass(o));
      },
      [](OpPassManager &pm) { pm.addPass(kiln::createAttachOptimizerPass()); },
      [](OpPassManager &pm) {
        kiln::AttachOptimizerPassOptions o;
        o.accumulateSteps = 2;
        pm.addPass(kiln::createAttachOptimizerPass(o));
      },
      [](OpPassManager &pm) {
        // Any function's annotations on a dp x tp mesh (or the module's own
        // kiln.mesh), partitioned with ZeRO-3.
        kiln::PropagateShardingPassOptions o;
        o.mesh = "dp=2,tp=2";
        o.zero = 3;
        pm.addPass(kiln::createPropagateShardingPass(o));
        pm.addPass(kiln::createPartitionPass());
      },
      [](OpPassManager &pm) { pm.addPass(kiln::createPlanBuffersPass()); },
      [](OpPassManager &pm) {
        kiln::ReportCostPassOptions o;
        o.annotateOps = true;
        pm.addPass(kiln::createReportCostPass(o));
      },
  };
}

void run(ModuleOp module, const std::function<void(OpPassManager &)> &add) {
  OwningOpRef<ModuleOp> copy(cast<ModuleOp>(module->clone()));
  PassManager pm(&context());
  add(pm);
  (void)pm.run(*copy);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  // MLIR's lexer reads up to a terminating NUL, as every buffer kiln parses
  // (a file read through llvm::MemoryBuffer) has one; libFuzzer's does not.
  std::string text(reinterpret_cast<const char *>(data), size);
  ParserConfig config(&context());
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(text, config);
  if (!module)
    return 0;
  for (const auto &add : singlePasses())
    run(*module, add);
  // The chain a training step takes, through codegen.
  OwningOpRef<ModuleOp> step(cast<ModuleOp>((*module)->clone()));
  PassManager pm(&context());
  kiln::buildTrainingPipeline(pm, kiln::TrainingPipelineOptions());
  if (succeeded(pm.run(*step)))
    if (auto plan = kiln::codegen::compileToPlan(*step, kiln::codegen::CodegenOptions()); !plan)
      llvm::consumeError(plan.takeError());
  return 0;
}
