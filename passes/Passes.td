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
