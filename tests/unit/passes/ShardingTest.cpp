//===- ShardingTest.cpp - a partitioned step equals the one-device step ----===//
//
// The tiny GPT-2 training step (AdamW, clipping) in f64 is compiled once for
// one device and once partitioned over a dp x tp mesh (ZeRO 0, 1 or 3; the
// MLPs tensor-parallel); the partitioned step runs on the CPU communicator
// (one thread per rank), each rank on its rows of the batch and its parts
// of the split parameters and states. Loss, gradient norm, new parameters and moments must
// equal the one-device step's within 1e-10 relative (only the order of the
// sums differs).
//
//===----------------------------------------------------------------------===//

#include "ir/KilnAttrs.h"
#include "ir/KilnOps.h"
#include "passes/Passes.h"
#include "passes/ShardingUtils.h"
#include "runtime/Random.h"
#include "runtime/cpu/Collectives.h"
#include "runtime/cpu/CpuBackend.h"
#include "runtime/cpu/Interpreter.h"
#include "runtime/cpu/MeshCpuBackend.h"
#include "tests/unit/TestSupport.h"
#include "train/Compile.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Pass/PassManager.h"
#include "gtest/gtest.h"

#include <cmath>

using namespace mlir;
using namespace kiln;

namespace {

constexpr const char *kTiny = R"(
[model]
kind = "gpt2"
n_layer = 2
n_head = 4
n_embd = 16
vocab_size = 61
vocab_multiple = 8
block_size = 16
[train]
batch_size = 4
seq_len = 8
[compile]
fuse = false
)";

/// A tiny Llama: grouped-query attention (4 query heads reading 2
/// key/value heads), SwiGLU, untied head.
constexpr const char *kTinyLlama = R"(
[model]
kind = "llama"
n_layer = 2
n_head = 4
n_kv_head = 2
n_embd = 16
intermediate_size = 24
vocab_size = 61
vocab_multiple = 8
block_size = 16
[train]
batch_size = 4
seq_len = 8
[compile]
fuse = false
)";

/// The tiny GPT-2 with a mixture of 4 experts per block, top-2, routed in
/// 4 groups of 8 tokens with 4 slots per expert and group: some choices
/// are dropped, so each rank must fill its groups' slots as one device
/// does.
const std::string kTinyMoE = std::string(kTiny) + R"(
[moe]
experts = 4
top_k = 2
capacity_factor = 1.0
groups = 4
)";

/// The tiny Llama with SwiGLU experts (Mixtral's shape), top-2, in 4 groups.
const std::string kTinyLlamaMoE = std::string(kTinyLlama) + R"(
[moe]
experts = 4
top_k = 2
capacity_factor = 1.0
groups = 4
)";

/// Arguments for the step: parameters N(0, 0.1), moments zero, tokens and
/// targets in [0, 61), lr and step.
std::vector<cpu::HostTensor> stepArguments(func::FuncOp step) {
  Rng rng(7);
  std::vector<cpu::HostTensor> args;
  for (BlockArgument arg : step.getArguments()) {
    auto [dtype, shape] = *cpu::hostTypeOf(arg.getType());
    cpu::HostTensor t(dtype, shape);
    auto input = step.getArgAttrOfType<StringAttr>(arg.getArgNumber(), KilnDialect::kInputAttrName);
    bool param = step.getArgAttr(arg.getArgNumber(), KilnDialect::kParamAttrName) != nullptr;
    for (int64_t i = 0; i < t.numel(); ++i) {
      if (input && (input.getValue() == "tokens" || input.getValue() == "targets"))
        t.set(i, static_cast<double>(rng.next() % 61));
      else if (input && input.getValue() == "lr")
        t.set(i, 1e-2);
      else if (input && input.getValue() == "step")
        t.set(i, 1);
      else if (param)
        t.set(i, 0.1 * rng.normal());
    }
    args.push_back(std::move(t));
  }
  return args;
}

/// Rank `rank`'s part of `t` when split as `s` on `mesh` (whole: `t`).
cpu::HostTensor partFor(const cpu::HostTensor &t, ShardingAttr s, int64_t rank,
                        const cpu::ThreadMesh &mesh) {
  cpu::HostTensor part = t;
  if (s)
    for (auto [d, axes] : llvm::enumerate(s.getAllAxes())) {
      // Chunk i·|b| + j of [a, b] on the rank at (i, j).
      int64_t chunk = 0, parts = 1;
      for (StringAttr a : axes) {
        chunk = chunk * mesh.axisSize(a.getValue()) + mesh.coordinate(rank, a.getValue());
        parts *= mesh.axisSize(a.getValue());
      }
      if (parts > 1)
        part = cpu::partOf(part, static_cast<int64_t>(d), chunk, parts);
    }
  return part;
}

