// kiln.fusion's verifier: the body matches the op, and holds only a loop
// fusion's ops or a GEMM with one of cuBLASLt's epilogues.
// RUN: kiln-opt %s -split-input-file -verify-diagnostics

func.func @not_elementwise(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %0 = kiln.fusion(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32> {
  ^bb0(%a: tensor<4x8xf32>):
    // expected-error @+1 {{cannot be in a kiln.fusion body: only elementwise ops, broadcasts of its arguments and splat constants can}}
    %1 = kiln.transpose %a, [1, 0] : tensor<4x8xf32> -> tensor<8x4xf32>
    %2 = kiln.transpose %1, [1, 0] : tensor<8x4xf32> -> tensor<4x8xf32>
    kiln.yield %2 : tensor<4x8xf32>
  }
  return %0 : tensor<4x8xf32>
}

// -----

func.func @argument_type(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  // expected-error @+1 {{input #0 has type 'tensor<4x8xf32>' but body argument #0 has type 'tensor<4x8xbf16>'}}
  %0 = kiln.fusion(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32> {
  ^bb0(%a: tensor<4x8xbf16>):
    %1 = kiln.cast %a : tensor<4x8xbf16> to tensor<4x8xf32>
    kiln.yield %1 : tensor<4x8xf32>
  }
  return %0 : tensor<4x8xf32>
}

// -----

func.func @yield_types(%x: tensor<4x8xf32>) -> tensor<4x8xbf16> {
  // expected-error @+1 {{yields 1 values whose types differ from its results'}}
  %0 = kiln.fusion(%x) : (tensor<4x8xf32>) -> tensor<4x8xbf16> {
  ^bb0(%a: tensor<4x8xf32>):
    %1 = kiln.exp %a : tensor<4x8xf32>
    kiln.yield %1 : tensor<4x8xf32>
  }
  return %0 : tensor<4x8xbf16>
}

// -----

func.func @shape(%x: tensor<4x8xf32>, %y: tensor<8xf32>) -> tensor<4x8xf32> {
  // expected-error @+1 {{body argument of type 'tensor<8xf32>' does not have the results' shape}}
  %0 = kiln.fusion(%x, %y) : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32> {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<8xf32>):
    %1 = kiln.exp %a : tensor<4x8xf32>
    kiln.yield %1 : tensor<4x8xf32>
  }
  return %0 : tensor<4x8xf32>
}

// -----

// A body without kiln.yield: MLIR's own block check reports it.
func.func @no_yield(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = kiln.fusion(%x) : (tensor<4xf32>) -> tensor<4xf32> {
  ^bb0(%a: tensor<4xf32>):
    // expected-error @+1 {{block with no terminator}}
    %1 = kiln.exp %a : tensor<4xf32>
  }
  return %0 : tensor<4xf32>
}

// -----

// The body's ops are verified before the fusion's own checks read their
// types (a generic-form op with a scalar result used to reach a cast).
func.func @body_op_invalid(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = kiln.fusion(%x) : (tensor<4xf32>) -> tensor<4xf32> {
  ^bb0(%a: tensor<4xf32>):
    // expected-error @+1 {{'kiln.exp' op result #0 must be statically shaped tensor}}
    %1 = "kiln.exp"(%a) : (tensor<4xf32>) -> f32
    kiln.yield %a : tensor<4xf32>
  }
  return %0 : tensor<4xf32>
}

// -----

func.func @constant_without_value(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = kiln.fusion(%x) : (tensor<4xf32>) -> tensor<4xf32> {
  ^bb0(%a: tensor<4xf32>):
    // expected-error @+1 {{'kiln.constant' op requires attribute 'value'}}
    %c = "kiln.constant"() : () -> tensor<4xf32>
    %1 = kiln.add %a, %c : tensor<4xf32>
    kiln.yield %1 : tensor<4xf32>
  }
  return %0 : tensor<4xf32>
}

// -----

// A GEMM epilogue body: what is not cuBLASLt's epilogue is refused.
func.func @gemm_erf(%x: tensor<16x32xf32>, %w: tensor<32x64xf32>) -> tensor<16x64xf32> {
  // expected-error @+1 {{holds a matmul but is not a GEMM epilogue: cuBLASLt's GELU epilogue is the tanh approximation}}
  %0 = kiln.fusion(%x, %w) : (tensor<16x32xf32>, tensor<32x64xf32>) -> tensor<16x64xf32> {
  ^bb0(%a: tensor<16x32xf32>, %b: tensor<32x64xf32>):
    %1 = kiln.matmul %a, %b : tensor<16x32xf32>, tensor<32x64xf32> -> tensor<16x64xf32>
    %2 = kiln.gelu none %1 : tensor<16x64xf32>
    kiln.yield %2 : tensor<16x64xf32>
  }
  return %0 : tensor<16x64xf32>
}

// -----

func.func @gemm_alone(%x: tensor<16x32xf32>, %w: tensor<32x64xf32>) -> tensor<16x64xf32> {
  // expected-error @+1 {{a GEMM fusion needs an epilogue}}
  %0 = kiln.fusion(%x, %w) : (tensor<16x32xf32>, tensor<32x64xf32>) -> tensor<16x64xf32> {
  ^bb0(%a: tensor<16x32xf32>, %b: tensor<32x64xf32>):
    %1 = kiln.matmul %a, %b : tensor<16x32xf32>, tensor<32x64xf32> -> tensor<16x64xf32>
    kiln.yield %1 : tensor<16x64xf32>
  }
  return %0 : tensor<16x64xf32>
}

// -----

func.func @gemm_other_op(%x: tensor<16x32xf32>, %w: tensor<32x64xf32>) -> tensor<16x64xf32> {
  // expected-error @+1 {{'kiln.neg' is not part of a GEMM epilogue}}
  %0 = kiln.fusion(%x, %w) : (tensor<16x32xf32>, tensor<32x64xf32>) -> tensor<16x64xf32> {
  ^bb0(%a: tensor<16x32xf32>, %b: tensor<32x64xf32>):
    %1 = kiln.matmul %a, %b : tensor<16x32xf32>, tensor<32x64xf32> -> tensor<16x64xf32>
    %2 = kiln.neg %1 : tensor<16x64xf32>
    kiln.yield %2 : tensor<16x64xf32>
  }
  return %0 : tensor<16x64xf32>
}

// -----

func.func @gemm_batched(%q: tensor<4x16x32xf32>, %k: tensor<4x32x16xf32>) -> tensor<4x16x16xf32> {
  // expected-error @+1 {{the matmul is a batch of products, not one GEMM}}
  %0 = kiln.fusion(%q, %k) : (tensor<4x16x32xf32>, tensor<4x32x16xf32>) -> tensor<4x16x16xf32> {
  ^bb0(%a: tensor<4x16x32xf32>, %b: tensor<4x32x16xf32>):
    %1 = kiln.matmul %a, %b : tensor<4x16x32xf32>, tensor<4x32x16xf32> -> tensor<4x16x16xf32>
    %2 = kiln.gelu tanh %1 : tensor<4x16x16xf32>
    kiln.yield %2 : tensor<4x16x16xf32>
  }
  return %0 : tensor<4x16x16xf32>
}

// -----

func.func @gemm_dgelu_product_yielded(%dy: tensor<16x64xf32>, %w: tensor<64x64xf32>, %z: tensor<16x64xf32>) -> (tensor<16x64xf32>, tensor<16x64xf32>) {
  // expected-error @+1 {{a GELU-gradient epilogue is gelu_grad(input, matmul)}}
  %0:2 = kiln.fusion(%dy, %w, %z) : (tensor<16x64xf32>, tensor<64x64xf32>, tensor<16x64xf32>) -> (tensor<16x64xf32>, tensor<16x64xf32>) {
  ^bb0(%a: tensor<16x64xf32>, %b: tensor<64x64xf32>, %c: tensor<16x64xf32>):
    %1 = kiln.matmul %a, %b : tensor<16x64xf32>, tensor<64x64xf32> -> tensor<16x64xf32>
    %2 = kiln.gelu_grad tanh %c, %1 : tensor<16x64xf32>
    kiln.yield %2, %1 : tensor<16x64xf32>, tensor<16x64xf32>
  }
  return %0#0, %0#1 : tensor<16x64xf32>, tensor<16x64xf32>
}

// -----

func.func @gemm_bias_grad_wrong_dims(%dy: tensor<16x64xf32>, %w: tensor<64x64xf32>, %z: tensor<16x64xf32>) -> (tensor<16x64xf32>, tensor<16xf32>) {
  // expected-error @+1 {{the bias gradient must sum the GELU gradient over all rows}}
  %0:2 = kiln.fusion(%dy, %w, %z) : (tensor<16x64xf32>, tensor<64x64xf32>, tensor<16x64xf32>) -> (tensor<16x64xf32>, tensor<16xf32>) {
  ^bb0(%a: tensor<16x64xf32>, %b: tensor<64x64xf32>, %c: tensor<16x64xf32>):
    %1 = kiln.matmul %a, %b : tensor<16x64xf32>, tensor<64x64xf32> -> tensor<16x64xf32>
    %2 = kiln.gelu_grad tanh %c, %1 : tensor<16x64xf32>
    %3 = kiln.reduce_sum %2, dims = [1] : tensor<16x64xf32> -> tensor<16xf32>
    kiln.yield %2, %3 : tensor<16x64xf32>, tensor<16xf32>
  }
  return %0#0, %0#1 : tensor<16x64xf32>, tensor<16xf32>
}

// -----

func.func @gemm_bgrad_not_transposed(%x: tensor<64x16xf32>, %dy: tensor<16x64xf32>) -> (tensor<64x64xf32>, tensor<64xf32>) {
  // expected-error @+1 {{a bias-gradient epilogue sums the rhs}}
  %0:2 = kiln.fusion(%x, %dy) : (tensor<64x16xf32>, tensor<16x64xf32>) -> (tensor<64x64xf32>, tensor<64xf32>) {
  ^bb0(%a: tensor<64x16xf32>, %b: tensor<16x64xf32>):
    %1 = kiln.matmul %a, %b : tensor<64x16xf32>, tensor<16x64xf32> -> tensor<64x64xf32>
    %2 = kiln.reduce_sum %b, dims = [0] : tensor<16x64xf32> -> tensor<64xf32>
    kiln.yield %1, %2 : tensor<64x64xf32>, tensor<64xf32>
  }
  return %0#0, %0#1 : tensor<64x64xf32>, tensor<64xf32>
}

// -----

func.func @gemm_one_cast(%x: tensor<40x24xbf16>, %dy: tensor<40x16xbf16>) -> (tensor<24x16xf32>, tensor<16xbf16>) {
  // expected-error @+1 {{casts in a GEMM epilogue widen both a weight gradient and its bias gradient}}
  %0:2 = kiln.fusion(%x, %dy) : (tensor<40x24xbf16>, tensor<40x16xbf16>) -> (tensor<24x16xf32>, tensor<16xbf16>) {
  ^bb0(%a: tensor<40x24xbf16>, %d: tensor<40x16xbf16>):
    %1 = kiln.matmul %a, %d transpose_a : tensor<40x24xbf16>, tensor<40x16xbf16> -> tensor<24x16xbf16>
    %2 = kiln.reduce_sum %d, dims = [0] : tensor<40x16xbf16> -> tensor<16xbf16>
    %3 = kiln.cast %1 : tensor<24x16xbf16> to tensor<24x16xf32>
    kiln.yield %3, %2 : tensor<24x16xf32>, tensor<16xbf16>
  }
  return %0#0, %0#1 : tensor<24x16xf32>, tensor<16xbf16>
}

// -----

// Norm fusions (matchNormFusion).
func.func @norm_two(%x: tensor<4x8xf32>, %w: tensor<8xf32>) -> (tensor<4x8xf32>, tensor<4xf32>) {
  // expected-error @+1 {{holds a norm but is not a norm fusion: it holds two norms}}
  %0:2 = kiln.fusion(%x, %w) : (tensor<4x8xf32>, tensor<8xf32>) -> (tensor<4x8xf32>, tensor<4xf32>) {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<8xf32>):
    %1, %2 = kiln.rms_norm %a, %b {epsilon = 1.0e-06 : f32} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>, tensor<4xf32>
    %3, %4 = kiln.rms_norm %1, %b {epsilon = 1.0e-06 : f32} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>, tensor<4xf32>
    kiln.yield %3, %4 : tensor<4x8xf32>, tensor<4xf32>
  }
  return %0#0, %0#1 : tensor<4x8xf32>, tensor<4xf32>
}

