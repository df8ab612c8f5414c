// kiln-fuse's broadcasts: a loop fusion reads a broadcast's operand through
// the broadcast's index map (the broadcast is cloned into its body); the
// broadcast tensor stays only for readers outside fusions.
// RUN: kiln-opt %s -split-input-file -kiln-fuse | FileCheck %s
// RUN: kiln-opt %s -split-input-file -kiln-fuse=broadcasts=false | FileCheck %s --check-prefix=OFF

// A position table added to token embeddings: one op reading a broadcast
// is a fusion, its input the [T, C] table, the [B, T, C] copy gone.
// CHECK-LABEL: func.func @positions
// CHECK-SAME: (%[[X:[^:]+]]: tensor<2x4x8xf32>, %[[P:[^:]+]]: tensor<4x8xf32>)
// CHECK-NOT: kiln.broadcast_in_dim
// CHECK: %[[F:.+]] = kiln.fusion(%[[X]], %[[P]])
// CHECK-NEXT: ^bb0(%[[A0:[^:]+]]: tensor<2x4x8xf32>, %[[A1:[^:]+]]: tensor<4x8xf32>):
// CHECK-NEXT: %[[B:.+]] = kiln.broadcast_in_dim %[[A1]], dims = [1, 2] : tensor<4x8xf32> -> tensor<2x4x8xf32>
// CHECK-NEXT: %[[S:.+]] = kiln.add %[[A0]], %[[B]]
// CHECK-NEXT: kiln.yield %[[S]]
// CHECK: return %[[F]]
// OFF-LABEL: func.func @positions
// OFF: kiln.broadcast_in_dim
// OFF-NOT: kiln.fusion
// OFF: kiln.add
func.func @positions(%x: tensor<2x4x8xf32>, %p: tensor<4x8xf32>) -> tensor<2x4x8xf32> {
  %b = kiln.broadcast_in_dim %p, dims = [1, 2] : tensor<4x8xf32> -> tensor<2x4x8xf32>
  %y = kiln.add %x, %b : tensor<2x4x8xf32>
  return %y : tensor<2x4x8xf32>
}

// -----

// An additive mask added to scores in two fusions and read by a matmul:
// each fusion gets its own clone over the [T, T] mask; the broadcast stays
// for the matmul's read only.
// CHECK-LABEL: func.func @shared
// CHECK: %[[B:.+]] = kiln.broadcast_in_dim %[[M:[^,]+]], dims = [1, 2] : tensor<4x4xf32> -> tensor<2x4x4xf32>
// CHECK: kiln.fusion(%{{[^,]+}}, %[[M]])
// CHECK-NEXT: ^bb0(%{{[^:]+}}: tensor<2x4x4xf32>, %[[A:[^:]+]]: tensor<4x4xf32>):
// CHECK-NEXT: kiln.broadcast_in_dim %[[A]], dims = [1, 2] : tensor<4x4xf32> -> tensor<2x4x4xf32>
// CHECK: kiln.matmul
// CHECK: kiln.fusion(%{{[^,]+}}, %[[M]])
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.broadcast_in_dim
// CHECK: kiln.matmul %[[B]]
func.func @shared(%s: tensor<2x4x4xf32>, %m: tensor<4x4xf32>, %w: tensor<2x4x4xf32>)
    -> (tensor<2x4x4xf32>, tensor<2x4x4xf32>, tensor<2x4x4xf32>) {
  %b = kiln.broadcast_in_dim %m, dims = [1, 2] : tensor<4x4xf32> -> tensor<2x4x4xf32>
  %0 = kiln.add %s, %b : tensor<2x4x4xf32>
  %1 = kiln.matmul %0, %w : tensor<2x4x4xf32>, tensor<2x4x4xf32> -> tensor<2x4x4xf32>
  %2 = kiln.add %1, %b : tensor<2x4x4xf32>
  %3 = kiln.matmul %b, %w : tensor<2x4x4xf32>, tensor<2x4x4xf32> -> tensor<2x4x4xf32>
  return %0, %2, %3 : tensor<2x4x4xf32>, tensor<2x4x4xf32>, tensor<2x4x4xf32>
}

