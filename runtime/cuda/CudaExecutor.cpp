//===- CudaExecutor.cpp - runs a Plan on one GPU ---------------------------===//

#include "runtime/cuda/CudaExecutor.h"

#include "runtime/Backend.h"

#include "runtime/cuda/CudaApi.h"

#include "support/Files.h"
#include "support/Units.h"

#include "llvm/ADT/ScopeExit.h"
#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"

#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

#include <unistd.h>

namespace kiln::cuda {

namespace {

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

bool envFlag(const char *name, bool fallback) {
  const char *v = std::getenv(name);
  if (!v || !*v)
    return fallback;
  return llvm::StringRef(v) != "0";
}

cudaDataType_t cudaType(cpu::DType d) {
  switch (d) {
  case cpu::DType::F64: return CUDA_R_64F;
  case cpu::DType::BF16: return CUDA_R_16BF;
  case cpu::DType::F16: return CUDA_R_16F;
  default: return CUDA_R_32F;
  }
}

/// Everything about a GEMM that decides the algorithm (not the pointers).
std::string gemmKey(const GemmDesc &g) {
  return llvm::formatv("{0}{1} {2}x{3}x{4} ld {5},{6},{7} b{8} s{9},{10},{11} {12}{13} bias{14}",
                       g.transA, g.transB, g.m, g.n, g.k, g.lda, g.ldb, g.ldc, g.batch, g.strideA,
                       g.strideB, g.strideC, static_cast<int>(g.inType),
                       static_cast<int>(g.outType), g.bias >= 0)
             .str() +
         " " + gemmEpilogueName(g.epilogue).str();
}

/// The GEMM algorithms chosen earlier, by device, cuBLASLt version and
/// shape: <cacheDir>/gemm-algorithms.json, { key: hex of the opaque
/// cublasLtMatmulAlgo_t }. cuBLASLt documents that an algorithm struct stays
/// valid for the same library version and device; a cached one is still
/// checked (cublasLtMatmulAlgoCheck) before use.
class AlgoCache {
public:
  AlgoCache(std::string dir, std::string prefix) : prefix_(std::move(prefix)) {
    if (dir.empty())
      return;
    llvm::SmallString<256> p(dir);
    llvm::sys::path::append(p, "gemm-algorithms.json");
    path_ = std::string(p);
    auto file = llvm::MemoryBuffer::getFile(path_);
    if (!file)
      return;
    auto json = llvm::json::parse((*file)->getBuffer());
    if (!json) {
      llvm::consumeError(json.takeError()); // a damaged cache is only slower
      return;
    }
    if (auto *o = json->getAsObject())
      for (const auto &entry : *o) // getFirst/getSecond: docs/architecture.md §8
        if (auto hex = entry.getSecond().getAsString())
          entries_[entry.getFirst().str()] = hex->str();
  }

  bool lookup(const std::string &key, cublasLtMatmulAlgo_t &algo) const {
    auto it = entries_.find(prefix_ + key);
    if (it == entries_.end())
      return false;
    std::string bytes;
    if (!llvm::tryGetFromHex(it->second, bytes) || bytes.size() != sizeof(algo))
      return false;
    std::memcpy(&algo, bytes.data(), sizeof(algo));
    return true;
  }
  void insert(const std::string &key, const cublasLtMatmulAlgo_t &algo) {
    entries_[prefix_ + key] =
        llvm::toHex(llvm::StringRef(reinterpret_cast<const char *>(&algo), sizeof(algo)), true);
    dirty_ = true;
  }
  void save() {
    if (!dirty_ || path_.empty())
      return;
    llvm::json::Object o;
    for (auto &[k, v] : entries_)
      o[k] = v;
    if (llvm::Error err = writeFileAtomically(path_, llvm::formatv("{0:1}", llvm::json::Value(std::move(o))).str()))
      llvm::consumeError(std::move(err)); // only slower next time
  }

private:
  std::string path_, prefix_;
  std::map<std::string, std::string> entries_;
  bool dirty_ = false;
};

} // namespace

void packForDevice(const cpu::HostTensor &t, void *dst) {
  int64_t n = t.numel();
  switch (t.dtype()) {
  case cpu::DType::F64:
  case cpu::DType::F32:
  case cpu::DType::I64:
    std::memcpy(dst, t.raw(), n * cpu::dtypeSize(t.dtype()));
    return;
  case cpu::DType::BF16: {
    auto *out = static_cast<uint16_t *>(dst);
    for (int64_t i = 0; i < n; ++i)
      out[i] = cpu::floatToBF16Bits(t.data<float>()[i]);
    return;
  }
  case cpu::DType::F16: {
    auto *out = static_cast<uint16_t *>(dst);
    for (int64_t i = 0; i < n; ++i)
      out[i] = cpu::floatToF16Bits(t.data<float>()[i]);
    return;
  }
  case cpu::DType::I32: {
    auto *out = static_cast<int32_t *>(dst);
    for (int64_t i = 0; i < n; ++i)
      out[i] = static_cast<int32_t>(t.data<int64_t>()[i]);
    return;
  }
  case cpu::DType::I1: {
    auto *out = static_cast<uint8_t *>(dst);
    for (int64_t i = 0; i < n; ++i)
      out[i] = t.data<int64_t>()[i] != 0;
    return;
  }
  }
}

cpu::HostTensor unpackFromDevice(const void *src, cpu::DType dtype,
                                 const std::vector<int64_t> &shape) {
  auto t = cpu::HostTensor::uninitialized(dtype, shape);
  int64_t n = t.numel();
  switch (dtype) {
  case cpu::DType::F64:
  case cpu::DType::F32:
  case cpu::DType::I64:
    std::memcpy(t.raw(), src, n * cpu::dtypeSize(dtype));
    break;
  case cpu::DType::BF16:
    for (int64_t i = 0; i < n; ++i)
      t.data<float>()[i] = cpu::bf16BitsToFloat(static_cast<const uint16_t *>(src)[i]);
    break;
  case cpu::DType::F16:
    for (int64_t i = 0; i < n; ++i)
      t.data<float>()[i] = cpu::f16BitsToFloat(static_cast<const uint16_t *>(src)[i]);
    break;
  case cpu::DType::I32:
    for (int64_t i = 0; i < n; ++i)
      t.data<int64_t>()[i] = static_cast<const int32_t *>(src)[i];
    break;
  case cpu::DType::I1:
    for (int64_t i = 0; i < n; ++i)
      t.data<int64_t>()[i] = static_cast<const uint8_t *>(src)[i] != 0;
    break;
  }
  return t;
}

/// After a collective failed, the process must end soon even where NCCL's
/// shutdown blocks: a kernel still waiting for a dead peer keeps the
/// driver's frees from returning, and ncclCommAbort may wait for every rank
/// of the node to abort too (NVIDIA/nccl#863), which a killed rank never
/// does (measured on the H200: it had not returned after 20 s). `arm`
/// starts a thread that, unless `disarm` comes first within `seconds`,
/// writes the failure and the cleanup step that did not return to stderr
/// and ends the process (exit status 1). Checkpoints are written
/// atomically, so a run ended this way loses only its unsaved steps.
class ShutdownDeadline {
public:
  ~ShutdownDeadline() { disarm(); }
  void arm(std::string reason, double seconds) {
    if (state_)
      return;
    state_ = std::make_shared<State>();
    state_->phase = "the failed step's cleanup";
    std::thread([state = state_, reason = std::move(reason), seconds] {
      std::unique_lock<std::mutex> lock(state->mutex);
      if (state->cv.wait_for(lock, std::chrono::duration<double>(seconds),
                             [&] { return state->done; }))
        return;
      std::string text = llvm::formatv("kiln: {0}\nkiln: the GPU's shutdown did not finish "
                                       "within {1:f0} s (stuck in {2}); exiting\n",
                                       reason, seconds, state->phase);
      (void)!::write(2, text.data(), text.size());
      ::_exit(1);
    }).detach();
  }
  /// What the cleanup does next (named if it does not return).
  void at(std::string phase) {
    if (!state_)
      return;
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->phase = std::move(phase);
  }
  void disarm() {
    if (!state_)
      return;
    {
      std::lock_guard<std::mutex> lock(state_->mutex);
      state_->done = true;
    }
    state_->cv.notify_all();
    state_.reset();
  }

private:
  struct State {
    std::mutex mutex;
    std::condition_variable cv;
    bool done = false;
    std::string phase;
  };
  std::shared_ptr<State> state_;
};

/// One GEMM step, ready for cublasLtMatmul.
struct Gemm {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  bool f64 = false;
};

struct Function {
  const PlanFunction *plan = nullptr;
  std::vector<Gemm> gemms; ///< one per step (unused for non-GEMM steps)
  /// pinnedOut ends with the error word and the two numerics words.
  void *pinnedIn = nullptr, *pinnedOut = nullptr;
  int64_t inBytes = 0, outBytes = 0;
  int runs = 0;
  /// It has Collective steps: it runs eagerly (they wait on the host).
  bool collectives = false;
  /// With NCCL on its own stream: an event per Collective step, recorded
  /// when it is done (the later steps' joins wait for it).
  std::map<size_t, CUevent> done;
  CUgraph graph = nullptr;
  CUgraphExec exec = nullptr;
};

struct CudaExecutor::Impl {
  const Driver *cu = nullptr;
  const CublasLt *lt = nullptr;
  CUdeviceptr base = 0;
  CUstream stream = nullptr;
  cublasLtHandle_t handle = nullptr;
  std::vector<CUmodule> modules;
  std::vector<CUfunction> kernels;
  std::map<std::string, Function> functions;
  bool useGraphs = true, syncEachStep = false;
  cpu::Collectives *collectives = nullptr;
  /// NCCL (ExecutorOptions::nccl): a communicator per mesh axis, and a
  /// device buffer for the collectives that regroup their data.
  const Nccl *nccl = nullptr;
  std::map<std::string, ncclComm_t> comms;
  CUdeviceptr scratch = 0;
  double ncclTimeoutSeconds = 600;
  /// The collectives' stream (NCCL, unless KILN_COLLECTIVE_STREAM=0): each
  /// starts after the compute stream's work so far (`fork`), and the
  /// compute stream waits for it only where a step's joins say, and at
  /// the function's end (`joined`).
  CUstream comm = nullptr;
  CUevent fork = nullptr, joined = nullptr;
  /// NCCL: a host word the GPU sets to i + 1 once Collective step i is
  /// done (in stream order, so inside CUDA graphs too): a wait that fails
  /// names the collective it was stuck in.
  volatile uint32_t *progress = nullptr;
  CUdeviceptr progressOnDevice = 0;
  /// Armed when a collective fails; the destructor's end disarms it.
  ShutdownDeadline deadline;