// -----

func.func @norm_output_read(%x: tensor<4x8xf32>, %w: tensor<8xf32>) -> tensor<4x8xf32> {
  // expected-error @+1 {{holds a norm but is not a norm fusion: an elementwise op comes after the norm}}
  %0 = kiln.fusion(%x, %w) : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32> {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<8xf32>):
    %1, %2 = kiln.rms_norm %a, %b {epsilon = 1.0e-06 : f32} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>, tensor<4xf32>
    %3 = kiln.exp %1 : tensor<4x8xf32>
    kiln.yield %3 : tensor<4x8xf32>
  }
  return %0 : tensor<4x8xf32>
}

// -----

func.func @norm_weight_computed(%x: tensor<4x8xf32>, %w: tensor<8xf32>) -> tensor<4x8xf32> {
  // expected-error @+1 {{holds a norm but is not a norm fusion: an elementwise value does not have the norm's row shape}}
  %0 = kiln.fusion(%x, %w) : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32> {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<8xf32>):
    %1 = kiln.exp %b : tensor<8xf32>
    %2, %3 = kiln.rms_norm %a, %1 {epsilon = 1.0e-06 : f32} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>, tensor<4xf32>
    kiln.yield %2 : tensor<4x8xf32>
  }
  return %0 : tensor<4x8xf32>
}