// -----

// A scalar broadcast into a chain of two ops (a scale, then a residual
// add): the chain is one fusion reading the scalar.
// CHECK-LABEL: func.func @scalar
// CHECK-NOT: kiln.broadcast_in_dim
// CHECK: kiln.fusion(%{{.+}}, %{{.+}}, %{{.+}}) : (tensor<8x16xbf16>, tensor<f32>, tensor<8x16xf32>) -> tensor<8x16xf32>
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.cast
// CHECK-NEXT: kiln.broadcast_in_dim %{{.+}}, dims = [] : tensor<f32> -> tensor<8x16xf32>
// CHECK-NEXT: kiln.mul
// CHECK-NEXT: kiln.add
func.func @scalar(%x: tensor<8x16xbf16>, %s: tensor<f32>, %r: tensor<8x16xf32>) -> tensor<8x16xf32> {
  %b = kiln.broadcast_in_dim %s, dims = [] : tensor<f32> -> tensor<8x16xf32>
  %0 = kiln.cast %x : tensor<8x16xbf16> to tensor<8x16xf32>
  %1 = kiln.mul %0, %b : tensor<8x16xf32>
  %2 = kiln.add %1, %r : tensor<8x16xf32>
  return %2 : tensor<8x16xf32>
}

// -----

// The same table broadcast two ways into one fusion: the first is read
// through its index map, the second stays a tensor input (one map per
// argument).
// CHECK-LABEL: func.func @twoWays
// CHECK: %[[COL:.+]] = kiln.broadcast_in_dim %[[V:[^,]+]], dims = [1] : tensor<8xf32> -> tensor<8x8xf32>
// CHECK: kiln.fusion(%{{[^,]+}}, %[[V]], %[[COL]])
// CHECK-NEXT: ^bb0(%{{[^:]+}}: tensor<8x8xf32>, %[[A:[^:]+]]: tensor<8xf32>, %[[C:[^:]+]]: tensor<8x8xf32>):
// CHECK-NEXT: %[[ROW:.+]] = kiln.broadcast_in_dim %[[A]], dims = [0]
// CHECK-NEXT: kiln.add %{{.+}}, %[[ROW]]
// CHECK-NEXT: kiln.mul %{{.+}}, %[[C]]
func.func @twoWays(%x: tensor<8x8xf32>, %v: tensor<8xf32>) -> tensor<8x8xf32> {
  %row = kiln.broadcast_in_dim %v, dims = [0] : tensor<8xf32> -> tensor<8x8xf32>
  %col = kiln.broadcast_in_dim %v, dims = [1] : tensor<8xf32> -> tensor<8x8xf32>
  %0 = kiln.add %x, %row : tensor<8x8xf32>
  %1 = kiln.mul %0, %col : tensor<8x8xf32>
  return %1 : tensor<8x8xf32>
}

// -----

