// kiln-plan-buffers: the arena layout. With alignment 256 and a 1 KiB
// workspace, parameters/inputs take the persistent region from 0, the
// workspace follows, and each function's temporaries start above it.
// RUN: kiln-opt %s -split-input-file -kiln-plan-buffers="alignment=256 workspace=1024" | FileCheck %s

// Reuse: a value's buffer is free after its last use; a reshape shares its
// operand's buffer; a splat constant feeding only elementwise ops has none.
// CHECK-LABEL: func.func @reuse
// CHECK-SAME: kiln.offset = 0 : i64, kiln.param = "w"
// CHECK-SAME: kiln.input = "x", kiln.offset = 256 : i64
// CHECK-SAME: attributes {kiln.memory = {grads_at_peak = 0 : i64, inputs = 256 : i64, params = 256 : i64, peak_live = 512 : i64, scratch = 512 : i64, states = 0 : i64, total = 2048 : i64, workspace = 1024 : i64, workspace_offset = 512 : i64}}
// CHECK: kiln.constant {{.*}}kiln.offsets = array<i64: -1>
// CHECK: kiln.mul {{.*}}kiln.offsets = array<i64: 1536>
// CHECK: kiln.add {{.*}}kiln.offsets = array<i64: 1792>
// CHECK: kiln.reshape {{.*}}kiln.offsets = array<i64: 1792>
// CHECK: kiln.exp {{.*}}kiln.offsets = array<i64: 1536>
// CHECK: kiln.reduce_sum {{.*}}kiln.offsets = array<i64: 1792>
func.func @reuse(%w: tensor<64xf32> {kiln.param = "w"}, %x: tensor<64xf32> {kiln.input = "x"})
    -> (tensor<f32> {kiln.output = "loss"}) {
  %c = kiln.constant dense<2.0> : tensor<64xf32>
  %a = kiln.mul %w, %c : tensor<64xf32>
  %b = kiln.add %a, %x : tensor<64xf32>
  %r = kiln.reshape %b : tensor<64xf32> -> tensor<8x8xf32>
  %e = kiln.exp %r : tensor<8x8xf32>
  %l = kiln.reduce_sum %e, dims = [0, 1] : tensor<8x8xf32> -> tensor<f32>
  return %l : tensor<f32>
}

// -----

// An elementwise update of a parameter that nothing reads afterwards is
// written over the parameter: no scratch at all.
// CHECK-LABEL: func.func @in_place
// CHECK-SAME: scratch = 0 : i64
// CHECK: kiln.sub {{.*}}kiln.offsets = array<i64: 0>
func.func @in_place(%w: tensor<64xf32> {kiln.param = "w"}, %g: tensor<64xf32> {kiln.input = "g"})
    -> (tensor<64xf32> {kiln.aliases = 0 : i64}) {
  %n = kiln.sub %w, %g : tensor<64xf32>
  return %n : tensor<64xf32>
}

// -----

// The parameter is read after its update, so the update gets its own buffer
// (codegen copies it back at the end).
// CHECK-LABEL: func.func @late_reader
// CHECK: kiln.sub {{.*}}kiln.offsets = array<i64: 1536>
// CHECK: kiln.mul {{.*}}kiln.offsets = array<i64: 1792>
func.func @late_reader(%w: tensor<64xf32> {kiln.param = "w"}, %g: tensor<64xf32> {kiln.input = "g"})
    -> (tensor<64xf32> {kiln.aliases = 0 : i64}, tensor<64xf32> {kiln.output = "square"}) {
  %n = kiln.sub %w, %g : tensor<64xf32>
  %s = kiln.mul %w, %w : tensor<64xf32>
  return %n, %s : tensor<64xf32>, tensor<64xf32>
}

// -----