// -----

func.func @norm_not_yielded(%x: tensor<4x8xf32>, %w: tensor<8xf32>) -> tensor<4x8xf32> {
  // expected-error @+1 {{holds a norm but is not a norm fusion: the norm's output must be yielded}}
  %0 = kiln.fusion(%x, %w) : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32> {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<8xf32>):
    %1 = kiln.exp %a : tensor<4x8xf32>
    %2, %3 = kiln.rms_norm %1, %b {epsilon = 1.0e-06 : f32} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>, tensor<4xf32>
    kiln.yield %1 : tensor<4x8xf32>
  }
  return %0 : tensor<4x8xf32>
}

// -----

func.func @norm_grad_operand_computed(%x: tensor<4x8xf32>, %w: tensor<8xf32>, %s: tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>) {
  // expected-error @+1 {{holds a norm but is not a norm fusion: an elementwise op comes before the norm's gradient}}
  %0:2 = kiln.fusion(%x, %w, %s) : (tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>) -> (tensor<4x8xf32>, tensor<8xf32>) {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<8xf32>, %c: tensor<4xf32>):
    %1 = kiln.exp %a : tensor<4x8xf32>
    %2, %3 = kiln.rms_norm_grad %a, %b, %c, %1 : tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<8xf32>
    kiln.yield %2, %3 : tensor<4x8xf32>, tensor<8xf32>
  }
  return %0#0, %0#1 : tensor<4x8xf32>, tensor<8xf32>
}

