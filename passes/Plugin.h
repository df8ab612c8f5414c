//===- Plugin.h - what a kiln plugin library defines -----------------------===//
//
// A plugin is a shared library with one registration function, which adds
// custom kernels (ir/CustomKernel.h) and the rewrite passes that make them:
//
//   void registerMyPlugin(kiln::PluginRegistrar &r) {
//     r.addKernel(myKernel());
//     r.addPass<MyRewritePass>();
//   }
//   KILN_PLUGIN("my-plugin", registerMyPlugin)
//
// KILN_PLUGIN defines the two entry points the tools look for:
// `kilnGetPluginInfo` (kiln train/compile/... --plugin=LIB.so) and MLIR's
// `mlirGetPassPluginInfo` (kiln-opt --load-pass-plugin=LIB.so); both
// refuse a plugin built against another kiln version. A pass
// added here runs in kiln-training-pipeline after kiln-fuse-attention and
// before kiln-assign-precision, and is also registered under its argument
// for kiln-opt's --pass-pipeline. docs/plugins.md walks through a plugin.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_PASSES_PLUGIN_H
#define KILN_PASSES_PLUGIN_H

#include "ir/CustomKernel.h"
#include "ir/KilnVersion.h"
#include "passes/Passes.h"

#include "mlir/Pass/PassRegistry.h"
#include "mlir/Tools/Plugins/PassPlugin.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/Support/raw_ostream.h"

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>

namespace kiln {

/// What a plugin's registration function is handed. Errors (a kernel name
/// registered twice) are collected; the tool reports them with the plugin.
class PluginRegistrar {
public:
  explicit PluginRegistrar(std::string origin) : origin_(std::move(origin)) {}

  /// Registers `kernel`, its origin set to the plugin.
  void addKernel(CustomKernel kernel) {
    kernel.origin = origin_;
    if (llvm::Error err = registerCustomKernel(std::move(kernel)))
      error_ = llvm::joinErrors(std::move(error_), std::move(err));
  }

  /// Registers pass `P` (default-constructible; on `builtin.module`,
  /// `func.func` or any op) for kiln-opt and the training pipeline. A pass
  /// on another op, or an argument registered before (another plugin's),
  /// is an error.
  template <typename P> void addPass() {
    P probe;
    std::string argument = probe.getArgument().str();
    std::optional<llvm::StringRef> anchor = probe.getOpName();
    if (anchor && *anchor != "builtin.module" && *anchor != "func.func") {
      error_ = llvm::joinErrors(
          std::move(error_),
          llvm::createStringError("pass '" + argument + "' runs on '" + anchor->str() +
                                  "'; the training pipeline runs plugin passes on "
                                  "builtin.module or func.func"));
      return;
    }
    if (mlir::PassInfo::lookup(argument)) {
      error_ = llvm::joinErrors(std::move(error_),
                                llvm::createStringError("pass '" + argument +
                                                        "' is already registered"));
      return;
    }
    mlir::PassRegistration<P>();
    registerPluginPass([] { return std::make_unique<P>(); });
  }

  /// What went wrong while registering (success when nothing did).
  llvm::Error takeError() { return std::move(error_); }
  const std::string &origin() const { return origin_; }

private:
  std::string origin_;
  llvm::Error error_ = llvm::Error::success();
};

/// What kilnGetPluginInfo returns.
struct PluginInfo {
  uint32_t apiVersion;     ///< KILN_PLUGIN_API_VERSION it was built with
  const char *kilnVersion; ///< KILN_VERSION_STRING it was built against
  const char *name;
  void (*registerPlugin)(PluginRegistrar &registrar);
};

} // namespace kiln

/// Defines a plugin's entry points; `NAME` is a string literal, `REGISTER`
/// a `void(kiln::PluginRegistrar &)` function.
#define KILN_PLUGIN(NAME, REGISTER)                                                                \
  extern "C" LLVM_ATTRIBUTE_WEAK ::kiln::PluginInfo kilnGetPluginInfo() {                          \
    return {KILN_PLUGIN_API_VERSION, KILN_VERSION_STRING, NAME, REGISTER};                         \
  }                                                                                                \
  extern "C" LLVM_ATTRIBUTE_WEAK ::mlir::PassPluginLibraryInfo mlirGetPassPluginInfo() {           \
    return {MLIR_PLUGIN_API_VERSION, NAME, LLVM_VERSION_STRING, [] {                               \
              if (::kiln::toolPluginApiVersion() != KILN_PLUGIN_API_VERSION ||                     \
                  ::llvm::StringRef(::kiln::toolKilnVersion()) != KILN_VERSION_STRING) {           \
                ::llvm::errs() << "error: plugin " << NAME << " was built against kiln "           \
                               << KILN_VERSION_STRING << "; this is kiln "                        \
                               << ::kiln::toolKilnVersion() << ": rebuild it against its SDK\n";  \
                std::exit(1);                                                                      \
              }                                                                                    \
              ::kiln::PluginRegistrar registrar(std::string("plugin ") + NAME);                     \
              REGISTER(registrar);                                                                 \
              if (::llvm::Error err = registrar.takeError()) {                                     \
                ::llvm::errs() << "error: plugin " << NAME << ": "                                 \
                               << ::llvm::toString(std::move(err)) << "\n";                        \
                std::exit(1);                                                                      \
              }                                                                                    \
            }};                                                                                    \
  }

#endif // KILN_PASSES_PLUGIN_H
