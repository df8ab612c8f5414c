// Folders and canonicalization patterns of the kiln dialect.
// RUN: kiln-opt %s -canonicalize -split-input-file | FileCheck %s

// CHECK-LABEL: func.func @add_zero
// CHECK-SAME: (%[[X:.+]]: tensor<4xf32>)
// CHECK-NEXT: return %[[X]], %[[X]]
func.func @add_zero(%x: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>) {
  %z = kiln.constant dense<0.0> : tensor<4xf32>
  %0 = kiln.add %x, %z : tensor<4xf32>
  %1 = kiln.add %z, %x : tensor<4xf32>
  return %0, %1 : tensor<4xf32>, tensor<4xf32>
}

// -----

// A zero broadcast from a scalar folds to a splat first, then x+0 -> x.
// CHECK-LABEL: func.func @add_broadcast_zero
// CHECK-SAME: (%[[X:.+]]: tensor<2x4xbf16>)
// CHECK-NEXT: return %[[X]]
func.func @add_broadcast_zero(%x: tensor<2x4xbf16>) -> tensor<2x4xbf16> {
  %z = kiln.constant dense<0.0> : tensor<bf16>
  %b = kiln.broadcast_in_dim %z, dims = [] : tensor<bf16> -> tensor<2x4xbf16>
  %0 = kiln.add %x, %b : tensor<2x4xbf16>
  return %0 : tensor<2x4xbf16>
}

// -----

// CHECK-LABEL: func.func @sub_zero_mul_one_div_one
// CHECK-SAME: (%[[X:.+]]: tensor<4xf32>, %[[I:.+]]: tensor<4xi32>)
// CHECK-NEXT: return %[[X]], %[[X]], %[[X]], %[[X]], %[[I]]
func.func @sub_zero_mul_one_div_one(%x: tensor<4xf32>, %i: tensor<4xi32>)
    -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xi32>) {
  %z = kiln.constant dense<0.0> : tensor<4xf32>
  %o = kiln.constant dense<1.0> : tensor<4xf32>
  %io = kiln.constant dense<1> : tensor<4xi32>
  %0 = kiln.sub %x, %z : tensor<4xf32>
  %1 = kiln.mul %x, %o : tensor<4xf32>
  %2 = kiln.mul %o, %x : tensor<4xf32>
  %3 = kiln.div %x, %o : tensor<4xf32>
  %4 = kiln.mul %io, %i : tensor<4xi32>
  return %0, %1, %2, %3, %4 : tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xi32>
}

// -----

// Not identities: 0 - x, x * 2, x / 0 and x + 1 stay.
// CHECK-LABEL: func.func @not_identities
// CHECK: kiln.sub
// CHECK: kiln.mul
// CHECK: kiln.div
// CHECK: kiln.add
func.func @not_identities(%x: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) {
  %z = kiln.constant dense<0.0> : tensor<4xf32>
  %o = kiln.constant dense<1.0> : tensor<4xf32>
  %t = kiln.constant dense<2.0> : tensor<4xf32>
  %0 = kiln.sub %z, %x : tensor<4xf32>
  %1 = kiln.mul %x, %t : tensor<4xf32>
  %2 = kiln.div %x, %z : tensor<4xf32>
  %3 = kiln.add %x, %o : tensor<4xf32>
  return %0, %1, %2, %3 : tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>
}

// -----

// CHECK-LABEL: func.func @cast_same_type
// CHECK-SAME: (%[[X:.+]]: tensor<4xf32>)
// CHECK-NEXT: %[[H:.+]] = kiln.cast %[[X]] : tensor<4xf32> to tensor<4xbf16>
// CHECK-NEXT: return %[[X]], %[[H]]
func.func @cast_same_type(%x: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xbf16>) {
  %0 = kiln.cast %x : tensor<4xf32> to tensor<4xf32>
  %1 = kiln.cast %x : tensor<4xf32> to tensor<4xbf16>
  return %0, %1 : tensor<4xf32>, tensor<4xbf16>
}

// -----

// CHECK-LABEL: func.func @reshapes
// CHECK-SAME: (%[[X:.+]]: tensor<2x3x4xf32>)
// CHECK-NEXT: %[[R:.+]] = kiln.reshape %[[X]] : tensor<2x3x4xf32> -> tensor<24xf32>
// CHECK-NEXT: return %[[R]], %[[X]]
func.func @reshapes(%x: tensor<2x3x4xf32>) -> (tensor<24xf32>, tensor<2x3x4xf32>) {
  %0 = kiln.reshape %x : tensor<2x3x4xf32> -> tensor<6x4xf32>
  %1 = kiln.reshape %0 : tensor<6x4xf32> -> tensor<24xf32>
  %2 = kiln.reshape %0 : tensor<6x4xf32> -> tensor<2x3x4xf32>
  return %1, %2 : tensor<24xf32>, tensor<2x3x4xf32>
}