// -----

func.func @norm_grad_dweight_dropped(%x: tensor<4x8xf32>, %w: tensor<8xf32>, %s: tensor<4xf32>) -> tensor<4x8xf32> {
  // expected-error @+1 {{holds a norm but is not a norm fusion: the norm's weight (and bias) gradients must be yielded}}
  %0 = kiln.fusion(%x, %w, %s) : (tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>) -> tensor<4x8xf32> {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<8xf32>, %c: tensor<4xf32>):
    %2, %3 = kiln.rms_norm_grad %a, %b, %c, %a : tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<8xf32>
    %4 = kiln.exp %2 : tensor<4x8xf32>
    kiln.yield %4 : tensor<4x8xf32>
  }
  return %0 : tensor<4x8xf32>
}

// -----

func.func @norm_grad_rank_one(%x: tensor<8xf32>, %w: tensor<8xf32>, %s: tensor<f32>) -> (tensor<8xf32>, tensor<8xf32>) {
  // expected-error @+1 {{holds a norm but is not a norm fusion: the norm's rows are not a tensor of rank 2 or more}}
  %0:2 = kiln.fusion(%x, %w, %s) : (tensor<8xf32>, tensor<8xf32>, tensor<f32>) -> (tensor<8xf32>, tensor<8xf32>) {
  ^bb0(%a: tensor<8xf32>, %b: tensor<8xf32>, %c: tensor<f32>):
    %2, %3 = kiln.rms_norm_grad %a, %b, %c, %a : tensor<8xf32>, tensor<8xf32>, tensor<f32>, tensor<8xf32> -> tensor<8xf32>, tensor<8xf32>
    %4 = kiln.exp %2 : tensor<8xf32>
    kiln.yield %4, %3 : tensor<8xf32>, tensor<8xf32>
  }
  return %0#0, %0#1 : tensor<8xf32>, tensor<8xf32>
}

// -----

// Cross-entropy fusions (matchCrossEntropyFusion).
func.func @ce_other_lse(%l: tensor<4x16xf32>, %t: tensor<4xi32>, %d: tensor<4xf32>, %s: tensor<4xf32>) -> (tensor<4xf32>, tensor<4x16xf32>) {
  // expected-error @+1 {{holds a cross-entropy gradient but is not a cross-entropy fusion: the gradient must read the forward's logits, targets and lse}}
  %0:2 = kiln.fusion(%l, %t, %d, %s) : (tensor<4x16xf32>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32>) -> (tensor<4xf32>, tensor<4x16xf32>) {
  ^bb0(%a: tensor<4x16xf32>, %b: tensor<4xi32>, %c: tensor<4xf32>, %e: tensor<4xf32>):
    %loss, %lse = kiln.cross_entropy %a, %b : tensor<4x16xf32>, tensor<4xi32> -> tensor<4xf32>, tensor<4xf32>
    %g = kiln.cross_entropy_grad %a, %b, %e, %c : tensor<4x16xf32>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32> -> tensor<4x16xf32>
    kiln.yield %loss, %g : tensor<4xf32>, tensor<4x16xf32>
  }
  return %0#0, %0#1 : tensor<4xf32>, tensor<4x16xf32>
}

