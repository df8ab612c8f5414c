// kiln-fuse's reduction fusions: a reduce_sum, reduce_max or reduce_mean
// ends a group, taking the elementwise chain that computes its operand;
// what must stay apart stays apart.
// RUN: kiln-opt %s -split-input-file -kiln-fuse | FileCheck %s
// RUN: kiln-opt %s -split-input-file -kiln-fuse=reductions=false | FileCheck %s --check-prefix=OFF

// A chain summed over its rows: one fusion yielding only the sum (the
// product is never stored).
// CHECK-LABEL: func.func @rows
// CHECK-SAME: (%[[X:[^:]+]]: tensor<4x8xf32>, %[[Y:[^:]+]]: tensor<4x8xf32>)
// CHECK: %[[F:.+]] = kiln.fusion(%[[X]], %[[Y]]) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4xf32>
// CHECK-NEXT: ^bb0(%[[A:[^:]+]]: tensor<4x8xf32>, %[[B:[^:]+]]: tensor<4x8xf32>):
// CHECK-NEXT: %[[E:.+]] = kiln.exp %[[A]]
// CHECK-NEXT: %[[M:.+]] = kiln.mul %[[E]], %[[B]]
// CHECK-NEXT: %[[S:.+]] = kiln.reduce_sum %[[M]], dims = [1]
// CHECK-NEXT: kiln.yield %[[S]] : tensor<4xf32>
// CHECK: return %[[F]]
// OFF-LABEL: func.func @rows
// OFF: kiln.fusion
// OFF: kiln.yield
// OFF-NEXT: }
// OFF-NEXT: kiln.reduce_sum
func.func @rows(%x: tensor<4x8xf32>, %y: tensor<4x8xf32>) -> tensor<4xf32> {
  %0 = kiln.exp %x : tensor<4x8xf32>
  %1 = kiln.mul %0, %y : tensor<4x8xf32>
  %2 = kiln.reduce_sum %1, dims = [1] : tensor<4x8xf32> -> tensor<4xf32>
  return %2 : tensor<4xf32>
}

// -----

// A bias gradient after gelu_grad whose value a weight gradient's matmul
// reads later (a mixture of experts' MLP): the fusion yields the gradient
// as a side output, written as the sum reads it, and the sum. A lone op
// before a reduction fuses (one kernel instead of two).
// CHECK-LABEL: func.func @side_output
// CHECK: %[[F:.+]]:2 = kiln.fusion(%{{.+}}, %{{.+}}) : (tensor<16x32xbf16>, tensor<16x32xbf16>) -> (tensor<16x32xbf16>, tensor<32xbf16>)
// CHECK: %[[G:.+]] = kiln.gelu_grad tanh
// CHECK-NEXT: %[[S:.+]] = kiln.reduce_sum %[[G]], dims = [0]
// CHECK-NEXT: kiln.yield %[[G]], %[[S]]
// CHECK: kiln.matmul %{{.+}}, %[[F]]#0 transpose_a
// CHECK: return %{{.+}}, %[[F]]#1
// OFF-LABEL: func.func @side_output
// OFF-NOT: kiln.fusion
func.func @side_output(%x: tensor<16x32xbf16>, %d: tensor<16x32xbf16>, %h: tensor<16x8xbf16>)
    -> (tensor<8x32xbf16>, tensor<32xbf16>) {
  %g = kiln.gelu_grad tanh %x, %d : tensor<16x32xbf16>
  %b = kiln.reduce_sum %g, dims = [0] : tensor<16x32xbf16> -> tensor<32xbf16>
  %w = kiln.matmul %h, %g transpose_a : tensor<16x8xbf16>, tensor<16x32xbf16> -> tensor<8x32xbf16>
  return %w, %b : tensor<8x32xbf16>, tensor<32xbf16>
}

// -----

// The value is read by a matmul before the reduction: the fusion could not
// yield it in time, so the op stays apart and the reduction alone.
// CHECK-LABEL: func.func @read_before_the_sum
// CHECK-NOT: kiln.fusion
func.func @read_before_the_sum(%x: tensor<16x32xbf16>, %d: tensor<16x32xbf16>, %h: tensor<16x8xbf16>)
    -> (tensor<8x32xbf16>, tensor<32xbf16>) {
  %g = kiln.gelu_grad tanh %x, %d : tensor<16x32xbf16>
  %w = kiln.matmul %h, %g transpose_a : tensor<16x8xbf16>, tensor<16x32xbf16> -> tensor<8x32xbf16>
  %b = kiln.reduce_sum %g, dims = [0] : tensor<16x32xbf16> -> tensor<32xbf16>
  return %w, %b : tensor<8x32xbf16>, tensor<32xbf16>
}

