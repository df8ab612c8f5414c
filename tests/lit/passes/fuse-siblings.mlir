// kiln-fuse's sibling fusion: groups of one shape reading the same value
// become one fusion when the earlier group's readers all come after the
// later one; otherwise they stay apart.
// RUN: kiln-opt %s -split-input-file -kiln-fuse | FileCheck %s
// RUN: kiln-opt %s -split-input-file -kiln-fuse=siblings=false | FileCheck %s --check-prefix=OFF

// SwiGLU's backward: du = dh·silu(g) (a lone mul) and dg = dh·u·silu'(g)
// both read dh: one fusion yielding both, dh read once.
// CHECK-LABEL: func.func @swiglu
// CHECK: %[[F:.+]]:2 = kiln.fusion(%{{.+}}) : (tensor<4x8xbf16>, tensor<4x8xbf16>, tensor<4x8xbf16>, tensor<4x8xbf16>) -> (tensor<4x8xbf16>, tensor<4x8xbf16>)
// CHECK-NOT: kiln.fusion
// CHECK: kiln.matmul %[[F]]#0
// CHECK: kiln.matmul %[[F]]#1
// OFF-LABEL: func.func @swiglu
// OFF: kiln.mul
// OFF: kiln.fusion
func.func @swiglu(%dh: tensor<4x8xbf16>, %s: tensor<4x8xbf16>, %u: tensor<4x8xbf16>, %g: tensor<4x8xbf16>, %w: tensor<8x8xbf16>)
    -> (tensor<4x8xbf16>, tensor<4x8xbf16>) {
  %du = kiln.mul %dh, %s : tensor<4x8xbf16>
  %0 = kiln.mul %dh, %u : tensor<4x8xbf16>
  %1 = kiln.sigmoid %g : tensor<4x8xbf16>
  %2 = kiln.mul %0, %1 : tensor<4x8xbf16>
  %3 = kiln.mul %2, %g : tensor<4x8xbf16>
  %dg = kiln.add %2, %3 : tensor<4x8xbf16>
  %a = kiln.matmul %du, %w : tensor<4x8xbf16>, tensor<8x8xbf16> -> tensor<4x8xbf16>
  %b = kiln.matmul %dg, %w : tensor<4x8xbf16>, tensor<8x8xbf16> -> tensor<4x8xbf16>
  return %a, %b : tensor<4x8xbf16>, tensor<4x8xbf16>
}

// -----

// The earlier group's value is read (by a matmul) before the later group
// ends, and that matmul's product feeds the later group: merging would
// need the product inside the fusion before it exists. Two fusions.
// CHECK-LABEL: func.func @between
// CHECK: kiln.exp
// CHECK: kiln.matmul
// CHECK: kiln.fusion
func.func @between(%x: tensor<4x8xf32>, %w: tensor<8x8xf32>) -> tensor<4x8xf32> {
  %0 = kiln.exp %x : tensor<4x8xf32>
  %1 = kiln.matmul %0, %w : tensor<4x8xf32>, tensor<8x8xf32> -> tensor<4x8xf32>
  %2 = kiln.neg %x : tensor<4x8xf32>
  %3 = kiln.add %2, %1 : tensor<4x8xf32>
  return %3 : tensor<4x8xf32>
}

// -----

// Two lone ops reading x, both read later: one fusion at the later one,
// yielding both.
// CHECK-LABEL: func.func @pair
// CHECK: %[[F:.+]]:2 = kiln.fusion(%{{[^)]+}}) : (tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>)
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.exp
// CHECK-NEXT: kiln.neg
// CHECK: kiln.matmul %[[F]]#0
// OFF-LABEL: func.func @pair
// OFF-NOT: kiln.fusion
func.func @pair(%x: tensor<4x8xf32>, %y: tensor<4x8xf32>) -> (tensor<4x8xf32>, tensor<4x8xf32>) {
  %0 = kiln.exp %x : tensor<4x8xf32>
  %1 = kiln.neg %x : tensor<4x8xf32>
  %2 = kiln.matmul %0, %y transpose_b : tensor<4x8xf32>, tensor<4x8xf32> -> tensor<4x4xf32>
  %3 = kiln.matmul %2, %1 : tensor<4x4xf32>, tensor<4x8xf32> -> tensor<4x8xf32>
  return %3, %1 : tensor<4x8xf32>, tensor<4x8xf32>
}
