// Round trip of the neural-network composites.
// RUN: kiln-opt %s | kiln-opt | FileCheck %s
// RUN: kiln-opt %s --mlir-print-op-generic | kiln-opt | FileCheck %s

// CHECK-LABEL: func.func @composites
func.func @composites(%wte: tensor<64x16xf32>, %ids: tensor<2x8xi32>, %x: tensor<2x8x16xf32>,
                      %g: tensor<16xf32>, %b: tensor<16xf32>, %logits: tensor<2x8x64xf32>) {
  // CHECK: kiln.embedding %{{.+}}, %{{.+}} : tensor<64x16xf32>, tensor<2x8xi32> -> tensor<2x8x16xf32>
  %0 = kiln.embedding %wte, %ids : tensor<64x16xf32>, tensor<2x8xi32> -> tensor<2x8x16xf32>
  // CHECK: kiln.softmax %{{.+}} : tensor<2x8x16xf32>
  %1 = kiln.softmax %x : tensor<2x8x16xf32>
  // CHECK: kiln.log_softmax %{{.+}} : tensor<2x8x16xf32>
  %2 = kiln.log_softmax %x : tensor<2x8x16xf32>
  // CHECK: kiln.layer_norm %{{.+}}, %{{.+}}, %{{.+}} {epsilon = 9.99999974E-6 : f32} : tensor<2x8x16xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<2x8x16xf32>, tensor<2x8xf32>, tensor<2x8xf32>
  %y, %mean, %rstd = kiln.layer_norm %x, %g, %b {epsilon = 1.0e-05 : f32} : tensor<2x8x16xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<2x8x16xf32>, tensor<2x8xf32>, tensor<2x8xf32>
  // CHECK: kiln.rms_norm %{{.+}}, %{{.+}} {epsilon = 9.99999997E-7 : f32} : tensor<2x8x16xf32>, tensor<16xf32> -> tensor<2x8x16xf32>, tensor<2x8xf32>
  %r, %rr = kiln.rms_norm %x, %g {epsilon = 1.0e-06 : f32} : tensor<2x8x16xf32>, tensor<16xf32> -> tensor<2x8x16xf32>, tensor<2x8xf32>
  // An f32 norm may write its output in bf16/f16 (a folded cast).
  // CHECK: kiln.layer_norm {{.+}} -> tensor<2x8x16xbf16>, tensor<2x8xf32>, tensor<2x8xf32>
  %yb, %meanb, %rstdb = kiln.layer_norm %x, %g, %b {epsilon = 1.0e-05 : f32} : tensor<2x8x16xf32>, tensor<16xf32>, tensor<16xf32> -> tensor<2x8x16xbf16>, tensor<2x8xf32>, tensor<2x8xf32>
  // CHECK: kiln.rms_norm {{.+}} -> tensor<2x8x16xf16>, tensor<2x8xf32>
  %rh, %rrh = kiln.rms_norm %x, %g {epsilon = 1.0e-06 : f32} : tensor<2x8x16xf32>, tensor<16xf32> -> tensor<2x8x16xf16>, tensor<2x8xf32>
  // CHECK: kiln.rope %{{.+}} : tensor<2x8x16xf32>
  %3 = kiln.rope %x : tensor<2x8x16xf32>
  // CHECK: kiln.rope %{{.+}} {inverse, theta = 5.000000e+05 : f32} : tensor<2x8x16xf32>
  %4 = kiln.rope %x {theta = 5.0e+05 : f32, inverse} : tensor<2x8x16xf32>
  // CHECK: kiln.cross_entropy %{{.+}}, %{{.+}} {valid_classes = 60 : i64} : tensor<2x8x64xf32>, tensor<2x8xi32> -> tensor<2x8xf32>, tensor<2x8xf32>
  %l, %lse = kiln.cross_entropy %logits, %ids {valid_classes = 60 : i64} : tensor<2x8x64xf32>, tensor<2x8xi32> -> tensor<2x8xf32>, tensor<2x8xf32>
  return
}

