// Round trip of the backward ops built by the VJP rules, and of the result
// attributes of a training step.
// RUN: kiln-opt %s | kiln-opt | FileCheck %s
// RUN: kiln-opt %s --mlir-print-op-generic | kiln-opt | FileCheck %s

// CHECK-LABEL: func.func @backward
// CHECK-SAME: -> (tensor<f32> {kiln.output = "loss"}, tensor<16xf32> {kiln.grad = "w"})
func.func @backward(%x: tensor<2x8x16xf32>, %w: tensor<16xf32> {kiln.param = "w", kiln.init = "normal(0.02)"},
                    %stat: tensor<2x8xf32>, %ids: tensor<2x8xi32>, %logits: tensor<2x8x64xf32>,
                    %q: tensor<2x4x8x16xf32>, %kv: tensor<2x2x8x16xf32>, %lse: tensor<2x4x8xf32>)
    -> (tensor<f32> {kiln.output = "loss"}, tensor<16xf32> {kiln.grad = "w"}) {
  // CHECK: kiln.gelu_grad tanh %{{.+}}, %{{.+}} : tensor<2x8x16xf32>
  %0 = kiln.gelu_grad tanh %x, %x : tensor<2x8x16xf32>
  // CHECK: kiln.softmax_grad %{{.+}}, %{{.+}} : tensor<2x8x16xf32>
  %1 = kiln.softmax_grad %x, %x : tensor<2x8x16xf32>
  // CHECK: kiln.layer_norm_grad %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} : tensor<2x8x16xf32>, tensor<16xf32>, tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x8x16xf32> -> tensor<2x8x16xf32>, tensor<16xf32>, tensor<16xf32>
  %dx, %dw, %db = kiln.layer_norm_grad %x, %w, %stat, %stat, %x : tensor<2x8x16xf32>, tensor<16xf32>, tensor<2x8xf32>, tensor<2x8xf32>, tensor<2x8x16xf32> -> tensor<2x8x16xf32>, tensor<16xf32>, tensor<16xf32>
  // CHECK: kiln.rms_norm_grad %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} : tensor<2x8x16xf32>, tensor<16xf32>, tensor<2x8xf32>, tensor<2x8x16xf32> -> tensor<2x8x16xf32>, tensor<16xf32>
  %rx, %rw = kiln.rms_norm_grad %x, %w, %stat, %x : tensor<2x8x16xf32>, tensor<16xf32>, tensor<2x8xf32>, tensor<2x8x16xf32> -> tensor<2x8x16xf32>, tensor<16xf32>
  // CHECK: kiln.cross_entropy_grad %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}} {valid_classes = 60 : i64} : tensor<2x8x64xf32>, tensor<2x8xi32>, tensor<2x8xf32>, tensor<2x8xf32> -> tensor<2x8x64xf32>
  %2 = kiln.cross_entropy_grad %logits, %ids, %stat, %stat {valid_classes = 60 : i64} : tensor<2x8x64xf32>, tensor<2x8xi32>, tensor<2x8xf32>, tensor<2x8xf32> -> tensor<2x8x64xf32>
  // CHECK: kiln.embedding_grad %{{.+}}, %{{.+}} : tensor<2x8xi32>, tensor<2x8x16xf32> -> tensor<100x16xf32>
  %3 = kiln.embedding_grad %ids, %x : tensor<2x8xi32>, tensor<2x8x16xf32> -> tensor<100x16xf32>
  // CHECK: kiln.attention_grad {{.*}} {causal, scale = 2.500000e-01 : f32} : tensor<2x4x8x16xf32>, tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32>, tensor<2x4x8x16xf32>, tensor<2x4x8xf32>, tensor<2x4x8x16xf32> -> tensor<2x4x8x16xf32>, tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32>
  %dq, %dk, %dv = kiln.attention_grad %q, %kv, %kv, %q, %lse, %q {causal, scale = 0.25 : f32} : tensor<2x4x8x16xf32>, tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32>, tensor<2x4x8x16xf32>, tensor<2x4x8xf32>, tensor<2x4x8x16xf32> -> tensor<2x4x8x16xf32>, tensor<2x2x8x16xf32>, tensor<2x2x8x16xf32>
  // CHECK: kiln.pad %{{.+}} low = [0, 1, 2] high = [1, 0, 0] interior = [0, 0, 1] : tensor<2x8x16xf32> -> tensor<3x9x33xf32>
  %4 = kiln.pad %x low = [0, 1, 2] high = [1, 0, 0] interior = [0, 0, 1] : tensor<2x8x16xf32> -> tensor<3x9x33xf32>
  %l = kiln.reduce_sum %stat, dims = [0, 1] : tensor<2x8xf32> -> tensor<f32>
  return %l, %dw : tensor<f32>, tensor<16xf32>
}

