//===- TrainingPiecesTest.cpp - checkpoints, safetensors, schedules, sampling //

#include "runtime/Backend.h"
#include "runtime/Checkpoint.h"
#include "support/Files.h"
#include "runtime/Safetensors.h"
#include "runtime/cuda/DevicePeak.h"
#include "runtime/train/MetricsLog.h"
#include "runtime/train/Sampler.h"
#include "runtime/train/Schedule.h"
#include "train/HuggingFace.h"

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "gtest/gtest.h"

#include <cmath>
#include <fstream>
#include <functional>

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
  for (const auto &[key, t] : tensors) {
    const std::string &name = key; // (the lambda captures it)
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

/// Writes `bytes` to `path`.
void writeBytes(const std::string &path, const std::string &bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string readBytes(const std::string &path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

/// A safetensors file from a header (JSON text) and data bytes.
std::string safetensorsFile(const std::string &json, const std::string &data) {
  std::string out;
  for (int k = 0; k < 8; ++k)
    out += static_cast<char>((json.size() >> (8 * k)) & 0xFF);
  return out + json + data;
}

std::string readError(const std::string &path) {
  auto r = readSafetensors(path);
  if (r)
    return "(no error)";
  return llvm::toString(r.takeError());
}

TEST(Safetensors, SizesAreCheckedBeforeAllocating) {
  std::string dir = tempDir();
  // 2^40 elements claimed, 16 bytes present: an error, not a 4 TiB
  // allocation (this used to crash `train --resume`, `sample` and `export`).
  writeBytes(dir + "/huge.safetensors",
             safetensorsFile(R"({"w":{"dtype":"F32","shape":[1048576,1048576],"data_offsets":[0,16]}})",
                             std::string(16, '\0')));
  std::string e = readError(dir + "/huge.safetensors");
  EXPECT_NE(e.find("data_offsets do not hold its 4398046511104 bytes"), std::string::npos) << e;
  // A shape whose byte count overflows int64.
  writeBytes(dir + "/overflow.safetensors",
             safetensorsFile(R"({"w":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", ""));
  e = readError(dir + "/overflow.safetensors");
  EXPECT_NE(e.find("(overflowing)"), std::string::npos) << e;
}

TEST(Safetensors, TensorsMustTileTheData) {
  std::string dir = tempDir();
  std::string data(16, '\0');
  writeBytes(dir + "/overlap.safetensors",
             safetensorsFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                             data));
  std::string e = readError(dir + "/overlap.safetensors");
  EXPECT_NE(e.find("overlap or gap"), std::string::npos) << e;
  writeBytes(dir + "/padded.safetensors",
             safetensorsFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", data));
  e = readError(dir + "/padded.safetensors");
  EXPECT_NE(e.find("the tensors hold 8 bytes but the file has 16 bytes of data"), std::string::npos)
      << e;
}

TEST(Safetensors, AFlippedDataByteFailsTheChecksum) {
  std::string dir = tempDir();
  std::string path = dir + "/t.safetensors";
  ASSERT_FALSE(static_cast<bool>(writeSafetensors(path, {{"w", filled(cpu::DType::F32, {8}, 1)}})));
  std::map<std::string, std::string> meta;
  ASSERT_TRUE(static_cast<bool>(readSafetensors(path, &meta)));
  EXPECT_EQ(meta[kChecksumKey.str()].size(), 16u); // 64 bits in hex
  std::string bytes = readBytes(path);
  bytes[bytes.size() - 3] ^= 0x01; // a low mantissa bit: still a valid float
  writeBytes(path, bytes);
  std::string e = readError(path);
  EXPECT_NE(e.find("checksum mismatch"), std::string::npos) << e;
}

TEST(Safetensors, OnlyRegularFilesAreRead) {
  std::string e = readError("/dev/zero");
  EXPECT_NE(e.find("'/dev/zero' is not a regular file"), std::string::npos) << e;
  e = readError(tempDir());
  EXPECT_NE(e.find("is a directory"), std::string::npos) << e;
}

TEST(HostTensor, CreateRefusesSizesThatOverflow) {
  auto t = cpu::HostTensor::create(cpu::DType::F32, {int64_t(1) << 40, int64_t(1) << 30});
  ASSERT_FALSE(static_cast<bool>(t));
  EXPECT_NE(llvm::toString(t.takeError()).find("does not fit in 64 bits"), std::string::npos);
  auto ok = cpu::HostTensor::create(cpu::DType::BF16, {3, 5});
  ASSERT_TRUE(static_cast<bool>(ok));
  EXPECT_EQ(ok->numel(), 15);
  EXPECT_EQ(ok->get(14), 0.0);
}

TEST(MetricsLog, AWriteErrorIsReportedAndTheStreamStaysUsable) {
  // /dev/full fails every write with ENOSPC, as a full disk does.
  MetricsLog log;
  ASSERT_FALSE(static_cast<bool>(log.open("/dev/full", std::nullopt)));
  llvm::Error err = log.write(llvm::json::Object{{"step", 1}});
  ASSERT_TRUE(static_cast<bool>(err));
  std::string e = llvm::toString(std::move(err));
  EXPECT_NE(e.find("cannot write the metrics log '/dev/full'"), std::string::npos) << e;
  // A second failure is reported the same way (no fatal error from the
  // stream's destructor either).
  EXPECT_TRUE(static_cast<bool>(log.write(llvm::json::Object{{"step", 2}}))) ;
  std::string dir = tempDir();
  MetricsLog good;
  ASSERT_FALSE(static_cast<bool>(good.open(dir + "/m.jsonl", std::nullopt)));
  EXPECT_FALSE(static_cast<bool>(good.write(llvm::json::Object{{"step", 1}})));
  EXPECT_EQ(readBytes(dir + "/m.jsonl"), "{\"step\":1}\n");
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

/// Rewrites state.json of checkpoint `dir` through `edit`, with a valid
/// checksum (the way kiln computes it), to test the checks behind it.
void editState(const std::string &dir, const std::function<void(llvm::json::Object &)> &edit) {
  auto json = llvm::json::parse(readBytes(dir + "/state.json"));
  ASSERT_TRUE(static_cast<bool>(json));
  llvm::json::Object &o = *json->getAsObject();
  o.erase("checksum");
  edit(o);
  o["checksum"] = contentChecksum(llvm::formatv("{0}", llvm::json::Value(llvm::json::Object(o))).str());
  writeBytes(dir + "/state.json", llvm::formatv("{0:2}", llvm::json::Value(std::move(o))).str());
}

std::string loadError(const std::string &dir) {
  auto r = loadCheckpoint(dir);
  return r ? "(no error)" : llvm::toString(r.takeError());
}

TEST(Checkpoint, EveryFileIsChecksummed) {
  std::string dir = tempDir();
  auto saved = saveCheckpoint(dir, makeCheckpoint(10, 1.0));
  ASSERT_TRUE(static_cast<bool>(saved));
  // A flipped byte anywhere in a tensor file, header included.
  for (const char *file : {"model.safetensors", "optimizer.safetensors"})
    for (size_t at : {size_t(20), size_t(0)}) {
      std::string path = *saved + "/" + file, good = readBytes(path), bad = good;
      bad[bad.size() - 1 - at] ^= 0x10;
      writeBytes(path, bad);
      std::string e = loadError(*saved);
      EXPECT_NE(e.find("checksum mismatch"), std::string::npos) << file << ": " << e;
      writeBytes(path, good);
    }
  // A truncated one.
  std::string model = readBytes(*saved + "/model.safetensors");
  writeBytes(*saved + "/model.safetensors", model.substr(0, model.size() - 4));
  EXPECT_NE(loadError(*saved).find("truncated or replaced"), std::string::npos);
  writeBytes(*saved + "/model.safetensors", model);
  // A changed value in state.json.
  std::string state = readBytes(*saved + "/state.json");
  size_t at = state.find("\"step\": 10");
  ASSERT_NE(at, std::string::npos);
  std::string changed = state;
  changed.replace(at, 10, "\"step\": 11");
  writeBytes(*saved + "/state.json", changed);
  EXPECT_NE(loadError(*saved).find("state.json': checksum mismatch"), std::string::npos);
  writeBytes(*saved + "/state.json", state);
  EXPECT_EQ(loadError(*saved), "(no error)");
}

TEST(Checkpoint, StateValuesAreValidated) {
  std::string dir = tempDir();
  auto saved = saveCheckpoint(dir, makeCheckpoint(10, 1.0));
  ASSERT_TRUE(static_cast<bool>(saved));
  std::string state = readBytes(*saved + "/state.json");
  editState(*saved, [](llvm::json::Object &o) { o["step"] = -1; });
  EXPECT_NE(loadError(*saved).find("must not be negative"), std::string::npos) << loadError(*saved);
  writeBytes(*saved + "/state.json", state);
  editState(*saved, [](llvm::json::Object &o) { o["loss_scale"] = 0.0; });
  EXPECT_NE(loadError(*saved).find("loss_scale must be a positive finite number"), std::string::npos);
  writeBytes(*saved + "/state.json", state);
  editState(*saved, [](llvm::json::Object &o) {
    o["tokenizer"] = llvm::json::Object{{"kind", "wordpiece"}, {"path", ""}};
  });
  EXPECT_NE(loadError(*saved).find("unknown tokenizer kind 'wordpiece'"), std::string::npos);
  writeBytes(*saved + "/state.json", state);
  editState(*saved, [](llvm::json::Object &o) { o.erase("format"); });
  EXPECT_NE(loadError(*saved).find("has state format 1"), std::string::npos);
}

TEST(Checkpoint, ASecondSaveOfAStepReplacesTheFirst) {
  // A run resumed from an older checkpoint, or a new run in the same
  // directory, saves a step that exists: the new checkpoint wins.
  std::string dir = tempDir();
  ASSERT_TRUE(static_cast<bool>(saveCheckpoint(dir, makeCheckpoint(10, 1.0))));
  auto again = saveCheckpoint(dir, makeCheckpoint(10, 5.0));
  ASSERT_TRUE(static_cast<bool>(again)) << llvm::toString(again.takeError());
  auto loaded = loadCheckpoint(dir);
  ASSERT_TRUE(static_cast<bool>(loaded));
  EXPECT_TRUE(sameTensor(loaded->params[0].second, filled(cpu::DType::F32, {4}, 5.0)));
}

TEST(Checkpoint, PruningKeepsTheNewestByStep) {
  // Step 100000000 has nine digits: its name sorts before step_99999999,
  // but it is the newer one.
  std::string dir = tempDir();
  ASSERT_TRUE(static_cast<bool>(saveCheckpoint(dir, makeCheckpoint(99999999, 1.0), 1)));
  auto newest = saveCheckpoint(dir, makeCheckpoint(100000000, 2.0), 1);
  ASSERT_TRUE(static_cast<bool>(newest));
  EXPECT_TRUE(llvm::sys::fs::exists(*newest));
  EXPECT_FALSE(llvm::sys::fs::exists(dir + "/step_99999999"));
  auto loaded = loadCheckpoint(dir);
  ASSERT_TRUE(static_cast<bool>(loaded)) << llvm::toString(loaded.takeError());
  EXPECT_EQ(loaded->state.step, 100000000);
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
}

// GPT-2's packed attention projection is head-major in kiln, (head,
// q|k|v, D), and (q|k|v, head, D) in Hugging Face's c_attn: column
// h·3D + j·D + d of kiln's is column j·C + h·D + d of Hugging Face's, for
// the weight's every row and for the bias; an old (format 2) checkpoint,
// stored in Hugging Face's order, is converted on load, its moments too.
TEST(HuggingFace, Gpt2QkvIsHeadMajor) {
  ModelConfig c;
  c.n_layer = 1;
  c.n_embd = 4; // 2 heads of D = 2
  c.n_head = 2;
  c.vocab_size = 5;
  c.vocab_multiple = 8;
  c.block_size = 3;
  const int64_t C = 4, D = 2;
  // Hugging Face's tensors: element (row r, column k) = 100·r + k.
  cpu::HostTensor w(cpu::DType::F32, {C, 3 * C}), b(cpu::DType::F32, {3 * C});
  for (int64_t i = 0; i < w.numel(); ++i)
    w.set(i, 100 * (i / (3 * C)) + i % (3 * C));
  for (int64_t i = 0; i < b.numel(); ++i)
    b.set(i, i);
  NamedTensors hf{{"transformer.h.0.attn.c_attn.weight", w}, {"transformer.h.0.attn.c_attn.bias", b}};
  auto kiln = tooling::fromHuggingFaceGPT2(hf, c);
  ASSERT_TRUE(static_cast<bool>(kiln)) << llvm::toString(kiln.takeError());
  ASSERT_EQ((*kiln)[0].first, "h.0.attn.qkv.w");
  ASSERT_EQ((*kiln)[1].first, "h.0.attn.qkv.b");
  for (int64_t h = 0; h < 2; ++h)
    for (int64_t j = 0; j < 3; ++j)
      for (int64_t d = 0; d < D; ++d) {
        int64_t mine = h * 3 * D + j * D + d, theirs = j * C + h * D + d;
        EXPECT_EQ((*kiln)[1].second.get(mine), theirs);
        for (int64_t r = 0; r < C; ++r)
          EXPECT_EQ((*kiln)[0].second.get(r * 3 * C + mine), 100 * r + theirs);
      }
  auto back = tooling::toHuggingFaceGPT2(*kiln, c);
  ASSERT_TRUE(static_cast<bool>(back)) << llvm::toString(back.takeError());
  for (size_t t = 0; t < 2; ++t)
    for (int64_t i = 0; i < hf[t].second.numel(); ++i)
      ASSERT_EQ((*back)[t].second.get(i), hf[t].second.get(i)) << (*back)[t].first << " " << i;

  // A format-2 checkpoint holds Hugging Face's order: upgraded to kiln's.
  Checkpoint old;
  old.state.format = 2;
  old.params = {{"h.0.attn.qkv.w", w}, {"h.0.attn.qkv.b", b}, {"wpe", filled(cpu::DType::F32, {3, 4}, 2)}};
  old.optimizer = {{"h.0.attn.qkv.w.adam_m", w}, {"wpe.adam_m", filled(cpu::DType::F32, {3, 4}, 2)}};
  ASSERT_FALSE(static_cast<bool>(tooling::upgradeCheckpoint(old, c)));
  EXPECT_EQ(old.state.format, 3);
  for (int64_t i = 0; i < w.numel(); ++i) {
    EXPECT_EQ(old.params[0].second.get(i), (*kiln)[0].second.get(i));
    EXPECT_EQ(old.optimizer[0].second.get(i), (*kiln)[0].second.get(i));
  }
  EXPECT_EQ(old.params[1].second.get(1 * 3 * D), (*kiln)[1].second.get(1 * 3 * D));
  EXPECT_EQ(old.params[2].second.get(0), 2.0); // other tensors untouched
  // A c_attn that is not 3 x n_embd wide is refused, not silently permuted.
  NamedTensors wrong{{"transformer.h.0.attn.c_attn.weight", filled(cpu::DType::F32, {4, 10}, 1)}};
  auto refused = tooling::fromHuggingFaceGPT2(wrong, c);
  ASSERT_FALSE(static_cast<bool>(refused));
  EXPECT_NE(llvm::toString(refused.takeError()).find("must end in 3 x n_embd = 12 columns"),
            std::string::npos);
}

// Llama: nn.Linear weights are [out, in] in Hugging Face files, the padded
// vocabulary rows are dropped and added back, a tied head comes from the
// embedding, and a tensor kiln's Llama lacks (a bias) is refused, never
// dropped.
TEST(HuggingFace, LlamaTransposesAndRefusesUnknownTensors) {
  ModelConfig c;
  c.kind = "llama";
  c.n_layer = 1;
  c.n_embd = 4;
  c.n_head = 2;
  c.vocab_size = 5;
  c.vocab_multiple = 8;
  c.intermediate_size = 6;
  NamedTensors params{{"embed", filled(cpu::DType::F32, {8, 4}, 0)},
                      {"layers.0.attn.q.w", filled(cpu::DType::F32, {4, 4}, 1)},
                      {"layers.0.mlp.gate.w", filled(cpu::DType::F32, {4, 6}, 2)},
                      {"norm.w", filled(cpu::DType::F32, {4}, 3)},
                      {"lm_head.w", filled(cpu::DType::F32, {4, 8}, 4)}};
  auto hf = tooling::toHuggingFace(params, c);
  ASSERT_TRUE(static_cast<bool>(hf)) << llvm::toString(hf.takeError());
  EXPECT_EQ((*hf)[0].first, "model.embed_tokens.weight");
  EXPECT_EQ((*hf)[0].second.shape(), (std::vector<int64_t>{5, 4}));
  EXPECT_EQ((*hf)[2].first, "model.layers.0.mlp.gate_proj.weight");
  EXPECT_EQ((*hf)[2].second.shape(), (std::vector<int64_t>{6, 4})); // [out, in]
  EXPECT_EQ((*hf)[2].second.get(1 * 4 + 2), params[2].second.get(2 * 6 + 1)); // transposed
  EXPECT_EQ((*hf)[4].first, "lm_head.weight");
  EXPECT_EQ((*hf)[4].second.shape(), (std::vector<int64_t>{5, 4}));
  auto back = tooling::fromHuggingFace(*hf, c);
  ASSERT_TRUE(static_cast<bool>(back)) << llvm::toString(back.takeError());
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ((*back)[i].first, params[i].first);
    EXPECT_EQ((*back)[i].second.shape(), params[i].second.shape()) << params[i].first;
  }
  EXPECT_EQ((*back)[4].second.get(2 * 8 + 3), params[4].second.get(2 * 8 + 3)); // a real class
  EXPECT_EQ((*back)[4].second.get(2 * 8 + 6), 0.0);                           // padding

  // Tied: no lm_head.weight, so the head is the embedding transposed.
  NamedTensors tied(hf->begin(), hf->begin() + 4);
  tied.push_back({"model.layers.0.self_attn.rotary_emb.inv_freq", filled(cpu::DType::F32, {1}, 0)});
  auto fromTied = tooling::fromHuggingFace(tied, c);
  ASSERT_TRUE(static_cast<bool>(fromTied)) << llvm::toString(fromTied.takeError());
  ASSERT_EQ(fromTied->size(), 5u);
  EXPECT_EQ((*fromTied)[1].first, "lm_head.w");
  EXPECT_EQ((*fromTied)[1].second.get(3 * 8 + 2), params[0].second.get(2 * 4 + 3));

  NamedTensors biased = *hf;
  biased.push_back({"model.layers.0.self_attn.q_proj.bias", filled(cpu::DType::F32, {4}, 0)});
  auto refused = tooling::fromHuggingFace(biased, c);
  ASSERT_FALSE(static_cast<bool>(refused));
  EXPECT_NE(llvm::toString(refused.takeError()).find("q_proj.bias' is not a tensor of kiln's Llama"),
            std::string::npos);
}

// A checkpoint or weights file must hold every tensor the model needs, with
// its type; a partial load is explicit and says what stays fresh.
TEST(LoadState, EveryTensorPresentUnlessPartial) {
  std::vector<StateSpec> specs{{"w", true, cpu::DType::F32, {2, 3}, "zeros", "", false},
                               {"b", true, cpu::DType::F32, {3}, "zeros", "", false},
                               {"w.adam_m", false, cpu::DType::F32, {2, 3}, "zeros", "", false}};
  NamedTensors onlyW{{"w", filled(cpu::DType::F32, {2, 3}, 1)}};
  auto strict = checkStateComplete(specs, onlyW, /*params=*/true, /*partial=*/false, "ckpt");
  ASSERT_FALSE(static_cast<bool>(strict));
  std::string message = llvm::toString(strict.takeError());
  EXPECT_NE(message.find("ckpt: lacks 1 of the model's 2 parameters (b)"), std::string::npos)
      << message;

  auto partial = checkStateComplete(specs, onlyW, true, /*partial=*/true, "ckpt");
  ASSERT_TRUE(static_cast<bool>(partial)) << llvm::toString(partial.takeError());
  EXPECT_EQ(*partial, std::vector<std::string>{"b"});

  // An empty file is never a complete checkpoint.
  auto empty = checkStateComplete(specs, {}, false, false, "ckpt");
  ASSERT_FALSE(static_cast<bool>(empty));
  EXPECT_NE(llvm::toString(empty.takeError()).find("lacks 1 of the model's 1 optimizer states"),
            std::string::npos);

  // Wrong shapes, unknown names and tensors of the other group are refused
  // even in a partial load.
  NamedTensors wrongShape{{"w", filled(cpu::DType::F32, {3, 2}, 1)}};
  auto shape = checkStateComplete(specs, wrongShape, true, true, "ckpt");
  ASSERT_FALSE(static_cast<bool>(shape));
  EXPECT_NE(llvm::toString(shape.takeError()).find("'w' is f32[3, 2] there but f32[2, 3]"),
            std::string::npos);
  NamedTensors extra{{"h.1.w", filled(cpu::DType::F32, {3}, 1)}};
  auto unknown = checkStateComplete(specs, extra, true, true, "ckpt");
  ASSERT_FALSE(static_cast<bool>(unknown));
  EXPECT_NE(llvm::toString(unknown.takeError()).find("has parameter 'h.1.w', which this model does not"),
            std::string::npos);
  NamedTensors moment{{"w.adam_m", filled(cpu::DType::F32, {2, 3}, 1)}};
  auto group = checkStateComplete(specs, moment, true, true, "ckpt");
  ASSERT_FALSE(static_cast<bool>(group));
  llvm::consumeError(group.takeError());
}

// A transient state (a gradient accumulator, zero between steps) is never
// asked for, and a given one is ignored; an older checkpoint's zero
// accumulators (`<param>.grad_acc`, written before they were transient)
// load into a model that has none, nonzero ones do not.
TEST(LoadState, TransientStatesAreNeitherAskedForNorRequired) {
  StateSpec acc{"w.grad_acc", false, cpu::DType::F32, {2, 3}, "zeros", "", false};
  acc.transient = true;
  std::vector<StateSpec> specs{{"w", true, cpu::DType::F32, {2, 3}, "zeros", "", false},
                               {"w.adam_m", false, cpu::DType::F32, {2, 3}, "zeros", "", false},
                               acc};
  EXPECT_FALSE(isCheckpointed(specs, "w.grad_acc"));
  EXPECT_TRUE(isCheckpointed(specs, "w.adam_m"));
  NamedTensors moments{{"w.adam_m", filled(cpu::DType::F32, {2, 3}, 1)}};
  auto without = checkStateComplete(specs, moments, false, /*partial=*/false, "ckpt");
  ASSERT_TRUE(static_cast<bool>(without)) << llvm::toString(without.takeError());
  EXPECT_TRUE(without->empty());
  NamedTensors with = moments;
  with.push_back({"w.grad_acc", cpu::HostTensor(cpu::DType::F32, {2, 3})}); // zeros
  auto given = checkStateComplete(specs, with, false, false, "ckpt");
  EXPECT_TRUE(static_cast<bool>(given)) << llvm::toString(given.takeError());

  // A model without accumulation, an older checkpoint with them.
  std::vector<StateSpec> plain(specs.begin(), specs.end() - 1);
  auto old = checkStateComplete(plain, with, false, false, "ckpt");
  EXPECT_TRUE(static_cast<bool>(old)) << llvm::toString(old.takeError());
  NamedTensors nonzero = moments;
  nonzero.push_back({"w.grad_acc", filled(cpu::DType::F32, {2, 3}, 0.5)});
  auto refused = checkStateComplete(plain, nonzero, false, false, "ckpt");
  ASSERT_FALSE(static_cast<bool>(refused));
  EXPECT_NE(llvm::toString(refused.takeError())
                .find("has optimizer state 'w.grad_acc', which this model does not"),
            std::string::npos);
}

} // namespace

namespace {

// MFU divides by the device's own peak: datasheet rates for known devices,
// SMs × clock × FLOPs per clock for others, none for unknown architectures.
TEST(DevicePeak, KnownDevicesEstimatesAndUnknowns) {
  auto h200 = cuda::devicePeak("NVIDIA H200", 9, 0, 132, 1980000, /*lowPrecision=*/true);
  ASSERT_TRUE(h200.has_value());
  EXPECT_EQ(h200->tflops, 989);
  EXPECT_EQ(h200->source, "datasheet");
  EXPECT_EQ(cuda::devicePeak("NVIDIA H200", 9, 0, 132, 1980000, false)->tflops, 67);
  EXPECT_EQ(cuda::devicePeak("NVIDIA H100 PCIe", 9, 0, 114, 1755000, true)->tflops, 756);
  EXPECT_EQ(cuda::devicePeak("NVIDIA A100-SXM4-80GB", 8, 0, 108, 1410000, true)->tflops, 312);
  // An RTX 3090 is not in the table: 82 SMs × 1.695 GHz × 512 = 71.2.
  auto ga102 = cuda::devicePeak("NVIDIA GeForce RTX 3090", 8, 6, 82, 1695000, true);
  ASSERT_TRUE(ga102.has_value());
  EXPECT_NEAR(ga102->tflops, 71.16, 0.01);
  EXPECT_NE(ga102->source.find("estimated: 82 SMs x 1.70 GHz"), std::string::npos) << ga102->source;
  // An architecture kiln has no per-clock rate for.
  EXPECT_FALSE(cuda::devicePeak("Future GPU", 13, 0, 200, 2000000, true).has_value());
}

} // namespace
