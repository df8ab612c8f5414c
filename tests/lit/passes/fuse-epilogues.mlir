// kiln-fuse's GEMM epilogues: what cuBLASLt computes after the product
// (gelu, gelu_grad, a weight gradient's bias
// gradient) joins the matmul in a kiln.fusion; a widening cast of a product
// that would be a kernel of its own becomes the product's type. Near misses
// stay apart. (The OFF run turns sibling and reduction fusion off too:
// with no epilogues, gelu and gelu_grad of one product are siblings, and
// gelu_grad with its bias gradient's sum a reduction fusion.)
// RUN: kiln-opt %s -split-input-file -kiln-fuse='bias-grad-epilogues=true' | FileCheck %s
// RUN: kiln-opt %s -split-input-file -kiln-fuse='epilogues=false fold-casts=false siblings=false reductions=false' \
// RUN:   | FileCheck %s --check-prefix=OFF
// By default (bias-grad-epilogues=false, as compile.bias_grad_epilogues)
// the bias gradients' sums stay out of the weight gradients' GEMMs
// (reduction kernels); every other epilogue forms.
// RUN: kiln-opt %s -split-input-file -kiln-fuse | FileCheck %s --check-prefix=NOBGRAD

// The forward MLP: gelu of a biased product, whose input the backward
// needs: one fusion yielding both (GELU_AUX_BIAS).
// CHECK-LABEL: func.func @gelu_aux
// NOBGRAD-LABEL: func.func @gelu_aux
// NOBGRAD: kiln.fusion
// NOBGRAD: kiln.gelu tanh
// CHECK: %[[F:.+]]:2 = kiln.fusion(%{{.+}}, %{{.+}}, %{{.+}}) : (tensor<2x8x16xbf16>, tensor<16x64xbf16>, tensor<64xbf16>) -> (tensor<2x8x64xbf16>, tensor<2x8x64xbf16>)
// CHECK: %[[Z:.+]] = kiln.matmul %{{.+}}, %{{.+}} bias %{{.+}}
// CHECK-NEXT: %[[G:.+]] = kiln.gelu tanh %[[Z]]
// CHECK-NEXT: kiln.yield %[[Z]], %[[G]]
// CHECK: kiln.gelu_grad tanh %[[F]]#0, %{{.+}}
// CHECK: return %[[F]]#1
// OFF-LABEL: func.func @gelu_aux
// OFF-NOT: kiln.fusion
func.func @gelu_aux(%x: tensor<2x8x16xbf16>, %w: tensor<16x64xbf16>, %b: tensor<64xbf16>, %dy: tensor<2x8x64xbf16>) -> (tensor<2x8x64xbf16>, tensor<2x8x64xbf16>) {
  %z = kiln.matmul %x, %w bias %b : tensor<2x8x16xbf16>, tensor<16x64xbf16>, tensor<64xbf16> -> tensor<2x8x64xbf16>
  %g = kiln.gelu tanh %z : tensor<2x8x64xbf16>
  %d = kiln.gelu_grad tanh %z, %dy : tensor<2x8x64xbf16>
  return %g, %d : tensor<2x8x64xbf16>, tensor<2x8x64xbf16>
}

// -----

// gelu alone (an evaluation forward): no aux result. The erf GELU is not
// cuBLASLt's and stays apart.
// CHECK-LABEL: func.func @gelu_only
// CHECK: kiln.fusion(%{{.+}}, %{{.+}}) : (tensor<16x32xf32>, tensor<32x64xf32>) -> tensor<16x64xf32>
// CHECK: kiln.matmul
// CHECK-NEXT: kiln.gelu tanh
// CHECK-NEXT: kiln.yield
// CHECK: kiln.matmul
// CHECK-NEXT: kiln.gelu none
func.func @gelu_only(%x: tensor<16x32xf32>, %w: tensor<32x64xf32>) -> (tensor<16x64xf32>, tensor<16x64xf32>) {
  %z = kiln.matmul %x, %w : tensor<16x32xf32>, tensor<32x64xf32> -> tensor<16x64xf32>
  %g = kiln.gelu tanh %z : tensor<16x64xf32>
  %z2 = kiln.matmul %x, %w : tensor<16x32xf32>, tensor<32x64xf32> -> tensor<16x64xf32>
  %e = kiln.gelu none %z2 : tensor<16x64xf32>
  return %g, %e : tensor<16x64xf32>, tensor<16x64xf32>
}

