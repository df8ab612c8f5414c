//===- Passes.td - kiln passes ---------------------------------------------===//
//
// Grouped under banners, alphabetical inside a group. Each pass has one name
// everywhere: `FooPass`, flag `kiln-foo`, `passes/Foo.cpp`,
// `tests/lit/passes/foo.mlir`.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_PASSES_TD
#define KILN_PASSES_TD

include "mlir/Pass/PassBase.td"

//===----------------------------------------------------------------------===//
// Training-step construction
//===----------------------------------------------------------------------===//

def AutodiffPass : Pass<"kiln-autodiff", "mlir::ModuleOp"> {
  let summary = "Builds @train_step (loss and gradients) from @forward by reverse-mode AD";
  let description = [{
    Clones the forward function (one scalar float result, the loss) into a
    training step that returns the loss followed by the gradient of every
    `kiln.param` argument, in argument order. The backward is built from each
    op's `DifferentiableOpInterface::buildVJP`; cotangents of values used more
    than once are summed; integer and parameter-independent values get no
    cotangent. The forward function is kept.

    ```mlir
    func.func @train_step(%w: tensor<8x8xf32> {kiln.param = "w"}, %x: tensor<4x8xf32> {kiln.input = "x"})
        -> (tensor<f32> {kiln.output = "loss"}, tensor<8x8xf32> {kiln.grad = "w"})
    ```
  }];
  let options = [
    Option<"function", "function", "std::string", /*default=*/"\"forward\"",
           "The function to differentiate">,
    Option<"output", "output", "std::string", /*default=*/"\"train_step\"",
           "Name of the training-step function to create">,
  ];
  let dependentDialects = ["::kiln::KilnDialect"];
}

//===----------------------------------------------------------------------===//
// Analysis and reporting
//===----------------------------------------------------------------------===//

def ReportCostPass : Pass<"kiln-report-cost", "mlir::ModuleOp"> {
  let summary = "Annotates functions (and optionally ops) with FLOPs and bytes";
  let description = [{
    Sums `CostOpInterface` over every op of each function and attaches
    `kiln.flops` and `kiln.bytes` (i64) to the function; with
    `annotate-ops` each kiln op gets its own pair too. With `print`, a table
    of the totals per function goes to stdout. The IR is otherwise unchanged.

    ```mlir
    func.func @f(...) attributes {kiln.bytes = 1024 : i64, kiln.flops = 4096 : i64}
    ```
  }];
  let options = [
    Option<"annotateOps", "annotate-ops", "bool", /*default=*/"false",
           "Also attach kiln.flops/kiln.bytes to every op">,
    Option<"print", "print", "bool", /*default=*/"false",
           "Print a per-function table of FLOPs and bytes to stdout">,
  ];
}

#endif // KILN_PASSES_TD
