// kiln-bucket-collectives: the sums over dp, in program order, in buckets
// that close once their operands reach `bytes`; a bucket's members are
// moved to follow each other where it closes (after the member that fills
// it, or before an op that reads one, a transfer, or the return) and
// marked kiln.bucket when there are two or more. Sums over another axis, a
// reduce_scatter that regroups (a split dimension after one of more than
// one element) and other collectives stay where they are and unmarked.
// RUN: kiln-opt %s -split-input-file -kiln-bucket-collectives="bytes=64" | FileCheck %s
// RUN: kiln-opt %s -split-input-file -kiln-bucket-collectives="bytes=0" | FileCheck %s --check-prefix=OFF
// OFF-NOT: kiln.bucket

// CHECK-LABEL: func.func @fills
func.func @fills(%a: tensor<4xf32>, %b: tensor<8xf32>, %c: tensor<4xf32>, %d: tensor<16xf32>,
                 %e: tensor<2xf32>) -> (tensor<4xf32>, tensor<8xf32>, tensor<4xf32>, tensor<16xf32>, tensor<2xf32>, tensor<4xf32>) {
  // 16 + 32 bytes, then 16 more fill the first bucket at %c's sum: %a's and
  // %b's move down to it, past the exp between.
  // CHECK: %[[X:.+]] = kiln.exp
  // CHECK-NEXT: kiln.all_reduce %arg0 over "dp" {cause = "a", kiln.bucket = 0 : i64}
  // CHECK-NEXT: kiln.all_reduce %arg1 over "dp" {cause = "b", kiln.bucket = 0 : i64}
  // CHECK-NEXT: kiln.all_reduce %arg2 over "dp" {cause = "c", kiln.bucket = 0 : i64}
  %0 = kiln.all_reduce %a over "dp" {cause = "a"} : tensor<4xf32>
  %1 = kiln.all_reduce %b over "dp" {cause = "b"} : tensor<8xf32>
  %x = kiln.exp %a : tensor<4xf32>
  %2 = kiln.all_reduce %c over "dp" {cause = "c"} : tensor<4xf32>
  // 64 bytes alone fill a bucket of one: left unmarked.
  // CHECK-NEXT: kiln.all_reduce %arg3 over "dp" {cause = "d"} : tensor<16xf32>
  %3 = kiln.all_reduce %d over "dp" {cause = "d"} : tensor<16xf32>
  // A sum over tp is never a member; the last bucket closes at the return
  // (a bucket of one, unmarked, moved there).
  // CHECK-NEXT: kiln.all_reduce %[[X]] over "tp" {cause = "x"} : tensor<4xf32>
  // CHECK-NEXT: kiln.all_reduce %arg4 over "dp" {cause = "e"} : tensor<2xf32>
  // CHECK-NEXT: return
  %4 = kiln.all_reduce %e over "dp" {cause = "e"} : tensor<2xf32>
  %5 = kiln.all_reduce %x over "tp" {cause = "x"} : tensor<4xf32>
  return %0, %1, %2, %3, %4, %5 : tensor<4xf32>, tensor<8xf32>, tensor<4xf32>, tensor<16xf32>, tensor<2xf32>, tensor<4xf32>
}

// -----

// CHECK-LABEL: func.func @read_early
func.func @read_early(%a: tensor<2xf32>, %b: tensor<2xf32>, %c: tensor<2xf32>) -> (tensor<2xf32>, tensor<2xf32>) {
  // %b's sum is read before the bucket fills: the bucket closes there,
  // the members moved in order just before the reader.
  // CHECK: kiln.exp %arg2
  // CHECK-NEXT: kiln.all_reduce %arg0 over "dp" {cause = "a", kiln.bucket = 0 : i64}
  // CHECK-NEXT: %[[B:.+]] = kiln.all_reduce %arg1 over "dp" {cause = "b", kiln.bucket = 0 : i64}
  // CHECK-NEXT: kiln.add %[[B]], %[[B]]
  %0 = kiln.all_reduce %a over "dp" {cause = "a"} : tensor<2xf32>
  %1 = kiln.all_reduce %b over "dp" {cause = "b"} : tensor<2xf32>
  %2 = kiln.exp %c : tensor<2xf32>
  %3 = kiln.add %1, %1 : tensor<2xf32>
  return %0, %3 : tensor<2xf32>, tensor<2xf32>
}

// -----

