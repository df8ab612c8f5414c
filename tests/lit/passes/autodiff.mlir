// kiln-autodiff builds @train_step from @forward. The backward structure of
// small functions; numerics are checked in tests/unit/passes/GradCheckTest.
// RUN: kiln-opt %s -split-input-file -kiln-autodiff | FileCheck %s

// The forward function is kept as it was.
// CHECK-LABEL: func.func @forward
// CHECK-NEXT: kiln.mul
// CHECK-NEXT: kiln.reduce_sum
// CHECK-NEXT: return
// Gradients of a product: d(x·w)/dw = x, seeded with 1 broadcast back.
// CHECK-LABEL: func.func @train_step
// CHECK-SAME: (%[[W:.+]]: tensor<4xf32> {kiln.param = "w"}, %[[X:.+]]: tensor<4xf32> {kiln.input = "x"})
// CHECK-SAME: -> (tensor<f32> {kiln.output = "loss"}, tensor<4xf32> {kiln.grad = "w"})
// CHECK: %[[LOSS:.+]] = kiln.reduce_sum
// CHECK: %[[ONE:.+]] = kiln.constant dense<1.000000e+00> : tensor<f32>
// CHECK: %[[G:.+]] = kiln.broadcast_in_dim %[[ONE]], dims = [] : tensor<f32> -> tensor<4xf32>
// CHECK: %[[DW:.+]] = kiln.mul %[[G]], %[[X]] : tensor<4xf32>
// CHECK: return %[[LOSS]], %[[DW]]
func.func @forward(%w: tensor<4xf32> {kiln.param = "w"}, %x: tensor<4xf32> {kiln.input = "x"}) -> tensor<f32> {
  %y = kiln.mul %w, %x : tensor<4xf32>
  %l = kiln.reduce_sum %y, dims = [0] : tensor<4xf32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// A value used twice gets the sum of both cotangents.
// CHECK-LABEL: func.func @train_step
// CHECK: %[[G:.+]] = kiln.broadcast_in_dim
// CHECK-NEXT: %[[A:.+]] = kiln.mul %[[G]], %arg0 : tensor<3xf32>
// CHECK-NEXT: %[[B:.+]] = kiln.mul %[[G]], %arg0 : tensor<3xf32>
// CHECK-NEXT: %[[SUM:.+]] = kiln.add %[[A]], %[[B]] : tensor<3xf32>
// CHECK-NEXT: return %{{.+}}, %[[SUM]]
func.func @forward(%w: tensor<3xf32> {kiln.param = "w"}) -> tensor<f32> {
  %y = kiln.mul %w, %w : tensor<3xf32>
  %l = kiln.reduce_sum %y, dims = [0] : tensor<3xf32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// A linear layer: the shared weight's gradient is one matmul over the
// flattened batch rows (transpose_a), the bias gradient a reduce_sum over the
// broadcast dimensions. The input x is not a parameter: no gradient.
// CHECK-LABEL: func.func @train_step
// CHECK-SAME: -> (tensor<f32> {kiln.output = "loss"}, tensor<8x4xf32> {kiln.grad = "w"}, tensor<4xf32> {kiln.grad = "b"})
// CHECK-DAG: %[[DB:.+]] = kiln.reduce_sum %{{.+}}, dims = [0, 1] : tensor<2x3x4xf32> -> tensor<4xf32>
// CHECK-DAG: %[[XF:.+]] = kiln.reshape %arg2 : tensor<2x3x8xf32> -> tensor<6x8xf32>
// CHECK-DAG: %[[GF:.+]] = kiln.reshape %{{.+}} : tensor<2x3x4xf32> -> tensor<6x4xf32>
// CHECK: %[[DW:.+]] = kiln.matmul %[[XF]], %[[GF]] transpose_a : tensor<6x8xf32>, tensor<6x4xf32> -> tensor<8x4xf32>
// CHECK: return %{{.+}}, %[[DW]], %[[DB]]
func.func @forward(%w: tensor<8x4xf32> {kiln.param = "w"}, %b: tensor<4xf32> {kiln.param = "b"},
                   %x: tensor<2x3x8xf32> {kiln.input = "x"}) -> tensor<f32> {
  %y = kiln.matmul %x, %w : tensor<2x3x8xf32>, tensor<8x4xf32> -> tensor<2x3x4xf32>
  %bb = kiln.broadcast_in_dim %b, dims = [2] : tensor<4xf32> -> tensor<2x3x4xf32>
  %z = kiln.add %y, %bb : tensor<2x3x4xf32>
  %l = kiln.reduce_mean %z, dims = [0, 1, 2] : tensor<2x3x4xf32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// Composites differentiate into their *_grad ops; integer ids and targets
// get no gradient; a parameter the loss does not use gets zeros.
// CHECK-LABEL: func.func @train_step
// CHECK: kiln.cross_entropy_grad %{{.+}}, %arg4, %{{.+}}, %{{.+}} {valid_classes = 10 : i64}
// CHECK: kiln.gelu_grad tanh
// CHECK: kiln.layer_norm_grad
// CHECK: %[[EG:.+]] = kiln.embedding_grad %arg3, %{{.+}} : tensor<2x5xi32>, tensor<2x5x8xf32> -> tensor<12x8xf32>
// The tied table sums the head's and the embedding's gradients.
// CHECK: %[[DT:.+]] = kiln.add %{{.+}}, %[[EG]] : tensor<12x8xf32>
// CHECK: %[[ZERO:.+]] = kiln.constant dense<0.000000e+00> : tensor<7xf32>
// CHECK: return %{{.+}}, %[[DT]], %{{.+}}, %[[ZERO]]
func.func @forward(%table: tensor<12x8xf32> {kiln.param = "wte"}, %g: tensor<8xf32> {kiln.param = "ln.w"},
                   %unused: tensor<7xf32> {kiln.param = "unused"},
                   %ids: tensor<2x5xi32> {kiln.input = "tokens"}, %t: tensor<2x5xi32> {kiln.input = "targets"}) -> tensor<f32> {
  %x = kiln.embedding %table, %ids : tensor<12x8xf32>, tensor<2x5xi32> -> tensor<2x5x8xf32>
  %zero = kiln.constant dense<0.0> : tensor<8xf32>
  %y, %m, %r = kiln.layer_norm %x, %g, %zero {epsilon = 1.0e-05 : f32} : tensor<2x5x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<2x5x8xf32>, tensor<2x5xf32>, tensor<2x5xf32>
  %a = kiln.gelu tanh %y : tensor<2x5x8xf32>
  %logits = kiln.matmul %a, %table transpose_b : tensor<2x5x8xf32>, tensor<12x8xf32> -> tensor<2x5x12xf32>
  %loss, %lse = kiln.cross_entropy %logits, %t {valid_classes = 10 : i64} : tensor<2x5x12xf32>, tensor<2x5xi32> -> tensor<2x5xf32>, tensor<2x5xf32>
  %l = kiln.reduce_mean %loss, dims = [0, 1] : tensor<2x5xf32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// A norm writing bf16 from f32 (a folded cast) is the norm and the cast: its
// bf16 cotangent is widened back before layer_norm_grad / rms_norm_grad.
// CHECK-LABEL: func.func @train_step
// CHECK: kiln.broadcast_in_dim
// CHECK-NEXT: %[[D:.+]] = kiln.cast %{{.+}} : tensor<2x8xbf16> to tensor<2x8xf32>
// CHECK-NEXT: kiln.rms_norm_grad %{{.+}}, %{{.+}}, %{{.+}}, %[[D]]
// CHECK: %[[E:.+]] = kiln.cast %{{.+}} : tensor<2x8xbf16> to tensor<2x8xf32>
// CHECK-NEXT: kiln.layer_norm_grad %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %[[E]]
func.func @forward(%x: tensor<2x8xf32> {kiln.param = "x"}, %g: tensor<8xf32> {kiln.param = "g"}) -> tensor<f32> {
  %y, %m, %r = kiln.layer_norm %x, %g, %g {epsilon = 1.0e-05 : f32} : tensor<2x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<2x8xbf16>, tensor<2xf32>, tensor<2xf32>
  %w = kiln.cast %y : tensor<2x8xbf16> to tensor<2x8xf32>
  %z, %zr = kiln.rms_norm %w, %g {epsilon = 1.0e-05 : f32} : tensor<2x8xf32>, tensor<8xf32> -> tensor<2x8xbf16>, tensor<2xf32>
  %l = kiln.reduce_sum %z, dims = [0, 1] : tensor<2x8xbf16> -> tensor<bf16>
  %f = kiln.cast %l : tensor<bf16> to tensor<f32>
  return %f : tensor<f32>
}

// -----

// Attention and softmax: the backward recomputes from the saved lse / output.
// CHECK-LABEL: func.func @train_step
// CHECK: kiln.softmax_grad
// CHECK: kiln.attention_grad %arg0, %arg1, %arg2, %{{.+}}, %{{.+}}, %{{.+}} {causal, scale = 5.000000e-01 : f32}
func.func @forward(%q: tensor<1x2x4x8xf32> {kiln.param = "q"}, %k: tensor<1x2x4x8xf32> {kiln.param = "k"},
                   %v: tensor<1x2x4x8xf32> {kiln.param = "v"}) -> tensor<f32> {
  %o, %lse = kiln.attention %q, %k, %v {causal, scale = 0.5 : f32} : tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32> -> tensor<1x2x4x8xf32>, tensor<1x2x4xf32>
  %p = kiln.softmax %o : tensor<1x2x4x8xf32>
  %l = kiln.reduce_sum %p, dims = [0, 1, 2, 3] : tensor<1x2x4x8xf32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// Ops that do not depend on a parameter get no backward at all (the causal
// mask here): only the select and what feeds the parameter are differentiated.
// CHECK-LABEL: func.func @train_step
// CHECK-COUNT-2: kiln.iota
// CHECK-NOT: kiln.iota
// CHECK: return
func.func @forward(%s: tensor<4x4xf32> {kiln.param = "s"}) -> tensor<f32> {
  %row = kiln.iota dim = 0 : tensor<4x4xi32>
  %col = kiln.iota dim = 1 : tensor<4x4xi32>
  %m = kiln.compare ge, %row, %col : tensor<4x4xi32>
  %ninf = kiln.constant dense<0xFF800000> : tensor<4x4xf32>
  %x = kiln.select %m, %s, %ninf : tensor<4x4xi1>, tensor<4x4xf32>
  %p = kiln.softmax %x : tensor<4x4xf32>
  %l = kiln.reduce_max %p, dims = [0, 1] : tensor<4x4xf32> -> tensor<f32>
  return %l : tensor<f32>
}
