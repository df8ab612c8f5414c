module attributes {kiln.mesh = #kiln.mesh<dp = 2>} {
func.func private @forward(%w: tensor<4xf32> {kiln.param = "w"}) -> tensor<f32>
func.func @train_step(%x: tensor<4xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[dp]>}) -> tensor<4xf32> {
  return %x : tensor<4xf32>
}
}
