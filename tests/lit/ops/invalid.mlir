// Every verifier message of the kiln dialect, one case each.
// RUN: kiln-opt %s -split-input-file -verify-diagnostics

func.func @same_types_operand(%a: tensor<2x3xf32>, %b: tensor<3x2xf32>) {
  // expected-error @+1 {{'kiln.add' op operand #1 type 'tensor<3x2xf32>' does not match operand #0 type 'tensor<2x3xf32>'}}
  %0 = "kiln.add"(%a, %b) : (tensor<2x3xf32>, tensor<3x2xf32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @same_types_result(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.exp' op result #0 type 'tensor<2x3xf16>' does not match operand type 'tensor<2x3xf32>'}}
  %0 = "kiln.exp"(%a) : (tensor<2x3xf32>) -> tensor<2x3xf16>
  return
}

// -----

func.func @float_only(%a: tensor<4xi32>) {
  // expected-error @+1 {{'kiln.exp' op operand #0 must be statically shaped tensor of}}
  %0 = kiln.exp %a : tensor<4xi32>
  return
}

// -----

func.func @dynamic_shape(%a: tensor<?xf32>) {
  // expected-error @+1 {{'kiln.neg' op operand #0 must be statically shaped tensor}}
  %0 = kiln.neg %a : tensor<?xf32>
  return
}

// -----

func.func @cast_shape(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.cast' op result type 'tensor<3x2xbf16>' must have the shape of operand type 'tensor<2x3xf32>'}}
  %0 = kiln.cast %a : tensor<2x3xf32> to tensor<3x2xbf16>
  return
}

// -----

func.func @compare_operands(%a: tensor<4xf32>, %b: tensor<4xf64>) {
  // expected-error @+1 {{'kiln.compare' op operand types differ: 'tensor<4xf32>' vs 'tensor<4xf64>'}}
  %0 = "kiln.compare"(%a, %b) {direction = 2 : i32} : (tensor<4xf32>, tensor<4xf64>) -> tensor<4xi1>
  return
}

// -----

func.func @compare_result(%a: tensor<4xf32>) {
  // expected-error @+1 {{'kiln.compare' op result type 'tensor<8xi1>' must have the shape of operand type 'tensor<4xf32>'}}
  %0 = "kiln.compare"(%a, %a) {direction = 2 : i32} : (tensor<4xf32>, tensor<4xf32>) -> tensor<8xi1>
  return
}

// -----

func.func @select_branches(%c: tensor<4xi1>, %a: tensor<4xf32>, %b: tensor<4xf16>) {
  // expected-error @+1 {{'kiln.select' op branch types differ: 'tensor<4xf32>' vs 'tensor<4xf16>'}}
  %0 = "kiln.select"(%c, %a, %b) : (tensor<4xi1>, tensor<4xf32>, tensor<4xf16>) -> tensor<4xf32>
  return
}

// -----

func.func @select_result(%c: tensor<4xi1>, %a: tensor<4xf32>) {
  // expected-error @+1 {{'kiln.select' op result type 'tensor<4xf16>' does not match branch type 'tensor<4xf32>'}}
  %0 = "kiln.select"(%c, %a, %a) : (tensor<4xi1>, tensor<4xf32>, tensor<4xf32>) -> tensor<4xf16>
  return
}

// -----

func.func @select_cond(%c: tensor<2xi1>, %a: tensor<4xf32>) {
  // expected-error @+1 {{'kiln.select' op condition type 'tensor<2xi1>' must have the shape of result type 'tensor<4xf32>'}}
  %0 = kiln.select %c, %a, %a : tensor<2xi1>, tensor<4xf32>
  return
}

// -----

func.func @reshape_elements(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.reshape' op cannot reshape 'tensor<2x3xf32>' (6 elements) to 'tensor<7xf32>' (7 elements)}}
  %0 = kiln.reshape %a : tensor<2x3xf32> -> tensor<7xf32>
  return
}

// -----

func.func @reshape_element_type(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.reshape' op element types differ: 'tensor<2x3xf32>' vs 'tensor<6xf16>'}}
  %0 = kiln.reshape %a : tensor<2x3xf32> -> tensor<6xf16>
  return
}

// -----

func.func @transpose_size(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.transpose' op permutation [0] has 1 entries for operand type 'tensor<2x3xf32>'}}
  %0 = kiln.transpose %a, [0] : tensor<2x3xf32> -> tensor<2x3xf32>
  return
}

// -----

func.func @transpose_not_permutation(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.transpose' op permutation [1, 1] is not a permutation of [0, 2)}}
  %0 = kiln.transpose %a, [1, 1] : tensor<2x3xf32> -> tensor<3x3xf32>
  return
}

// -----

func.func @transpose_result(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.transpose' op result type 'tensor<2x3xf32>' does not match operand type 'tensor<2x3xf32>' permuted by [1, 0] (expected shape [3, 2])}}
  %0 = kiln.transpose %a, [1, 0] : tensor<2x3xf32> -> tensor<2x3xf32>
  return
}

// -----

func.func @slice_rank(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.slice' op slice ranges have 1 entries for operand type 'tensor<2x3xf32>' of rank 2}}
  %0 = kiln.slice %a [0:2] : tensor<2x3xf32> -> tensor<2x3xf32>
  return
}

// -----

func.func @slice_stride(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.slice' op stride 0 of dimension 1 must be positive}}
  %0 = kiln.slice %a [0:2, 0:3:0] : tensor<2x3xf32> -> tensor<2x3xf32>
  return
}

// -----

func.func @slice_range(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.slice' op range 1:4 of dimension 1 is outside operand type 'tensor<2x3xf32>'}}
  %0 = kiln.slice %a [0:2, 1:4] : tensor<2x3xf32> -> tensor<2x3xf32>
  return
}

// -----

func.func @slice_result(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.slice' op result type 'tensor<2x3xf32>' does not match the slice of 'tensor<2x3xf32>' (expected shape [2, 2])}}
  %0 = kiln.slice %a [0:2, 0:3:2] : tensor<2x3xf32> -> tensor<2x3xf32>
  return
}

// -----

func.func @concat_empty() {
  // expected-error @+1 {{'kiln.concat' op needs at least one input}}
  %0 = "kiln.concat"() {dim = 0 : i64} : () -> tensor<2xf32>
  return
}

// -----

func.func @concat_dim(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.concat' op dim 2 is outside the rank of input type 'tensor<2x3xf32>'}}
  %0 = kiln.concat %a, %a dim = 2 : tensor<2x3xf32>, tensor<2x3xf32> -> tensor<4x3xf32>
  return
}

// -----

func.func @concat_input_type(%a: tensor<2x3xf32>, %b: tensor<2x3xf16>) {
  // expected-error @+1 {{'kiln.concat' op input #1 type 'tensor<2x3xf16>' does not match input #0 type 'tensor<2x3xf32>'}}
  %0 = kiln.concat %a, %b dim = 0 : tensor<2x3xf32>, tensor<2x3xf16> -> tensor<4x3xf32>
  return
}

// -----

func.func @concat_other_dim(%a: tensor<2x3xf32>, %b: tensor<2x4xf32>) {
  // expected-error @+1 {{'kiln.concat' op input #1 type 'tensor<2x4xf32>' differs from input #0 type 'tensor<2x3xf32>' in dimension 1 (only dim 0 may differ)}}
  %0 = kiln.concat %a, %b dim = 0 : tensor<2x3xf32>, tensor<2x4xf32> -> tensor<4x3xf32>
  return
}

// -----

func.func @concat_result(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.concat' op result type 'tensor<5x3xf32>' does not match the concatenation (expected shape [4, 3] of 'f32')}}
  %0 = kiln.concat %a, %a dim = 0 : tensor<2x3xf32>, tensor<2x3xf32> -> tensor<5x3xf32>
  return
}

// -----

func.func @broadcast_element_type(%a: tensor<3xf32>) {
  // expected-error @+1 {{'kiln.broadcast_in_dim' op element types differ: 'tensor<3xf32>' vs 'tensor<2x3xf16>'}}
  %0 = kiln.broadcast_in_dim %a, dims = [1] : tensor<3xf32> -> tensor<2x3xf16>
  return
}

// -----

func.func @broadcast_dims_size(%a: tensor<3xf32>) {
  // expected-error @+1 {{'kiln.broadcast_in_dim' op dims [0, 1] has 2 entries for operand type 'tensor<3xf32>'}}
  %0 = kiln.broadcast_in_dim %a, dims = [0, 1] : tensor<3xf32> -> tensor<2x3xf32>
  return
}

// -----

func.func @broadcast_dims_range(%a: tensor<3xf32>) {
  // expected-error @+1 {{'kiln.broadcast_in_dim' op dims [2] has dimension 2 outside [0, 2)}}
  %0 = kiln.broadcast_in_dim %a, dims = [2] : tensor<3xf32> -> tensor<2x3xf32>
  return
}

// -----

func.func @broadcast_dims_order(%a: tensor<3x3xf32>) {
  // expected-error @+1 {{'kiln.broadcast_in_dim' op dims [1, 0] must be strictly increasing}}
  %0 = kiln.broadcast_in_dim %a, dims = [1, 0] : tensor<3x3xf32> -> tensor<3x3xf32>
  return
}

// -----

func.func @broadcast_size(%a: tensor<4xf32>) {
  // expected-error @+1 {{'kiln.broadcast_in_dim' op operand type 'tensor<4xf32>' dimension 0 (size 4) cannot broadcast to result type 'tensor<2x3xf32>' dimension 1 (size 3)}}
  %0 = kiln.broadcast_in_dim %a, dims = [1] : tensor<4xf32> -> tensor<2x3xf32>
  return
}

// -----

func.func @iota_dim() {
  // expected-error @+1 {{'kiln.iota' op dim 2 is outside the rank of result type 'tensor<4x4xi32>'}}
  %0 = kiln.iota dim = 2 : tensor<4x4xi32>
  return
}

// -----

func.func @constant_type() {
  // expected-error @+1 {{'kiln.constant' op failed to verify that all of {value, result} have same type}}
  %0 = "kiln.constant"() {value = dense<1.0> : tensor<4xf32>} : () -> tensor<4xf16>
  return
}

// -----

func.func @reduce_dims(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.reduce_sum' op dims [2] has dimension 2 outside [0, 2)}}
  %0 = kiln.reduce_sum %a, dims = [2] : tensor<2x3xf32> -> tensor<2xf32>
  return
}

// -----

func.func @reduce_result(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.reduce_max' op result type 'tensor<3xf32>' does not match operand type 'tensor<2x3xf32>' reduced over [1] (expected shape [2])}}
  %0 = kiln.reduce_max %a, dims = [1] : tensor<2x3xf32> -> tensor<3xf32>
  return
}

// -----

func.func @reduce_mean_order(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.reduce_mean' op dims [1, 0] must be strictly increasing}}
  %0 = kiln.reduce_mean %a, dims = [1, 0] : tensor<2x3xf32> -> tensor<f32>
  return
}

// -----

func.func @matmul_rank(%a: tensor<3xf32>, %b: tensor<3x4xf32>) {
  // expected-error @+1 {{'kiln.matmul' op operands must have rank >= 2, got 'tensor<3xf32>' and 'tensor<3x4xf32>'}}
  %0 = kiln.matmul %a, %b : tensor<3xf32>, tensor<3x4xf32> -> tensor<4xf32>
  return
}

// -----

func.func @matmul_bias(%a: tensor<2x3xf32>, %b: tensor<3x4xf32>, %c: tensor<3xf32>) {
  // expected-error @+1 {{'kiln.matmul' op bias type 'tensor<3xf32>' must be a vector of the result's 4 columns of 'f32' (result type 'tensor<2x4xf32>')}}
  %0 = kiln.matmul %a, %b bias %c : tensor<2x3xf32>, tensor<3x4xf32>, tensor<3xf32> -> tensor<2x4xf32>
  return
}

// -----

func.func @matmul_element_types(%a: tensor<2x3xf32>, %b: tensor<3x4xbf16>) {
  // expected-error @+1 {{'kiln.matmul' op operand element types differ: 'tensor<2x3xf32>' vs 'tensor<3x4xbf16>'}}
  %0 = kiln.matmul %a, %b : tensor<2x3xf32>, tensor<3x4xbf16> -> tensor<2x4xf32>
  return
}

// -----

func.func @matmul_result_element(%a: tensor<2x3xf32>, %b: tensor<3x4xf32>) {
  // expected-error @+1 {{'kiln.matmul' op result type 'tensor<2x4xbf16>' has element type 'bf16'; expected 'f32' (or f32 for bf16/f16 operands)}}
  %0 = kiln.matmul %a, %b : tensor<2x3xf32>, tensor<3x4xf32> -> tensor<2x4xbf16>
  return
}

// -----

func.func @matmul_batch(%a: tensor<2x2x3xf32>, %b: tensor<3x3x4xf32>) {
  // expected-error @+1 {{'kiln.matmul' op batch dimensions differ: 'tensor<2x2x3xf32>' vs 'tensor<3x3x4xf32>'}}
  %0 = kiln.matmul %a, %b : tensor<2x2x3xf32>, tensor<3x3x4xf32> -> tensor<2x2x4xf32>
  return
}

// -----

func.func @matmul_k(%a: tensor<2x3xf32>, %b: tensor<4x5xf32>) {
  // expected-error @+1 {{'kiln.matmul' op contracting dimensions differ: 'tensor<2x3xf32>' has K=3, 'tensor<4x5xf32>' has K=4}}
  %0 = kiln.matmul %a, %b : tensor<2x3xf32>, tensor<4x5xf32> -> tensor<2x5xf32>
  return
}

// -----

func.func @matmul_result(%a: tensor<2x3xf32>, %b: tensor<3x4xf32>) {
  // expected-error @+1 {{'kiln.matmul' op result type 'tensor<4x2xf32>' does not match 'tensor<2x3xf32>' x 'tensor<3x4xf32>' (expected shape [2, 4])}}
  %0 = kiln.matmul %a, %b : tensor<2x3xf32>, tensor<3x4xf32> -> tensor<4x2xf32>
  return
}

// -----

func.func @embedding_table(%t: tensor<8xf32>, %i: tensor<4xi32>) {
  // expected-error @+1 {{'kiln.embedding' op table type 'tensor<8xf32>' must be [g…, V, C] (a matrix, or a batch of them)}}
  %0 = kiln.embedding %t, %i : tensor<8xf32>, tensor<4xi32> -> tensor<4xf32>
  return
}

// -----

func.func @embedding_result(%t: tensor<8x16xf32>, %i: tensor<4xi32>) {
  // expected-error @+1 {{'kiln.embedding' op result type 'tensor<4x8xf32>' does not match table type 'tensor<8x16xf32>' gathered by ids type 'tensor<4xi32>' (expected shape [4, 16])}}
  %0 = kiln.embedding %t, %i : tensor<8x16xf32>, tensor<4xi32> -> tensor<4x8xf32>
  return
}

// -----

func.func @embedding_ids(%t: tensor<8x16xf32>, %i: tensor<4xf32>) {
  // expected-error @+1 {{'kiln.embedding' op operand #1 must be statically shaped tensor of 32-bit signless integer or 64-bit signless integer values}}
  %0 = kiln.embedding %t, %i : tensor<8x16xf32>, tensor<4xf32> -> tensor<4x16xf32>
  return
}

// -----

func.func @layer_norm_rank(%x: tensor<f32>, %w: tensor<1xf32>) {
  // expected-error @+1 {{'kiln.layer_norm' op input type 'tensor<f32>' must have rank >= 1}}
  %y, %m, %r = "kiln.layer_norm"(%x, %w, %w) {epsilon = 1.0e-05 : f32} : (tensor<f32>, tensor<1xf32>, tensor<1xf32>) -> (tensor<f32>, tensor<f32>, tensor<f32>)
  return
}

// -----

func.func @layer_norm_output(%x: tensor<2x8xf32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{'kiln.layer_norm' op output type 'tensor<2x4xf16>' does not match input type 'tensor<2x8xf32>'}}
  %y, %m, %r = kiln.layer_norm %x, %w, %w {epsilon = 1.0e-05 : f32} : tensor<2x8xf32>, tensor<8xf32>, tensor<8xf32> -> tensor<2x4xf16>, tensor<2xf32>, tensor<2xf32>
  return
}

// -----

// A narrower output is an f32 input's, rounded; never a wider one.
func.func @rms_norm_widened(%x: tensor<2x8xbf16>, %w: tensor<8xbf16>) {
  // expected-error @+1 {{'kiln.rms_norm' op output type 'tensor<2x8xf32>' does not match input type 'tensor<2x8xbf16>' (nor is it its shape in bf16/f16 for an f32 input)}}
  %y, %r = kiln.rms_norm %x, %w {epsilon = 1.0e-05 : f32} : tensor<2x8xbf16>, tensor<8xbf16> -> tensor<2x8xf32>, tensor<2xf32>
  return
}

// -----

func.func @layer_norm_weight(%x: tensor<2x8xf32>, %w: tensor<4xf32>, %b: tensor<8xf32>) {
  // expected-error @+1 {{'kiln.layer_norm' op weight type 'tensor<4xf32>' must be 'tensor<8xf32>' to match input type 'tensor<2x8xf32>'}}
  %y, %m, %r = kiln.layer_norm %x, %w, %b {epsilon = 1.0e-05 : f32} : tensor<2x8xf32>, tensor<4xf32>, tensor<8xf32> -> tensor<2x8xf32>, tensor<2xf32>, tensor<2xf32>
  return
}

// -----

func.func @layer_norm_bias(%x: tensor<2x8xf32>, %w: tensor<8xf32>, %b: tensor<8xf16>) {
  // expected-error @+1 {{'kiln.layer_norm' op bias type 'tensor<8xf16>' must be 'tensor<8xf32>' to match input type 'tensor<2x8xf32>'}}
  %y, %m, %r = kiln.layer_norm %x, %w, %b {epsilon = 1.0e-05 : f32} : tensor<2x8xf32>, tensor<8xf32>, tensor<8xf16> -> tensor<2x8xf32>, tensor<2xf32>, tensor<2xf32>
  return
}

// -----

func.func @layer_norm_mean(%x: tensor<2x8xbf16>, %w: tensor<8xbf16>) {
  // expected-error @+1 {{'kiln.layer_norm' op mean type 'tensor<2xbf16>' must be 'tensor<2xf32>' for input type 'tensor<2x8xbf16>'}}
  %y, %m, %r = kiln.layer_norm %x, %w, %w {epsilon = 1.0e-05 : f32} : tensor<2x8xbf16>, tensor<8xbf16>, tensor<8xbf16> -> tensor<2x8xbf16>, tensor<2xbf16>, tensor<2xf32>
  return
}

// -----

func.func @layer_norm_rstd(%x: tensor<2x8xf64>, %w: tensor<8xf64>) {
  // expected-error @+1 {{'kiln.layer_norm' op rstd type 'tensor<2xf32>' must be 'tensor<2xf64>' for input type 'tensor<2x8xf64>'}}
  %y, %m, %r = kiln.layer_norm %x, %w, %w {epsilon = 1.0e-05 : f32} : tensor<2x8xf64>, tensor<8xf64>, tensor<8xf64> -> tensor<2x8xf64>, tensor<2xf64>, tensor<2xf32>
  return
}

// -----

func.func @rms_norm_weight(%x: tensor<2x8xf32>, %w: tensor<2x8xf32>) {
  // expected-error @+1 {{'kiln.rms_norm' op weight type 'tensor<2x8xf32>' must be 'tensor<8xf32>' to match input type 'tensor<2x8xf32>'}}
  %y, %r = kiln.rms_norm %x, %w {epsilon = 1.0e-06 : f32} : tensor<2x8xf32>, tensor<2x8xf32> -> tensor<2x8xf32>, tensor<2xf32>
  return
}

// -----

func.func @rms_norm_rstd(%x: tensor<2x8xf32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{'kiln.rms_norm' op rstd type 'tensor<8xf32>' must be 'tensor<2xf32>' for input type 'tensor<2x8xf32>'}}
  %y, %r = kiln.rms_norm %x, %w {epsilon = 1.0e-06 : f32} : tensor<2x8xf32>, tensor<8xf32> -> tensor<2x8xf32>, tensor<8xf32>
  return
}

