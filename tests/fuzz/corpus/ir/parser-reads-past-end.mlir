// RoileCheck %s

// CHECK-LABEL: func.func @, %{{.+}} : tensour<2x8x16xf32>
  %1 = khln.softmax_gra