  ~Impl() {
    if (!cu)
      return;
    deadline.at("releasing the GPU's resources (graphs, events, memory)");
    for (auto &[name, f] : functions) {
      if (f.exec)
        cu->cuGraphExecDestroy(f.exec);
      if (f.graph)
        cu->cuGraphDestroy(f.graph);
      if (f.pinnedIn)
        cu->cuMemFreeHost(f.pinnedIn);
      if (f.pinnedOut)
        cu->cuMemFreeHost(f.pinnedOut);
      for (auto &[step, event] : f.done)
        cu->cuEventDestroy(event);
      for (Gemm &g : f.gemms) {
        if (g.desc)
          lt->cublasLtMatmulDescDestroy(g.desc);
        for (auto layout : {g.a, g.b, g.c})
          if (layout)
            lt->cublasLtMatrixLayoutDestroy(layout);
      }
    }
    for (auto &[axis, comm] : comms)
      nccl->ncclCommDestroy(comm);
    if (scratch)
      cu->cuMemFree(scratch);
    if (progress)
      cu->cuMemFreeHost(const_cast<uint32_t *>(progress));
    for (CUevent event : {fork, joined})
      if (event)
        cu->cuEventDestroy(event);
    if (comm)
      cu->cuStreamDestroy(comm);
    if (handle)
      lt->cublasLtDestroy(handle);
    for (CUmodule m : modules)
      cu->cuModuleUnload(m);
    if (base)
      cu->cuMemFree(base);
    if (stream)
      cu->cuStreamDestroy(stream);
    deadline.disarm();
  }

  CUdeviceptr at(int64_t offset) const { return base + static_cast<CUdeviceptr>(offset); }

  /// The function named `name`, with the device current on this thread.
  llvm::Expected<Function &> function(llvm::StringRef name) {
    auto it = functions.find(name.str());
    if (it == functions.end())
      return error("the plan has no function @" + name);
    if (llvm::Error err = makeCurrent())
      return std::move(err);
    return it->second;
  }

  /// Milliseconds the work `enqueue` puts on the stream takes, between two
  /// events (waits for it).
  llvm::Expected<float> timeOnStream(llvm::function_ref<llvm::Error()> enqueue) {
    CUevent t0, t1;
    KILN_CU(cu->cuEventCreate(&t0, CU_EVENT_DEFAULT));
    if (CUresult r = cu->cuEventCreate(&t1, CU_EVENT_DEFAULT); r != CUDA_SUCCESS) {
      cu->cuEventDestroy(t0);
      return cuError(r, "cuEventCreate", __FILE__, __LINE__);
    }
    llvm::scope_exit destroy([&] {
      cu->cuEventDestroy(t0);
      cu->cuEventDestroy(t1);
    });
    KILN_CU(cu->cuEventRecord(t0, stream));
    if (llvm::Error err = enqueue())
      return std::move(err);
    KILN_CU(cu->cuEventRecord(t1, stream));
    KILN_CU(cu->cuEventSynchronize(t1));
    float ms = 0;
    KILN_CU(cu->cuEventElapsedTime(&ms, t0, t1));
    return ms;
  }

  llvm::Error makeGemm(const GemmDesc &d, Gemm &g) {
    g.f64 = d.inType == cpu::DType::F64;
    cublasComputeType_t compute = g.f64 ? CUBLAS_COMPUTE_64F : CUBLAS_COMPUTE_32F;
    cudaDataType_t scale = g.f64 ? CUDA_R_64F : CUDA_R_32F;
    KILN_CUBLAS(lt->cublasLtMatmulDescCreate(&g.desc, compute, scale));
    cublasOperation_t opA = d.transA ? CUBLAS_OP_T : CUBLAS_OP_N;
    cublasOperation_t opB = d.transB ? CUBLAS_OP_T : CUBLAS_OP_N;
    KILN_CUBLAS(lt->cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opA, sizeof(opA)));
    KILN_CUBLAS(lt->cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opB, sizeof(opB)));
    // The epilogue; its vectors (bias added or bias gradient written) and
    // the aux matrix (gelu's input) are of the output's type.
    bool bias = d.bias >= 0;
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    switch (d.epilogue) {
    case GemmEpilogue::None: epilogue = bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT; break;
    case GemmEpilogue::Gelu: epilogue = bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU; break;
    case GemmEpilogue::GeluAux:
      epilogue = bias ? CUBLASLT_EPILOGUE_GELU_AUX_BIAS : CUBLASLT_EPILOGUE_GELU_AUX;
      break;
    case GemmEpilogue::GeluGrad: epilogue = CUBLASLT_EPILOGUE_DGELU; break;
    case GemmEpilogue::GeluGradBgrad: epilogue = CUBLASLT_EPILOGUE_DGELU_BGRAD; break;
    case GemmEpilogue::BgradA: epilogue = CUBLASLT_EPILOGUE_BGRADA; break;
    }
    if (epilogue != CUBLASLT_EPILOGUE_DEFAULT)
      KILN_CUBLAS(lt->cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    if (bias) {
      void *biasPtr = reinterpret_cast<void *>(at(d.bias));
      KILN_CUBLAS(lt->cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &biasPtr, sizeof(biasPtr)));
      cudaDataType_t biasType = cudaType(d.outType);
      KILN_CUBLAS(lt->cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &biasType, sizeof(biasType)));
    }
    if (d.aux >= 0) {
      void *auxPtr = reinterpret_cast<void *>(at(d.aux));
      KILN_CUBLAS(lt->cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &auxPtr, sizeof(auxPtr)));
      int64_t ld = d.m;
      KILN_CUBLAS(lt->cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld, sizeof(ld)));
    }
    auto layout = [&](cublasLtMatrixLayout_t &l, cpu::DType type, int64_t rows, int64_t cols,
                      int64_t ld, int64_t stride) -> llvm::Error {
      KILN_CUBLAS(lt->cublasLtMatrixLayoutCreate(&l, cudaType(type), rows, cols, ld));
      if (d.batch > 1) {
        int32_t count = static_cast<int32_t>(d.batch);
        KILN_CUBLAS(lt->cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)));
        KILN_CUBLAS(lt->cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &stride, sizeof(stride)));
      }
      return llvm::Error::success();
    };
    if (llvm::Error err = layout(g.a, d.inType, d.transA ? d.k : d.m, d.transA ? d.m : d.k, d.lda, d.strideA))
      return err;
    if (llvm::Error err = layout(g.b, d.inType, d.transB ? d.n : d.k, d.transB ? d.k : d.n, d.ldb, d.strideB))
      return err;
    return layout(g.c, d.outType, d.m, d.n, d.ldc, d.strideC);
  }

  llvm::Error launchGemm(const GemmDesc &d, const Gemm &g, int64_t workspace, int64_t workspaceBytes,
                         const cublasLtMatmulAlgo_t &algo) {
    float alpha = 1.0f, beta = 0.0f;
    double alpha64 = 1.0, beta64 = 0.0;
    const void *pa = g.f64 ? static_cast<const void *>(&alpha64) : &alpha;
    const void *pb = g.f64 ? static_cast<const void *>(&beta64) : &beta;
    KILN_CUBLAS(lt->cublasLtMatmul(handle, g.desc, pa, reinterpret_cast<void *>(at(d.a)), g.a,
                                   reinterpret_cast<void *>(at(d.b)), g.b, pb,
                                   reinterpret_cast<void *>(at(d.c)), g.c,
                                   reinterpret_cast<void *>(at(d.c)), g.c, &algo,
                                   reinterpret_cast<void *>(at(workspace)),
                                   static_cast<size_t>(workspaceBytes), stream));
    return llvm::Error::success();
  }
};

namespace {
llvm::Error initNccl(CudaExecutor::Impl &im, const Plan &p, const ExecutorOptions &options);
} // namespace

