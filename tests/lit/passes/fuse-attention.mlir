// kiln-fuse-attention: the forms of attention it fuses, and near-misses it
// must leave alone.
// RUN: kiln-opt %s -split-input-file -kiln-fuse-attention | FileCheck %s
// RUN: kiln-opt %s -split-input-file -kiln-fuse-attention | kiln-opt -split-input-file | FileCheck %s --check-prefix=ROUND
// ROUND: kiln.attention

// The frontend's form: scale on q, a causal iota/compare/select mask
// broadcast over batch and heads, the probabilities times v.
// CHECK-LABEL: func.func @frontend
// CHECK-SAME: (%[[Q:.+]]: tensor<2x3x4x8xf32>, %[[K:.+]]: tensor<2x3x4x8xf32>, %[[V:.+]]: tensor<2x3x4x8xf32>)
// CHECK: %[[O:.+]], %{{.+}} = kiln.attention %[[Q]], %[[K]], %[[V]] {causal, scale = 0.353553385 : f32} : tensor<2x3x4x8xf32>, tensor<2x3x4x8xf32>, tensor<2x3x4x8xf32> -> tensor<2x3x4x8xf32>, tensor<2x3x4xf32>
// CHECK-NOT: kiln.softmax
// CHECK-NOT: kiln.select
// CHECK-NOT: kiln.iota
// CHECK: return %[[O]]
func.func @frontend(%q: tensor<2x3x4x8xf32>, %k: tensor<2x3x4x8xf32>, %v: tensor<2x3x4x8xf32>) -> tensor<2x3x4x8xf32> {
  %c = kiln.constant dense<0.353553385> : tensor<2x3x4x8xf32>
  %qs = kiln.mul %q, %c : tensor<2x3x4x8xf32>
  %s = kiln.matmul %qs, %k transpose_b : tensor<2x3x4x8xf32>, tensor<2x3x4x8xf32> -> tensor<2x3x4x4xf32>
  %i = kiln.iota dim = 0 : tensor<4x4xi32>
  %j = kiln.iota dim = 1 : tensor<4x4xi32>
  %keep = kiln.compare ge, %i, %j : tensor<4x4xi32>
  %ninf = kiln.constant dense<0xFF800000> : tensor<2x3x4x4xf32>
  %kb = kiln.broadcast_in_dim %keep, dims = [2, 3] : tensor<4x4xi1> -> tensor<2x3x4x4xi1>
  %m = kiln.select %kb, %s, %ninf : tensor<2x3x4x4xi1>, tensor<2x3x4x4xf32>
  %p = kiln.softmax %m : tensor<2x3x4x4xf32>
  %o = kiln.matmul %p, %v : tensor<2x3x4x4xf32>, tensor<2x3x4x8xf32> -> tensor<2x3x4x8xf32>
  return %o : tensor<2x3x4x8xf32>
}

// -----

// No mask, the scale dividing the scores, k transposed by an op, cross
// attention (Tq = 2, Tk = 5).
// CHECK-LABEL: func.func @unmasked_div_transposed
// CHECK: kiln.attention %{{.+}}, %{{.+}}, %{{.+}} {scale = 2.500000e-01 : f32} : tensor<1x2x2x8xf32>, tensor<1x2x5x8xf32>, tensor<1x2x5x6xf32> -> tensor<1x2x2x6xf32>, tensor<1x2x2xf32>
// CHECK-NOT: kiln.transpose
func.func @unmasked_div_transposed(%q: tensor<1x2x2x8xf32>, %k: tensor<1x2x5x8xf32>, %v: tensor<1x2x5x6xf32>) -> tensor<1x2x2x6xf32> {
  %kt = kiln.transpose %k, [0, 1, 3, 2] : tensor<1x2x5x8xf32> -> tensor<1x2x8x5xf32>
  %s = kiln.matmul %q, %kt : tensor<1x2x2x8xf32>, tensor<1x2x8x5xf32> -> tensor<1x2x2x5xf32>
  %c = kiln.constant dense<4.0> : tensor<1x2x2x5xf32>
  %d = kiln.div %s, %c : tensor<1x2x2x5xf32>
  %p = kiln.softmax %d : tensor<1x2x2x5xf32>
  %o = kiln.matmul %p, %v : tensor<1x2x2x5xf32>, tensor<1x2x5x6xf32> -> tensor<1x2x2x6xf32>
  return %o : tensor<1x2x2x6xf32>
}

// -----

// An additive mask constant: 0 where kept, -inf where dropped.
// CHECK-LABEL: func.func @additive_constant
// CHECK: kiln.attention {{.*}} {causal, scale = 1.000000e+00 : f32}
func.func @additive_constant(%q: tensor<1x1x3x4xf32>, %k: tensor<1x1x3x4xf32>, %v: tensor<1x1x3x4xf32>) -> tensor<1x1x3x4xf32> {
  %s = kiln.matmul %q, %k transpose_b : tensor<1x1x3x4xf32>, tensor<1x1x3x4xf32> -> tensor<1x1x3x3xf32>
  %mask = kiln.constant dense<[[0.0, 0xFF800000, 0xFF800000], [0.0, 0.0, 0xFF800000], [0.0, 0.0, 0.0]]> : tensor<3x3xf32>
  %mb = kiln.broadcast_in_dim %mask, dims = [2, 3] : tensor<3x3xf32> -> tensor<1x1x3x3xf32>
  %a = kiln.add %mb, %s : tensor<1x1x3x3xf32>
  %p = kiln.softmax %a : tensor<1x1x3x3xf32>
  %o = kiln.matmul %p, %v : tensor<1x1x3x3xf32>, tensor<1x1x3x4xf32> -> tensor<1x1x3x4xf32>
  return %o : tensor<1x1x3x4xf32>
}

// -----

// An additive mask computed as select(keep, 0, -1e9), and a scale that
// multiplies from the left.
// CHECK-LABEL: func.func @additive_select
// CHECK: kiln.attention {{.*}} {causal, scale = 1.250000e-01 : f32}
func.func @additive_select(%q: tensor<1x1x4x4xf32>, %k: tensor<1x1x4x4xf32>, %v: tensor<1x1x4x4xf32>) -> tensor<1x1x4x4xf32> {
  %s = kiln.matmul %q, %k transpose_b : tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32> -> tensor<1x1x4x4xf32>
  %c = kiln.constant dense<0.125> : tensor<1x1x4x4xf32>
  %ss = kiln.mul %c, %s : tensor<1x1x4x4xf32>
  %i = kiln.iota dim = 0 : tensor<4x4xi32>
  %j = kiln.iota dim = 1 : tensor<4x4xi32>
  %keep = kiln.compare le, %j, %i : tensor<4x4xi32>
  %zero = kiln.constant dense<0.0> : tensor<4x4xf32>
  %big = kiln.constant dense<-1.0e9> : tensor<4x4xf32>
  %mask = kiln.select %keep, %zero, %big : tensor<4x4xi1>, tensor<4x4xf32>
  %mb = kiln.broadcast_in_dim %mask, dims = [2, 3] : tensor<4x4xf32> -> tensor<1x1x4x4xf32>
  %a = kiln.add %ss, %mb : tensor<1x1x4x4xf32>
  %p = kiln.softmax %a : tensor<1x1x4x4xf32>
  %o = kiln.matmul %p, %v : tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32> -> tensor<1x1x4x4xf32>
  return %o : tensor<1x1x4x4xf32>
}