// -----

// The backward MLP: gelu_grad of a product (DGELU). The bias gradient of
// its rows right after stays a reduction: kiln-fuse does not form
// DGELU_BGRAD (2.7x slower than DGELU at GPT-2's shape on the H200).
// CHECK-LABEL: func.func @dgelu_then_bias_sum
// CHECK: %[[F:.+]] = kiln.fusion(%{{.+}}, %{{.+}}, %{{.+}}) : (tensor<2x8x16xbf16>, tensor<64x16xbf16>, tensor<2x8x64xbf16>) -> tensor<2x8x64xbf16>
// CHECK: %[[D:.+]] = kiln.matmul %{{.+}}, %{{.+}} transpose_b
// CHECK-NEXT: %[[G:.+]] = kiln.gelu_grad tanh %{{.+}}, %[[D]]
// CHECK-NEXT: kiln.yield %[[G]]
// CHECK: %[[S:.+]] = kiln.reduce_sum %[[F]], dims = [0, 1]
// CHECK: return %[[F]], %[[S]]
func.func @dgelu_then_bias_sum(%dy: tensor<2x8x16xbf16>, %w: tensor<64x16xbf16>, %z: tensor<2x8x64xbf16>) -> (tensor<2x8x64xbf16>, tensor<64xbf16>) {
  %d = kiln.matmul %dy, %w transpose_b : tensor<2x8x16xbf16>, tensor<64x16xbf16> -> tensor<2x8x64xbf16>
  %g = kiln.gelu_grad tanh %z, %d : tensor<2x8x64xbf16>
  %s = kiln.reduce_sum %g, dims = [0, 1] : tensor<2x8x64xbf16> -> tensor<64xbf16>
  return %g, %s : tensor<2x8x64xbf16>, tensor<64xbf16>
}

// -----

// GPT-2's order: the input- and weight-gradient products read the
// gradient before its bias-gradient sum; the sum joins the weight
// gradient's GEMM (BGRADA), gelu_grad's GEMM is DGELU alone.
// CHECK-LABEL: func.func @dgelu_and_weight_grad
// CHECK: %[[F:.+]] = kiln.fusion(%{{.+}}, %{{.+}}, %{{.+}}) : (tensor<16x16xbf16>, tensor<64x16xbf16>, tensor<16x64xbf16>) -> tensor<16x64xbf16>
// CHECK: kiln.gelu_grad
// CHECK-NEXT: kiln.yield
// CHECK: kiln.matmul %[[F]], %{{.+}} :
// CHECK-NEXT: %[[W:.+]]:2 = kiln.fusion(%{{.+}}, %[[F]]) : (tensor<16x32xbf16>, tensor<16x64xbf16>) -> (tensor<32x64xbf16>, tensor<64xbf16>)
// CHECK: kiln.matmul %{{.+}}, %{{.+}} transpose_a
// CHECK-NEXT: kiln.reduce_sum
// CHECK: return %{{.+}}, %[[W]]#0, %[[W]]#1
func.func @dgelu_and_weight_grad(%dy: tensor<16x16xbf16>, %w: tensor<64x16xbf16>, %z: tensor<16x64xbf16>, %x: tensor<16x32xbf16>, %w1: tensor<64x32xbf16>) -> (tensor<16x32xbf16>, tensor<32x64xbf16>, tensor<64xbf16>) {
  %d = kiln.matmul %dy, %w transpose_b : tensor<16x16xbf16>, tensor<64x16xbf16> -> tensor<16x64xbf16>
  %g = kiln.gelu_grad tanh %z, %d : tensor<16x64xbf16>
  %dx = kiln.matmul %g, %w1 : tensor<16x64xbf16>, tensor<64x32xbf16> -> tensor<16x32xbf16>
  %dw = kiln.matmul %x, %g transpose_a : tensor<16x32xbf16>, tensor<16x64xbf16> -> tensor<32x64xbf16>
  %s = kiln.reduce_sum %g, dims = [0] : tensor<16x64xbf16> -> tensor<64xbf16>
  return %dx, %dw, %s : tensor<16x32xbf16>, tensor<32x64xbf16>, tensor<64xbf16>
}

