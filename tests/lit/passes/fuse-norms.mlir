// kiln-fuse's norm fusions: a norm takes the elementwise chain computing its
// input, a norm's gradient the elementwise ops reading its dx; what must
// stay apart stays apart.
// RUN: kiln-opt %s -split-input-file -kiln-fuse | FileCheck %s
// RUN: kiln-opt %s -split-input-file -kiln-fuse=norms=false | FileCheck %s --check-prefix=OFF

// The residual add before a layer norm: one fusion yielding the sum (read
// after it) and the norm's results; the weight and bias are inputs.
// CHECK-LABEL: func.func @residual
// CHECK-SAME: (%[[P:[^:]+]]: tensor<2x4x16xbf16>, %[[R:[^:]+]]: tensor<2x4x16xf32>, %[[W:[^:]+]]: tensor<16xf32>, %[[B:[^:]+]]: tensor<16xf32>)
// CHECK: %[[F:.+]]:4 = kiln.fusion(%[[P]], %[[R]], %[[W]], %[[B]])
// CHECK-NEXT: ^bb0(%[[A0:[^:]+]]: tensor<2x4x16xbf16>, %[[A1:[^:]+]]: tensor<2x4x16xf32>, %[[A2:[^:]+]]: tensor<16xf32>, %[[A3:[^:]+]]: tensor<16xf32>):
// CHECK-NEXT: %[[C:.+]] = kiln.cast %[[A0]]
// CHECK-NEXT: %[[S:.+]] = kiln.add %[[A1]], %[[C]]
// CHECK-NEXT: %[[Y:.+]], %[[M:.+]], %[[Q:.+]] = kiln.layer_norm %[[S]], %[[A2]], %[[A3]]
// CHECK-NEXT: kiln.yield %[[S]], %[[Y]], %[[M]], %[[Q]]
// CHECK: return %[[F]]#0, %[[F]]#1, %[[F]]#2, %[[F]]#3
// OFF-LABEL: func.func @residual
// OFF: kiln.fusion
// OFF-NOT: kiln.layer_norm
// OFF: kiln.yield
// OFF: kiln.layer_norm
func.func @residual(%p: tensor<2x4x16xbf16>, %r: tensor<2x4x16xf32>, %w: tensor<16xf32>, %b: tensor<16xf32>)
    -> (tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4xf32>, tensor<2x4xf32>) {
  %0 = kiln.cast %p : tensor<2x4x16xbf16> to tensor<2x4x16xf32>
  %1 = kiln.add %r, %0 : tensor<2x4x16xf32>
  %y, %m, %q = kiln.layer_norm %1, %w, %b {epsilon = 1.0e-05 : f32} : tensor<2x4x16xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<2x4x16xf32>, tensor<2x4xf32>, tensor<2x4xf32>
  return %1, %y, %m, %q : tensor<2x4x16xf32>, tensor<2x4x16xf32>, tensor<2x4xf32>, tensor<2x4xf32>
}

// -----

// A norm's gradient and the residual gradient's add and cast reading its
// dx: one fusion at the cast, yielding dweight, dbias and both values read
// after it (dx itself is not).
// CHECK-LABEL: func.func @gradient
// CHECK: %[[F:.+]]:4 = kiln.fusion
// CHECK-NEXT: ^bb0
// CHECK-NEXT: %[[DX:[^,]+]], %[[DW:[^,]+]], %[[DB:.+]] = kiln.layer_norm_grad
// CHECK-NEXT: %[[S:.+]] = kiln.add %{{.+}}, %[[DX]]
// CHECK-NEXT: %[[C:.+]] = kiln.cast %[[S]]
// CHECK-NEXT: kiln.yield %[[DW]], %[[DB]], %[[S]], %[[C]]
// CHECK-NOT: kiln.fusion
// OFF-LABEL: func.func @gradient
// OFF: kiln.layer_norm_grad
// OFF: kiln.fusion
// OFF-NOT: kiln.layer_norm_grad
func.func @gradient(%x: tensor<8x16xf32>, %w: tensor<16xf32>, %m: tensor<8xf32>, %q: tensor<8xf32>,
                    %dy: tensor<8x16xf32>, %g: tensor<8x16xf32>)
    -> (tensor<8x16xf32>, tensor<8x16xbf16>, tensor<16xf32>, tensor<16xf32>) {
  %dx, %dw, %db = kiln.layer_norm_grad %x, %w, %m, %q, %dy : tensor<8x16xf32>, tensor<16xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8x16xf32> -> tensor<8x16xf32>, tensor<16xf32>, tensor<16xf32>
  %0 = kiln.add %g, %dx : tensor<8x16xf32>
  %1 = kiln.cast %0 : tensor<8x16xf32> to tensor<8x16xbf16>
  return %0, %1, %dw, %db : tensor<8x16xf32>, tensor<8x16xbf16>, tensor<16xf32>, tensor<16xf32>
}

