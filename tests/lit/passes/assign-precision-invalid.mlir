// Errors kiln-assign-precision reports.
// RUN: kiln-opt %s -split-input-file -allow-unregistered-dialect -kiln-assign-precision=policy=bf16-mixed -verify-diagnostics

// A declaration used to crash the pass.
// expected-error @+1 {{kiln-assign-precision: @forward has no body (a declaration); kiln passes need a defined function}}
func.func private @forward(%w: tensor<4xf32> {kiln.param = "w"}) -> tensor<f32>

// -----

// An op kiln does not know gets an error, not a guessed precision.
func.func @forward(%x: tensor<4xf32> {kiln.input = "x"}) -> tensor<4xf32> {
  // expected-error @+1 {{'foo.op' op has no precision rule (kiln-assign-precision knows kiln's ops)}}
  %y = "foo.op"(%x) : (tensor<4xf32>) -> tensor<4xf32>
  return %y : tensor<4xf32>
}