/// A mesh and how the step uses it.
struct MeshCase {
  int64_t dp = 1, tp = 1, zero = 0;
  /// Attention as kiln.attention rather than primitives.
  bool fusedAttention = false;
  bool sequenceParallel = false;
  const char *toml = kTiny;
  /// kiln-recompute's policy on the partitioned step ("": not run).
  const char *recompute = "";
  /// parallel.ep: a mixture of experts' experts split over dp (ep = dp)
  /// or over ep within edp × ep (ep < dp).
  int64_t ep = 1;
};

/// The tiny model's AdamW step partitioned over dp × tp, run on a
/// ThreadMesh, equals the one-device step on every output.
void expectPartitionedMatches(const MeshCase &m) {
  const int64_t dp = m.dp, tp = m.tp, zero = m.zero;
  const bool fusedAttention = m.fusedAttention;
  auto ctx = test::makeContext();
  auto config = RunConfig::parse(m.toml, "tiny");
  ASSERT_TRUE(static_cast<bool>(config)) << llvm::toString(config.takeError());
  config->compile.fuse_attention = fusedAttention ? "always" : "never";
  // The model as the mesh builds it (the batch's and the experts' axes);
  // the training pipeline runs for one device, the passes below shard it.
  RunConfig meshConfig = *config;
  meshConfig.parallel.dp = dp;
  meshConfig.parallel.tp = tp;
  meshConfig.parallel.ep = m.ep;
  auto module = tooling::buildForwardModule(*ctx, meshConfig, Float64Type::get(ctx.get()));
  ASSERT_TRUE(static_cast<bool>(module)) << llvm::toString(module.takeError());
  auto dumps = tooling::runTrainingPipeline(**module, *config, {});
  ASSERT_TRUE(static_cast<bool>(dumps)) << llvm::toString(dumps.takeError());

  OwningOpRef<ModuleOp> sharded = (*module)->clone();
  PassManager pm(ctx.get());
  PropagateShardingPassOptions propagate;
  propagate.mesh = meshConfig.parallel.meshText();
  propagate.zero = zero;
  propagate.sequenceParallel = m.sequenceParallel;
  pm.addPass(createPropagateShardingPass(propagate));
  pm.addPass(createPartitionPass());
  ASSERT_TRUE(succeeded(pm.run(*sharded)));
  int64_t gathersBefore = 0;
  sharded->lookupSymbol<func::FuncOp>("train_step").walk([&](AllGatherOp) { ++gathersBefore; });
  if (*m.recompute) {
    PassManager recompute(ctx.get());
    RecomputePassOptions options;
    options.policy = m.recompute;
    recompute.addPass(createRecomputePass(options));
    ASSERT_TRUE(succeeded(recompute.run(*sharded)));
    auto rc = sharded->lookupSymbol<func::FuncOp>("train_step")
                  ->getAttrOfType<DictionaryAttr>(KilnDialect::kRecomputeAttrName);
    ASSERT_TRUE(rc);
    EXPECT_GT(rc.getAs<IntegerAttr>("ops").getInt(), 0) << "nothing recomputed";
  }

  auto single = (*module)->lookupSymbol<func::FuncOp>("train_step");
  auto step = sharded->lookupSymbol<func::FuncOp>("train_step");
  int64_t allReduces = 0, reduceScatters = 0, allGathers = 0, allToAlls = 0;
  step.walk([&](Operation *op) {
    allReduces += isa<AllReduceOp>(op);
    reduceScatters += isa<ReduceScatterOp>(op);
    allGathers += isa<AllGatherOp>(op);
    allToAlls += isa<AllToAllOp>(op);
  });
  if (config->model.moe.enabled()) {
    // Each rank routes its own groups; with expert parallelism the tokens
    // travel to their experts and back (forward: 2 a block; backward: the
    // outputs' gradients to the experts, and the slots' gradients back to
    // their tokens' ranks), the experts' weights are never gathered, no
    // rank sums a table of every group's tokens, and each rank's matmuls
    // see its experts only. A recomputed block exchanges its tokens again.
    if (m.ep > 1) {
      if (m.ep < dp) {
        // The tokens travel within their expert group only; each expert's
        // gradient is summed over the ranks holding it (edp), never over ep.
        step.walk([&](AllToAllOp a) { EXPECT_EQ(a.getAxis(), "ep"); });
        step.walk([&](AllReduceOp r) {
          SmallVector<StringRef, 2> group = groupAxes(r.getAxis());
          if (r.getCause().contains("gradient of") && r.getCause().contains(".experts.")) {
            EXPECT_FALSE(llvm::is_contained(group, "ep"))
                << r.getAxis().str() << ": " << r.getCause().str();
          }
        });
        // A sum over every dp rank (a dense gradient's) is one collective
        // over the group of both axes, never one over edp of one over ep
        // (an expert's gradient may be scattered over ep into one
        // dimension and over edp into another: two collectives).
        int overBoth = 0;
        auto dimOf = [](Operation *op) {
          auto scatter = dyn_cast<ReduceScatterOp>(op);
          return scatter ? static_cast<int64_t>(scatter.getDim()) : int64_t{-1};
        };
        step.walk([&](Operation *op) {
          if (!isa<AllReduceOp, ReduceScatterOp>(op))
            return;
          StringRef axis = op->getAttrOfType<StringAttr>("axis").getValue();
          overBoth += axis == "edp,ep";
          Operation *before = op->getOperand(0).getDefiningOp();
          if (!before || !isa<AllReduceOp, ReduceScatterOp>(before) ||
              (before->getName() == op->getName() && dimOf(before) != dimOf(op)))
            return;
          if (isa<ReduceScatterOp>(before) && isa<AllReduceOp>(op))
            return;
          StringRef first = before->getAttrOfType<StringAttr>("axis").getValue();
          EXPECT_FALSE((first == "edp" && axis == "ep") || (first == "ep" && axis == "edp"))
              << "a sum over " << first.str() << " then over " << axis.str() << ": "
              << op->getAttrOfType<StringAttr>("cause").getValue().str();
        });
        EXPECT_GT(overBoth, 0);
      }
      if (*m.recompute)
        EXPECT_GE(allToAlls, 4 * config->model.n_layer);
      else
        EXPECT_EQ(allToAlls, 4 * config->model.n_layer);
      step.walk([&](EmbeddingGradOp e) {
        auto t = cast<RankedTensorType>(e.getType());
        if (t.getRank() == 3) { // batched by group: the MoE's (wte's is a matrix)
          EXPECT_EQ(t.getDimSize(0), config->model.moe.groups / dp)
              << "a scatter-add of slot gradients into every group's tokens";
        }
      });
      step.walk([&](AllGatherOp g) {
        auto arg = dyn_cast<BlockArgument>(g.getOperand());
        auto name =
            arg ? step.getArgAttrOfType<StringAttr>(arg.getArgNumber(), KilnDialect::kParamAttrName)
                : StringAttr();
        // Never over the axis that splits the experts; under ZeRO 3 with
        // ep < dp their storage split over edp is gathered (ZeRO's gather
        // before use), and only that.
        if (name && name.getValue().contains("experts")) {
          EXPECT_TRUE(zero >= 3 && m.ep < dp && g.getAxis() == "edp")
              << name.getValue().str() << " gathered over " << g.getAxis().str();
        }
      });
      if (zero >= 3 && m.ep < dp) {
        // Each expert's weights stored split over ep and over edp.
        for (BlockArgument arg : step.getArguments()) {
          auto name =
              step.getArgAttrOfType<StringAttr>(arg.getArgNumber(), KilnDialect::kParamAttrName);
          if (!name || !name.getValue().contains("experts.fc.w"))
            continue;
          auto t = cast<RankedTensorType>(arg.getType());
          auto global = cast<RankedTensorType>(single.getArgument(arg.getArgNumber()).getType());
          EXPECT_EQ(t.getNumElements() * dp * tp, global.getNumElements()) << name.getValue().str();
        }
      }
      // The experts' batched matmuls (both operands [E, …]; the dense
      // projections' weights are matrices, attention's operands rank 4).
      int64_t expertMatmuls = 0;
      step.walk([&](MatmulOp mm) {
        auto rank = [](Value v) { return cast<RankedTensorType>(v.getType()).getRank(); };
        if (rank(mm.getLhs()) != 3 || rank(mm.getRhs()) != 3)
          return;
        ++expertMatmuls;
        EXPECT_EQ(cast<RankedTensorType>(mm.getType()).getDimSize(0),
                  config->model.moe.experts / m.ep);
      });
      EXPECT_GE(expertMatmuls, 4 * config->model.n_layer);
    } else {
      EXPECT_EQ(allToAlls, 0);
    }
    step.walk([&](MoeRouteOp r) {
      EXPECT_EQ(r.numGroups(), config->model.moe.groups / dp) << "each rank routes its groups";
    });
    if (tp > 1) {
      // Each expert's hidden layer split over tp: the first matmul makes
      // [E / ep, slots, hidden / tp].
      const int64_t hidden = config->model.kind == "llama" ? config->model.intermediate_size
                                                           : 4 * config->model.n_embd;
      int64_t split = 0;
      step.walk([&](MatmulOp mm) {
        auto t = cast<RankedTensorType>(mm.getType());
        auto lhs = cast<RankedTensorType>(mm.getLhs().getType());
        if (t.getRank() == 3 && lhs.getRank() == 3 && !mm.getTransposeA() && !mm.getTransposeB() &&
            t.getDimSize(0) == config->model.moe.experts / m.ep)
          split += t.getDimSize(2) == hidden / tp;
      });
      EXPECT_GE(split, config->model.n_layer) << "no expert's hidden layer is split over tp";
    }
  }
  // Tensor parallelism splits attention by heads: each rank's scores (or
  // kiln.attention's q, k, v and their gradients) hold n_head / tp heads.
  int64_t attentions = 0, heads = config->model.n_head / tp;
  step.walk([&](Operation *op) {
    std::optional<int64_t> h;
    if (auto a = dyn_cast<AttentionOp>(op))
      h = attentionDims(a).h; // [B, H, T, D], or [B, T, H, D] (GPT-2's, layout bthd)
    else if (auto g = dyn_cast<AttentionGradOp>(op))
      h = attentionDims(g).h;
    else if (auto p = dyn_cast<AttentionQkvOp>(op))
      h = attentionDims(p.getQkv()).h; // GPT-2's packed q|k|v
    else if (auto pg = dyn_cast<AttentionQkvGradOp>(op))
      h = attentionDims(pg.getQkv()).h;
    else if (isa<SoftmaxOp>(op) && cast<RankedTensorType>(op->getOperand(0).getType()).getRank() == 4)
      h = cast<RankedTensorType>(op->getOperand(0).getType()).getDimSize(1); // scores [B, H, T, T]
    if (!h)
      return;
    ++attentions;
    EXPECT_EQ(*h, heads) << op->getName().getStringRef().str();
  });
  // (Recomputation adds copies of forward ops: at least as many then.)
  const bool copies = *m.recompute;
  if (copies)
    EXPECT_GE(attentions, config->model.n_layer * (fusedAttention ? 2 : 1));
  else
    EXPECT_EQ(attentions, config->model.n_layer * (fusedAttention ? 2 : 1));
  if (m.sequenceParallel) {
    // Megatron's sequence parallelism: the norms see T / tp positions a
    // rank; the activations are gathered over tp before each column-parallel
    // projection and reduce-scattered after each row-parallel one.
    int64_t norms = 0, gathers = 0, scatters = 0, t = config->seqLen() / tp;
    step.walk([&](Operation *op) {
      if (isa<LayerNormOp, RmsNormOp>(op)) {
        ++norms;
        EXPECT_EQ(cast<RankedTensorType>(op->getOperand(0).getType()).getDimSize(1), t);
      }
      if (auto g = dyn_cast<AllGatherOp>(op); g && g.getAxis() == "tp")
        ++gathers;
      if (auto r = dyn_cast<ReduceScatterOp>(op); r && r.getAxis() == "tp")
        ++scatters;
    });
    if (copies)
      EXPECT_GE(norms, 2 * config->model.n_layer + 1);
    else
      EXPECT_EQ(norms, 2 * config->model.n_layer + 1);
    EXPECT_GE(gathers, 2 * config->model.n_layer);
    EXPECT_GE(scatters, 2 * config->model.n_layer);
  }
  if (llvm::StringRef(m.recompute) == "full" && m.sequenceParallel) {
    // Each block's gathered activations are gathered again in its backward
    // (Megatron-SP's re-gather), not kept.
    EXPECT_GE(allGathers, gathersBefore + 2 * config->model.n_layer);
  }
  if (zero == 0) {
    EXPECT_GT(allReduces, 0) << "a partitioned step sums partial products or gradients";
  } else {
    // Split optimizer states take their gradients reduce-scattered.
    EXPECT_GT(reduceScatters, 0);
    EXPECT_GT(allGathers, 0) << "the split updates (or parameters) are gathered";
  }

  std::vector<cpu::HostTensor> args = stepArguments(single);
  auto reference = cpu::Interpreter::create(single);
  ASSERT_TRUE(static_cast<bool>(reference));
  auto expected = (*reference)->run(args);
  ASSERT_TRUE(static_cast<bool>(expected)) << llvm::toString(expected.takeError());

  MeshAxes meshAxes;
  MeshAttr meshAttr = getMesh(*sharded);
  for (auto [name, size] : llvm::zip_equal(meshAttr.getNames(), meshAttr.getSizes()))
    meshAxes.push_back({name.getValue().str(), size});
  cpu::ThreadMesh mesh(meshAxes);
  std::vector<std::vector<cpu::HostTensor>> outputs(mesh.numRanks());
  llvm::Error err = mesh.run([&](int64_t rank, cpu::Collectives &collectives) -> llvm::Error {
    auto interp = cpu::Interpreter::create(step);
    if (!interp)
      return interp.takeError();
    (*interp)->setCollectives(&collectives);
    std::vector<cpu::HostTensor> mine;
    for (auto [i, arg] : llvm::enumerate(args))
      mine.push_back(partFor(arg, step.getArgAttrOfType<ShardingAttr>(i, KilnDialect::kShardingAttrName),
                             rank, mesh));
    auto out = (*interp)->run(mine);
    if (!out)
      return out.takeError();
    outputs[rank] = std::move(*out);
    return llvm::Error::success();
  });
  ASSERT_FALSE(static_cast<bool>(err)) << llvm::toString(std::move(err));

  for (int64_t rank = 0; rank < mesh.numRanks(); ++rank) {
    ASSERT_EQ(outputs[rank].size(), expected->size());
    for (size_t i = 0; i < expected->size(); ++i) {
      cpu::HostTensor want = partFor(
          (*expected)[i], step.getResultAttrOfType<ShardingAttr>(i, KilnDialect::kShardingAttrName),
          rank, mesh);
      ASSERT_EQ(want.shape(), outputs[rank][i].shape()) << "result #" << i;
      EXPECT_LE(test::worstRelative(want, outputs[rank][i]), 1e-10) << "rank " << rank << ", result #" << i;
    }
  }
}

