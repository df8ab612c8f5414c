// What kiln-propagate-sharding and kiln-partition refuse, each with one
// message that names the problem.
// RUN: kiln-opt %s -split-input-file -kiln-propagate-sharding -kiln-partition -verify-diagnostics

// expected-error @+1 {{kiln-propagate-sharding: the module has no kiln.mesh and no mesh option was given (e.g. mesh=dp=2)}}
module {
func.func @train_step(%x: tensor<4xf32>) -> tensor<4xf32> {
  return %x : tensor<4xf32>
}
}

// -----

module attributes {kiln.mesh = #kiln.mesh<dp = 2>} {
// expected-error @+1 {{kiln-propagate-sharding: argument #0 is split over axis 'tp', which the mesh #kiln.mesh<dp = 2> does not have}}
func.func @train_step(%x: tensor<4xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[tp]>}) -> tensor<4xf32> {
  return %x : tensor<4xf32>
}
}

// -----

module attributes {kiln.mesh = #kiln.mesh<dp = 4>} {
// expected-error @+1 {{kiln-propagate-sharding: argument #0 ('tensor<6xf32>') splits dimension 0 of size 6 over 'dp' of size 4, which does not divide it}}
func.func @train_step(%x: tensor<6xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[dp]>}) -> tensor<6xf32> {
  return %x : tensor<6xf32>
}
}

// -----

// An op with no rule (a fusion: partitioning comes before fusing) that
// touches a split value.
module attributes {kiln.mesh = #kiln.mesh<dp = 2>} {
func.func @train_step(%x: tensor<4xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[dp]>}) -> tensor<4xf32> {
  // expected-error @+1 {{kiln-propagate-sharding: kiln.fusion has no sharding rule, and it reads or makes a split value}}
  %y = kiln.fusion (%x) : (tensor<4xf32>) -> tensor<4xf32> {
  ^bb0(%a: tensor<4xf32>):
    %0 = kiln.neg %a : tensor<4xf32>
    %1 = kiln.exp %0 : tensor<4xf32>
    kiln.yield %1 : tensor<4xf32>
  }
  return %y : tensor<4xf32>
}
}

// -----

// expected-error @+1 {{'kiln.sharding' on argument #0 has 2 entries for 'tensor<4xf32>' of rank 1}}
func.func @bad_rank(%x: tensor<4xf32> {kiln.sharding = #kiln.sharding<[dp, _]>}) {
  return
}

// -----

// expected-error @+1 {{mesh axis 'dp' appears twice}}
module attributes {kiln.mesh = #kiln.mesh<dp = 2, dp = 2>} {
}

// -----

// One axis on two dimensions of one sharding.
module attributes {kiln.mesh = #kiln.mesh<edp = 2, ep = 2>} {
// expected-error @+1 {{mesh axis 'ep' splits two dimensions of one sharding (or one twice)}}
func.func @train_step(%x: tensor<8x4xf32> {kiln.input = "x", kiln.sharding = #kiln.sharding<[{edp, ep}, ep]>}) -> tensor<8x4xf32> {
  return %x : tensor<8x4xf32>
}
}