// -----

func.func @rms_norm_output(%x: tensor<2x8xf32>, %w: tensor<8xf32>) {
  // expected-error @+1 {{'kiln.rms_norm' op output type 'tensor<2x4xf32>' does not match input type 'tensor<2x8xf32>'}}
  %y, %r = kiln.rms_norm %x, %w {epsilon = 1.0e-06 : f32} : tensor<2x8xf32>, tensor<8xf32> -> tensor<2x4xf32>, tensor<2xf32>
  return
}

// -----

func.func @rope_odd(%x: tensor<4x7xf32>) {
  // expected-error @+1 {{'kiln.rope' op operand type 'tensor<4x7xf32>' must be [..., T, D] with an even head dimension D}}
  %0 = kiln.rope %x : tensor<4x7xf32>
  return
}

// -----

func.func @rope_theta(%x: tensor<4x8xf32>) {
  // expected-error @+1 {{'kiln.rope' op theta must be positive}}
  %0 = kiln.rope %x {theta = 0.0 : f32} : tensor<4x8xf32>
  return
}

// -----

func.func @cross_entropy_rank(%l: tensor<f32>, %t: tensor<i32>) {
  // expected-error @+1 {{'kiln.cross_entropy' op logits type 'tensor<f32>' must have rank >= 1}}
  %0, %1 = kiln.cross_entropy %l, %t : tensor<f32>, tensor<i32> -> tensor<f32>, tensor<f32>
  return
}

