// Several mesh axes on one dimension (experts over part of the dp ranks:
// the ranks an edp x ep grid, the batch split over both, major first).
// Only a dimension's last axis leaves by itself; a wanted axis is appended.
// RUN: kiln-opt %s -split-input-file -kiln-propagate-sharding | FileCheck %s --check-prefix=PROP
// RUN: kiln-opt %s -split-input-file -kiln-propagate-sharding -kiln-partition | FileCheck %s
// RUN: kiln-opt %s -split-input-file -kiln-propagate-sharding -kiln-partition | kiln-opt -split-input-file | FileCheck %s

// Slots split over edp x ep meet the experts split over ep: the matmul
// keeps edp on the slots (the major part it can), takes ep for the experts,
// and the slots move ep from dimension 1 to 0 with one all_to_all over ep;
// the result is gathered over ep, then edp, for the caller.
// PROP: kiln.mul {{.*}}#kiln.sharding<[_, {edp, ep}, _]>
// PROP: kiln.matmul {{.*}}#kiln.sharding<[ep, edp, _]>
// CHECK-LABEL: func.func @train_step
// CHECK-SAME: tensor<4x2x4xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[_, {edp, ep}, _]>}
// CHECK: %[[S:.+]] = kiln.mul
// CHECK: %[[A:.+]] = kiln.all_to_all %[[S]] over "ep" split 0 concat 1 {{.*}} : tensor<4x2x4xf32> -> tensor<2x4x4xf32>
// CHECK: %[[Y:.+]] = kiln.matmul %[[A]], %{{.+}} : tensor<2x4x4xf32>, tensor<2x4x6xf32> -> tensor<2x4x6xf32>
// CHECK: %[[G:.+]] = kiln.all_gather %[[Y]] over "ep" dim 0
// CHECK: kiln.all_gather %[[G]] over "edp" dim 1 {{.*}} : tensor<4x4x6xf32> -> tensor<4x8x6xf32>
module attributes {kiln.mesh = #kiln.mesh<edp = 2, ep = 2>} {
func.func @train_step(%x: tensor<4x8x4xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[_, {edp, ep}, _]>},
                      %w: tensor<4x4x6xf32> {kiln.param = "w", kiln.sharding = #kiln.sharding<[ep, _, _]>})
    -> (tensor<4x8x6xf32> {kiln.output = "y"}) {
  %s = kiln.mul %x, %x : tensor<4x8x4xf32>
  %y = kiln.matmul %s, %w : tensor<4x8x4xf32>, tensor<4x4x6xf32> -> tensor<4x8x6xf32>
  return %y : tensor<4x8x6xf32>
}
}

// -----

// A sum partial over edp and ep wanted split over both (a ZeRO state's
// gradient): one reduce_scatter over the group of both (edp major: the
// rank at (i, j) keeps chunk 2i + j, as the layout numbers them).
// CHECK-LABEL: func.func @train_step
// CHECK: %[[G:.+]] = kiln.reduce_sum {{.*}} -> tensor<4xf32>
// CHECK: %[[P:.+]] = kiln.reduce_scatter %[[G]] over "edp,ep" dim 0 {{.*}} : tensor<4xf32> -> tensor<1xf32>
// CHECK: return %[[P]]
module attributes {kiln.mesh = #kiln.mesh<edp = 2, ep = 2>} {
func.func @train_step(%x: tensor<8x4xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[{edp, ep}, _]>})
    -> (tensor<4xf32> {kiln.output = "g", kiln.sharding = #kiln.sharding<[{edp, ep}]>}) {
  %g = kiln.reduce_sum %x, dims = [0] : tensor<8x4xf32> -> tensor<4xf32>
  return %g : tensor<4xf32>
}
}

// -----

// The same sum wanted whole: one all_reduce over every rank of both axes
// (not one over edp and another over ep); and a value split over both on
// one dimension, wanted whole, gathered by one all_gather.
// CHECK-LABEL: func.func @train_step
// CHECK: %[[G:.+]] = kiln.reduce_sum {{.*}} -> tensor<4xf32>
// CHECK: %[[S:.+]] = kiln.all_reduce %[[G]] over "edp,ep" {{.*}} : tensor<4xf32>
// CHECK-NOT: kiln.all_reduce
// CHECK: %[[X:.+]] = kiln.all_gather %{{.+}} over "edp,ep" dim 0 {{.*}} : tensor<2x4xf32> -> tensor<8x4xf32>
// CHECK-NOT: kiln.all_gather
// CHECK: return %[[S]], %[[X]]
module attributes {kiln.mesh = #kiln.mesh<edp = 2, ep = 2>} {
func.func @train_step(%x: tensor<8x4xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[{edp, ep}, _]>})
    -> (tensor<4xf32> {kiln.output = "g", kiln.sharding = #kiln.sharding<[_]>},
        tensor<8x4xf32> {kiln.output = "x2", kiln.sharding = #kiln.sharding<[_, _]>}) {
  %g = kiln.reduce_sum %x, dims = [0] : tensor<8x4xf32> -> tensor<4xf32>
  %x2 = kiln.mul %x, %x : tensor<8x4xf32>
  return %g, %x2 : tensor<4xf32>, tensor<8x4xf32>
}
}
