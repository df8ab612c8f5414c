// kiln.custom_kernel and its registry: each part of kiln that meets the op
// (verifier, interpreter, autodiff, precision, sharding rule, codegen, NVRTC,
// plugin checks) uses the registration and reports a broken one by name.
// The example plugin (examples/plugins/add-rms-norm) is tested end to end in
// tests/lit/tools/custom-kernel-plugin.test.

#include "tests/unit/TestSupport.h"

#include "codegen/PlanBuilder.h"
#include "ir/CustomKernel.h"
#include "ir/KilnBuilders.h"
#include "ir/KilnOps.h"
#include "passes/Passes.h"
#include "runtime/cpu/Interpreter.h"
#include "runtime/cuda/Nvrtc.h"
#include "tools/support/Plugins.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"
#include "llvm/ADT/SmallString.h"
#include "llvm/Support/FileSystem.h"
#include "gtest/gtest.h"

using namespace mlir;

namespace kiln {
namespace {

using test::makeContext;
using test::parse;
using test::parseErrors;

RankedTensorType typeOf(Value v) { return cast<RankedTensorType>(v.getType()); }

std::string tempDir(const char *prefix) {
  llvm::SmallString<128> dir;
  EXPECT_FALSE(llvm::sys::fs::createUniqueDirectory(prefix, dir));
  return std::string(dir);
}

/// test.scale: y = k·x, k from params (default 2). Registered once for the
/// whole test binary; `broken_cuda` makes its CUDA source not compile.
void registerScale() {
  static bool done = [] {
    CustomKernel k;
    k.name = "test.scale";
    k.origin = "CustomKernelTest";
    k.cpu = [](CustomKernelOp op, llvm::ArrayRef<CpuTensorRef> in,
               llvm::ArrayRef<CpuTensorRef> out) -> llvm::Error {
      for (int64_t i = 0; i < in[0].numel(); ++i)
        out[0].data[i] = op.getParam("k", 2.0) * in[0].data[i];
      return llvm::Error::success();
    };
    k.cuda = [](CustomKernelOp op) -> llvm::Expected<CudaLaunch> {
      CudaLaunch l;
      std::string t = cudaTypeOf(typeOf(op.getOperand(0)).getElementType());
      l.source = "extern \"C\" __global__ void @NAME@(const " + t + " *x, " + t + " *y) {\n" +
                 (op.getParam("broken_cuda", 0.0) != 0 ? "  y[0] = no_such_name;\n"
                                                       : "  y[threadIdx.x] = 2 * x[threadIdx.x];\n") +
                 "}\n";
      l.block = {static_cast<int64_t>(typeOf(op.getOperand(0)).getNumElements()), 1, 1};
      return l;
    };
    k.vjp = [](CustomKernelOp op, OpBuilder &b, ValueRange cot,
               llvm::SmallVectorImpl<Value> &out) {
      out.push_back(cot[0] ? build::scale(b, op.getLoc(), cot[0], op.getParam("k", 2.0)) : Value());
      return success();
    };
    k.precision = [](CustomKernelOp, Type low) { return PrecisionChoice{{low}, {low}}; };
    k.sharding = [](CustomKernelOp op) -> FailureOr<ShardingRule> {
      ShardingRule r;
      r.factorSizes = {typeOf(op.getOperand(0)).getDimSize(0)};
      r.operandFactors = {{0}};
      r.resultFactors = {{0}};
      return r;
    };
    k.flops = [](CustomKernelOp op) { return numElements(op.getOperand(0).getType()); };
    llvm::Error err = registerCustomKernel(std::move(k));
    EXPECT_FALSE(static_cast<bool>(err)) << llvm::toString(std::move(err));
    return true;
  }();
  (void)done;
}

const char *kScaleModule = R"mlir(
func.func @forward(%x: tensor<4xf32> {kiln.input = "x"}) -> tensor<4xf32> {
  %y = kiln.custom_kernel "test.scale" (%x) {params = {k = 3.0 : f64}} : (tensor<4xf32>) -> tensor<4xf32>
  return %y : tensor<4xf32>
}
)mlir";

TEST(CustomKernel, AnUnregisteredNameSaysToLoadThePlugin) {
  auto ctx = makeContext();
  std::string errors = parseErrors(*ctx, R"mlir(
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %y = kiln.custom_kernel "nobody.registered" (%x) : (tensor<4xf32>) -> tensor<4xf32>
  return %y : tensor<4xf32>
}
)mlir");
  EXPECT_NE(errors.find("'nobody.registered' is not registered: load the plugin"), std::string::npos)
      << errors;
}

