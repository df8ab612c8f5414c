//===- RunTest.cpp - the training loop driven as a library -----------------===//
//
// runTraining() is what `kiln train` calls once its flags are read; here a
// test drives it directly: a dp = 2 mesh as threads of one process, and the
// same mesh as two ranks joined over TCP (each rank a thread of this test,
// as each would be a process), must train to the same bytes.
//
//===----------------------------------------------------------------------===//

#include "train/Run.h"

#include "runtime/Checkpoint.h"
#include "runtime/data/TokenShard.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "tests/unit/TestSupport.h"

#include "gtest/gtest.h"

#include <arpa/inet.h>

#include <thread>

using namespace kiln;

namespace {

std::string tempDir() {
  llvm::SmallString<128> dir;
  EXPECT_FALSE(llvm::sys::fs::createUniqueDirectory("kiln-run-test", dir));
  return std::string(dir);
}

/// Byte-level token shards with some structure to learn.
void writeData(const std::string &dir) {
  for (auto [name, n] : {std::pair{"train", 20000}, std::pair{"val", 4000}}) {
    std::vector<int32_t> tokens(static_cast<size_t>(n));
    for (int i = 0; i < n; ++i)
      tokens[static_cast<size_t>(i)] = 97 + (i * 7 + i / 13) % 26;
    ASSERT_FALSE(static_cast<bool>(writeShard(dir + "/" + name + "_000000.bin", tokens)));
  }
}

/// The tiny byte-level config of the lit tests, on dp = 2 (ZeRO 1), for 8
/// steps of sequential data, writing to `runDir`.
RunConfig tinyConfig(const std::string &data, const std::string &runDir) {
  auto config = RunConfig::loadFile(KILN_SOURCE_DIR "/tests/lit/train/Inputs/tiny-byte.toml");
  EXPECT_TRUE(static_cast<bool>(config)) << llvm::toString(config.takeError());
  llvm::Error err = config->applyOverrides(
      {"data.train=" + data + "/train_*.bin", "data.val=" + data + "/val_*.bin",
       "data.mode=sequential", "run.dir=" + runDir, "train.steps=8", "eval.every=0",
       "checkpoint.every=0", "parallel.dp=2", "parallel.zero=1"});
  EXPECT_FALSE(static_cast<bool>(err)) << llvm::toString(std::move(err));
  return *config;
}

std::vector<double> losses(const std::string &runDir) {
  std::vector<double> out;
  auto file = llvm::MemoryBuffer::getFile(runDir + "/metrics.jsonl");
  EXPECT_TRUE(static_cast<bool>(file)) << runDir;
  if (!file)
    return out;
  llvm::SmallVector<llvm::StringRef> lines;
  (*file)->getBuffer().split(lines, '\n', -1, false);
  for (llvm::StringRef line : lines) {
    auto value = llvm::json::parse(line);
    EXPECT_TRUE(static_cast<bool>(value)) << line.str();
    if (!value)
      continue;
    if (auto loss = value->getAsObject()->getNumber("loss"))
      out.push_back(*loss);
  }
  return out;
}

std::string bytes(const std::string &path) {
  auto file = llvm::MemoryBuffer::getFile(path);
  EXPECT_TRUE(static_cast<bool>(file)) << path;
  return file ? (*file)->getBuffer().str() : "";
}

TEST(RunTraining, RanksJoinedOverTcpTrainLikeThreads) {
  std::string dir = tempDir();
  writeData(dir);

  // The mesh as threads of this process (one rank in its environment).
  tooling::RunRequest threads;
  threads.where = tooling::RankEnvironment();
  std::string threadsOut;
  llvm::raw_string_ostream threadsStream(threadsOut);
  auto code = tooling::runTraining(tinyConfig(dir, dir + "/threads"), threads, threadsStream);
  ASSERT_TRUE(static_cast<bool>(code)) << llvm::toString(code.takeError());
  EXPECT_EQ(*code, 0);
  EXPECT_NE(threadsOut.find("done: 8 steps"), std::string::npos) << threadsOut;

  // The same mesh as two ranks, each finding the other through the port.
  const int port = test::freePort();
  std::string rankOut[2];
  llvm::Expected<int> rankCode[2] = {0, 0};
  std::vector<std::thread> ranks;
  for (int64_t r = 0; r < 2; ++r)
    ranks.emplace_back([&, r] {
      tooling::RunRequest request;
      tooling::RankEnvironment where;
      where.rank = where.localRank = r;
      where.size = where.localSize = 2;
      where.port = port;
      where.launcher = "this test";
      request.where = where;
      llvm::raw_string_ostream out(rankOut[r]);
      rankCode[r] = tooling::runTraining(tinyConfig(dir, dir + "/ranks"), request, out);
    });
  for (std::thread &t : ranks)
    t.join();
  for (int r = 0; r < 2; ++r) {
    ASSERT_TRUE(static_cast<bool>(rankCode[r])) << llvm::toString(rankCode[r].takeError());
    EXPECT_EQ(*rankCode[r], 0);
  }
  // Rank 0 speaks for the run, and each rank read only its rows.
  EXPECT_NE(rankOut[0].find("each rank reads its 4 rows of each batch of 8"), std::string::npos)
      << rankOut[0];
  EXPECT_NE(rankOut[0].find("rank 0 of 2 processes"), std::string::npos) << rankOut[0];
  EXPECT_EQ(rankOut[1], "");

  // Both add in rank order: the same losses and the same final weights,
  // bit for bit.
  std::vector<double> a = losses(dir + "/threads"), b = losses(dir + "/ranks");
  ASSERT_EQ(a.size(), 8u);
  EXPECT_EQ(a, b);
  EXPECT_LT(a.back(), a.front()); // it learned something
  const std::string last = "/checkpoints/step_00000008/model.safetensors";
  EXPECT_EQ(bytes(dir + "/threads" + last), bytes(dir + "/ranks" + last));
}

TEST(RunTraining, RefusesRanksThatDoNotFitTheMesh) {
  std::string dir = tempDir();
  writeData(dir);
  tooling::RunRequest request;
  request.where = tooling::RankEnvironment();
  request.ranks = 3;
  request.relaunch = {"kiln", "train"};
  std::string out;
  llvm::raw_string_ostream stream(out);
  auto code = tooling::runTraining(tinyConfig(dir, dir + "/run"), request, stream);
  ASSERT_FALSE(static_cast<bool>(code));
  EXPECT_EQ(llvm::toString(code.takeError()),
            "--ranks asks for 3 processes but the mesh has 2 ranks (parallel.dp x parallel.tp = "
            "2 x 1); set them with --set parallel.dp=N");
  // Both flags at once, and a rank of another launcher asked to start ranks.
  request.gpus = 2;
  code = tooling::runTraining(tinyConfig(dir, dir + "/run"), request, stream);
  ASSERT_FALSE(static_cast<bool>(code));
  EXPECT_EQ(llvm::toString(code.takeError()), "give --gpus or --ranks, not both");
  request.gpus.reset();
  request.ranks = 2;
  tooling::RankEnvironment other;
  other.rank = 1;
  other.size = 2;
  other.launcher = "mpirun";
  request.where = other;
  code = tooling::runTraining(tinyConfig(dir, dir + "/run"), request, stream);
  ASSERT_FALSE(static_cast<bool>(code));
  EXPECT_EQ(llvm::toString(code.takeError()),
            "--ranks 2, but mpirun started this process as rank 1 of 2: drop --ranks (that "
            "launcher starts the ranks)");
  EXPECT_FALSE(llvm::sys::fs::exists(dir + "/run")); // nothing was written
}

} // namespace
