// Two residual adds: the first feeds an rms_norm (fused), the second does
// not (left alone); an rms_norm of a non-add stays an rms_norm.
func.func @f(%x: tensor<2x3x8xf32>, %r: tensor<2x3x8xf32>, %w: tensor<8xf32>) -> (tensor<2x3x8xf32>, tensor<2x3xf32>, tensor<2x3x8xf32>, tensor<2x3x8xf32>) {
  %h = kiln.add %x, %r : tensor<2x3x8xf32>
  %y, %rstd = kiln.rms_norm %h, %w {epsilon = 1.0e-05 : f32} : tensor<2x3x8xf32>, tensor<8xf32> -> tensor<2x3x8xf32>, tensor<2x3xf32>
  %h2 = kiln.add %h, %y : tensor<2x3x8xf32>
  %y2, %rstd2 = kiln.rms_norm %x, %w {epsilon = 1.0e-05 : f32} : tensor<2x3x8xf32>, tensor<8xf32> -> tensor<2x3x8xf32>, tensor<2x3xf32>
  return %y, %rstd, %h2, %y2 : tensor<2x3x8xf32>, tensor<2x3xf32>, tensor<2x3x8xf32>, tensor<2x3x8xf32>
}
