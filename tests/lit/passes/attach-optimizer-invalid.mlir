// Errors kiln-attach-optimizer reports.
// RUN: kiln-opt %s -split-input-file -kiln-attach-optimizer -verify-diagnostics

// expected-error @+1 {{kiln-attach-optimizer: no @train_step (run kiln-autodiff first)}}
module {
  func.func @forward(%w: tensor<4xf32> {kiln.param = "w"}) -> tensor<f32> {
    %l = kiln.reduce_sum %w, dims = [0] : tensor<4xf32> -> tensor<f32>
    return %l : tensor<f32>
  }
}

// -----

// expected-error @+1 {{kiln-attach-optimizer: @train_step must return the loss first (kiln.output = "loss")}}
func.func @train_step(%w: tensor<4xf32> {kiln.param = "w"}) -> (tensor<4xf32> {kiln.grad = "w"}) {
  return %w : tensor<4xf32>
}

// -----

// expected-error @+1 {{kiln-attach-optimizer: result #1 of @train_step is neither a metric (kiln.output, before the gradients) nor a gradient (kiln.grad)}}
func.func @train_step(%w: tensor<4xf32> {kiln.param = "w"}) -> (tensor<f32> {kiln.output = "loss"}, tensor<4xf32>) {
  %l = kiln.reduce_sum %w, dims = [0] : tensor<4xf32> -> tensor<f32>
  return %l, %w : tensor<f32>, tensor<4xf32>
}