// -----

func.func @ce_loss_dropped(%l: tensor<4x16xf32>, %t: tensor<4xi32>, %d: tensor<4xf32>) -> tensor<4x16xf32> {
  // expected-error @+1 {{holds a cross-entropy gradient but is not a cross-entropy fusion: the loss and dlogits must be yielded}}
  %0 = kiln.fusion(%l, %t, %d) : (tensor<4x16xf32>, tensor<4xi32>, tensor<4xf32>) -> tensor<4x16xf32> {
  ^bb0(%a: tensor<4x16xf32>, %b: tensor<4xi32>, %c: tensor<4xf32>):
    %loss, %lse = kiln.cross_entropy %a, %b : tensor<4x16xf32>, tensor<4xi32> -> tensor<4xf32>, tensor<4xf32>
    %g = kiln.cross_entropy_grad %a, %b, %lse, %c : tensor<4x16xf32>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32> -> tensor<4x16xf32>
    kiln.yield %g : tensor<4x16xf32>
  }
  return %0 : tensor<4x16xf32>
}

// -----

func.func @ce_extra_op(%l: tensor<4x16xf32>, %t: tensor<4xi32>, %d: tensor<4xf32>) -> (tensor<4xf32>, tensor<4x16xf32>) {
  // expected-error @+1 {{holds a cross-entropy gradient but is not a cross-entropy fusion: its body is not a cross_entropy and its gradient}}
  %0:2 = kiln.fusion(%l, %t, %d) : (tensor<4x16xf32>, tensor<4xi32>, tensor<4xf32>) -> (tensor<4xf32>, tensor<4x16xf32>) {
  ^bb0(%a: tensor<4x16xf32>, %b: tensor<4xi32>, %c: tensor<4xf32>):
    %loss, %lse = kiln.cross_entropy %a, %b : tensor<4x16xf32>, tensor<4xi32> -> tensor<4xf32>, tensor<4xf32>
    %e = kiln.exp %c : tensor<4xf32>
    %g = kiln.cross_entropy_grad %a, %b, %lse, %e : tensor<4x16xf32>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32> -> tensor<4x16xf32>
    kiln.yield %loss, %g : tensor<4xf32>, tensor<4x16xf32>
  }
  return %0#0, %0#1 : tensor<4xf32>, tensor<4x16xf32>
}

// -----

func.func @broadcast_of_a_body_value(%x: tensor<4x8xf32>, %v: tensor<8xf32>) -> tensor<4x8xf32> {
  %0 = kiln.fusion(%x, %v) : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32> {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<8xf32>):
    %1 = kiln.exp %b : tensor<8xf32>
    // expected-error @+1 {{in a kiln.fusion body must broadcast a body argument}}
    %2 = kiln.broadcast_in_dim %1, dims = [1] : tensor<8xf32> -> tensor<4x8xf32>
    %3 = kiln.add %a, %2 : tensor<4x8xf32>
    kiln.yield %3 : tensor<4x8xf32>
  }
  return %0 : tensor<4x8xf32>
}

// -----

func.func @two_index_maps(%x: tensor<8x8xf32>, %v: tensor<8xf32>) -> tensor<8x8xf32> {
  // expected-error @+1 {{body argument of type 'tensor<8xf32>' must be read by one kind of broadcast only}}
  %0 = kiln.fusion(%x, %v) : (tensor<8x8xf32>, tensor<8xf32>) -> tensor<8x8xf32> {
  ^bb0(%a: tensor<8x8xf32>, %b: tensor<8xf32>):
    %1 = kiln.broadcast_in_dim %b, dims = [0] : tensor<8xf32> -> tensor<8x8xf32>
    %2 = kiln.broadcast_in_dim %b, dims = [1] : tensor<8xf32> -> tensor<8x8xf32>
    %3 = kiln.add %a, %1 : tensor<8x8xf32>
    %4 = kiln.mul %3, %2 : tensor<8x8xf32>
    kiln.yield %4 : tensor<8x8xf32>
  }
  return %0 : tensor<8x8xf32>
}

// -----