// -----

// The mask written the other way round: select(drop, -inf, scores), with
// drop = j > i.
// CHECK-LABEL: func.func @select_dropped
// CHECK: kiln.attention {{.*}} {causal, scale = 1.000000e+00 : f32}
func.func @select_dropped(%q: tensor<1x1x4x4xf32>, %k: tensor<1x1x4x4xf32>, %v: tensor<1x1x4x4xf32>) -> tensor<1x1x4x4xf32> {
  %s = kiln.matmul %q, %k transpose_b : tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32> -> tensor<1x1x4x4xf32>
  %i = kiln.iota dim = 2 : tensor<1x1x4x4xi32>
  %j = kiln.iota dim = 3 : tensor<1x1x4x4xi32>
  %drop = kiln.compare gt, %j, %i : tensor<1x1x4x4xi32>
  %ninf = kiln.constant dense<0xFF800000> : tensor<1x1x4x4xf32>
  %m = kiln.select %drop, %ninf, %s : tensor<1x1x4x4xi1>, tensor<1x1x4x4xf32>
  %p = kiln.softmax %m : tensor<1x1x4x4xf32>
  %o = kiln.matmul %p, %v : tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32> -> tensor<1x1x4x4xf32>
  return %o : tensor<1x1x4x4xf32>
}

// -----

// After kiln-assign-precision: q, k, v cast to bf16, scores and
// probabilities in bf16 (the scale stays on q, before its cast).
// CHECK-LABEL: func.func @bf16_casts
// CHECK: %[[QS:.+]] = kiln.mul
// CHECK: %[[QL:.+]] = kiln.cast %[[QS]] : tensor<1x2x4x8xf32> to tensor<1x2x4x8xbf16>
// CHECK: kiln.attention %[[QL]], %{{.+}}, %{{.+}} {causal, scale = 1.000000e+00 : f32} : tensor<1x2x4x8xbf16>, tensor<1x2x4x8xbf16>, tensor<1x2x4x8xbf16> -> tensor<1x2x4x8xbf16>, tensor<1x2x4xf32>
func.func @bf16_casts(%q: tensor<1x2x4x8xf32>, %k: tensor<1x2x4x8xf32>, %v: tensor<1x2x4x8xf32>) -> tensor<1x2x4x8xbf16> {
  %c = kiln.constant dense<0.353553385> : tensor<1x2x4x8xf32>
  %qs = kiln.mul %q, %c : tensor<1x2x4x8xf32>
  %ql = kiln.cast %qs : tensor<1x2x4x8xf32> to tensor<1x2x4x8xbf16>
  %kl = kiln.cast %k : tensor<1x2x4x8xf32> to tensor<1x2x4x8xbf16>
  %vl = kiln.cast %v : tensor<1x2x4x8xf32> to tensor<1x2x4x8xbf16>
  %s = kiln.matmul %ql, %kl transpose_b : tensor<1x2x4x8xbf16>, tensor<1x2x4x8xbf16> -> tensor<1x2x4x4xbf16>
  %i = kiln.iota dim = 0 : tensor<4x4xi32>
  %j = kiln.iota dim = 1 : tensor<4x4xi32>
  %keep = kiln.compare ge, %i, %j : tensor<4x4xi32>
  %kb = kiln.broadcast_in_dim %keep, dims = [2, 3] : tensor<4x4xi1> -> tensor<1x2x4x4xi1>
  %ninf = kiln.constant dense<0xFF80> : tensor<1x2x4x4xbf16>
  %m = kiln.select %kb, %s, %ninf : tensor<1x2x4x4xi1>, tensor<1x2x4x4xbf16>
  %p = kiln.softmax %m : tensor<1x2x4x4xbf16>
  %o = kiln.matmul %p, %vl : tensor<1x2x4x4xbf16>, tensor<1x2x4x8xbf16> -> tensor<1x2x4x8xbf16>
  return %o : tensor<1x2x4x8xbf16>
}

// -----

// Grouped-query attention: 4 query heads share 2 key/value heads; the op
// takes the 2-head k and v.
// CHECK-LABEL: func.func @grouped_heads
// CHECK-SAME: (%[[Q:.+]]: tensor<1x4x3x8xf32>, %[[K:.+]]: tensor<1x2x3x8xf32>, %[[V:.+]]: tensor<1x2x3x8xf32>)
// CHECK: kiln.attention %[[Q]], %[[K]], %[[V]] {causal, scale = 1.000000e+00 : f32} : tensor<1x4x3x8xf32>, tensor<1x2x3x8xf32>, tensor<1x2x3x8xf32> -> tensor<1x4x3x8xf32>, tensor<1x4x3xf32>
// CHECK-NOT: kiln.broadcast_in_dim
func.func @grouped_heads(%q: tensor<1x4x3x8xf32>, %k: tensor<1x2x3x8xf32>, %v: tensor<1x2x3x8xf32>) -> tensor<1x4x3x8xf32> {
  %kb = kiln.broadcast_in_dim %k, dims = [0, 1, 3, 4] : tensor<1x2x3x8xf32> -> tensor<1x2x2x3x8xf32>
  %kr = kiln.reshape %kb : tensor<1x2x2x3x8xf32> -> tensor<1x4x3x8xf32>
  %vb = kiln.broadcast_in_dim %v, dims = [0, 1, 3, 4] : tensor<1x2x3x8xf32> -> tensor<1x2x2x3x8xf32>
  %vr = kiln.reshape %vb : tensor<1x2x2x3x8xf32> -> tensor<1x4x3x8xf32>
  %s = kiln.matmul %q, %kr transpose_b : tensor<1x4x3x8xf32>, tensor<1x4x3x8xf32> -> tensor<1x4x3x3xf32>
  %i = kiln.iota dim = 0 : tensor<3x3xi32>
  %j = kiln.iota dim = 1 : tensor<3x3xi32>
  %keep = kiln.compare ge, %i, %j : tensor<3x3xi32>
  %kb2 = kiln.broadcast_in_dim %keep, dims = [2, 3] : tensor<3x3xi1> -> tensor<1x4x3x3xi1>
  %ninf = kiln.constant dense<0xFF800000> : tensor<1x4x3x3xf32>
  %m = kiln.select %kb2, %s, %ninf : tensor<1x4x3x3xi1>, tensor<1x4x3x3xf32>
  %p = kiln.softmax %m : tensor<1x4x3x3xf32>
  %o = kiln.matmul %p, %vr : tensor<1x4x3x3xf32>, tensor<1x4x3x8xf32> -> tensor<1x4x3x8xf32>
  return %o : tensor<1x4x3x8xf32>
}

// -----

