//===- Nvrtc.h - CUDA C++ to cubin at run time, cached on disk -------------===//
//
// Each kernel is its own NVRTC program, compiled for the device's sm_XX with
// the toolkit's include folder (for cuda_bf16.h) and kiln's kernel templates
// as in-memory headers. Independent kernels compile in parallel threads.
// Cubins are cached in `cacheDir` under a SHA-256 of the source, the headers,
// the options, the architecture and the NVRTC version, so a second run loads
// them from disk.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_CUDA_NVRTC_H
#define KILN_RUNTIME_CUDA_NVRTC_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <string>
#include <utility>
#include <vector>

namespace kiln::cuda {

struct KernelSource {
  std::string name;   ///< entry point, extern "C"
  std::string source; ///< CUDA C++
};

struct CompileOptions {
  std::string arch = "sm_90";
  /// The CUDA toolkit root; <root>/include is on the include path.
  std::string toolkitRoot = "/usr/local/cuda";
  /// Where cubins are cached (empty: no cache). A failing kernel's source is
  /// written to <cacheDir>/failed/<name>.cu (or the system temp dir).
  std::string cacheDir;
  /// In-memory headers (name, contents) the sources include.
  std::vector<std::pair<std::string, std::string>> headers;
  int threads = 0; ///< 0: one per hardware thread
  /// Ask ptxas for each kernel's resources (`--ptxas-options=-v`) and fill
  /// CompileStats::kernels; every kernel is compiled (the cache is not
  /// used: a cached cubin has no log).
  bool resources = false;
};

/// What ptxas reports for one kernel, and its size in the cubin.
struct KernelResources {
  std::string name;
  int registers = -1;                  ///< -1: not reported
  int stackFrame = 0;                  ///< bytes a thread, local memory
  int spillStores = 0, spillLoads = 0; ///< bytes a thread
  int instructions = -1;               ///< SASS instructions (the .text section's 16-byte words)
};

struct CompileStats {
  int compiled = 0, cached = 0;
  double seconds = 0;
  /// ptxas's notes on kernels that compiled, "<kernel>: <line>" (its
  /// performance notes, e.g. C7515 when it serializes wgmma); a cubin from
  /// the cache has none.
  std::vector<std::string> notes;
  /// With CompileOptions::resources, one entry per source, in order.
  std::vector<KernelResources> kernels;
};

/// Parses ptxas's `-v` lines for `kernel` out of an NVRTC log (registers,
/// stack frame, spills); the fields it finds none for keep their defaults.
KernelResources parsePtxasInfo(const std::string &kernel, llvm::StringRef log);

/// The number of SASS instructions of `kernel` in `cubin`: the size of its
/// `.text.<kernel>` ELF section over 16 (every instruction since sm_70 is
/// 16 bytes); -1 when the cubin has no such section or is not ELF64.
int cubinInstructions(llvm::StringRef cubin, const std::string &kernel);

/// Compiles every source (in parallel) and returns one cubin per source, in
/// order. A compile error returns the NVRTC log and the path of the source.
llvm::Expected<std::vector<std::string>> compileKernels(llvm::ArrayRef<KernelSource> sources,
                                                        const CompileOptions &options,
                                                        CompileStats *stats = nullptr);

/// Where cubins are cached: $XDG_CACHE_HOME/kiln, else ~/.cache/kiln (else
/// the system temp dir when there is no home).
std::string defaultCacheDir();

/// "13.0"
llvm::Expected<std::string> nvrtcVersion(const std::string &toolkitRoot);

} // namespace kiln::cuda

#endif // KILN_RUNTIME_CUDA_NVRTC_H
