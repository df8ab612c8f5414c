func.func @f(%w: tensor<4xf32> {kiln.param = "w"}, %x: tensor<4xf32> {kiln.input = "x"}) -> (tensor<4xf32> {kiln.output = "y"}) {
  %a = kiln.add %w, %x : tensor<4xf32>
  %y = kiln.add %a, %x : tensor<4xf32>
  return %y : tensor<4xf32>
}