TEST(CustomKernel, ASecondRegistrationOfANameNamesBothOrigins) {
  registerScale();
  CustomKernel again;
  again.name = "test.scale";
  again.origin = "/plugins/other.so";
  llvm::Error err = registerCustomKernel(std::move(again));
  ASSERT_TRUE(static_cast<bool>(err));
  std::string message = llvm::toString(std::move(err));
  EXPECT_NE(message.find("/plugins/other.so"), std::string::npos) << message;
  EXPECT_NE(message.find("CustomKernelTest"), std::string::npos) << message;
}

TEST(CustomKernel, TheInterpreterRunsTheReferenceAndRoundsToTheResultType) {
  registerScale();
  auto ctx = makeContext();
  auto module = parse(*ctx, R"mlir(
func.func @f(%x: tensor<2xf32>) -> tensor<2xbf16> {
  %y = kiln.custom_kernel "test.scale" (%x) {params = {k = 1.0 : f64}} : (tensor<2xf32>) -> tensor<2xbf16>
  return %y : tensor<2xbf16>
}
)mlir");
  ASSERT_TRUE(module);
  auto interp = cpu::Interpreter::create(module->lookupSymbol<func::FuncOp>("f"));
  ASSERT_TRUE(static_cast<bool>(interp));
  cpu::HostTensor x(cpu::DType::F32, {2});
  x.set(0, 1.0 + 1.0 / 256); // between two bf16 values: rounds to even (1.0)
  x.set(1, -2.5);
  auto out = (*interp)->run({x});
  ASSERT_TRUE(static_cast<bool>(out)) << llvm::toString(out.takeError());
  EXPECT_EQ((*out)[0].dtype(), cpu::DType::BF16);
  EXPECT_EQ((*out)[0].get(0), 1.0);
  EXPECT_EQ((*out)[0].get(1), -2.5);
}

TEST(CustomKernel, AutodiffUsesTheRegisteredVJP) {
  registerScale();
  auto ctx = makeContext();
  auto module = parse(*ctx, R"mlir(
func.func @forward(%x: tensor<4xf64> {kiln.param = "x"}) -> tensor<f64> {
  %y = kiln.custom_kernel "test.scale" (%x) {params = {k = 3.0 : f64}} : (tensor<4xf64>) -> tensor<4xf64>
  %l = kiln.reduce_sum %y, dims = [0] : tensor<4xf64> -> tensor<f64>
  return %l : tensor<f64>
}
)mlir");
  ASSERT_TRUE(module);
  PassManager pm(ctx.get());
  pm.addPass(createAutodiffPass());
  ASSERT_FALSE(static_cast<bool>(runPasses(pm, *module, "autodiff")));
  auto step = module->lookupSymbol<func::FuncOp>("train_step");
  ASSERT_TRUE(step);
  auto interp = cpu::Interpreter::create(step);
  ASSERT_TRUE(static_cast<bool>(interp));
  cpu::HostTensor x(cpu::DType::F64, {4});
  auto out = (*interp)->run({x});
  ASSERT_TRUE(static_cast<bool>(out)) << llvm::toString(out.takeError());
  ASSERT_EQ(out->size(), 2u);
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_EQ((*out)[1].get(i), 3.0); // d(sum 3x)/dx
}