// -----

func.func @cross_entropy_targets(%l: tensor<2x8x64xf32>, %t: tensor<2x4xi32>) {
  // expected-error @+1 {{'kiln.cross_entropy' op targets type 'tensor<2x4xi32>' must have the shape of logits type 'tensor<2x8x64xf32>' without its last dimension}}
  %0, %1 = kiln.cross_entropy %l, %t : tensor<2x8x64xf32>, tensor<2x4xi32> -> tensor<2x8xf32>, tensor<2x8xf32>
  return
}

// -----

func.func @cross_entropy_loss(%l: tensor<2x8x64xbf16>, %t: tensor<2x8xi32>) {
  // expected-error @+1 {{'kiln.cross_entropy' op loss type 'tensor<2x8xbf16>' must be 'tensor<2x8xf32>' for input type 'tensor<2x8x64xbf16>'}}
  %0, %1 = kiln.cross_entropy %l, %t : tensor<2x8x64xbf16>, tensor<2x8xi32> -> tensor<2x8xbf16>, tensor<2x8xf32>
  return
}

// -----

func.func @cross_entropy_lse(%l: tensor<2x8x64xf32>, %t: tensor<2x8xi32>) {
  // expected-error @+1 {{'kiln.cross_entropy' op lse type 'tensor<2xf32>' must be 'tensor<2x8xf32>' for input type 'tensor<2x8x64xf32>'}}
  %0, %1 = kiln.cross_entropy %l, %t : tensor<2x8x64xf32>, tensor<2x8xi32> -> tensor<2x8xf32>, tensor<2xf32>
  return
}

// -----

