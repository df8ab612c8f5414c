// Round trip of the reductions.
// RUN: kiln-opt %s | kiln-opt | FileCheck %s
// RUN: kiln-opt %s --mlir-print-op-generic | kiln-opt | FileCheck %s

// CHECK-LABEL: func.func @reductions
func.func @reductions(%x: tensor<4x8x16xf32>) {
  // CHECK: kiln.reduce_sum %{{.+}}, dims = [0, 1] : tensor<4x8x16xf32> -> tensor<16xf32>
  %0 = kiln.reduce_sum %x, dims = [0, 1] : tensor<4x8x16xf32> -> tensor<16xf32>
  // CHECK: kiln.reduce_max %{{.+}}, dims = [2] : tensor<4x8x16xf32> -> tensor<4x8xf32>
  %1 = kiln.reduce_max %x, dims = [2] : tensor<4x8x16xf32> -> tensor<4x8xf32>
  // CHECK: kiln.reduce_mean %{{.+}}, dims = [0, 1, 2] : tensor<4x8x16xf32> -> tensor<f32>
  %2 = kiln.reduce_mean %x, dims = [0, 1, 2] : tensor<4x8x16xf32> -> tensor<f32>
  return
}
