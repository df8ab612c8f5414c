// kiln-pipeline-unroll refuses a step whose transfers cannot all meet
// under NCCL's rules: here each stage's forward waits for the other's
// value before sending its own.
// RUN: kiln-opt %s -kiln-pipeline-unroll -split-input-file -verify-diagnostics

module attributes {kiln.mesh = #kiln.mesh<pp = 2>, kiln.pipeline = {actions = [["F0", "B0"], ["F0", "B0"]], axis = "pp", blocks = ["a", "b"], microbatches = 1 : i64, schedule = "1f1b", stages = 2 : i64}} {
  func.func @stage0_forward(%x: tensor<2xf32> {kiln.input = "x"}) -> (tensor<f32> {kiln.output = "loss"}) {
    // expected-error @+1 {{@stage0_step would wait forever at kiln.recv}}
    %r = kiln.recv from 1 over "pp" channel 1 {cause = "b to a"} : tensor<2xf32>
    %y = kiln.add %r, %x : tensor<2xf32>
    kiln.send %y to 1 over "pp" channel 0 {cause = "a to b"} : tensor<2xf32>
    %l = kiln.reduce_sum %y, dims = [0] : tensor<2xf32> -> tensor<f32>
    return %l : tensor<f32>
  }
  func.func @stage0_backward() { return }
  func.func @stage0_apply() { return }
  func.func @stage1_forward(%x: tensor<2xf32> {kiln.input = "x"}) {
    %r = kiln.recv from 0 over "pp" channel 0 {cause = "a to b"} : tensor<2xf32>
    %y = kiln.add %r, %x : tensor<2xf32>
    kiln.send %y to 0 over "pp" channel 1 {cause = "b to a"} : tensor<2xf32>
    return
  }
  func.func @stage1_backward() { return }
  func.func @stage1_apply() { return }
}

// -----

// expected-error @+1 {{kiln-pipeline-unroll: the module has no kiln.pipeline: run kiln-pipeline first}}
module {
}

// -----

// expected-error @+1 {{kiln-pipeline-unroll: the module has no @stage1_forward}}
module attributes {kiln.pipeline = {actions = [["F0", "B0"], ["F0", "B0"]], axis = "pp", blocks = ["a", "b"], microbatches = 1 : i64, schedule = "1f1b", stages = 2 : i64}} {
  func.func @stage0_forward() { return }
  func.func @stage0_backward() { return }
  func.func @stage0_apply() { return }
}

// -----

// Interleaved stages: an action names a stage of its rank.
// expected-error @+1 {{kiln-pipeline-unroll: kiln.pipeline: an action is F<k> or B<k> (with virtual stages F<k>.<stage>, a stage of its rank) with 0 <= k < microbatches, not F0.1 on rank 0}}
module attributes {kiln.pipeline = {actions = [["F0.0", "F0.1", "B0.1", "B0.0"], ["F0.1", "F0.3", "B0.3", "B0.1"]], axis = "pp", blocks = ["a", "b", "c", "d"], microbatches = 1 : i64, schedule = "1f1b", stages = 2 : i64, virtual_stages = 2 : i64}} {
}