// Grouped heads as the frontend's Llama writes them (NumPy-style
// broadcasting): a unit axis reshaped in, expanded to the group, reshaped
// to the query heads. The op takes the 2-head k and v; nothing of the
// broadcast is left to store.
// CHECK-LABEL: func.func @grouped_heads_unit_axis
// CHECK-SAME: (%[[Q:.+]]: tensor<1x4x3x8xf32>, %[[K:.+]]: tensor<1x2x3x8xf32>, %[[V:.+]]: tensor<1x2x3x8xf32>)
// CHECK: kiln.attention %[[Q]], %[[K]], %[[V]] {scale = 1.000000e+00 : f32} : tensor<1x4x3x8xf32>, tensor<1x2x3x8xf32>, tensor<1x2x3x8xf32> -> tensor<1x4x3x8xf32>, tensor<1x4x3xf32>
// CHECK-NOT: kiln.broadcast_in_dim
// CHECK-NOT: kiln.reshape
func.func @grouped_heads_unit_axis(%q: tensor<1x4x3x8xf32>, %k: tensor<1x2x3x8xf32>, %v: tensor<1x2x3x8xf32>) -> tensor<1x4x3x8xf32> {
  %k1 = kiln.reshape %k : tensor<1x2x3x8xf32> -> tensor<1x2x1x3x8xf32>
  %kb = kiln.broadcast_in_dim %k1, dims = [0, 1, 2, 3, 4] : tensor<1x2x1x3x8xf32> -> tensor<1x2x2x3x8xf32>
  %kr = kiln.reshape %kb : tensor<1x2x2x3x8xf32> -> tensor<1x4x3x8xf32>
  %v1 = kiln.reshape %v : tensor<1x2x3x8xf32> -> tensor<1x2x1x3x8xf32>
  %vb = kiln.broadcast_in_dim %v1, dims = [0, 1, 2, 3, 4] : tensor<1x2x1x3x8xf32> -> tensor<1x2x2x3x8xf32>
  %vr = kiln.reshape %vb : tensor<1x2x2x3x8xf32> -> tensor<1x4x3x8xf32>
  %s = kiln.matmul %q, %kr transpose_b : tensor<1x4x3x8xf32>, tensor<1x4x3x8xf32> -> tensor<1x4x3x3xf32>
  %p = kiln.softmax %s : tensor<1x4x3x3xf32>
  %o = kiln.matmul %p, %vr : tensor<1x4x3x3xf32>, tensor<1x4x3x8xf32> -> tensor<1x4x3x8xf32>
  return %o : tensor<1x4x3x8xf32>
}

// -----

// Near-miss: a mask that is not causal-shaped (a window of two keys:
// i - j <= 1 is also required) stays as it is.
// CHECK-LABEL: func.func @not_causal_mask
// CHECK-NOT: kiln.attention
// CHECK: kiln.softmax
func.func @not_causal_mask(%q: tensor<1x1x4x4xf32>, %k: tensor<1x1x4x4xf32>, %v: tensor<1x1x4x4xf32>) -> tensor<1x1x4x4xf32> {
  %s = kiln.matmul %q, %k transpose_b : tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32> -> tensor<1x1x4x4xf32>
  %i = kiln.iota dim = 0 : tensor<4x4xi32>
  %j = kiln.iota dim = 1 : tensor<4x4xi32>
  %keep = kiln.compare gt, %i, %j : tensor<4x4xi32>
  %kb = kiln.broadcast_in_dim %keep, dims = [2, 3] : tensor<4x4xi1> -> tensor<1x1x4x4xi1>
  %ninf = kiln.constant dense<0xFF800000> : tensor<1x1x4x4xf32>
  %m = kiln.select %kb, %s, %ninf : tensor<1x1x4x4xi1>, tensor<1x1x4x4xf32>
  %p = kiln.softmax %m : tensor<1x1x4x4xf32>
  %o = kiln.matmul %p, %v : tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32> -> tensor<1x1x4x4xf32>
  return %o : tensor<1x1x4x4xf32>
}

// -----

// Near-miss: an additive mask of -1 is a bias, not a mask.
// CHECK-LABEL: func.func @small_additive
// CHECK-NOT: kiln.attention
func.func @small_additive(%q: tensor<1x1x2x4xf32>, %k: tensor<1x1x2x4xf32>, %v: tensor<1x1x2x4xf32>) -> tensor<1x1x2x4xf32> {
  %s = kiln.matmul %q, %k transpose_b : tensor<1x1x2x4xf32>, tensor<1x1x2x4xf32> -> tensor<1x1x2x2xf32>
  %mask = kiln.constant dense<[[0.0, -1.0], [0.0, 0.0]]> : tensor<2x2xf32>
  %mb = kiln.broadcast_in_dim %mask, dims = [2, 3] : tensor<2x2xf32> -> tensor<1x1x2x2xf32>
  %a = kiln.add %s, %mb : tensor<1x1x2x2xf32>
  %p = kiln.softmax %a : tensor<1x1x2x2xf32>
  %o = kiln.matmul %p, %v : tensor<1x1x2x2xf32>, tensor<1x1x2x4xf32> -> tensor<1x1x2x4xf32>
  return %o : tensor<1x1x2x4xf32>
}

// -----

// Near-miss: the softmax runs over the query axis (transposed around it).
// CHECK-LABEL: func.func @softmax_wrong_axis
// CHECK-NOT: kiln.attention
func.func @softmax_wrong_axis(%q: tensor<1x1x4x4xf32>, %k: tensor<1x1x4x4xf32>, %v: tensor<1x1x4x4xf32>) -> tensor<1x1x4x4xf32> {
  %s = kiln.matmul %q, %k transpose_b : tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32> -> tensor<1x1x4x4xf32>
  %t = kiln.transpose %s, [0, 1, 3, 2] : tensor<1x1x4x4xf32> -> tensor<1x1x4x4xf32>
  %e = kiln.softmax %t : tensor<1x1x4x4xf32>
  %p = kiln.transpose %e, [0, 1, 3, 2] : tensor<1x1x4x4xf32> -> tensor<1x1x4x4xf32>
  %o = kiln.matmul %p, %v : tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32> -> tensor<1x1x4x4xf32>
  return %o : tensor<1x1x4x4xf32>
}

// -----

// Near-miss: the scores are used elsewhere too (returned), so they must be
// stored anyway.
// CHECK-LABEL: func.func @scores_used_elsewhere
// CHECK-NOT: kiln.attention
func.func @scores_used_elsewhere(%q: tensor<1x1x4x4xf32>, %k: tensor<1x1x4x4xf32>, %v: tensor<1x1x4x4xf32>) -> (tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32>) {
  %s = kiln.matmul %q, %k transpose_b : tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32> -> tensor<1x1x4x4xf32>
  %p = kiln.softmax %s : tensor<1x1x4x4xf32>
  %o = kiln.matmul %p, %v : tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32> -> tensor<1x1x4x4xf32>
  return %o, %s : tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32>
}

// -----

// Near-miss: the probabilities are used elsewhere.
// CHECK-LABEL: func.func @probabilities_used_elsewhere
// CHECK-NOT: kiln.attention
func.func @probabilities_used_elsewhere(%q: tensor<1x1x4x4xf32>, %k: tensor<1x1x4x4xf32>, %v: tensor<1x1x4x4xf32>) -> (tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32>) {
  %s = kiln.matmul %q, %k transpose_b : tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32> -> tensor<1x1x4x4xf32>
  %p = kiln.softmax %s : tensor<1x1x4x4xf32>
  %o = kiln.matmul %p, %v : tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32> -> tensor<1x1x4x4xf32>
  return %o, %p : tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32>
}

// -----

