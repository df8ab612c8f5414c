// Without kiln.mesh on the module, the mesh option sets it.
// RUN: kiln-opt %s -kiln-propagate-sharding="mesh=dp=4" | FileCheck %s
// CHECK: module attributes {kiln.mesh = #kiln.mesh<dp = 4>}
// CHECK: kiln.reduce_sum {{.*}} {kiln.shardings = [#kiln.sharding<[_], partial = [dp]>]}
func.func @train_step(%x: tensor<8x3xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[dp, _]>}) -> tensor<3xf32> {
  %s = kiln.reduce_sum %x, dims = [0] : tensor<8x3xf32> -> tensor<3xf32>
  return %s : tensor<3xf32>
}
