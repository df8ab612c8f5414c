// kiln-partition: per-rank shapes, and one collective per value and layout
// wherever an op needs another layout than the one its operand was made in.
// RUN: kiln-opt %s -split-input-file -kiln-propagate-sharding -kiln-partition | FileCheck %s
// RUN: kiln-opt %s -split-input-file -kiln-propagate-sharding -kiln-partition | kiln-opt -split-input-file | FileCheck %s

// Megatron's MLP on dp = 2, tp = 2: local shapes; the row-parallel partial
// sum all-reduced over tp before the add; the max gathers the split batch;
// the mean is scaled by 1/2 so the dp partial sums add up to the global
// mean; the results are summed over dp, and the weight gradient gathered
// whole for the caller. Each collective names its cause.
// CHECK-LABEL: func.func @train_step
// CHECK-SAME: (%[[X:.+]]: tensor<4x16xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[dp, _]>}, %[[W1:.+]]: tensor<16x16xf32> {{.*}}, %[[W2:.+]]: tensor<16x16xf32> {{.*}}, %[[B:.+]]: tensor<16xf32> {kiln.param = "b"})
// CHECK-SAME: -> (tensor<f32> {kiln.output = "loss"}, tensor<16x32xf32> {kiln.output = "dw"}) attributes {kiln.partitioned}
// CHECK: %[[H:.+]] = kiln.matmul %[[X]], %[[W1]] : tensor<4x16xf32>, tensor<16x16xf32> -> tensor<4x16xf32>
// CHECK: %[[Y:.+]] = kiln.matmul %{{.+}}, %[[W2]] : tensor<4x16xf32>, tensor<16x16xf32> -> tensor<4x16xf32>
// CHECK: %[[YS:.+]] = kiln.all_reduce %[[Y]] over "tp" {cause = "kiln.matmul at {{.*}}:{{[0-9]+}} leaves a partial sum over tp; kiln.add at {{.*}} needs it summed"} : tensor<4x16xf32>
// CHECK: %[[Z:.+]] = kiln.add %[[YS]], %{{.+}} : tensor<4x16xf32>
// CHECK: %[[ZW:.+]] = kiln.all_gather %[[Z]] over "dp" dim 0 {cause = "kiln.add at {{.*}} splits dimension 0 over dp; kiln.reduce_max at {{.*}} needs it whole"} : tensor<4x16xf32> -> tensor<8x16xf32>
// CHECK: kiln.reduce_max %[[ZW]], dims = [0] : tensor<8x16xf32> -> tensor<16xf32>
// CHECK: %[[M:.+]] = kiln.reduce_mean %[[Z]], dims = [0, 1] : tensor<4x16xf32> -> tensor<f32>
// CHECK: %[[HALF:.+]] = kiln.constant dense<5.000000e-01> : tensor<f32>
// CHECK: %[[MS:.+]] = kiln.mul %[[M]], %[[HALF]] : tensor<f32>
// Reductions run as soon as their operand exists (kiln-partition schedules
// them there), not where the result is first needed.
// CHECK-NEXT: %[[L:.+]] = kiln.all_reduce %[[MS]] over "dp" {cause = "kiln.reduce_mean at {{.*}} leaves a partial sum over dp; the function result needs it summed"} : tensor<f32>
// CHECK-NEXT: %[[DW:.+]] = kiln.matmul %[[X]], %[[H]] transpose_a : tensor<4x16xf32>, tensor<4x16xf32> -> tensor<16x16xf32>
// CHECK-NEXT: %[[G:.+]] = kiln.all_reduce %[[DW]] over "dp"
// CHECK: %[[GW:.+]] = kiln.all_gather %[[G]] over "tp" dim 1 {cause = "kiln.matmul at {{.*}} splits dimension 1 over tp; the function result needs it whole"} : tensor<16x16xf32> -> tensor<16x32xf32>
// CHECK: return %[[L]], %[[GW]]
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