// -----

// A weight gradient xᵀ·dy and the same dy's sum over rows (the bias
// gradient, BGRADA); dy's reshape to [rows, N] goes into the body (a copy
// of it when something else reads the reshape too).
// CHECK-LABEL: func.func @weight_and_bias_grad
// CHECK: %[[F:.+]]:2 = kiln.fusion(%{{.+}}, %{{.+}}) : (tensor<2x8x64xbf16>, tensor<16x32xbf16>) -> (tensor<32x64xbf16>, tensor<64xbf16>)
// CHECK: %[[R:.+]] = kiln.reshape
// CHECK-NEXT: %[[W:.+]] = kiln.matmul %{{.+}}, %[[R]] transpose_a
// CHECK-NEXT: %[[S:.+]] = kiln.reduce_sum %{{.+}}, dims = [0, 1]
// CHECK-NEXT: kiln.yield %[[W]], %[[S]]
// NOBGRAD-LABEL: func.func @weight_and_bias_grad
// NOBGRAD-NOT: kiln.fusion
// NOBGRAD: kiln.matmul %{{.+}}, %{{.+}} transpose_a
// NOBGRAD: kiln.reduce_sum %{{.+}}, dims = [0, 1]
func.func @weight_and_bias_grad(%x: tensor<16x32xbf16>, %dy: tensor<2x8x64xbf16>) -> (tensor<32x64xbf16>, tensor<64xbf16>) {
  %r = kiln.reshape %dy : tensor<2x8x64xbf16> -> tensor<16x64xbf16>
  %w = kiln.matmul %x, %r transpose_a : tensor<16x32xbf16>, tensor<16x64xbf16> -> tensor<32x64xbf16>
  %s = kiln.reduce_sum %dy, dims = [0, 1] : tensor<2x8x64xbf16> -> tensor<64xbf16>
  return %w, %s : tensor<32x64xbf16>, tensor<64xbf16>
}

// -----

// Widened to f32 later (autodiff differentiates a parameter's cast last,
// so a weight gradient's widening sits at the end of the backward): the
// fusion goes where the GEMM was, not at the casts, so that x and dy need
// not live until then.
// CHECK-LABEL: func.func @weight_grad_placed_at_its_gemm
// CHECK: kiln.fusion(%{{.+}}, %{{.+}}) : (tensor<2x8x64xbf16>, tensor<16x32xbf16>) -> (tensor<32x64xf32>, tensor<64xf32>)
// CHECK: kiln.yield
// CHECK-NEXT: }
// CHECK-NEXT: kiln.exp
func.func @weight_grad_placed_at_its_gemm(%x: tensor<16x32xbf16>, %dy: tensor<2x8x64xbf16>, %z: tensor<8xf32>) -> (tensor<32x64xf32>, tensor<64xf32>, tensor<8xf32>) {
  %r = kiln.reshape %dy : tensor<2x8x64xbf16> -> tensor<16x64xbf16>
  %w = kiln.matmul %x, %r transpose_a : tensor<16x32xbf16>, tensor<16x64xbf16> -> tensor<32x64xbf16>
  %s = kiln.reduce_sum %dy, dims = [0, 1] : tensor<2x8x64xbf16> -> tensor<64xbf16>
  %e = kiln.exp %z : tensor<8xf32>
  %wf = kiln.cast %w : tensor<32x64xbf16> to tensor<32x64xf32>
  %sf = kiln.cast %s : tensor<64xbf16> to tensor<64xf32>
  return %wf, %sf, %e : tensor<32x64xf32>, tensor<64xf32>, tensor<8xf32>
}

