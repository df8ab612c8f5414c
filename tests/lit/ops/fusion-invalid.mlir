// kiln.fusion's verifier: the body matches the op, and holds only a loop
// fusion's ops.
// RUN: kiln-opt %s -split-input-file -verify-diagnostics

func.func @not_elementwise(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  %0 = kiln.fusion(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32> {
  ^bb0(%a: tensor<4x8xf32>):
    // expected-error @+1 {{cannot be in a kiln.fusion body: only elementwise ops and splat constants can}}
    %1 = kiln.transpose %a, [1, 0] : tensor<4x8xf32> -> tensor<8x4xf32>
    %2 = kiln.transpose %1, [1, 0] : tensor<8x4xf32> -> tensor<4x8xf32>
    kiln.yield %2 : tensor<4x8xf32>
  }
  return %0 : tensor<4x8xf32>
}

// -----

func.func @argument_type(%x: tensor<4x8xf32>) -> tensor<4x8xf32> {
  // expected-error @+1 {{input #0 has type 'tensor<4x8xf32>' but body argument #0 has type 'tensor<4x8xbf16>'}}
  %0 = kiln.fusion(%x) : (tensor<4x8xf32>) -> tensor<4x8xf32> {
  ^bb0(%a: tensor<4x8xbf16>):
    %1 = kiln.cast %a : tensor<4x8xbf16> to tensor<4x8xf32>
    kiln.yield %1 : tensor<4x8xf32>
  }
  return %0 : tensor<4x8xf32>
}

// -----

func.func @yield_types(%x: tensor<4x8xf32>) -> tensor<4x8xbf16> {
  // expected-error @+1 {{yields 1 values whose types differ from its results'}}
  %0 = kiln.fusion(%x) : (tensor<4x8xf32>) -> tensor<4x8xbf16> {
  ^bb0(%a: tensor<4x8xf32>):
    %1 = kiln.exp %a : tensor<4x8xf32>
    kiln.yield %1 : tensor<4x8xf32>
  }
  return %0 : tensor<4x8xbf16>
}

// -----

func.func @shape(%x: tensor<4x8xf32>, %y: tensor<8xf32>) -> tensor<4x8xf32> {
  // expected-error @+1 {{body argument of type 'tensor<8xf32>' does not have the results' shape}}
  %0 = kiln.fusion(%x, %y) : (tensor<4x8xf32>, tensor<8xf32>) -> tensor<4x8xf32> {
  ^bb0(%a: tensor<4x8xf32>, %b: tensor<8xf32>):
    %1 = kiln.exp %a : tensor<4x8xf32>
    kiln.yield %1 : tensor<4x8xf32>
  }
  return %0 : tensor<4x8xf32>
}

// -----

// A body without kiln.yield: MLIR's own block check reports it.
func.func @no_yield(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = kiln.fusion(%x) : (tensor<4xf32>) -> tensor<4xf32> {
  ^bb0(%a: tensor<4xf32>):
    // expected-error @+1 {{block with no terminator}}
    %1 = kiln.exp %a : tensor<4xf32>
  }
  return %0 : tensor<4xf32>
}

// -----

// The body's ops are verified before the fusion's own checks read their
// types (a generic-form op with a scalar result used to reach a cast).
func.func @body_op_invalid(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = kiln.fusion(%x) : (tensor<4xf32>) -> tensor<4xf32> {
  ^bb0(%a: tensor<4xf32>):
    // expected-error @+1 {{'kiln.exp' op result #0 must be statically shaped tensor}}
    %1 = "kiln.exp"(%a) : (tensor<4xf32>) -> f32
    kiln.yield %a : tensor<4xf32>
  }
  return %0 : tensor<4xf32>
}

// -----

func.func @constant_without_value(%x: tensor<4xf32>) -> tensor<4xf32> {
  %0 = kiln.fusion(%x) : (tensor<4xf32>) -> tensor<4xf32> {
  ^bb0(%a: tensor<4xf32>):
    // expected-error @+1 {{'kiln.constant' op requires attribute 'value'}}
    %c = "kiln.constant"() : () -> tensor<4xf32>
    %1 = kiln.add %a, %c : tensor<4xf32>
    kiln.yield %1 : tensor<4xf32>
  }
  return %0 : tensor<4xf32>
}
