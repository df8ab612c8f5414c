// Metrics: results after the loss (scalars named with kiln.output) pass
// through autodiff and the optimizer unchanged, after the loss; only the
// loss is differentiated.
// RUN: kiln-opt %s -kiln-autodiff | FileCheck %s --check-prefix=AD
// RUN: kiln-opt %s -kiln-autodiff -kiln-attach-optimizer | FileCheck %s --check-prefix=OPT
// RUN: kiln-opt %s -kiln-autodiff -kiln-attach-optimizer=accumulate-steps=2 | FileCheck %s --check-prefix=ACC

// AD-LABEL: func.func @train_step
// AD-SAME: -> (tensor<f32> {kiln.output = "loss"}, tensor<f32> {kiln.output = "accuracy"}, tensor<4xf32> {kiln.grad = "w"})
// AD: %[[MEAN:.+]] = kiln.reduce_mean %{{.+}}, dims = [0] : tensor<4xf32> -> tensor<f32>
// The accuracy does not reach the gradient: d(sum w·x)/dw = x.
// AD: %[[DW:.+]] = kiln.mul %{{.+}}, %arg1
// AD: return %{{.+}}, %[[MEAN]], %[[DW]]

// OPT-LABEL: func.func @train_step
// OPT-SAME: -> (tensor<f32> {kiln.output = "loss"}, tensor<f32> {kiln.output = "accuracy"}, tensor<f32> {kiln.output = "grad_norm"}, tensor<4xf32> {kiln.aliases = 0 : i64}

// ACC-LABEL: func.func @accumulate_step
// ACC-SAME: -> (tensor<f32> {kiln.output = "loss"}, tensor<f32> {kiln.output = "accuracy"}, tensor<4xf32> {kiln.aliases = 1 : i64})
// ACC-LABEL: func.func @apply_step
// ACC-SAME: -> (tensor<f32> {kiln.output = "grad_norm"},
func.func @forward(%w: tensor<4xf32> {kiln.param = "w"}, %x: tensor<4xf32> {kiln.input = "x"})
    -> (tensor<f32>, tensor<f32> {kiln.output = "accuracy"}) {
  %y = kiln.mul %w, %x : tensor<4xf32>
  %l = kiln.reduce_sum %y, dims = [0] : tensor<4xf32> -> tensor<f32>
  %zero = kiln.constant dense<0.0> : tensor<4xf32>
  %pos = kiln.compare gt, %y, %zero : tensor<4xf32>
  %f = kiln.cast %pos : tensor<4xi1> to tensor<4xf32>
  %acc = kiln.reduce_mean %f, dims = [0] : tensor<4xf32> -> tensor<f32>
  return %l, %acc : tensor<f32>, tensor<f32>
}
