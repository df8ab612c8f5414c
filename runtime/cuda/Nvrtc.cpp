//===- Nvrtc.cpp - CUDA C++ to cubin at run time, cached on disk -----------===//

#include "runtime/cuda/Nvrtc.h"

#include "support/Files.h"
#include "runtime/cuda/CudaApi.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SHA256.h"

#include <atomic>
#include <cstdlib>
#include <chrono>
#include <mutex>
#include <thread>

namespace kiln::cuda {

namespace {

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

std::vector<std::string> flags(const CompileOptions &o) {
  return {"--gpu-architecture=" + o.arch, "--include-path=" + o.toolkitRoot + "/include",
          "-std=c++17", "-default-device", "-lineinfo"};
}

std::string cacheKey(const KernelSource &k, const CompileOptions &o, const std::string &version) {
  llvm::SHA256 sha;
  auto add = [&](llvm::StringRef s) {
    sha.update(s);
    sha.update(llvm::StringRef("\0", 1));
  };
  add(version);
  for (const std::string &f : flags(o))
    add(f);
  for (const auto &[name, text] : o.headers) {
    add(name);
    add(text);
  }
  add(k.source);
  auto digest = sha.final();
  return llvm::toHex(llvm::ArrayRef<uint8_t>(digest.data(), digest.size()), /*LowerCase=*/true);
}

/// Compiles one program; on error writes the source where the message says.
/// NVRTC's log goes to `log` (after a successful compile, ptxas's notes such
/// as C7515 "wgmma.mma_async instructions are serialized").
llvm::Expected<std::string> compileOne(const Nvrtc &api, const KernelSource &k,
                                       const CompileOptions &o, std::string &log) {
  std::vector<const char *> headerTexts, headerNames;
  for (const auto &[name, text] : o.headers) {
    headerNames.push_back(name.c_str());
    headerTexts.push_back(text.c_str());
  }
  nvrtcProgram program;
  KILN_NVRTC(api.nvrtcCreateProgram(&program, k.source.c_str(), (k.name + ".cu").c_str(),
                                    static_cast<int>(headerTexts.size()), headerTexts.data(),
                                    headerNames.data()));
  std::vector<std::string> f = flags(o);
  std::vector<const char *> args;
  for (const std::string &s : f)
    args.push_back(s.c_str());
  nvrtcResult result = api.nvrtcCompileProgram(program, static_cast<int>(args.size()), args.data());
  size_t logSize = 0;
  api.nvrtcGetProgramLogSize(program, &logSize);
  log.assign(logSize, '\0');
  if (logSize > 0)
    api.nvrtcGetProgramLog(program, log.data());
  log = llvm::StringRef(log).rtrim(llvm::StringRef("\0\n ", 3)).str();
  if (result != NVRTC_SUCCESS) {
    api.nvrtcDestroyProgram(&program);
    llvm::SmallString<256> path(o.cacheDir.empty() ? std::string("/tmp/kiln") : o.cacheDir);
    llvm::sys::path::append(path, "failed", k.name + ".cu");
    std::string where = std::string(path);
    if (llvm::Error err = writeFileAtomically(where, k.source)) {
      llvm::consumeError(std::move(err));
      where = "(could not be written)";
    }
    // What the kernel implements: the comment lines that open its source
    // (codegen names the IR op there, and a plugin's kernel its plugin).
    std::string what;
    for (llvm::StringRef rest = k.source; rest.starts_with("//");) {
      auto [line, next] = rest.split('\n');
      what += "\n  " + line.drop_front(2).trim().str();
      rest = next;
    }
    return error(
        llvm::formatv("NVRTC could not compile kernel {0} for {1}: {2}{3}\nsource: {4}\n{5}",
                      k.name, o.arch, api.nvrtcGetErrorString(result), what, where, log));
  }
  size_t size = 0;
  KILN_NVRTC(api.nvrtcGetCUBINSize(program, &size));
  std::string cubin(size, '\0');
  KILN_NVRTC(api.nvrtcGetCUBIN(program, cubin.data()));
  KILN_NVRTC(api.nvrtcDestroyProgram(&program));
  return cubin;
}

} // namespace

std::string defaultCacheDir() {
  llvm::SmallString<256> path;
  if (const char *xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) {
    path = xdg;
  } else if (const char *home = std::getenv("HOME"); home && *home) {
    path = home;
    llvm::sys::path::append(path, ".cache");
  } else {
    llvm::sys::path::system_temp_directory(/*ErasedOnReboot=*/false, path);
  }
  llvm::sys::path::append(path, "kiln");
  return std::string(path);
}

llvm::Expected<std::string> nvrtcVersion(const std::string &toolkitRoot) {
  auto api = nvrtc({toolkitRoot});
  if (!api)
    return api.takeError();
  int major = 0, minor = 0;
  KILN_NVRTC(api->nvrtcVersion(&major, &minor));
  return std::to_string(major) + "." + std::to_string(minor);
}

llvm::Expected<std::vector<std::string>> compileKernels(llvm::ArrayRef<KernelSource> sources,
                                                        const CompileOptions &options,
                                                        CompileStats *stats) {
  auto start = std::chrono::steady_clock::now();
  auto api = nvrtc({options.toolkitRoot});
  if (!api)
    return api.takeError();
  auto version = nvrtcVersion(options.toolkitRoot);
  if (!version)
    return version.takeError();

  std::vector<std::string> cubins(sources.size());
  std::vector<std::string> errors(sources.size()), logs(sources.size());
  std::atomic<size_t> next{0};
  std::atomic<int> compiled{0}, cached{0};
  auto worker = [&] {
    for (size_t i = next++; i < sources.size(); i = next++) {
      std::string file;
      if (!options.cacheDir.empty()) {
        llvm::SmallString<256> path(options.cacheDir);
        llvm::sys::path::append(path, cacheKey(sources[i], options, *version) + ".cubin");
        file = std::string(path);
        if (auto hit = llvm::MemoryBuffer::getFile(file, false, false)) {
          cubins[i] = (*hit)->getBuffer().str();
          ++cached;
          continue;
        }
      }
      auto cubin = compileOne(*api, sources[i], options, logs[i]);
      if (!cubin) {
        errors[i] = llvm::toString(cubin.takeError());
        continue;
      }
      cubins[i] = std::move(*cubin);
      ++compiled;
      if (!file.empty())
        if (llvm::Error err = writeFileAtomically(file, cubins[i]))
          llvm::consumeError(std::move(err)); // a cache that cannot be written is only slower
    }
  };
  int threads = options.threads > 0 ? options.threads
                                    : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  threads = std::min<int>(threads, static_cast<int>(std::max<size_t>(1, sources.size())));
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t)
    pool.emplace_back(worker);
  worker();
  for (std::thread &t : pool)
    t.join();
  for (const std::string &e : errors)
    if (!e.empty())
      return error(e);
  if (stats) {
    stats->compiled = compiled;
    stats->cached = cached;
    stats->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    stats->notes.clear();
    for (size_t i = 0; i < sources.size(); ++i) {
      llvm::SmallVector<llvm::StringRef> lines;
      llvm::StringRef(logs[i]).split(lines, '\n', -1, /*KeepEmpty=*/false);
      for (llvm::StringRef line : lines)
        if (line.contains("ptxas")) // the front end's warnings on generated code stay out
          stats->notes.push_back(sources[i].name + ": " + line.trim().str());
    }
  }
  return cubins;
}

} // namespace kiln::cuda