// -----

// RMS norm with a lone cast before it; its output's reader is not fused
// with it (it starts a loop fusion of its own).
// CHECK-LABEL: func.func @rms_then_user
// CHECK: kiln.fusion
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.cast
// CHECK-NEXT: kiln.rms_norm
// CHECK-NEXT: kiln.yield
// CHECK: kiln.fusion
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.exp
// CHECK-NEXT: kiln.neg
// CHECK-NEXT: kiln.yield
func.func @rms_then_user(%x: tensor<4x32xbf16>, %w: tensor<32xf32>) -> tensor<4x32xf32> {
  %0 = kiln.cast %x : tensor<4x32xbf16> to tensor<4x32xf32>
  %y, %q = kiln.rms_norm %0, %w {epsilon = 1.0e-06 : f32} : tensor<4x32xf32>, tensor<32xf32> -> tensor<4x32xf32>, tensor<4xf32>
  %1 = kiln.exp %y : tensor<4x32xf32>
  %2 = kiln.neg %1 : tensor<4x32xf32>
  return %2 : tensor<4x32xf32>
}

// -----

// Rows that are not whole 16-byte vectors (12), or longer than a warp's
// registers hold (4096): the norms stay apart; the chains fuse alone.
// CHECK-LABEL: func.func @rows_that_do_not_fit
// CHECK: kiln.fusion
// CHECK-NOT: kiln.rms_norm
// CHECK: kiln.yield
// CHECK: kiln.rms_norm
// CHECK: kiln.fusion
// CHECK-NOT: kiln.rms_norm
// CHECK: kiln.yield
// CHECK: kiln.rms_norm
func.func @rows_that_do_not_fit(%x: tensor<4x12xf32>, %w: tensor<12xf32>, %u: tensor<2x4096xf32>, %v: tensor<4096xf32>)
    -> (tensor<4x12xf32>, tensor<2x4096xf32>) {
  %0 = kiln.exp %x : tensor<4x12xf32>
  %1 = kiln.neg %0 : tensor<4x12xf32>
  %y, %q = kiln.rms_norm %1, %w {epsilon = 1.0e-06 : f32} : tensor<4x12xf32>, tensor<12xf32> -> tensor<4x12xf32>, tensor<4xf32>
  %2 = kiln.exp %u : tensor<2x4096xf32>
  %3 = kiln.neg %2 : tensor<2x4096xf32>
  %z, %s = kiln.rms_norm %3, %v {epsilon = 1.0e-06 : f32} : tensor<2x4096xf32>, tensor<4096xf32> -> tensor<2x4096xf32>, tensor<2xf32>
  return %y, %z : tensor<4x12xf32>, tensor<2x4096xf32>
}

// -----

// The sum is read between the add and the norm (not after the norm): the
// add cannot join the norm, which stays alone. (The add joins the sum, a
// reduction fusion yielding it for the norm.)
// CHECK-LABEL: func.func @read_before_the_norm
// CHECK: %[[F:.+]]:2 = kiln.fusion
// CHECK: kiln.add
// CHECK-NEXT: kiln.reduce_sum
// CHECK-NEXT: kiln.yield
// CHECK-NOT: kiln.fusion
// CHECK: kiln.rms_norm %[[F]]#0
func.func @read_before_the_norm(%x: tensor<4x16xf32>, %r: tensor<4x16xf32>, %w: tensor<16xf32>)
    -> (tensor<4x16xf32>, tensor<4x16xf32>) {
  %0 = kiln.add %x, %r : tensor<4x16xf32>
  %1 = kiln.reduce_sum %0, dims = [1] : tensor<4x16xf32> -> tensor<4xf32>
  %2 = kiln.broadcast_in_dim %1, dims = [0] : tensor<4xf32> -> tensor<4x16xf32>
  %y, %q = kiln.rms_norm %0, %w {epsilon = 1.0e-06 : f32} : tensor<4x16xf32>, tensor<16xf32> -> tensor<4x16xf32>, tensor<4xf32>
  return %y, %2 : tensor<4x16xf32>, tensor<4x16xf32>
}

// -----

