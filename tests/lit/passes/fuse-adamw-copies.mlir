// kiln-fuse's working copies: a parameter's cast to bf16 becomes a state
// argument (kiln.copy_of the parameter) that its AdamW update writes as a
// fourth result, returned in place of the state; what must stay a cast
// stays one.
// RUN: kiln-opt %s -split-input-file -kiln-fuse | FileCheck %s
// RUN: kiln-opt %s -split-input-file -kiln-fuse=adamw-copies=false | FileCheck %s --check-prefix=OFF

// w is cast (twice: a recomputed cast is one too) and updated in place: its
// casts become the state %w.bf16 after the moments, before the inputs; the
// results aliasing the inputs' side are renumbered (none here). b is read
// in f32 only: no copy.
// CHECK-LABEL: func.func @step
// CHECK-SAME: %[[W:[^:]+]]: tensor<4x8xf32> {kiln.param = "w"}
// CHECK-SAME: %{{[^:]+}}: tensor<4x8xf32> {kiln.state = "w.adam_v"}
// CHECK-SAME: %[[C:[^:]+]]: tensor<4x8xbf16> {kiln.copy_of = "w", kiln.state = "w.bf16"}
// CHECK-SAME: %[[X:[^:]+]]: tensor<2x4xbf16> {kiln.input = "x"}
// CHECK-SAME: tensor<4x8xbf16> {kiln.aliases = 6 : i64}
// CHECK-NOT: kiln.cast %[[W]]
// CHECK: kiln.matmul %[[X]], %[[C]]
// CHECK: kiln.matmul %{{.+}}, %[[C]] transpose_b
// CHECK: %{{[^,]+}}, %{{[^,]+}}, %{{[^,]+}}, %[[UC:[^ ]+]] = kiln.adamw_update %[[W]]
// CHECK-SAME: -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xbf16>)
// CHECK: kiln.adamw_update %{{.+}} -> (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>)
// CHECK: return {{.+}}, %[[UC]] :
// OFF-LABEL: func.func @step
// OFF-NOT: kiln.copy_of
// OFF: kiln.cast %arg0
// OFF-NOT: new_copy
func.func @step(%w: tensor<4x8xf32> {kiln.param = "w"}, %b: tensor<8xf32> {kiln.param = "b"},
                %wm: tensor<4x8xf32> {kiln.state = "w.adam_m"}, %bm: tensor<8xf32> {kiln.state = "b.adam_m"},
                %bv: tensor<8xf32> {kiln.state = "b.adam_v"}, %wv: tensor<4x8xf32> {kiln.state = "w.adam_v"},
                %x: tensor<2x4xbf16> {kiln.input = "x"}, %lr: tensor<f32> {kiln.input = "lr"},
                %t: tensor<f32> {kiln.input = "step"})
    -> (tensor<2x8xbf16> {kiln.output = "y"}, tensor<4x8xf32> {kiln.aliases = 0 : i64},
        tensor<4x8xf32> {kiln.aliases = 2 : i64}, tensor<4x8xf32> {kiln.aliases = 5 : i64},
        tensor<8xf32> {kiln.aliases = 1 : i64}, tensor<8xf32> {kiln.aliases = 3 : i64},
        tensor<8xf32> {kiln.aliases = 4 : i64}) {
  %wc = kiln.cast %w : tensor<4x8xf32> to tensor<4x8xbf16>
  %y = kiln.matmul %x, %wc : tensor<2x4xbf16>, tensor<4x8xbf16> -> tensor<2x8xbf16>
  %wc2 = kiln.cast %w : tensor<4x8xf32> to tensor<4x8xbf16>
  %dx = kiln.matmul %y, %wc2 transpose_b : tensor<2x8xbf16>, tensor<4x8xbf16> -> tensor<2x4xbf16>
  %gw = kiln.matmul %dx, %y transpose_a : tensor<2x4xbf16>, tensor<2x8xbf16> -> tensor<4x8xbf16>
  %gwf = kiln.cast %gw : tensor<4x8xbf16> to tensor<4x8xf32>
  %gb = kiln.mul %b, %b : tensor<8xf32>
  %s = kiln.constant dense<1.0> : tensor<f32>
  %w2, %wm2, %wv2 = kiln.adamw_update %w, %gwf, %wm, %wv, %lr, %t, %s {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.1 : f32} : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>)
  %b2, %bm2, %bv2 = kiln.adamw_update %b, %gb, %bm, %bv, %lr, %t, %s {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>)
  return %y, %w2, %wm2, %wv2, %b2, %bm2, %bv2 : tensor<2x8xbf16>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>
}

// -----

