// kiln-fuse: chains of elementwise ops over one shape become kiln.fusion
// regions; what must stay apart stays apart.
// RUN: kiln-opt %s -split-input-file -kiln-fuse | FileCheck %s

// A chain with a cast and a splat constant: one fusion, the constant cloned
// into the body (and gone outside), the inputs in first-use order.
// CHECK-LABEL: func.func @chain
// CHECK-SAME: (%[[X:.+]]: tensor<4x8xbf16>, %[[R:.+]]: tensor<4x8xf32>)
// CHECK-NOT: kiln.constant
// CHECK: %[[F:.+]] = kiln.fusion(%[[X]], %[[R]]) : (tensor<4x8xbf16>, tensor<4x8xf32>) -> tensor<4x8xf32> {
// CHECK-NEXT: ^bb0(%[[A:.+]]: tensor<4x8xbf16>, %[[B:.+]]: tensor<4x8xf32>):
// CHECK-NEXT: %[[C0:.+]] = kiln.cast %[[A]]
// CHECK-NEXT: %[[K:.+]] = kiln.constant dense<2.000000e+00>
// CHECK-NEXT: %[[M:.+]] = kiln.mul %[[C0]], %[[K]]
// CHECK-NEXT: %[[S:.+]] = kiln.add %[[M]], %[[B]]
// CHECK-NEXT: kiln.yield %[[S]] : tensor<4x8xf32>
// CHECK-NEXT: }
// CHECK-NEXT: return %[[F]]
func.func @chain(%x: tensor<4x8xbf16>, %r: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %c = kiln.constant dense<2.0> : tensor<4x8xf32>
  %0 = kiln.cast %x : tensor<4x8xbf16> to tensor<4x8xf32>
  %1 = kiln.mul %0, %c : tensor<4x8xf32>
  %2 = kiln.add %1, %r : tensor<4x8xf32>
  return %2 : tensor<4x8xf32>
}

// -----

// A value used twice inside the group fuses; a mask from compare feeds a
// select in the same kernel.
// CHECK-LABEL: func.func @diamond
// CHECK: kiln.fusion
// CHECK: kiln.compare
// CHECK: kiln.select
// CHECK: kiln.exp
// CHECK: kiln.mul
// CHECK: kiln.yield
// CHECK-NOT: kiln.fusion
func.func @diamond(%x: tensor<16xf32>, %y: tensor<16xf32>) -> tensor<16xf32> {
  %m = kiln.compare gt, %x, %y : tensor<16xf32>
  %s = kiln.select %m, %x, %y : tensor<16xi1>, tensor<16xf32>
  %e = kiln.exp %s : tensor<16xf32>
  %p = kiln.mul %e, %s : tensor<16xf32>
  return %p : tensor<16xf32>
}

// -----

// A value also needed after its chain becomes a second result (its users
// outside come after the fusion).
// CHECK-LABEL: func.func @used_after
// CHECK: %[[F:.+]]:2 = kiln.fusion(%{{.+}}) : (tensor<8xf32>) -> (tensor<8xf32>, tensor<8xf32>)
// CHECK: %[[A:.+]] = kiln.exp
// CHECK: kiln.neg %[[A]]
// CHECK: %[[C:.+]] = kiln.tanh
// CHECK: kiln.yield %[[A]], %[[C]]
// CHECK: return %[[F]]#0, %[[F]]#1
func.func @used_after(%x: tensor<8xf32>) -> (tensor<8xf32>, tensor<8xf32>) {
  %a = kiln.exp %x : tensor<8xf32>
  %b = kiln.neg %a : tensor<8xf32>
  %c = kiln.tanh %b : tensor<8xf32>
  return %a, %c : tensor<8xf32>, tensor<8xf32>
}

// -----

// Near-miss: a user outside the chain that runs before the chain ends (the
// reshape) keeps the value out: the fusion could not be placed both after
// %a's other users' inputs and before that user.
// CHECK-LABEL: func.func @used_before_the_end
// CHECK: %[[A:.+]] = kiln.exp
// CHECK-NEXT: kiln.reshape %[[A]]
// CHECK-NEXT: %[[F:.+]] = kiln.fusion(%[[A]], %{{.+}}) : (tensor<8xf32>, tensor<8xf32>) -> tensor<8xf32>
// CHECK-NOT: kiln.exp
// CHECK: kiln.yield
func.func @used_before_the_end(%x: tensor<8xf32>, %y: tensor<8xf32>) -> (tensor<2x4xf32>, tensor<8xf32>) {
  %a = kiln.exp %x : tensor<8xf32>
  %s = kiln.reshape %a : tensor<8xf32> -> tensor<2x4xf32>
  %b = kiln.neg %a : tensor<8xf32>
  %c = kiln.mul %b, %y : tensor<8xf32>
  return %s, %c : tensor<2x4xf32>, tensor<8xf32>
}

// -----

// A reduction, a matmul or a broadcast between elementwise ops ends a
// group (the exp joins the reduction: a reduction fusion; the add reads
// the broadcast's operand through its index map); lone elementwise ops
// stay as they are.
// CHECK-LABEL: func.func @breaks
// CHECK: %[[S:.+]] = kiln.fusion
// CHECK: kiln.exp
// CHECK-NEXT: kiln.reduce_sum
// CHECK-NEXT: kiln.yield
// CHECK: %[[A:.+]] = kiln.fusion(%[[S]], %{{.+}})
// CHECK: kiln.broadcast_in_dim
// CHECK-NEXT: kiln.add
// CHECK-NEXT: kiln.yield
// CHECK: %[[M:.+]] = kiln.matmul %[[A]]
// CHECK-NEXT: kiln.tanh %[[M]]
func.func @breaks(%x: tensor<4x8xf32>, %w: tensor<8x8xf32>) -> tensor<4x8xf32> {
  %e = kiln.exp %x : tensor<4x8xf32>
  %s = kiln.reduce_sum %e, dims = [1] : tensor<4x8xf32> -> tensor<4xf32>
  %b = kiln.broadcast_in_dim %s, dims = [0] : tensor<4xf32> -> tensor<4x8xf32>
  %a = kiln.add %b, %x : tensor<4x8xf32>
  %m = kiln.matmul %a, %w : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %t = kiln.tanh %m : tensor<4x8xf32>
  return %t : tensor<4x8xf32>
}

// -----

// Two users in different groups: the producer joins the first group as a
// second result, which the later group reads.
// CHECK-LABEL: func.func @two_groups
// CHECK: %[[F:.+]]:2 = kiln.fusion(%{{.+}})
// CHECK: kiln.exp
// CHECK: kiln.yield
// CHECK: %[[G:.+]] = kiln.fusion(%[[F]]#0)
// CHECK: kiln.sqrt
// CHECK: return %[[F]]#1, %[[G]]
func.func @two_groups(%x: tensor<8xf32>) -> (tensor<8xf32>, tensor<8xf32>) {
  %e = kiln.exp %x : tensor<8xf32>
  %a = kiln.neg %e : tensor<8xf32>
  %b = kiln.tanh %a : tensor<8xf32>
  %c = kiln.sqrt %e : tensor<8xf32>
  %d = kiln.log %c : tensor<8xf32>
  return %b, %d : tensor<8xf32>, tensor<8xf32>
}