// CHECK-LABEL: func.func @scatters_and_transfers
func.func @scatters_and_transfers(%a: tensor<4x2xf32>, %b: tensor<2x4xf32>, %c: tensor<1x4xf32>,
                                  %d: tensor<2xf32>, %e: tensor<2xf32>) -> (tensor<2x2xf32>, tensor<2x2xf32>, tensor<1x2xf32>, tensor<2xf32>, tensor<2xf32>) {
  // A reduce_scatter of dimension 0 and one of dimension 1 after a 1 are
  // members; one of dimension 1 after a 2 is not. A send closes the bucket.
  // CHECK: kiln.reduce_scatter %arg1 over "dp" dim 1 {cause = "b"}
  // CHECK-NEXT: kiln.reduce_scatter %arg0 over "dp" dim 0 {cause = "a", kiln.bucket = 0 : i64}
  // CHECK-NEXT: kiln.reduce_scatter %arg2 over "dp" dim 1 {cause = "c", kiln.bucket = 0 : i64}
  // CHECK-NEXT: kiln.all_reduce %arg3 over "dp" {cause = "d", kiln.bucket = 0 : i64}
  // CHECK-NEXT: kiln.send
  // CHECK-NEXT: kiln.all_reduce %arg4 over "dp" {cause = "e"}
  %0 = kiln.reduce_scatter %a over "dp" dim 0 {cause = "a"} : tensor<4x2xf32> -> tensor<2x2xf32>
  %1 = kiln.reduce_scatter %b over "dp" dim 1 {cause = "b"} : tensor<2x4xf32> -> tensor<2x2xf32>
  %2 = kiln.reduce_scatter %c over "dp" dim 1 {cause = "c"} : tensor<1x4xf32> -> tensor<1x2xf32>
  %3 = kiln.all_reduce %d over "dp" {cause = "d"} : tensor<2xf32>
  kiln.send %e to 1 over "pp" channel 0 {cause = "to stage 1"} : tensor<2xf32>
  %4 = kiln.all_reduce %e over "dp" {cause = "e"} : tensor<2xf32>
  return %0, %1, %2, %3, %4 : tensor<2x2xf32>, tensor<2x2xf32>, tensor<1x2xf32>, tensor<2xf32>, tensor<2xf32>
}

// -----

// The training pipeline's bucket-bytes: negative is refused by name.
// RUN: not kiln-opt %s -split-input-file -pass-pipeline='builtin.module(kiln-training-pipeline{mesh=dp=2 bucket-bytes=-1})' 2>&1 | FileCheck %s --check-prefix=NEG
// NEG: bucket-bytes = -1 is negative
func.func @forward(%a: tensor<2xf32>) -> tensor<2xf32> {
  return %a : tensor<2xf32>
}

// -----

// A sum over a group of axes that includes dp (a norm's gradient partial
// over dp and tp, summed over "dp,tp" at once) is a member; one over a
// group without it is not. With axis=edp (experts over part of the dp
// ranks) the dense gradients' sums over "edp,ep" are members.
// RUN: kiln-opt %s -split-input-file -kiln-bucket-collectives="bytes=64 axis=edp" | FileCheck %s --check-prefix=EDP
// CHECK-LABEL: func.func @groups
// CHECK: kiln.all_reduce %arg2 over "tp,ep" {cause = "c"}
// CHECK: kiln.all_reduce %arg0 over "dp,tp" {cause = "a", kiln.bucket = 0 : i64}
// CHECK-NEXT: kiln.all_reduce %arg1 over "dp" {cause = "b", kiln.bucket = 0 : i64}
// EDP-LABEL: func.func @groups
// EDP: kiln.all_reduce %arg3 over "edp,ep" {cause = "d", kiln.bucket = 0 : i64}
// EDP-NEXT: kiln.all_reduce %arg4 over "edp" {cause = "e", kiln.bucket = 0 : i64}
func.func @groups(%a: tensor<4xf32>, %b: tensor<4xf32>, %c: tensor<4xf32>, %d: tensor<4xf32>,
                  %e: tensor<4xf32>) -> (tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>) {
  %0 = kiln.all_reduce %a over "dp,tp" {cause = "a"} : tensor<4xf32>
  %1 = kiln.all_reduce %b over "dp" {cause = "b"} : tensor<4xf32>
  %2 = kiln.all_reduce %c over "tp,ep" {cause = "c"} : tensor<4xf32>
  %3 = kiln.all_reduce %d over "edp,ep" {cause = "d"} : tensor<4xf32>
  %4 = kiln.all_reduce %e over "edp" {cause = "e"} : tensor<4xf32>
  return %0, %1, %2, %3, %4 : tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>, tensor<4xf32>
}
