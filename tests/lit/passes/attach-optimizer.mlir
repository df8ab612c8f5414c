// kiln-attach-optimizer: AdamW, clipping and accumulation as IR.
// RUN: kiln-opt %s -split-input-file -kiln-attach-optimizer | FileCheck %s
// RUN: kiln-opt %s -split-input-file -kiln-attach-optimizer=max-grad-norm=0 | FileCheck %s --check-prefix=NOCLIP
// RUN: kiln-opt %s -split-input-file -kiln-attach-optimizer=accumulate-steps=4 | FileCheck %s --check-prefix=ACC

// The moments go after the parameters, lr and step at the end; every new
// value aliases the argument it replaces. Weight decay only for weights.
// CHECK-LABEL: func.func @train_step
// CHECK-SAME: %[[W:.+]]: tensor<8x4xf32> {kiln.param = "w", kiln.role = "weight"}
// CHECK-SAME: %[[B:.+]]: tensor<4xf32> {kiln.param = "b", kiln.role = "bias"}
// CHECK-SAME: %[[WM:.+]]: tensor<8x4xf32> {kiln.init = "zeros", kiln.state = "w.adam_m"}
// CHECK-SAME: %[[BM:.+]]: tensor<4xf32> {kiln.init = "zeros", kiln.state = "b.adam_m"}
// CHECK-SAME: %[[WV:.+]]: tensor<8x4xf32> {kiln.init = "zeros", kiln.state = "w.adam_v"}
// CHECK-SAME: %[[BV:.+]]: tensor<4xf32> {kiln.init = "zeros", kiln.state = "b.adam_v"}
// CHECK-SAME: %{{.+}}: tensor<2x8xf32> {kiln.input = "x"}
// CHECK-SAME: %[[LR:.+]]: tensor<f32> {kiln.input = "lr"}, %[[STEP:.+]]: tensor<f32> {kiln.input = "step"}
// CHECK-SAME: -> (tensor<f32> {kiln.output = "loss"}, tensor<f32> {kiln.output = "grad_norm"},
// CHECK-SAME: tensor<8x4xf32> {kiln.aliases = 0 : i64}, tensor<4xf32> {kiln.aliases = 1 : i64},
// CHECK-SAME: tensor<8x4xf32> {kiln.aliases = 2 : i64}, tensor<4xf32> {kiln.aliases = 3 : i64},
// CHECK-SAME: tensor<8x4xf32> {kiln.aliases = 4 : i64}, tensor<4xf32> {kiln.aliases = 5 : i64})
// CHECK: %[[NORM:.+]] = kiln.global_norm %[[GW:.+]], %[[GB:.+]] : tensor<8x4xf32>, tensor<4xf32> -> tensor<f32>
// CHECK: %[[CAP:.+]] = kiln.max %[[NORM]], %{{.+}} : tensor<f32>
// CHECK: %[[CLIP:.+]] = kiln.div %{{.+}}, %[[CAP]] : tensor<f32>
// CHECK: %[[SCALE:.+]] = kiln.mul %{{.+}}, %[[CLIP]] : tensor<f32>
// CHECK: kiln.adamw_update %[[W]], %[[GW]], %[[WM]], %[[WV]], %[[LR]], %[[STEP]], %[[SCALE]] {{{.*}}weight_decay = 1.000000e-01 : f32}
// CHECK: kiln.adamw_update %[[B]], %[[GB]], %[[BM]], %[[BV]], %[[LR]], %[[STEP]], %[[SCALE]] {{{.*}}weight_decay = 0.000000e+00 : f32}
// NOCLIP-LABEL: func.func @train_step
// NOCLIP-NOT: kiln.div
// NOCLIP: kiln.adamw_update
// The accumulating form: @accumulate_step sums gradients into states and
// @apply_step updates from them (÷ K) and zeroes them. They are transient
// (zero between steps: never checkpointed).
// ACC-LABEL: func.func @accumulate_step
// ACC-SAME: {kiln.init = "zeros", kiln.state = "w.grad_acc", kiln.transient}
// ACC-SAME: -> (tensor<f32> {kiln.output = "loss"}, tensor<8x4xf32> {kiln.aliases = 2 : i64}, tensor<4xf32> {kiln.aliases = 3 : i64})
// ACC: kiln.add %arg2
// ACC-LABEL: func.func @apply_step
// ACC-SAME: kiln.state = "w.grad_acc", kiln.transient}
// ACC-SAME: {kiln.output = "grad_norm"}
// ACC: kiln.constant dense<2.500000e-01> : tensor<f32>
// ACC: kiln.adamw_update
// ACC: %[[ZERO:.+]] = kiln.constant dense<0.000000e+00> : tensor<8x4xf32>
// ACC: return {{.*}}%[[ZERO]]
func.func @train_step(%w: tensor<8x4xf32> {kiln.param = "w", kiln.role = "weight"},
                      %b: tensor<4xf32> {kiln.param = "b", kiln.role = "bias"},
                      %x: tensor<2x8xf32> {kiln.input = "x"})
    -> (tensor<f32> {kiln.output = "loss"}, tensor<8x4xf32> {kiln.grad = "w"}, tensor<4xf32> {kiln.grad = "b"}) {
  %y = kiln.matmul %x, %w : tensor<2x8xf32>, tensor<8x4xf32> -> tensor<2x4xf32>
  %l = kiln.reduce_sum %y, dims = [0, 1] : tensor<2x4xf32> -> tensor<f32>
  %g = kiln.matmul %x, %y transpose_a : tensor<2x8xf32>, tensor<2x4xf32> -> tensor<8x4xf32>
  %gb = kiln.reduce_sum %y, dims = [0] : tensor<2x4xf32> -> tensor<4xf32>
  return %l, %g, %gb : tensor<f32>, tensor<8x4xf32>, tensor<4xf32>
}
