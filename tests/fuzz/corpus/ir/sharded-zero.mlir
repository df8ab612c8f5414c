

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
