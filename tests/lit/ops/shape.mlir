// Round trip of the shape ops.
// RUN: kiln-opt %s | kiln-opt | FileCheck %s
// RUN: kiln-opt %s --mlir-print-op-generic | kiln-opt | FileCheck %s

// CHECK-LABEL: func.func @shape
func.func @shape(%x: tensor<2x3x4xf32>, %v: tensor<4xf32>) {
  // CHECK: kiln.reshape %{{.+}} : tensor<2x3x4xf32> -> tensor<6x4xf32>
  %0 = kiln.reshape %x : tensor<2x3x4xf32> -> tensor<6x4xf32>
  // CHECK: kiln.transpose %{{.+}}, [2, 0, 1] : tensor<2x3x4xf32> -> tensor<4x2x3xf32>
  %1 = kiln.transpose %x, [2, 0, 1] : tensor<2x3x4xf32> -> tensor<4x2x3xf32>
  // CHECK: kiln.slice %{{.+}} [0:2, 1:3, 0:4:2] : tensor<2x3x4xf32> -> tensor<2x2x2xf32>
  %2 = kiln.slice %x [0:2, 1:3, 0:4:2] : tensor<2x3x4xf32> -> tensor<2x2x2xf32>
  // CHECK: kiln.concat %{{.+}}, %{{.+}} dim = 1 : tensor<2x3x4xf32>, tensor<2x3x4xf32> -> tensor<2x6x4xf32>
  %3 = kiln.concat %x, %x dim = 1 : tensor<2x3x4xf32>, tensor<2x3x4xf32> -> tensor<2x6x4xf32>
  // CHECK: kiln.broadcast_in_dim %{{.+}}, dims = [2] : tensor<4xf32> -> tensor<2x3x4xf32>
  %4 = kiln.broadcast_in_dim %v, dims = [2] : tensor<4xf32> -> tensor<2x3x4xf32>
  // CHECK: kiln.iota dim = 1 : tensor<8x8xi32>
  %5 = kiln.iota dim = 1 : tensor<8x8xi32>
  // CHECK: kiln.constant dense<0xFF800000> : tensor<8x8xf32>
  %6 = kiln.constant dense<0xFF800000> : tensor<8x8xf32>
  // CHECK: kiln.constant dense<[1, 2, 3]> : tensor<3xi64>
  %7 = kiln.constant dense<[1, 2, 3]> : tensor<3xi64>
  return
}