// -----

// CHECK-LABEL: func.func @transposes
// CHECK-SAME: (%[[X:.+]]: tensor<2x3x4xf32>)
// CHECK-NEXT: %[[T:.+]] = kiln.transpose %[[X]], [2, 1, 0] : tensor<2x3x4xf32> -> tensor<4x3x2xf32>
// CHECK-NEXT: return %[[X]], %[[T]]
func.func @transposes(%x: tensor<2x3x4xf32>) -> (tensor<2x3x4xf32>, tensor<4x3x2xf32>) {
  // [1, 0, 2] twice is the identity.
  %0 = kiln.transpose %x, [1, 0, 2] : tensor<2x3x4xf32> -> tensor<3x2x4xf32>
  %1 = kiln.transpose %0, [1, 0, 2] : tensor<3x2x4xf32> -> tensor<2x3x4xf32>
  // [1, 0, 2] then [2, 0, 1]: result dim i is x's dim [1, 0, 2][[2, 0, 1][i]] = [2, 1, 0].
  %2 = kiln.transpose %0, [2, 0, 1] : tensor<3x2x4xf32> -> tensor<4x3x2xf32>
  return %1, %2 : tensor<2x3x4xf32>, tensor<4x3x2xf32>
}

// -----

// CHECK-LABEL: func.func @identity_shapes
// CHECK-SAME: (%[[X:.+]]: tensor<2x3xf32>)
// CHECK-NEXT: return %[[X]], %[[X]], %[[X]], %[[X]]
func.func @identity_shapes(%x: tensor<2x3xf32>) -> (tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>) {
  %0 = kiln.slice %x [0:2, 0:3] : tensor<2x3xf32> -> tensor<2x3xf32>
  %1 = kiln.concat %x dim = 1 : tensor<2x3xf32> -> tensor<2x3xf32>
  %2 = kiln.broadcast_in_dim %x, dims = [0, 1] : tensor<2x3xf32> -> tensor<2x3xf32>
  %3 = kiln.pad %x low = [0, 0] high = [0, 0] interior = [0, 0] : tensor<2x3xf32> -> tensor<2x3xf32>
  return %0, %1, %2, %3 : tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>, tensor<2x3xf32>
}

// -----

// Nothing to simplify: canonicalize leaves the function as it is.
// CHECK-LABEL: func.func @unchanged
// CHECK-NEXT: kiln.matmul
// CHECK-NEXT: kiln.gelu tanh
// CHECK-NEXT: kiln.transpose
// CHECK-NEXT: kiln.reshape
// CHECK-NEXT: kiln.concat
// CHECK-NEXT: return
func.func @unchanged(%x: tensor<4x8xf32>, %w: tensor<8x8xf32>) -> tensor<64xf32> {
  %0 = kiln.matmul %x, %w : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %1 = kiln.gelu tanh %0 : tensor<4x8xf32>
  %2 = kiln.transpose %1, [1, 0] : tensor<4x8xf32> -> tensor<8x4xf32>
  %3 = kiln.reshape %2 : tensor<8x4xf32> -> tensor<32xf32>
  %4 = kiln.concat %3, %3 dim = 0 : tensor<32xf32>, tensor<32xf32> -> tensor<64xf32>
  return %4 : tensor<64xf32>
}

// -----

// A float splat cast to another float type is the rounded splat: the huge
// -inf and scale constants of attention stay literals after precision
// assignment. 0.1 rounds to bf16's 0.10009765625.
// CHECK-LABEL: func.func @cast_splat
// CHECK-DAG: kiln.constant dense<0xFF80> : tensor<2x8xbf16>
// CHECK-DAG: kiln.constant dense<1.000980e-01> : tensor<2x8xbf16>
// CHECK-NOT: kiln.cast
func.func @cast_splat() -> (tensor<2x8xbf16>, tensor<2x8xbf16>) {
  %0 = kiln.constant dense<0xFF800000> : tensor<2x8xf32>
  %1 = kiln.cast %0 : tensor<2x8xf32> to tensor<2x8xbf16>
  %2 = kiln.constant dense<0.1> : tensor<2x8xf32>
  %3 = kiln.cast %2 : tensor<2x8xf32> to tensor<2x8xbf16>
  return %1, %3 : tensor<2x8xbf16>, tensor<2x8xbf16>
}

// -----

