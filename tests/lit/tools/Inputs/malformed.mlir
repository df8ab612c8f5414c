func.func @f(%a: tensor<2xf32>) {
  %0 = kiln.add %a, : tensor<2xf32>