// Near-miss: log_softmax is not attention's softmax.
// CHECK-LABEL: func.func @log_softmax
// CHECK-NOT: kiln.attention
func.func @log_softmax(%q: tensor<1x1x4x4xf32>, %k: tensor<1x1x4x4xf32>, %v: tensor<1x1x4x4xf32>) -> tensor<1x1x4x4xf32> {
  %s = kiln.matmul %q, %k transpose_b : tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32> -> tensor<1x1x4x4xf32>
  %p = kiln.log_softmax %s : tensor<1x1x4x4xf32>
  %o = kiln.matmul %p, %v : tensor<1x1x4x4xf32>, tensor<1x1x4x4xf32> -> tensor<1x1x4x4xf32>
  return %o : tensor<1x1x4x4xf32>
}

// -----

// Packed documents, as the frontend writes them (nn::maskScores): the
// causal select, then seg[b, i] == seg[b, j] reshaped to [B, 1, T, T] and
// broadcast over the heads. The op takes the segment ids.
// CHECK-LABEL: func.func @documents
// CHECK-SAME: %[[SEG:[^:]+]]: tensor<2x4xi32>
// CHECK: kiln.attention %{{.+}}, %{{.+}}, %{{.+}} segments %[[SEG]] {causal, scale = 1.000000e+00 : f32} : tensor<2x3x4x8xf32>, tensor<2x3x4x8xf32>, tensor<2x3x4x8xf32>, tensor<2x4xi32> -> tensor<2x3x4x8xf32>, tensor<2x3x4xf32>
// CHECK-NOT: kiln.select
// CHECK-NOT: kiln.softmax
func.func @documents(%q: tensor<2x3x4x8xf32>, %k: tensor<2x3x4x8xf32>, %v: tensor<2x3x4x8xf32>, %seg: tensor<2x4xi32>) -> tensor<2x3x4x8xf32> {
  %s = kiln.matmul %q, %k transpose_b : tensor<2x3x4x8xf32>, tensor<2x3x4x8xf32> -> tensor<2x3x4x4xf32>
  %i = kiln.iota dim = 0 : tensor<4x4xi32>
  %j = kiln.iota dim = 1 : tensor<4x4xi32>
  %keep = kiln.compare ge, %i, %j : tensor<4x4xi32>
  %ninf = kiln.constant dense<0xFF800000> : tensor<2x3x4x4xf32>
  %kb = kiln.broadcast_in_dim %keep, dims = [2, 3] : tensor<4x4xi1> -> tensor<2x3x4x4xi1>
  %c = kiln.select %kb, %s, %ninf : tensor<2x3x4x4xi1>, tensor<2x3x4x4xf32>
  %sq = kiln.broadcast_in_dim %seg, dims = [0, 1] : tensor<2x4xi32> -> tensor<2x4x4xi32>
  %sk = kiln.broadcast_in_dim %seg, dims = [0, 2] : tensor<2x4xi32> -> tensor<2x4x4xi32>
  %same = kiln.compare eq, %sq, %sk : tensor<2x4x4xi32>
  %same4 = kiln.reshape %same : tensor<2x4x4xi1> -> tensor<2x1x4x4xi1>
  %sb = kiln.broadcast_in_dim %same4, dims = [0, 1, 2, 3] : tensor<2x1x4x4xi1> -> tensor<2x3x4x4xi1>
  %m = kiln.select %sb, %c, %ninf : tensor<2x3x4x4xi1>, tensor<2x3x4x4xf32>
  %p = kiln.softmax %m : tensor<2x3x4x4xf32>
  %o = kiln.matmul %p, %v : tensor<2x3x4x4xf32>, tensor<2x3x4x8xf32> -> tensor<2x3x4x8xf32>
  return %o : tensor<2x3x4x8xf32>
}

// -----

// The document mask alone (no causal select): attention within each
// segment, both ways.
// CHECK-LABEL: func.func @documents_bidirectional
// CHECK: kiln.attention %{{.+}}, %{{.+}}, %{{.+}} segments %{{.+}} {scale = 1.000000e+00 : f32}
func.func @documents_bidirectional(%q: tensor<1x1x4x8xf32>, %k: tensor<1x1x4x8xf32>, %v: tensor<1x1x4x8xf32>, %seg: tensor<1x4xi32>) -> tensor<1x1x4x8xf32> {
  %s = kiln.matmul %q, %k transpose_b : tensor<1x1x4x8xf32>, tensor<1x1x4x8xf32> -> tensor<1x1x4x4xf32>
  %ninf = kiln.constant dense<0xFF800000> : tensor<1x1x4x4xf32>
  %sq = kiln.broadcast_in_dim %seg, dims = [0, 2] : tensor<1x4xi32> -> tensor<1x1x4x4xi32>
  %sk = kiln.broadcast_in_dim %seg, dims = [0, 3] : tensor<1x4xi32> -> tensor<1x1x4x4xi32>
  %same = kiln.compare eq, %sk, %sq : tensor<1x1x4x4xi32>
  %m = kiln.select %same, %s, %ninf : tensor<1x1x4x4xi1>, tensor<1x1x4x4xf32>
  %p = kiln.softmax %m : tensor<1x1x4x4xf32>
  %o = kiln.matmul %p, %v : tensor<1x1x4x4xf32>, tensor<1x1x4x8xf32> -> tensor<1x1x4x8xf32>
  return %o : tensor<1x1x4x8xf32>
}

// -----

// Near-misses of the document mask, left alone: both sides along the query
// axis (always true), two different id tensors, and `ne`.
// CHECK-LABEL: func.func @documents_same_axis
// CHECK-NOT: kiln.attention
// CHECK: kiln.softmax
func.func @documents_same_axis(%q: tensor<1x1x4x8xf32>, %k: tensor<1x1x4x8xf32>, %v: tensor<1x1x4x8xf32>, %seg: tensor<1x4xi32>) -> tensor<1x1x4x8xf32> {
  %s = kiln.matmul %q, %k transpose_b : tensor<1x1x4x8xf32>, tensor<1x1x4x8xf32> -> tensor<1x1x4x4xf32>
  %ninf = kiln.constant dense<0xFF800000> : tensor<1x1x4x4xf32>
  %sq = kiln.broadcast_in_dim %seg, dims = [0, 2] : tensor<1x4xi32> -> tensor<1x1x4x4xi32>
  %same = kiln.compare eq, %sq, %sq : tensor<1x1x4x4xi32>
  %m = kiln.select %same, %s, %ninf : tensor<1x1x4x4xi1>, tensor<1x1x4x4xf32>
  %p = kiln.softmax %m : tensor<1x1x4x4xf32>
  %o = kiln.matmul %p, %v : tensor<1x1x4x4xf32>, tensor<1x1x4x8xf32> -> tensor<1x1x4x8xf32>
  return %o : tensor<1x1x4x8xf32>
}

// -----

