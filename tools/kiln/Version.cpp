//===- Version.cpp - `kiln version` ----------------------------------------===//

#include "tools/kiln/Commands.h"
#include "tools/kiln/BuildInfo.h"

#include "runtime/cuda/CudaApi.h"
#include "runtime/cuda/Nvrtc.h"

#include "llvm/Config/llvm-config.h"
#include "llvm/Support/raw_ostream.h"

using namespace llvm;

namespace kiln::cli {

int runVersion() {
  outs() << "kiln " << KILN_VERSION << " (" << KILN_GIT_REVISION << ")\n"
         << "LLVM/MLIR " << LLVM_VERSION_STRING << "\n"
         << "CUDA toolkit " << KILN_CUDA_TOOLKIT_VERSION << " (headers at build time, "
         << KILN_CUDA_ROOT << ")\n";
  auto nvrtc = cuda::nvrtcVersion(KILN_CUDA_ROOT);
  outs() << "NVRTC " << (nvrtc ? *nvrtc : toString(nvrtc.takeError())) << "\n";
  outs() << "device: " << cuda::describeDevice() << "\n";
  return 0;
}

} // namespace kiln::cli