// A matmul reads rows of its operand while writing others: never in place.
// CHECK-LABEL: func.func @not_elementwise
// CHECK: kiln.matmul {{.*}}kiln.offsets = array<i64: 1280>
func.func @not_elementwise(%w: tensor<8x8xf32> {kiln.param = "w"})
    -> (tensor<8x8xf32> {kiln.aliases = 0 : i64}) {
  %n = kiln.matmul %w, %w : tensor<8x8xf32>, tensor<8x8xf32> -> tensor<8x8xf32>
  return %n : tensor<8x8xf32>
}

// -----

// Functions share the persistent region: the same parameter has one buffer;
// an input of the same name with another shape gets its own. Both functions'
// temporaries start at the same base (they never run at the same time).
// CHECK-LABEL: func.func @first
// CHECK-SAME: kiln.offset = 0 : i64, kiln.param = "w"
// CHECK-SAME: kiln.input = "x", kiln.offset = 256 : i64
// CHECK: kiln.add {{.*}}kiln.offsets = array<i64: 1792>
// CHECK-LABEL: func.func @second
// CHECK-SAME: kiln.offset = 0 : i64, kiln.param = "w"
// CHECK-SAME: kiln.input = "x", kiln.offset = 512 : i64
// CHECK-SAME: total = 2048 : i64
// CHECK: kiln.mul {{.*}}kiln.offsets = array<i64: 1792>
func.func @first(%w: tensor<64xf32> {kiln.param = "w"}, %x: tensor<64xf32> {kiln.input = "x"})
    -> (tensor<64xf32> {kiln.output = "y"}) {
  %y = kiln.add %w, %x : tensor<64xf32>
  return %y : tensor<64xf32>
}
func.func @second(%w: tensor<64xf32> {kiln.param = "w"}, %x: tensor<8xf32> {kiln.input = "x"})
    -> (tensor<64xf32> {kiln.output = "y"}) {
  %y = kiln.mul %w, %w : tensor<64xf32>
  return %y : tensor<64xf32>
}

// -----

// cross_entropy_grad writes the gradient over the logits when they die
// there (its kernel reads each logit before writing that element): the two
// largest buffers of a language model's step are one. Not when something
// reads the logits later, and never over an argument.
// CHECK-LABEL: func.func @logits_die
// CHECK: %[[L:.+]] = kiln.exp {{.*}}kiln.offsets = array<i64: [[O:[0-9]+]]>
// CHECK: kiln.cross_entropy %[[L]]
// CHECK: kiln.cross_entropy_grad %[[L]], {{.*}}kiln.offsets = array<i64: [[O]]>
func.func @logits_die(%x: tensor<4x64xf32> {kiln.input = "x"}, %t: tensor<4xi32> {kiln.input = "t"})
    -> (tensor<4x64xf32> {kiln.output = "d"}) {
  %l = kiln.exp %x : tensor<4x64xf32>
  %loss, %lse = kiln.cross_entropy %l, %t : tensor<4x64xf32>, tensor<4xi32> -> tensor<4xf32>, tensor<4xf32>
  %d = kiln.cross_entropy_grad %l, %t, %lse, %loss : tensor<4x64xf32>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32> -> tensor<4x64xf32>
  return %d : tensor<4x64xf32>
}

// -----

// CHECK-LABEL: func.func @logits_live_on
// CHECK: kiln.exp {{.*}}kiln.offsets = array<i64: 2304>
// CHECK: kiln.cross_entropy_grad {{.*}}kiln.offsets = array<i64: 3840>
// CHECK: kiln.add
func.func @logits_live_on(%x: tensor<4x64xf32> {kiln.input = "x"}, %t: tensor<4xi32> {kiln.input = "t"})
    -> (tensor<4x64xf32> {kiln.output = "d"}) {
  %l = kiln.exp %x : tensor<4x64xf32>
  %loss, %lse = kiln.cross_entropy %l, %t : tensor<4x64xf32>, tensor<4xi32> -> tensor<4xf32>, tensor<4xf32>
  %d = kiln.cross_entropy_grad %l, %t, %lse, %loss : tensor<4x64xf32>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32> -> tensor<4x64xf32>
  %s = kiln.add %d, %l : tensor<4x64xf32>
  return %s : tensor<4x64xf32>
}

