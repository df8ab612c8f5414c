// kiln-plan-buffers with record-live: every op's kiln.live is the
// temporary bytes live while it runs (its results included), and kiln.peak
// names the op at the peak and each value live there as [defining op,
// result, bytes, last op keeping it alive] (op indices in program order;
// the return's index means "a result of the function").
// RUN: kiln-opt %s -kiln-plan-buffers="alignment=256 workspace=1024 record-live=true" | FileCheck %s
// RUN: kiln-opt %s -kiln-plan-buffers="alignment=256 workspace=1024" | FileCheck %s --check-prefix=OFF

// %a (256 B) lives to op 3, %b (1 KiB) to op 2, %c (256 B) to op 3, %d is
// the result. The peak (1.5 KiB) is at op 2: %a, %b and %c.
// CHECK-LABEL: func.func @f
// CHECK-SAME: kiln.peak = {op = 2 : i64, residents = [array<i64: 0, 0, 256, 3>, array<i64: 1, 0, 1024, 2>, array<i64: 2, 0, 256, 3>]}
// CHECK: kiln.exp {{.*}}kiln.live = 256 : i64
// CHECK: kiln.broadcast_in_dim {{.*}}kiln.live = 1280 : i64
// CHECK: kiln.reduce_sum {{.*}}kiln.live = 1536 : i64
// CHECK: kiln.add {{.*}}kiln.live = 768 : i64
// OFF-NOT: kiln.live
// OFF-NOT: kiln.peak
func.func @f(%x: tensor<64xf32> {kiln.input = "x"}) -> (tensor<64xf32> {kiln.output = "y"}) {
  %a = kiln.exp %x : tensor<64xf32>
  %b = kiln.broadcast_in_dim %a, dims = [1] : tensor<64xf32> -> tensor<4x64xf32>
  %c = kiln.reduce_sum %b, dims = [0] : tensor<4x64xf32> -> tensor<64xf32>
  %d = kiln.add %a, %c : tensor<64xf32>
  return %d : tensor<64xf32>
}