func.func @cross_entropy_valid(%l: tensor<2x8x64xf32>, %t: tensor<2x8xi32>) {
  // expected-error @+1 {{'kiln.cross_entropy' op valid_classes 65 must be in [1, 64] for logits type 'tensor<2x8x64xf32>'}}
  %0, %1 = kiln.cross_entropy %l, %t {valid_classes = 65 : i64} : tensor<2x8x64xf32>, tensor<2x8xi32> -> tensor<2x8xf32>, tensor<2x8xf32>
  return
}

// -----

func.func @attention_rank(%q: tensor<2x8x16xf32>) {
  // expected-error @+1 {{'kiln.attention' op q, k and v must be [B, H, T, D]; got 'tensor<2x8x16xf32>', 'tensor<2x8x16xf32>', 'tensor<2x8x16xf32>'}}
  %o, %l = kiln.attention %q, %q, %q {scale = 1.0 : f32} : tensor<2x8x16xf32>, tensor<2x8x16xf32>, tensor<2x8x16xf32> -> tensor<2x8x16xf32>, tensor<2x8xf32>
  return
}

// -----

func.func @attention_segments_shape(%q: tensor<1x2x8x16xf32>, %s: tensor<1x6xi32>) {
  // expected-error @+1 {{'kiln.attention' op segments type 'tensor<1x6xi32>' must be [B, T] = [1, 8], with equal query and key lengths (q 'tensor<1x2x8x16xf32>', k 'tensor<1x2x8x16xf32>')}}
  %o, %l = kiln.attention %q, %q, %q segments %s {causal, scale = 1.0 : f32} : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x6xi32> -> tensor<1x2x8x16xf32>, tensor<1x2x8xf32>
  return
}

// -----

func.func @attention_segments_float(%q: tensor<1x2x8x16xf32>, %s: tensor<1x8xf32>) {
  // expected-error @+1 {{'kiln.attention' op operand #3 must be}}
  %o, %l = kiln.attention %q, %q, %q segments %s {scale = 1.0 : f32} : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x8xf32> -> tensor<1x2x8x16xf32>, tensor<1x2x8xf32>
  return
}

// -----

func.func @attention_types(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x16xbf16>) {
  // expected-error @+1 {{'kiln.attention' op element types of q 'tensor<1x2x8x16xf32>', k 'tensor<1x2x8x16xbf16>' and v 'tensor<1x2x8x16xbf16>' differ}}
  %o, %l = kiln.attention %q, %k, %k {scale = 1.0 : f32} : tensor<1x2x8x16xf32>, tensor<1x2x8x16xbf16>, tensor<1x2x8x16xbf16> -> tensor<1x2x8x16xf32>, tensor<1x2x8xf32>
  return
}

// -----

func.func @attention_k(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x8x8xf32>) {
  // expected-error @+1 {{'kiln.attention' op k type 'tensor<1x2x8x8xf32>' must match q type 'tensor<1x2x8x16xf32>' in batch and head dimension}}
  %o, %l = kiln.attention %q, %k, %k {scale = 1.0 : f32} : tensor<1x2x8x16xf32>, tensor<1x2x8x8xf32>, tensor<1x2x8x8xf32> -> tensor<1x2x8x8xf32>, tensor<1x2x8xf32>
  return
}

// -----

func.func @attention_v(%q: tensor<1x2x8x16xf32>, %v: tensor<1x2x4x16xf32>) {
  // expected-error @+1 {{'kiln.attention' op v type 'tensor<1x2x4x16xf32>' must match k type 'tensor<1x2x8x16xf32>' in batch, heads and sequence length}}
  %o, %l = kiln.attention %q, %q, %v {scale = 1.0 : f32} : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x4x16xf32> -> tensor<1x2x8x16xf32>, tensor<1x2x8xf32>
  return
}

// -----

func.func @attention_heads(%q: tensor<1x3x8x16xf32>, %k: tensor<1x2x8x16xf32>) {
  // expected-error @+1 {{'kiln.attention' op query heads (3 in 'tensor<1x3x8x16xf32>') must be a multiple of key/value heads (2 in 'tensor<1x2x8x16xf32>')}}
  %o, %l = kiln.attention %q, %k, %k {scale = 1.0 : f32} : tensor<1x3x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x3x8x16xf32>, tensor<1x3x8xf32>
  return
}

// -----

func.func @attention_causal(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x6x16xf32>) {
  // expected-error @+1 {{'kiln.attention' op causal attention needs equal query and key lengths; got 'tensor<1x2x8x16xf32>' and 'tensor<1x2x6x16xf32>'}}
  %o, %l = kiln.attention %q, %k, %k {causal, scale = 1.0 : f32} : tensor<1x2x8x16xf32>, tensor<1x2x6x16xf32>, tensor<1x2x6x16xf32> -> tensor<1x2x8x16xf32>, tensor<1x2x8xf32>
  return
}

// -----

func.func @attention_out(%q: tensor<1x2x8x16xf32>) {
  // expected-error @+1 {{'kiln.attention' op output type 'tensor<1x2x16x8xf32>' must be 'tensor<1x2x8x16xf32>'}}
  %o, %l = kiln.attention %q, %q, %q {scale = 1.0 : f32} : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x16x8xf32>, tensor<1x2x8xf32>
  return
}

// -----

func.func @attention_lse(%q: tensor<1x2x8x16xbf16>) {
  // expected-error @+1 {{'kiln.attention' op lse type 'tensor<1x2x8xbf16>' must be 'tensor<1x2x8xf32>'}}
  %o, %l = kiln.attention %q, %q, %q {scale = 1.0 : f32} : tensor<1x2x8x16xbf16>, tensor<1x2x8x16xbf16>, tensor<1x2x8x16xbf16> -> tensor<1x2x8x16xbf16>, tensor<1x2x8xbf16>
  return
}

// -----

// expected-error @+1 {{unknown kiln argument attribute 'kiln.weight' on argument #0 (expected kiln.param, kiln.input, kiln.state, kiln.init, kiln.role, kiln.copy_of, kiln.transient, kiln.sharding or kiln.offset)}}
func.func @unknown_arg_attr(%a: tensor<2xf32> {kiln.weight = "w"}) {
  return
}

// -----

// expected-error @+1 {{'kiln.param' on argument #0 must be a non-empty string, got 3 : i64}}
func.func @param_not_string(%a: tensor<2xf32> {kiln.param = 3}) {
  return
}

// -----

// expected-error @+1 {{argument #1 and argument #0 are both named "x"; kiln.param/kiln.input/kiln.state names must be unique}}
func.func @duplicate_names(%a: tensor<2xf32> {kiln.param = "x"}, %b: tensor<2xf32> {kiln.input = "x"}) {
  return
}

// -----

// expected-error @+1 {{argument #0 has two roles: kiln.input and kiln.param}}
func.func @param_and_input(%a: tensor<2xf32> {kiln.param = "w", kiln.input = "x"}) {
  return
}

// -----

// expected-error @+1 {{'kiln.init' on argument #0 must be "zeros", "ones", "normal(STD)" or "full(V)", got "gaussian"}}
func.func @bad_init(%a: tensor<2xf32> {kiln.param = "w", kiln.init = "gaussian"}) {
  return
}

// -----

// expected-error @+1 {{unknown kiln result attribute 'kiln.name' on result #0 (expected kiln.output, kiln.grad, kiln.aliases or kiln.sharding)}}
func.func @unknown_result_attr(%a: tensor<2xf32>) -> (tensor<2xf32> {kiln.name = "x"}) {
  return %a : tensor<2xf32>
}

// -----

// expected-error @+1 {{'kiln.output' on result #0 must be a non-empty string, got 1 : i64}}
func.func @output_not_string(%a: tensor<2xf32>) -> (tensor<2xf32> {kiln.output = 1}) {
  return %a : tensor<2xf32>
}

// -----

// expected-error @+1 {{result #0 is marked kiln.grad of "v", but no argument is that kiln.param}}
func.func @grad_of_unknown(%a: tensor<2xf32> {kiln.param = "w"}) -> (tensor<2xf32> {kiln.grad = "v"}) {
  return %a : tensor<2xf32>
}

