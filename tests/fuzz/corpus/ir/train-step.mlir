func.func @train_step(%w: tensor<4xf32> {kiln.param = "w"}, %x: tensor<4xf32> {kiln.input = "x"})
    -> (tensor<f32> {kiln.output = "loss"}, tensor<4xf32> {kiln.grad = "w"}) {
  %p = kiln.mul %w, %x : tensor<4xf32>
  %l = kiln.reduce_sum %p, dims = [0] : tensor<4xf32> -> tensor<f32>
  return %l, %x : tensor<f32>, tensor<4xf32>
}
