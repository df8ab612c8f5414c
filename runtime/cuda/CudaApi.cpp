//===- CudaApi.cpp - CUDA driver, NVRTC, cuBLASLt and NCCL through dlopen --===//

#include "runtime/cuda/CudaApi.h"

#include "llvm/Support/FormatVariadic.h"

#include <dlfcn.h>

#include <mutex>

namespace kiln::cuda {

namespace {

#define KILN_STRINGIFY_EXPANDED(x) KILN_STRINGIFY(x)
#define KILN_STRINGIFY(x) #x

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

/// dlopen()s the first of `names` found in the toolkit's library folders or
/// on the loader's path.
void *openLibrary(std::initializer_list<const char *> names, const std::string &root,
                  std::string &found, std::string &tried) {
  for (const char *name : names) {
    for (std::string dir : {root + "/lib64/", root + "/targets/x86_64-linux/lib/", std::string()}) {
      std::string path = dir + name;
      if (void *handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL)) {
        found = path;
        return handle;
      }
      tried += (tried.empty() ? "" : ", ") + path;
    }
  }
  return nullptr;
}

template <typename Fn> bool bind(void *handle, Fn &slot, const char *symbol) {
  slot = reinterpret_cast<Fn>(::dlsym(handle, symbol));
  return slot != nullptr;
}

} // namespace

#define KILN_BIND(name)                                                                            \
  if (!bind(handle, table.name, KILN_STRINGIFY_EXPANDED(name)))                                    \
    return error(std::string("the CUDA library '") + table.library + "' lacks " +                  \
                 KILN_STRINGIFY_EXPANDED(name));

llvm::Expected<const Driver &> driver() {
  static std::once_flag once;
  static Driver table;
  static std::string failure;
  std::call_once(once, [] {
    std::string tried;
    void *handle = openLibrary({"libcuda.so.1"}, "/usr/local/cuda", table.library, tried);
    if (!handle) {
      failure = "no CUDA device: the CUDA driver (libcuda.so.1) is not installed";
      return;
    }
    auto bindAll = [&]() -> llvm::Error {
      KILN_CUDA_DRIVER_FUNCTIONS(KILN_BIND)
      return llvm::Error::success();
    };
    if (llvm::Error err = bindAll())
      failure = llvm::toString(std::move(err));
  });
  if (!failure.empty())
    return error(failure);
  return table;
}

#define KILN_LIBRARY_LOADER(Type, fnName, list, ...)                                               \
  llvm::Expected<const Type &> fnName(const ToolkitPaths &paths) {                                 \
    static std::once_flag once;                                                                    \
    static Type table;                                                                             \
    static std::string failure;                                                                    \
    std::call_once(once, [&] {                                                                     \
      std::string tried;                                                                           \
      void *handle = openLibrary({__VA_ARGS__}, paths.root, table.library, tried);                 \
      if (!handle) {                                                                               \
        failure = "cannot load the CUDA library (tried " + tried + ")";                            \
        return;                                                                                    \
      }                                                                                            \
      auto bindAll = [&]() -> llvm::Error {                                                        \
        list(KILN_BIND) return llvm::Error::success();                                             \
      };                                                                                           \
      if (llvm::Error err = bindAll())                                                             \
        failure = llvm::toString(std::move(err));                                                  \
    });                                                                                            \
    if (!failure.empty())                                                                          \
      return error(failure);                                                                       \
    return table;                                                                                  \
  }

KILN_LIBRARY_LOADER(Nvrtc, nvrtc, KILN_NVRTC_FUNCTIONS, "libnvrtc.so.13", "libnvrtc.so")
KILN_LIBRARY_LOADER(CublasLt, cublasLt, KILN_CUBLASLT_FUNCTIONS, "libcublasLt.so.13", "libcublasLt.so")
KILN_LIBRARY_LOADER(Nccl, nccl, KILN_NCCL_FUNCTIONS, "libnccl.so.2", "libnccl.so")

static int64_t wantedOrdinal = 0;

void useDeviceOrdinal(int64_t n) { wantedOrdinal = n; }

