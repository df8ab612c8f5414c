// kiln-fuse's cross-entropy fusion: the loss and its gradient over the same
// logits run as one kernel where the forward was, when the gradient's dloss
// is known there.
// RUN: kiln-opt %s -split-input-file -kiln-fuse | FileCheck %s
// RUN: kiln-opt %s -split-input-file -kiln-fuse=cross-entropy=false | FileCheck %s --check-prefix=OFF

// The training step's shape: the loss's mean is read between the two (so
// the fusion sits where the forward was), the seed is a constant made
// before; lse, read by nothing else, is not a result.
// CHECK-LABEL: func.func @step
// CHECK: %[[D:.+]] = kiln.constant
// CHECK-NEXT: %[[F:.+]]:2 = kiln.fusion(%{{.+}}, %{{.+}}, %[[D]]) : (tensor<4x16xbf16>, tensor<4xi32>, tensor<4xf32>) -> (tensor<4xf32>, tensor<4x16xbf16>)
// CHECK: %[[L:.+]], %[[S:.+]] = kiln.cross_entropy
// CHECK-NEXT: %[[G:.+]] = kiln.cross_entropy_grad %{{.+}}, %{{.+}}, %[[S]], %{{.+}} {valid_classes = 10 : i64}
// CHECK-NEXT: kiln.yield %[[L]], %[[G]]
// CHECK: kiln.reduce_mean %[[F]]#0
// CHECK: return %{{.+}}, %[[F]]#1
// OFF-LABEL: func.func @step
// OFF-NOT: kiln.fusion
func.func @step(%l: tensor<4x16xbf16>, %t: tensor<4xi32>) -> (tensor<f32>, tensor<4x16xbf16>) {
  %d = kiln.constant dense<0.25> : tensor<4xf32>
  %loss, %lse = kiln.cross_entropy %l, %t {valid_classes = 10 : i64} : tensor<4x16xbf16>, tensor<4xi32> -> tensor<4xf32>, tensor<4xf32>
  %m = kiln.reduce_mean %loss, dims = [0] : tensor<4xf32> -> tensor<f32>
  %g = kiln.cross_entropy_grad %l, %t, %lse, %d {valid_classes = 10 : i64} : tensor<4x16xbf16>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32> -> tensor<4x16xbf16>
  return %m, %g : tensor<f32>, tensor<4x16xbf16>
}

// -----

// lse read after the gradient too: a third result.
// CHECK-LABEL: func.func @lse_used
// CHECK: %[[F:.+]]:3 = kiln.fusion
// CHECK: kiln.yield
// CHECK: return %[[F]]#0, %[[F]]#1, %[[F]]#2
func.func @lse_used(%l: tensor<4x16xf32>, %t: tensor<4xi32>, %d: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4x16xf32>) {
  %loss, %lse = kiln.cross_entropy %l, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<4xf32>, tensor<4xf32>
  %g = kiln.cross_entropy_grad %l, %t, %lse, %d : tensor<4x16xf32>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32> -> tensor<4x16xf32>
  return %loss, %lse, %g : tensor<4xf32>, tensor<4xf32>, tensor<4x16xf32>
}

// -----

// What stays apart: a dloss computed after the forward (from the loss), a
// gradient of other logits, and rows that are not whole 16-byte vectors.
// CHECK-LABEL: func.func @apart
// CHECK-NOT: kiln.fusion
func.func @apart(%l: tensor<4x16xf32>, %k: tensor<4x16xf32>, %t: tensor<4xi32>, %o: tensor<4x12xf32>, %d: tensor<4xf32>)
    -> (tensor<4x16xf32>, tensor<4x16xf32>, tensor<4xf32>, tensor<4x12xf32>) {
  %loss, %lse = kiln.cross_entropy %l, %t : tensor<4x16xf32>, tensor<4xi32> -> tensor<4xf32>, tensor<4xf32>
  %e = kiln.exp %loss : tensor<4xf32>
  %g = kiln.cross_entropy_grad %l, %t, %lse, %e : tensor<4x16xf32>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32> -> tensor<4x16xf32>
  %h = kiln.cross_entropy_grad %k, %t, %lse, %d : tensor<4x16xf32>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32> -> tensor<4x16xf32>
  %p, %q = kiln.cross_entropy %o, %t : tensor<4x12xf32>, tensor<4xi32> -> tensor<4xf32>, tensor<4xf32>
  %r = kiln.cross_entropy_grad %o, %t, %q, %d : tensor<4x12xf32>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32> -> tensor<4x12xf32>
  %s = kiln.add %p, %loss : tensor<4xf32>
  return %g, %h, %s, %r : tensor<4x16xf32>, tensor<4x16xf32>, tensor<4xf32>, tensor<4x12xf32>
}

// -----

// The seed made after the forward from arguments only (f16-mixed's loss
// scale times 1/N, broadcast): moved before the forward, then fused.
// CHECK-LABEL: func.func @hoisted_seed
// CHECK: %[[M:.+]] = kiln.mul %arg2, %{{.+}} : tensor<f32>
// CHECK-NEXT: %[[B:.+]] = kiln.broadcast_in_dim %[[M]]
// CHECK-NEXT: kiln.fusion(%arg0, %arg1, %[[B]])
// CHECK: kiln.reduce_mean
func.func @hoisted_seed(%l: tensor<4x16xf16>, %t: tensor<4xi32>, %scale: tensor<f32>) -> (tensor<f32>, tensor<4x16xf16>) {
  %c = kiln.constant dense<0.25> : tensor<f32>
  %loss, %lse = kiln.cross_entropy %l, %t : tensor<4x16xf16>, tensor<4xi32> -> tensor<4xf32>, tensor<4xf32>
  %m = kiln.reduce_mean %loss, dims = [0] : tensor<4xf32> -> tensor<f32>
  %s = kiln.mul %scale, %c : tensor<f32>
  %d = kiln.broadcast_in_dim %s, dims = [] : tensor<f32> -> tensor<4xf32>
  %g = kiln.cross_entropy_grad %l, %t, %lse, %d : tensor<4x16xf16>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32> -> tensor<4x16xf16>
  return %m, %g : tensor<f32>, tensor<4x16xf16>
}
