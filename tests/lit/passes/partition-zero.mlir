// ZeRO through kiln-propagate-sharding{zero=N}: optimizer states (and at
// stage 3 parameters) split over dp; the gradient is reduce-scattered into
// the optimizer, the clipping norm all-reduces sums of squares, the updated
// parameter is gathered whole.
// RUN: kiln-opt %s -split-input-file -kiln-propagate-sharding="zero=1" -kiln-partition | FileCheck %s --check-prefix=ONE
// RUN: kiln-opt %s -split-input-file -kiln-propagate-sharding="zero=3" -kiln-partition | FileCheck %s --check-prefix=THREE

// ONE-LABEL: func.func @train_step
// ONE-SAME: %[[W:arg[0-9]+]]: tensor<4x3xf32> {kiln.param = "w"}
// ONE-SAME: tensor<2x3xf32> {kiln.sharding = #kiln.sharding<[dp, _]>, kiln.state = "w.adam_m"}
// ONE-SAME: tensor<2x3xf32> {kiln.sharding = #kiln.sharding<[dp, _]>, kiln.state = "w.adam_v"}
// ONE-SAME: %[[L:arg[0-9]+]]: tensor<f32> {kiln.state = "loss_scale"}
// ONE: %[[G:.+]] = kiln.matmul {{.*}} transpose_a : tensor<4x4xf32>, tensor<4x3xf32> -> tensor<4x3xf32>
// ONE: %[[GS:.+]] = kiln.reduce_scatter %[[G]] over "dp" dim 0 {cause = "the gradient of w (kiln.matmul at {{.*}}) leaves a partial sum over dp; kiln.global_norm at {{.*}} needs its part of dimension 0 summed"} : tensor<4x3xf32> -> tensor<2x3xf32>
// ONE: %[[N:.+]] = kiln.global_norm %[[GS]] : tensor<2x3xf32> -> tensor<f32>
// ONE: %[[SQ:.+]] = kiln.mul %[[N]], %[[N]] : tensor<f32>
// ONE: %[[SUM:.+]] = kiln.all_reduce %[[SQ]] over "dp" {cause = "the squares of gradients split over dp (1 tensors); kiln.global_norm at {{.*}} needs their sum"} : tensor<f32>
// ONE: %[[NORM:.+]] = kiln.sqrt %[[SUM]] : tensor<f32>
// ONE: %[[WP:.+]] = kiln.take_shard %[[W]] over "dp" dim 0
// ONE: %[[NP:[a-z_0-9]+]], %[[NM:[a-z_0-9]+]], %[[NV:[a-z_0-9]+]] = kiln.adamw_update %[[WP]], %[[GS]]
// ONE: %[[WHOLE:.+]] = kiln.all_gather %[[NP]] over "dp" dim 0 {{.*}} : tensor<2x3xf32> -> tensor<4x3xf32>
// ONE: return %[[NORM]], %[[WHOLE]], %[[NM]], %[[NV]]

// Stage 3: the parameter is split as stored and gathered where the
// forward needs it whole; the update stays split.
// THREE-LABEL: func.func @train_step
// THREE-SAME: %[[W:arg[0-9]+]]: tensor<2x3xf32> {kiln.param = "w", kiln.sharding = #kiln.sharding<[dp, _]>}
// THREE: %[[WW:.+]] = kiln.all_gather %[[W]] over "dp" dim 0 {cause = "parameter w splits dimension 0 over dp; kiln.matmul at {{.*}} needs it whole"} : tensor<2x3xf32> -> tensor<4x3xf32>
// THREE: kiln.matmul %{{.+}}, %[[WW]]
// THREE-NOT: kiln.take_shard
// THREE: kiln.adamw_update %[[W]],
// THREE-NOT: kiln.all_gather
// THREE: return
module attributes {kiln.mesh = #kiln.mesh<dp = 2>} {
func.func @train_step(%w: tensor<4x3xf32> {kiln.param = "w"},
                      %m: tensor<4x3xf32> {kiln.state = "w.adam_m"},
                      %v: tensor<4x3xf32> {kiln.state = "w.adam_v"},
                      %ls: tensor<f32> {kiln.state = "loss_scale"},
                      %x: tensor<8x4xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[dp, _]>},
                      %dy: tensor<8x3xf32> {kiln.input = "dy", kiln.sharding = #kiln.sharding<[dp, _]>},
                      %lr: tensor<f32> {kiln.input = "lr"}, %t: tensor<f32> {kiln.input = "step"})
    -> (tensor<f32> {kiln.output = "grad_norm"}, tensor<4x3xf32> {kiln.aliases = 0},
        tensor<4x3xf32> {kiln.aliases = 1}, tensor<4x3xf32> {kiln.aliases = 2}) {
  %y = kiln.matmul %x, %w : tensor<8x4xf32>, tensor<4x3xf32> -> tensor<8x3xf32>
  %d = kiln.mul %y, %dy : tensor<8x3xf32>
  %g = kiln.matmul %x, %d transpose_a : tensor<8x4xf32>, tensor<8x3xf32> -> tensor<4x3xf32>
  %n = kiln.global_norm %g : tensor<4x3xf32> -> tensor<f32>
  %w2, %m2, %v2 = kiln.adamw_update %w, %g, %m, %v, %lr, %t, %ls
      {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.1 : f32}
      : (tensor<4x3xf32>, tensor<4x3xf32>, tensor<4x3xf32>, tensor<4x3xf32>, tensor<f32>, tensor<f32>, tensor<f32>)
      -> (tensor<4x3xf32>, tensor<4x3xf32>, tensor<4x3xf32>)
  return %n, %w2, %m2, %v2 : tensor<f32>, tensor<4x3xf32>, tensor<4x3xf32>, tensor<4x3xf32>
}
}

// -----

// A parameter's ZeRO split is for storage: it decides no other op's
// layout. wpe [T, C] split over dp along T is gathered before the
// broadcast; its split does not spread into the broadcast's positions,
// which would meet the batch split over dp at the add (an all_to_all of
// the whole broadcast).
// THREE-LABEL: func.func @train_step
// THREE-SAME: tensor<4x6xf32> {kiln.param = "wpe", kiln.sharding = #kiln.sharding<[dp, _]>}
// THREE: %[[P:.+]] = kiln.all_gather %{{.+}} over "dp" dim 0 {cause = "parameter wpe splits dimension 0 over dp; kiln.broadcast_in_dim at {{.*}} needs it whole"} : tensor<4x6xf32> -> tensor<8x6xf32>
// THREE-NEXT: kiln.broadcast_in_dim %[[P]], dims = [1, 2] : tensor<8x6xf32> -> tensor<2x8x6xf32>
// THREE-NOT: kiln.all_to_all
// THREE: return
module attributes {kiln.mesh = #kiln.mesh<dp = 2>} {
func.func @train_step(%x: tensor<4x8x6xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[dp, _, _]>},
                      %p: tensor<8x6xf32> {kiln.param = "wpe"})
    -> (tensor<f32> {kiln.output = "loss"}) {
  %b = kiln.broadcast_in_dim %p, dims = [1, 2] : tensor<8x6xf32> -> tensor<4x8x6xf32>
  %s = kiln.add %x, %b : tensor<4x8x6xf32>
  %l = kiln.reduce_sum %s, dims = [0, 1, 2] : tensor<4x8x6xf32> -> tensor<f32>
  return %l : tensor<f32>
}
}