// A gradient whose weight gradient is dead is not fused (a norm fusion
// yields it); its dx's reader stays alone.
// CHECK-LABEL: func.func @dead_weight_gradient
// CHECK: kiln.rms_norm_grad
// CHECK-NEXT: kiln.exp
// CHECK-NOT: kiln.fusion
func.func @dead_weight_gradient(%x: tensor<8x16xf32>, %w: tensor<16xf32>, %q: tensor<8xf32>, %dy: tensor<8x16xf32>)
    -> tensor<8x16xf32> {
  %dx, %dw = kiln.rms_norm_grad %x, %w, %q, %dy : tensor<8x16xf32>, tensor<16xf32>, tensor<8xf32>, tensor<8x16xf32> -> tensor<8x16xf32>, tensor<16xf32>
  %0 = kiln.exp %dx : tensor<8x16xf32>
  return %0 : tensor<8x16xf32>
}

// -----

// A norm's splat-constant operands (a constant weight; a splat dy) stay
// inputs: its kernel reads them as tensors. The elementwise ops' splats
// are still literals in the body.
// CHECK-LABEL: func.func @constant_operands
// CHECK: %[[W:.+]] = kiln.constant dense<1.000000e+00> : tensor<16xf32>
// CHECK: kiln.fusion(%{{.+}}, %{{.+}}, %[[W]])
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.constant dense<2.000000e+00>
// CHECK-NEXT: kiln.mul
// CHECK-NEXT: kiln.add
// CHECK-NEXT: kiln.rms_norm
// CHECK: %[[D:.+]] = kiln.constant dense<5.000000e-01> : tensor<4x16xf32>
// CHECK: kiln.fusion(%{{.+}}, %[[W]], %{{.+}}, %[[D]])
// CHECK-NEXT: ^bb0
// CHECK-NEXT: kiln.rms_norm_grad
// CHECK-NEXT: kiln.cast
func.func @constant_operands(%x: tensor<4x16xf32>, %r: tensor<4x16xf32>) -> (tensor<4x16xf32>, tensor<4x16xbf16>, tensor<16xf32>) {
  %w = kiln.constant dense<1.0> : tensor<16xf32>
  %two = kiln.constant dense<2.0> : tensor<4x16xf32>
  %0 = kiln.mul %x, %two : tensor<4x16xf32>
  %1 = kiln.add %0, %r : tensor<4x16xf32>
  %y, %q = kiln.rms_norm %1, %w {epsilon = 1.0e-06 : f32} : tensor<4x16xf32>, tensor<16xf32> -> tensor<4x16xf32>, tensor<4xf32>
  %d = kiln.constant dense<0.5> : tensor<4x16xf32>
  %dx, %dw = kiln.rms_norm_grad %1, %w, %q, %d : tensor<4x16xf32>, tensor<16xf32>, tensor<4xf32>, tensor<4x16xf32> -> tensor<4x16xf32>, tensor<16xf32>
  %2 = kiln.cast %dx : tensor<4x16xf32> to tensor<4x16xbf16>
  return %y, %2, %dw : tensor<4x16xf32>, tensor<4x16xbf16>, tensor<16xf32>
}

// -----

