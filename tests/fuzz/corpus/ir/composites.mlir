func.func @forward(%w: tensor<8x8xf32> {kiln.param = "w"}, %b: tensor<8xf32> {kiln.param = "b"}, %x: tensor<2x4x8xf32> {kiln.input = "x"}, %t: tensor<2x4xi32> {kiln.input = "t"}) -> tensor<f32> {
  %y = kiln.matmul %x, %w : tensor<2x4x8xf32>, tensor<8x8xf32> -> tensor<2x4x8xf32>
  %bb = kiln.broadcast_in_dim %b, dims = [2] : tensor<8xf32> -> tensor<2x4x8xf32>
  %z = kiln.add %y, %bb : tensor<2x4x8xf32>
  %g = kiln.gelu tanh %z : tensor<2x4x8xf32>
  %s = kiln.softmax %g : tensor<2x4x8xf32>
  %l, %lse = kiln.cross_entropy %s, %t : tensor<2x4x8xf32>, tensor<2x4xi32> -> tensor<2x4xf32>, tensor<2x4xf32>
  %m = kiln.reduce_mean %l, dims = [0, 1] : tensor<2x4xf32> -> tensor<f32>
  return %m : tensor<f32>
}