// A norm fusion reads a broadcast that keeps rows whole through its index
// map (GPT-2's token + position embedding before the first layer norm);
// a broadcast that does not (a per-row scale) stays a tensor input.
// CHECK-LABEL: func.func @norm
// CHECK: %[[S:.+]] = kiln.broadcast_in_dim %{{.+}}, dims = [0, 1] : tensor<2x4xf32> -> tensor<2x4x16xf32>
// CHECK-NOT: kiln.broadcast_in_dim
// CHECK: kiln.fusion(%{{[^,]+}}, %{{[^,]+}}, %[[S]], %{{[^,]+}}, %{{[^)]+}})
// CHECK-NEXT: ^bb0(%{{[^:]+}}: tensor<2x4x16xf32>, %[[A:[^:]+]]: tensor<4x16xf32>, %{{[^:]+}}: tensor<2x4x16xf32>,
// CHECK-NEXT: kiln.broadcast_in_dim %[[A]], dims = [1, 2] : tensor<4x16xf32> -> tensor<2x4x16xf32>
// CHECK-NEXT: kiln.add
// CHECK-NEXT: kiln.mul
// CHECK-NEXT: kiln.layer_norm
func.func @norm(%x: tensor<2x4x16xf32>, %p: tensor<4x16xf32>, %r: tensor<2x4xf32>, %w: tensor<16xf32>, %b: tensor<16xf32>)
    -> (tensor<2x4x16xf32>, tensor<2x4xf32>, tensor<2x4xf32>) {
  %pb = kiln.broadcast_in_dim %p, dims = [1, 2] : tensor<4x16xf32> -> tensor<2x4x16xf32>
  %rb = kiln.broadcast_in_dim %r, dims = [0, 1] : tensor<2x4xf32> -> tensor<2x4x16xf32>
  %0 = kiln.add %x, %pb : tensor<2x4x16xf32>
  %1 = kiln.mul %0, %rb : tensor<2x4x16xf32>
  %y, %m, %q = kiln.layer_norm %1, %w, %b {epsilon = 1.0e-05 : f32} : tensor<2x4x16xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<2x4x16xf32>, tensor<2x4xf32>, tensor<2x4xf32>
  return %y, %m, %q : tensor<2x4x16xf32>, tensor<2x4xf32>, tensor<2x4xf32>
}

// -----

// Two equal broadcasts of one table (before CSE): one body argument and
// one clone for both.
// CHECK-LABEL: func.func @equal
// CHECK-NOT: kiln.broadcast_in_dim
// CHECK: kiln.fusion(%{{[^,]+}}, %{{[^)]+}}) : (tensor<2x4x8xf32>, tensor<4x8xf32>)
// CHECK-NEXT: ^bb0(%{{[^:]+}}: tensor<2x4x8xf32>, %[[A:[^:]+]]: tensor<4x8xf32>):
// CHECK-NEXT: %[[B:.+]] = kiln.broadcast_in_dim %[[A]]
// CHECK-NEXT: %[[S:.+]] = kiln.add %{{.+}}, %[[B]]
// CHECK-NEXT: kiln.mul %[[S]], %[[B]]
func.func @equal(%x: tensor<2x4x8xf32>, %t: tensor<4x8xf32>) -> tensor<2x4x8xf32> {
  %b1 = kiln.broadcast_in_dim %t, dims = [1, 2] : tensor<4x8xf32> -> tensor<2x4x8xf32>
  %b2 = kiln.broadcast_in_dim %t, dims = [1, 2] : tensor<4x8xf32> -> tensor<2x4x8xf32>
  %a = kiln.add %x, %b1 : tensor<2x4x8xf32>
  %m = kiln.mul %a, %b2 : tensor<2x4x8xf32>
  return %m : tensor<2x4x8xf32>
}

// -----

// A norm's weight also broadcast into the add before it: the weight is
// the norm's tensor, so the broadcast stays a tensor input too (one body
// argument is never read two ways).
// CHECK-LABEL: func.func @normWeight
// CHECK: %[[B:.+]] = kiln.broadcast_in_dim %[[G:[^,]+]], dims = [2]
// CHECK: kiln.fusion(%{{[^,]+}}, %[[B]], %[[G]], %{{[^)]+}})
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.add
// CHECK-NEXT: kiln.layer_norm
func.func @normWeight(%h: tensor<2x4x16xf32>, %g: tensor<16xf32>, %beta: tensor<16xf32>)
    -> (tensor<2x4x16xf32>, tensor<2x4xf32>, tensor<2x4xf32>) {
  %b = kiln.broadcast_in_dim %g, dims = [2] : tensor<16xf32> -> tensor<2x4x16xf32>
  %s = kiln.add %h, %b : tensor<2x4x16xf32>
  %y, %m, %q = kiln.layer_norm %s, %g, %beta {epsilon = 1.0e-05 : f32} : tensor<2x4x16xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<2x4x16xf32>, tensor<2x4xf32>, tensor<2x4xf32>
  return %y, %m, %q : tensor<2x4x16xf32>, tensor<2x4xf32>, tensor<2x4xf32>
}
