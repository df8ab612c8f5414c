//===- SocketGroupTest.cpp - rank processes' communicator over TCP ---------===//
//
// The ranks are threads here, each with its own SocketGroup and its own TCP
// connection, so the wire protocol, rank 0's combining and every failure
// path run as between processes. The results must equal ThreadMesh's bit
// for bit (both add in rank order) and a sum computed here in f64.
//
//===----------------------------------------------------------------------===//

#include "runtime/cpu/Collectives.h"
#include "runtime/dist/SocketGroup.h"

#include "tests/unit/TestSupport.h"

#include "gtest/gtest.h"

#include <atomic>
#include <functional>
#include <thread>


using namespace kiln;
using cpu::DType;
using cpu::HostTensor;

namespace {

/// Runs `body(rank, group)` on `size` threads, each connected as one rank;
/// returns each rank's error message ("" for success).
std::vector<std::string> runRanks(int64_t size, double timeout, const MeshAxes &mesh,
                                  const std::function<llvm::Error(int64_t, dist::SocketGroup &)> &body) {
  int port = test::freePort();
  std::vector<std::string> errors(size);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < size; ++r)
    threads.emplace_back([&, r] {
      dist::GroupOptions options{r, size, "127.0.0.1", port, timeout, ""};
      auto group = dist::SocketGroup::connect(options);
      if (!group) {
        errors[r] = llvm::toString(group.takeError());
        return;
      }
      (*group)->setMesh(mesh);
      if (llvm::Error err = body(r, **group))
        errors[r] = llvm::toString(std::move(err));
    });
  for (std::thread &t : threads)
    t.join();
  return errors;
}

/// A deterministic tensor different on every rank, with values whose f32
/// sums round (so the order of addition shows).
HostTensor input(int64_t rank, DType dtype = DType::F32) {
  HostTensor t(dtype, {4, 6});
  for (int64_t i = 0; i < t.numel(); ++i)
    t.set(i, 1.0 / (3.0 + static_cast<double>(i)) + 0.1 * static_cast<double>(rank) * 1.0001);
  t.roundToDType();
  return t;
}

bool sameBits(const HostTensor &a, const HostTensor &b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape())
    return false;
  for (int64_t i = 0; i < a.numel(); ++i)
    if (a.get(i) != b.get(i))
      return false;
  return true;
}

const MeshAxes kMesh = {{"dp", 2}, {"tp", 2}};

} // namespace

