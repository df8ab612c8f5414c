// kiln-pipeline's refusals, each naming the reason.
// RUN: not kiln-opt %s -kiln-pipeline="stages=2" 2>&1 | FileCheck %s --check-prefix=NOSTEP
// NOSTEP: kiln-pipeline: needs @accumulate_step and @apply_step: run kiln-attach-optimizer with accumulate-steps = the micro-batches first
// RUN: not kiln-opt %s -kiln-autodiff -kiln-attach-optimizer=accumulate-steps=2 -kiln-pipeline="stages=3 microbatches=2" 2>&1 | FileCheck %s --check-prefix=BLOCKS
// BLOCKS: kiln-pipeline: stages = 3 needs at least as many transformer blocks (parameters named like h.0.*), the model has 2
// RUN: not kiln-opt %s -kiln-autodiff -kiln-attach-optimizer=accumulate-steps=2 -kiln-pipeline="stages=2 microbatches=2 schedule=zigzag" 2>&1 | FileCheck %s --check-prefix=SCHEDULE
// SCHEDULE: kiln-pipeline: schedule 'zigzag' is not one of 1f1b, gpipe
// RUN: not kiln-opt %s -kiln-autodiff -kiln-attach-optimizer=accumulate-steps=2 -kiln-pipeline="stages=2 microbatches=2 cuts=2" 2>&1 | FileCheck %s --check-prefix=CUTS
// CUTS: kiln-pipeline: cuts must rise strictly between 1 and 1 (the model has 2 blocks); got 2 after 0
// RUN: not kiln-opt %s -kiln-autodiff -kiln-attach-optimizer=accumulate-steps=2 -kiln-pipeline="stages=2 microbatches=2 cuts=1,1" 2>&1 | FileCheck %s --check-prefix=NCUTS
// NCUTS: kiln-pipeline: cuts lists 2 blocks; 2 stages need 1 (the first block of each stage after the first)
// After kiln-fuse's working copies (faked here: a state marked kiln.copy_of)
// no stage would send a copy's parameter: refused.
// RUN: kiln-opt %s -kiln-autodiff -kiln-attach-optimizer=accumulate-steps=2 | sed 's/{kiln.init = "zeros", kiln.state = "h.0.w.grad_acc", kiln.transient}/{kiln.copy_of = "h.0.w", kiln.state = "h.0.w.grad_acc"}/' | not kiln-opt -kiln-pipeline="stages=2 microbatches=2" 2>&1 | FileCheck %s --check-prefix=COPY
// COPY: kiln-pipeline: @accumulate_step has a working copy (kiln.copy_of): run kiln-pipeline before kiln-fuse
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