// -----

// A GEMM operand that is a splat constant (a mean's gradient reaching a
// product directly) is an input of the epilogue, not a literal in its body:
// cuBLASLt reads it from memory.
// CHECK-LABEL: func.func @constant_operand
// CHECK: %[[C:.+]] = kiln.constant dense<3.125000e-02> : tensor<4x8xf32>
// CHECK: kiln.fusion(%[[C]], %{{.+}}, %{{.+}}) : (tensor<4x8xf32>, tensor<16x8xf32>, tensor<4x16xf32>) -> tensor<4x16xf32>
// CHECK-NEXT: ^bb0(%[[A:.+]]: tensor<4x8xf32>, %[[W:.+]]: tensor<16x8xf32>, %[[H:.+]]: tensor<4x16xf32>):
// CHECK-NEXT: %[[M:.+]] = kiln.matmul %[[A]], %[[W]] transpose_b
// CHECK-NEXT: kiln.gelu_grad tanh %[[H]], %[[M]]
func.func @constant_operand(%w: tensor<16x8xf32>, %h: tensor<4x16xf32>) -> tensor<4x16xf32> {
  %c = kiln.constant dense<3.125e-02> : tensor<4x8xf32>
  %m = kiln.matmul %c, %w transpose_b : tensor<4x8xf32>, tensor<16x8xf32> -> tensor<4x16xf32>
  %g = kiln.gelu_grad tanh %h, %m : tensor<4x16xf32>
  return %g : tensor<4x16xf32>
}

// -----

// The same when dy is a view of another value (a head-major qkv gradient
// [B, T, H, 3, D]) that the sum reads as [B, T, 3C] and the product as
// [B·T, 3C]: the body reshapes dy itself.
// CHECK-LABEL: func.func @weight_and_bias_grad_of_a_view
// CHECK: %[[DY:.+]] = kiln.reshape %{{.+}} : tensor<2x8x2x3x8xbf16> -> tensor<2x8x48xbf16>
// CHECK: kiln.fusion(%[[DY]], %{{.+}}) : (tensor<2x8x48xbf16>, tensor<16x16xbf16>) -> (tensor<16x48xbf16>, tensor<48xbf16>)
// CHECK: %[[R:.+]] = kiln.reshape %{{.+}} : tensor<2x8x48xbf16> -> tensor<16x48xbf16>
// CHECK-NEXT: kiln.matmul %{{.+}}, %[[R]] transpose_a
// CHECK-NEXT: kiln.reduce_sum %{{.+}}, dims = [0, 1]
func.func @weight_and_bias_grad_of_a_view(%x: tensor<16x16xbf16>, %g: tensor<2x8x2x3x8xbf16>) -> (tensor<16x48xbf16>, tensor<48xbf16>) {
  %dy = kiln.reshape %g : tensor<2x8x2x3x8xbf16> -> tensor<2x8x48xbf16>
  %r = kiln.reshape %g : tensor<2x8x2x3x8xbf16> -> tensor<16x48xbf16>
  %w = kiln.matmul %x, %r transpose_a : tensor<16x16xbf16>, tensor<16x48xbf16> -> tensor<16x48xbf16>
  %s = kiln.reduce_sum %dy, dims = [0, 1] : tensor<2x8x48xbf16> -> tensor<48xbf16>
  return %w, %s : tensor<16x48xbf16>, tensor<48xbf16>
}

// -----