// -----

// CHECK-LABEL: func.func @logits_are_an_argument
// CHECK-SAME: kiln.input = "x", kiln.offset = 0
// CHECK: kiln.cross_entropy_grad {{.*}}kiln.offsets = array<i64: 2816>
func.func @logits_are_an_argument(%x: tensor<4x64xf32> {kiln.input = "x"}, %t: tensor<4xi32> {kiln.input = "t"})
    -> (tensor<4x64xf32> {kiln.output = "d"}) {
  %loss, %lse = kiln.cross_entropy %x, %t : tensor<4x64xf32>, tensor<4xi32> -> tensor<4xf32>, tensor<4xf32>
  %d = kiln.cross_entropy_grad %x, %t, %lse, %loss : tensor<4x64xf32>, tensor<4xi32>, tensor<4xf32>, tensor<4xf32> -> tensor<4x64xf32>
  return %d : tensor<4x64xf32>
}

// -----

// A kiln.cast_group runs as one launch where its last cast is, so each
// member's operand lives until then: the third cast's result does not
// land in the bytes the first two casts read (as it does, 1792, when the
// casts run one by one, below).
// CHECK-LABEL: func.func @cast_group_operands_live_to_its_end
// CHECK: kiln.cast {{.*}}kiln.offsets = array<i64: 2560>
// CHECK: kiln.cast {{.*}}kiln.offsets = array<i64: 3072>
// CHECK: kiln.cast {{.*}}kiln.offsets = array<i64: 3584>
func.func @cast_group_operands_live_to_its_end(
    %x: tensor<128xbf16> {kiln.input = "x"}, %y: tensor<128xbf16> {kiln.input = "y"},
    %z: tensor<128xbf16> {kiln.input = "z"}) -> (tensor<128xf32> {kiln.output = "s"}) {
  %a = kiln.exp %x : tensor<128xbf16>
  %b = kiln.exp %y : tensor<128xbf16>
  %k = kiln.exp %z : tensor<128xbf16>
  %c = kiln.cast %a {kiln.cast_group = 0 : i64} : tensor<128xbf16> to tensor<128xf32>
  %d = kiln.cast %b {kiln.cast_group = 0 : i64} : tensor<128xbf16> to tensor<128xf32>
  %h = kiln.cast %k {kiln.cast_group = 0 : i64} : tensor<128xbf16> to tensor<128xf32>
  %s = kiln.add %c, %d : tensor<128xf32>
  %t = kiln.add %s, %h : tensor<128xf32>
  return %t : tensor<128xf32>
}

// -----

// CHECK-LABEL: func.func @casts_one_by_one
// CHECK: kiln.cast {{.*}}kiln.offsets = array<i64: 2560>
// CHECK: kiln.cast {{.*}}kiln.offsets = array<i64: 3072>
// CHECK: kiln.cast {{.*}}kiln.offsets = array<i64: 1792>
func.func @casts_one_by_one(
    %x: tensor<128xbf16> {kiln.input = "x"}, %y: tensor<128xbf16> {kiln.input = "y"},
    %z: tensor<128xbf16> {kiln.input = "z"}) -> (tensor<128xf32> {kiln.output = "s"}) {
  %a = kiln.exp %x : tensor<128xbf16>
  %b = kiln.exp %y : tensor<128xbf16>
  %k = kiln.exp %z : tensor<128xbf16>
  %c = kiln.cast %a : tensor<128xbf16> to tensor<128xf32>
  %d = kiln.cast %b : tensor<128xbf16> to tensor<128xf32>
  %h = kiln.cast %k : tensor<128xbf16> to tensor<128xf32>
  %s = kiln.add %c, %d : tensor<128xf32>
  %t = kiln.add %s, %h : tensor<128xf32>
  return %t : tensor<128xf32>
}
