module {
  func.func @chain(%arg0: tensor<4x8xbf16>, %arg1: tensor<4x8xf32>) -> tensor<4x8xf32> {
    %0 = kiln.fusion(%arg0, %arg1) : (tensor<4x8xbf16>, tensor<4x8xf32>) -> tensor<4x8xf32> {
    ^bb0(%arg2: tensor<4x8xbf16>, %arg3: tensor<4x8xf32>):
      %1 = kiln.cast %arg2 : tensor<4x8xbf16> to tensor<4x8xf32>
      %2 = kiln.constant dense<2.000000e+00> : tensor<4x8xf32>
      %3 = kiln.mul %1, %2 : tensor<4x8xf32>
      %4 = kiln.add %3, %arg3 : tensor<4x8xf32>
      kiln.yield %4 : tensor<4x8xf32>
    }
    return %0 : tensor<4x8xf32>
  }

  func.func @diamond(%arg0: tensor<16xf32>, %arg1: tensor<16xf32>) -> tensor<16xf32> {
    %0 = kiln.fusion(%arg0, %arg1) : (tensor<16xf32>, tensor<16xf32>) -> tensor<16xf32> {
    ^bb0(%arg2: tensor<16xf32>, %arg3: tensor<16xf32>):
      %1 = kiln.compare gt, %arg2, %arg3 : tensor<16xf32>
      %2 = kiln.select %1, %arg2, %arg3 : tensor<16xi1>, tensor<16xf32>
      %3 = kiln.exp %2 : tensor<16xf32>
      %4 = kiln.mul %3, %2 : tensor<16xf32>
      kiln.yield %4 : tensor<16xf32>
    }
    return %0 : tensor<16xf32>
  }
}
