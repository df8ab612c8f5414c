//===- CudaExecutor.h - runs a Plan on one GPU -----------------------------===//
//
// Loading a Plan: NVRTC compiles its kernels (cached), the cubins are loaded,
// one arena of memory.total bytes is allocated (and zeroed), and each GEMM
// step gets its cuBLASLt descriptors and an algorithm — the fastest of the
// heuristic's candidates, timed on the real buffers (autotuning) unless
// disabled.
//
// Running a function: the inputs are staged in pinned host memory and copied
// asynchronously to their arena offsets, the steps run on one stream, and
// the outputs come back through pinned memory. The first run of a function
// is eager (it warms cuBLASLt up); later runs replay one CUDA graph captured
// from the second run, so a training step costs one launch on the host.
//
// Environment (for debugging): KILN_CUDA_GRAPHS=0 runs every step eagerly;
// KILN_CUDA_SYNC=1 synchronizes after each step and names the IR op of the
// first that fails.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_CUDAEXECUTOR_H
#define KILN_RUNTIME_CUDA_CUDAEXECUTOR_H

#include "runtime/Plan.h"
#include "runtime/cpu/Collectives.h"
#include "runtime/cuda/Nvrtc.h"

#include "llvm/ADT/STLFunctionalExtras.h"
#include "llvm/Support/raw_ostream.h"

#include <map>
#include <memory>

namespace kiln::cuda {

struct ExecutorOptions {
  /// Cubin cache (empty: none). Defaults to defaultCacheDir().
  std::string cacheDir = defaultCacheDir();
  std::string toolkitRoot = "/usr/local/cuda";
  bool useGraphs = true;
  /// Time up to this many cuBLASLt candidates per GEMM shape (1: take the
  /// heuristic's first). The choices are cached in cacheDir (per device,
  /// cuBLASLt version and count), so a later load of the same shapes times
  /// none. 32 rather than 8: 0.5 % off GPT-2 124M's bf16 step at B=32 on an
  /// H100 (bench/RESULTS.md, seventeenth session), 0.5 s more when cold.
  int gemmCandidates = 32;
  /// Progress lines (compiling, autotuning); null for none.
  llvm::raw_ostream *progress = nullptr;
  /// The collectives of a partitioned plan's Collective steps: this rank
  /// process's group (null: a plan with collectives does not run). Each
  /// goes through host memory, so a function with one runs eagerly, not as
  /// a CUDA graph — unless `nccl`.
  cpu::Collectives *collectives = nullptr;
  /// Run the Collective steps with NCCL on the device buffers instead, in
  /// stream order (CUDA graphs stay on). One communicator per mesh axis a
  /// collective uses, its unique id passed through `collectives`. Each rank
  /// needs a GPU of its own (NCCL refuses two ranks on one device).
  bool nccl = false;
  /// With `nccl`: how long a function may wait for its collectives before
  /// the communicators are aborted and the run fails (a rank that stopped
  /// leaves the others waiting inside NCCL otherwise).
  double ncclTimeoutSeconds = 600;
};

/// Copies a host tensor into device layout (bf16/f16 as 16-bit, i32 as 32
/// bit, i1 as one byte) at `dst`, which holds binding.bytes().
void packForDevice(const cpu::HostTensor &t, void *dst);
/// The inverse: device layout at `src` into a new host tensor.
cpu::HostTensor unpackFromDevice(const void *src, cpu::DType dtype, const std::vector<int64_t> &shape);

class CudaExecutor {
public:
  struct LoadStats {
    CompileStats nvrtc;
    /// allocSeconds: the arena (allocated and zeroed); moduleSeconds:
    /// loading the cubins; autotuneSeconds: choosing GEMM algorithms
    /// (timing candidates, or reading earlier choices from the cache).
    double loadSeconds = 0, allocSeconds = 0, moduleSeconds = 0, autotuneSeconds = 0;
    int gemmShapes = 0, gemmShapesCached = 0;
  };

  static llvm::Expected<std::unique_ptr<CudaExecutor>> create(Plan plan,
                                                              const ExecutorOptions &options);
  ~CudaExecutor();
  CudaExecutor(const CudaExecutor &) = delete;
  CudaExecutor &operator=(const CudaExecutor &) = delete;

  const Plan &plan() const { return plan_; }
  const LoadStats &stats() const { return stats_; }

  /// Synchronous copies between the host and the arena.
  llvm::Error write(int64_t offset, const void *src, int64_t bytes);
  llvm::Error read(int64_t offset, void *dst, int64_t bytes);

  /// Runs `function` with inputs by binding name; returns every result that
  /// is not written back in place (by name). Inputs must match the bindings'
  /// dtype and shape.
  llvm::Expected<std::map<std::string, cpu::HostTensor>>
  run(llvm::StringRef function, const std::map<std::string, cpu::HostTensor> &inputs);

  /// Runs `function` once eagerly on `inputs`, synchronizing after every
  /// step, and calls `hook(i, true)` before step i is enqueued and
  /// `hook(i, false)` after it finished: the arena then holds exactly what
  /// the steps so far wrote (read() it). A hook's error stops the run. For
  /// `kiln bisect --device cuda`.
  llvm::Error inspect(llvm::StringRef function, const std::map<std::string, cpu::HostTensor> &inputs,
                      llvm::function_ref<llvm::Error(size_t, bool)> hook);

  /// Replays `function` (with whatever inputs the arena holds) `iterations`
  /// times and returns the mean milliseconds per run, timed with events.
  llvm::Expected<double> time(llvm::StringRef function, int iterations);

  /// Each distinct GEMM of `function` (by shape), run alone `iterations`
  /// times: the mean milliseconds per GEMM and how often the step runs it.
  struct GemmTiming {
    GemmDesc desc;
    std::string op; ///< the first IR op that runs it
    int count = 0;
    double ms = 0;
  };
  llvm::Expected<std::vector<GemmTiming>> timeGemms(llvm::StringRef function, int iterations);

  /// Every step of `function` run eagerly with an event after each,
  /// `iterations` times: the mean milliseconds of each step, in plan order.
  /// A profile, not the step time: eager launches cost what the graph
  /// replay saves (compare with time()).
  struct StepTiming {
    size_t index = 0;
    std::string op;     ///< the IR op, as in the plan
    std::string kernel; ///< the kernel's name; "gemm <shape>", "memset" or "copy"
    double ms = 0;
  };
  llvm::Expected<std::vector<StepTiming>> profile(llvm::StringRef function, int iterations);

  struct Impl; // the CUDA handles (CudaExecutor.cpp)

private:
  explicit CudaExecutor(Plan plan);
  std::unique_ptr<Impl> impl_;
  Plan plan_;
  LoadStats stats_;
};

} // namespace kiln::cuda

#endif // KILN_RUNTIME_CUDA_CUDAEXECUTOR_H