// Left alone: a parameter cast to two types (which copy?), a cast the step
// returns, an update the step does not return in place of its parameter
// (the gradients' step of accumulation has no update at all).
// (p's two casts are one sibling fusion.)
// CHECK-LABEL: func.func @apart
// CHECK-NOT: kiln.copy_of
// CHECK-DAG: kiln.fusion(%arg0) : (tensor<4xf32>) -> (tensor<4xbf16>, tensor<4xf16>)
// CHECK-DAG: kiln.cast %arg1 : tensor<4xf32> to tensor<4xbf16>
// CHECK-DAG: kiln.cast %arg2 : tensor<4xf32> to tensor<4xbf16>
// CHECK-NOT: new_copy
// CHECK: return
func.func @apart(%p: tensor<4xf32> {kiln.param = "p"}, %q: tensor<4xf32> {kiln.param = "q"},
                 %r: tensor<4xf32> {kiln.param = "r"}, %m: tensor<4xf32> {kiln.state = "m"},
                 %lr: tensor<f32> {kiln.input = "lr"})
    -> (tensor<4xbf16> {kiln.output = "a"}, tensor<4xf16> {kiln.output = "b"},
        tensor<4xbf16> {kiln.output = "c"}, tensor<4xbf16> {kiln.output = "d"},
        tensor<4xf32> {kiln.aliases = 0 : i64}, tensor<4xf32> {kiln.aliases = 1 : i64},
        tensor<4xf32> {kiln.output = "r2"}) {
  %a = kiln.cast %p : tensor<4xf32> to tensor<4xbf16>
  %b = kiln.cast %p : tensor<4xf32> to tensor<4xf16>
  %c = kiln.cast %q : tensor<4xf32> to tensor<4xbf16>
  %d = kiln.cast %r : tensor<4xf32> to tensor<4xbf16>
  %p2, %pm, %pv = kiln.adamw_update %p, %p, %m, %m, %lr, %lr, %lr {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>)
  %q2, %qm, %qv = kiln.adamw_update %q, %q, %m, %m, %lr, %lr, %lr {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>)
  %r2, %rm, %rv = kiln.adamw_update %r, %r, %m, %m, %lr, %lr, %lr {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>)
  return %a, %b, %c, %d, %p2, %q2, %r2 : tensor<4xbf16>, tensor<4xf16>, tensor<4xbf16>, tensor<4xbf16>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>
}

// -----

// On a mesh the copies would need their own layout: planned.
// CHECK-LABEL: func.func @mesh
// CHECK-NOT: kiln.copy_of
// CHECK: kiln.cast
module attributes {kiln.mesh = #kiln.mesh<dp = 2>} {
  func.func @mesh(%w: tensor<4xf32> {kiln.param = "w"}, %m: tensor<4xf32> {kiln.state = "w.adam_m"},
                  %lr: tensor<f32> {kiln.input = "lr"})
      -> (tensor<4xbf16> {kiln.output = "y"}, tensor<4xf32> {kiln.aliases = 0 : i64}) {
    %c = kiln.cast %w : tensor<4xf32> to tensor<4xbf16>
    %w2, %m2, %v2 = kiln.adamw_update %w, %w, %m, %m, %lr, %lr, %lr {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>)
    return %c, %w2 : tensor<4xbf16>, tensor<4xf32>
  }
}

// -----

// A cast read after the last update: the one AdamW launch there would
// write the copy over the state before that reader: left a cast.
// (The cast joins the neg's loop fusion.)
// CHECK-LABEL: func.func @late
// CHECK-NOT: kiln.copy_of
// CHECK: kiln.fusion(%arg0)
// CHECK-NOT: new_copy
// CHECK: return
func.func @late(%w: tensor<4xf32> {kiln.param = "w"}, %m: tensor<4xf32> {kiln.state = "w.adam_m"},
                %lr: tensor<f32> {kiln.input = "lr"})
    -> (tensor<4xbf16> {kiln.output = "y"}, tensor<4xf32> {kiln.aliases = 0 : i64}) {
  %c = kiln.cast %w : tensor<4xf32> to tensor<4xbf16>
  %w2, %m2, %v2 = kiln.adamw_update %w, %w, %m, %m, %lr, %lr, %lr {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>)
  %y = kiln.neg %c : tensor<4xbf16>
  return %y, %w2 : tensor<4xbf16>, tensor<4xf32>
}

// -----

