// kiln-group-casts: runs of two or more casts (of arguments or of values)
// with one (from, to) pair, each read and none returned, are marked as one
// multi-tensor launch; anything else breaks a run or stays alone. Under kiln.check_numerics
// nothing is marked, and marks from an earlier run are found again.
// RUN: kiln-opt %s -split-input-file -kiln-group-casts | FileCheck %s

// CHECK-LABEL: func.func @runs
func.func @runs(%a: tensor<4xf32>, %b: tensor<8xf32>, %c: tensor<2x2xf32>, %d: tensor<4xbf16>,
                %e: tensor<4xf32>, %f: tensor<4xf32>) -> (tensor<4xbf16>, tensor<4xbf16>) {
  // CHECK: kiln.cast %{{.+}} {kiln.cast_group = 0 : i64} : tensor<4xf32> to tensor<4xbf16>
  // CHECK: kiln.cast %{{.+}} {kiln.cast_group = 0 : i64} : tensor<8xf32> to tensor<8xbf16>
  // CHECK: kiln.cast %{{.+}} {kiln.cast_group = 0 : i64} : tensor<2x2xf32> to tensor<2x2xbf16>
  %0 = kiln.cast %a : tensor<4xf32> to tensor<4xbf16>
  %1 = kiln.cast %b : tensor<8xf32> to tensor<8xbf16>
  %2 = kiln.cast %c : tensor<2x2xf32> to tensor<2x2xbf16>
  // Another pair of types: a run of its own.
  // CHECK: kiln.cast %{{.+}} {kiln.cast_group = 1 : i64} : tensor<4xbf16> to tensor<4xf32>
  // CHECK: kiln.cast %{{.+}} {kiln.cast_group = 1 : i64} : tensor<4xbf16> to tensor<4xf32>
  %3 = kiln.cast %d : tensor<4xbf16> to tensor<4xf32>
  %4 = kiln.cast %d : tensor<4xbf16> to tensor<4xf32>
  // An op between two casts ends the run: each is alone, unmarked.
  // CHECK: kiln.cast %{{.+}} : tensor<4xf32> to tensor<4xbf16>
  // CHECK-NEXT: kiln.add
  // CHECK-NEXT: kiln.cast %{{.+}} : tensor<4xf32> to tensor<4xbf16>
  %5 = kiln.cast %e : tensor<4xf32> to tensor<4xbf16>
  %6 = kiln.add %3, %4 : tensor<4xf32>
  %7 = kiln.cast %f : tensor<4xf32> to tensor<4xbf16>
  // A returned cast is never marked: the cast of a value before it is alone.
  // CHECK: kiln.cast %{{.+}} : tensor<4xf32> to tensor<4xbf16>
  // CHECK-NEXT: kiln.cast %{{.+}} : tensor<4xf32> to tensor<4xbf16>
  %8 = kiln.cast %6 : tensor<4xf32> to tensor<4xbf16>
  %9 = kiln.cast %a : tensor<4xf32> to tensor<4xbf16>
  %s0 = kiln.add %0, %5 : tensor<4xbf16>
  %s1 = kiln.add %s0, %7 : tensor<4xbf16>
  %s2 = kiln.add %s1, %8 : tensor<4xbf16>
  %t1 = kiln.reshape %1 : tensor<8xbf16> -> tensor<2x4xbf16>
  %t2 = kiln.reshape %2 : tensor<2x2xbf16> -> tensor<4xbf16>
  %s3 = kiln.add %s2, %t2 : tensor<4xbf16>
  return %s3, %9 : tensor<4xbf16>, tensor<4xbf16>
}

// -----

// train.check_numerics: no groups, and a stale mark is removed.
// CHECK-LABEL: func.func @checked
// CHECK-NOT: kiln.cast_group
module attributes {kiln.check_numerics} {
  func.func @checked(%a: tensor<4xf32>, %b: tensor<4xf32>) -> tensor<4xbf16> {
    %0 = kiln.cast %a {kiln.cast_group = 3 : i64} : tensor<4xf32> to tensor<4xbf16>
    %1 = kiln.cast %b {kiln.cast_group = 3 : i64} : tensor<4xf32> to tensor<4xbf16>
    %2 = kiln.add %0, %1 : tensor<4xbf16>
    return %2 : tensor<4xbf16>
  }
}

// -----

// Casts of values (the bias gradients' sums widened for the optimizer)
// group like the arguments' casts.
// CHECK-LABEL: func.func @values
// CHECK: kiln.reduce_sum
// CHECK: kiln.reduce_sum
// CHECK-NEXT: kiln.cast %{{.+}} {kiln.cast_group = 0 : i64} : tensor<4xbf16> to tensor<4xf32>
// CHECK-NEXT: kiln.cast %{{.+}} {kiln.cast_group = 0 : i64} : tensor<8xbf16> to tensor<8xf32>
func.func @values(%a: tensor<2x4xbf16>, %b: tensor<2x8xbf16>) -> tensor<4xf32> {
  %0 = kiln.reduce_sum %a, dims = [0] : tensor<2x4xbf16> -> tensor<4xbf16>
  %1 = kiln.reduce_sum %b, dims = [0] : tensor<2x8xbf16> -> tensor<8xbf16>
  %2 = kiln.cast %0 : tensor<4xbf16> to tensor<4xf32>
  %3 = kiln.cast %1 : tensor<8xbf16> to tensor<8xf32>
  %4 = kiln.reshape %3 : tensor<8xf32> -> tensor<2x4xf32>
  %5 = kiln.reduce_sum %4, dims = [0] : tensor<2x4xf32> -> tensor<4xf32>
  %6 = kiln.add %2, %5 : tensor<4xf32>
  return %6 : tensor<4xf32>
}

// -----

// A cast reading an earlier member's result (here a same-type cast, which
// the verifier allows) is not converted in the same launch: the run ends
// before it.
// CHECK-LABEL: func.func @chain
// CHECK: kiln.cast %{{[0-9]+}} : tensor<4xbf16> to tensor<4xbf16>
// CHECK-NEXT: kiln.cast %{{[0-9]+}} : tensor<4xbf16> to tensor<4xbf16>
func.func @chain(%a: tensor<4xbf16>) -> tensor<4xbf16> {
  %0 = kiln.exp %a : tensor<4xbf16>
  %1 = kiln.cast %0 : tensor<4xbf16> to tensor<4xbf16>
  %2 = kiln.cast %1 : tensor<4xbf16> to tensor<4xbf16>
  %3 = kiln.add %1, %2 : tensor<4xbf16>
  return %3 : tensor<4xbf16>
}