func.func @broadcast_argument_read_directly(%x: tensor<4x8xf32>, %v: tensor<4x8xf32>) -> tensor<4x8xf32> {
  // expected-error @+1 {{body argument of type 'tensor<4x8xf32>' must be read by one kind of broadcast only}}
  %0 = kiln.fusion(%x, %v) : (tensor<4x8xf32>, tensor<4x8xf32>) -> tensor<4x8xf32> {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<4x8xf32>):
    %1 = kiln.broadcast_in_dim %b, dims = [0, 1] : tensor<4x8xf32> -> tensor<4x8xf32>
    %2 = kiln.add %a, %1 : tensor<4x8xf32>
    %3 = kiln.mul %2, %b : tensor<4x8xf32>
    kiln.yield %3 : tensor<4x8xf32>
  }
  return %0 : tensor<4x8xf32>
}

// -----

func.func @norm_broadcast_splits_rows(%x: tensor<2x4x16xf32>, %r: tensor<2x4xf32>, %w: tensor<16xf32>, %b: tensor<16xf32>) -> tensor<2x4x16xf32> {
  // expected-error @+1 {{holds a norm but is not a norm fusion: a broadcast must keep the rows of a body argument whole}}
  %0 = kiln.fusion(%x, %r, %w, %b) : (tensor<2x4x16xf32>, tensor<2x4xf32>, tensor<16xf32>, tensor<16xf32>) -> tensor<2x4x16xf32> {
  ^bb0(%a: tensor<2x4x16xf32>, %s: tensor<2x4xf32>, %g: tensor<16xf32>, %h: tensor<16xf32>):
    %1 = kiln.broadcast_in_dim %s, dims = [0, 1] : tensor<2x4xf32> -> tensor<2x4x16xf32>
    %2 = kiln.mul %a, %1 : tensor<2x4x16xf32>
    %y, %m, %q = kiln.layer_norm %2, %g, %h {epsilon = 1.0e-05 : f32} : tensor<2x4x16xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<2x4x16xf32>, tensor<2x4xf32>, tensor<2x4xf32>
    kiln.yield %y : tensor<2x4x16xf32>
  }
  return %0 : tensor<2x4x16xf32>
}

// -----

// A norm gradient's column sum (the next projection's bias gradient).
func.func @norm_two_column_sums(%x: tensor<4x8xf32>, %w: tensor<8xf32>, %q: tensor<4xf32>, %d: tensor<4x8xf32>)
    -> (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) {
  // expected-error @+1 {{holds a norm but is not a norm fusion: it holds two column sums (a norm gradient's kernel accumulates at most one)}}
  %0:3 = kiln.fusion(%x, %w, %q, %d) : (tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4x8xf32>) -> (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>) {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<8xf32>, %c: tensor<4xf32>, %e: tensor<4x8xf32>):
    %dx, %dw = kiln.rms_norm_grad %a, %b, %c, %e : tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<8xf32>
    %1 = kiln.reduce_sum %dx, dims = [0] : tensor<4x8xf32> -> tensor<8xf32>
    %2 = kiln.neg %dx : tensor<4x8xf32>
    %3 = kiln.reduce_sum %2, dims = [0] : tensor<4x8xf32> -> tensor<8xf32>
    kiln.yield %dw, %1, %3 : tensor<8xf32>, tensor<8xf32>, tensor<8xf32>
  }
  return %0#0, %0#1, %0#2 : tensor<8xf32>, tensor<8xf32>, tensor<8xf32>
}

// -----

func.func @norm_column_sum_of_rows(%x: tensor<4x8xf32>, %w: tensor<8xf32>, %q: tensor<4xf32>, %d: tensor<4x8xf32>)
    -> (tensor<8xf32>, tensor<4xf32>) {
  // expected-error @+1 {{holds a norm but is not a norm fusion: the column sum must sum floats over every dimension but the last, in the element type it reads}}
  %0:2 = kiln.fusion(%x, %w, %q, %d) : (tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4x8xf32>) -> (tensor<8xf32>, tensor<4xf32>) {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<8xf32>, %c: tensor<4xf32>, %e: tensor<4x8xf32>):
    %dx, %dw = kiln.rms_norm_grad %a, %b, %c, %e : tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<8xf32>
    %1 = kiln.reduce_sum %dx, dims = [1] : tensor<4x8xf32> -> tensor<4xf32>
    kiln.yield %dw, %1 : tensor<8xf32>, tensor<4xf32>
  }
  return %0#0, %0#1 : tensor<8xf32>, tensor<4xf32>
}

// -----

