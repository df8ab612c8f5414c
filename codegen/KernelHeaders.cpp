//===- KernelHeaders.cpp - the kernel templates, embedded in the binary ----===//

#include "codegen/PlanBuilder.h"

namespace kiln::codegen {

const std::vector<std::pair<std::string, std::string>> &kernelHeaders() {
  static const std::vector<std::pair<std::string, std::string>> headers = {
#include "codegen/KernelHeaders.inc"
  };
  return headers;
}

} // namespace kiln::codegen