// Gradient accumulation: the casts are in @accumulate_step (run K times a
// step), the updates in @apply_step. w's copy is a state of both, read by
// @accumulate_step and written by @apply_step's update; v's cast is an
// output of @accumulate_step, and @accumulate_step returns a result in
// place of u, so v and u keep their casts and get no copy.
// CHECK-LABEL: func.func @accumulate_step
// CHECK-SAME: %[[W:[^:]+]]: tensor<4x8xf32> {kiln.param = "w"}
// CHECK-SAME: %{{[^:]+}}: tensor<4x8xf32> {kiln.state = "w.grad_acc"}
// CHECK-SAME: %[[C:[^:]+]]: tensor<4x8xbf16> {kiln.copy_of = "w", kiln.state = "w.bf16"}
// CHECK-SAME: %[[X:[^:]+]]: tensor<2x4xbf16> {kiln.input = "x"}
// CHECK-SAME: tensor<4x8xf32> {kiln.aliases = 3 : i64}
// CHECK-NOT: kiln.cast %[[W]]
// CHECK: kiln.matmul %[[X]], %[[C]]
// CHECK-DAG: kiln.cast %arg1 : tensor<8xf32> to tensor<8xbf16>
// CHECK-DAG: kiln.fusion(%arg2)
// CHECK-LABEL: func.func @apply_step
// CHECK-SAME: tensor<4x8xbf16> {kiln.copy_of = "w", kiln.state = "w.bf16"}
// CHECK-NOT: kiln.copy_of = "v"
// CHECK-NOT: kiln.copy_of = "u"
// CHECK: kiln.adamw_update %arg0
// CHECK-SAME: -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xbf16>)
// CHECK: kiln.adamw_update %arg1
// CHECK-SAME: -> (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>)
// OFF-LABEL: func.func @accumulate_step
// OFF-NOT: kiln.copy_of
// OFF: kiln.cast %arg0
func.func @accumulate_step(%w: tensor<4x8xf32> {kiln.param = "w"}, %v: tensor<8xf32> {kiln.param = "v"},
                           %u: tensor<8xf32> {kiln.param = "u"},
                           %acc: tensor<4x8xf32> {kiln.state = "w.grad_acc"},
                           %x: tensor<2x4xbf16> {kiln.input = "x"})
    -> (tensor<2x8xbf16> {kiln.output = "y"}, tensor<8xbf16> {kiln.output = "vc"},
        tensor<8xbf16> {kiln.output = "uc"}, tensor<4x8xf32> {kiln.aliases = 3 : i64},
        tensor<8xf32> {kiln.aliases = 2 : i64}) {
  %wc = kiln.cast %w : tensor<4x8xf32> to tensor<4x8xbf16>
  %y = kiln.matmul %x, %wc : tensor<2x4xbf16>, tensor<4x8xbf16> -> tensor<2x8xbf16>
  %vc = kiln.cast %v : tensor<8xf32> to tensor<8xbf16>
  %uc = kiln.cast %u : tensor<8xf32> to tensor<8xbf16>
  %ucc = kiln.mul %uc, %uc : tensor<8xbf16>
  %acc2 = kiln.add %acc, %w : tensor<4x8xf32>
  %u2 = kiln.add %u, %u : tensor<8xf32>
  return %y, %vc, %ucc, %acc2, %u2 : tensor<2x8xbf16>, tensor<8xbf16>, tensor<8xbf16>, tensor<4x8xf32>, tensor<8xf32>
}
func.func @apply_step(%w: tensor<4x8xf32> {kiln.param = "w"}, %v: tensor<8xf32> {kiln.param = "v"},
                      %u: tensor<8xf32> {kiln.param = "u"},
                      %wm: tensor<4x8xf32> {kiln.state = "w.adam_m"}, %wv: tensor<4x8xf32> {kiln.state = "w.adam_v"},
                      %vm: tensor<8xf32> {kiln.state = "v.adam_m"}, %vv: tensor<8xf32> {kiln.state = "v.adam_v"},
                      %acc: tensor<4x8xf32> {kiln.state = "w.grad_acc"},
                      %lr: tensor<f32> {kiln.input = "lr"}, %t: tensor<f32> {kiln.input = "step"})
    -> (tensor<4x8xf32> {kiln.aliases = 0 : i64}, tensor<4x8xf32> {kiln.aliases = 3 : i64},
        tensor<4x8xf32> {kiln.aliases = 4 : i64}, tensor<8xf32> {kiln.aliases = 1 : i64},
        tensor<8xf32> {kiln.aliases = 5 : i64}, tensor<8xf32> {kiln.aliases = 6 : i64},
        tensor<8xf32> {kiln.aliases = 2 : i64}) {
  %s = kiln.constant dense<1.0> : tensor<f32>
  %u2, %um2, %uv2 = kiln.adamw_update %u, %u, %vm, %vv, %lr, %t, %s {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>)
  %w2, %wm2, %wv2 = kiln.adamw_update %w, %acc, %wm, %wv, %lr, %t, %s {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.1 : f32} : (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>)
  %v2, %vm2, %vv2 = kiln.adamw_update %v, %v, %vm, %vv, %lr, %t, %s {beta1 = 0.9 : f32, beta2 = 0.95 : f32, epsilon = 1.0e-08 : f32, weight_decay = 0.0 : f32} : (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<f32>, tensor<f32>, tensor<f32>) -> (tensor<8xf32>, tensor<8xf32>, tensor<8xf32>)
  return %w2, %wm2, %wv2, %v2, %vm2, %vv2, %u2 : tensor<4x8xf32>, tensor<4x8xf32>, tensor<4x8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>, tensor<8xf32>
}
