//===- CudaApi.h - CUDA driver, NVRTC, cuBLASLt and NCCL through dlopen ----===//
//
// kiln links none of the CUDA libraries: it opens them at run time, so one
// binary runs on machines with or without a GPU (without one, the CPU
// interpreter runs and GPU-only features say so). Each library's functions
// are resolved once into a table of pointers typed from the toolkit's own
// headers and looked up under the names those headers map them to
// (cuMemAlloc -> cuMemAlloc_v2), i.e. the ABI kiln was compiled against.
//
// Every call goes through one checking macro per library, which turns a
// failure into an llvm::Error naming the call, the file and line, and the
// library's own error string:
//
//   KILN_CU(api.cuMemAlloc(&ptr, bytes));        // in a function returning llvm::Error
//   KILN_NVRTC(api.nvrtcCompileProgram(...));
//   KILN_CUBLAS(api.cublasLtMatmul(...));
//   KILN_NCCL(api.ncclAllReduce(...));
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_CUDAAPI_H
#define KILN_RUNTIME_CUDA_CUDAAPI_H

#include <cublasLt.h>
#include <cuda.h>
#include <nccl.h>
#include <nvrtc.h>

#include "llvm/Support/Error.h"

#include <string>

namespace kiln::cuda {

/// Where the CUDA toolkit's libraries and headers are looked for.
struct ToolkitPaths {
  /// Toolkit root: <root>/lib64, <root>/targets/x86_64-linux/lib, <root>/include.
  std::string root = "/usr/local/cuda";
};

#define KILN_CUDA_DRIVER_FUNCTIONS(X)                                                              \
  X(cuInit) X(cuDriverGetVersion) X(cuDeviceGet) X(cuDeviceGetCount) X(cuDeviceGetName)            \
  X(cuDeviceGetAttribute) X(cuDeviceTotalMem) X(cuDevicePrimaryCtxRetain)                          \
  X(cuDevicePrimaryCtxRelease) X(cuCtxSetCurrent) X(cuCtxSynchronize) X(cuGetErrorString)          \
  X(cuGetErrorName) X(cuMemAlloc) X(cuMemFree) X(cuMemAllocHost) X(cuMemFreeHost) X(cuMemcpyHtoD)  \
  X(cuMemcpyDtoH) X(cuMemcpyHtoDAsync) X(cuMemcpyDtoHAsync) X(cuMemcpyDtoDAsync) X(cuMemsetD8Async) \
  X(cuMemsetD32Async) X(cuMemsetD32) X(cuMemGetInfo) X(cuModuleLoadData) X(cuModuleUnload)                        \
  X(cuModuleGetFunction) X(cuFuncSetAttribute) X(cuLaunchKernel) X(cuStreamCreate)                 \
  X(cuStreamDestroy) X(cuStreamSynchronize) X(cuStreamBeginCapture) X(cuStreamEndCapture)          \
  X(cuGraphInstantiateWithFlags) X(cuGraphLaunch) X(cuGraphDestroy) X(cuGraphExecDestroy) X(cuEventCreate)  \
  X(cuEventDestroy) X(cuEventRecord) X(cuStreamWaitEvent) X(cuEventSynchronize) X(cuEventElapsedTime) X(cuMemcpy2DAsync) \
  X(cuStreamQuery) X(cuStreamWriteValue32) X(cuMemHostAlloc) X(cuMemHostGetDevicePointer)

#define KILN_NVRTC_FUNCTIONS(X)                                                                    \
  X(nvrtcVersion) X(nvrtcGetErrorString) X(nvrtcCreateProgram) X(nvrtcDestroyProgram)              \
  X(nvrtcCompileProgram) X(nvrtcGetCUBINSize) X(nvrtcGetCUBIN) X(nvrtcGetProgramLogSize)           \
  X(nvrtcGetProgramLog)

#define KILN_CUBLASLT_FUNCTIONS(X)                                                                 \
  X(cublasLtCreate) X(cublasLtDestroy) X(cublasLtGetVersion) X(cublasLtGetStatusString)            \
  X(cublasLtMatmul) X(cublasLtMatmulDescCreate) X(cublasLtMatmulDescDestroy)                       \
  X(cublasLtMatmulDescSetAttribute) X(cublasLtMatrixLayoutCreate) X(cublasLtMatrixLayoutDestroy)   \
  X(cublasLtMatrixLayoutSetAttribute) X(cublasLtMatmulPreferenceCreate)                            \
  X(cublasLtMatmulPreferenceDestroy) X(cublasLtMatmulPreferenceSetAttribute)                       \
  X(cublasLtMatmulAlgoGetHeuristic) X(cublasLtMatmulAlgoCheck)

#define KILN_NCCL_FUNCTIONS(X)                                                                     \
  X(ncclGetVersion) X(ncclGetErrorString) X(ncclGetUniqueId) X(ncclCommInitRank)                   \
  X(ncclCommDestroy) X(ncclAllReduce) X(ncclReduceScatter) X(ncclAllGather) X(ncclGroupStart)      \
  X(ncclGroupEnd) X(ncclCommAbort) X(ncclCommGetAsyncError) X(ncclSend) X(ncclRecv)

#define KILN_DECLARE_POINTER(name) decltype(&::name) name = nullptr;

/// The CUDA driver API.
struct Driver {
  KILN_CUDA_DRIVER_FUNCTIONS(KILN_DECLARE_POINTER)
  std::string library;
};
struct Nvrtc {
  KILN_NVRTC_FUNCTIONS(KILN_DECLARE_POINTER)
  std::string library;
};
struct CublasLt {
  KILN_CUBLASLT_FUNCTIONS(KILN_DECLARE_POINTER)
  std::string library;
};
struct Nccl {
  KILN_NCCL_FUNCTIONS(KILN_DECLARE_POINTER)
  std::string library;
};

#undef KILN_DECLARE_POINTER

/// Each loads its library on first use (thread-safe) and fails with a clear
/// message when it is missing: "no CUDA driver (libcuda.so.1 not found)".
llvm::Expected<const Driver &> driver();
llvm::Expected<const Nvrtc &> nvrtc(const ToolkitPaths &paths);
llvm::Expected<const CublasLt &> cublasLt(const ToolkitPaths &paths);
llvm::Expected<const Nccl &> nccl(const ToolkitPaths &paths);

/// The CUDA device chosen by useDeviceOrdinal (the first by default),
/// initialized, with its primary context current on the calling thread.
/// "no CUDA device" when the driver is missing or sees no device.
struct Device {
  CUdevice device = 0;
  int ordinal = 0, count = 1; ///< which of how many devices the driver sees
  CUcontext context = nullptr;
  std::string name;
  int major = 0, minor = 0, smCount = 0;
  int clockKHz = 0; ///< the SM clock's maximum
  size_t totalMemory = 0;
  /// The architecture kiln generates code for on this device: "sm_86", or
  /// on Hopper (9.0) "sm_90a", whose arch-specific instructions (wgmma,
  /// setmaxnreg) the code may use since it runs on this device only.
  std::string arch() const {
    return "sm_" + std::to_string(major) + std::to_string(minor) +
           (major == 9 && minor == 0 ? "a" : "");
  }
};
llvm::Expected<const Device &> device();
/// Chooses the device device() initializes: `n` modulo the number of
/// devices (a rank process passes its local rank, so ranks beyond the
/// devices share them). Only before the first device() call.
void useDeviceOrdinal(int64_t n);

/// Makes the device's context current on this thread (worker threads).
llvm::Error makeCurrent();

/// One line for `kiln version`: the driver and device, or why there is none.
std::string describeDevice();

llvm::Error cuError(CUresult result, const char *call, const char *file, int line);
llvm::Error nvrtcError(nvrtcResult result, const char *call, const char *file, int line);
llvm::Error cublasError(cublasStatus_t status, const char *call, const char *file, int line);
llvm::Error ncclError(ncclResult_t result, const char *call, const char *file, int line);

} // namespace kiln::cuda

