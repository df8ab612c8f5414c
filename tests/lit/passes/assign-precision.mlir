// kiln-assign-precision: the three policies on a linear layer, a layer norm
// and a softmax cross-entropy.
// RUN: kiln-opt %s -kiln-assign-precision=policy=f32 | FileCheck %s --check-prefix=F32
// RUN: kiln-opt %s -kiln-assign-precision=policy=bf16-mixed | FileCheck %s --check-prefix=BF16
// RUN: kiln-opt %s -kiln-assign-precision=policy=f16-mixed | FileCheck %s --check-prefix=F16
// RUN: not kiln-opt %s -kiln-assign-precision=policy=fp8 2>&1 | FileCheck %s --check-prefix=BAD

// f32: nothing changes.
// F32-LABEL: func.func @forward
// F32-NOT: kiln.cast
// F32: kiln.matmul %{{.+}}, %{{.+}} bias %{{.+}} : tensor<2x4x8xf32>, tensor<8x16xf32>, tensor<16xf32> -> tensor<2x4x16xf32>

// bf16-mixed: the matmul's operands and bias cast once each (the weight
// right after the function starts), its result bf16; the GELU follows in
// bf16; the layer norm's input goes back to f32 and its statistics are
// f32; the head matmul reads the normalized activations in bf16; the
// cross-entropy takes the bf16 logits as they are, with an f32 loss; the
// function still returns f32.
// BF16-LABEL: func.func @forward
// BF16-DAG: %[[WL:.+]] = kiln.cast %arg1 : tensor<8x16xf32> to tensor<8x16xbf16>
// BF16-DAG: %[[BL:.+]] = kiln.cast %arg2 : tensor<16xf32> to tensor<16xbf16>
// BF16-DAG: %[[XL:.+]] = kiln.cast %arg0 : tensor<2x4x8xf32> to tensor<2x4x8xbf16>
// BF16: %[[H:.+]] = kiln.matmul %[[XL]], %[[WL]] bias %[[BL]] : tensor<2x4x8xbf16>, tensor<8x16xbf16>, tensor<16xbf16> -> tensor<2x4x16xbf16>
// BF16: %[[G:.+]] = kiln.gelu tanh %[[H]] : tensor<2x4x16xbf16>
// BF16: %[[GF:.+]] = kiln.cast %[[G]] : tensor<2x4x16xbf16> to tensor<2x4x16xf32>
// BF16: %{{.+}}, %{{.+}}, %{{.+}} = kiln.layer_norm %[[GF]], %arg3, %arg4 {{.*}} -> tensor<2x4x16xf32>, tensor<2x4xf32>, tensor<2x4xf32>
// BF16: kiln.matmul {{.*}} : tensor<2x4x16xbf16>, tensor<16x32xbf16> -> tensor<2x4x32xbf16>
// BF16: kiln.cross_entropy {{.*}} : tensor<2x4x32xbf16>, tensor<2x4xi32> -> tensor<2x4xf32>, tensor<2x4xf32>
// BF16: kiln.reduce_mean {{.*}} : tensor<2x4xf32> -> tensor<f32>
// BF16: return {{.*}} : tensor<f32>
// No value is cast twice to the same type.
// BF16-NOT: kiln.cast %arg1 :

// f16-mixed: the same with f16.
// F16-LABEL: func.func @forward
// F16: kiln.matmul {{.*}} : tensor<2x4x8xf16>, tensor<8x16xf16>, tensor<16xf16> -> tensor<2x4x16xf16>
// F16: kiln.gelu tanh {{.*}} : tensor<2x4x16xf16>

// BAD: kiln-assign-precision: unknown policy 'fp8' (expected f32, bf16-mixed or f16-mixed)
func.func @forward(%x: tensor<2x4x8xf32> {kiln.input = "x"}, %w: tensor<8x16xf32> {kiln.param = "w"},
                   %b: tensor<16xf32> {kiln.param = "b"}, %g: tensor<16xf32> {kiln.param = "g"},
                   %beta: tensor<16xf32> {kiln.param = "beta"}, %head: tensor<16x32xf32> {kiln.param = "head"},
                   %t: tensor<2x4xi32> {kiln.input = "t"}) -> (tensor<f32> {kiln.output = "loss"}) {
  %h = kiln.matmul %x, %w bias %b : tensor<2x4x8xf32>, tensor<8x16xf32>, tensor<16xf32> -> tensor<2x4x16xf32>
  %a = kiln.gelu tanh %h : tensor<2x4x16xf32>
  %y, %mean, %rstd = kiln.layer_norm %a, %g, %beta {epsilon = 1.0e-05 : f32} : tensor<2x4x16xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<2x4x16xf32>, tensor<2x4xf32>, tensor<2x4xf32>
  %logits = kiln.matmul %y, %head : tensor<2x4x16xf32>, tensor<16x32xf32> -> tensor<2x4x32xf32>
  %l, %lse = kiln.cross_entropy %logits, %t : tensor<2x4x32xf32>, tensor<2x4xi32> -> tensor<2x4xf32>, tensor<2x4xf32>
  %loss = kiln.reduce_mean %l, dims = [0, 1] : tensor<2x4xf32> -> tensor<f32>
  return %loss : tensor<f32>
}
