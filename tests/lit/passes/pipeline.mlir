// kiln-pipeline: the step after autodiff and the optimizer (accumulating
// over the micro-batches) cut into stages at the parameters' blocks, with
// send/recv between them and the schedule on the module.
// RUN: kiln-opt %s -kiln-autodiff -kiln-attach-optimizer=accumulate-steps=2 \
// RUN:   -kiln-pipeline="stages=2 microbatches=2" | FileCheck %s
// RUN: kiln-opt %s -kiln-autodiff -kiln-attach-optimizer=accumulate-steps=3 \
// RUN:   -kiln-pipeline="stages=2 microbatches=3 schedule=gpipe" | FileCheck %s --check-prefix=GPIPE

// The schedule as data: stage 0 runs one forward ahead (1F1B).
// CHECK: module attributes {kiln.mesh = #kiln.mesh<pp = 2>, kiln.pipeline = {actions = {{\[}}["F0", "F1", "B0", "B1"], ["F0", "B0", "F1", "B1"]], axis = "pp", blocks = ["h.0", "h.1"], microbatches = 2 : i64, schedule = "1f1b", stages = 2 : i64, virtual_stages = 1 : i64}}
// GPIPE: actions = {{\[}}["F0", "F1", "F2", "B0", "B1", "B2"], ["F0", "F1", "F2", "B0", "B1", "B2"]]
// @forward (evaluation) stays whole; the accumulating step is replaced.
// CHECK: func.func @forward(
// CHECK-NOT: func.func @accumulate_step
// The first block: its activation goes to stage 1, what its backward needs
// (the matmul's output, for gelu's gradient) is kept as saved.0.
// CHECK-LABEL: func.func @stage0_forward(
// CHECK-SAME: kiln.param = "h.0.w"
// CHECK-SAME: -> (tensor<2x8xf32> {kiln.output = "saved.0"})
// CHECK: %[[A:.+]] = kiln.matmul
// CHECK: %[[G:.+]] = kiln.gelu tanh %[[A]]
// CHECK: kiln.send %[[G]] to 1 over "pp" channel 0 {cause = "'kiln.gelu' of h.0 to stage 1"}
// CHECK: return %[[A]]
// Its backward: the gradient comes back on channel 1, the accumulator of
// h.0.w is updated in place.
// CHECK-LABEL: func.func @stage0_backward(
// CHECK-SAME: kiln.state = "h.0.w.grad_acc"
// CHECK-SAME: {kiln.input = "saved.0"}
// CHECK-SAME: -> (tensor<8x8xf32> {kiln.aliases = 0 : i64})
// CHECK: %[[DG:.+]] = kiln.recv from 1 over "pp" channel 1
// CHECK: kiln.gelu_grad tanh %{{.+}}, %[[DG]]
// The last stage computes the loss, keeps what its backward reads (the
// tanh output and the activation it received) and sends the activation's
// gradient back.
// CHECK-LABEL: func.func @stage1_forward(
// CHECK-SAME: -> (tensor<f32> {kiln.output = "loss"}, tensor<2x8xf32> {kiln.output = "saved.0"}, tensor<2x8xf32> {kiln.output = "saved.1"})
// CHECK: %[[X:.+]] = kiln.recv from 0 over "pp" channel 0
// CHECK-LABEL: func.func @stage1_backward(
// CHECK: %[[DX:.+]] = kiln.matmul %{{.+}}, %{{.+}} transpose_b
// CHECK: kiln.send %[[DX]] to 0 over "pp" channel 1
// Each stage's optimizer updates its own parameter; the clipping norm sums
// the stages' squares.
// CHECK-LABEL: func.func @stage0_apply(
// CHECK-SAME: kiln.param = "h.0.w"
// CHECK-NOT: kiln.param = "h.1.w"
// CHECK: %[[N:.+]] = kiln.global_norm
// CHECK: %[[SQ:.+]] = kiln.mul %[[N]], %[[N]]
// CHECK: %[[SUM:.+]] = kiln.all_reduce %[[SQ]] over "pp"
// CHECK: kiln.sqrt %[[SUM]]
// CHECK: kiln.adamw_update
// CHECK-LABEL: func.func @stage1_apply(
// CHECK-SAME: kiln.param = "h.1.w"
// CHECK: kiln.all_reduce
func.func @forward(%w0: tensor<8x8xf32> {kiln.param = "h.0.w", kiln.role = "weight"},
                   %w1: tensor<8x8xf32> {kiln.param = "h.1.w", kiln.role = "weight"},
                   %x: tensor<2x8xf32> {kiln.input = "x"}) -> (tensor<f32> {kiln.output = "loss"}) {
  %a = kiln.matmul %x, %w0 : tensor<2x8xf32>, tensor<8x8xf32> -> tensor<2x8xf32> loc("h.0")
  %g = kiln.gelu tanh %a : tensor<2x8xf32> loc("h.0")
  %b = kiln.matmul %g, %w1 : tensor<2x8xf32>, tensor<8x8xf32> -> tensor<2x8xf32> loc("h.1")
  %t = kiln.tanh %b : tensor<2x8xf32> loc("h.1")
  %l = kiln.reduce_mean %t, dims = [0, 1] : tensor<2x8xf32> -> tensor<f32> loc("h.1")
  return %l : tensor<f32>
}
