// Errors kiln-assign-precision reports.
// RUN: kiln-opt %s -split-input-file -kiln-assign-precision=policy=bf16-mixed -verify-diagnostics

// A declaration used to crash the pass.
// expected-error @+1 {{kiln-assign-precision: @forward has no body (a declaration); kiln passes need a defined function}}
func.func private @forward(%w: tensor<4xf32> {kiln.param = "w"}) -> tensor<f32>