// One all-reduce for a partial sum read by two ops; a splat constant and a
// whole-row slice take their per-rank shapes.
// CHECK-LABEL: func.func @train_step
// CHECK: %[[C:.+]] = kiln.constant dense<2.000000e+00> : tensor<2x3xf32>
// CHECK: %[[S:.+]] = kiln.slice %arg0 [0:2, 1:3] : tensor<2x4xf32> -> tensor<2x2xf32>
// CHECK: %[[R:.+]] = kiln.reduce_sum
// CHECK: %[[A:.+]] = kiln.all_reduce %[[R]] over "dp"
// CHECK-NOT: kiln.all_reduce
// CHECK: kiln.exp %[[A]]
// CHECK: kiln.neg %[[A]]
module attributes {kiln.mesh = #kiln.mesh<dp = 2>} {
func.func @train_step(%x: tensor<4x4xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[dp, _]>})
    -> (tensor<3xf32>, tensor<3xf32>, tensor<4x2xf32>) {
  %c = kiln.constant dense<2.0> : tensor<4x3xf32>
  %s = kiln.slice %x [0:4, 1:3] : tensor<4x4xf32> -> tensor<4x2xf32>
  %t = kiln.slice %x [0:4, 0:3] : tensor<4x4xf32> -> tensor<4x3xf32>
  %p = kiln.mul %t, %c : tensor<4x3xf32>
  %r = kiln.reduce_sum %p, dims = [0] : tensor<4x3xf32> -> tensor<3xf32>
  %e = kiln.exp %r : tensor<3xf32>
  %n = kiln.neg %r : tensor<3xf32>
  return %e, %n, %s : tensor<3xf32>, tensor<3xf32>, tensor<4x2xf32>
}
}

// -----

