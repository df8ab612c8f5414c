//===- TrainingPiecesTest.cpp - checkpoints, safetensors, schedules, sampling //

#include "runtime/Checkpoint.h"
#include "runtime/Safetensors.h"
#include "runtime/train/Sampler.h"
#include "runtime/train/Schedule.h"
#include "tools/support/HuggingFace.h"

#include "llvm/Support/FileSystem.h"
#include "gtest/gtest.h"

#include <cmath>
#include <fstream>

using namespace kiln;

namespace {

std::string tempDir() {
  llvm::SmallString<128> dir;
  EXPECT_FALSE(llvm::sys::fs::createUniqueDirectory("kiln-train-test", dir));
  return std::string(dir);
}

cpu::HostTensor filled(cpu::DType dtype, std::vector<int64_t> shape, double start) {
  cpu::HostTensor t(dtype, shape);
  for (int64_t i = 0; i < t.numel(); ++i)
    t.set(i, start + 0.25 * static_cast<double>(i));
  return t;
}

bool sameTensor(const cpu::HostTensor &a, const cpu::HostTensor &b) {
  if (a.dtype() != b.dtype() || a.shape() != b.shape())
    return false;
  for (int64_t i = 0; i < a.numel(); ++i)
    if (a.get(i) != b.get(i))
      return false;
  return true;
}

TEST(Safetensors, RoundTripsEveryDtype) {
  std::string dir = tempDir();
  NamedTensors tensors;
  for (auto d : {cpu::DType::F64, cpu::DType::F32, cpu::DType::BF16, cpu::DType::F16,
                 cpu::DType::I64, cpu::DType::I32})
    tensors.push_back({std::string(cpu::dtypeName(d)), filled(d, {2, 3}, -1.0)});
  ASSERT_FALSE(static_cast<bool>(writeSafetensors(dir + "/t.safetensors", tensors, {{"k", "v"}})));
  std::map<std::string, std::string> meta;
  auto back = readSafetensors(dir + "/t.safetensors", &meta);
  ASSERT_TRUE(static_cast<bool>(back)) << llvm::toString(back.takeError());
  ASSERT_EQ(back->size(), tensors.size());
  for (const auto &[name, t] : tensors) {
    auto it = std::find_if(back->begin(), back->end(), [&](const auto &e) { return e.first == name; });
    ASSERT_NE(it, back->end()) << name;
    EXPECT_TRUE(sameTensor(it->second, t)) << name;
  }
  EXPECT_EQ(meta["k"], "v");
}

TEST(Safetensors, MalformedFilesAreClearErrors) {
  std::string dir = tempDir();
  {
    std::ofstream f(dir + "/bad.safetensors", std::ios::binary);
    f.write("\xff\xff\x00\x00\x00\x00\x00\x00{", 9);
  }
  auto r = readSafetensors(dir + "/bad.safetensors");
  ASSERT_FALSE(static_cast<bool>(r));
  std::string e = llvm::toString(r.takeError());
  EXPECT_NE(e.find("bad.safetensors"), std::string::npos) << e;
  EXPECT_NE(e.find("runs past the end of the file"), std::string::npos) << e;
}

Checkpoint makeCheckpoint(int64_t step, double value) {
  Checkpoint c;
  c.params = {{"w", filled(cpu::DType::F32, {4}, value)}};
  c.optimizer = {{"w.adam_m", filled(cpu::DType::F32, {4}, -value)}};
  c.state.step = step;
  c.state.tokenizer = "byte";
  c.state.config = "[model]\nn_layer = 1\n";
  c.state.rng = {1, 2, 3, 18446744073709551615ull}; // the largest word survives JSON
  return c;
}

TEST(Checkpoint, SavesLoadsAndFollowsLatest) {
  std::string dir = tempDir();
  auto first = saveCheckpoint(dir + "/checkpoints", makeCheckpoint(10, 1.0));
  ASSERT_TRUE(static_cast<bool>(first)) << llvm::toString(first.takeError());
  auto second = saveCheckpoint(dir + "/checkpoints", makeCheckpoint(20, 2.0));
  ASSERT_TRUE(static_cast<bool>(second));
  auto loaded = loadCheckpoint(dir); // a run directory: checkpoints/latest
  ASSERT_TRUE(static_cast<bool>(loaded)) << llvm::toString(loaded.takeError());
  EXPECT_EQ(loaded->state.step, 20);
  EXPECT_EQ(loaded->state.rng[3], 18446744073709551615ull);
  EXPECT_EQ(loaded->state.config, "[model]\nn_layer = 1\n");
  EXPECT_TRUE(sameTensor(loaded->params[0].second, filled(cpu::DType::F32, {4}, 2.0)));
  auto older = loadCheckpoint(*first);
  ASSERT_TRUE(static_cast<bool>(older));
  EXPECT_EQ(older->state.step, 10);
}

// A save that dies before its rename must leave the previous checkpoint the
// one that loads, and the next save must clean up after it.
TEST(Checkpoint, InterruptedWriteLeavesThePreviousCheckpoint) {
  std::string dir = tempDir() + "/checkpoints";
  ASSERT_TRUE(static_cast<bool>(saveCheckpoint(dir, makeCheckpoint(10, 1.0))));
  auto crashed = saveCheckpoint(dir, makeCheckpoint(20, 2.0), 0, [] { return false; });
  ASSERT_FALSE(static_cast<bool>(crashed));
  llvm::consumeError(crashed.takeError());
  auto loaded = loadCheckpoint(dir);
  ASSERT_TRUE(static_cast<bool>(loaded)) << llvm::toString(loaded.takeError());
  EXPECT_EQ(loaded->state.step, 10);
  EXPECT_TRUE(sameTensor(loaded->params[0].second, filled(cpu::DType::F32, {4}, 1.0)));
  // The next save succeeds and removes the leftover temporary directory.
  ASSERT_TRUE(static_cast<bool>(saveCheckpoint(dir, makeCheckpoint(30, 3.0), /*keep=*/1)));
  int entries = 0;
  std::error_code ec;
  for (llvm::sys::fs::directory_iterator it(dir, ec), end; it != end && !ec; it.increment(ec))
    ++entries;
  EXPECT_EQ(entries, 2); // step_00000030 and latest: older ones and the .tmp removed
  EXPECT_EQ(loadCheckpoint(dir)->state.step, 30);
}

TEST(Checkpoint, MissingCheckpointIsAClearError) {
  auto r = loadCheckpoint(tempDir());
  ASSERT_FALSE(static_cast<bool>(r));
  std::string e = llvm::toString(r.takeError());
  EXPECT_NE(e.find("no checkpoint in"), std::string::npos) << e;
}

TEST(Schedule, WarmupThenShape) {
  ScheduleOptions o{"cosine", 1.0, 0.1, 10, 110, 0.2};
  EXPECT_DOUBLE_EQ(learningRate(o, 0), 0.1); // (0+1)/10
  EXPECT_DOUBLE_EQ(learningRate(o, 9), 1.0);
  EXPECT_DOUBLE_EQ(learningRate(o, 10), 1.0);  // cosine starts at the top
  EXPECT_NEAR(learningRate(o, 109), 0.1, 1e-12); // and ends at min_lr
  EXPECT_NEAR(learningRate(o, 59) + learningRate(o, 60), 1.1, 0.02); // symmetric about the middle
  o.kind = "linear";
  EXPECT_NEAR(learningRate(o, 59) + learningRate(o, 60), 1.1, 0.02);
  EXPECT_NEAR(learningRate(o, 109), 0.1, 1e-12);
  o.kind = "constant";
  EXPECT_DOUBLE_EQ(learningRate(o, 100), 1.0);
  o.kind = "wsd"; // stable for the first 80% after warmup, then linear decay
  EXPECT_DOUBLE_EQ(learningRate(o, 80), 1.0);
  EXPECT_LT(learningRate(o, 100), 1.0);
  EXPECT_NEAR(learningRate(o, 109), 0.1, 1e-12);
}

TEST(Sampler, GreedyTopKAndTemperature) {
  std::vector<float> logits{0.0f, 2.0f, 1.0f, -1.0f};
  Rng rng(1);
  EXPECT_EQ(sampleToken(logits.data(), 4, {true, 1.0, 0}, rng), 1);
  EXPECT_EQ(sampleToken(logits.data(), 4, {false, 1.0, 1}, rng), 1); // top-1 is greedy
  // Top-2 never picks the two least likely tokens; the frequencies follow
  // softmax over {2, 1}: e^2/(e^2+e) ≈ 0.731 (20000 draws: ±0.01).
  int ones = 0;
  for (int i = 0; i < 20000; ++i) {
    int32_t t = sampleToken(logits.data(), 4, {false, 1.0, 2}, rng);
    ASSERT_TRUE(t == 1 || t == 2);
    ones += t == 1;
  }
  EXPECT_NEAR(ones / 20000.0, std::exp(2.0) / (std::exp(2.0) + std::exp(1.0)), 0.01);
}

TEST(HuggingFace, Gpt2NamesAndVocabularyPadding) {
  ModelConfig c;
  c.n_layer = 1;
  c.n_embd = 4;
  c.n_head = 2;
  c.vocab_size = 5;
  c.vocab_multiple = 8;
  c.block_size = 3;
  NamedTensors params{{"wte", filled(cpu::DType::F32, {8, 4}, 0)},
                      {"h.0.attn.qkv.w", filled(cpu::DType::F32, {4, 12}, 1)},
                      {"wpe", filled(cpu::DType::F32, {3, 4}, 2)},
                      {"ln_f.w", filled(cpu::DType::F32, {4}, 3)},
                      {"ln_f.b", filled(cpu::DType::F32, {4}, 4)}};
  auto hf = tooling::toHuggingFaceGPT2(params, c);
  ASSERT_TRUE(static_cast<bool>(hf));
  EXPECT_EQ((*hf)[0].first, "transformer.wte.weight");
  EXPECT_EQ((*hf)[0].second.shape(), (std::vector<int64_t>{5, 4})); // padding dropped
  EXPECT_EQ((*hf)[1].first, "transformer.h.0.attn.c_attn.weight");
  EXPECT_EQ((*hf)[1].second.shape(), (std::vector<int64_t>{4, 12})); // Conv1D [in, out]
  auto back = tooling::fromHuggingFaceGPT2(*hf, c);
  ASSERT_TRUE(static_cast<bool>(back)) << llvm::toString(back.takeError());
  EXPECT_EQ((*back)[0].second.shape(), (std::vector<int64_t>{8, 4})); // padded again
  EXPECT_EQ((*back)[0].second.get(4 * 4), params[0].second.get(4 * 4)); // row 4 kept
  EXPECT_EQ((*back)[0].second.get(5 * 4), 0.0);                         // row 5: zero padding
  c.n_layer = 2;
  auto missing = tooling::fromHuggingFaceGPT2(*hf, c);
  ASSERT_FALSE(static_cast<bool>(missing));
  EXPECT_NE(llvm::toString(missing.takeError()).find("lack layer 1"), std::string::npos);
}

} // namespace
