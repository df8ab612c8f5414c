// Round trip of kiln.matmul in its batched, shared-weight and transposed forms.
// RUN: kiln-opt %s | kiln-opt | FileCheck %s
// RUN: kiln-opt %s --mlir-print-op-generic | kiln-opt | FileCheck %s

// CHECK-LABEL: func.func @matmul
func.func @matmul(%x: tensor<4x8x64xf32>, %w: tensor<64x256xf32>, %q: tensor<2x3x8x16xbf16>,
                  %k: tensor<2x3x8x16xbf16>, %a: tensor<16x3xf64>, %b: tensor<5x16xf64>) {
  // CHECK: kiln.matmul %{{.+}}, %{{.+}} : tensor<4x8x64xf32>, tensor<64x256xf32> -> tensor<4x8x256xf32>
  %0 = kiln.matmul %x, %w : tensor<4x8x64xf32>, tensor<64x256xf32> -> tensor<4x8x256xf32>
  // CHECK: kiln.matmul %{{.+}}, %{{.+}} transpose_b : tensor<2x3x8x16xbf16>, tensor<2x3x8x16xbf16> -> tensor<2x3x8x8xf32>
  %1 = kiln.matmul %q, %k transpose_b : tensor<2x3x8x16xbf16>, tensor<2x3x8x16xbf16> -> tensor<2x3x8x8xf32>
  // CHECK: kiln.matmul %{{.+}}, %{{.+}} transpose_a transpose_b : tensor<16x3xf64>, tensor<5x16xf64> -> tensor<3x5xf64>
  %2 = kiln.matmul %a, %b transpose_a transpose_b : tensor<16x3xf64>, tensor<5x16xf64> -> tensor<3x5xf64>
  // CHECK: kiln.matmul %{{.+}}, %{{.+}} bias %{{.+}} transpose_a : tensor<16x3xf64>, tensor<16x5xf64>, tensor<5xf64> -> tensor<3x5xf64>
  %bt = kiln.transpose %b, [1, 0] : tensor<5x16xf64> -> tensor<16x5xf64>
  %bias = kiln.reduce_sum %b, dims = [1] : tensor<5x16xf64> -> tensor<5xf64>
  %4 = kiln.matmul %a, %bt bias %bias transpose_a : tensor<16x3xf64>, tensor<16x5xf64>, tensor<5xf64> -> tensor<3x5xf64>
  // CHECK: kiln.matmul %{{.+}}, %{{.+}} : tensor<64x256xf32>, tensor<4x256x64xf32> -> tensor<4x64x64xf32>
  %wt = kiln.reshape %w : tensor<64x256xf32> -> tensor<64x256xf32>
  %y = kiln.reshape %0 : tensor<4x8x256xf32> -> tensor<4x8x256xf32>
  %z = kiln.transpose %y, [0, 2, 1] : tensor<4x8x256xf32> -> tensor<4x256x8xf32>
  %zz = kiln.slice %z [0:4, 0:256, 0:8] : tensor<4x256x8xf32> -> tensor<4x256x8xf32>
  %big = kiln.concat %zz, %zz, %zz, %zz, %zz, %zz, %zz, %zz dim = 2 : tensor<4x256x8xf32>, tensor<4x256x8xf32>, tensor<4x256x8xf32>, tensor<4x256x8xf32>, tensor<4x256x8xf32>, tensor<4x256x8xf32>, tensor<4x256x8xf32>, tensor<4x256x8xf32> -> tensor<4x256x64xf32>
  %3 = kiln.matmul %wt, %big : tensor<64x256xf32>, tensor<4x256x64xf32> -> tensor<4x64x64xf32>
  return
}
