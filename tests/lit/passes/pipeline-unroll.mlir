// kiln-pipeline-unroll: each stage's step as one function, the schedule's
// forwards and backwards inlined in order (1F1B: stage 0 runs F0 F1 B0 B1),
// each micro-batch's rows sliced from the batch input, the transfers of
// consecutive actions adjacent (one NCCL group), the loss summed over pp.
// RUN: kiln-opt %S/pipeline.mlir -kiln-autodiff -kiln-attach-optimizer=accumulate-steps=2 \
// RUN:   -kiln-pipeline="stages=2 microbatches=2" -kiln-pipeline-unroll | FileCheck %s

// CHECK-LABEL: func.func @stage0_step(
// CHECK-SAME: kiln.param = "h.0.w"
// CHECK-SAME: kiln.state = "h.0.w.grad_acc"
// CHECK-SAME: %[[X:arg[0-9]+]]: tensor<4x8xf32> {kiln.input = "x"}
// The parameter and its accumulator come back in place.
// CHECK-SAME: -> (tensor<f32> {kiln.output = "loss"}, tensor<f32> {kiln.output = "grad_norm"}, tensor<8x8xf32> {kiln.aliases = 0 : i64}, tensor<8x8xf32> {kiln.aliases = 1 : i64}
// CHECK: %[[X0:.+]] = kiln.slice %[[X]] [0:2, 0:8]
// CHECK: %[[A0:.+]] = kiln.matmul %[[X0]]
// CHECK: %[[G0:.+]] = kiln.gelu tanh %[[A0]]
// CHECK-NEXT: kiln.send %[[G0]] to 1 over "pp" channel 0
// CHECK-NEXT: %[[X1:.+]] = kiln.slice %[[X]] [2:4, 0:8]
// CHECK: %[[G1:.+]] = kiln.gelu tanh
// F1's send and B0's receive are one run: NCCL posts them together.
// CHECK-NEXT: kiln.send %[[G1]] to 1 over "pp" channel 0
// CHECK-NEXT: %[[D0:.+]] = kiln.recv from 1 over "pp" channel 1
// The saved forward value of micro-batch 0 flows to its backward as SSA.
// CHECK-NEXT: kiln.gelu_grad tanh %[[A0]], %[[D0]]
// CHECK: %[[ACC:.+]] = kiln.add %arg1,
// CHECK: kiln.recv from 1 over "pp" channel 1
// CHECK: %[[SUM:.+]] = kiln.add %[[ACC]],
// CHECK: kiln.global_norm %[[SUM]]
// CHECK: kiln.all_reduce %{{.+}} over "pp" {cause = "the squares
// CHECK: kiln.adamw_update %arg0, %[[SUM]]
// Stage 0 computes no loss: it adds zero, so every stage returns the loss.
// CHECK: %[[Z:.+]] = kiln.constant dense<0.000000e+00> : tensor<f32>
// CHECK: %[[L:.+]] = kiln.all_reduce %[[Z]] over "pp" {cause = "'loss' from the stage that computes it, to every stage"}
// CHECK: return %[[L]],

// The last stage: the loss of the two micro-batches, their mean.
// CHECK-LABEL: func.func @stage1_step(
// CHECK: kiln.recv from 0 over "pp" channel 0
// CHECK: %[[L0:.+]] = kiln.reduce_mean
// CHECK: kiln.send %{{.+}} to 0 over "pp" channel 1
// CHECK-NEXT: kiln.recv from 0 over "pp" channel 0
// CHECK: %[[L1:.+]] = kiln.reduce_mean
// CHECK: %[[LS:.+]] = kiln.add %[[L0]], %[[L1]]
// CHECK: %[[HALF:.+]] = kiln.constant dense<5.000000e-01>
// CHECK: %[[MEAN:.+]] = kiln.mul %[[LS]], %[[HALF]]
// CHECK: kiln.all_reduce %[[MEAN]] over "pp"

// Evaluation: one forward, its loss summed over pp the same way.
// CHECK-LABEL: func.func @stage1_eval(
// CHECK: kiln.recv from 0 over "pp" channel 0
// CHECK: kiln.reduce_mean
// CHECK: kiln.all_reduce %{{.+}} over "pp"