TEST(CustomKernel, AVJPWithTheWrongArityIsNamed) {
  static bool done = [] {
    CustomKernel k;
    k.name = "test.bad_vjp";
    k.vjp = [](CustomKernelOp, OpBuilder &, ValueRange, llvm::SmallVectorImpl<Value> &) {
      return success(); // no cotangent for its operand
    };
    llvm::consumeError(registerCustomKernel(std::move(k)));
    return true;
  }();
  (void)done;
  auto ctx = makeContext();
  auto module = parse(*ctx, R"mlir(
func.func @forward(%x: tensor<4xf64> {kiln.param = "x"}) -> tensor<f64> {
  %y = kiln.custom_kernel "test.bad_vjp" (%x) : (tensor<4xf64>) -> tensor<4xf64>
  %l = kiln.reduce_sum %y, dims = [0] : tensor<4xf64> -> tensor<f64>
  return %l : tensor<f64>
}
)mlir");
  ASSERT_TRUE(module);
  PassManager pm(ctx.get());
  pm.addPass(createAutodiffPass());
  llvm::Error err = runPasses(pm, *module, "autodiff");
  ASSERT_TRUE(static_cast<bool>(err));
  std::string message = llvm::toString(std::move(err));
  EXPECT_NE(message.find("'test.bad_vjp': its VJP returned 0 cotangents for 1 operands"),
            std::string::npos)
      << message;
}

TEST(CustomKernel, PrecisionAssignmentFollowsTheRegisteredRule) {
  registerScale();
  auto ctx = makeContext();
  auto module = parse(*ctx, kScaleModule);
  ASSERT_TRUE(module);
  PassManager pm(ctx.get());
  AssignPrecisionPassOptions options;
  options.policy = "bf16-mixed";
  pm.addPass(createAssignPrecisionPass(options));
  ASSERT_FALSE(static_cast<bool>(runPasses(pm, *module, "precision")));
  CustomKernelOp op;
  module->walk([&](CustomKernelOp c) { op = c; });
  ASSERT_TRUE(op);
  EXPECT_TRUE(typeOf(op.getOperand(0)).getElementType().isBF16());
  EXPECT_TRUE(typeOf(op.getResult(0)).getElementType().isBF16());
  EXPECT_TRUE(op.getOperand(0).getDefiningOp<CastOp>()); // cast to the low type
}

TEST(CustomKernel, CostAndShardingComeFromTheRegistration) {
  registerScale();
  auto ctx = makeContext();
  auto module = parse(*ctx, kScaleModule);
  ASSERT_TRUE(module);
  CustomKernelOp op;
  module->walk([&](CustomKernelOp c) { op = c; });
  EXPECT_EQ(cast<CostOpInterface>(op.getOperation()).getFlops(), 4);
  auto rule = cast<ShardingRuleOpInterface>(op.getOperation()).getShardingRule();
  ASSERT_TRUE(succeeded(rule));
  EXPECT_EQ(rule->factorSizes, (llvm::SmallVector<int64_t>{4}));
}

TEST(CustomKernel, AShardingRuleThatDoesNotFitTheOpIsRefused) {
  static bool done = [] {
    CustomKernel k;
    k.name = "test.bad_rule";
    k.origin = "CustomKernelTest";
    k.sharding = [](CustomKernelOp) -> FailureOr<ShardingRule> {
      ShardingRule r;
      r.factorSizes = {4};
      r.operandFactors = {{0, 0}}; // two factors for a rank-1 operand
      r.resultFactors = {{0}};
      return r;
    };
    llvm::consumeError(registerCustomKernel(std::move(k)));
    return true;
  }();
  (void)done;
  auto ctx = makeContext();
  auto module = parse(*ctx, R"mlir(
func.func @f(%x: tensor<4xf32>) -> tensor<4xf32> {
  %y = kiln.custom_kernel "test.bad_rule" (%x) : (tensor<4xf32>) -> tensor<4xf32>
  return %y : tensor<4xf32>
}
)mlir");
  ASSERT_TRUE(module);
  CustomKernelOp op;
  module->walk([&](CustomKernelOp c) { op = c; });
  std::string diagnostics;
  ScopedDiagnosticHandler handler(ctx.get(), [&](Diagnostic &d) {
    diagnostics += d.str();
    return success();
  });
  EXPECT_TRUE(failed(cast<ShardingRuleOpInterface>(op.getOperation()).getShardingRule()));
  EXPECT_NE(diagnostics.find("'test.bad_rule' (from CustomKernelTest): its sharding rule does not fit"),
            std::string::npos)
      << diagnostics;
}