// CHECK-LABEL: func.func @attention
func.func @attention(%q: tensor<2x4x8x16xbf16>, %k: tensor<2x2x8x16xbf16>, %v: tensor<2x2x8x32xbf16>,
                     %qf: tensor<1x2x4x8xf64>, %kf: tensor<1x2x6x8xf64>) {
  // CHECK: kiln.attention %{{.+}}, %{{.+}}, %{{.+}} {causal, scale = 2.500000e-01 : f32} : tensor<2x4x8x16xbf16>, tensor<2x2x8x16xbf16>, tensor<2x2x8x32xbf16> -> tensor<2x4x8x32xbf16>, tensor<2x4x8xf32>
  %o, %lse = kiln.attention %q, %k, %v {causal, scale = 0.25 : f32} : tensor<2x4x8x16xbf16>, tensor<2x2x8x16xbf16>, tensor<2x2x8x32xbf16> -> tensor<2x4x8x32xbf16>, tensor<2x4x8xf32>
  // CHECK: kiln.attention %{{.+}}, %{{.+}}, %{{.+}} {scale = 1.000000e+00 : f32} : tensor<1x2x4x8xf64>, tensor<1x2x6x8xf64>, tensor<1x2x6x8xf64> -> tensor<1x2x4x8xf64>, tensor<1x2x4xf64>
  %o2, %lse2 = kiln.attention %qf, %kf, %kf {scale = 1.0 : f32} : tensor<1x2x4x8xf64>, tensor<1x2x6x8xf64>, tensor<1x2x6x8xf64> -> tensor<1x2x4x8xf64>, tensor<1x2x4xf64>
  return
}

// Packed documents: segment ids [B, T].
// CHECK-LABEL: func.func @attention_segments
// CHECK: kiln.attention %{{.+}}, %{{.+}}, %{{.+}} segments %{{.+}} {causal, scale = 2.500000e-01 : f32} : tensor<2x4x8x16xbf16>, tensor<2x2x8x16xbf16>, tensor<2x2x8x16xbf16>, tensor<2x8xi32> -> tensor<2x4x8x16xbf16>, tensor<2x4x8xf32>
// CHECK: kiln.attention_grad {{.*}} segments %{{.+}} {causal, scale = 2.500000e-01 : f32} : {{.*}}, tensor<2x8xi32> -> tensor<2x4x8x16xbf16>, tensor<2x2x8x16xbf16>, tensor<2x2x8x16xbf16>
func.func @attention_segments(%q: tensor<2x4x8x16xbf16>, %k: tensor<2x2x8x16xbf16>, %s: tensor<2x8xi32>) {
  %o, %lse = kiln.attention %q, %k, %k segments %s {causal, scale = 0.25 : f32} : tensor<2x4x8x16xbf16>, tensor<2x2x8x16xbf16>, tensor<2x2x8x16xbf16>, tensor<2x8xi32> -> tensor<2x4x8x16xbf16>, tensor<2x4x8xf32>
  %dq, %dk, %dv = kiln.attention_grad %q, %k, %k, %o, %lse, %o segments %s {causal, scale = 0.25 : f32} : tensor<2x4x8x16xbf16>, tensor<2x2x8x16xbf16>, tensor<2x2x8x16xbf16>, tensor<2x4x8x16xbf16>, tensor<2x4x8xf32>, tensor<2x4x8x16xbf16>, tensor<2x8xi32> -> tensor<2x4x8x16xbf16>, tensor<2x2x8x16xbf16>, tensor<2x2x8x16xbf16>
  return
}

// CHECK-LABEL: func.func @moe_route
func.func @moe_route(%p: tensor<16x4xf32>, %q: tensor<6x3xbf16>) {
  // CHECK: kiln.moe_route %{{.+}} {capacity = 5 : i64, top_k = 2 : i64} : tensor<16x4xf32> -> tensor<16x2xi32>, tensor<16x2xi32>, tensor<20xi32>
  %e, %s, %t = kiln.moe_route %p {top_k = 2 : i64, capacity = 5 : i64} : tensor<16x4xf32> -> tensor<16x2xi32>, tensor<16x2xi32>, tensor<20xi32>
  // CHECK: kiln.moe_route %{{.+}} {capacity = 1 : i64, top_k = 3 : i64} : tensor<6x3xbf16> -> tensor<6x3xi64>, tensor<6x3xi64>, tensor<3xi64>
  %e2, %s2, %t2 = kiln.moe_route %q {top_k = 3 : i64, capacity = 1 : i64} : tensor<6x3xbf16> -> tensor<6x3xi64>, tensor<6x3xi64>, tensor<3xi64>
  return
}