CudaExecutor::CudaExecutor(Plan plan) : impl_(std::make_unique<Impl>()), plan_(std::move(plan)) {}
CudaExecutor::~CudaExecutor() = default;

llvm::Expected<std::unique_ptr<CudaExecutor>> CudaExecutor::create(Plan plan,
                                                                   const ExecutorOptions &options) {
  auto start = std::chrono::steady_clock::now();
  auto dev = device();
  if (!dev)
    return dev.takeError();
  if (llvm::Error err = makeCurrent())
    return std::move(err);
  auto cu = driver();
  if (!cu)
    return cu.takeError();
  auto lt = cublasLt({options.toolkitRoot});
  if (!lt)
    return lt.takeError();
  // A plan for the generic sm_90 also runs where kiln would generate sm_90a.
  if (plan.arch != dev->arch() && plan.arch + "a" != dev->arch())
    return error("the plan was generated for " + plan.arch + " but the device is " + dev->arch() +
                 " (" + dev->name + "); compile it with --arch " + dev->arch());
  std::unique_ptr<CudaExecutor> ex(new CudaExecutor(std::move(plan)));
  Impl &im = *ex->impl_;
  im.cu = &*cu;
  im.lt = &*lt;
  im.useGraphs = options.useGraphs && envFlag("KILN_CUDA_GRAPHS", true);
  im.collectives = options.collectives;
  im.syncEachStep = envFlag("KILN_CUDA_SYNC", false);
  const Plan &p = ex->plan_;

  // Memory first: a plan that does not fit fails before minutes of compiling.
  size_t freeBytes = 0, totalBytes = 0;
  KILN_CU(im.cu->cuMemGetInfo(&freeBytes, &totalBytes));
  if (static_cast<size_t>(p.memory.total) > freeBytes)
    return llvm::make_error<OutOfMemoryError>("device memory of " + dev->name, p.memory.total,
                                              static_cast<int64_t>(freeBytes));
  KILN_CU(im.cu->cuStreamCreate(&im.stream, CU_STREAM_NON_BLOCKING));
  KILN_CU(im.cu->cuMemAlloc(&im.base, static_cast<size_t>(p.memory.total)));
  KILN_CU(im.cu->cuMemsetD8Async(im.base, 0, static_cast<size_t>(p.memory.total), im.stream));
  KILN_CU(im.cu->cuStreamSynchronize(im.stream));
  ex->stats_.allocSeconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  // Kernels.
  std::vector<KernelSource> sources;
  for (const PlanKernel &k : p.kernels)
    sources.push_back({k.name, k.source});
  CompileOptions compile;
  compile.arch = p.arch;
  compile.toolkitRoot = options.toolkitRoot;
  compile.cacheDir = options.cacheDir;
  compile.headers = p.headers;
  if (options.progress) {
    *options.progress << llvm::formatv("  compiling {0} kernels for {1} with NVRTC...\n",
                                       sources.size(), p.arch);
    options.progress->flush();
  }
  auto cubins = compileKernels(sources, compile, &ex->stats_.nvrtc);
  if (!cubins)
    return cubins.takeError();
  std::vector<int64_t> maxShared(p.kernels.size(), 0);
  for (const PlanFunction &f : p.functions)
    for (const PlanStep &s : f.steps)
      if (s.kind == PlanStep::Kind::Launch)
        maxShared[s.kernel] = std::max(maxShared[s.kernel], s.sharedBytes);
  auto moduleStart = std::chrono::steady_clock::now();
  for (size_t i = 0; i < cubins->size(); ++i) {
    CUmodule module;
    CUfunction fn;
    KILN_CU(im.cu->cuModuleLoadData(&module, (*cubins)[i].data()));
    im.modules.push_back(module);
    KILN_CU(im.cu->cuModuleGetFunction(&fn, module, p.kernels[i].name.c_str()));
    // Any dynamic shared memory may need the opt-in: the kernel's static
    // part counts towards the 48 KiB default too.
    if (maxShared[i] > 0)
      KILN_CU(im.cu->cuFuncSetAttribute(fn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                        static_cast<int>(maxShared[i])));
    im.kernels.push_back(fn);
  }

  ex->stats_.moduleSeconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - moduleStart).count();

  // GEMMs: descriptors per step, one algorithm per distinct shape.
  if (options.nccl)
    if (llvm::Error err = initNccl(im, p, options))
      return std::move(err);
  KILN_CUBLAS(im.lt->cublasLtCreate(&im.handle));
  // Choices made from another number of candidates are cached apart.
  AlgoCache cache(options.cacheDir, dev->name + "|" + p.arch + "|cublasLt " +
                                        std::to_string(im.lt->cublasLtGetVersion()) +
                                        "|candidates " + std::to_string(options.gemmCandidates) +
                                        "|");
  auto tuneStart = std::chrono::steady_clock::now();
  std::map<std::string, cublasLtMatmulAlgo_t> algos;
  for (const PlanFunction &pf : p.functions) {
    Function &f = im.functions[pf.name];
    f.plan = &pf;
    f.gemms.resize(pf.steps.size());
    for (size_t i = 0; i < pf.steps.size(); ++i) {
      const PlanStep &s = pf.steps[i];
      f.collectives |= s.kind == PlanStep::Kind::Collective;
      if (s.kind == PlanStep::Kind::Collective && im.comm)
        KILN_CU(im.cu->cuEventCreate(&f.done[i], CU_EVENT_DISABLE_TIMING));
      if (s.kind != PlanStep::Kind::Gemm)
        continue;
      Gemm &g = f.gemms[i];
      if (llvm::Error err = im.makeGemm(s.gemm, g))
        return error("preparing the GEMM of " + s.op + ": " + llvm::toString(std::move(err)));
      std::string key = gemmKey(s.gemm);
      if (auto it = algos.find(key); it != algos.end()) {
        g.algo = it->second;
        continue;
      }
      // train.deterministic: the heuristic's first algorithm, the same on
      // every run with this GPU, driver and cuBLASLt (a timed choice can
      // change with the card's noise, and with it the sums' order).
      if (cublasLtMatmulAlgo_t cached; !p.deterministic && cache.lookup(key, cached)) {
        cublasLtMatmulHeuristicResult_t check{};
        if (im.lt->cublasLtMatmulAlgoCheck(im.handle, g.desc, g.a, g.b, g.c, g.c, &cached, &check) ==
                CUBLAS_STATUS_SUCCESS &&
            check.workspaceSize <= static_cast<size_t>(p.memory.gemmWorkspace)) {
          g.algo = cached;
          algos[key] = cached;
          ++ex->stats_.gemmShapesCached;
          continue;
        }
      }
      cublasLtMatmulPreference_t pref;
      KILN_CUBLAS(im.lt->cublasLtMatmulPreferenceCreate(&pref));
      uint64_t ws = static_cast<uint64_t>(p.memory.gemmWorkspace);
      KILN_CUBLAS(im.lt->cublasLtMatmulPreferenceSetAttribute(
          pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)));
      std::vector<cublasLtMatmulHeuristicResult_t> results(std::max(1, options.gemmCandidates));
      int returned = 0;
      cublasStatus_t status = im.lt->cublasLtMatmulAlgoGetHeuristic(
          im.handle, g.desc, g.a, g.b, g.c, g.c, pref, static_cast<int>(results.size()),
          results.data(), &returned);
      im.lt->cublasLtMatmulPreferenceDestroy(pref);
      if (status != CUBLAS_STATUS_SUCCESS || returned == 0)
        return error("cuBLASLt has no algorithm for the GEMM of " + s.op + " (" + key + ")");
      int best = 0;
      if (returned > 1 && !p.deterministic) {
        float bestMs = 1e30f;
        for (int r = 0; r < returned; ++r) {
          if (results[r].state != CUBLAS_STATUS_SUCCESS)
            continue;
          // One warm-up, then three timed runs.
          if (llvm::Error err = im.launchGemm(s.gemm, g, p.memory.workspaceOffset,
                                              p.memory.gemmWorkspace, results[r].algo)) {
            llvm::consumeError(std::move(err)); // a candidate that fails is skipped
            continue;
          }
          auto ms = im.timeOnStream([&]() -> llvm::Error {
            for (int rep = 0; rep < 3; ++rep)
              if (llvm::Error err = im.launchGemm(s.gemm, g, p.memory.workspaceOffset,
                                                  p.memory.gemmWorkspace, results[r].algo))
                return err;
            return llvm::Error::success();
          });
          if (!ms)
            return ms.takeError();
          if (*ms < bestMs) {
            bestMs = *ms;
            best = r;
          }
        }
      }
      g.algo = results[best].algo;
      algos[key] = g.algo;
      if (!p.deterministic)
        cache.insert(key, g.algo);
    }
    // Pinned staging for the inputs and outputs.
    for (const PlanBinding &b : pf.args)
      if (b.kind == PlanBinding::Kind::Input)
        f.inBytes += b.bytes();
    for (const PlanBinding &b : pf.results)
      if (b.aliases.empty())
        f.outBytes += b.bytes();
    if (f.inBytes)
      KILN_CU(im.cu->cuMemAllocHost(&f.pinnedIn, static_cast<size_t>(f.inBytes)));
    KILN_CU(im.cu->cuMemAllocHost(&f.pinnedOut, static_cast<size_t>(f.outBytes + 12)));
  }
  KILN_CU(im.cu->cuStreamSynchronize(im.stream));
  cache.save();
  ex->stats_.gemmShapes = static_cast<int>(algos.size());
  auto now = std::chrono::steady_clock::now();
  ex->stats_.autotuneSeconds = std::chrono::duration<double>(now - tuneStart).count();
  ex->stats_.loadSeconds = std::chrono::duration<double>(now - start).count();
  return std::move(ex);
}