// A whole value an op needs split is cut to this rank's part, with no
// communication; a partial sum wanted split over its axis is
// reduce-scattered; a state split over dp (ZeRO) updates in its layout.
// CHECK-LABEL: func.func @train_step
// CHECK-SAME: %[[W:arg[0-9]+]]: tensor<4xf32> {kiln.param = "w"}
// CHECK-SAME: %[[M:arg[0-9]+]]: tensor<2xf32> {kiln.sharding = #kiln.sharding<[dp]>, kiln.state = "m"}
// CHECK: %[[WP:.+]] = kiln.take_shard %[[W]] over "dp" dim 0 {cause = "kiln.add at {{.*}} needs dimension 0 split over dp; parameter w made it whole"} : tensor<4xf32> -> tensor<2xf32>
// CHECK: kiln.add %{{.+}}, %[[WP]] : tensor<2xf32>
// CHECK: %[[G:.+]] = kiln.reduce_scatter %{{.+}} over "dp" dim 0 {{.*}} : tensor<4xf32> -> tensor<2xf32>
// CHECK: kiln.add %[[M]], %[[G]] : tensor<2xf32>
module attributes {kiln.mesh = #kiln.mesh<dp = 2>} {
func.func @train_step(%x: tensor<4xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[dp]>},
                      %w: tensor<4xf32> {kiln.param = "w"},
                      %m: tensor<4xf32> {kiln.state = "m", kiln.sharding = #kiln.sharding<[dp]>},
                      %g: tensor<8x4xf32> {kiln.input = "g", kiln.sharding = #kiln.sharding<[dp, _]>})
    -> (tensor<4xf32>, tensor<4xf32> {kiln.aliases = 2}) {
  %y = kiln.add %x, %w : tensor<4xf32>
  %s = kiln.reduce_sum %g, dims = [0] : tensor<8x4xf32> -> tensor<4xf32>
  %m2 = kiln.add %m, %s : tensor<4xf32>
  return %y, %m2 : tensor<4xf32>, tensor<4xf32>
}
}

// -----

// A sum of partial sums stays partial: the add takes both matmuls' partial
// products and one all_reduce sums the result. The first product is also
// needed summed by an exp: that sum is its own, and the add still reads
// the unsummed product (not the sum, which the second all_reduce would
// count twice).
// CHECK-LABEL: func.func @sum_of_partials
// CHECK: %[[P:.+]] = kiln.matmul %arg0, %arg1
// CHECK-NEXT: %[[PS:.+]] = kiln.all_reduce %[[P]] over "dp"
// CHECK: %[[Q:.+]] = kiln.matmul %arg2, %arg3
// CHECK: kiln.exp %[[PS]]
// CHECK: %[[S:.+]] = kiln.add %[[P]], %[[Q]]
// CHECK-NEXT: kiln.all_reduce %[[S]] over "dp" {cause = "kiln.add at {{.*}} leaves a partial sum over dp; the function result needs it summed"}
// CHECK-NOT: kiln.all_reduce %[[Q]]
module attributes {kiln.mesh = #kiln.mesh<dp = 2>} {
func.func @sum_of_partials(%a: tensor<4x8xf32> {kiln.sharding = #kiln.sharding<[_, dp]>},
                           %b: tensor<8x4xf32> {kiln.sharding = #kiln.sharding<[dp, _]>},
                           %c: tensor<4x8xf32> {kiln.sharding = #kiln.sharding<[_, dp]>},
                           %d: tensor<8x4xf32> {kiln.sharding = #kiln.sharding<[dp, _]>})
    -> (tensor<4x4xf32>, tensor<4x4xf32>) {
  %p = kiln.matmul %a, %b : tensor<4x8xf32>, tensor<8x4xf32> -> tensor<4x4xf32>
  %q = kiln.matmul %c, %d : tensor<4x8xf32>, tensor<8x4xf32> -> tensor<4x4xf32>
  %e = kiln.exp %p : tensor<4x4xf32>
  %s = kiln.add %p, %q : tensor<4x4xf32>
  return %e, %s : tensor<4x4xf32>, tensor<4x4xf32>
}
}

// -----

// Expert parallelism: tokens split by group meet experts split by expert.
// The experts' weight wins (the model wrote it); the tokens travel to
// their experts by one all_to_all (each rank's part exchanged, nothing
// gathered whole) and the experts' outputs travel back by another.
// CHECK-LABEL: func.func @experts
// CHECK-SAME: (%[[X:.+]]: tensor<2x8x4xf32> {{.*}}, %[[W:.+]]: tensor<2x4x4xf32>
// CHECK: %[[T:.+]] = kiln.transpose %[[X]], [1, 0, 2] : tensor<2x8x4xf32> -> tensor<8x2x4xf32>
// CHECK: %[[TE:.+]] = kiln.all_to_all %[[T]] over "ep" split 0 concat 1 {cause = "kiln.transpose at {{.*}} splits dimension 1 over ep; kiln.matmul at {{.*}} needs dimension 0 split over it instead"} : tensor<8x2x4xf32> -> tensor<2x8x4xf32>
// CHECK: %[[Y:.+]] = kiln.matmul %[[TE]], %[[W]] : tensor<2x8x4xf32>, tensor<2x4x4xf32> -> tensor<2x8x4xf32>
// CHECK: %[[B:.+]] = kiln.transpose %[[Y]], [1, 0, 2] : tensor<2x8x4xf32> -> tensor<8x2x4xf32>
// CHECK: %[[BG:.+]] = kiln.all_to_all %[[B]] over "ep" split 0 concat 1 {cause = "kiln.transpose at {{.*}} splits dimension 1 over ep; the function result needs dimension 0 split over it instead"} : tensor<8x2x4xf32> -> tensor<2x8x4xf32>
// CHECK-NOT: kiln.all_gather
// CHECK: return %[[BG]]
module attributes {kiln.mesh = #kiln.mesh<ep = 4>} {
func.func @experts(%x: tensor<8x8x4xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[ep, _, _]>},
                   %w: tensor<8x4x4xf32> {kiln.param = "w", kiln.sharding = #kiln.sharding<[ep, _, _]>})
    -> (tensor<8x8x4xf32> {kiln.sharding = #kiln.sharding<[ep, _, _]>}) {
  %t = kiln.transpose %x, [1, 0, 2] : tensor<8x8x4xf32> -> tensor<8x8x4xf32>
  %y = kiln.matmul %t, %w : tensor<8x8x4xf32>, tensor<8x4x4xf32> -> tensor<8x8x4xf32>
  %b = kiln.transpose %y, [1, 0, 2] : tensor<8x8x4xf32> -> tensor<8x8x4xf32>
  return %b : tensor<8x8x4xf32>
}
}

// -----

// A conflict settled by bytes (propagate-sharding.mlir): the small a is
// gathered, the large b keeps its split and is never gathered.
// CHECK-LABEL: func.func @train_step
// CHECK-SAME: (%[[A:.+]]: tensor<2x16xf32> {{.*}}, %[[B:.+]]: tensor<16x32xf32> {{.*}})
// CHECK: %[[AW:.+]] = kiln.all_gather %[[A]] over "dp" dim 0 {cause = "input a splits dimension 0 over dp; kiln.matmul at {{.*}} needs it whole"} : tensor<2x16xf32> -> tensor<4x16xf32>
// CHECK-NEXT: kiln.matmul %[[AW]], %[[B]] : tensor<4x16xf32>, tensor<16x32xf32> -> tensor<4x32xf32>
// CHECK-NOT: kiln.all_gather %[[B]]
module attributes {kiln.mesh = #kiln.mesh<dp = 2>} {
func.func @train_step(%a: tensor<4x16xf32> {kiln.input = "a", kiln.sharding = #kiln.sharding<[dp, _]>},
                      %b: tensor<16x64xf32> {kiln.input = "b", kiln.sharding = #kiln.sharding<[_, dp]>})
    -> (tensor<4x64xf32> {kiln.output = "p", kiln.sharding = #kiln.sharding<[_, dp]>}) {
  %p = kiln.matmul %a, %b : tensor<4x16xf32>, tensor<16x64xf32> -> tensor<4x64xf32>
  return %p : tensor<4x64xf32>
}
}
