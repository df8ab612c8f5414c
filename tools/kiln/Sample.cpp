//===- Sample.cpp - `kiln sample`: text from a checkpoint ------------------===//

#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"

#include "models/Model.h"
#include "runtime/Checkpoint.h"
#include "runtime/Backend.h"
#include "train/Compile.h"
#include "train/HuggingFace.h"
#include "train/Loop.h"

#include "mlir/IR/MLIRContext.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/raw_ostream.h"

#include <cmath>

using namespace llvm;

namespace kiln::cli {

static cl::opt<std::string> checkpointPath(cl::Positional, cl::desc("<checkpoint or run dir>"),
                                           cl::Required, cl::sub(sampleCommand()),
                                           cl::cat(kilnCategory()));
static cl::opt<std::string> prompt("prompt", cl::desc("Text to continue"), cl::init(""),
                                   cl::sub(sampleCommand()), cl::cat(kilnCategory()));
static cl::opt<int64_t> tokens("tokens", cl::desc("Tokens to generate"), cl::init(200),
                               cl::sub(sampleCommand()), cl::cat(kilnCategory()));
static cl::opt<double> temperature("temperature", cl::desc("Sampling temperature"), cl::init(1.0),
                                   cl::sub(sampleCommand()), cl::cat(kilnCategory()));
static cl::opt<int64_t> topK("top-k", cl::desc("Sample among the k most likely tokens (0: all)"),
                             cl::init(40), cl::sub(sampleCommand()), cl::cat(kilnCategory()));
static cl::opt<bool> greedy("greedy", cl::desc("Always take the most likely token"),
                            cl::sub(sampleCommand()), cl::cat(kilnCategory()));
static cl::opt<uint64_t> seed("seed", cl::desc("Random seed"), cl::init(0),
                              cl::sub(sampleCommand()), cl::cat(kilnCategory()));

int runSample() {
  // Written so that NaN fails too.
  if (tokens < 0 || !(temperature >= 0) || !std::isfinite(temperature) || topK < 0)
    return fail("sample", "--tokens, --temperature and --top-k must be finite and not negative");
  auto checkpoint = loadCheckpoint(checkpointPath);
  if (!checkpoint)
    return fail("sample", toString(checkpoint.takeError()));
  auto config = RunConfig::parse(checkpoint->state.config, checkpoint->path + "/state.json");
  if (!config)
    return fail("sample", toString(config.takeError()));
  if (Error err = tooling::upgradeCheckpoint(*checkpoint, config->model))
    return fail("sample", toString(std::move(err)));
  // The run's config with --set overrides (train.device=cpu|cuda, ...);
  // keys that change the model make the checkpoint not fit, which the load
  // below reports.
  if (Error err = config->applyOverrides(setOverrides()))
    return fail("sample", toString(std::move(err)));
  if (Error err = config->validate(checkpoint->path + "/state.json with --set overrides"))
    return fail("sample", toString(std::move(err)));
  auto tokenizer = tooling::makeTokenizer(checkpoint->state.tokenizer, checkpoint->state.tokenizerPath);
  if (!tokenizer)
    return fail("sample", toString(tokenizer.takeError()));
  // Only @logits is needed: batch 1, the run's sequence length.
  mlir::MLIRContext ctx;
  tooling::loadDialects(ctx);
  mlir::OwningOpRef<mlir::ModuleOp> module = mlir::ModuleOp::create(mlir::UnknownLoc::get(&ctx));
  std::vector<std::string> errors;
  if (failed(models::buildModel(*module, config->model, 1, config->seqLen(),
                               mlir::Float32Type::get(&ctx), models::GPT2Output::Logits, "logits",
                               errors)))
    return fail("sample", "building the model failed: " + join(errors, "; "));
  auto backendOr = tooling::makeBackend(config->train.device, nullptr);
  if (!backendOr)
    return fail("sample", toString(backendOr.takeError()));
  Backend &backend = **backendOr;
  if (Error err = backend.load(*module, 0))
    return fail("sample", toString(std::move(err)));
  auto fresh = backend.loadState(checkpoint->params, /*params=*/true, /*partial=*/false,
                                 "the checkpoint '" + checkpoint->path + "'");
  if (!fresh)
    return fail("sample", toString(fresh.takeError()));
  Rng rng(seed, "sample");
  SamplingOptions options{greedy, temperature, topK};
  auto text = tooling::generate(backend, **tokenizer, config->seqLen(), (*tokenizer)->vocabSize(),
                                prompt, tokens, options, rng);
  if (!text)
    return fail("sample", toString(text.takeError()));
  outs() << prompt << *text << "\n";
  return 0;
}

} // namespace kiln::cli
