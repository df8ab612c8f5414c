//===- PassPreservation.cpp - "this pass preserves results" as a test ------===//

#include "tests/unit/PassPreservation.h"

#include "ir/KilnDialect.h"
#include "passes/Passes.h"
#include "runtime/Backend.h"
#include "runtime/Random.h"
#include "runtime/cpu/Interpreter.h"
#include "runtime/cpu/Kernels.h"

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
/// An argument with a binding name takes the tensor `named` has for it (so
/// a pass that inserts arguments leaves the others' values alone) or
/// records its own. A working copy (kiln.copy_of, kiln-fuse's
/// adamw-copies) is its parameter converted, as the runtime derives it; the
/// result that replaces it must be the new parameter converted, and is
/// left out of the results compared.
Results runAll(ModuleOp module, const InputFiller &fill,
               std::map<std::string, cpu::HostTensor> &named) {
  Results results;
  for (auto func : module.getOps<func::FuncOp>()) {
    std::vector<cpu::HostTensor> args;
    for (auto [i, type] : llvm::enumerate(func.getArgumentTypes())) {
      auto host = cpu::hostTypeOf(type);
      if (!host) {
        ADD_FAILURE() << "@" << func.getSymName().str() << ": " << llvm::toString(host.takeError());
        return results;
      }
      std::string key = argumentBinding(func, static_cast<unsigned>(i));
      if (!key.empty())
        key = ("@" + func.getSymName() + " " + key).str();
      auto known = named.find(key);
      if (!key.empty() && known != named.end() && known->second.dtype() == host->first &&
          known->second.shape() == host->second) {
        args.push_back(known->second);
        continue;
      }
      cpu::HostTensor arg(host->first, host->second);
      fill(static_cast<unsigned>(i), arg);
      if (!key.empty())
        named[key] = arg;
      args.push_back(arg);
    }
    // The parameter argument a copy converts, by argument.
    std::map<unsigned, unsigned> paramOf;
    for (unsigned i = 0; i < func.getNumArguments(); ++i)
      if (auto of = func.getArgAttrOfType<StringAttr>(i, KilnDialect::kCopyOfAttrName))
        for (unsigned p = 0; p < func.getNumArguments(); ++p)
          if (func.getArgAttrOfType<StringAttr>(p, KilnDialect::kParamAttrName) == of)
            paramOf[i] = p;
    deriveCopyArguments(func, args);
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
    std::vector<cpu::HostTensor> kept;
    auto aliasOf = [&](unsigned r) {
      auto a = func.getResultAttrOfType<IntegerAttr>(r, KilnDialect::kAliasesAttrName);
      return a ? a.getInt() : -1;
    };
    for (unsigned r = 0; r < out->size(); ++r) {
      auto copy = paramOf.find(static_cast<unsigned>(aliasOf(r)));
      if (aliasOf(r) < 0 || copy == paramOf.end()) {
        kept.push_back((*out)[r]);
        continue;
      }
      for (unsigned q = 0; q < out->size(); ++q)
        if (aliasOf(q) == static_cast<int64_t>(copy->second)) {
          cpu::HostTensor want = cpu::kernels::cast((*out)[q], (*out)[r].dtype());
          for (int64_t i = 0; i < want.numel(); ++i)
            if (double a = (*out)[r].get(i), b = want.get(i);
                a != b && !(std::isnan(a) && std::isnan(b))) {
              ADD_FAILURE() << "@" << func.getSymName().str() << " result #" << r
                            << " (a working copy) is not its new parameter converted at element "
                            << i << ": " << (*out)[r].get(i) << " against " << want.get(i)
                            << " from " << (*out)[q].get(i);
              break;
            }
        }
    }
    results[func.getSymName().str()] = std::move(kept);
  }
  return results;
}

} // namespace

namespace {

/// Runs `pipeline` ("builtin.module(...)") on `module`; false after
/// reporting a failure.
bool runPipeline(ModuleOp module, const std::string &pipeline) {
  static const bool registered = [] {
    registerTransformsPasses();
    registerKilnPasses();
    registerKilnPipelines();
    return true;
  }();
  (void)registered;
  // The pipeline is "builtin.module(...)": parsed on its own it is anchored
  // on the module. (parsePassPipeline(text, pm) would instead nest it inside
  // pm, where it finds no module to run on and silently does nothing.)
  std::string errors;
  llvm::raw_string_ostream os(errors);
  FailureOr<OpPassManager> parsed = parsePassPipeline(pipeline, os);
  if (failed(parsed) || parsed->getOpAnchorName() != ModuleOp::getOperationName()) {
    ADD_FAILURE() << "bad pipeline '" << pipeline << "' (expected builtin.module(...)): " << errors;
    return false;
  }
  PassManager pm(module.getContext(), ModuleOp::getOperationName());
  static_cast<OpPassManager &>(pm) = *parsed;
  if (failed(pm.run(module))) {
    ADD_FAILURE() << "pipeline '" << pipeline << "' failed";
    return false;
  }
  return true;
}

/// Every function of `want` against the same function of `got`.
void expectAgree(const Results &want, const Results &got, double tolerance,
                 const std::string &what) {
  ASSERT_FALSE(want.empty()) << "no function ran";
  for (auto &[name, expected] : want) {
    auto it = got.find(name);
    ASSERT_NE(it, got.end()) << "@" << name << " is missing " << what;
    const std::vector<cpu::HostTensor> &actual = it->second;
    ASSERT_EQ(actual.size(), expected.size()) << "@" << name;
    for (size_t r = 0; r < expected.size(); ++r) {
      ASSERT_EQ(actual[r].numel(), expected[r].numel()) << "@" << name << " result #" << r;
      double worst = 0;
      int64_t at = -1;
      for (int64_t i = 0; i < expected[r].numel(); ++i) {
        double a = actual[r].get(i), e = expected[r].get(i);
        // The same value (a NaN in both, the same infinity) agrees.
        double err = (a == e || (std::isnan(a) && std::isnan(e)))
                         ? 0.0
                         : std::abs(a - e) / std::max(1.0, std::abs(e));
        if (!(err <= worst)) {
          worst = std::isnan(err) ? INFINITY : err;
          at = i;
        }
      }
      EXPECT_LE(worst, tolerance) << "@" << name << " result #" << r << " changed " << what
                                  << ": worst error " << worst << " at element " << at;
    }
  }
}

} // namespace

void expectPassPreserves(ModuleOp module, const std::string &pipeline, double tolerance,
                         const InputFiller &fill) {
  std::map<std::string, cpu::HostTensor> named;
  Results before = runAll(module, fill, named);
  if (!runPipeline(module, pipeline))
    return;
  expectAgree(before, runAll(module, fill, named), tolerance, "after " + pipeline);
}

void expectPipelinesAgree(ModuleOp module, const std::string &reference,
                          const std::string &candidate, double tolerance,
                          const InputFiller &fill) {
  OwningOpRef<ModuleOp> other(cast<ModuleOp>(module->clone()));
  if (!runPipeline(module, reference) || !runPipeline(*other, candidate))
    return;
  std::map<std::string, cpu::HostTensor> named;
  Results want = runAll(module, fill, named);
  expectAgree(want, runAll(*other, fill, named), tolerance,
              "between " + reference + " and " + candidate);
}

} // namespace kiln::test
