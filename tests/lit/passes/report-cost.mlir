// kiln-report-cost sums CostOpInterface per function.
// RUN: kiln-opt %s -kiln-report-cost | FileCheck %s
// RUN: kiln-opt %s -kiln-report-cost=annotate-ops | FileCheck %s --check-prefix=OPS
// RUN: kiln-opt %s -kiln-report-cost=print -o /dev/null | FileCheck %s --check-prefix=PRINT

// Linear layer: matmul 2·(4·8)·16·32 = 32768 FLOPs, then a bias add of 4·8·16
// = 512 FLOPs; the broadcast is free. Bytes: matmul (1024+512+512)·4 = 8192,
// broadcast (16+512)·4 = 2112, add 3·512·4 = 6144 -> 16448.
// CHECK-LABEL: func.func @linear
// CHECK-SAME: kiln.bytes = 16448 : i64, kiln.flops = 33280 : i64
// OPS: kiln.matmul {{.*}} {kiln.bytes = 8192 : i64, kiln.flops = 32768 : i64}
// OPS: kiln.broadcast_in_dim {{.*}} {kiln.bytes = 2112 : i64, kiln.flops = 0 : i64}
// OPS: kiln.add {{.*}} {kiln.bytes = 6144 : i64, kiln.flops = 512 : i64}
// PRINT: @linear: 33280 FLOPs, 16448 bytes
func.func @linear(%x: tensor<4x8x32xf32>, %w: tensor<32x16xf32>, %b: tensor<16xf32>) -> tensor<4x8x16xf32> {
  %y = kiln.matmul %x, %w : tensor<4x8x32xf32>, tensor<32x16xf32> -> tensor<4x8x16xf32>
  %bb = kiln.broadcast_in_dim %b, dims = [2] : tensor<16xf32> -> tensor<4x8x16xf32>
  %z = kiln.add %y, %bb : tensor<4x8x16xf32>
  return %z : tensor<4x8x16xf32>
}

// A function without kiln ops costs nothing.
// CHECK-LABEL: func.func @empty
// CHECK-SAME: kiln.bytes = 0 : i64, kiln.flops = 0 : i64
// PRINT: @empty: 0 FLOPs, 0 bytes
func.func @empty(%x: tensor<4xf32>) -> tensor<4xf32> {
  return %x : tensor<4xf32>
}


// Costs saturate instead of wrapping negative: 2·(2^23)^3 = 2^70 FLOPs (each
// tensor, 2^47 bytes, is within the verifier's limit).
// CHECK-LABEL: func.func @saturating_matmul
// CHECK-SAME: kiln.flops = 9223372036854775807 : i64
func.func @saturating_matmul(%a: tensor<8388608x8388608xbf16>, %b: tensor<8388608x8388608xbf16>) {
  %c = kiln.matmul %a, %b : tensor<8388608x8388608xbf16>, tensor<8388608x8388608xbf16> -> tensor<8388608x8388608xbf16>
  return
}