// A bf16 product widened by a cast that feeds a non-elementwise op: the
// product is written in f32. Where an elementwise op reads the cast, loop
// fusion takes the cast instead (it reads the narrower type).
// CHECK-LABEL: func.func @wide
// CHECK: %[[P:.+]] = kiln.matmul %{{.+}}, %{{.+}} : tensor<16x32xbf16>, tensor<32x64xbf16> -> tensor<16x64xf32>
// CHECK-NEXT: kiln.softmax %[[P]]
// CHECK: kiln.matmul %{{.+}}, %{{.+}} : tensor<16x32xbf16>, tensor<32x64xbf16> -> tensor<16x64xbf16>
// CHECK: kiln.fusion
// CHECK: kiln.cast
// CHECK: kiln.exp
// OFF-LABEL: func.func @wide
// OFF: kiln.matmul {{.*}} -> tensor<16x64xbf16>
// OFF-NEXT: kiln.cast
func.func @wide(%x: tensor<16x32xbf16>, %w: tensor<32x64xbf16>) -> (tensor<16x64xf32>, tensor<16x64xf32>) {
  %p = kiln.matmul %x, %w : tensor<16x32xbf16>, tensor<32x64xbf16> -> tensor<16x64xbf16>
  %c = kiln.cast %p : tensor<16x64xbf16> to tensor<16x64xf32>
  %s = kiln.softmax %c : tensor<16x64xf32>
  %q = kiln.matmul %x, %w : tensor<16x32xbf16>, tensor<32x64xbf16> -> tensor<16x64xbf16>
  %d = kiln.cast %q : tensor<16x64xbf16> to tensor<16x64xf32>
  %e = kiln.exp %d : tensor<16x64xf32>
  return %s, %e : tensor<16x64xf32>, tensor<16x64xf32>
}

// -----

// Near misses: a product whose columns are no multiple of 8 (cuBLASLt's
// aux and vector alignment); a batch of products (attention's p·v shape);
// a product read by something else besides its gelu_grad; a weight
// gradient without transpose_a. A sum over the wrong dimension leaves its
// gelu_grad's epilogue without the bias gradient. (The gelu_grad of the
// product read twice and the neg reading it are siblings: one loop
// fusion.)
// CHECK-LABEL: func.func @near_misses
// CHECK-NOT: kiln.fusion
// CHECK: kiln.matmul
// CHECK: kiln.fusion
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.neg
// CHECK-NEXT: kiln.gelu_grad
// CHECK: %[[F:.+]] = kiln.fusion
// CHECK: kiln.matmul
// CHECK-NEXT: kiln.gelu_grad
// CHECK-NEXT: kiln.yield
// CHECK: kiln.reduce_sum %[[F]], dims = [1]
// CHECK-NOT: kiln.fusion
// CHECK: return
func.func @near_misses(%x: tensor<16x32xf32>, %w12: tensor<32x12xf32>, %q: tensor<4x16x32xf32>, %k: tensor<4x32x16xf32>,
                       %dy: tensor<16x64xf32>, %w: tensor<64x64xf32>, %z: tensor<16x64xf32>, %y: tensor<16x64xf32>, %u: tensor<64x16xf32>)
    -> (tensor<16x12xf32>, tensor<4x16x16xf32>, tensor<16x64xf32>, tensor<16x64xf32>, tensor<16xf32>, tensor<64x64xf32>, tensor<64xf32>) {
  %a = kiln.matmul %x, %w12 : tensor<16x32xf32>, tensor<32x12xf32> -> tensor<16x12xf32>
  %ga = kiln.gelu tanh %a : tensor<16x12xf32>
  %b = kiln.matmul %q, %k : tensor<4x16x32xf32>, tensor<4x32x16xf32> -> tensor<4x16x16xf32>
  %gb = kiln.gelu tanh %b : tensor<4x16x16xf32>
  %d = kiln.matmul %dy, %w : tensor<16x64xf32>, tensor<64x64xf32> -> tensor<16x64xf32>
  %n = kiln.neg %d : tensor<16x64xf32>
  %gd = kiln.gelu_grad tanh %z, %d : tensor<16x64xf32>
  %e = kiln.matmul %y, %w : tensor<16x64xf32>, tensor<64x64xf32> -> tensor<16x64xf32>
  %ge = kiln.gelu_grad tanh %z, %e : tensor<16x64xf32>
  %se = kiln.reduce_sum %ge, dims = [1] : tensor<16x64xf32> -> tensor<16xf32>
  %wg = kiln.matmul %u, %dy : tensor<64x16xf32>, tensor<16x64xf32> -> tensor<64x64xf32>
  %sy = kiln.reduce_sum %dy, dims = [0] : tensor<16x64xf32> -> tensor<64xf32>
  return %ga, %gb, %n, %gd, %se, %wg, %sy : tensor<16x12xf32>, tensor<4x16x16xf32>, tensor<16x64xf32>, tensor<16x64xf32>, tensor<16xf32>, tensor<64x64xf32>, tensor<64xf32>
}