// CHECK-LABEL: func.func @optimizer
// CHECK-SAME: {kiln.init = "zeros", kiln.state = "w.adam_m"}
// CHECK-SAME: -> (tensor<f32> {kiln.output = "grad_norm"}, tensor<16xf32> {kiln.aliases = 0 : i64})
func.func @optimizer(%w: tensor<16xf32> {kiln.param = "w", kiln.role = "norm"},
                     %m: tensor<16xf32> {kiln.state = "w.adam_m", kiln.init = "zeros"},
                     %lr: tensor<f32> {kiln.input = "lr"})
    -> (tensor<f32> {kiln.output = "grad_norm"}, tensor<16xf32> {kiln.aliases = 0 : i64}) {
  // CHECK: kiln.global_norm %{{.+}}, %{{.+}} : tensor<16xf32>, tensor<16xf32> -> tensor<f32>
  %n = kiln.global_norm %w, %m : tensor<16xf32>, tensor<16xf32> -> tensor<f32>
  // CHECK: kiln.adamw_update {{.*}} {beta1 = 0.899999976 : f32, beta2 = 0.949999988 : f32, epsilon = 9.99999993E-9 : f32, weight_decay = 1.000000e-01 : f32} : (tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<16xf32>, tensor<16xf32>, tensor<16xf32>)
  %p, %m2, %v2 = kiln.adamw_update %w, %w, %m, %m, %lr, %lr, %lr {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.1 : f32} : (tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<16xf32>, tensor<16xf32>, tensor<16xf32>)
  return %n, %p : tensor<f32>, tensor<16xf32>
}

// AdamW writing a parameter's working copy (kiln-fuse's adamw-copies): a
// fourth result, returned in place of the kiln.copy_of state.
// CHECK-LABEL: func.func @adamw_copy
// CHECK-SAME: {kiln.copy_of = "w", kiln.state = "w.bf16"}
// CHECK: kiln.adamw_update {{.*}} -> (tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xbf16>)
func.func @adamw_copy(%w: tensor<16xf32> {kiln.param = "w"}, %m: tensor<16xf32> {kiln.state = "w.adam_m"},
                      %c: tensor<16xbf16> {kiln.state = "w.bf16", kiln.copy_of = "w"},
                      %lr: tensor<f32> {kiln.input = "lr"})
    -> (tensor<16xf32> {kiln.aliases = 0 : i64}, tensor<16xbf16> {kiln.aliases = 2 : i64}) {
  %p, %m2, %v2, %c2 = kiln.adamw_update %w, %w, %m, %m, %lr, %lr, %lr {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.1 : f32} : (tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xbf16>)
  return %p, %c2 : tensor<16xf32>, tensor<16xbf16>
}

// The sequence-major and packed attention forms and their backward ops.
// CHECK-LABEL: func.func @attention_layouts
func.func @attention_layouts(%q: tensor<2x8x4x16xbf16>, %kv: tensor<2x8x2x16xbf16>, %qkv: tensor<2x8x4x3x16xbf16>, %x: tensor<2x8x4x16xf32>) -> (tensor<2x8x4x16xbf16>, tensor<2x8x4x3x16xbf16>, tensor<2x8x4x16xf32>) {
  // CHECK: kiln.attention %{{.+}}, %{{.+}}, %{{.+}} {causal, layout = "bthd", scale = 2.500000e-01 : f32} : tensor<2x8x4x16xbf16>, tensor<2x8x2x16xbf16>, tensor<2x8x2x16xbf16> -> tensor<2x8x4x16xbf16>, tensor<2x4x8xf32>
  %o, %lse = kiln.attention %q, %kv, %kv {causal, layout = "bthd", scale = 0.25 : f32} : tensor<2x8x4x16xbf16>, tensor<2x8x2x16xbf16>, tensor<2x8x2x16xbf16> -> tensor<2x8x4x16xbf16>, tensor<2x4x8xf32>
  // CHECK: kiln.attention_grad {{.*}} {causal, layout = "bthd", scale = 2.500000e-01 : f32}
  %dq, %dk, %dv = kiln.attention_grad %q, %kv, %kv, %o, %lse, %o {causal, layout = "bthd", scale = 0.25 : f32} : tensor<2x8x4x16xbf16>, tensor<2x8x2x16xbf16>, tensor<2x8x2x16xbf16>, tensor<2x8x4x16xbf16>, tensor<2x4x8xf32>, tensor<2x8x4x16xbf16> -> tensor<2x8x4x16xbf16>, tensor<2x8x2x16xbf16>, tensor<2x8x2x16xbf16>
  // CHECK: kiln.attention_qkv %{{.+}} {causal, scale = 2.500000e-01 : f32} : tensor<2x8x4x3x16xbf16> -> tensor<2x8x4x16xbf16>, tensor<2x4x8xf32>
  %o2, %lse2 = kiln.attention_qkv %qkv {causal, scale = 0.25 : f32} : tensor<2x8x4x3x16xbf16> -> tensor<2x8x4x16xbf16>, tensor<2x4x8xf32>
  // CHECK: kiln.attention_qkv_grad {{.*}} : tensor<2x8x4x3x16xbf16>, tensor<2x8x4x16xbf16>, tensor<2x4x8xf32>, tensor<2x8x4x16xbf16> -> tensor<2x8x4x3x16xbf16>
  %dqkv = kiln.attention_qkv_grad %qkv, %o2, %lse2, %o2 {causal, scale = 0.25 : f32} : tensor<2x8x4x3x16xbf16>, tensor<2x8x4x16xbf16>, tensor<2x4x8xf32>, tensor<2x8x4x16xbf16> -> tensor<2x8x4x3x16xbf16>
  // CHECK: kiln.rope %{{.+}} {position_dim = 1 : i64} : tensor<2x8x4x16xf32>
  %r = kiln.rope %x {position_dim = 1 : i64} : tensor<2x8x4x16xf32>
  return %dq, %dqkv, %r : tensor<2x8x4x16xbf16>, tensor<2x8x4x3x16xbf16>, tensor<2x8x4x16xf32>
}
