// kiln-training-pipeline passes each configurable pass its own options
// (Passes.td declares them once).
// RUN: kiln-opt %s --pass-pipeline='builtin.module(kiln-training-pipeline)' | FileCheck %s --check-prefix=DEFAULT
// RUN: kiln-opt %s --pass-pipeline='builtin.module(kiln-training-pipeline{attach-optimizer={accumulate-steps=2 max-grad-norm=0}})' \
// RUN:   | FileCheck %s --check-prefix=ACC
// RUN: kiln-opt %s --pass-pipeline='builtin.module(kiln-training-pipeline{optimizer=false assign-precision={policy=bf16-mixed}})' \
// RUN:   | FileCheck %s --check-prefix=GRADS
// RUN: kiln-opt %s --pass-pipeline='builtin.module(kiln-training-pipeline{optimizer=false gemm-epilogues=false fold-casts=false assign-precision={policy=bf16-mixed}})' \
// RUN:   | FileCheck %s --check-prefix=NOEPI
// RUN: not kiln-opt %s --pass-pipeline='builtin.module(kiln-training-pipeline{attach-optimizer={beta3=1}})' 2>&1 \
// RUN:   | FileCheck %s --check-prefix=BAD

func.func @forward(%w: tensor<4x4xf32> {kiln.param = "w", kiln.role = "weight"}, %x: tensor<2x4xf32> {kiln.input = "x"}) -> tensor<f32> {
  %y = kiln.matmul %x, %w : tensor<2x4xf32>, tensor<4x4xf32> -> tensor<2x4xf32>
  %l = kiln.reduce_sum %y, dims = [0, 1] : tensor<2x4xf32> -> tensor<f32>
  return %l : tensor<f32>
}

// DEFAULT-LABEL: func.func @train_step
// DEFAULT: kiln.global_norm
// DEFAULT: kiln.adamw_update

// ACC-LABEL: func.func @accumulate_step
// ACC-LABEL: func.func @apply_step
// ACC: kiln.adamw_update

// The bf16 product's widening cast (the reduction reads f32) folds into
// the GEMM, which writes f32; with fold-casts=false it stays, in the
// reduction's fusion.
// GRADS-LABEL: func.func @train_step
// GRADS: kiln.matmul {{.*}} : tensor<2x4xbf16>, tensor<4x4xbf16> -> tensor<2x4xf32>
// GRADS-NOT: kiln.adamw_update

// NOEPI-LABEL: func.func @train_step
// NOEPI: kiln.matmul {{.*}} : tensor<2x4xbf16>, tensor<4x4xbf16> -> tensor<2x4xbf16>
// NOEPI-NEXT: kiln.fusion
// NOEPI: kiln.cast {{.*}} to tensor<2x4xf32>
// NOEPI-NEXT: kiln.reduce_sum

// BAD: no such option beta3
