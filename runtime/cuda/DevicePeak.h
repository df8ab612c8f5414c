//===- DevicePeak.h - a GPU's peak arithmetic rate, for MFU ----------------===//

#ifndef KILN_RUNTIME_CUDA_DEVICEPEAK_H
#define KILN_RUNTIME_CUDA_DEVICEPEAK_H

#include "llvm/ADT/StringRef.h"

#include <optional>
#include <string>

namespace kiln::cuda {

struct PeakRate {
  double tflops;
  std::string source; ///< "datasheet" or how it was estimated
};

/// The dense peak of a device for MFU: bf16/f16 tensor cores with f32
/// accumulation (`lowPrecision`), else f32 FMA on the CUDA cores (kiln's
/// f32 GEMMs do not use TF32). Known devices by name from NVIDIA's
/// datasheets; others estimated as SMs × clock × the architecture's
/// FLOPs per clock per SM; nullopt for an architecture kiln has no rate for.
std::optional<PeakRate> devicePeak(llvm::StringRef name, int major, int minor, int smCount,
                                   int clockKHz, bool lowPrecision);

} // namespace kiln::cuda

#endif // KILN_RUNTIME_CUDA_DEVICEPEAK_H
