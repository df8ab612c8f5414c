// kiln-propagate-sharding: the arguments' layouts spread through each op's
// factor rule; split reduction factors leave partial sums.
// RUN: kiln-opt %s -split-input-file -kiln-propagate-sharding | FileCheck %s
// RUN: kiln-opt %s -split-input-file -kiln-propagate-sharding | kiln-opt -split-input-file | FileCheck %s
// RUN: kiln-opt %s -split-input-file -kiln-propagate-sharding=sequence-parallel=true | FileCheck %s --check-prefix=SP

// Megatron's MLP: a batch split over dp, a column-parallel then a
// row-parallel weight over tp. The second matmul sums over its split k:
// partial over tp. A max over the split batch is not a sum: it stays
// unsplit (partitioning gathers its operand). The weight gradient sums over
// the batch: partial over dp, and split over tp like the weight. Results
// that replace no argument stay whole for the caller (no kiln.sharding).
// CHECK-LABEL: func.func @train_step
// CHECK-SAME: -> (tensor<f32> {kiln.output = "loss"}, tensor<16x32xf32> {kiln.output = "dw"})
// CHECK: kiln.matmul %arg0, %arg1 {kiln.shardings = [#kiln.sharding<[dp, tp]>]}
// CHECK: kiln.gelu tanh %{{.*}} {kiln.shardings = [#kiln.sharding<[dp, tp]>]}
// CHECK: kiln.matmul {{.*}} {kiln.shardings = [#kiln.sharding<[dp, _], partial = [tp]>]}
// CHECK: kiln.broadcast_in_dim %arg3, dims = [1] {kiln.shardings = [#kiln.sharding<[dp, _]>]}
// CHECK: kiln.add {{.*}} {kiln.shardings = [#kiln.sharding<[dp, _]>]}
// CHECK: kiln.reduce_max %{{[0-9]+}}, dims = [0] :
// CHECK: kiln.reduce_mean {{.*}} {kiln.shardings = [#kiln.sharding<[], partial = [dp]>]}
// CHECK: kiln.matmul %arg0, %{{.*}} transpose_a {kiln.shardings = [#kiln.sharding<[_, tp], partial = [dp]>]}
module attributes {kiln.mesh = #kiln.mesh<dp = 2, tp = 2>} {
func.func @train_step(%x: tensor<8x16xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[dp, _]>},
                      %w1: tensor<16x32xf32> {kiln.param = "w1", kiln.sharding = #kiln.sharding<[_, tp]>},
                      %w2: tensor<32x16xf32> {kiln.param = "w2", kiln.sharding = #kiln.sharding<[tp, _]>},
                      %b: tensor<16xf32> {kiln.param = "b"})
    -> (tensor<f32> {kiln.output = "loss"}, tensor<16x32xf32> {kiln.output = "dw"}) {
  %h = kiln.matmul %x, %w1 : tensor<8x16xf32>, tensor<16x32xf32> -> tensor<8x32xf32>
  %g = kiln.gelu tanh %h : tensor<8x32xf32>
  %y = kiln.matmul %g, %w2 : tensor<8x32xf32>, tensor<32x16xf32> -> tensor<8x16xf32>
  %bb = kiln.broadcast_in_dim %b, dims = [1] : tensor<16xf32> -> tensor<8x16xf32>
  %z = kiln.add %y, %bb : tensor<8x16xf32>
  %m = kiln.reduce_max %z, dims = [0] : tensor<8x16xf32> -> tensor<16xf32>
  %l = kiln.reduce_mean %z, dims = [0, 1] : tensor<8x16xf32> -> tensor<f32>
  %dw = kiln.matmul %x, %h transpose_a : tensor<8x16xf32>, tensor<8x32xf32> -> tensor<16x32xf32>
  return %l, %dw : tensor<f32>, tensor<16x32xf32>
}
}

// -----

// Reshapes carry a split major dimension
// ([4, 8, 16] -> [32, 16] -> [4, 8, 2, 8]), a slice of whole rows keeps it
// and a slice inside a split dimension would not; layer_norm_grad's rows
// are kept by dx and summed for dweight and dbias (partial, dx is not).
// An axis of size 1 splits nothing.
// CHECK-LABEL: module attributes {kiln.mesh = #kiln.mesh<dp = 4, tp = 1>}
// CHECK: kiln.reshape {{.*}} {kiln.shardings = [#kiln.sharding<[dp, _]>]} : tensor<4x8x16xf32> -> tensor<32x16xf32>
// CHECK: kiln.reshape {{.*}} {kiln.shardings = [#kiln.sharding<[dp, _, _, _]>]} : tensor<32x16xf32> -> tensor<4x8x2x8xf32>
// CHECK: kiln.slice {{.*}} {kiln.shardings = [#kiln.sharding<[dp, _, _, _]>]}
// CHECK: kiln.layer_norm_grad {{.*}} {kiln.shardings = [#kiln.sharding<[dp, _, _]>, #kiln.sharding<[_], partial = [dp]>, #kiln.sharding<[_], partial = [dp]>]}
// CHECK: kiln.add %arg4, %arg4 :
module attributes {kiln.mesh = #kiln.mesh<dp = 4, tp = 1>} {
func.func @train_step(%x: tensor<4x8x16xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[dp, _, _]>},
                      %w: tensor<16xf32> {kiln.param = "w"}, %mean: tensor<4x8xf32> {kiln.input = "mean"},
                      %rstd: tensor<4x8xf32> {kiln.input = "rstd"},
                      %t: tensor<16xf32> {kiln.input = "t", kiln.sharding = #kiln.sharding<[tp]>})
    -> (tensor<4x8x2x4xf32>, tensor<4x8x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>) {
  %r = kiln.reshape %x : tensor<4x8x16xf32> -> tensor<32x16xf32>
  %s = kiln.reshape %r : tensor<32x16xf32> -> tensor<4x8x2x8xf32>
  %h = kiln.slice %s [0:4, 0:8, 0:2, 0:4] : tensor<4x8x2x8xf32> -> tensor<4x8x2x4xf32>
  %dx, %dw, %db = kiln.layer_norm_grad %x, %w, %mean, %rstd, %x : tensor<4x8x16xf32>, tensor<16xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8x16xf32> -> tensor<4x8x16xf32>, tensor<16xf32>, tensor<16xf32>
  %tt = kiln.add %t, %t : tensor<16xf32>
  return %h, %dx, %dw, %db, %tt : tensor<4x8x2x4xf32>, tensor<4x8x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>
}
}

// -----

// Tensor-parallel attention: the packed projection [16, 48] is head-major
// (head, q|k|v, D), so its columns split over tp are a split over the 4
// heads: the reshape to [B, T, H, 3, D] takes tp on H, the slice of q
// keeps it. A reshape whose major factor tp does not divide ([B, T, 2, 8]
// -> [B, T, 16] over tp = 4: 2 heads) is not split from its consumer,
// although 4 divides 16: the consumer's operand is converted instead.
// CHECK-LABEL: module attributes {kiln.mesh = #kiln.mesh<dp = 1, tp = 4>}
// CHECK: kiln.matmul %arg0, %arg1 {kiln.shardings = [#kiln.sharding<[_, _, tp]>]}
// CHECK: kiln.reshape {{.*}} {kiln.shardings = [#kiln.sharding<[_, _, tp, _, _]>]} : tensor<2x8x48xf32> -> tensor<2x8x4x3x4xf32>
// CHECK: kiln.slice {{.*}} {kiln.shardings = [#kiln.sharding<[_, _, tp, _, _]>]}
// CHECK: kiln.reshape %arg3 : tensor<2x8x2x8xf32> -> tensor<2x8x16xf32>
// CHECK-NEXT: kiln.matmul {{.*}} {kiln.shardings = [#kiln.sharding<[_, _, _], partial = [tp]>]}
module attributes {kiln.mesh = #kiln.mesh<dp = 1, tp = 4>} {
func.func @train_step(%x: tensor<2x8x16xf32> {kiln.input = "x"},
                      %w: tensor<16x48xf32> {kiln.param = "w", kiln.sharding = #kiln.sharding<[_, tp]>},
                      %p: tensor<16x16xf32> {kiln.param = "p", kiln.sharding = #kiln.sharding<[tp, _]>},
                      %y: tensor<2x8x2x8xf32> {kiln.input = "y"})
    -> (tensor<2x8x4x1x4xf32>, tensor<2x8x16xf32>) {
  %qkv = kiln.matmul %x, %w : tensor<2x8x16xf32>, tensor<16x48xf32> -> tensor<2x8x48xf32>
  %heads = kiln.reshape %qkv : tensor<2x8x48xf32> -> tensor<2x8x4x3x4xf32>
  %q = kiln.slice %heads [0:2, 0:8, 0:4, 0:1, 0:4] : tensor<2x8x4x3x4xf32> -> tensor<2x8x4x1x4xf32>
  %merged = kiln.reshape %y : tensor<2x8x2x8xf32> -> tensor<2x8x16xf32>
  %out = kiln.matmul %merged, %p : tensor<2x8x16xf32>, tensor<16x16xf32> -> tensor<2x8x16xf32>
  return %q, %out : tensor<2x8x4x1x4xf32>, tensor<2x8x16xf32>
}
}

// -----

// Sequence parallelism (sequence-parallel=true): the [batch, sequence]
// input is split over tp along the sequence; at the matmul that meets the
// column-parallel weight, the weight's annotated split wins (the activation
// is gathered, the weight never is) and the product is split by columns,
// not by positions.
// SP-LABEL: func.func @train_step
// SP-SAME: kiln.sharding = #kiln.sharding<[dp, tp]>
// SP: kiln.embedding {{.*}} {kiln.shardings = [#kiln.sharding<[dp, tp, _]>]}
// SP: kiln.matmul {{.*}} {kiln.shardings = [#kiln.sharding<[dp, _, tp]>]}
module attributes {kiln.mesh = #kiln.mesh<dp = 2, tp = 2>} {
func.func @train_step(%ids: tensor<4x8xi32> {kiln.input = "tokens", kiln.sharding = #kiln.sharding<[dp, _]>},
                      %e: tensor<32x16xf32> {kiln.param = "e"},
                      %w: tensor<16x48xf32> {kiln.param = "w", kiln.sharding = #kiln.sharding<[_, tp]>})
    -> tensor<4x8x48xf32> {
  %x = kiln.embedding %e, %ids : tensor<32x16xf32>, tensor<4x8xi32> -> tensor<4x8x16xf32>
  %y = kiln.matmul %x, %w : tensor<4x8x16xf32>, tensor<16x48xf32> -> tensor<4x8x48xf32>
  return %y : tensor<4x8x48xf32>
}
}

// -----

// Conflicts the annotations leave open are settled by the bytes each
// choice converts. The matmul's a is split by rows over dp and b by
// columns: both cannot keep dp. Keeping a's split would gather b (16x64,
// 2 KiB a rank); keeping b's gathers a (4x16, 128 B a rank): the product
// is split by columns, although a comes first. The add's operands cost
// the same either way (an all_to_all of either): program order decides,
// the first operand's split wins.
// CHECK-LABEL: module attributes {kiln.mesh = #kiln.mesh<dp = 2>}
// CHECK: kiln.matmul %arg0, %arg1 {kiln.shardings = [#kiln.sharding<[_, dp]>]}
// CHECK: kiln.add %arg2, %arg3 {kiln.shardings = [#kiln.sharding<[dp, _]>]}
module attributes {kiln.mesh = #kiln.mesh<dp = 2>} {
func.func @train_step(%a: tensor<4x16xf32> {kiln.input = "a", kiln.sharding = #kiln.sharding<[dp, _]>},
                      %b: tensor<16x64xf32> {kiln.input = "b", kiln.sharding = #kiln.sharding<[_, dp]>},
                      %c: tensor<8x8xf32> {kiln.input = "c", kiln.sharding = #kiln.sharding<[dp, _]>},
                      %d: tensor<8x8xf32> {kiln.input = "d", kiln.sharding = #kiln.sharding<[_, dp]>})
    -> (tensor<4x64xf32> {kiln.output = "p"}, tensor<8x8xf32> {kiln.output = "s"}) {
  %p = kiln.matmul %a, %b : tensor<4x16xf32>, tensor<16x64xf32> -> tensor<4x64xf32>
  %s = kiln.add %c, %d : tensor<8x8xf32>
  return %p, %s : tensor<4x64xf32>, tensor<8x8xf32>
}
}