// CHECK-LABEL: func.func @documents_two_id_tensors
// CHECK-NOT: kiln.attention
// CHECK: kiln.softmax
func.func @documents_two_id_tensors(%q: tensor<1x1x4x8xf32>, %k: tensor<1x1x4x8xf32>, %v: tensor<1x1x4x8xf32>, %seg: tensor<1x4xi32>, %other: tensor<1x4xi32>) -> tensor<1x1x4x8xf32> {
  %s = kiln.matmul %q, %k transpose_b : tensor<1x1x4x8xf32>, tensor<1x1x4x8xf32> -> tensor<1x1x4x4xf32>
  %ninf = kiln.constant dense<0xFF800000> : tensor<1x1x4x4xf32>
  %sq = kiln.broadcast_in_dim %seg, dims = [0, 2] : tensor<1x4xi32> -> tensor<1x1x4x4xi32>
  %sk = kiln.broadcast_in_dim %other, dims = [0, 3] : tensor<1x4xi32> -> tensor<1x1x4x4xi32>
  %same = kiln.compare eq, %sq, %sk : tensor<1x1x4x4xi32>
  %m = kiln.select %same, %s, %ninf : tensor<1x1x4x4xi1>, tensor<1x1x4x4xf32>
  %p = kiln.softmax %m : tensor<1x1x4x4xf32>
  %o = kiln.matmul %p, %v : tensor<1x1x4x4xf32>, tensor<1x1x4x8xf32> -> tensor<1x1x4x8xf32>
  return %o : tensor<1x1x4x8xf32>
}

// -----

// CHECK-LABEL: func.func @documents_ne
// CHECK-NOT: kiln.attention
// CHECK: kiln.softmax
func.func @documents_ne(%q: tensor<1x1x4x8xf32>, %k: tensor<1x1x4x8xf32>, %v: tensor<1x1x4x8xf32>, %seg: tensor<1x4xi32>) -> tensor<1x1x4x8xf32> {
  %s = kiln.matmul %q, %k transpose_b : tensor<1x1x4x8xf32>, tensor<1x1x4x8xf32> -> tensor<1x1x4x4xf32>
  %ninf = kiln.constant dense<0xFF800000> : tensor<1x1x4x4xf32>
  %sq = kiln.broadcast_in_dim %seg, dims = [0, 2] : tensor<1x4xi32> -> tensor<1x1x4x4xi32>
  %sk = kiln.broadcast_in_dim %seg, dims = [0, 3] : tensor<1x4xi32> -> tensor<1x1x4x4xi32>
  %same = kiln.compare ne, %sq, %sk : tensor<1x1x4x4xi32>
  %m = kiln.select %same, %s, %ninf : tensor<1x1x4x4xi1>, tensor<1x1x4x4xf32>
  %p = kiln.softmax %m : tensor<1x1x4x4xf32>
  %o = kiln.matmul %p, %v : tensor<1x1x4x4xf32>, tensor<1x1x4x8xf32> -> tensor<1x1x4x8xf32>
  return %o : tensor<1x1x4x8xf32>
}

// -----

// Heads split off projections ([B, T, H, D] transposed to [B, H, T, D], as
// GPT-2's frontend writes them): the op takes the [B, T, H, D] values with
// layout "bthd", and the transpose back for the output projection is gone.
// CHECK-LABEL: func.func @sequence_major
// CHECK-SAME: (%[[Q:.+]]: tensor<2x4x3x8xf32>, %[[K:.+]]: tensor<2x4x3x8xf32>, %[[V:.+]]: tensor<2x4x3x8xf32>)
// CHECK: %[[O:.+]], %{{.+}} = kiln.attention %[[Q]], %[[K]], %[[V]] {causal, layout = "bthd", scale = 0.353553385 : f32} : tensor<2x4x3x8xf32>, tensor<2x4x3x8xf32>, tensor<2x4x3x8xf32> -> tensor<2x4x3x8xf32>, tensor<2x3x4xf32>
// CHECK-NOT: kiln.transpose
// CHECK: %[[R:.+]] = kiln.reshape %[[O]] : tensor<2x4x3x8xf32> -> tensor<2x4x24xf32>
// CHECK: return %[[R]]
func.func @sequence_major(%q: tensor<2x4x3x8xf32>, %k: tensor<2x4x3x8xf32>, %v: tensor<2x4x3x8xf32>) -> tensor<2x4x24xf32> {
  %qh = kiln.transpose %q, [0, 2, 1, 3] : tensor<2x4x3x8xf32> -> tensor<2x3x4x8xf32>
  %kh = kiln.transpose %k, [0, 2, 1, 3] : tensor<2x4x3x8xf32> -> tensor<2x3x4x8xf32>
  %vh = kiln.transpose %v, [0, 2, 1, 3] : tensor<2x4x3x8xf32> -> tensor<2x3x4x8xf32>
  %c = kiln.constant dense<0.353553385> : tensor<2x3x4x8xf32>
  %qs = kiln.mul %qh, %c : tensor<2x3x4x8xf32>
  %s = kiln.matmul %qs, %kh transpose_b : tensor<2x3x4x8xf32>, tensor<2x3x4x8xf32> -> tensor<2x3x4x4xf32>
  %i = kiln.iota dim = 0 : tensor<4x4xi32>
  %j = kiln.iota dim = 1 : tensor<4x4xi32>
  %keep = kiln.compare ge, %i, %j : tensor<4x4xi32>
  %ninf = kiln.constant dense<0xFF800000> : tensor<2x3x4x4xf32>
  %kb = kiln.broadcast_in_dim %keep, dims = [2, 3] : tensor<4x4xi1> -> tensor<2x3x4x4xi1>
  %m = kiln.select %kb, %s, %ninf : tensor<2x3x4x4xi1>, tensor<2x3x4x4xf32>
  %p = kiln.softmax %m : tensor<2x3x4x4xf32>
  %o = kiln.matmul %p, %vh : tensor<2x3x4x4xf32>, tensor<2x3x4x8xf32> -> tensor<2x3x4x8xf32>
  %ot = kiln.transpose %o, [0, 2, 1, 3] : tensor<2x3x4x8xf32> -> tensor<2x4x3x8xf32>
  %r = kiln.reshape %ot : tensor<2x4x3x8xf32> -> tensor<2x4x24xf32>
  return %r : tensor<2x4x24xf32>
}

// -----

