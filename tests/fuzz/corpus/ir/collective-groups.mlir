module attributes {kiln.mesh = #kiln.mesh<edp = 2, ep = 2, tp = 1>} {
func.func @train_step(%x: tensor<2x4xf32> {kiln.input = "x"}) -> (tensor<4xf32> {kiln.output = "s"}, tensor<8x4xf32> {kiln.output = "g"}, tensor<2x4xf32> {kiln.output = "p"}) {
  %r = kiln.reduce_sum %x, dims = [0] : tensor<2x4xf32> -> tensor<4xf32>
  %s = kiln.all_reduce %r over "edp,ep" {cause = "fuzz"} : tensor<4xf32>
  %g = kiln.all_gather %x over "edp,ep" dim 0 {cause = "fuzz"} : tensor<2x4xf32> -> tensor<8x4xf32>
  %q = kiln.reduce_scatter %g over "ep,edp" dim 0 {cause = "fuzz"} : tensor<8x4xf32> -> tensor<2x4xf32>
  %p = kiln.take_shard %g over "edp,ep,tp" dim 0 {cause = "fuzz"} : tensor<8x4xf32> -> tensor<2x4xf32>
  return %s, %g, %p : tensor<4xf32>, tensor<8x4xf32>, tensor<2x4xf32>
}
}
