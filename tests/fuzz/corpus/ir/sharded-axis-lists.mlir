module attributes {kiln.mesh = #kiln.mesh<edp = 2, ep = 2>} {
func.func @train_step(%x: tensor<4x8x4xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[_, {edp, ep}, _]>},
                      %w: tensor<4x4x6xf32> {kiln.param = "w", kiln.sharding = #kiln.sharding<[ep, _, _]>})
    -> (tensor<4x8x6xf32> {kiln.output = "y"}, tensor<4xf32> {kiln.output = "g", kiln.sharding = #kiln.sharding<[{edp, ep}]>}) {
  %s = kiln.mul %x, %x : tensor<4x8x4xf32>
  %y = kiln.matmul %s, %w : tensor<4x8x4xf32>, tensor<4x4x6xf32> -> tensor<4x8x6xf32>
  %g = kiln.reduce_sum %s, dims = [0, 1] : tensor<4x8x4xf32> -> tensor<4xf32>
  return %y, %g : tensor<4x8x6xf32>, tensor<4xf32>
}
}
