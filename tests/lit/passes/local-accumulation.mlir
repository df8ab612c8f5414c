// kiln-propagate-sharding's local-accumulation: on data-parallel ranks the
// gradient accumulators hold each rank's partial sums, so @accumulate_step
// communicates nothing: w's gradient is itself partial over dp, and v's,
// which comes whole, is kept on dp's first rank (zero on the other: an
// exact partial sum) before it is added. A copy @accumulate_last_step
// returns the accumulators summed (an all_reduce as soon as the last
// gradient is added). @apply_step reads them whole.
// RUN: kiln-opt %s '-kiln-propagate-sharding=mesh=dp=2 local-accumulation=true' -kiln-partition | FileCheck %s
// RUN: kiln-opt %s '-kiln-propagate-sharding=mesh=dp=2 local-accumulation=true' -kiln-partition | kiln-opt | FileCheck %s

// CHECK-LABEL: func.func @accumulate_step
// CHECK-SAME: kiln.sharding = #kiln.sharding<[_, _], partial = [dp]>, kiln.state = "w.grad_acc"
// CHECK-SAME: -> (tensor<4x4xf32> {kiln.aliases = 2 : i64, kiln.sharding = #kiln.sharding<[_, _], partial = [dp]>}
// CHECK-NOT: kiln.all_reduce
// CHECK: %[[G:.+]] = kiln.matmul
// CHECK-NEXT: %[[A:.+]] = kiln.add %{{.+}}, %[[G]] : tensor<4x4xf32>
// CHECK: %[[V:.+]] = kiln.mul
// CHECK: %[[IOTA:.+]] = kiln.iota dim = 0 : tensor<2xi32>
// CHECK: %[[MINE:.+]] = kiln.take_shard %[[IOTA]] over "dp" dim 0 {cause = "kiln.add at {{.*}} needs a partial sum over dp
// CHECK: %[[FIRST:.+]] = kiln.compare eq, %[[MINE]]
// CHECK: %[[MASK:.+]] = kiln.broadcast_in_dim %[[FIRST]]
// CHECK: %[[KEPT:.+]] = kiln.select %[[MASK]], %[[V]]
// CHECK: %[[B:.+]] = kiln.add %{{.+}}, %[[KEPT]] : tensor<4xf32>
// CHECK-NOT: kiln.all_reduce
// CHECK: return %[[A]], %[[B]]
// CHECK-LABEL: func.func @accumulate_last_step
// CHECK-SAME: -> (tensor<4x4xf32> {kiln.aliases = 2 : i64, kiln.sharding = #kiln.sharding<[_, _]>}
// CHECK: %[[A2:.+]] = kiln.add
// CHECK-NEXT: %[[S:.+]] = kiln.all_reduce %[[A2]] over "dp"
// CHECK: return %[[S]],
// CHECK-LABEL: func.func @apply_step
// CHECK-NOT: kiln.all_reduce
// CHECK: return
module {
func.func @accumulate_step(%w: tensor<4x4xf32> {kiln.param = "w"},
                           %v: tensor<4xf32> {kiln.param = "v"},
                           %acc: tensor<4x4xf32> {kiln.state = "w.grad_acc", kiln.transient},
                           %vacc: tensor<4xf32> {kiln.state = "v.grad_acc", kiln.transient},
                           %x: tensor<8x4xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[dp, _]>})
    -> (tensor<4x4xf32> {kiln.aliases = 2 : i64}, tensor<4xf32> {kiln.aliases = 3 : i64}) {
  %g = kiln.matmul %x, %x transpose_a : tensor<8x4xf32>, tensor<8x4xf32> -> tensor<4x4xf32>
  %a = kiln.add %acc, %g : tensor<4x4xf32>
  %vg = kiln.mul %v, %v : tensor<4xf32>
  %b = kiln.add %vacc, %vg : tensor<4xf32>
  return %a, %b : tensor<4x4xf32>, tensor<4xf32>
}
func.func @apply_step(%w: tensor<4x4xf32> {kiln.param = "w"},
                      %acc: tensor<4x4xf32> {kiln.state = "w.grad_acc", kiln.transient})
    -> (tensor<4x4xf32> {kiln.aliases = 0 : i64}, tensor<4x4xf32> {kiln.aliases = 1 : i64}) {
  %n = kiln.sub %w, %acc : tensor<4x4xf32>
  %z = kiln.constant dense<0.0> : tensor<4x4xf32>
  return %n, %z : tensor<4x4xf32>, tensor<4x4xf32>
}
}