// -----

// expected-error @+1 {{result #0 of type 'tensor<3xf32>' is the gradient of parameter "w" of type 'tensor<2xf32>'; the types must match}}
func.func @grad_type(%a: tensor<2xf32> {kiln.param = "w"}, %b: tensor<3xf32>) -> (tensor<3xf32> {kiln.grad = "w"}) {
  return %b : tensor<3xf32>
}

// -----

func.func @pad_entries(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.pad' op low, high and interior need 2 entries each for operand type 'tensor<2x3xf32>'}}
  %0 = kiln.pad %a low = [0] high = [0, 0] interior = [0, 0] : tensor<2x3xf32> -> tensor<2x3xf32>
  return
}

// -----

func.func @pad_negative(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.pad' op padding of dimension 1 must not be negative}}
  %0 = kiln.pad %a low = [0, -1] high = [0, 0] interior = [0, 0] : tensor<2x3xf32> -> tensor<2x2xf32>
  return
}

// -----

func.func @pad_result(%a: tensor<2x3xf32>) {
  // expected-error @+1 {{'kiln.pad' op result type 'tensor<2x3xf32>' does not match operand type 'tensor<2x3xf32>' padded (expected shape [2, 5])}}
  %0 = kiln.pad %a low = [0, 0] high = [0, 0] interior = [0, 1] : tensor<2x3xf32> -> tensor<2x3xf32>
  return
}

// -----

func.func @gelu_grad_types(%a: tensor<2x3xf32>, %b: tensor<2x3xf16>) {
  // expected-error @+1 {{'kiln.gelu_grad' op operand #1 type 'tensor<2x3xf16>' does not match operand #0 type 'tensor<2x3xf32>'}}
  %0 = "kiln.gelu_grad"(%a, %b) {approximate = 1 : i32} : (tensor<2x3xf32>, tensor<2x3xf16>) -> tensor<2x3xf32>
  return
}

// -----

func.func @softmax_grad_types(%a: tensor<2x3xf32>, %b: tensor<3x2xf32>) {
  // expected-error @+1 {{'kiln.softmax_grad' op operand #1 type 'tensor<3x2xf32>' does not match operand #0 type 'tensor<2x3xf32>'}}
  %0 = "kiln.softmax_grad"(%a, %b) : (tensor<2x3xf32>, tensor<3x2xf32>) -> tensor<2x3xf32>
  return
}

// -----

func.func @layer_norm_grad_rank(%x: tensor<f32>, %w: tensor<1xf32>) {
  // expected-error @+1 {{'kiln.layer_norm_grad' op input type 'tensor<f32>' must have rank >= 1}}
  %dx, %dw, %db = "kiln.layer_norm_grad"(%x, %w, %x, %x, %x) : (tensor<f32>, tensor<1xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<f32>, tensor<1xf32>, tensor<1xf32>)
  return
}

// -----

func.func @layer_norm_grad_dy(%x: tensor<2x8xf32>, %w: tensor<8xf32>, %s: tensor<2xf32>, %dy: tensor<2x4xf32>) {
  // expected-error @+1 {{'kiln.layer_norm_grad' op dy type 'tensor<2x4xf32>' must be 'tensor<2x8xf32>'}}
  %dx, %dw, %db = kiln.layer_norm_grad %x, %w, %s, %s, %dy : tensor<2x8xf32>, tensor<8xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2x4xf32> -> tensor<2x8xf32>, tensor<8xf32>, tensor<8xf32>
  return
}

// -----

// A narrower dy only for an f32 input (bf16 x with an f16 dy is refused).
func.func @layer_norm_grad_dy_narrow(%x: tensor<2x8xbf16>, %w: tensor<8xbf16>, %s: tensor<2xf32>, %dy: tensor<2x8xf16>) {
  // expected-error @+1 {{'kiln.layer_norm_grad' op dy type 'tensor<2x8xf16>' must be 'tensor<2x8xbf16>' (or its shape in bf16/f16 for an f32 input)}}
  %dx, %dw, %db = kiln.layer_norm_grad %x, %w, %s, %s, %dy : tensor<2x8xbf16>, tensor<8xbf16>, tensor<2xf32>, tensor<2xf32>, tensor<2x8xf16> -> tensor<2x8xbf16>, tensor<8xbf16>, tensor<8xbf16>
  return
}

// -----

func.func @layer_norm_grad_dbias(%x: tensor<2x8xf32>, %w: tensor<8xf32>, %s: tensor<2xf32>) {
  // expected-error @+1 {{'kiln.layer_norm_grad' op dbias type 'tensor<4xf32>' must be 'tensor<8xf32>'}}
  %dx, %dw, %db = kiln.layer_norm_grad %x, %w, %s, %s, %x : tensor<2x8xf32>, tensor<8xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2x8xf32> -> tensor<2x8xf32>, tensor<8xf32>, tensor<4xf32>
  return
}

// -----

func.func @layer_norm_grad_stats(%x: tensor<2x8xf32>, %w: tensor<8xf32>, %s: tensor<8xf32>) {
  // expected-error @+1 {{'kiln.layer_norm_grad' op mean type 'tensor<8xf32>' must be 'tensor<2xf32>' for input type 'tensor<2x8xf32>'}}
  %dx, %dw, %db = kiln.layer_norm_grad %x, %w, %s, %s, %x : tensor<2x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<2x8xf32> -> tensor<2x8xf32>, tensor<8xf32>, tensor<8xf32>
  return
}

// -----

func.func @rms_norm_grad_dweight(%x: tensor<2x8xf32>, %w: tensor<8xf32>, %s: tensor<2xf32>) {
  // expected-error @+1 {{'kiln.rms_norm_grad' op dweight type 'tensor<2xf32>' must be 'tensor<8xf32>'}}
  %dx, %dw = kiln.rms_norm_grad %x, %w, %s, %x : tensor<2x8xf32>, tensor<8xf32>, tensor<2xf32>, tensor<2x8xf32> -> tensor<2x8xf32>, tensor<2xf32>
  return
}

// -----

func.func @rms_norm_grad_rank(%x: tensor<f32>, %w: tensor<1xf32>) {
  // expected-error @+1 {{'kiln.rms_norm_grad' op input type 'tensor<f32>' must have rank >= 1}}
  %dx, %dw = "kiln.rms_norm_grad"(%x, %w, %x, %x) : (tensor<f32>, tensor<1xf32>, tensor<f32>, tensor<f32>) -> (tensor<f32>, tensor<1xf32>)
  return
}

// -----

func.func @rms_norm_grad_dx(%x: tensor<2x8xf32>, %w: tensor<8xf32>, %s: tensor<2xf32>) {
  // expected-error @+1 {{'kiln.rms_norm_grad' op dx type 'tensor<2x8xf16>' must be 'tensor<2x8xf32>'}}
  %dx, %dw = kiln.rms_norm_grad %x, %w, %s, %x : tensor<2x8xf32>, tensor<8xf32>, tensor<2xf32>, tensor<2x8xf32> -> tensor<2x8xf16>, tensor<8xf32>
  return
}

// -----

func.func @cross_entropy_grad_rank(%l: tensor<f32>, %t: tensor<i32>) {
  // expected-error @+1 {{'kiln.cross_entropy_grad' op logits type 'tensor<f32>' must have rank >= 1}}
  %0 = kiln.cross_entropy_grad %l, %t, %l, %l : tensor<f32>, tensor<i32>, tensor<f32>, tensor<f32> -> tensor<f32>
  return
}

// -----

func.func @cross_entropy_grad_targets(%l: tensor<2x8xf32>, %t: tensor<3xi32>, %s: tensor<2xf32>) {
  // expected-error @+1 {{'kiln.cross_entropy_grad' op targets type 'tensor<3xi32>' must have the shape of logits type 'tensor<2x8xf32>' without its last dimension}}
  %0 = kiln.cross_entropy_grad %l, %t, %s, %s : tensor<2x8xf32>, tensor<3xi32>, tensor<2xf32>, tensor<2xf32> -> tensor<2x8xf32>
  return
}