// all_reduce, all_gather and reduce_scatter over each axis of a 2 x 2 mesh:
// equal to ThreadMesh's results bit for bit, and to an f64 sum within f32
// rounding (4e-7 relative, two additions).
TEST(SocketGroup, CollectivesEqualThreadMesh) {
  using Kind = cpu::CollectiveKind;
  struct Op {
    Kind kind;
    const char *axis;
    int64_t dim;
  };
  // The last three over the group of both axes ("dp,tp": every rank, dp
  // major, so a rank's coordinate in it is its rank).
  const Op ops[] = {{Kind::AllReduce, "dp", 0},       {Kind::AllReduce, "tp", 0},
                    {Kind::AllGather, "tp", 1},       {Kind::AllGather, "dp", 0},
                    {Kind::ReduceScatter, "dp", 0},   {Kind::ReduceScatter, "tp", 1},
                    {Kind::AllReduce, "dp,tp", 0},    {Kind::AllGather, "dp,tp", 0},
                    {Kind::ReduceScatter, "dp,tp", 0}};
  auto call = [](cpu::Collectives &c, const Op &op, const HostTensor &x) {
    switch (op.kind) {
    case Kind::AllReduce:
      return c.allReduce(x, op.axis);
    case Kind::AllGather:
      return c.allGather(x, op.axis, op.dim);
    case Kind::ReduceScatter:
      return c.reduceScatter(x, op.axis, op.dim);
    }
    return c.allReduce(x, op.axis);
  };
  const int64_t n = 4;
  std::vector<std::vector<HostTensor>> threads(n), sockets(n);
  cpu::ThreadMesh mesh(kMesh);
  ASSERT_FALSE(mesh.run([&](int64_t r, cpu::Collectives &c) -> llvm::Error {
    for (const Op &op : ops) {
      auto result = call(c, op, input(r));
      if (!result)
        return result.takeError();
      threads[r].push_back(std::move(*result));
    }
    return llvm::Error::success();
  }));
  auto errors = runRanks(n, 30, kMesh, [&](int64_t r, dist::SocketGroup &g) -> llvm::Error {
    for (const Op &op : ops) {
      auto result = call(g, op, input(r));
      if (!result)
        return result.takeError();
      sockets[r].push_back(std::move(*result));
    }
    return llvm::Error::success();
  });
  for (int64_t r = 0; r < n; ++r) {
    ASSERT_EQ(errors[r], "") << "rank " << r;
    ASSERT_EQ(sockets[r].size(), std::size(ops));
    for (size_t k = 0; k < std::size(ops); ++k)
      EXPECT_TRUE(sameBits(threads[r][k], sockets[r][k]))
          << "rank " << r << ", " << cpu::nameOf(ops[k].kind).str() << " over " << ops[k].axis;
  }
  // The dp all_reduce against f64: ranks r and r + 2 (dp is the outer axis).
  for (int64_t r = 0; r < n; ++r) {
    HostTensor a = input(meshGroup(kMesh, r, "dp")[0]), b = input(meshGroup(kMesh, r, "dp")[1]);
    double worst = 0;
    for (int64_t i = 0; i < a.numel(); ++i) {
      double exact = a.get(i) + b.get(i);
      worst = std::max(worst, std::fabs(sockets[r][0].get(i) - exact) / std::fabs(exact));
    }
    EXPECT_LE(worst, 4e-7) << "rank " << r << ": max rel err " << worst;
  }
  // Over both axes: the sum of all four ranks (f64 within 3 roundings),
  // their concatenation in rank order, and rank r's row of the sum.
  for (int64_t r = 0; r < n; ++r) {
    double worst = 0;
    for (int64_t i = 0; i < input(0).numel(); ++i) {
      double exact = 0;
      for (int64_t k = 0; k < n; ++k)
        exact += input(k).get(i);
      worst = std::max(worst, std::fabs(sockets[r][6].get(i) - exact) / std::fabs(exact));
      if (i / 6 == r)
        EXPECT_EQ(sockets[r][8].get(i % 6), sockets[r][6].get(i)) << "rank " << r << ", " << i;
    }
    EXPECT_LE(worst, 6e-7) << "rank " << r << ": max rel err " << worst;
    ASSERT_EQ(sockets[r][7].shape(), (std::vector<int64_t>{16, 6}));
    for (int64_t i = 0; i < sockets[r][7].numel(); ++i)
      ASSERT_EQ(sockets[r][7].get(i), input(i / 24).get(i % 24)) << "rank " << r << ", " << i;
    EXPECT_EQ(sockets[r][8].shape(), (std::vector<int64_t>{1, 6}));
  }
  // A reduce_scatter's part is the rank's coordinate's rows.
  EXPECT_EQ(sockets[3][4].shape(), (std::vector<int64_t>{2, 6}));
  EXPECT_EQ(sockets[3][5].shape(), (std::vector<int64_t>{4, 3}));
  EXPECT_EQ(sockets[1][2].shape(), (std::vector<int64_t>{4, 12}));
}

TEST(SocketGroup, AnyIsTrueWhenOneRankSaysSo) {
  std::vector<int> seen(3, -1);
  auto errors = runRanks(3, 30, {{"dp", 3}}, [&](int64_t r, dist::SocketGroup &g) -> llvm::Error {
    auto none = g.any(false);
    if (!none)
      return none.takeError();
    auto one = g.any(r == 2);
    if (!one)
      return one.takeError();
    seen[r] = (*none ? 1 : 0) + (*one ? 2 : 0);
    return llvm::Error::success();
  });
  for (int64_t r = 0; r < 3; ++r) {
    EXPECT_EQ(errors[r], "");
    EXPECT_EQ(seen[r], 2) << "rank " << r;
  }
}

// A rank that fails tells the others, who stop in their collective with its
// reason instead of waiting.
TEST(SocketGroup, AbortReachesEveryRank) {
  auto errors = runRanks(4, 30, kMesh, [&](int64_t r, dist::SocketGroup &g) -> llvm::Error {
    if (r == 2) {
      g.abort("the disk is full");
      return llvm::createStringError(llvm::inconvertibleErrorCode(), "gave up");
    }
    auto x = g.allReduce(input(r), "dp");
    return x ? llvm::Error::success() : x.takeError();
  });
  for (int64_t r : {0, 1, 3})
    EXPECT_EQ(errors[r], "rank 2 failed: the disk is full") << "rank " << r;
}

// A rank that ends without a word (killed) is named by the connection it
// closed, on every rank.
TEST(SocketGroup, ARankThatDiesIsNamed) {
  int port = test::freePort();
  std::vector<std::string> errors(3);
  std::vector<std::thread> threads;
  for (int64_t r = 0; r < 3; ++r)
    threads.emplace_back([&, r] {
      auto group = dist::SocketGroup::connect({r, 3, "127.0.0.1", port, 30, ""});
      if (!group) {
        errors[r] = llvm::toString(group.takeError());
        return;
      }
      (*group)->setMesh({{"dp", 3}});
      if (r == 1) {
        group->reset(); // closes its connection, as a killed process does
        return;
      }
      auto x = (*group)->allReduce(input(r), "dp");
      errors[r] = x ? "" : llvm::toString(x.takeError());
    });
  for (std::thread &t : threads)
    t.join();
  for (int64_t r : {0, 2})
    EXPECT_EQ(errors[r], "rank 1 ended (its connection closed) during all_reduce over dp "
                         "(dimension 0)")
        << "rank " << r;
}

