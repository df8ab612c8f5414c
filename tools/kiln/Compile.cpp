//===- Compile.cpp - `kiln compile`: build a model, run the passes, dump ---===//

#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"

#include "models/GPT2.h"
#include "tools/support/Compile.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

using namespace llvm;

namespace kiln::cli {

static cl::opt<std::string> configPath(cl::Positional, cl::desc("<config.toml>"), cl::Required,
                                       cl::sub(compileCommand()), cl::cat(kilnCategory()));
static cl::list<std::string> dumpAfter(
    "dump-ir-after",
    cl::desc("Dump the IR after these passes: 'all' or pass flags (kiln-autodiff,canonicalize)"),
    cl::CommaSeparated, cl::sub(compileCommand()), cl::cat(kilnCategory()));
static cl::opt<std::string> dumpDir("dump-dir", cl::desc("Directory for the numbered .mlir dumps"),
                                    cl::value_desc("dir"), cl::sub(compileCommand()),
                                    cl::cat(kilnCategory()));

/// Number of ops in a function's body (its size in the summary).
static int64_t countOps(mlir::func::FuncOp func) {
  int64_t n = 0;
  func.walk([&](mlir::Operation *) { ++n; });
  return n - 1; // the function itself
}

int runCompile() {
  auto start = std::chrono::steady_clock::now();
  if (!dumpAfter.empty() && dumpDir.empty())
    return fail("compile", "--dump-ir-after needs --dump-dir DIR");
  auto config = loadConfig(configPath, setOverrides());
  if (!config)
    return fail("compile", toString(config.takeError()));

  mlir::MLIRContext ctx;
  auto module = tooling::buildForwardModule(ctx, *config, mlir::Float32Type::get(&ctx));
  if (!module)
    return fail("compile", toString(module.takeError()));
  tooling::DumpOptions dumps;
  dumps.dir = dumpDir;
  dumps.after.assign(dumpAfter.begin(), dumpAfter.end());
  if (!dumpDir.empty() && dumps.after.empty())
    dumps.after = {"all"};
  auto written = tooling::runTrainingPipeline(**module, *config, dumps);
  if (!written)
    return fail("compile", toString(written.takeError()));

  const ModelConfig &m = config->model;
  int64_t params = models::gpt2ParamCount(m, false), padded = models::gpt2ParamCount(m, true);
  outs() << formatv("{0}: {1} layers, {2} heads, width {3}; {4} parameters", m.kind, m.n_layer,
                    m.n_head, m.n_embd, withCommas(params));
  if (padded != params)
    outs() << " (+" << withCommas(padded - params) << " vocabulary padding)";
  outs() << formatv("\nstep: batch {0} x {1} tokens\n", config->train.batch_size, config->seqLen());
  for (auto func : (*module)->getOps<mlir::func::FuncOp>())
    outs() << formatv("  @{0}: {1} ops\n", func.getSymName(), countOps(func));
  for (const std::string &path : *written)
    outs() << "  wrote " << path << "\n";
  outs() << formatv("compiled in {0:f2} s\n", secondsSince(start));
  return 0;
}

} // namespace kiln::cli
