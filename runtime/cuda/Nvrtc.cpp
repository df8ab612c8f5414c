//===- Nvrtc.cpp - CUDA C++ to cubin at run time, cached on disk -----------===//

#include "runtime/cuda/Nvrtc.h"

#include "support/Files.h"
#include "runtime/cuda/CudaApi.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/BinaryFormat/ELF.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SHA256.h"

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>

namespace kiln::cuda {

namespace {

llvm::Error error(const llvm::Twine &message) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), message);
}

std::vector<std::string> flags(const CompileOptions &o) {
  std::vector<std::string> f = {"--gpu-architecture=" + o.arch,
                                "--include-path=" + o.toolkitRoot + "/include", "-std=c++17",
                                "-default-device", "-lineinfo"};
  if (o.resources)
    f.push_back("--ptxas-options=-v");
  return f;
}

/// One of the lines ptxas's -v adds for every kernel (see parsePtxasInfo).
bool isResourceLine(llvm::StringRef line) {
  return line.contains("bytes gmem") || line.contains("Compiling entry function") ||
         line.contains("Compile time =") || line.contains("Function properties for") ||
         line.contains("bytes stack frame") ||
         (line.contains("Used ") && line.contains(" registers"));
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
      if (!options.cacheDir.empty() && !options.resources) { // resources need each log
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
    stats->kernels.clear();
    for (size_t i = 0; i < sources.size(); ++i) {
      llvm::SmallVector<llvm::StringRef> lines;
      llvm::StringRef(logs[i]).split(lines, '\n', -1, /*KeepEmpty=*/false);
      // The front end's warnings on generated code stay out, and so do -v's
      // resource lines (in `kernels`); ptxas's own notes ("ptxas info :
      // (C7515) …") stay in.
      for (llvm::StringRef line : lines)
        if (line.contains("ptxas") && !isResourceLine(line))
          stats->notes.push_back(sources[i].name + ": " + line.trim().str());
      if (options.resources) {
        KernelResources r = parsePtxasInfo(sources[i].name, logs[i]);
        r.instructions = cubinInstructions(cubins[i], sources[i].name);
        stats->kernels.push_back(std::move(r));
      }
    }
  }
  return cubins;
}

KernelResources parsePtxasInfo(const std::string &kernel, llvm::StringRef log) {
  // ptxas -v, per entry function:
  //   ptxas info    : Function properties for NAME
  //       16 bytes stack frame, 16 bytes spill stores, 20 bytes spill loads
  //   ptxas info    : Used 168 registers, used 1 barriers, ...
  // (the "Used" line follows "Compiling entry function 'NAME'").
  KernelResources r;
  r.name = kernel;
  llvm::SmallVector<llvm::StringRef> lines;
  log.split(lines, '\n', -1, /*KeepEmpty=*/false);
  auto bytesBefore = [](llvm::StringRef line, llvm::StringRef what) {
    size_t at = line.find(what);
    if (at == llvm::StringRef::npos)
      return 0;
    llvm::StringRef head = line.take_front(at).rtrim();
    if (!head.consume_back("bytes"))
      return 0;
    head = head.rtrim();
    int value = 0;
    llvm::StringRef digits = head.drop_front(head.find_last_of(" ,") + 1);
    return digits.getAsInteger(10, value) ? 0 : value;
  };
  bool ours = false;
  for (size_t i = 0; i < lines.size(); ++i) {
    llvm::StringRef line = lines[i].trim();
    if (line.contains("Compiling entry function"))
      ours = line.contains("'" + kernel + "'");
    if (line.ends_with("Function properties for " + kernel) && i + 1 < lines.size()) {
      llvm::StringRef next = lines[i + 1];
      r.stackFrame = bytesBefore(next, "stack frame");
      r.spillStores = bytesBefore(next, "spill stores");
      r.spillLoads = bytesBefore(next, "spill loads");
    }
    size_t used = line.find("Used ");
    if (ours && used != llvm::StringRef::npos) {
      llvm::StringRef rest = line.drop_front(used + 5);
      int registers = 0;
      if (!rest.take_until([](char c) { return c == ' '; }).getAsInteger(10, registers) &&
          rest.contains("registers"))
        r.registers = registers;
      ours = false;
    }
  }
  return r;
}

int cubinInstructions(llvm::StringRef cubin, const std::string &kernel) {
  using namespace llvm::ELF;
  if (cubin.size() < sizeof(Elf64_Ehdr) ||
      !cubin.starts_with("\x7f"
                         "ELF") ||
      cubin[EI_CLASS] != ELFCLASS64 || cubin[EI_DATA] != ELFDATA2LSB)
    return -1;
  Elf64_Ehdr header;
  std::memcpy(&header, cubin.data(), sizeof header);
  auto section = [&](unsigned i, Elf64_Shdr &out) {
    uint64_t at = header.e_shoff + uint64_t(i) * header.e_shentsize;
    if (header.e_shentsize < sizeof(Elf64_Shdr) || at + sizeof(Elf64_Shdr) > cubin.size())
      return false;
    std::memcpy(&out, cubin.data() + at, sizeof out);
    return true;
  };
  Elf64_Shdr names;
  if (header.e_shstrndx >= header.e_shnum || !section(header.e_shstrndx, names) ||
      names.sh_offset > cubin.size() || names.sh_size > cubin.size() - names.sh_offset)
    return -1;
  llvm::StringRef strings = cubin.substr(names.sh_offset, names.sh_size);
  for (unsigned i = 0; i < header.e_shnum; ++i) {
    Elf64_Shdr s;
    if (!section(i, s) || s.sh_name >= strings.size())
      return -1;
    llvm::StringRef name = strings.drop_front(s.sh_name);
    name = name.take_until([](char c) { return c == '\0'; });
    if (name == ".text." + kernel)
      return s.sh_size <= cubin.size() ? static_cast<int>(s.sh_size / 16) : -1;
  }
  return -1;
}

} // namespace kiln::cuda
