func.func @f(%a: tensor<2x3xf32>, %w: tensor<4x5xf32>) {
  %0 = kiln.matmul %a, %w : tensor<2x3xf32>, tensor<4x5xf32> -> tensor<2x5xf32>
  return
}
