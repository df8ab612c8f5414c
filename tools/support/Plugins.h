//===- Plugins.h - loading kiln plugins (--plugin=LIB.so) ------------------===//
//
// A plugin (passes/Plugin.h) is loaded once and for good: its kernels and passes
// stay registered for the process. Every failure names the plugin's path and
// the reason.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_TOOLS_SUPPORT_PLUGINS_H
#define KILN_TOOLS_SUPPORT_PLUGINS_H

#include "passes/Plugin.h"

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"

namespace kiln::tooling {

/// Checks that `info` (what the plugin at `path` returned) was built for
/// this kiln: the same plugin API and kiln version.
llvm::Error checkPluginInfo(const PluginInfo &info, llvm::StringRef path);

/// Loads the plugin at `path` and runs its registration. Returns its name.
llvm::Expected<std::string> loadPlugin(llvm::StringRef path);

} // namespace kiln::tooling

#endif // KILN_TOOLS_SUPPORT_PLUGINS_H