TEST(Sharding, DataParallelTwoRanksEqualsOneDevice) { expectPartitionedMatches({.dp = 2}); }
TEST(Sharding, DataParallelFourRanksEqualsOneDevice) { expectPartitionedMatches({.dp = 4}); }
TEST(Sharding, ZeroOneSplitsStatesAndEqualsOneDevice) {
  expectPartitionedMatches({.dp = 2, .zero = 1});
}
TEST(Sharding, ZeroThreeSplitsParamsAndEqualsOneDevice) {
  expectPartitionedMatches({.dp = 2, .zero = 3});
}
TEST(Sharding, ZeroThreeOnFourRanksEqualsOneDevice) {
  expectPartitionedMatches({.dp = 4, .zero = 3});
}
TEST(Sharding, TensorParallelTwoRanksEqualsOneDevice) { expectPartitionedMatches({.tp = 2}); }
TEST(Sharding, TensorParallelFourRanksEqualsOneDevice) { expectPartitionedMatches({.tp = 4}); }
TEST(Sharding, TensorParallelFusedAttentionEqualsOneDevice) {
  expectPartitionedMatches({.tp = 2, .fusedAttention = true});
  expectPartitionedMatches({.tp = 4, .fusedAttention = true});
}
TEST(Sharding, DataTimesTensorParallelEqualsOneDevice) { expectPartitionedMatches({.dp = 2, .tp = 2}); }
// Grouped-query attention split by key/value heads (each rank's two query
// heads read its one key/value head), SwiGLU split like Megatron's MLP.
TEST(Sharding, LlamaTensorParallelEqualsOneDevice) {
  expectPartitionedMatches({.tp = 2, .toml = kTinyLlama});
  expectPartitionedMatches({.tp = 2, .fusedAttention = true, .toml = kTinyLlama});
  expectPartitionedMatches({.dp = 2, .tp = 2, .zero = 1, .fusedAttention = true, .toml = kTinyLlama});
}
TEST(Sharding, DataTimesTensorParallelZeroThreeFusedAttentionEqualsOneDevice) {
  expectPartitionedMatches({.dp = 2, .tp = 2, .zero = 3, .fusedAttention = true});
}
TEST(Sharding, DataTimesTensorParallelWithZeroThreeEqualsOneDevice) {
  expectPartitionedMatches({.dp = 2, .tp = 2, .zero = 3});
}
TEST(Sharding, SequenceParallelEqualsOneDevice) {
  expectPartitionedMatches({.tp = 2, .sequenceParallel = true});
  expectPartitionedMatches({.tp = 4, .fusedAttention = true, .sequenceParallel = true});
  expectPartitionedMatches({.dp = 2, .tp = 2, .zero = 3, .sequenceParallel = true});
  expectPartitionedMatches({.tp = 2, .fusedAttention = true, .sequenceParallel = true,
                            .toml = kTinyLlama});
}

