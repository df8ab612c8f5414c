// Errors kiln-plan-buffers reports.
// RUN: kiln-opt %s -split-input-file -kiln-plan-buffers -verify-diagnostics

// expected-error @+1 {{kiln-plan-buffers: argument #1 has no kiln.param, kiln.state or kiln.input name}}
func.func @anonymous(%w: tensor<4xf32> {kiln.param = "w"}, %x: tensor<4xf32>) -> (tensor<4xf32> {kiln.output = "y"}) {
  %y = kiln.add %w, %x : tensor<4xf32>
  return %y : tensor<4xf32>
}

// -----

// expected-error @+1 {{'kiln.offset' on argument #0 must be a non-negative byte offset, got -4 : i64}}
func.func @bad_offset(%w: tensor<4xf32> {kiln.param = "w", kiln.offset = -4 : i64}) {
  return
}

// -----

// A declaration has no body to plan.
// expected-error @+1 {{kiln-plan-buffers: @decl has no body (a declaration); kiln passes need a defined function}}
func.func private @decl(%w: tensor<4xf32> {kiln.param = "w"})

// -----

// An argument past the size limit (its byte count overflows int64).
// expected-error @+1 {{kiln-plan-buffers: argument #0 of @huge is larger than kiln's limit of 2^48 bytes per tensor}}
func.func @huge(%w: tensor<4294967296x4294967296xf32> {kiln.param = "w"}) {
  return
}