// The projection before the residual add: its weight gradient (a matmul
// transpose_a of the bf16 residual gradient) and its bias gradient (that
// gradient's column sum, widened to f32). The sum and its cast join the
// norm gradient's fusion, which stays where the cast of the residual
// gradient was; the weight gradient gets no BGRADA epilogue (it writes f32
// itself: the cast folds into it). With norms off the sum goes to the GEMM.
// CHECK-LABEL: func.func @bias_gradient_in_the_norm_gradient
// CHECK: %[[F:.+]]:5 = kiln.fusion
// CHECK-NEXT: ^bb0
// CHECK-NEXT: %[[DX:[^,]+]], %[[DW:[^,]+]], %[[DB:.+]] = kiln.layer_norm_grad
// CHECK-NEXT: %[[S:.+]] = kiln.add %{{.+}}, %[[DX]]
// CHECK-NEXT: %[[C:.+]] = kiln.cast %[[S]] : tensor<2x4x16xf32> to tensor<2x4x16xbf16>
// CHECK-NEXT: %[[SUM:.+]] = kiln.reduce_sum %[[C]], dims = [0, 1] : tensor<2x4x16xbf16> -> tensor<16xbf16>
// CHECK-NEXT: %[[WIDE:.+]] = kiln.cast %[[SUM]] : tensor<16xbf16> to tensor<16xf32>
// CHECK-NEXT: kiln.yield %[[DW]], %[[DB]], %[[S]], %[[C]], %[[WIDE]]
// CHECK: kiln.reshape %[[F]]#3
// CHECK-NEXT: kiln.matmul %{{.+}}, %{{.+}} transpose_a : tensor<8x32xbf16>, tensor<8x16xbf16> -> tensor<32x16xf32>
// CHECK-NOT: kiln.fusion
// CHECK: return %[[F]]#2, %{{.+}}, %[[F]]#4, %[[F]]#0, %[[F]]#1
// OFF-LABEL: func.func @bias_gradient_in_the_norm_gradient
// OFF: kiln.layer_norm_grad
// OFF: kiln.fusion
// OFF: kiln.matmul {{.+}} transpose_a
// OFF-NEXT: kiln.reduce_sum
func.func @bias_gradient_in_the_norm_gradient(%x: tensor<2x4x16xf32>, %w: tensor<16xf32>, %m: tensor<2x4xf32>,
                                              %q: tensor<2x4xf32>, %dy: tensor<2x4x16xf32>,
                                              %g: tensor<2x4x16xf32>, %a: tensor<8x32xbf16>)
    -> (tensor<2x4x16xf32>, tensor<32x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>) {
  %dx, %dw, %db = kiln.layer_norm_grad %x, %w, %m, %q, %dy : tensor<2x4x16xf32>, tensor<16xf32>, tensor<2x4xf32>, tensor<2x4xf32>, tensor<2x4x16xf32> -> tensor<2x4x16xf32>, tensor<16xf32>, tensor<16xf32>
  %0 = kiln.add %g, %dx : tensor<2x4x16xf32>
  %1 = kiln.cast %0 : tensor<2x4x16xf32> to tensor<2x4x16xbf16>
  %2 = kiln.reshape %1 : tensor<2x4x16xbf16> -> tensor<8x16xbf16>
  %3 = kiln.matmul %a, %2 transpose_a : tensor<8x32xbf16>, tensor<8x16xbf16> -> tensor<32x16xbf16>
  %4 = kiln.reduce_sum %1, dims = [0, 1] : tensor<2x4x16xbf16> -> tensor<16xbf16>
  %5 = kiln.cast %3 : tensor<32x16xbf16> to tensor<32x16xf32>
  %6 = kiln.cast %4 : tensor<16xbf16> to tensor<16xf32>
  return %0, %5, %6, %dw, %db : tensor<2x4x16xf32>, tensor<32x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>
}

// -----

// A norm gradient no elementwise op reads fuses with a column sum of its dx
// alone (f32: no cast); one whose rows would need more than 96 KiB of
// shared memory for the kernel's partials (3 parts x 8 warps x 1032 f32)
// stays apart, and so does its sum.
// CHECK-LABEL: func.func @sum_of_dx
// CHECK: %[[F:.+]]:4 = kiln.fusion
// CHECK-NEXT: ^bb0
// CHECK-NEXT: %[[DX:[^,]+]], %[[DW:[^,]+]], %[[DB:.+]] = kiln.layer_norm_grad
// CHECK-NEXT: %[[SUM:.+]] = kiln.reduce_sum %[[DX]], dims = [0] : tensor<8x16xf32> -> tensor<16xf32>
// CHECK-NEXT: kiln.yield %[[DX]], %[[DW]], %[[DB]], %[[SUM]]
// CHECK: kiln.layer_norm_grad {{.+}} -> tensor<2x1032xf32>
// CHECK-NEXT: kiln.reduce_sum
// CHECK-NOT: kiln.fusion
func.func @sum_of_dx(%x: tensor<8x16xf32>, %w: tensor<16xf32>, %m: tensor<8xf32>, %q: tensor<8xf32>,
                     %dy: tensor<8x16xf32>, %u: tensor<2x1032xf32>, %v: tensor<1032xf32>, %n: tensor<2xf32>,
                     %p: tensor<2xf32>, %dz: tensor<2x1032xf32>)
    -> (tensor<8x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<2x1032xf32>, tensor<1032xf32>, tensor<1032xf32>, tensor<1032xf32>) {
  %dx, %dw, %db = kiln.layer_norm_grad %x, %w, %m, %q, %dy : tensor<8x16xf32>, tensor<16xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8x16xf32> -> tensor<8x16xf32>, tensor<16xf32>, tensor<16xf32>
  %0 = kiln.reduce_sum %dx, dims = [0] : tensor<8x16xf32> -> tensor<16xf32>
  %ex, %ew, %eb = kiln.layer_norm_grad %u, %v, %n, %p, %dz : tensor<2x1032xf32>, tensor<1032xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2x1032xf32> -> tensor<2x1032xf32>, tensor<1032xf32>, tensor<1032xf32>
  %1 = kiln.reduce_sum %ex, dims = [0] : tensor<2x1032xf32> -> tensor<1032xf32>
  return %dx, %dw, %db, %0, %ex, %ew, %eb, %1 : tensor<8x16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<16xf32>, tensor<2x1032xf32>, tensor<1032xf32>, tensor<1032xf32>, tensor<1032xf32>
}
