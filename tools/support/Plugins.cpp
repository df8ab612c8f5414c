//===- Plugins.cpp - loading kiln plugins ----------------------------------===//

#include "tools/support/Plugins.h"

#include "llvm/ADT/SmallString.h"
#include "llvm/Support/DynamicLibrary.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"

#include <cstring>
#include <map>

namespace kiln::tooling {

namespace {
llvm::Error error(llvm::StringRef path, const llvm::Twine &why) {
  return llvm::createStringError(llvm::inconvertibleErrorCode(), "plugin " + path + ": " + why);
}
} // namespace

llvm::Error checkPluginInfo(const PluginInfo &info, llvm::StringRef path) {
  const char *version = info.kilnVersion ? info.kilnVersion : "(none)";
  if (info.apiVersion != KILN_PLUGIN_API_VERSION || std::strcmp(version, KILN_VERSION_STRING) != 0)
    return error(path, llvm::formatv("was built against kiln {0} (plugin API {1}); this is kiln "
                                     "{2} (plugin API {3}): rebuild it against this kiln's SDK",
                                     version, info.apiVersion, KILN_VERSION_STRING,
                                     KILN_PLUGIN_API_VERSION));
  if (!info.registerPlugin)
    return error(path, "has no registration function");
  return llvm::Error::success();
}

llvm::Expected<std::string> loadPlugin(llvm::StringRef path) {
  if (!llvm::sys::fs::exists(path))
    return error(path, "no such file");
  // A plugin given twice (under any name) is loaded once.
  static std::map<std::string, std::string> loaded; // real path -> name
  llvm::SmallString<256> real;
  if (std::error_code ec = llvm::sys::fs::real_path(path, real))
    return error(path, "cannot be read: " + ec.message());
  if (auto it = loaded.find(std::string(real)); it != loaded.end())
    return it->second;
  std::string why;
  auto library = llvm::sys::DynamicLibrary::getPermanentLibrary(path.str().c_str(), &why);
  if (!library.isValid())
    return error(path, "cannot be loaded: " + why);
  void *entry = library.getAddressOfSymbol("kilnGetPluginInfo");
  if (!entry) {
    if (library.getAddressOfSymbol("mlirGetPassPluginInfo"))
      return error(path, "is an MLIR pass plugin without kiln's entry point (load it with "
                         "kiln-opt --load-pass-plugin, or build it with KILN_PLUGIN from "
                         "kiln/passes/Plugin.h)");
    return error(path, "is not a kiln plugin (it defines no kilnGetPluginInfo; build it with "
                       "KILN_PLUGIN from kiln/passes/Plugin.h)");
  }
  PluginInfo info = reinterpret_cast<PluginInfo (*)()>(entry)();
  if (llvm::Error err = checkPluginInfo(info, path))
    return std::move(err);
  std::string name = info.name ? info.name : "(unnamed)";
  PluginRegistrar registrar(path.str());
  info.registerPlugin(registrar);
  if (llvm::Error err = registrar.takeError())
    return error(path, llvm::toString(std::move(err)));
  loaded[std::string(real)] = name;
  return name;
}

} // namespace kiln::tooling