// kiln-recompute on the per-rank program: the recomputed collectives run
// on every rank in the same order, and the step still equals one device's.
TEST(Sharding, RecomputedPartitionedStepEqualsOneDevice) {
  expectPartitionedMatches({.tp = 2, .sequenceParallel = true, .recompute = "full"});
  expectPartitionedMatches({.dp = 2, .tp = 2, .zero = 3, .fusedAttention = true,
                            .recompute = "selective"});
  expectPartitionedMatches({.dp = 2, .zero = 3, .recompute = "full"});
  // dp x tp with sequence parallelism: the loss is summed over both axes
  // after the backward, which must not hide the backward.
  expectPartitionedMatches({.dp = 2, .tp = 2, .sequenceParallel = true, .recompute = "full"});
}

// A mixture of experts on a mesh: each data-parallel rank routes its own
// groups of tokens (experts whole), or with expert parallelism holds its
// share of the experts and exchanges the tokens by all_to_all; ZeRO splits
// what expert parallelism leaves whole.
TEST(Sharding, MixtureOfExpertsDataParallelEqualsOneDevice) {
  expectPartitionedMatches({.dp = 2, .toml = kTinyMoE.c_str()});
  expectPartitionedMatches({.dp = 4, .zero = 1, .toml = kTinyMoE.c_str()});
}
// Tensor parallelism splits each expert's hidden dimension over tp, as
// the dense MLP's (column-parallel first matmul, row-parallel second):
// alone, with data parallelism, and with the experts split over dp too.
TEST(Sharding, MixtureOfExpertsTensorParallelEqualsOneDevice) {
  expectPartitionedMatches({.tp = 2, .toml = kTinyMoE.c_str()});
  expectPartitionedMatches({.dp = 2, .tp = 2, .toml = kTinyMoE.c_str()});
  expectPartitionedMatches({.dp = 2, .tp = 2, .zero = 3, .toml = kTinyMoE.c_str(), .ep = 2});
  expectPartitionedMatches({.tp = 2, .toml = kTinyLlamaMoE.c_str()});
}