// Sequence-major with grouped heads (k and v of 1 head broadcast to 2), and
// a user of the output that wants it head-major: it gets a transpose of the
// op's [B, T, H, D] output.
// CHECK-LABEL: func.func @sequence_major_grouped
// CHECK-SAME: (%[[Q:.+]]: tensor<1x3x2x8xf32>, %[[K:.+]]: tensor<1x3x1x8xf32>, %[[V:.+]]: tensor<1x3x1x8xf32>)
// CHECK: %[[O:.+]], %{{.+}} = kiln.attention %[[Q]], %[[K]], %[[V]] {layout = "bthd", scale = 1.000000e+00 : f32} : tensor<1x3x2x8xf32>, tensor<1x3x1x8xf32>, tensor<1x3x1x8xf32> -> tensor<1x3x2x8xf32>, tensor<1x2x3xf32>
// CHECK: %[[H:.+]] = kiln.transpose %[[O]], [0, 2, 1, 3] : tensor<1x3x2x8xf32> -> tensor<1x2x3x8xf32>
// CHECK: return %[[H]]
func.func @sequence_major_grouped(%q: tensor<1x3x2x8xf32>, %k: tensor<1x3x1x8xf32>, %v: tensor<1x3x1x8xf32>) -> tensor<1x2x3x8xf32> {
  %qh = kiln.transpose %q, [0, 2, 1, 3] : tensor<1x3x2x8xf32> -> tensor<1x2x3x8xf32>
  %kh = kiln.transpose %k, [0, 2, 1, 3] : tensor<1x3x1x8xf32> -> tensor<1x1x3x8xf32>
  %vh = kiln.transpose %v, [0, 2, 1, 3] : tensor<1x3x1x8xf32> -> tensor<1x1x3x8xf32>
  %kb = kiln.broadcast_in_dim %kh, dims = [0, 1, 3, 4] : tensor<1x1x3x8xf32> -> tensor<1x1x2x3x8xf32>
  %kg = kiln.reshape %kb : tensor<1x1x2x3x8xf32> -> tensor<1x2x3x8xf32>
  %vb = kiln.broadcast_in_dim %vh, dims = [0, 1, 3, 4] : tensor<1x1x3x8xf32> -> tensor<1x1x2x3x8xf32>
  %vg = kiln.reshape %vb : tensor<1x1x2x3x8xf32> -> tensor<1x2x3x8xf32>
  %s = kiln.matmul %qh, %kg transpose_b : tensor<1x2x3x8xf32>, tensor<1x2x3x8xf32> -> tensor<1x2x3x3xf32>
  %p = kiln.softmax %s : tensor<1x2x3x3xf32>
  %o = kiln.matmul %p, %vg : tensor<1x2x3x3xf32>, tensor<1x2x3x8xf32> -> tensor<1x2x3x8xf32>
  return %o : tensor<1x2x3x8xf32>
}

// -----

// Near-miss: the transposed q is used elsewhere too (it is stored anyway),
// so the op stays head-major and every transpose stays.
// CHECK-LABEL: func.func @sequence_major_q_used_elsewhere
// CHECK: kiln.attention {{.*}} {scale = 1.000000e+00 : f32} : tensor<1x2x3x8xf32>
// CHECK-NOT: layout
// CHECK: kiln.transpose %{{.+}}, [0, 2, 1, 3] : tensor<1x2x3x8xf32> -> tensor<1x3x2x8xf32>
func.func @sequence_major_q_used_elsewhere(%q: tensor<1x3x2x8xf32>, %k: tensor<1x3x2x8xf32>, %v: tensor<1x3x2x8xf32>) -> (tensor<1x3x2x8xf32>, tensor<1x2x3x8xf32>) {
  %qh = kiln.transpose %q, [0, 2, 1, 3] : tensor<1x3x2x8xf32> -> tensor<1x2x3x8xf32>
  %kh = kiln.transpose %k, [0, 2, 1, 3] : tensor<1x3x2x8xf32> -> tensor<1x2x3x8xf32>
  %vh = kiln.transpose %v, [0, 2, 1, 3] : tensor<1x3x2x8xf32> -> tensor<1x2x3x8xf32>
  %s = kiln.matmul %qh, %kh transpose_b : tensor<1x2x3x8xf32>, tensor<1x2x3x8xf32> -> tensor<1x2x3x3xf32>
  %p = kiln.softmax %s : tensor<1x2x3x3xf32>
  %o = kiln.matmul %p, %vh : tensor<1x2x3x3xf32>, tensor<1x2x3x8xf32> -> tensor<1x2x3x8xf32>
  %ot = kiln.transpose %o, [0, 2, 1, 3] : tensor<1x2x3x8xf32> -> tensor<1x3x2x8xf32>
  return %ot, %qh : tensor<1x3x2x8xf32>, tensor<1x2x3x8xf32>
}

// -----

// Near-miss: v is head-major already (only q and k are transposed), so
// the op stays head-major.
// CHECK-LABEL: func.func @sequence_major_v_head_major
// CHECK: kiln.attention {{.*}} {scale = 1.000000e+00 : f32} : tensor<1x2x3x8xf32>
// CHECK-NOT: layout
func.func @sequence_major_v_head_major(%q: tensor<1x3x2x8xf32>, %k: tensor<1x3x2x8xf32>, %v: tensor<1x2x3x8xf32>) -> tensor<1x2x3x8xf32> {
  %qh = kiln.transpose %q, [0, 2, 1, 3] : tensor<1x3x2x8xf32> -> tensor<1x2x3x8xf32>
  %kh = kiln.transpose %k, [0, 2, 1, 3] : tensor<1x3x2x8xf32> -> tensor<1x2x3x8xf32>
  %s = kiln.matmul %qh, %kh transpose_b : tensor<1x2x3x8xf32>, tensor<1x2x3x8xf32> -> tensor<1x2x3x3xf32>
  %p = kiln.softmax %s : tensor<1x2x3x3xf32>
  %o = kiln.matmul %p, %v : tensor<1x2x3x3xf32>, tensor<1x2x3x8xf32> -> tensor<1x2x3x8xf32>
  return %o : tensor<1x2x3x8xf32>
}

// -----

// GPT-2's packed projection: q, k and v are parts 0, 1, 2 of one
// [B, T, H, 3, D] value, sliced, reshaped and transposed to heads. The op
// reads the packed value in place: no slice, reshape or transpose is left.
// CHECK-LABEL: func.func @packed_qkv
// CHECK-SAME: (%[[X:.+]]: tensor<2x4x24xf32>)
// CHECK: %[[P:.+]] = kiln.reshape %[[X]] : tensor<2x4x24xf32> -> tensor<2x4x2x3x4xf32>
// CHECK: %[[O:.+]], %{{.+}} = kiln.attention_qkv %[[P]] {causal, scale = 5.000000e-01 : f32} : tensor<2x4x2x3x4xf32> -> tensor<2x4x2x4xf32>, tensor<2x2x4xf32>
// CHECK-NOT: kiln.slice
// CHECK-NOT: kiln.transpose
// CHECK: kiln.reshape %[[O]] : tensor<2x4x2x4xf32> -> tensor<2x4x8xf32>
func.func @packed_qkv(%x: tensor<2x4x24xf32>) -> tensor<2x4x8xf32> {
  %p = kiln.reshape %x : tensor<2x4x24xf32> -> tensor<2x4x2x3x4xf32>
  %q5 = kiln.slice %p [0:2, 0:4, 0:2, 0:1, 0:4] : tensor<2x4x2x3x4xf32> -> tensor<2x4x2x1x4xf32>
  %q4 = kiln.reshape %q5 : tensor<2x4x2x1x4xf32> -> tensor<2x4x2x4xf32>
  %q = kiln.transpose %q4, [0, 2, 1, 3] : tensor<2x4x2x4xf32> -> tensor<2x2x4x4xf32>
  %k5 = kiln.slice %p [0:2, 0:4, 0:2, 1:2, 0:4] : tensor<2x4x2x3x4xf32> -> tensor<2x4x2x1x4xf32>
  %k4 = kiln.reshape %k5 : tensor<2x4x2x1x4xf32> -> tensor<2x4x2x4xf32>
  %k = kiln.transpose %k4, [0, 2, 1, 3] : tensor<2x4x2x4xf32> -> tensor<2x2x4x4xf32>
  %v5 = kiln.slice %p [0:2, 0:4, 0:2, 2:3, 0:4] : tensor<2x4x2x3x4xf32> -> tensor<2x4x2x1x4xf32>
  %v4 = kiln.reshape %v5 : tensor<2x4x2x1x4xf32> -> tensor<2x4x2x4xf32>
  %v = kiln.transpose %v4, [0, 2, 1, 3] : tensor<2x4x2x4xf32> -> tensor<2x2x4x4xf32>
  %s = kiln.matmul %q, %k transpose_b : tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32> -> tensor<2x2x4x4xf32>
  %c = kiln.constant dense<0.5> : tensor<2x2x4x4xf32>
  %ss = kiln.mul %s, %c : tensor<2x2x4x4xf32>
  %i = kiln.iota dim = 0 : tensor<4x4xi32>
  %j = kiln.iota dim = 1 : tensor<4x4xi32>
  %keep = kiln.compare ge, %i, %j : tensor<4x4xi32>
  %ninf = kiln.constant dense<0xFF800000> : tensor<2x2x4x4xf32>
  %kb = kiln.broadcast_in_dim %keep, dims = [2, 3] : tensor<4x4xi1> -> tensor<2x2x4x4xi1>
  %m = kiln.select %kb, %ss, %ninf : tensor<2x2x4x4xi1>, tensor<2x2x4x4xf32>
  %pr = kiln.softmax %m : tensor<2x2x4x4xf32>
  %o = kiln.matmul %pr, %v : tensor<2x2x4x4xf32>, tensor<2x2x4x4xf32> -> tensor<2x2x4x4xf32>
  %ot = kiln.transpose %o, [0, 2, 1, 3] : tensor<2x2x4x4xf32> -> tensor<2x4x2x4xf32>
  %r = kiln.reshape %ot : tensor<2x4x2x4xf32> -> tensor<2x4x8xf32>
  return %r : tensor<2x4x8xf32>
}

