//===- Export.cpp - `kiln export`: weights in Hugging Face GPT-2 layout ----===//
//
// From a checkpoint (or run directory), or from a config: the initial
// weights `kiln train` would start from with that config's train.seed —
// what a reference implementation loads to follow kiln step by step
// (bench/torch_gpt2.py).
//
//===----------------------------------------------------------------------===//

#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"

#include "runtime/Checkpoint.h"
#include "runtime/cpu/CpuBackend.h"
#include "train/Compile.h"
#include "train/HuggingFace.h"
#include "train/Loop.h"

#include "mlir/IR/MLIRContext.h"

#include "llvm/Support/raw_ostream.h"

using namespace llvm;

namespace kiln::cli {

static cl::opt<std::string> checkpointPath(cl::Positional,
                                           cl::desc("<checkpoint, run dir, or config.toml for "
                                                    "its initial weights>"),
                                           cl::Required, cl::sub(exportCommand()),
                                           cl::cat(kilnCategory()));
static cl::opt<std::string> outPath("hf", cl::desc("Write Hugging Face GPT-2 safetensors here"),
                                    cl::value_desc("file"), cl::Required,
                                    cl::sub(exportCommand()), cl::cat(kilnCategory()));

/// The initial weights of `config` for its train.seed, as `kiln train`
/// initializes them on any backend.
static Expected<NamedTensors> initialWeights(const RunConfig &config) {
  mlir::MLIRContext ctx;
  // Whole tensors, whatever the run's mesh (the values do not depend on it).
  RunConfig single = config;
  single.parallel = ParallelConfig();
  auto module = tooling::buildTrainingModule(ctx, single);
  if (!module)
    return module.takeError();
  cpu::CpuBackend backend;
  if (Error err = backend.load(**module, static_cast<uint64_t>(config.train.seed)))
    return std::move(err);
  return backend.params();
}

int runExport() {
  NamedTensors params;
  Expected<RunConfig> config = RunConfig();
  if (StringRef(checkpointPath).ends_with(".toml")) {
    config = loadConfig(checkpointPath, setOverrides());
    if (!config)
      return fail("export", toString(config.takeError()));
    auto initial = initialWeights(*config);
    if (!initial)
      return fail("export", toString(initial.takeError()));
    params = std::move(*initial);
  } else {
    if (!setOverrides().empty())
      return fail("export", "--set applies to a config, not a checkpoint");
    auto checkpoint = loadCheckpoint(checkpointPath);
    if (!checkpoint)
      return fail("export", toString(checkpoint.takeError()));
    config = RunConfig::parse(checkpoint->state.config, checkpoint->path + "/state.json");
    if (!config)
      return fail("export", toString(config.takeError()));
    if (Error err = tooling::upgradeCheckpoint(*checkpoint, config->model))
      return fail("export", toString(std::move(err)));
    params = std::move(checkpoint->params);
    // Every parameter of the run's model, with its type.
    mlir::MLIRContext ctx;
    auto module = tooling::buildForwardModule(ctx, *config, mlir::Float32Type::get(&ctx));
    if (!module)
      return fail("export", toString(module.takeError()));
    auto specs = stateSpecsOf(**module);
    if (!specs)
      return fail("export", toString(specs.takeError()));
    auto fresh = checkStateComplete(*specs, params, /*params=*/true, /*partial=*/false,
                                    "the checkpoint '" + checkpoint->path + "'");
    if (!fresh)
      return fail("export", toString(fresh.takeError()));
  }
  auto hf = tooling::toHuggingFace(params, config->model);
  if (!hf)
    return fail("export", toString(hf.takeError()));
  if (Error err = writeSafetensors(outPath, *hf, {{"format", "pt"}}))
    return fail("export", toString(std::move(err)));
  outs() << "wrote " << outPath << " (" << hf->size() << " tensors, Hugging Face " << (config->model.kind == "llama" ? "Llama" : "GPT-2") << " names)\n";
  return 0;
}

} // namespace kiln::cli