// With sequence parallelism the experts' input is gathered over the
// sequence before the router (each tp rank routes every token of its dp
// rank) and their output summed back to the sequence split, as the dense
// MLP's.
TEST(Sharding, MixtureOfExpertsSequenceParallelEqualsOneDevice) {
  expectPartitionedMatches({.tp = 2, .sequenceParallel = true, .toml = kTinyMoE.c_str()});
  expectPartitionedMatches({.dp = 2, .tp = 2, .sequenceParallel = true, .toml = kTinyMoE.c_str()});
  expectPartitionedMatches(
      {.dp = 2, .tp = 2, .zero = 3, .sequenceParallel = true, .toml = kTinyMoE.c_str(), .ep = 2});
  expectPartitionedMatches({.tp = 2, .sequenceParallel = true, .toml = kTinyLlamaMoE.c_str()});
}

TEST(Sharding, ExpertParallelEqualsOneDevice) {
  expectPartitionedMatches({.dp = 2, .toml = kTinyMoE.c_str(), .ep = 2});
  expectPartitionedMatches({.dp = 4, .toml = kTinyMoE.c_str(), .ep = 4});
  expectPartitionedMatches({.dp = 2, .zero = 3, .toml = kTinyMoE.c_str(), .ep = 2});
  expectPartitionedMatches({.dp = 2, .zero = 1, .toml = kTinyMoE.c_str(), .recompute = "full", .ep = 2});
  expectPartitionedMatches({.dp = 2, .fusedAttention = true, .toml = kTinyLlamaMoE.c_str(), .ep = 2});
}