llvm::Expected<const Device &> device() {
  static std::once_flag once;
  static Device dev;
  static std::string failure;
  std::call_once(once, [] {
    auto api = driver();
    if (!api) {
      failure = llvm::toString(api.takeError());
      return;
    }
    auto init = [&]() -> llvm::Error {
      KILN_CU(api->cuInit(0));
      int count = 0;
      KILN_CU(api->cuDeviceGetCount(&count));
      if (count == 0)
        return error("no CUDA device: the driver sees none");
      dev.count = count;
      dev.ordinal = static_cast<int>(wantedOrdinal % count);
      KILN_CU(api->cuDeviceGet(&dev.device, dev.ordinal));
      char name[256] = {0};
      KILN_CU(api->cuDeviceGetName(name, sizeof(name), dev.device));
      dev.name = name;
      KILN_CU(api->cuDeviceGetAttribute(&dev.major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev.device));
      KILN_CU(api->cuDeviceGetAttribute(&dev.minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev.device));
      KILN_CU(api->cuDeviceGetAttribute(&dev.smCount, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev.device));
      KILN_CU(api->cuDeviceGetAttribute(&dev.clockKHz, CU_DEVICE_ATTRIBUTE_CLOCK_RATE, dev.device));
      KILN_CU(api->cuDeviceTotalMem(&dev.totalMemory, dev.device));
      KILN_CU(api->cuDevicePrimaryCtxRetain(&dev.context, dev.device));
      KILN_CU(api->cuCtxSetCurrent(dev.context));
      return llvm::Error::success();
    };
    if (llvm::Error err = init()) {
      failure = llvm::toString(std::move(err));
      // cuInit's "no device" (CUDA_ERROR_NO_DEVICE) reads best as such.
      if (llvm::StringRef(failure).contains("CUDA_ERROR_NO_DEVICE"))
        failure = "no CUDA device: " + failure;
    }
  });
  if (!failure.empty())
    return error(failure);
  return dev;
}

llvm::Error makeCurrent() {
  auto dev = device();
  if (!dev)
    return dev.takeError();
  auto api = driver();
  KILN_CU(api->cuCtxSetCurrent(dev->context));
  return llvm::Error::success();
}

std::string describeDevice() {
  auto dev = device();
  if (!dev)
    return llvm::toString(dev.takeError());
  auto api = driver();
  int version = 0;
  api->cuDriverGetVersion(&version);
  return llvm::formatv("{0} ({1}, {2} SMs, {3:f1} GiB), driver supports CUDA {4}.{5}", dev->name,
                       dev->arch(), dev->smCount, dev->totalMemory / (1024.0 * 1024 * 1024),
                       version / 1000, (version % 1000) / 10)
      .str();
}

llvm::Error cuError(CUresult result, const char *call, const char *file, int line) {
  const char *name = "?", *text = "?";
  if (auto api = driver()) {
    api->cuGetErrorName(result, &name);
    api->cuGetErrorString(result, &text);
  } else {
    llvm::consumeError(api.takeError());
  }
  return error(llvm::formatv("{0} failed at {1}:{2}: {3} ({4})", call, file, line, name, text));
}

llvm::Error nvrtcError(nvrtcResult result, const char *call, const char *file, int line) {
  std::string text = "?";
  if (auto api = nvrtc(ToolkitPaths()))
    text = api->nvrtcGetErrorString(result);
  else
    llvm::consumeError(api.takeError());
  return error(llvm::formatv("{0} failed at {1}:{2}: {3}", call, file, line, text));
}

llvm::Error cublasError(cublasStatus_t status, const char *call, const char *file, int line) {
  std::string text = std::to_string(static_cast<int>(status));
  if (auto api = cublasLt(ToolkitPaths()))
    text = api->cublasLtGetStatusString(status);
  else
    llvm::consumeError(api.takeError());
  return error(llvm::formatv("{0} failed at {1}:{2}: {3}", call, file, line, text));
}

llvm::Error ncclError(ncclResult_t result, const char *call, const char *file, int line) {
  std::string text = std::to_string(static_cast<int>(result));
  if (auto api = nccl(ToolkitPaths()))
    text = api->ncclGetErrorString(result);
  else
    llvm::consumeError(api.takeError());
  return error(llvm::formatv("{0} failed at {1}:{2}: {3}", call, file, line, text));
}

} // namespace kiln::cuda