// The VJP of slicing a tensor into three pieces: zero pads summed, which
// is one concatenation (the pads and adds each pass over the whole tensor).
// CHECK-LABEL: func.func @padded_pieces
// CHECK-SAME: (%[[A:.+]]: tensor<2x3xf32>, %[[B:.+]]: tensor<2x4xf32>, %[[C:.+]]: tensor<2x5xf32>)
// CHECK-NEXT: %[[J:.+]] = kiln.concat %[[A]], %[[B]], %[[C]] dim = 1 : tensor<2x3xf32>, tensor<2x4xf32>, tensor<2x5xf32> -> tensor<2x12xf32>
// CHECK-NEXT: return %[[J]]
func.func @padded_pieces(%a: tensor<2x3xf32>, %b: tensor<2x4xf32>, %c: tensor<2x5xf32>) -> tensor<2x12xf32> {
  %pc = kiln.pad %c low = [0, 7] high = [0, 0] interior = [0, 0] : tensor<2x5xf32> -> tensor<2x12xf32>
  %pb = kiln.pad %b low = [0, 3] high = [0, 5] interior = [0, 0] : tensor<2x4xf32> -> tensor<2x12xf32>
  %pa = kiln.pad %a low = [0, 0] high = [0, 9] interior = [0, 0] : tensor<2x3xf32> -> tensor<2x12xf32>
  %0 = kiln.add %pc, %pb : tensor<2x12xf32>
  %1 = kiln.add %0, %pa : tensor<2x12xf32>
  return %1 : tensor<2x12xf32>
}

// -----

// Pieces that overlap, leave a gap, or are padded along two dimensions are
// not a concatenation: canonicalize leaves them.
// CHECK-LABEL: func.func @padded_not_pieces
// CHECK-COUNT-3: kiln.add
// CHECK-NOT: kiln.concat
func.func @padded_not_pieces(%a: tensor<2x3xf32>, %b: tensor<2x4xf32>) -> (tensor<2x8xf32>, tensor<2x8xf32>, tensor<3x7xf32>) {
  %p0 = kiln.pad %a low = [0, 0] high = [0, 5] interior = [0, 0] : tensor<2x3xf32> -> tensor<2x8xf32>
  %p1 = kiln.pad %b low = [0, 2] high = [0, 2] interior = [0, 0] : tensor<2x4xf32> -> tensor<2x8xf32>
  %overlap = kiln.add %p0, %p1 : tensor<2x8xf32>
  %p2 = kiln.pad %a low = [0, 0] high = [0, 5] interior = [0, 0] : tensor<2x3xf32> -> tensor<2x8xf32>
  %p3 = kiln.pad %b low = [0, 4] high = [0, 0] interior = [0, 0] : tensor<2x4xf32> -> tensor<2x8xf32>
  %gap = kiln.add %p2, %p3 : tensor<2x8xf32>
  %p4 = kiln.pad %a low = [0, 0] high = [1, 4] interior = [0, 0] : tensor<2x3xf32> -> tensor<3x7xf32>
  %p5 = kiln.pad %b low = [1, 3] high = [0, 0] interior = [0, 0] : tensor<2x4xf32> -> tensor<3x7xf32>
  %two = kiln.add %p4, %p5 : tensor<3x7xf32>
  return %overlap, %gap, %two : tensor<2x8xf32>, tensor<2x8xf32>, tensor<3x7xf32>
}

// -----

// The VJP of a masked softmax needs no mask: softmax_grad is already zero
// where the forward select put -inf. With another mask, or another fill,
// the select stays.
// CHECK-LABEL: func.func @masked_softmax_grad
// CHECK-SAME: (%[[X:.+]]: tensor<4x4xf32>, %[[DY:.+]]: tensor<4x4xf32>, %[[M:.+]]: tensor<4x4xi1>, %[[M2:.+]]: tensor<4x4xi1>)
// CHECK: %[[S:.+]] = kiln.select %[[M]]
// CHECK-NEXT: %[[Y:.+]] = kiln.softmax %[[S]]
// CHECK-NEXT: %[[G:.+]] = kiln.softmax_grad %[[Y]], %[[DY]]
// CHECK-NEXT: %[[OTHER:.+]] = kiln.select %[[M2]], %[[G]]
// CHECK-NEXT: return %[[G]], %[[OTHER]]
func.func @masked_softmax_grad(%x: tensor<4x4xf32>, %dy: tensor<4x4xf32>, %m: tensor<4x4xi1>, %m2: tensor<4x4xi1>) -> (tensor<4x4xf32>, tensor<4x4xf32>) {
  %ninf = kiln.constant dense<0xFF800000> : tensor<4x4xf32>
  %zero = kiln.constant dense<0.0> : tensor<4x4xf32>
  %s = kiln.select %m, %x, %ninf : tensor<4x4xi1>, tensor<4x4xf32>
  %y = kiln.softmax %s : tensor<4x4xf32>
  %g = kiln.softmax_grad %y, %dy : tensor<4x4xf32>
  %0 = kiln.select %m, %g, %zero : tensor<4x4xi1>, tensor<4x4xf32>
  %1 = kiln.select %m2, %g, %zero : tensor<4x4xi1>, tensor<4x4xf32>
  return %0, %1 : tensor<4x4xf32>, tensor<4x4xf32>
}