// Experts split over part of the data-parallel ranks (ep < dp): the dp
// ranks as an edp × ep grid, the batch split over both, each expert held by
// edp ranks (its gradient summed over edp), tokens exchanged over ep only.
TEST(Sharding, ExpertGroupsWithinDataParallelEqualOneDevice) {
  expectPartitionedMatches({.dp = 4, .toml = kTinyMoE.c_str(), .ep = 2});
  expectPartitionedMatches({.dp = 4, .zero = 1, .toml = kTinyMoE.c_str(), .ep = 2});
  expectPartitionedMatches(
      {.dp = 4, .zero = 3, .toml = kTinyMoE.c_str(), .recompute = "full", .ep = 2});
  expectPartitionedMatches({.dp = 4, .tp = 2, .zero = 3, .toml = kTinyMoE.c_str(), .ep = 2});
  expectPartitionedMatches(
      {.dp = 4, .fusedAttention = true, .toml = kTinyLlamaMoE.c_str(), .ep = 2});
}

/// `toml` trained 3 steps of 2 micro-batches in f64 on one device and on
/// the mesh `set` makes: every micro-batch's loss, the gradient norm and
/// the final parameters equal within 1e-10 (relative). Without ZeRO the
/// mesh's @accumulate_step sums nothing but scalars when `quiet` (its
/// accumulators are partial sums) and @accumulate_last_step sums them.
void expectAccumulationMatches(const std::string &toml, const std::function<void(RunConfig &)> &set,
                               bool quiet) {
  auto ctx = test::makeContext();
  auto config = RunConfig::parse(toml, "tiny");
  ASSERT_TRUE(static_cast<bool>(config)) << llvm::toString(config.takeError());
  config->train.accumulate_steps = 2;
  // Sequences of the block size: wpe's gradient is not padded (a partial
  // sum is summed before a pad, which would make it larger).
  config->train.seq_len = config->model.block_size;
  RunConfig meshConfig = *config;
  set(meshConfig);
  auto build = [&](const RunConfig &c) -> OwningOpRef<ModuleOp> {
    auto m = tooling::buildForwardModule(*ctx, c, Float64Type::get(ctx.get()));
    EXPECT_TRUE(static_cast<bool>(m)) << llvm::toString(m.takeError());
    if (!m)
      return nullptr;
    auto written = tooling::runTrainingPipeline(**m, c, {});
    EXPECT_TRUE(static_cast<bool>(written)) << llvm::toString(written.takeError());
    return written ? std::move(*m) : nullptr;
  };
  OwningOpRef<ModuleOp> one = build(*config), split = build(meshConfig);
  ASSERT_TRUE(one && split);
  auto last = split->lookupSymbol<func::FuncOp>("accumulate_last_step");
  ASSERT_TRUE(last) << "no @accumulate_last_step on the mesh";
  int64_t lastSums = 0;
  last.walk([&](AllReduceOp) { ++lastSums; });
  EXPECT_GT(lastSums, 0);
  if (quiet)
    split->lookupSymbol<func::FuncOp>("accumulate_step").walk([&](Operation *op) {
      if (isa<AllReduceOp, ReduceScatterOp, AllGatherOp, AllToAllOp>(op)) {
        EXPECT_LE(cast<RankedTensorType>(op->getResult(0).getType()).getNumElements(), 1)
            << "a micro-batch before the last communicates a tensor";
      }
    });

  cpu::CpuBackend single;
  cpu::MeshCpuBackend ranks;
  ASSERT_FALSE(static_cast<bool>(single.load(*one, 5)));
  llvm::Error loaded = ranks.load(*split, 5);
  ASSERT_FALSE(static_cast<bool>(loaded)) << llvm::toString(std::move(loaded));
  auto near = [](double a, double b) {
    return std::abs(a - b) <= 1e-10 * std::max(1.0, std::abs(a));
  };
  Rng rng(17);
  const int64_t B = config->train.batch_size, T = config->seqLen(), V = config->model.vocab_size;
  for (int step = 1; step <= 3; ++step) {
    for (int k = 0; k < 2; ++k) {
      TensorMap batch{{"tokens", test::randomTokens(rng, B, T, V)},
                      {"targets", test::randomTokens(rng, B, T, V)}};
      auto a = single.run("accumulate_step", batch);
      auto b = ranks.run(k == 1 ? "accumulate_last_step" : "accumulate_step", batch);
      ASSERT_TRUE(a && b) << (a ? llvm::toString(b.takeError()) : llvm::toString(a.takeError()));
      EXPECT_TRUE(near(a->at("loss").get(0), b->at("loss").get(0))) << "step " << step;
    }
    TensorMap apply{{"lr", test::scalarTensor(1e-2)}, {"step", test::scalarTensor(step)}};
    auto a = single.run("apply_step", apply);
    auto b = ranks.run("apply_step", apply);
    ASSERT_TRUE(a && b) << (a ? llvm::toString(b.takeError()) : llvm::toString(a.takeError()));
    EXPECT_TRUE(near(a->at("grad_norm").get(0), b->at("grad_norm").get(0)))
        << "step " << step << ": " << a->at("grad_norm").get(0) << " vs "
        << b->at("grad_norm").get(0);
  }
  auto pa = single.params(), pb = ranks.params();
  ASSERT_TRUE(pa && pb);
  std::map<std::string, cpu::HostTensor> whole(pb->begin(), pb->end());
  for (const auto &[name, t] : *pa) {
    ASSERT_TRUE(whole.count(name)) << name;
    const cpu::HostTensor &u = whole.at(name);
    ASSERT_EQ(t.numel(), u.numel()) << name;
    for (int64_t i = 0; i < t.numel(); ++i)
      if (!near(t.get(i), u.get(i))) {
        ADD_FAILURE() << name << "[" << i << "]: " << t.get(i) << " vs " << u.get(i);
        break;
      }
  }
}