func.func @norm_column_sum_narrowed(%x: tensor<4x8xf32>, %w: tensor<8xf32>, %q: tensor<4xf32>, %d: tensor<4x8xf32>)
    -> (tensor<8xf32>, tensor<8xf32>) {
  // expected-error @+1 {{holds a norm but is not a norm fusion: a cast of the column sum must widen it (bf16/f16 to f32), its only use}}
  %0:2 = kiln.fusion(%x, %w, %q, %d) : (tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4x8xf32>) -> (tensor<8xf32>, tensor<8xf32>) {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<8xf32>, %c: tensor<4xf32>, %e: tensor<4x8xf32>):
    %dx, %dw = kiln.rms_norm_grad %a, %b, %c, %e : tensor<4x8xf32>, tensor<8xf32>, tensor<4xf32>, tensor<4x8xf32> -> tensor<4x8xf32>, tensor<8xf32>
    %1 = kiln.reduce_sum %dx, dims = [0] : tensor<4x8xf32> -> tensor<8xf32>
    %2 = kiln.cast %1 : tensor<8xf32> to tensor<8xbf16>
    kiln.yield %dw, %1 : tensor<8xf32>, tensor<8xf32>
  }
  return %0#0, %0#1 : tensor<8xf32>, tensor<8xf32>
}

// -----

func.func @forward_norm_column_sum(%x: tensor<4x8xf32>, %w: tensor<8xf32>) -> (tensor<4x8xf32>, tensor<8xf32>) {
  // expected-error @+1 {{holds a norm but is not a norm fusion: a column sum belongs to a norm gradient's fusion, not a forward norm's}}
  %0:2 = kiln.fusion(%x, %w) : (tensor<4x8xf32>, tensor<8xf32>) -> (tensor<4x8xf32>, tensor<8xf32>) {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<8xf32>):
    %1 = kiln.neg %a : tensor<4x8xf32>
    %2 = kiln.reduce_sum %1, dims = [0] : tensor<4x8xf32> -> tensor<8xf32>
    %3, %4 = kiln.rms_norm %1, %b {epsilon = 1.0e-06 : f32} : tensor<4x8xf32>, tensor<8xf32> -> tensor<4x8xf32>, tensor<4xf32>
    kiln.yield %3, %2 : tensor<4x8xf32>, tensor<8xf32>
  }
  return %0#0, %0#1 : tensor<4x8xf32>, tensor<8xf32>
}

// -----

func.func @attention_bias_wrong_dims(%qkv: tensor<2x8x2x3x16xbf16>, %o: tensor<2x8x2x16xbf16>, %lse: tensor<2x2x8xf32>, %do: tensor<2x8x2x16xbf16>) -> (tensor<2x8x2x3x16xbf16>, tensor<8x2x3x16xbf16>) {
  // expected-error @+1 {{holds an attention gradient but is not an attention-gradient fusion: the sum must be of dqkv over its dimensions [0, 1]}}
  %0:2 = kiln.fusion(%qkv, %o, %lse, %do) : (tensor<2x8x2x3x16xbf16>, tensor<2x8x2x16xbf16>, tensor<2x2x8xf32>, tensor<2x8x2x16xbf16>) -> (tensor<2x8x2x3x16xbf16>, tensor<8x2x3x16xbf16>) {
  ^bb0(%a: tensor<2x8x2x3x16xbf16>, %b: tensor<2x8x2x16xbf16>, %c: tensor<2x2x8xf32>, %d: tensor<2x8x2x16xbf16>):
    %1 = kiln.attention_qkv_grad %a, %b, %c, %d {causal, scale = 0.25 : f32} : tensor<2x8x2x3x16xbf16>, tensor<2x8x2x16xbf16>, tensor<2x2x8xf32>, tensor<2x8x2x16xbf16> -> tensor<2x8x2x3x16xbf16>
    %2 = kiln.reduce_sum %1, dims = [0] : tensor<2x8x2x3x16xbf16> -> tensor<8x2x3x16xbf16>
    kiln.yield %1, %2 : tensor<2x8x2x3x16xbf16>, tensor<8x2x3x16xbf16>
  }
  return %0#0, %0#1 : tensor<2x8x2x3x16xbf16>, tensor<8x2x3x16xbf16>
}

// -----

