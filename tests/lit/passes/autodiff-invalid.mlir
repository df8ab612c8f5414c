// Errors kiln-autodiff reports.
// RUN: kiln-opt %s -split-input-file -kiln-autodiff -verify-diagnostics

// expected-error @+1 {{kiln-autodiff: @forward must return a scalar float loss (tensor<f32>) first; it returns ('tensor<4xf32>')}}
func.func @forward(%w: tensor<4xf32> {kiln.param = "w"}) -> tensor<4xf32> {
  return %w : tensor<4xf32>
}

// -----

// A result after the loss must be a named scalar (a metric).
// expected-error @+1 {{kiln-autodiff: result #1 of @forward is not a metric: results after the loss must be scalars named with kiln.output (it is 'tensor<4xf32>')}}
func.func @forward(%w: tensor<4xf32> {kiln.param = "w"}) -> (tensor<f32>, tensor<4xf32> {kiln.output = "w"}) {
  %l = kiln.reduce_sum %w, dims = [0] : tensor<4xf32> -> tensor<f32>
  return %l, %w : tensor<f32>, tensor<4xf32>
}

// -----

// expected-error @+1 {{kiln-autodiff: result #1 of @forward is not a metric: results after the loss must be scalars named with kiln.output (it is 'tensor<f32>')}}
func.func @forward(%w: tensor<4xf32> {kiln.param = "w"}) -> (tensor<f32>, tensor<f32>) {
  %l = kiln.reduce_sum %w, dims = [0] : tensor<4xf32> -> tensor<f32>
  return %l, %l : tensor<f32>, tensor<f32>
}

// -----

// expected-error @+1 {{kiln-autodiff: no function @forward to differentiate (set function=NAME)}}
module {
  func.func @loss(%w: tensor<4xf32> {kiln.param = "w"}) -> tensor<f32> {
    %l = kiln.reduce_sum %w, dims = [0] : tensor<4xf32> -> tensor<f32>
    return %l : tensor<f32>
  }
}

// -----

func.func @forward(%w: tensor<4xf32> {kiln.param = "w"}) -> tensor<f32> {
  // expected-error @+1 {{'kiln.softmax_grad' op has no VJP rule (DifferentiableOpInterface), but the loss depends on it through a parameter}}
  %g = kiln.softmax_grad %w, %w : tensor<4xf32>
  %l = kiln.reduce_sum %g, dims = [0] : tensor<4xf32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

func.func @forward(%x: tensor<2x4xf32> {kiln.param = "x"}, %w: tensor<4xf32> {kiln.param = "w"}) -> tensor<f32> {
  // expected-error @+1 {{'kiln.layer_norm' op result #2 (a saved statistic) is used in the loss; differentiating through it is not supported}}
  %y, %m, %r = kiln.layer_norm %x, %w, %w {epsilon = 1.0e-05 : f32} : tensor<2x4xf32>, tensor<4xf32>, tensor<4xf32> -> tensor<2x4xf32>, tensor<2xf32>, tensor<2xf32>
  %l = kiln.reduce_sum %r, dims = [0] : tensor<2xf32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

func.func @forward(%w: tensor<4xf32> {kiln.param = "w"}) -> tensor<f32> {
  %l = kiln.reduce_sum %w, dims = [0] : tensor<4xf32> -> tensor<f32>
  return %l : tensor<f32>
}
// expected-error @+1 {{kiln-autodiff: @train_step already exists}}
func.func @train_step() {
  return
}

// -----

// A body-less @forward used to crash the pass.
// expected-error @+1 {{kiln-autodiff: @forward has no body (a declaration); kiln passes need a defined function}}
func.func private @forward(%w: tensor<4xf32> {kiln.param = "w"}) -> tensor<f32>
