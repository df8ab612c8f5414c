// kiln-fuse's embedding gradients: the add of a tied table's two
// gradients becomes the embedding gradient's init (a bf16 head gradient's
// widening cast with it); what must stay apart stays apart.
// RUN: kiln-opt %s -split-input-file -kiln-fuse | FileCheck %s
// RUN: kiln-opt %s -split-input-file -kiln-fuse=embedding-init=false | FileCheck %s --check-prefix=OFF

// The head's bf16 product widened and added to the embedding rows: one
// embedding_grad at the add, reading the product as its init.
// CHECK-LABEL: func.func @tied
// CHECK: %[[H:.+]] = kiln.matmul %{{.+}}, %{{.+}} transpose_a : tensor<8x10xbf16>, tensor<8x6xbf16> -> tensor<10x6xbf16>
// CHECK-NEXT: %[[G:.+]] = kiln.embedding_grad %{{.+}}, %{{.+}} init %[[H]] : tensor<8xi32>, tensor<8x6xf32>, tensor<10x6xbf16> -> tensor<10x6xf32>
// CHECK-NEXT: return %[[G]]
// OFF-LABEL: func.func @tied
// OFF: kiln.embedding_grad %{{[^ ]+}}, %{{[^ ]+}} :
// OFF: kiln.add
func.func @tied(%ids: tensor<8xi32>, %dy: tensor<8x6xf32>, %a: tensor<8x10xbf16>, %b: tensor<8x6xbf16>)
    -> tensor<10x6xf32> {
  %0 = kiln.embedding_grad %ids, %dy : tensor<8xi32>, tensor<8x6xf32> -> tensor<10x6xf32>
  %1 = kiln.matmul %a, %b transpose_a : tensor<8x10xbf16>, tensor<8x6xbf16> -> tensor<10x6xbf16>
  %2 = kiln.cast %1 : tensor<10x6xbf16> to tensor<10x6xf32>
  %3 = kiln.add %0, %2 : tensor<10x6xf32>
  return %3 : tensor<10x6xf32>
}

// -----

// An f32 addend read again after the add stays as it is (init, copied);
// an embedding gradient read twice keeps its add.
// CHECK-LABEL: func.func @shared
// CHECK: kiln.embedding_grad %{{[^ ]+}}, %{{[^ ]+}} init %arg2 : tensor<8xi32>, tensor<8x6xf32>, tensor<10x6xf32> -> tensor<10x6xf32>
// CHECK: %[[E:.+]] = kiln.embedding_grad %{{[^ ]+}}, %{{[^ ]+}} : tensor<8xi32>, tensor<8x6xf32> -> tensor<10x6xf32>
// CHECK: kiln.fusion
// CHECK: kiln.add
func.func @shared(%ids: tensor<8xi32>, %dy: tensor<8x6xf32>, %h: tensor<10x6xf32>)
    -> (tensor<10x6xf32>, tensor<10x6xf32>, tensor<10x6xf32>, tensor<10x6xf32>) {
  %0 = kiln.embedding_grad %ids, %dy : tensor<8xi32>, tensor<8x6xf32> -> tensor<10x6xf32>
  %1 = kiln.add %h, %0 : tensor<10x6xf32>
  %2 = kiln.embedding_grad %ids, %dy : tensor<8xi32>, tensor<8x6xf32> -> tensor<10x6xf32>
  %3 = kiln.add %2, %h : tensor<10x6xf32>
  %4 = kiln.exp %3 : tensor<10x6xf32>
  return %1, %h, %2, %4 : tensor<10x6xf32>, tensor<10x6xf32>, tensor<10x6xf32>, tensor<10x6xf32>
}
