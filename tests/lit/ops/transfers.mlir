// kiln.send and kiln.recv print and parse back, and neither canonicalize
// nor CSE drops a send (it has no result) or merges two receives of one
// channel (they are two messages).
// RUN: kiln-opt %s | kiln-opt | FileCheck %s
// RUN: kiln-opt %s --canonicalize --cse | FileCheck %s --check-prefix=KEPT

// CHECK-LABEL: func.func @stage1
// CHECK: %[[A:.*]] = kiln.recv from 0 over "pp" channel 3 {cause = "x from stage 0"} : tensor<2x4xf32>
// CHECK: kiln.send %[[A]] to 0 over "pp" channel 4 {cause = "dx to stage 0"} : tensor<2x4xf32>
// KEPT-COUNT-2: kiln.recv from 0
// KEPT: kiln.send
func.func @stage1() -> tensor<2x4xf32> {
  %a = kiln.recv from 0 over "pp" channel 3 {cause = "x from stage 0"} : tensor<2x4xf32>
  %b = kiln.recv from 0 over "pp" channel 3 {cause = "x from stage 0"} : tensor<2x4xf32>
  kiln.send %a to 0 over "pp" channel 4 {cause = "dx to stage 0"} : tensor<2x4xf32>
  %c = kiln.add %a, %b : tensor<2x4xf32>
  return %c : tensor<2x4xf32>
}