// -----

// Near-miss of the packed form: q and k come from parts 1 and 0 (swapped),
// so the parts are not q|k|v in order: sequence-major, slices kept.
// CHECK-LABEL: func.func @packed_parts_swapped
// CHECK-NOT: kiln.attention_qkv
// CHECK: kiln.slice
// CHECK: kiln.attention {{.*}} {layout = "bthd", scale = 1.000000e+00 : f32}
func.func @packed_parts_swapped(%p: tensor<1x4x2x3x4xf32>) -> tensor<1x2x4x4xf32> {
  %q5 = kiln.slice %p [0:1, 0:4, 0:2, 1:2, 0:4] : tensor<1x4x2x3x4xf32> -> tensor<1x4x2x1x4xf32>
  %q4 = kiln.reshape %q5 : tensor<1x4x2x1x4xf32> -> tensor<1x4x2x4xf32>
  %q = kiln.transpose %q4, [0, 2, 1, 3] : tensor<1x4x2x4xf32> -> tensor<1x2x4x4xf32>
  %k5 = kiln.slice %p [0:1, 0:4, 0:2, 0:1, 0:4] : tensor<1x4x2x3x4xf32> -> tensor<1x4x2x1x4xf32>
  %k4 = kiln.reshape %k5 : tensor<1x4x2x1x4xf32> -> tensor<1x4x2x4xf32>
  %k = kiln.transpose %k4, [0, 2, 1, 3] : tensor<1x4x2x4xf32> -> tensor<1x2x4x4xf32>
  %v5 = kiln.slice %p [0:1, 0:4, 0:2, 2:3, 0:4] : tensor<1x4x2x3x4xf32> -> tensor<1x4x2x1x4xf32>
  %v4 = kiln.reshape %v5 : tensor<1x4x2x1x4xf32> -> tensor<1x4x2x4xf32>
  %v = kiln.transpose %v4, [0, 2, 1, 3] : tensor<1x4x2x4xf32> -> tensor<1x2x4x4xf32>
  %s = kiln.matmul %q, %k transpose_b : tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32> -> tensor<1x2x4x4xf32>
  %pr = kiln.softmax %s : tensor<1x2x4x4xf32>
  %o = kiln.matmul %pr, %v : tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32> -> tensor<1x2x4x4xf32>
  return %o : tensor<1x2x4x4xf32>
}

// -----

// Sequence-major, and the output read both ways: the user transposing it
// back takes the op's output directly, the other one a transpose of it.
// CHECK-LABEL: func.func @sequence_major_two_users
// CHECK: %[[O:.+]], %{{.+}} = kiln.attention {{.*}} {layout = "bthd", scale = 1.000000e+00 : f32}
// CHECK: %[[H:.+]] = kiln.transpose %[[O]], [0, 2, 1, 3] : tensor<1x3x2x8xf32> -> tensor<1x2x3x8xf32>
// CHECK: return %[[O]], %[[H]]
func.func @sequence_major_two_users(%q: tensor<1x3x2x8xf32>, %k: tensor<1x3x2x8xf32>, %v: tensor<1x3x2x8xf32>) -> (tensor<1x3x2x8xf32>, tensor<1x2x3x8xf32>) {
  %qh = kiln.transpose %q, [0, 2, 1, 3] : tensor<1x3x2x8xf32> -> tensor<1x2x3x8xf32>
  %kh = kiln.transpose %k, [0, 2, 1, 3] : tensor<1x3x2x8xf32> -> tensor<1x2x3x8xf32>
  %vh = kiln.transpose %v, [0, 2, 1, 3] : tensor<1x3x2x8xf32> -> tensor<1x2x3x8xf32>
  %s = kiln.matmul %qh, %kh transpose_b : tensor<1x2x3x8xf32>, tensor<1x2x3x8xf32> -> tensor<1x2x3x3xf32>
  %p = kiln.softmax %s : tensor<1x2x3x3xf32>
  %o = kiln.matmul %p, %vh : tensor<1x2x3x3xf32>, tensor<1x2x3x8xf32> -> tensor<1x2x3x8xf32>
  %ot = kiln.transpose %o, [0, 2, 1, 3] : tensor<1x2x3x8xf32> -> tensor<1x3x2x8xf32>
  return %ot, %o : tensor<1x3x2x8xf32>, tensor<1x2x3x8xf32>
}

// -----

// A scale on q before its transpose (on the [B, T, H, D] part): it folds
// into the op's scale, and the packed form still applies.
// CHECK-LABEL: func.func @packed_scale_before_transpose
// CHECK: kiln.attention_qkv %{{.+}} {scale = 2.500000e-01 : f32} : tensor<1x4x2x3x4xf32>
// CHECK-NOT: kiln.mul
// CHECK-NOT: kiln.slice
func.func @packed_scale_before_transpose(%p: tensor<1x4x2x3x4xf32>) -> tensor<1x2x4x4xf32> {
  %q5 = kiln.slice %p [0:1, 0:4, 0:2, 0:1, 0:4] : tensor<1x4x2x3x4xf32> -> tensor<1x4x2x1x4xf32>
  %q4 = kiln.reshape %q5 : tensor<1x4x2x1x4xf32> -> tensor<1x4x2x4xf32>
  %c = kiln.constant dense<0.25> : tensor<1x4x2x4xf32>
  %qs = kiln.mul %q4, %c : tensor<1x4x2x4xf32>
  %q = kiln.transpose %qs, [0, 2, 1, 3] : tensor<1x4x2x4xf32> -> tensor<1x2x4x4xf32>
  %k5 = kiln.slice %p [0:1, 0:4, 0:2, 1:2, 0:4] : tensor<1x4x2x3x4xf32> -> tensor<1x4x2x1x4xf32>
  %k4 = kiln.reshape %k5 : tensor<1x4x2x1x4xf32> -> tensor<1x4x2x4xf32>
  %k = kiln.transpose %k4, [0, 2, 1, 3] : tensor<1x4x2x4xf32> -> tensor<1x2x4x4xf32>
  %v5 = kiln.slice %p [0:1, 0:4, 0:2, 2:3, 0:4] : tensor<1x4x2x3x4xf32> -> tensor<1x4x2x1x4xf32>
  %v4 = kiln.reshape %v5 : tensor<1x4x2x1x4xf32> -> tensor<1x4x2x4xf32>
  %v = kiln.transpose %v4, [0, 2, 1, 3] : tensor<1x4x2x4xf32> -> tensor<1x2x4x4xf32>
  %s = kiln.matmul %q, %k transpose_b : tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32> -> tensor<1x2x4x4xf32>
  %pr = kiln.softmax %s : tensor<1x2x4x4xf32>
  %o = kiln.matmul %pr, %v : tensor<1x2x4x4xf32>, tensor<1x2x4x4xf32> -> tensor<1x2x4x4xf32>
  return %o : tensor<1x2x4x4xf32>
}

