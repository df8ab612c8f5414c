// Round trip of the elementwise ops: print, re-parse, print again; and the
// generic form re-parses to the same IR.
// RUN: kiln-opt %s | kiln-opt | FileCheck %s
// RUN: kiln-opt %s --mlir-print-op-generic | kiln-opt | FileCheck %s

// CHECK-LABEL: func.func @binary
func.func @binary(%a: tensor<4x8xf32>, %b: tensor<4x8xf32>, %i: tensor<4xi32>) {
  // CHECK: kiln.add %{{.+}}, %{{.+}} : tensor<4x8xf32>
  %0 = kiln.add %a, %b : tensor<4x8xf32>
  // CHECK: kiln.sub %{{.+}}, %{{.+}} : tensor<4x8xf32>
  %1 = kiln.sub %a, %b : tensor<4x8xf32>
  // CHECK: kiln.mul %{{.+}}, %{{.+}} : tensor<4x8xf32>
  %2 = kiln.mul %a, %b : tensor<4x8xf32>
  // CHECK: kiln.div %{{.+}}, %{{.+}} : tensor<4x8xf32>
  %3 = kiln.div %a, %b : tensor<4x8xf32>
  // CHECK: kiln.max %{{.+}}, %{{.+}} : tensor<4x8xf32>
  %4 = kiln.max %a, %b : tensor<4x8xf32>
  // CHECK: kiln.add %{{.+}}, %{{.+}} : tensor<4xi32>
  %5 = kiln.add %i, %i : tensor<4xi32>
  return
}

// CHECK-LABEL: func.func @unary
func.func @unary(%a: tensor<2x3xbf16>, %f: tensor<2x3xf64>) {
  // CHECK: kiln.neg %{{.+}} : tensor<2x3xbf16>
  %0 = kiln.neg %a : tensor<2x3xbf16>
  // CHECK: kiln.exp %{{.+}} : tensor<2x3xbf16>
  %1 = kiln.exp %a : tensor<2x3xbf16>
  // CHECK: kiln.log %{{.+}} : tensor<2x3xf64>
  %2 = kiln.log %f : tensor<2x3xf64>
  // CHECK: kiln.sqrt %{{.+}} : tensor<2x3xf64>
  %3 = kiln.sqrt %f : tensor<2x3xf64>
  // CHECK: kiln.rsqrt %{{.+}} : tensor<2x3xf64>
  %4 = kiln.rsqrt %f : tensor<2x3xf64>
  // CHECK: kiln.tanh %{{.+}} : tensor<2x3xbf16>
  %5 = kiln.tanh %a : tensor<2x3xbf16>
  // CHECK: kiln.sigmoid %{{.+}} : tensor<2x3xbf16>
  %6 = kiln.sigmoid %a : tensor<2x3xbf16>
  // CHECK: kiln.gelu tanh %{{.+}} : tensor<2x3xbf16>
  %7 = kiln.gelu tanh %a : tensor<2x3xbf16>
  // CHECK: kiln.gelu none %{{.+}} : tensor<2x3xf64>
  %8 = kiln.gelu none %f : tensor<2x3xf64>
  // CHECK: kiln.silu %{{.+}} : tensor<2x3xbf16>
  %9 = kiln.silu %a : tensor<2x3xbf16>
  // CHECK: kiln.relu %{{.+}} : tensor<2x3xf64>
  %10 = kiln.relu %f : tensor<2x3xf64>
  return
}

// CHECK-LABEL: func.func @cast_compare_select
func.func @cast_compare_select(%a: tensor<8x8xf32>, %r: tensor<8x8xi32>, %c: tensor<8x8xi32>) {
  // CHECK: kiln.cast %{{.+}} : tensor<8x8xf32> to tensor<8x8xf16>
  %0 = kiln.cast %a : tensor<8x8xf32> to tensor<8x8xf16>
  // CHECK: %[[M:.+]] = kiln.compare ge, %{{.+}}, %{{.+}} : tensor<8x8xi32>
  %m = kiln.compare ge, %r, %c : tensor<8x8xi32>
  // CHECK: kiln.compare ne, %{{.+}}, %{{.+}} : tensor<8x8xf32>
  %n = kiln.compare ne, %a, %a : tensor<8x8xf32>
  // CHECK: kiln.select %[[M]], %{{.+}}, %{{.+}} : tensor<8x8xi1>, tensor<8x8xf32>
  %s = kiln.select %m, %a, %a : tensor<8x8xi1>, tensor<8x8xf32>
  // CHECK: kiln.cast %[[M]] : tensor<8x8xi1> to tensor<8x8xf32>
  %f = kiln.cast %m : tensor<8x8xi1> to tensor<8x8xf32>
  return
}