llvm::Error CudaExecutor::write(int64_t offset, const void *src, int64_t bytes) {
  Impl &im = *impl_;
  if (offset < 0 || offset + bytes > plan_.memory.total)
    return error(llvm::formatv("write of {0} bytes at {1} is outside the arena", bytes, offset));
  KILN_CU(im.cu->cuStreamSynchronize(im.stream));
  KILN_CU(im.cu->cuMemcpyHtoD(im.at(offset), src, static_cast<size_t>(bytes)));
  return llvm::Error::success();
}

llvm::Error CudaExecutor::read(int64_t offset, void *dst, int64_t bytes) {
  Impl &im = *impl_;
  if (offset < 0 || offset + bytes > plan_.memory.total)
    return error(llvm::formatv("read of {0} bytes at {1} is outside the arena", bytes, offset));
  KILN_CU(im.cu->cuStreamSynchronize(im.stream));
  KILN_CU(im.cu->cuMemcpyDtoH(dst, im.at(offset), static_cast<size_t>(bytes)));
  return llvm::Error::success();
}

namespace {

ncclDataType_t ncclTypeOf(cpu::DType d) {
  switch (d) {
  case cpu::DType::F64: return ncclFloat64;
  case cpu::DType::F32: return ncclFloat32;
  case cpu::DType::BF16: return ncclBfloat16;
  case cpu::DType::F16: return ncclFloat16;
  case cpu::DType::I64: return ncclInt64;
  case cpu::DType::I32: return ncclInt32;
  case cpu::DType::I1: return ncclUint8;
  }
  return ncclFloat32;
}

/// A strided device-to-device copy in stream order: `height` rows of
/// `width` bytes.
llvm::Error copy2D(CudaExecutor::Impl &im, CUstream stream, CUdeviceptr dst, size_t dstPitch,
                   CUdeviceptr src, size_t srcPitch, size_t width, size_t height) {
  CUDA_MEMCPY2D m = {};
  m.srcMemoryType = CU_MEMORYTYPE_DEVICE;
  m.srcDevice = src;
  m.srcPitch = srcPitch;
  m.dstMemoryType = CU_MEMORYTYPE_DEVICE;
  m.dstDevice = dst;
  m.dstPitch = dstPitch;
  m.WidthInBytes = width;
  m.Height = height;
  KILN_CU(im.cu->cuMemcpy2DAsync(&m, stream));
  return llvm::Error::success();
}

/// How a collective's data splits: `outer` rows (the dimensions before
/// `dim`) of `n` chunks of `chunk` bytes each along `dim` (the whole side:
/// an all_gather's result, the others' operand).
struct Split {
  int64_t n, outer, chunk;
};
Split splitOf(const CollectiveDesc &c) {
  bool gather = c.kind == "all_gather";
  const std::vector<int64_t> &whole = gather ? c.resultShape : c.shape;
  const std::vector<int64_t> &part = gather ? c.shape : c.resultShape;
  Split s{1, 1, 0};
  if (c.kind == "all_reduce" || whole.empty())
    return s;
  s.n = part[c.dim] > 0 ? whole[c.dim] / part[c.dim] : 1;
  for (int64_t d = 0; d < c.dim; ++d)
    s.outer *= whole[d];
  int64_t bytes = cpu::product(whole) * static_cast<int64_t>(cpu::dtypeSize(c.dtype));
  s.chunk = bytes / std::max<int64_t>(1, s.outer * s.n);
  return s;
}

/// How an all_to_all's received parts join: `outer` rows (the result's
/// dimensions before concatDim) of `n` chunks of `chunk` bytes, one chunk
/// of each row from each rank.
Split joinOf(const CollectiveDesc &c, int64_t n) {
  Split s{n, 1, 0};
  for (int64_t d = 0; d < c.concatDim; ++d)
    s.outer *= c.resultShape[d];
  s.chunk = c.resultBytes() / std::max<int64_t>(1, s.outer * n);
  return s;
}

/// The scratch bytes a Collective step needs under NCCL: the regrouped
/// whole when the split dimension is not the outermost (an all_to_all:
/// the parts to send, then the parts received, each where it needs it).
int64_t ncclScratchBytes(const CollectiveDesc &c) {
  Split s = splitOf(c);
  if (c.kind == "all_to_all")
    return (s.outer == 1 ? 0 : c.bytes()) + (joinOf(c, s.n).outer == 1 ? 0 : c.bytes());
  if (s.outer == 1 || (c.kind != "all_gather" && c.kind != "reduce_scatter"))
    return 0;
  return s.n * s.outer * s.chunk;
}

/// A Collective step with NCCL on the device buffers, in stream order
/// (capturable into the function's CUDA graph). NCCL gathers and scatters
/// along the outermost dimension; another dimension goes through the
/// scratch buffer, regrouped by strided copies. Enqueued on `stream`.
llvm::Error runNccl(CudaExecutor::Impl &im, const PlanStep &s, CUstream stream) {
  const CollectiveDesc &c = s.collective;
  if (c.isTransfer()) {
    // A pipeline stage's send or receive (inside the run's NCCL group).
    auto comm = im.comms.find(c.axis);
    if (comm == im.comms.end())
      return error("no NCCL communicator for mesh axis '" + c.axis + "'");
    if (c.peer < 0 || c.peer >= im.collectives->groupSize(c.axis) ||
        c.peer == im.collectives->coordinate(c.axis))
      return error(llvm::formatv("{0} over {1}: peer {2} is not another rank of the axis ({3} "
                                 "ranks)",
                                 c.kind, c.axis, c.peer, im.collectives->groupSize(c.axis)));
    size_t count = static_cast<size_t>(cpu::product(c.shape));
    void *at = reinterpret_cast<void *>(im.at(c.kind == "send" ? s.src : s.dst));
    if (c.kind == "send")
      KILN_NCCL(im.nccl->ncclSend(at, count, ncclTypeOf(c.dtype), static_cast<int>(c.peer),
                                  comm->second, stream));
    else
      KILN_NCCL(im.nccl->ncclRecv(at, count, ncclTypeOf(c.dtype), static_cast<int>(c.peer),
                                  comm->second, stream));
    return llvm::Error::success();
  }
  Split sp = splitOf(c);
  CUdeviceptr src = im.at(s.src), dst = im.at(s.dst);
  // The plan's shapes must split as the mesh does, or the copies below
  // would reach past the buffers the plan validated.
  if (c.kind != "all_reduce" && im.collectives->groupSize(c.axis) != sp.n)
    return error(llvm::formatv("{0} over {1}: the plan splits {2} ways but the mesh axis has {3} "
                               "ranks",
                               c.kind, c.axis, sp.n, im.collectives->groupSize(c.axis)));
  if (c.kind == "take_shard") {
    int64_t k = im.collectives->coordinate(c.axis);
    return copy2D(im, stream, dst, sp.chunk, src + k * sp.chunk, sp.n * sp.chunk, sp.chunk, sp.outer);
  }
  auto comm = im.comms.find(c.axis);
  if (comm == im.comms.end())
    return error("no NCCL communicator for mesh axis '" + c.axis + "'");
  const Nccl &api = *im.nccl;
  ncclDataType_t type = ncclTypeOf(c.dtype);
  size_t count = static_cast<size_t>(cpu::product(c.shape));
  if (c.kind == "all_reduce") {
    KILN_NCCL(api.ncclAllReduce(reinterpret_cast<void *>(src), reinterpret_cast<void *>(dst), count,
                                type, ncclSum, comm->second, stream));
    return llvm::Error::success();
  }
  if (c.kind == "all_gather") {
    CUdeviceptr into = sp.outer == 1 ? dst : im.scratch;
    KILN_NCCL(api.ncclAllGather(reinterpret_cast<void *>(src), reinterpret_cast<void *>(into),
                                count, type, comm->second, stream));
    if (sp.outer == 1)
      return llvm::Error::success();
    // [n][outer][chunk] -> [outer][n][chunk]
    for (int64_t k = 0; k < sp.n; ++k)
      if (llvm::Error err = copy2D(im, stream, dst + k * sp.chunk, sp.n * sp.chunk,
                                   im.scratch + k * sp.outer * sp.chunk, sp.chunk, sp.chunk,
                                   sp.outer))
        return err;
    return llvm::Error::success();
  }
  if (c.kind == "all_to_all") {
    // Part k of the operand (along the split dimension) to rank k, as one
    // contiguous run: [outer][n][chunk] -> [n][outer][chunk] first unless
    // the split dimension is the outermost.
    CUdeviceptr from = src, scratch = im.scratch;
    const int64_t partBytes = c.bytes() / sp.n;
    if (sp.outer != 1) {
      for (int64_t k = 0; k < sp.n; ++k)
        if (llvm::Error err = copy2D(im, stream, scratch + k * sp.outer * sp.chunk, sp.chunk,
                                     src + k * sp.chunk, sp.n * sp.chunk, sp.chunk, sp.outer))
          return err;
      from = scratch;
      scratch += c.bytes();
    }
    // Rank k's part lands as chunk k of every row of the result:
    // received as [n][outer][chunk], then regrouped, unless the
    // concatenated dimension is the outermost.
    Split join = joinOf(c, sp.n);
    CUdeviceptr into = join.outer == 1 ? dst : scratch;
    size_t partCount = count / static_cast<size_t>(sp.n);
    KILN_NCCL(api.ncclGroupStart());
    for (int64_t k = 0; k < sp.n; ++k) {
      KILN_NCCL(api.ncclSend(reinterpret_cast<void *>(from + k * partBytes), partCount, type,
                             static_cast<int>(k), comm->second, stream));
      KILN_NCCL(api.ncclRecv(reinterpret_cast<void *>(into + k * partBytes), partCount, type,
                             static_cast<int>(k), comm->second, stream));
    }
    KILN_NCCL(api.ncclGroupEnd());
    if (join.outer == 1)
      return llvm::Error::success();
    for (int64_t k = 0; k < sp.n; ++k)
      if (llvm::Error err = copy2D(im, stream, dst + k * join.chunk, sp.n * join.chunk,
                                   into + k * join.outer * join.chunk, join.chunk, join.chunk,
                                   join.outer))
        return err;
    return llvm::Error::success();
  }
  // reduce_scatter: [outer][n][chunk] -> [n][outer][chunk] first.
  CUdeviceptr from = src;
  if (sp.outer != 1) {
    for (int64_t k = 0; k < sp.n; ++k)
      if (llvm::Error err = copy2D(im, stream, im.scratch + k * sp.outer * sp.chunk, sp.chunk,
                                   src + k * sp.chunk, sp.n * sp.chunk, sp.chunk, sp.outer))
        return err;
    from = im.scratch;
  }
  KILN_NCCL(api.ncclReduceScatter(reinterpret_cast<void *>(from), reinterpret_cast<void *>(dst),
                                  count / static_cast<size_t>(sp.n), type, ncclSum, comm->second,
                                  stream));
  return llvm::Error::success();
}

/// Connects each pair of ranks that `p`'s send/recv steps join, before the
/// first step: NCCL connects point-to-point peers lazily, inside the
/// ncclGroupEnd of their first transfer, and that connection waits on the
/// host for the peer's — and for work already on the device. A pipeline
/// stage whose first receive from the next stage is posted while its GPU
/// waits on that stage (GPipe's last forward) would wait forever there.
/// One byte each way, every peer in one group, so every rank's group meets
/// its peers' at once.
llvm::Error connectTransferPeers(CudaExecutor::Impl &im, const Plan &p) {
  std::map<std::string, std::pair<std::set<int64_t>, std::set<int64_t>>> peers; // to, from
  for (const PlanFunction &f : p.functions)
    for (const PlanStep &s : f.steps)
      if (s.kind == PlanStep::Kind::Collective && s.collective.isTransfer())
        (s.collective.kind == "send" ? peers[s.collective.axis].first
                                     : peers[s.collective.axis].second)
            .insert(s.collective.peer);
  for (const auto &[axis, ends] : peers) {
    auto comm = im.comms.find(axis);
    if (comm == im.comms.end())
      return error("no NCCL communicator for mesh axis '" + axis + "'");
    const int64_t n = static_cast<int64_t>(ends.first.size() + ends.second.size());
    CUdeviceptr bytes = 0;
    KILN_CU(im.cu->cuMemAlloc(&bytes, static_cast<size_t>(n)));
    llvm::scope_exit release([&] { im.cu->cuMemFree(bytes); });
    KILN_CU(im.cu->cuMemsetD8Async(bytes, 0, static_cast<size_t>(n), im.stream));
    KILN_NCCL(im.nccl->ncclGroupStart());
    int64_t at = 0;
    for (int64_t peer : ends.first)
      KILN_NCCL(im.nccl->ncclSend(reinterpret_cast<void *>(bytes + at++), 1, ncclUint8,
                                  static_cast<int>(peer), comm->second, im.stream));
    for (int64_t peer : ends.second)
      KILN_NCCL(im.nccl->ncclRecv(reinterpret_cast<void *>(bytes + at++), 1, ncclUint8,
                                  static_cast<int>(peer), comm->second, im.stream));
    KILN_NCCL(im.nccl->ncclGroupEnd());
    // Bounded: a peer that never posts its part fails the load, not hangs it.
    auto deadline = std::chrono::steady_clock::now() +
                    std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                        std::chrono::duration<double>(im.ncclTimeoutSeconds));
    for (;;) {
      CUresult r = im.cu->cuStreamQuery(im.stream);
      if (r == CUDA_SUCCESS)
        break;
      if (r != CUDA_ERROR_NOT_READY)
        return cuError(r, "cuStreamQuery", __FILE__, __LINE__);
      if (std::chrono::steady_clock::now() > deadline) {
        im.nccl->ncclCommAbort(comm->second);
        im.comms.erase(comm);
        return error(llvm::formatv("connecting the NCCL peers over {0} waited {1:f0} s (another "
                                   "rank stopped?)",
                                   axis, im.ncclTimeoutSeconds));
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }
  return llvm::Error::success();
}

/// Sets up NCCL for `p`'s Collective steps: one communicator per mesh axis
/// they use, in name order on every rank; each group's first rank makes the
/// unique id and the group's all_gather hands it to the others.
llvm::Error initNccl(CudaExecutor::Impl &im, const Plan &p, const ExecutorOptions &options) {
  if (!options.collectives)
    return error("NCCL collectives need the rank's group (kiln train --ranks N)");
  auto api = nccl({options.toolkitRoot});
  if (!api)
    return error("NCCL: " + llvm::toString(api.takeError()));
  im.nccl = &*api;
  im.ncclTimeoutSeconds = options.ncclTimeoutSeconds;
  std::set<std::string> axes;
  int64_t scratch = 0;
  for (const PlanFunction &f : p.functions)
    for (const PlanStep &s : f.steps)
      if (s.kind == PlanStep::Kind::Collective) {
        if (s.collective.kind != "take_shard")
          axes.insert(s.collective.axis);
        scratch = std::max(scratch, ncclScratchBytes(s.collective));
      }
  static_assert(sizeof(ncclUniqueId) == 16 * sizeof(int64_t), "an id is 16 words");
  cpu::Collectives &group = *options.collectives;
  for (const std::string &axis : axes) {
    ncclUniqueId id = {};
    if (group.coordinate(axis) == 0)
      KILN_NCCL(api->ncclGetUniqueId(&id));
    cpu::HostTensor mine(cpu::DType::I64, {16});
    std::memcpy(mine.raw(), &id, sizeof id);
    auto all = group.allGather(mine, axis, 0);
    if (!all)
      return error("passing the NCCL id over " + axis + ": " + llvm::toString(all.takeError()));
    std::memcpy(&id, all->raw(), sizeof id);
    ncclComm_t comm = nullptr;
    KILN_NCCL(api->ncclCommInitRank(&comm, static_cast<int>(group.groupSize(axis)), id,
                                    static_cast<int>(group.coordinate(axis))));
    im.comms[axis] = comm;
  }
  if (llvm::Error err = connectTransferPeers(im, p))
    return err;
  if (scratch > 0)
    KILN_CU(im.cu->cuMemAlloc(&im.scratch, static_cast<size_t>(scratch)));
  void *word = nullptr;
  KILN_CU(im.cu->cuMemHostAlloc(&word, sizeof(uint32_t), CU_MEMHOSTALLOC_DEVICEMAP));
  im.progress = static_cast<volatile uint32_t *>(word);
  *im.progress = 0;
  KILN_CU(im.cu->cuMemHostGetDevicePointer(&im.progressOnDevice, word, 0));
  if (envFlag("KILN_COLLECTIVE_STREAM", true)) {
    KILN_CU(im.cu->cuStreamCreate(&im.comm, CU_STREAM_NON_BLOCKING));
    KILN_CU(im.cu->cuEventCreate(&im.fork, CU_EVENT_DISABLE_TIMING));
    KILN_CU(im.cu->cuEventCreate(&im.joined, CU_EVENT_DISABLE_TIMING));
  }
  return llvm::Error::success();
}

/// How long the cleanup after a failed collective may take before the
/// process ends anyway (ShutdownDeadline).
constexpr double kShutdownSeconds = 10;

/// Waits for the stream, watching NCCL: an asynchronous NCCL error, or the
/// timeout passing, aborts the communicators (which unblocks the stream)
/// and fails naming `function`.
/// The Collective step of `f` the GPU has not finished, by the progress
/// word ("" when every one is done).
std::string unfinishedCollective(const CudaExecutor::Impl &im, const PlanFunction &f,
                                 llvm::StringRef function) {
  size_t done = im.progress ? *im.progress : 0;
  for (size_t i = done; i < f.steps.size(); ++i) {
    const PlanStep &s = f.steps[i];
    if (s.kind != PlanStep::Kind::Collective || s.collective.kind == "take_shard")
      continue;
    // A bucket's sums run as one NCCL group: name the rest of it too.
    std::string group;
    if (s.collective.bucket >= 0) {
      int64_t more = 0, bytes = 0;
      for (size_t j = i + 1; j < f.steps.size() && f.steps[j].kind == PlanStep::Kind::Collective &&
                             f.steps[j].collective.bucket == s.collective.bucket;
           ++j, ++more)
        bytes += f.steps[j].collective.bytes();
      if (more > 0)
        group = llvm::formatv(", with {0} more sum(s) of {1} in its bucket's NCCL group", more,
                              formatBytes(bytes));
    }
    return llvm::formatv("{0} over {1} of {2} (step {3} of @{4}: {5}{6})", s.collective.kind,
                         s.collective.axis, formatBytes(s.collective.bytes()), i, function, s.op,
                         group);
  }
  return "";
}

llvm::Error waitWithNccl(CudaExecutor::Impl &im, const PlanFunction &f, llvm::StringRef function) {
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                      std::chrono::duration<double>(im.ncclTimeoutSeconds));
  auto during = [&] {
    std::string what = unfinishedCollective(im, f, function);
    return what.empty() ? "@" + function.str() + "'s NCCL collectives" : what;
  };
  for (int spin = 0;; ++spin) {
    CUresult r = im.cu->cuStreamQuery(im.stream);
    if (r == CUDA_SUCCESS)
      return llvm::Error::success();
    if (r != CUDA_ERROR_NOT_READY)
      return cuError(r, "cuStreamQuery", __FILE__, __LINE__);
    std::string why;
    // A peer that ended or failed, as the rank's group sees it: at once,
    // naming it, instead of after the timeout. Only while a collective is
    // unfinished: a peer that finished its part may end normally (closing
    // its connection) while this rank's last kernels still run.
    if (spin % 16 == 0 && im.collectives)
      if (std::string what = unfinishedCollective(im, f, function); !what.empty())
        if (auto gone = im.collectives->peerFailure(what))
          why = *gone;
    for (auto &[axis, comm] : im.comms) {
      ncclResult_t async = ncclSuccess;
      im.nccl->ncclCommGetAsyncError(comm, &async);
      if (!why.empty() || async == ncclSuccess || async == ncclInProgress)
        continue;
      std::string reported = llvm::formatv("NCCL reported '{0}' on the communicator over {1}",
                                           im.nccl->ncclGetErrorString(async), axis);
      why = reported + " during " + during();
      // A peer that died shows in the group too, a moment apart: name it.
      for (int i = 0; i < 200 && im.collectives; ++i) {
        if (auto gone = im.collectives->peerFailure(during())) {
          why = *gone + " (" + reported + ")";
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    }
    if (why.empty() && std::chrono::steady_clock::now() > deadline)
      why = llvm::formatv("waited {0:f0} s in {1} (another rank stopped?)",
                          im.ncclTimeoutSeconds, during());
    if (!why.empty()) {
      // The other ranks hear why (their own waits then end at once).
      if (im.collectives)
        im.collectives->abort(why);
      im.deadline.arm(why, kShutdownSeconds);
      for (auto &[axis, comm] : im.comms) {
        im.deadline.at("ncclCommAbort over " + axis);
        im.nccl->ncclCommAbort(comm);
      }
      im.comms.clear();
      im.deadline.at("the failed step's way out");
      return error(why);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(spin < 1000 ? 20 : 1000));
  }
}

/// A Collective step through the rank's group: the operand to the host,
/// the group's collective (or, for take_shard, this rank's part), the
/// result back.
llvm::Error runCollective(CudaExecutor::Impl &im, const PlanStep &s) {
  const CollectiveDesc &c = s.collective;
  if (!im.collectives)
    return error("a step partitioned over a mesh runs in rank processes (kiln train --ranks N), "
                 "whose group carries its collectives");
  // In stream order both ways: the executor's stream does not wait for the
  // legacy default stream that cuMemcpyHtoD would use, and a pageable
  // cuMemcpyHtoD may return before its data has landed.
  std::vector<char> buffer(static_cast<size_t>(std::max(c.bytes(), c.resultBytes())));
  KILN_CU(im.cu->cuMemcpyDtoHAsync(buffer.data(), im.at(s.src), static_cast<size_t>(c.bytes()),
                                   im.stream));
  KILN_CU(im.cu->cuStreamSynchronize(im.stream));
  cpu::HostTensor x = unpackFromDevice(buffer.data(), c.dtype, c.shape);
  cpu::Collectives &g = *im.collectives;
  llvm::Expected<cpu::HostTensor> r = cpu::HostTensor();
  if (c.kind == "all_reduce")
    r = g.allReduce(x, c.axis);
  else if (c.kind == "all_gather")
    r = g.allGather(x, c.axis, c.dim);
  else if (c.kind == "reduce_scatter")
    r = g.reduceScatter(x, c.axis, c.dim);
  else if (c.kind == "all_to_all")
    r = g.allToAll(x, c.axis, c.dim, c.concatDim);
  else
    r = cpu::partOf(x, c.dim, g.coordinate(c.axis), g.groupSize(c.axis));
  if (!r)
    return r.takeError();
  if (r->shape() != c.resultShape)
    return error(llvm::formatv("{0} over {1} gave {2}; the plan expects {3} elements", c.kind,
                               c.axis, r->typeString(), cpu::product(c.resultShape)));
  packForDevice(*r, buffer.data());
  KILN_CU(im.cu->cuMemcpyHtoDAsync(im.at(s.dst), buffer.data(),
                                   static_cast<size_t>(c.resultBytes()), im.stream));
  KILN_CU(im.cu->cuStreamSynchronize(im.stream)); // the buffer is freed on return
  return llvm::Error::success();
}

/// The NCCL group a step is posted in with its neighbours of the same key:
/// -2 for a pipeline stage's transfers, the bucket for a gradient sum of a
/// kiln.bucket under NCCL that is one NCCL call (no scratch: the scratch
/// buffer is one, and copies would run before the group's launch); none
/// for a step posted alone.
std::optional<int64_t> groupKey(const CudaExecutor::Impl &im, const PlanStep &s) {
  if (s.kind != PlanStep::Kind::Collective)
    return std::nullopt;
  const CollectiveDesc &c = s.collective;
  if (c.isTransfer())
    return -2;
  if (im.nccl && c.bucket >= 0 && (c.kind == "all_reduce" || c.kind == "reduce_scatter") &&
      ncclScratchBytes(c) == 0)
    return c.bucket;
  return std::nullopt;
}

/// An NCCL call's result as an error.
llvm::Error ncclCall(CudaExecutor::Impl &im, ncclResult_t r, const char *what) {
  if (r == ncclSuccess)
    return llvm::Error::success();
  return error(llvm::formatv("{0}: {1}", what, im.nccl->ncclGetErrorString(r)));
}

/// Sets the progress word to `step` + 1 once `stream` gets there.
llvm::Error markDone(CudaExecutor::Impl &im, CUstream stream, size_t step) {
  if (CUresult r = im.cu->cuStreamWriteValue32(stream, im.progressOnDevice,
                                               static_cast<uint32_t>(step + 1), 0);
      r != CUDA_SUCCESS)
    return cuError(r, "cuStreamWriteValue32", __FILE__, __LINE__);
  return llvm::Error::success();
}

/// Enqueues every step of `f` on the stream (eagerly or into a capture);
/// `afterStep(i)`, when given, runs after step i is enqueued.
llvm::Error enqueue(CudaExecutor::Impl &im, const Plan &p, Function &f, bool sync,
                    llvm::function_ref<llvm::Error(size_t)> afterStep = nullptr,
                    llvm::function_ref<llvm::Error(size_t)> beforeStep = nullptr) {
  const PlanFunction &pf = *f.plan;
  std::vector<CUdeviceptr> pointers;
  std::vector<long long> ints;
  std::vector<void *> params;
  bool forked = false; // a collective ran on the collectives' stream
  size_t group = 0;     // the first step of the current NCCL group
  bool grouped = false; // between its ncclGroupStart and ncclGroupEnd
  for (size_t i = 0; i < pf.steps.size(); ++i) {
    const PlanStep &s = pf.steps[i];
    auto fail = [&](llvm::Error err) {
      return error("step " + llvm::Twine(i) + " (" + s.op + "): " + llvm::toString(std::move(err)));
    };
    if (beforeStep)
      if (llvm::Error err = beforeStep(i))
        return fail(std::move(err));
    // The collectives this step's bytes wait for.
    if (im.nccl && im.comm)
      for (int64_t j : s.joins)
        if (CUresult r = im.cu->cuStreamWaitEvent(im.stream, f.done.at(static_cast<size_t>(j)), 0);
            r != CUDA_SUCCESS)
          return fail(cuError(r, "cuStreamWaitEvent", __FILE__, __LINE__));
    switch (s.kind) {
    case PlanStep::Kind::Launch: {
      pointers.assign(s.args.size(), 0);
      ints.assign(s.args.size(), 0);
      params.assign(s.args.size(), nullptr);
      for (size_t a = 0; a < s.args.size(); ++a) {
        if (s.args[a].kind == PlanArg::Kind::Pointer) {
          pointers[a] = im.at(s.args[a].value);
          params[a] = &pointers[a];
        } else {
          ints[a] = s.args[a].value;
          params[a] = &ints[a];
        }
      }
      CUresult r = im.cu->cuLaunchKernel(
          im.kernels[s.kernel], static_cast<unsigned>(s.grid[0]), static_cast<unsigned>(s.grid[1]),
          static_cast<unsigned>(s.grid[2]), static_cast<unsigned>(s.block[0]),
          static_cast<unsigned>(s.block[1]), static_cast<unsigned>(s.block[2]),
          static_cast<unsigned>(s.sharedBytes), im.stream, params.data(), nullptr);
      if (r != CUDA_SUCCESS)
        return fail(cuError(r, "cuLaunchKernel", __FILE__, __LINE__));
      break;
    }
    case PlanStep::Kind::Gemm:
      if (llvm::Error err = im.launchGemm(s.gemm, f.gemms[i], p.memory.workspaceOffset,
                                          p.memory.gemmWorkspace, f.gemms[i].algo))
        return fail(std::move(err));
      break;
    case PlanStep::Kind::Memset: {
      CUresult r = im.cu->cuMemsetD8Async(im.at(s.dst), 0, static_cast<size_t>(s.bytes), im.stream);
      if (r != CUDA_SUCCESS)
        return fail(cuError(r, "cuMemsetD8Async", __FILE__, __LINE__));
      break;
    }
    case PlanStep::Kind::Copy: {
      CUresult r = im.cu->cuMemcpyDtoDAsync(im.at(s.dst), im.at(s.src), static_cast<size_t>(s.bytes), im.stream);
      if (r != CUDA_SUCCESS)
        return fail(cuError(r, "cuMemcpyDtoDAsync", __FILE__, __LINE__));
      break;
    }
    case PlanStep::Kind::Collective: {
      // A run of consecutive transfers (a pipeline stage's sends and
      // receives) is one NCCL group: NCCL's sends wait for their receives,
      // and kiln-pipeline-unroll proved the step's runs cannot deadlock. So
      // is a bucket's run of gradient sums (kiln-bucket-collectives), which
      // NCCL launches as one operation.
      const bool transfer = s.collective.isTransfer();
      const std::optional<int64_t> key = groupKey(im, s);
      const bool opens = !key || i == 0 || groupKey(im, pf.steps[i - 1]) != key;
      const bool closes = !key || i + 1 == pf.steps.size() || groupKey(im, pf.steps[i + 1]) != key;
      if (transfer && !im.nccl)
        return fail(error("a pipeline stage's send and receive run through NCCL "
                          "(parallel.collectives = \"nccl\")"));
      // A failure inside an open group closes it first (NCCL's group state
      // is per thread; the run's failure handling aborts the communicators).
      auto failGrouped = [&](llvm::Error err) {
        if (grouped)
          (void)im.nccl->ncclGroupEnd();
        grouped = false;
        return fail(std::move(err));
      };
      if (!opens)
        for (int64_t j : s.joins)
          if (j >= static_cast<int64_t>(group))
            return failGrouped(
                error(llvm::formatv("it waits for step {0} of its own NCCL group", j)));
      CUstream on = im.nccl && im.comm ? im.comm : im.stream;
      if (opens) {
        group = i;
        if (on == im.comm) {
          // On the collectives' stream, after everything enqueued so far.
          CUresult r = im.cu->cuEventRecord(im.fork, im.stream);
          if (r == CUDA_SUCCESS)
            r = im.cu->cuStreamWaitEvent(im.comm, im.fork, 0);
          if (r != CUDA_SUCCESS)
            return fail(cuError(r, "forking the collectives' stream", __FILE__, __LINE__));
          forked = true;
        }
        if (key) {
          if (llvm::Error err = ncclCall(im, im.nccl->ncclGroupStart(), "ncclGroupStart"))
            return fail(std::move(err));
          grouped = true;
        }
      }
      if (llvm::Error err = im.nccl ? runNccl(im, s, on) : runCollective(im, s))
        return failGrouped(std::move(err));
      if (!closes)
        continue; // no sync, no hook inside a group: it is posted whole
      if (key) {
        grouped = false;
        if (llvm::Error err = ncclCall(im, im.nccl->ncclGroupEnd(), "ncclGroupEnd"))
          return fail(std::move(err));
      }
      if (im.nccl)
        if (llvm::Error err = markDone(im, on, i))
          return fail(std::move(err));
      if (on == im.comm)
        for (size_t j = group; j <= i; ++j)
          if (CUresult r = im.cu->cuEventRecord(f.done.at(j), im.comm); r != CUDA_SUCCESS)
            return fail(cuError(r, "cuEventRecord", __FILE__, __LINE__));
      break;
    }
    }
    if (sync)
      for (CUstream stream : {im.stream, forked ? im.comm : nullptr})
        if (stream)
          if (CUresult r = im.cu->cuStreamSynchronize(stream); r != CUDA_SUCCESS)
            return fail(cuError(r, "cuStreamSynchronize", __FILE__, __LINE__));
    if (afterStep)
      if (llvm::Error err = afterStep(i))
        return fail(std::move(err));
  }
  // Every collective is done when the function is (and a captured graph
  // ends on the stream it began on).
  if (forked) {
    KILN_CU(im.cu->cuEventRecord(im.joined, im.comm));
    KILN_CU(im.cu->cuStreamWaitEvent(im.stream, im.joined, 0));
  }
  return llvm::Error::success();
}

/// Copies `inputs` (by binding name, checked against the plan) into the
/// arena through pinned memory, asynchronously on the stream.
llvm::Error stageInputs(CudaExecutor::Impl &im, Function &f, llvm::StringRef function,
                        const std::map<std::string, cpu::HostTensor> &inputs) {
  const PlanFunction &pf = *f.plan;
  // Inputs: pack into pinned memory, then one async copy each.
  int64_t at = 0;
  for (const PlanBinding &b : pf.args) {
    if (b.kind != PlanBinding::Kind::Input)
      continue;
    auto in = inputs.find(b.name);
    if (in == inputs.end())
      return error("@" + function + " needs the input '" + b.name + "'");
    const cpu::HostTensor &t = in->second;
    if (t.dtype() != b.dtype || t.shape() != b.shape)
      return error(llvm::formatv("@{0}: input '{1}' is {2} but the plan expects {3}[{4}]", function,
                                 b.name, t.typeString(), cpu::dtypeName(b.dtype),
                                 llvm::join(llvm::map_range(b.shape, [](int64_t d) { return std::to_string(d); }), ", ")));
    char *staged = static_cast<char *>(f.pinnedIn) + at;
    packForDevice(t, staged);
    KILN_CU(im.cu->cuMemcpyHtoDAsync(im.at(b.offset), staged, static_cast<size_t>(b.bytes()), im.stream));
    at += b.bytes();
  }
  return llvm::Error::success();
}

/// Zeroes the error word and the numerics words, in stream order, before a
/// run reads them: what an earlier run (or time(), profile()) left there
/// is not this run's.
llvm::Error clearFlags(CudaExecutor::Impl &im, const Plan &p) {
  if (p.memory.errorFlag >= 0)
    KILN_CU(im.cu->cuMemsetD32Async(im.at(p.memory.errorFlag), 0, 1, im.stream));
  if (p.memory.numericsFlag >= 0)
    KILN_CU(im.cu->cuMemsetD32Async(im.at(p.memory.numericsFlag), 0, 2, im.stream));
  return llvm::Error::success();
}

/// Runs `f` once: eagerly the first time, then from its CUDA graph.
llvm::Error execute(CudaExecutor::Impl &im, const Plan &p, Function &f) {
  bool eager = !im.useGraphs || im.syncEachStep || f.runs == 0 || (f.collectives && !im.nccl);
  ++f.runs;
  if (eager)
    return enqueue(im, p, f, im.syncEachStep);
  if (!f.exec) {
    KILN_CU(im.cu->cuStreamBeginCapture(im.stream, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL));
    llvm::Error err = enqueue(im, p, f, false);
    CUgraph graph = nullptr;
    CUresult end = im.cu->cuStreamEndCapture(im.stream, &graph);
    if (err) {
      if (graph)
        im.cu->cuGraphDestroy(graph);
      return err;
    }
    if (end != CUDA_SUCCESS)
      return cuError(end, "cuStreamEndCapture", __FILE__, __LINE__);
    f.graph = graph;
    KILN_CU(im.cu->cuGraphInstantiateWithFlags(&f.exec, f.graph, 0));
  }
  KILN_CU(im.cu->cuGraphLaunch(f.exec, im.stream));
  return llvm::Error::success();
}

} // namespace

llvm::Expected<std::map<std::string, cpu::HostTensor>>
CudaExecutor::run(llvm::StringRef function, const std::map<std::string, cpu::HostTensor> &inputs) {
  Impl &im = *impl_;
  auto found = im.function(function);
  if (!found)
    return found.takeError();
  Function &f = *found;
  const PlanFunction &pf = *f.plan;
  if (llvm::Error err = stageInputs(im, f, function, inputs))
    return std::move(err);
  if (llvm::Error err = clearFlags(im, plan_))
    return std::move(err);
  if (im.progress)
    *im.progress = 0; // the previous run's writes are done: it was waited for
  if (llvm::Error err = execute(im, plan_, f))
    return error("running @" + function + " on the GPU: " + llvm::toString(std::move(err)));
  int64_t at = 0;
  for (const PlanBinding &b : pf.results) {
    if (!b.aliases.empty())
      continue;
    KILN_CU(im.cu->cuMemcpyDtoHAsync(static_cast<char *>(f.pinnedOut) + at, im.at(b.offset),
                                     static_cast<size_t>(b.bytes()), im.stream));
    at += b.bytes();
  }
  uint32_t *flag = reinterpret_cast<uint32_t *>(static_cast<char *>(f.pinnedOut) + f.outBytes);
  flag[0] = flag[1] = flag[2] = 0;
  if (plan_.memory.errorFlag >= 0)
    KILN_CU(im.cu->cuMemcpyDtoHAsync(flag, im.at(plan_.memory.errorFlag), 4, im.stream));
  if (plan_.memory.numericsFlag >= 0)
    KILN_CU(im.cu->cuMemcpyDtoHAsync(flag + 1, im.at(plan_.memory.numericsFlag), 8, im.stream));
  if (im.nccl && !im.comms.empty())
    if (llvm::Error err = waitWithNccl(im, pf, function))
      return error("running @" + function + " on the GPU: " + llvm::toString(std::move(err)));
  if (CUresult r = im.cu->cuStreamSynchronize(im.stream); r != CUDA_SUCCESS)
    return error("running @" + function + " on the GPU: " +
                 llvm::toString(cuError(r, "cuStreamSynchronize", __FILE__, __LINE__)) +
                 " (KILN_CUDA_SYNC=1 names the step that failed)");
  // The input error first: out-of-range targets can make the NaN the
  // numerics check would name.
  if (flag[0] != 0) {
    std::string what;
    if (flag[0] & kErrorBadId)
      what += "a token id is outside the embedding table";
    if (flag[0] & kErrorBadTarget)
      what += std::string(what.empty() ? "" : "; ") + "a target is at or past the vocabulary size";
    return error("@" + function + " on the GPU: " + what +
                 " (the inputs are out of range; the step's results are not valid)");
  }
  if (flag[1] != 0) {
    // train.check_numerics: the first op whose result was not finite.
    size_t index = flag[1] - 1;
    if (index >= pf.steps.size())
      return error(llvm::formatv("@{0} on the GPU: train.check_numerics flagged step {1} of {2}",
                                 function, index, pf.steps.size()));
    const PlanStep &s = pf.steps[index];
    std::string kernel = s.kind == PlanStep::Kind::Launch ? "kernel " + plan_.kernels[s.kernel].name
                         : s.kind == PlanStep::Kind::Gemm ? std::string("a cuBLASLt GEMM")
                                                          : std::string("a memset or copy");
    return error(llvm::formatv("@{0} on the GPU: train.check_numerics: the first non-finite value "
                               "(NaN or +inf) of the step is in result {1} of {2}, whose last "
                               "step is {3} (step {4} of {5})",
                               function, flag[2], s.op, kernel, index, pf.steps.size()));
  }
  std::map<std::string, cpu::HostTensor> outputs;
  at = 0;
  for (const PlanBinding &b : pf.results) {
    if (!b.aliases.empty())
      continue;
    outputs[b.name] = unpackFromDevice(static_cast<char *>(f.pinnedOut) + at, b.dtype, b.shape);
    at += b.bytes();
  }
  return outputs;
}

llvm::Error CudaExecutor::inspect(llvm::StringRef function,
                                  const std::map<std::string, cpu::HostTensor> &inputs,
                                  llvm::function_ref<llvm::Error(size_t, bool)> hook) {
  Impl &im = *impl_;
  auto found = im.function(function);
  if (!found)
    return found.takeError();
  Function &f = *found;
  if (llvm::Error err = stageInputs(im, f, function, inputs))
    return err;
  if (llvm::Error err = clearFlags(im, plan_))
    return err;
  KILN_CU(im.cu->cuStreamSynchronize(im.stream));
  llvm::Error err = enqueue(
      im, plan_, f, /*sync=*/true, [&](size_t i) { return hook(i, false); },
      [&](size_t i) { return hook(i, true); });
  if (err)
    return error("inspecting @" + function + " on the GPU: " + llvm::toString(std::move(err)));
  return llvm::Error::success();
}

llvm::Expected<double> CudaExecutor::time(llvm::StringRef function, int iterations) {
  Impl &im = *impl_;
  auto found = im.function(function);
  if (!found)
    return found.takeError();
  Function &f = *found;
  // Two untimed runs: eager, then the graph capture.
  while (f.runs < 2)
    if (llvm::Error err = execute(im, plan_, f))
      return std::move(err);
  auto ms = im.timeOnStream([&]() -> llvm::Error {
    for (int i = 0; i < iterations; ++i)
      if (llvm::Error err = execute(im, plan_, f))
        return err;
    return llvm::Error::success();
  });
  if (!ms)
    return ms.takeError();
  return static_cast<double>(*ms) / std::max(1, iterations);
}

llvm::Expected<std::vector<CudaExecutor::GemmTiming>>
CudaExecutor::timeGemms(llvm::StringRef function, int iterations) {
  Impl &im = *impl_;
  auto found = im.function(function);
  if (!found)
    return found.takeError();
  Function &f = *found;
  std::vector<GemmTiming> timings;
  std::map<std::string, size_t> index;
  std::vector<size_t> stepOf;
  for (size_t i = 0; i < f.plan->steps.size(); ++i) {
    const PlanStep &s = f.plan->steps[i];
    if (s.kind != PlanStep::Kind::Gemm)
      continue;
    auto [at, inserted] = index.try_emplace(gemmKey(s.gemm), timings.size());
    if (inserted) {
      timings.push_back({s.gemm, s.op, 0, 0});
      stepOf.push_back(i);
    }
    ++timings[at->second].count;
  }
  for (size_t g = 0; g < timings.size(); ++g) {
    const Gemm &gemm = f.gemms[stepOf[g]];
    const GemmDesc &d = timings[g].desc;
    auto runs = [&](int count) -> llvm::Error {
      for (int r = 0; r < count; ++r)
        if (llvm::Error err = im.launchGemm(d, gemm, plan_.memory.workspaceOffset,
                                            plan_.memory.gemmWorkspace, gemm.algo))
          return err;
      return llvm::Error::success();
    };
    if (llvm::Error err = runs(3)) // warm-up
      return std::move(err);
    auto ms = im.timeOnStream([&] { return runs(iterations); });
    if (!ms)
      return ms.takeError();
    timings[g].ms = static_cast<double>(*ms) / std::max(1, iterations);
  }
  return timings;
}

llvm::Expected<std::vector<CudaExecutor::StepTiming>>
CudaExecutor::profile(llvm::StringRef function, int iterations) {
  Impl &im = *impl_;
  auto found = im.function(function);
  if (!found)
    return found.takeError();
  Function &f = *found;
  const PlanFunction &pf = *f.plan;
  if (f.runs == 0) // the eager first run warms cuBLASLt up
    if (llvm::Error err = execute(im, plan_, f))
      return std::move(err);
  // One event before the steps and one after each: the gap between two
  // events is the GPU time of the step between them (launched eagerly, so
  // a step shorter than the host's launch cost reads as that cost).
  std::vector<CUevent> events(pf.steps.size() + 1, nullptr);
  llvm::scope_exit destroy([&] {
    for (CUevent e : events)
      if (e)
        im.cu->cuEventDestroy(e);
  });
  for (CUevent &e : events)
    KILN_CU(im.cu->cuEventCreate(&e, CU_EVENT_DEFAULT));
  std::vector<double> ms(pf.steps.size(), 0.0);
  for (int it = 0; it < std::max(1, iterations); ++it) {
    KILN_CU(im.cu->cuEventRecord(events[0], im.stream));
    if (llvm::Error err = enqueue(im, plan_, f, false, [&](size_t i) -> llvm::Error {
          KILN_CU(im.cu->cuEventRecord(events[i + 1], im.stream));
          return llvm::Error::success();
        }))
      return std::move(err);
    KILN_CU(im.cu->cuEventSynchronize(events.back()));
    for (size_t i = 0; i < pf.steps.size(); ++i) {
      float gap = 0;
      KILN_CU(im.cu->cuEventElapsedTime(&gap, events[i], events[i + 1]));
      ms[i] += gap;
    }
  }
  std::vector<StepTiming> timings;
  for (size_t i = 0; i < pf.steps.size(); ++i) {
    const PlanStep &s = pf.steps[i];
    std::string kernel;
    switch (s.kind) {
    case PlanStep::Kind::Launch:
      kernel = plan_.kernels[s.kernel].name;
      break;
    case PlanStep::Kind::Gemm:
      kernel = llvm::formatv("gemm {0}{1} {2}x{3}x{4} batch {5}", s.gemm.transA ? "T" : "N",
                             s.gemm.transB ? "T" : "N", s.gemm.m, s.gemm.n, s.gemm.k, s.gemm.batch)
                   .str();
      break;
    case PlanStep::Kind::Memset:
      kernel = "memset";
      break;
    case PlanStep::Kind::Copy:
      kernel = "copy";
      break;
    case PlanStep::Kind::Collective:
      kernel = s.collective.kind + " over " + s.collective.axis;
      break;
    }
    timings.push_back({i, s.op, kernel, ms[i] / std::max(1, iterations)});
  }
  return timings;
}

} // namespace kiln::cuda