TEST(CustomKernel, CodegenLaunchesTheRegisteredKernelOnOperandsThenResults) {
  registerScale();
  auto ctx = makeContext();
  auto module = parse(*ctx, kScaleModule);
  ASSERT_TRUE(module);
  auto plan = codegen::compileToPlan(*module, {});
  ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
  const PlanFunction *f = plan->function("forward");
  ASSERT_TRUE(f);
  const PlanStep *launch = nullptr;
  for (const PlanStep &s : f->steps)
    if (s.kind == PlanStep::Kind::Launch)
      launch = &s;
  ASSERT_TRUE(launch);
  const PlanKernel &k = plan->kernels[launch->kernel];
  EXPECT_EQ(k.name.rfind("custom_test_scale_", 0), 0u) << k.name;
  EXPECT_NE(k.source.find("// custom kernel test.scale from CustomKernelTest"), std::string::npos);
  EXPECT_NE(k.source.find("__global__ void " + k.name + "(const float *x, float *y)"),
            std::string::npos)
      << k.source;
  EXPECT_EQ(launch->block[0], 4);
  ASSERT_EQ(launch->args.size(), 2u);
  EXPECT_EQ(launch->args[0].value, f->args[0].offset);    // x
  EXPECT_EQ(launch->args[1].value, f->results[0].offset); // y
  EXPECT_TRUE(llvm::is_contained(plan->notes, "custom kernel test.scale from CustomKernelTest"));
}

// A kernel that does not compile is reported with the plugin it came from.
TEST(CustomKernel, AKernelThatDoesNotCompileNamesItsOrigin) {
  registerScale();
  auto ctx = makeContext();
  auto module = parse(*ctx, R"mlir(
func.func @forward(%x: tensor<4xf32> {kiln.input = "x"}) -> tensor<4xf32> {
  %y = kiln.custom_kernel "test.scale" (%x) {params = {broken_cuda = 1.0 : f64}} : (tensor<4xf32>) -> tensor<4xf32>
  return %y : tensor<4xf32>
}
)mlir");
  ASSERT_TRUE(module);
  auto plan = codegen::compileToPlan(*module, {});
  ASSERT_TRUE(static_cast<bool>(plan)) << llvm::toString(plan.takeError());
  std::vector<cuda::KernelSource> sources;
  for (const PlanKernel &k : plan->kernels)
    sources.push_back({k.name, k.source});
  cuda::CompileOptions options;
  options.cacheDir = tempDir("kiln-custom-nvrtc");
  options.headers = codegen::kernelHeaders();
  auto cubins = cuda::compileKernels(sources, options);
  ASSERT_FALSE(static_cast<bool>(cubins));
  std::string message = llvm::toString(cubins.takeError());
  EXPECT_NE(message.find("custom kernel test.scale from CustomKernelTest"), std::string::npos)
      << message;
  EXPECT_NE(message.find("no_such_name"), std::string::npos) << message;
  llvm::sys::fs::remove_directories(options.cacheDir);
}

TEST(CustomKernel, APluginForAnotherKilnIsRefused) {
  PluginInfo info{KILN_PLUGIN_API_VERSION, "0.0.1", "old", [](PluginRegistrar &) {}};
  llvm::Error err = tooling::checkPluginInfo(info, "/p/libold.so");
  ASSERT_TRUE(static_cast<bool>(err));
  std::string message = llvm::toString(std::move(err));
  EXPECT_NE(message.find("plugin /p/libold.so: was built against kiln 0.0.1 (plugin API 1); this "
                         "is kiln " KILN_VERSION_STRING),
            std::string::npos)
      << message;
  info = {KILN_PLUGIN_API_VERSION + 1, KILN_VERSION_STRING, "new", [](PluginRegistrar &) {}};
  llvm::Error api = tooling::checkPluginInfo(info, "/p/libnew.so");
  EXPECT_TRUE(static_cast<bool>(api));
  llvm::consumeError(std::move(api));
  info.apiVersion = KILN_PLUGIN_API_VERSION;
  llvm::Error fine = tooling::checkPluginInfo(info, "/p/libnew.so");
  EXPECT_FALSE(static_cast<bool>(fine)) << llvm::toString(std::move(fine));

  auto missing = tooling::loadPlugin("/no/such/plugin.so");
  ASSERT_FALSE(static_cast<bool>(missing));
  EXPECT_EQ(llvm::toString(missing.takeError()), "plugin /no/such/plugin.so: no such file");
}

} // namespace
} // namespace kiln