// -----

func.func @cross_entropy_grad_dloss(%l: tensor<2x8xf32>, %t: tensor<2xi32>, %s: tensor<2xf32>, %d: tensor<2xf16>) {
  // expected-error @+1 {{'kiln.cross_entropy_grad' op dloss type 'tensor<2xf16>' must be 'tensor<2xf32>' for input type 'tensor<2x8xf32>'}}
  %0 = kiln.cross_entropy_grad %l, %t, %s, %d : tensor<2x8xf32>, tensor<2xi32>, tensor<2xf32>, tensor<2xf16> -> tensor<2x8xf32>
  return
}

// -----

func.func @cross_entropy_grad_dlogits(%l: tensor<2x8xf32>, %t: tensor<2xi32>, %s: tensor<2xf32>) {
  // expected-error @+1 {{'kiln.cross_entropy_grad' op dlogits type 'tensor<2x4xf32>' must be 'tensor<2x8xf32>'}}
  %0 = kiln.cross_entropy_grad %l, %t, %s, %s : tensor<2x8xf32>, tensor<2xi32>, tensor<2xf32>, tensor<2xf32> -> tensor<2x4xf32>
  return
}

// -----

func.func @cross_entropy_grad_valid(%l: tensor<2x8xf32>, %t: tensor<2xi32>, %s: tensor<2xf32>) {
  // expected-error @+1 {{'kiln.cross_entropy_grad' op valid_classes 0 must be in [1, 8] for logits type 'tensor<2x8xf32>'}}
  %0 = kiln.cross_entropy_grad %l, %t, %s, %s {valid_classes = 0 : i64} : tensor<2x8xf32>, tensor<2xi32>, tensor<2xf32>, tensor<2xf32> -> tensor<2x8xf32>
  return
}

// -----

func.func @embedding_grad_table(%i: tensor<4xi32>, %dy: tensor<4x8xf32>) {
  // expected-error @+1 {{'kiln.embedding_grad' op result type 'tensor<32xf32>' must be [g…, V, C] (a matrix, or a batch of them)}}
  %0 = kiln.embedding_grad %i, %dy : tensor<4xi32>, tensor<4x8xf32> -> tensor<32xf32>
  return
}

// -----

func.func @embedding_grad_cotangent(%i: tensor<4xi32>, %dy: tensor<4x8xf32>) {
  // expected-error @+1 {{'kiln.embedding_grad' op cotangent type 'tensor<4x8xf32>' does not match ids type 'tensor<4xi32>' and table type 'tensor<10x6xf32>' (expected shape [4, 6])}}
  %0 = kiln.embedding_grad %i, %dy : tensor<4xi32>, tensor<4x8xf32> -> tensor<10x6xf32>
  return
}

// -----

func.func @embedding_grad_init(%i: tensor<4xi32>, %dy: tensor<4x6xf32>, %h: tensor<10x6xf64>) {
  // expected-error @+1 {{'kiln.embedding_grad' op init type 'tensor<10x6xf64>' must be the result type 'tensor<10x6xf32>' (or its shape in bf16/f16 for an f32 result)}}
  %0 = kiln.embedding_grad %i, %dy init %h : tensor<4xi32>, tensor<4x6xf32>, tensor<10x6xf64> -> tensor<10x6xf32>
  return
}

// -----

func.func @attention_grad_dout(%q: tensor<1x2x8x16xf32>, %lse: tensor<1x2x8xf32>, %d: tensor<1x2x8x8xf32>) {
  // expected-error @+1 {{'kiln.attention_grad' op dout type 'tensor<1x2x8x8xf32>' must be 'tensor<1x2x8x16xf32>'}}
  %dq, %dk, %dv = kiln.attention_grad %q, %q, %q, %q, %lse, %d {scale = 1.0 : f32} : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8xf32>, tensor<1x2x8x8xf32> -> tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>
  return
}

// -----

func.func @attention_grad_dk(%q: tensor<1x2x8x16xf32>, %lse: tensor<1x2x8xf32>) {
  // expected-error @+1 {{'kiln.attention_grad' op dk type 'tensor<1x1x8x16xf32>' must be 'tensor<1x2x8x16xf32>'}}
  %dq, %dk, %dv = kiln.attention_grad %q, %q, %q, %q, %lse, %q {scale = 1.0 : f32} : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>, tensor<1x1x8x16xf32>, tensor<1x2x8x16xf32>
  return
}

// -----

func.func @attention_grad_dq(%q: tensor<1x2x8x16xf32>, %lse: tensor<1x2x8xf32>) {
  // expected-error @+1 {{'kiln.attention_grad' op dq type 'tensor<1x2x8x16xf16>' must be 'tensor<1x2x8x16xf32>'}}
  %dq, %dk, %dv = kiln.attention_grad %q, %q, %q, %q, %lse, %q {scale = 1.0 : f32} : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf16>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>
  return
}

// -----

func.func @attention_grad_dv(%q: tensor<1x2x8x16xf32>, %lse: tensor<1x2x8xf32>) {
  // expected-error @+1 {{'kiln.attention_grad' op dv type 'tensor<1x2x4x16xf32>' must be 'tensor<1x2x8x16xf32>'}}
  %dq, %dk, %dv = kiln.attention_grad %q, %q, %q, %q, %lse, %q {scale = 1.0 : f32} : tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x4x16xf32>
  return
}

// -----

func.func @attention_grad_shapes(%q: tensor<1x2x8x16xf32>, %k: tensor<1x2x6x16xf32>, %lse: tensor<1x2x8xf32>) {
  // expected-error @+1 {{'kiln.attention_grad' op causal attention needs equal query and key lengths}}
  %dq, %dk, %dv = kiln.attention_grad %q, %k, %k, %q, %lse, %q {causal, scale = 1.0 : f32} : tensor<1x2x8x16xf32>, tensor<1x2x6x16xf32>, tensor<1x2x6x16xf32>, tensor<1x2x8x16xf32>, tensor<1x2x8xf32>, tensor<1x2x8x16xf32> -> tensor<1x2x8x16xf32>, tensor<1x2x6x16xf32>, tensor<1x2x6x16xf32>
  return
}

// -----

func.func @global_norm_empty() {
  // expected-error @+1 {{'kiln.global_norm' op needs at least one input}}
  %0 = "kiln.global_norm"() : () -> tensor<f32>
  return
}

// -----

func.func @global_norm_result(%a: tensor<4xf32>) {
  // expected-error @+1 {{'kiln.global_norm' op result type 'tensor<4xf32>' must be 'tensor<f32>'}}
  %0 = kiln.global_norm %a : tensor<4xf32> -> tensor<4xf32>
  return
}

// -----

func.func @adamw_grad(%p: tensor<4xf32>, %g: tensor<5xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'kiln.adamw_update' op grad type 'tensor<5xf32>' must have the shape of param type 'tensor<4xf32>'}}
  %0:3 = kiln.adamw_update %p, %g, %p, %p, %s, %s, %s {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<4xf32>, tensor<5xf32>, tensor<4xf32>, tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>)
  return
}

// -----

func.func @adamw_copy(%p: tensor<4xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'kiln.adamw_update' op new_copy type 'tensor<2x2xbf16>' must have the shape of param type 'tensor<4xf32>' and another element type}}
  %0:4 = kiln.adamw_update %p, %p, %p, %p, %s, %s, %s {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<2x2xbf16>)
  return
}

// -----

// expected-error @+1 {{'kiln.copy_of' on argument #1 belongs on a kiln.state argument}}
func.func @copy_of_not_state(%w: tensor<4xf32> {kiln.param = "w"}, %c: tensor<4xbf16> {kiln.input = "c", kiln.copy_of = "w"}) {
  return
}