// -----

// A norm's f32 output read only by a narrowing cast: the norm writes bf16
// (RMS norm too). One also read elsewhere keeps its f32 output and cast.
// CHECK-LABEL: func.func @norm_casts
// CHECK: %[[Y:.+]], %{{.+}}, %{{.+}} = kiln.layer_norm {{.+}} -> tensor<4x16xbf16>, tensor<4xf32>, tensor<4xf32>
// CHECK-NEXT: %[[R:.+]], %{{.+}} = kiln.rms_norm {{.+}} -> tensor<4x16xf16>, tensor<4xf32>
// CHECK-NEXT: %[[K:.+]], %{{.+}}, %{{.+}} = kiln.layer_norm {{.+}} -> tensor<4x16xf32>, tensor<4xf32>, tensor<4xf32>
// CHECK-NEXT: kiln.cast %[[K]]
// CHECK: return %[[Y]], %[[R]]
// OFF-LABEL: func.func @norm_casts
// OFF-COUNT-3: kiln.cast
func.func @norm_casts(%x: tensor<4x16xf32>, %w: tensor<16xf32>) -> (tensor<4x16xbf16>, tensor<4x16xf16>, tensor<4x16xbf16>, tensor<4x16xf32>) {
  %y, %m, %r = kiln.layer_norm %x, %w, %w {epsilon = 1.0e-05 : f32} : tensor<4x16xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<4x16xf32>, tensor<4xf32>, tensor<4xf32>
  %yb = kiln.cast %y : tensor<4x16xf32> to tensor<4x16xbf16>
  %z, %zr = kiln.rms_norm %x, %w {epsilon = 1.0e-05 : f32} : tensor<4x16xf32>, tensor<16xf32> -> tensor<4x16xf32>, tensor<4xf32>
  %zh = kiln.cast %z : tensor<4x16xf32> to tensor<4x16xf16>
  %k, %km, %kr = kiln.layer_norm %x, %w, %w {epsilon = 1.0e-05 : f32} : tensor<4x16xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<4x16xf32>, tensor<4xf32>, tensor<4xf32>
  %kb = kiln.cast %k : tensor<4x16xf32> to tensor<4x16xbf16>
  return %yb, %zh, %kb, %k : tensor<4x16xbf16>, tensor<4x16xf16>, tensor<4x16xbf16>, tensor<4x16xf32>
}

// -----

