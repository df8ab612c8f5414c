//===- Gradcheck.cpp - `kiln gradcheck`: gradients vs f64 differences ------===//

#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"

#include "ir/KilnOps.h"
#include "passes/Passes.h"
#include "runtime/ParamInit.h"
#include "runtime/Random.h"
#include "runtime/cpu/Interpreter.h"
#include "train/Compile.h"
#include "tools/support/GradCheck.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <map>

using namespace llvm;

namespace kiln::cli {

static cl::opt<std::string> configPath(cl::Positional, cl::desc("<config.toml>"), cl::Required,
                                       cl::sub(gradcheckCommand()), cl::cat(kilnCategory()));
static cl::opt<int64_t> samples("samples", cl::desc("Entries checked per parameter tensor"),
                                cl::init(8), cl::sub(gradcheckCommand()), cl::cat(kilnCategory()));
static cl::opt<double> tolerance("tolerance", cl::desc("Largest accepted relative error"),
                                 cl::init(1e-6), cl::sub(gradcheckCommand()),
                                 cl::cat(kilnCategory()));
static cl::opt<uint64_t> seed("seed", cl::desc("Seed of the weights, tokens and samples"),
                              cl::init(0), cl::sub(gradcheckCommand()), cl::cat(kilnCategory()));

int runGradcheck() {
  auto start = std::chrono::steady_clock::now();
  auto config = loadConfig(configPath, setOverrides());
  if (!config)
    return fail("gradcheck", toString(config.takeError()));
  if (samples < 1)
    return fail("gradcheck", "--samples must be at least 1");

  mlir::MLIRContext ctx;
  auto module = tooling::buildForwardModule(ctx, *config, mlir::Float64Type::get(&ctx));
  if (!module)
    return fail("gradcheck", toString(module.takeError()));
  auto forward = (*module)->lookupSymbol<mlir::func::FuncOp>("forward");
  auto params = paramsOf(forward);
  if (!params)
    return fail("gradcheck", toString(params.takeError()));
  auto values = initParams(*params, seed);
  if (!values)
    return fail("gradcheck", toString(values.takeError()));

  // Arguments: the initialized parameters, then random tokens and targets.
  std::vector<cpu::HostTensor> args(forward.getNumArguments());
  for (auto [p, v] : llvm::zip(*params, *values))
    args[p.argIndex] = v;
  Rng rng(seed, "gradcheck.data");
  for (unsigned i = 0; i < args.size(); ++i) {
    if (args[i].defined())
      continue;
    auto type = cpu::hostTypeOf(forward.getArgumentTypes()[i]);
    args[i] = cpu::HostTensor(type->first, type->second);
    for (int64_t j = 0; j < args[i].numel(); ++j)
      args[i].set(j, static_cast<double>(rng.below(config->model.vocab_size)));
  }

  outs() << formatv("gradcheck: {0} in f64, batch {1} x {2} tokens, {3} entries per tensor, "
                    "central differences h = 1e-5\n",
                    configPath, config->train.batch_size, config->seqLen(), samples.getValue());
  // Plugins' rewrites first, so their kernels' VJPs are the ones checked.
  if (std::vector<std::string> passes = pluginPassNames(); !passes.empty()) {
    mlir::PassManager pm(&ctx);
    addPluginPasses(pm);
    if (Error err = runPasses(pm, **module, "the plugins' passes"))
      return fail("gradcheck", toString(std::move(err)));
    std::map<std::string, int> custom;
    (*module)->walk([&](CustomKernelOp op) { ++custom[op.getKernel().str()]; });
    std::string kernels;
    for (auto &[name, count] : custom)
      kernels += formatv("{0}{1} x {2}", kernels.empty() ? "" : ", ", name, count).str();
    outs() << "plugin passes before autodiff: " << llvm::join(passes, ", ") << " (custom kernels: "
           << (kernels.empty() ? "none" : kernels) << ")\n";
  }
  tooling::GradCheckOptions options;
  options.samplesPerTensor = samples;
  options.seed = seed;
  auto report = tooling::gradCheck(**module, args, options);
  if (!report)
    return fail("gradcheck", toString(report.takeError()));

  outs() << formatv("{0,-28} {1,8} {2,14}\n", "parameter", "checked", "worst rel err");
  double worst = 0;
  std::string worstName;
  for (const tooling::TensorGradCheck &t : *report) {
    outs() << formatv("{0,-28} {1,8} {2,14:e2}\n", t.name, t.checked, t.worstError);
    if (!(t.worstError <= worst)) {
      worst = t.worstError;
      worstName = t.name;
    }
  }
  bool pass = worst <= tolerance;
  outs() << formatv("{0}: worst relative error {1:e2} ({2}) {3} {4:e0} [{5:f1} s]\n",
                    pass ? "PASS" : "FAIL", worst, worstName, pass ? "<=" : ">",
                    tolerance.getValue(), secondsSince(start));
  return pass ? 0 : 1;
}

} // namespace kiln::cli
