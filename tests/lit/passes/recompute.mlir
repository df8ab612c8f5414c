// kiln-recompute: forward ops cloned into the backward, before the first
// backward op that reads them, by policy or by a memory budget. Numerics
// (bit-identical steps) and arenas: tests/unit/passes/RecomputeTest.cpp.
// RUN: kiln-opt %s -kiln-autodiff -kiln-recompute=policy=selective | FileCheck %s --check-prefix=SEL
// RUN: kiln-opt %s -kiln-autodiff -kiln-recompute=policy=full | FileCheck %s --check-prefix=FULL
// RUN: kiln-opt %s -kiln-autodiff "-kiln-recompute=policy=full full-blocks=1" | FileCheck %s --check-prefix=ONE
// RUN: kiln-opt %s -kiln-autodiff -kiln-recompute=memory-budget=1GiB | FileCheck %s --check-prefix=ROOM
// RUN: not kiln-opt %s -kiln-autodiff -kiln-recompute=memory-budget=1KiB 2>&1 | FileCheck %s --check-prefix=SMALL
// RUN: kiln-opt %s -kiln-autodiff "-kiln-recompute=policy=full full-blocks=5 memory-budget=1GiB" | FileCheck %s --check-prefix=MORE
// RUN: not kiln-opt %s -kiln-autodiff -kiln-recompute=policy=some 2>&1 | FileCheck %s --check-prefix=POLICY
// RUN: not kiln-opt %s -kiln-autodiff '-kiln-recompute=memory-budget="20 gigs"' 2>&1 | FileCheck %s --check-prefix=UNIT

// Two blocks, each x + W2·gelu(W1·x). The backward of a block reads
// gelu(W1·x) (for W2's gradient), W1·x (for gelu's) and the block's input.

// selective: each block's gelu is cloned before W2's gradient, from the
// product the backward keeps anyway; matmuls and the residual stream stay.
// SEL-LABEL: func.func @train_step
// SEL-SAME: kiln.recompute = {blocks = 2 : i64, flops = {{[0-9]+}} : i64, full_blocks = 0 : i64, ops = 2 : i64, policy = "selective"
// SEL: %[[H0:.+]] = kiln.matmul %arg0, %arg1
// SEL-NEXT: %[[A0:.+]] = kiln.gelu tanh %[[H0]]
// SEL: %[[H1:.+]] = kiln.matmul %[[R:.+]], %arg3
// SEL-NEXT: kiln.gelu tanh %[[H1]]
// SEL: kiln.reduce_mean
// SEL: %[[A1R:.+]] = kiln.gelu tanh %[[H1]]
// SEL-NEXT: kiln.matmul %[[A1R]], %{{.+}} transpose_a
// SEL: %[[A0R:.+]] = kiln.gelu tanh %[[H0]]
// SEL-NEXT: kiln.matmul %[[A0R]], %{{.+}} transpose_a
// SEL-NOT: kiln.matmul %[[A0]]

// full: every op of a block but its output (the next block's input, or
// the loss's) is cloned before the block's backward: the products too.
// FULL-LABEL: func.func @train_step
// FULL-SAME: full_blocks = 2 : i64, ops = 4 : i64, policy = "full"
// FULL: %[[R:.+]] = kiln.add %arg0
// FULL: kiln.reduce_mean
// FULL: %[[H1:.+]] = kiln.matmul %[[R]], %arg3 : tensor<4x8xf32>
// FULL-NEXT: %[[A1:.+]] = kiln.gelu tanh %[[H1]]
// FULL-NEXT: kiln.matmul %[[A1]], %{{.+}} transpose_a
// FULL: %[[H0:.+]] = kiln.matmul %arg0, %arg1 : tensor<4x8xf32>
// FULL-NEXT: %[[A0:.+]] = kiln.gelu tanh %[[H0]]
// FULL-NEXT: kiln.matmul %[[A0]], %{{.+}} transpose_a

// full-blocks=1: the first block in full, the second selective.
// ONE-LABEL: func.func @train_step
// ONE-SAME: full_blocks = 1 : i64, ops = 3 : i64, policy = "full"

// A budget with room for everything recomputes nothing.
// ROOM: budget = 1073741824 : i64, flops = 0 : i64, full_blocks = 0 : i64, ops = 0 : i64, policy = "none"
// ROOM-SAME: tried = [{arena = {{[0-9]+}} : i64, full_blocks = 0 : i64, selective = false}]

// More blocks than the model has: all of them, as without a budget.
// MORE: budget = 1073741824 : i64, flops = {{[0-9]+}} : i64, full_blocks = 2 : i64

// One smaller than every plan: the error names the smallest and each tried.
// SMALL: error: kiln-recompute: no recomputation fits the memory budget of 1.00 KiB (1KiB); the smallest arena it can plan is {{.+}} MiB ({{[0-9]+}} bytes, {{.+}}) — set the budget to at least that, or lower train.batch_size. Planned: none {{.+}} MiB; selective {{.+}} MiB; full on 2 block(s) {{.+}} MiB

// POLICY: error: kiln-recompute: policy 'some' is not one of none, selective, full
// UNIT: error: kiln-recompute: memory-budget: '20 gigs' is not a size in bytes (unknown unit 'gigs'; e.g. 20GiB, 512MiB, 8GB or a number of bytes)

func.func @forward(%x: tensor<4x8xf32> {kiln.input = "x"},
                   %w1: tensor<8x16xf32> {kiln.param = "h.0.fc.w"},
                   %w2: tensor<16x8xf32> {kiln.param = "h.0.proj.w"},
                   %w3: tensor<8x16xf32> {kiln.param = "h.1.fc.w"},
                   %w4: tensor<16x8xf32> {kiln.param = "h.1.proj.w"}) -> tensor<f32> {
  %h = kiln.matmul %x, %w1 : tensor<4x8xf32>, tensor<8x16xf32> -> tensor<4x16xf32> loc("h.0.mlp")
  %a = kiln.gelu tanh %h : tensor<4x16xf32> loc("h.0.mlp")
  %y = kiln.matmul %a, %w2 : tensor<4x16xf32>, tensor<16x8xf32> -> tensor<4x8xf32> loc("h.0.mlp")
  %r = kiln.add %x, %y : tensor<4x8xf32> loc("h.0")
  %h1 = kiln.matmul %r, %w3 : tensor<4x8xf32>, tensor<8x16xf32> -> tensor<4x16xf32> loc("h.1.mlp")
  %a1 = kiln.gelu tanh %h1 : tensor<4x16xf32> loc("h.1.mlp")
  %y1 = kiln.matmul %a1, %w4 : tensor<4x16xf32>, tensor<16x8xf32> -> tensor<4x8xf32> loc("h.1.mlp")
  %r1 = kiln.add %r, %y1 : tensor<4x8xf32> loc("h.1")
  %l = kiln.reduce_mean %r1, dims = [0, 1] : tensor<4x8xf32> -> tensor<f32> loc("loss")
  return %l : tensor<f32>
}
