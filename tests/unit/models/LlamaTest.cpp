//===- LlamaTest.cpp - the Llama forward against an independent reference --===//
//
// The reference is Hugging Face's LlamaForCausalLM forward (modeling_llama:
// RMSNorm, rotate-half RoPE with inv_freq = theta^(-2i/D), repeat_kv for
// grouped heads, causal softmax attention scaled by 1/sqrt(D), SwiGLU, an
// untied head) written here as plain loops over kiln's parameters, sharing
// nothing with kiln's IR, passes or kernels. The tiny Llama's logits from
// the CPU interpreter in f64 must equal it within 1e-12 (relative to the
// largest logit), with RMSNorm's epsilon rounded to f32 as kiln's op stores
// it (with the f64 epsilon they differ by 3e-10: the test can tell).
//
//===----------------------------------------------------------------------===//

#include "models/Model.h"
#include "runtime/ParamInit.h"
#include "runtime/cpu/Interpreter.h"
#include "train/Compile.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/MLIRContext.h"
#include "gtest/gtest.h"

#include <cmath>
#include <map>

using namespace kiln;

namespace {

using Matrix = std::vector<std::vector<double>>; // [rows][cols]

/// x [T, in] times a kiln weight [in, out] (stored row-major).
Matrix linear(const Matrix &x, const cpu::HostTensor &w) {
  int64_t in = w.dim(0), out = w.dim(1);
  Matrix y(x.size(), std::vector<double>(out, 0.0));
  for (size_t t = 0; t < x.size(); ++t)
    for (int64_t i = 0; i < in; ++i)
      for (int64_t o = 0; o < out; ++o)
        y[t][o] += x[t][i] * w.get(i * out + o);
  return y;
}

Matrix rmsNorm(const Matrix &x, const cpu::HostTensor &w, double eps) {
  Matrix y = x;
  for (auto &row : y) {
    double ms = 0;
    for (double v : row)
      ms += v * v;
    double r = 1.0 / std::sqrt(ms / static_cast<double>(row.size()) + eps);
    for (size_t c = 0; c < row.size(); ++c)
      row[c] = row[c] * r * w.get(static_cast<int64_t>(c));
  }
  return y;
}

/// Hugging Face's apply_rotary_pos_emb on one head's [T, D] slice starting
/// at column `offset` of `x`.
void rope(Matrix &x, int64_t offset, int64_t d, double theta) {
  for (size_t t = 0; t < x.size(); ++t) {
    std::vector<double> head(x[t].begin() + offset, x[t].begin() + offset + d);
    for (int64_t i = 0; i < d / 2; ++i) {
      double angle = static_cast<double>(t) * std::pow(theta, -2.0 * i / static_cast<double>(d));
      double c = std::cos(angle), s = std::sin(angle);
      x[t][offset + i] = head[i] * c - head[i + d / 2] * s;
      x[t][offset + i + d / 2] = head[i + d / 2] * c + head[i] * s;
    }
  }
}

TEST(Llama, ForwardEqualsAnIndependentReferenceInF64) {
  auto loaded = RunConfig::loadFile(KILN_SOURCE_DIR "/configs/llama-tiny.toml");
  ASSERT_TRUE(static_cast<bool>(loaded)) << llvm::toString(loaded.takeError());
  const ModelConfig &m = loaded->model;
  // kiln.rms_norm carries its epsilon as an f32 attribute (so does a Hugging
  // Face model in f32): the reference uses the same rounded value.
  const double eps = static_cast<float>(m.rms_norm_eps);
  const int64_t T = 8, C = m.n_embd, H = m.n_head, Hkv = m.kvHeads(), D = m.headDim(),
                L = m.n_layer;
  ASSERT_LT(Hkv, H); // grouped heads are exercised
  mlir::MLIRContext ctx;
  tooling::loadDialects(ctx);
  mlir::OwningOpRef<mlir::ModuleOp> module = mlir::ModuleOp::create(mlir::UnknownLoc::get(&ctx));
  std::vector<std::string> errors;
  ASSERT_TRUE(succeeded(models::buildModel(*module, m, 1, T, mlir::Float64Type::get(&ctx),
                                           models::GPT2Output::Logits, "logits", errors)));
  auto fn = module->lookupSymbol<mlir::func::FuncOp>("logits");
  auto infos = paramsOf(fn);
  auto values = initParams(*infos, 3);
  ASSERT_TRUE(static_cast<bool>(values));
  std::map<std::string, cpu::HostTensor> p;
  for (size_t i = 0; i < infos->size(); ++i)
    p[(*infos)[i].name] = (*values)[i];
  const int32_t tokens[T] = {5, 17, 3, 60, 42, 9, 0, 33};

  // kiln: the interpreter in f64.
  std::vector<cpu::HostTensor> args = *values;
  cpu::HostTensor ids(cpu::DType::I32, {1, T});
  for (int64_t t = 0; t < T; ++t)
    ids.set(t, tokens[t]);
  args.push_back(ids);
  auto interp = cpu::Interpreter::create(fn);
  ASSERT_TRUE(static_cast<bool>(interp));
  auto out = (*interp)->run(args);
  ASSERT_TRUE(static_cast<bool>(out)) << llvm::toString(out.takeError());
  const cpu::HostTensor &logits = (*out)[0];

  // The reference.
  Matrix x(T, std::vector<double>(C));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < C; ++c)
      x[t][c] = p["embed"].get(tokens[t] * C + c);
  for (int64_t l = 0; l < L; ++l) {
    std::string pre = "layers." + std::to_string(l) + ".";
    Matrix h = rmsNorm(x, p[pre + "attn_norm.w"], eps);
    Matrix q = linear(h, p[pre + "attn.q.w"]), k = linear(h, p[pre + "attn.k.w"]),
           v = linear(h, p[pre + "attn.v.w"]);
    for (int64_t hh = 0; hh < H; ++hh)
      rope(q, hh * D, D, m.rope_theta);
    for (int64_t hh = 0; hh < Hkv; ++hh)
      rope(k, hh * D, D, m.rope_theta);
    Matrix y(T, std::vector<double>(H * D, 0.0));
    for (int64_t hh = 0; hh < H; ++hh) {
      int64_t kv = hh / (H / Hkv); // repeat_kv
      for (int64_t i = 0; i < T; ++i) {
        std::vector<double> s(i + 1);
        double mx = -INFINITY, sum = 0;
        for (int64_t j = 0; j <= i; ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += q[i][hh * D + d] * k[j][kv * D + d];
          s[j] = dot / std::sqrt(static_cast<double>(D));
          mx = std::max(mx, s[j]);
        }
        for (int64_t j = 0; j <= i; ++j)
          sum += (s[j] = std::exp(s[j] - mx));
        for (int64_t j = 0; j <= i; ++j)
          for (int64_t d = 0; d < D; ++d)
            y[i][hh * D + d] += s[j] / sum * v[j][kv * D + d];
      }
    }
    Matrix o = linear(y, p[pre + "attn.o.w"]);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c)
        x[t][c] += o[t][c];
    Matrix h2 = rmsNorm(x, p[pre + "mlp_norm.w"], eps);
    Matrix gate = linear(h2, p[pre + "mlp.gate.w"]), up = linear(h2, p[pre + "mlp.up.w"]);
    for (int64_t t = 0; t < T; ++t)
      for (size_t c = 0; c < gate[t].size(); ++c)
        gate[t][c] = gate[t][c] / (1.0 + std::exp(-gate[t][c])) * up[t][c]; // silu(g)·u
    Matrix down = linear(gate, p[pre + "mlp.down.w"]);
    for (int64_t t = 0; t < T; ++t)
      for (int64_t c = 0; c < C; ++c)
        x[t][c] += down[t][c];
  }
  Matrix want = linear(rmsNorm(x, p["norm.w"], eps), p["lm_head.w"]);

  const int64_t Vp = logits.dim(2);
  ASSERT_EQ(static_cast<int64_t>(want[0].size()), Vp);
  double scale = 0, worst = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < Vp; ++c)
      scale = std::max(scale, std::abs(want[t][c]));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < Vp; ++c)
      worst = std::max(worst, std::abs(logits.get(t * Vp + c) - want[t][c]));
  EXPECT_GT(scale, 0.0);
  EXPECT_LE(worst, 1e-12 * scale) << "largest logit " << scale;
}

} // namespace