#define KILN_CU(call)                                                                              \
  do {                                                                                             \
    if (CUresult kilnResult_ = (call); kilnResult_ != CUDA_SUCCESS)                                \
      return ::kiln::cuda::cuError(kilnResult_, #call, __FILE__, __LINE__);                        \
  } while (0)
#define KILN_NVRTC(call)                                                                           \
  do {                                                                                             \
    if (nvrtcResult kilnResult_ = (call); kilnResult_ != NVRTC_SUCCESS)                            \
      return ::kiln::cuda::nvrtcError(kilnResult_, #call, __FILE__, __LINE__);                     \
  } while (0)
#define KILN_CUBLAS(call)                                                                          \
  do {                                                                                             \
    if (cublasStatus_t kilnStatus_ = (call); kilnStatus_ != CUBLAS_STATUS_SUCCESS)                 \
      return ::kiln::cuda::cublasError(kilnStatus_, #call, __FILE__, __LINE__);                    \
  } while (0)
#define KILN_NCCL(call)                                                                            \
  do {                                                                                             \
    if (ncclResult_t kilnResult_ = (call); kilnResult_ != ncclSuccess)                             \
      return ::kiln::cuda::ncclError(kilnResult_, #call, __FILE__, __LINE__);                      \
  } while (0)

#endif // KILN_RUNTIME_CUDA_CUDAAPI_H
