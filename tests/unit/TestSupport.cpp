//===- TestSupport.cpp - helpers shared by the unit tests ------------------===//

#include "tests/unit/TestSupport.h"

#include "ir/KilnDialect.h"

#include "mlir/IR/Diagnostics.h"
#include "mlir/Parser/Parser.h"
#include "gtest/gtest.h"

#include <algorithm>
#include <cmath>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

using namespace mlir;

namespace kiln::test {

double worstRelative(const cpu::HostTensor &a, const cpu::HostTensor &b) {
  double worst = 0, scale = 1e-30;
  for (int64_t i = 0; i < a.numel(); ++i)
    scale = std::max(scale, std::fabs(a.get(i)));
  for (int64_t i = 0; i < a.numel(); ++i)
    worst = std::max(worst, std::fabs(a.get(i) - b.get(i)) / scale);
  return worst;
}

cpu::HostTensor scalarTensor(double v) {
  cpu::HostTensor t(cpu::DType::F32, {});
  t.set(0, v);
  return t;
}

cpu::HostTensor randomTokens(Rng &rng, int64_t b, int64_t t, int64_t vocab) {
  cpu::HostTensor x(cpu::DType::I32, {b, t});
  for (int64_t i = 0; i < x.numel(); ++i)
    x.set(i, static_cast<double>(rng.below(static_cast<uint64_t>(vocab))));
  return x;
}

std::unique_ptr<MLIRContext> makeContext() {
  auto ctx = std::make_unique<MLIRContext>();
  ctx->loadDialect<KilnDialect, func::FuncDialect>();
  return ctx;
}

std::string parseErrors(MLIRContext &ctx, const std::string &source) {
  std::string errors;
  ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &diag) {
    errors += diag.str() + "\n";
    return success();
  });
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(source, &ctx);
  return errors;
}

OwningOpRef<ModuleOp> parse(MLIRContext &ctx, const std::string &source) {
  std::string errors;
  ScopedDiagnosticHandler handler(&ctx, [&](Diagnostic &diag) {
    errors += diag.str() + "\n";
    return success();
  });
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(source, &ctx);
  EXPECT_TRUE(module) << "failed to parse:\n" << source << "\n" << errors;
  return module;
}

int freePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr = {};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof addr;
  ::bind(fd, reinterpret_cast<sockaddr *>(&addr), sizeof addr);
  ::getsockname(fd, reinterpret_cast<sockaddr *>(&addr), &length);
  ::close(fd);
  return ntohs(addr.sin_port);
}

} // namespace kiln::test