func.func @attention_bias_extra_op(%qkv: tensor<2x8x2x3x16xbf16>, %o: tensor<2x8x2x16xbf16>, %lse: tensor<2x2x8xf32>, %do: tensor<2x8x2x16xbf16>) -> (tensor<2x8x2x3x16xbf16>, tensor<2x3x16xbf16>) {
  // expected-error @+1 {{holds an attention gradient but is not an attention-gradient fusion: its body holds kiln.neg beside an attention_qkv_grad, a reshape, a reduce_sum and a cast}}
  %0:2 = kiln.fusion(%qkv, %o, %lse, %do) : (tensor<2x8x2x3x16xbf16>, tensor<2x8x2x16xbf16>, tensor<2x2x8xf32>, tensor<2x8x2x16xbf16>) -> (tensor<2x8x2x3x16xbf16>, tensor<2x3x16xbf16>) {
  ^bb0(%a: tensor<2x8x2x3x16xbf16>, %b: tensor<2x8x2x16xbf16>, %c: tensor<2x2x8xf32>, %d: tensor<2x8x2x16xbf16>):
    %1 = kiln.attention_qkv_grad %a, %b, %c, %d {causal, scale = 0.25 : f32} : tensor<2x8x2x3x16xbf16>, tensor<2x8x2x16xbf16>, tensor<2x2x8xf32>, tensor<2x8x2x16xbf16> -> tensor<2x8x2x3x16xbf16>
    %2 = kiln.neg %1 : tensor<2x8x2x3x16xbf16>
    %3 = kiln.reduce_sum %2, dims = [0, 1] : tensor<2x8x2x3x16xbf16> -> tensor<2x3x16xbf16>
    kiln.yield %1, %3 : tensor<2x8x2x3x16xbf16>, tensor<2x3x16xbf16>
  }
  return %0#0, %0#1 : tensor<2x8x2x3x16xbf16>, tensor<2x3x16xbf16>
}

// -----

func.func @reduction_two(%x: tensor<4x8xf32>) -> (tensor<4xf32>, tensor<4xf32>) {
  // expected-error @+1 {{holds a reduction but is not a reduction fusion: it holds two reductions (its kernel is one reduction's)}}
  %0:2 = kiln.fusion(%x) : (tensor<4x8xf32>) -> (tensor<4xf32>, tensor<4xf32>) {
  ^bb0(%a: tensor<4x8xf32>):
    %1 = kiln.exp %a : tensor<4x8xf32>
    %2 = kiln.reduce_sum %1, dims = [1] : tensor<4x8xf32> -> tensor<4xf32>
    %3 = kiln.reduce_max %1, dims = [1] : tensor<4x8xf32> -> tensor<4xf32>
    kiln.yield %2, %3 : tensor<4xf32>, tensor<4xf32>
  }
  return %0#0, %0#1 : tensor<4xf32>, tensor<4xf32>
}

// -----

func.func @reduction_result_read(%x: tensor<4x8xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{holds a reduction but is not a reduction fusion: a value of the body does not have the reduction's operand's shape}}
  %0 = kiln.fusion(%x) : (tensor<4x8xf32>) -> tensor<4xf32> {
  ^bb0(%a: tensor<4x8xf32>):
    %1 = kiln.exp %a : tensor<4x8xf32>
    %2 = kiln.reduce_sum %1, dims = [1] : tensor<4x8xf32> -> tensor<4xf32>
    %3 = kiln.neg %2 : tensor<4xf32>
    kiln.yield %3 : tensor<4xf32>
  }
  return %0 : tensor<4xf32>
}

// -----

func.func @reduction_not_yielded(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  // expected-error @+1 {{holds a reduction but is not a reduction fusion: the reduction's result must be yielded}}
  %0 = kiln.fusion(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32> {
  ^bb0(%a: tensor<4x8xf32>):
    %1 = kiln.exp %a : tensor<4x8xf32>
    %2 = kiln.reduce_sum %1, dims = [1] : tensor<4x8xf32> -> tensor<4xf32>
    kiln.yield %1 : tensor<4x8xf32>
  }
  return %0 : tensor<4x8xf32>
}

// -----

func.func @reduction_other_shape(%x: tensor<4x8xf32>, %y: tensor<8xf32>) -> tensor<4xf32> {
  // expected-error @+1 {{holds a reduction but is not a reduction fusion: a body argument does not have the reduction's operand's shape}}
  %0 = kiln.fusion(%x, %y) : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4xf32> {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<8xf32>):
    %1 = kiln.exp %a : tensor<4x8xf32>
    %2 = kiln.reduce_sum %1, dims = [1] : tensor<4x8xf32> -> tensor<4xf32>
    kiln.yield %2 : tensor<4xf32>
  }
  return %0 : tensor<4xf32>
}

// -----

func.func @reduction_integer(%x: tensor<4x8xi32>) -> tensor<4xi32> {
  // expected-error @+1 {{holds a reduction but is not a reduction fusion: the reduction's operand is not a float tensor}}
  %0 = kiln.fusion(%x) : (tensor<4x8xi32>) -> tensor<4xi32> {
  ^bb0(%a: tensor<4x8xi32>):
    %1 = kiln.add %a, %a : tensor<4x8xi32>
    %2 = kiln.reduce_sum %1, dims = [1] : tensor<4x8xi32> -> tensor<4xi32>
    kiln.yield %2 : tensor<4xi32>
  }
  return %0 : tensor<4xi32>
}