// Gradient accumulation on data-parallel ranks without ZeRO (DDP's
// no_sync): the accumulators hold each rank's partial sums and the last
// micro-batch's function sums them, dense, tensor-parallel, and with
// experts split over part of the dp ranks (their second bias's gradient
// comes summed over edp and is kept on one rank as a partial sum).
TEST(Sharding, AccumulationSumsOnceOverDataParallelRanks) {
  expectAccumulationMatches(
      kTiny, [](RunConfig &c) { c.parallel.dp = 2; }, true);
  expectAccumulationMatches(
      kTiny,
      [](RunConfig &c) {
        c.parallel.dp = 2;
        c.parallel.tp = 2;
      },
      false);
  expectAccumulationMatches(
      kTinyMoE,
      [](RunConfig &c) {
        c.parallel.dp = 4;
        c.parallel.ep = 2;
      },
      false);
}

TEST(Sharding, RankFailureEndsEveryRankWithItsName) {
  // Rank 1 fails before its first collective; rank 0 waits in one and must
  // be woken with an error, not hang.
  cpu::ThreadMesh mesh({{"dp", 2}});
  llvm::Error err = mesh.run([&](int64_t rank, cpu::Collectives &c) -> llvm::Error {
    if (rank == 1)
      return llvm::createStringError(llvm::inconvertibleErrorCode(), "out of data");
    cpu::HostTensor x(cpu::DType::F64, {2});
    auto r = c.allReduce(x, "dp");
    return r ? llvm::Error::success() : r.takeError();
  });
  ASSERT_TRUE(static_cast<bool>(err));
  EXPECT_EQ(llvm::toString(std::move(err)), "rank 1: out of data");
}

TEST(Sharding, AllReduceAndAllGatherFollowTheMeshGroups) {
  // dp=2, tp=2: ranks 0,1 are a tp group, 0,2 a dp group.
  cpu::ThreadMesh mesh({{"dp", 2}, {"tp", 2}});
  std::vector<double> sums(4), gathered(8);
  llvm::Error err = mesh.run([&](int64_t rank, cpu::Collectives &c) -> llvm::Error {
    cpu::HostTensor x(cpu::DType::F64, {1});
    x.set(0, std::pow(10.0, static_cast<double>(rank)));
    auto s = c.allReduce(x, "tp");
    if (!s)
      return s.takeError();
    sums[rank] = s->get(0);
    auto g = c.allGather(x, "dp", 0);
    if (!g)
      return g.takeError();
    gathered[2 * rank] = g->get(0);
    gathered[2 * rank + 1] = g->get(1);
    return llvm::Error::success();
  });
  ASSERT_FALSE(static_cast<bool>(err)) << llvm::toString(std::move(err));
  EXPECT_EQ(sums, (std::vector<double>{11, 11, 1100, 1100}));
  EXPECT_EQ(gathered, (std::vector<double>{1, 100, 10, 1000, 1, 100, 10, 1000}));
}

} // namespace
