//===- GradCheck.cpp - autodiff gradients vs f64 central differences -------===//

#include "tools/support/GradCheck.h"

#include "ir/KilnDialect.h"
#include "passes/Passes.h"
#include "runtime/Random.h"
#include "runtime/cpu/Interpreter.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <cmath>
#include <numeric>

using namespace mlir;

namespace kiln::tooling {

namespace {

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

llvm::Expected<double> scalarOf(llvm::Expected<std::vector<cpu::HostTensor>> results) {
  if (!results)
    return results.takeError();
  return (*results)[0].get(0);
}

} // namespace

llvm::Expected<std::vector<TensorGradCheck>>
gradCheck(ModuleOp module, llvm::ArrayRef<cpu::HostTensor> args, const GradCheckOptions &options) {
  OwningOpRef<ModuleOp> work = module.clone();
  std::string diagnostics;
  ScopedDiagnosticHandler handler(module.getContext(), [&](Diagnostic &diag) {
    llvm::raw_string_ostream(diagnostics) << diag.getLocation() << ": " << diag.str() << "\n";
    return success();
  });
  PassManager pm(module.getContext());
  pm.addPass(createAutodiffPass());
  if (failed(pm.run(*work)))
    return error("kiln-autodiff failed:\n" + diagnostics);

  auto forward = work->lookupSymbol<func::FuncOp>("forward");
  auto step = work->lookupSymbol<func::FuncOp>("train_step");
  auto forwardInterp = cpu::Interpreter::create(forward);
  if (!forwardInterp)
    return forwardInterp.takeError();
  auto stepInterp = cpu::Interpreter::create(step);
  if (!stepInterp)
    return stepInterp.takeError();

  auto analytic = (*stepInterp)->run(args);
  if (!analytic)
    return analytic.takeError();

  std::vector<cpu::HostTensor> perturbed(args.begin(), args.end());
  std::vector<TensorGradCheck> report;
  Rng rng(options.seed, "gradcheck");
  // Gradients follow the loss and its metrics, in parameter order.
  unsigned result = forward.getNumResults();
  for (unsigned i = 0, e = forward.getNumArguments(); i < e; ++i) {
    auto name = forward.getArgAttrOfType<StringAttr>(i, KilnDialect::kParamAttrName);
    if (!name)
      continue;
    const cpu::HostTensor &grad = (*analytic)[result++];
    if (!cpu::isFloat(args[i].dtype()))
      continue;
    TensorGradCheck check;
    check.name = name.getValue().str();
    double scale = 1e-12;
    for (int64_t j = 0; j < grad.numel(); ++j)
      scale = std::max(scale, std::abs(grad.get(j)));

    std::vector<int64_t> entries(static_cast<size_t>(args[i].numel()));
    std::iota(entries.begin(), entries.end(), 0);
    if (static_cast<int64_t>(entries.size()) > options.samplesPerTensor) {
      for (int64_t j = 0; j < options.samplesPerTensor; ++j) // partial Fisher-Yates
        std::swap(entries[j], entries[j + rng.below(entries.size() - j)]);
      entries.resize(options.samplesPerTensor);
    }
    perturbed[i] = args[i].clone();
    for (int64_t j : entries) {
      double original = perturbed[i].get(j);
      perturbed[i].set(j, original + options.step);
      auto up = scalarOf((*forwardInterp)->run(perturbed));
      perturbed[i].set(j, original - options.step);
      auto down = scalarOf((*forwardInterp)->run(perturbed));
      perturbed[i].set(j, original);
      if (!up)
        return up.takeError();
      if (!down)
        return down.takeError();
      double numeric = (*up - *down) / (2 * options.step);
      double err = std::abs(grad.get(j) - numeric) / scale;
      if (!(err <= check.worstError) || check.worstIndex < 0) { // nan counts as worst
        check.worstError = std::isnan(err) ? INFINITY : std::max(err, check.worstError);
        check.worstIndex = j;
        check.analytic = grad.get(j);
        check.numeric = numeric;
      }
      ++check.checked;
    }
    perturbed[i] = args[i];
    report.push_back(check);
  }
  return report;
}

} // namespace kiln::tooling