/// Calls peerFailure until it answers (at most 20 s); "" if it never does.
std::string waitForPeerFailure(dist::SocketGroup &g) {
  for (int i = 0; i < 2000; ++i) {
    if (auto why = g.peerFailure("the test's wait"))
      return *why;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return "";
}

// What a rank waiting on NCCL asks its group: a rank that died or aborted is
// named at once, on every rank, without a collective in flight; a healthy
// peer's early contribution stays on the wire for its collective.
TEST(SocketGroup, PeerFailureNamesADeadOrAbortingRankWithoutACollective) {
  std::vector<std::string> seen(3);
  auto errors = runRanks(3, 30, {{"dp", 3}}, [&](int64_t r, dist::SocketGroup &g) -> llvm::Error {
    if (r == 0)
      for (int i = 0; i < 20; ++i) { // rank 1's contribution arrives meanwhile
        if (auto why = g.peerFailure("the test's wait"))
          return llvm::createStringError(llvm::inconvertibleErrorCode(), *why);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
    auto x = g.allReduce(input(r), "dp");
    return x ? llvm::Error::success() : x.takeError();
  });
  for (int64_t r = 0; r < 3; ++r)
    EXPECT_EQ(errors[r], "") << "rank " << r;

  for (bool killed : {true, false}) {
    int port = test::freePort();
    std::vector<std::thread> threads;
    for (int64_t r = 0; r < 3; ++r)
      threads.emplace_back([&, r] {
        auto group = dist::SocketGroup::connect({r, 3, "127.0.0.1", port, 30, ""});
        if (!group) {
          seen[r] = llvm::toString(group.takeError());
          return;
        }
        if (r == 1) {
          if (killed)
            group->reset(); // closes its connection, as a killed process does
          else
            (*group)->abort("the disk is full");
          return;
        }
        seen[r] = waitForPeerFailure(**group);
      });
    for (std::thread &t : threads)
      t.join();
    std::string expected = killed ? "rank 1 ended (its connection closed) during the test's wait"
                                  : "rank 1 failed: the disk is full";
    for (int64_t r : {0, 2})
      EXPECT_EQ(seen[r], expected) << "rank " << r;
  }
}

// Two runs that chose one port: rank 0 turns the other job's rank away with
// the reason, and its own group still forms and works.
TEST(SocketGroup, ARankOfAnotherJobIsTurnedAway) {
  int port = test::freePort();
  std::string stray, mine[2];
  // Rank r of job-a joins and sums; its error, or "".
  auto joinAndSum = [&](int64_t r) {
    auto group = dist::SocketGroup::connect({r, 2, "127.0.0.1", port, 30, "job-a"});
    if (!group) {
      mine[r] = llvm::toString(group.takeError());
      return;
    }
    auto x = (*group)->allReduce(input(r), "ranks");
    mine[r] = x ? "" : llvm::toString(x.takeError());
  };
  std::thread root(joinAndSum, 0);
  // The stray first: it must fail while rank 0 keeps waiting.
  auto other = dist::SocketGroup::connect({1, 2, "127.0.0.1", port, 30, "job-b"});
  stray = other ? "" : llvm::toString(other.takeError());
  std::thread own(joinAndSum, 1);
  root.join();
  own.join();
  EXPECT_EQ(stray, "port " + std::to_string(port) +
                       " is taken by another run (job job-a; this rank is of job job-b): give "
                       "each run its own MASTER_PORT");
  EXPECT_EQ(mine[0], "");
  EXPECT_EQ(mine[1], "");
}

// A rank that never arrives: the collective fails after the timeout naming
// it, on every rank that waited.
TEST(SocketGroup, ACollectiveTimesOutNamingTheMissingRank) {
  // Rank 1 stays connected, outside any collective, until the others have
  // failed (however slowly this machine runs them).
  std::atomic<int> failed{0};
  auto errors = runRanks(3, 2, {{"dp", 3}}, [&](int64_t r, dist::SocketGroup &g) -> llvm::Error {
    if (r == 1) {
      for (int i = 0; i < 6000 && failed.load() < 2; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      return llvm::Error::success();
    }
    auto x = g.allReduce(input(r), "dp");
    ++failed;
    return x ? llvm::Error::success() : x.takeError();
  });
  for (int64_t r : {0, 2})
    EXPECT_EQ(errors[r], "timed out after 2 s in all_reduce over dp (dimension 0) waiting for "
                         "rank 1")
        << "rank " << r;
}

TEST(SocketGroup, RanksRunningDifferentProgramsAreTold) {
  auto errors = runRanks(2, 30, {{"dp", 2}}, [&](int64_t r, dist::SocketGroup &g) -> llvm::Error {
    auto x = r == 0 ? g.allReduce(input(r), "dp") : g.allGather(input(r), "dp", 0);
    return x ? llvm::Error::success() : x.takeError();
  });
  for (int64_t r : {0, 1})
    EXPECT_NE(errors[r].find("rank 1 is in all_gather over dp (dimension 0) (collective #1) while "
                             "rank 0 is in all_reduce over dp (dimension 0) (#1): the ranks run "
                             "different programs"),
              std::string::npos)
        << errors[r];
  // Same collective, different shapes.
  errors = runRanks(2, 30, {{"dp", 2}}, [&](int64_t r, dist::SocketGroup &g) -> llvm::Error {
    auto x = g.allReduce(r == 0 ? input(r) : input(r, DType::F64), "dp");
    return x ? llvm::Error::success() : x.takeError();
  });
  for (int64_t r : {0, 1})
    EXPECT_EQ(errors[r], "all_reduce over dp: rank 0 has f32[4, 6] but rank 1 has f64[4, 6] (the "
                         "ranks run different programs)")
        << errors[r];
}

TEST(SocketGroup, ConnectingFailsClearly) {
  // Rank 1 never starts.
  int port = test::freePort();
  auto alone = dist::SocketGroup::connect({0, 2, "127.0.0.1", port, 1, ""});
  ASSERT_FALSE(static_cast<bool>(alone));
  EXPECT_EQ(llvm::toString(alone.takeError()),
            "rank 0 waited 1 s on port " + std::to_string(port) + " for rank 1 to connect");
  // Nobody listens for rank 1.
  auto lost = dist::SocketGroup::connect({1, 2, "127.0.0.1", test::freePort(), 1, ""});
  ASSERT_FALSE(static_cast<bool>(lost));
  EXPECT_NE(llvm::toString(lost.takeError()).find("rank 1 could not reach rank 0 at 127.0.0.1:"),
            std::string::npos);
  // Two processes claim rank 1.
  port = test::freePort();
  std::vector<std::string> errors(3);
  std::vector<std::thread> threads;
  for (int64_t k = 0; k < 3; ++k)
    threads.emplace_back([&, k] {
      auto g = dist::SocketGroup::connect({k == 0 ? 0 : 1, 3, "127.0.0.1", port, 5, ""});
      errors[k] = g ? "" : llvm::toString(g.takeError());
    });
  for (std::thread &t : threads)
    t.join();
  EXPECT_EQ(errors[0], "two processes connected as rank 1");
  EXPECT_TRUE(errors[1] == "two processes connected as rank 1" ||
              errors[2] == "two processes connected as rank 1")
      << errors[1] << " / " << errors[2];
  // Not a rank of the group.
  EXPECT_FALSE(static_cast<bool>(dist::SocketGroup::connect({2, 2, "127.0.0.1", port, 1, ""})));
}

// A group of several axes: the ranks differing only in those coordinates,
// numbered in the order the axes are named (major first), as a dimension
// split over [edp, ep] numbers its chunks.
TEST(MeshGroup, SeveralAxesNumberTheirRanksMajorFirst) {
  const MeshAxes mesh = {{"edp", 2}, {"ep", 2}, {"tp", 2}};
  // Rank 5 is at (edp, ep, tp) = (1, 0, 1).
  EXPECT_EQ(meshGroup(mesh, 5, "edp,ep"), (std::vector<int64_t>{1, 3, 5, 7}));
  EXPECT_EQ(meshCoordinate(mesh, 5, "edp,ep"), 2);
  EXPECT_EQ(meshGroup(mesh, 5, "ep,edp"), (std::vector<int64_t>{1, 5, 3, 7}));
  EXPECT_EQ(meshCoordinate(mesh, 5, "ep,edp"), 1);
  EXPECT_EQ(meshAxisSize(mesh, "edp,ep"), 4);
  EXPECT_EQ(meshGroup(mesh, 6, "ep,tp"), (std::vector<int64_t>{4, 5, 6, 7}));
  EXPECT_EQ(meshGroup(mesh, 6, "edp,ep,tp").size(), 8u);
  // One axis as before; an axis the mesh lacks is the rank alone.
  EXPECT_EQ(meshGroup(mesh, 5, "ep"), (std::vector<int64_t>{5, 7}));
  EXPECT_EQ(meshGroup(mesh, 5, "pp"), (std::vector<int64_t>{5}));
  EXPECT_EQ(meshAxisSize(mesh, "pp"), 1);
}
