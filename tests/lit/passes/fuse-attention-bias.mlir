// kiln-fuse's attention-gradient fusion: the column sum of an
// attention_qkv_grad's dqkv (the qkv projection's bias gradient) and its
// widening to f32 join the gradient, where the gradient was.
// RUN: kiln-opt %s -split-input-file -kiln-fuse | FileCheck %s
// RUN: kiln-opt %s -split-input-file -kiln-fuse=attention-bias=false | FileCheck %s --check-prefix=OFF

// GPT-2's form: dqkv reshaped to [B, T, 3·H·D] for the input projection's
// gradients, summed over B and T, widened to f32. The reshape stays for
// the weight gradient; a clone of it feeds the sum inside.
// CHECK-LABEL: func.func @gpt2
// CHECK: %[[F:.+]]:2 = kiln.fusion(%arg0, %arg1, %arg2, %arg3) : ({{.+}}) -> (tensor<2x8x2x3x16xbf16>, tensor<96xf32>)
// CHECK-NEXT: ^bb0
// CHECK-NEXT: %[[G:.+]] = kiln.attention_qkv_grad
// CHECK-NEXT: %[[R:.+]] = kiln.reshape %[[G]] : tensor<2x8x2x3x16xbf16> -> tensor<2x8x96xbf16>
// CHECK-NEXT: %[[S:.+]] = kiln.reduce_sum %[[R]], dims = [0, 1]
// CHECK-NEXT: %[[W:.+]] = kiln.cast %[[S]] : tensor<96xbf16> to tensor<96xf32>
// CHECK-NEXT: kiln.yield %[[G]], %[[W]]
// CHECK: %[[O:.+]] = kiln.reshape %[[F]]#0 : tensor<2x8x2x3x16xbf16> -> tensor<2x8x96xbf16>
// CHECK: kiln.matmul %[[O]], %arg4 transpose_b
// CHECK: return %{{.+}}, %[[F]]#1
// OFF-LABEL: func.func @gpt2
// OFF-NOT: kiln.fusion
func.func @gpt2(%qkv: tensor<2x8x2x3x16xbf16>, %o: tensor<2x8x2x16xbf16>, %lse: tensor<2x2x8xf32>, %do: tensor<2x8x2x16xbf16>, %w: tensor<32x96xbf16>)
    -> (tensor<2x8x32xbf16>, tensor<96xf32>) {
  %g = kiln.attention_qkv_grad %qkv, %o, %lse, %do {causal, scale = 0.25 : f32} : tensor<2x8x2x3x16xbf16>, tensor<2x8x2x16xbf16>, tensor<2x2x8xf32>, tensor<2x8x2x16xbf16> -> tensor<2x8x2x3x16xbf16>
  %r = kiln.reshape %g : tensor<2x8x2x3x16xbf16> -> tensor<2x8x96xbf16>
  %x = kiln.matmul %r, %w transpose_b : tensor<2x8x96xbf16>, tensor<32x96xbf16> -> tensor<2x8x32xbf16>
  %s = kiln.reduce_sum %r, dims = [0, 1] : tensor<2x8x96xbf16> -> tensor<96xbf16>
  %c = kiln.cast %s : tensor<96xbf16> to tensor<96xf32>
  return %x, %c : tensor<2x8x32xbf16>, tensor<96xf32>
}

// -----

// dqkv summed over [B, T] directly ([H, 3, D] values, the same order), not
// widened (f32 throughout); dqkv's other reader uses the first result.
// CHECK-LABEL: func.func @direct
// CHECK: %[[F:.+]]:2 = kiln.fusion
// CHECK: %[[G:.+]] = kiln.attention_qkv_grad
// CHECK-NEXT: %[[S:.+]] = kiln.reduce_sum %[[G]], dims = [0, 1] : tensor<2x8x2x3x16xf32> -> tensor<2x3x16xf32>
// CHECK-NEXT: kiln.yield %[[G]], %[[S]]
// CHECK: kiln.neg %[[F]]#0
// CHECK: return %{{.+}}, %[[F]]#1
func.func @direct(%qkv: tensor<2x8x2x3x16xf32>, %o: tensor<2x8x2x16xf32>, %lse: tensor<2x2x8xf32>, %do: tensor<2x8x2x16xf32>)
    -> (tensor<2x8x2x3x16xf32>, tensor<2x3x16xf32>) {
  %g = kiln.attention_qkv_grad %qkv, %o, %lse, %do {scale = 0.25 : f32} : tensor<2x8x2x3x16xf32>, tensor<2x8x2x16xf32>, tensor<2x2x8xf32>, tensor<2x8x2x16xf32> -> tensor<2x8x2x3x16xf32>
  %n = kiln.neg %g : tensor<2x8x2x3x16xf32>
  %s = kiln.reduce_sum %g, dims = [0, 1] : tensor<2x8x2x3x16xf32> -> tensor<2x3x16xf32>
  return %n, %s : tensor<2x8x2x3x16xf32>, tensor<2x3x16xf32>
}

// -----

// Near-misses it leaves alone: a sum over B only (not every row), a sum of
// a reshape whose rows are not a whole 3·H·D (the heads' columns apart), a
// sum over [B, H] of dqkv itself.
// CHECK-LABEL: func.func @apart
// CHECK-NOT: kiln.fusion
func.func @apart(%qkv: tensor<2x8x2x3x16xbf16>, %o: tensor<2x8x2x16xbf16>, %lse: tensor<2x2x8xf32>, %do: tensor<2x8x2x16xbf16>)
    -> (tensor<8x96xbf16>, tensor<48xbf16>, tensor<8x3x16xbf16>) {
  %g = kiln.attention_qkv_grad %qkv, %o, %lse, %do {causal, scale = 0.25 : f32} : tensor<2x8x2x3x16xbf16>, tensor<2x8x2x16xbf16>, tensor<2x2x8xf32>, tensor<2x8x2x16xbf16> -> tensor<2x8x2x3x16xbf16>
  %r = kiln.reshape %g : tensor<2x8x2x3x16xbf16> -> tensor<2x8x96xbf16>
  %a = kiln.reduce_sum %r, dims = [0] : tensor<2x8x96xbf16> -> tensor<8x96xbf16>
  %h = kiln.reshape %g : tensor<2x8x2x3x16xbf16> -> tensor<32x48xbf16>
  %b = kiln.reduce_sum %h, dims = [0] : tensor<32x48xbf16> -> tensor<48xbf16>
  %c = kiln.reduce_sum %g, dims = [0, 2] : tensor<2x8x2x3x16xbf16> -> tensor<8x3x16xbf16>
  return %a, %b, %c : tensor<8x96xbf16>, tensor<48xbf16>, tensor<8x3x16xbf16>
}
