// kiln-fuse-matmul-bias: add(matmul, broadcast(vector along the last dim))
// becomes the matmul's bias operand.
// RUN: kiln-opt %s -split-input-file -kiln-fuse-matmul-bias | FileCheck %s

// CHECK-LABEL: func.func @linear
// CHECK-SAME: (%[[X:.+]]: tensor<4x8x64xf32>, %[[W:.+]]: tensor<64x32xf32>, %[[B:.+]]: tensor<32xf32>)
// CHECK-NEXT: %[[Y:.+]] = kiln.matmul %[[X]], %[[W]] bias %[[B]] : tensor<4x8x64xf32>, tensor<64x32xf32>, tensor<32xf32> -> tensor<4x8x32xf32>
// CHECK-NEXT: return %[[Y]]
func.func @linear(%x: tensor<4x8x64xf32>, %w: tensor<64x32xf32>, %b: tensor<32xf32>) -> tensor<4x8x32xf32> {
  %y = kiln.matmul %x, %w : tensor<4x8x64xf32>, tensor<64x32xf32> -> tensor<4x8x32xf32>
  %bb = kiln.broadcast_in_dim %b, dims = [2] : tensor<32xf32> -> tensor<4x8x32xf32>
  %z = kiln.add %y, %bb : tensor<4x8x32xf32>
  return %z : tensor<4x8x32xf32>
}

// -----

// The add's operands either way round; transpose flags are kept; a
// broadcast still used elsewhere stays.
// CHECK-LABEL: func.func @swapped
// CHECK: %[[BB:.+]] = kiln.broadcast_in_dim
// CHECK: %[[Y:.+]] = kiln.matmul %{{.+}}, %{{.+}} bias %{{.+}} transpose_b
// CHECK-NOT: kiln.add %
// CHECK: kiln.mul %[[Y]], %[[BB]]
func.func @swapped(%x: tensor<8x64xf32>, %w: tensor<32x64xf32>, %b: tensor<32xf32>) -> tensor<8x32xf32> {
  %y = kiln.matmul %x, %w transpose_b : tensor<8x64xf32>, tensor<32x64xf32> -> tensor<8x32xf32>
  %bb = kiln.broadcast_in_dim %b, dims = [1] : tensor<32xf32> -> tensor<8x32xf32>
  %z = kiln.add %bb, %y : tensor<8x32xf32>
  %u = kiln.mul %z, %bb : tensor<8x32xf32>
  return %u : tensor<8x32xf32>
}

// -----

// Left alone: the unbiased product has another user; the vector lies along
// another dimension; the added tensor is not a broadcast vector.
// CHECK-LABEL: func.func @not_fused
// CHECK-NOT: bias
func.func @not_fused(%x: tensor<8x64xf32>, %w: tensor<64x8xf32>, %b: tensor<8xf32>, %t: tensor<8x8xf32>)
    -> (tensor<8x8xf32>, tensor<8x8xf32>, tensor<8x8xf32>, tensor<8x8xf32>) {
  %y = kiln.matmul %x, %w : tensor<8x64xf32>, tensor<64x8xf32> -> tensor<8x8xf32>
  %bb = kiln.broadcast_in_dim %b, dims = [1] : tensor<8xf32> -> tensor<8x8xf32>
  %z = kiln.add %y, %bb : tensor<8x8xf32>
  %y2 = kiln.matmul %x, %w : tensor<8x64xf32>, tensor<64x8xf32> -> tensor<8x8xf32>
  %rows = kiln.broadcast_in_dim %b, dims = [0] : tensor<8xf32> -> tensor<8x8xf32>
  %z2 = kiln.add %y2, %rows : tensor<8x8xf32>
  %y3 = kiln.matmul %x, %w : tensor<8x64xf32>, tensor<64x8xf32> -> tensor<8x8xf32>
  %z3 = kiln.add %y3, %t : tensor<8x8xf32>
  return %z, %y, %z2, %z3 : tensor<8x8xf32>, tensor<8x8xf32>, tensor<8x8xf32>, tensor<8x8xf32>
}