// -----

// expected-error @+1 {{argument #1 is a copy of 'u', which is no kiln.param of this function}}
func.func @copy_of_unknown(%w: tensor<4xf32> {kiln.param = "w"}, %c: tensor<4xbf16> {kiln.state = "w.bf16", kiln.copy_of = "u"}) {
  return
}

// -----

// expected-error @+1 {{argument #1 of type 'tensor<2x2xbf16>' is a copy of parameter 'w' of type 'tensor<4xf32>'; both must be float tensors of one shape}}
func.func @copy_of_shape(%w: tensor<4xf32> {kiln.param = "w"}, %c: tensor<2x2xbf16> {kiln.state = "w.bf16", kiln.copy_of = "w"}) {
  return
}

// -----

// expected-error @+1 {{'kiln.transient' on argument #1 belongs on a kiln.state argument}}
func.func @transient_param(%w: tensor<4xf32> {kiln.param = "w"}, %a: tensor<4xf32> {kiln.param = "a", kiln.transient}) {
  return
}

// -----

// expected-error @+1 {{'kiln.transient' on argument #0 is a unit attribute, got "yes"}}
func.func @transient_value(%a: tensor<4xf32> {kiln.state = "w.grad_acc", kiln.transient = "yes"}) {
  return
}

// -----

func.func @adamw_m(%p: tensor<4xf32>, %m: tensor<2x2xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'kiln.adamw_update' op m type 'tensor<2x2xf32>' must have the shape of param type 'tensor<4xf32>'}}
  %0:3 = kiln.adamw_update %p, %p, %m, %m, %s, %s, %s {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<4xf32>, tensor<4xf32>, tensor<2x2xf32>, tensor<2x2xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4xf32>, tensor<2x2xf32>, tensor<2x2xf32>)
  return
}

// -----

func.func @adamw_v(%p: tensor<4xf32>, %v: tensor<4xf64>, %s: tensor<f32>) {
  // expected-error @+1 {{'kiln.adamw_update' op v type 'tensor<4xf64>' must match m type 'tensor<4xf32>'}}
  %0:3 = kiln.adamw_update %p, %p, %p, %v, %s, %s, %s {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf64>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>)
  return
}

// -----

func.func @adamw_scalar(%p: tensor<4xf32>, %lr: tensor<1xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'kiln.adamw_update' op lr type 'tensor<1xf32>' must be 'tensor<f32>'}}
  %0:3 = kiln.adamw_update %p, %p, %p, %p, %lr, %s, %s {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<1xf32>, tensor<f32>, tensor<f32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>)
  return
}

// -----

func.func @adamw_new_param(%p: tensor<4xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'kiln.adamw_update' op new_param type 'tensor<4xf16>' must be param type 'tensor<4xf32>'}}
  %0:3 = kiln.adamw_update %p, %p, %p, %p, %s, %s, %s {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4xf16>, tensor<4xf32>, tensor<4xf32>)
  return
}

// -----

func.func @adamw_new_moments(%p: tensor<4xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'kiln.adamw_update' op new moment types 'tensor<4xf32>' and 'tensor<4xf16>' must be m type 'tensor<4xf32>'}}
  %0:3 = kiln.adamw_update %p, %p, %p, %p, %s, %s, %s {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf16>)
  return
}

// -----

func.func @adamw_betas(%p: tensor<4xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'kiln.adamw_update' op beta1 = 1.000000e+00 and beta2 = 9.500000e-01 must be in [0, 1)}}
  %0:3 = kiln.adamw_update %p, %p, %p, %p, %s, %s, %s {beta1 = 1.0 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>)
  return
}

// -----

func.func @adamw_eps(%p: tensor<4xf32>, %s: tensor<f32>) {
  // expected-error @+1 {{'kiln.adamw_update' op epsilon must be positive and weight_decay non-negative}}
  %0:3 = kiln.adamw_update %p, %p, %p, %p, %s, %s, %s {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 0.0 : f32, weight_decay = 0.0 : f32} : (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>)
  return
}

// -----

// expected-error @+1 {{'kiln.role' on argument #0 must be "weight", "bias", "norm" or "embedding", got "matrix"}}
func.func @bad_role(%a: tensor<2xf32> {kiln.param = "w", kiln.role = "matrix"}) {
  return
}

// -----

// expected-error @+1 {{result #0 aliases argument #3, which does not exist}}
func.func @alias_range(%a: tensor<2xf32>) -> (tensor<2xf32> {kiln.aliases = 3 : i64}) {
  return %a : tensor<2xf32>
}

// -----

// expected-error @+1 {{result #0 of type 'tensor<3xf32>' aliases argument #0 of type 'tensor<2xf32>'; the types must match}}
func.func @alias_type(%a: tensor<2xf32>, %b: tensor<3xf32>) -> (tensor<3xf32> {kiln.aliases = 0 : i64}) {
  return %b : tensor<3xf32>
}

// -----

// Tensors past 2^48 bytes are refused, so sizes, offsets and costs cannot
// overflow (this one's byte count does not fit in int64).
func.func @huge(%a: tensor<4294967296x4294967296xf32>) {
  // expected-error @+1 {{'kiln.neg' op operand #0 type 'tensor<4294967296x4294967296xf32>' holds more than 2^63 bytes, more than kiln's limit of 2^48 bytes per tensor}}
  %b = kiln.neg %a : tensor<4294967296x4294967296xf32>
  return
}

// -----

func.func @just_over(%a: tensor<70368744177665xf32>) {
  // expected-error @+1 {{'kiln.neg' op operand #0 type 'tensor<70368744177665xf32>' holds 281474976710660 bytes, more than kiln's limit of 2^48 bytes per tensor}}
  %b = kiln.neg %a : tensor<70368744177665xf32>
  return
}

// -----

func.func @attention_bad_layout(%q: tensor<1x2x4x8xf32>) {
  // expected-error @+1 {{layout must be "bhtd" (the default) or "bthd"; got "thbd"}}
  %o, %l = kiln.attention %q, %q, %q {layout = "thbd", scale = 1.0 : f32} : tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32> -> tensor<1x2x4x8xf32>, tensor<1x2x4xf32>
  return
}

// -----

// bthd: q [B, T, H, D] = [1, 4, 2, 8], so lse is [B, H, T] = [1, 2, 4].
func.func @attention_bthd_lse(%q: tensor<1x4x2x8xf32>) {
  // expected-error @+1 {{lse type 'tensor<1x4x2xf32>' must be 'tensor<1x2x4xf32>'}}
  %o, %l = kiln.attention %q, %q, %q {layout = "bthd", scale = 1.0 : f32} : tensor<1x4x2x8xf32>, tensor<1x4x2x8xf32>, tensor<1x4x2x8xf32> -> tensor<1x4x2x8xf32>, tensor<1x4x2xf32>
  return
}

// -----

// bthd: k's heads are dimension 2 (3 does not divide q's 2 heads).
func.func @attention_bthd_heads(%q: tensor<1x4x2x8xf32>, %k: tensor<1x4x3x8xf32>) {
  // expected-error @+1 {{query heads (2 in 'tensor<1x4x2x8xf32>') must be a multiple of key/value heads (3 in 'tensor<1x4x3x8xf32>')}}
  %o, %l = kiln.attention %q, %k, %k {layout = "bthd", scale = 1.0 : f32} : tensor<1x4x2x8xf32>, tensor<1x4x3x8xf32>, tensor<1x4x3x8xf32> -> tensor<1x4x2x8xf32>, tensor<1x2x4xf32>
  return
}

// -----

func.func @attention_qkv_not_packed(%qkv: tensor<1x4x2x2x8xf32>) {
  // expected-error @+1 {{qkv must be [B, T, H, 3, D] (q, k and v of each head one after another); got 'tensor<1x4x2x2x8xf32>'}}
  %o, %l = kiln.attention_qkv %qkv {scale = 1.0 : f32} : tensor<1x4x2x2x8xf32> -> tensor<1x4x2x8xf32>, tensor<1x2x4xf32>
  return
}

