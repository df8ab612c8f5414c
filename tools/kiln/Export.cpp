//===- Export.cpp - `kiln export`: a checkpoint's weights in HF layout -----===//

#include "tools/kiln/Commands.h"
#include "tools/kiln/Common.h"

#include "runtime/Checkpoint.h"
#include "tools/support/HuggingFace.h"

#include "llvm/Support/raw_ostream.h"

using namespace llvm;

namespace kiln::cli {

static cl::opt<std::string> checkpointPath(cl::Positional, cl::desc("<checkpoint or run dir>"),
                                           cl::Required, cl::sub(exportCommand()),
                                           cl::cat(kilnCategory()));
static cl::opt<std::string> outPath("hf", cl::desc("Write Hugging Face GPT-2 safetensors here"),
                                    cl::value_desc("file"), cl::Required,
                                    cl::sub(exportCommand()), cl::cat(kilnCategory()));

int runExport() {
  auto checkpoint = loadCheckpoint(checkpointPath);
  if (!checkpoint)
    return fail("export", toString(checkpoint.takeError()));
  auto config = RunConfig::parse(checkpoint->state.config, checkpointPath + "/state.json");
  if (!config)
    return fail("export", toString(config.takeError()));
  auto hf = tooling::toHuggingFaceGPT2(checkpoint->params, config->model);
  if (!hf)
    return fail("export", toString(hf.takeError()));
  if (Error err = writeSafetensors(outPath, *hf, {{"format", "pt"}}))
    return fail("export", toString(std::move(err)));
  outs() << "wrote " << outPath << " (" << hf->size() << " tensors, Hugging Face GPT-2 names)\n";
  return 0;
}

} // namespace kiln::cli
