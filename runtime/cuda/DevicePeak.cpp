//===- DevicePeak.cpp - a GPU's peak arithmetic rate, for MFU --------------===//
//
// Datasheet rates (dense, no structured sparsity) in TFLOP/s, bf16 tensor
// cores with f32 accumulation / f32 on CUDA cores:
//   H100 SXM and H200 SXM  989 / 67   (NVIDIA H100 and H200 datasheets)
//   H100 PCIe              756 / 51   (H100 datasheet)
//   H100 NVL               835 / 60   (H100 NVL datasheet)
//   A100 (SXM and PCIe)    312 / 19.5 (A100 datasheet)
// Per SM and clock, for the estimate: sm_80 2048 / 128 (A100: 108 SMs at
// 1.41 GHz give 312 / 19.5), sm_86-89 512 / 256 (RTX 3090: 82 SMs at
// 1.70 GHz give 71 / 36), sm_90 4096 / 256, sm_100 8192 / 256.
//
//===----------------------------------------------------------------------===//

#include "runtime/cuda/DevicePeak.h"

#include "llvm/Support/FormatVariadic.h"

namespace kiln::cuda {

std::optional<PeakRate> devicePeak(llvm::StringRef name, int major, int minor, int smCount,
                                   int clockKHz, bool lowPrecision) {
  struct Known {
    const char *pattern;
    double bf16, f32;
  };
  // First match wins: the PCIe and NVL variants before the generic H100.
  static const Known kKnown[] = {
      {"H100 PCIe", 756, 51}, {"H100 NVL", 835, 60}, {"H100", 989, 67},
      {"H200", 989, 67},      {"A100", 312, 19.5},
  };
  for (const Known &k : kKnown)
    if (name.contains(k.pattern))
      return PeakRate{lowPrecision ? k.bf16 : k.f32, "datasheet"};
  double perClock = 0; // FLOPs per clock per SM
  int cc = major * 10 + minor;
  if (cc == 80)
    perClock = lowPrecision ? 2048 : 128;
  else if (cc >= 86 && cc <= 89)
    perClock = lowPrecision ? 512 : 256;
  else if (cc == 90)
    perClock = lowPrecision ? 4096 : 256;
  else if (cc == 100)
    perClock = lowPrecision ? 8192 : 256;
  if (perClock == 0 || smCount <= 0 || clockKHz <= 0)
    return std::nullopt;
  double tflops = perClock * smCount * clockKHz * 1e3 / 1e12;
  return PeakRate{tflops, llvm::formatv("estimated: {0} SMs x {1:f2} GHz x {2} FLOPs per clock",
                                        smCount, clockKHz / 1e6, perClock)
                              .str()};
}

} // namespace kiln::cuda