// -----

func.func @attention_qkv_out(%qkv: tensor<1x4x2x3x8xf32>) {
  // expected-error @+1 {{output type 'tensor<1x2x4x8xf32>' must be 'tensor<1x4x2x8xf32>'}}
  %o, %l = kiln.attention_qkv %qkv {scale = 1.0 : f32} : tensor<1x4x2x3x8xf32> -> tensor<1x2x4x8xf32>, tensor<1x2x4xf32>
  return
}

// -----

func.func @attention_qkv_grad_type(%qkv: tensor<1x4x2x3x8xf32>, %o: tensor<1x4x2x8xf32>, %l: tensor<1x2x4xf32>) {
  // expected-error @+1 {{dqkv type 'tensor<1x4x2x3x8xbf16>' must be 'tensor<1x4x2x3x8xf32>'}}
  %d = kiln.attention_qkv_grad %qkv, %o, %l, %o {scale = 1.0 : f32} : tensor<1x4x2x3x8xf32>, tensor<1x4x2x8xf32>, tensor<1x2x4xf32>, tensor<1x4x2x8xf32> -> tensor<1x4x2x3x8xbf16>
  return
}

// -----

func.func @rope_position_dim(%x: tensor<2x5x3x8xf32>) {
  // expected-error @+1 {{position_dim 3 must be in [0, 2] for operand type 'tensor<2x5x3x8xf32>' (the last dimension is D)}}
  %y = kiln.rope %x {position_dim = 3 : i64} : tensor<2x5x3x8xf32>
  return
}

// -----

func.func @rope_negative_position_dim(%x: tensor<2x5x3x8xf32>) {
  // expected-error @+1 {{position_dim -1 must be in [0, 2] for operand type 'tensor<2x5x3x8xf32>' (the last dimension is D)}}
  %y = kiln.rope %x {position_dim = -1 : i64} : tensor<2x5x3x8xf32>
  return
}

// -----

func.func @moe_route_rank(%p: tensor<8xf32>) {
  // expected-error @+1 {{'kiln.moe_route' op probs type 'tensor<8xf32>' must be [g…, N, E] (groups, tokens, experts)}}
  %e, %s, %t = kiln.moe_route %p {top_k = 1 : i64, capacity = 4 : i64} : tensor<8xf32> -> tensor<8x1xi32>, tensor<8x1xi32>, tensor<4xi32>
  return
}

// -----

// Groups [g, N, E]: the results start with the groups.
func.func @moe_route_groups(%p: tensor<2x8x4xf32>) {
  // expected-error @+1 {{'kiln.moe_route' op expert type 'tensor<16x1xi32>' must have shape [2, 8, 1]}}
  %e, %s, %t = kiln.moe_route %p {top_k = 1 : i64, capacity = 4 : i64} : tensor<2x8x4xf32> -> tensor<16x1xi32>, tensor<16x1xi32>, tensor<16xi32>
  return
}

// -----

func.func @embedding_batch(%t: tensor<2x5x4xf32>, %i: tensor<3x7xi32>) {
  // expected-error @+1 {{'kiln.embedding' op ids type 'tensor<3x7xi32>' must start with the table's 1 batch dimensions (table type 'tensor<2x5x4xf32>')}}
  %x = kiln.embedding %t, %i : tensor<2x5x4xf32>, tensor<3x7xi32> -> tensor<3x7x4xf32>
  return
}

// -----

func.func @all_to_all_shape(%x: tensor<4x6xf32>) {
  // expected-error @+1 {{'kiln.all_to_all' op exchanges 'tensor<4x6xf32>' into 'tensor<2x6xf32>' splitting dimension 0 and concatenating dimension 1; the result must have the first divided and the second multiplied by one whole factor, the rest equal}}
  %y = kiln.all_to_all %x over "ep" split 0 concat 1 {cause = "test"} : tensor<4x6xf32> -> tensor<2x6xf32>
  return
}

// -----

func.func @moe_route_top_k(%p: tensor<16x4xf32>) {
  // expected-error @+1 {{'kiln.moe_route' op top_k 5 must be in [1, 4] (the experts)}}
  %e, %s, %t = kiln.moe_route %p {top_k = 5 : i64, capacity = 4 : i64} : tensor<16x4xf32> -> tensor<16x5xi32>, tensor<16x5xi32>, tensor<16xi32>
  return
}

// -----

func.func @moe_route_capacity(%p: tensor<16x4xf32>) {
  // expected-error @+1 {{'kiln.moe_route' op capacity 0 must be at least 1}}
  %e, %s, %t = kiln.moe_route %p {top_k = 1 : i64, capacity = 0 : i64} : tensor<16x4xf32> -> tensor<16x1xi32>, tensor<16x1xi32>, tensor<0xi32>
  return
}

// -----

func.func @moe_route_token_shape(%p: tensor<16x4xf32>) {
  // expected-error @+1 {{'kiln.moe_route' op token type 'tensor<16xi32>' must have shape [20]}}
  %e, %s, %t = kiln.moe_route %p {top_k = 2 : i64, capacity = 5 : i64} : tensor<16x4xf32> -> tensor<16x2xi32>, tensor<16x2xi32>, tensor<16xi32>
  return
}

// -----

func.func @moe_route_types(%p: tensor<16x4xf32>) {
  // expected-error @+1 {{'kiln.moe_route' op expert, slot and token must share one integer type}}
  %e, %s, %t = kiln.moe_route %p {top_k = 2 : i64, capacity = 5 : i64} : tensor<16x4xf32> -> tensor<16x2xi32>, tensor<16x2xi64>, tensor<20xi32>
  return
}

// -----

func.func @rope_empty(%x: tensor<4x0xf32>) {
  // expected-error @+1 {{'kiln.rope' op operand type 'tensor<4x0xf32>' must be [..., T, D] with an even head dimension D}}
  %0 = kiln.rope %x : tensor<4x0xf32>
  return
}

// -----

func.func @send_negative_peer(%x: tensor<4xf32>) {
  // expected-error @+1 {{'kiln.send' op peer -1 and channel 0 must both be at least 0}}
  kiln.send %x to -1 over "pp" channel 0 {cause = "test"} : tensor<4xf32>
  return
}

// -----

func.func @recv_no_axis() -> tensor<4xf32> {
  // expected-error @+1 {{'kiln.recv' op needs the mesh axis its peer is counted along}}
  %x = kiln.recv from 0 over "" channel 0 {cause = "test"} : tensor<4xf32>
  return %x : tensor<4xf32>
}

// -----

// A collective's group names mesh axes joined by ',', each once.
func.func @all_reduce_axis_twice(%x: tensor<4xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{'kiln.all_reduce' op group 'ep,ep': name a mesh axis, or several joined by ',' (each once, major first)}}
  %y = kiln.all_reduce %x over "ep,ep" {cause = "test"} : tensor<4xf32>
  return %y : tensor<4xf32>
}

// -----

func.func @all_gather_empty_axis(%x: tensor<2x6xf32>) -> tensor<8x6xf32> {
  // expected-error @+1 {{'kiln.all_gather' op group 'edp,,ep': name a mesh axis, or several joined by ',' (each once, major first)}}
  %y = kiln.all_gather %x over "edp,,ep" dim 0 {cause = "test"} : tensor<2x6xf32> -> tensor<8x6xf32>
  return %y : tensor<8x6xf32>
}

// -----

func.func @reduce_scatter_no_axis(%x: tensor<4x6xf32>) -> tensor<2x6xf32> {
  // expected-error @+1 {{'kiln.reduce_scatter' op group '': name a mesh axis, or several joined by ',' (each once, major first)}}
  %y = kiln.reduce_scatter %x over "" dim 0 {cause = "test"} : tensor<4x6xf32> -> tensor<2x6xf32>
  return %y : tensor<2x6xf32>
}