// -----

// Llama's form: rope on q and k after the heads' transpose (positions along
// dimension 2), grouped k/v broadcast over the group. The ropes move before
// the transposes (positions along dimension 1) and the op is sequence-major.
// CHECK-LABEL: func.func @sequence_major_rope
// CHECK-SAME: (%[[Q:.+]]: tensor<1x4x4x8xf32>, %[[K:.+]]: tensor<1x4x2x8xf32>, %[[V:.+]]: tensor<1x4x2x8xf32>)
// CHECK-NOT: kiln.transpose
// CHECK-DAG: %[[RQ:.+]] = kiln.rope %[[Q]] {position_dim = 1 : i64} : tensor<1x4x4x8xf32>
// CHECK-DAG: %[[RK:.+]] = kiln.rope %[[K]] {position_dim = 1 : i64} : tensor<1x4x2x8xf32>
// CHECK: %[[O:.+]], %{{.+}} = kiln.attention %[[RQ]], %[[RK]], %[[V]] {causal, layout = "bthd", scale = 0.353553385 : f32}
// CHECK-NOT: kiln.transpose
// CHECK-NOT: kiln.broadcast_in_dim
// CHECK: return %[[O]]
func.func @sequence_major_rope(%q: tensor<1x4x4x8xf32>, %k: tensor<1x4x2x8xf32>, %v: tensor<1x4x2x8xf32>) -> tensor<1x4x4x8xf32> {
  %qh = kiln.transpose %q, [0, 2, 1, 3] : tensor<1x4x4x8xf32> -> tensor<1x4x4x8xf32>
  %qr = kiln.rope %qh : tensor<1x4x4x8xf32>
  %kh = kiln.transpose %k, [0, 2, 1, 3] : tensor<1x4x2x8xf32> -> tensor<1x2x4x8xf32>
  %kr = kiln.rope %kh : tensor<1x2x4x8xf32>
  %vh = kiln.transpose %v, [0, 2, 1, 3] : tensor<1x4x2x8xf32> -> tensor<1x2x4x8xf32>
  %k1 = kiln.reshape %kr : tensor<1x2x4x8xf32> -> tensor<1x2x1x4x8xf32>
  %kb = kiln.broadcast_in_dim %k1, dims = [0, 1, 2, 3, 4] : tensor<1x2x1x4x8xf32> -> tensor<1x2x2x4x8xf32>
  %kg = kiln.reshape %kb : tensor<1x2x2x4x8xf32> -> tensor<1x4x4x8xf32>
  %v1 = kiln.reshape %vh : tensor<1x2x4x8xf32> -> tensor<1x2x1x4x8xf32>
  %vb = kiln.broadcast_in_dim %v1, dims = [0, 1, 2, 3, 4] : tensor<1x2x1x4x8xf32> -> tensor<1x2x2x4x8xf32>
  %vg = kiln.reshape %vb : tensor<1x2x2x4x8xf32> -> tensor<1x4x4x8xf32>
  %c = kiln.constant dense<0.353553385> : tensor<1x4x4x8xf32>
  %qs = kiln.mul %qr, %c : tensor<1x4x4x8xf32>
  %s = kiln.matmul %qs, %kg transpose_b : tensor<1x4x4x8xf32>, tensor<1x4x4x8xf32> -> tensor<1x4x4x4xf32>
  %i = kiln.iota dim = 0 : tensor<4x4xi32>
  %j = kiln.iota dim = 1 : tensor<4x4xi32>
  %keep = kiln.compare ge, %i, %j : tensor<4x4xi32>
  %ninf = kiln.constant dense<0xFF800000> : tensor<1x4x4x4xf32>
  %kbm = kiln.broadcast_in_dim %keep, dims = [2, 3] : tensor<4x4xi1> -> tensor<1x4x4x4xi1>
  %m = kiln.select %kbm, %s, %ninf : tensor<1x4x4x4xi1>, tensor<1x4x4x4xf32>
  %p = kiln.softmax %m : tensor<1x4x4x4xf32>
  %o = kiln.matmul %p, %vg : tensor<1x4x4x4xf32>, tensor<1x4x4x8xf32> -> tensor<1x4x4x8xf32>
  %ot = kiln.transpose %o, [0, 2, 1, 3] : tensor<1x4x4x8xf32> -> tensor<1x4x4x8xf32>
  return %ot : tensor<1x4x4x8xf32>
}

// -----

// Near-miss of the rope form: the rope's result is also returned (stored
// anyway), so the op stays head-major and the rope keeps its positions
// along dimension 2.
// CHECK-LABEL: func.func @rope_used_elsewhere
// CHECK: kiln.rope %{{.+}} : tensor<1x2x4x8xf32>
// CHECK-NOT: position_dim
// CHECK: kiln.attention {{.*}} {scale = 1.000000e+00 : f32} : tensor<1x2x4x8xf32>
func.func @rope_used_elsewhere(%q: tensor<1x4x2x8xf32>, %k: tensor<1x4x2x8xf32>, %v: tensor<1x4x2x8xf32>) -> (tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32>) {
  %qh = kiln.transpose %q, [0, 2, 1, 3] : tensor<1x4x2x8xf32> -> tensor<1x2x4x8xf32>
  %qr = kiln.rope %qh : tensor<1x2x4x8xf32>
  %kh = kiln.transpose %k, [0, 2, 1, 3] : tensor<1x4x2x8xf32> -> tensor<1x2x4x8xf32>
  %vh = kiln.transpose %v, [0, 2, 1, 3] : tensor<1x4x2x8xf32> -> tensor<1x2x4x8xf32>
  %s = kiln.matmul %qr, %kh transpose_b : tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32> -> tensor<1x2x4x4xf32>
  %p = kiln.softmax %s : tensor<1x2x4x4xf32>
  %o = kiln.matmul %p, %vh : tensor<1x2x4x4xf32>, tensor<1x2x4x8xf32> -> tensor<1x2x4x8xf32>
  return %o, %qr : tensor<1x2x4x8xf32>, tensor<1x2x4x8xf32>
}