// Dead values: a gelu_grad read only by its row sum fuses without the sum
// (an epilogue yields its output); a gelu nothing reads is left alone.
// CHECK-LABEL: func.func @dead_values
// CHECK: %[[F:.+]] = kiln.fusion
// CHECK: kiln.gelu_grad
// CHECK-NEXT: kiln.yield
// CHECK: kiln.reduce_sum %[[F]], dims = [0]
// CHECK: kiln.gelu tanh
// CHECK-NOT: kiln.fusion
func.func @dead_values(%dy: tensor<16x64xf32>, %w: tensor<64x64xf32>, %z: tensor<16x64xf32>) -> (tensor<64xf32>, tensor<16x64xf32>) {
  %d = kiln.matmul %dy, %w : tensor<16x64xf32>, tensor<64x64xf32> -> tensor<16x64xf32>
  %g = kiln.gelu_grad tanh %z, %d : tensor<16x64xf32>
  %s = kiln.reduce_sum %g, dims = [0] : tensor<16x64xf32> -> tensor<64xf32>
  %p = kiln.matmul %z, %w : tensor<16x64xf32>, tensor<64x64xf32> -> tensor<16x64xf32>
  %dead = kiln.gelu tanh %p : tensor<16x64xf32>
  return %s, %p : tensor<64xf32>, tensor<16x64xf32>
}

// -----

// A weight gradient and its bias gradient both widened to f32 for the
// optimizer: the casts join the epilogue (cuBLASLt writes f32).
// CHECK-LABEL: func.func @wide_gradients
// CHECK: %[[F:.+]]:2 = kiln.fusion({{.+}}) : (tensor<16x32xbf16>, tensor<16x64xbf16>) -> (tensor<32x64xf32>, tensor<64xf32>)
// CHECK: kiln.matmul
// CHECK: kiln.reduce_sum
// CHECK: kiln.cast
// CHECK: kiln.cast
// CHECK-NEXT: kiln.yield
// CHECK: return %[[F]]#0, %[[F]]#1
func.func @wide_gradients(%x: tensor<16x32xbf16>, %dy: tensor<16x64xbf16>) -> (tensor<32x64xf32>, tensor<64xf32>) {
  %w = kiln.matmul %x, %dy transpose_a : tensor<16x32xbf16>, tensor<16x64xbf16> -> tensor<32x64xbf16>
  %s = kiln.reduce_sum %dy, dims = [0] : tensor<16x64xbf16> -> tensor<64xbf16>
  %wf = kiln.cast %w : tensor<32x64xbf16> to tensor<32x64xf32>
  %sf = kiln.cast %s : tensor<64xbf16> to tensor<64xf32>
  return %wf, %sf : tensor<32x64xf32>, tensor<64xf32>
}

// -----

// A widening cast read only as a norm gradient's dy: the gradient reads the
// bf16 product itself (widened as it loads), so the product stays bf16 —
// no GEMM writing f32 in the cast's place.
// CHECK-LABEL: func.func @norm_grad_reads_narrow_dy
// CHECK-NOT: kiln.cast
// CHECK: %[[P:.+]] = kiln.matmul %{{.+}}, %{{.+}} : tensor<16x32xbf16>, tensor<32x64xbf16> -> tensor<16x64xbf16>
// CHECK-NOT: kiln.cast
// CHECK: kiln.layer_norm_grad %{{.+}}, %{{.+}}, %{{.+}}, %{{.+}}, %[[P]] : {{.*}}, tensor<16x64xbf16> -> tensor<16x64xf32>
func.func @norm_grad_reads_narrow_dy(%a: tensor<16x32xbf16>, %w: tensor<32x64xbf16>, %x: tensor<16x64xf32>, %g: tensor<64xf32>, %m: tensor<16xf32>, %r: tensor<16xf32>) -> (tensor<16x64xf32>, tensor<64xf32>, tensor<64xf32>) {
  %p = kiln.matmul %a, %w : tensor<16x32xbf16>, tensor<32x64xbf16> -> tensor<16x64xbf16>
  %d = kiln.cast %p : tensor<16x64xbf16> to tensor<16x64xf32>
  %dx, %dw, %db = kiln.layer_norm_grad %x, %g, %m, %r, %d : tensor<16x64xf32>, tensor<64xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16x64xf32> -> tensor<16x64xf32>, tensor<64xf32>, tensor<64xf32>
  return %dx, %dw, %db : tensor<16x64xf32>, tensor<64xf32>, tensor<64xf32>
}