// -----

// Every kind and set of dimensions: a max over the leading ones (columns),
// a mean over a middle one (the general form); a broadcast operand read
// through its index map; a cast of the result is a group of its own shape.
// CHECK-LABEL: func.func @kinds
// CHECK: kiln.fusion
// CHECK: kiln.sub
// CHECK-NEXT: kiln.reduce_max %{{.+}}, dims = [0, 1]
// CHECK: kiln.fusion
// CHECK: kiln.broadcast_in_dim
// CHECK-NEXT: kiln.mul
// CHECK-NEXT: kiln.reduce_mean %{{.+}}, dims = [1]
// CHECK: kiln.cast
// CHECK-NOT: kiln.fusion
// OFF-LABEL: func.func @kinds
// OFF: kiln.reduce_max
// OFF: kiln.reduce_mean
func.func @kinds(%x: tensor<2x3x8xf32>, %y: tensor<2x3x8xf32>, %v: tensor<8xf32>)
    -> (tensor<8xf32>, tensor<2x8xbf16>) {
  %0 = kiln.sub %x, %y : tensor<2x3x8xf32>
  %1 = kiln.reduce_max %0, dims = [0, 1] : tensor<2x3x8xf32> -> tensor<8xf32>
  %b = kiln.broadcast_in_dim %v, dims = [2] : tensor<8xf32> -> tensor<2x3x8xf32>
  %2 = kiln.mul %x, %b : tensor<2x3x8xf32>
  %3 = kiln.reduce_mean %2, dims = [1] : tensor<2x3x8xf32> -> tensor<2x8xf32>
  %4 = kiln.cast %3 : tensor<2x8xf32> to tensor<2x8xbf16>
  return %1, %4 : tensor<8xf32>, tensor<2x8xbf16>
}

// -----

// Near-misses: a reduction of a matmul (nothing elementwise to take) and
// of an integer tensor stay as they are.
// CHECK-LABEL: func.func @apart
// CHECK-NOT: kiln.fusion
func.func @apart(%x: tensor<4x8xf32>, %w: tensor<8x8xf32>, %i: tensor<4x8xi32>)
    -> (tensor<4xf32>, tensor<4xi32>) {
  %m = kiln.matmul %x, %w : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %s = kiln.reduce_sum %m, dims = [1] : tensor<4x8xf32> -> tensor<4xf32>
  %j = kiln.add %i, %i : tensor<4x8xi32>
  %t = kiln.reduce_sum %j, dims = [1] : tensor<4x8xi32> -> tensor<4xi32>
  return %s, %t : tensor<4xf32>, tensor<4xi32>
}

// -----

// A norm gradient's column sum of its residual gradient is the norm
// fusion's (one warp-per-row kernel), not a reduction fusion's.
// CHECK-LABEL: func.func @norm_column_sum
// CHECK: kiln.fusion
// CHECK: kiln.layer_norm_grad
// CHECK: kiln.reduce_sum
// CHECK: kiln.yield
// CHECK-NOT: kiln.fusion
func.func @norm_column_sum(%x: tensor<8x16xf32>, %w: tensor<16xf32>, %m: tensor<8xf32>, %q: tensor<8xf32>,
                           %dy: tensor<8x16xf32>, %r: tensor<8x16xf32>)
    -> (tensor<16xf32>, tensor<16xf32>, tensor<8x16xf32>, tensor<16xf32>) {
  %dx, %dw, %db = kiln.layer_norm_grad %x, %w, %m, %q, %dy : tensor<8x16xf32>, tensor<16xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8x16xf32> -> tensor<8x16xf32>, tensor<16xf32>, tensor<16xf32>
  %0 = kiln.add %dx, %r : tensor<8x16xf32>
  %1 = kiln.reduce_sum %0, dims = [0] : tensor<8x16xf32> -> tensor<16xf32>
  return %dw, %db, %0, %1 : tensor<16xf32>, tensor<16xf32>, tensor<8x16xf32>, tensor<16xf32>
}
