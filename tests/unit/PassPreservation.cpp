//===- PassPreservation.cpp - "this pass preserves results" as a test ------===//

#include "tests/unit/PassPreservation.h"

#include "passes/Passes.h"
#include "runtime/Random.h"
#include "runtime/cpu/Interpreter.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/Passes.h"
#include "gtest/gtest.h"

#include <cmath>
#include <map>

using namespace mlir;

namespace kiln::test {

InputFiller randomInputs(uint64_t seed, int64_t intBound) {
  return [seed, intBound](unsigned index, cpu::HostTensor &arg) {
    Rng rng(seed + index, "pass-preservation");
    for (int64_t i = 0; i < arg.numel(); ++i)
      arg.set(i, cpu::isFloat(arg.dtype()) ? rng.normal()
                                           : static_cast<double>(rng.below(intBound)));
  };
}

namespace {

using Results = std::map<std::string, std::vector<cpu::HostTensor>>;

/// Runs every function on inputs from `fill`; names functions that fail.
Results runAll(ModuleOp module, const InputFiller &fill) {
  Results results;
  for (auto func : module.getOps<func::FuncOp>()) {
    std::vector<cpu::HostTensor> args;
    for (auto [i, type] : llvm::enumerate(func.getArgumentTypes())) {
      auto host = cpu::hostTypeOf(type);
      if (!host) {
        ADD_FAILURE() << "@" << func.getSymName().str() << ": " << llvm::toString(host.takeError());
        return results;
      }
      cpu::HostTensor arg(host->first, host->second);
      fill(static_cast<unsigned>(i), arg);
      args.push_back(arg);
    }
    auto interp = cpu::Interpreter::create(func);
    if (!interp) {
      ADD_FAILURE() << llvm::toString(interp.takeError());
      continue;
    }
    auto out = (*interp)->run(args);
    if (!out) {
      ADD_FAILURE() << llvm::toString(out.takeError());
      continue;
    }
    results[func.getSymName().str()] = std::move(*out);
  }
  return results;
}

} // namespace

void expectPassPreserves(ModuleOp module, const std::string &pipeline, double tolerance,
                         const InputFiller &fill) {
  static const bool registered = [] {
    registerTransformsPasses();
    registerKilnPasses();
    return true;
  }();
  (void)registered;
  Results before = runAll(module, fill);
  // The pipeline is "builtin.module(...)": parsed on its own it is anchored
  // on the module. (parsePassPipeline(text, pm) would instead nest it inside
  // pm, where it finds no module to run on and silently does nothing.)
  std::string errors;
  llvm::raw_string_ostream os(errors);
  FailureOr<OpPassManager> parsed = parsePassPipeline(pipeline, os);
  if (failed(parsed) || parsed->getOpAnchorName() != ModuleOp::getOperationName()) {
    ADD_FAILURE() << "bad pipeline '" << pipeline << "' (expected builtin.module(...)): " << errors;
    return;
  }
  PassManager pm(module.getContext(), ModuleOp::getOperationName());
  static_cast<OpPassManager &>(pm) = *parsed;
  if (failed(pm.run(module))) {
    ADD_FAILURE() << "pipeline '" << pipeline << "' failed";
    return;
  }
  Results after = runAll(module, fill);
  ASSERT_FALSE(before.empty()) << "no function ran";
  for (auto &[name, want] : before) {
    auto it = after.find(name);
    ASSERT_NE(it, after.end()) << "@" << name << " disappeared after " << pipeline;
    const std::vector<cpu::HostTensor> &got = it->second;
    ASSERT_EQ(got.size(), want.size()) << "@" << name;
    for (size_t r = 0; r < want.size(); ++r) {
      ASSERT_EQ(got[r].numel(), want[r].numel()) << "@" << name << " result #" << r;
      double worst = 0;
      int64_t at = -1;
      for (int64_t i = 0; i < want[r].numel(); ++i) {
        double err = std::abs(got[r].get(i) - want[r].get(i)) / std::max(1.0, std::abs(want[r].get(i)));
        if (!(err <= worst)) {
          worst = std::isnan(err) ? INFINITY : err;
          at = i;
        }
      }
      EXPECT_LE(worst, tolerance) << "@" << name << " result #" << r << " changed by " << pipeline
                                  << ": worst error " << worst << " at element " << at;
    }
  }
}

} // namespace kiln::test
